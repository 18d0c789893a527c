/*
 * Internal interfaces of libhsmwrap. Nothing here is exported.
 *
 * Sections follow the layers bottom up (doc/ARCHITECTURE.md): base/,
 * format/, token/, key/, ops/, lifecycle/. A file calls only files of its
 * own layer or of the layers below (tests/check-layers.py checks it).
 */
#ifndef HW_INTERNAL_H
#define HW_INTERNAL_H

#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "hsmwrap.h"
#include "base/buf.h"

#define HW_EXPORT __attribute__((visibility("default")))

/* PKCS#11 3.0 names RFC 5649 wrapping CKM_AES_KEY_WRAP_KWP; v2.40 tokens
 * (SoftHSMv2) implement the same algorithm as CKM_AES_KEY_WRAP_PAD. */
#ifndef CKM_AES_KEY_WRAP_KWP
#define CKM_AES_KEY_WRAP_KWP 0x210bUL
#endif

#ifndef CKR_AEAD_DECRYPT_FAILED
#define CKR_AEAD_DECRYPT_FAILED 0x35UL
#endif

/* An op callback returns this after recording an hw_err with hw_op_fail(). */
#define HW_CKR_HWERR (CKR_VENDOR_DEFINED | 0x48570001UL)
CK_RV hw_op_fail(hw_err err);

#define HW_PIN_MAX 256
#define HW_ID_LEN 16

/* ---- base/text.c ---- */
/* Lower-case hex of in[0..len); out holds 2 * len + 1 bytes. */
void hw_hex(const uint8_t *in, size_t len, char *out);
/* Exactly two hex digits (either case) per byte, 1 to max bytes; 0 or -1. */
int hw_unhex(const char *s, uint8_t *out, size_t max, size_t *len);
/* "YYYY-MM-DDTHH:MM:SSZ" (or the number if it is no date). */
void hw_fmt_utc(int64_t t, char *out, size_t outsz);

/* ---- base/secmem.c: hw_secmem_alloc/free, public (hsmwrap.h) ---- */

/* ---- base/err.c ---- */
/* Records the failure for hw_last_ckrv()/hw_last_detail() and returns err. */
hw_err hw_fail(hw_err err, unsigned long ckrv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Maps a CK_RV to the hw_err an administrator should see. */
hw_err hw_err_from_ckrv(CK_RV rv);
/* hw_fail(hw_err_from_ckrv(rv), rv, "what"): the common case. */
hw_err hw_fail_ck(CK_RV rv, const char *what);
void hw_clear_error(void);

/* ---- base/file.c ---- */
/* write(2) until all n bytes are out (EINTR retried); HW_ERR_IO, errno set. */
hw_err hw_write_all(int fd, const void *data, size_t n);
/*
 * Replaces path with data[0..len) through an hw_file (hsmwrap.h): the old
 * file or the new one whatever happens; a symbolic link is refused.
 * *replaced (may be NULL) tells whether path is the new content, which it
 * can be on failure too (the directory sync failed).
 */
hw_err hw_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode,
                            bool *replaced);
/* Test hook: SIGKILLs the process at its N-th call when
 * HSMWRAP_TEST_CRASH_AT=N (every step of an atomic write is one). */
void hw_crash_point(void);

/* ---- base/shamir.c (pure: no HSM, no error state) ---- */
uint8_t hw_gf256_mul(uint8_t a, uint8_t b);
uint8_t hw_gf256_inv(uint8_t a);
/*
 * Splits secret[0..len) into n shares (share i at shares[i*len], for
 * x = i+1) any m of which rebuild it; coeffs holds len*(m-1) random bytes
 * (byte b's coefficient of x^k at coeffs[b*(m-1)+k-1]). 0 or -1.
 */
int hw_shamir_split(const uint8_t *secret, size_t len, unsigned n, unsigned m,
                    const uint8_t *coeffs, uint8_t *shares);
/* f(0) from k points (xs[j], ys[j][0..len)); x distinct and non-zero. 0 or -1. */
int hw_shamir_combine(const uint8_t *xs, const uint8_t *const *ys, size_t k, size_t len,
                      uint8_t *secret);

