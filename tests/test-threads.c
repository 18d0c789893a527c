/*
 * test-threads.c - one hw_ctx shared by many threads, and used across
 * fork(), against the SoftHSM token of tests/with-token.sh.
 * The ops/s figures printed are for information only.
 */
#include "config.h"

#include <CUnit/Basic.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hsmwrap.h"
#include "test-common.h"

#define NTHREADS 8
#define NOPS 1000
/* A child that needs longer than this is hung (e.g. on a lock). */
#define CHILD_TIMEOUT_S 20

static struct {
	hw_ctx *ctx;
	hw_key *env;
	hw_key *kw;
} G;


/* ------------------------------------------------------------------ */
/* The unit of work: a data key generated, decrypted and compared.      */

struct result {
	unsigned ok;
	unsigned bad;
	hw_err first_err;
	char first_detail[200];
};

static void record(struct result *r, hw_err e, const char *what)
{
	if (e == HW_OK) {
		r->ok++;
		return;
	}
	if (r->bad++ == 0) {
		r->first_err = e;
		fmt(r->first_detail, sizeof r->first_detail, "%s: %s", what,
		    hw_last_detail());
	}
}

/* Context {thread=T, op=N}, decrypt sometimes with the key from the blob. */
static hw_err datakey_once(hw_ctx *ctx, hw_key *key, unsigned t, unsigned n)
{
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN];
	uint8_t *w = NULL;
	size_t wl = 0;
	hw_ectx *ec = NULL;
	char v[32];
	hw_err e;

	if ((e = hw_ectx_new(&ec)) != HW_OK)
		return e;
	fmt(v, sizeof v, "%u", t);
	e = hw_ectx_add(ec, "thread", v);
	fmt(v, sizeof v, "%u", n);
	if (e == HW_OK)
		e = hw_ectx_add(ec, "op", v);
	if (e == HW_OK)
		e = hw_datakey_generate(key, ec, pt, &w, &wl);
	if (e == HW_OK) {
		memset(back, 0, sizeof back);
		e = hw_datakey_decrypt(ctx, n % 2 ? key : NULL, ec, w, wl, back);
		if (e == HW_OK && memcmp(pt, back, sizeof pt) != 0)
			e = HW_ERR_INTEGRITY; /* "succeeded" with the wrong key bytes */
	}
	hw_free(w);
	hw_ectx_free(ec);
	return e;
}

/* Direct encryption and key wrapping, for the forked children. */
static hw_err direct_once(hw_ctx *ctx, hw_key *key)
{
	static const uint8_t aad[] = "fork-test";
	uint8_t pt[200], *blob = NULL, *out = NULL;
	size_t bl = 0, ol = 0;
	hw_err e;

	memset(pt, (int)getpid() & 0xff, sizeof pt);
	e = hw_encrypt(key, pt, sizeof pt, aad, sizeof aad, &blob, &bl);
	if (e == HW_OK)
		e = hw_decrypt(ctx, NULL, blob, bl, aad, sizeof aad, &out, &ol);
	if (e == HW_OK && (ol != sizeof pt || memcmp(out, pt, ol) != 0))
		e = HW_ERR_INTEGRITY;
	if (out)
		hw_free_secret(out, ol);
	hw_free(blob);
	return e;
}

static hw_err wrap_once(hw_ctx *ctx, hw_key *key)
{
	uint8_t m[32], *blob = NULL, *out = NULL;
	size_t bl = 0, ol = 0;
	hw_err e;

	memset(m, 0x42, sizeof m);
	e = hw_wrap(key, m, sizeof m, &blob, &bl);
	if (e == HW_OK)
		e = hw_unwrap(ctx, key, blob, bl, &out, &ol);
	if (e == HW_OK && (ol != sizeof m || memcmp(out, m, ol) != 0))
		e = HW_ERR_INTEGRITY;
	if (out)
		hw_free_secret(out, ol);
	hw_free(blob);
	return e;
}

/* ------------------------------------------------------------------ */
/* Threads on one context.                                              */

