/*
 * M-of-N backup and restore of backup-able keys.
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
 * File format v1 (big-endian, every field through hw_rbuf/hw_wbuf):
 *   "HWBK" u8 version=1, backup_id[16], u8 threshold, u8 custodians,
 *   u64 created, salt[32], keycheck[16], u16 nentries, entries, tag[32]
 * entry:
 *   u32 class, u32 key type, str16 label, str16 id, u32 value_len,
 *   u32 flags (HWBK_F_*), u16 nmech + u32 mech each, str16 kcv (raw),
 *   str16 wrapped, str16 pub_a, str16 pub_b (RSA modulus/exponent or EC
 *   params/point of a pair's public half), u16 nmeta + (str16 application,
 *   str16 label, str16 value, u8 private) each
 * A logical key is backed up whole: one entry per version (labels L,
 * L#2, ...), the lifecycle metadata (and any other hsmwrap* data object
 * labelled L) with the first version's entry only, so a restore makes it
 * exactly once. A restore refuses to start while the target holds a key
 * of an entry's label or id, or metadata of an entry's or the backup's
 * metadata labels.
 * keycheck = HKDF-SHA-256(backup key, salt, "hsmwrap backup v1 key check"),
 * so wrong shares are told apart from a tampered file; tag =
 * HMAC-SHA-256(HKDF(backup key, salt, "hsmwrap backup v1 mac"), all before).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#define HWBK_VERSION 1
#define HWBK_MAX_ENTRIES 1024
#define HWBK_MAX_META 64
#define HWBK_MAX_MECHS 64
#define HWBK_FILE_MAX (16u * 1024u * 1024u)
#define BK_LEN 32

enum {
	HWBK_F_PRIVATE = 1u << 0,
	HWBK_F_ENCRYPT = 1u << 1,
	HWBK_F_DECRYPT = 1u << 2,
	HWBK_F_WRAP = 1u << 3,
	HWBK_F_UNWRAP = 1u << 4,
	HWBK_F_SIGN = 1u << 5,
	HWBK_F_VERIFY = 1u << 6,
	HWBK_F_DERIVE = 1u << 7,
	HWBK_F_ALL = 0xffu,
};

static const uint8_t magic[4] = { 'H', 'W', 'B', 'K' };

typedef struct {
	const uint8_t *app, *label, *value;
	size_t app_len, label_len, value_len;
	uint8_t private_;
} bk_meta;

typedef struct {
	uint32_t cls, ktype;
	const uint8_t *label, *id, *kcv, *wrapped, *pub_a, *pub_b;
	size_t label_len, id_len, kcv_len, wrapped_len, pub_a_len, pub_b_len;
	uint32_t value_len, flags;
	uint16_t nmech;
	CK_MECHANISM_TYPE mechs[HWBK_MAX_MECHS];
	uint16_t nmeta;
	bk_meta meta[HWBK_MAX_META];
} bk_entry;

typedef struct {
	uint8_t version;
	const uint8_t *backup_id, *salt, *keycheck, *tag;
	uint8_t threshold, custodians;
	uint64_t created;
	uint16_t nentries;
	bk_entry *entries;          /* calloc'd */
	size_t signed_len;          /* bytes covered by the tag */
} bk_file;

static void
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

static hw_err
parse_file(const uint8_t *in, size_t len, bk_file *f)
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

static hw_err
make_info(const bk_file *f, hw_backup_info **out)
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
	if ((e = parse_file(file, len, &f)))
		return e;
	e = make_info(&f, out);
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
hkdf(const uint8_t bk[BK_LEN], const uint8_t *salt, const char *info, uint8_t *out, size_t n)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM p[5];
	int ok;

	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)bk, BK_LEN);
	p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, 32);
	p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
	p[4] = OSSL_PARAM_construct_end();
	ok = kc && EVP_KDF_derive(kc, out, n, p) == 1;
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
	return ok ? HW_OK : hw_fail(HW_ERR_CRYPTO, 0, "HKDF");
}

static hw_err
file_tag(const uint8_t bk[BK_LEN], const uint8_t *salt, const uint8_t *data, size_t len,
         uint8_t tag[32])
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
/* Shares                                                            */

static void
share_check(const hw_backup_share *s, uint8_t out[4])
{
	static const char dom[] = "hsmwrap-backup-share v1";
	uint8_t hdr[3] = { (uint8_t)s->index, (uint8_t)s->threshold, (uint8_t)s->custodians };
	uint8_t md[32];
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	memset(md, 0, sizeof(md));
	if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(c, dom, sizeof(dom) - 1) == 1 &&
	    EVP_DigestUpdate(c, s->backup_id, HW_BACKUP_ID_LEN) == 1 &&
	    EVP_DigestUpdate(c, hdr, sizeof(hdr)) == 1 &&
	    EVP_DigestUpdate(c, s->share, HW_SHARE_LEN) == 1)
		EVP_DigestFinal_ex(c, md, NULL);
	EVP_MD_CTX_free(c);
	memcpy(out, md, 4);
}

