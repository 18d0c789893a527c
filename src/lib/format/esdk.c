/*
 * The AWS Encryption SDK message format: header, framed and non-framed
 * bodies, footer; the suites' key derivation, key commitment and ECDSA
 * signatures. Every byte is read through hw_rbuf and written through
 * hw_wbuf. The keyring is the caller's (see esdk.h).
 */
#include "internal.h"
#include "format/esdk.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

/* ---------------------------------------------------------------- */
/* Algorithm suites (framework/algorithm-suites.md)                  */

static const esdk_suite suites[] = {
	{ 0x0014, 1, 16, ESDK_KDF_IDENTITY, NULL, NULL, NULL, "AES_128_GCM_IV12_TAG16_NO_KDF" },
	{ 0x0046, 1, 24, ESDK_KDF_IDENTITY, NULL, NULL, NULL, "AES_192_GCM_IV12_TAG16_NO_KDF" },
	{ 0x0078, 1, 32, ESDK_KDF_IDENTITY, NULL, NULL, NULL, "AES_256_GCM_IV12_TAG16_NO_KDF" },
	{ 0x0114, 1, 16, ESDK_KDF_HKDF, "SHA256", NULL, NULL, "AES_128_GCM_IV12_TAG16_HKDF_SHA256" },
	{ 0x0146, 1, 24, ESDK_KDF_HKDF, "SHA256", NULL, NULL, "AES_192_GCM_IV12_TAG16_HKDF_SHA256" },
	{ 0x0178, 1, 32, ESDK_KDF_HKDF, "SHA256", NULL, NULL, "AES_256_GCM_IV12_TAG16_HKDF_SHA256" },
	{ 0x0214, 1, 16, ESDK_KDF_HKDF, "SHA256", "P-256", "SHA256",
	  "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256" },
	{ 0x0346, 1, 24, ESDK_KDF_HKDF, "SHA384", "P-384", "SHA384",
	  "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384" },
	{ 0x0378, 1, 32, ESDK_KDF_HKDF, "SHA384", "P-384", "SHA384",
	  "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384" },
	{ 0x0478, 2, 32, ESDK_KDF_COMMIT, "SHA512", NULL, NULL, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY" },
	{ 0x0578, 2, 32, ESDK_KDF_COMMIT, "SHA512", "P-384", "SHA384",
	  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384" },
};

const esdk_suite *
esdk_suite_get(uint16_t id)
{
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (suites[i].id == id)
			return &suites[i];
	return NULL;
}

/* ---------------------------------------------------------------- */
/* Encryption context                                                */

bool
esdk_utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint32_t c = s[i], cp, min;
		size_t more;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			more = 1, min = 0x80, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			more = 2, min = 0x800, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			more = 3, min = 0x10000, cp = c & 0x07;
		else
			return false;
		if (n - i <= more)
			return false;
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += more + 1;
	}
	return true;
}

/* UTF-8 byte order, shorter first on a common prefix (structures.md). */
static int
cmp_bytes(const uint8_t *a, size_t la, const uint8_t *b, size_t lb)
{
	int c = memcmp(a, b, la < lb ? la : lb);

	if (c)
		return c;
	return la < lb ? -1 : la > lb;
}

const esdk_pair *
esdk_ec_find(const esdk_ec *ec, const char *key, size_t klen)
{
	for (size_t i = 0; ec && i < ec->n; i++)
		if (cmp_bytes(ec->p[i].k, ec->p[i].klen, (const uint8_t *)key, klen) == 0)
			return &ec->p[i];
	return NULL;
}

hw_err
esdk_ec_put(esdk_ec *ec, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	esdk_pair *np;
	size_t at = 0;

	while (at < ec->n && cmp_bytes(ec->p[at].k, ec->p[at].klen, k, klen) < 0)
		at++;
	if (at < ec->n && cmp_bytes(ec->p[at].k, ec->p[at].klen, k, klen) == 0)
		return hw_fail(HW_ERR_FORMAT, 0, "encryption context key '%.*s' appears twice",
		               (int)(klen > 64 ? 64 : klen), (const char *)k);
	if (ec->n >= UINT16_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "too many encryption context pairs");
	np = realloc(ec->p, (ec->n + 1) * sizeof(*np));
	if (!np)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	ec->p = np;
	memmove(&ec->p[at + 1], &ec->p[at], (ec->n - at) * sizeof(*np));
	ec->p[at] = (esdk_pair){ k, v, klen, vlen };
	ec->n++;
	return HW_OK;
}

void
esdk_ec_free(esdk_ec *ec)
{
	free(ec->p);
	ec->p = NULL;
	ec->n = 0;
}

hw_err
esdk_ec_parse(const uint8_t *in, size_t len, esdk_ec *ec)
{
	hw_rbuf r;
	uint16_t count;
	hw_err e = HW_OK;

	ec->p = NULL;
	ec->n = 0;
	if (len == 0)
		return HW_OK;
	hw_rbuf_init(&r, in, len);
	if (hw_rbuf_u16(&r, &count) != HW_OK || count == 0)
		return hw_fail(HW_ERR_FORMAT, 0, "encryption context: bad pair count");
	for (unsigned i = 0; i < count && e == HW_OK; i++) {
		const uint8_t *k, *v;
		size_t kl, vl;

		if (hw_rbuf_str16(&r, &k, &kl) != HW_OK || hw_rbuf_str16(&r, &v, &vl) != HW_OK)
			e = hw_fail(HW_ERR_FORMAT, 0, "encryption context: truncated pair");
		else if (!esdk_utf8_ok(k, kl) || !esdk_utf8_ok(v, vl))
			e = hw_fail(HW_ERR_FORMAT, 0, "encryption context: not UTF-8");
		else
			e = esdk_ec_put(ec, k, kl, v, vl);
	}
	if (e == HW_OK && hw_rbuf_left(&r) != 0)
		e = hw_fail(HW_ERR_FORMAT, 0, "encryption context: %zu bytes after the pairs",
		            hw_rbuf_left(&r));
	if (e != HW_OK)
		esdk_ec_free(ec);
	return e;
}

