/*
 * hsmwrap.so: an OpenSSL 3 provider that makes keys held in a PKCS#11 HSM
 * usable by unmodified OpenSSL software (openssl req/dgst/s_server, nginx)
 * through pkcs11: URIs and key-reference PEM files.
 *
 * One hw_ctx per provider instance, opened at first use rather than at
 * load, so that an openssl.cnf that activates the provider for every
 * program does not make programs that never touch the HSM fail or log in.
 * libhsmwrap makes the context safe across fork() (nginx loads keys in
 * its master and signs in the workers) and across threads.
 */
#include "config.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/provider.h>

#include "builtin.h"
#include "provider.h"

/* ------------------------------------------------------------------ */
/* Provider entry points                                               */

static const OSSL_ALGORITHM store_algs[] = {
	{ "pkcs11", HWP_PROPS, hwp_store, "pkcs11: URIs of keys in an HSM (RFC 7512)" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM keymgmt_algs[] = {
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", HWP_PROPS, hwp_rsa_keymgmt, "HSM RSA key" },
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1", HWP_PROPS, hwp_ec_keymgmt, "HSM EC key" },
	{ "ED25519:1.3.101.112", HWP_PROPS, hwp_ed25519_keymgmt, "HSM Ed25519 key" },
	{ "ED448:1.3.101.113", HWP_PROPS, hwp_ed448_keymgmt, "HSM Ed448 key" },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM signature_algs[] = {
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", HWP_PROPS, hwp_rsa_signature, NULL },
	{ "ECDSA", HWP_PROPS, hwp_ecdsa_signature, NULL },
	{ "ED25519:1.3.101.112", HWP_PROPS, hwp_ed25519_signature, NULL },
	{ "ED448:1.3.101.113", HWP_PROPS, hwp_ed448_signature, NULL },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM asym_algs[] = {
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", HWP_PROPS, hwp_rsa_asym, NULL },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM keyexch_algs[] = {
	{ "ECDH", HWP_PROPS, hwp_ecdh_keyexch, NULL },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM decoder_algs[] = {
	{ "DER", HWP_PROPS ",input=pem", hwp_pem2der_decoder, "HSMWRAP KEY REFERENCE PEM" },
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1",
	  HWP_PROPS ",input=der,structure=" HWP_REF_STRUCTURE, hwp_der2rsa_decoder, NULL },
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1",
	  HWP_PROPS ",input=der,structure=" HWP_REF_STRUCTURE, hwp_der2ec_decoder, NULL },
	{ "ED25519:1.3.101.112",
	  HWP_PROPS ",input=der,structure=" HWP_REF_STRUCTURE, hwp_der2ed25519_decoder, NULL },
	{ "ED448:1.3.101.113",
	  HWP_PROPS ",input=der,structure=" HWP_REF_STRUCTURE, hwp_der2ed448_decoder, NULL },
	{ NULL, NULL, NULL, NULL }
};

/* HSM keys written out (genpkey -out, pkey -out): as key references. */
#define REF_ENC HWP_PROPS ",output=pem,structure=PrivateKeyInfo"
static const OSSL_ALGORITHM encoder_algs[] = {
	{ "RSA:rsaEncryption:1.2.840.113549.1.1.1", REF_ENC, hwp_ref_encoder, NULL },
	{ "EC:id-ecPublicKey:1.2.840.10045.2.1", REF_ENC, hwp_ref_encoder, NULL },
	{ "ED25519:1.3.101.112", REF_ENC, hwp_ref_encoder, NULL },
	{ "ED448:1.3.101.113", REF_ENC, hwp_ref_encoder, NULL },
	{ NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM *
prov_query(void *provctx, int op, int *no_cache)
{
	*no_cache = 0;
	switch (op) {
	case OSSL_OP_STORE:
		return store_algs;
	case OSSL_OP_KEYMGMT:
		return keymgmt_algs;
	case OSSL_OP_SIGNATURE:
		return signature_algs;
	case OSSL_OP_ASYM_CIPHER:
		return asym_algs;
	case OSSL_OP_KEYEXCH:
		return keyexch_algs;
	case OSSL_OP_DECODER:
		return decoder_algs;
	case OSSL_OP_ENCODER:
		return encoder_algs;
	default:
		return NULL;
	}
}

static const OSSL_PARAM *
prov_gettable(void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
		OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, NULL, 0),
		OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_BUILDINFO, NULL, 0),
		OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
		OSSL_PARAM_END
	};
	return t;
}

static int
prov_get_params(void *provctx, OSSL_PARAM params[])
{
	OSSL_PARAM *q;

	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) &&
	    !OSSL_PARAM_set_utf8_ptr(q, "hsmwrap: keys in a PKCS#11 HSM"))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) &&
	    !OSSL_PARAM_set_utf8_ptr(q, hw_version()))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO)) &&
	    !OSSL_PARAM_set_utf8_ptr(q, PACKAGE_STRING))
		return 0;
	if ((q = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) && !OSSL_PARAM_set_int(q, 1))
		return 0;
	return 1;
}

/*
 * OpenSSL tears providers down from its atexit handler, which runs after
 * the PKCS#11 module's own static destructors (the module was loaded
 * later): SoftHSMv2 crashes in C_CloseSession then. At exit the context
 * is therefore left alone -- the process is ending -- and parked where
 * LeakSanitizer sees it is still referenced. An explicit unload before
 * exit still frees it.
 */
