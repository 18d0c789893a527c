/*
 * M-of-N backup of backup-able keys: the create ceremony (the file and
 * share codecs are format/backup-file.c and format/backup-share.c).
 *
 * Why the backup key is known to this process: Shamir's scheme splits a
 * value, and a token cannot split its own keys, so the 32 bytes are drawn
 * here (token RNG XOR OpenSSL's, so neither alone decides them), imported
 * into the token only for as long as the wrapping takes, split, and wiped.
 * The keys themselves are wrapped inside the token (C_WrapKey, AES-KWP)
 * and are never in clear on the host.
 *
 * Why the security officer logs in: backup-able keys carry
 * CKA_WRAP_WITH_TRUSTED, so only a CKA_TRUSTED key can wrap them, and only
 * the SO may set CKA_TRUSTED. PKCS#11 has one login per token and
 * application, and the SO cannot use the user's private keys, so the
 * sequence is: user logout, SO login, the backup key is created as a
 * *public session object* (a private one would vanish at the SO's logout
 * and the SO cannot create private objects anyway), SO logout, user login,
 * wrap, destroy. The object lives only in this session and this process.
 *
 * A logical key is backed up whole: one entry per version (labels L,
 * L#2, ...), the lifecycle metadata (and any other hsmwrap* data object
 * labelled L) with the first version's entry only, so a restore makes it
 * exactly once.
 */
#include "internal.h"
#include "format/backup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	uint8_t *app, *label, *value;
	CK_ULONG app_len, label_len, value_len;
	CK_BBOOL private_;
} rec_meta;

/* What is recorded of one key before it is wrapped. */
typedef struct {
	hw_key *key;
	bool own_key;               /* a version found here, not one of the caller's */
	/* The hsmwrap* data objects labelled so travel with this entry: the
	 * logical key's label for the first version backed up, "" for the
	 * others, so a rotated key's metadata is copied exactly once. */
	char meta_label[129];
	hw_key_info ki;
	CK_ULONG value_len;
	CK_BBOOL wwt;
	CK_MECHANISM_TYPE mechs[HWBK_MAX_MECHS];
	CK_ULONG nmech;
	uint8_t *pub_a, *pub_b;
	CK_ULONG pub_a_len, pub_b_len;
	uint8_t kcv[32];
	size_t kcv_len;
	uint8_t *wrapped;
	CK_ULONG wrapped_len;
	rec_meta meta[HWBK_MAX_META];
	size_t nmeta;
} rec;

static void
rec_clear(rec *r)
{
	free(r->pub_a);
	free(r->pub_b);
	free(r->wrapped);
	for (size_t i = 0; i < r->nmeta; i++) {
		free(r->meta[i].app);
		free(r->meta[i].label);
		hw_free_secret(r->meta[i].value, r->meta[i].value_len);
	}
	r->pub_a = r->pub_b = r->wrapped = NULL;
	r->nmeta = 0;
}

/* An attribute of unknown length, malloc'd (1 byte for empty). */
static CK_RV
get_alloc(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE t,
          uint8_t **out, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { t, NULL, 0 };
	CK_RV rv = ctx->fl->C_GetAttributeValue(s, h, &a, 1);

	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 65535)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	if (!(a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1)))
		return CKR_HOST_MEMORY;
	rv = ctx->fl->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	*out = a.pValue;
	*len = a.ulValueLen;
	return CKR_OK;
}

typedef struct {
	rec *recs;
	size_t n;
} collect_arg;

