/*
 * hsmwrap.h - keep keys in a PKCS#11 HSM and still use them easily.
 *
 * Conventions (the whole API follows them):
 *  - Every function that can fail returns an hw_err; HW_OK is 0.
 *    hw_strerror() explains a code in an administrator's words,
 *    hw_last_detail() says what it was about (a key label, a file, a mechanism)
 *    and hw_last_ckrv() gives the PKCS#11 return value behind the last
 *    failure of the calling thread (0 when none was involved).
 *  - Out-parameters are written only on success.
 *  - Buffers returned by the library are freed with hw_free(), or with
 *    hw_free_secret() when they hold secrets (it wipes before freeing).
 *  - One hw_ctx may be used by many threads at once; it survives fork():
 *    a child re-initialises the module and logs in again before its first
 *    operation.
 */
#ifndef HSMWRAP_H
#define HSMWRAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HW_NODISCARD __attribute__((warn_unused_result))
#else
#define HW_NODISCARD
#endif

/* Append-only: the numbers are part of the ABI and of the CLI's JSON. */
typedef enum {
	HW_OK = 0,
	HW_ERR_INVALID_ARG = 1,   /* caller passed something unusable */
	HW_ERR_NOMEM = 2,
	HW_ERR_MODULE = 3,        /* PKCS#11 module missing or would not load */
	HW_ERR_TOKEN_NOT_FOUND = 4,
	HW_ERR_TOKEN_AMBIGUOUS = 5,
	HW_ERR_URI = 6,           /* malformed pkcs11: URI */
	HW_ERR_PIN_SOURCE = 7,    /* PIN could not be read from its source */
	HW_ERR_PIN_INCORRECT = 8,
	HW_ERR_PIN_LOCKED = 9,
	HW_ERR_KEY_NOT_FOUND = 10,
	HW_ERR_KEY_EXISTS = 11,
	HW_ERR_KEY_AMBIGUOUS = 12,
	HW_ERR_KEY_PURPOSE = 13,  /* the key is not allowed to do this */
	HW_ERR_WRONG_KEY = 14,    /* the data was made with another key */
	HW_ERR_FORMAT = 15,       /* malformed or truncated input */
	HW_ERR_INTEGRITY = 16,    /* authentication failed: tampered, wrong context */
	HW_ERR_TOO_LARGE = 17,
	HW_ERR_UNSUPPORTED = 18,  /* the token lacks a needed mechanism */
	HW_ERR_HSM = 19,          /* any other PKCS#11 failure; see hw_last_ckrv() */
	HW_ERR_DEVICE = 20,       /* token removed or device failure */
	HW_ERR_IO = 21,
	HW_ERR_CRYPTO = 22,       /* host-side (OpenSSL) failure */
	HW_ERR_CANCELLED = 23,    /* PIN prompt cancelled */
	HW_ERR_NOT_LOGGED_IN = 24,
	HW_ERR_NO_FREE_SLOT = 25,
	HW_ERR_KEY_DISABLED = 26,          /* the key is disabled (key enable) */
	HW_ERR_KEY_PENDING_DELETION = 27,  /* the key is scheduled for deletion */
} hw_err;

const char *hw_strerror(hw_err err);
/* Symbolic name, e.g. "HW_ERR_INTEGRITY", stable for scripts. */
const char *hw_errname(hw_err err);
/* PKCS#11 CK_RV of the calling thread's last failure, 0 if none. */
unsigned long hw_last_ckrv(void);
/* Context of the calling thread's last failure ("" if none). */
const char *hw_last_detail(void);

void hw_free(void *p);
void hw_free_secret(void *p, size_t len);

/*
 * Memory for secrets the caller holds (PINs, key components, key files):
 * pages of their own, excluded from core dumps (MADV_DONTDUMP) and locked
 * against swapping (mlock) where RLIMIT_MEMLOCK allows; NULL when out of
 * memory. hw_secmem_free wipes (OPENSSL_cleanse) and releases the whole
 * allocation (NULL is fine). One allocation costs at least a page.
 */
void *hw_secmem_alloc(size_t len);
void hw_secmem_free(void *p);

/*
 * A file that appears whole or not at all, whatever happens to the process
 * (kill -9, a full disk, power loss): what the TDE keyring save and every
 * output file of the hsmwrap tool use.
 *
 * hw_file_create: path must be a new name or a regular file; a symbolic
 * link (or anything else) is refused with HW_ERR_INVALID_ARG and left
 * alone, neither replaced nor written through. The content goes to an
 * anonymous O_TMPFILE in path's directory, mode `mode` exactly; where the
 * file system lacks O_TMPFILE, to a named ".hsmwrap-tmp.XXXXXX" locked
 * (flock) by its writer. Write to hw_file_fd(). hw_file_commit: fsync,
 * linked under such a temporary name, renamed over path, the directory
 * fsync'd. hw_file_free: closes; an uncommitted file leaves nothing.
 * hw_file_sweep(dir) (also done by hw_file_create) removes temporaries
 * of this user whose writer is gone (its lock free).
 */
typedef struct hw_file hw_file;
HW_NODISCARD hw_err hw_file_create(const char *path, unsigned mode, hw_file **out);
int hw_file_fd(const hw_file *f);
HW_NODISCARD hw_err hw_file_commit(hw_file *f);
void hw_file_free(hw_file *f);
void hw_file_sweep(const char *dir);

/*
 * Makes the calling process non-dumpable (prctl PR_SET_DUMPABLE 0): no
 * core dump, and other processes of the same user can no longer ptrace it
 * or read its memory through /proc. The hsmwrap tool does this first
 * thing; an application holding PINs or keys through this library (a
 * server using the provider or plugin) should do the same early, unless
 * it needs core dumps. The library's own PIN buffers are excluded from
 * dumps and locked in memory either way.
 */
HW_NODISCARD hw_err hw_process_harden(void);

/* ------------------------------------------------------------------ */
/* Context: one module, one token, one user login, a session pool.    */

typedef struct hw_ctx hw_ctx;

/*
 * PIN callback for interactive use. Write at most `max` bytes into `buf`,
 * set *len and return HW_OK, or return HW_ERR_CANCELLED. `what` names the
 * token and role ("user PIN for token 'prod'").
 */
typedef hw_err (*hw_pin_cb)(const char *what, char *buf, size_t max,
                            size_t *len, void *arg);

HW_NODISCARD hw_err hw_ctx_new(hw_ctx **out);
/*
 * A p11-kit module name (as in p11-kit's module config, e.g. "softhsm2")
 * or a path to a module. Default: the configured one of the build.
 */
HW_NODISCARD hw_err hw_ctx_set_module(hw_ctx *ctx, const char *name_or_path);
/*
 * The module's initialisation arguments: the string C_Initialize gets in
 * CK_C_INITIALIZE_ARGS.pReserved (NSS softokn: "configdir='sql:DIR' ...").
 * Default: the "x-init-reserved" option of a module registered with
 * p11-kit, else none. A module is initialised once per process, so a
 * second context naming it with other arguments fails with HW_ERR_MODULE.
 */
HW_NODISCARD hw_err hw_ctx_set_module_init_args(hw_ctx *ctx, const char *init_args);
/* RFC 7512 URI naming one token, e.g. "pkcs11:token=prod". */
HW_NODISCARD hw_err hw_ctx_set_token(hw_ctx *ctx, const char *uri);
/*
 * "file:PATH", "env:NAME", or "prompt" (which needs a callback).
 * A pin-source or pin-value in the token URI is used when this is unset.
 */
HW_NODISCARD hw_err hw_ctx_set_pin_source(hw_ctx *ctx, const char *source);
void hw_ctx_set_pin_callback(hw_ctx *ctx, hw_pin_cb cb, void *arg);
/* Upper bound of idle sessions kept in the pool (default 32). */
void hw_ctx_set_pool_size(hw_ctx *ctx, unsigned n);
/*
 * Loads and initialises the module and, when a token URI was set, selects
 * the token (HW_ERR_TOKEN_NOT_FOUND here if none matches). Without a URI
 * the only initialised token is selected at first use. Login happens on
 * the first operation that needs it (or hw_ctx_login()).
 */
HW_NODISCARD hw_err hw_ctx_open(hw_ctx *ctx);
HW_NODISCARD hw_err hw_ctx_login(hw_ctx *ctx);
void hw_ctx_free(hw_ctx *ctx);

/* Path of the loaded module, and the selected token's URI (borrowed). */
const char *hw_ctx_module_path(const hw_ctx *ctx);
const char *hw_ctx_token_uri(const hw_ctx *ctx);

/*
 * A PKCS#11 URI fit for messages and logs: the same URI formatted by
 * p11-kit without its pin-value and pin-source attributes. A URI p11-kit
 * cannot parse comes back as given unless it mentions a PIN at all ("pin"
 * anywhere, any case), in which case a placeholder replaces it. Free *out
 * with hw_free().
 */
