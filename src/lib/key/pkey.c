/*
 * Private-key operations on a digest or ciphertext the caller supplies,
 * for the OpenSSL provider: TLS and X.509 hash on the host (incrementally),
 * so the HSM must sign a ready digest; legacy TLS 1.2 RSA key exchange
 * decrypts a premaster secret.
 * hw_sign (ops/sign.c) hashes and then calls hw_sign_digest. The table of
 * signature algorithms is here, the lowest file that needs it.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ecdsa.h>


/* Every signature algorithm: its name, the host's hash and the HSM's mechanism. */
typedef struct {
	const char *name;
	hw_sig_alg alg;
	const char *md;             /* OpenSSL's name of the hash; NULL: none (EdDSA) */
	CK_KEY_TYPE kt;
	CK_MECHANISM_TYPE mech;
	size_t mdlen;
	CK_MECHANISM_TYPE ckhash, mgf;
} dalg;

static const dalg dalgs[] = {
	{ "rsa-pkcs1-sha256", HW_SIG_RSA_PKCS1_SHA256, "SHA256", CKK_RSA, CKM_RSA_PKCS, 32, 0, 0 },
	{ "rsa-pkcs1-sha384", HW_SIG_RSA_PKCS1_SHA384, "SHA384", CKK_RSA, CKM_RSA_PKCS, 48, 0, 0 },
	{ "rsa-pkcs1-sha512", HW_SIG_RSA_PKCS1_SHA512, "SHA512", CKK_RSA, CKM_RSA_PKCS, 64, 0, 0 },
	{ "rsa-pss-sha256", HW_SIG_RSA_PSS_SHA256, "SHA256", CKK_RSA, CKM_RSA_PKCS_PSS, 32,
	  CKM_SHA256, CKG_MGF1_SHA256 },
	{ "rsa-pss-sha384", HW_SIG_RSA_PSS_SHA384, "SHA384", CKK_RSA, CKM_RSA_PKCS_PSS, 48,
	  CKM_SHA384, CKG_MGF1_SHA384 },
	{ "rsa-pss-sha512", HW_SIG_RSA_PSS_SHA512, "SHA512", CKK_RSA, CKM_RSA_PKCS_PSS, 64,
	  CKM_SHA512, CKG_MGF1_SHA512 },
	{ "ecdsa-sha256", HW_SIG_ECDSA_SHA256, "SHA256", CKK_EC, CKM_ECDSA, 32, 0, 0 },
	{ "ecdsa-sha384", HW_SIG_ECDSA_SHA384, "SHA384", CKK_EC, CKM_ECDSA, 48, 0, 0 },
	{ "ecdsa-sha512", HW_SIG_ECDSA_SHA512, "SHA512", CKK_EC, CKM_ECDSA, 64, 0, 0 },
	/* No host hash, mdlen 0: the message itself, any length (PureEdDSA
	 * hashes inside the HSM). */
	{ "eddsa", HW_SIG_EDDSA, NULL, CKK_EC_EDWARDS, CKM_EDDSA, 0, 0, 0 },
};
#define NDALGS (sizeof(dalgs) / sizeof(dalgs[0]))

static const dalg *
dalg_of(hw_sig_alg alg)
{
	for (size_t i = 0; i < NDALGS; i++)
		if (dalgs[i].alg == alg)
			return &dalgs[i];
	return NULL;
}

HW_EXPORT hw_err
hw_sig_alg_parse(const char *s, hw_sig_alg *alg)
{
	for (size_t i = 0; s && alg && i < NDALGS; i++) {
		if (strcmp(dalgs[i].name, s) == 0) {
			*alg = dalgs[i].alg;
			return HW_OK;
		}
	}
	return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown signature algorithm");
}

HW_EXPORT const char *
hw_sig_alg_name(hw_sig_alg alg)
{
	const dalg *d = dalg_of(alg);

	return d ? d->name : "unknown";
}

