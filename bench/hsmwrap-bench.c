/*
 * hsmwrap-bench - what does libhsmwrap cost compared with talking to the
 * PKCS#11 module directly?
 *
 * Every cell (operation x thread count) is measured twice per round: once
 * through the library and once with hand-written PKCS#11 calls that do the
 * same work on the same token, in the same process. Rounds alternate
 * library and raw runs so that drift (CPU frequency, a noisy neighbour)
 * hits both sides alike; the median of the rounds is reported.
 *
 * A benchmark that measures a broken operation is worse than none, so each
 * worker checks its first and its last result of every run, and the
 * decrypting operations compare every result with the expected plaintext.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "hsmwrap.h"

#define PROG "hsmwrap-bench"
#define PAYLOAD_LEN 32
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16
#define MAX_THREADS 64
#define MAX_ROUNDS 99
#define PIN_MAX 256
#define KWP_MAX (PAYLOAD_LEN + 16)
#define KEY_ENVELOPE "bench-envelope"
#define KEY_KEYWRAP "bench-keywrap"

enum op { OP_ENCRYPT, OP_DK_GENERATE, OP_DK_DECRYPT, OP_UNWRAP, OP_COUNT };

static const char *const op_names[OP_COUNT] = {
	"encrypt", "datakey-generate", "datakey-decrypt", "unwrap",
};

struct options {
	const char *module;
	const char *token;
	const char *pin_source;
	int setup;
	double seconds;
	unsigned rounds;
	unsigned threads[MAX_THREADS];
	unsigned nthreads;
	int ops[OP_COUNT];
	int json;
	int verbose;
};

struct lib_side {
	hw_ctx *ctx;
	hw_key *env_key;
	hw_key *wrap_key;
	hw_ectx *ec;
	uint8_t dk_plain[HW_DATAKEY_LEN];
	uint8_t *dk_wrapped;
	size_t dk_wrapped_len;
	uint8_t *kwp_blob;
	size_t kwp_blob_len;
};

struct raw_side {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	int we_initialized;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE sess[MAX_THREADS];
	unsigned nsess;
	CK_OBJECT_HANDLE env_key;
	CK_OBJECT_HANDLE wrap_key;
	/*
	 * The library binds a blob header (version, key id, label) into the
	 * AAD of direct encryption; the raw side binds a buffer of similar
	 * size so both hand the token the same amount of work.
	 */
	uint8_t enc_aad[128];
	size_t enc_aad_len;
	uint8_t *ec_aad;
	size_t ec_aad_len;
	uint8_t dk_iv[GCM_IV_LEN];
	uint8_t dk_ct[HW_DATAKEY_LEN + GCM_TAG_LEN];
	uint8_t dk_plain[HW_DATAKEY_LEN];
	uint8_t kwp[KWP_MAX];
	CK_ULONG kwp_len;
};

struct bench {
	struct options opt;
	struct lib_side lib;
	struct raw_side raw;
	uint8_t payload[PAYLOAD_LEN];
	uint8_t aad[16];
	uint8_t material[PAYLOAD_LEN];
};

/* What one worker thread keeps between operations, to check it later. */
struct worker {
	const struct bench *b;
	enum op op;
	int raw;
	unsigned index;
	pthread_barrier_t *ready;
	pthread_barrier_t *go;
	const struct timespec *deadline;
	unsigned long ops;
	struct timespec end;
	int failed;
	char err[320];
	/* last output, library side */
	uint8_t *blob;
	size_t bloblen;
	/* last output, raw side */
	uint8_t iv[GCM_IV_LEN];
	uint8_t ct[PAYLOAD_LEN + GCM_TAG_LEN];
	CK_ULONG ctlen;
	uint8_t dk[HW_DATAKEY_LEN];
};

struct op_impl {
	int (*run)(struct worker *w);
	/* checks the last output of run(); NULL when run() checks itself */
	int (*verify)(struct worker *w);
};

struct cell {
	enum op op;
	unsigned threads;
	double lib[MAX_ROUNDS];
	double raw[MAX_ROUNDS];
	double lib_median;
	double raw_median;
	/* median of lib/raw within each round: drift between rounds cancels out */
	double paired_ratio;
};

/* ------------------------------------------------------------------ */
/* Messages                                                            */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void die_hw(const char *what, hw_err e) __attribute__((noreturn));

static void die_hw(const char *what, hw_err e)
{
	const char *detail = hw_last_detail();

	if (detail != NULL && detail[0] != '\0')
		die("%s: %s (%s)", what, hw_strerror(e), detail);
	die("%s: %s", what, hw_strerror(e));
}

static int fail(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct worker *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->err, sizeof(w->err), fmt, ap);
	va_end(ap);
	return -1;
}

static int fail_hw(struct worker *w, const char *what, hw_err e)
{
	return fail(w, "%s: %s (%s, CK_RV 0x%lx)", what, hw_strerror(e),
	            hw_last_detail(), hw_last_ckrv());
}

static int fail_ck(struct worker *w, const char *what, CK_RV rv)
{
	return fail(w, "%s failed: CK_RV 0x%lx", what, (unsigned long)rv);
}

/* ------------------------------------------------------------------ */
/* Raw PKCS#11 primitives                                              */

static void gcm_params(CK_GCM_PARAMS *p, CK_MECHANISM *m, uint8_t *iv,
                       const uint8_t *aad, size_t aadlen)
{
	memset(p, 0, sizeof(*p));
	p->pIv = iv;
	p->ulIvLen = GCM_IV_LEN;
	p->ulIvBits = GCM_IV_LEN * 8;
	p->pAAD = (CK_BYTE_PTR)aad;
	p->ulAADLen = aadlen;
	p->ulTagBits = GCM_TAG_LEN * 8;
	m->mechanism = CKM_AES_GCM;
	m->pParameter = p;
	m->ulParameterLen = sizeof(*p);
}

