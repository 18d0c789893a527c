/*
 * Signatures over a message: the host hashes (bulk data never crosses to
 * the HSM) and hw_sign_digest (key/pkey.c, with the table of algorithms)
 * has the HSM sign the digest.
 */
#include "internal.h"

#include <string.h>

#include <openssl/evp.h>

HW_EXPORT hw_err
hw_sign(hw_key *key, hw_sig_alg alg, const uint8_t *msg, size_t len, uint8_t **sig,
        size_t *siglen)
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	const char *mdname = NULL;

	if (!key || (!msg && len) || !sig || !siglen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_sign");
	if (!hw_sig_alg_md(alg, &mdname))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown signature algorithm");
	if (!mdname)                /* EdDSA: the HSM takes the message itself */
		return hw_sign_digest(key, alg, msg ? msg : (const uint8_t *)"", len, sig, siglen);
	if (EVP_Digest(msg, len, md, &mdlen, EVP_get_digestbyname(mdname), NULL) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "hashing");
	return hw_sign_digest(key, alg, md, mdlen, sig, siglen);
}