HW_NODISCARD hw_err hw_uri_redact(const char *uri, char **out);

/* ------------------------------------------------------------------ */
/* Tokens                                                              */

typedef struct {
	unsigned long slot_id;
	char slot_description[65];
	int token_present;
	int token_initialized;
	char label[33];
	char manufacturer[33];
	char model[17];
	char serial[17];
	char uri[512];              /* pkcs11:token=...;serial=... */
	int user_pin_initialized;
	int login_required;
	/* What hsmwrap needs: one bit per capability, see HW_CAP_*. */
	unsigned caps;
	unsigned long free_objects_hint; /* 0 if the token does not say */
} hw_token_info;

enum {
	HW_CAP_AES_GEN = 1u << 0,
	HW_CAP_AES_GCM = 1u << 1,
	HW_CAP_AES_KWP = 1u << 2,
	HW_CAP_RSA_GEN = 1u << 3,
	HW_CAP_RSA_PSS = 1u << 4,
	HW_CAP_EC_GEN = 1u << 5,
	HW_CAP_ECDSA = 1u << 6,
	HW_CAP_RANDOM = 1u << 7,
	/* Not mechanisms: behaviours known per token model (caps.c). */
	HW_CAP_DATA_OBJECTS = 1u << 8,   /* private token CKO_DATA objects */
	HW_CAP_ALLOWED_MECHS = 1u << 9,  /* CKA_ALLOWED_MECHANISMS honoured */
	HW_CAP_EDDSA_GEN = 1u << 10,     /* Ed25519/Ed448 key pairs */
};
/* What every use of hsmwrap needs; the rest enables features. */
#define HW_CAP_ALL 0xffu
/* "aes-gcm", ... for bit i of HW_CAP_*; NULL past the end. */
const char *hw_cap_name(unsigned bit_index);
/*
 * Features ("envelope", "keywrap", "rsa-sign", "ec-sign", "lifecycle",
 * "backup", "mechanism-pinning", "eddsa-sign") by index, NULL past the end, and the
 * HW_CAP_* bits each needs: a token supports feature i when
 * (caps & hw_feature_needs(i)) == hw_feature_needs(i). Using a feature the
 * token lacks fails with HW_ERR_UNSUPPORTED before anything is done.
 */
const char *hw_feature_name(unsigned index);
unsigned hw_feature_needs(unsigned index);

/* Every slot of the context's module (no token selection needed). */
HW_NODISCARD hw_err hw_token_list(hw_ctx *ctx, hw_token_info **list, size_t *n);
/*
 * Initialise the first slot without an initialised token, give it `label`
 * and set the user PIN. The SO PIN and user PIN are taken from the given
 * sources ("file:", "env:", "prompt"). On success *slot_out holds the
 * slot the token is in now (some modules, SoftHSMv2 among them, move a
 * token to a new slot id when it is initialised). Select it afterwards by
 * "pkcs11:token=<label>".
 */
HW_NODISCARD hw_err hw_token_init(hw_ctx *ctx, const char *label,
                                  const char *so_pin_source,
                                  const char *user_pin_source,
                                  unsigned long *slot_out);
/*
 * Names of the modules registered in p11-kit's configuration (each usable
 * with hw_ctx_set_module). Free with hw_strv_free().
 */
HW_NODISCARD hw_err hw_module_list(char ***names, size_t *n);
void hw_strv_free(char **v, size_t n);

/* ------------------------------------------------------------------ */
/* Keys                                                                */

typedef struct hw_key hw_key;

typedef enum {
	HW_KEY_AES256 = 1,
	HW_KEY_RSA2048,
	HW_KEY_RSA3072,
	HW_KEY_RSA4096,
	HW_KEY_EC_P256,
	HW_KEY_EC_P384,
	HW_KEY_EC_P521,
	HW_KEY_ED25519,             /* CKK_EC_EDWARDS, signs with CKM_EDDSA */
	HW_KEY_ED448,
	/* RSA keys that may only sign with RSASSA-PSS: their
	 * CKA_ALLOWED_MECHANISMS lists the PSS mechanisms alone, so the token
	 * itself refuses PKCS#1 v1.5 signatures and decryption. */
	HW_KEY_RSA2048_PSS,
	HW_KEY_RSA3072_PSS,
	HW_KEY_RSA4096_PSS,
} hw_key_type;

/* Key-pair families of hw_key_type (0 for AES and unknown types). */
int hw_key_type_is_rsa(hw_key_type t);
int hw_key_type_is_ec(hw_key_type t);      /* ECDSA/ECDH curves */
int hw_key_type_is_eddsa(hw_key_type t);

typedef enum {
	HW_PURPOSE_NONE = 0,      /* a key whose usage flags match no purpose */
	HW_PURPOSE_ENVELOPE = 1,  /* AES-GCM encrypt/decrypt (data keys, envelopes) */
	HW_PURPOSE_KEYWRAP = 2,   /* AES-KWP wrap/unwrap only */
	HW_PURPOSE_SIGN = 3,      /* RSA/EC sign only */
	HW_PURPOSE_DECRYPT = 4,   /* RSA decrypt only (e.g. Raw RSA envelope recipients) */
	HW_PURPOSE_DERIVE = 5,    /* EC key agreement (ECDH) only: CKA_DERIVE, no signing */
} hw_purpose;

/* "aes256" <-> HW_KEY_AES256 ...; "envelope" <-> HW_PURPOSE_ENVELOPE ... */
const char *hw_key_type_name(hw_key_type t);
HW_NODISCARD hw_err hw_key_type_parse(const char *s, hw_key_type *t);
const char *hw_purpose_name(hw_purpose p);
HW_NODISCARD hw_err hw_purpose_parse(const char *s, hw_purpose *p);

/*
 * Generate a key (or key pair) on the token: CKA_TOKEN, CKA_PRIVATE,
 * CKA_SENSITIVE=TRUE, CKA_EXTRACTABLE=FALSE, the purpose's usage flags and
 * mechanisms, the label and a fresh random 16-byte CKA_ID. Fails with
 * HW_ERR_KEY_EXISTS if a key with that label exists.
 */
HW_NODISCARD hw_err hw_key_generate(hw_ctx *ctx, const char *label,
                                    hw_key_type type, hw_purpose purpose,
                                    hw_key **out);
/* spec: a label, "id:HEX", or a pkcs11: URI (object=, id=, type=). */
HW_NODISCARD hw_err hw_key_find(hw_ctx *ctx, const char *spec, hw_key **out);
/* All keys on the token: secret keys and private keys (one per pair). */
HW_NODISCARD hw_err hw_key_list(hw_ctx *ctx, hw_key ***keys, size_t *n);
void hw_key_list_free(hw_key **keys, size_t n);
/* Destroys the key (both halves of a pair) on the token. */
HW_NODISCARD hw_err hw_key_destroy(hw_key *key);
void hw_key_free(hw_key *key);

typedef struct {
	char label[129];
	char id_hex[129];           /* CKA_ID in lowercase hex */
	hw_key_type type;           /* 0 if not a type hsmwrap creates */
	char type_name[16];         /* "aes256", "rsa3072", or e.g. "aes128" */
	unsigned bits;
	hw_purpose purpose;
	/* Security attributes, as the token reports them (-1 = unknown). */
	int token, private_, sensitive, extractable;
	int always_sensitive, never_extractable, local;
	int encrypt, decrypt, wrap, unwrap, sign, verify, derive;
	char uri[1024];             /* pkcs11: URI of the key (private half for pairs) */
	/*
	 * AES: KCV, 3 bytes (6 hex digits) of AES-ECB(key, 0^128), as
	 * CKA_CHECK_VALUE reports it. Pairs: SHA-256 of the DER
	 * SubjectPublicKeyInfo, 64 hex digits. kcv_alg says which.
	 */
	char kcv[65];
	char kcv_alg[32];           /* "AES-ECB-zero" | "SHA256-SPKI" | "unavailable" */
} hw_key_info;

HW_NODISCARD hw_err hw_key_info_get(hw_key *key, hw_key_info *info);
const char *hw_key_label(const hw_key *key);
/* DER SubjectPublicKeyInfo of a key pair's public half (free with hw_free). */
HW_NODISCARD hw_err hw_key_public_der(hw_key *key, uint8_t **der, size_t *len);

/* ------------------------------------------------------------------ */
/* Encryption context: key/value pairs bound as AAD (like KMS's).      */

typedef struct hw_ectx hw_ectx;

