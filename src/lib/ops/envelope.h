/*
 * Envelope encryption, internal (src/lib/ops/envelope-*.c): what the
 * configuration, the data-key cache, the HSM keyring, the streams and the
 * one-shot calls share. The format itself is format/esdk.h.
 */
#ifndef HW_OPS_ENVELOPE_H
#define HW_OPS_ENVELOPE_H

#include "internal.h"
#include "format/esdk.h"

#include <pthread.h>

#include <openssl/evp.h>

/* ---- configuration (envelope-cfg.c) ---- */

#define DEFAULT_NAMESPACE "hsmwrap"
#define DEFAULT_MAX_BUFFER ((size_t)64 << 20)
#define WRAP_TAG_BITS 128u
_Static_assert(ESDK_IV_LEN == sizeof(((hw_gcm_arg *)0)->iv), "hw_op_gcm uses 96-bit IVs");
#define PINFO_TRAILER (4 + 4 + ESDK_IV_LEN)
/* Largest RSA modulus handled: 8192 bits. */
#define RSA_MAX_BYTES 1024

/* A Raw RSA recipient: a public key on the host (offline escrow). */
typedef struct {
	char *pid, *name;
	EVP_PKEY *pub;
	uint8_t spki_sha256[32];    /* identifies it in cache partitions */
} rsa_rcpt;

struct hw_envelope_cfg {
	uint16_t suite;
	uint32_t frame_len;
	hw_commitment_policy policy;
	unsigned max_edks;
	char ns[256];
	size_t max_buffer;
	bool reject_signed;
	hw_rsa_padding rsa_pad;
	rsa_rcpt *rcpts;
	size_t nrcpts;
	hw_cache *cache;
	unsigned threads;           /* 0: one per online CPU */
};

const hw_envelope_cfg *cfg_or_default(const hw_envelope_cfg *cfg);
/* The frame workers for a stream: the configured count, or the CPUs. */
unsigned cfg_threads(const hw_envelope_cfg *c);

/* ---- data-key cache (envelope-cache.c) ---- */

#define CACHE_ID_LEN 64

typedef enum { ENT_ENC = 1, ENT_DEC = 2 } ent_kind;

typedef struct cache_ent {
	struct cache_ent *prev, *next;  /* most recently used first */
	ent_kind kind;
	uint8_t id[CACHE_ID_LEN];
	uint64_t born_ms, messages, bytes;
	size_t dklen;
	uint8_t dk[ESDK_MAX_KEY_LEN];
	/* Encrypt entries: what the keyring made for dk, the signing key of
	 * signed suites (DER: each user decodes its own, so no OpenSSL object
	 * is shared between threads, and the bytes are wiped here), and the
	 * context the EDKs were made under. */
	uint8_t *edks, *ec, *sk;
	size_t edkslen, nedks, eclen, sklen;
} cache_ent;

struct hw_cache {
	pthread_mutex_t mu;
	size_t max_entries, n;
	uint64_t max_age_ms, max_messages, max_bytes;
	cache_ent *head, *tail;
};

/* What a lookup hands out: copies, so the entry may go at any time. */
typedef struct {
	uint8_t dk[ESDK_MAX_KEY_LEN];
	size_t dklen;
	uint8_t *edks, *ec;
	size_t edkslen, nedks, eclen;
	EVP_PKEY *sk;
} cache_mat;

void mat_clear(cache_mat *m);
bool cache_get(hw_cache *c, ent_kind kind, const uint8_t id[CACHE_ID_LEN], uint64_t bytes,
               cache_mat *m);
void cache_put(hw_cache *c, ent_kind kind, const uint8_t id[CACHE_ID_LEN], uint64_t bytes,
               const uint8_t *dk, size_t dklen, const uint8_t *edks, size_t edkslen,
               size_t nedks, const uint8_t *ec, size_t eclen, EVP_PKEY *sk);
hw_err enc_partition(const hw_envelope_cfg *c, hw_key *const *keys, size_t nkeys,
                     uint8_t out[64]);
hw_err dec_partition(const hw_envelope_cfg *c, hw_ctx *ctx, hw_key *const *allowed, size_t n,
                     uint8_t out[64]);
hw_err enc_cache_id(const uint8_t part[64], uint16_t suite, const uint8_t *ec, size_t eclen,
                    uint8_t id[CACHE_ID_LEN]);
hw_err dec_cache_id(const uint8_t part[64], const esdk_header *h, const uint8_t *ec,
                    size_t eclen, uint8_t id[CACHE_ID_LEN]);

/* ---- the HSM keyring: esdk's wrap and unwrap callbacks (envelope-keyring.c) ---- */

typedef struct {
	hw_key *const *keys;
	size_t nkeys;
	const hw_envelope_cfg *cfg;
	/* Data-key cache: replay a cached entry's EDKs, or record new ones. */
	const cache_mat *replay;
	bool record;
	uint8_t *rec_edks, *rec_ec;
	size_t rec_edkslen, rec_nedks, rec_eclen;
} wrap_arg;

typedef struct {
	hw_ctx *ctx;
	hw_key *const *allowed;
	size_t nallowed;
	const char *ns;
	hw_rsa_padding rsa_pad;
	hw_cache *cache;
	uint8_t part[64];
} unwrap_arg;

hw_err kr_wrap(void *arg, const esdk_suite *s, const uint8_t *aad, size_t aadlen,
               const uint8_t *dk, size_t dklen, hw_wbuf *edks, size_t *nedks);
hw_err kr_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen,
                 uint8_t *dk, size_t dklen);

/* ---- streams (envelope-stream.c), used by the one-shot calls ---- */

struct hw_dec_stream {
	esdk_dec *d;
	unwrap_arg u;
	esdk_ec req;
	uint8_t *req_ser;
	hw_key **allowed;           /* copy of the caller's array */
	char *ns;                   /* copy: cfg may be freed while the stream lives */
};

/* len: the whole plaintext's length if known (one-shot), else NULL. */
hw_err enc_open(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys,
                const hw_ectx *ec, const uint64_t *len, esdk_write_fn out, void *out_arg,
                esdk_enc **res);
hw_err dec_open(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed,
                size_t nallowed, const hw_ectx *required, esdk_write_fn out, void *out_arg,
                hw_dec_stream **res);

#endif
