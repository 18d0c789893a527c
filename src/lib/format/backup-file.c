/*
 * The backup file (.hwb) codec: parse, write, the keys derived from the
 * backup key that check and authenticate it, and the summary shown by
 * `backup show`. Pure host code on bytes, no HSM (format/backup.h has the
 * layout); the ceremonies that produce and consume it are
 * lifecycle/backup-create.c and lifecycle/backup-restore.c.
 */
#include "internal.h"
#include "format/backup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

static const uint8_t magic[4] = { 'H', 'W', 'B', 'K' };

void
bk_file_free(bk_file *f)
{
	free(f->entries);
	f->entries = NULL;
}

/* ---------------------------------------------------------------- */
/* Parsing                                                           */

static hw_err
parse_entry(hw_rbuf *r, bk_entry *e)
{
	uint32_t m;
	hw_err err;

	if ((err = hw_rbuf_u32(r, &e->cls)) || (err = hw_rbuf_u32(r, &e->ktype)) ||
	    (err = hw_rbuf_str16(r, &e->label, &e->label_len)) ||
	    (err = hw_rbuf_str16(r, &e->id, &e->id_len)) ||
	    (err = hw_rbuf_u32(r, &e->value_len)) || (err = hw_rbuf_u32(r, &e->flags)) ||
	    (err = hw_rbuf_u16(r, &e->nmech)))
		return err;
	if (e->cls != CKO_SECRET_KEY && e->cls != CKO_PRIVATE_KEY)
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry of unknown class");
	if (e->cls == CKO_SECRET_KEY ? e->ktype != CKK_AES
	                             : e->ktype != CKK_RSA && e->ktype != CKK_EC)
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry of unknown key type");
	if (e->label_len == 0 || e->label_len > 128 || memchr(e->label, 0, e->label_len))
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry label");
	if (e->id_len == 0 || e->id_len > 64)
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry id");
	if (e->cls == CKO_SECRET_KEY && e->value_len != 16 && e->value_len != 24 &&
	    e->value_len != 32)
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry key length");
	if (e->flags & ~(uint32_t)HWBK_F_ALL)
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry flags");
	if (e->nmech > HWBK_MAX_MECHS)
		return hw_fail(HW_ERR_FORMAT, 0, "too many allowed mechanisms");
	for (unsigned i = 0; i < e->nmech; i++) {
		if ((err = hw_rbuf_u32(r, &m)))
			return err;
		e->mechs[i] = m;
	}
	if ((err = hw_rbuf_str16(r, &e->kcv, &e->kcv_len)) ||
	    (err = hw_rbuf_str16(r, &e->wrapped, &e->wrapped_len)) ||
	    (err = hw_rbuf_str16(r, &e->pub_a, &e->pub_a_len)) ||
	    (err = hw_rbuf_str16(r, &e->pub_b, &e->pub_b_len)) ||
	    (err = hw_rbuf_u16(r, &e->nmeta)))
		return err;
	if (e->kcv_len != 0 && e->kcv_len != (e->cls == CKO_SECRET_KEY ? 3u : 32u))
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry check value");
	if (e->wrapped_len < 16)
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry wrapped key");
	if ((e->cls == CKO_PRIVATE_KEY) != (e->pub_a_len > 0 && e->pub_b_len > 0) ||
	    (e->cls == CKO_SECRET_KEY && (e->pub_a_len || e->pub_b_len)))
		return hw_fail(HW_ERR_FORMAT, 0, "backup entry public key");
	if (e->nmeta > HWBK_MAX_META)
		return hw_fail(HW_ERR_FORMAT, 0, "too many metadata objects");
	for (unsigned i = 0; i < e->nmeta; i++) {
		bk_meta *md = &e->meta[i];
		if ((err = hw_rbuf_str16(r, &md->app, &md->app_len)) ||
		    (err = hw_rbuf_str16(r, &md->label, &md->label_len)) ||
		    (err = hw_rbuf_str16(r, &md->value, &md->value_len)) ||
		    (err = hw_rbuf_u8(r, &md->private_)))
			return err;
		if (md->private_ > 1 || md->app_len < 7 || memcmp(md->app, "hsmwrap", 7) != 0)
			return hw_fail(HW_ERR_FORMAT, 0, "backup metadata object");
	}
	return HW_OK;
}

