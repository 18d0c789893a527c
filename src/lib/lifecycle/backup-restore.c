/*
 * M-of-N backup of backup-able keys: the restore ceremony (the file and
 * share codecs are format/backup-file.c and format/backup-share.c; the
 * design is in lifecycle/backup-create.c).
 *
 * A restore refuses to start while the target holds a key of an entry's
 * label or id, or metadata of an entry's or the backup's metadata labels.
 */
#include "internal.h"
#include "format/backup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

typedef struct {
	const bk_file *f;
	const uint8_t *bk;
	bool backupable;
	CK_OBJECT_HANDLE *made;     /* everything created, for the rollback */
	size_t nmade, capmade;
} restore_arg;

/* Handles that could not be destroyed stay listed for the next try. */
static CK_RV
destroy_made(hw_ctx *ctx, CK_SESSION_HANDLE s, restore_arg *a)
{
	CK_RV r;

	while (a->nmade > 0) {
		r = ctx->fl->C_DestroyObject(s, a->made[a->nmade - 1]);
		if (r != CKR_OK && r != CKR_OBJECT_HANDLE_INVALID)
			return r;
		a->nmade--;
	}
	return CKR_OK;
}

static CK_RV
find_some(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n,
          CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *got)
{
	CK_RV rv = ctx->fl->C_FindObjectsInit(s, t, n), r;

	*got = 0;
	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_FindObjects(s, out, max, got);
	r = ctx->fl->C_FindObjectsFinal(s);
	return rv != CKR_OK ? rv : r;
}

/*
 * Calls fn for every object on the token that a restore of f creates:
 * keys (any class) with an entry's CKA_ID, data objects with a metadata
 * object's label and application, and lifecycle metadata labelled as an
 * entry even if the backup holds none for it (metadata left on the token
 * would otherwise be taken for the restored key's). Handles are not trusted across
 * sessions (SoftHSMv2 drops them when the last session closes or at
 * logout), so cleanup finds the objects again by these identities; the
 * restore refuses to start while any of them exists, so all are ours.
 */
static CK_RV
each_restored(hw_ctx *ctx, CK_SESSION_HANDLE s, const bk_file *f, bool destroy, bool *any)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY };
	CK_OBJECT_CLASS datac = CKO_DATA;
	CK_OBJECT_HANDLE hs[8];
	CK_ULONG got;
	CK_RV rv = hw_session_check_login(ctx, s);

	*any = false;
	if (rv != CKR_OK)
		return rv;
	for (size_t i = 0; i < f->nentries; i++) {
		const bk_entry *e = &f->entries[i];

		for (size_t c = 0; c < (size_t)e->nmeta + 4; c++) {
			CK_OBJECT_CLASS cls = c < 3 ? classes[c] : datac;
			const bk_meta *md = c < 4 ? NULL : &e->meta[c - 4];
			CK_ATTRIBUTE t[3] = { { CKA_CLASS, &cls, sizeof(cls) } };
			CK_ULONG n = 1;

			if (c < 3) {
				t[n++] = (CK_ATTRIBUTE){ CKA_ID, (void *)e->id, e->id_len };
			} else if (!md) {
				t[n++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)e->label, e->label_len };
				t[n++] = (CK_ATTRIBUTE){ CKA_APPLICATION, (void *)HW_META_APP,
				                         sizeof(HW_META_APP) - 1 };
			} else {
				t[n++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)md->label, md->label_len };
				t[n++] = (CK_ATTRIBUTE){ CKA_APPLICATION, (void *)md->app, md->app_len };
			}
			do {
				if ((rv = find_some(ctx, s, t, n, hs, 8, &got)) != CKR_OK)
					return rv;
				if (got)
					*any = true;
				for (CK_ULONG k = 0; destroy && k < got; k++)
					if ((rv = ctx->fl->C_DestroyObject(s, hs[k])) != CKR_OK)
						return rv;
			} while (destroy && got > 0);
		}
	}
	return CKR_OK;
}

static CK_RV
op_destroy_made(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	restore_arg *a = arg;
	bool any;
	CK_RV rv = each_restored(ctx, s, a->f, true, &any);

	if (rv == CKR_OK)
		a->nmade = 0;
	return rv;
}

