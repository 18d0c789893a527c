/*
 * RSA decryption in the HSM (PKCS#1 v1.5 for legacy TLS 1.2 RSA key
 * exchange, OAEP with SHA-1 or SHA-256 and an empty label). Keys made by
 * `hsmwrap key create --purpose sign` are not allowed to decrypt: that
 * fails here with the HSM's refusal, it is never tried in software.
 * Encryption needs only the public key: the default provider does it.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include "provider.h"

typedef struct {
	hwp_prov *prov;
	hwp_key *key;
	int pad;
	char oaep_md[32], mgf1_md[32];
	int has_label;
} asym_ctx;

static void *
as_newctx(void *provctx)
{
	asym_ctx *c = calloc(1, sizeof(*c));

	if (c) {
		c->prov = provctx;
		c->pad = RSA_PKCS1_PADDING;
	}
	return c;
}

static void
as_freectx(void *vc)
{
	asym_ctx *c = vc;

	if (c) {
		hwp_key_unref(c->key);
		free(c);
	}
}

static int
get_name(const OSSL_PARAM *q, char *out, size_t max)
{
	const char *s;

	if (!OSSL_PARAM_get_utf8_string_ptr(q, &s) || strlen(s) >= max)
		return 0;
	strcpy(out, s);
	return 1;
}

static int
as_set_params(void *vc, const OSSL_PARAM params[])
{
	asym_ctx *c = vc;
	const OSSL_PARAM *q;
	const char *s;
	int v;

	if (!params)
		return 1;
	if ((q = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE))) {
		if (q->data_type == OSSL_PARAM_UTF8_STRING) {
			if (!OSSL_PARAM_get_utf8_string_ptr(q, &s))
				return 0;
			v = strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING
			    : strcmp(s, OSSL_PKEY_RSA_PAD_MODE_OAEP) == 0 ? RSA_PKCS1_OAEP_PADDING : -1;
		} else if (!OSSL_PARAM_get_int(q, &v)) {
			return 0;
		}
		if (v != RSA_PKCS1_PADDING && v != RSA_PKCS1_OAEP_PADDING) {
			hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "RSA padding (PKCS#1 v1.5 and OAEP only)");
			return 0;
		}
		c->pad = v;
	}
	if ((q = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST)) &&
	    !get_name(q, c->oaep_md, sizeof(c->oaep_md)))
		return 0;
	if ((q = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST)) &&
	    !get_name(q, c->mgf1_md, sizeof(c->mgf1_md)))
		return 0;
	if ((q = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL)))
		c->has_label = q->data_size > 0;
	return 1;
}

static const OSSL_PARAM *
as_settable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
		OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

static int
as_decrypt_init(void *vc, void *provkey, const OSSL_PARAM params[])
{
	asym_ctx *c = vc;
	hwp_key *k = provkey;

	if (!k || k->kind != HWP_RSA || !k->key) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "RSA decryption needs an HSM RSA key");
		return 0;
	}
	atomic_fetch_add(&k->refs, 1);
	hwp_key_unref(c->key);
	c->key = k;
	return as_set_params(c, params);
}

/* OAEP's digest and MGF1 digest must be one of the pairs the library offers. */
static int
pick_padding(asym_ctx *c, hw_rsa_padding *pad)
{
	const char *md = c->oaep_md[0] ? c->oaep_md : "SHA1";
	const char *mgf = c->mgf1_md[0] ? c->mgf1_md : md;

	if (c->pad == RSA_PKCS1_PADDING) {
		*pad = HW_RSA_PAD_PKCS1;
		return 1;
	}
	if (!c->has_label && strcasecmp(md, mgf) == 0) {
		if (strcasecmp(md, "SHA1") == 0 || strcasecmp(md, "SHA-1") == 0) {
			*pad = HW_RSA_PAD_OAEP_SHA1;
			return 1;
		}
		if (strcasecmp(md, "SHA256") == 0 || strcasecmp(md, "SHA2-256") == 0) {
			*pad = HW_RSA_PAD_OAEP_SHA256;
			return 1;
		}
	}
	hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
	          "OAEP with %s/MGF1-%s%s (SHA-1 or SHA-256, same MGF1 hash, no label only)",
	          md, mgf, c->has_label ? " and a label" : "");
	return 0;
}

static int
as_decrypt(void *vc, unsigned char *out, size_t *outlen, size_t outsize,
           const unsigned char *in, size_t inlen)
{
	asym_ctx *c = vc;
	hw_rsa_padding pad;
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	hw_err e;

	if (!c->key)
		return 0;
	if (!out) {
		*outlen = (size_t)EVP_PKEY_get_size(c->key->pub);
		return 1;
	}
	if (!pick_padding(c, &pad))
		return 0;
	HWP_HSM_BEGIN();
	e = hw_rsa_decrypt(c->key->key, pad, in, inlen, &pt, &ptlen);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(c->prov, e, "decrypting with the HSM key");
		return 0;
	}
	if (ptlen > outsize) {
		hw_free_secret(pt, ptlen);
		hwp_raise(c->prov, HWP_R_INTERNAL, "output buffer too small");
		return 0;
	}
	memcpy(out, pt, ptlen);
	*outlen = ptlen;
	hw_free_secret(pt, ptlen);
	return 1;
}

static int
as_get_params(void *vc, OSSL_PARAM params[])
{
	return 1;
}

static const OSSL_PARAM *
as_gettable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = { OSSL_PARAM_END };
	return t;
}

#define FN(id, f) { OSSL_FUNC_ASYM_CIPHER_##id, (void (*)(void))(f) }

const OSSL_DISPATCH hwp_rsa_asym[] = {
	FN(NEWCTX, as_newctx), FN(FREECTX, as_freectx),
	FN(DECRYPT_INIT, as_decrypt_init), FN(DECRYPT, as_decrypt),
	FN(SET_CTX_PARAMS, as_set_params), FN(SETTABLE_CTX_PARAMS, as_settable),
	FN(GET_CTX_PARAMS, as_get_params), FN(GETTABLE_CTX_PARAMS, as_gettable),
	{ 0, NULL }
};