hw_err
bk_file_parse(const uint8_t *in, size_t len, bk_file *f)
{
	const uint8_t *m;
	hw_rbuf r;
	hw_err err;

	memset(f, 0, sizeof(*f));
	if (!in || len > HWBK_FILE_MAX)
		return hw_fail(HW_ERR_FORMAT, 0, "not a backup file");
	hw_rbuf_init(&r, in, len);
	if ((err = hw_rbuf_bytes(&r, 4, &m)) || memcmp(m, magic, 4) != 0)
		return hw_fail(HW_ERR_FORMAT, 0, "not an hsmwrap backup file");
	if ((err = hw_rbuf_u8(&r, &f->version)))
		return err;
	if (f->version != HWBK_VERSION)
		return hw_fail(HW_ERR_FORMAT, 0, "backup file version %u is not supported",
		               f->version);
	if ((err = hw_rbuf_bytes(&r, HW_BACKUP_ID_LEN, &f->backup_id)) ||
	    (err = hw_rbuf_u8(&r, &f->threshold)) || (err = hw_rbuf_u8(&r, &f->custodians)) ||
	    (err = hw_rbuf_u64(&r, &f->created)) || (err = hw_rbuf_bytes(&r, 32, &f->salt)) ||
	    (err = hw_rbuf_bytes(&r, 16, &f->keycheck)) || (err = hw_rbuf_u16(&r, &f->nentries)))
		return hw_fail(HW_ERR_FORMAT, 0, "truncated backup file header");
	if (f->threshold < 2 || f->custodians < f->threshold)
		return hw_fail(HW_ERR_FORMAT, 0, "backup file threshold %u of %u", f->threshold,
		               f->custodians);
	if (f->nentries == 0 || f->nentries > HWBK_MAX_ENTRIES)
		return hw_fail(HW_ERR_FORMAT, 0, "backup file with %u keys", f->nentries);
	/* Each entry takes well over 32 bytes: a bound before allocating. */
	if ((size_t)f->nentries * 32 > hw_rbuf_left(&r))
		return hw_fail(HW_ERR_FORMAT, 0, "truncated backup file");
	f->entries = calloc(f->nentries, sizeof(*f->entries));
	if (!f->entries)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	for (unsigned i = 0; i < f->nentries; i++) {
		if ((err = parse_entry(&r, &f->entries[i]))) {
			if (err == HW_ERR_FORMAT && !*hw_last_detail())
				hw_fail(err, 0, "truncated backup entry %u", i + 1);
			bk_file_free(f);
			return err;
		}
		for (unsigned j = 0; j < i; j++) {
			bk_entry *a = &f->entries[i], *b = &f->entries[j];
			if ((a->label_len == b->label_len && !memcmp(a->label, b->label, a->label_len)) ||
			    (a->id_len == b->id_len && !memcmp(a->id, b->id, a->id_len))) {
				bk_file_free(f);
				return hw_fail(HW_ERR_FORMAT, 0, "two backup entries share a label or id");
			}
		}
	}
	f->signed_len = r.off;
	if ((err = hw_rbuf_bytes(&r, 32, &f->tag)) || hw_rbuf_left(&r) != 0) {
		bk_file_free(f);
		return hw_fail(HW_ERR_FORMAT, 0, "backup file tag missing or trailing bytes");
	}
	return HW_OK;
}

static void
type_name(const bk_entry *e, char *out, size_t n)
{
	if (e->cls == CKO_SECRET_KEY)
		snprintf(out, n, "aes%u", (unsigned)e->value_len * 8);
	else if (e->ktype == CKK_RSA) {
		size_t i = 0;
		while (i < e->pub_a_len && e->pub_a[i] == 0)
			i++;
		snprintf(out, n, "rsa%zu", (e->pub_a_len - i) * 8);
	} else if (e->pub_a_len == 10)
		snprintf(out, n, "ec-p256");
	else if (e->pub_a_len == 7)
		snprintf(out, n, "ec-p384");
	else
		snprintf(out, n, "ec");
}

hw_err
bk_info_make(const bk_file *f, hw_backup_info **out)
{
	hw_backup_info *in = calloc(1, sizeof(*in));

	if (!in || !(in->entries = calloc(f->nentries, sizeof(*in->entries)))) {
		free(in);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	in->version = f->version;
	memcpy(in->backup_id, f->backup_id, HW_BACKUP_ID_LEN);
	in->threshold = f->threshold;
	in->custodians = f->custodians;
	in->created = f->created;
	in->nentries = f->nentries;
	for (size_t i = 0; i < f->nentries; i++) {
		const bk_entry *e = &f->entries[i];
		hw_backup_entry *o = &in->entries[i];

		memcpy(o->label, e->label, e->label_len);
		o->label[e->label_len] = '\0';
		hw_hex(e->id, e->id_len, o->id_hex);
		type_name(e, o->type_name, sizeof(o->type_name));
		hw_hex(e->kcv, e->kcv_len, o->kcv);
		snprintf(o->kcv_alg, sizeof(o->kcv_alg), "%s", e->kcv_len == 0 ? "unavailable"
		         : e->cls == CKO_SECRET_KEY ? "AES-ECB-zero" : "SHA256-SPKI");
		o->nmeta = e->nmeta;
	}
	*out = in;
	return HW_OK;
}

HW_EXPORT hw_err
hw_backup_inspect(const uint8_t *file, size_t len, hw_backup_info **out)
{
	bk_file f;
	hw_err e;

	if (!file || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_backup_inspect");
	hw_clear_error();
	if ((e = bk_file_parse(file, len, &f)))
		return e;
	e = bk_info_make(&f, out);
	bk_file_free(&f);
	return e;
}

HW_EXPORT void
hw_backup_info_free(hw_backup_info *info)
{
	if (!info)
		return;
	free(info->entries);
	free(info);
}

/* ---------------------------------------------------------------- */
/* Keys derived from the backup key                                  */

static hw_err
hkdf(const uint8_t bk[HWBK_KEY_LEN], const uint8_t salt[HWBK_SALT_LEN], const char *info,
     uint8_t *out, size_t n)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM p[5];
	int ok;

	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)bk, HWBK_KEY_LEN);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, HWBK_SALT_LEN);
	p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
	p[4] = OSSL_PARAM_construct_end();
	ok = kc && EVP_KDF_derive(kc, out, n, p) == 1;
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
	return ok ? HW_OK : hw_fail(HW_ERR_CRYPTO, 0, "HKDF");
}

