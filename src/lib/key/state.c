/*
 * Key lifecycle metadata on the token, next to the keys so that it
 * travels with them (backups, a second host): one CKO_DATA object per
 * logical key, CKA_APPLICATION "hsmwrap-key-meta", CKA_LABEL = the key's
 * label, CKA_VALUE = the record of format/keymeta.c.
 *
 * This file is what every key lookup and use needs of it: reading and
 * writing the record, which logical key and version an object is (a plain
 * label names the current version), the state check before each use (a
 * key past its deletion date is destroyed at its first use), and the
 * record's birth and end with the key (hw_key_generate, hw_key_destroy).
 * Changing the state, tags, versions is lifecycle/meta.c.
 *
 * Tokens may refuse to change CKA_VALUE of a data object (SoftHSMv2 does),
 * so an update writes a new object, then destroys the old one; the serial
 * says which is newer if an update stops in between, and the older one is
 * removed at the next read.
 *
 * Versions are separate key objects: version 1 keeps the label L, version
 * n >= 2 is "L#n". Blobs and ESDK messages name the key object they used,
 * so they name the version; metadata applies to an object only if it
 * lists the object's CKA_ID, so a stray object labelled "L#3" is never
 * taken for a version.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A state change made elsewhere is seen by a running process this late at most. */
#define STATE_TTL_MS 1000u

/* ---------------------------------------------------------------- */
/* Clocks                                                            */

/*
 * Wall-clock time for the deletion window. HSMWRAP_TEST_NOW (Unix
 * seconds) replaces it so that the tests can pass a 7-day window, but
 * only on a SoftHSM token and never in a setuid program: on a real HSM
 * the window cannot be shortened through the environment. (On SoftHSM
 * whoever sets the environment can also read the token's files.)
 */
int64_t
hw_meta_now(hw_ctx *ctx)
{
	const char *t = secure_getenv("HSMWRAP_TEST_NOW");

	if (t && *t && ctx && strncmp((const char *)ctx->tinfo.manufacturerID, "SoftHSM", 7) == 0) {
		char *end;
		long long v = strtoll(t, &end, 10);
		if (*end == '\0' && v > 0)
			return (int64_t)v;
	}
	return (int64_t)time(NULL);
}

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* Never 0, which means "not read yet". */
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + 1;
}

/* ---------------------------------------------------------------- */
/* Metadata objects on a session                                     */

static const CK_OBJECT_CLASS data_class = CKO_DATA;

/* Handles of metadata objects (of `label`, or all if NULL); malloc'd. */
CK_RV
hw_meta_find_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label, size_t limit,
            CK_OBJECT_HANDLE **found, size_t *n)
{
	CK_ATTRIBUTE t[3] = {
		{ CKA_CLASS, (void *)&data_class, sizeof(data_class) },
		{ CKA_APPLICATION, (void *)HW_META_APP, sizeof(HW_META_APP) - 1 },
		{ CKA_LABEL, (void *)label, label ? strlen(label) : 0 },
	};
	CK_OBJECT_HANDLE chunk[64], *all = NULL, *grown;
	CK_ULONG got = 0;
	size_t count = 0;
	CK_RV rv, final;

	*found = NULL;
	*n = 0;
	rv = ctx->fl->C_FindObjectsInit(s, t, label ? 3 : 2);
	if (rv != CKR_OK)
		return rv;
	for (;;) {
		rv = ctx->fl->C_FindObjects(s, chunk, 64, &got);
		if (rv != CKR_OK || got == 0)
			break;
		grown = realloc(all, (count + got) * sizeof(*all));
		if (!grown) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		all = grown;
		memcpy(all + count, chunk, got * sizeof(*chunk));
		count += got;
		if (limit && count >= limit)
			break;
	}
	final = ctx->fl->C_FindObjectsFinal(s);
	if (rv == CKR_OK)
		rv = final;
	/* Private objects: nothing found may only mean we were logged out. */
	if (rv == CKR_OK && count == 0 && hw_ctx_logged_in(ctx))
		rv = hw_session_check_login(ctx, s);
	if (rv != CKR_OK) {
		free(all);
		return rv;
	}
	*found = all;
	*n = count;
	return CKR_OK;
}