HW_NODISCARD hw_err hw_ectx_new(hw_ectx **out);
/* Keys and values are UTF-8; a key may appear once. */
HW_NODISCARD hw_err hw_ectx_add(hw_ectx *ec, const char *key, const char *value);
/* "k=v" form, as the CLI takes it. */
HW_NODISCARD hw_err hw_ectx_add_kv(hw_ectx *ec, const char *kv);
size_t hw_ectx_count(const hw_ectx *ec);
/*
 * AWS Encryption SDK serialization: empty for no pairs, else count u16
 * and (len u16, key, len u16, value) sorted by the keys' UTF-8 bytes.
 */
HW_NODISCARD hw_err hw_ectx_serialize(const hw_ectx *ec, uint8_t **out, size_t *len);
void hw_ectx_free(hw_ectx *ec);

/* ------------------------------------------------------------------ */
/* Direct encryption inside the HSM (AES-256-GCM, small payloads).     */

#define HW_DIRECT_MAX (64u * 1024u)

/*
 * The blob is self-describing: format version, the key's CKA_ID and
 * label, the IV (random 96-bit, or the one the token chose), ciphertext
 * and tag. The header is bound as AAD together with `aad`.
 */
HW_NODISCARD hw_err hw_encrypt(hw_key *key, const uint8_t *pt, size_t ptlen,
                               const uint8_t *aad, size_t aadlen,
                               uint8_t **blob, size_t *bloblen);
/*
 * key may be NULL: the key named by the blob is used. If given, it must be
 * the blob's key (else HW_ERR_WRONG_KEY).
 */
HW_NODISCARD hw_err hw_decrypt(hw_ctx *ctx, hw_key *key,
                               const uint8_t *blob, size_t bloblen,
                               const uint8_t *aad, size_t aadlen,
                               uint8_t **pt, size_t *ptlen);

/* ------------------------------------------------------------------ */
/* Data keys, like KMS GenerateDataKey.                                */

#define HW_DATAKEY_LEN 32

/*
 * A fresh 256-bit key from the token's RNG, returned in plaintext and
 * wrapped by an `envelope` key with AES-GCM; the serialized context is
 * the AAD. ec may be NULL (empty context).
 */
HW_NODISCARD hw_err hw_datakey_generate(hw_key *key, const hw_ectx *ec,
                                        uint8_t plaintext[HW_DATAKEY_LEN],
                                        uint8_t **wrapped, size_t *wrappedlen);
HW_NODISCARD hw_err hw_datakey_decrypt(hw_ctx *ctx, hw_key *key, const hw_ectx *ec,
                                       const uint8_t *wrapped, size_t wrappedlen,
                                       uint8_t plaintext[HW_DATAKEY_LEN]);

/* ------------------------------------------------------------------ */
/* Key material wrapping with a `keywrap` key (AES-KWP, RFC 5649).     */

#define HW_WRAP_MAX_MATERIAL 4096u

HW_NODISCARD hw_err hw_wrap(hw_key *key, const uint8_t *material, size_t len,
                            uint8_t **blob, size_t *bloblen);
/* Free *material with hw_free_secret(*material, *len). */
HW_NODISCARD hw_err hw_unwrap(hw_ctx *ctx, hw_key *key,
                              const uint8_t *blob, size_t bloblen,
                              uint8_t **material, size_t *len);

/* ------------------------------------------------------------------ */
/* Signatures with a `sign` key pair (the message is hashed on the     */
/* host; the private key signs the digest inside the HSM).             */

typedef enum {
	HW_SIG_RSA_PKCS1_SHA256 = 1,
	HW_SIG_RSA_PKCS1_SHA384,
	HW_SIG_RSA_PKCS1_SHA512,
	HW_SIG_RSA_PSS_SHA256,      /* salt length = digest length, MGF1 with the same hash */
	HW_SIG_RSA_PSS_SHA384,
	HW_SIG_RSA_PSS_SHA512,
	HW_SIG_ECDSA_SHA256,        /* DER-encoded ECDSA-Sig-Value */
	HW_SIG_ECDSA_SHA384,
	HW_SIG_ECDSA_SHA512,        /* P-521's TLS 1.3 scheme */
	/* PureEdDSA (RFC 8032) with an Ed25519 or Ed448 key: the HSM signs the
	 * whole message, which hw_sign and hw_sign_digest both take as is. */
	HW_SIG_EDDSA,
} hw_sig_alg;

HW_NODISCARD hw_err hw_sig_alg_parse(const char *s, hw_sig_alg *alg);
const char *hw_sig_alg_name(hw_sig_alg alg);
HW_NODISCARD hw_err hw_sign(hw_key *key, hw_sig_alg alg, const uint8_t *msg, size_t len,
                            uint8_t **sig, size_t *siglen);

/*
 * Signs a digest the caller has already computed (TLS and X.509 hash on
 * the host, often incrementally, so hw_sign's hash-it-yourself shape does
 * not fit). `len` must be the digest length of `alg` (32, 48 or 64 bytes),
 * else HW_ERR_INVALID_ARG. RSA PKCS#1 v1.5 wraps the digest in its
 * DigestInfo; PSS uses MGF1 with the same hash and salt length = digest
 * length; ECDSA returns a DER ECDSA-Sig-Value. HW_ERR_KEY_PURPOSE when the
 * key cannot make signatures of that kind (never a software fallback).
 * Free *sig with hw_free().
 */
HW_NODISCARD hw_err hw_sign_digest(hw_key *key, hw_sig_alg alg, const uint8_t *digest,
                                   size_t len, uint8_t **sig, size_t *siglen);

typedef enum {
	HW_RSA_PAD_PKCS1 = 1,       /* RSAES-PKCS1-v1_5 (legacy TLS 1.2 RSA key exchange) */
	HW_RSA_PAD_OAEP_SHA1,       /* RSAES-OAEP, SHA-1 and MGF1-SHA-1, empty label */
	HW_RSA_PAD_OAEP_SHA256,     /* RSAES-OAEP, SHA-256 and MGF1-SHA-256, empty label */
	HW_RSA_PAD_OAEP_SHA384,     /* RSAES-OAEP, SHA-384 and MGF1-SHA-384, empty label */
	HW_RSA_PAD_OAEP_SHA512,     /* RSAES-OAEP, SHA-512 and MGF1-SHA-512, empty label */
} hw_rsa_padding;

/*
 * ECDH with the private half of an EC key pair made with purpose `derive`
 * (CKM_ECDH1_DERIVE, no KDF): `peer` is the other party's uncompressed
 * point (0x04 || X || Y). The shared secret is the X coordinate, which the
 * caller (TLS, CMS, openssl pkeyutl -derive) feeds into its own KDF, so it
 * has to leave the HSM: it is derived into a session object (not on the
 * token) of type CKK_GENERIC_SECRET with CKA_SENSITIVE=FALSE and
 * CKA_EXTRACTABLE=TRUE, read, and destroyed at once. The private key
 * itself stays sensitive and never extractable. HW_ERR_KEY_PURPOSE for a
 * key that is not an EC key; the token refuses keys without CKA_DERIVE.
 * Free *secret with hw_free_secret(*secret, *len).
 */
HW_NODISCARD hw_err hw_ecdh_derive(hw_key *key, const uint8_t *peer, size_t peerlen,
                                   uint8_t **secret, size_t *len);

/*
 * Decrypts an RSA ciphertext inside the HSM with the private half of a
 * key pair whose CKA_DECRYPT is set (hsmwrap's `sign` keys do not have it:
 * HW_ERR_KEY_PURPOSE). HW_ERR_INTEGRITY when the padding does not check
 * out. Free *pt with hw_free_secret(*pt, *ptlen).
 */
HW_NODISCARD hw_err hw_rsa_decrypt(hw_key *key, hw_rsa_padding padding,
                                   const uint8_t *ct, size_t ctlen,
                                   uint8_t **pt, size_t *ptlen);

/* ------------------------------------------------------------------ */
/* Blob inspection (no HSM needed).                                    */

typedef enum {
	HW_BLOB_DIRECT = 1,
	HW_BLOB_DATAKEY = 2,
	HW_BLOB_WRAPPED = 3,
} hw_blob_kind;

typedef struct {
	hw_blob_kind kind;
	unsigned version;
	char key_label[129];
	char key_id_hex[129];
	size_t payload_len;         /* ciphertext (+tag) length */
} hw_blob_info;

HW_NODISCARD hw_err hw_blob_inspect(const uint8_t *blob, size_t len, hw_blob_info *info);

/* ------------------------------------------------------------------ */
/* Envelope encryption of any size: the AWS Encryption SDK message     */
/* format (interoperable with its Java, Python, JavaScript, C, .NET    */
/* and CLI implementations). Each message gets a fresh data key; the   */
/* HSM wraps it with AES-256-GCM under one or more `envelope` keys,    */
/* stored as the SDK's Raw AES keyring stores it (provider id = key    */
/* namespace, key name = the key's label).                             */

