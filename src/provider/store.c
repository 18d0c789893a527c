/*
 * Store loader for pkcs11: URIs (RFC 7512): object=, id=, type=private or
 * public, and the token attributes; a pin-source in the URI is honoured
 * when the provider's configuration names no token (the URI then selects
 * the token). Each URI yields at most one object: the key it names, as an
 * HSM key object (private half in the HSM, public half on the host).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/store.h>

#include "provider.h"

typedef struct {
	hwp_prov *prov;
	char *uri;
	int expect;                 /* OSSL_STORE_INFO_*, 0 = anything */
	int done;
} store_ctx;

static void *
st_open(void *provctx, const char *uri)
{
	hwp_prov *p = provctx;
	store_ctx *s;

	/* Other schemes are not ours; OpenSSL only routes pkcs11: here, but a
	 * length cap keeps a hostile URI out of the parser. */
	if (!uri || strncmp(uri, "pkcs11:", 7) != 0 || strlen(uri) > HWP_URI_MAX) {
		hwp_raise(p, HWP_R_BAD_URI, "%.64s", uri ? uri : "(null)");
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->uri = strdup(uri))) {
		free(s);
		return NULL;
	}
	s->prov = p;
	return s;
}

static const OSSL_PARAM *
st_settable(void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
		OSSL_PARAM_END
	};
	return t;
}

static int
st_set_params(void *loaderctx, const OSSL_PARAM params[])
{
	store_ctx *s = loaderctx;
	const OSSL_PARAM *q = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);

	return !q || OSSL_PARAM_get_int(q, &s->expect);
}

static int
st_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
        OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	store_ctx *s = loaderctx;
	hwp_key *k;

	if (s->done)
		return 0;
	s->done = 1;
	/* Only keys live behind our URIs; a certificate search finds nothing. */
	if (s->expect && s->expect != OSSL_STORE_INFO_PKEY && s->expect != OSSL_STORE_INFO_PUBKEY)
		return 1;
	k = hwp_key_open(s->prov, s->uri);
	if (!k)
		return 0;
	return hwp_key_pass(k, object_cb, object_cbarg);
}

static int
st_eof(void *loaderctx)
{
	return ((store_ctx *)loaderctx)->done;
}

static int
st_close(void *loaderctx)
{
	store_ctx *s = loaderctx;

	if (s) {
		free(s->uri);
		free(s);
	}
	return 1;
}

/*
 * OpenSSL asks this when it would rather move the object into another
 * provider's key manager. Only the public half could go, and a public-only
 * copy posing as the private key would fail later and obscurely: refuse,
 * so the key stays with this provider's own key manager.
 */
static int
st_export(void *loaderctx, const void *ref, size_t ref_sz, OSSL_CALLBACK *cb, void *cbarg)
{
	store_ctx *s = loaderctx;

	hwp_raise(s->prov, HWP_R_PRIVATE_EXPORT, "the key stays with the hsmwrap provider");
	return 0;
}

const OSSL_DISPATCH hwp_store[] = {
	{ OSSL_FUNC_STORE_OPEN, (void (*)(void))st_open },
	{ OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))st_settable },
	{ OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))st_set_params },
	{ OSSL_FUNC_STORE_LOAD, (void (*)(void))st_load },
	{ OSSL_FUNC_STORE_EOF, (void (*)(void))st_eof },
	{ OSSL_FUNC_STORE_CLOSE, (void (*)(void))st_close },
	{ OSSL_FUNC_STORE_EXPORT_OBJECT, (void (*)(void))st_export },
	{ 0, NULL }
};