struct worker {
	pthread_t th;
	unsigned idx;
	unsigned nops;          /* 0: until `stop` */
	hw_ctx *ctx;
	hw_key *key;
	atomic_int *stop;
	struct result r;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned n;

	for (n = 0; w->nops ? n < w->nops : !atomic_load(w->stop); n++)
		record(&w->r, datakey_once(w->ctx, w->key, w->idx, n), "datakey");
	return NULL;
}

static int start_workers(struct worker *w, unsigned count, hw_ctx *ctx, hw_key *key,
                         unsigned nops, atomic_int *stop)
{
	unsigned i;

	for (i = 0; i < count; i++) {
		memset(&w[i], 0, sizeof w[i]);
		w[i].idx = i;
		w[i].nops = nops;
		w[i].ctx = ctx;
		w[i].key = key;
		w[i].stop = stop;
		if (pthread_create(&w[i].th, NULL, worker_main, &w[i]) != 0)
			return (int)i;
	}
	return (int)count;
}

/* Joins the workers; returns the operations that went right. */
static unsigned join_workers(struct worker *w, unsigned count, const char *what)
{
	unsigned i, ok = 0;
	char msg[400];

	for (i = 0; i < count; i++) {
		pthread_join(w[i].th, NULL);
		ok += w[i].r.ok;
		if (w[i].r.bad) {
			fmt(msg, sizeof msg, "%s: thread %u: %u of %u failed, first %s (%s)",
			    what, i, w[i].r.bad, w[i].r.bad + w[i].r.ok,
			    hw_errname(w[i].r.first_err), w[i].r.first_detail);
			CU_assertImplementation(CU_FALSE, __LINE__, msg, __FILE__, "", CU_FALSE);
		}
	}
	return ok;
}

static void run_threads(hw_ctx *ctx, hw_key *key, unsigned nthreads, unsigned nops,
                        const char *what)
{
	struct worker w[NTHREADS];
	unsigned started, ok;
	double t0 = now(), dt;

	started = (unsigned)start_workers(w, nthreads, ctx, key, nops, NULL);
	CU_ASSERT(started == nthreads);
	ok = join_workers(w, started, what);
	dt = now() - t0;
	CU_ASSERT_EQUAL(ok, nthreads * nops);
	printf("\n    %s: %u threads x %u data keys: %u correct in %.2f s, "
	       "%.0f generate+decrypt pairs/s (%.0f ops/s)\n", what, nthreads, nops,
	       ok, dt, ok / dt, 2 * ok / dt);
}

static void test_threads_shared_ctx(void)
{
	run_threads(G.ctx, G.env, NTHREADS, NOPS, "shared context");
}

/* More threads than pooled sessions: they must wait or open more, never fail. */
static void test_threads_small_pool(void)
{
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;

	EXPECT_OK(hw_ctx_new(&ctx));
	CU_ASSERT_FATAL(ctx != NULL);
	hw_ctx_set_pool_size(ctx, 1);
	EXPECT_OK(hw_ctx_set_module(ctx, getenv("HSMWRAP_MODULE")));
	EXPECT_OK(hw_ctx_set_token(ctx, getenv("HSMWRAP_TOKEN")));
	EXPECT_OK(hw_ctx_set_pin_source(ctx, getenv("HSMWRAP_PIN_SOURCE")));
	EXPECT_OK(hw_ctx_open(ctx));
	EXPECT_OK(hw_key_find(ctx, "thr-env", &key));
	if (key)
		run_threads(ctx, key, NTHREADS, 200, "pool of 1 session");
	hw_key_free(key);
	hw_ctx_free(ctx);
}

/* Threads that each look up their own key handle on the shared context. */
static void *finder_main(void *arg)
{
	struct worker *w = arg;
	unsigned n;

	for (n = 0; n < w->nops; n++) {
		hw_key *k = NULL;
		hw_err e = hw_key_find(w->ctx, n % 2 ? "thr-env" : "thr-kw", &k);

		if (e == HW_OK)
			e = n % 2 ? direct_once(w->ctx, k) : wrap_once(w->ctx, k);
		record(&w->r, e, n % 2 ? "find+encrypt" : "find+wrap");
		hw_key_free(k);
	}
	return NULL;
}

