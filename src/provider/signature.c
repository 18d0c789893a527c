/*
 * Signatures with HSM keys: RSA PKCS#1 v1.5, RSA-PSS (salt length = digest
 * length, MGF1 with the same hash: what TLS 1.3 and X.509 use) and ECDSA.
 * The host hashes -- TLS and X.509 feed data incrementally -- and the HSM
 * signs the digest through hw_sign_digest(). Anything else (another salt
 * length, a raw signature without a known digest size, SHA-1) fails with
 * an error instead of being attempted another way.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include "provider.h"

typedef struct {
	hwp_prov *prov;
	int kind;                   /* HWP_RSA / HWP_EC / HWP_ED25519 / HWP_ED448 */
	hwp_key *key;
	int pad;                    /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
	int saltlen;                /* RSA_PSS_SALTLEN_DIGEST or an exact length */
	EVP_MD *md;                 /* NULL until set: then inferred from the digest size */
	char mgf1[64];              /* "" = same as md */
	EVP_MD_CTX *mdctx;          /* digest_sign_*: made at the first update */
	int dsig;                   /* initialised by digest_sign_init */
} sig_ctx;

static void *
sig_newctx(hwp_prov *p, int kind)
{
	sig_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->prov = p;
	c->kind = kind;
	c->pad = RSA_PKCS1_PADDING;
	c->saltlen = RSA_PSS_SALTLEN_DIGEST;
	return c;
}

static void *
rsa_newctx(void *provctx, const char *propq)
{
	return sig_newctx(provctx, HWP_RSA);
}

static void *
ecdsa_newctx(void *provctx, const char *propq)
{
	return sig_newctx(provctx, HWP_EC);
}

static void *
ed25519_newctx(void *provctx, const char *propq)
{
	return sig_newctx(provctx, HWP_ED25519);
}

static void *
ed448_newctx(void *provctx, const char *propq)
{
	return sig_newctx(provctx, HWP_ED448);
}

static int
is_ed(const sig_ctx *c)
{
	return c->kind == HWP_ED25519 || c->kind == HWP_ED448;
}

static void
sig_freectx(void *vc)
{
	sig_ctx *c = vc;

	if (!c)
		return;
	EVP_MD_CTX_free(c->mdctx);
	EVP_MD_free(c->md);
	hwp_key_unref(c->key);
	free(c);
}

/* EVP_DigestSignFinal works on a copy unless told otherwise: dup must be real. */
static void *
sig_dupctx(void *vc)
{
	sig_ctx *c = vc, *d = malloc(sizeof(*d));

	if (!d)
		return NULL;
	*d = *c;
	d->mdctx = NULL;
	if (c->mdctx && (!(d->mdctx = EVP_MD_CTX_new()) || !EVP_MD_CTX_copy_ex(d->mdctx, c->mdctx))) {
		EVP_MD_CTX_free(d->mdctx);
		free(d);
		return NULL;
	}
	if (d->md)
		EVP_MD_up_ref(d->md);
	if (d->key)
		atomic_fetch_add(&d->key->refs, 1);
	return d;
}

static int
set_md(sig_ctx *c, const char *name, const char *props)
{
	EVP_MD *md = EVP_MD_fetch(c->prov->libctx, name, props);

	if (!md) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "digest '%s'", name);
		return 0;
	}
	if (!EVP_MD_is_a(md, "SHA256") && !EVP_MD_is_a(md, "SHA384") &&
	    !EVP_MD_is_a(md, "SHA512")) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
		          "digest '%s' with an HSM key (SHA-256, SHA-384 and SHA-512 only)", name);
		EVP_MD_free(md);
		return 0;
	}
	EVP_MD_free(c->md);
	c->md = md;
	return 1;
}

