/*
 * ECDH with HSM EC keys (purpose `derive`): openssl pkeyutl -derive, CMS
 * for EC recipients. The shared secret is computed by the HSM
 * (CKM_ECDH1_DERIVE) and handed to OpenSSL, whose KDF needs it; see
 * hw_ecdh_derive() for how it leaves the token. Soft keys (ephemeral TLS
 * keys this provider makes when listed first, see keymgmt.c) are derived by
 * the default provider, as before this exchange existed.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>

#include "provider.h"

/* Host-side helpers must never resolve to this provider again. */
#define NOT_US "provider!=" HWP_NAME

/* CMS's ECDH recipients (RFC 5753) ask for the X9.63 KDF over the shared
 * secret; the secret leaves the token for it either way (see above). */
typedef struct {
	hwp_prov *prov;
	hwp_key *key, *peer;
	int x963;                   /* apply the X9.63 KDF to the secret */
	char md[64];                /* its digest */
	size_t kdf_outlen;
	unsigned char *ukm;         /* its shared info */
	size_t ukmlen;
} dh_ctx;

static void *
dh_newctx(void *provctx)
{
	dh_ctx *c = calloc(1, sizeof(*c));

	if (c)
		c->prov = provctx;
	return c;
}

static void
dh_freectx(void *vc)
{
	dh_ctx *c = vc;

	if (c) {
		hwp_key_unref(c->key);
		hwp_key_unref(c->peer);
		free(c->ukm);
		free(c);
	}
}

static void *
dh_dupctx(void *vc)
{
	dh_ctx *c = vc, *d = malloc(sizeof(*d));

	if (!d)
		return NULL;
	*d = *c;
	if (c->ukm && !(d->ukm = malloc(c->ukmlen))) {
		free(d);
		return NULL;
	}
	if (c->ukm)
		memcpy(d->ukm, c->ukm, c->ukmlen);
	if (d->key)
		atomic_fetch_add(&d->key->refs, 1);
	if (d->peer)
		atomic_fetch_add(&d->peer->refs, 1);
	return d;
}

/*
 * The X9.63 KDF and its digest, output length and shared info, as CMS sets
 * them. The cofactor mode is accepted either way: the curves this provider
 * has (P-256/384/521) have cofactor 1, where both modes agree.
 */
static int
dh_set_params(void *vc, const OSSL_PARAM params[])
{
	dh_ctx *c = vc;
	const OSSL_PARAM *p;
	const char *str;
	const void *ukm;
	size_t ukmlen;

	for (p = params; p && p->key; p++) {
		if (!strcmp(p->key, OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE)) {
			continue;
		} else if (!strcmp(p->key, OSSL_EXCHANGE_PARAM_KDF_TYPE)) {
			if (!OSSL_PARAM_get_utf8_string_ptr(p, &str))
				return 0;
			if (*str && OPENSSL_strcasecmp(str, OSSL_KDF_NAME_X963KDF)) {
				hwp_raise(c->prov, HWP_R_NOT_SUPPORTED,
				          "ECDH KDF '%s' (X9.63 only)", str);
				return 0;
			}
			c->x963 = *str != '\0';
		} else if (!strcmp(p->key, OSSL_EXCHANGE_PARAM_KDF_DIGEST)) {
			if (!OSSL_PARAM_get_utf8_string_ptr(p, &str) || strlen(str) >= sizeof(c->md))
				return 0;
			strcpy(c->md, str);
		} else if (!strcmp(p->key, OSSL_EXCHANGE_PARAM_KDF_OUTLEN)) {
			if (!OSSL_PARAM_get_size_t(p, &c->kdf_outlen))
				return 0;
		} else if (!strcmp(p->key, OSSL_EXCHANGE_PARAM_KDF_UKM)) {
			if (!OSSL_PARAM_get_octet_string_ptr(p, &ukm, &ukmlen))
				return 0;
			free(c->ukm);
			c->ukm = NULL;
			c->ukmlen = 0;
			if (ukmlen && !(c->ukm = malloc(ukmlen)))
				return 0;
			if (ukmlen)
				memcpy(c->ukm, ukm, ukmlen);
			c->ukmlen = ukmlen;
		} else {
			hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "ECDH parameter '%s'", p->key);
			return 0;
		}
	}
	return 1;
}

static const OSSL_PARAM *
dh_settable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
		OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
		OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
		OSSL_PARAM_octet_string(OSSL_EXCHANGE_PARAM_KDF_UKM, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

static int
dh_init(void *vc, void *provkey, const OSSL_PARAM params[])
{
	dh_ctx *c = vc;
	hwp_key *k = provkey;

	if (!k || k->kind != HWP_EC || (!k->key && !k->soft)) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "ECDH needs an EC private key");
		return 0;
	}
	atomic_fetch_add(&k->refs, 1);
	hwp_key_unref(c->key);
	c->key = k;
	return dh_set_params(c, params);
}