/* Reads and decodes one metadata object; label gets its CKA_LABEL. */
CK_RV
hw_meta_load_s(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, hw_key_meta **out)
{
	char label[129] = { 0 };
	CK_ATTRIBUTE t[2] = { { CKA_LABEL, NULL, 0 }, { CKA_VALUE, NULL, 0 } };
	uint8_t *val = NULL;
	hw_key_meta *m = NULL;
	CK_RV rv;
	hw_err e;

	rv = ctx->fl->C_GetAttributeValue(s, h, t, 2);
	if (rv != CKR_OK)
		return rv;
	if (t[0].ulValueLen > 128 || t[1].ulValueLen > HW_META_VALUE_MAX)
		return hw_op_fail(hw_fail(HW_ERR_FORMAT, 0, "key metadata: oversized metadata object"));
	val = malloc(t[1].ulValueLen ? t[1].ulValueLen : 1);
	if (!val)
		return CKR_HOST_MEMORY;
	t[0].pValue = label;
	t[1].pValue = val;
	rv = ctx->fl->C_GetAttributeValue(s, h, t, 2);
	if (rv == CKR_OK) {
		label[t[0].ulValueLen] = '\0';
		e = hw_key_meta_decode(val, t[1].ulValueLen, &m);
		if (e != HW_OK) {
			hw_fail(e, 0, "the metadata of key '%s' is damaged", label);
			rv = hw_op_fail(e);
		} else {
			snprintf(m->label, sizeof(m->label), "%s", label);
			for (size_t i = 0; i < m->nversions; i++)
				hw_version_label(label, m->versions[i].number, m->versions[i].label,
				              sizeof(m->versions[i].label));
			*out = m;
		}
	}
	free(val);
	return rv;
}

/*
 * The metadata of `label`: *out NULL (and *h invalid) if there is none.
 * Of several objects (an update interrupted) the newest counts; the
 * others are removed.
 */
CK_RV
hw_meta_read_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label, hw_key_meta **out,
            CK_OBJECT_HANDLE *h)
{
	CK_OBJECT_HANDLE *found = NULL;
	size_t n = 0, best = 0;
	hw_key_meta **all = NULL;
	CK_RV rv;

	*out = NULL;
	*h = CK_INVALID_HANDLE;
	rv = hw_meta_find_s(ctx, s, label, 0, &found, &n);
	if (rv != CKR_OK || n == 0) {
		free(found);
		return rv;
	}
	all = calloc(n, sizeof(*all));
	if (!all) {
		free(found);
		return CKR_HOST_MEMORY;
	}
	for (size_t i = 0; i < n && rv == CKR_OK; i++) {
		rv = hw_meta_load_s(ctx, s, found[i], &all[i]);
		if (rv == CKR_OK && all[i]->serial > all[best]->serial)
			best = i;
	}
	if (rv == CKR_OK) {
		for (size_t i = 0; i < n; i++)
			if (i != best)
				(void)ctx->fl->C_DestroyObject(s, found[i]);
		*out = all[best];
		*h = found[best];
		all[best] = NULL;
	}
	for (size_t i = 0; i < n; i++)
		hw_key_meta_free(all[i]);
	free(all);
	free(found);
	return rv;
}

CK_RV
hw_meta_write_s(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h, hw_key_meta *m)
{
	static const CK_BBOOL yes = CK_TRUE;
	uint8_t *val = NULL;
	size_t len = 0;
	CK_OBJECT_HANDLE nh = CK_INVALID_HANDLE;
	hw_err e;
	CK_RV rv;

	m->serial++;
	e = hw_key_meta_encode(m, &val, &len);
	if (e != HW_OK)
		return hw_op_fail(e);
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, (void *)&data_class, sizeof(data_class) },
		{ CKA_TOKEN, (void *)&yes, sizeof(yes) },
		{ CKA_PRIVATE, (void *)&yes, sizeof(yes) },
		{ CKA_MODIFIABLE, (void *)&yes, sizeof(yes) },
		{ CKA_APPLICATION, (void *)HW_META_APP, sizeof(HW_META_APP) - 1 },
		{ CKA_LABEL, (void *)m->label, strlen(m->label) },
		{ CKA_VALUE, val, len },
	};
	rv = ctx->fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &nh);
	free(val);
	if (rv != CKR_OK)
		return rv;
	/* If this fails the newer serial still wins at the next read. */
	if (*h != CK_INVALID_HANDLE)
		(void)ctx->fl->C_DestroyObject(s, *h);
	*h = nh;
	return CKR_OK;
}