static int
sig_set_params(void *vc, const OSSL_PARAM params[])
{
	sig_ctx *c = vc;
	const OSSL_PARAM *q;
	const char *s = NULL, *props = NULL;
	int v;

	if (!params)
		return 1;
	if ((q = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PROPERTIES)) &&
	    !OSSL_PARAM_get_utf8_string_ptr(q, &props))
		return 0;
	if ((q = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST))) {
		/* Not while hashing: the digest must not change midway. */
		if (c->mdctx || !OSSL_PARAM_get_utf8_string_ptr(q, &s) || !set_md(c, s, props))
			return 0;
	}
	if (c->kind != HWP_RSA)
		return 1;
	if ((q = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE))) {
		if (q->data_type == OSSL_PARAM_UTF8_STRING) {
			if (!OSSL_PARAM_get_utf8_string_ptr(q, &s))
				return 0;
			v = strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING
			    : strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0 ? RSA_PKCS1_PSS_PADDING : -1;
		} else if (!OSSL_PARAM_get_int(q, &v)) {
			return 0;
		}
		if (v != RSA_PKCS1_PADDING && v != RSA_PKCS1_PSS_PADDING) {
			hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
			          "RSA padding (PKCS#1 v1.5 and PSS only)");
			return 0;
		}
		c->pad = v;
	}
	if ((q = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN))) {
		if (q->data_type == OSSL_PARAM_UTF8_STRING) {
			char *end;
			if (!OSSL_PARAM_get_utf8_string_ptr(q, &s))
				return 0;
			if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0) {
				v = RSA_PSS_SALTLEN_DIGEST;
			} else {
				long l = strtol(s, &end, 10);
				v = (*s && !*end && l >= 0 && l <= 64) ? (int)l : -100;
			}
		} else if (!OSSL_PARAM_get_int(q, &v)) {
			return 0;
		}
		if (v != RSA_PSS_SALTLEN_DIGEST && (v < 0 || v > 64)) {
			hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
			          "PSS salt length (the digest length only)");
			return 0;
		}
		c->saltlen = v;
	}
	if ((q = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST))) {
		if (!OSSL_PARAM_get_utf8_string_ptr(q, &s) || strlen(s) >= sizeof(c->mgf1))
			return 0;
		strcpy(c->mgf1, s);
	}
	return 1;
}

/* The digest of a signature and where to fetch it, for RSA and ECDSA. */
#define SIG_DIGEST_PARAMS                                              \
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),      \
	OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0)

static const OSSL_PARAM *
rsa_settable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = {
		SIG_DIGEST_PARAMS,
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

static const OSSL_PARAM *
ecdsa_settable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = {
		SIG_DIGEST_PARAMS,
		OSSL_PARAM_END
	};
	return t;
}

/* ------------------------------------------------------------------ */
/* AlgorithmIdentifier of the signature, for X.509 (req, ca, x509 -sign) */

static const uint8_t oid_sha2[] = { 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02 };

/* idx: 1 SHA-256, 2 SHA-384, 3 SHA-512; returns the length written to out (>= 67). */
static size_t
algid(const sig_ctx *c, int idx, uint8_t *out)
{
	static const uint8_t rsa[] = { 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
	                               0x0d, 0x01, 0x01, 0x00, 0x05, 0x00 };
	static const uint8_t ec[] = { 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
	                              0x04, 0x03, 0x00 };
	static const uint8_t pss_head[] = { 0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
	                                    0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0, 0x0f };
	static const uint8_t mgf_head[] = { 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48,
	                                    0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08 };
	size_t n = 0;

	if (c->kind == HWP_EC) {
		memcpy(out, ec, sizeof(ec));
		out[sizeof(ec) - 1] = (uint8_t)(1 + idx);
		return sizeof(ec);
	}
	if (c->pad == RSA_PKCS1_PADDING) {
		memcpy(out, rsa, sizeof(rsa));
		out[12] = (uint8_t)(0x0a + idx);
		return sizeof(rsa);
	}
	/* RSASSA-PSS-params {hash, MGF1(hash), saltLength = digest length}. */
	memcpy(out, pss_head, sizeof(pss_head));
	n = sizeof(pss_head);
	for (int twice = 0; twice < 2; twice++) {
		if (twice) {
			memcpy(out + n, mgf_head, sizeof(mgf_head));
			n += sizeof(mgf_head);
		}
		out[n++] = 0x30;
		out[n++] = 0x0d;
		memcpy(out + n, oid_sha2, sizeof(oid_sha2));
		n += sizeof(oid_sha2);
		out[n++] = (uint8_t)idx;
		out[n++] = 0x05;
		out[n++] = 0x00;
	}
	out[n++] = 0xa2;
	out[n++] = 0x03;
	out[n++] = 0x02;
	out[n++] = 0x01;
	out[n++] = (uint8_t)(16 + 16 * idx);
	return n;
}

