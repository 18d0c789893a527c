/*
 * cluster.c - one logical HSM made of several tokens holding the same keys
 * (a CloudHSM cluster, a Luna HA group, or SoftHSM tokens replicated with
 * the backup ceremony), possibly in different modules or behind p11-kit's
 * remoting.
 *
 * Each operation goes to the next healthy member (round robin). A member
 * whose failure is about the member (device, module, token, session or
 * login trouble, after ctx.c's own bounded retries) is taken out for a
 * back-off period that doubles with each consecutive failure, and the
 * operation is run again on the next member: every operation here is safe
 * to repeat (a repeated encryption only draws a fresh IV or data key).
 * Failures about the input (integrity, format, wrong key, purpose) are the
 * same on every member and are returned at once.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RETRY_MIN_MS 1000u
#define DEFAULT_RETRY_MAX_MS 30000u

typedef struct {
	char *label;
	hw_key *key;
} member_key;

typedef struct {
	/* Held for reading while an operation uses ctx or its keys, for
	 * writing while member_rebuild() replaces them. */
	pthread_rwlock_t use;
	hw_ctx *ctx;
	pthread_mutex_t lock;       /* guards everything below */
	bool opened;
	member_key *keys;           /* keys found by label, kept for reuse */
	size_t nkeys;
	uint64_t down_until_ms;     /* 0: healthy */
	unsigned consecutive_failures;
	unsigned long ops, failures;
	hw_err last_err;
	unsigned long last_ckrv;
	char last_detail[256];
	/* Kinds of operation the member cannot do (bit per op_kind): it is
	 * not asked again. p11-kit 0.24's remoting, for one, does not carry
	 * AES-GCM parameters, yet signs fine. */
	unsigned unsupported;
	unsigned long rebuilt_at;   /* failures count when last rebuilt */
} member;

/* What an operation needs from a member's token. */
typedef enum {
	OPK_AES_GCM = 1u << 0,
	OPK_SIGN = 1u << 1,
} op_kind;

struct hw_cluster {
	member *m;
	size_t n, cap;
	atomic_uint next;
	unsigned retry_min_ms, retry_max_ms;
};

/* An operation on one member; key is the member's key for the label the
 * operation names, or NULL when the input names its key. */
typedef hw_err (*member_op)(hw_ctx *ctx, hw_key *key, void *arg);

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