static int
dh_set_peer(void *vc, void *provkey)
{
	dh_ctx *c = vc;
	hwp_key *k = provkey;

	if (!k || k->kind != HWP_EC || !k->pub) {
		hwp_raise(c->prov, HWP_R_WRONG_KEY_TYPE, "the ECDH peer must be an EC public key");
		return 0;
	}
	atomic_fetch_add(&k->refs, 1);
	hwp_key_unref(c->peer);
	c->peer = k;
	return 1;
}

/* Soft keys: the default provider's ECDH on the host copies. */
static int
soft_derive(dh_ctx *c, unsigned char *secret, size_t *len, size_t outlen)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(c->prov->libctx, c->key->pub, NOT_US);
	int ok = pc && EVP_PKEY_derive_init(pc) == 1 &&
	         EVP_PKEY_derive_set_peer(pc, c->peer->pub) == 1;

	if (ok) {
		*len = outlen;
		ok = EVP_PKEY_derive(pc, secret, len) == 1;
	}
	EVP_PKEY_CTX_free(pc);
	return ok;
}

/* The shared secret itself: the x coordinate of the agreed point. */
static int
raw_derive(dh_ctx *c, unsigned char *secret, size_t *len, size_t outlen)
{
	unsigned char *pt = NULL;
	size_t ptlen = 0, field;
	uint8_t *s = NULL;
	size_t slen = 0;
	hw_err e;
	int ok = 0;

	if (!c->key || !c->peer) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "ECDH without a key or a peer");
		return 0;
	}
	field = (size_t)(EVP_PKEY_get_bits(c->key->pub) + 7) / 8;
	if (!secret) {
		*len = field;
		return 1;
	}
	if (c->key->soft)
		return soft_derive(c, secret, len, outlen);
	if (EVP_PKEY_get_bits(c->peer->pub) != EVP_PKEY_get_bits(c->key->pub)) {
		hwp_raise(c->prov, HWP_R_WRONG_KEY_TYPE, "the ECDH peer is on another curve");
		return 0;
	}
	/* The uncompressed point, whatever the peer key's own format. */
	if (EVP_PKEY_get_octet_string_param(c->peer->pub, OSSL_PKEY_PARAM_PUB_KEY, NULL, 0,
	                                    &ptlen) != 1 || !(pt = malloc(ptlen)) ||
	    EVP_PKEY_get_octet_string_param(c->peer->pub, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen,
	                                    &ptlen) != 1) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "reading the peer's public point");
		goto out;
	}
	HWP_HSM_BEGIN();
	e = hw_ecdh_derive(c->key->key, pt, ptlen, &s, &slen);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(c->prov, e, "ECDH with the HSM key");
		goto out;
	}
	if (slen > outlen) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "ECDH output buffer too small");
		goto out;
	}
	memcpy(secret, s, slen);
	*len = slen;
	ok = 1;
out:
	if (s)
		hw_free_secret(s, slen);
	free(pt);
	return ok;
}

/* X9.63 KDF (ANSI X9.63, as RFC 5753 uses it) over the secret, on the host. */
static int
x963_derive(dh_ctx *c, unsigned char *out, size_t outlen)
{
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kc = NULL;
	OSSL_PARAM params[4], *p = params;
	unsigned char *z = NULL;
	size_t zlen = 0;
	int ok = 0;

	if (!raw_derive(c, NULL, &zlen, 0) || !(z = malloc(zlen)) ||
	    !raw_derive(c, z, &zlen, zlen))
		goto out;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, c->md, 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, z, zlen);
	if (c->ukm)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, c->ukm, c->ukmlen);
	*p = OSSL_PARAM_construct_end();
	if (!(kdf = EVP_KDF_fetch(c->prov->libctx, OSSL_KDF_NAME_X963KDF, NOT_US)) ||
	    !(kc = EVP_KDF_CTX_new(kdf)) || EVP_KDF_derive(kc, out, outlen, params) != 1) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "X9.63 KDF with digest '%s'", c->md);
		goto out;
	}
	ok = 1;
out:
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
	if (z)
		OPENSSL_clear_free(z, zlen);
	return ok;
}

static int
dh_derive(void *vc, unsigned char *secret, size_t *len, size_t outlen)
{
	dh_ctx *c = vc;

	if (!c->x963)
		return raw_derive(c, secret, len, outlen);
	if (!c->kdf_outlen || !c->md[0]) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "X9.63 KDF without a digest or length");
		return 0;
	}
	*len = c->kdf_outlen;
	if (!secret)
		return 1;
	if (outlen < c->kdf_outlen) {
		hwp_raise(c->prov, HWP_R_INTERNAL, "ECDH output buffer too small");
		return 0;
	}
	return x963_derive(c, secret, c->kdf_outlen);
}

#define FN(id, f) { OSSL_FUNC_KEYEXCH_##id, (void (*)(void))(f) }

const OSSL_DISPATCH hwp_ecdh_keyexch[] = {
	FN(NEWCTX, dh_newctx), FN(FREECTX, dh_freectx), FN(DUPCTX, dh_dupctx),
	FN(INIT, dh_init), FN(SET_PEER, dh_set_peer), FN(DERIVE, dh_derive),
	FN(SET_CTX_PARAMS, dh_set_params), FN(SETTABLE_CTX_PARAMS, dh_settable),
	{ 0, NULL }
};