static CK_RV
collect_meta(hw_ctx *ctx, CK_SESSION_HANDLE s, rec *r)
{
	CK_OBJECT_CLASS data = CKO_DATA;
	CK_ATTRIBUTE t[2] = {
		{ CKA_CLASS, &data, sizeof(data) },
		{ CKA_LABEL, r->meta_label, strlen(r->meta_label) },
	};
	CK_OBJECT_HANDLE hs[HWBK_MAX_META + 1];
	CK_ULONG got = 0;
	CK_RV rv;

	if (!r->meta_label[0])
		return CKR_OK;
	if ((rv = ctx->fl->C_FindObjectsInit(s, t, 2)) != CKR_OK)
		return rv;
	rv = ctx->fl->C_FindObjects(s, hs, HWBK_MAX_META + 1, &got);
	(void)ctx->fl->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return rv;
	if (got > HWBK_MAX_META)
		return hw_op_fail(hw_fail(HW_ERR_TOO_LARGE, 0, "more than %d metadata objects for "
		                          "'%s'", HWBK_MAX_META, r->meta_label));
	for (CK_ULONG i = 0; i < got; i++) {
		rec_meta *m = &r->meta[r->nmeta];
		CK_ATTRIBUTE p = { CKA_PRIVATE, &m->private_, sizeof(m->private_) };

		memset(m, 0, sizeof(*m));
		if ((rv = get_alloc(ctx, s, hs[i], CKA_APPLICATION, &m->app, &m->app_len)) != CKR_OK)
			return rv;
		/* Only hsmwrap's own objects travel: others are not ours to copy. */
		if (m->app_len < 7 || memcmp(m->app, "hsmwrap", 7) != 0) {
			free(m->app);
			m->app = NULL;
			continue;
		}
		r->nmeta++;
		if ((rv = get_alloc(ctx, s, hs[i], CKA_LABEL, &m->label, &m->label_len)) != CKR_OK ||
		    (rv = get_alloc(ctx, s, hs[i], CKA_VALUE, &m->value, &m->value_len)) != CKR_OK ||
		    (rv = ctx->fl->C_GetAttributeValue(s, hs[i], &p, 1)) != CKR_OK)
			return rv;
	}
	return CKR_OK;
}

static CK_RV
op_collect(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	collect_arg *a = arg;
	CK_RV rv;

	for (size_t i = 0; i < a->n; i++) {
		rec *r = &a->recs[i];
		CK_OBJECT_HANDLE h;
		CK_ATTRIBUTE t[3] = {
			{ CKA_VALUE_LEN, &r->value_len, sizeof(r->value_len) },
			{ CKA_WRAP_WITH_TRUSTED, &r->wwt, sizeof(r->wwt) },
			{ CKA_ALLOWED_MECHANISMS, r->mechs, sizeof(r->mechs) },
		};

		rec_clear(r);
		if ((rv = hw_key_handle_ck(r->key, s, &h)) != CKR_OK)
			return rv;
		r->value_len = 0;
		r->wwt = CK_FALSE;
		rv = ctx->fl->C_GetAttributeValue(s, h, t, 3);
		if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
			return rv;
		if (t[1].ulValueLen != sizeof(CK_BBOOL))
			r->wwt = CK_FALSE;
		r->nmech = t[2].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0
		           : t[2].ulValueLen / sizeof(CK_MECHANISM_TYPE);
		if (r->key->cls == CKO_PRIVATE_KEY) {
			CK_OBJECT_HANDLE ph = r->key->pub_handle;
			bool rsa = r->key->ktype == CKK_RSA;

			if (ph == CK_INVALID_HANDLE)
				return hw_op_fail(hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "the public half of "
				                          "'%s'", r->ki.label));
			if ((rv = get_alloc(ctx, s, ph, rsa ? CKA_MODULUS : CKA_EC_PARAMS, &r->pub_a,
			                    &r->pub_a_len)) != CKR_OK ||
			    (rv = get_alloc(ctx, s, ph, rsa ? CKA_PUBLIC_EXPONENT : CKA_EC_POINT,
			                    &r->pub_b, &r->pub_b_len)) != CKR_OK)
				return rv;
		}
		if ((rv = collect_meta(ctx, s, r)) != CKR_OK)
			return rv;
	}
	return CKR_OK;
}

typedef struct {
	rec *recs;
	size_t n;
	const uint8_t *bk;
	const char *so_pin;
	size_t so_pin_len;
	bool so_failed;
} wrap_arg;

static void
set_login_state(hw_ctx *ctx, bool in)
{
	pthread_mutex_lock(&ctx->lock);
	ctx->logged_in = in;
	/* SoftHSMv2 invalidates private handles at logout. */
	ctx->key_epoch++;
	pthread_mutex_unlock(&ctx->lock);
}

static CK_RV
user_login(hw_ctx *ctx, CK_SESSION_HANDLE s)
{
	CK_RV rv = CKR_USER_NOT_LOGGED_IN;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->have_pin) {
		/* Logins write SoftHSM's token record: see hw_module_io_lock. */
		int fd = hw_module_io_lock(ctx->mod, true);

		rv = ctx->fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)ctx->pin, ctx->pin_len);
		hw_module_io_unlock(fd);
	}
	pthread_mutex_unlock(&ctx->lock);
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	set_login_state(ctx, rv == CKR_OK);
	return rv;
}

