/*
 * Envelope encryption in the AWS Encryption SDK message format (esdk.c)
 * with an HSM keyring: the data key is wrapped and unwrapped by AES-256-GCM
 * inside the HSM, and the result is stored exactly as the SDK's Raw AES
 * keyring stores it, so that any SDK holding the same key decrypts it.
 */
#include "internal.h"
#include "format/esdk.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

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

static const hw_envelope_cfg defaults = {
	.suite = HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384,
	.frame_len = 4096,
	.policy = HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
	.max_edks = 16,
	.ns = DEFAULT_NAMESPACE,
	.max_buffer = DEFAULT_MAX_BUFFER,
	.reject_signed = false,
	.rsa_pad = HW_RSA_PAD_OAEP_SHA256,
};

static const hw_envelope_cfg *
cfg_or_default(const hw_envelope_cfg *cfg)
{
	return cfg ? cfg : &defaults;
}

HW_EXPORT hw_err
hw_envelope_cfg_new(hw_envelope_cfg **out)
{
	hw_envelope_cfg *c;

	if (!out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_new");
	c = malloc(sizeof(*c));
	if (!c)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	*c = defaults;
	*out = c;
	return HW_OK;
}

HW_EXPORT void
hw_envelope_cfg_free(hw_envelope_cfg *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nrcpts; i++) {
		free(cfg->rcpts[i].pid);
		free(cfg->rcpts[i].name);
		EVP_PKEY_free(cfg->rcpts[i].pub);
	}
	free(cfg->rcpts);
	free(cfg);
}

static bool
name_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= max && esdk_utf8_ok((const uint8_t *)s, n);
}

