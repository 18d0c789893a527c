/*
 * Operations with keys that never leave the HSM: direct AES-256-GCM
 * encryption, data keys (KMS GenerateDataKey style) and AES-KWP wrapping
 * of key material. The HSM does every use of the key; the host only
 * frames the result in a blob (blob.c).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

static hw_err
check_key(hw_key *key, bool ok, const char *op)
{
	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	if (key->cls != CKO_SECRET_KEY || !ok)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' may not %s", key->label, op);
	return HW_OK;
}

/*
 * Both the id and the label must match: AES-KWP has no AAD, so this is
 * what makes every header byte of a wrapped-key blob checked.
 */
static bool
names_key(const hw_blob *b, const hw_key *key)
{
	return key->id_len == b->key_id_len && memcmp(key->id, b->key_id, b->key_id_len) == 0 &&
	       strlen(key->label) == b->label_len &&
	       memcmp(key->label, b->label, b->label_len) == 0;
}

/* The blob names its key: use it, or check it is the one the caller gave. */
static hw_err
blob_key(hw_ctx *ctx, hw_key *given, const hw_blob *b, hw_key **use, hw_key **owned)
{
	hw_err e;

	*owned = NULL;
	if (given && names_key(b, given)) {
		*use = given;
		return HW_OK;
	}
	/* Another version of the given logical key (made before a rotation)
	 * is the same key to the caller. */
	if (given) {
		if (hw_key_find_sibling(given, b->label, b->label_len, owned) == HW_OK &&
		    names_key(b, *owned)) {
			*use = *owned;
			return HW_OK;
		}
		hw_key_free(*owned);
		*owned = NULL;
		return hw_fail(HW_ERR_WRONG_KEY, 0, "made with key '%.*s', not '%s'",
		               (int)b->label_len, (const char *)b->label, given->label);
	}
	e = hw_key_find_by_id(ctx, b->key_id, b->key_id_len, owned);
	if (e == HW_ERR_KEY_NOT_FOUND)
		return hw_fail(e, 0, "key '%.*s' (the one this was made with) is not on the token",
		               (int)b->label_len, (const char *)b->label);
	if (e == HW_OK && !names_key(b, *owned)) {
		e = hw_fail(HW_ERR_WRONG_KEY, 0, "the blob names key '%.*s', the token's key with "
		            "that id is '%s'", (int)b->label_len, (const char *)b->label,
		            (*owned)->label);
		hw_key_free(*owned);
		*owned = NULL;
	}
	if (e != HW_OK)
		return e;
	*use = *owned;
	return HW_OK;
}

static uint8_t *
concat(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, size_t *len)
{
	uint8_t *p = malloc(alen + blen + 1);

	if (!p)
		return NULL;
	memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	*len = alen + blen;
	return p;
}

/* ---------------------------------------------------------------- */
/* AES-GCM in the HSM                                                */

typedef hw_gcm_arg gcm_arg;