/* ---- format/blob.c ---- */
typedef struct {
	hw_blob_kind kind;
	unsigned version;
	const uint8_t *key_id;
	size_t key_id_len;
	const uint8_t *label;
	size_t label_len;
	const uint8_t *iv;
	size_t iv_len;
	const uint8_t *payload;     /* ciphertext || tag */
	size_t payload_len;
	const uint8_t *header;      /* bytes bound as AAD */
	size_t header_len;
} hw_blob;

hw_err hw_blob_parse(const uint8_t *in, size_t len, hw_blob *b);
/*
 * Writing a blob: the header (the AAD-bound prefix, hw_blob_header_len()
 * bytes), then room for the IV and the payload, which the token fills in
 * place. Reserve the whole size first so the pointers stay valid.
 */
size_t hw_blob_header_len(const hw_key *key);
void hw_blob_put_header(hw_wbuf *w, hw_blob_kind kind, const hw_key *key);
void hw_blob_put_body(hw_wbuf *w, size_t iv_len, size_t payload_len, uint8_t **iv,
                      uint8_t **payload);
/* Largest blob hsmwrap writes or reads. */
#define HW_BLOB_MAX (HW_DIRECT_MAX + 1024)

/* ---- format/keymeta.c: the lifecycle metadata record ---- */
#define HW_META_APP "hsmwrap-key-meta"
#define HW_META_VALUE_MAX (64u * 1024u)
/* "L#n" with n >= 2: *baselen = strlen(L). */
bool hw_label_is_version(const char *label, size_t *baselen, unsigned *n);
/* The label of version n of key base: base itself for n <= 1, else "base#n". */
void hw_version_label(const char *base, unsigned n, char *out, size_t outsz);
/* 1 to HW_META_MAX_TAG_KEY bytes, no NUL, no '='. */
bool hw_meta_tag_key_ok(const uint8_t *p, size_t n);

/* ---- token/module.c ---- */
typedef struct hw_module hw_module;
struct hw_module {
	char *path;                 /* file actually loaded */
	char *init_args;            /* C_Initialize's pReserved, NULL if none */
	CK_FUNCTION_LIST *fl;
	unsigned refs;
	unsigned long init_gen;     /* fork generation of our C_Initialize */
	bool we_initialized;        /* false: someone else in-process did */
	pthread_mutex_t lock;
	hw_module *next;
};

/* init_args (may be NULL): pReserved of C_Initialize; overrides the
 * x-init-reserved of a module registered with p11-kit. */
hw_err hw_module_acquire(const char *name_or_path, const char *init_args, hw_module **out);
void hw_module_release(hw_module *m);
/* Makes sure the module is initialised in this process (after fork too). */
hw_err hw_module_ensure(hw_module *m);
/* Finalize and initialise again when only one context, which has no
 * session yet, uses the module; false when it did not. */
bool hw_module_restart(hw_module *m);
/* Incremented in every child after fork(). */
unsigned long hw_fork_generation(void);
/* Bracket every call into a module (never nested): fork waits for them. */
void hw_calls_enter(void);
void hw_calls_leave(void);
/* RAND_bytes, fork-safe. */
hw_err hw_random(uint8_t *buf, size_t len);
/* Registers ctx locks with the fork handlers. */
void hw_fork_register(pthread_mutex_t *lock);
void hw_fork_unregister(pthread_mutex_t *lock);

/* ---- token/caps.c ---- */
/* HW_CAP_* from a mechanism list and the token's known quirks. */
unsigned hw_caps_of(const CK_MECHANISM_TYPE *m, size_t n, const CK_TOKEN_INFO *ti);
/* What cap bit i is, for error messages; NULL past the last. */
const char *hw_cap_needs(unsigned i);
/* ctx.c: */
/* HW_OK if the selected token has every HW_CAP_* bit of needs, else
 * HW_ERR_UNSUPPORTED naming `what`, the token and the first one missing. */