HW_EXPORT hw_err
hw_cluster_new(hw_cluster **out)
{
	hw_cluster *cl;

	if (!out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no output");
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	atomic_init(&cl->next, 0);
	cl->retry_min_ms = DEFAULT_RETRY_MIN_MS;
	cl->retry_max_ms = DEFAULT_RETRY_MAX_MS;
	*out = cl;
	return HW_OK;
}

HW_EXPORT hw_err
hw_cluster_add(hw_cluster *cl, hw_ctx *member_ctx)
{
	member *m;

	if (!cl || !member_ctx)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no cluster or member");
	if (cl->n == cl->cap) {
		size_t cap = cl->cap ? cl->cap * 2 : 4;

		m = realloc(cl->m, cap * sizeof(*m));
		if (!m)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		cl->m = m;
		cl->cap = cap;
	}
	m = &cl->m[cl->n];
	memset(m, 0, sizeof(*m));
	if (pthread_mutex_init(&m->lock, NULL) != 0)
		return hw_fail(HW_ERR_NOMEM, 0, "mutex");
	if (pthread_rwlock_init(&m->use, NULL) != 0) {
		pthread_mutex_destroy(&m->lock);
		return hw_fail(HW_ERR_NOMEM, 0, "rwlock");
	}
	m->ctx = member_ctx;
	cl->n++;
	return HW_OK;
}

HW_EXPORT void
hw_cluster_set_retry(hw_cluster *cl, unsigned min_ms, unsigned max_ms)
{
	if (!cl || min_ms == 0 || max_ms < min_ms)
		return;
	cl->retry_min_ms = min_ms;
	cl->retry_max_ms = max_ms;
}

HW_EXPORT size_t
hw_cluster_size(const hw_cluster *cl)
{
	return cl ? cl->n : 0;
}

HW_EXPORT hw_err
hw_cluster_member_status(hw_cluster *cl, size_t i, hw_cluster_member *st)
{
	member *m;
	uint64_t now = now_ms();

	if (!cl || !st || i >= cl->n)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no such member");
	m = &cl->m[i];
	pthread_mutex_lock(&m->lock);
	memset(st, 0, sizeof(*st));
	snprintf(st->token_uri, sizeof(st->token_uri), "%s",
	         m->opened && hw_ctx_token_uri(m->ctx) ? hw_ctx_token_uri(m->ctx) : "");
	st->healthy = m->down_until_ms == 0;
	st->retry_in_ms = m->down_until_ms > now ? m->down_until_ms - now : 0;
	st->ops = m->ops;
	st->failures = m->failures;
	st->last_error = m->last_err;
	st->last_ckrv = m->last_ckrv;
	snprintf(st->last_detail, sizeof(st->last_detail), "%s", m->last_detail);
	pthread_mutex_unlock(&m->lock);
	return HW_OK;
}

HW_EXPORT void
hw_cluster_free(hw_cluster *cl)
{
	if (!cl)
		return;
	for (size_t i = 0; i < cl->n; i++) {
		member *m = &cl->m[i];

		for (size_t k = 0; k < m->nkeys; k++) {
			hw_key_free(m->keys[k].key);
			free(m->keys[k].label);
		}
		free(m->keys);
		hw_ctx_free(m->ctx);
		pthread_mutex_destroy(&m->lock);
		pthread_rwlock_destroy(&m->use);
	}
	free(cl->m);
	free(cl);
}

/* Errors that say something about this member, not about the input. */
static bool
is_member_failure(hw_err e)
{
	switch (e) {
	case HW_ERR_MODULE:
	case HW_ERR_TOKEN_NOT_FOUND:
	case HW_ERR_PIN_SOURCE:
	case HW_ERR_PIN_INCORRECT:
	case HW_ERR_PIN_LOCKED:
	case HW_ERR_HSM:
	case HW_ERR_DEVICE:
	case HW_ERR_NOT_LOGGED_IN:
	case HW_ERR_NO_FREE_SLOT:
		return true;
	default:
		return false;
	}
}

static void
mark(hw_cluster *cl, member *m, hw_err e)
{
	pthread_mutex_lock(&m->lock);
	if (e == HW_OK || !is_member_failure(e)) {
		m->ops++;
		m->down_until_ms = 0;
		m->consecutive_failures = 0;
	} else {
		unsigned shift = m->consecutive_failures < 16 ? m->consecutive_failures : 16;
		uint64_t wait = (uint64_t)cl->retry_min_ms << shift;

		if (wait > cl->retry_max_ms)
			wait = cl->retry_max_ms;
		m->failures++;
		m->consecutive_failures++;
		m->down_until_ms = now_ms() + wait;
		m->last_err = e;
		m->last_ckrv = hw_last_ckrv();
		snprintf(m->last_detail, sizeof(m->last_detail), "%s", hw_last_detail());
	}
	pthread_mutex_unlock(&m->lock);
}

/* The member's key for label, found once and kept (hw_key re-finds its
 * handle itself after fork, re-login or token return). */
static hw_err
member_find(member *m, const char *label, hw_key **out)
{
	member_key *nk;
	hw_key *key = NULL;
	hw_err e = HW_OK;

	pthread_mutex_lock(&m->lock);
	if (!m->opened) {
		e = hw_ctx_open(m->ctx);
		if (e == HW_OK)
			m->opened = true;
	}
	for (size_t i = 0; e == HW_OK && label && i < m->nkeys; i++) {
		if (strcmp(m->keys[i].label, label) == 0) {
			*out = m->keys[i].key;
			pthread_mutex_unlock(&m->lock);
			return HW_OK;
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (e != HW_OK || !label) {
		*out = NULL;
		return e;
	}

	/* Found outside the lock: a search is a PKCS#11 round trip. */
	e = hw_key_find(m->ctx, label, &key);
	if (e != HW_OK)
		return e;
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->nkeys; i++) {
		if (strcmp(m->keys[i].label, label) == 0) {
			/* Another thread was quicker. */
			hw_key_free(key);
			*out = m->keys[i].key;
			pthread_mutex_unlock(&m->lock);
			return HW_OK;
		}
	}
	nk = realloc(m->keys, (m->nkeys + 1) * sizeof(*nk));
	if (!nk || !(nk[m->nkeys].label = strdup(label))) {
		if (nk)
			m->keys = nk;
		pthread_mutex_unlock(&m->lock);
		hw_key_free(key);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	m->keys = nk;
	nk[m->nkeys].key = key;
	m->nkeys++;
	pthread_mutex_unlock(&m->lock);
	*out = key;
	return HW_OK;
}

static bool
member_is_down(member *m, uint64_t now)
{
	bool down;

	pthread_mutex_lock(&m->lock);
	down = m->down_until_ms > now;
	pthread_mutex_unlock(&m->lock);
	return down;
}

static bool
member_can(member *m, op_kind kind)
{
	bool can;

	pthread_mutex_lock(&m->lock);
	can = !(m->unsupported & kind);
	pthread_mutex_unlock(&m->lock);
	return can;
}

static void
member_cannot(member *m, op_kind kind)
{
	pthread_mutex_lock(&m->lock);
	m->unsupported |= kind;
	pthread_mutex_unlock(&m->lock);
}

/*
 * A member that failed is given a fresh context before it is tried again:
 * some modules do not recover by themselves (p11-kit's remoting client
 * stays disconnected from a restarted server until it is finalised and
 * initialised again, which releasing the module's last context does).
 * The PIN is carried over, so a prompt is not shown again.
 */
static void
member_rebuild(member *m, uint64_t now)
{
	hw_ctx *old, *nc = NULL;
	hw_err e;

	pthread_rwlock_wrlock(&m->use);
	pthread_mutex_lock(&m->lock);
	if (m->consecutive_failures == 0 || m->down_until_ms > now || m->rebuilt_at == m->failures) {
		pthread_mutex_unlock(&m->lock);
		pthread_rwlock_unlock(&m->use);
		return;
	}
	m->rebuilt_at = m->failures;
	pthread_mutex_unlock(&m->lock);

	old = m->ctx;
	e = hw_ctx_new(&nc);
	if (e == HW_OK && old->module_spec)
		e = hw_ctx_set_module(nc, old->module_spec);
	if (e == HW_OK && old->module_init_args)
		e = hw_ctx_set_module_init_args(nc, old->module_init_args);
	if (e == HW_OK && old->token_spec)
		e = hw_ctx_set_token(nc, old->token_spec);
	if (e == HW_OK && old->pin_source)
		e = hw_ctx_set_pin_source(nc, old->pin_source);
	if (e != HW_OK) {
		/* Keep the old one: it may still recover by itself. */
		hw_ctx_free(nc);
		pthread_rwlock_unlock(&m->use);
		return;
	}
	hw_ctx_set_pin_callback(nc, old->pin_cb, old->pin_cb_arg);
	nc->pool_max = old->pool_max;
	if (old->have_pin) {
		memcpy(nc->pin, old->pin, old->pin_len);
		nc->pin_len = old->pin_len;
		nc->have_pin = true;
	}
	for (size_t k = 0; k < m->nkeys; k++) {
		hw_key_free(m->keys[k].key);
		free(m->keys[k].label);
	}
	free(m->keys);
	m->keys = NULL;
	m->nkeys = 0;
	/* The old context goes first, so that the module's last reference
	 * is dropped and the new context initialises it afresh. */
	hw_ctx_free(old);
	m->ctx = nc;
	m->opened = false;
	pthread_rwlock_unlock(&m->use);
}

/*
 * Runs op on one member after another until one gives an answer that is
 * not a member failure. Members in their back-off period are tried last,
 * not skipped: when every member failed recently, one of them may be back.
 */
static hw_err
cluster_run(hw_cluster *cl, op_kind kind, const char *label, member_op op, void *arg,
            const char *what)
{
	hw_err e = HW_ERR_INVALID_ARG, missing = HW_OK;
	unsigned long ckrv = 0;
	char detail[256] = "";
	size_t start;
	uint64_t now = now_ms();

	if (!cl || cl->n == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "empty cluster");
	start = atomic_fetch_add(&cl->next, 1) % cl->n;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < cl->n; i++) {
			member *m = &cl->m[(start + i) % cl->n];
			hw_key *key = NULL;

			if (member_is_down(m, now) != (pass == 1) || !member_can(m, kind))
				continue;
			member_rebuild(m, now);
			pthread_rwlock_rdlock(&m->use);
			e = member_find(m, label, &key);
			if (e == HW_OK)
				e = op(m->ctx, key, arg);
			pthread_rwlock_unlock(&m->use);
			if (e == HW_ERR_KEY_NOT_FOUND || e == HW_ERR_UNSUPPORTED) {
				/* Not replicated there (yet), or a mechanism this
				 * member lacks: another member may serve it. */
				if (e == HW_ERR_UNSUPPORTED)
					member_cannot(m, kind);
				if (missing != HW_ERR_KEY_NOT_FOUND)
					missing = e;
				snprintf(detail, sizeof(detail), "%s", hw_last_detail());
				continue;
			}
			mark(cl, m, e);
			if (!is_member_failure(e))
				return e;
			ckrv = hw_last_ckrv();
			snprintf(detail, sizeof(detail), "%s", hw_last_detail());
		}
	}
	if (missing != HW_OK)
		return hw_fail(missing, 0, "%s: on no member of the cluster (%s)", what, detail);
	return hw_fail(e, ckrv, "%s: every member of the cluster failed (last: %s)", what, detail);
}

/* ------------------------------------------------------------------ */
/* Operations.                                                         */

typedef struct {
	const hw_ectx *ec;
	const uint8_t *in, *aad;
	size_t inlen, aadlen;
	uint8_t *pt32;              /* data key plaintext */
	uint8_t **out;
	size_t *outlen;
	hw_sig_alg alg;
} op_args;

static hw_err
op_datakey_generate(hw_ctx *ctx, hw_key *key, void *arg)
{
	op_args *a = arg;

	(void)ctx;
	return hw_datakey_generate(key, a->ec, a->pt32, a->out, a->outlen);
}

HW_EXPORT hw_err
hw_cluster_datakey_generate(hw_cluster *cl, const char *label, const hw_ectx *ec,
                            uint8_t plaintext[HW_DATAKEY_LEN],
                            uint8_t **wrapped, size_t *wrappedlen)
{
	op_args a = { .ec = ec, .pt32 = plaintext, .out = wrapped, .outlen = wrappedlen };

	if (!label)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key label");
	return cluster_run(cl, OPK_AES_GCM, label, op_datakey_generate, &a,
	                   "data key generation");
}

static hw_err
op_datakey_decrypt(hw_ctx *ctx, hw_key *key, void *arg)
{
	op_args *a = arg;

	return hw_datakey_decrypt(ctx, key, a->ec, a->in, a->inlen, a->pt32);
}

HW_EXPORT hw_err
hw_cluster_datakey_decrypt(hw_cluster *cl, const hw_ectx *ec, const uint8_t *wrapped,
                           size_t wrappedlen, uint8_t plaintext[HW_DATAKEY_LEN])
{
	op_args a = { .ec = ec, .in = wrapped, .inlen = wrappedlen, .pt32 = plaintext };

	return cluster_run(cl, OPK_AES_GCM, NULL, op_datakey_decrypt, &a,
	                   "data key decryption");
}

static hw_err
op_encrypt(hw_ctx *ctx, hw_key *key, void *arg)
{
	op_args *a = arg;

	(void)ctx;
	return hw_encrypt(key, a->in, a->inlen, a->aad, a->aadlen, a->out, a->outlen);
}

HW_EXPORT hw_err
hw_cluster_encrypt(hw_cluster *cl, const char *label, const uint8_t *pt, size_t ptlen,
                   const uint8_t *aad, size_t aadlen, uint8_t **blob, size_t *bloblen)
{
	op_args a = { .in = pt, .inlen = ptlen, .aad = aad, .aadlen = aadlen,
	              .out = blob, .outlen = bloblen };

	if (!label)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key label");
	return cluster_run(cl, OPK_AES_GCM, label, op_encrypt, &a, "encryption");
}

static hw_err
op_decrypt(hw_ctx *ctx, hw_key *key, void *arg)
{
	op_args *a = arg;

	return hw_decrypt(ctx, key, a->in, a->inlen, a->aad, a->aadlen, a->out, a->outlen);
}

HW_EXPORT hw_err
hw_cluster_decrypt(hw_cluster *cl, const uint8_t *blob, size_t bloblen,
                   const uint8_t *aad, size_t aadlen, uint8_t **pt, size_t *ptlen)
{
	op_args a = { .in = blob, .inlen = bloblen, .aad = aad, .aadlen = aadlen,
	              .out = pt, .outlen = ptlen };

	return cluster_run(cl, OPK_AES_GCM, NULL, op_decrypt, &a, "decryption");
}

static hw_err
op_sign(hw_ctx *ctx, hw_key *key, void *arg)
{
	op_args *a = arg;

	(void)ctx;
	return hw_sign(key, a->alg, a->in, a->inlen, a->out, a->outlen);
}

HW_EXPORT hw_err
hw_cluster_sign(hw_cluster *cl, const char *label, hw_sig_alg alg, const uint8_t *msg,
                size_t len, uint8_t **sig, size_t *siglen)
{
	op_args a = { .alg = alg, .in = msg, .inlen = len, .out = sig, .outlen = siglen };

	if (!label)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key label");
	return cluster_run(cl, OPK_SIGN, label, op_sign, &a, "signing");
}

typedef struct {
	const hw_envelope_cfg *cfg;
	const hw_ectx *ec;
	const uint8_t *in;
	size_t inlen;
	uint8_t **out;
	size_t *outlen;
	hw_ectx **ec_out;
} env_args;

static hw_err
op_envelope_encrypt(hw_ctx *ctx, hw_key *key, void *arg)
{
	env_args *a = arg;

	(void)ctx;
	return hw_envelope_encrypt(a->cfg, &key, 1, a->ec, a->in, a->inlen, a->out, a->outlen);
}

HW_EXPORT hw_err
hw_cluster_envelope_encrypt(hw_cluster *cl, const hw_envelope_cfg *cfg, const char *label,
                            const hw_ectx *ec, const uint8_t *in, size_t inlen,
                            uint8_t **out, size_t *outlen)
{
	env_args a = { .cfg = cfg, .ec = ec, .in = in, .inlen = inlen, .out = out,
	               .outlen = outlen };

	if (!label)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key label");
	return cluster_run(cl, OPK_AES_GCM, label, op_envelope_encrypt, &a,
	                   "envelope encryption");
}

static hw_err
op_envelope_decrypt(hw_ctx *ctx, hw_key *key, void *arg)
{
	env_args *a = arg;

	(void)key;
	return hw_envelope_decrypt(ctx, a->cfg, NULL, 0, a->ec, a->in, a->inlen, a->out,
	                           a->outlen, a->ec_out);
}

HW_EXPORT hw_err
hw_cluster_envelope_decrypt(hw_cluster *cl, const hw_envelope_cfg *cfg,
                            const hw_ectx *required, const uint8_t *in, size_t inlen,
                            uint8_t **out, size_t *outlen, hw_ectx **ec_out)
{
	env_args a = { .cfg = cfg, .ec = required, .in = in, .inlen = inlen, .out = out,
	               .outlen = outlen, .ec_out = ec_out };

	return cluster_run(cl, OPK_AES_GCM, NULL, op_envelope_decrypt, &a,
	                   "envelope decryption");
}