static int
md_index(const EVP_MD *md)
{
	return !md ? 0 : EVP_MD_is_a(md, "SHA256") ? 1 : EVP_MD_is_a(md, "SHA384") ? 2
	       : EVP_MD_is_a(md, "SHA512") ? 3 : 0;
}

static int
sig_get_params(void *vc, OSSL_PARAM params[])
{
	sig_ctx *c = vc;
	OSSL_PARAM *q;
	uint8_t aid[80];
	int idx = md_index(c->md);

	if (is_ed(c)) {
		/* id-Ed25519 / id-Ed448 (RFC 8410): no parameters, no digest. */
		static const uint8_t ed[] = { 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70 };
		memcpy(aid, ed, sizeof(ed));
		aid[sizeof(ed) - 1] = c->kind == HWP_ED25519 ? 0x70 : 0x71;
		if ((q = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID)) &&
		    !OSSL_PARAM_set_octet_string(q, aid, sizeof(ed)))
			return 0;
		return 1;
	}
	if ((q = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID))) {
		/* PSS with another salt length has no fixed encoding here. */
		if (!idx || (c->kind == HWP_RSA && c->pad == RSA_PKCS1_PSS_PADDING &&
		             c->saltlen != RSA_PSS_SALTLEN_DIGEST &&
		             c->saltlen != (int)EVP_MD_get_size(c->md)))
			return 0;
		if (!OSSL_PARAM_set_octet_string(q, aid, algid(c, idx, aid)))
			return 0;
	}
	if ((q = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST)) &&
	    !OSSL_PARAM_set_utf8_string(q, c->md ? EVP_MD_get0_name(c->md) : ""))
		return 0;
	if (c->kind == HWP_RSA && (q = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE))) {
		if (q->data_type == OSSL_PARAM_UTF8_STRING
		    ? !OSSL_PARAM_set_utf8_string(q, c->pad == RSA_PKCS1_PADDING
		                                     ? OSSL_PKEY_RSA_PAD_MODE_PKCSV15
		                                     : OSSL_PKEY_RSA_PAD_MODE_PSS)
		    : !OSSL_PARAM_set_int(q, c->pad))
			return 0;
	}
	if (c->kind == HWP_RSA &&
	    (q = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN))) {
		if (q->data_type == OSSL_PARAM_UTF8_STRING
		    ? !OSSL_PARAM_set_utf8_string(q, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST)
		    : !OSSL_PARAM_set_int(q, c->saltlen))
			return 0;
	}
	return 1;
}

static const OSSL_PARAM *
sig_gettable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

/* ------------------------------------------------------------------ */

static int
sig_init(void *vc, void *provkey, const OSSL_PARAM params[])
{
	sig_ctx *c = vc;
	hwp_key *k = provkey;

	if (!k || k->kind != c->kind) {
		hwp_raise(c->prov, HWP_R_WRONG_KEY_TYPE, "signature with a key of another type");
		return 0;
	}
	if (!k->key) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
		          "this is a public key: the hsmwrap provider only signs with HSM keys");
		return 0;
	}
	atomic_fetch_add(&k->refs, 1);
	hwp_key_unref(c->key);
	c->key = k;
	if (k->pss_only)
		c->pad = RSA_PKCS1_PSS_PADDING;
	/* A context may be initialised again: forget the last operation. */
	EVP_MD_CTX_free(c->mdctx);
	c->mdctx = NULL;
	c->dsig = 0;
	return sig_set_params(c, params);
}

