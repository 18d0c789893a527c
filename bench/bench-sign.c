/*
 * hsmwrap-bench-sign: signatures per second through the hsmwrap OpenSSL
 * provider against raw C_Sign with the same HSM key and mechanism, in the
 * same process, interleaved rounds (issue 4's "provider overhead under 5%").
 *
 *   provider  EVP_PKEY_sign of a SHA-256 digest with a fresh EVP_PKEY_CTX
 *             each time (what libssl does per handshake: new context,
 *             init, set the digest, sign), key loaded once via OSSL_STORE
 *   digest    EVP_DigestSign of a 64-byte message, fresh EVP_MD_CTX each
 *             time (hashing included)
 *   raw       C_SignInit + C_Sign on the same token, same key, same
 *             mechanism (CKM_RSA_PKCS over DigestInfo || digest, CKM_ECDSA
 *             over the digest, CKM_EDDSA over the message), one session
 *             opened beforehand
 *
 * EdDSA keys sign messages, not digests: only "digest" (EVP_DigestSign
 * with no digest, PureEdDSA) and "raw" apply to them.
 *
 * Each round runs the three for --seconds each, in a rotating order; the
 * median of the per-round ratios is reported, so drift of a shared
 * machine's speed between rounds cancels out.
 *
 * --threads-test N: N threads sign with one key at once through the
 * provider (EVP_DigestSign), every signature is verified with the public
 * key by the default provider; exit 1 if any fails. test-provider.sh runs
 * it.
 *
 * Settings as hsmwrap: HSMWRAP_MODULE (a module path), HSMWRAP_TOKEN,
 * HSMWRAP_PIN_SOURCE (file: or env:); OPENSSL_MODULES finds hsmwrap.so.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#define PROG "hsmwrap-bench-sign"
#define MAX_ROUNDS 99

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	ERR_print_errors_fp(stderr);
	exit(1);
}

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* The provider side                                                   */

static OSSL_LIB_CTX *libctx;

static EVP_PKEY *
load_hsm_key(const char *label)
{
	char uri[512];
	OSSL_STORE_CTX *st;
	OSSL_STORE_INFO *info;
	EVP_PKEY *pk = NULL;

	snprintf(uri, sizeof(uri), "pkcs11:object=%s;type=private", label);
	st = OSSL_STORE_open_ex(uri, libctx, NULL, NULL, NULL, NULL, NULL, NULL);
	if (!st)
		die("OSSL_STORE_open %s", uri);
	while (!pk && (info = OSSL_STORE_load(st)) != NULL) {
		if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			pk = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	if (!pk)
		die("no private key behind %s", uri);
	return pk;
}

/* The public half as a default-provider key, to verify with. */
static EVP_PKEY *
public_copy(EVP_PKEY *pk)
{
	unsigned char *der = NULL;
	const unsigned char *q;
	int len = i2d_PUBKEY(pk, &der);
	EVP_PKEY *pub;

	if (len <= 0)
		die("encoding the public key");
	q = der;
	pub = d2i_PUBKEY_ex(NULL, &q, len, libctx, "provider=default");
	OPENSSL_free(der);
	if (!pub)
		die("decoding the public key");
	return pub;
}

static __attribute__((noinline)) int
prov_sign_digest(EVP_PKEY *pk, const unsigned char *dg, unsigned char *sig, size_t *siglen)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(libctx, pk, NULL);
	int ok = pc && EVP_PKEY_sign_init(pc) == 1 &&
	         EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
	         EVP_PKEY_sign(pc, sig, siglen, dg, 32) == 1;

	EVP_PKEY_CTX_free(pc);
	return ok;
}

/* md: "SHA256", or NULL for EdDSA (the key signs the message itself). */
static __attribute__((noinline)) int
prov_digest_sign(EVP_PKEY *pk, const char *md, const unsigned char *msg, size_t len,
                 unsigned char *sig, size_t *siglen)
{
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	int ok = mc && EVP_DigestSignInit_ex(mc, NULL, md, libctx, NULL, pk, NULL) == 1 &&
	         EVP_DigestSign(mc, sig, siglen, msg, len) == 1;

	EVP_MD_CTX_free(mc);
	return ok;
}

/* ------------------------------------------------------------------ */
/* The raw side: the same module instance, its own session             */

static CK_FUNCTION_LIST *f;
static CK_SESSION_HANDLE sess;