hw_err
bk_keycheck(const uint8_t bk[HWBK_KEY_LEN], const uint8_t salt[HWBK_SALT_LEN], uint8_t kc[16])
{
	return hkdf(bk, salt, "hsmwrap backup v1 key check", kc, 16);
}

hw_err
bk_file_tag(const uint8_t bk[HWBK_KEY_LEN], const uint8_t salt[HWBK_SALT_LEN],
            const uint8_t *data, size_t len, uint8_t tag[32])
{
	uint8_t mk[32];
	unsigned tl = 0;
	hw_err e = hkdf(bk, salt, "hsmwrap backup v1 mac", mk, sizeof(mk));

	if (e == HW_OK && (!HMAC(EVP_sha256(), mk, sizeof(mk), data, len, tag, &tl) || tl != 32))
		e = hw_fail(HW_ERR_CRYPTO, 0, "HMAC-SHA-256");
	OPENSSL_cleanse(mk, sizeof(mk));
	return e;
}

/* ---------------------------------------------------------------- */
/* Writing                                                           */

hw_err
bk_file_write(const bk_entry *entries, size_t n, const uint8_t bk[HWBK_KEY_LEN],
              const uint8_t salt[HWBK_SALT_LEN], const uint8_t *backup_id,
              unsigned threshold, unsigned custodians, uint8_t **file, size_t *filelen)
{
	uint8_t kc[16], tag[32];
	hw_wbuf w;
	hw_err e;

	if ((e = bk_keycheck(bk, salt, kc)))
		return e;
	hw_wbuf_init(&w, HWBK_FILE_MAX);
	hw_wbuf_put(&w, magic, 4);
	hw_wbuf_u8(&w, HWBK_VERSION);
	hw_wbuf_put(&w, backup_id, HW_BACKUP_ID_LEN);
	hw_wbuf_u8(&w, (uint8_t)threshold);
	hw_wbuf_u8(&w, (uint8_t)custodians);
	hw_wbuf_u64(&w, (uint64_t)time(NULL));
	hw_wbuf_put(&w, salt, HWBK_SALT_LEN);
	hw_wbuf_put(&w, kc, sizeof(kc));
	hw_wbuf_u16(&w, (uint16_t)n);
	for (size_t i = 0; i < n; i++) {
		const bk_entry *en = &entries[i];

		hw_wbuf_u32(&w, en->cls);
		hw_wbuf_u32(&w, en->ktype);
		hw_wbuf_str16(&w, en->label, en->label_len);
		hw_wbuf_str16(&w, en->id, en->id_len);
		hw_wbuf_u32(&w, en->value_len);
		hw_wbuf_u32(&w, en->flags);
		hw_wbuf_u16(&w, en->nmech);
		for (unsigned k = 0; k < en->nmech; k++)
			hw_wbuf_u32(&w, (uint32_t)en->mechs[k]);
		hw_wbuf_str16(&w, en->kcv, en->kcv_len);
		hw_wbuf_str16(&w, en->wrapped, en->wrapped_len);
		hw_wbuf_str16(&w, en->pub_a, en->pub_a_len);
		hw_wbuf_str16(&w, en->pub_b, en->pub_b_len);
		hw_wbuf_u16(&w, en->nmeta);
		for (unsigned k = 0; k < en->nmeta; k++) {
			const bk_meta *md = &en->meta[k];

			hw_wbuf_str16(&w, md->app, md->app_len);
			hw_wbuf_str16(&w, md->label, md->label_len);
			hw_wbuf_str16(&w, md->value, md->value_len);
			hw_wbuf_u8(&w, md->private_ ? 1 : 0);
		}
	}
	if (w.err == HW_OK && (e = bk_file_tag(bk, salt, w.p, w.len, tag)) != HW_OK) {
		hw_wbuf_free(&w);
		return e;
	}
	hw_wbuf_put(&w, tag, sizeof(tag));
	e = hw_wbuf_finish(&w, file, filelen);
	if (e)
		hw_fail(e, 0, "building the backup file");
	return e;
}
