/*
 * Frame workers: the body of a message sealed or opened by a bounded pool
 * of threads (esdk.h, "Frame workers"). Frames are independent AES-GCM
 * invocations (IV = sequence number), so workers take whole jobs of
 * consecutive frames; the calling thread hands the results on in frame
 * order, which is also the order the signature hash needs, so the
 * output is the serial code's byte for byte.
 *
 * Jobs live in a ring of fixed slots: the caller fills slot k+1.. while
 * workers run and it waits for slot k, so at most nslots jobs (each
 * ESDK_PIPE_JOB_BYTES of frames) are in flight, whatever the message size.
 * Workers start on the first run that has more than one job: small
 * messages never pay for a thread.
 *
 * The calling thread counts as one of the threads: it runs queued jobs
 * itself while it waits. With only a waiting caller, N workers on N cores
 * measured no faster than one thread (4.1 against 3.5 GB/s on 2 cores),
 * because each finished job woke the caller onto a core a worker needed.
 * For signed messages the caller is mostly busy hashing, which is the
 * ceiling anyway, and helps only when it would otherwise sleep.
 */
#include "internal.h"
#include "format/esdk.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

enum { SLOT_FREE, SLOT_QUEUED, SLOT_DONE };

typedef struct {
	int state;
	const uint8_t *in;
	size_t n;                   /* frames */
	uint32_t seq0;
	uint8_t *out;               /* outcap bytes, wiped after use */
	size_t outlen;
	hw_err err;
	unsigned long ckrv;
	char detail[256];
} slot;

typedef struct {
	esdk_pipe *p;
	EVP_CIPHER_CTX *cc;
	pthread_t th;
	bool running;
} worker;

struct esdk_pipe {
	bool enc;
	uint8_t key[ESDK_MAX_KEY_LEN];
	size_t keylen;
	uint8_t msgid[ESDK_MSGID_MAX];
	size_t msgid_len;
	size_t fl, unit;            /* frame length, serialized frame length */
	size_t per_job;             /* frames per job */
	size_t outcap;
	EVP_CIPHER_CTX *cc;         /* the calling thread's */
	bool dead;
	bool sync_ok;               /* mu, work and done initialised */

	pthread_mutex_t mu;
	pthread_cond_t work, done;
	bool quit;
	bool cancel;                /* the run failed: skip what is queued */
	uint64_t queued, taken;     /* job numbers; slot = number % nslots */
	slot *slots;
	size_t nslots;
	worker *w;
	unsigned nw;
	bool started;
};

/* One job on the thread that holds it; failures are kept in the slot,
 * since the error detail is per thread. */
static void
job_run(esdk_pipe *p, EVP_CIPHER_CTX *cc, slot *s)
{
	hw_err e = HW_OK;

	for (size_t i = 0; i < s->n && e == HW_OK; i++) {
		uint32_t seq = s->seq0 + (uint32_t)i;

		if (p->enc)
			e = esdk_frame_seal(cc, p->msgid, p->msgid_len, seq, s->in + i * p->fl,
			                    p->fl, s->out + i * p->unit);
		else
			e = esdk_frame_open(cc, p->msgid, p->msgid_len, seq, s->in + i * p->unit,
			                    p->fl, s->out + i * p->fl);
	}
	s->outlen = s->n * (p->enc ? p->unit : p->fl);
	s->err = e;
	if (e != HW_OK) {
		s->ckrv = hw_last_ckrv();
		snprintf(s->detail, sizeof(s->detail), "%s", hw_last_detail());
		OPENSSL_cleanse(s->out, p->outcap);
	}
}

static void *
worker_main(void *arg)
{
	worker *w = arg;
	esdk_pipe *p = w->p;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		slot *s;
		bool skip;

		while (!p->quit && p->taken == p->queued)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->quit)
			break;
		s = &p->slots[p->taken++ % p->nslots];
		skip = p->cancel;
		pthread_mutex_unlock(&p->mu);
		if (skip)
			s->err = HW_ERR_CANCELLED;
		else
			job_run(p, w->cc, s);
		pthread_mutex_lock(&p->mu);
		s->state = SLOT_DONE;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