bool
hw_sig_alg_md(hw_sig_alg alg, const char **md)
{
	const dalg *d = dalg_of(alg);

	*md = d ? d->md : NULL;
	return d != NULL;
}

/* The longest message handed to the HSM for EdDSA in one C_Sign. */
#define EDDSA_MAX (1u << 20)

/* DER DigestInfo prefixes (RFC 8017, 9.2 note 1), indexed by digest size. */
#define DI_LEN 19
static const uint8_t di_prefix[3][DI_LEN] = {
	{ 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	  0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 },
	{ 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	  0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 },
	{ 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	  0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 },
};

/* One single-part operation: C_SignInit/C_Sign or C_DecryptInit/C_Decrypt. */
typedef struct {
	hw_key *key;
	bool decrypt;
	CK_MECHANISM mech;
	const uint8_t *in;
	size_t inlen;
	uint8_t out[1024];          /* RSA-8192 fits; wiped: may hold a premaster secret */
	CK_ULONG outlen;
} pk_arg;

static CK_RV
op_pk(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	pk_arg *a = arg;
	CK_OBJECT_HANDLE h;
	CK_ULONG outlen = sizeof(a->out);
	CK_RV rv;
	CK_RV krv = hw_key_handle_ck(a->key, s, &h);

	if (krv != CKR_OK)
		return krv;
	if (a->decrypt) {
		rv = ctx->fl->C_DecryptInit(s, &a->mech, h);
		if (rv == CKR_OK)
			rv = hw_key_auth_ck(a->key, s);
		if (rv == CKR_OK)
			rv = ctx->fl->C_Decrypt(s, (CK_BYTE *)a->in, a->inlen, a->out, &outlen);
	} else {
		rv = ctx->fl->C_SignInit(s, &a->mech, h);
		if (rv == CKR_OK)
			rv = hw_key_auth_ck(a->key, s);
		if (rv == CKR_OK)
			rv = ctx->fl->C_Sign(s, (CK_BYTE *)a->in, a->inlen, a->out, &outlen);
	}
	if (rv == CKR_OK)
		a->outlen = outlen;
	return rv;
}

/* PKCS#11 gives r || s; X.509 and TLS want a DER ECDSA-Sig-Value. */
static hw_err
rs_to_der(const uint8_t *rs, size_t len, uint8_t **out, size_t *outlen)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = len % 2 ? NULL : BN_bin2bn(rs, (int)(len / 2), NULL);
	BIGNUM *s = len % 2 ? NULL : BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	unsigned char *der = NULL;
	int n;

	if (!sig || !r || !s || !ECDSA_SIG_set0(sig, r, s)) {
		ECDSA_SIG_free(sig);
		BN_free(r);
		BN_free(s);
		return hw_fail(HW_ERR_CRYPTO, 0, "encoding the ECDSA signature");
	}
	n = i2d_ECDSA_SIG(sig, &der);
	ECDSA_SIG_free(sig);
	if (n <= 0)
		return hw_fail(HW_ERR_CRYPTO, 0, "encoding the ECDSA signature");
	*out = malloc((size_t)n);
	if (!*out) {
		OPENSSL_free(der);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	memcpy(*out, der, (size_t)n);
	*outlen = (size_t)n;
	OPENSSL_free(der);
	return HW_OK;
}