static CK_RV
op_wrap(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	wrap_arg *a = arg;
	CK_OBJECT_CLASS sec = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES;
	CK_MECHANISM_TYPE allowed = ctx->kwp_mech;
	CK_MECHANISM m = { ctx->kwp_mech, NULL, 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &sec, sizeof(sec) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_VALUE, (void *)a->bk, HWBK_KEY_LEN },
		{ CKA_TOKEN, (void *)&no, sizeof(no) },
		/* Public: created by the SO, it must outlive the SO's logout. */
		{ CKA_PRIVATE, (void *)&no, sizeof(no) },
		{ CKA_SENSITIVE, (void *)&yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, (void *)&no, sizeof(no) },
		{ CKA_TRUSTED, (void *)&yes, sizeof(yes) },
		{ CKA_WRAP, (void *)&yes, sizeof(yes) },
		{ CKA_UNWRAP, (void *)&no, sizeof(no) },
		{ CKA_ENCRYPT, (void *)&no, sizeof(no) },
		{ CKA_DECRYPT, (void *)&no, sizeof(no) },
		{ CKA_ALLOWED_MECHANISMS, &allowed, sizeof(allowed) },
	};
	CK_OBJECT_HANDLE bkh = CK_INVALID_HANDLE;
	CK_RV rv, rv2;

	rv = ctx->fl->C_Logout(s);
	if (rv != CKR_OK && rv != CKR_USER_NOT_LOGGED_IN)
		return rv;
	set_login_state(ctx, false);
	{
		int fd = hw_module_io_lock(ctx->mod, true);

		rv = ctx->fl->C_Login(s, CKU_SO, (CK_UTF8CHAR *)a->so_pin, a->so_pin_len);
		hw_module_io_unlock(fd);
	}
	if (rv != CKR_OK) {
		a->so_failed = true;
		(void)user_login(ctx, s);
		return rv;
	}
	rv = ctx->fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &bkh);
	rv2 = ctx->fl->C_Logout(s);
	if (rv == CKR_OK)
		rv = rv2;
	rv2 = user_login(ctx, s);
	if (rv == CKR_OK)
		rv = rv2;
	for (size_t i = 0; rv == CKR_OK && i < a->n; i++) {
		rec *r = &a->recs[i];
		CK_OBJECT_HANDLE h;
		CK_ULONG len = 0;

		if ((rv = hw_key_handle_ck(r->key, s, &h)) != CKR_OK)
			break;
		free(r->wrapped);
		r->wrapped = NULL;
		if ((rv = ctx->fl->C_WrapKey(s, &m, bkh, h, NULL, &len)) != CKR_OK)
			break;
		if (len == 0 || len > 60000 || !(r->wrapped = malloc(len))) {
			rv = len ? CKR_HOST_MEMORY : CKR_GENERAL_ERROR;
			break;
		}
		rv = ctx->fl->C_WrapKey(s, &m, bkh, h, r->wrapped, &len);
		r->wrapped_len = len;
		/* Keys that were themselves unwrapped have CKA_VALUE_LEN 0 on
		 * SoftHSMv2; RFC 5649 output is 8 bytes longer than a 16, 24 or
		 * 32-byte key, so the length is known anyway. */
		if (rv == CKR_OK && r->key->cls == CKO_SECRET_KEY &&
		    (r->value_len == 0 || r->value_len == CK_UNAVAILABLE_INFORMATION))
			r->value_len = len - 8;
	}
	if (bkh != CK_INVALID_HANDLE) {
		rv2 = ctx->fl->C_DestroyObject(s, bkh);
		if (rv == CKR_OK)
			rv = rv2;
	}
	return rv;
}

typedef struct {
	uint8_t *out;
	size_t len;
} rand_arg;

static CK_RV
op_random(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	rand_arg *a = arg;

	return ctx->fl->C_GenerateRandom(s, a->out, a->len);
}

