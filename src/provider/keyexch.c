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

#include "provider.h"

/* Host-side helpers must never resolve to this provider again. */
#define NOT_US "provider!=" HWP_NAME

typedef struct {
	hwp_prov *prov;
	hwp_key *key, *peer;
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
	if (d->key)
		atomic_fetch_add(&d->key->refs, 1);
	if (d->peer)
		atomic_fetch_add(&d->peer->refs, 1);
	return d;
}

/* No cofactor mode, KDF or output length: any parameter is one we would ignore. */
static int
dh_set_params(void *vc, const OSSL_PARAM params[])
{
	dh_ctx *c = vc;

	if (params && params->key) {
		hwp_raise(c->prov, HWP_R_NOT_SUPPORTED, "ECDH parameter '%s' (plain ECDH only)",
		          params->key);
		return 0;
	}
	return 1;
}

static const OSSL_PARAM *
dh_settable(void *vc, void *provctx)
{
	static const OSSL_PARAM t[] = { OSSL_PARAM_END };
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

static int
dh_derive(void *vc, unsigned char *secret, size_t *len, size_t outlen)
{
	dh_ctx *c = vc;
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

#define FN(id, f) { OSSL_FUNC_KEYEXCH_##id, (void (*)(void))(f) }

const OSSL_DISPATCH hwp_ecdh_keyexch[] = {
	FN(NEWCTX, dh_newctx), FN(FREECTX, dh_freectx), FN(DUPCTX, dh_dupctx),
	FN(INIT, dh_init), FN(SET_PEER, dh_set_peer), FN(DERIVE, dh_derive),
	FN(SET_CTX_PARAMS, dh_set_params), FN(SETTABLE_CTX_PARAMS, dh_settable),
	{ 0, NULL }
};