static void
read_pin(const char *source, char *pin, size_t max)
{
	size_t len = 0;

	if (strncmp(source, "env:", 4) == 0) {
		const char *v = getenv(source + 4);
		if (!v || (len = strlen(v)) >= max)
			die("PIN source %s unusable", source);
		memcpy(pin, v, len);
	} else if (strncmp(source, "file:", 5) == 0) {
		FILE *fp = fopen(source + 5, "r");
		if (!fp)
			die("PIN source %s: %s", source, strerror(errno));
		len = fread(pin, 1, max - 1, fp);
		fclose(fp);
	} else {
		die("PIN source %s: file: and env: only", source);
	}
	while (len > 0 && (pin[len - 1] == '\n' || pin[len - 1] == '\r'))
		len--;
	pin[len] = '\0';
}

static void
raw_open(void)
{
	const char *path = getenv("HSMWRAP_MODULE"), *tok = getenv("HSMWRAP_TOKEN");
	const char *pinsrc = getenv("HSMWRAP_PIN_SOURCE");
	CK_C_GetFunctionList gfl;
	CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	P11KitUri *uri = p11_kit_uri_new();
	char pin[256];
	void *dl, *sym;
	int found = 0;
	CK_RV rv;

	if (!path || !strchr(path, '/') || !tok || !pinsrc)
		die("set HSMWRAP_MODULE (a path), HSMWRAP_TOKEN and HSMWRAP_PIN_SOURCE");
	if (p11_kit_uri_parse(tok, P11_KIT_URI_FOR_TOKEN, uri) != P11_KIT_URI_OK)
		die("bad token URI %s", tok);
	/* The same file as the provider's: dlopen gives the same instance. */
	if (!(dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) || !(sym = dlsym(dl, "C_GetFunctionList")))
		die("dlopen %s: %s", path, dlerror());
	memcpy(&gfl, &sym, sizeof(gfl));
	if (gfl(&f) != CKR_OK)
		die("C_GetFunctionList");
	rv = f->C_Initialize(&args);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		die("C_Initialize: 0x%lx", (unsigned long)rv);
	if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		die("C_GetSlotList");
	for (CK_ULONG i = 0; i < n && !found; i++) {
		CK_TOKEN_INFO ti;
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    p11_kit_uri_match_token_info(uri, &ti) == 1 &&
		    f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &sess) == CKR_OK)
			found = 1;
	}
	p11_kit_uri_free(uri);
	if (!found)
		die("raw PKCS#11: token %s not found", tok);
	read_pin(pinsrc, pin, sizeof(pin));
	rv = f->C_Login(sess, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	OPENSSL_cleanse(pin, sizeof(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login: 0x%lx", (unsigned long)rv);
}

static CK_OBJECT_HANDLE
raw_key(const char *label)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[] = { { CKA_CLASS, &cls, sizeof(cls) },
	                     { CKA_LABEL, (void *)label, strlen(label) } };
	CK_OBJECT_HANDLE h[2];
	CK_ULONG n = 0;

	if (f->C_FindObjectsInit(sess, t, 2) != CKR_OK || f->C_FindObjects(sess, h, 2, &n) != CKR_OK)
		die("C_FindObjects");
	f->C_FindObjectsFinal(sess);
	if (n != 1)
		die("raw: %lu private keys labelled %s", (unsigned long)n, label);
	return h[0];
}

/* SHA-256 DigestInfo prefix: CKM_RSA_PKCS signs what it is given. */
static const unsigned char di256[19] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48,
                                         0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
                                         0x20 };

enum kind { K_RSA, K_EC, K_ED };
static const char *const kind_name[] = { "RSA", "EC", "Ed" };

/* msg (64 bytes) for EdDSA, dg (32) otherwise. */
static __attribute__((noinline)) int
raw_sign(CK_OBJECT_HANDLE key, enum kind kind, const unsigned char *dg,
         const unsigned char *msg, unsigned char *sig, CK_ULONG *siglen)
{
	CK_MECHANISM m = { kind == K_RSA ? CKM_RSA_PKCS : kind == K_EC ? CKM_ECDSA : CKM_EDDSA,
		           NULL, 0 };
	unsigned char in[64];
	CK_ULONG inlen = 32;

	if (kind == K_RSA) {
		memcpy(in, di256, 19);
		memcpy(in + 19, dg, 32);
		inlen = 51;
	} else if (kind == K_ED) {
		memcpy(in, msg, 64);
		inlen = 64;
	} else {
		memcpy(in, dg, 32);
	}
	return f->C_SignInit(sess, &m, key) == CKR_OK &&
	       f->C_Sign(sess, in, inlen, sig, siglen) == CKR_OK;
}

/* ------------------------------------------------------------------ */

static int
cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double
median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmpd);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

