/*
 * Store loader for pkcs11: URIs (RFC 7512): object=, id=, type=private,
 * public or cert, and the token attributes; a pin-source in the URI is
 * honoured when the provider's configuration names no token (the URI then
 * selects the token).
 *
 * A key URI yields the key it names, as an HSM key object (private half in
 * the HSM, public half on the host). type=cert, or a URI without type=
 * when the application expects certificates (storeutl -certs, s_server
 * -cert), yields the certificate objects it selects -- all of the token's
 * if it names no object or id. Without type= and without an expectation,
 * the key (if object= or id= names one) comes first, then certificates.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/store.h>

#include "provider.h"

enum { URI_ANY, URI_KEY, URI_CERT, URI_OTHER };

typedef struct {
	hwp_prov *prov;
	char *uri;
	int expect;                 /* OSSL_STORE_INFO_*, 0 = anything */
	int type;                   /* URI_*: what the URI's type= says */
	int key_done, certs_done;   /* that part handed out (or not wanted) */
	hw_cert_entry *certs;
	size_t ncerts, next;
	int certs_loaded;
	int failed;
} store_ctx;

/* The value of the path attribute `name` (e.g. "type"), or NULL; *len its length. */
static const char *
uri_attr(const char *uri, const char *name, size_t *len)
{
	size_t nl = strlen(name);
	const char *p = uri + 7, *end = p + strcspn(p, "?");

	while (p < end) {
		size_t seg = strcspn(p, ";?");
		if (seg > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			*len = seg - nl - 1;
			return p + nl + 1;
		}
		p += seg;
		if (*p == ';')
			p++;
		else
			break;
	}
	return NULL;
}

static int
uri_type(const char *uri)
{
	size_t len = 0;
	const char *t = uri_attr(uri, "type", &len);

	if (!t)
		return URI_ANY;
	if ((len == 7 && strncmp(t, "private", 7) == 0) || (len == 6 && strncmp(t, "public", 6) == 0))
		return URI_KEY;
	if (len == 4 && strncmp(t, "cert", 4) == 0)
		return URI_CERT;
	return URI_OTHER;
}

static int st_close(void *loaderctx);

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
	s->type = uri_type(uri);
	if (s->type == URI_OTHER) {
		hwp_raise(p, HWP_R_BAD_URI, "type= must be private, public or cert in %.200s", uri);
		st_close(s);
		return NULL;
	}
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
wants_keys(const store_ctx *s)
{
	size_t len;

	if (s->type == URI_CERT)
		return 0;
	if (s->expect && s->expect != OSSL_STORE_INFO_PKEY && s->expect != OSSL_STORE_INFO_PUBKEY)
		return 0;
	/* Without type= only a URI naming an object can name a key. */
	return s->type == URI_KEY || uri_attr(s->uri, "object", &len) || uri_attr(s->uri, "id", &len);
}

static int
wants_certs(const store_ctx *s)
{
	return s->type == URI_CERT ||
	       (s->type == URI_ANY && (!s->expect || s->expect == OSSL_STORE_INFO_CERT));
}

static int
load_certs(store_ctx *s)
{
	hw_ctx *ctx = hwp_ctx(s->prov, s->uri);
	hw_err e;

	if (!ctx)
		return 0;
	HWP_HSM_BEGIN();
	e = hw_cert_find(ctx, s->uri, &s->certs, &s->ncerts);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(s->prov, e, "searching certificates");
		return 0;
	}
	s->certs_loaded = 1;
	return 1;
}

static int
pass_cert(const hw_cert_entry *c, OSSL_CALLBACK *cb, void *cbarg)
{
	int type = OSSL_OBJECT_CERT;
	OSSL_PARAM params[4];
	size_t n = 0;

	params[n++] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[n++] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, c->der, c->len);
	if (c->label[0])
		params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC,
		                                               (char *)c->label, 0);
	params[n] = OSSL_PARAM_construct_end();
	return cb(params, cbarg);
}

static int
st_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
        OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	store_ctx *s = loaderctx;
	hwp_key *k;

	/* Decided here, not at open: the expectation is set after open. */
	if (!s->certs_done && !wants_certs(s))
		s->certs_done = 1;
	if (!s->key_done) {
		s->key_done = 1;
		if (wants_keys(s)) {
			/* Without type=, a URI naming only certificates is no error. */
			int quiet = s->type == URI_ANY && wants_certs(s);
			if (quiet)
				ERR_set_mark();
			k = hwp_key_open(s->prov, s->uri);
			if (quiet)
				ERR_pop_to_mark();
			if (k)
				return hwp_key_pass(k, object_cb, object_cbarg);
			if (!quiet) {
				s->failed = 1;
				return 0;
			}
		}
	}
	if (s->certs_done)
		return 0;
	if (!s->certs_loaded && !load_certs(s)) {
		s->certs_done = s->failed = 1;
		return 0;
	}
	if (s->next >= s->ncerts) {
		s->certs_done = 1;
		if (s->ncerts == 0 && s->type == URI_CERT) {
			hwp_raise(s->prov, HW_ERR_KEY_NOT_FOUND, "no certificate on the token matches %.200s",
			          s->uri);
			s->failed = 1;
		}
		return 0;
	}
	if (s->next + 1 >= s->ncerts)
		s->certs_done = 1;
	return pass_cert(&s->certs[s->next++], object_cb, object_cbarg);
}

static int
st_eof(void *loaderctx)
{
	store_ctx *s = loaderctx;

	return s->failed || (s->key_done && s->certs_done);
}

static int
st_close(void *loaderctx)
{
	store_ctx *s = loaderctx;

	if (s) {
		hw_cert_entries_free(s->certs, s->ncerts);
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