HW_EXPORT hw_err
hw_sign_digest(hw_key *key, hw_sig_alg alg, const uint8_t *digest, size_t len,
               uint8_t **sig, size_t *siglen)
{
	const dalg *d = NULL;
	CK_RSA_PKCS_PSS_PARAMS pss;
	uint8_t in[DI_LEN + 64];
	pk_arg *a;
	hw_err e;

	if (!key || !digest || !sig || !siglen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_sign_digest");
	hw_clear_error();
	if (!(d = dalg_of(alg)))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown signature algorithm");
	if (d->mdlen ? len != d->mdlen : len > EDDSA_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, d->mdlen ? "a %s digest is %zu bytes, not %zu"
		               : "%s messages up to %zu bytes, not %zu", hw_sig_alg_name(alg),
		               d->mdlen ? d->mdlen : (size_t)EDDSA_MAX, len);
	if (key->cls != CKO_PRIVATE_KEY || !key->can_sign || key->ktype != d->kt)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' cannot make %s signatures",
		               key->label, hw_sig_alg_name(alg));
	a = calloc(1, sizeof(*a));
	if (!a)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	a->key = key;
	a->mech.mechanism = d->mech;
	a->in = in;
	if (d->mech == CKM_RSA_PKCS) {
		/* CKM_RSA_PKCS pads whatever it is given: the DigestInfo is ours to add. */
		memcpy(in, di_prefix[len == 32 ? 0 : len == 48 ? 1 : 2], DI_LEN);
		memcpy(in + DI_LEN, digest, len);
		a->inlen = DI_LEN + len;
	} else if (d->mech == CKM_EDDSA) {
		a->in = digest;
		a->inlen = len;
	} else {
		memcpy(in, digest, len);
		a->inlen = len;
	}
	if (d->mech == CKM_RSA_PKCS_PSS) {
		pss.hashAlg = d->ckhash;
		pss.mgf = d->mgf;
		pss.sLen = len;
		a->mech.pParameter = &pss;
		a->mech.ulParameterLen = sizeof(pss);
	}
	e = hw_ctx_run(key->ctx, op_pk, a, "signing in the HSM");
	if (e == HW_OK) {
		if (d->kt == CKK_EC) {
			e = rs_to_der(a->out, a->outlen, sig, siglen);
		} else if (!(*sig = malloc(a->outlen))) {
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		} else {
			memcpy(*sig, a->out, a->outlen);
			*siglen = a->outlen;
		}
	}
	free(a);
	return e;
}

void
hw_rsa_oaep_params(hw_rsa_padding p, CK_MECHANISM_TYPE *hash, CK_RSA_PKCS_MGF_TYPE *mgf)
{
	switch (p) {
	case HW_RSA_PAD_OAEP_SHA1:
		*hash = CKM_SHA_1, *mgf = CKG_MGF1_SHA1;
		break;
	case HW_RSA_PAD_OAEP_SHA384:
		*hash = CKM_SHA384, *mgf = CKG_MGF1_SHA384;
		break;
	case HW_RSA_PAD_OAEP_SHA512:
		*hash = CKM_SHA512, *mgf = CKG_MGF1_SHA512;
		break;
	default:
		*hash = CKM_SHA256, *mgf = CKG_MGF1_SHA256;
		break;
	}
}

HW_EXPORT hw_err
hw_rsa_decrypt(hw_key *key, hw_rsa_padding padding, const uint8_t *ct, size_t ctlen,
               uint8_t **pt, size_t *ptlen)
{
	CK_RSA_PKCS_OAEP_PARAMS oaep = { 0 };
	pk_arg *a;
	hw_err e;

	if (!key || !ct || !ctlen || !pt || !ptlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_rsa_decrypt");
	hw_clear_error();
	if (key->cls != CKO_PRIVATE_KEY || key->ktype != CKK_RSA || !key->can_decrypt)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' cannot decrypt with RSA",
		               key->label);
	a = calloc(1, sizeof(*a));
	if (!a)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	a->key = key;
	a->decrypt = true;
	a->in = ct;
	a->inlen = ctlen;
	switch (padding) {
	case HW_RSA_PAD_PKCS1:
		a->mech.mechanism = CKM_RSA_PKCS;
		break;
	case HW_RSA_PAD_OAEP_SHA1:
	case HW_RSA_PAD_OAEP_SHA256:
	case HW_RSA_PAD_OAEP_SHA384:
	case HW_RSA_PAD_OAEP_SHA512:
		hw_rsa_oaep_params(padding, &oaep.hashAlg, &oaep.mgf);
		oaep.source = CKZ_DATA_SPECIFIED;
		a->mech.mechanism = CKM_RSA_PKCS_OAEP;
		a->mech.pParameter = &oaep;
		a->mech.ulParameterLen = sizeof(oaep);
		break;
	default:
		free(a);
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown RSA padding");
	}
	e = hw_ctx_run(key->ctx, op_pk, a, "decrypting in the HSM");
	if (e == HW_OK) {
		*pt = malloc(a->outlen ? a->outlen : 1);
		if (!*pt) {
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		} else {
			memcpy(*pt, a->out, a->outlen);
			*ptlen = a->outlen;
		}
	}
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
	return e;
}