typedef struct {
	const bk_file *f;
	bool any;
} precheck_arg;

static CK_RV
op_precheck(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	precheck_arg *a = arg;

	return each_restored(ctx, s, a->f, false, &a->any);
}

static CK_RV
restore_entry(hw_ctx *ctx, CK_SESSION_HANDLE s, restore_arg *a, const bk_entry *e,
              CK_OBJECT_HANDLE bkh)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM m = { ctx->kwp_mech, NULL, 0 };
	CK_OBJECT_CLASS cls = e->cls, pubc = CKO_PUBLIC_KEY, datac = CKO_DATA;
	CK_KEY_TYPE kt = e->ktype;
	CK_BBOOL priv = (e->flags & HWBK_F_PRIVATE) ? CK_TRUE : CK_FALSE;
#define FL(f) ((e->flags & (f)) ? (void *)&yes : (void *)&no)
	CK_ATTRIBUTE t[24];
	CK_ULONG n = 0;
	CK_OBJECT_HANDLE h;
	CK_RV rv;

	t[n++] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	t[n++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &kt, sizeof(kt) };
	t[n++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)e->label, e->label_len };
	t[n++] = (CK_ATTRIBUTE){ CKA_ID, (void *)e->id, e->id_len };
	t[n++] = (CK_ATTRIBUTE){ CKA_TOKEN, (void *)&yes, sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &priv, sizeof(priv) };
	t[n++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, (void *)&yes, sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, a->backupable ? (void *)&yes : (void *)&no,
	                         sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_WRAP_WITH_TRUSTED, a->backupable ? (void *)&yes : (void *)&no,
	                         sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_DECRYPT, FL(HWBK_F_DECRYPT), sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_UNWRAP, FL(HWBK_F_UNWRAP), sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_SIGN, FL(HWBK_F_SIGN), sizeof(CK_BBOOL) };
	t[n++] = (CK_ATTRIBUTE){ CKA_DERIVE, FL(HWBK_F_DERIVE), sizeof(CK_BBOOL) };
	if (e->cls == CKO_SECRET_KEY) {
		t[n++] = (CK_ATTRIBUTE){ CKA_ENCRYPT, FL(HWBK_F_ENCRYPT), sizeof(CK_BBOOL) };
		t[n++] = (CK_ATTRIBUTE){ CKA_WRAP, FL(HWBK_F_WRAP), sizeof(CK_BBOOL) };
		t[n++] = (CK_ATTRIBUTE){ CKA_VERIFY, FL(HWBK_F_VERIFY), sizeof(CK_BBOOL) };
	}
	if (e->nmech)
		t[n++] = (CK_ATTRIBUTE){ CKA_ALLOWED_MECHANISMS, (void *)e->mechs,
		                         e->nmech * sizeof(CK_MECHANISM_TYPE) };
	rv = ctx->fl->C_UnwrapKey(s, &m, bkh, (CK_BYTE_PTR)e->wrapped, e->wrapped_len, t, n, &h);
	if (rv != CKR_OK)
		return rv;
	a->made[a->nmade++] = h;
	if (e->cls == CKO_SECRET_KEY && e->kcv_len == 3) {
		uint8_t kcv[3];
		char got[7], want[7];
		bool have = false;

		rv = hw_kcv_of_unwrapped(ctx, s, h, &m, bkh, e->wrapped, e->wrapped_len, kcv, &have);
		if (rv != CKR_OK)
			return rv;
		hw_hex(e->kcv, 3, want);
		if (!have)
			return hw_op_fail(hw_fail(HW_ERR_UNSUPPORTED, 0, "the token cannot show the KCV "
			                          "of '%.*s' to compare it with the backup's %s",
			                          (int)e->label_len, e->label, want));
		hw_hex(kcv, 3, got);
		if (strcmp(got, want) != 0)
			return hw_op_fail(hw_fail(HW_ERR_INTEGRITY, 0, "restored key '%.*s' has KCV %s, "
			                          "the backup recorded %s", (int)e->label_len, e->label,
			                          got, want));
	}

	if (e->cls == CKO_PRIVATE_KEY) {
		bool rsa = e->ktype == CKK_RSA;
		CK_ATTRIBUTE p[] = {
			{ CKA_CLASS, &pubc, sizeof(pubc) },
			{ CKA_KEY_TYPE, &kt, sizeof(kt) },
			{ CKA_LABEL, (void *)e->label, e->label_len },
			{ CKA_ID, (void *)e->id, e->id_len },
			{ CKA_TOKEN, (void *)&yes, sizeof(CK_BBOOL) },
			{ CKA_PRIVATE, (void *)&no, sizeof(CK_BBOOL) },
			{ CKA_VERIFY, FL(HWBK_F_SIGN), sizeof(CK_BBOOL) },
			{ CKA_ENCRYPT, FL(HWBK_F_DECRYPT), sizeof(CK_BBOOL) },
			{ CKA_WRAP, FL(HWBK_F_UNWRAP), sizeof(CK_BBOOL) },
			{ rsa ? CKA_MODULUS : CKA_EC_PARAMS, (void *)e->pub_a, e->pub_a_len },
			{ rsa ? CKA_PUBLIC_EXPONENT : CKA_EC_POINT, (void *)e->pub_b, e->pub_b_len },
		};
		rv = ctx->fl->C_CreateObject(s, p, sizeof(p) / sizeof(p[0]), &h);
		if (rv != CKR_OK)
			return rv;
		a->made[a->nmade++] = h;
	}