CK_RV
hw_op_gcm(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	gcm_arg *a = arg;
	static const uint8_t none;
	CK_GCM_PARAMS p;
	CK_MECHANISM m = { CKM_AES_GCM, &p, sizeof(p) };
	CK_OBJECT_HANDLE h;
	CK_ULONG outlen = a->outlen;
	CK_RV rv = hw_key_handle_ck(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	if (a->gen_datakey) {
		rv = ctx->fl->C_GenerateRandom(s, a->in, a->inlen);
		if (rv != CKR_OK)
			return rv;
	}
	/* A fresh random IV per attempt; a token that insists on its own
	 * writes it back into pIv. */
	if (a->encrypt && RAND_bytes(a->iv, sizeof(a->iv)) != 1)
		return hw_op_fail(hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes"));
	memset(&p, 0, sizeof(p));
	p.pIv = a->iv;
	p.ulIvLen = GCM_IV_LEN;
	p.ulIvBits = GCM_IV_LEN * 8;
	/* Some tokens reject a NULL AAD pointer even with length 0. */
	p.pAAD = (CK_BYTE *)(a->aadlen ? a->aad : &none);
	p.ulAADLen = a->aadlen;
	p.ulTagBits = GCM_TAG_LEN * 8;
	if (a->encrypt) {
		rv = ctx->fl->C_EncryptInit(s, &m, h);
		if (rv == CKR_OK)
			rv = ctx->fl->C_Encrypt(s, a->in, a->inlen, a->out, &outlen);
	} else {
		rv = ctx->fl->C_DecryptInit(s, &m, h);
		if (rv == CKR_OK)
			rv = ctx->fl->C_Decrypt(s, a->in, a->inlen, a->out, &outlen);
	}
	if (rv == CKR_OK)
		a->outlen = outlen;
	return rv;
}

/*
 * GCM-encrypts a->in under key into a blob of `kind`. The blob is laid out
 * once and the token writes the ciphertext straight into it.
 */
static hw_err
gcm_seal(hw_key *key, hw_blob_kind kind, gcm_arg *a, const uint8_t *aad, size_t aadlen,
         uint8_t **blob, size_t *bloblen)
{
	size_t hdr_len = hw_blob_header_len(key);
	uint8_t *iv = NULL, *full = NULL;
	hw_wbuf w;
	hw_err e;

	hw_wbuf_init(&w, HW_BLOB_MAX);
	hw_wbuf_reserve(&w, hdr_len + 1 + GCM_IV_LEN + 4 + a->inlen + GCM_TAG_LEN);
	hw_blob_put_header(&w, kind, key);
	hw_blob_put_body(&w, GCM_IV_LEN, a->inlen + GCM_TAG_LEN, &iv, &a->out);
	if (w.err != HW_OK) {
		e = hw_fail(w.err, 0, "blob");
		goto out;
	}
	/* The AAD is header || caller's AAD; without the latter the header
	 * in the blob itself serves. */
	a->aad = w.p;
	a->aadlen = hdr_len;
	if (aadlen) {
		full = malloc(hdr_len + aadlen);
		if (!full) {
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
			goto out;
		}
		memcpy(full, w.p, hdr_len);
		memcpy(full + hdr_len, aad, aadlen);
		a->aad = full;
		a->aadlen = hdr_len + aadlen;
	}
	a->key = key;
	a->encrypt = true;
	a->outlen = a->inlen + GCM_TAG_LEN;
	e = hw_ctx_run(key->ctx, hw_op_gcm, a, "AES-GCM encryption in the HSM");
	if (e == HW_OK && a->outlen != a->inlen + GCM_TAG_LEN)
		e = hw_fail(HW_ERR_HSM, 0, "the token returned %lu bytes of AES-GCM output, expected %zu",
		            (unsigned long)a->outlen, a->inlen + GCM_TAG_LEN);
	if (e != HW_OK)
		goto out;
	/* The IV the token actually used (some choose their own). */
	memcpy(iv, a->iv, GCM_IV_LEN);
	e = hw_wbuf_finish(&w, blob, bloblen);
out:
	a->out = NULL;
	free(full);
	hw_wbuf_free(&w);
	return e;
}

/* Opens a GCM blob of `kind`; *pt (malloc'd, wiped on error) gets the plaintext. */
static hw_err
gcm_open(hw_ctx *ctx, hw_key *given, hw_blob_kind kind, const uint8_t *blob, size_t bloblen,
         const uint8_t *aad, size_t aadlen, uint8_t **pt, size_t *ptlen)
{
	hw_blob b;
	hw_key *key = NULL, *owned = NULL;
	gcm_arg a;
	uint8_t *full = NULL;
	size_t full_len;
	hw_err e;

	if (!ctx || !blob)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no context or input");
	hw_clear_error();
	e = hw_blob_parse(blob, bloblen, &b);
	if (e != HW_OK)
		return e;
	if (b.kind != kind)
		return hw_fail(HW_ERR_FORMAT, 0, "this is a %s blob, not a %s blob",
		               b.kind == HW_BLOB_DIRECT ? "direct-encryption" :
		               b.kind == HW_BLOB_DATAKEY ? "data-key" : "wrapped-key",
		               kind == HW_BLOB_DIRECT ? "direct-encryption" : "data-key");
	e = blob_key(ctx, given, &b, &key, &owned);
	if (e == HW_OK)
		e = check_key(key, key->can_decrypt, "decrypt (it is not an envelope key)");
	if (e != HW_OK)
		goto out;
	memset(&a, 0, sizeof(a));
	full = concat(b.header, b.header_len, aad, aadlen, &full_len);
	/* Some tokens want room for the whole input even though the tag is not returned. */
	a.out = malloc(b.payload_len);
	if (!full || !a.out) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto out;
	}
	memcpy(a.iv, b.iv, GCM_IV_LEN);
	a.key = key;
	a.encrypt = false;
	a.aad = full;
	a.aadlen = full_len;
	a.in = (uint8_t *)b.payload;
	a.inlen = b.payload_len;
	a.outlen = b.payload_len;
	e = hw_ctx_run(ctx, hw_op_gcm, &a, "AES-GCM decryption in the HSM");
	if (e == HW_OK && a.outlen != b.payload_len - GCM_TAG_LEN)
		e = hw_fail(HW_ERR_HSM, 0, "the token returned a plaintext of unexpected length");
	if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
		/* Some tokens report a failed tag check as a general error. */
		e = hw_fail(HW_ERR_INTEGRITY, CKR_GENERAL_ERROR,
		            "decryption failed (tag mismatch: altered data or wrong context)");
	if (e != HW_OK) {
		hw_free_secret(a.out, b.payload_len);
		goto out;
	}
	*pt = a.out;
	*ptlen = a.outlen;
out:
	free(full);
	hw_key_free(owned);
	return e;
}

HW_EXPORT hw_err
hw_encrypt(hw_key *key, const uint8_t *pt, size_t ptlen, const uint8_t *aad, size_t aadlen,
           uint8_t **blob, size_t *bloblen)
{
	gcm_arg a;
	hw_err e;

	if (!blob || !bloblen || (!pt && ptlen) || (!aad && aadlen))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_encrypt");
	hw_clear_error();
	if (ptlen > HW_DIRECT_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "%zu bytes; direct encryption takes at most %u "
		               "(use envelope encryption for more)", ptlen, HW_DIRECT_MAX);
	e = check_key(key, key && key->can_encrypt, "encrypt (it is not an envelope key)");
	if (e != HW_OK)
		return e;
	memset(&a, 0, sizeof(a));
	/* Tokens reject a NULL input pointer even with length 0. */
	static const uint8_t none;
	a.in = (uint8_t *)(ptlen ? pt : &none);
	a.inlen = ptlen;
	return gcm_seal(key, HW_BLOB_DIRECT, &a, aad, aadlen, blob, bloblen);
}

HW_EXPORT hw_err
hw_decrypt(hw_ctx *ctx, hw_key *key, const uint8_t *blob, size_t bloblen,
           const uint8_t *aad, size_t aadlen, uint8_t **pt, size_t *ptlen)
{
	if (!pt || !ptlen || (!aad && aadlen))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_decrypt");
	return gcm_open(ctx, key, HW_BLOB_DIRECT, blob, bloblen, aad, aadlen, pt, ptlen);
}

HW_EXPORT hw_err
hw_datakey_generate(hw_key *key, const hw_ectx *ec, uint8_t plaintext[HW_DATAKEY_LEN],
                    uint8_t **wrapped, size_t *wrappedlen)
{
	uint8_t dk[HW_DATAKEY_LEN], *ser = NULL;
	size_t serlen = 0;
	gcm_arg a;
	hw_err e;

	if (!plaintext || !wrapped || !wrappedlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_datakey_generate");
	hw_clear_error();
	e = check_key(key, key && key->can_encrypt, "wrap data keys (it is not an envelope key)");
	if (e != HW_OK)
		return e;
	e = hw_ectx_serialize(ec, &ser, &serlen);
	if (e != HW_OK)
		return e;
	memset(&a, 0, sizeof(a));
	a.in = dk;
	a.inlen = sizeof(dk);
	a.gen_datakey = true;
	e = gcm_seal(key, HW_BLOB_DATAKEY, &a, ser, serlen, wrapped, wrappedlen);
	if (e == HW_OK)
		memcpy(plaintext, dk, sizeof(dk));
	OPENSSL_cleanse(dk, sizeof(dk));
	free(ser);
	return e;
}

HW_EXPORT hw_err
hw_datakey_decrypt(hw_ctx *ctx, hw_key *key, const hw_ectx *ec, const uint8_t *wrapped,
                   size_t wrappedlen, uint8_t plaintext[HW_DATAKEY_LEN])
{
	uint8_t *ser = NULL, *pt = NULL;
	size_t serlen = 0, ptlen = 0;
	hw_err e;

	if (!plaintext)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_datakey_decrypt");
	e = hw_ectx_serialize(ec, &ser, &serlen);
	if (e != HW_OK)
		return e;
	e = gcm_open(ctx, key, HW_BLOB_DATAKEY, wrapped, wrappedlen, ser, serlen, &pt, &ptlen);
	free(ser);
	if (e != HW_OK)
		return e;
	memcpy(plaintext, pt, HW_DATAKEY_LEN);
	hw_free_secret(pt, ptlen);
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* AES-KWP (RFC 5649) with a keywrap key                             */

typedef struct {
	hw_key *key;
	const uint8_t *in;
	size_t inlen;
	uint8_t *out;
	CK_ULONG outlen;
} kwp_arg;

static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/*
 * Key material from the host goes into a short-lived session object so
 * that C_WrapKey can wrap it: PKCS#11 wraps keys, not byte strings.
 * The object is destroyed before the session goes back to the pool.
 */
static CK_RV
op_wrap(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	kwp_arg *a = arg;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_VALUE, (void *)a->in, a->inlen },
		{ CKA_TOKEN, (void *)&no, sizeof(no) },
		{ CKA_SENSITIVE, (void *)&yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, (void *)&yes, sizeof(yes) },
	};
	CK_MECHANISM m = { ctx->kwp_mech, NULL, 0 };
	CK_OBJECT_HANDLE h, obj;
	CK_ULONG outlen = a->outlen;
	CK_RV rv = hw_key_handle_ck(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &obj);
	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_WrapKey(s, &m, h, obj, a->out, &outlen);
	ctx->fl->C_DestroyObject(s, obj);
	if (rv == CKR_OK)
		a->outlen = outlen;
	return rv;
}

static CK_RV
op_unwrap(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	kwp_arg *a = arg;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, (void *)&no, sizeof(no) },
		{ CKA_SENSITIVE, (void *)&no, sizeof(no) },
		{ CKA_EXTRACTABLE, (void *)&yes, sizeof(yes) },
	};
	CK_MECHANISM m = { ctx->kwp_mech, NULL, 0 };
	CK_OBJECT_HANDLE h, obj;
	CK_ATTRIBUTE v = { CKA_VALUE, a->out, a->outlen };
	CK_RV rv = hw_key_handle_ck(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_UnwrapKey(s, &m, h, (CK_BYTE *)a->in, a->inlen, t,
	                          sizeof(t) / sizeof(t[0]), &obj);
	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_GetAttributeValue(s, obj, &v, 1);
	ctx->fl->C_DestroyObject(s, obj);
	if (rv == CKR_OK)
		a->outlen = v.ulValueLen;
	return rv;
}