/* The file of the wrapped records: the entries point into recs. */
static hw_err
write_file(const rec *recs, size_t n, const uint8_t bk[HWBK_KEY_LEN], const uint8_t *backup_id,
           unsigned threshold, unsigned custodians, uint8_t **file, size_t *filelen)
{
	uint8_t salt[HWBK_SALT_LEN];
	bk_entry *ents;
	hw_err e;

	if ((e = hw_random(salt, sizeof(salt))))
		return e;
	if (!(ents = calloc(n, sizeof(*ents))))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	for (size_t i = 0; i < n; i++) {
		const rec *r = &recs[i];
		const hw_key_info *ki = &r->ki;
		bk_entry *en = &ents[i];

		en->cls = (uint32_t)r->key->cls;
		en->ktype = (uint32_t)r->key->ktype;
		en->label = (const uint8_t *)r->key->label;
		en->label_len = strlen(r->key->label);
		en->id = r->key->id;
		en->id_len = r->key->id_len;
		en->value_len = r->key->cls == CKO_SECRET_KEY ? (uint32_t)r->value_len : 0;
		en->flags = (ki->private_ == 1 ? HWBK_F_PRIVATE : 0) |
		            (ki->encrypt == 1 ? HWBK_F_ENCRYPT : 0) |
		            (ki->decrypt == 1 ? HWBK_F_DECRYPT : 0) |
		            (ki->wrap == 1 ? HWBK_F_WRAP : 0) | (ki->unwrap == 1 ? HWBK_F_UNWRAP : 0) |
		            (ki->sign == 1 ? HWBK_F_SIGN : 0) | (ki->verify == 1 ? HWBK_F_VERIFY : 0) |
		            (ki->derive == 1 ? HWBK_F_DERIVE : 0);
		en->nmech = (uint16_t)r->nmech;
		for (CK_ULONG k = 0; k < r->nmech; k++)
			en->mechs[k] = r->mechs[k];
		en->kcv = r->kcv;
		en->kcv_len = r->kcv_len;
		en->wrapped = r->wrapped;
		en->wrapped_len = r->wrapped_len;
		en->pub_a = r->pub_a;
		en->pub_a_len = r->pub_a ? r->pub_a_len : 0;
		en->pub_b = r->pub_b;
		en->pub_b_len = r->pub_b ? r->pub_b_len : 0;
		en->nmeta = (uint16_t)r->nmeta;
		for (size_t k = 0; k < r->nmeta; k++) {
			en->meta[k].app = r->meta[k].app;
			en->meta[k].app_len = r->meta[k].app_len;
			en->meta[k].label = r->meta[k].label;
			en->meta[k].label_len = r->meta[k].label_len;
			en->meta[k].value = r->meta[k].value;
			en->meta[k].value_len = r->meta[k].value_len;
			en->meta[k].private_ = r->meta[k].private_ ? 1 : 0;
		}
	}
	e = bk_file_write(ents, n, bk, salt, backup_id, threshold, custodians, file, filelen);
	free(ents);
	return e;
}

/* A KCV or id in hex, "" for none. */
static int
unhex_kcv(const char *hex, uint8_t *out, size_t max, size_t *n)
{
	*n = 0;
	return *hex ? hw_unhex(hex, out, max, n) : 0;
}

/*
 * The key objects a backup of `keys` holds: every version of each
 * logical key (a rotated key's data made with older versions must stay
 * readable after a restore), the first carrying the metadata. On success
 * *out has *nout records whose keys are the caller's or own_key.
 */
static hw_err
expand_versions(hw_ctx *ctx, hw_key *const *keys, size_t nkeys, rec **out, size_t *nout)
{
	rec *recs = NULL, *g;
	size_t n = 0, cap = 0;
	hw_err e = HW_OK;

	for (size_t i = 0; i < nkeys && e == HW_OK; i++) {
		hw_key_meta *m = NULL;
		bool given_seen = false;

		if ((e = hw_key_meta_get(keys[i], &m)))
			break;
		if (cap < n + m->nversions + 1) {
			cap = n + m->nversions + 1;
			if (!(g = realloc(recs, cap * sizeof(*recs)))) {
				e = hw_fail(HW_ERR_NOMEM, 0, NULL);
				hw_key_meta_free(m);
				break;
			}
			recs = g;
		}
		for (size_t v = 0; v < m->nversions && e == HW_OK; v++) {
			uint8_t id[64];
			size_t idn = 0;
			rec *r = &recs[n];
			char hex[129];

			memset(r, 0, sizeof(*r));
			hw_hex(keys[i]->id, keys[i]->id_len, hex);
			if (!strcmp(hex, m->versions[v].id_hex)) {
				r->key = keys[i];
				given_seen = true;
			} else if (unhex_kcv(m->versions[v].id_hex, id, sizeof(id), &idn) || !idn) {
				e = hw_fail(HW_ERR_FORMAT, 0, "the metadata of key '%s' names version %u "
				            "by an id that is not hex", m->label, m->versions[v].number);
				break;
			} else if ((e = hw_key_find_by_id(ctx, id, idn, &r->key))) {
				if (e == HW_ERR_KEY_NOT_FOUND)
					e = hw_fail(e, 0, "version %u of key '%s' (id %s) is missing from "
					            "the token; refusing a backup without it",
					            m->versions[v].number, m->label, m->versions[v].id_hex);
				break;
			} else {
				r->own_key = true;
			}
			if (v == 0)
				snprintf(r->meta_label, sizeof(r->meta_label), "%s", m->label);
			n++;
		}
		/* Metadata that does not list the key (defaults always do). */
		if (e == HW_OK && !given_seen)
			e = hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "'%s' is not a version its key's metadata "
			            "lists", keys[i]->label);
		hw_key_meta_free(m);
	}
	for (size_t i = 0; e == HW_OK && i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (recs[i].key->id_len == recs[j].key->id_len &&
			    !memcmp(recs[i].key->id, recs[j].key->id, recs[i].key->id_len)) {
				e = hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is listed twice (as a version "
				            "of a key listed too)", recs[i].key->label);
				break;
			}
	if (e != HW_OK) {
		for (size_t i = 0; i < n; i++)
			if (recs[i].own_key)
				hw_key_free(recs[i].key);
		free(recs);
		return e;
	}
	*out = recs;
	*nout = n;
	return HW_OK;
}

