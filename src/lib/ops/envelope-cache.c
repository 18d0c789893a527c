/*
 * The data-key cache: the SDK's caching CMM with a local LRU cache, and
 * the partition and entry ids that keep entries of other keys apart.
 */
#include "ops/envelope.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

void
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
bool
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
void
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

hw_err
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

hw_err
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
hw_err
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
hw_err
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