static int
valid_share_numbers(unsigned index, unsigned threshold, unsigned custodians)
{
	return threshold >= 2 && custodians >= threshold && custodians <= HW_SHARES_MAX &&
	       index >= 1 && index <= custodians;
}

HW_EXPORT hw_err
hw_backup_share_format(const hw_backup_share *s, char **text, size_t *len)
{
	char id[2 * HW_BACKUP_ID_LEN + 1], sh[2 * HW_SHARE_LEN + 1], ck[9], *buf;
	uint8_t c[4];
	const size_t cap = 512;
	int n;

	if (!s || !text || !len || !valid_share_numbers(s->index, s->threshold, s->custodians))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_backup_share_format");
	if (!(buf = malloc(cap)))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	share_check(s, c);
	hw_hex(s->backup_id, HW_BACKUP_ID_LEN, id);
	hw_hex(s->share, HW_SHARE_LEN, sh);
	hw_hex(c, 4, ck);
	n = snprintf(buf, cap,
	             "hsmwrap-backup-share v1\nbackup-id: %s\nindex: %u\nthreshold: %u\n"
	             "custodians: %u\nshare: %s\ncheck: %s\n",
	             id, s->index, s->threshold, s->custodians, sh, ck);
	OPENSSL_cleanse(sh, sizeof(sh));
	if (n < 0 || (size_t)n >= cap) {
		hw_free_secret(buf, cap);
		return hw_fail(HW_ERR_CRYPTO, 0, "formatting a share");
	}
	*text = buf;
	*len = (size_t)n;
	return HW_OK;
}

/* The next line (without its "\n", and a "\r" before it) into line[]. */
static hw_err
next_line(hw_rbuf *r, char *line, size_t cap)
{
	size_t n = 0;
	uint8_t c;

	for (;;) {
		if (hw_rbuf_u8(r, &c) != HW_OK)
			return hw_fail(HW_ERR_FORMAT, 0, "share file truncated");
		if (c == '\n')
			break;
		if (c == 0 || n + 1 >= cap)
			return hw_fail(HW_ERR_FORMAT, 0, "share file line too long or binary");
		line[n++] = (char)c;
	}
	if (n && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	return HW_OK;
}

static int
unhex_exact(const char *s, uint8_t *out, size_t n)
{
	if (strlen(s) != 2 * n)
		return -1;
	for (size_t i = 0; i < 2 * n; i++) {
		char c = s[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
		        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (v < 0)
			return -1;
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)(v << 4);
		else
			out[i / 2] |= (uint8_t)v;
	}
	return 0;
}

static int
parse_uint(const char *s, unsigned max, unsigned *v)
{
	unsigned long x = 0;

	if (!*s || strlen(s) > 3)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		x = x * 10 + (unsigned long)(*s - '0');
	}
	if (x > max)
		return -1;
	*v = (unsigned)x;
	return 0;
}