#undef FL
	for (unsigned i = 0; i < e->nmeta; i++) {
		const bk_meta *md = &e->meta[i];
		CK_BBOOL mp = md->private_ ? CK_TRUE : CK_FALSE;
		CK_ATTRIBUTE d[] = {
			{ CKA_CLASS, &datac, sizeof(datac) },
			{ CKA_TOKEN, (void *)&yes, sizeof(CK_BBOOL) },
			{ CKA_PRIVATE, &mp, sizeof(mp) },
			{ CKA_APPLICATION, (void *)md->app, md->app_len },
			{ CKA_LABEL, (void *)md->label, md->label_len },
			{ CKA_VALUE, (void *)md->value, md->value_len },
		};
		rv = ctx->fl->C_CreateObject(s, d, sizeof(d) / sizeof(d[0]), &h);
		if (rv != CKR_OK)
			return rv;
		a->made[a->nmade++] = h;
	}
	return CKR_OK;
}

static CK_RV
op_restore(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	restore_arg *a = arg;
	CK_OBJECT_CLASS sec = CKO_SECRET_KEY;
	CK_KEY_TYPE aes = CKK_AES;
	CK_MECHANISM_TYPE allowed = ctx->kwp_mech;
	/* Unwrap-only, in this session only: it never reaches the token's store. */
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &sec, sizeof(sec) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_VALUE, (void *)a->bk, HWBK_KEY_LEN },
		{ CKA_TOKEN, (void *)&no, sizeof(no) },
		{ CKA_PRIVATE, (void *)&yes, sizeof(yes) },
		{ CKA_SENSITIVE, (void *)&yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, (void *)&no, sizeof(no) },
		{ CKA_UNWRAP, (void *)&yes, sizeof(yes) },
		{ CKA_WRAP, (void *)&no, sizeof(no) },
		{ CKA_ENCRYPT, (void *)&no, sizeof(no) },
		{ CKA_DECRYPT, (void *)&no, sizeof(no) },
		{ CKA_ALLOWED_MECHANISMS, &allowed, sizeof(allowed) },
	};
	CK_OBJECT_HANDLE bkh = CK_INVALID_HANDLE;
	CK_RV rv;

	/* A second run (after a lost session) starts from nothing. */
	if (a->nmade > 0) {
		bool any;
		if ((rv = each_restored(ctx, s, a->f, true, &any)) != CKR_OK)
			return rv;
		a->nmade = 0;
	}
	if ((rv = hw_session_check_login(ctx, s)) != CKR_OK)
		return rv;
	rv = ctx->fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &bkh);
	for (size_t i = 0; rv == CKR_OK && i < a->f->nentries; i++)
		rv = restore_entry(ctx, s, a, &a->f->entries[i], bkh);
	if (bkh != CK_INVALID_HANDLE)
		(void)ctx->fl->C_DestroyObject(s, bkh);
	/* On a lost session the runner runs us again, which cleans up first;
	 * otherwise what is left here is removed by the caller's rollback. */
	if (rv != CKR_OK && rv != CKR_SESSION_HANDLE_INVALID && rv != CKR_SESSION_CLOSED)
		(void)destroy_made(ctx, s, a);
	return rv;
}