HW_EXPORT hw_err
hw_wrap(hw_key *key, const uint8_t *material, size_t len, uint8_t **blob, size_t *bloblen)
{
	kwp_arg a;
	uint8_t *iv;
	hw_wbuf w;
	hw_err e;

	if (!material || !blob || !bloblen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_wrap");
	hw_clear_error();
	if (len == 0 || len > HW_WRAP_MAX_MATERIAL)
		return hw_fail(len ? HW_ERR_TOO_LARGE : HW_ERR_INVALID_ARG, 0,
		               "key material must be 1 to %u bytes", HW_WRAP_MAX_MATERIAL);
	e = check_key(key, key && key->can_wrap, "wrap (it is not a keywrap key)");
	if (e != HW_OK)
		return e;
	e = hw_ctx_ready(key->ctx);
	if (e != HW_OK)
		return e;
	if ((e = hw_ctx_require(key->ctx, HW_CAP_AES_KWP, "wrap")) != HW_OK)
		return e;
	/* v2.40 tokens offer RFC 5649 as CKM_AES_KEY_WRAP_PAD, and SoftHSMv2
	 * zero-pads the key to 8 bytes before wrapping: the result is RFC 5649
	 * only for whole 8-byte blocks, and unwrap could not restore the length. */
	if (key->ctx->kwp_mech == CKM_AES_KEY_WRAP_PAD && len % 8)
		return hw_fail(HW_ERR_UNSUPPORTED, 0,
		               "this token does RFC 5649 only for key material in whole 8-byte "
		               "blocks; %zu bytes given", len);
	memset(&a, 0, sizeof(a));
	a.key = key;
	a.in = material;
	a.inlen = len;
	a.outlen = (len + 7) / 8 * 8 + 8;
	hw_wbuf_init(&w, HW_BLOB_MAX);
	hw_wbuf_reserve(&w, hw_blob_header_len(key) + 1 + 4 + a.outlen);
	hw_blob_put_header(&w, HW_BLOB_WRAPPED, key);
	hw_blob_put_body(&w, 0, a.outlen, &iv, &a.out);
	if (w.err != HW_OK) {
		e = hw_fail(w.err, 0, "blob");
		hw_wbuf_free(&w);
		return e;
	}
	e = hw_ctx_run(key->ctx, op_wrap, &a, "AES-KWP wrap in the HSM");
	/* RFC 5649 output length is fixed by the input length. */
	if (e == HW_OK && a.outlen != (len + 7) / 8 * 8 + 8)
		e = hw_fail(HW_ERR_HSM, 0, "the token returned %lu bytes of AES-KWP output",
		            (unsigned long)a.outlen);
	if (e == HW_OK)
		return hw_wbuf_finish(&w, blob, bloblen);
	hw_wbuf_free(&w);
	return e;
}

HW_EXPORT hw_err
hw_unwrap(hw_ctx *ctx, hw_key *given, const uint8_t *blob, size_t bloblen,
          uint8_t **material, size_t *len)
{
	hw_blob b;
	hw_key *key = NULL, *owned = NULL;
	kwp_arg a;
	hw_err e;

	if (!ctx || !blob || !material || !len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_unwrap");
	hw_clear_error();
	e = hw_blob_parse(blob, bloblen, &b);
	if (e != HW_OK)
		return e;
	if (b.kind != HW_BLOB_WRAPPED)
		return hw_fail(HW_ERR_FORMAT, 0, "this is not a wrapped-key blob");
	e = blob_key(ctx, given, &b, &key, &owned);
	if (e == HW_OK)
		e = check_key(key, key->can_unwrap, "unwrap (it is not a keywrap key)");
	if (e == HW_OK)
		e = hw_ctx_require(ctx, HW_CAP_AES_KWP, "unwrap");
	if (e != HW_OK)
		goto out;
	memset(&a, 0, sizeof(a));
	a.key = key;
	a.in = b.payload;
	a.inlen = b.payload_len;
	a.outlen = b.payload_len;
	a.out = malloc(a.outlen);
	if (!a.out) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto out;
	}
	e = hw_ctx_run(ctx, op_unwrap, &a, "AES-KWP unwrap in the HSM");
	if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
		e = hw_fail(HW_ERR_INTEGRITY, CKR_GENERAL_ERROR,
		            "unwrap failed (altered data or wrong key)");
	if (e != HW_OK) {
		hw_free_secret(a.out, b.payload_len);
		goto out;
	}
	*material = a.out;
	*len = a.outlen;
out:
	hw_key_free(owned);
	return e;
}