/* Same steps as the library: host RNG for the IV, one-shot C_Encrypt. */
static int raw_gcm_encrypt(struct worker *w, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                           const uint8_t *aad, size_t aadlen,
                           const uint8_t *pt, size_t ptlen,
                           uint8_t iv[GCM_IV_LEN], uint8_t *ct, CK_ULONG *ctlen)
{
	CK_FUNCTION_LIST_PTR f = w->b->raw.f;
	CK_GCM_PARAMS p;
	CK_MECHANISM m;
	CK_RV rv;

	if (RAND_bytes(iv, GCM_IV_LEN) != 1)
		return fail(w, "RAND_bytes failed");
	gcm_params(&p, &m, iv, aad, aadlen);
	rv = f->C_EncryptInit(s, &m, key);
	if (rv != CKR_OK)
		return fail_ck(w, "C_EncryptInit", rv);
	rv = f->C_Encrypt(s, (CK_BYTE_PTR)pt, ptlen, ct, ctlen);
	if (rv != CKR_OK)
		return fail_ck(w, "C_Encrypt", rv);
	return 0;
}

static int raw_gcm_decrypt(struct worker *w, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                           const uint8_t *aad, size_t aadlen, const uint8_t iv[GCM_IV_LEN],
                           const uint8_t *ct, CK_ULONG ctlen,
                           uint8_t *pt, CK_ULONG *ptlen)
{
	CK_FUNCTION_LIST_PTR f = w->b->raw.f;
	uint8_t ivcopy[GCM_IV_LEN];
	CK_GCM_PARAMS p;
	CK_MECHANISM m;
	CK_RV rv;

	memcpy(ivcopy, iv, GCM_IV_LEN);
	gcm_params(&p, &m, ivcopy, aad, aadlen);
	rv = f->C_DecryptInit(s, &m, key);
	if (rv != CKR_OK)
		return fail_ck(w, "C_DecryptInit", rv);
	rv = f->C_Decrypt(s, (CK_BYTE_PTR)ct, ctlen, pt, ptlen);
	if (rv != CKR_OK)
		return fail_ck(w, "C_Decrypt", rv);
	return 0;
}