hw_err hw_ctx_require(hw_ctx *ctx, unsigned needs, const char *what);
/* The token (already selected) has cap. */
bool hw_ctx_can(hw_ctx *ctx, unsigned cap);

/* ---- token/tlock.c ---- */
/* Advisory lock of the token between processes (flock), around
 * read-modify-write updates; nests within a thread. */
hw_err hw_token_lock(hw_ctx *ctx);
void hw_token_unlock(void);
/* module.c: inter-process lock around one module call that reads (shared) or
 * rewrites (exclusive) the token's own record; -1 if it could not be taken. */
int hw_module_io_lock(hw_module *m, bool exclusive);
void hw_module_io_unlock(int fd);

/* ---- token/pin.c ---- */
/* Reads a PIN from "file:", "env:", "prompt" (via cb); NUL-terminated. */
hw_err hw_pin_read(const char *source, const char *what, hw_pin_cb cb, void *cbarg,
                   char *pin, size_t max, size_t *len);

/* ---- token/ctx.c ---- */
struct hw_ctx {
	pthread_mutex_t lock;       /* guards everything below */
	char *module_spec;
	char *module_init_args;
	char *token_spec;
	char *token_shown;          /* token_spec without PINs, for messages */
	char *pin_source;
	hw_pin_cb pin_cb;
	void *pin_cb_arg;
	unsigned pool_max;

	hw_module *mod;
	CK_FUNCTION_LIST *fl;       /* == mod->fl */
	P11KitUri *token_uri;
	char token_uri_str[512];
	CK_SLOT_ID slot;
	bool have_slot;
	CK_TOKEN_INFO tinfo;

	/* Kept for re-login after fork or a lost login; wiped on free.
	 * HW_PIN_MAX bytes of hw_secmem (not dumped, locked). */
	char *pin;
	size_t pin_len;
	bool have_pin;

	unsigned long gen;          /* fork generation sessions belong to */
	/* Bumped when the token was removed (or failed so that its sessions
	 * are gone): sessions and object handles of an older epoch are stale. */
	unsigned long epoch;
	/* Bumped with epoch and at every C_Login: some tokens (SoftHSMv2)
	 * invalidate private object handles at logout, so handles found
	 * before a re-login are stale too. */
	unsigned long key_epoch;
	bool token_lost;            /* re-selecting after a removal */
	bool logged_in;
	CK_SESSION_HANDLE *idle;
	size_t nidle, idle_cap;

	/* Mechanisms of the token, read once. */
	CK_MECHANISM_TYPE *mechs;
	size_t nmechs;
	CK_MECHANISM_TYPE kwp_mech;
	unsigned caps;              /* HW_CAP_* of the token (caps.c) */
};

/* One operation on a session; must be safe to run again from scratch. */
typedef CK_RV (*hw_op_fn)(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg);

/*
 * Runs op on a pooled, logged-in session, retrying a bounded number of
 * times (a fork is handled first):
 *  - a lost session (CKR_SESSION_HANDLE_INVALID/CLOSED) or one left busy
 *    (CKR_OPERATION_ACTIVE) is replaced, twice at most;
 *  - a lost login (CKR_USER_NOT_LOGGED_IN) is re-established once;
 *  - plausibly transient failures (CKR_DEVICE_ERROR, CKR_FUNCTION_FAILED)
 *    are retried twice, after 10 and 50 ms;
 *  - a removed token (CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT) drops
 *    every session and login, selects the token again and retries once;
 *    if it is still gone the result is HW_ERR_DEVICE.
 * A failed C_Login is never retried (each try counts towards lockout).
 */
hw_err hw_ctx_run(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what);
/* Same as hw_ctx_run without requiring login (public objects, token info). */
hw_err hw_ctx_run_nologin(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what);
/*
 * For ops that are not idempotent (creating or destroying token objects):
 * after an error that may have come once the op took effect (transient
 * errors, removal) it is not run again, so a key is never created twice.
 * Session and login losses are still recovered: the token refuses those
 * calls before doing anything.
 */