enum { SIDE_PKEY, SIDE_DIGEST, SIDE_REUSE, SIDE_RAW, SIDES };
static const char *const side_name[SIDES] = { "provider EVP_PKEY_sign", "provider EVP_DigestSign",
                                              "provider EVP_PKEY_sign, context reused",
                                              "raw C_Sign" };

/* One EVP_PKEY_CTX initialised once, signing in a loop: the provider's
 * own cost per signature without OpenSSL's per-context setup. */
static EVP_PKEY_CTX *reuse_ctx;

static __attribute__((noinline)) int
prov_sign_reused(const unsigned char *dg, unsigned char *sig, size_t *siglen)
{
	return EVP_PKEY_sign(reuse_ctx, sig, siglen, dg, 32) == 1;
}

/* Signatures per second of one side for `secs` seconds. */
static __attribute__((noinline)) double
run_side(int side, EVP_PKEY *pk, CK_OBJECT_HANDLE h, enum kind kind, double secs)
{
	unsigned char dg[32], msg[64], sig[1024];
	unsigned long n = 0;
	double t0 = now(), t;

	memset(dg, 0x5a, sizeof(dg));
	memset(msg, 0xa5, sizeof(msg));
	do {
		size_t sl = sizeof(sig);
		CK_ULONG cl = sizeof(sig);
		int ok;

		dg[0] = (unsigned char)n;
		msg[0] = (unsigned char)n;
		ok = side == SIDE_PKEY ? prov_sign_digest(pk, dg, sig, &sl)
		     : side == SIDE_DIGEST ? prov_digest_sign(pk, kind == K_ED ? NULL : "SHA256",
		                                              msg, sizeof(msg), sig, &sl)
		     : side == SIDE_REUSE ? prov_sign_reused(dg, sig, &sl)
		     : raw_sign(h, kind, dg, msg, sig, &cl);
		if (!ok)
			die("%s failed", side_name[side]);
		n++;
		t = now();
	} while (t - t0 < secs);
	/* For instruction counts: callgrind's inclusive cost / this count. */
	if (getenv("HSMWRAP_BENCH_COUNTS"))
		fprintf(stderr, "%s: %lu operations\n", side_name[side], n);
	return (double)n / (t - t0);
}

static void
bench(const char *label, double secs, unsigned rounds)
{
	EVP_PKEY *pk = load_hsm_key(label);
	enum kind kind = EVP_PKEY_is_a(pk, "RSA") ? K_RSA
	                 : EVP_PKEY_is_a(pk, "ED25519") || EVP_PKEY_is_a(pk, "ED448") ? K_ED
	                 : K_EC;
	const char *md = kind == K_ED ? NULL : "SHA256";
	CK_OBJECT_HANDLE h = raw_key(label);
	double v[SIDES][MAX_ROUNDS] = { { 0 } }, r1[MAX_ROUNDS] = { 0 }, r2[MAX_ROUNDS],
	       r3[MAX_ROUNDS] = { 0 };

	reuse_ctx = kind == K_ED ? NULL : EVP_PKEY_CTX_new_from_pkey(libctx, pk, NULL);
	if (kind != K_ED && (!reuse_ctx || EVP_PKEY_sign_init(reuse_ctx) != 1 ||
	                     EVP_PKEY_CTX_set_signature_md(reuse_ctx, EVP_sha256()) != 1))
		die("EVP_PKEY_sign_init with %s", label);

	/* Warm-up outside run_side (first fetches, first session use), so
	 * callgrind --toggle-collect=run_side counts steady state only. */
	for (int i = 0; i < 3; i++) {
		unsigned char dg[32] = { 1 }, msg[64] = { 1 }, sig[1024];
		size_t sl = sizeof(sig);
		CK_ULONG cl = sizeof(sig);
		if ((kind != K_ED && !prov_sign_digest(pk, dg, sig, &sl)) || (sl = sizeof(sig), 0) ||
		    !prov_digest_sign(pk, md, msg, sizeof(msg), sig, &sl) ||
		    !raw_sign(h, kind, dg, msg, sig, &cl))
			die("warm-up signature with %s", label);
	}

	for (unsigned r = 0; r < rounds; r++) {
		for (int i = 0; i < SIDES; i++) {
			int s = (int)((r + (unsigned)i) % SIDES);   /* rotate the order */
			if (kind != K_ED || s == SIDE_DIGEST || s == SIDE_RAW)
				v[s][r] = run_side(s, pk, h, kind, secs);
		}
		r1[r] = v[SIDE_PKEY][r] / v[SIDE_RAW][r];
		r2[r] = v[SIDE_DIGEST][r] / v[SIDE_RAW][r];
		r3[r] = v[SIDE_REUSE][r] / v[SIDE_RAW][r];
	}
	printf("%-14s %-4s", label, kind_name[kind]);
	for (int s = 0; s < SIDES; s++)
		if (kind == K_ED && s != SIDE_DIGEST && s != SIDE_RAW)
			printf(" %10s", "-");
		else
			printf(" %10.0f", median(v[s], rounds));
	if (kind == K_ED)
		printf("   %5s   %5.3f   %5s\n", "-", median(r2, rounds), "-");
	else
		printf("   %5.3f   %5.3f   %5.3f\n", median(r1, rounds), median(r2, rounds),
		       median(r3, rounds));
	fflush(stdout);
	EVP_PKEY_CTX_free(reuse_ctx);
	reuse_ctx = NULL;
	EVP_PKEY_free(pk);
}