hw_err
esdk_ec_serialize(const esdk_ec *ec, uint8_t **out, size_t *len)
{
	hw_wbuf w;
	hw_err e;

	hw_wbuf_init(&w, UINT16_MAX);
	if (ec && ec->n) {
		hw_wbuf_u16(&w, (uint16_t)ec->n);
		for (size_t i = 0; i < ec->n; i++) {
			hw_wbuf_str16(&w, ec->p[i].k, ec->p[i].klen);
			hw_wbuf_str16(&w, ec->p[i].v, ec->p[i].vlen);
		}
	}
	e = hw_wbuf_finish(&w, out, len);
	if (e != HW_OK)
		return hw_fail(e, 0, "the serialized encryption context exceeds 65535 bytes");
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Header parsing                                                    */

/* Reads that report how much input a short read would have needed. */
static hw_err
rd(hw_rbuf *r, size_t n, const uint8_t **p, size_t *need)
{
	if (hw_rbuf_left(r) < n) {
		*need = r->off + n < r->off ? SIZE_MAX : r->off + n;
		return hw_fail(HW_ERR_FORMAT, 0, "the message is truncated");
	}
	return hw_rbuf_bytes(r, n, p);
}

static hw_err
rd_be(hw_rbuf *r, size_t n, uint64_t *v, size_t *need)
{
	const uint8_t *p;
	hw_err e = rd(r, n, &p, need);

	if (e == HW_OK) {
		*v = 0;
		for (size_t i = 0; i < n; i++)
			*v = (*v << 8) | p[i];
	}
	return e;
}

static hw_err
rd_str16(hw_rbuf *r, const uint8_t **p, size_t *n, size_t *need)
{
	uint64_t l;
	hw_err e = rd_be(r, 2, &l, need);

	if (e == HW_OK)
		e = rd(r, (size_t)l, p, need);
	if (e == HW_OK)
		*n = (size_t)l;
	return e;
}

static hw_err
not_esdk(const uint8_t *in, size_t len)
{
	/* Base64 of 01 80 starts "AY", of 02 04/05 "Ag" (decrypt.md). */
	if (len >= 2 && in[0] == 'A' && (in[1] == 'Y' || in[1] == 'g'))
		return hw_fail(HW_ERR_FORMAT, 0, "this looks like a Base64-encoded message; "
		               "decode it first");
	return hw_fail(HW_ERR_FORMAT, 0, "not an AWS Encryption SDK message (version byte "
	               "0x%02x)", len ? in[0] : 0);
}

static hw_err
parse_edks(hw_rbuf *r, unsigned max_edks, esdk_header *h, size_t *need)
{
	uint64_t count;
	hw_err e = rd_be(r, 2, &count, need);

	if (e != HW_OK)
		return e;
	if (count == 0)
		return hw_fail(HW_ERR_FORMAT, 0, "the message has no encrypted data keys");
	/* Before reading any of them (decrypt.md#parse-the-header). */
	if (max_edks && count > max_edks)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "the message has %u encrypted data keys, more "
		               "than the limit of %u", (unsigned)count, max_edks);
	h->edks = calloc((size_t)count, sizeof(*h->edks));
	if (!h->edks)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	for (size_t i = 0; i < count; i++) {
		esdk_edk *k = &h->edks[i];

		e = rd_str16(r, &k->pid, &k->pid_len, need);
		if (e == HW_OK)
			e = rd_str16(r, &k->pinfo, &k->pinfo_len, need);
		if (e == HW_OK)
			e = rd_str16(r, &k->ct, &k->ct_len, need);
		if (e != HW_OK)
			return e;
		h->nedks++;
	}
	return HW_OK;
}

static hw_err
parse_header(hw_rbuf *r, unsigned max_edks, esdk_header *h, size_t *need)
{
	uint64_t v;
	const uint8_t *p;
	hw_err e;

	if ((e = rd_be(r, 1, &v, need)) != HW_OK)
		return e;
	if (v != 1 && v != 2)
		return not_esdk(r->p, r->len);
	h->version = (uint8_t)v;
	if (h->version == 1) {
		if ((e = rd_be(r, 1, &v, need)) != HW_OK)
			return e;
		if (v != 0x80)
			return hw_fail(HW_ERR_FORMAT, 0, "unknown message type 0x%02x", (unsigned)v);
	}
	if ((e = rd_be(r, 2, &v, need)) != HW_OK)
		return e;
	h->suite = esdk_suite_get((uint16_t)v);
	if (!h->suite || h->suite->version != h->version)
		return hw_fail(HW_ERR_FORMAT, 0, "algorithm suite 0x%04x is not an AWS Encryption "
		               "SDK suite of message format %u", (unsigned)v, h->version);
	h->msgid_len = h->version == 1 ? 16 : 32;
	if ((e = rd(r, h->msgid_len, &p, need)) != HW_OK)
		return e;
	memcpy(h->msgid, p, h->msgid_len);
	if ((e = rd_str16(r, &h->ec_ser, &h->ec_ser_len, need)) != HW_OK)
		return e;
	if ((e = esdk_ec_parse(h->ec_ser, h->ec_ser_len, &h->ec)) != HW_OK)
		return e;
	if ((e = parse_edks(r, max_edks, h, need)) != HW_OK)
		return e;
	if ((e = rd_be(r, 1, &v, need)) != HW_OK)
		return e;
	if (v != ESDK_CT_NONFRAMED && v != ESDK_CT_FRAMED)
		return hw_fail(HW_ERR_FORMAT, 0, "unknown content type 0x%02x", (unsigned)v);
	h->content_type = (uint8_t)v;
	if (h->version == 1) {
		if ((e = rd_be(r, 4, &v, need)) != HW_OK)
			return e;
		if (v != 0)
			return hw_fail(HW_ERR_FORMAT, 0, "reserved header field is not zero");
		if ((e = rd_be(r, 1, &v, need)) != HW_OK)
			return e;
		if (v != ESDK_IV_LEN)
			return hw_fail(HW_ERR_FORMAT, 0, "IV length %u (must be 12)", (unsigned)v);
	}
	if ((e = rd_be(r, 4, &v, need)) != HW_OK)
		return e;
	h->frame_len = (uint32_t)v;
	if ((h->content_type == ESDK_CT_FRAMED) != (h->frame_len != 0))
		return hw_fail(HW_ERR_FORMAT, 0, "frame length %u does not fit the content type",
		               h->frame_len);
	if (h->version == 2 && (e = rd(r, ESDK_COMMIT_LEN, &h->commit, need)) != HW_OK)
		return e;
	h->body = r->p;
	h->body_len = r->off;
	if (h->version == 1 && (e = rd(r, ESDK_IV_LEN, &h->hdr_iv, need)) != HW_OK)
		return e;
	if ((e = rd(r, ESDK_TAG_LEN, &h->tag, need)) != HW_OK)
		return e;
	h->len = r->off;
	return HW_OK;
}

hw_err
esdk_header_parse(const uint8_t *in, size_t len, unsigned max_edks, esdk_header *h,
                  size_t *need)
{
	hw_rbuf r;
	size_t n = 0;
	hw_err e;

	memset(h, 0, sizeof(*h));
	hw_rbuf_init(&r, in, len);
	e = parse_header(&r, max_edks, h, &n);
	if (e != HW_OK)
		esdk_header_free(h);
	if (need)
		*need = e == HW_ERR_FORMAT ? n : 0;
	return e;
}

void
esdk_header_free(esdk_header *h)
{
	esdk_ec_free(&h->ec);
	free(h->edks);
	h->edks = NULL;
	h->nedks = 0;
}

/* ---------------------------------------------------------------- */
/* Key derivation (framework/transitive-requirements.md)              */

static hw_err
hkdf(const char *md, int mode, const uint8_t *key, size_t keylen, const uint8_t *salt,
     size_t saltlen, const uint8_t *info, size_t infolen, uint8_t *out, size_t outlen)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *c = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM p[6], *q = p;
	int ok;

	*q++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0);
	*q++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, keylen);
	if (salt)
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt,
		                                         saltlen);
	if (info)
		*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info,
		                                         infolen);
	*q = OSSL_PARAM_construct_end();
	ok = c && EVP_KDF_derive(c, out, outlen, p) == 1;
	EVP_KDF_CTX_free(c);
	EVP_KDF_free(kdf);
	return ok ? HW_OK : hw_fail(HW_ERR_CRYPTO, 0, "HKDF-%s", md);
}