hw_err hw_ctx_run_once(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what);
bool hw_ctx_has_mech(hw_ctx *ctx, CK_MECHANISM_TYPE m);
/* Re-initialises after fork and selects the token (takes the call lock). */
hw_err hw_ctx_ready(hw_ctx *ctx);
/* CKR_USER_NOT_LOGGED_IN if the session is public though a login was
 * expected, else CKR_OK: a logged-out token does not fail searches, it
 * just finds no private objects. */
CK_RV hw_session_check_login(hw_ctx *ctx, CK_SESSION_HANDLE s);
/* For a key with CKA_ALWAYS_AUTHENTICATE, after C_SignInit/C_DecryptInit:
 * the context-specific login (the user PIN again) that lets the
 * operation run. An op calls it through hw_key_auth_ck. */
CK_RV hw_ctx_login_context(hw_ctx *ctx, CK_SESSION_HANDLE s);
/* An object or key handle the token no longer knows. */
bool hw_is_stale_handle(CK_RV rv);
/* ctx->logged_in read under the context lock (ops run without it). */
bool hw_ctx_logged_in(hw_ctx *ctx);

/* ---- key/key.c: key objects on the token ---- */
struct hw_key {
	hw_ctx *ctx;
	char label[129];
	uint8_t id[64];
	size_t id_len;
	CK_OBJECT_CLASS cls;        /* CKO_SECRET_KEY or CKO_PRIVATE_KEY */
	CK_KEY_TYPE ktype;
	/* Object handles are only valid in the process generation that found them. */
	pthread_mutex_t lock;
	unsigned long gen, epoch;   /* ctx->gen, ctx->key_epoch when handle was found */
	CK_OBJECT_HANDLE handle;
	CK_OBJECT_HANDLE pub_handle; /* pairs only; CK_INVALID_HANDLE if none */
	/* Usage flags as read from the token. */
	bool can_encrypt, can_decrypt, can_wrap, can_unwrap, can_sign;
	/* CKA_ALWAYS_AUTHENTICATE: each operation needs its own login (PIV
	 * signature keys, HSM keys an officer wants guarded per use). */
	bool always_auth;
	/* Lifecycle (meta.c), under ctx->lock: the logical key this object
	 * is a version of, and its state as last read from the token
	 * (state_ms: monotonic ms of that read, 0 = not read yet). */
	char base[129];
	unsigned version;
	hw_key_state state;
	int64_t deletion_date;
	uint64_t state_ms;
};

/*
 * Current handle of key in this process (re-found after fork, token
 * removal or re-login). Returns CKR_OK, the module's CK_RV, or
 * HW_CKR_HWERR after hw_op_fail(): ops return it as is, so the op runner
 * can recover (a lost session or login, a transient failure).
 */
CK_RV hw_key_handle_ck(hw_key *key, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h);
/* After an operation's C_*Init with key: CKR_OK, or the result of the
 * context-specific login the key demands (CKA_ALWAYS_AUTHENTICATE). */
static inline CK_RV
hw_key_auth_ck(hw_key *key, CK_SESSION_HANDLE s)
{
	return key->always_auth ? hw_ctx_login_context(key->ctx, s) : CKR_OK;
}
/* Older form: a module error becomes an hw_err the runner cannot recover
 * from. Prefer hw_key_handle_ck in new ops. */
hw_err hw_key_handle(hw_key *key, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h);
/*
 * What a key name (a label, "id:HEX" or a pkcs11: URI) asks the token
 * for: the attributes to match and the class, and for URIs the parsed URI
 * (its token attributes must match the selected token). A pure parser:
 * tests/fuzz-keyspec.c fuzzes it. attrs may point into spec and ks->uri.
 */
typedef struct {
	CK_ATTRIBUTE attrs[2];
	CK_ULONG nattrs;
	CK_OBJECT_CLASS only;       /* (CK_OBJECT_CLASS)-1: any key class */
	bool by_label;              /* a plain label: the logical key */
	uint8_t id[64];
	size_t id_len;
	P11KitUri *uri;
} hw_key_spec;