static void test_threads_mixed(void)
{
	struct worker w[NTHREADS];
	unsigned i, ok = 0;

	for (i = 0; i < NTHREADS; i++) {
		memset(&w[i], 0, sizeof w[i]);
		w[i].idx = i;
		w[i].nops = 200;
		w[i].ctx = G.ctx;
		CU_ASSERT_FATAL(pthread_create(&w[i].th, NULL, finder_main, &w[i]) == 0);
	}
	ok = join_workers(w, NTHREADS, "mixed");
	CU_ASSERT_EQUAL(ok, NTHREADS * 200);
}

/* ------------------------------------------------------------------ */
/* fork()                                                                */

/*
 * What a child does with what it inherited, without re-opening anything:
 * decrypt the parent's data key, make and decrypt its own, encrypt and
 * decrypt directly, and hand a data key back to the parent through `fd`.
 * Exit status: 0 if all went right, else 10 + the step that failed.
 */
static void child_work(const uint8_t *parent_blob, size_t parent_len,
                       const uint8_t parent_pt[HW_DATAKEY_LEN], int fd)
{
	uint8_t back[HW_DATAKEY_LEN], pt[HW_DATAKEY_LEN];
	uint8_t *w = NULL;
	size_t wl = 0;
	hw_key *k = NULL;
	int step = 0;

	alarm(CHILD_TIMEOUT_S);
	if (parent_blob) {
		step = 1;
		if (hw_datakey_decrypt(G.ctx, G.env, NULL, parent_blob, parent_len, back) != HW_OK ||
		    memcmp(back, parent_pt, sizeof back) != 0)
			goto fail;
	}
	step = 2;
	if (datakey_once(G.ctx, G.env, 99, 1) != HW_OK || datakey_once(G.ctx, G.env, 99, 2) != HW_OK)
		goto fail;
	step = 3;
	if (direct_once(G.ctx, G.env) != HW_OK)
		goto fail;
	step = 4;
	if (wrap_once(G.ctx, G.kw) != HW_OK)
		goto fail;
	step = 5;
	if (hw_key_find(G.ctx, "thr-env", &k) != HW_OK || direct_once(G.ctx, k) != HW_OK)
		goto fail;
	hw_key_free(k);
	k = NULL;
	if (fd >= 0) {
		step = 6;
		if (hw_datakey_generate(G.env, NULL, pt, &w, &wl) != HW_OK ||
		    write(fd, pt, sizeof pt) != (ssize_t)sizeof pt ||
		    write(fd, w, wl) != (ssize_t)wl)
			goto fail;
		hw_free(w);
		close(fd);
	}
	/* _exit: no atexit handlers, no CUnit, no parent state flushed twice. */
	_exit(0);
fail:
	fprintf(stderr, "child %ld: step %d failed (%s)\n", (long)getpid(), step,
	        hw_last_detail());
	_exit(10 + step);
}

/* Waits for `pid` at most CHILD_TIMEOUT_S seconds; kills it if hung. */
static int wait_child(pid_t pid, const char *what)
{
	double deadline = now() + CHILD_TIMEOUT_S + 5;
	int status = 0;
	char msg[200];
	pid_t r;

	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now() < deadline) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fmt(msg, sizeof msg, "%s: child hung (killed after %d s)", what, CHILD_TIMEOUT_S);
		CU_assertImplementation(CU_FALSE, __LINE__, msg, __FILE__, "", CU_FALSE);
		return -1;
	}
	if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (r > 0 && WIFSIGNALED(status))
			fmt(msg, sizeof msg, "%s: child killed by signal %d", what, WTERMSIG(status));
		else
			fmt(msg, sizeof msg, "%s: child exit status %d (10 + failed step)", what,
			    r > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		CU_assertImplementation(CU_FALSE, __LINE__, msg, __FILE__, "", CU_FALSE);
		return -1;
	}
	CU_PASS(what);
	return 0;
}