hw_err
esdk_pipe_new(bool enc, unsigned threads, const uint8_t *key, size_t keylen,
              const uint8_t *msgid, size_t msgid_len, uint32_t frame_len, esdk_pipe **out)
{
	esdk_pipe *p;
	hw_err e;

	if (keylen > ESDK_MAX_KEY_LEN || msgid_len > ESDK_MSGID_MAX || frame_len == 0 ||
	    threads > ESDK_PIPE_MAX_THREADS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "esdk_pipe_new");
	p = calloc(1, sizeof(*p));
	if (!p)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	p->enc = enc;
	memcpy(p->key, key, keylen);
	p->keylen = keylen;
	memcpy(p->msgid, msgid, msgid_len);
	p->msgid_len = msgid_len;
	p->fl = frame_len;
	p->unit = (size_t)frame_len + 4 + ESDK_IV_LEN + ESDK_TAG_LEN;
	p->per_job = ESDK_PIPE_JOB_BYTES / p->fl ? ESDK_PIPE_JOB_BYTES / p->fl : 1;
	p->outcap = p->per_job * (enc ? p->unit : p->fl);
	p->nw = threads > 1 ? threads - 1 : 0;
	/* Two jobs per thread, the caller's included: one running, one
	 * waiting for it. */
	p->nslots = p->nw ? 2 * ((size_t)p->nw + 1) : 1;
	p->slots = calloc(p->nslots, sizeof(*p->slots));
	p->w = p->nw ? calloc(p->nw, sizeof(*p->w)) : NULL;
	if (!p->slots || (p->nw && !p->w)) {
		esdk_pipe_free(p);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (size_t i = 0; i < p->nslots; i++) {
		if (!(p->slots[i].out = malloc(p->outcap))) {
			esdk_pipe_free(p);
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		}
	}
	if (pthread_mutex_init(&p->mu, NULL) != 0) {
		esdk_pipe_free(p);
		return hw_fail(HW_ERR_NOMEM, 0, "pthread_mutex_init");
	}
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	p->sync_ok = true;
	e = esdk_gcm_ctx_new(enc, key, keylen, &p->cc);
	if (e != HW_OK) {
		esdk_pipe_free(p);
		return e;
	}
	*out = p;
	return HW_OK;
}

/* Workers start on first need; a pool that cannot start runs serially. */
static void
pool_start(esdk_pipe *p)
{
	p->started = true;
	for (unsigned i = 0; i < p->nw; i++) {
		worker *w = &p->w[i];

		w->p = p;
		if (esdk_gcm_ctx_new(p->enc, p->key, p->keylen, &w->cc) != HW_OK)
			break;
		if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
			EVP_CIPHER_CTX_free(w->cc);
			w->cc = NULL;
			break;
		}
		w->running = true;
	}
	hw_clear_error();
}

static size_t
pool_size(const esdk_pipe *p)
{
	size_t n = 0;

	for (unsigned i = 0; i < p->nw; i++)
		n += p->w[i].running;
	return n;
}

static hw_err
slot_fail(const slot *s)
{
	return hw_fail(s->err, s->ckrv, "%s", s->detail);
}

static void
wipe_slots(esdk_pipe *p)
{
	for (size_t i = 0; i < p->nslots; i++) {
		OPENSSL_cleanse(p->slots[i].out, p->outcap);
		p->slots[i].state = SLOT_FREE;
	}
}

/* Everything on the calling thread: one slot, job after job. */
static hw_err
run_here(esdk_pipe *p, const uint8_t *in, size_t n, uint32_t seq0, esdk_write_fn absorb,
         esdk_write_fn emit, void *arg)
{
	slot *s = &p->slots[0];
	size_t inunit = p->enc ? p->fl : p->unit;
	hw_err e = HW_OK;

	for (size_t done = 0; done < n && e == HW_OK; done += s->n) {
		s->in = in + done * inunit;
		s->n = n - done < p->per_job ? n - done : p->per_job;
		s->seq0 = seq0 + (uint32_t)done;
		if (absorb)
			e = absorb(arg, s->in, s->n * inunit);
		if (e != HW_OK)
			break;
		job_run(p, p->cc, s);
		e = s->err != HW_OK ? slot_fail(s) : emit(arg, s->out, s->outlen);
	}
	if (e != HW_OK)
		OPENSSL_cleanse(s->out, p->outcap);
	return e;
}

