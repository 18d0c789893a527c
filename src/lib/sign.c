/*
 * Signatures. The host hashes (bulk data never crosses to the HSM); the
 * HSM signs the digest with CKM_RSA_PKCS (over a DigestInfo), CKM_RSA_PKCS_PSS
 * or CKM_ECDSA, mechanisms every token offers, unlike the hash-and-sign ones.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>
#include <openssl/evp.h>

static const struct {
	const char *name;
	hw_sig_alg alg;
	CK_KEY_TYPE kt;
	CK_MECHANISM_TYPE mech;
	const char *md;
	CK_MECHANISM_TYPE ckhash, mgf;
} algs[] = {
	{ "rsa-pkcs1-sha256", HW_SIG_RSA_PKCS1_SHA256, CKK_RSA, CKM_RSA_PKCS, "SHA256", 0, 0 },
	{ "rsa-pkcs1-sha384", HW_SIG_RSA_PKCS1_SHA384, CKK_RSA, CKM_RSA_PKCS, "SHA384", 0, 0 },
	{ "rsa-pkcs1-sha512", HW_SIG_RSA_PKCS1_SHA512, CKK_RSA, CKM_RSA_PKCS, "SHA512", 0, 0 },
	{ "rsa-pss-sha256", HW_SIG_RSA_PSS_SHA256, CKK_RSA, CKM_RSA_PKCS_PSS, "SHA256", CKM_SHA256, CKG_MGF1_SHA256 },
	{ "rsa-pss-sha384", HW_SIG_RSA_PSS_SHA384, CKK_RSA, CKM_RSA_PKCS_PSS, "SHA384", CKM_SHA384, CKG_MGF1_SHA384 },
	{ "rsa-pss-sha512", HW_SIG_RSA_PSS_SHA512, CKK_RSA, CKM_RSA_PKCS_PSS, "SHA512", CKM_SHA512, CKG_MGF1_SHA512 },
	{ "ecdsa-sha256", HW_SIG_ECDSA_SHA256, CKK_EC, CKM_ECDSA, "SHA256", 0, 0 },
	{ "ecdsa-sha384", HW_SIG_ECDSA_SHA384, CKK_EC, CKM_ECDSA, "SHA384", 0, 0 },
};
#define NALGS (sizeof(algs) / sizeof(algs[0]))

/* DER DigestInfo prefixes (RFC 8017, section 9.2, note 1); all 19 bytes. */
#define DI_LEN 19
static const uint8_t di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                     0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
static const uint8_t di_sha384[] = { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                     0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30 };
static const uint8_t di_sha512[] = { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                     0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40 };

HW_EXPORT hw_err
hw_sig_alg_parse(const char *s, hw_sig_alg *alg)
{
	for (size_t i = 0; s && alg && i < NALGS; i++) {
		if (strcmp(algs[i].name, s) == 0) {
			*alg = algs[i].alg;
			return HW_OK;
		}
	}
	return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown signature algorithm");
}

HW_EXPORT const char *
hw_sig_alg_name(hw_sig_alg alg)
{
	for (size_t i = 0; i < NALGS; i++)
		if (algs[i].alg == alg)
			return algs[i].name;
	return "unknown";
}

typedef struct {
	hw_key *key;
	CK_MECHANISM mech;
	const uint8_t *in;
	size_t inlen;
	uint8_t out[1024];
	CK_ULONG outlen;
} sign_arg;

static CK_RV
op_sign(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	sign_arg *a = arg;
	CK_OBJECT_HANDLE h;
	CK_ULONG outlen = sizeof(a->out);
	CK_RV rv;
	hw_err e = hw_key_handle(a->key, s, &h);

	if (e != HW_OK)
		return hw_op_fail(e);
	rv = ctx->fl->C_SignInit(s, &a->mech, h);
	if (rv == CKR_OK)
		rv = ctx->fl->C_Sign(s, (CK_BYTE *)a->in, a->inlen, a->out, &outlen);
	if (rv == CKR_OK)
		a->outlen = outlen;
	return rv;
}

/* PKCS#11 returns r || s; X.509, TLS and the ESDK want DER. */
static hw_err
ecdsa_der(const uint8_t *rs, size_t len, uint8_t **out, size_t *outlen)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, (int)(len / 2), NULL);
	BIGNUM *s = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	unsigned char *der = NULL;
	int n;

	if (!sig || !r || !s || len % 2 || !ECDSA_SIG_set0(sig, r, s)) {
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
hw_sign(hw_key *key, hw_sig_alg alg, const uint8_t *msg, size_t len, uint8_t **sig,
        size_t *siglen)
{
	uint8_t md[EVP_MAX_MD_SIZE], in[DI_LEN + EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	size_t inlen = 0, i;
	CK_RSA_PKCS_PSS_PARAMS pss;
	sign_arg *a;
	hw_err e;

	if (!key || (!msg && len) || !sig || !siglen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_sign");
	hw_clear_error();
	for (i = 0; i < NALGS && algs[i].alg != alg; i++)
		;
	if (i == NALGS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown signature algorithm");
	if (key->cls != CKO_PRIVATE_KEY || !key->can_sign || key->ktype != algs[i].kt)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' cannot make %s signatures",
		               key->label, algs[i].name);
	if (EVP_Digest(msg, len, md, &mdlen, EVP_get_digestbyname(algs[i].md), NULL) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "hashing");

	a = calloc(1, sizeof(*a));
	if (!a)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (algs[i].mech == CKM_RSA_PKCS) {
		const uint8_t *di = mdlen == 32 ? di_sha256 : mdlen == 48 ? di_sha384 : di_sha512;
		memcpy(in, di, DI_LEN);
		memcpy(in + DI_LEN, md, mdlen);
		inlen = DI_LEN + mdlen;
	} else {
		memcpy(in, md, mdlen);
		inlen = mdlen;
	}
	a->key = key;
	a->mech.mechanism = algs[i].mech;
	if (algs[i].mech == CKM_RSA_PKCS_PSS) {
		pss.hashAlg = algs[i].ckhash;
		pss.mgf = algs[i].mgf;
		pss.sLen = mdlen;
		a->mech.pParameter = &pss;
		a->mech.ulParameterLen = sizeof(pss);
	}
	a->in = in;
	a->inlen = inlen;
	e = hw_ctx_run(key->ctx, op_sign, a, "signing in the HSM");
	if (e == HW_OK) {
		if (algs[i].kt == CKK_EC) {
			e = ecdsa_der(a->out, a->outlen, sig, siglen);
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