static int
pick_alg(sig_ctx *c, size_t mdlen, hw_sig_alg *alg)
{
	int idx = c->md ? md_index(c->md) : mdlen == 32 ? 1 : mdlen == 48 ? 2 : mdlen == 64 ? 3 : 0;

	if (!idx || (c->md && (size_t)EVP_MD_get_size(c->md) != mdlen)) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
		          "a %zu-byte digest (SHA-256, SHA-384 or SHA-512 only)", mdlen);
		return 0;
	}
	if (c->kind == HWP_EC) {
		*alg = idx == 1 ? HW_SIG_ECDSA_SHA256 : idx == 2 ? HW_SIG_ECDSA_SHA384
		       : HW_SIG_ECDSA_SHA512;
		return 1;
	}
	if (c->pad == RSA_PKCS1_PADDING && c->key->pss_only) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
		          "PKCS#1 v1.5 with key '%s': the token allows it RSA-PSS signatures only",
		          hw_key_label(c->key->key));
		return 0;
	}
	if (c->pad == RSA_PKCS1_PADDING) {
		*alg = (hw_sig_alg)(HW_SIG_RSA_PKCS1_SHA256 + idx - 1);
		return 1;
	}
	if (c->saltlen != RSA_PSS_SALTLEN_DIGEST && (size_t)c->saltlen != mdlen) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
		          "PSS salt length %d (the digest length only)", c->saltlen);
		return 0;
	}
	if (c->mgf1[0] && (!c->md || !EVP_MD_is_a(c->md, c->mgf1))) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "MGF1 with %s (the signature's digest only)",
		          c->mgf1);
		return 0;
	}
	*alg = (hw_sig_alg)(HW_SIG_RSA_PSS_SHA256 + idx - 1);
	return 1;
}

static int
do_sign(sig_ctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
        const unsigned char *dg, size_t dglen)
{
	size_t max = (size_t)EVP_PKEY_get_size(c->key->pub);
	uint8_t *out = NULL;
	size_t outlen = 0;
	hw_sig_alg alg;
	hw_err e;

	if (!sig) {
		*siglen = max;
		return 1;
	}
	if (!pick_alg(c, dglen, &alg))
		return 0;
	HWP_HSM_BEGIN();
	e = hw_sign_digest(c->key->key, alg, dg, dglen, &out, &outlen);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(c->prov, e, "signing with the HSM key");
		return 0;
	}
	if (outlen > sigsize) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "signature buffer too small");
		hw_free(out);
		return 0;
	}
	memcpy(sig, out, outlen);
	*siglen = outlen;
	hw_free(out);
	return 1;
}

static int
sig_sign(void *vc, unsigned char *sig, size_t *siglen, size_t sigsize,
         const unsigned char *tbs, size_t tbslen)
{
	sig_ctx *c = vc;

	return c->key && do_sign(c, sig, siglen, sigsize, tbs, tbslen);
}

static int
dsig_init(void *vc, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
	sig_ctx *c = vc;

	if (!sig_init(vc, provkey, params))
		return 0;
	if (!set_md(c, mdname && *mdname ? mdname : "SHA256", NULL))
		return 0;
	/* The digest starts at the first update: libssl initialises a context
	 * only to ask whether the key can sign with a digest, once per
	 * candidate signature algorithm of every handshake. */
	c->dsig = 1;
	return 1;
}

static int
start_digest(sig_ctx *c)
{
	if (c->mdctx)
		return 1;
	if (!c->dsig || !(c->mdctx = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(c->mdctx, c->md, NULL)) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "starting the digest");
		EVP_MD_CTX_free(c->mdctx);
		c->mdctx = NULL;
		return 0;
	}
	return 1;
}

static int
dsig_update(void *vc, const unsigned char *data, size_t len)
{
	sig_ctx *c = vc;

	return start_digest(c) && EVP_DigestUpdate(c->mdctx, data, len);
}

static int
dsig_final(void *vc, unsigned char *sig, size_t *siglen, size_t sigsize)
{
	sig_ctx *c = vc;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (!c->dsig || !c->key)
		return 0;
	if (!sig)
		return do_sign(c, NULL, siglen, 0, NULL, 0);
	if (!start_digest(c) || !EVP_DigestFinal_ex(c->mdctx, md, &mdlen))
		return 0;
	return do_sign(c, sig, siglen, sigsize, md, mdlen);
}