/* ------------------------------------------------------------------ */
/* Several threads signing with one key through the provider           */

struct thr {
	EVP_PKEY *pk, *pub;
	unsigned id, count, bad;
};

static void *
thr_main(void *arg)
{
	struct thr *t = arg;
	unsigned char msg[48], sig[1024];

	for (unsigned i = 0; i < t->count; i++) {
		size_t sl = sizeof(sig);
		EVP_MD_CTX *mc;
		int ok;

		snprintf((char *)msg, sizeof(msg), "thread %u message %u", t->id, i);
		ok = prov_digest_sign(t->pk, "SHA256", msg, sizeof(msg), sig, &sl);
		mc = EVP_MD_CTX_new();
		ok = ok && mc &&
		     EVP_DigestVerifyInit_ex(mc, NULL, "SHA256", libctx, "provider=default", t->pub,
		                             NULL) == 1 &&
		     EVP_DigestVerify(mc, sig, sl, msg, sizeof(msg)) == 1;
		EVP_MD_CTX_free(mc);
		if (!ok)
			t->bad++;
	}
	ERR_clear_error();
	return NULL;
}

static int
threads_test(const char *label, unsigned nthreads, unsigned count)
{
	EVP_PKEY *pk = load_hsm_key(label), *pub = public_copy(pk);
	struct thr t[64];
	pthread_t th[64];
	unsigned bad = 0;
	double t0 = now();

	for (unsigned i = 0; i < nthreads; i++) {
		t[i] = (struct thr){ pk, pub, i, count, 0 };
		if (pthread_create(&th[i], NULL, thr_main, &t[i]))
			die("pthread_create");
	}
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		bad += t[i].bad;
	}
	printf("%s: %u threads x %u signatures through the provider in %.2f s: %u bad\n", label,
	       nthreads, count, now() - t0, bad);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(pk);
	return bad == 0;
}

int
main(int argc, char **argv)
{
	double secs = 0.3;
	unsigned rounds = 7, nthreads = 0, count = 50;
	int c, ok = 1;

	while ((c = getopt(argc, argv, "s:r:t:n:h")) != -1) {
		switch (c) {
		case 's': secs = atof(optarg); break;
		case 'r': rounds = (unsigned)atoi(optarg); break;
		case 't': nthreads = (unsigned)atoi(optarg); break;
		case 'n': count = (unsigned)atoi(optarg); break;
		default:
			fprintf(stderr, "usage: " PROG " [-s SECONDS] [-r ROUNDS] LABEL...\n"
			        "       " PROG " -t THREADS [-n SIGNATURES] LABEL...\n");
			return 2;
		}
	}
	if (optind >= argc || secs <= 0 || rounds < 1 || rounds > MAX_ROUNDS || nthreads > 64)
		die("bad arguments (-h for help)");
	/* The shipped order: default first (see conf/hsmwrap-provider.cnf). */
	if (!(libctx = OSSL_LIB_CTX_new()) || !OSSL_PROVIDER_load(libctx, "default") ||
	    !OSSL_PROVIDER_load(libctx, "hsmwrap"))
		die("loading the default and hsmwrap providers (OPENSSL_MODULES?)");
	if (nthreads) {
		for (int i = optind; i < argc; i++)
			ok &= threads_test(argv[i], nthreads, count);
		return ok ? 0 : 1;
	}
	raw_open();
	printf("signatures/s, one thread, %g s per side per round, median of %u interleaved rounds\n"
	       "ratio: median over rounds of provider/raw within the round\n\n",
	       secs, rounds);
	printf("%-14s %-4s %10s %10s %10s %10s   %s\n", "key", "type", "EVP_sign", "DigestSign",
	       "ctx reused", "C_Sign", "sign/raw digest/raw reused/raw");
	for (int i = optind; i < argc; i++)
		bench(argv[i], secs, rounds);
	return 0;
}