hw_err hw_key_spec_parse(const char *spec, hw_key_spec *ks);
void hw_key_spec_free(hw_key_spec *ks);
/* RSA-PSS-only key types (no decryption). */
int hw_key_type_is_pss(hw_key_type t);
/* Find a secret/private key by CKA_ID, for blobs that name their key. */
hw_err hw_key_find_by_id(hw_ctx *ctx, const uint8_t *id, size_t id_len, hw_key **out);
/* The key object `spec` (a label, "id:HEX" or a URI) names, before
 * key/state.c identifies it; *by_label: a plain label named it. */
hw_err hw_key_find_object(hw_ctx *ctx, const char *spec, bool *by_label, hw_key **out);
/* A key object by its exact CKA_LABEL, not identified. */
hw_err hw_key_find_label_raw(hw_ctx *ctx, const char *label, hw_key **out);
/* The handle without the lifecycle check: for reading attributes and destroying. */
CK_RV hw_key_handle_raw(hw_key *key, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h);
/* Destroys the key object (and its public half): nothing else. */
hw_err hw_key_destroy_object(hw_key *key);

/*
 * Key object generation without the label checks of hw_key_generate (key
 * versions, meta.c). id gets the fresh CKA_ID.
 */
hw_err hw_key_gen_object(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose,
                         unsigned flags, uint8_t id[HW_ID_LEN], hw_key **out);
/* Builds a hw_key for a key object without reading its metadata. */
hw_err hw_key_load(hw_ctx *ctx, CK_OBJECT_HANDLE h, hw_key **out);

/* ---- key/state.c: the metadata record on the token, versions, state ---- */
/* Before each use of a key (hw_key_handle_ck): its lifecycle state. */
CK_RV hw_key_state_check(hw_key *key, CK_SESSION_HANDLE s);
/*
 * After a key object was found: which logical key and version it is,
 * its state; a key past its deletion window is destroyed here
 * (HW_ERR_KEY_NOT_FOUND). With `current`, a version-1 object found by
 * its plain label is replaced by the current version (*key changes).
 */
hw_err hw_key_identify(hw_key **key, bool current);
/* hw_key_identify once per hw_key (base and version known afterwards). */
hw_err hw_key_ensure_identified(hw_key *key);
/* A key object by its exact CKA_LABEL (no current-version redirect), identified. */
hw_err hw_key_find_label_exact(hw_ctx *ctx, const char *label, hw_key **out);
/*
 * hw_envelope_decrypt with allowed keys: the EDK names `name`, which is
 * another version of allowed key `key`'s logical key: that version.
 */
hw_err hw_key_find_sibling(hw_key *key, const uint8_t *name, size_t nl, hw_key **out);
/* The metadata object of a new key (the caller destroys the key on failure). */
hw_err hw_meta_create(hw_key *key, hw_purpose purpose);
/* After the key object was destroyed: its version leaves the metadata. */
hw_err hw_meta_forget(hw_key *key);
/* Wall-clock seconds for deletion windows (HSMWRAP_TEST_NOW on SoftHSM). */
int64_t hw_meta_now(hw_ctx *ctx);
/* Handles of metadata objects (of `label`, or all if NULL); malloc'd. */
CK_RV hw_meta_find_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label, size_t limit,
                     CK_OBJECT_HANDLE **found, size_t *n);
/* Reads and decodes one metadata object. */
CK_RV hw_meta_load_s(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, hw_key_meta **out);
/* The record of `label` (*out NULL if none); older copies are removed. */
CK_RV hw_meta_read_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label, hw_key_meta **out,
                     CK_OBJECT_HANDLE *h);
/* Writes m with the next serial, replacing the object *h. */
CK_RV hw_meta_write_s(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h, hw_key_meta *m);
/* Destroys every key object of every version, then the metadata object. */
CK_RV hw_meta_purge_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const hw_key_meta *m,
                      CK_OBJECT_HANDLE mh);