static int expect_equal(struct worker *w, const char *what, const uint8_t *got, size_t gotlen,
                        const uint8_t *want, size_t wantlen)
{
	if (gotlen != wantlen || CRYPTO_memcmp(got, want, wantlen) != 0)
		return fail(w, "%s: result differs from the original (%zu vs %zu bytes)",
		            what, gotlen, wantlen);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Library operations                                                  */

static int lib_encrypt(struct worker *w)
{
	const struct bench *b = w->b;
	uint8_t *blob;
	size_t len;
	hw_err e;

	e = hw_encrypt(b->lib.env_key, b->payload, sizeof(b->payload), b->aad,
	               sizeof(b->aad), &blob, &len);
	if (e != HW_OK)
		return fail_hw(w, "hw_encrypt", e);
	hw_free(w->blob);
	w->blob = blob;
	w->bloblen = len;
	return 0;
}

static int lib_encrypt_verify(struct worker *w)
{
	const struct bench *b = w->b;
	uint8_t *pt;
	size_t ptlen;
	hw_err e;
	int r;

	e = hw_decrypt(b->lib.ctx, b->lib.env_key, w->blob, w->bloblen, b->aad,
	               sizeof(b->aad), &pt, &ptlen);
	if (e != HW_OK)
		return fail_hw(w, "hw_decrypt of an hw_encrypt result", e);
	r = expect_equal(w, "hw_decrypt(hw_encrypt(x))", pt, ptlen, b->payload,
	                 sizeof(b->payload));
	hw_free_secret(pt, ptlen);
	return r;
}

static int lib_dk_generate(struct worker *w)
{
	const struct bench *b = w->b;
	uint8_t *wrapped;
	size_t len;
	hw_err e;

	e = hw_datakey_generate(b->lib.env_key, b->lib.ec, w->dk, &wrapped, &len);
	if (e != HW_OK)
		return fail_hw(w, "hw_datakey_generate", e);
	hw_free(w->blob);
	w->blob = wrapped;
	w->bloblen = len;
	return 0;
}

/* hw_datakey_decrypt of blob must give want (the checks of both data key
 * operations). */
static int lib_dk_check(struct worker *w, const uint8_t *blob, size_t bloblen,
                        const uint8_t want[HW_DATAKEY_LEN], const char *what,
                        const char *what_cmp)
{
	const struct bench *b = w->b;
	uint8_t pt[HW_DATAKEY_LEN];
	hw_err e;
	int r;

	e = hw_datakey_decrypt(b->lib.ctx, b->lib.env_key, b->lib.ec, blob, bloblen, pt);
	if (e != HW_OK)
		return fail_hw(w, what, e);
	r = expect_equal(w, what_cmp, pt, sizeof(pt), want, HW_DATAKEY_LEN);
	OPENSSL_cleanse(pt, sizeof(pt));
	return r;
}

static int lib_dk_generate_verify(struct worker *w)
{
	return lib_dk_check(w, w->blob, w->bloblen, w->dk,
	                    "hw_datakey_decrypt of a fresh data key",
	                    "hw_datakey_decrypt(hw_datakey_generate())");
}

static int lib_dk_decrypt(struct worker *w)
{
	const struct bench *b = w->b;

	return lib_dk_check(w, b->lib.dk_wrapped, b->lib.dk_wrapped_len, b->lib.dk_plain,
	                    "hw_datakey_decrypt", "hw_datakey_decrypt");
}

static int lib_unwrap(struct worker *w)
{
	const struct bench *b = w->b;
	uint8_t *m;
	size_t len;
	hw_err e;
	int r;

	e = hw_unwrap(b->lib.ctx, b->lib.wrap_key, b->lib.kwp_blob, b->lib.kwp_blob_len,
	              &m, &len);
	if (e != HW_OK)
		return fail_hw(w, "hw_unwrap", e);
	r = expect_equal(w, "hw_unwrap", m, len, b->material, sizeof(b->material));
	hw_free_secret(m, len);
	return r;
}

/* ------------------------------------------------------------------ */
/* The same operations with raw PKCS#11                                */

static int raw_encrypt(struct worker *w)
{
	const struct raw_side *r = &w->b->raw;

	w->ctlen = sizeof(w->ct);
	return raw_gcm_encrypt(w, r->sess[w->index], r->env_key, r->enc_aad, r->enc_aad_len,
	                       w->b->payload, sizeof(w->b->payload), w->iv, w->ct, &w->ctlen);
}

/* GCM decryption under the environment key must give want; the result
 * is wiped, as it may be a data key. */
static int raw_gcm_check(struct worker *w, const uint8_t *aad, size_t aadlen,
                         const uint8_t iv[GCM_IV_LEN], const uint8_t *ct, CK_ULONG ctlen,
                         const uint8_t *want, size_t wantlen, const char *what)
{
	const struct raw_side *r = &w->b->raw;
	uint8_t pt[sizeof(w->ct)];
	CK_ULONG ptlen = sizeof(pt);
	int ret;

	if (raw_gcm_decrypt(w, r->sess[w->index], r->env_key, aad, aadlen, iv, ct, ctlen, pt,
	                    &ptlen) != 0)
		return -1;
	ret = expect_equal(w, what, pt, ptlen, want, wantlen);
	OPENSSL_cleanse(pt, sizeof(pt));
	return ret;
}

static int raw_encrypt_verify(struct worker *w)
{
	const struct raw_side *r = &w->b->raw;

	return raw_gcm_check(w, r->enc_aad, r->enc_aad_len, w->iv, w->ct, w->ctlen,
	                     w->b->payload, sizeof(w->b->payload), "raw GCM decrypt(encrypt(x))");
}

static int raw_dk_generate(struct worker *w)
{
	const struct raw_side *r = &w->b->raw;
	CK_SESSION_HANDLE s = r->sess[w->index];
	CK_RV rv;

	rv = r->f->C_GenerateRandom(s, w->dk, sizeof(w->dk));
	if (rv != CKR_OK)
		return fail_ck(w, "C_GenerateRandom", rv);
	w->ctlen = sizeof(w->ct);
	return raw_gcm_encrypt(w, s, r->env_key, r->ec_aad, r->ec_aad_len, w->dk,
	                       sizeof(w->dk), w->iv, w->ct, &w->ctlen);
}

static int raw_dk_generate_verify(struct worker *w)
{
	const struct raw_side *r = &w->b->raw;

	return raw_gcm_check(w, r->ec_aad, r->ec_aad_len, w->iv, w->ct, w->ctlen, w->dk,
	                     sizeof(w->dk), "raw data key decrypt(generate())");
}

static int raw_dk_decrypt(struct worker *w)
{
	const struct raw_side *r = &w->b->raw;

	return raw_gcm_check(w, r->ec_aad, r->ec_aad_len, r->dk_iv, r->dk_ct, sizeof(r->dk_ct),
	                     r->dk_plain, sizeof(r->dk_plain), "raw data key decrypt");
}

/*
 * Unwrap into a short-lived session object that may be read back, the way
 * key material leaves a keywrap operation: KWP unwrap, read CKA_VALUE,
 * destroy.
 */
static int raw_unwrap(struct worker *w)
{
	const struct raw_side *r = &w->b->raw;
	CK_SESSION_HANDLE s = r->sess[w->index];
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
	};
	CK_MECHANISM m = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	uint8_t value[HW_WRAP_MAX_MATERIAL];
	CK_ATTRIBUTE get = { CKA_VALUE, value, sizeof(value) };
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	CK_RV rv;
	int ret;

	rv = r->f->C_UnwrapKey(s, &m, r->wrap_key, (CK_BYTE_PTR)r->kwp, r->kwp_len, tmpl,
	                       sizeof(tmpl) / sizeof(tmpl[0]), &obj);
	if (rv != CKR_OK)
		return fail_ck(w, "C_UnwrapKey", rv);
	rv = r->f->C_GetAttributeValue(s, obj, &get, 1);
	if (rv != CKR_OK) {
		(void)r->f->C_DestroyObject(s, obj);
		return fail_ck(w, "C_GetAttributeValue(CKA_VALUE)", rv);
	}
	rv = r->f->C_DestroyObject(s, obj);
	if (rv != CKR_OK)
		return fail_ck(w, "C_DestroyObject", rv);
	ret = expect_equal(w, "raw KWP unwrap", value, get.ulValueLen, w->b->material,
	                   sizeof(w->b->material));
	OPENSSL_cleanse(value, get.ulValueLen);
	return ret;
}

static const struct op_impl impls[2][OP_COUNT] = {
	{
		[OP_ENCRYPT] = { lib_encrypt, lib_encrypt_verify },
		[OP_DK_GENERATE] = { lib_dk_generate, lib_dk_generate_verify },
		[OP_DK_DECRYPT] = { lib_dk_decrypt, NULL },
		[OP_UNWRAP] = { lib_unwrap, NULL },
	},
	{
		[OP_ENCRYPT] = { raw_encrypt, raw_encrypt_verify },
		[OP_DK_GENERATE] = { raw_dk_generate, raw_dk_generate_verify },
		[OP_DK_DECRYPT] = { raw_dk_decrypt, NULL },
		[OP_UNWRAP] = { raw_unwrap, NULL },
	},
};