typedef struct hw_envelope_cfg hw_envelope_cfg;

/* Suites hsmwrap encrypts with (both commit to the data key). */
#define HW_SUITE_AES256_HKDF_SHA512_COMMIT 0x0478u
#define HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384 0x0578u /* default */

typedef enum {
	/* Encrypt and decrypt only with key commitment (v2 messages). Default. */
	HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT = 1,
	/* Also decrypt legacy messages without commitment (v1, suites 0x0014..0x0378). */
	HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT = 2,
} hw_commitment_policy;

/* A NULL cfg anywhere below means all defaults. */
HW_NODISCARD hw_err hw_envelope_cfg_new(hw_envelope_cfg **out);
void hw_envelope_cfg_free(hw_envelope_cfg *cfg);
/* 0x0478 or 0x0578 (default). */
HW_NODISCARD hw_err hw_envelope_cfg_set_suite(hw_envelope_cfg *cfg, unsigned suite);
/* Plaintext bytes per frame, 1 to 2^32-1 (default 4096). */
HW_NODISCARD hw_err hw_envelope_cfg_set_frame_length(hw_envelope_cfg *cfg, uint32_t len);
HW_NODISCARD hw_err hw_envelope_cfg_set_commitment_policy(hw_envelope_cfg *cfg,
                                                          hw_commitment_policy p);
/*
 * Most encrypted data keys a message may carry (default 16; 0 = no limit
 * but the format's 65535). Decryption stops as soon as the header's count
 * exceeds it, before reading the keys.
 */
HW_NODISCARD hw_err hw_envelope_cfg_set_max_edks(hw_envelope_cfg *cfg, unsigned n);
/*
 * Provider id of the HSM keyring's data keys (default "hsmwrap"). It must
 * be 1..255 bytes of UTF-8 and not start with "aws-kms".
 */
HW_NODISCARD hw_err hw_envelope_cfg_set_key_namespace(hw_envelope_cfg *cfg, const char *ns);
/*
 * Decryption memory bound: the largest frame, or non-framed body, and the
 * largest header that is held in memory (default 64 MiB). A message that
 * needs more fails with HW_ERR_TOO_LARGE.
 */
HW_NODISCARD hw_err hw_envelope_cfg_set_max_buffer(hw_envelope_cfg *cfg, size_t bytes);
/* Refuse signed messages right after the header (default: accept). */
HW_NODISCARD hw_err hw_envelope_cfg_set_reject_signed(hw_envelope_cfg *cfg, int reject);
/*
 * Threads that encrypt or decrypt the frames of one stream (default 0:
 * one per online CPU; 1: only the calling thread; at most 256). Frames
 * are independent, so threads seal or open runs of frames while the
 * calling thread, one of them, keeps their order and hashes for the
 * signature: the output is the same bytes whatever the count. Memory
 * stays bounded: two jobs of 128 KiB of frames per thread. Callbacks
 * (hw_write_cb) are only ever called on the calling thread.
 */
HW_NODISCARD hw_err hw_envelope_cfg_set_threads(hw_envelope_cfg *cfg, unsigned threads);

/*
 * One-shot encryption for every key in keys[0..nkeys-1] (each an `envelope`
 * key; they may be on different tokens). ec may be NULL; its keys must not
 * start with "aws-crypto-". Free *out with hw_free().
 */
HW_NODISCARD hw_err hw_envelope_encrypt(const hw_envelope_cfg *cfg, hw_key *const *keys,
                                        size_t nkeys, const hw_ectx *ec,
                                        const uint8_t *in, size_t inlen,
                                        uint8_t **out, size_t *outlen);
/*
 * One-shot decryption. The data key is unwrapped by the first of the
 * message's encrypted data keys (in message order) whose provider id is
 * the key namespace and whose key name is
 *   - the label of one of allowed[0..nallowed-1], or
 *   - with allowed == NULL, the label of a key on ctx's token.
 * ctx may be NULL when allowed is given. required (may be NULL): pairs that
 * must be in the message's context with these values; a pair the message
 * does not store is taken as reproduced context (the SDK's required-
 * encryption-context CMM), so decryption succeeds only if the message was
 * made with it. *ec_out (may be NULL) receives the message's context
 * (stored and reproduced pairs; for signed suites it includes the SDK's
 * aws-crypto-public-key pair, as the SDKs return it). A context the
 * hw_ectx type cannot hold (an empty key or a NUL byte) gives
 * HW_ERR_UNSUPPORTED when ec_out is requested.
 * Nothing is returned unless the whole message authenticated. Free *out
 * with hw_free_secret(*out, *outlen).
 */
HW_NODISCARD hw_err hw_envelope_decrypt(hw_ctx *ctx, const hw_envelope_cfg *cfg,
                                        hw_key *const *allowed, size_t nallowed,
                                        const hw_ectx *required,
                                        const uint8_t *in, size_t inlen,
                                        uint8_t **out, size_t *outlen, hw_ectx **ec_out);

/*
 * Streaming. Output goes to a callback as it is produced; an error it
 * returns stops the stream and is returned by the call that fed it.
 * Memory stays bounded by the frame length whatever the message size.
 */
typedef hw_err (*hw_write_cb)(void *arg, const uint8_t *data, size_t len);

typedef struct hw_enc_stream hw_enc_stream;
/* Wraps the data key and writes the header at once. */
HW_NODISCARD hw_err hw_enc_stream_new(const hw_envelope_cfg *cfg, hw_key *const *keys,
                                      size_t nkeys, const hw_ectx *ec,
                                      hw_write_cb write, void *arg, hw_enc_stream **out);
HW_NODISCARD hw_err hw_enc_stream_update(hw_enc_stream *s, const uint8_t *in, size_t len);
/* Writes the final frame and, for signed suites, the footer signature. */
HW_NODISCARD hw_err hw_enc_stream_final(hw_enc_stream *s);
void hw_enc_stream_free(hw_enc_stream *s);

/*
 * Plaintext is passed to write only after it authenticated: each frame as
 * it verifies. For signed suites the final frame (or a non-framed body)
 * is held until the footer signature verifies in hw_dec_stream_final() or
 * the update that reads the footer. Earlier frames of a signed message
 * are released as they authenticate (the SDK's documented behaviour), so
 * a caller writing to a file must write to a temporary file and rename it
 * only after hw_dec_stream_final() succeeded, and delete it otherwise.
 * Bytes after the end of the message are an error (HW_ERR_FORMAT).
 */
typedef struct hw_dec_stream hw_dec_stream;
HW_NODISCARD hw_err hw_dec_stream_new(hw_ctx *ctx, const hw_envelope_cfg *cfg,
                                      hw_key *const *allowed, size_t nallowed,
                                      const hw_ectx *required, hw_write_cb write, void *arg,
                                      hw_dec_stream **out);
HW_NODISCARD hw_err hw_dec_stream_update(hw_dec_stream *s, const uint8_t *in, size_t len);
/* Fails (HW_ERR_FORMAT) unless a whole, verified message was read. */
HW_NODISCARD hw_err hw_dec_stream_final(hw_dec_stream *s, hw_ectx **ec_out);
void hw_dec_stream_free(hw_dec_stream *s);

/* Header inspection (no HSM, nothing decrypted or authenticated). */
typedef struct {
	char *key, *value;          /* NUL-terminated; a NUL inside shows as U+FFFD */
} hw_envelope_pair;

typedef struct {
	char *provider_id;          /* NUL-terminated (NULs shown as U+FFFD) */
	uint8_t *provider_info;
	size_t provider_info_len;
	/* For Raw-AES-style provider info (hsmwrap's): the key name, else NULL. */
	char *key_name;
	size_t ciphertext_len;
} hw_envelope_edk;

typedef struct {
	unsigned version;           /* 1 or 2 */
	unsigned suite;             /* e.g. 0x0578 */
	const char *suite_name;     /* the SDK's name, e.g. "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384" */
	int committing, signed_;
	uint8_t message_id[32];
	size_t message_id_len;      /* 16 (v1) or 32 (v2) */
	int framed;
	uint32_t frame_length;      /* 0 when not framed */
	size_t header_len;          /* bytes, including the authentication tag */
	hw_envelope_pair *pairs;    /* sorted, including aws-crypto-public-key */
	size_t npairs;
	hw_envelope_edk *edks;
	size_t nedks;
} hw_envelope_info;

/* in needs only hold the header (e.g. a file's first 64 KiB). */
HW_NODISCARD hw_err hw_envelope_inspect(const uint8_t *in, size_t inlen,
                                        hw_envelope_info **out);
void hw_envelope_info_free(hw_envelope_info *info);