hw_err
esdk_derive(const esdk_suite *s, const uint8_t *dk, const uint8_t *msgid, size_t msgid_len,
            uint8_t *key, uint8_t *commit)
{
	static const char derivekey[] = "DERIVEKEY", commitkey[] = "COMMITKEY";
	uint8_t info[2 + ESDK_MSGID_MAX], prk[64];
	hw_err e;

	info[0] = (uint8_t)(s->id >> 8);
	info[1] = (uint8_t)s->id;
	switch (s->kdf) {
	case ESDK_KDF_IDENTITY:
		memcpy(key, dk, s->key_len);
		return HW_OK;
	case ESDK_KDF_HKDF:
		/* No salt: HKDF then uses hashLen zero bytes. */
		memcpy(info + 2, msgid, msgid_len);
		return hkdf(s->kdf_md, EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND, dk, s->key_len, NULL,
		            0, info, 2 + msgid_len, key, s->key_len);
	case ESDK_KDF_COMMIT:
		/* One extract for both expansions, as the spec recommends. */
		e = hkdf(s->kdf_md, EVP_KDF_HKDF_MODE_EXTRACT_ONLY, dk, s->key_len, msgid,
		         msgid_len, NULL, 0, prk, sizeof(prk));
		memcpy(info + 2, derivekey, sizeof(derivekey) - 1);
		if (e == HW_OK)
			e = hkdf(s->kdf_md, EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, sizeof(prk), NULL,
			         0, info, 2 + sizeof(derivekey) - 1, key, s->key_len);
		if (e == HW_OK)
			e = hkdf(s->kdf_md, EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, sizeof(prk), NULL,
			         0, (const uint8_t *)commitkey, sizeof(commitkey) - 1, commit,
			         ESDK_COMMIT_LEN);
		OPENSSL_cleanse(prk, sizeof(prk));
		return e;
	}
	return hw_fail(HW_ERR_CRYPTO, 0, "unknown KDF");
}

/* ---------------------------------------------------------------- */
/* Signatures: ECDSA keys as the ESDK stores them in the context     */

static size_t
curve_point_len(const char *curve)
{
	return strcmp(curve, "P-256") == 0 ? 33 : 49;
}

/* Strict Base64: canonical encoding only (re-encoding must give it back). */
static hw_err
b64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t max, size_t *outlen)
{
	uint8_t tmp[128], back[192];
	int n, pad = 0;

	if (len == 0 || len % 4 || len / 4 * 3 > sizeof(tmp) || len >= sizeof(back))
		return hw_fail(HW_ERR_FORMAT, 0, "malformed aws-crypto-public-key");
	n = EVP_DecodeBlock(tmp, in, (int)len);
	if (n < 0)
		return hw_fail(HW_ERR_FORMAT, 0, "aws-crypto-public-key is not Base64");
	pad = (in[len - 1] == '=') + (in[len - 2] == '=');
	n -= pad;
	if (n <= 0 || (size_t)n > max ||
	    EVP_EncodeBlock(back, tmp, n) != (int)len || memcmp(back, in, len) != 0)
		return hw_fail(HW_ERR_FORMAT, 0, "aws-crypto-public-key is not canonical Base64");
	memcpy(out, tmp, (size_t)n);
	*outlen = (size_t)n;
	return HW_OK;
}

static hw_err
pubkey_from_ctx(const esdk_suite *s, const esdk_pair *pk, EVP_PKEY **out)
{
	uint8_t pt[64];
	size_t ptlen = 0;
	EVP_PKEY_CTX *pc;
	OSSL_PARAM p[3];
	int ok;
	hw_err e = b64_decode(pk->v, pk->vlen, pt, sizeof(pt), &ptlen);

	if (e != HW_OK)
		return e;
	/* The spec stores the compressed point (SEC1 02/03 || x). */
	if (ptlen != curve_point_len(s->sig_curve) || (pt[0] != 2 && pt[0] != 3))
		return hw_fail(HW_ERR_FORMAT, 0, "aws-crypto-public-key is not a compressed %s "
		               "point", s->sig_curve);
	p[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
	                                        (char *)s->sig_curve, 0);
	p[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen);
	p[2] = OSSL_PARAM_construct_end();
	*out = NULL;
	pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	ok = pc && EVP_PKEY_fromdata_init(pc) == 1 &&
	     EVP_PKEY_fromdata(pc, out, EVP_PKEY_PUBLIC_KEY, p) == 1;
	EVP_PKEY_CTX_free(pc);
	if (!ok) {
		EVP_PKEY_free(*out);
		*out = NULL;
		return hw_fail(HW_ERR_FORMAT, 0, "aws-crypto-public-key is not a point on %s",
		               s->sig_curve);
	}
	return HW_OK;
}

/*
 * An ephemeral signing key and its context value, base64 of the SEC1
 * compressed point. OpenSSL 3.0 ignores a conversion format set on a
 * generated key, so the point is compressed here: 02|03 by y's parity, x.
 */