static hw_err
combine_shares(const bk_file *f, const hw_backup_share *shares, size_t n, uint8_t bk[HWBK_KEY_LEN])
{
	uint8_t xs[HW_SHARES_MAX];
	const uint8_t *ys[HW_SHARES_MAX];
	uint8_t kc[16];
	char id[2 * HW_BACKUP_ID_LEN + 1];
	hw_err e;

	if (n == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no shares");
	if (n > HW_SHARES_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "too many shares");
	for (size_t i = 0; i < n; i++) {
		const hw_backup_share *s = &shares[i];

		if (memcmp(s->backup_id, f->backup_id, HW_BACKUP_ID_LEN) != 0) {
			hw_hex(s->backup_id, HW_BACKUP_ID_LEN, id);
			return hw_fail(HW_ERR_WRONG_KEY, 0, "share %u belongs to another backup (%s)",
			               s->index, id);
		}
		if (s->threshold != f->threshold || s->custodians != f->custodians ||
		    !bk_share_numbers_ok(s->index, s->threshold, s->custodians))
			return hw_fail(HW_ERR_INTEGRITY, 0, "share %u says %u of %u; the backup file "
			               "says %u of %u", s->index, s->threshold, s->custodians,
			               f->threshold, f->custodians);
		for (size_t j = 0; j < i; j++)
			if (shares[j].index == s->index)
				return hw_fail(HW_ERR_INVALID_ARG, 0, "share %u was given twice", s->index);
		xs[i] = (uint8_t)s->index;
		ys[i] = s->share;
	}
	if (n < f->threshold)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "%zu share%s given, this backup needs %u",
		               n, n == 1 ? "" : "s", f->threshold);
	if (hw_shamir_combine(xs, ys, n, HWBK_KEY_LEN, bk) != 0)
		return hw_fail(HW_ERR_CRYPTO, 0, "Shamir combination");
	if ((e = bk_keycheck(bk, f->salt, kc)))
		return e;
	if (CRYPTO_memcmp(kc, f->keycheck, sizeof(kc)) != 0)
		return hw_fail(HW_ERR_INTEGRITY, 0, "the shares do not rebuild this backup's key: "
		               "a share is wrong (altered consistently with its check value), or "
		               "the file's header was altered");
	return HW_OK;
}