/*
 * Raw RSA recipients (offline escrow). Adds a recipient whose RSA public
 * key the host holds: spki_der is a DER SubjectPublicKeyInfo of an RSA
 * key of at least 2048 bits. Each message's data key is encrypted to it
 * with OpenSSL, and stored as the SDK's Raw RSA keyring stores it:
 * provider id = provider_id (the Raw RSA keyring's key namespace),
 * provider info = key_name, ciphertext = the RSA output. Any SDK with the
 * private key in a Raw RSA keyring of that namespace, name and padding
 * decrypts the message, and so does hsmwrap with the private key in the
 * HSM (label = key_name, cfg key namespace = provider_id). With at least
 * one RSA recipient, hw_envelope_encrypt / hw_enc_stream_new accept
 * nkeys == 0 (escrow only).
 */
HW_NODISCARD hw_err hw_envelope_cfg_add_rsa_recipient(hw_envelope_cfg *cfg,
                                                      const char *provider_id,
                                                      const char *key_name,
                                                      const uint8_t *spki_der, size_t len);
/*
 * RSA padding for RSA recipients (encrypt) and for unwrapping with RSA
 * private keys in the HSM (decrypt): HW_RSA_PAD_OAEP_SHA256 by default
 * (MGF1 uses the same hash). On decrypt, an RSA HSM key unwraps an EDK
 * whose provider id is the key namespace and whose provider info is the
 * key's label. Tokens that lack OAEP with that hash (SoftHSMv2 has only
 * SHA-1) are served by a raw RSA decryption in the HSM and an OAEP check
 * on the host, if the key allows CKM_RSA_X_509.
 */
HW_NODISCARD hw_err hw_envelope_cfg_set_rsa_padding(hw_envelope_cfg *cfg, hw_rsa_padding p);

/*
 * Data-key cache, the SDK's caching CMM: thread-safe, shareable between
 * configurations and threads; secrets are wiped on eviction and free.
 * max_entries >= 1; max_age_ms > 0; max_messages per data key (0 = 2^32);
 * max_bytes encrypted per data key (0 = 2^63 - 1).
 * Decrypt: a message whose suite, encrypted data keys and context (and
 * the keys allowed) match a cached entry gets its data key without an
 * HSM call. Encrypt (one-shot only: the SDK caches only when the whole
 * plaintext length is known; streams bypass the cache): a data key with
 * its encrypted data keys and, for signed suites, its signing key is
 * reused for the same keys, suite and context while within the limits.
 */
typedef struct hw_cache hw_cache;
HW_NODISCARD hw_err hw_cache_new(size_t max_entries, uint64_t max_age_ms,
                                 uint64_t max_messages, uint64_t max_bytes, hw_cache **out);
void hw_cache_free(hw_cache *c);
/* NULL: no cache (the default). The cache must outlive cfg's use. */
HW_NODISCARD hw_err hw_envelope_cfg_set_cache(hw_envelope_cfg *cfg, hw_cache *c);

/* ------------------------------------------------------------------ */
/* Clusters: several tokens holding the same keys (same labels and     */
/* CKA_IDs), e.g. HSMs of a CloudHSM cluster or a Luna HA group, in    */
/* one or several modules (p11-kit remoting included). Operations are  */
/* spread over the healthy members; a member that fails (device,       */
/* module, session or login trouble) is taken out for a back-off       */
/* period and the operation runs again on the next member, so nothing  */
/* is lost while one member is up. Thread-safe like hw_ctx.            */

typedef struct hw_cluster hw_cluster;

typedef struct {
	char token_uri[512];        /* "" until the member was first reached */
	int healthy;
	unsigned long retry_in_ms;  /* back-off left when not healthy */
	unsigned long ops, failures;
	hw_err last_error;
	unsigned long last_ckrv;
	char last_detail[256];
} hw_cluster_member;

HW_NODISCARD hw_err hw_cluster_new(hw_cluster **out);
/*
 * Adds a configured (module, token URI, PIN source) context and takes
 * ownership of it. It is opened at first use, so a member that is down
 * when the application starts joins when it comes up.
 */
HW_NODISCARD hw_err hw_cluster_add(hw_cluster *cl, hw_ctx *member);
/* Back-off of a failed member: min_ms, doubling per failure up to max_ms
 * (default 1 s .. 30 s). */
void hw_cluster_set_retry(hw_cluster *cl, unsigned min_ms, unsigned max_ms);
size_t hw_cluster_size(const hw_cluster *cl);
HW_NODISCARD hw_err hw_cluster_member_status(hw_cluster *cl, size_t i, hw_cluster_member *st);
void hw_cluster_free(hw_cluster *cl);

/* As the single-token calls; keys are named by label, and decryption
 * uses the key the input names, on whichever member answers. */
HW_NODISCARD hw_err hw_cluster_datakey_generate(hw_cluster *cl, const char *label,
                                                const hw_ectx *ec,
                                                uint8_t plaintext[HW_DATAKEY_LEN],
                                                uint8_t **wrapped, size_t *wrappedlen);
HW_NODISCARD hw_err hw_cluster_datakey_decrypt(hw_cluster *cl, const hw_ectx *ec,
                                               const uint8_t *wrapped, size_t wrappedlen,
                                               uint8_t plaintext[HW_DATAKEY_LEN]);
HW_NODISCARD hw_err hw_cluster_encrypt(hw_cluster *cl, const char *label,
                                       const uint8_t *pt, size_t ptlen,
                                       const uint8_t *aad, size_t aadlen,
                                       uint8_t **blob, size_t *bloblen);
HW_NODISCARD hw_err hw_cluster_decrypt(hw_cluster *cl, const uint8_t *blob, size_t bloblen,
                                       const uint8_t *aad, size_t aadlen,
                                       uint8_t **pt, size_t *ptlen);
HW_NODISCARD hw_err hw_cluster_sign(hw_cluster *cl, const char *label, hw_sig_alg alg,
                                    const uint8_t *msg, size_t len,
                                    uint8_t **sig, size_t *siglen);
HW_NODISCARD hw_err hw_cluster_envelope_encrypt(hw_cluster *cl, const hw_envelope_cfg *cfg,
                                                const char *label, const hw_ectx *ec,
                                                const uint8_t *in, size_t inlen,
                                                uint8_t **out, size_t *outlen);
HW_NODISCARD hw_err hw_cluster_envelope_decrypt(hw_cluster *cl, const hw_envelope_cfg *cfg,
                                                const hw_ectx *required,
                                                const uint8_t *in, size_t inlen,
                                                uint8_t **out, size_t *outlen,
                                                hw_ectx **ec_out);

/* ------------------------------------------------------------------ */
/* Certificates stored on the token next to a key pair (CKO_CERTIFICATE */
/* with the key's CKA_ID and CKA_LABEL, CKA_TOKEN, not CKA_PRIVATE).    */

/*
 * Stores a DER X.509 certificate next to the key pair. The certificate's
 * public key must be the key's (else HW_ERR_WRONG_KEY); HW_ERR_KEY_EXISTS
 * if the key already has a certificate on the token; HW_ERR_FORMAT if der
 * is not exactly one certificate.
 */
HW_NODISCARD hw_err hw_cert_store(hw_key *key, const uint8_t *der, size_t len);
/* The certificate stored next to the key (HW_ERR_KEY_NOT_FOUND if none).
 * Free *der with hw_free(). */
HW_NODISCARD hw_err hw_cert_get(hw_key *key, uint8_t **der, size_t *len);
/* Destroys the certificates stored next to the key; none is not an error. */
HW_NODISCARD hw_err hw_cert_destroy(hw_key *key);

/* One certificate object on the token. */
typedef struct {
	uint8_t *der;               /* CKA_VALUE: DER X.509 */
	size_t len;
	char label[129];
} hw_cert_entry;

#define HW_CERT_FIND_MAX 64u

/*
 * The certificates a pkcs11: URI selects: its object= and id= if given,
 * else every certificate of the token (at most HW_CERT_FIND_MAX). No match
 * is not an error (*n = 0). Certificates are public objects: any object
 * attribute besides these two, or a type= other than cert, is
 * HW_ERR_URI. Free with hw_cert_entries_free().
 */
HW_NODISCARD hw_err hw_cert_find(hw_ctx *ctx, const char *uri, hw_cert_entry **certs,
                                 size_t *n);
void hw_cert_entries_free(hw_cert_entry *certs, size_t n);

/* ------------------------------------------------------------------ */
/* Tamper-evident audit log: one JSON object per line, each carrying   */
/* the SHA-256 of the previous line's exact bytes ("prev"), and from   */
/* time to time a digest record whose chain hash is signed by an EC    */
/* audit key in the HSM. Appends from several processes are chained   */
/* correctly (flock, fsync). Format: README, "Audit log".              */