HW_EXPORT hw_err
hw_envelope_cfg_add_rsa_recipient(hw_envelope_cfg *cfg, const char *provider_id,
                                  const char *key_name, const uint8_t *spki_der, size_t len)
{
	const unsigned char *p = spki_der;
	EVP_PKEY *pk = NULL;
	rsa_rcpt *n, r;

	if (!cfg || !spki_der || len == 0 || len > LONG_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_add_rsa_recipient");
	if (!name_ok(provider_id, 255) || !name_ok(key_name, UINT16_MAX))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an RSA recipient needs a provider id (1 to "
		               "255 bytes of UTF-8) and a key name (UTF-8)");
	if (strncmp(provider_id, "aws-kms", 7) == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the provider id may not start with 'aws-kms'");
	pk = d2i_PUBKEY(NULL, &p, (long)len);
	if (!pk || p != spki_der + len) {
		EVP_PKEY_free(pk);
		return hw_fail(HW_ERR_FORMAT, 0, "not a DER SubjectPublicKeyInfo");
	}
	if (!EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_get_bits(pk) < 2048 ||
	    EVP_PKEY_get_size(pk) > RSA_MAX_BYTES) {
		EVP_PKEY_free(pk);
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an RSA recipient needs an RSA key of 2048 to "
		               "8192 bits");
	}
	memset(&r, 0, sizeof(r));
	r.pub = pk;
	r.pid = strdup(provider_id);
	r.name = strdup(key_name);
	n = realloc(cfg->rcpts, (cfg->nrcpts + 1) * sizeof(*n));
	if (!r.pid || !r.name || !n ||
	    EVP_Digest(spki_der, len, r.spki_sha256, NULL, EVP_sha256(), NULL) != 1) {
		free(r.pid);
		free(r.name);
		EVP_PKEY_free(pk);
		if (n)
			cfg->rcpts = n;
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	cfg->rcpts = n;
	cfg->rcpts[cfg->nrcpts++] = r;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_rsa_padding(hw_envelope_cfg *cfg, hw_rsa_padding pad)
{
	if (!cfg || pad < HW_RSA_PAD_PKCS1 || pad > HW_RSA_PAD_OAEP_SHA512)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown RSA padding");
	cfg->rsa_pad = pad;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_cache(hw_envelope_cfg *cfg, hw_cache *c)
{
	if (!cfg)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_set_cache");
	cfg->cache = c;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_suite(hw_envelope_cfg *cfg, unsigned suite)
{
	if (!cfg || (suite != HW_SUITE_AES256_HKDF_SHA512_COMMIT &&
	             suite != HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "suite 0x%04x: hsmwrap encrypts with 0x0478 "
		               "or 0x0578", suite);
	cfg->suite = (uint16_t)suite;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_frame_length(hw_envelope_cfg *cfg, uint32_t len)
{
	if (!cfg || len == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the frame length must be 1 to 2^32 - 1");
	cfg->frame_len = len;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_commitment_policy(hw_envelope_cfg *cfg, hw_commitment_policy p)
{
	if (!cfg || (p != HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT &&
	             p != HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown commitment policy");
	cfg->policy = p;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_max_edks(hw_envelope_cfg *cfg, unsigned n)
{
	if (!cfg || n > UINT16_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "at most 65535 encrypted data keys");
	cfg->max_edks = n;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_key_namespace(hw_envelope_cfg *cfg, const char *ns)
{
	size_t n = ns ? strlen(ns) : 0;

	if (!cfg || n == 0 || n >= sizeof(cfg->ns))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace must be 1 to 255 bytes");
	/* The SDKs keep this prefix for their KMS keyrings (raw-aes-keyring.md). */
	if (strncmp(ns, "aws-kms", 7) == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace may not start with "
		               "'aws-kms'");
	if (!esdk_utf8_ok((const uint8_t *)ns, n))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace must be UTF-8");
	memcpy(cfg->ns, ns, n + 1);
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_max_buffer(hw_envelope_cfg *cfg, size_t bytes)
{
	if (!cfg || bytes < 4096)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the buffer limit must be at least 4096 bytes");
	cfg->max_buffer = bytes;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_threads(hw_envelope_cfg *cfg, unsigned threads)
{
	if (!cfg || threads > ESDK_PIPE_MAX_THREADS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "threads: 0 (one per CPU) to %u",
		               ESDK_PIPE_MAX_THREADS);
	cfg->threads = threads;
	return HW_OK;
}

/* The frame workers for a stream: the configured count, or the CPUs. */
static unsigned
cfg_threads(const hw_envelope_cfg *c)
{
	long n;

	if (c->threads)
		return c->threads;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > (long)ESDK_PIPE_MAX_THREADS ? ESDK_PIPE_MAX_THREADS : (unsigned)n;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_reject_signed(hw_envelope_cfg *cfg, int reject)
{
	if (!cfg)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_set_reject_signed");
	cfg->reject_signed = reject != 0;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Data-key cache (the SDK's caching CMM with a local LRU cache)      */

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

static void
mat_clear(cache_mat *m)
{
	OPENSSL_cleanse(m->dk, sizeof(m->dk));
	free(m->edks);
	free(m->ec);
	EVP_PKEY_free(m->sk);
	memset(m, 0, sizeof(*m));
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

HW_EXPORT hw_err
hw_cache_new(size_t max_entries, uint64_t max_age_ms, uint64_t max_messages,
             uint64_t max_bytes, hw_cache **out)
{
	hw_cache *c;

	if (!out || max_entries == 0 || max_age_ms == 0 || max_messages > (UINT64_C(1) << 32) ||
	    max_bytes > (uint64_t)INT64_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "cache limits: max_entries >= 1, max_age_ms "
		               "> 0, max_messages <= 2^32, max_bytes <= 2^63 - 1");
	c = calloc(1, sizeof(*c));
	if (!c)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (pthread_mutex_init(&c->mu, NULL) != 0) {
		free(c);
		return hw_fail(HW_ERR_NOMEM, 0, "pthread_mutex_init");
	}
	c->max_entries = max_entries;
	c->max_age_ms = max_age_ms;
	c->max_messages = max_messages ? max_messages : UINT64_C(1) << 32;
	c->max_bytes = max_bytes ? max_bytes : (uint64_t)INT64_MAX;
	*out = c;
	return HW_OK;
}

static void
ent_free(cache_ent *e)
{
	OPENSSL_cleanse(e->dk, sizeof(e->dk));
	free(e->edks);
	free(e->ec);
	if (e->sk)
		OPENSSL_cleanse(e->sk, e->sklen);
	free(e->sk);
	OPENSSL_cleanse(e, sizeof(*e));
	free(e);
}

/* Caller holds c->mu. */
static void
ent_unlink(hw_cache *c, cache_ent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	c->n--;
	ent_free(e);
}

static void
ent_push_front(hw_cache *c, cache_ent *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
	c->n++;
}

HW_EXPORT void
hw_cache_free(hw_cache *c)
{
	if (!c)
		return;
	while (c->head)
		ent_unlink(c, c->head);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static cache_ent *
ent_find(hw_cache *c, ent_kind kind, const uint8_t id[CACHE_ID_LEN])
{
	for (cache_ent *e = c->head; e; e = e->next)
		if (e->kind == kind && CRYPTO_memcmp(e->id, id, CACHE_ID_LEN) == 0)
			return e;
	return NULL;
}

/*
 * A hit counts one more message of `bytes` bytes against the entry; an
 * entry that is too old, or that this message would take over a limit,
 * is evicted and the lookup misses (caching-cmm.md).
 */
static bool
cache_get(hw_cache *c, ent_kind kind, const uint8_t id[CACHE_ID_LEN], uint64_t bytes,
          cache_mat *m)
{
	cache_ent *e;
	uint8_t *sk = NULL;
	size_t sklen = 0;
	bool hit = false;

	memset(m, 0, sizeof(*m));
	pthread_mutex_lock(&c->mu);
	e = ent_find(c, kind, id);
	if (e && (now_ms() - e->born_ms >= c->max_age_ms || e->messages >= c->max_messages ||
	          bytes > c->max_bytes - e->bytes)) {
		ent_unlink(c, e);
		e = NULL;
	}
	if (e) {
		m->dklen = e->dklen;
		memcpy(m->dk, e->dk, e->dklen);
		m->nedks = e->nedks;
		m->edkslen = e->edkslen;
		m->eclen = e->eclen;
		m->edks = e->edkslen ? malloc(e->edkslen) : NULL;
		m->ec = e->eclen ? malloc(e->eclen) : NULL;
		sk = e->sklen ? malloc(e->sklen) : NULL;
		if ((e->edkslen && !m->edks) || (e->eclen && !m->ec) || (e->sklen && !sk)) {
			mat_clear(m);
		} else {
			if (e->edkslen)
				memcpy(m->edks, e->edks, e->edkslen);
			if (e->eclen)
				memcpy(m->ec, e->ec, e->eclen);
			if (e->sklen)
				memcpy(sk, e->sk, e->sklen);
			sklen = e->sklen;
			e->messages++;
			e->bytes += bytes;
			hit = true;
			/* Most recently used first, so eviction takes the least. */
			if (c->head != e) {
				e->prev->next = e->next;
				if (e->next)
					e->next->prev = e->prev;
				else
					c->tail = e->prev;
				c->n--;
				ent_push_front(c, e);
			}
		}
	}
	pthread_mutex_unlock(&c->mu);
	if (hit && sk) {
		const unsigned char *p = sk;

		m->sk = d2i_AutoPrivateKey(NULL, &p, (long)sklen);
		if (!m->sk) {
			mat_clear(m);
			hit = false;
		}
	}
	if (sk) {
		OPENSSL_cleanse(sk, sklen);
		free(sk);
	}
	return hit;
}

/* Best effort: a cache that cannot take an entry only costs HSM calls. */
static void
cache_put(hw_cache *c, ent_kind kind, const uint8_t id[CACHE_ID_LEN], uint64_t bytes,
          const uint8_t *dk, size_t dklen, const uint8_t *edks, size_t edkslen, size_t nedks,
          const uint8_t *ec, size_t eclen, EVP_PKEY *sk)
{
	cache_ent *e, *old;

	/* One message already over a limit is never cached (the SDK bypasses). */
	if (bytes > c->max_bytes || dklen > ESDK_MAX_KEY_LEN)
		return;
	e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->kind = kind;
	memcpy(e->id, id, CACHE_ID_LEN);
	e->born_ms = now_ms();
	e->messages = 1;
	e->bytes = bytes;
	e->dklen = dklen;
	memcpy(e->dk, dk, dklen);
	e->edks = edkslen ? malloc(edkslen) : NULL;
	e->ec = eclen ? malloc(eclen) : NULL;
	if (sk) {
		int n = i2d_PrivateKey(sk, NULL);
		unsigned char *p;

		e->sk = n > 0 ? malloc((size_t)n) : NULL;
		e->sklen = e->sk ? (size_t)n : 0;   /* so a failure still wipes it */
		p = e->sk;
		if (!e->sk || i2d_PrivateKey(sk, &p) != n) {
			ent_free(e);
			return;
		}
	}
	if ((edkslen && !e->edks) || (eclen && !e->ec)) {
		ent_free(e);
		return;
	}
	if (edkslen)
		memcpy(e->edks, edks, edkslen);
	if (eclen)
		memcpy(e->ec, ec, eclen);
	e->edkslen = edkslen;
	e->nedks = nedks;
	e->eclen = eclen;
	pthread_mutex_lock(&c->mu);
	/* Two threads that missed together: the newer entry wins. */
	if ((old = ent_find(c, kind, id)) != NULL)
		ent_unlink(c, old);
	while (c->n >= c->max_entries && c->tail)
		ent_unlink(c, c->tail);
	ent_push_front(c, e);
	pthread_mutex_unlock(&c->mu);
}

static hw_err
sha512_of(const uint8_t *p, size_t n, uint8_t out[64])
{
	static const uint8_t none;

	return EVP_Digest(n ? p : &none, n, out, NULL, EVP_sha512(), NULL) == 1 ? HW_OK :
	       hw_fail(HW_ERR_CRYPTO, 0, "SHA-512");
}

/*
 * Partition: which keys a cache entry belongs to, so that entries are never
 * shared between different key sets (the SDK gives each caching CMM a
 * partition id). Keys are named by token, label and CKA_ID; RSA recipients
 * by provider id, name and public key; the namespace and padding count too.
 */
static void
part_key(hw_wbuf *w, const hw_key *k)
{
	hw_wbuf_u8(w, 'K');
	hw_wbuf_put(w, k->ctx->tinfo.manufacturerID, sizeof(k->ctx->tinfo.manufacturerID));
	hw_wbuf_put(w, k->ctx->tinfo.serialNumber, sizeof(k->ctx->tinfo.serialNumber));
	hw_wbuf_put(w, k->ctx->tinfo.label, sizeof(k->ctx->tinfo.label));
	hw_wbuf_str16(w, k->label, strlen(k->label));
	hw_wbuf_str16(w, k->id, k->id_len);
}

static hw_err
part_finish(hw_wbuf *w, uint8_t out[64])
{
	uint8_t *p = NULL;
	size_t n = 0;
	hw_err e = hw_wbuf_finish(w, &p, &n);

	if (e == HW_OK)
		e = sha512_of(p, n, out);
	free(p);
	return e;
}

static hw_err
enc_partition(const hw_envelope_cfg *c, hw_key *const *keys, size_t nkeys, uint8_t out[64])
{
	hw_wbuf w;

	hw_wbuf_init(&w, SIZE_MAX);
	hw_wbuf_put(&w, "hsmwrap-enc", 11);
	hw_wbuf_str16(&w, c->ns, strlen(c->ns));
	hw_wbuf_u8(&w, (uint8_t)c->rsa_pad);
	for (size_t i = 0; i < nkeys; i++)
		part_key(&w, keys[i]);
	for (size_t i = 0; i < c->nrcpts; i++) {
		hw_wbuf_u8(&w, 'R');
		hw_wbuf_str16(&w, c->rcpts[i].pid, strlen(c->rcpts[i].pid));
		hw_wbuf_str16(&w, c->rcpts[i].name, strlen(c->rcpts[i].name));
		hw_wbuf_put(&w, c->rcpts[i].spki_sha256, 32);
	}
	return part_finish(&w, out);
}

static hw_err
dec_partition(const hw_envelope_cfg *c, hw_ctx *ctx, hw_key *const *allowed, size_t n,
              uint8_t out[64])
{
	hw_wbuf w;

	hw_wbuf_init(&w, SIZE_MAX);
	hw_wbuf_put(&w, "hsmwrap-dec", 11);
	hw_wbuf_str16(&w, c->ns, strlen(c->ns));
	hw_wbuf_u8(&w, (uint8_t)c->rsa_pad);
	if (allowed) {
		for (size_t i = 0; i < n; i++)
			part_key(&w, allowed[i]);
	} else {
		/* Any key of that token that the message names. */
		hw_wbuf_u8(&w, 'T');
		hw_wbuf_put(&w, ctx->tinfo.manufacturerID, sizeof(ctx->tinfo.manufacturerID));
		hw_wbuf_put(&w, ctx->tinfo.serialNumber, sizeof(ctx->tinfo.serialNumber));
		hw_wbuf_put(&w, ctx->tinfo.label, sizeof(ctx->tinfo.label));
	}
	return part_finish(&w, out);
}

/* caching-cmm.md: SHA-512(SHA-512(partition) || 0x01 || suite || SHA-512(context)). */
static hw_err
enc_cache_id(const uint8_t part[64], uint16_t suite, const uint8_t *ec, size_t eclen,
             uint8_t id[CACHE_ID_LEN])
{
	uint8_t buf[64 + 1 + 2 + 64];
	hw_err e;

	memcpy(buf, part, 64);
	buf[64] = 1;
	buf[65] = (uint8_t)(suite >> 8);
	buf[66] = (uint8_t)suite;
	e = sha512_of(ec, eclen, buf + 67);
	if (e == HW_OK)
		e = sha512_of(buf, sizeof(buf), id);
	return e;
}

static int
cmp64(const void *a, const void *b)
{
	return memcmp(a, b, 64);
}

/*
 * caching-cmm.md: SHA-512(SHA-512(partition) || suite || the sorted
 * SHA-512 digests of the serialized EDKs || 64 zero bytes || SHA-512(context)).
 */
static hw_err
dec_cache_id(const uint8_t part[64], const esdk_header *h, const uint8_t *ec, size_t eclen,
             uint8_t id[CACHE_ID_LEN])
{
	uint8_t (*dg)[64] = calloc(h->nedks ? h->nedks : 1, 64), zeros[64] = { 0 }, d[64];
	uint8_t *p = NULL;
	size_t n = 0;
	hw_wbuf w;
	hw_err e = dg ? HW_OK : hw_fail(HW_ERR_NOMEM, 0, NULL);

	for (size_t i = 0; e == HW_OK && i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];

		hw_wbuf_init(&w, SIZE_MAX);
		hw_wbuf_str16(&w, k->pid, k->pid_len);
		hw_wbuf_str16(&w, k->pinfo, k->pinfo_len);
		hw_wbuf_str16(&w, k->ct, k->ct_len);
		e = hw_wbuf_finish(&w, &p, &n);
		if (e == HW_OK)
			e = sha512_of(p, n, dg[i]);
		free(p);
		p = NULL;
	}
	if (e == HW_OK) {
		qsort(dg, h->nedks, 64, cmp64);
		hw_wbuf_init(&w, SIZE_MAX);
		hw_wbuf_put(&w, part, 64);
		hw_wbuf_u16(&w, h->suite->id);
		for (size_t i = 0; i < h->nedks; i++)
			hw_wbuf_put(&w, dg[i], 64);
		hw_wbuf_put(&w, zeros, 64);
		e = sha512_of(ec, eclen, d);
		hw_wbuf_put(&w, d, 64);
		if (e == HW_OK)
			e = hw_wbuf_finish(&w, &p, &n);
		else
			hw_wbuf_free(&w);
		if (e == HW_OK)
			e = sha512_of(p, n, id);
		free(p);
	}
	free(dg);
	return e;
}

/* ---------------------------------------------------------------- */
/* Contexts between the public hw_ectx and the format's pairs         */

/* *ser keeps the bytes the pairs point into. */
static hw_err
ec_import(const hw_ectx *in, esdk_ec *ec, uint8_t **ser)
{
	size_t len = 0;
	hw_err e;

	ec->p = NULL;
	ec->n = 0;
	*ser = NULL;
	if (!in)
		return HW_OK;
	e = hw_ectx_serialize(in, ser, &len);
	if (e == HW_OK)
		e = esdk_ec_parse(*ser, len, ec);
	if (e != HW_OK) {
		free(*ser);
		*ser = NULL;
	}
	return e;
}

static hw_err
ec_export(const esdk_ec *ec, hw_ectx **out)
{
	hw_ectx *x = NULL;
	hw_err e = hw_ectx_new(&x);

	for (size_t i = 0; e == HW_OK && i < ec->n; i++) {
		char *k = strndup((const char *)ec->p[i].k, ec->p[i].klen);
		char *v = strndup((const char *)ec->p[i].v, ec->p[i].vlen);

		if (!k || !v)
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		else if (strlen(k) != ec->p[i].klen || strlen(v) != ec->p[i].vlen || !*k)
			e = hw_fail(HW_ERR_UNSUPPORTED, 0, "the message's encryption context has an "
			            "empty key or a NUL character, which hw_ectx cannot hold");
		else
			e = hw_ectx_add(x, k, v);
		free(k);
		free(v);
	}
	if (e != HW_OK) {
		hw_ectx_free(x);
		return e;
	}
	*out = x;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* HSM keyring                                                       */

/* ---- RSA: encrypt to host public keys, decrypt in the HSM ---- */

static const char *
oaep_md_name(hw_rsa_padding pad)
{
	switch (pad) {
	case HW_RSA_PAD_OAEP_SHA1:
		return "SHA1";
	case HW_RSA_PAD_OAEP_SHA384:
		return "SHA384";
	case HW_RSA_PAD_OAEP_SHA512:
		return "SHA512";
	default:
		return "SHA256";
	}
}

static hw_err
rsa_encrypt(const rsa_rcpt *r, hw_rsa_padding pad, const uint8_t *dk, size_t dklen,
            uint8_t *out, size_t *outlen)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, r->pub, NULL);
	const char *md = oaep_md_name(pad);
	size_t n = RSA_MAX_BYTES;
	bool oaep = pad != HW_RSA_PAD_PKCS1;
	bool ok = pc && EVP_PKEY_encrypt_init(pc) == 1 &&
	          EVP_PKEY_CTX_set_rsa_padding(pc, oaep ? RSA_PKCS1_OAEP_PADDING :
	                                       RSA_PKCS1_PADDING) == 1 &&
	          (!oaep || (EVP_PKEY_CTX_set_rsa_oaep_md_name(pc, md, NULL) == 1 &&
	                     EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, md, NULL) == 1)) &&
	          EVP_PKEY_encrypt(pc, out, &n, dk, dklen) == 1;

	EVP_PKEY_CTX_free(pc);
	if (!ok)
		return hw_fail(HW_ERR_CRYPTO, 0, "RSA encryption of the data key for '%s'", r->name);
	*outlen = n;
	return HW_OK;
}

typedef struct {
	hw_key *key;
	CK_MECHANISM_TYPE mech;
	CK_RSA_PKCS_OAEP_PARAMS oaep;
	const uint8_t *in;
	size_t inlen;
	uint8_t out[RSA_MAX_BYTES];
	size_t outlen;
} rsa_arg;

static CK_RV
op_rsa_decrypt(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	rsa_arg *a = arg;
	CK_MECHANISM m = { a->mech, NULL, 0 };
	CK_OBJECT_HANDLE h;
	CK_ULONG outlen = sizeof(a->out);
	CK_RV rv = hw_key_handle_ck(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	if (a->mech == CKM_RSA_PKCS_OAEP) {
		m.pParameter = &a->oaep;
		m.ulParameterLen = sizeof(a->oaep);
	}
	rv = ctx->fl->C_DecryptInit(s, &m, h);
	if (rv == CKR_OK)
		rv = ctx->fl->C_Decrypt(s, (CK_BYTE *)a->in, a->inlen, a->out, &outlen);
	if (rv == CKR_OK)
		a->outlen = outlen;
	return rv;
}

/* XORs MGF1(seed) into out (RFC 8017, B.2.1). */
static bool
mgf1_xor(const EVP_MD *md, const uint8_t *seed, size_t seedlen, uint8_t *out, size_t outlen)
{
	EVP_MD_CTX *x = EVP_MD_CTX_new();
	uint8_t d[EVP_MAX_MD_SIZE];
	size_t hl = (size_t)EVP_MD_get_size(md), done = 0;
	bool ok = x != NULL;

	for (uint32_t i = 0; ok && done < outlen; i++) {
		uint8_t c[4] = { (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
		                 (uint8_t)i };
		size_t n = outlen - done < hl ? outlen - done : hl;

		ok = EVP_DigestInit_ex(x, md, NULL) == 1 && EVP_DigestUpdate(x, seed, seedlen) == 1 &&
		     EVP_DigestUpdate(x, c, 4) == 1 && EVP_DigestFinal_ex(x, d, NULL) == 1;
		for (size_t j = 0; ok && j < n; j++)
			out[done + j] ^= d[j];
		done += n;
	}
	OPENSSL_cleanse(d, sizeof(d));
	EVP_MD_CTX_free(x);
	return ok;
}

/*
 * EME-OAEP decoding (RFC 8017, 7.1.2 step 3) of the raw RSA output em
 * (k bytes, changed in place) for a message of exactly dklen bytes. Every
 * check is folded into one flag without secret-dependent branches, so a
 * caller learns only "valid" or not, as from a token's own OAEP.
 */
static bool
oaep_decode(hw_rsa_padding pad, uint8_t *em, size_t k, uint8_t *dk, size_t dklen)
{
	EVP_MD *md = EVP_MD_fetch(NULL, oaep_md_name(pad), NULL);
	uint8_t lhash[EVP_MAX_MD_SIZE];
	size_t hl = md ? (size_t)EVP_MD_get_size(md) : 0, dblen, one;
	uint8_t *seed, *db;
	unsigned diff;
	bool ok;

	if (!md || k < 2 * hl + 2 + dklen) {
		EVP_MD_free(md);
		return false;
	}
	seed = em + 1;
	db = em + 1 + hl;
	dblen = k - hl - 1;
	ok = mgf1_xor(md, db, dblen, seed, hl) && mgf1_xor(md, seed, hl, db, dblen) &&
	     EVP_Digest("", 0, lhash, NULL, md, NULL) == 1;
	EVP_MD_free(md);
	if (!ok)
		return false;
	diff = em[0];
	for (size_t i = 0; i < hl; i++)
		diff |= db[i] ^ lhash[i];
	one = dblen - dklen - 1;
	for (size_t i = hl; i < one; i++)
		diff |= db[i];
	diff |= db[one] ^ 1u;
	memcpy(dk, db + one + 1, dklen);
	return diff == 0;
}

static bool
oaep_unsupported(CK_RV rv)
{
	return rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID ||
	       rv == CKR_MECHANISM_INVALID;
}

/*
 * The data key from an RSA EDK, decrypted in the HSM with the padding of
 * the configuration. A token without OAEP for that hash (SoftHSMv2 only
 * has SHA-1) gets a raw RSA decryption, if the key allows CKM_RSA_X_509,
 * and the OAEP encoding is checked here; the private key stays inside.
 */
static hw_err
rsa_unwrap(hw_key *key, hw_rsa_padding pad, const uint8_t *ct, size_t ctlen, uint8_t *dk,
           size_t dklen)
{
	rsa_arg *a = calloc(1, sizeof(*a));
	uint8_t *em = NULL;
	hw_err e;

	if (!a)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	a->key = key;
	a->in = ct;
	a->inlen = ctlen;
	if (pad == HW_RSA_PAD_PKCS1) {
		a->mech = CKM_RSA_PKCS;
	} else {
		a->mech = CKM_RSA_PKCS_OAEP;
		hw_rsa_oaep_params(pad, &a->oaep.hashAlg, &a->oaep.mgf);
		a->oaep.source = CKZ_DATA_SPECIFIED;
	}
	e = hw_ctx_run(key->ctx, op_rsa_decrypt, a, "RSA decryption of the data key in the HSM");
	/* SoftHSMv2 reports bad OAEP padding as a general error. */
	if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
		e = hw_fail(HW_ERR_INTEGRITY, CKR_GENERAL_ERROR, "RSA decryption of the data key "
		            "failed in the HSM (another key or padding)");
	if (e == HW_OK && a->outlen != dklen)
		e = hw_fail(HW_ERR_INTEGRITY, 0, "RSA decryption gave %zu bytes, not a data key",
		            a->outlen);
	if (e == HW_OK) {
		memcpy(dk, a->out, dklen);
	} else if (pad != HW_RSA_PAD_PKCS1 && oaep_unsupported(hw_last_ckrv())) {
		hw_clear_error();
		a->mech = CKM_RSA_X_509;
		e = hw_ctx_run(key->ctx, op_rsa_decrypt, a, "raw RSA decryption of the data key "
		               "in the HSM (the token lacks OAEP with this hash)");
		if (e == HW_OK && a->outlen > ctlen)
			e = hw_fail(HW_ERR_HSM, 0, "the token returned %zu bytes of raw RSA output",
			            a->outlen);
		if (e == HW_OK && !(em = calloc(1, ctlen)))
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		if (e == HW_OK) {
			/* Left-pad to the modulus size: some tokens strip leading zeros. */
			memcpy(em + ctlen - a->outlen, a->out, a->outlen);
			if (!oaep_decode(pad, em, ctlen, dk, dklen)) {
				OPENSSL_cleanse(dk, dklen);
				e = hw_fail(HW_ERR_INTEGRITY, CKR_ENCRYPTED_DATA_INVALID, "RSA-OAEP "
				            "decoding failed (another key or padding)");
			}
			OPENSSL_cleanse(em, ctlen);
		}
		free(em);
	}
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
	return e;
}

/* ---- the keyring callbacks ---- */

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

static hw_err
wrap_hsm(wrap_arg *w, const uint8_t *aad, size_t aadlen, const uint8_t *dk, size_t dklen,
         hw_wbuf *edks, size_t *nedks)
{
	uint8_t ct[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
	hw_err e = HW_OK;

	for (size_t i = 0; i < w->nkeys && e == HW_OK; i++) {
		hw_key *key = w->keys[i];
		size_t nl = strlen(key->label);
		hw_gcm_arg a;

		if (key->cls != CKO_SECRET_KEY || key->ktype != CKK_AES || !key->can_encrypt)
			return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' may not wrap data keys (it is "
			               "not an AES envelope key)", key->label);
		if (nl == 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "a key without a label cannot be named "
			               "in a message");
		memset(&a, 0, sizeof(a));
		a.key = key;
		a.encrypt = true;
		a.aad = aad;
		a.aadlen = aadlen;
		a.in = (uint8_t *)dk;
		a.inlen = dklen;
		a.out = ct;
		a.outlen = sizeof(ct);
		e = hw_ctx_run(key->ctx, hw_op_gcm, &a, "AES-GCM wrapping of the data key in the HSM");
		if (e == HW_OK && a.outlen != dklen + ESDK_TAG_LEN)
			e = hw_fail(HW_ERR_HSM, 0, "the token returned %lu bytes of AES-GCM output",
			            (unsigned long)a.outlen);
		if (e != HW_OK)
			break;
		/* Raw AES keyring layout (raw-aes-keyring.md): the IV read back
		 * from the parameters, in case the token chose it. */
		hw_wbuf_str16(edks, w->cfg->ns, strlen(w->cfg->ns));
		hw_wbuf_u16(edks, (uint16_t)(nl + PINFO_TRAILER));
		hw_wbuf_put(edks, key->label, nl);
		hw_wbuf_u32(edks, WRAP_TAG_BITS);
		hw_wbuf_u32(edks, ESDK_IV_LEN);
		hw_wbuf_put(edks, a.iv, ESDK_IV_LEN);
		hw_wbuf_str16(edks, ct, a.outlen);
		if (edks->err != HW_OK)
			e = hw_fail(edks->err, 0, "encrypted data keys");
		else
			(*nedks)++;
	}
	OPENSSL_cleanse(ct, sizeof(ct));
	return e;
}

/* Raw RSA keyring layout (raw-rsa-keyring.md): no AAD, name alone as info. */
static hw_err
wrap_rsa(wrap_arg *w, const uint8_t *dk, size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	uint8_t ct[RSA_MAX_BYTES];
	size_t ctlen = 0;
	hw_err e = HW_OK;

	for (size_t i = 0; i < w->cfg->nrcpts && e == HW_OK; i++) {
		const rsa_rcpt *r = &w->cfg->rcpts[i];

		e = rsa_encrypt(r, w->cfg->rsa_pad, dk, dklen, ct, &ctlen);
		if (e != HW_OK)
			break;
		hw_wbuf_str16(edks, r->pid, strlen(r->pid));
		hw_wbuf_str16(edks, r->name, strlen(r->name));
		hw_wbuf_str16(edks, ct, ctlen);
		if (edks->err != HW_OK)
			e = hw_fail(edks->err, 0, "encrypted data keys");
		else
			(*nedks)++;
	}
	return e;
}

static uint8_t *
dup_bytes(const uint8_t *p, size_t n)
{
	uint8_t *d = malloc(n ? n : 1);

	if (d && n)
		memcpy(d, p, n);
	return d;
}

static hw_err
kr_wrap(void *arg, const esdk_suite *s, const uint8_t *aad, size_t aadlen, const uint8_t *dk,
        size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	wrap_arg *w = arg;
	size_t start = edks->len, n0 = *nedks;
	hw_err e;

	(void)s;
	if (w->replay) {
		/* The id covered the caller's context; the full one (with the
		 * cached signing key's public half) must match as well. */
		if (w->replay->eclen != aadlen ||
		    (aadlen && memcmp(w->replay->ec, aad, aadlen) != 0))
			return hw_fail(HW_ERR_CRYPTO, 0, "data-key cache: context mismatch");
		hw_wbuf_put(edks, w->replay->edks, w->replay->edkslen);
		*nedks += w->replay->nedks;
		return edks->err == HW_OK ? HW_OK : hw_fail(edks->err, 0, "encrypted data keys");
	}
	e = wrap_hsm(w, aad, aadlen, dk, dklen, edks, nedks);
	if (e == HW_OK)
		e = wrap_rsa(w, dk, dklen, edks, nedks);
	if (e == HW_OK && w->record) {
		w->rec_edkslen = edks->len - start;
		w->rec_nedks = *nedks - n0;
		w->rec_eclen = aadlen;
		w->rec_edks = dup_bytes(edks->p + start, w->rec_edkslen);
		w->rec_ec = dup_bytes(aad, aadlen);
		if (!w->rec_edks || !w->rec_ec)
			w->record = false;
	}
	return e;
}

typedef struct {
	hw_ctx *ctx;
	hw_key *const *allowed;
	size_t nallowed;
	const char *ns;
	hw_rsa_padding rsa_pad;
	hw_cache *cache;
	uint8_t part[64];
} unwrap_arg;

/* pkcs11:object=<name>, percent-encoded, so no name is read as a spec. */
static char *
label_uri(const uint8_t *name, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char *u = malloc(15 + 3 * n + 1), *p;

	if (!u)
		return NULL;
	p = u + sprintf(u, "pkcs11:object=");
	for (size_t i = 0; i < n; i++) {
		uint8_t c = name[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return u;
}

static hw_err
find_named(unwrap_arg *u, const uint8_t *name, size_t nl, hw_key **use, hw_key **owned)
{
	char *uri;
	hw_err e;

	*owned = NULL;
	if (u->allowed) {
		for (size_t i = 0; i < u->nallowed; i++)
			if (strlen(u->allowed[i]->label) == nl &&
			    memcmp(u->allowed[i]->label, name, nl) == 0) {
				*use = u->allowed[i];
				return HW_OK;
			}
		/* Another version of an allowed key (made before a rotation). */
		for (size_t i = 0; i < u->nallowed; i++)
			if (hw_key_find_sibling(u->allowed[i], name, nl, owned) == HW_OK) {
				*use = *owned;
				return HW_OK;
			}
		return HW_ERR_KEY_NOT_FOUND;
	}
	if (nl == 0 || nl > 128 || memchr(name, 0, nl))
		return HW_ERR_KEY_NOT_FOUND;
	uri = label_uri(name, nl);
	if (!uri)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = hw_key_find(u->ctx, uri, owned);
	free(uri);
	if (e == HW_OK)
		*use = *owned;
	return e;
}

static bool
is_aes(const hw_key *k)
{
	return k->cls == CKO_SECRET_KEY;
}

static bool
is_rsa_private(const hw_key *k)
{
	return k->cls == CKO_PRIVATE_KEY && k->ktype == CKK_RSA;
}

/*
 * The key an EDK of our namespace names, and how to use it: Raw AES
 * layout (name || 128 || 12 || IV) for AES keys, Raw RSA layout (the
 * whole provider info is the name) for RSA private keys.
 */
static hw_err
edk_key(unwrap_arg *u, const esdk_edk *k, size_t dklen, hw_key **use, hw_key **owned,
        const uint8_t **iv, size_t *nl)
{
	hw_err e;

	*use = *owned = NULL;
	*iv = NULL;
	if (k->pinfo_len >= PINFO_TRAILER && k->ct_len == dklen + ESDK_TAG_LEN) {
		hw_rbuf r;
		uint32_t tagbits, ivlen;

		*nl = k->pinfo_len - PINFO_TRAILER;
		hw_rbuf_init(&r, k->pinfo + *nl, PINFO_TRAILER);
		(void)hw_rbuf_u32(&r, &tagbits);
		(void)hw_rbuf_u32(&r, &ivlen);
		(void)hw_rbuf_bytes(&r, ESDK_IV_LEN, iv);
		if (tagbits == WRAP_TAG_BITS && ivlen == ESDK_IV_LEN) {
			e = find_named(u, k->pinfo, *nl, use, owned);
			if (e != HW_OK && e != HW_ERR_KEY_NOT_FOUND)
				return e;
			if (e == HW_OK && is_aes(*use))
				return HW_OK;
			hw_key_free(*owned);
			*use = *owned = NULL;
		}
		*iv = NULL;
	}
	*nl = k->pinfo_len;
	e = find_named(u, k->pinfo, k->pinfo_len, use, owned);
	if (e != HW_OK)
		return e;
	if (is_rsa_private(*use))
		return HW_OK;
	hw_key_free(*owned);
	*use = *owned = NULL;
	return HW_ERR_KEY_NOT_FOUND;
}

static hw_err
unwrap_aes(hw_key *key, const uint8_t *iv, const esdk_edk *k, const uint8_t *aad,
           size_t aadlen, uint8_t *dk, size_t dklen)
{
	uint8_t out[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
	hw_gcm_arg a;
	hw_err e;

	memset(&a, 0, sizeof(a));
	a.key = key;
	a.encrypt = false;
	memcpy(a.iv, iv, ESDK_IV_LEN);
	a.aad = aad;
	a.aadlen = aadlen;
	a.in = (uint8_t *)k->ct;
	a.inlen = k->ct_len;
	a.out = out;
	a.outlen = sizeof(out);
	e = hw_ctx_run(key->ctx, hw_op_gcm, &a, "AES-GCM unwrapping of the data key in the HSM");
	if (e == HW_OK && a.outlen != dklen)
		e = hw_fail(HW_ERR_HSM, 0, "the token returned a data key of %lu bytes",
		            (unsigned long)a.outlen);
	/* Some tokens report a failed tag check as a general error. */
	if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
		e = HW_ERR_INTEGRITY;
	if (e == HW_OK)
		memcpy(dk, out, dklen);
	OPENSSL_cleanse(out, sizeof(out));
	return e;
}

static hw_err
unwrap_hsm(unwrap_arg *u, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
           size_t dklen)
{
	size_t nsl = strlen(u->ns), tried = 0;
	hw_err hard = HW_OK;
	char hard_detail[256] = "", names[256] = "";
	size_t nlen = 0;

	for (size_t i = 0; i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];
		hw_key *key = NULL, *owned = NULL;
		const uint8_t *iv;
		size_t nl = 0;
		hw_err e;

		if (k->pid_len != nsl || memcmp(k->pid, u->ns, nsl) != 0)
			continue;
		e = edk_key(u, k, dklen, &key, &owned, &iv, &nl);
		if (nlen + nl + 4 < sizeof(names))
			nlen += (size_t)snprintf(names + nlen, sizeof(names) - nlen, "%s'%.*s'",
			                         nlen ? ", " : "", (int)nl, (const char *)k->pinfo);
		if (e == HW_ERR_KEY_NOT_FOUND)
			continue;
		if (e == HW_OK && !key->can_decrypt)
			e = hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' may not unwrap data keys",
			            key->label);
		if (e == HW_OK) {
			tried++;
			e = iv ? unwrap_aes(key, iv, k, aad, aadlen, dk, dklen) :
			    rsa_unwrap(key, u->rsa_pad, k->ct, k->ct_len, dk, dklen);
		}
		hw_key_free(owned);
		if (e == HW_OK)
			return HW_OK;
		if (e != HW_ERR_INTEGRITY && hard == HW_OK) {
			hard = e;
			snprintf(hard_detail, sizeof(hard_detail), "%s", hw_last_detail());
		}
	}
	if (hard != HW_OK)
		return hw_fail(hard, hw_last_ckrv(), "%s", hard_detail);
	if (tried)
		return hw_fail(HW_ERR_INTEGRITY, 0, "the data key wrapped for %s did not decrypt "
		               "(wrong encryption context or RSA padding, altered message, or "
		               "another key with that label)", names);
	if (!nlen)
		return hw_fail(u->allowed ? HW_ERR_WRONG_KEY : HW_ERR_KEY_NOT_FOUND, 0,
		               "the message has no data key wrapped by an HSM key of namespace "
		               "'%s'", u->ns);
	if (u->allowed)
		return hw_fail(HW_ERR_WRONG_KEY, 0, "the message's data key is wrapped for %s, "
		               "none of the keys allowed", names);
	return hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "the message's data key is wrapped for %s, "
	               "none of which is on the token", names);
}

static hw_err
kr_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
          size_t dklen)
{
	unwrap_arg *u = arg;
	uint8_t id[CACHE_ID_LEN];
	cache_mat m;
	hw_err e;

	if (u->cache) {
		e = dec_cache_id(u->part, h, aad, aadlen, id);
		if (e != HW_OK)
			return e;
		if (cache_get(u->cache, ENT_DEC, id, 0, &m)) {
			bool fits = m.dklen == dklen;

			if (fits)
				memcpy(dk, m.dk, dklen);
			mat_clear(&m);
			if (fits)
				return HW_OK;
		}
	}
	e = unwrap_hsm(u, h, aad, aadlen, dk, dklen);
	if (e == HW_OK && u->cache)
		cache_put(u->cache, ENT_DEC, id, 0, dk, dklen, NULL, 0, 0, NULL, 0, NULL);
	return e;
}

/* ---------------------------------------------------------------- */
/* Encryption API                                                    */

struct hw_enc_stream {
	esdk_enc *e;
	hw_write_cb write;
	void *arg;
};

static hw_err
check_keys(hw_key *const *keys, size_t n)
{
	if (!keys || n == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "at least one key is needed");
	if (n > UINT16_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "too many keys");
	for (size_t i = 0; i < n; i++)
		if (!keys[i])
			return hw_fail(HW_ERR_INVALID_ARG, 0, "key %zu is NULL", i);
	return HW_OK;
}

/*
 * The caching CMM's encrypt side, around the keyring: a hit gives the
 * data key, its EDKs and signing key of an earlier message made for the
 * same keys, suite and context; a miss makes fresh ones (here, so that
 * they can be cached) and records the EDKs the keyring writes.
 */
typedef struct {
	wrap_arg *w;
	cache_mat m;
	uint8_t id[CACHE_ID_LEN];
	uint8_t dk[ESDK_MAX_KEY_LEN];
	size_t dklen;
	EVP_PKEY *sk;
} enc_caching;

static hw_err
enc_cache_begin(const hw_envelope_cfg *c, hw_key *const *keys, size_t nkeys, const esdk_ec *uec,
                uint64_t len, enc_caching *ec, esdk_enc_params *p)
{
	const esdk_suite *s = esdk_suite_get(c->suite);
	uint8_t part[64], *ser = NULL;
	size_t serlen = 0;
	hw_err e;

	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "suite 0x%04x", c->suite);
	e = esdk_ec_serialize(uec, &ser, &serlen);
	if (e == HW_OK)
		e = enc_partition(c, keys, nkeys, part);
	if (e == HW_OK)
		e = enc_cache_id(part, c->suite, ser, serlen, ec->id);
	free(ser);
	if (e != HW_OK)
		return e;
	if (cache_get(c->cache, ENT_ENC, ec->id, len, &ec->m)) {
		if (ec->m.dklen == s->key_len) {
			p->dk = ec->m.dk;
			p->sign_key = ec->m.sk;
			ec->w->replay = &ec->m;
			return HW_OK;
		}
		mat_clear(&ec->m);
	}
	ec->dklen = s->key_len;
	if (RAND_bytes(ec->dk, (int)ec->dklen) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes");
	if (s->sig_curve && !(ec->sk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", s->sig_curve)))
		return hw_fail(HW_ERR_CRYPTO, 0, "ECDSA %s key generation", s->sig_curve);
	p->dk = ec->dk;
	p->sign_key = ec->sk;
	ec->w->record = true;
	return HW_OK;
}

static void
enc_cache_end(const hw_envelope_cfg *c, hw_err e, uint64_t len, enc_caching *ec)
{
	wrap_arg *w = ec->w;

	if (e == HW_OK && w->record)
		cache_put(c->cache, ENT_ENC, ec->id, len, ec->dk, ec->dklen, w->rec_edks,
		          w->rec_edkslen, w->rec_nedks, w->rec_ec, w->rec_eclen, ec->sk);
	mat_clear(&ec->m);
	OPENSSL_cleanse(ec->dk, sizeof(ec->dk));
	EVP_PKEY_free(ec->sk);
	free(w->rec_edks);
	free(w->rec_ec);
}

/* len: the whole plaintext's length if known (one-shot), else NULL. */
static hw_err
enc_open(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys, const hw_ectx *ec,
         const uint64_t *len, esdk_write_fn out, void *out_arg, esdk_enc **res)
{
	const hw_envelope_cfg *c = cfg_or_default(cfg);
	wrap_arg w;
	enc_caching cc;
	esdk_enc_params p;
	esdk_ec uec;
	uint8_t *ser;
	/* The SDK caches only when the length is known and within the limit. */
	bool caching = c->cache && len && *len <= c->cache->max_bytes;
	hw_err e = nkeys || !c->nrcpts ? check_keys(keys, nkeys) : HW_OK;

	if (e != HW_OK)
		return e;
	/* Before any HSM work (encrypt.md: fail if more EDKs than the maximum). */
	if (c->max_edks && nkeys + c->nrcpts > c->max_edks)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "%zu keys, more than the limit of %u encrypted "
		               "data keys", nkeys + c->nrcpts, c->max_edks);
	e = ec_import(ec, &uec, &ser);
	if (e != HW_OK)
		return e;
	memset(&w, 0, sizeof(w));
	w.keys = keys;
	w.nkeys = nkeys;
	w.cfg = c;
	memset(&cc, 0, sizeof(cc));
	cc.w = &w;
	memset(&p, 0, sizeof(p));
	p.suite = c->suite;
	p.frame_len = c->frame_len;
	p.max_edks = c->max_edks;
	p.wrap = kr_wrap;
	p.wrap_arg = &w;
	p.out = out;
	p.out_arg = out_arg;
	p.threads = cfg_threads(c);
	if (caching)
		e = enc_cache_begin(c, keys, nkeys, &uec, *len, &cc, &p);
	if (e == HW_OK)
		e = esdk_enc_new(&p, &uec, res);
	if (caching)
		enc_cache_end(c, e, *len, &cc);
	esdk_ec_free(&uec);
	free(ser);
	return e;
}

HW_EXPORT hw_err
hw_enc_stream_new(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys,
                  const hw_ectx *ec, hw_write_cb write, void *arg, hw_enc_stream **out)
{
	hw_enc_stream *s;
	hw_err e;

	if (!write || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_enc_stream_new");
	hw_clear_error();
	s = calloc(1, sizeof(*s));
	if (!s)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = enc_open(cfg, keys, nkeys, ec, NULL, write, arg, &s->e);
	if (e != HW_OK) {
		free(s);
		return e;
	}
	*out = s;
	return HW_OK;
}

HW_EXPORT hw_err
hw_enc_stream_update(hw_enc_stream *s, const uint8_t *in, size_t len)
{
	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_enc_stream_update");
	return esdk_enc_update(s->e, in, len);
}

HW_EXPORT hw_err
hw_enc_stream_final(hw_enc_stream *s)
{
	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_enc_stream_final");
	return esdk_enc_final(s->e);
}

HW_EXPORT void
hw_enc_stream_free(hw_enc_stream *s)
{
	if (!s)
		return;
	esdk_enc_free(s->e);
	free(s);
}

/* One-shot output: a growing buffer, wiped on growth and on failure. */
static hw_err
to_wbuf(void *arg, const uint8_t *p, size_t n)
{
	hw_wbuf *w = arg;

	hw_wbuf_put(w, p, n);
	return w->err == HW_OK ? HW_OK : hw_fail(w->err, 0, "output buffer");
}

HW_EXPORT hw_err
hw_envelope_encrypt(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys,
                    const hw_ectx *ec, const uint8_t *in, size_t inlen, uint8_t **out,
                    size_t *outlen)
{
	esdk_enc *enc = NULL;
	uint64_t len = inlen;
	hw_wbuf w;
	hw_err e;

	if ((!in && inlen) || !out || !outlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_encrypt");
	hw_clear_error();
	hw_wbuf_init(&w, SIZE_MAX);
	e = enc_open(cfg, keys, nkeys, ec, &len, to_wbuf, &w, &enc);
	if (e == HW_OK)
		e = esdk_enc_update(enc, in, inlen);
	if (e == HW_OK)
		e = esdk_enc_final(enc);
	esdk_enc_free(enc);
	if (e != HW_OK) {
		hw_wbuf_free(&w);
		return e;
	}
	return hw_wbuf_finish(&w, out, outlen);
}

/* ---------------------------------------------------------------- */
/* Decryption API                                                    */

struct hw_dec_stream {
	esdk_dec *d;
	unwrap_arg u;
	esdk_ec req;
	uint8_t *req_ser;
	hw_key **allowed;           /* copy of the caller's array */
	char *ns;                   /* copy: cfg may be freed while the stream lives */
};

static hw_err
check_required(const esdk_ec *req)
{
	size_t n = strlen(ESDK_RESERVED_PREFIX);

	for (size_t i = 0; i < req->n; i++)
		if (req->p[i].klen >= n && memcmp(req->p[i].k, ESDK_RESERVED_PREFIX, n) == 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "required context keys may not start "
			               "with 'aws-crypto-'");
	return HW_OK;
}

static hw_err
dec_open(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed, size_t nallowed,
         const hw_ectx *required, esdk_write_fn out, void *out_arg, hw_dec_stream **res)
{
	const hw_envelope_cfg *c = cfg_or_default(cfg);
	hw_dec_stream *s;
	esdk_dec_params p;
	hw_err e;

	if (allowed ? (nallowed == 0 || check_keys(allowed, nallowed) != HW_OK) : !ctx)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "give allowed keys, or a context to find "
		               "keys in");
	s = calloc(1, sizeof(*s));
	if (!s)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (allowed) {
		s->allowed = malloc(nallowed * sizeof(*s->allowed));
		if (!s->allowed) {
			free(s);
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		}
		memcpy(s->allowed, allowed, nallowed * sizeof(*s->allowed));
	}
	s->ns = strdup(c->ns);
	s->u.ctx = ctx;
	s->u.allowed = s->allowed;
	s->u.nallowed = nallowed;
	s->u.ns = s->ns;
	s->u.rsa_pad = c->rsa_pad;
	s->u.cache = c->cache;
	e = s->ns ? ec_import(required, &s->req, &s->req_ser) : hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (e == HW_OK && c->cache)
		e = dec_partition(c, ctx, s->allowed, nallowed, s->u.part);
	if (e == HW_OK)
		e = check_required(&s->req);
	if (e != HW_OK)
		goto fail;
	memset(&p, 0, sizeof(p));
	p.allow_legacy = c->policy == HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT;
	p.reject_signed = c->reject_signed;
	p.max_edks = c->max_edks;
	p.max_buffer = c->max_buffer;
	p.required = &s->req;
	p.unwrap = kr_unwrap;
	p.unwrap_arg = &s->u;
	p.out = out;
	p.out_arg = out_arg;
	p.threads = cfg_threads(c);
	e = esdk_dec_new(&p, &s->d);
	if (e != HW_OK)
		goto fail;
	*res = s;
	return HW_OK;
fail:
	hw_dec_stream_free(s);
	return e;
}

HW_EXPORT hw_err
hw_dec_stream_new(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed,
                  size_t nallowed, const hw_ectx *required, hw_write_cb write, void *arg,
                  hw_dec_stream **out)
{
	if (!write || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_dec_stream_new");
	hw_clear_error();
	return dec_open(ctx, cfg, allowed, nallowed, required, write, arg, out);
}

HW_EXPORT hw_err
hw_dec_stream_update(hw_dec_stream *s, const uint8_t *in, size_t len)
{
	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_dec_stream_update");
	return esdk_dec_update(s->d, in, len);
}

HW_EXPORT hw_err
hw_dec_stream_final(hw_dec_stream *s, hw_ectx **ec_out)
{
	hw_err e;

	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_dec_stream_final");
	e = esdk_dec_final(s->d);
	if (e == HW_OK && ec_out)
		e = ec_export(esdk_dec_context(s->d), ec_out);
	return e;
}

HW_EXPORT void
hw_dec_stream_free(hw_dec_stream *s)
{
	if (!s)
		return;
	esdk_dec_free(s->d);
	esdk_ec_free(&s->req);
	free(s->req_ser);
	free(s->allowed);
	free(s->ns);
	free(s);
}

HW_EXPORT hw_err
hw_envelope_decrypt(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed,
                    size_t nallowed, const hw_ectx *required, const uint8_t *in,
                    size_t inlen, uint8_t **out, size_t *outlen, hw_ectx **ec_out)
{
	hw_dec_stream *s = NULL;
	hw_ectx *ec = NULL;
	hw_wbuf w;
	hw_err e;

	if (!in || !out || !outlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_decrypt");
	hw_clear_error();
	hw_wbuf_init(&w, SIZE_MAX);
	e = dec_open(ctx, cfg, allowed, nallowed, required, to_wbuf, &w, &s);
	if (e == HW_OK)
		e = esdk_dec_update(s->d, in, inlen);
	if (e == HW_OK)
		e = hw_dec_stream_final(s, ec_out ? &ec : NULL);
	hw_dec_stream_free(s);
	if (e == HW_OK)
		e = hw_wbuf_finish(&w, out, outlen);
	else
		hw_wbuf_free(&w);
	if (e != HW_OK) {
		hw_ectx_free(ec);
		return e;
	}
	if (ec_out)
		*ec_out = ec;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Inspection                                                        */

/* NUL-terminated copy; an embedded NUL becomes U+FFFD so the string is whole. */
static char *
text_dup(const uint8_t *p, size_t n)
{
	size_t nul = 0;
	char *s, *q;

	for (size_t i = 0; i < n; i++)
		nul += p[i] == 0;
	s = malloc(n + 2 * nul + 1);
	if (!s)
		return NULL;
	q = s;
	for (size_t i = 0; i < n; i++) {
		if (p[i]) {
			*q++ = (char)p[i];
		} else {
			*q++ = (char)0xef;
			*q++ = (char)0xbf;
			*q++ = (char)0xbd;
		}
	}
	*q = '\0';
	return s;
}

HW_EXPORT void
hw_envelope_info_free(hw_envelope_info *info)
{
	if (!info)
		return;
	for (size_t i = 0; info->pairs && i < info->npairs; i++) {
		free(info->pairs[i].key);
		free(info->pairs[i].value);
	}
	for (size_t i = 0; info->edks && i < info->nedks; i++) {
		free(info->edks[i].provider_id);
		free(info->edks[i].provider_info);
		free(info->edks[i].key_name);
	}
	free(info->pairs);
	free(info->edks);
	free(info);
}

static hw_err
info_fill(const esdk_header *h, hw_envelope_info *info)
{
	info->version = h->version;
	info->suite = h->suite->id;
	info->suite_name = h->suite->name;
	info->committing = h->suite->kdf == ESDK_KDF_COMMIT;
	info->signed_ = h->suite->sig_curve != NULL;
	memcpy(info->message_id, h->msgid, h->msgid_len);
	info->message_id_len = h->msgid_len;
	info->framed = h->content_type == ESDK_CT_FRAMED;
	info->frame_length = h->frame_len;
	info->header_len = h->len;
	info->pairs = calloc(h->ec.n ? h->ec.n : 1, sizeof(*info->pairs));
	info->edks = calloc(h->nedks, sizeof(*info->edks));
	if (!info->pairs || !info->edks)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	for (size_t i = 0; i < h->ec.n; i++) {
		info->pairs[i].key = text_dup(h->ec.p[i].k, h->ec.p[i].klen);
		info->pairs[i].value = text_dup(h->ec.p[i].v, h->ec.p[i].vlen);
		info->npairs++;
		if (!info->pairs[i].key || !info->pairs[i].value)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (size_t i = 0; i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];
		hw_envelope_edk *o = &info->edks[i];

		info->nedks++;
		o->provider_id = text_dup(k->pid, k->pid_len);
		o->provider_info = malloc(k->pinfo_len ? k->pinfo_len : 1);
		o->provider_info_len = k->pinfo_len;
		o->ciphertext_len = k->ct_len;
		if (!o->provider_id || !o->provider_info)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		memcpy(o->provider_info, k->pinfo, k->pinfo_len);
		/* Raw-AES layout: name || 128 || 12 || IV. */
		if (k->pinfo_len >= PINFO_TRAILER) {
			const uint8_t *t = k->pinfo + k->pinfo_len - PINFO_TRAILER;
			static const uint8_t want[8] = { 0, 0, 0, 0x80, 0, 0, 0, 0x0c };

			if (memcmp(t, want, sizeof(want)) == 0) {
				o->key_name = text_dup(k->pinfo, k->pinfo_len - PINFO_TRAILER);
				if (!o->key_name)
					return hw_fail(HW_ERR_NOMEM, 0, NULL);
			}
		}
	}
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_inspect(const uint8_t *in, size_t inlen, hw_envelope_info **out)
{
	esdk_header h;
	hw_envelope_info *info;
	hw_err e;

	if (!in || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_inspect");
	hw_clear_error();
	e = esdk_header_parse(in, inlen, 0, &h, NULL);
	if (e != HW_OK)
		return e;
	info = calloc(1, sizeof(*info));
	if (!info)
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
	else
		e = info_fill(&h, info);
	esdk_header_free(&h);
	if (e != HW_OK) {
		hw_envelope_info_free(info);
		return e;
	}
	*out = info;
	return HW_OK;
}
