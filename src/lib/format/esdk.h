/*
 * AWS Encryption SDK message format (internal). The format engine knows
 * nothing about HSMs: it is given a keyring as two callbacks (wrap the data
 * key into encrypted-data-key entries; recover the data key from them), so
 * that the same code serves the HSM keyring (ops/envelope-keyring.c), the known-answer
 * tests (a static data key) and the fuzzer.
 *
 * Reference: the public specification (awslabs/aws-encryption-sdk-
 * specification): message-header.md, message-body.md, message-footer.md,
 * algorithm-suites.md, encrypt.md, decrypt.md, structures.md.
 */
#ifndef HW_ESDK_H
#define HW_ESDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsmwrap.h"
#include "base/buf.h"

#define ESDK_IV_LEN 12
#define ESDK_TAG_LEN 16
#define ESDK_MAX_KEY_LEN 32
#define ESDK_MSGID_MAX 32
#define ESDK_COMMIT_LEN 32
/* GCM's limit for one invocation: 2^36 - 32 bytes (message-body.md). */
#define ESDK_NONFRAMED_MAX ((UINT64_C(1) << 36) - 32)
#define ESDK_PUBKEY_CTX_KEY "aws-crypto-public-key"
#define ESDK_RESERVED_PREFIX "aws-crypto-"

typedef enum { ESDK_KDF_IDENTITY, ESDK_KDF_HKDF, ESDK_KDF_COMMIT } esdk_kdf;

typedef struct {
	uint16_t id;
	uint8_t version;            /* message format version it belongs to */
	size_t key_len;             /* data key = encryption key length */
	esdk_kdf kdf;
	const char *kdf_md;         /* "SHA256" ... (NULL for identity) */
	const char *sig_curve;      /* "P-256" / "P-384", NULL if unsigned */
	const char *sig_md;
	const char *name;           /* the ESDK's enum name */
} esdk_suite;

const esdk_suite *esdk_suite_get(uint16_t id);
/* Well-formed UTF-8 (no overlongs, surrogates, or code points past U+10FFFF). */
bool esdk_utf8_ok(const uint8_t *s, size_t n);

/* An encryption context as sorted pairs; pointers into someone's bytes. */
typedef struct {
	const uint8_t *k, *v;
	size_t klen, vlen;
} esdk_pair;

typedef struct {
	esdk_pair *p;
	size_t n;
} esdk_ec;

/*
 * Parses a serialization without its u16 length (empty = no pairs),
 * rejecting duplicate keys and invalid UTF-8. The pairs come out sorted.
 */
hw_err esdk_ec_parse(const uint8_t *in, size_t len, esdk_ec *ec);
hw_err esdk_ec_serialize(const esdk_ec *ec, uint8_t **out, size_t *len);
const esdk_pair *esdk_ec_find(const esdk_ec *ec, const char *key, size_t klen);
/* Adds (or, with replace, overwrites) a pair; keeps the order. */
hw_err esdk_ec_put(esdk_ec *ec, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen);
void esdk_ec_free(esdk_ec *ec);

typedef struct {
	const uint8_t *pid, *pinfo, *ct;
	size_t pid_len, pinfo_len, ct_len;
} esdk_edk;

typedef struct {
	uint8_t version;
	const esdk_suite *suite;
	uint8_t msgid[ESDK_MSGID_MAX];
	size_t msgid_len;
	const uint8_t *ec_ser;      /* stored context serialization (no length) */
	size_t ec_ser_len;
	esdk_ec ec;
	esdk_edk *edks;
	size_t nedks;
	uint8_t content_type;       /* 1 non-framed, 2 framed */
	uint32_t frame_len;
	const uint8_t *commit;      /* v2: the commit key from the suite data */
	const uint8_t *hdr_iv;      /* v1: serialized header IV; v2: NULL (zeros) */
	const uint8_t *tag;         /* header authentication tag */
	const uint8_t *body;        /* the header body: what the tag authenticates */
	size_t body_len;
	size_t len;                 /* header body + authentication */
} esdk_header;

#define ESDK_CT_NONFRAMED 1
#define ESDK_CT_FRAMED 2