HW_EXPORT hw_err
hw_backup_share_parse(const char *text, size_t len, hw_backup_share *out)
{
	static const char *const keys[] = { "backup-id: ", "index: ", "threshold: ",
	                                    "custodians: ", "share: ", "check: " };
	char line[160];
	hw_backup_share s;
	uint8_t ck[4], want[4];
	hw_rbuf r;
	hw_err e = HW_OK;

	if (!text || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_backup_share_parse");
	if (len > 4096)
		return hw_fail(HW_ERR_FORMAT, 0, "not a share file (too large)");
	memset(&s, 0, sizeof(s));
	hw_rbuf_init(&r, (const uint8_t *)text, len);
	if ((e = next_line(&r, line, sizeof(line))) || strcmp(line, "hsmwrap-backup-share v1")) {
		e = hw_fail(HW_ERR_FORMAT, 0, "not an hsmwrap share file (v1)");
		goto out;
	}
	for (int i = 0; i < 6; i++) {
		const char *v;
		int bad;

		if ((e = next_line(&r, line, sizeof(line))))
			goto out;
		if (strncmp(line, keys[i], strlen(keys[i])) != 0) {
			e = hw_fail(HW_ERR_FORMAT, 0, "share file: expected '%.*s'",
			            (int)strlen(keys[i]) - 2, keys[i]);
			goto out;
		}
		v = line + strlen(keys[i]);
		switch (i) {
		case 0: bad = unhex_exact(v, s.backup_id, HW_BACKUP_ID_LEN); break;
		case 1: bad = parse_uint(v, 255, &s.index); break;
		case 2: bad = parse_uint(v, 255, &s.threshold); break;
		case 3: bad = parse_uint(v, 255, &s.custodians); break;
		case 4: bad = unhex_exact(v, s.share, HW_SHARE_LEN); break;
		default: bad = unhex_exact(v, ck, 4); break;
		}
		if (bad) {
			e = hw_fail(HW_ERR_FORMAT, 0, "share file: bad %.*s value",
			            (int)strlen(keys[i]) - 2, keys[i]);
			goto out;
		}
	}
	/* Trailing blank lines are harmless (editors add them); nothing else. */
	while (hw_rbuf_left(&r)) {
		uint8_t c;
		(void)hw_rbuf_u8(&r, &c);
		if (c != '\n' && c != '\r' && c != ' ') {
			e = hw_fail(HW_ERR_FORMAT, 0, "share file: trailing data");
			goto out;
		}
	}
	if (!valid_share_numbers(s.index, s.threshold, s.custodians)) {
		e = hw_fail(HW_ERR_FORMAT, 0, "share file: index %u, threshold %u of %u",
		            s.index, s.threshold, s.custodians);
		goto out;
	}
	share_check(&s, want);
	if (CRYPTO_memcmp(ck, want, 4) != 0) {
		e = hw_fail(HW_ERR_INTEGRITY, 0, "share %u: the check value does not match "
		            "(a transcription error or an altered share)", s.index);
		goto out;
	}
	*out = s;
out:
	OPENSSL_cleanse(&s, sizeof(s));
	OPENSSL_cleanse(line, sizeof(line));
	return e;
}

/* ---------------------------------------------------------------- */
/* Create                                                            */

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
	CK_RV rv;

	pthread_mutex_lock(&ctx->lock);
	rv = ctx->have_pin ? ctx->fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)ctx->pin, ctx->pin_len)
	                   : CKR_USER_NOT_LOGGED_IN;
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
		{ CKA_VALUE, (void *)a->bk, BK_LEN },
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
	rv = ctx->fl->C_Login(s, CKU_SO, (CK_UTF8CHAR *)a->so_pin, a->so_pin_len);
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

static hw_err
write_file(const rec *recs, size_t n, const uint8_t bk[BK_LEN], const uint8_t *backup_id,
           unsigned threshold, unsigned custodians, uint8_t **file, size_t *filelen)
{
	uint8_t salt[32], kc[16], tag[32];
	hw_wbuf w;
	hw_err e;

	if ((e = hw_random(salt, sizeof(salt))) || (e = hkdf(bk, salt, "hsmwrap backup v1 key "
	                                                    "check", kc, sizeof(kc))))
		return e;
	hw_wbuf_init(&w, HWBK_FILE_MAX);
	hw_wbuf_put(&w, magic, 4);
	hw_wbuf_u8(&w, HWBK_VERSION);
	hw_wbuf_put(&w, backup_id, HW_BACKUP_ID_LEN);
	hw_wbuf_u8(&w, (uint8_t)threshold);
	hw_wbuf_u8(&w, (uint8_t)custodians);
	hw_wbuf_u64(&w, (uint64_t)time(NULL));
	hw_wbuf_put(&w, salt, sizeof(salt));
	hw_wbuf_put(&w, kc, sizeof(kc));
	hw_wbuf_u16(&w, (uint16_t)n);
	for (size_t i = 0; i < n; i++) {
		const rec *r = &recs[i];
		const hw_key_info *ki = &r->ki;
		uint32_t fl = (ki->private_ == 1 ? HWBK_F_PRIVATE : 0) |
		              (ki->encrypt == 1 ? HWBK_F_ENCRYPT : 0) |
		              (ki->decrypt == 1 ? HWBK_F_DECRYPT : 0) |
		              (ki->wrap == 1 ? HWBK_F_WRAP : 0) | (ki->unwrap == 1 ? HWBK_F_UNWRAP : 0) |
		              (ki->sign == 1 ? HWBK_F_SIGN : 0) | (ki->verify == 1 ? HWBK_F_VERIFY : 0) |
		              (ki->derive == 1 ? HWBK_F_DERIVE : 0);

		hw_wbuf_u32(&w, (uint32_t)r->key->cls);
		hw_wbuf_u32(&w, (uint32_t)r->key->ktype);
		hw_wbuf_str16(&w, r->key->label, strlen(r->key->label));
		hw_wbuf_str16(&w, r->key->id, r->key->id_len);
		hw_wbuf_u32(&w, r->key->cls == CKO_SECRET_KEY ? (uint32_t)r->value_len : 0);
		hw_wbuf_u32(&w, fl);
		hw_wbuf_u16(&w, (uint16_t)r->nmech);
		for (CK_ULONG k = 0; k < r->nmech; k++)
			hw_wbuf_u32(&w, (uint32_t)r->mechs[k]);
		hw_wbuf_str16(&w, r->kcv, r->kcv_len);
		hw_wbuf_str16(&w, r->wrapped, r->wrapped_len);
		hw_wbuf_str16(&w, r->pub_a, r->pub_a ? r->pub_a_len : 0);
		hw_wbuf_str16(&w, r->pub_b, r->pub_b ? r->pub_b_len : 0);
		hw_wbuf_u16(&w, (uint16_t)r->nmeta);
		for (size_t k = 0; k < r->nmeta; k++) {
			hw_wbuf_str16(&w, r->meta[k].app, r->meta[k].app_len);
			hw_wbuf_str16(&w, r->meta[k].label, r->meta[k].label_len);
			hw_wbuf_str16(&w, r->meta[k].value, r->meta[k].value_len);
			hw_wbuf_u8(&w, r->meta[k].private_ ? 1 : 0);
		}
	}
	if (w.err == HW_OK && (e = file_tag(bk, salt, w.p, w.len, tag)) != HW_OK) {
		hw_wbuf_free(&w);
		return e;
	}
	hw_wbuf_put(&w, tag, sizeof(tag));
	e = hw_wbuf_finish(&w, file, filelen);
	if (e)
		hw_fail(e, 0, "building the backup file");
	return e;
}