hw_err
esdk_pipe_run(esdk_pipe *p, const uint8_t *in, size_t n, uint32_t seq0, esdk_write_fn absorb,
              esdk_write_fn emit, void *arg)
{
	size_t inunit, njobs, next = 0, emitted = 0;
	uint64_t base;
	hw_err e = HW_OK;

	if (!p || p->dead)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the frame pipeline failed earlier");
	if (n == 0)
		return HW_OK;
	inunit = p->enc ? p->fl : p->unit;
	njobs = (n + p->per_job - 1) / p->per_job;
	if (p->nw && njobs > 1 && !p->started)
		pool_start(p);
	if (!p->nw || njobs == 1 || pool_size(p) == 0) {
		e = run_here(p, in, n, seq0, absorb, emit, arg);
		p->dead = e != HW_OK;
		return e;
	}
	base = p->queued;
	while (emitted < njobs && e == HW_OK) {
		slot *s;

		/* Fill every free slot, then hash what was queued while the
		 * workers encrypt it (decryption hashes the input). */
		while (next < njobs && next - emitted < p->nslots && e == HW_OK) {
			size_t first = next * p->per_job;

			s = &p->slots[(base + next) % p->nslots];
			s->in = in + first * inunit;
			s->n = n - first < p->per_job ? n - first : p->per_job;
			s->seq0 = seq0 + (uint32_t)first;
			s->err = HW_OK;
			pthread_mutex_lock(&p->mu);
			s->state = SLOT_QUEUED;
			p->queued++;
			pthread_cond_signal(&p->work);
			pthread_mutex_unlock(&p->mu);
			next++;
			if (absorb)
				e = absorb(arg, s->in, s->n * inunit);
		}
		if (e != HW_OK)
			break;
		s = &p->slots[(base + emitted) % p->nslots];
		pthread_mutex_lock(&p->mu);
		while (s->state != SLOT_DONE) {
			if (p->taken < p->queued) {
				/* Run the next queued job rather than sleep. */
				slot *t = &p->slots[p->taken++ % p->nslots];

				pthread_mutex_unlock(&p->mu);
				job_run(p, p->cc, t);
				pthread_mutex_lock(&p->mu);
				t->state = SLOT_DONE;
				continue;
			}
			pthread_cond_wait(&p->done, &p->mu);
		}
		pthread_mutex_unlock(&p->mu);
		e = s->err != HW_OK ? slot_fail(s) : emit(arg, s->out, s->outlen);
		s->state = SLOT_FREE;
		emitted++;
	}
	if (e != HW_OK) {
		/* Stop: what is queued is skipped, what runs is waited for. */
		pthread_mutex_lock(&p->mu);
		p->cancel = true;
		for (size_t k = emitted; k < next; k++)
			while (p->slots[(base + k) % p->nslots].state != SLOT_DONE)
				pthread_cond_wait(&p->done, &p->mu);
		pthread_mutex_unlock(&p->mu);
		wipe_slots(p);
		p->dead = true;
	}
	return e;
}

void
esdk_pipe_free(esdk_pipe *p)
{
	if (!p)
		return;
	if (p->started) {
		pthread_mutex_lock(&p->mu);
		p->quit = true;
		pthread_cond_broadcast(&p->work);
		pthread_mutex_unlock(&p->mu);
		for (unsigned i = 0; i < p->nw; i++) {
			if (p->w[i].running)
				pthread_join(p->w[i].th, NULL);
			EVP_CIPHER_CTX_free(p->w[i].cc);
		}
	}
	if (p->sync_ok) {
		pthread_cond_destroy(&p->work);
		pthread_cond_destroy(&p->done);
		pthread_mutex_destroy(&p->mu);
	}
	for (size_t i = 0; p->slots && i < p->nslots; i++) {
		if (p->slots[i].out)
			OPENSSL_cleanse(p->slots[i].out, p->outcap);
		free(p->slots[i].out);
	}
	EVP_CIPHER_CTX_free(p->cc);
	OPENSSL_cleanse(p->key, sizeof(p->key));
	free(p->slots);
	free(p->w);
	free(p);
}