/* ---------------------------------------------------------------- */
/* ECDH                                                              */

typedef struct {
	hw_key *key;
	const uint8_t *peer;
	size_t peerlen;
	CK_ULONG len;               /* field size: the X coordinate's bytes */
	uint8_t out[66];            /* P-521's 66 bytes at most; wiped */
	CK_ULONG outlen;
} dh_arg;

static CK_RV
op_ecdh(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	dh_arg *a = arg;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	/* A session object that may be read: the secret must reach the
	 * caller's KDF. It lives only until the C_DestroyObject below. */
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, (void *)&no, sizeof(CK_BBOOL) },
		{ CKA_PRIVATE, (void *)&yes, sizeof(CK_BBOOL) },
		{ CKA_SENSITIVE, (void *)&no, sizeof(CK_BBOOL) },
		{ CKA_EXTRACTABLE, (void *)&yes, sizeof(CK_BBOOL) },
		{ CKA_VALUE_LEN, &a->len, sizeof(a->len) },
	};
	CK_ECDH1_DERIVE_PARAMS p = { CKD_NULL, 0, NULL, (CK_ULONG)a->peerlen, (CK_BYTE *)a->peer };
	CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &p, sizeof(p) };
	CK_ATTRIBUTE v = { CKA_VALUE, a->out, sizeof(a->out) };
	CK_OBJECT_HANDLE h, secret = CK_INVALID_HANDLE;
	CK_RV rv = hw_key_handle_ck(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_DeriveKey(s, &mech, h, t, sizeof(t) / sizeof(t[0]), &secret);
	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_GetAttributeValue(s, secret, &v, 1);
	if (rv == CKR_OK)
		a->outlen = v.ulValueLen;
	/* Destroyed whatever the read gave: no derived secret stays behind. */
	ctx->fl->C_DestroyObject(s, secret);
	return rv;
}

HW_EXPORT hw_err
hw_ecdh_derive(hw_key *key, const uint8_t *peer, size_t peerlen, uint8_t **secret,
               size_t *len)
{
	dh_arg *a;
	hw_err e;

	if (!key || !peer || !secret || !len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_ecdh_derive");
	hw_clear_error();
	if (key->cls != CKO_PRIVATE_KEY || key->ktype != CKK_EC)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' is not an EC key: no ECDH",
		               key->label);
	/* Uncompressed points only: 0x04 || X || Y with equal halves. */
	if (peerlen < 3 || peerlen > 1 + 2 * 66 || peer[0] != 0x04 || peerlen % 2 != 1)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the peer's public key is not an "
		               "uncompressed EC point");
	if (!(a = calloc(1, sizeof(*a))))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	a->key = key;
	a->peer = peer;
	a->peerlen = peerlen;
	a->len = (peerlen - 1) / 2;
	e = hw_ctx_run(key->ctx, op_ecdh, a, "ECDH in the HSM");
	if (e == HW_OK && (a->outlen == 0 || a->outlen > sizeof(a->out)))
		e = hw_fail(HW_ERR_HSM, 0, "the token returned no usable ECDH secret");
	if (e == HW_OK) {
		if (!(*secret = malloc(a->outlen))) {
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		} else {
			memcpy(*secret, a->out, a->outlen);
			*len = a->outlen;
		}
	}
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
	return e;
}