static size_t read_all(int fd, uint8_t *buf, size_t max)
{
	size_t n = 0;

	while (n < max) {
		ssize_t r = read(fd, buf + n, max - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	return n;
}

static void test_fork_child_uses_inherited_ctx(void)
{
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN], buf[4096];
	uint8_t *w = NULL;
	size_t wl = 0, got;
	int fds[2];
	pid_t pid;

	/* The parent has used the context (logged in, sessions pooled). */
	EXPECT_OK(hw_datakey_generate(G.env, NULL, pt, &w, &wl));
	CU_ASSERT_FATAL(w != NULL);
	CU_ASSERT_FATAL(pipe(fds) == 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		child_work(w, wl, pt, fds[1]);
	}
	close(fds[1]);
	got = read_all(fds[0], buf, sizeof buf);
	close(fds[0]);
	wait_child(pid, "forked child");

	/* The parent goes on working, and opens what the child made. */
	EXPECT_OK(datakey_once(G.ctx, G.env, 0, 0));
	EXPECT_OK(direct_once(G.ctx, G.env));
	CU_ASSERT(got > HW_DATAKEY_LEN);
	if (got > HW_DATAKEY_LEN) {
		EXPECT_OK(hw_datakey_decrypt(G.ctx, NULL, NULL, buf + HW_DATAKEY_LEN,
		                             got - HW_DATAKEY_LEN, back));
		CU_ASSERT(memcmp(back, buf, HW_DATAKEY_LEN) == 0);
	}
	hw_free(w);
}

/* nginx style: the master only opened the context; workers use it. */
static void test_fork_before_first_use(void)
{
	hw_ctx *ctx = NULL;
	hw_key *saved_env = G.env, *saved_kw = G.kw;
	hw_ctx *saved_ctx = G.ctx;
	pid_t pids[3];
	unsigned i;

	EXPECT_OK(hw_ctx_new(&ctx));
	CU_ASSERT_FATAL(ctx != NULL);
	EXPECT_OK(hw_ctx_set_module(ctx, getenv("HSMWRAP_MODULE")));
	EXPECT_OK(hw_ctx_set_token(ctx, getenv("HSMWRAP_TOKEN")));
	EXPECT_OK(hw_ctx_set_pin_source(ctx, getenv("HSMWRAP_PIN_SOURCE")));
	EXPECT_OK(hw_ctx_open(ctx));
	/*
	 * One worker at a time: SoftHSM's file store is not safe for several
	 * processes initialising and logging in at once (it rewrites
	 * token.object on C_Login, and a concurrent reader then sees no
	 * token); that is SoftHSM's limit, not the one under test here.
	 */
	for (i = 0; i < 3; i++) {
		fflush(NULL);
		pids[i] = fork();
		CU_ASSERT_FATAL(pids[i] >= 0);
		if (pids[i] == 0) {
			hw_key *e = NULL, *k = NULL;

			hw_err rc;

			alarm(CHILD_TIMEOUT_S);
			if ((rc = hw_key_find(ctx, "thr-env", &e)) != HW_OK ||
			    (rc = hw_key_find(ctx, "thr-kw", &k)) != HW_OK) {
				fprintf(stderr, "child %ld: hw_key_find: %s (%s)\n",
				        (long)getpid(), hw_errname(rc), hw_last_detail());
				_exit(2);
			}
			G.ctx = ctx;
			G.env = e;
			G.kw = k;
			child_work(NULL, 0, NULL, -1);
		}
		wait_child(pids[i], "worker forked before first use");
	}
	G.ctx = saved_ctx;
	G.env = saved_env;
	G.kw = saved_kw;
	/* The master itself can still start using it. */
	{
		hw_key *e = NULL;

		EXPECT_OK(hw_key_find(ctx, "thr-env", &e));
		if (e)
			EXPECT_OK(datakey_once(ctx, e, 1, 1));
		hw_key_free(e);
	}
	hw_ctx_free(ctx);
}

/* fork() while other threads are in the middle of operations. */
static void test_fork_while_threads_run(void)
{
	struct worker w[4];
	atomic_int stop = 0;
	unsigned started, ok, i;
	uint8_t pt[HW_DATAKEY_LEN];
	uint8_t *blob = NULL;
	size_t bl = 0;

	EXPECT_OK(hw_datakey_generate(G.env, NULL, pt, &blob, &bl));
	started = (unsigned)start_workers(w, 4, G.ctx, G.env, 0, &stop);
	CU_ASSERT(started == 4);
	for (i = 0; i < 10; i++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		pid_t pid;

		nanosleep(&ts, NULL);
		fflush(NULL);
		pid = fork();
		if (pid == 0)
			child_work(blob, bl, pt, -1);
		CU_ASSERT_FATAL(pid > 0);
		/* After a hang, more children only repeat it, slowly. */
		if (wait_child(pid, "child forked while threads run") != 0)
			break;
	}
	atomic_store(&stop, 1);
	ok = join_workers(w, started, "threads around fork");
	CU_ASSERT(ok > 0);
	printf("\n    %u data keys by 4 threads while forking 10 children\n", ok);
	/* And the parent is still fine. */
	EXPECT_OK(datakey_once(G.ctx, G.env, 7, 7));
	hw_free(blob);
}

/* ------------------------------------------------------------------ */

static int suite_init(void)
{
	const char *module = getenv("HSMWRAP_MODULE");
	const char *token = getenv("HSMWRAP_TOKEN");
	const char *pin = getenv("HSMWRAP_PIN_SOURCE");
	hw_err e;

	if ((e = hw_ctx_new(&G.ctx)) != HW_OK ||
	    (e = hw_ctx_set_module(G.ctx, module)) != HW_OK ||
	    (e = hw_ctx_set_token(G.ctx, token)) != HW_OK ||
	    (e = hw_ctx_set_pin_source(G.ctx, pin)) != HW_OK ||
	    (e = hw_ctx_open(G.ctx)) != HW_OK ||
	    (e = hw_key_generate(G.ctx, "thr-env", HW_KEY_AES256, HW_PURPOSE_ENVELOPE,
	                         &G.env)) != HW_OK ||
	    (e = hw_key_generate(G.ctx, "thr-kw", HW_KEY_AES256, HW_PURPOSE_KEYWRAP,
	                         &G.kw)) != HW_OK) {
		fprintf(stderr, "test-threads: setup: %s (%s)\n", hw_errname(e), hw_last_detail());
		return 1;
	}
	return 0;
}

static int suite_cleanup(void)
{
	hw_key_free(G.env);
	hw_key_free(G.kw);
	hw_ctx_free(G.ctx);
	return 0;
}

int main(void)
{
	static const struct { const char *name; CU_TestFunc fn; } tests[] = {
		{ "8 threads x 1000 data keys on one context", test_threads_shared_ctx },
		{ "8 threads on a pool of 1 session", test_threads_small_pool },
		{ "8 threads: find, encrypt, wrap", test_threads_mixed },
		{ "forked child uses the inherited context", test_fork_child_uses_inherited_ctx },
		{ "workers forked before first use", test_fork_before_first_use },
		{ "fork while threads run", test_fork_while_threads_run },
	};
	/* HW_TEST_FILTER=substring runs only the matching tests (debugging). */
	const char *filter = getenv("HW_TEST_FILTER");
	CU_pSuite s;
	unsigned failures, i;

	/* HW_TEST_DIR: never create test keys on a token that is not the fixture's. */
	if (!getenv("HW_TEST_DIR") || !getenv("HSMWRAP_MODULE") ||
	    !getenv("HSMWRAP_TOKEN") || !getenv("HSMWRAP_PIN_SOURCE")) {
		fprintf(stderr, "test-threads: run me under tests/with-token.sh\n");
		return 77;
	}
	/* Whole-run watchdog: a deadlock must fail the test, not hang make. */
	alarm(900);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("threads and fork", suite_init, suite_cleanup);
	if (!s)
		return 99;
	for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		if (filter && !strstr(tests[i].name, filter))
			continue;
		if (!CU_add_test(s, tests[i].name, tests[i].fn)) {
			fprintf(stderr, "test-threads: %s\n", CU_get_error_msg());
			return 99;
		}
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failures = CU_get_number_of_failure_records();
	CU_cleanup_registry();
	return failures == 0 ? 0 : 1;
}