/*
 * Parses a header from the start of `in` (trailing bytes are left alone).
 * max_edks: 0 = only the format's limit. When the input ends too early the
 * result is HW_ERR_FORMAT with *need > len: the number of bytes that would
 * let the parse get further (need is 0 for any other failure).
 * Pointers in *h point into `in`; free with esdk_header_free().
 */
hw_err esdk_header_parse(const uint8_t *in, size_t len, unsigned max_edks, esdk_header *h,
                         size_t *need);
void esdk_header_free(esdk_header *h);

/* Sink for bytes produced (ciphertext on encrypt, plaintext on decrypt). */
typedef hw_err (*esdk_write_fn)(void *arg, const uint8_t *p, size_t n);

/*
 * Keyring, encrypt side: wrap dk (dklen bytes) for every recipient,
 * appending each EDK entry (pid str16, pinfo str16, ct str16) to `edks`
 * and counting them in *nedks. aad = serialized encryption context.
 */
typedef hw_err (*esdk_wrap_fn)(void *arg, const esdk_suite *s, const uint8_t *aad,
                               size_t aadlen, const uint8_t *dk, size_t dklen, hw_wbuf *edks,
                               size_t *nedks);
/* Keyring, decrypt side: fill dk (suite key_len bytes) from one of h's EDKs. */
typedef hw_err (*esdk_unwrap_fn)(void *arg, const esdk_header *h, const uint8_t *aad,
                                 size_t aadlen, uint8_t *dk, size_t dklen);

typedef struct {
	uint16_t suite;
	uint32_t frame_len;
	unsigned max_edks;          /* 0 = no limit */
	esdk_wrap_fn wrap;
	void *wrap_arg;
	esdk_write_fn out;
	void *out_arg;
	/* Optional (the data-key cache, ops/envelope-stream.c): this data key (suite
	 * key_len bytes) and, for signed suites, this signing key (not taken
	 * over) instead of fresh ones. NULL: fresh. */
	const uint8_t *dk;
	struct evp_pkey_st *sign_key;
	unsigned threads;           /* frame workers (0, 1: none; see esdk_pipe) */
} esdk_enc_params;

typedef struct esdk_enc esdk_enc;
/* The caller's context must not hold aws-crypto- keys (checked here). */
hw_err esdk_enc_new(const esdk_enc_params *p, const esdk_ec *ec, esdk_enc **out);
hw_err esdk_enc_update(esdk_enc *e, const uint8_t *in, size_t len);
hw_err esdk_enc_final(esdk_enc *e);
#ifdef HW_ESDK_TEST_HOOKS
void esdk_enc_test_set_seq(esdk_enc *e, uint64_t seq);
/* The message id of the next esdk_enc_new() on this thread (then random
 * again): with a fixed data key and signing key, the same bytes. */
void esdk_enc_test_set_msgid(const uint8_t msgid[32]);
#endif
void esdk_enc_free(esdk_enc *e);

typedef struct {
	bool allow_legacy;          /* decrypt non-committing suites (v1) */
	bool reject_signed;         /* fail right after the header if signed */
	unsigned max_edks;          /* 0 = no limit */
	size_t max_buffer;          /* largest frame / non-framed body held */
	const esdk_ec *required;    /* pairs that must be present (or reproduced) */
	esdk_unwrap_fn unwrap;
	void *unwrap_arg;
	esdk_write_fn out;
	void *out_arg;
	unsigned threads;           /* frame workers (0, 1: none; see esdk_pipe) */
} esdk_dec_params;

typedef struct esdk_dec esdk_dec;
hw_err esdk_dec_new(const esdk_dec_params *p, esdk_dec **out);
/*
 * Feeds message bytes. Plaintext is passed to p->out only once it is
 * authenticated; for signed suites the final frame (or a non-framed body)
 * waits for the footer signature. Bytes after the message are an error.
 */
hw_err esdk_dec_update(esdk_dec *d, const uint8_t *in, size_t len);
/* Fails unless a whole message was read and verified. */
hw_err esdk_dec_final(esdk_dec *d);
/* The parsed header once it was read and authenticated, else NULL. */
const esdk_header *esdk_dec_header(const esdk_dec *d);
/* The context the data key was bound to (stored + reproduced pairs). */
const esdk_ec *esdk_dec_context(const esdk_dec *d);
void esdk_dec_free(esdk_dec *d);