typedef struct hw_audit hw_audit;

/* What is logged about one action. Never put secrets in it: the
 * encryption context is written in plaintext, by design. */
typedef struct {
	const char *action;         /* e.g. "key create", "decrypt"; required */
	hw_ctx *ctx;                /* token used (label, serial, URI), or NULL */
	const char *token;          /* token URI to log when ctx is NULL, or NULL */
	hw_key *key;                /* key used (label and id), or NULL */
	const char *key_label;      /* when key is NULL; NULL: no key */
	const char *key_id_hex;     /* when key is NULL; NULL: unknown */
	const char *key_version;    /* NULL: none (logged as null) */
	const hw_ectx *context;     /* NULL: no pairs */
	hw_err result;              /* HW_OK, or the failure (logged by hw_errname) */
} hw_audit_event;

/* Default number of records between two periodic signed digests. */
#define HW_AUDIT_DIGEST_EVERY 100u

/*
 * Starts a new log at path (which must not exist, HW_ERR_IO otherwise):
 * a genesis record with a random log id and the signer's public key
 * fingerprint, written and fsync'd. signer is an EC P-256 or P-384 sign
 * key; it becomes the log's signer (see hw_audit_set_signer).
 */
HW_NODISCARD hw_err hw_audit_create(const char *path, hw_key *signer, hw_audit **out);
/*
 * Opens an existing log for appending and checks now that it can be
 * written and is not damaged at its ends (a genesis first, a complete
 * last record), so that an application can refuse to work un-audited
 * before it does anything.
 */
HW_NODISCARD hw_err hw_audit_open(const char *path, hw_audit **out);
/* Label of the audit key the log's genesis record names (borrowed). */
const char *hw_audit_key_label(const hw_audit *log);
/* The log's random id (32 hex digits, borrowed). */
const char *hw_audit_log_id(const hw_audit *log);
/*
 * The key that signs digests (its public key must be the one the genesis
 * names: HW_ERR_WRONG_KEY otherwise). It must outlive the log handle.
 */
HW_NODISCARD hw_err hw_audit_set_signer(hw_audit *log, hw_key *signer);
/* Records between periodic digests (0: HW_AUDIT_DIGEST_EVERY). */
void hw_audit_set_digest_every(hw_audit *log, unsigned every);
/*
 * Appends one record. When it reaches a periodic digest point, a signed
 * digest follows at once if a signer is set; else hw_audit_digest_due()
 * says so and the caller should set one and call hw_audit_digest().
 */
HW_NODISCARD hw_err hw_audit_append(hw_audit *log, const hw_audit_event *ev);
/*
 * Fail-closed auditing in two records: hw_audit_attempt() writes and syncs
 * a record of the action about to be taken (result "attempt"; ev->result
 * is ignored) and gives its seq; only if it succeeded should the caller
 * act, then record the result with hw_audit_outcome(), which names the
 * attempt ("attempt": seq). A log may thus miss an outcome (crash, full
 * disk after the act), never an action; hw_audit_verify counts attempts
 * left without an outcome (hw_audit_report.unfinished).
 */
HW_NODISCARD hw_err hw_audit_attempt(hw_audit *log, const hw_audit_event *ev, uint64_t *seq);
HW_NODISCARD hw_err hw_audit_outcome(hw_audit *log, const hw_audit_event *ev,
                                     uint64_t attempt_seq);
int hw_audit_digest_due(const hw_audit *log);
/* Appends a digest record signed by the signer now; reason e.g. "ceremony". */
HW_NODISCARD hw_err hw_audit_digest(hw_audit *log, const char *reason);
void hw_audit_close(hw_audit *log);

typedef struct {
	uint64_t records;           /* lines read */
	uint64_t digests;           /* signed digests that verified */
	uint64_t last_digest_line;  /* 0: none */
	uint64_t uncovered;         /* records after the last signed digest */
	uint64_t bad_line;          /* first bad record (1-based line), 0: none */
	uint64_t bad_seq;           /* its seq, when bad_seq_known */
	int bad_seq_known;
	char reason[256];           /* what is wrong with it */
	char log_id[33];
	char key_label[129];        /* audit key named by the genesis */
	char key_fingerprint[65];   /* SHA-256 of its SubjectPublicKeyInfo, hex */
	char head[65];              /* SHA-256 of the last line: keep it elsewhere */
	uint64_t head_seq;
	uint64_t unfinished;        /* attempt records without an outcome */
	uint64_t unfinished_seq;    /* the first of them, 0: none */
} hw_audit_report;

/*
 * Checks a whole log: the genesis, every link of the chain, the sequence
 * numbers, and each digest signature with the public key spki (DER
 * SubjectPublicKeyInfo; its fingerprint must be the genesis's, else
 * HW_ERR_WRONG_KEY). HW_OK: intact (rep->uncovered may still be > 0:
 * such records could have been cut or changed without trace).
 * HW_ERR_INTEGRITY: rep names the first bad record and why.
 */
HW_NODISCARD hw_err hw_audit_verify(const uint8_t *log, size_t len,
                                    const uint8_t *spki, size_t spki_len,
                                    hw_audit_report *rep);
/* The same, reading the file line by line (bounded memory). */
HW_NODISCARD hw_err hw_audit_verify_file(const char *path, const uint8_t *spki,
                                         size_t spki_len, hw_audit_report *rep);

/* One record, parsed (no integrity check: that is hw_audit_verify's). */
typedef struct {
	uint64_t seq;
	char type[16];              /* "genesis", "event" or "digest" */
	char *time;                 /* UTC, e.g. "2026-11-29T22:30:01.123Z" */
	char *user, *host, *token;  /* who; NULL when absent */
	char *action, *key_label, *key_id, *key_version, *result;
	char *reason;               /* digests */
	hw_envelope_pair *context;
	size_t ncontext;
	char *prev;
	uint64_t attempt;           /* an outcome: the seq of its attempt; else 0 */
} hw_audit_entry;

/* line without its newline; at most 64 KiB. */
HW_NODISCARD hw_err hw_audit_entry_parse(const uint8_t *line, size_t len,
                                         hw_audit_entry **out);
void hw_audit_entry_free(hw_audit_entry *e);

/* ------------------------------------------------------------------ */
/* TDE keyrings: the table keys of a database (id -> versions of       */
/* 32-byte keys), each wrapped by a master key (an AES-256 envelope    */
/* key) with AES-GCM inside the HSM. What a database's key-management  */
/* plugin calls. Format and guarantees: README, "TDE master keys".     */

typedef struct hw_tde_keyring hw_tde_keyring;

#define HW_TDE_KEY_LEN 32

/*
 * Reads a keyring file and checks it with the master key it names (which
 * must be on ctx's token): an altered, truncated or re-ordered file, or
 * one whose entries were swapped between slots, fails (HW_ERR_INTEGRITY
 * or HW_ERR_FORMAT). ctx must outlive the keyring.
 */
HW_NODISCARD hw_err hw_tde_keyring_open(hw_ctx *ctx, const char *path, hw_tde_keyring **out);
/*
 * Table key `id`, version `version` (0: the latest), unwrapped in the
 * HSM, in plaintext: the caller wipes `out` after use (OPENSSL_cleanse).
 * HW_ERR_KEY_NOT_FOUND for an unknown id or version.
 */
HW_NODISCARD hw_err hw_tde_key_get(hw_tde_keyring *kr, uint32_t id, uint32_t version,
                                   uint8_t out[HW_TDE_KEY_LEN], uint32_t *version_out);
void hw_tde_keyring_close(hw_tde_keyring *kr);

/* Administration: a new, empty keyring in memory for `master`. */
HW_NODISCARD hw_err hw_tde_keyring_create(hw_key *master, hw_tde_keyring **out);
/* A new table key `id` (version 1), or a new version of an existing one. */
HW_NODISCARD hw_err hw_tde_keyring_add(hw_tde_keyring *kr, uint32_t id, uint32_t *version_out);
/* Re-wraps every table key under new_master (an AES-256 envelope key);
 * the plaintext keys stay the same. All or nothing, in memory. */
HW_NODISCARD hw_err hw_tde_keyring_rekey(hw_tde_keyring *kr, hw_key *new_master);
/*
 * Writes the keyring atomically (mode 0600): an anonymous O_TMPFILE in the
 * same directory, fsync, linked and renamed over path, fsync of the
 * directory. A crash at any point leaves the old file or the new one and
 * no temporary file visible (without O_TMPFILE, a named
 * ".hsmwrap-tmp.XXXXXX" that the next save into that directory removes).
 * A path that is a symbolic link is refused (HW_ERR_INVALID_ARG), the link
 * and its target left untouched. Concurrent writers must be serialised by
 * the caller (the CLI locks PATH.lock).
 */
