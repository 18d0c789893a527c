/*
 * Internal interfaces of the hsmwrap OpenSSL provider (hsmwrap.so).
 *
 * Files are layered, each calls only those listed before it (no cycles):
 *
 *   common.c     errors and the lazily opened hw_ctx (the bottom)
 *   keymgmt.c    RSA, EC and EdDSA key objects: a hw_key for the private half plus
 *                a host copy of the public half (for matching and export)
 *   store.c      the pkcs11: URI store loader
 *   signature.c  RSA PKCS#1 v1.5 / PSS, ECDSA and EdDSA, signing in the HSM
 *   asym.c       RSA decryption in the HSM (PKCS#1 v1.5, OAEP)
 *   keyexch.c    ECDH in the HSM
 *   decoder.c    HSMWRAP KEY REFERENCE PEM files
 *   provider.c   entry point, configuration, dispatch tables (the top)
 */
#ifndef HWP_PROVIDER_H
#define HWP_PROVIDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "hsmwrap.h"

#define HWP_NAME "hsmwrap"
#define HWP_PROPS "provider=hsmwrap"
/* PEM label of a key-reference file; its body is base64 of the key's URI text. */
#define HWP_REF_PEM_LABEL "HSMWRAP KEY REFERENCE"
/* Key generation parameters (keymgmt.c): generate on the token. */
#define HWP_GEN_LABEL "hsmwrap-label"
#define HWP_GEN_PURPOSE "hsmwrap-purpose"
/* Decoder structure name of the decoded (unarmoured) reference: the URI text. */
#define HWP_REF_STRUCTURE "hsmwrap-key-ref"
/* Longest URI accepted in a reference file or store URI. */
#define HWP_URI_MAX 4096

typedef struct hwp_prov {
	const OSSL_CORE_HANDLE *handle;
	OSSL_LIB_CTX *libctx;       /* child of the application's: digests, decoding */
	char *module, *module_init_args, *token, *pin_source;
	pthread_mutex_t lock;       /* guards ctx creation */
	hw_ctx *ctx;                /* opened at first use, one per provider instance */
	int ctx_lent;               /* ctx belongs to the program (builtin.h) */
	OSSL_FUNC_core_new_error_fn *new_error;
	OSSL_FUNC_core_set_error_debug_fn *set_error_debug;
	OSSL_FUNC_core_vset_error_fn *vset_error;
	OSSL_FUNC_BIO_read_ex_fn *bio_read_ex;
	OSSL_FUNC_BIO_write_ex_fn *bio_write_ex;
} hwp_prov;

enum { HWP_RSA = 1, HWP_EC = 2, HWP_ED25519 = 3, HWP_ED448 = 4 };

typedef struct hwp_key {
	atomic_int refs;
	hwp_prov *prov;
	int kind;                   /* HWP_RSA, HWP_EC, HWP_ED25519, HWP_ED448 */
	hw_key *key;                /* private half in the HSM; NULL: public only */
	EVP_PKEY *pub;              /* public half, host copy; whole soft key */
	/* An rsa-pss-* key: the token lets it sign with RSASSA-PSS only, so
	 * PSS is its default and PKCS#1 v1.5 is refused up front. */
	int pss_only;
	/* A software key made by gen (see keymgmt.c): ephemeral TLS keys when
	 * this provider is listed before the default one. */
	int soft;
	int soft_priv, soft_pub;    /* what the soft key holds so far */
} hwp_key;

/* Reason codes beyond the hw_err range. */
enum {
	HWP_R_BAD_URI = 100,
	HWP_R_NOT_SUPPORTED,
	HWP_R_BAD_REFERENCE,
	HWP_R_PRIVATE_EXPORT,
	HWP_R_WRONG_KEY_TYPE,
	HWP_R_INTERNAL,
};

/*
 * The PKCS#11 module may use OpenSSL itself and leave errors in the
 * thread's queue: SoftHSMv2 asks for the rdrand engine each time it is
 * initialised, which libhsmwrap does again in a forked nginx worker at its
 * first signature. nginx takes any such stale error for a failed
 * handshake. So every call into the HSM is bracketed by HWP_HSM_BEGIN /
 * HWP_HSM_END, which drop what the module queued; our own error, if any,
 * is raised after the END.
 */
#define HWP_HSM_BEGIN() ERR_set_mark()
#define HWP_HSM_END() ERR_pop_to_mark()

/* common.c */
void hwp_raise(hwp_prov *p, int reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Raises an hw_err with hw_last_detail(): the HSM's side of the story. */
void hwp_raise_hw(hwp_prov *p, hw_err e, const char *what);
/* The provider's context, opened at first use; `uri` names the token when
 * the configuration does not. NULL on failure (error raised). */
hw_ctx *hwp_ctx(hwp_prov *p, const char *uri);
/* Reason strings: hw_strerror() for hw_err codes, then our own. */
const OSSL_ITEM *hwp_reasons(void *provctx);

/* keymgmt.c */
extern const OSSL_DISPATCH hwp_rsa_keymgmt[];
extern const OSSL_DISPATCH hwp_ec_keymgmt[];
extern const OSSL_DISPATCH hwp_ed25519_keymgmt[];
extern const OSSL_DISPATCH hwp_ed448_keymgmt[];
/* TLS-GROUP capabilities: the NIST curves, served by hwp_ec_keymgmt. */
int hwp_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg);
/* Finds the key `uri` names and builds its object (refs = 1). */
hwp_key *hwp_key_open(hwp_prov *p, const char *uri);
void hwp_key_unref(hwp_key *k);
const char *hwp_key_type_name(const hwp_key *k);
/* Hands a key to OpenSSL through an object callback (store and decoder). */
int hwp_key_pass(hwp_key *k, OSSL_CALLBACK *cb, void *cbarg);

/* store.c, signature.c, asym.c, decoder.c */
extern const OSSL_DISPATCH hwp_store[];
extern const OSSL_DISPATCH hwp_rsa_signature[];
extern const OSSL_DISPATCH hwp_ecdsa_signature[];
extern const OSSL_DISPATCH hwp_ed25519_signature[];
extern const OSSL_DISPATCH hwp_ed448_signature[];
extern const OSSL_DISPATCH hwp_rsa_asym[];
extern const OSSL_DISPATCH hwp_ecdh_keyexch[];
extern const OSSL_DISPATCH hwp_pem2der_decoder[];
extern const OSSL_DISPATCH hwp_der2rsa_decoder[];
extern const OSSL_DISPATCH hwp_der2ec_decoder[];
extern const OSSL_DISPATCH hwp_der2ed25519_decoder[];
extern const OSSL_DISPATCH hwp_der2ed448_decoder[];
extern const OSSL_DISPATCH hwp_ref_encoder[];
/* Drops what the decoders remember of provider p (at teardown). */
void hwp_decoder_forget(hwp_prov *p);

#endif