static hw_err
sign_key_new(const esdk_suite *s, EVP_PKEY *given, EVP_PKEY **key, char *b64, size_t b64max)
{
	uint8_t pt[1 + 2 * 66];
	size_t ptlen = 0, clen = curve_point_len(s->sig_curve), flen = clen - 1;

	/* A given key (cached) passes the same point-size check as a new one. */
	if (given)
		*key = EVP_PKEY_up_ref(given) == 1 ? given : NULL;
	else
		*key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", s->sig_curve);
	if (!*key || EVP_PKEY_get_octet_string_param(*key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
	                                             pt, sizeof(pt), &ptlen) != 1 ||
	    ptlen != 1 + 2 * flen || pt[0] != 4 || (clen + 2) / 3 * 4 + 1 > b64max) {
		EVP_PKEY_free(*key);
		*key = NULL;
		return hw_fail(HW_ERR_CRYPTO, 0, "ECDSA %s key generation", s->sig_curve);
	}
	pt[0] = (uint8_t)(2 | (pt[2 * flen] & 1));
	EVP_EncodeBlock((uint8_t *)b64, pt, (int)clen);
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Encryption                                                        */

struct esdk_enc {
	esdk_enc_params p;
	const esdk_suite *s;
	hw_err err;                 /* sticky */
	bool done;
	uint8_t msgid[ESDK_MSGID_MAX];
	uint8_t key[ESDK_MAX_KEY_LEN];
	EVP_CIPHER_CTX *cc;
	EVP_MD_CTX *sig;            /* NULL for unsigned suites */
	uint64_t seq;               /* of the next frame */
	uint8_t *pt;                /* plaintext of the frame being filled */
	size_t ptlen, ptcap;
	uint8_t *unit;              /* one serialized frame */
	size_t unitcap;
	esdk_pipe *pipe;            /* runs of whole frames, made on first use */
};

/* Grows a buffer that may hold secrets, wiping the old copy. */
static hw_err
grow(uint8_t **p, size_t *cap, size_t need, size_t keep)
{
	size_t ncap;
	uint8_t *np;

	if (need <= *cap)
		return HW_OK;
	ncap = *cap ? *cap : 4096;
	while (ncap < need)
		ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
	np = malloc(ncap);
	if (!np)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (*p) {
		memcpy(np, *p, keep);
		OPENSSL_cleanse(*p, *cap);
		free(*p);
	}
	*p = np;
	*cap = ncap;
	return HW_OK;
}

static hw_err
enc_emit(esdk_enc *e, const uint8_t *p, size_t n)
{
	if (e->sig && EVP_DigestSignUpdate(e->sig, p, n) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "ECDSA signature");
	return e->p.out(e->p.out_arg, p, n);
}

static hw_err
enc_header(esdk_enc *e, const esdk_ec *ec, const uint8_t *dk)
{
	uint8_t *ser = NULL, *edks = NULL, commit[ESDK_COMMIT_LEN], zero_iv[ESDK_IV_LEN] = { 0 };
	uint8_t tag[ESDK_TAG_LEN], *hdr = NULL;
	size_t serlen = 0, edkslen = 0, nedks = 0, hdrlen = 0;
	hw_wbuf w;
	hw_err r;

	r = esdk_ec_serialize(ec, &ser, &serlen);
	if (r != HW_OK)
		return r;
	hw_wbuf_init(&w, (size_t)UINT16_MAX * 3 * 65537);
	r = e->p.wrap(e->p.wrap_arg, e->s, ser, serlen, dk, e->s->key_len, &w, &nedks);
	if (r == HW_OK)
		r = hw_wbuf_finish(&w, &edks, &edkslen);
	else
		hw_wbuf_free(&w);
	if (r == HW_OK && (nedks == 0 || nedks > UINT16_MAX))
		r = hw_fail(HW_ERR_INVALID_ARG, 0, "%zu encrypted data keys (1 to 65535 allowed)",
		            nedks);
	if (r == HW_OK && e->p.max_edks && nedks > e->p.max_edks)
		r = hw_fail(HW_ERR_TOO_LARGE, 0, "%zu encrypted data keys, more than the limit "
		            "of %u", nedks, e->p.max_edks);
	if (r == HW_OK)
		r = esdk_derive(e->s, dk, e->msgid, 32, e->key, commit);
	if (r == HW_OK)
		r = esdk_gcm_key(e->cc, true, e->key, e->s->key_len);
	if (r != HW_OK)
		goto out;
	hw_wbuf_init(&w, SIZE_MAX);
	hw_wbuf_u8(&w, 2);
	hw_wbuf_u16(&w, e->s->id);
	hw_wbuf_put(&w, e->msgid, 32);
	hw_wbuf_str16(&w, ser, serlen);
	hw_wbuf_u16(&w, (uint16_t)nedks);
	hw_wbuf_put(&w, edks, edkslen);
	hw_wbuf_u8(&w, ESDK_CT_FRAMED);
	hw_wbuf_u32(&w, e->p.frame_len);
	hw_wbuf_put(&w, commit, sizeof(commit));
	r = hw_wbuf_finish(&w, &hdr, &hdrlen);
	if (r == HW_OK)
		r = esdk_gcm(e->cc, true, zero_iv, hdr, hdrlen, NULL, 0, NULL, 0, NULL, tag);
	if (r == HW_OK)
		r = enc_emit(e, hdr, hdrlen);
	if (r == HW_OK)
		r = enc_emit(e, tag, sizeof(tag));
out:
	OPENSSL_cleanse(commit, sizeof(commit));
	free(ser);
	free(edks);
	free(hdr);
	return r;
}

static hw_err
enc_frame(esdk_enc *e, const uint8_t *pt, size_t len, bool final)
{
	uint8_t aad[ESDK_BODY_AAD_MAX], *iv, *ct;
	size_t aadlen, o = 0;
	uint32_t seq;
	hw_err r;

	/* Sequence numbers are u32 and 0xffffffff marks the final frame. */
	if (e->seq > (final ? UINT32_MAX : UINT32_MAX - 1))
		return hw_fail(HW_ERR_TOO_LARGE, 0, "more than 2^32 - 1 frames; use a larger "
		               "frame length");
	seq = (uint32_t)e->seq;
	r = grow(&e->unit, &e->unitcap, len + 40, 0);
	if (r != HW_OK)
		return r;
	if (final) {
		memset(e->unit, 0xff, 4);
		o = 4;
	}
	for (int i = 3; i >= 0; i--)
		e->unit[o++] = (uint8_t)(seq >> (8 * i));
	iv = e->unit + o;
	esdk_seq_iv(iv, seq);
	o += ESDK_IV_LEN;
	if (final)
		for (int i = 3; i >= 0; i--)
			e->unit[o++] = (uint8_t)(len >> (8 * i));
	ct = e->unit + o;
	aadlen = esdk_body_aad(aad, e->msgid, 32, final ? ESDK_LABEL_FINAL : ESDK_LABEL_FRAME, seq, len);
	r = esdk_gcm(e->cc, true, iv, aad, aadlen, NULL, 0, pt, len, ct, ct + len);
	if (r == HW_OK)
		r = enc_emit(e, e->unit, o + len + ESDK_TAG_LEN);
	e->seq++;
	return r;
}

#ifdef HW_ESDK_TEST_HOOKS
static _Thread_local uint8_t test_msgid[32];
static _Thread_local bool test_msgid_set;

void
esdk_enc_test_set_msgid(const uint8_t msgid[32])
{
	memcpy(test_msgid, msgid, 32);
	test_msgid_set = true;
}
#endif

static bool
reserved_key(const esdk_pair *p)
{
	size_t n = strlen(ESDK_RESERVED_PREFIX);

	return p->klen >= n && memcmp(p->k, ESDK_RESERVED_PREFIX, n) == 0;
}

hw_err
esdk_enc_new(const esdk_enc_params *p, const esdk_ec *user_ec, esdk_enc **out)
{
	esdk_enc *e;
	esdk_ec ec = { NULL, 0 };
	EVP_PKEY *sk = NULL;
	char pub[96];
	uint8_t dk[ESDK_MAX_KEY_LEN];
	hw_err r = HW_OK;

	if (!p || !p->wrap || !p->out || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_enc_new");
	if (p->frame_len == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the frame length must be 1 to 2^32 - 1");
	for (size_t i = 0; user_ec && i < user_ec->n; i++)
		if (reserved_key(&user_ec->p[i]))
			return hw_fail(HW_ERR_INVALID_ARG, 0, "encryption context keys starting with "
			               "'aws-crypto-' are reserved ('%.*s')",
			               (int)user_ec->p[i].klen, (const char *)user_ec->p[i].k);
	e = calloc(1, sizeof(*e));
	if (!e)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e->p = *p;
	e->seq = 1;
	e->s = esdk_suite_get(p->suite);
	/* Only committing suites are written (commitment policy REQUIRE_ENCRYPT). */
	if (!e->s || e->s->kdf != ESDK_KDF_COMMIT) {
		r = hw_fail(HW_ERR_INVALID_ARG, 0, "suite 0x%04x cannot be used for encryption "
		            "(0x0478 or 0x0578)", p->suite);
		goto fail;
	}
	e->cc = EVP_CIPHER_CTX_new();
	if (!e->cc) {
		r = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto fail;
	}
	for (size_t i = 0; user_ec && i < user_ec->n && r == HW_OK; i++)
		r = esdk_ec_put(&ec, user_ec->p[i].k, user_ec->p[i].klen, user_ec->p[i].v,
		                user_ec->p[i].vlen);
	if (r == HW_OK && e->s->sig_curve) {
		r = sign_key_new(e->s, p->sign_key, &sk, pub, sizeof(pub));
		if (r == HW_OK)
			r = esdk_ec_put(&ec, (const uint8_t *)ESDK_PUBKEY_CTX_KEY,
			                strlen(ESDK_PUBKEY_CTX_KEY), (const uint8_t *)pub,
			                strlen(pub));
		if (r == HW_OK) {
			e->sig = EVP_MD_CTX_new();
			if (!e->sig || EVP_DigestSignInit_ex(e->sig, NULL, e->s->sig_md, NULL, NULL,
			                                     sk, NULL) != 1)
				r = hw_fail(HW_ERR_CRYPTO, 0, "ECDSA signature");
		}
	}
	if (r != HW_OK)
		goto fail;
#ifdef HW_ESDK_TEST_HOOKS
	if (test_msgid_set) {
		memcpy(e->msgid, test_msgid, 32);
		test_msgid_set = false;
	} else
#endif
	if (RAND_bytes(e->msgid, 32) != 1)
		r = hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes");
	if (r == HW_OK && p->dk)
		memcpy(dk, p->dk, e->s->key_len);
	else if (r == HW_OK && RAND_bytes(dk, (int)e->s->key_len) != 1)
		r = hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes");
	if (r == HW_OK)
		r = enc_header(e, &ec, dk);
	OPENSSL_cleanse(dk, sizeof(dk));
	if (r != HW_OK)
		goto fail;
	EVP_PKEY_free(sk);
	esdk_ec_free(&ec);
	*out = e;
	return HW_OK;
fail:
	EVP_PKEY_free(sk);
	esdk_ec_free(&ec);
	esdk_enc_free(e);
	return r;
}

static hw_err
enc_dead(esdk_enc *e)
{
	if (e->err != HW_OK)
		return hw_fail(e->err, 0, "the encryption stream failed earlier");
	return hw_fail(HW_ERR_INVALID_ARG, 0, "the encryption stream is finished");
}

#ifdef HW_ESDK_TEST_HOOKS
/* Test builds only (tests/esdk-vectors): reach the frame-count limit
 * without writing 2^32 frames. */
void
esdk_enc_test_set_seq(esdk_enc *e, uint64_t seq)
{
	e->seq = seq;
}
#endif

/*
 * Runs of whole frames go through the frame workers (esdk-pipe.c), also
 * with one thread: one output call per job instead of per frame. Frames
 * longer than a job keep the frame-at-a-time path, which holds one frame.
 */
#define BULK_FRAME_MAX ESDK_PIPE_JOB_BYTES

static bool
bulk_ok(uint32_t frame_len)
{
	return frame_len <= BULK_FRAME_MAX;
}

static hw_err
enc_emit_cb(void *arg, const uint8_t *p, size_t n)
{
	return enc_emit(arg, p, n);
}

/* n whole frames from in, none of them the final frame. */
static hw_err
enc_bulk(esdk_enc *e, const uint8_t *in, size_t n)
{
	hw_err r = HW_OK;

	if (!e->pipe)
		r = esdk_pipe_new(true, e->p.threads, e->key, e->s->key_len, e->msgid, 32,
		                  e->p.frame_len, &e->pipe);
	if (r == HW_OK)
		r = esdk_pipe_run(e->pipe, in, n, (uint32_t)e->seq, NULL, enc_emit_cb, e);
	e->seq += n;
	return r;
}

hw_err
esdk_enc_update(esdk_enc *e, const uint8_t *in, size_t len)
{
	hw_err r = HW_OK;
	size_t fl;

	if (!e || (!in && len))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_enc_update");
	if (e->err != HW_OK || e->done)
		return enc_dead(e);
	fl = e->p.frame_len;
	while (len > 0 && r == HW_OK) {
		size_t take;

		/* A full frame goes out only once more data follows: the
		 * last frame must be the final frame. */
		if (e->ptlen == fl) {
			r = enc_frame(e, e->pt, fl, false);
			e->ptlen = 0;
			continue;
		}
		if (e->ptlen == 0 && len > fl) {
			/* Regular frames end at 0xfffffffe; enc_frame refuses more. */
			size_t n = (len - 1) / fl;
			uint64_t room = e->seq < UINT32_MAX ? UINT32_MAX - e->seq : 0;

			if (n > room)
				n = (size_t)room;
			if (n > 1 && bulk_ok(e->p.frame_len)) {
				r = enc_bulk(e, in, n);
				in += n * fl;
				len -= n * fl;
				continue;
			}
			r = enc_frame(e, in, fl, false);
			in += fl;
			len -= fl;
			continue;
		}
		take = len < fl - e->ptlen ? len : fl - e->ptlen;
		r = grow(&e->pt, &e->ptcap, e->ptlen + take, e->ptlen);
		if (r == HW_OK) {
			memcpy(e->pt + e->ptlen, in, take);
			e->ptlen += take;
			in += take;
			len -= take;
		}
	}
	if (r != HW_OK)
		e->err = r;
	return r;
}

hw_err
esdk_enc_final(esdk_enc *e)
{
	uint8_t *foot = NULL;
	size_t siglen = 0;
	hw_err r;

	if (!e)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_enc_final");
	if (e->err != HW_OK || e->done)
		return enc_dead(e);
	r = enc_frame(e, e->pt, e->ptlen, true);
	if (r == HW_OK && e->sig) {
		if (EVP_DigestSignFinal(e->sig, NULL, &siglen) != 1 || siglen > UINT16_MAX ||
		    !(foot = malloc(siglen + 2)) ||
		    EVP_DigestSignFinal(e->sig, foot + 2, &siglen) != 1) {
			r = hw_fail(HW_ERR_CRYPTO, 0, "ECDSA signature");
		} else {
			foot[0] = (uint8_t)(siglen >> 8);
			foot[1] = (uint8_t)siglen;
			r = e->p.out(e->p.out_arg, foot, siglen + 2);
		}
		free(foot);
	}
	if (r != HW_OK)
		e->err = r;
	else
		e->done = true;
	return r;
}

void
esdk_enc_free(esdk_enc *e)
{
	if (!e)
		return;
	OPENSSL_cleanse(e->key, sizeof(e->key));
	if (e->pt) {
		OPENSSL_cleanse(e->pt, e->ptcap);
		free(e->pt);
	}
	free(e->unit);
	esdk_pipe_free(e->pipe);
	EVP_CIPHER_CTX_free(e->cc);
	EVP_MD_CTX_free(e->sig);
	free(e);
}

/* ---------------------------------------------------------------- */
/* Decryption                                                        */

enum { ST_HEADER, ST_FRAME, ST_NONFRAMED, ST_FOOTER, ST_DONE };

struct esdk_dec {
	esdk_dec_params p;
	hw_err err;                 /* sticky */
	int state;
	uint8_t *buf;               /* a unit that arrived in pieces */
	size_t blen, bcap, need;
	uint8_t *hdr_bytes;
	esdk_header h;
	bool have_hdr;
	esdk_ec ctx;                /* stored + reproduced pairs */
	uint8_t key[ESDK_MAX_KEY_LEN];
	EVP_CIPHER_CTX *cc;
	EVP_MD_CTX *sig;
	EVP_PKEY *pub;
	uint64_t seq;               /* expected next sequence number */
	uint8_t *pt;                /* plaintext of the unit being decrypted */
	size_t ptcap;
	size_t held_len;            /* final plaintext in pt waiting for the footer */
	bool holding;
	esdk_pipe *pipe;            /* runs of whole frames, made on first use */
};

#define NEED_MORE HW_OK

hw_err
esdk_dec_new(const esdk_dec_params *p, esdk_dec **out)
{
	esdk_dec *d;

	if (!p || !p->unwrap || !p->out || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_dec_new");
	d = calloc(1, sizeof(*d));
	if (!d)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	d->p = *p;
	if (!d->p.max_buffer)
		d->p.max_buffer = SIZE_MAX;
	d->cc = EVP_CIPHER_CTX_new();
	if (!d->cc) {
		free(d);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	d->state = ST_HEADER;
	d->seq = 1;
	*out = d;
	return HW_OK;
}

static hw_err
dec_absorb(esdk_dec *d, const uint8_t *p, size_t n)
{
	if (d->sig && EVP_DigestVerifyUpdate(d->sig, p, n) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "ECDSA verification");
	return HW_OK;
}

static hw_err
dec_release(esdk_dec *d, const uint8_t *p, size_t n)
{
	return n ? d->p.out(d->p.out_arg, p, n) : HW_OK;
}

/* Checks the caller's required pairs and builds the materials' context. */
static hw_err
dec_context(esdk_dec *d, esdk_ec *auth_only)
{
	const esdk_ec *req = d->p.required;
	hw_err e = HW_OK;

	for (size_t i = 0; i < d->h.ec.n && e == HW_OK; i++)
		e = esdk_ec_put(&d->ctx, d->h.ec.p[i].k, d->h.ec.p[i].klen, d->h.ec.p[i].v,
		                d->h.ec.p[i].vlen);
	for (size_t i = 0; req && i < req->n && e == HW_OK; i++) {
		const esdk_pair *q = &req->p[i];
		const esdk_pair *have = esdk_ec_find(&d->h.ec, (const char *)q->k, q->klen);

		if (have) {
			if (cmp_bytes(have->v, have->vlen, q->v, q->vlen) != 0)
				e = hw_fail(HW_ERR_INTEGRITY, 0, "the message's encryption context "
				            "has '%.*s' with another value than required",
				            (int)(q->klen > 64 ? 64 : q->klen), (const char *)q->k);
			continue;
		}
		/* Not stored: a reproduced pair (required-encryption-context
		 * CMM). It must then be authenticated by the header tag and
		 * the keyring, which fails if the message was made without it. */
		e = esdk_ec_put(&d->ctx, q->k, q->klen, q->v, q->vlen);
		if (e == HW_OK)
			e = esdk_ec_put(auth_only, q->k, q->klen, q->v, q->vlen);
	}
	return e;
}

static hw_err
dec_header_accept(esdk_dec *d)
{
	const esdk_suite *s = d->h.suite;
	const esdk_pair *pk = esdk_ec_find(&d->h.ec, ESDK_PUBKEY_CTX_KEY,
	                                   strlen(ESDK_PUBKEY_CTX_KEY));
	esdk_ec auth_only = { NULL, 0 };
	uint8_t dk[ESDK_MAX_KEY_LEN], commit[ESDK_COMMIT_LEN], zero_iv[ESDK_IV_LEN] = { 0 };
	uint8_t *ser = NULL, *aser = NULL;
	size_t serlen = 0, aserlen = 0;
	hw_err e;

	if (s->kdf != ESDK_KDF_COMMIT && !d->p.allow_legacy)
		return hw_fail(HW_ERR_FORMAT, 0, "the message uses suite 0x%04x without key "
		               "commitment, which the commitment policy refuses (allow it with "
		               "the REQUIRE_ALLOW policy)", s->id);
	if (s->sig_curve && d->p.reject_signed)
		return hw_fail(HW_ERR_FORMAT, 0, "the message is signed (suite 0x%04x) and signed "
		               "messages are refused by configuration", s->id);
	if (!s->sig_curve != !pk)
		return hw_fail(HW_ERR_FORMAT, 0, s->sig_curve ? "signed suite without a "
		               "verification key in the context" : "unsigned suite with a "
		               "verification key in the context");
	if (pk && (e = pubkey_from_ctx(s, pk, &d->pub)) != HW_OK)
		return e;
	e = dec_context(d, &auth_only);
	if (e == HW_OK)
		e = esdk_ec_serialize(&d->ctx, &ser, &serlen);
	if (e == HW_OK)
		e = esdk_ec_serialize(&auth_only, &aser, &aserlen);
	if (e == HW_OK)
		e = d->p.unwrap(d->p.unwrap_arg, &d->h, ser, serlen, dk, s->key_len);
	if (e == HW_OK)
		e = esdk_derive(s, dk, d->h.msgid, d->h.msgid_len, d->key, commit);
	OPENSSL_cleanse(dk, sizeof(dk));
	/* Before the derived key is used for anything. */
	if (e == HW_OK && s->kdf == ESDK_KDF_COMMIT &&
	    CRYPTO_memcmp(commit, d->h.commit, ESDK_COMMIT_LEN) != 0)
		e = hw_fail(HW_ERR_INTEGRITY, 0, "key commitment mismatch: the data key does not "
		            "belong to this message");
	if (e == HW_OK)
		e = esdk_gcm_key(d->cc, false, d->key, s->key_len);
	if (e == HW_OK) {
		e = esdk_gcm(d->cc, false, d->h.hdr_iv ? d->h.hdr_iv : zero_iv, d->h.body,
		        d->h.body_len, aser, aserlen, NULL, 0, NULL, (uint8_t *)d->h.tag);
		if (e == HW_ERR_INTEGRITY)
			e = hw_fail(e, 0, auth_only.n ? "header authentication failed (altered "
			            "header, or required context pairs that the message does not "
			            "store and was not made with)" :
			            "header authentication failed (altered header)");
	}
	if (e == HW_OK && d->pub) {
		d->sig = EVP_MD_CTX_new();
		if (!d->sig || EVP_DigestVerifyInit_ex(d->sig, NULL, s->sig_md, NULL, NULL,
		                                       d->pub, NULL) != 1)
			e = hw_fail(HW_ERR_CRYPTO, 0, "ECDSA verification");
	}
	if (e == HW_OK)
		e = dec_absorb(d, d->hdr_bytes, d->h.len);
	OPENSSL_cleanse(commit, sizeof(commit));
	esdk_ec_free(&auth_only);
	free(ser);
	free(aser);
	if (e == HW_OK)
		d->state = d->h.content_type == ESDK_CT_FRAMED ? ST_FRAME : ST_NONFRAMED;
	return e;
}

static hw_err
too_big(esdk_dec *d, uint64_t n)
{
	return hw_fail(HW_ERR_TOO_LARGE, 0, "a frame or body of %llu bytes exceeds the "
	               "buffer limit of %zu bytes", (unsigned long long)n, d->p.max_buffer);
}

static hw_err
step_header(esdk_dec *d, const uint8_t *in, size_t len, size_t *used, size_t *need)
{
	esdk_header h;
	size_t n;
	hw_err e = esdk_header_parse(in, len, d->p.max_edks, &h, &n);

	if (e == HW_ERR_FORMAT && n > len) {
		*need = n;
		return NEED_MORE;
	}
	if (e != HW_OK)
		return e;
	n = h.len;
	esdk_header_free(&h);
	if (n > d->p.max_buffer)
		return too_big(d, n);
	/* The input may be the caller's transient buffer: keep a copy. */
	d->hdr_bytes = malloc(n);
	if (!d->hdr_bytes)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	memcpy(d->hdr_bytes, in, n);
	e = esdk_header_parse(d->hdr_bytes, n, d->p.max_edks, &d->h, NULL);
	if (e != HW_OK)
		return e;
	d->have_hdr = true;
	e = dec_header_accept(d);
	if (e == HW_OK)
		*used = n;
	return e;
}

/* Decrypts one frame or body into d->pt and absorbs it for the signature. */
static hw_err
dec_unit(esdk_dec *d, const uint8_t *unit, size_t unitlen, const uint8_t *iv,
         const uint8_t *ct, size_t ctlen, const char *label, uint32_t seq)
{
	uint8_t aad[ESDK_BODY_AAD_MAX];
	size_t aadlen = esdk_body_aad(aad, d->h.msgid, d->h.msgid_len, label, seq, ctlen);
	hw_err e = grow(&d->pt, &d->ptcap, ctlen ? ctlen : 1, 0);

	if (e == HW_OK)
		e = esdk_gcm(d->cc, false, iv, aad, aadlen, NULL, 0, ct, ctlen, d->pt,
		        (uint8_t *)ct + ctlen);
	if (e == HW_ERR_INTEGRITY)
		e = hw_fail(e, 0, "%s %u failed authentication (altered or truncated message)",
		            label == ESDK_LABEL_SINGLE ? "the body" : "frame", seq);
	if (e != HW_OK) {
		OPENSSL_cleanse(d->pt, d->ptcap);
		return e;
	}
	return dec_absorb(d, unit, unitlen);
}

/* Last plaintext: released now, or after the footer for signed suites. */
static hw_err
dec_last(esdk_dec *d, size_t len)
{
	if (d->sig) {
		d->holding = true;
		d->held_len = len;
		d->state = ST_FOOTER;
		return HW_OK;
	}
	d->state = ST_DONE;
	return dec_release(d, d->pt, len);
}

static hw_err
step_frame(esdk_dec *d, const uint8_t *in, size_t len, size_t *used, size_t *need)
{
	hw_rbuf r;
	uint64_t seq = 0, clen = d->h.frame_len, unit;
	const uint8_t *iv, *ct;
	bool final;
	size_t z = 0;
	hw_err e;

	hw_rbuf_init(&r, in, len);
	if (len < 4) {
		*need = 4;
		return NEED_MORE;
	}
	(void)rd_be(&r, 4, &seq, &z);
	final = seq == UINT32_MAX;
	if (final) {
		if (len < 24) {
			*need = 24;
			return NEED_MORE;
		}
		(void)rd_be(&r, 4, &seq, &z);
		(void)rd(&r, ESDK_IV_LEN, &iv, &z);
		(void)rd_be(&r, 4, &clen, &z);
		if (clen > d->h.frame_len)
			return hw_fail(HW_ERR_FORMAT, 0, "final frame of %llu bytes is longer than "
			               "the frame length %u", (unsigned long long)clen,
			               d->h.frame_len);
		unit = 24 + clen + ESDK_TAG_LEN;
	} else {
		unit = 4 + ESDK_IV_LEN + clen + ESDK_TAG_LEN;
	}
	if (seq != d->seq)
		return hw_fail(HW_ERR_FORMAT, 0, "frame %llu where frame %llu was expected",
		               (unsigned long long)seq, (unsigned long long)d->seq);
	if (unit > d->p.max_buffer)
		return too_big(d, unit);
	if (len < unit) {
		*need = (size_t)unit;
		return NEED_MORE;
	}
	if (!final)
		(void)rd(&r, ESDK_IV_LEN, &iv, &z);
	(void)rd(&r, (size_t)clen, &ct, &z);
	e = dec_unit(d, in, (size_t)unit, iv, ct, (size_t)clen, final ? ESDK_LABEL_FINAL : ESDK_LABEL_FRAME,
	             (uint32_t)seq);
	if (e != HW_OK)
		return e;
	*used = (size_t)unit;
	d->seq++;
	if (final)
		return dec_last(d, (size_t)clen);
	/* Authenticated: a non-final frame is released at once. */
	return dec_release(d, d->pt, (size_t)clen);
}

static hw_err
step_nonframed(esdk_dec *d, const uint8_t *in, size_t len, size_t *used, size_t *need)
{
	hw_rbuf r;
	uint64_t clen = 0, unit;
	const uint8_t *iv, *ct;
	size_t z = 0;
	hw_err e;

	if (len < 20) {
		*need = 20;
		return NEED_MORE;
	}
	hw_rbuf_init(&r, in, len);
	(void)rd(&r, ESDK_IV_LEN, &iv, &z);
	(void)rd_be(&r, 8, &clen, &z);
	if (clen > ESDK_NONFRAMED_MAX)
		return hw_fail(HW_ERR_FORMAT, 0, "non-framed body length %llu exceeds 2^36 - 32",
		               (unsigned long long)clen);
	unit = 20 + clen + ESDK_TAG_LEN;
	if (unit > d->p.max_buffer)
		return too_big(d, unit);
	if (len < unit) {
		*need = (size_t)unit;
		return NEED_MORE;
	}
	(void)rd(&r, (size_t)clen, &ct, &z);
	e = dec_unit(d, in, (size_t)unit, iv, ct, (size_t)clen, ESDK_LABEL_SINGLE, 1);
	if (e != HW_OK)
		return e;
	*used = (size_t)unit;
	return dec_last(d, (size_t)clen);
}

static hw_err
step_footer(esdk_dec *d, const uint8_t *in, size_t len, size_t *used, size_t *need)
{
	size_t siglen;
	hw_err e;

	if (len < 2) {
		*need = 2;
		return NEED_MORE;
	}
	siglen = (size_t)in[0] << 8 | in[1];
	if (len < 2 + siglen) {
		*need = 2 + siglen;
		return NEED_MORE;
	}
	if (EVP_DigestVerifyFinal(d->sig, in + 2, siglen) != 1)
		return hw_fail(HW_ERR_INTEGRITY, 0, "the message signature does not verify "
		               "(altered or truncated message)");
	*used = 2 + siglen;
	d->state = ST_DONE;
	d->holding = false;
	e = dec_release(d, d->pt, d->held_len);
	return e;
}

/* Processes one unit from in: *used > 0, or *need = the unit's size. */
static hw_err
step(esdk_dec *d, const uint8_t *in, size_t len, size_t *used, size_t *need)
{
	*used = 0;
	*need = 0;
	switch (d->state) {
	case ST_HEADER:
		return step_header(d, in, len, used, need);
	case ST_FRAME:
		return step_frame(d, in, len, used, need);
	case ST_NONFRAMED:
		return step_nonframed(d, in, len, used, need);
	case ST_FOOTER:
		return step_footer(d, in, len, used, need);
	default:
		return hw_fail(HW_ERR_FORMAT, 0, "%zu bytes after the end of the message", len);
	}
}

static hw_err
dec_absorb_cb(void *arg, const uint8_t *p, size_t n)
{
	return dec_absorb(arg, p, n);
}

static hw_err
dec_release_cb(void *arg, const uint8_t *p, size_t n)
{
	return dec_release(arg, p, n);
}

/*
 * The regular frames at the start of in that are whole, in sequence and
 * within the buffer limit; anything else (the final frame, a partial or
 * wrong frame) is left to step_frame, which also reports the errors.
 */
static size_t
dec_scan(const esdk_dec *d, const uint8_t *in, size_t len)
{
	size_t unit = (size_t)d->h.frame_len + 4 + ESDK_IV_LEN + ESDK_TAG_LEN, n = 0;
	uint64_t seq = 0;
	hw_rbuf r;
	size_t z = 0;

	if (unit > d->p.max_buffer)
		return 0;
	hw_rbuf_init(&r, in, len);
	while (hw_rbuf_left(&r) >= unit && d->seq + n < UINT32_MAX) {
		const uint8_t *skip;

		(void)rd_be(&r, 4, &seq, &z);
		if (seq != d->seq + n)
			break;
		(void)rd(&r, unit - 4, &skip, &z);
		n++;
	}
	return n;
}

/* Whole frames straight from the caller's bytes, through the workers. */
static hw_err
dec_bulk(esdk_dec *d, const uint8_t *in, size_t len, size_t *used)
{
	size_t n = bulk_ok(d->h.frame_len) ? dec_scan(d, in, len) : 0;
	hw_err e = HW_OK;

	*used = 0;
	if (n < 2)
		return HW_OK;
	if (!d->pipe)
		e = esdk_pipe_new(false, d->p.threads, d->key, d->h.suite->key_len, d->h.msgid,
		                  d->h.msgid_len, d->h.frame_len, &d->pipe);
	if (e == HW_OK)
		e = esdk_pipe_run(d->pipe, in, n, (uint32_t)d->seq, d->sig ? dec_absorb_cb : NULL,
		                  dec_release_cb, d);
	if (e == HW_OK) {
		d->seq += n;
		*used = n * ((size_t)d->h.frame_len + 4 + ESDK_IV_LEN + ESDK_TAG_LEN);
	}
	return e;
}

static hw_err
dec_fail(esdk_dec *d, hw_err e)
{
	d->err = e;
	/* Its buffers may hold plaintext of frames not released. */
	esdk_pipe_free(d->pipe);
	d->pipe = NULL;
	if (d->pt)
		OPENSSL_cleanse(d->pt, d->ptcap);
	d->holding = false;
	OPENSSL_cleanse(d->key, sizeof(d->key));
	/* The key schedule too; the stream is dead from now on. */
	EVP_CIPHER_CTX_reset(d->cc);
	return e;
}

hw_err
esdk_dec_update(esdk_dec *d, const uint8_t *in, size_t len)
{
	size_t used, need;
	hw_err e;

	if (!d || (!in && len))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_dec_update");
	if (d->err != HW_OK)
		return hw_fail(d->err, 0, "the decryption stream failed earlier");
	while (len > 0) {
		if (d->blen == 0) {
			if (d->state == ST_FRAME) {
				e = dec_bulk(d, in, len, &used);
				if (e != HW_OK)
					return dec_fail(d, e);
				in += used;
				len -= used;
				if (len == 0)
					break;
			}
			/* Straight from the caller's bytes, copying nothing. */
			e = step(d, in, len, &used, &need);
			if (e != HW_OK)
				return dec_fail(d, e);
			if (used) {
				in += used;
				len -= used;
				continue;
			}
			if (need > d->p.max_buffer)
				return dec_fail(d, too_big(d, need));
			d->need = need;
		}
		size_t take = d->need - d->blen;

		if (take > len)
			take = len;
		e = grow(&d->buf, &d->bcap, d->blen + take, d->blen);
		if (e != HW_OK)
			return dec_fail(d, e);
		memcpy(d->buf + d->blen, in, take);
		d->blen += take;
		in += take;
		len -= take;
		if (d->blen < d->need)
			break;
		e = step(d, d->buf, d->blen, &used, &need);
		if (e != HW_OK)
			return dec_fail(d, e);
		if (used) {
			/* need is always a unit's exact end (see step_*). */
			if (used != d->blen)
				return dec_fail(d, hw_fail(HW_ERR_CRYPTO, 0, "internal framing"));
			d->blen = 0;
		} else {
			if (need > d->p.max_buffer)
				return dec_fail(d, too_big(d, need));
			d->need = need;
		}
	}
	return HW_OK;
}

hw_err
esdk_dec_final(esdk_dec *d)
{
	if (!d)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_dec_final");
	if (d->err != HW_OK)
		return hw_fail(d->err, 0, "the decryption stream failed earlier");
	if (d->state != ST_DONE || d->blen)
		return dec_fail(d, hw_fail(HW_ERR_FORMAT, 0, "the message is truncated (it ends "
		                           "%s)", d->state == ST_HEADER ? "in the header" :
		                           d->state == ST_FOOTER ? "before the signature" :
		                           "in the body"));
	return HW_OK;
}

const esdk_header *
esdk_dec_header(const esdk_dec *d)
{
	return d && d->have_hdr && d->state != ST_HEADER ? &d->h : NULL;
}

const esdk_ec *
esdk_dec_context(const esdk_dec *d)
{
	return d && d->have_hdr && d->state != ST_HEADER ? &d->ctx : NULL;
}

void
esdk_dec_free(esdk_dec *d)
{
	if (!d)
		return;
	OPENSSL_cleanse(d->key, sizeof(d->key));
	if (d->pt) {
		OPENSSL_cleanse(d->pt, d->ptcap);
		free(d->pt);
	}
	if (d->buf) {
		/* It may hold an unauthenticated frame: ciphertext, but wipe anyway. */
		OPENSSL_cleanse(d->buf, d->bcap);
		free(d->buf);
	}
	esdk_pipe_free(d->pipe);
	esdk_header_free(&d->h);
	esdk_ec_free(&d->ctx);
	free(d->hdr_bytes);
	EVP_CIPHER_CTX_free(d->cc);
	EVP_MD_CTX_free(d->sig);
	EVP_PKEY_free(d->pub);
	free(d);
}