/* Every metadata object of the key, an older one left by an interrupted update too. */
static CK_RV
meta_destroy_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label)
{
	CK_OBJECT_HANDLE *found = NULL;
	size_t n = 0;
	CK_RV rv = hw_meta_find_s(ctx, s, label, 0, &found, &n);

	for (size_t i = 0; i < n && rv == CKR_OK; i++)
		rv = ctx->fl->C_DestroyObject(s, found[i]);
	free(found);
	return rv;
}

/* Destroys every key object of every version, then the metadata object. */
CK_RV
hw_meta_purge_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const hw_key_meta *m, CK_OBJECT_HANDLE mh)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY };
	CK_RV rv = CKR_OK;

	for (size_t i = 0; i < m->nversions && rv == CKR_OK; i++) {
		uint8_t id[64];
		size_t idn = 0;

		if (hw_unhex(m->versions[i].id_hex, id, sizeof(id), &idn) != 0)
			continue;
		for (size_t c = 0; c < 3 && rv == CKR_OK; c++) {
			CK_ATTRIBUTE t[2] = {
				{ CKA_CLASS, (void *)&classes[c], sizeof(classes[c]) },
				{ CKA_ID, id, idn },
			};
			CK_OBJECT_HANDLE hs[8];
			CK_ULONG got = 0;
			CK_RV final;

			rv = ctx->fl->C_FindObjectsInit(s, t, 2);
			if (rv != CKR_OK)
				break;
			rv = ctx->fl->C_FindObjects(s, hs, 8, &got);
			final = ctx->fl->C_FindObjectsFinal(s);
			if (rv == CKR_OK)
				rv = final;
			for (CK_ULONG k = 0; k < got && rv == CKR_OK; k++) {
				rv = ctx->fl->C_DestroyObject(s, hs[k]);
				if (rv == CKR_OBJECT_HANDLE_INVALID)
					rv = CKR_OK;
			}
		}
	}
	(void)mh;
	if (rv == CKR_OK)
		rv = meta_destroy_s(ctx, s, m->label);
	return rv;
}

/* What a key without a metadata object is: version 1, enabled. */
hw_key_meta *
hw_meta_defaults(const hw_key *key)
{
	hw_key_meta *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->versions = calloc(1, sizeof(*m->versions));
	m->tags = calloc(1, sizeof(*m->tags));
	m->description = calloc(1, 1);
	if (!m->versions || !m->tags || !m->description) {
		hw_key_meta_free(m);
		return NULL;
	}
	snprintf(m->label, sizeof(m->label), "%s", key->base[0] ? key->base : key->label);
	m->state = HW_KEY_STATE_ENABLED;
	m->purpose = key->cls == CKO_PRIVATE_KEY ? (key->can_sign ? HW_PURPOSE_SIGN
	                                            : key->can_decrypt ? HW_PURPOSE_DECRYPT
	                                            : HW_PURPOSE_NONE)
	           : key->can_encrypt ? HW_PURPOSE_ENVELOPE
	           : key->can_wrap ? HW_PURPOSE_KEYWRAP : HW_PURPOSE_NONE;
	m->current = 1;
	m->nversions = 1;
	m->versions[0].number = 1;
	snprintf(m->versions[0].label, sizeof(m->versions[0].label), "%s", m->label);
	hw_hex(key->id, key->id_len, m->versions[0].id_hex);
	return m;
}

const hw_key_version_info *
hw_meta_version_of(const hw_key_meta *m, const hw_key *key)
{
	char hex[129];

	hw_hex(key->id, key->id_len, hex);
	for (size_t i = 0; i < m->nversions; i++)
		if (strcmp(m->versions[i].id_hex, hex) == 0)
			return &m->versions[i];
	return NULL;
}