HW_NODISCARD hw_err hw_tde_keyring_save(hw_tde_keyring *kr, const char *path);
/*
 * For a database that keeps its keyring open while it runs: under
 * PATH.lock, checks that the file is still the generation kr read or last
 * wrote (else HW_ERR_INTEGRITY: another process changed it, nothing is
 * overwritten), adds a version of table key `id` (version 1 of a new id)
 * and saves. If the save fails the new version is dropped from kr again,
 * so that no key is used that a crash would lose.
 */
HW_NODISCARD hw_err hw_tde_keyring_add_save(hw_tde_keyring *kr, const char *path, uint32_t id,
                                            uint32_t *version_out);
/*
 * A new, empty keyring for the master key labelled master_label (an
 * AES-256 envelope key on ctx's token), saved at path, which must not
 * exist (HW_ERR_IO); HW_ERR_KEY_NOT_FOUND without that key.
 */
HW_NODISCARD hw_err hw_tde_keyring_create_file(hw_ctx *ctx, const char *master_label,
                                               const char *path, hw_tde_keyring **out);

typedef struct {
	uint32_t id, version;
	uint64_t created;           /* Unix time */
} hw_tde_entry;

typedef struct {
	char keyring_id[33];
	char master_label[129];
	char master_id[129];        /* CKA_ID, hex */
	char master_kcv[7];         /* AES-ECB of a zero block, 3 bytes hex; "" if unknown */
	uint32_t generation;        /* incremented by every save */
	uint64_t created;
	hw_tde_entry *entries;      /* sorted by id, then version */
	size_t nentries;
} hw_tde_keyring_info;

HW_NODISCARD hw_err hw_tde_keyring_info_get(const hw_tde_keyring *kr, hw_tde_keyring_info **out);
/* Parses a keyring file without the HSM: structure only, no integrity. */
HW_NODISCARD hw_err hw_tde_keyring_inspect(const uint8_t *buf, size_t len,
                                           hw_tde_keyring_info **out);
void hw_tde_keyring_info_free(hw_tde_keyring_info *info);

/* ------------------------------------------------------------------ */
/* Key lifecycle: versions, rotation, states, tags. The metadata lives */
/* on the token next to the keys (one CKO_DATA object per logical key, */
/* CKA_APPLICATION "hsmwrap-key-meta", CKA_LABEL = the key's label).   */
/*                                                                      */
/* A logical key L has versions 1..N, each its own key object: version */
/* 1 is labelled L, version n >= 2 "L#n" with its own CKA_ID. Finding  */
/* a key by its plain label gives the current version (the one that   */
/* encrypts, wraps, signs); a version label ("L#2"), id:HEX or a       */
/* pkcs11: URI names exactly that object (how blobs and messages find  */
/* the version they were made with). A key without a metadata object   */
/* (made before hsmwrap had them) is version 1, enabled.               */
/* The state is enforced by the library at every use of a key: a       */
/* disabled key fails with HW_ERR_KEY_DISABLED, one pending deletion   */
/* with HW_ERR_KEY_PENDING_DELETION, and one whose deletion window has */
/* passed is destroyed (all versions and metadata) and not found. A    */
/* process holding an hw_key sees a state change within a second.      */

typedef enum {
	HW_KEY_STATE_ENABLED = 1,
	HW_KEY_STATE_DISABLED = 2,
	HW_KEY_STATE_PENDING_DELETION = 3,
} hw_key_state;

#define HW_DELETION_MIN_DAYS 7u
#define HW_DELETION_MAX_DAYS 30u
#define HW_DELETION_DEFAULT_DAYS 30u
/* Limits of the metadata (the same as AWS KMS's where it has one). */
#define HW_META_MAX_VERSIONS 1000u
#define HW_META_MAX_TAGS 50u
#define HW_META_MAX_TAG_KEY 128u
#define HW_META_MAX_TAG_VALUE 256u
#define HW_META_MAX_DESCRIPTION 8192u

/* "enabled", "disabled", "pending-deletion". */
const char *hw_key_state_name(hw_key_state s);
HW_NODISCARD hw_err hw_key_state_parse(const char *s, hw_key_state *out);

typedef struct {
	unsigned number;            /* 1, 2, ... */
	char label[129];            /* CKA_LABEL of the version's key object ("" if unknown) */
	char id_hex[129];           /* its CKA_ID */
	int64_t created;            /* Unix time; 0 if unknown */
} hw_key_version_info;

typedef struct {
	char *key, *value;          /* NUL-terminated UTF-8 */
} hw_key_tag;

typedef struct {
	char label[129];            /* the logical key's label */
	int stored;                 /* 0: no metadata object, these are the defaults */
	hw_key_state state;
	int64_t deletion_date;      /* pending deletion: destroyed from then on; else 0 */
	hw_purpose purpose;
	int64_t created;            /* Unix time; 0 if unknown */
	unsigned current;           /* the version that encrypts, wraps, signs */
	hw_key_version_info *versions; /* ascending by number */
	size_t nversions;
	hw_key_tag *tags;           /* sorted by key, keys unique */
	size_t ntags;
	char *description;          /* "" if none */
	/* Bumped at every change: the token keeps the newest object if an
	 * update was interrupted between writing the new and removing the old. */
	uint32_t serial;
} hw_key_meta;

/* The logical key's label, and the version this key object is (1..). */
const char *hw_key_logical_label(hw_key *key);
unsigned hw_key_version(hw_key *key);
/* Metadata of the logical key `key` belongs to. Free with hw_key_meta_free(). */
HW_NODISCARD hw_err hw_key_meta_get(hw_key *key, hw_key_meta **out);
/* Every metadata object on the token (keys without one are not listed). */
HW_NODISCARD hw_err hw_key_meta_list(hw_ctx *ctx, hw_key_meta ***out, size_t *n);
void hw_key_meta_free(hw_key_meta *m);
void hw_key_meta_list_free(hw_key_meta **v, size_t n);
/*
 * The CKA_VALUE encoding of the metadata object (no HSM needed):
 * decode checks every bound and the canonical form (HW_ERR_FORMAT);
 * labels of versions and of the key are left empty.
 */
HW_NODISCARD hw_err hw_key_meta_decode(const uint8_t *in, size_t len, hw_key_meta **out);
HW_NODISCARD hw_err hw_key_meta_encode(const hw_key_meta *m, uint8_t **out, size_t *len);

/*
 * New version of the logical key: generated in the HSM with the same
 * type, purpose and attributes, made current. The key must be enabled.
 * *new_version (may be NULL) receives the new version's key.
 */
HW_NODISCARD hw_err hw_key_rotate(hw_key *key, hw_key **new_version);
/* HW_KEY_STATE_ENABLED or HW_KEY_STATE_DISABLED (not while pending deletion). */
HW_NODISCARD hw_err hw_key_set_state(hw_key *key, hw_key_state state);
/*
 * Pending deletion for `days` (HW_DELETION_MIN_DAYS..MAX): every use fails,
 * and from *when (may be NULL) on the key is destroyed by hw_key_purge()
 * or its next use. Cancelling leaves the key disabled (as in AWS KMS).
 */
HW_NODISCARD hw_err hw_key_schedule_deletion(hw_key *key, unsigned days, int64_t *when);
HW_NODISCARD hw_err hw_key_cancel_deletion(hw_key *key);
/*
 * Destroys every logical key whose deletion window has passed (label
 * NULL), or the one named label (which must be pending deletion, and its
 * window over: else HW_ERR_INVALID_ARG or HW_ERR_KEY_PENDING_DELETION):
 * all versions and the metadata. *purged (may be NULL) gets the labels
 * destroyed; free with hw_strv_free().
 */
HW_NODISCARD hw_err hw_key_purge(hw_ctx *ctx, const char *label, char ***purged, size_t *n);
/*
 * Destroys the logical key `key` belongs to at once: every version and the
 * metadata (hw_key_destroy destroys one version object and removes it
 * from the metadata; if it was the current one, the newest left is).
 */
HW_NODISCARD hw_err hw_key_destroy_all(hw_key *key);
/* Sets tags ("k=v" each) and removes tags (by key); either list may be empty. */
HW_NODISCARD hw_err hw_key_update_tags(hw_key *key, const char *const *set, size_t nset,
                                       const char *const *remove, size_t nremove);
HW_NODISCARD hw_err hw_key_set_description(hw_key *key, const char *text);

/* ------------------------------------------------------------------ */
/* Key generation options, import (BYOK, custodian components), and   */
/* M-of-N backup and restore.                                          */