static atomic_bool exiting;
static hw_ctx *parked[8];
static atomic_uint nparked;

static void
note_exit(void)
{
	atomic_store(&exiting, true);
}

static void
register_exit(void)
{
	atexit(note_exit);
}

static void
prov_teardown(void *provctx)
{
	hwp_prov *p = provctx;
	unsigned i;

	if (!p)
		return;
	hwp_decoder_forget(p);
	/* A lent context (builtin.h) is the program's to free. */
	if (p->ctx_lent)
		p->ctx = NULL;
	if (p->ctx && atomic_load(&exiting) &&
	    (i = atomic_fetch_add(&nparked, 1)) < sizeof(parked) / sizeof(parked[0]))
		parked[i] = p->ctx;
	else
		hw_ctx_free(p->ctx);
	OSSL_LIB_CTX_free(p->libctx);
	free(p->module);
	free(p->module_init_args);
	free(p->token);
	free(p->pin_source);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static const OSSL_DISPATCH prov_dispatch[] = {
	{ OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))prov_teardown },
	{ OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))prov_gettable },
	{ OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))prov_get_params },
	{ OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))prov_query },
	{ OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))hwp_reasons },
	{ OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))hwp_get_capabilities },
	{ 0, NULL }
};

/* strdup of a non-empty setting, else NULL; *ok cleared on ENOMEM. */
static char *
setting(const char *v, int *ok)
{
	char *s;

	if (!v || !*v)
		return NULL;
	if (!(s = strdup(v)))
		*ok = 0;
	return s;
}

/*
 * Settings come from the provider's openssl.cnf section (pkcs11-module,
 * token, pin-source: "module" is taken, OpenSSL reads the provider's own
 * path from it), else from the environment the hsmwrap CLI uses.
 */
static int
read_config(hwp_prov *p, OSSL_FUNC_core_get_params_fn *get_params)
{
	char *module = NULL, *init_args = NULL, *token = NULL, *pin = NULL;
	OSSL_PARAM req[] = {
		OSSL_PARAM_utf8_ptr("pkcs11-module", &module, 0),
		OSSL_PARAM_utf8_ptr("pkcs11-module-init-args", &init_args, 0),
		OSSL_PARAM_utf8_ptr("token", &token, 0),
		OSSL_PARAM_utf8_ptr("pin-source", &pin, 0),
		OSSL_PARAM_END
	};
	int ok = 1;

	if (get_params && !get_params(p->handle, req))
		return 0;
	p->module = setting(module ? module : getenv("HSMWRAP_MODULE"), &ok);
	p->module_init_args = setting(init_args ? init_args :
	                              getenv("HSMWRAP_MODULE_INIT_ARGS"), &ok);
	p->token = setting(token ? token : getenv("HSMWRAP_TOKEN"), &ok);
	p->pin_source = setting(pin ? pin : getenv("HSMWRAP_PIN_SOURCE"), &ok);
	return ok;
}

static int
prov_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in, const OSSL_DISPATCH **out,
          void **provctx, hw_ctx *lent)
{
	OSSL_FUNC_core_get_params_fn *get_params = NULL;
	hwp_prov *p = calloc(1, sizeof(*p));

	if (!p)
		return 0;
	/* Registered after OpenSSL's own cleanup handler, so it runs first. */
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, register_exit);
	p->handle = handle;
	pthread_mutex_init(&p->lock, NULL);
	for (const OSSL_DISPATCH *d = in; d->function_id; d++) {
		switch (d->function_id) {
		case OSSL_FUNC_CORE_GET_PARAMS:
			get_params = OSSL_FUNC_core_get_params(d);
			break;
		case OSSL_FUNC_CORE_NEW_ERROR:
			p->new_error = OSSL_FUNC_core_new_error(d);
			break;
		case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
			p->set_error_debug = OSSL_FUNC_core_set_error_debug(d);
			break;
		case OSSL_FUNC_CORE_VSET_ERROR:
			p->vset_error = OSSL_FUNC_core_vset_error(d);
			break;
		case OSSL_FUNC_BIO_READ_EX:
			p->bio_read_ex = OSSL_FUNC_BIO_read_ex(d);
			break;
		case OSSL_FUNC_BIO_WRITE_EX:
			p->bio_write_ex = OSSL_FUNC_BIO_write_ex(d);
			break;
		default:
			break;
		}
	}
	/* A child library context sees the application's providers, so
	 * digests and public-key decoding use whatever it configured. */
	p->libctx = OSSL_LIB_CTX_new_child(handle, in);
	if (!read_config(p, get_params) || !p->libctx) {
		prov_teardown(p);
		return 0;
	}
	if (lent) {
		p->ctx = lent;
		p->ctx_lent = 1;
	}
	*out = prov_dispatch;
	*provctx = p;
	return 1;
}

/* -fvisibility=hidden hides everything else; OpenSSL looks this one up. */
__attribute__((visibility("default"))) OSSL_provider_init_fn OSSL_provider_init;

int
OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                   const OSSL_DISPATCH **out, void **provctx)
{
	return prov_init(handle, in, out, provctx, NULL);
}

/* builtin.h. The CLI is single-threaded where it adds the provider. */
static hw_ctx *to_lend;

void
hwp_builtin_lend(hw_ctx *ctx)
{
	to_lend = ctx;
}

int
hwp_builtin_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                 const OSSL_DISPATCH **out, void **provctx)
{
	return prov_init(handle, in, out, provctx, to_lend);
}
