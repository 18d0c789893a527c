/*
 * test-stress.c - 16 threads on one hw_ctx for HW_STRESS_SECONDS (default
 * 5), mixing data-key generate/decrypt, direct encrypt/decrypt and ECDSA
 * signatures (verified with OpenSSL against hw_key_public_der), every
 * result checked. Half-way through the process forks: the child runs the
 * same mix for 1 s on the inherited context and exits 0, the parent's
 * threads carry on. `make tsan-stress` builds this with ThreadSanitizer.
 */
#include "config.h"

#include <CUnit/Basic.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "hsmwrap.h"

#define NTHREADS 16

static struct {
	hw_ctx *ctx;
	hw_key *env, *ec;
	EVP_PKEY *ec_pub;
} G;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One operation of kind n % 3, checked; returns 0 if right. */
static int one_op(unsigned t, unsigned n, char *why, size_t whylen)
{
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN], msg[64], *blob = NULL, *out = NULL;
	size_t bl = 0, ol = 0;
	int bad = 0;
	hw_err e;

	snprintf((char *)msg, sizeof msg, "thread %u op %u pid %ld", t, n, (long)getpid());
	switch (n % 3) {
	case 0:
		e = hw_datakey_generate(G.env, NULL, pt, &blob, &bl);
		if (e == HW_OK)
			e = hw_datakey_decrypt(G.ctx, n % 2 ? G.env : NULL, NULL, blob, bl, back);
		bad = e != HW_OK || memcmp(pt, back, sizeof pt) != 0;
		break;
	case 1:
		e = hw_encrypt(G.env, msg, sizeof msg, NULL, 0, &blob, &bl);
		if (e == HW_OK)
			e = hw_decrypt(G.ctx, NULL, blob, bl, NULL, 0, &out, &ol);
		bad = e != HW_OK || ol != sizeof msg || memcmp(out, msg, ol) != 0;
		if (out)
			hw_free_secret(out, ol);
		break;
	default: {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		e = hw_sign(G.ec, HW_SIG_ECDSA_SHA256, msg, sizeof msg, &blob, &bl);
		bad = e != HW_OK || !md ||
		      EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, G.ec_pub) != 1 ||
		      EVP_DigestVerify(md, blob, bl, msg, sizeof msg) != 1;
		EVP_MD_CTX_free(md);
		break;
	}
	}
	if (bad)
		snprintf(why, whylen, "op %u kind %u: %s (%s)", n, n % 3, hw_errname(e),
		         e == HW_OK ? "wrong output" : hw_last_detail());
	hw_free(blob);
	return bad;
}

struct worker {
	pthread_t th;
	unsigned idx;
	double until;
	unsigned long ok, bad;
	char why[300];
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned n = 0;
	char why[300];

	while (now() < w->until) {
		if (one_op(w->idx, n++, why, sizeof why) == 0) {
			w->ok++;
		} else if (w->bad++ == 0) {
			memcpy(w->why, why, sizeof why);
		}
	}
	return NULL;
}

/* The child: the same mix on the inherited context for 1 s. */
static void child(void)
{
	struct worker w;
	char why[300];
	unsigned n = 0;

	alarm(30);
	memset(&w, 0, sizeof w);
	w.until = now() + 1.0;
	while (now() < w.until) {
		if (one_op(99, n++, why, sizeof why) == 0) {
			w.ok++;
		} else {
			fprintf(stderr, "stress child: %s\n", why);
			_exit(1);
		}
	}
	fprintf(stderr, "stress child: %lu ops correct in 1 s\n", w.ok);
	_exit(w.ok > 0 ? 0 : 2);
}

static void test_stress(void)
{
	const char *env = getenv("HW_STRESS_SECONDS");
	double secs = env ? atof(env) : 5.0, t0 = now();
	struct worker w[NTHREADS];
	unsigned long ok = 0, bad = 0;
	int status = -1;
	pid_t pid;
	unsigned i;

	if (secs <= 0)
		secs = 5.0;
	for (i = 0; i < NTHREADS; i++) {
		memset(&w[i], 0, sizeof w[i]);
		w[i].idx = i;
		w[i].until = t0 + secs;
		CU_ASSERT_FATAL(pthread_create(&w[i].th, NULL, worker_main, &w[i]) == 0);
	}
	while (now() < t0 + secs / 2) {
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0)
		child();
	CU_ASSERT(waitpid(pid, &status, 0) == pid);
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	for (i = 0; i < NTHREADS; i++) {
		pthread_join(w[i].th, NULL);
		ok += w[i].ok;
		bad += w[i].bad;
		if (w[i].bad)
			fprintf(stderr, "thread %u: %lu bad, first: %s\n", i, w[i].bad, w[i].why);
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT(ok > 0);
	printf("\n    stress: %d threads, %.1f s, fork at %.1f s: %lu operations correct, "
	       "%lu wrong or failed (%.0f ops/s)\n", NTHREADS, now() - t0, secs / 2, ok, bad,
	       ok / (now() - t0));
}

static int suite_init(void)
{
	uint8_t *der = NULL;
	const unsigned char *p;
	size_t dl = 0;
	hw_err e;

	if ((e = hw_ctx_new(&G.ctx)) != HW_OK ||
	    (e = hw_ctx_set_module(G.ctx, getenv("HSMWRAP_MODULE"))) != HW_OK ||
	    (e = hw_ctx_set_token(G.ctx, getenv("HSMWRAP_TOKEN"))) != HW_OK ||
	    (e = hw_ctx_set_pin_source(G.ctx, getenv("HSMWRAP_PIN_SOURCE"))) != HW_OK ||
	    (e = hw_ctx_open(G.ctx)) != HW_OK ||
	    (e = hw_key_generate(G.ctx, "st-env", HW_KEY_AES256, HW_PURPOSE_ENVELOPE, &G.env)) ||
	    (e = hw_key_generate(G.ctx, "st-ec", HW_KEY_EC_P256, HW_PURPOSE_SIGN, &G.ec)) ||
	    (e = hw_key_public_der(G.ec, &der, &dl))) {
		fprintf(stderr, "test-stress: setup: %s (%s)\n", hw_errname(e), hw_last_detail());
		return 1;
	}
	p = der;
	G.ec_pub = d2i_PUBKEY(NULL, &p, (long)dl);
	hw_free(der);
	return G.ec_pub ? 0 : 1;
}

static int suite_cleanup(void)
{
	EVP_PKEY_free(G.ec_pub);
	hw_key_free(G.env);
	hw_key_free(G.ec);
	hw_ctx_free(G.ctx);
	return 0;
}

int main(void)
{
	CU_pSuite s;
	unsigned failures;

	if (!getenv("HW_TEST_DIR") || !getenv("HSMWRAP_MODULE") || !getenv("HSMWRAP_TOKEN") ||
	    !getenv("HSMWRAP_PIN_SOURCE")) {
		fprintf(stderr, "test-stress: run me under tests/with-token.sh\n");
		return 77;
	}
	alarm(600);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("stress", suite_init, suite_cleanup);
	if (!s || !CU_add_test(s, "16 threads, mixed operations, fork in the middle", test_stress))
		return 99;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failures = CU_get_number_of_failure_records();
	CU_cleanup_registry();
	return failures == 0 ? 0 : 1;
}