/*
 * Frames on their own (esdk-frame.c), for the frame workers below: a regular
 * frame is sealed into / opened from unit = seq || IV || ct || tag (len +
 * 32 bytes) under a context esdk_gcm_ctx_new() keyed.
 */
struct evp_cipher_ctx_st;

/* esdk-frame.c: AES-GCM under the body key and the body AAD (message-body-aad.md). */
extern const char ESDK_LABEL_FRAME[], ESDK_LABEL_FINAL[], ESDK_LABEL_SINGLE[];
#define ESDK_BODY_AAD_MAX (ESDK_MSGID_MAX + sizeof("AWSKMSEncryptionClient Single Block") + 12)
hw_err esdk_gcm_key(struct evp_cipher_ctx_st *c, bool enc, const uint8_t *key, size_t keylen);
hw_err esdk_gcm(struct evp_cipher_ctx_st *c, bool enc, const uint8_t *iv, const uint8_t *aad1,
                size_t aad1len, const uint8_t *aad2, size_t aad2len, const uint8_t *in,
                size_t len, uint8_t *out, uint8_t *tag);
size_t esdk_body_aad(uint8_t *out, const uint8_t *msgid, size_t msgid_len, const char *label,
                     uint32_t seq, uint64_t len);
void esdk_seq_iv(uint8_t iv[ESDK_IV_LEN], uint32_t seq);
hw_err esdk_gcm_ctx_new(bool enc, const uint8_t *key, size_t keylen,
                        struct evp_cipher_ctx_st **out);
hw_err esdk_frame_seal(struct evp_cipher_ctx_st *c, const uint8_t *msgid, size_t msgid_len,
                       uint32_t seq, const uint8_t *pt, size_t len, uint8_t *unit);
hw_err esdk_frame_open(struct evp_cipher_ctx_st *c, const uint8_t *msgid, size_t msgid_len,
                       uint32_t seq, const uint8_t *unit, size_t len, uint8_t *pt);

/*
 * Frame workers (esdk-pipe.c): runs of regular frames sealed or opened by
 * a bounded pool of threads, the results handed back in order on the
 * calling thread, which also hashes for the signature. Frames are
 * independent (IV = sequence number); the hash is not, so it stays on the
 * one thread that keeps the order. Memory: a fixed number of jobs of
 * ESDK_PIPE_JOB_BYTES each, whatever the message size.
 */
#define ESDK_PIPE_JOB_BYTES ((size_t)128 << 10)
#define ESDK_PIPE_MAX_THREADS 256u

typedef struct esdk_pipe esdk_pipe;
/* threads: threads running frames, the calling thread included (0 or 1:
 * everything on the calling thread, no worker started). */
hw_err esdk_pipe_new(bool enc, unsigned threads, const uint8_t *key, size_t keylen,
                     const uint8_t *msgid, size_t msgid_len, uint32_t frame_len,
                     esdk_pipe **out);
/*
 * Seals (enc: in = n * frame_len plaintext bytes) or opens (dec: in = n
 * serialized frames of frame_len + 32 bytes, sequence numbers checked by
 * the caller) n frames numbered from seq0. absorb(in piece) is called in
 * order for the input of each job (dec: the signature hash; may be NULL),
 * emit(out piece) in order for each job's result once the whole job
 * succeeded. Returns when every job is done (in may be reused then). The
 * first failure, in frame order, stops the run: the jobs still in flight
 * are abandoned, every buffer wiped, and that failure returned; the pipe
 * is unusable afterwards.
 */
hw_err esdk_pipe_run(esdk_pipe *p, const uint8_t *in, size_t n, uint32_t seq0,
                     esdk_write_fn absorb, esdk_write_fn emit, void *arg);
void esdk_pipe_free(esdk_pipe *p);

/* Key derivation (exposed for the known-answer tests). */
hw_err esdk_derive(const esdk_suite *s, const uint8_t *dk, const uint8_t *msgid,
                   size_t msgid_len, uint8_t *key, uint8_t *commit);

#endif