HW_EXPORT hw_err
hw_backup_restore(hw_ctx *ctx, const uint8_t *file, size_t len, const hw_backup_share *shares,
                  size_t nshares, unsigned flags, hw_backup_info **info)
{
	uint8_t *bk, tag[32];
	bk_file f;
	restore_arg ra;
	size_t nobj = 0;
	hw_err e;

	if (!ctx || !file || !shares || (flags & ~(unsigned)HW_RESTORE_BACKUPABLE))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_backup_restore");
	hw_clear_error();
	memset(&ra, 0, sizeof(ra));
	if ((e = bk_file_parse(file, len, &f)))
		return e;
	/* The rebuilt backup key: locked, out of core dumps, wiped at the end. */
	if (!(bk = hw_secmem_alloc(HWBK_KEY_LEN))) {
		bk_file_free(&f);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	if ((e = combine_shares(&f, shares, nshares, bk)))
		goto out;
	if ((e = bk_file_tag(bk, f.salt, file, f.signed_len, tag)))
		goto out;
	if (CRYPTO_memcmp(tag, f.tag, sizeof(tag)) != 0) {
		e = hw_fail(HW_ERR_INTEGRITY, 0, "the backup file was altered (its authentication "
		            "tag does not match)");
		goto out;
	}
	if ((e = hw_ctx_login(ctx)))
		goto out;
	if ((e = hw_ctx_require(ctx, HW_CAP_AES_KWP | HW_CAP_DATA_OBJECTS, "backup restore")))
		goto out;
	for (size_t i = 0; i < f.nentries; i++) {
		char label[129];
		const bk_entry *en = &f.entries[i];
		hw_key *k = NULL;

		memcpy(label, en->label, en->label_len);
		label[en->label_len] = '\0';
		if ((e = hw_label_free_check(ctx, label)))
			goto out;
		/* A rotated key's metadata names the logical key, which the backup
		 * may hold no object of (version 1 destroyed): that label must be
		 * free too, or the metadata would apply to a key of the token. */
		for (size_t j = 0; j < en->nmeta; j++) {
			const bk_meta *md = &en->meta[j];
			char ml[129];

			if (md->app_len != sizeof(HW_META_APP) - 1 ||
			    memcmp(md->app, HW_META_APP, md->app_len) != 0 || md->label_len > 128 ||
			    (md->label_len == en->label_len && !memcmp(md->label, en->label,
			                                               md->label_len)))
				continue;
			memcpy(ml, md->label, md->label_len);
			ml[md->label_len] = '\0';
			if ((e = hw_label_free_check(ctx, ml)))
				goto out;
		}
		if ((e = hw_key_find_by_id(ctx, en->id, en->id_len, &k)) == HW_OK ||
		    e == HW_ERR_KEY_AMBIGUOUS) {
			hw_key_free(k);
			e = hw_fail(HW_ERR_KEY_EXISTS, 0, "a key with the id of '%s' exists", label);
			goto out;
		}
		if (e != HW_ERR_KEY_NOT_FOUND)
			goto out;
		hw_clear_error();
		e = HW_OK;
		nobj += 2 + en->nmeta;
	}
	{
		precheck_arg pa = { &f, false };
		if ((e = hw_ctx_run(ctx, op_precheck, &pa, "checking the token for the backup's "
		                    "keys")))
			goto out;
		if (pa.any) {
			e = hw_fail(HW_ERR_KEY_EXISTS, 0, "the token holds objects with the ids of "
			            "the backup's keys or its metadata objects already");
			goto out;
		}
	}
	ra.f = &f;
	ra.bk = bk;
	ra.backupable = flags & HW_RESTORE_BACKUPABLE;
	ra.capmade = nobj;
	if (!(ra.made = calloc(nobj, sizeof(*ra.made)))) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto out;
	}
	if ((e = hw_ctx_run_once(ctx, op_restore, &ra, "restoring keys")))
		goto rollback;
	/* The token computed the check values of what it unwrapped. */
	for (size_t i = 0; i < f.nentries; i++) {
		const bk_entry *en = &f.entries[i];
		char want[65];
		hw_key_info ki;
		hw_key *k = NULL;

		if ((e = hw_key_find_by_id(ctx, en->id, en->id_len, &k)) ||
		    (e = hw_key_info_get(k, &ki))) {
			hw_key_free(k);
			goto rollback;
		}
		hw_key_free(k);
		hw_hex(en->kcv, en->kcv_len, want);
		/* Secret keys were compared inside the op; pairs by fingerprint here. */
		if (en->cls == CKO_PRIVATE_KEY && en->kcv_len && strcmp(ki.kcv, want) != 0) {
			e = hw_fail(HW_ERR_INTEGRITY, 0, "restored key '%s' has KCV %s, the backup "
			            "recorded %s", ki.label, ki.kcv, want);
			goto rollback;
		}
	}
	if (info && (e = bk_info_make(&f, info)))
		goto rollback;
	goto out;
rollback:
	{
		/* Keep the first error for the caller; the rollback's own can only be logged. */
		char detail[512];
		unsigned long ck = hw_last_ckrv();
		snprintf(detail, sizeof(detail), "%s", hw_last_detail());
		(void)hw_ctx_run(ctx, op_destroy_made, &ra, "removing partly restored keys");
		hw_fail(e, ck, "%.120s%s", detail, ra.nmade ? " (and some partly restored objects "
		        "could not be removed)" : "; nothing was kept");
	}
out:
	hw_secmem_free(bk);
	free(ra.made);
	bk_file_free(&f);
	return e;
}