HW_EXPORT hw_err
hw_backup_create(hw_ctx *ctx, const char *so_pin_source, hw_key *const *keys, size_t nkeys,
                 unsigned custodians, unsigned threshold, uint8_t **file, size_t *filelen,
                 hw_backup_share **shares_out, hw_backup_info **info)
{
	/* The SO PIN and the backup key (and the HSM's half of it): locked,
	 * out of core dumps, wiped on every path. */
	struct {
		char so_pin[HW_PIN_MAX];
		uint8_t bk[HWBK_KEY_LEN], hsm_rand[HWBK_KEY_LEN];
	} *sec = NULL;
	size_t so_pin_len = 0;
	uint8_t backup_id[HW_BACKUP_ID_LEN];
	uint8_t *coeffs = NULL, *sh = NULL, *out = NULL;
	size_t outlen = 0, ncoeff = (size_t)HWBK_KEY_LEN * (threshold ? threshold - 1 : 0);
	hw_backup_share *shares = NULL;
	rec *recs = NULL;
	size_t nrecs = 0;
	collect_arg ca;
	wrap_arg wa;
	rand_arg ra;
	char what[200];
	hw_err e;

	if (!ctx || !keys || nkeys == 0 || nkeys > HWBK_MAX_ENTRIES || !file || !filelen ||
	    !shares_out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "keys to back up (1 to %d) and outputs",
		               HWBK_MAX_ENTRIES);
	if (threshold < 2 || custodians < threshold || custodians > HW_SHARES_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "threshold %u of %u custodians: need 2 <= M "
		               "<= N <= 255", threshold, custodians);
	for (size_t i = 0; i < nkeys; i++) {
		if (!keys[i] || keys[i]->ctx != ctx)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "every key must be of the backup's token");
		for (size_t j = 0; j < i; j++)
			if (!strcmp(keys[i]->label, keys[j]->label) ||
			    (keys[i]->id_len == keys[j]->id_len &&
			     !memcmp(keys[i]->id, keys[j]->id, keys[i]->id_len)))
				return hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is listed twice (or two keys "
				               "share a label or id)", keys[i]->label);
	}
	hw_clear_error();
	if ((e = hw_ctx_login(ctx)))
		return e;
	if ((e = hw_ctx_require(ctx, HW_CAP_AES_KWP | HW_CAP_DATA_OBJECTS, "backup create")))
		return e;
	pthread_mutex_lock(&ctx->lock);
	bool have_pin = ctx->have_pin;
	pthread_mutex_unlock(&ctx->lock);
	if (!have_pin)
		return hw_fail(HW_ERR_PIN_SOURCE, 0, "a backup needs the user PIN from a PIN source "
		               "(the user logs in again after the SO)");
	if (!(sec = hw_secmem_alloc(sizeof(*sec))))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	ra.out = sec->hsm_rand;
	ra.len = sizeof(sec->hsm_rand);

	if ((e = expand_versions(ctx, keys, nkeys, &recs, &nrecs)))
		return e;
	if (nrecs > HWBK_MAX_ENTRIES) {
		e = hw_fail(HW_ERR_TOO_LARGE, 0, "%zu key objects (versions included); a backup "
		            "holds %d at most", nrecs, HWBK_MAX_ENTRIES);
		goto out;
	}
	for (size_t i = 0; i < nrecs; i++) {
		rec *r = &recs[i];

		if ((e = hw_key_info_get(r->key, &r->ki)))
			goto out;
		if (r->ki.extractable != 1) {
			e = hw_fail(HW_ERR_KEY_PURPOSE, 0, "'%s' is not backup-able (created without "
			            "--backupable: it can never leave the HSM)", r->ki.label);
			goto out;
		}
		if (unhex_kcv(strcmp(r->ki.kcv_alg, "unavailable") ? r->ki.kcv : "", r->kcv,
		              sizeof(r->kcv), &r->kcv_len))
			r->kcv_len = 0;
	}
	ca.recs = recs;
	ca.n = nrecs;
	if ((e = hw_ctx_run(ctx, op_collect, &ca, "reading the keys to back up")))
		goto out;
	for (size_t i = 0; i < nrecs; i++)
		if (!recs[i].wwt) {
			e = hw_fail(HW_ERR_KEY_PURPOSE, 0, "'%s' is extractable without "
			            "CKA_WRAP_WITH_TRUSTED: not created by --backupable; refusing to "
			            "back it up", recs[i].ki.label);
			goto out;
		}

	snprintf(what, sizeof(what), "SO PIN for token '%.100s' (to mark the backup key trusted)",
	         ctx->token_uri_str);
	if ((e = hw_pin_read(so_pin_source ? so_pin_source : "prompt", what, ctx->pin_cb,
	                     ctx->pin_cb_arg, sec->so_pin, sizeof(sec->so_pin), &so_pin_len)))
		goto out;
	/* Neither RNG alone decides the backup key. */
	if ((e = hw_ctx_run(ctx, op_random, &ra, "C_GenerateRandom")) ||
	    (e = hw_random(sec->bk, sizeof(sec->bk))) ||
	    (e = hw_random(backup_id, sizeof(backup_id))))
		goto out;
	for (size_t i = 0; i < HWBK_KEY_LEN; i++)
		sec->bk[i] ^= sec->hsm_rand[i];

	memset(&wa, 0, sizeof(wa));
	wa.recs = recs;
	wa.n = nrecs;
	wa.bk = sec->bk;
	wa.so_pin = sec->so_pin;
	wa.so_pin_len = so_pin_len;
	e = hw_ctx_run_once(ctx, op_wrap, &wa, "wrapping keys under the backup key");
	if (e && wa.so_failed) {
		hw_fail(e, hw_last_ckrv(), "security officer login (the backup key must be marked "
		        "CKA_TRUSTED by the SO)");
		goto out;
	}
	if (e)
		goto out;
	if ((e = write_file(recs, nrecs, sec->bk, backup_id, threshold, custodians, &out, &outlen)))
		goto out;

	coeffs = malloc(ncoeff);
	sh = malloc((size_t)custodians * HWBK_KEY_LEN);
	shares = calloc(custodians, sizeof(*shares));
	if (!coeffs || !sh || !shares) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto out;
	}
	if ((e = hw_random(coeffs, ncoeff)))
		goto out;
	if (hw_shamir_split(sec->bk, HWBK_KEY_LEN, custodians, threshold, coeffs, sh) != 0) {
		e = hw_fail(HW_ERR_CRYPTO, 0, "Shamir split");
		goto out;
	}
	for (unsigned i = 0; i < custodians; i++) {
		memcpy(shares[i].backup_id, backup_id, HW_BACKUP_ID_LEN);
		shares[i].index = i + 1;
		shares[i].threshold = threshold;
		shares[i].custodians = custodians;
		memcpy(shares[i].share, sh + (size_t)i * HWBK_KEY_LEN, HWBK_KEY_LEN);
	}
	if (info) {
		bk_file f;
		if ((e = bk_file_parse(out, outlen, &f)))
			goto out;
		e = bk_info_make(&f, info);
		bk_file_free(&f);
		if (e)
			goto out;
	}
	*file = out;
	*filelen = outlen;
	*shares_out = shares;
	out = NULL;
	shares = NULL;
out:
	hw_secmem_free(sec);
	if (coeffs)
		hw_free_secret(coeffs, ncoeff);
	if (sh)
		hw_free_secret(sh, (size_t)custodians * HWBK_KEY_LEN);
	if (shares)
		hw_free_secret(shares, custodians * sizeof(*shares));
	free(out);
	for (size_t i = 0; recs && i < nrecs; i++) {
		rec_clear(&recs[i]);
		if (recs[i].own_key)
			hw_key_free(recs[i].key);
	}
	free(recs);
	return e;
}