void
hw_key_cache_state(hw_key *key, const hw_key_meta *m)
{
	pthread_mutex_lock(&key->ctx->lock);
	key->state = m ? m->state : HW_KEY_STATE_ENABLED;
	key->deletion_date = m ? m->deletion_date : 0;
	key->state_ms = mono_ms();
	pthread_mutex_unlock(&key->ctx->lock);
}

/*
 * Which logical key the object is a version of: base and version, and
 * the metadata that applies (*m NULL if none), with its handle.
 */
static CK_RV
identify_s(hw_ctx *ctx, CK_SESSION_HANDLE s, hw_key *key, hw_key_meta **m, CK_OBJECT_HANDLE *mh)
{
	size_t bl;
	unsigned n;
	const hw_key_version_info *v;
	CK_RV rv;

	*m = NULL;
	if (key->id_len && hw_label_is_version(key->label, &bl, &n)) {
		char base[129];
		snprintf(base, sizeof(base), "%.*s", (int)bl, key->label);
		rv = hw_meta_read_s(ctx, s, base, m, mh);
		if (rv != CKR_OK)
			return rv;
		if (*m && (v = hw_meta_version_of(*m, key)) && v->number == n) {
			snprintf(key->base, sizeof(key->base), "%s", base);
			key->version = n;
			return CKR_OK;
		}
		hw_key_meta_free(*m);
		*m = NULL;
	}
	snprintf(key->base, sizeof(key->base), "%s", key->label);
	key->version = 1;
	if (!key->label[0] || !key->id_len)
		return CKR_OK;
	rv = hw_meta_read_s(ctx, s, key->label, m, mh);
	if (rv != CKR_OK)
		return rv;
	if (*m && (v = hw_meta_version_of(*m, key))) {
		key->version = v->number;
		return CKR_OK;
	}
	/* Metadata of another object of that label (a key destroyed and made
	 * again without it): it does not apply. */
	hw_key_meta_free(*m);
	*m = NULL;
	*mh = CK_INVALID_HANDLE;
	return CKR_OK;
}

/* The state's verdict on a use of the key; may purge it (on session s). */
static CK_RV
judge_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *base, const hw_key_meta *m,
        CK_OBJECT_HANDLE mh, hw_key_state state, int64_t deletion)
{
	char when[40];
	CK_RV rv;

	if (state == HW_KEY_STATE_DISABLED)
		return hw_op_fail(hw_fail(HW_ERR_KEY_DISABLED, 0, "key '%s' is disabled (hsmwrap key "
		                          "enable '%s')", base, base));
	if (state != HW_KEY_STATE_PENDING_DELETION)
		return CKR_OK;
	hw_fmt_utc(deletion, when, sizeof(when));
	if (hw_meta_now(ctx) < deletion)
		return hw_op_fail(hw_fail(HW_ERR_KEY_PENDING_DELETION, 0, "key '%s' is pending "
		                          "deletion on %s (hsmwrap key cancel-deletion '%s')", base,
		                          when, base));
	if (m) {
		rv = hw_meta_purge_s(ctx, s, m, mh);
		if (rv != CKR_OK)
			return rv;
	}
	return hw_op_fail(hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "key '%s' (its deletion date %s has "
	                          "passed: it was destroyed now)", base, when));
}

/*
 * identify_s on a copy of the key's identity, taken and published under
 * the context lock: other threads may be using the same hw_key.
 */
static CK_RV
identify_copy(hw_key *key, hw_ctx *ctx, CK_SESSION_HANDLE s, hw_key *probe, hw_key_meta **m,
              CK_OBJECT_HANDLE *mh)
{
	CK_RV rv;

	memset(probe, 0, sizeof(*probe));
	pthread_mutex_lock(&ctx->lock);
	memcpy(probe->label, key->label, sizeof(probe->label));
	memcpy(probe->id, key->id, sizeof(probe->id));
	probe->id_len = key->id_len;
	probe->cls = key->cls;
	probe->can_encrypt = key->can_encrypt;
	probe->can_wrap = key->can_wrap;
	probe->can_sign = key->can_sign;
	pthread_mutex_unlock(&ctx->lock);
	rv = identify_s(ctx, s, probe, m, mh);
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&ctx->lock);
	memcpy(key->base, probe->base, sizeof(key->base));
	key->version = probe->version;
	pthread_mutex_unlock(&ctx->lock);
	return CKR_OK;
}