#define FN(id, f) { OSSL_FUNC_SIGNATURE_##id, (void (*)(void))(f) }
#define COMMON \
	FN(FREECTX, sig_freectx), FN(DUPCTX, sig_dupctx), \
	FN(SIGN_INIT, sig_init), FN(SIGN, sig_sign), \
	FN(DIGEST_SIGN_INIT, dsig_init), FN(DIGEST_SIGN_UPDATE, dsig_update), \
	FN(DIGEST_SIGN_FINAL, dsig_final), \
	FN(GET_CTX_PARAMS, sig_get_params), FN(GETTABLE_CTX_PARAMS, sig_gettable), \
	FN(SET_CTX_PARAMS, sig_set_params)

const OSSL_DISPATCH hwp_rsa_signature[] = {
	FN(NEWCTX, rsa_newctx), COMMON, FN(SETTABLE_CTX_PARAMS, rsa_settable), { 0, NULL }
};

const OSSL_DISPATCH hwp_ecdsa_signature[] = {
	FN(NEWCTX, ecdsa_newctx), COMMON, FN(SETTABLE_CTX_PARAMS, ecdsa_settable), { 0, NULL }
};

/* ------------------------------------------------------------------ */
/*
 * EdDSA (PureEdDSA, RFC 8032): the HSM hashes the message itself, twice,
 * so there is no host-side digest and no streaming -- only the one-shot
 * EVP_DigestSign that TLS 1.3 and X.509 signing use. Ed25519ph/ctx and
 * Ed448ph are not offered: CKM_EDDSA without parameters is PureEdDSA.
 */

/* No context string or prehash: any parameter is one we would ignore. */
static int
ed_set_params(void *vc, const OSSL_PARAM params[])
{
	sig_ctx *c = vc;

	if (params && params->key) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "EdDSA parameter '%s' (PureEdDSA only)",
		          params->key);
		return 0;
	}
	return 1;
}

static const OSSL_PARAM *
ed_settable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = { OSSL_PARAM_END };
	return t;
}

static const OSSL_PARAM *
ed_gettable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

static int
ed_dsig_init(void *vc, const char *mdname, void *provkey, const OSSL_PARAM params[])
{
	sig_ctx *c = vc;

	if (mdname && *mdname) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
		          "digest '%s' with EdDSA (it signs the message itself: no digest)", mdname);
		return 0;
	}
	if (!sig_init(vc, provkey, NULL))
		return 0;
	c->dsig = 1;
	return ed_set_params(c, params);
}

static int
ed_dsig(void *vc, unsigned char *sig, size_t *siglen, size_t sigsize,
        const unsigned char *tbs, size_t tbslen)
{
	sig_ctx *c = vc;
	uint8_t *out = NULL;
	size_t outlen = 0;
	hw_err e;

	if (!c->dsig || !c->key)
		return 0;
	if (!sig) {
		*siglen = (size_t)EVP_PKEY_get_size(c->key->pub);
		return 1;
	}
	HWP_HSM_BEGIN();
	e = hw_sign_digest(c->key->key, HW_SIG_EDDSA, tbs ? tbs : (const unsigned char *)"",
	                   tbslen, &out, &outlen);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(c->prov, e, "signing with the HSM key");
		return 0;
	}
	if (outlen > sigsize) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "signature buffer too small");
		hw_free(out);
		return 0;
	}
	memcpy(sig, out, outlen);
	*siglen = outlen;
	hw_free(out);
	return 1;
}

#define ED_SIG(newfn) \
	FN(NEWCTX, newfn), FN(FREECTX, sig_freectx), FN(DUPCTX, sig_dupctx), \
	FN(DIGEST_SIGN_INIT, ed_dsig_init), FN(DIGEST_SIGN, ed_dsig), \
	FN(GET_CTX_PARAMS, sig_get_params), FN(GETTABLE_CTX_PARAMS, ed_gettable), \
	FN(SET_CTX_PARAMS, ed_set_params), FN(SETTABLE_CTX_PARAMS, ed_settable), \
	{ 0, NULL }

const OSSL_DISPATCH hwp_ed25519_signature[] = { ED_SIG(ed25519_newctx) };
const OSSL_DISPATCH hwp_ed448_signature[] = { ED_SIG(ed448_newctx) };