/* What a key without a metadata object is: version 1, enabled. */
hw_key_meta *hw_meta_defaults(const hw_key *key);
/* The version of m that is this key object, or NULL. */
const hw_key_version_info *hw_meta_version_of(const hw_key_meta *m, const hw_key *key);
/* Remembers m's state in key for STATE_TTL_MS (m NULL: enabled). */
void hw_key_cache_state(hw_key *key, const hw_key_meta *m);
/* One change to a key's record, read-modify-write on one session. */
typedef hw_err (*hw_meta_fn)(hw_key_meta *m, void *arg, int64_t now);
hw_err hw_meta_update(hw_key *key, hw_meta_fn fn, void *fnarg, hw_key_meta **result);

/* ---- key/logical.c: keys as callers see them ---- */
/*
 * After a failure e that leaves the new key (or version) `what` useless:
 * destroys it and returns e, its detail saying whether that worked.
 */
hw_err hw_key_destroy_after(hw_key *key, hw_err e, const char *what);

/* ---- key/pkey.c ---- */
/* False for an unknown algorithm; else *md is OpenSSL's name of its hash,
 * NULL for EdDSA (the HSM signs the message itself). */
bool hw_sig_alg_md(hw_sig_alg alg, const char **md);

/* OAEP hash and MGF of an HW_RSA_PAD_OAEP_* padding (SHA-256 otherwise). */
void hw_rsa_oaep_params(hw_rsa_padding p, CK_MECHANISM_TYPE *hash, CK_RSA_PKCS_MGF_TYPE *mgf);

/* ---- ops/ops.c ---- */
/*
 * One AES-GCM operation (96-bit IV, 128-bit tag) with a key in the HSM,
 * shared by the blob format and the ESDK keyring. On encrypt a fresh IV
 * is drawn per attempt and the one the token used is left in iv. outlen
 * is the capacity of out on entry, the bytes written on success.
 */
typedef struct {
	hw_key *key;
	bool encrypt;
	bool gen_datakey;           /* draw the plaintext from the token RNG first */
	uint8_t iv[12];
	const uint8_t *aad;
	size_t aadlen;
	uint8_t *in;                /* plaintext (encrypt) or ct||tag (decrypt) */
	size_t inlen;
	uint8_t *out;
	CK_ULONG outlen;
} hw_gcm_arg;

CK_RV hw_op_gcm(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg);

/* ---- lifecycle/import.c ---- */
/*
 * Attributes of a new AES secret key of `purpose`, the ones key.c gives
 * generated keys (usage flags, one allowed mechanism, sensitive, private,
 * token), so imported and restored keys are indistinguishable in use.
 * Fills t (capacity HW_SECRET_TMPL_MAX) and returns the count; the
 * pointers in t point into *store, which must outlive t.
 */
#define HW_SECRET_TMPL_MAX 24
typedef struct {
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE kt;
	CK_BBOOL yes, no;
	CK_MECHANISM_TYPE allowed;
	uint8_t id[HW_ID_LEN];
} hw_tmpl_store;
CK_ULONG hw_secret_key_template(hw_ctx *ctx, hw_purpose purpose, const char *label,
                                bool extractable, hw_tmpl_store *store, CK_ATTRIBUTE *t);
/*
 * KCV (3 bytes) of a secret key h just unwrapped from blob with mechanism
 * m under unwrapper: CKA_CHECK_VALUE if the token set it, else computed
 * by a second, ECB-only session copy (and stored in CKA_CHECK_VALUE if the
 * token allows). *have is false when neither works.
 */
CK_RV hw_kcv_of_unwrapped(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                          CK_MECHANISM *m, CK_OBJECT_HANDLE unwrapper, const uint8_t *blob,
                          size_t len, uint8_t kcv[3], bool *have);
/* A CK_RV that means "this token cannot compute a KCV that way". */
bool hw_kcv_unsupported(CK_RV rv);
CK_RV hw_kcv_by_unwrap(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_MECHANISM *m,
                       CK_OBJECT_HANDLE unwrapper, const uint8_t *blob, size_t len,
                       uint8_t kcv[3]);
/* Fails with HW_ERR_KEY_EXISTS if a key (or pair) with this label exists. */
hw_err hw_label_free_check(hw_ctx *ctx, const char *label);

#endif