CK_RV
hw_key_state_check(hw_key *key, CK_SESSION_HANDLE s)
{
	hw_ctx *ctx = key->ctx;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	hw_key_state state;
	int64_t deletion;
	char base[129];
	CK_RV rv;

	pthread_mutex_lock(&ctx->lock);
	if (key->state_ms && mono_ms() - key->state_ms < STATE_TTL_MS) {
		state = key->state;
		deletion = key->deletion_date;
		snprintf(base, sizeof(base), "%s", key->base);
		pthread_mutex_unlock(&ctx->lock);
		if (state == HW_KEY_STATE_ENABLED)
			return CKR_OK;
		/* Past the deletion date: read again, purging needs the metadata. */
		if (state != HW_KEY_STATE_PENDING_DELETION || hw_meta_now(ctx) < deletion)
			return judge_s(ctx, s, base, NULL, CK_INVALID_HANDLE, state, deletion);
	} else {
		pthread_mutex_unlock(&ctx->lock);
	}
	{
		hw_key probe;

		rv = identify_copy(key, ctx, s, &probe, &m, &mh);
		if (rv != CKR_OK)
			return rv;
		hw_key_cache_state(key, m);
		rv = judge_s(ctx, s, probe.base, m, mh, m ? m->state : HW_KEY_STATE_ENABLED,
		             m ? m->deletion_date : 0);
	}
	hw_key_meta_free(m);
	return rv;
}

/* ---------------------------------------------------------------- */
/* Identification after a lookup                                     */

typedef struct {
	hw_key *key;
	hw_key_meta *m;             /* out */
	bool purged;
} ident_arg;

static CK_RV
op_identify(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	ident_arg *a = arg;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	CK_RV rv;

	hw_key probe;

	hw_key_meta_free(a->m);
	a->m = NULL;
	rv = identify_copy(a->key, ctx, s, &probe, &a->m, &mh);
	if (rv != CKR_OK)
		return rv;
	/* Past its deletion date: destroyed now, on this first use. */
	if (a->m && a->m->state == HW_KEY_STATE_PENDING_DELETION &&
	    hw_meta_now(ctx) >= a->m->deletion_date) {
		rv = judge_s(ctx, s, probe.base, a->m, mh, a->m->state, a->m->deletion_date);
		a->purged = true;
	}
	return rv;
}

static hw_err
identify(hw_key *key, hw_key_meta **m)
{
	ident_arg a = { key, NULL, false };
	hw_err e = hw_ctx_run(key->ctx, op_identify, &a, "reading key metadata");

	if (e != HW_OK) {
		hw_key_meta_free(a.m);
		return e;
	}
	hw_key_cache_state(key, a.m);
	if (m)
		*m = a.m;
	else
		hw_key_meta_free(a.m);
	return HW_OK;
}

hw_err
hw_key_ensure_identified(hw_key *key)
{
	bool known;

	pthread_mutex_lock(&key->ctx->lock);
	known = key->base[0] != '\0';
	pthread_mutex_unlock(&key->ctx->lock);
	return known ? HW_OK : identify(key, NULL);
}

