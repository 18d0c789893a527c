/*
 * AES-GCM under the body key and the regular frames of the ESDK body,
 * shared by the message code (esdk.c) and the frame workers
 * (esdk-pipe.c), which both call down to this file.
 */
#include "internal.h"
#include "format/esdk.h"

#include <string.h>

#include <openssl/evp.h>

static const EVP_CIPHER *
gcm_cipher(size_t key_len)
{
	return key_len == 16 ? EVP_aes_128_gcm() : key_len == 24 ? EVP_aes_192_gcm() :
	       EVP_aes_256_gcm();
}

/* ---------------------------------------------------------------- */
/* AES-GCM (host side: the body key is a derived key, never the HSM's) */

#define GCM_CHUNK (1u << 30)

static bool
gcm_update(EVP_CIPHER_CTX *c, const uint8_t *in, size_t len, uint8_t *out)
{
	int n;

	while (len > 0) {
		size_t k = len > GCM_CHUNK ? GCM_CHUNK : len;

		if (EVP_CipherUpdate(c, out, &n, in, (int)k) != 1)
			return false;
		in += k;
		if (out)
			out += k;
		len -= k;
	}
	return true;
}

/*
 * The body key is set once per message (gcm_key): the AES key schedule and
 * GHASH tables are computed once, and each frame only sets its IV. Doing
 * the whole initialisation per frame cost more than encrypting a 4 KiB
 * frame.
 */
hw_err
esdk_gcm_key(EVP_CIPHER_CTX *c, bool enc, const uint8_t *key, size_t keylen)
{
	if (EVP_CipherInit_ex(c, gcm_cipher(keylen), NULL, NULL, NULL, enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, ESDK_IV_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(c, NULL, NULL, key, NULL, enc) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "AES-GCM");
	return HW_OK;
}

/*
 * One AES-GCM invocation under the key esdk_gcm_key() set. aad is aad1 || aad2.
 * On encrypt tag is written; on decrypt it is checked and a mismatch is
 * HW_ERR_INTEGRITY (the output must then be discarded by the caller).
 */
hw_err
esdk_gcm(EVP_CIPHER_CTX *c, bool enc, const uint8_t *iv, const uint8_t *aad1, size_t aad1len,
    const uint8_t *aad2, size_t aad2len, const uint8_t *in, size_t len, uint8_t *out,
    uint8_t *tag)
{
	static const uint8_t empty;
	int n;

	if (EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, enc) != 1 ||
	    (aad1len && !gcm_update(c, aad1, aad1len, NULL)) ||
	    (aad2len && !gcm_update(c, aad2, aad2len, NULL)) || !gcm_update(c, in, len, out))
		return hw_fail(HW_ERR_CRYPTO, 0, "AES-GCM");
	if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, ESDK_TAG_LEN, tag) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "AES-GCM");
	if (EVP_CipherFinal_ex(c, (uint8_t *)&empty, &n) != 1)
		return enc ? hw_fail(HW_ERR_CRYPTO, 0, "AES-GCM") :
		       hw_fail(HW_ERR_INTEGRITY, 0, "authentication tag mismatch");
	if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, ESDK_TAG_LEN, tag) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "AES-GCM");
	return HW_OK;
}

const char ESDK_LABEL_FRAME[] = "AWSKMSEncryptionClient Frame";
const char ESDK_LABEL_FINAL[] = "AWSKMSEncryptionClient Final Frame";
const char ESDK_LABEL_SINGLE[] = "AWSKMSEncryptionClient Single Block";

/* message-body-aad.md, with the whole message id (32 bytes in v2). */
size_t
esdk_body_aad(uint8_t *out, const uint8_t *msgid, size_t msgid_len, const char *label,
         uint32_t seq, uint64_t len)
{
	size_t ll = strlen(label), o = 0;

	memcpy(out, msgid, msgid_len);
	o += msgid_len;
	memcpy(out + o, label, ll);
	o += ll;
	for (int i = 3; i >= 0; i--)
		out[o++] = (uint8_t)(seq >> (8 * i));
	for (int i = 7; i >= 0; i--)
		out[o++] = (uint8_t)(len >> (8 * i));
	return o;
}


void
esdk_seq_iv(uint8_t iv[ESDK_IV_LEN], uint32_t seq)
{
	memset(iv, 0, ESDK_IV_LEN);
	for (int i = 0; i < 4; i++)
		iv[ESDK_IV_LEN - 1 - i] = (uint8_t)(seq >> (8 * i));
}

hw_err
esdk_gcm_ctx_new(bool enc, const uint8_t *key, size_t keylen, EVP_CIPHER_CTX **out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	hw_err e = c ? esdk_gcm_key(c, enc, key, keylen) : hw_fail(HW_ERR_NOMEM, 0, NULL);

	if (e != HW_OK) {
		EVP_CIPHER_CTX_free(c);
		return e;
	}
	*out = c;
	return HW_OK;
}

/*
 * A regular (non-final) frame: seq || IV || ct || tag into unit (len + 32
 * bytes). The IV is the sequence number, so frames are independent of
 * each other and any thread may seal any frame (esdk-pipe.c).
 */
hw_err
esdk_frame_seal(EVP_CIPHER_CTX *c, const uint8_t *msgid, size_t msgid_len, uint32_t seq,
                const uint8_t *pt, size_t len, uint8_t *unit)
{
	uint8_t aad[ESDK_BODY_AAD_MAX];
	size_t aadlen = esdk_body_aad(aad, msgid, msgid_len, ESDK_LABEL_FRAME, seq, len);

	for (int i = 3; i >= 0; i--)
		unit[3 - i] = (uint8_t)(seq >> (8 * i));
	esdk_seq_iv(unit + 4, seq);
	return esdk_gcm(c, true, unit + 4, aad, aadlen, NULL, 0, pt, len, unit + 4 + ESDK_IV_LEN,
	           unit + 4 + ESDK_IV_LEN + len);
}

/* The reverse, for a frame whose sequence number the caller checked. The
 * IV is used as serialized: some SDKs' messages have other IVs. */
hw_err
esdk_frame_open(EVP_CIPHER_CTX *c, const uint8_t *msgid, size_t msgid_len, uint32_t seq,
                const uint8_t *unit, size_t len, uint8_t *pt)
{
	uint8_t aad[ESDK_BODY_AAD_MAX];
	size_t aadlen = esdk_body_aad(aad, msgid, msgid_len, ESDK_LABEL_FRAME, seq, len);
	const uint8_t *ct = unit + 4 + ESDK_IV_LEN;
	hw_err e = esdk_gcm(c, false, unit + 4, aad, aadlen, NULL, 0, ct, len, pt,
	               (uint8_t *)ct + len);

	if (e == HW_ERR_INTEGRITY)
		e = hw_fail(e, 0, "frame %u failed authentication (altered or truncated message)",
		            seq);
	return e;
}