static int
unhex_kcv(const char *hex, uint8_t *out, size_t max, size_t *n)
{
	size_t l = strlen(hex);

	*n = 0;
	if (l % 2 || l / 2 > max || unhex_exact(hex, out, l / 2))
		return -1;
	*n = l / 2;
	return 0;
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
		uint8_t bk[BK_LEN], hsm_rand[BK_LEN];
	} *sec = NULL;
	size_t so_pin_len = 0;
	uint8_t backup_id[HW_BACKUP_ID_LEN];
	uint8_t *coeffs = NULL, *sh = NULL, *out = NULL;
	size_t outlen = 0, ncoeff = (size_t)BK_LEN * (threshold ? threshold - 1 : 0);
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
	for (size_t i = 0; i < BK_LEN; i++)
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
	sh = malloc((size_t)custodians * BK_LEN);
	shares = calloc(custodians, sizeof(*shares));
	if (!coeffs || !sh || !shares) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto out;
	}
	if ((e = hw_random(coeffs, ncoeff)))
		goto out;
	if (hw_shamir_split(sec->bk, BK_LEN, custodians, threshold, coeffs, sh) != 0) {
		e = hw_fail(HW_ERR_CRYPTO, 0, "Shamir split");
		goto out;
	}
	for (unsigned i = 0; i < custodians; i++) {
		memcpy(shares[i].backup_id, backup_id, HW_BACKUP_ID_LEN);
		shares[i].index = i + 1;
		shares[i].threshold = threshold;
		shares[i].custodians = custodians;
		memcpy(shares[i].share, sh + (size_t)i * BK_LEN, BK_LEN);
	}
	if (info) {
		bk_file f;
		if ((e = parse_file(out, outlen, &f)))
			goto out;
		e = make_info(&f, info);
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
		hw_free_secret(sh, (size_t)custodians * BK_LEN);
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

/* ---------------------------------------------------------------- */
/* Restore                                                           */

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
		{ CKA_VALUE, (void *)a->bk, BK_LEN },
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
combine_shares(const bk_file *f, const hw_backup_share *shares, size_t n, uint8_t bk[BK_LEN])
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
		    !valid_share_numbers(s->index, s->threshold, s->custodians))
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
	if (hw_shamir_combine(xs, ys, n, BK_LEN, bk) != 0)
		return hw_fail(HW_ERR_CRYPTO, 0, "Shamir combination");
	if ((e = hkdf(bk, f->salt, "hsmwrap backup v1 key check", kc, sizeof(kc))))
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
	if ((e = parse_file(file, len, &f)))
		return e;
	/* The rebuilt backup key: locked, out of core dumps, wiped at the end. */
	if (!(bk = hw_secmem_alloc(BK_LEN))) {
		bk_file_free(&f);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	if ((e = combine_shares(&f, shares, nshares, bk)))
		goto out;
	if ((e = file_tag(bk, f.salt, file, f.signed_len, tag)))
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
	if (info && (e = make_info(&f, info)))
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
