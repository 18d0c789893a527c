/*
 * Signatures over a message: the host hashes (bulk data never crosses to
 * the HSM) and hw_sign_digest (pkey.c) has the HSM sign the digest.
 */
#include "internal.h"

#include <string.h>

#include <openssl/evp.h>

static const struct {
	const char *name;
	hw_sig_alg alg;
	const char *md;
} algs[] = {
	{ "rsa-pkcs1-sha256", HW_SIG_RSA_PKCS1_SHA256, "SHA256" },
	{ "rsa-pkcs1-sha384", HW_SIG_RSA_PKCS1_SHA384, "SHA384" },
	{ "rsa-pkcs1-sha512", HW_SIG_RSA_PKCS1_SHA512, "SHA512" },
	{ "rsa-pss-sha256", HW_SIG_RSA_PSS_SHA256, "SHA256" },
	{ "rsa-pss-sha384", HW_SIG_RSA_PSS_SHA384, "SHA384" },
	{ "rsa-pss-sha512", HW_SIG_RSA_PSS_SHA512, "SHA512" },
	{ "ecdsa-sha256", HW_SIG_ECDSA_SHA256, "SHA256" },
	{ "ecdsa-sha384", HW_SIG_ECDSA_SHA384, "SHA384" },
	{ "ecdsa-sha512", HW_SIG_ECDSA_SHA512, "SHA512" },
	{ "eddsa", HW_SIG_EDDSA, NULL },
};
#define NALGS (sizeof(algs) / sizeof(algs[0]))

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

HW_EXPORT hw_err
hw_sign(hw_key *key, hw_sig_alg alg, const uint8_t *msg, size_t len, uint8_t **sig,
        size_t *siglen)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	size_t i;

	if (!key || (!msg && len) || !sig || !siglen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_sign");
	for (i = 0; i < NALGS && algs[i].alg != alg; i++)
		;
	if (i == NALGS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown signature algorithm");
	if (!algs[i].md)            /* EdDSA: the HSM takes the message itself */
		return hw_sign_digest(key, alg, msg ? msg : (const uint8_t *)"", len, sig, siglen);
	if (EVP_Digest(msg, len, md, &mdlen, EVP_get_digestbyname(algs[i].md), NULL) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "hashing");
	return hw_sign_digest(key, alg, md, mdlen, sig, siglen);
}