/* ------------------------------------------------------------------ */
/* Timing                                                              */

static double ts_diff(const struct timespec *a, const struct timespec *b)
{
	return (double)(a->tv_sec - b->tv_sec) + (double)(a->tv_nsec - b->tv_nsec) / 1e9;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static int run_and_check(struct worker *w, const struct op_impl *impl)
{
	if (impl->run(w) != 0)
		return -1;
	return impl->verify != NULL ? impl->verify(w) : 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct op_impl *impl = &impls[w->raw][w->op];
	struct timespec now;

	/* warm-up: fills the session pool and proves the operation works */
	if (run_and_check(w, impl) != 0)
		w->failed = 1;
	pthread_barrier_wait(w->ready);
	pthread_barrier_wait(w->go);
	clock_gettime(CLOCK_MONOTONIC, &now);
	while (!w->failed) {
		if (impl->run(w) != 0) {
			w->failed = 1;
			break;
		}
		w->ops++;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (!ts_before(&now, w->deadline))
			break;
	}
	w->end = now;
	if (!w->failed && impl->verify != NULL && impl->verify(w) != 0)
		w->failed = 1;
	hw_free(w->blob);
	w->blob = NULL;
	OPENSSL_cleanse(w->dk, sizeof(w->dk));
	return NULL;
}

/* One time-boxed run; returns ops/s or exits on failure. */
static double run_cell(const struct bench *b, enum op op, int raw, unsigned nthreads)
{
	struct worker *ws = calloc(nthreads, sizeof(*ws));
	pthread_t *tids = calloc(nthreads, sizeof(*tids));
	pthread_barrier_t ready, go;
	struct timespec start, deadline, last;
	unsigned long total = 0;
	double elapsed;
	unsigned i;
	int failed = 0;

	if (ws == NULL || tids == NULL)
		die("out of memory");
	pthread_barrier_init(&ready, NULL, nthreads + 1);
	pthread_barrier_init(&go, NULL, nthreads + 1);
	for (i = 0; i < nthreads; i++) {
		ws[i].b = b;
		ws[i].op = op;
		ws[i].raw = raw;
		ws[i].index = i;
		ws[i].ready = &ready;
		ws[i].go = &go;
		ws[i].deadline = &deadline;
		if (pthread_create(&tids[i], NULL, worker_main, &ws[i]) != 0)
			die("cannot start a thread");
	}
	pthread_barrier_wait(&ready);
	clock_gettime(CLOCK_MONOTONIC, &start);
	deadline = start;
	deadline.tv_sec += (time_t)b->opt.seconds;
	deadline.tv_nsec += (long)((b->opt.seconds - (double)(time_t)b->opt.seconds) * 1e9);
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_barrier_wait(&go);
	last = start;
	for (i = 0; i < nthreads; i++) {
		pthread_join(tids[i], NULL);
		if (ws[i].failed) {
			fprintf(stderr, PROG ": %s (%s, thread %u): %s\n", op_names[op],
			        raw ? "raw PKCS#11" : "library", i, ws[i].err);
			failed = 1;
		}
		total += ws[i].ops;
		if (ts_before(&last, &ws[i].end))
			last = ws[i].end;
	}
	pthread_barrier_destroy(&ready);
	pthread_barrier_destroy(&go);
	free(ws);
	free(tids);
	if (failed)
		exit(1);
	elapsed = ts_diff(&last, &start);
	return elapsed > 0 ? (double)total / elapsed : 0.0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(const double *v, unsigned n)
{
	double s[MAX_ROUNDS];

	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* ------------------------------------------------------------------ */
/* PIN, as hsmwrap reads it                                            */

static size_t read_pin(const char *source, char *pin, size_t max)
{
	size_t len;

	if (strncmp(source, "env:", 4) == 0) {
		const char *v = getenv(source + 4);

		if (v == NULL)
			die("PIN source %s: variable not set", source);
		len = strlen(v);
		if (len >= max)
			die("PIN source %s: PIN too long", source);
		memcpy(pin, v, len);
	} else if (strncmp(source, "file:", 5) == 0) {
		FILE *fp = fopen(source + 5, "r");

		if (fp == NULL)
			die("PIN source %s: %s", source, strerror(errno));
		len = fread(pin, 1, max - 1, fp);
		fclose(fp);
	} else {
		die("PIN source %s: the benchmark supports file: and env: only", source);
	}
	while (len > 0 && (pin[len - 1] == '\n' || pin[len - 1] == '\r'))
		len--;
	pin[len] = '\0';
	return len;
}

/* The same fallback order as the library: option/env, then the token URI. */
static const char *raw_pin_source(const struct options *opt, P11KitUri *uri, int *is_value)
{
	const char *s;

	*is_value = 0;
	if (opt->pin_source != NULL)
		return opt->pin_source;
	s = p11_kit_uri_get_pin_source(uri);
	if (s != NULL)
		return s;
	s = p11_kit_uri_get_pin_value(uri);
	if (s != NULL)
		*is_value = 1;
	return s;
}

/* ------------------------------------------------------------------ */
/* Raw side setup                                                      */

static void raw_load(struct raw_side *r, const char *path)
{
	CK_C_GetFunctionList gfl;
	CK_C_INITIALIZE_ARGS args;
	void *sym;
	CK_RV rv;

	if (path == NULL || strchr(path, '/') == NULL)
		die("the library did not report a module file (got '%s')", path ? path : "(null)");
	/* the same file as the library's, so dlopen hands back the same instance */
	r->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (r->dl == NULL)
		die("dlopen %s: %s", path, dlerror());
	sym = dlsym(r->dl, "C_GetFunctionList");
	if (sym == NULL)
		die("%s has no C_GetFunctionList", path);
	/* POSIX guarantees a data pointer from dlsym converts to a function */
	memcpy(&gfl, &sym, sizeof(gfl));
	rv = gfl(&r->f);
	if (rv != CKR_OK)
		die("C_GetFunctionList: CK_RV 0x%lx", (unsigned long)rv);
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = r->f->C_Initialize(&args);
	if (rv == CKR_OK)
		r->we_initialized = 1;
	else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		die("C_Initialize: CK_RV 0x%lx", (unsigned long)rv);
}

static void raw_find_slot(struct raw_side *r, P11KitUri *uri)
{
	CK_SLOT_ID *slots;
	CK_ULONG n = 0, i;
	CK_RV rv;
	int found = 0;

	rv = r->f->C_GetSlotList(CK_TRUE, NULL, &n);
	if (rv != CKR_OK)
		die("C_GetSlotList: CK_RV 0x%lx", (unsigned long)rv);
	slots = calloc(n ? n : 1, sizeof(*slots));
	if (slots == NULL)
		die("out of memory");
	rv = r->f->C_GetSlotList(CK_TRUE, slots, &n);
	if (rv != CKR_OK)
		die("C_GetSlotList: CK_RV 0x%lx", (unsigned long)rv);
	for (i = 0; i < n && !found; i++) {
		CK_TOKEN_INFO ti;

		if (r->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (p11_kit_uri_match_token_info(uri, &ti) == 1) {
			r->slot = slots[i];
			found = 1;
		}
	}
	free(slots);
	if (!found)
		die("raw PKCS#11: no slot holds the library's token");
}

static CK_OBJECT_HANDLE raw_find_key(const struct raw_side *r, const char *label)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;
	CK_RV rv;

	rv = r->f->C_FindObjectsInit(r->sess[0], tmpl, 2);
	if (rv != CKR_OK)
		die("C_FindObjectsInit: CK_RV 0x%lx", (unsigned long)rv);
	rv = r->f->C_FindObjects(r->sess[0], h, 2, &n);
	(void)r->f->C_FindObjectsFinal(r->sess[0]);
	if (rv != CKR_OK)
		die("C_FindObjects: CK_RV 0x%lx", (unsigned long)rv);
	if (n != 1)
		die("raw PKCS#11: %lu secret keys labelled '%s'", (unsigned long)n, label);
	return h[0];
}

static void raw_login(struct raw_side *r, const struct options *opt, P11KitUri *uri)
{
	char pin[PIN_MAX];
	const char *src;
	size_t len;
	int is_value;
	CK_RV rv;

	src = raw_pin_source(opt, uri, &is_value);
	if (src == NULL)
		die("no PIN source: use --pin-source or HSMWRAP_PIN_SOURCE");
	if (is_value) {
		len = strlen(src);
		if (len >= sizeof(pin))
			die("pin-value too long");
		memcpy(pin, src, len + 1);
	} else {
		len = read_pin(src, pin, sizeof(pin));
	}
	rv = r->f->C_Login(r->sess[0], CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
	OPENSSL_cleanse(pin, sizeof(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login: CK_RV 0x%lx", (unsigned long)rv);
}

/* Wrapped material for the unwrap cell, made with C_WrapKey on the token. */
static void raw_make_kwp(struct bench *b)
{
	struct raw_side *r = &b->raw;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_VALUE, b->material, sizeof(b->material) },
	};
	CK_MECHANISM m = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_OBJECT_HANDLE obj;
	CK_RV rv;

	rv = r->f->C_CreateObject(r->sess[0], tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &obj);
	if (rv != CKR_OK)
		die("C_CreateObject (material to wrap): CK_RV 0x%lx", (unsigned long)rv);
	r->kwp_len = sizeof(r->kwp);
	rv = r->f->C_WrapKey(r->sess[0], &m, r->wrap_key, obj, r->kwp, &r->kwp_len);
	(void)r->f->C_DestroyObject(r->sess[0], obj);
	if (rv != CKR_OK)
		die("C_WrapKey(CKM_AES_KEY_WRAP_PAD): CK_RV 0x%lx", (unsigned long)rv);
}

static void raw_make_datakey(struct bench *b)
{
	struct worker w;

	memset(&w, 0, sizeof(w));
	w.b = b;
	if (raw_dk_generate(&w) != 0)
		die("raw data key: %s", w.err);
	if (w.ctlen != sizeof(b->raw.dk_ct))
		die("raw data key: unexpected ciphertext length %lu", (unsigned long)w.ctlen);
	memcpy(b->raw.dk_iv, w.iv, sizeof(w.iv));
	memcpy(b->raw.dk_ct, w.ct, sizeof(b->raw.dk_ct));
	memcpy(b->raw.dk_plain, w.dk, sizeof(w.dk));
	OPENSSL_cleanse(w.dk, sizeof(w.dk));
}

static void raw_setup(struct bench *b, unsigned maxthreads)
{
	struct raw_side *r = &b->raw;
	P11KitUri *uri = p11_kit_uri_new();
	const char *token_uri = hw_ctx_token_uri(b->lib.ctx);
	unsigned i;
	int rc;
	hw_err e;

	if (uri == NULL)
		die("out of memory");
	raw_load(r, hw_ctx_module_path(b->lib.ctx));
	rc = p11_kit_uri_parse(token_uri, P11_KIT_URI_FOR_TOKEN, uri);
	if (rc != P11_KIT_URI_OK)
		die("token URI '%s': %s", token_uri, p11_kit_uri_message(rc));
	raw_find_slot(r, uri);
	for (i = 0; i < maxthreads; i++) {
		CK_RV rv = r->f->C_OpenSession(r->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
		                               NULL, NULL, &r->sess[i]);
		if (rv != CKR_OK)
			die("C_OpenSession: CK_RV 0x%lx", (unsigned long)rv);
		r->nsess++;
	}
	/* the PIN source may live in the URI the user gave, not the library's */
	if (b->opt.token != NULL && b->opt.pin_source == NULL) {
		P11KitUri *user = p11_kit_uri_new();

		if (user != NULL && p11_kit_uri_parse(b->opt.token, P11_KIT_URI_FOR_ANY,
		                                      user) == P11_KIT_URI_OK) {
			p11_kit_uri_free(uri);
			uri = user;
		} else {
			p11_kit_uri_free(user);
		}
	}
	raw_login(r, &b->opt, uri);
	p11_kit_uri_free(uri);
	r->env_key = raw_find_key(r, KEY_ENVELOPE);
	r->wrap_key = raw_find_key(r, KEY_KEYWRAP);

	/* 40 bytes: the library's header for a 16-byte id and this label */
	memset(r->enc_aad, 0x5a, sizeof(r->enc_aad));
	r->enc_aad_len = 40;
	memcpy(r->enc_aad + r->enc_aad_len, b->aad, sizeof(b->aad));
	r->enc_aad_len += sizeof(b->aad);
	e = hw_ectx_serialize(b->lib.ec, &r->ec_aad, &r->ec_aad_len);
	if (e != HW_OK)
		die_hw("hw_ectx_serialize", e);
	raw_make_datakey(b);
	raw_make_kwp(b);
}

static void raw_teardown(struct raw_side *r)
{
	unsigned i;

	for (i = 0; i < r->nsess; i++)
		(void)r->f->C_CloseSession(r->sess[i]);
	if (r->we_initialized)
		(void)r->f->C_Finalize(NULL);
	hw_free(r->ec_aad);
	OPENSSL_cleanse(r->dk_plain, sizeof(r->dk_plain));
	/* no dlclose: the library still holds the module */
}

/* ------------------------------------------------------------------ */
/* Library side setup                                                  */

static hw_key *lib_key(struct bench *b, const char *label, hw_purpose purpose)
{
	hw_key *k = NULL;
	hw_err e = hw_key_find(b->lib.ctx, label, &k);

	if (e == HW_ERR_KEY_NOT_FOUND && b->opt.setup) {
		e = hw_key_generate(b->lib.ctx, label, HW_KEY_AES256, purpose, &k);
		if (e != HW_OK)
			die_hw("creating a bench key", e);
		fprintf(stderr, PROG ": created key '%s' (aes256, %s)\n", label,
		        hw_purpose_name(purpose));
		return k;
	}
	if (e == HW_ERR_KEY_NOT_FOUND)
		die("key '%s' not found: run with --setup to create the bench keys", label);
	if (e != HW_OK)
		die_hw("finding a bench key", e);
	return k;
}

static void lib_setup(struct bench *b)
{
	struct lib_side *l = &b->lib;
	hw_err e;

	if ((e = hw_ctx_new(&l->ctx)) != HW_OK)
		die_hw("hw_ctx_new", e);
	hw_ctx_set_pool_size(l->ctx, MAX_THREADS);
	if (b->opt.module != NULL && (e = hw_ctx_set_module(l->ctx, b->opt.module)) != HW_OK)
		die_hw("module", e);
	if (b->opt.token != NULL && (e = hw_ctx_set_token(l->ctx, b->opt.token)) != HW_OK)
		die_hw("token", e);
	if (b->opt.pin_source != NULL &&
	    (e = hw_ctx_set_pin_source(l->ctx, b->opt.pin_source)) != HW_OK)
		die_hw("PIN source", e);
	if ((e = hw_ctx_open(l->ctx)) != HW_OK)
		die_hw("opening the token", e);
	if ((e = hw_ctx_login(l->ctx)) != HW_OK)
		die_hw("login", e);
	l->env_key = lib_key(b, KEY_ENVELOPE, HW_PURPOSE_ENVELOPE);
	l->wrap_key = lib_key(b, KEY_KEYWRAP, HW_PURPOSE_KEYWRAP);
	if ((e = hw_ectx_new(&l->ec)) != HW_OK || (e = hw_ectx_add(l->ec, "app", "bench")) != HW_OK ||
	    (e = hw_ectx_add(l->ec, "purpose", "measurement")) != HW_OK)
		die_hw("encryption context", e);
	e = hw_datakey_generate(l->env_key, l->ec, l->dk_plain, &l->dk_wrapped, &l->dk_wrapped_len);
	if (e != HW_OK)
		die_hw("hw_datakey_generate", e);
	e = hw_wrap(l->wrap_key, b->material, sizeof(b->material), &l->kwp_blob, &l->kwp_blob_len);
	if (e != HW_OK)
		die_hw("hw_wrap", e);
}

static void lib_teardown(struct lib_side *l)
{
	hw_free(l->dk_wrapped);
	hw_free(l->kwp_blob);
	OPENSSL_cleanse(l->dk_plain, sizeof(l->dk_plain));
	hw_ectx_free(l->ec);
	hw_key_free(l->env_key);
	hw_key_free(l->wrap_key);
	hw_ctx_free(l->ctx);
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

static void json_string(const char *s)
{
	putchar('"');
	for (; s != NULL && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void json_array(const double *v, unsigned n)
{
	unsigned i;

	putchar('[');
	for (i = 0; i < n; i++)
		printf("%s%.1f", i ? ", " : "", v[i]);
	putchar(']');
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0.0;
}

/* Scaling is relative to the same operation at its lowest thread count. */
static const struct cell *base_cell(const struct cell *cells, unsigned n, const struct cell *c)
{
	const struct cell *base = c;
	unsigned i;

	for (i = 0; i < n; i++)
		if (cells[i].op == c->op && cells[i].threads < base->threads)
			base = &cells[i];
	return base;
}

static void print_json(const struct bench *b, const struct cell *cells, unsigned n)
{
	unsigned i;

	printf("{\"version\": ");
	json_string(hw_version());
	printf(", \"module\": ");
	json_string(hw_ctx_module_path(b->lib.ctx));
	printf(", \"token\": ");
	json_string(hw_ctx_token_uri(b->lib.ctx));
	printf(", \"payload_bytes\": %d, \"seconds_per_run\": %g, \"rounds\": %u, \"results\": [",
	       PAYLOAD_LEN, b->opt.seconds, b->opt.rounds);
	for (i = 0; i < n; i++) {
		const struct cell *c = &cells[i];

		const struct cell *base = base_cell(cells, n, c);

		printf("%s\n  {\"op\": \"%s\", \"threads\": %u, \"lib_ops_per_sec\": %.1f, "
		       "\"raw_ops_per_sec\": %.1f, \"ratio\": %.3f, \"paired_ratio\": %.3f, "
		       "\"lib_scaling\": %.3f, "
		       "\"raw_scaling\": %.3f, \"scaling_base_threads\": %u, \"lib_runs\": ",
		       i ? "," : "", op_names[c->op], c->threads, c->lib_median, c->raw_median,
		       ratio(c->lib_median, c->raw_median), c->paired_ratio,
		       ratio(c->lib_median, base->lib_median),
		       ratio(c->raw_median, base->raw_median), base->threads);
		json_array(c->lib, b->opt.rounds);
		printf(", \"raw_runs\": ");
		json_array(c->raw, b->opt.rounds);
		putchar('}');
	}
	printf("\n]}\n");
}

static void print_table(const struct bench *b, const struct cell *cells, unsigned n)
{
	unsigned i;

	printf("hsmwrap %s, module %s\ntoken %s\n", hw_version(),
	       hw_ctx_module_path(b->lib.ctx), hw_ctx_token_uri(b->lib.ctx));
	printf("%d-byte payloads, %g s per run, median of %u rounds (library and raw "
	       "interleaved)\n\n", PAYLOAD_LEN, b->opt.seconds, b->opt.rounds);
	printf("%-18s %7s %14s %14s %8s %8s %10s %10s\n", "operation", "threads",
	       "library ops/s", "raw ops/s", "lib/raw", "paired", "lib scale", "raw scale");
	for (i = 0; i < n; i++) {
		const struct cell *c = &cells[i];
		const struct cell *base = base_cell(cells, n, c);

		printf("%-18s %7u %14.0f %14.0f %8.3f %8.3f %9.2fx %9.2fx\n", op_names[c->op],
		       c->threads, c->lib_median, c->raw_median,
		       ratio(c->lib_median, c->raw_median), c->paired_ratio,
		       ratio(c->lib_median, base->lib_median),
		       ratio(c->raw_median, base->raw_median));
	}
	printf("\nlib/raw: median library ops/s over median raw PKCS#11 ops/s.\n"
	       "paired: median over rounds of (library/raw) within the round, which cancels\n"
	       "        slow drift of the machine's speed between rounds.\n"
	       "scale: ops/s over the same side's ops/s at the lowest thread count measured.\n");
}

/* ------------------------------------------------------------------ */
/* Options                                                             */

static void usage(FILE *fp)
{
	fprintf(fp,
	        "Usage: " PROG " [OPTION]...\n"
	        "Measure libhsmwrap against raw PKCS#11 calls on the same token.\n\n"
	        "  --module NAME|PATH     PKCS#11 module (default: $HSMWRAP_MODULE, else the build's)\n"
	        "  --token URI            token (default: $HSMWRAP_TOKEN)\n"
	        "  --pin-source SRC       file:PATH or env:NAME (default: $HSMWRAP_PIN_SOURCE)\n"
	        "  --setup                create the keys '" KEY_ENVELOPE "' (aes256, envelope)\n"
	        "                         and '" KEY_KEYWRAP "' (aes256, keywrap) if missing\n"
	        "  --seconds S            length of each run (default 0.25)\n"
	        "  --rounds N             library/raw run pairs per cell, median reported (default 15)\n"
	        "  --threads LIST         thread counts, e.g. 1,2,4 (default 1,2)\n"
	        "  --ops LIST             subset of encrypt,datakey-generate,datakey-decrypt,unwrap\n"
	        "  --json                 print one JSON document instead of the table\n"
	        "  -v, --verbose          report each run on stderr\n"
	        "  -h, --help             this text\n");
}

static unsigned long parse_ulong(const char *s, const char *what, unsigned long lo,
                                 unsigned long hi)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, PROG ": %s must be a number from %lu to %lu\n", what, lo, hi);
		exit(2);
	}
	return v;
}

static void parse_threads(struct options *o, const char *arg)
{
	char *copy = strdup(arg), *save = NULL, *t;

	if (copy == NULL)
		die("out of memory");
	o->nthreads = 0;
	for (t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		if (o->nthreads == MAX_THREADS) {
			fprintf(stderr, PROG ": too many thread counts\n");
			exit(2);
		}
		o->threads[o->nthreads++] =
			(unsigned)parse_ulong(t, "a thread count", 1, MAX_THREADS);
	}
	free(copy);
	if (o->nthreads == 0) {
		fprintf(stderr, PROG ": --threads needs at least one count\n");
		exit(2);
	}
}

static void parse_ops(struct options *o, const char *arg)
{
	char *copy = strdup(arg), *save = NULL, *t;
	int i, any = 0;

	if (copy == NULL)
		die("out of memory");
	memset(o->ops, 0, sizeof(o->ops));
	for (t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < OP_COUNT && strcmp(t, op_names[i]) != 0; i++)
			;
		if (i == OP_COUNT) {
			fprintf(stderr, PROG ": unknown operation '%s'\n", t);
			exit(2);
		}
		o->ops[i] = any = 1;
	}
	free(copy);
	if (!any) {
		fprintf(stderr, PROG ": --ops needs at least one operation\n");
		exit(2);
	}
}

static void parse_options(struct options *o, int argc, char **argv)
{
	enum { O_MODULE = 256, O_TOKEN, O_PIN, O_SETUP, O_SECONDS, O_ROUNDS, O_THREADS,
	       O_OPS, O_JSON };
	static const struct option longopts[] = {
		{ "module", required_argument, NULL, O_MODULE },
		{ "token", required_argument, NULL, O_TOKEN },
		{ "pin-source", required_argument, NULL, O_PIN },
		{ "setup", no_argument, NULL, O_SETUP },
		{ "seconds", required_argument, NULL, O_SECONDS },
		{ "rounds", required_argument, NULL, O_ROUNDS },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "ops", required_argument, NULL, O_OPS },
		{ "json", no_argument, NULL, O_JSON },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c, i;

	memset(o, 0, sizeof(*o));
	o->module = getenv("HSMWRAP_MODULE");
	o->token = getenv("HSMWRAP_TOKEN");
	o->pin_source = getenv("HSMWRAP_PIN_SOURCE");
	o->seconds = 0.25;
	o->rounds = 15;
	o->threads[0] = 1;
	o->threads[1] = 2;
	o->nthreads = 2;
	for (i = 0; i < OP_COUNT; i++)
		o->ops[i] = 1;
	while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (c) {
		case O_MODULE: o->module = optarg; break;
		case O_TOKEN: o->token = optarg; break;
		case O_PIN: o->pin_source = optarg; break;
		case O_SETUP: o->setup = 1; break;
		case O_SECONDS:
			errno = 0;
			o->seconds = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' || !(o->seconds > 0) ||
			    o->seconds > 3600) {
				fprintf(stderr, PROG ": --seconds must be in (0, 3600]\n");
				exit(2);
			}
			break;
		case O_ROUNDS:
			o->rounds = (unsigned)parse_ulong(optarg, "--rounds", 1, MAX_ROUNDS);
			break;
		case O_THREADS: parse_threads(o, optarg); break;
		case O_OPS: parse_ops(o, optarg); break;
		case O_JSON: o->json = 1; break;
		case 'v': o->verbose = 1; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	/* empty variables count as unset, as for hsmwrap */
	if (o->module != NULL && o->module[0] == '\0')
		o->module = NULL;
	if (o->token != NULL && o->token[0] == '\0')
		o->token = NULL;
	if (o->pin_source != NULL && o->pin_source[0] == '\0')
		o->pin_source = NULL;
}

/* ------------------------------------------------------------------ */

static void measure(const struct bench *b, struct cell *c)
{
	double ratios[MAX_ROUNDS];
	unsigned r;

	for (r = 0; r < b->opt.rounds; r++) {
		c->lib[r] = run_cell(b, c->op, 0, c->threads);
		c->raw[r] = run_cell(b, c->op, 1, c->threads);
		if (b->opt.verbose)
			fprintf(stderr, PROG ": %s, %u thread(s), round %u: library %.0f/s, "
			        "raw %.0f/s\n", op_names[c->op], c->threads, r + 1, c->lib[r],
			        c->raw[r]);
	}
	c->lib_median = median(c->lib, b->opt.rounds);
	c->raw_median = median(c->raw, b->opt.rounds);
	for (r = 0; r < b->opt.rounds; r++)
		ratios[r] = c->raw[r] > 0 ? c->lib[r] / c->raw[r] : 0.0;
	c->paired_ratio = median(ratios, b->opt.rounds);
}

/* Sub-benchmarks in their own files: `hsmwrap-bench NAME [OPTION]...`. */
int bench_envelope_main(int argc, char **argv);

int main(int argc, char **argv)
{
	static struct bench b;
	struct cell cells[OP_COUNT * MAX_THREADS];
	unsigned ncells = 0, maxthreads = 0, i;
	int op;

	if (argc > 1 && strcmp(argv[1], "envelope") == 0)
		return bench_envelope_main(argc - 1, argv + 1);
	parse_options(&b.opt, argc, argv);
	for (i = 0; i < b.opt.nthreads; i++)
		if (b.opt.threads[i] > maxthreads)
			maxthreads = b.opt.threads[i];
	if (RAND_bytes(b.payload, sizeof(b.payload)) != 1 ||
	    RAND_bytes(b.aad, sizeof(b.aad)) != 1 ||
	    RAND_bytes(b.material, sizeof(b.material)) != 1)
		die("RAND_bytes failed");

	lib_setup(&b);
	raw_setup(&b, maxthreads);

	memset(cells, 0, sizeof(cells));
	for (op = 0; op < OP_COUNT; op++) {
		if (!b.opt.ops[op])
			continue;
		for (i = 0; i < b.opt.nthreads; i++) {
			cells[ncells].op = (enum op)op;
			cells[ncells].threads = b.opt.threads[i];
			measure(&b, &cells[ncells]);
			ncells++;
		}
	}
	if (b.opt.json)
		print_json(&b, cells, ncells);
	else
		print_table(&b, cells, ncells);

	raw_teardown(&b.raw);
	lib_teardown(&b.lib);
	OPENSSL_cleanse(b.material, sizeof(b.material));
	return fflush(stdout) == 0 ? 0 : 1;
}