hw_err
hw_key_identify(hw_key **keyp, bool current)
{
	hw_key *key = *keyp, *cur = NULL;
	hw_key_meta *m = NULL;
	char want[140];
	hw_err e;

	e = identify(key, &m);
	if (e != HW_OK || !current || !m || key->version != 1 || m->current == 1 ||
	    strcmp(key->base, key->label) != 0) {
		hw_key_meta_free(m);
		return e;
	}
	/* Found by its plain label: the logical key, i.e. its current version. */
	hw_version_label(key->base, m->current, want, sizeof(want));
	{
		uint8_t id[64];
		size_t idn = 0;
		for (size_t i = 0; i < m->nversions; i++)
			if (m->versions[i].number == m->current)
				(void)hw_unhex(m->versions[i].id_hex, id, sizeof(id), &idn);
		e = hw_key_find_by_id(key->ctx, id, idn, &cur);
	}
	if (e == HW_ERR_KEY_NOT_FOUND)
		e = hw_fail(e, 0, "version %u of key '%s' (the current one) is missing from the "
		            "token", m->current, key->base);
	if (e == HW_OK && (strcmp(cur->label, want) != 0 || cur->cls != key->cls)) {
		e = hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "the current version of key '%s' should be "
		            "labelled '%s', the token's object is '%s'", key->base, want, cur->label);
	}
	if (e == HW_OK) {
		snprintf(cur->base, sizeof(cur->base), "%s", key->base);
		cur->version = m->current;
		hw_key_cache_state(cur, m);
		hw_key_free(key);
		*keyp = cur;
		cur = NULL;
	}
	hw_key_free(cur);
	hw_key_meta_free(m);
	return e;
}

HW_EXPORT const char *
hw_key_logical_label(hw_key *key)
{
	if (!key)
		return NULL;
	if (hw_key_ensure_identified(key) != HW_OK)
		return key->label;
	return key->base;
}

HW_EXPORT unsigned
hw_key_version(hw_key *key)
{
	if (!key || hw_key_ensure_identified(key) != HW_OK)
		return 0;
	return key->version;
}

/* A key object by its exact CKA_LABEL (no current-version redirect), identified. */
hw_err
hw_key_find_label_exact(hw_ctx *ctx, const char *label, hw_key **out)
{
	hw_err e = hw_key_find_label_raw(ctx, label, out);

	if (e == HW_OK && (e = hw_key_identify(out, false)) != HW_OK) {
		hw_key_free(*out);
		*out = NULL;
	}
	return e;
}

hw_err
hw_key_find_sibling(hw_key *key, const uint8_t *name, size_t nl, hw_key **out)
{
	char label[129];
	size_t bl;
	unsigned n;
	hw_err e;

	if (nl == 0 || nl > 128 || memchr(name, 0, nl))
		return HW_ERR_KEY_NOT_FOUND;
	memcpy(label, name, nl);
	label[nl] = '\0';
	if ((e = hw_key_ensure_identified(key)) != HW_OK)
		return e;
	if (strcmp(label, key->base) != 0 &&
	    !(hw_label_is_version(label, &bl, &n) && bl == strlen(key->base) &&
	      memcmp(label, key->base, bl) == 0))
		return HW_ERR_KEY_NOT_FOUND;
	e = hw_key_find_label_exact(key->ctx, label, out);
	if (e == HW_OK && strcmp((*out)->base, key->base) != 0) {
		/* A look-alike label that the metadata does not list. */
		hw_key_free(*out);
		*out = NULL;
		return HW_ERR_KEY_NOT_FOUND;
	}
	return e;
}

/* ---------------------------------------------------------------- */
/* Creating and changing metadata                                    */


typedef struct {
	hw_key *key;
	hw_meta_fn fn;
	void *fnarg;
	bool create;                /* a new key: replace whatever is there */
	hw_purpose purpose;
	hw_key_meta *result;        /* out */
} update_arg;

static CK_RV
op_update(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	update_arg *a = arg;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	int64_t now = hw_meta_now(ctx);
	hw_err e;
	CK_RV rv;

	hw_key_meta_free(a->result);
	a->result = NULL;
	rv = hw_meta_read_s(ctx, s, a->key->base, &m, &mh);
	if (rv != CKR_OK)
		return rv;
	if (a->create) {
		/* Left over from a key of that label destroyed outside hsmwrap:
		 * replaced, with a newer serial in case removing it fails. */
		uint32_t serial = m ? m->serial : 0;
		hw_key_meta_free(m);
		m = hw_meta_defaults(a->key);
		if (!m)
			return CKR_HOST_MEMORY;
		m->serial = serial;
		m->purpose = a->purpose;
		m->created = now;
		m->versions[0].created = now;
	} else if (m && !hw_meta_version_of(m, a->key)) {
		hw_key_meta_free(m);
		return hw_op_fail(hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "the metadata object labelled "
		                          "'%s' belongs to another key object", a->key->base));
	}
	if (!m) {
		m = hw_meta_defaults(a->key);
		if (!m)
			return CKR_HOST_MEMORY;
	}
	if (!a->create && m->state == HW_KEY_STATE_PENDING_DELETION && now >= m->deletion_date) {
		rv = judge_s(ctx, s, a->key->base, m, mh, m->state, m->deletion_date);
		hw_key_meta_free(m);
		return rv;
	}
	if (a->fn && (e = a->fn(m, a->fnarg, now)) != HW_OK) {
		hw_key_meta_free(m);
		return hw_op_fail(e);
	}
	rv = hw_meta_write_s(ctx, s, &mh, m);
	if (rv != CKR_OK) {
		hw_key_meta_free(m);
		return rv;
	}
	a->result = m;
	return CKR_OK;
}