enum {
	/*
	 * The key may be backed up: CKA_SENSITIVE, CKA_EXTRACTABLE and
	 * CKA_WRAP_WITH_TRUSTED are set, so only a wrapping key the security
	 * officer marked CKA_TRUSTED can ever wrap it, and its material never
	 * leaves the HSM in clear. Without it keys are not extractable at all.
	 */
	HW_KEYGEN_BACKUPABLE = 1u << 0,
	/*
	 * RSA `decrypt` keys only: also allow raw RSA (CKM_RSA_X_509), so a
	 * token without RSA-OAEP over SHA-2 (SoftHSMv2 has only SHA-1) can
	 * still unwrap OAEP-SHA256 data keys: the HSM does the RSA step, the
	 * host checks the OAEP padding. Whoever holds the PIN can then compute
	 * raw RSA with the key, so it is a ceremony's explicit choice, for
	 * tokens that need it; without it the key allows RSA-OAEP only.
	 */
	HW_KEYGEN_RAW_RSA = 1u << 1,
};

/* hw_key_generate with HW_KEYGEN_* flags (0 = hw_key_generate). */
HW_NODISCARD hw_err hw_key_generate_opts(hw_ctx *ctx, const char *label,
                                         hw_key_type type, hw_purpose purpose,
                                         unsigned flags, hw_key **out);

/*
 * BYOK import key: an RSA-3072 pair on the token whose private half can
 * only unwrap (CKA_UNWRAP, not CKA_DECRYPT, sensitive, not extractable);
 * the public half (CKA_WRAP) is a public token object. Export its public
 * key with hw_key_public_der().
 */
HW_NODISCARD hw_err hw_import_key_generate(hw_ctx *ctx, const char *label, hw_key **out);

typedef enum {
	/* RSAES-OAEP, SHA-256, MGF1-SHA-256, empty label, over the key bytes. */
	HW_IMPORT_OAEP_SHA256 = 1,
	/*
	 * RSA-AES key wrap (PKCS#11 CKM_RSA_AES_KEY_WRAP, KMS's
	 * RSA_AES_KEY_WRAP_SHA_256): RSA-OAEP-SHA-256 of a temporary AES key,
	 * followed by the target key wrapped with it by AES-KWP (RFC 5649).
	 */
	HW_IMPORT_RSA_AES_KWP = 2,
	/*
	 * The same with SHA-1 and MGF1-SHA-1 in OAEP (KMS's RSAES_OAEP_SHA_1,
	 * RSA_AES_KEY_WRAP_SHA_1), for tokens whose C_UnwrapKey accepts no
	 * other OAEP hash: SoftHSMv2 among them. OAEP with SHA-1 is not broken.
	 */
	HW_IMPORT_OAEP_SHA1 = 3,
	HW_IMPORT_RSA_AES_KWP_SHA1 = 4,
} hw_import_padding;

HW_NODISCARD hw_err hw_import_padding_parse(const char *s, hw_import_padding *p);
const char *hw_import_padding_name(hw_import_padding p);

/*
 * Unwraps key material wrapped to an import key (see above) into a new
 * token key `label` of the given type (aes256) and purpose, with the same
 * attributes hw_key_generate gives, never extractable. kcv_hex (may be
 * NULL) receives its KCV computed inside the token (AES-ECB of a zero
 * block, 6 hex digits; "" if the token cannot tell). Fails with
 * HW_ERR_INTEGRITY if the wrapping does not decrypt, HW_ERR_KEY_EXISTS if
 * the label is taken.
 */
HW_NODISCARD hw_err hw_key_import_wrapped(hw_ctx *ctx, hw_key *import_key,
                                          const char *label, hw_key_type type,
                                          hw_purpose purpose, hw_import_padding padding,
                                          const uint8_t *wrapped, size_t len,
                                          hw_key **out, char kcv_hex[7]);
/*
 * Imports key material held by the caller (e.g. custodian components
 * combined in process memory) as a new non-extractable token key. Weaker
 * than generation or combination inside the HSM: the caller saw the key.
 * An all-zero value is refused. kcv_hex (may be NULL) receives the KCV as
 * the token computes it ("" if it cannot).
 */
HW_NODISCARD hw_err hw_key_import_value(hw_ctx *ctx, const char *label, hw_key_type type,
                                        hw_purpose purpose, const uint8_t *value,
                                        size_t len, hw_key **out, char kcv_hex[7]);
/* KCV of an AES key computed on the host: AES-ECB(key, 0^128), first 3 bytes. */
HW_NODISCARD hw_err hw_kcv_aes(const uint8_t *key, size_t len, uint8_t kcv[3]);

/* Shamir's secret sharing of a 32-byte backup key over GF(2^8). */
#define HW_BACKUP_ID_LEN 16
#define HW_SHARE_LEN 32
#define HW_SHARES_MAX 255

typedef struct {
	uint8_t backup_id[HW_BACKUP_ID_LEN];
	unsigned index;             /* x coordinate, 1..255 */
	unsigned threshold, custodians;
	uint8_t share[HW_SHARE_LEN];
} hw_backup_share;

/*
 * Share files are text:
 *   hsmwrap-backup-share v1
 *   backup-id: 32 hex digits
 *   index: I
 *   threshold: M
 *   custodians: N
 *   share: 64 hex digits
 *   check: 8 hex digits (truncated SHA-256, catches transcription errors)
 * Parsing fails with HW_ERR_FORMAT (malformed) or HW_ERR_INTEGRITY (check
 * value mismatch). *out is wiped by the caller (it is secret).
 */
HW_NODISCARD hw_err hw_backup_share_parse(const char *text, size_t len,
                                          hw_backup_share *out);
/* Free *text with hw_free_secret(*text, *len). */
HW_NODISCARD hw_err hw_backup_share_format(const hw_backup_share *s, char **text,
                                           size_t *len);

typedef struct {
	char label[129];
	char id_hex[129];
	char type_name[16];         /* "aes256", "rsa3072", ... */
	char kcv[65];               /* as hw_key_info: AES KCV or SPKI fingerprint */
	char kcv_alg[32];
	unsigned nmeta;             /* metadata (CKO_DATA) objects carried */
} hw_backup_entry;

typedef struct {
	unsigned version;
	uint8_t backup_id[HW_BACKUP_ID_LEN];
	unsigned threshold, custodians;
	uint64_t created;           /* Unix time */
	size_t nentries;
	hw_backup_entry *entries;
} hw_backup_info;

/*
 * Structure of a backup file, without authenticating it (no shares
 * needed): for listings and for the fuzzer. Free with hw_backup_info_free.
 */
HW_NODISCARD hw_err hw_backup_inspect(const uint8_t *file, size_t len, hw_backup_info **out);
void hw_backup_info_free(hw_backup_info *info);

/*
 * Backs up keys (each created with HW_KEYGEN_BACKUPABLE) of ctx's token.
 * A fresh 256-bit backup key is drawn from the token's RNG; the security
 * officer (PIN from so_pin_source) imports it as a trusted, wrap-only
 * session object, the user wraps every key with AES-KWP under it, and it
 * is destroyed. The file records each key's label, id, attributes,
 * public half (pairs), KCV and metadata objects, authenticated by
 * HMAC-SHA-256 under a key derived from the backup key. The backup key is
 * split into `custodians` shares, any `threshold` of which rebuild it;
 * shares[0..custodians-1] are written to *shares (wipe and hw_free them).
 * The user login of ctx is replaced by an SO login for a moment: do not
 * use the same token from other threads of the process meanwhile.
 */
HW_NODISCARD hw_err hw_backup_create(hw_ctx *ctx, const char *so_pin_source,
                                     hw_key *const *keys, size_t nkeys,
                                     unsigned custodians, unsigned threshold,
                                     uint8_t **file, size_t *filelen,
                                     hw_backup_share **shares, hw_backup_info **info);

enum {
	/* Restored keys stay backup-able (extractable, wrap-with-trusted). */
	HW_RESTORE_BACKUPABLE = 1u << 0,
};

/*
 * Restores every key of a backup onto ctx's token. Nothing is created
 * unless all is well: the shares must be from this backup, at least its
 * threshold, and rebuild its key (HW_ERR_INTEGRITY otherwise); the file
 * must authenticate (HW_ERR_INTEGRITY); no label may exist on the token
 * yet (HW_ERR_KEY_EXISTS). Keys are unwrapped sensitive and (without
 * HW_RESTORE_BACKUPABLE) not extractable, with their labels, ids, usage
 * attributes and metadata, and their KCVs are compared with the
 * recorded ones. On any failure whatever was created is destroyed.
 */
HW_NODISCARD hw_err hw_backup_restore(hw_ctx *ctx, const uint8_t *file, size_t len,
                                      const hw_backup_share *shares, size_t nshares,
                                      unsigned flags, hw_backup_info **info);

/* Library version string, e.g. "0.1.0". */
const char *hw_version(void);

#ifdef __cplusplus
}
#endif
#endif /* HSMWRAP_H */