hw_err
hw_meta_update(hw_key *key, hw_meta_fn fn, void *fnarg, hw_key_meta **result)
{
	update_arg a;
	hw_err e;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	hw_clear_error();
	if ((e = hw_ctx_require(key->ctx, HW_CAP_DATA_OBJECTS, "key lifecycle")) != HW_OK ||
	    (e = hw_key_ensure_identified(key)) != HW_OK)
		return e;
	memset(&a, 0, sizeof(a));
	a.key = key;
	a.fn = fn;
	a.fnarg = fnarg;
	/* Read, change and write on one session; running it again reads
	 * again. The lock keeps a concurrent updater's change from being lost. */
	if ((e = hw_token_lock(key->ctx)) != HW_OK)
		return e;
	e = hw_ctx_run(key->ctx, op_update, &a, "updating key metadata");
	hw_token_unlock();
	if (e != HW_OK) {
		hw_key_meta_free(a.result);
		return e;
	}
	hw_key_cache_state(key, a.result);
	if (result)
		*result = a.result;
	else
		hw_key_meta_free(a.result);
	return HW_OK;
}

/* The record of a new key; on failure the caller destroys the key again. */
hw_err
hw_meta_create(hw_key *key, hw_purpose purpose)
{
	update_arg a;
	hw_err e;

	memset(&a, 0, sizeof(a));
	snprintf(key->base, sizeof(key->base), "%s", key->label);
	key->version = 1;
	/* Such a token keeps keys without versions or states (token/caps.c). */
	if (!hw_ctx_can(key->ctx, HW_CAP_DATA_OBJECTS))
		return HW_OK;
	a.key = key;
	a.create = true;
	a.purpose = purpose;
	e = hw_ctx_run_once(key->ctx, op_update, &a, "creating the key's metadata object");
	if (e == HW_OK)
		hw_key_cache_state(key, a.result);
	hw_key_meta_free(a.result);
	return e;
}

/* ---------------------------------------------------------------- */
/* Destruction outside the deletion window                           */

/* After hw_key_destroy: the version goes from the metadata too. */
static CK_RV
op_forget(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	hw_key *key = arg;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	const hw_key_version_info *v;
	CK_RV rv = hw_meta_read_s(ctx, s, key->base, &m, &mh);

	if (rv != CKR_OK || !m)
		return rv;
	v = hw_meta_version_of(m, key);
	if (v && m->nversions == 1) {
		rv = meta_destroy_s(ctx, s, m->label);
	} else if (v) {
		size_t i = (size_t)(v - m->versions);
		unsigned gone = v->number;
		memmove(&m->versions[i], &m->versions[i + 1],
		        (m->nversions - i - 1) * sizeof(*m->versions));
		m->nversions--;
		/* The newest remaining version takes over. */
		if (m->current == gone)
			m->current = m->versions[m->nversions - 1].number;
		rv = hw_meta_write_s(ctx, s, &mh, m);
	}
	hw_key_meta_free(m);
	return rv;
}

hw_err
hw_meta_forget(hw_key *key)
{
	hw_err e = hw_key_ensure_identified(key);

	if (e != HW_OK)
		return e;
	return hw_ctx_run(key->ctx, op_forget, key, "removing the version from the key's metadata");
}
