/*
 * test-faults.c - libhsmwrap when the HSM misbehaves. The library is
 * pointed at tests/faultmod (a PKCS#11 module in front of SoftHSM that
 * fails chosen calls, see tests/faultmod/faultmod.c) and every outcome is
 * checked: transient errors retried within bounds, lost sessions and
 * logins re-established, a locked PIN never retried, a removed token a
 * clear HW_ERR_DEVICE and usable again when it returns, and, with a fault
 * at each PKCS#11 call of each operation in turn, never a success with
 * wrong output.
 */
#include "config.h"

#include <CUnit/Basic.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "hsmwrap.h"
#include "test-common.h"

/* An operation needs fewer PKCS#11 calls than this. */
#define MAX_CALLS 80

static struct {
	hw_ctx *ctx;
	hw_key *env, *kw, *ec, *rsa;
	char control[4096], stats[4096];
	unsigned long verified;     /* operations whose output was checked */
	unsigned long faults;       /* faults injected, over all tests */
} G;

static void fail_msg(unsigned line, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

static void fail_msg(unsigned line, const char *format, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, format);
	if (vsnprintf(msg, sizeof msg, format, ap) < 0)
		msg[0] = '\0';
	va_end(ap);
	CU_assertImplementation(CU_FALSE, line, msg, __FILE__, "", CU_FALSE);
}


/* ------------------------------------------------------------------ */
/* Driving the fault module                                             */

/* Replaces the control file atomically (the module reads it every call). */
static void control(const char *content)
{
	char tmp[4200];
	FILE *f;

	/* Also used outside tests (setup): no CUnit assertions here. */
	fmt(tmp, sizeof tmp, "%s.tmp", G.control);
	f = fopen(tmp, "w");
	if (!f || fputs(content, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0 ||
	    rename(tmp, G.control) != 0) {
		perror(G.control);
		exit(99);
	}
}

/* A new spec also resets the rules' call counters. */
static void spec(const char *rules)
{
	char buf[1024];

	fmt(buf, sizeof buf, "spec %s", rules);
	control(buf);
}

static void no_faults(void)
{
	control("nospec");
}

/* "injected" (name NULL) or the number of calls to a function so far. */
static unsigned long stat_of(const char *name)
{
	char line[256], key[128];
	unsigned long v = 0, n;
	FILE *f = fopen(G.stats, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		if (!name && sscanf(line, "injected %lu", &n) == 1)
			v = n;
		else if (name && sscanf(line, "calls %127s %lu", key, &n) == 2 && !strcmp(key, name))
			v = n;
	}
	fclose(f);
	return v;
}

static unsigned long injected(void)
{
	return stat_of(NULL);
}

/* ------------------------------------------------------------------ */
/* Operations, each with a check of its output made without faults.     */

static const uint8_t MSG[] = "a message the HSM must get exactly right";

/* The first error a check's own library calls hit (HW_OK if none). */
static hw_err check_err;

static hw_err chk(hw_err e)
{
	if (e != HW_OK && check_err == HW_OK)
		check_err = e;
	return e;
}

static int verify_sig(hw_key *key, hw_sig_alg alg, const uint8_t *sig, size_t siglen)
{
	uint8_t *der = NULL;
	size_t derlen = 0;
	const unsigned char *p;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	int ok = 0;

	if (chk(hw_key_public_der(key, &der, &derlen)) != HW_OK)
		return 0;
	p = der;
	pk = d2i_PUBKEY(NULL, &p, (long)derlen);
	md = EVP_MD_CTX_new();
	if (pk && md && EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pk) == 1) {
		if (alg == HW_SIG_RSA_PSS_SHA256 &&
		    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
			goto out;
		ok = EVP_DigestVerify(md, sig, siglen, MSG, sizeof MSG) == 1;
	}
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	hw_free(der);
	return ok;
}

/* Inputs made without faults, for the ops that consume something. */
static struct {
	uint8_t *blob, *dkblob, *wblob;
	size_t bloblen, dkbloblen, wbloblen;
	uint8_t dk[HW_DATAKEY_LEN];
	uint8_t material[32];
} IN;

typedef struct {
	const char *name;
	/* Runs the op under the current faults; HW_OK means "claims success". */
	hw_err (*run)(void **out, size_t *outlen);
	/* Checks a claimed success without faults: 1 right, 0 wrong. */
	int (*check)(void *out, size_t outlen);
	void (*release)(void *out, size_t outlen);
} op_def;

static void release_plain(void *out, size_t outlen)
{
	hw_free_secret(out, outlen);
}

static hw_err run_encrypt(void **out, size_t *outlen)
{
	return hw_encrypt(G.env, MSG, sizeof MSG, (const uint8_t *)"aad", 3, (uint8_t **)out,
	                  outlen);
}

static int check_encrypt(void *out, size_t outlen)
{
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	int ok = hw_decrypt(G.ctx, G.env, out, outlen, (const uint8_t *)"aad", 3, &pt, &ptlen) ==
	                 HW_OK &&
	         ptlen == sizeof MSG && memcmp(pt, MSG, ptlen) == 0;

	hw_free_secret(pt, ptlen);
	return ok;
}

static hw_err run_decrypt(void **out, size_t *outlen)
{
	return hw_decrypt(G.ctx, NULL, IN.blob, IN.bloblen, (const uint8_t *)"aad", 3,
	                  (uint8_t **)out, outlen);
}

static int check_plain_msg(void *out, size_t outlen)
{
	return outlen == sizeof MSG && memcmp(out, MSG, outlen) == 0;
}

/* The data key and its blob travel together in one allocation. */
static hw_err run_dk_generate(void **out, size_t *outlen)
{
	uint8_t pt[HW_DATAKEY_LEN], *w = NULL, *both;
	size_t wl = 0;
	hw_err e = hw_datakey_generate(G.env, NULL, pt, &w, &wl);

	if (e != HW_OK)
		return e;
	both = malloc(HW_DATAKEY_LEN + wl);
	if (!both)
		return HW_ERR_NOMEM;
	memcpy(both, pt, HW_DATAKEY_LEN);
	memcpy(both + HW_DATAKEY_LEN, w, wl);
	hw_free(w);
	*out = both;
	*outlen = HW_DATAKEY_LEN + wl;
	return HW_OK;
}

static int check_dk_generate(void *out, size_t outlen)
{
	uint8_t back[HW_DATAKEY_LEN];
	const uint8_t *b = out;

	return outlen > HW_DATAKEY_LEN &&
	       chk(hw_datakey_decrypt(G.ctx, NULL, NULL, b + HW_DATAKEY_LEN, outlen - HW_DATAKEY_LEN,
	                          back)) == HW_OK &&
	       memcmp(back, b, HW_DATAKEY_LEN) == 0;
}

static hw_err run_dk_decrypt(void **out, size_t *outlen)
{
	uint8_t *pt = malloc(HW_DATAKEY_LEN);
	hw_err e;

	if (!pt)
		return HW_ERR_NOMEM;
	e = hw_datakey_decrypt(G.ctx, G.env, NULL, IN.dkblob, IN.dkbloblen, pt);
	if (e != HW_OK) {
		free(pt);
		return e;
	}
	*out = pt;
	*outlen = HW_DATAKEY_LEN;
	return HW_OK;
}

static int check_dk_decrypt(void *out, size_t outlen)
{
	return outlen == HW_DATAKEY_LEN && memcmp(out, IN.dk, HW_DATAKEY_LEN) == 0;
}

static hw_err run_wrap(void **out, size_t *outlen)
{
	return hw_wrap(G.kw, IN.material, sizeof IN.material, (uint8_t **)out, outlen);
}

static int check_wrap(void *out, size_t outlen)
{
	uint8_t *m = NULL;
	size_t ml = 0;
	int ok = chk(hw_unwrap(G.ctx, G.kw, out, outlen, &m, &ml)) == HW_OK &&
	         ml == sizeof IN.material && memcmp(m, IN.material, ml) == 0;

	hw_free_secret(m, ml);
	return ok;
}

static hw_err run_unwrap(void **out, size_t *outlen)
{
	return hw_unwrap(G.ctx, NULL, IN.wblob, IN.wbloblen, (uint8_t **)out, outlen);
}

static int check_unwrap(void *out, size_t outlen)
{
	return outlen == sizeof IN.material && memcmp(out, IN.material, outlen) == 0;
}

static hw_err run_sign_ec(void **out, size_t *outlen)
{
	return hw_sign(G.ec, HW_SIG_ECDSA_SHA256, MSG, sizeof MSG, (uint8_t **)out, outlen);
}

static int check_sign_ec(void *out, size_t outlen)
{
	return verify_sig(G.ec, HW_SIG_ECDSA_SHA256, out, outlen);
}

static hw_err run_sign_rsa(void **out, size_t *outlen)
{
	return hw_sign(G.rsa, HW_SIG_RSA_PSS_SHA256, MSG, sizeof MSG, (uint8_t **)out, outlen);
}

static int check_sign_rsa(void *out, size_t outlen)
{
	return verify_sig(G.rsa, HW_SIG_RSA_PSS_SHA256, out, outlen);
}

/* A key generated under faults: one key with the label, and it works. */
static unsigned gen_serial;
static char gen_label[64];

static hw_err run_keygen(void **out, size_t *outlen)
{
	hw_key *k = NULL;
	hw_err e;

	fmt(gen_label, sizeof gen_label, "fault-gen-%u", ++gen_serial);
	e = hw_key_generate(G.ctx, gen_label, HW_KEY_AES256, HW_PURPOSE_ENVELOPE, &k);
	if (e != HW_OK)
		return e;
	hw_key_free(k);
	*out = NULL;
	*outlen = 0;
	return HW_OK;
}

static int check_keygen(void *out, size_t outlen)
{
	hw_key *k = NULL;
	uint8_t *blob = NULL, *pt = NULL;
	size_t bl = 0, pl = 0;
	int ok;

	(void)out;
	(void)outlen;
	ok = chk(hw_key_find(G.ctx, gen_label, &k)) == HW_OK &&
	     chk(hw_encrypt(k, MSG, sizeof MSG, NULL, 0, &blob, &bl)) == HW_OK &&
	     chk(hw_decrypt(G.ctx, k, blob, bl, NULL, 0, &pt, &pl)) == HW_OK && pl == sizeof MSG &&
	     memcmp(pt, MSG, pl) == 0;
	hw_free(blob);
	hw_free_secret(pt, pl);
	hw_key_free(k);
	return ok;
}

static void release_none(void *out, size_t outlen)
{
	(void)out;
	(void)outlen;
}

static const op_def OPS[] = {
	{ "hw_encrypt", run_encrypt, check_encrypt, release_plain },
	{ "hw_decrypt", run_decrypt, check_plain_msg, release_plain },
	{ "hw_datakey_generate", run_dk_generate, check_dk_generate, release_plain },
	{ "hw_datakey_decrypt", run_dk_decrypt, check_dk_decrypt, release_plain },
	{ "hw_wrap", run_wrap, check_wrap, release_plain },
	{ "hw_unwrap", run_unwrap, check_unwrap, release_plain },
	{ "hw_sign ecdsa", run_sign_ec, check_sign_ec, release_plain },
	{ "hw_sign rsa-pss", run_sign_rsa, check_sign_rsa, release_plain },
	{ "hw_key_generate", run_keygen, check_keygen, release_none },
};
#define NOPS (sizeof OPS / sizeof OPS[0])

static const op_def *op_named(const char *name)
{
	for (size_t i = 0; i < NOPS; i++)
		if (!strcmp(OPS[i].name, name))
			return &OPS[i];
	return NULL;
}

/*
 * Runs an op under `rules` and checks it. Returns the op's result;
 * *faults gets how many faults were injected.
 */
static hw_err run_checked(const op_def *op, const char *rules, unsigned long *faults,
                          unsigned line)
{
	void *out = NULL;
	size_t outlen = 0;
	unsigned long before;
	hw_err e;

	spec(rules);
	before = injected();
	e = op->run(&out, &outlen);
	*faults = injected() - before;
	G.faults += *faults;
	no_faults();
	if (e == HW_OK) {
		int right;

		check_err = HW_OK;
		right = op->check(out, outlen);
		/* Tell a wrong output from a check that could not run. */
		if (!right && check_err != HW_OK)
			fail_msg(line, "%s under '%s': checking its output failed: %s (%s)",
			         op->name, rules, hw_errname(check_err), hw_last_detail());
		else if (!right)
			fail_msg(line, "%s under '%s' reported success with WRONG output", op->name,
			         rules);
		else
			G.verified++;
		op->release(out, outlen);
	}
	return e;
}

/* Runs an op under the current control state; only its result counts. */
static hw_err just_run(const char *name)
{
	const op_def *op = op_named(name);
	void *out = NULL;
	size_t outlen = 0;
	hw_err e = op->run(&out, &outlen);

	if (e == HW_OK)
		op->release(out, outlen);
	return e;
}

/* After any fault the context must be healthy again at once. */
static void expect_healthy(const char *after, unsigned line)
{
	unsigned long f;
	hw_err e = run_checked(op_named("hw_datakey_generate"), "", &f, line);

	if (e != HW_OK)
		fail_msg(line, "after %s the next operation failed: %s (%s)", after, hw_errname(e),
		         hw_last_detail());
}

/* ------------------------------------------------------------------ */
/* Fault cases                                                          */

static void test_transient_retried(void)
{
	static const struct { const char *op, *rules; } cases[] = {
		{ "hw_encrypt", "C_Encrypt:nth=1:rv=CKR_DEVICE_ERROR" },
		{ "hw_decrypt", "C_Decrypt:count=2:rv=CKR_FUNCTION_FAILED" },
		{ "hw_datakey_generate", "C_GenerateRandom:nth=1:rv=CKR_DEVICE_ERROR" },
		{ "hw_wrap", "C_WrapKey:count=2:rv=CKR_DEVICE_ERROR" },
		{ "hw_unwrap", "C_UnwrapKey:nth=1:rv=CKR_DEVICE_ERROR" },
		{ "hw_sign ecdsa", "C_Sign:nth=1:rv=CKR_DEVICE_ERROR" },
		{ "hw_datakey_decrypt", "C_DecryptInit:count=2:rv=CKR_DEVICE_ERROR" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned long f = 0;
		hw_err e = run_checked(op_named(cases[i].op), cases[i].rules, &f, __LINE__);

		if (e != HW_OK || f == 0)
			fail_msg(__LINE__, "%s under %s: %s, %lu faults (%s)", cases[i].op,
			         cases[i].rules, hw_errname(e), f, hw_last_detail());
		printf("\n    %-20s %-52s -> %s, %lu faults", cases[i].op, cases[i].rules,
		       hw_errname(e), f);
	}
}

/* Retries are bounded: a fault that persists gives up after 3 tries. */
static void test_transient_bounded(void)
{
	unsigned long f = 0, enc0 = stat_of("C_Encrypt");
	hw_err e = run_checked(op_named("hw_encrypt"), "C_Encrypt:rv=CKR_DEVICE_ERROR", &f,
	                       __LINE__);

	EXPECT_RC(e, HW_ERR_DEVICE);
	CU_ASSERT_EQUAL(f, 3);
	CU_ASSERT_EQUAL(stat_of("C_Encrypt") - enc0, 3);
	printf("\n    persistent CKR_DEVICE_ERROR: %s after %lu tries", hw_errname(e), f);
	expect_healthy("a persistent device error", __LINE__);
}

static void test_lost_session(void)
{
	unsigned long f = 0, open0 = stat_of("C_OpenSession");
	hw_err e = run_checked(op_named("hw_encrypt"),
	                       "C_EncryptInit:nth=1:rv=CKR_SESSION_HANDLE_INVALID", &f, __LINE__);

	EXPECT_OK(e);
	CU_ASSERT_EQUAL(f, 1);
	CU_ASSERT(stat_of("C_OpenSession") > open0);
	/* Closing the only session also ended the login: both recovered. */
	e = run_checked(op_named("hw_sign ecdsa"), "C_Sign:nth=1:rv=CKR_SESSION_CLOSED", &f,
	                __LINE__);
	EXPECT_OK(e);
	CU_ASSERT_EQUAL(f, 1);
}

static void test_lost_login(void)
{
	unsigned long f = 0, login0 = stat_of("C_Login");
	hw_err e = run_checked(op_named("hw_datakey_decrypt"),
	                       "C_FindObjectsInit:count=1:rv=CKR_USER_NOT_LOGGED_IN", &f, __LINE__);

	EXPECT_OK(e);
	CU_ASSERT_EQUAL(f, 1);
	CU_ASSERT_EQUAL(stat_of("C_Login") - login0, 1);
	login0 = stat_of("C_Login");
	e = run_checked(op_named("hw_unwrap"), "C_UnwrapKey:nth=1:rv=CKR_USER_NOT_LOGGED_IN", &f,
	                __LINE__);
	EXPECT_OK(e);
	CU_ASSERT_EQUAL(stat_of("C_Login") - login0, 1);
	/* Lost twice in one operation: one re-login only, then a clear error. */
	e = run_checked(op_named("hw_encrypt"), "C_EncryptInit:count=2:rv=CKR_USER_NOT_LOGGED_IN",
	                &f, __LINE__);
	EXPECT_RC(e, HW_ERR_NOT_LOGGED_IN);
	CU_ASSERT_EQUAL(f, 2);
	expect_healthy("two lost logins", __LINE__);
}

/* A locked PIN: one C_Login per operation, never a retry loop. */
static void test_pin_locked(void)
{
	unsigned long f = 0, login0;
	hw_err e;
	int i;

	/* The token logs us out; logging in again finds the PIN locked. */
	login0 = stat_of("C_Login");
	e = run_checked(op_named("hw_encrypt"),
	                "C_EncryptInit:nth=1:rv=CKR_USER_NOT_LOGGED_IN;C_Login:rv=CKR_PIN_LOCKED", &f,
	                __LINE__);
	EXPECT_RC(e, HW_ERR_PIN_LOCKED);
	CU_ASSERT_EQUAL(stat_of("C_Login") - login0, 1);
	/* While it stays locked, each operation tries once. */
	spec("C_Login:rv=CKR_PIN_LOCKED");
	login0 = stat_of("C_Login");
	for (i = 0; i < 3; i++)
		EXPECT_RC(just_run("hw_datakey_decrypt"), HW_ERR_PIN_LOCKED);
	CU_ASSERT_EQUAL(stat_of("C_Login") - login0, 3);
	printf("\n    PIN locked: 3 operations, %lu C_Login calls", stat_of("C_Login") - login0);
	no_faults();
	/* Unlocked (by the SO, say): the next operation logs in and works. */
	expect_healthy("a locked PIN", __LINE__);
}

static void test_removed_token(void)
{
	unsigned long login0, f;
	hw_err e;
	double t0;

	/* Warm: pooled sessions exist from before the removal. */
	expect_healthy("warm-up", __LINE__);
	control("removed");
	t0 = now();
	e = just_run("hw_datakey_generate");
	EXPECT_RC(e, HW_ERR_DEVICE);
	printf("\n    removed: %s in %.3f s: %s", hw_errname(e), now() - t0, hw_last_detail());
	CU_ASSERT(strstr(hw_last_detail(), "removed") != NULL);
	e = just_run("hw_decrypt");
	EXPECT_RC(e, HW_ERR_DEVICE);
	e = just_run("hw_sign ecdsa");
	EXPECT_RC(e, HW_ERR_DEVICE);
	CU_ASSERT(strstr(hw_last_detail(), "removed") != NULL);
	G.faults += 3;

	/* Back: old sessions and login are gone; the library starts over. */
	login0 = stat_of("C_Login");
	control("present");
	for (size_t i = 0; i < NOPS; i++) {
		if (!strcmp(OPS[i].name, "hw_key_generate"))
			continue;
		e = run_checked(&OPS[i], "", &f, __LINE__);
		if (e != HW_OK)
			fail_msg(__LINE__, "after the token returned, %s: %s (%s)", OPS[i].name,
			         hw_errname(e), hw_last_detail());
	}
	CU_ASSERT_EQUAL(stat_of("C_Login") - login0, 1);

	/* Removed in the middle of an operation, back before the retry. */
	e = run_checked(op_named("hw_wrap"), "C_WrapKey:nth=1:rv=CKR_DEVICE_REMOVED", &f, __LINE__);
	EXPECT_OK(e);
}

/*
 * A token lost for the life of the module's initialisation (SoftHSM, see
 * hw_module_restart): a context that is the module's only user
 * re-initialises it (tests/test-multiproc.sh shows that with the CLI); one
 * that shares it with another context must not, as that would end the
 * other's sessions and login. The other keeps working; this one reports
 * the missing token.
 */
static void test_lost_token_shared_module(void)
{
	unsigned long init0, login0;
	hw_ctx *c2 = NULL;
	hw_err e;

	expect_healthy("warm-up", __LINE__);
	init0 = stat_of("C_Initialize");
	login0 = stat_of("C_Login");
	control("lost-until-init");
	EXPECT_OK(hw_ctx_new(&c2));
	EXPECT_OK(hw_ctx_set_module(c2, getenv("FAULTMOD")));
	EXPECT_OK(hw_ctx_set_token(c2, getenv("HSMWRAP_TOKEN")));
	EXPECT_OK(hw_ctx_set_pin_source(c2, getenv("HSMWRAP_PIN_SOURCE")));
	e = hw_ctx_open(c2);
	EXPECT_RC(e, HW_ERR_TOKEN_NOT_FOUND);
	CU_ASSERT_EQUAL(stat_of("C_Initialize"), init0);
	/* The first context's sessions and login were left alone. */
	expect_healthy("a second context lost the token", __LINE__);
	CU_ASSERT_EQUAL(stat_of("C_Login"), login0);
	hw_ctx_free(c2);
	no_faults();
	expect_healthy("the second context went away", __LINE__);
}

static void test_short_buffer(void)
{
	static const struct { const char *op, *rules; } cases[] = {
		{ "hw_encrypt", "C_Encrypt:nth=1:short=1" },
		{ "hw_decrypt", "C_Decrypt:nth=1:short=1" },
		{ "hw_wrap", "C_WrapKey:nth=1:short=1" },
		{ "hw_sign rsa-pss", "C_Sign:nth=1:short=1" },
		{ "hw_unwrap", "C_GetAttributeValue:nth=1:short=1" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned long f = 0;
		hw_err e = run_checked(op_named(cases[i].op), cases[i].rules, &f, __LINE__);

		CU_ASSERT_EQUAL(f, 1);
		printf("\n    %-20s %-36s -> %s (CK_RV 0x%lx)", cases[i].op, cases[i].rules,
		       hw_errname(e), e == HW_OK ? 0UL : hw_last_ckrv());
		/* The session kept the operation active: it must not be reused. */
		expect_healthy(cases[i].rules, __LINE__);
		expect_healthy(cases[i].rules, __LINE__);
	}
}

static void test_delay(void)
{
	unsigned long f = 0;
	double t0 = now();
	hw_err e = run_checked(op_named("hw_sign ecdsa"), "C_Sign:delay_ms=300", &f, __LINE__);

	EXPECT_OK(e);
	CU_ASSERT(now() - t0 >= 0.3);
	CU_ASSERT_EQUAL(f, 0);
}

/*
 * For each operation, a fault at its 1st, 2nd, ... PKCS#11 call, until a
 * run sees no fault (the operation has fewer calls). Recoverable faults
 * must be recovered (except where recovery is refused on purpose:
 * creating a key is not repeated); any fault may fail the operation, but
 * no success may have wrong output.
 */
static void test_fault_each_call(void)
{
	static const struct { const char *rv; int recoverable; } rvs[] = {
		{ "CKR_DEVICE_ERROR", 1 },
		{ "CKR_SESSION_HANDLE_INVALID", 1 },
		{ "CKR_USER_NOT_LOGGED_IN", 1 },
		{ "CKR_DEVICE_REMOVED", 1 },
		{ "CKR_GENERAL_ERROR", 0 },
		{ "CKR_OPERATION_ACTIVE", 1 },
	};
	unsigned long runs = 0, ok = 0, failed = 0;

	for (size_t o = 0; o < NOPS; o++) {
		for (size_t r = 0; r < sizeof rvs / sizeof rvs[0]; r++) {
			unsigned k;

			for (k = 1; k <= MAX_CALLS; k++) {
				char rules[128];
				unsigned long f = 0;
				hw_err e;

				fmt(rules, sizeof rules, "*:nth=%u:rv=%s", k, rvs[r].rv);
				e = run_checked(&OPS[o], rules, &f, __LINE__);
				if (f == 0)
					break;
				runs++;
				if (e == HW_OK) {
					ok++;
				} else {
					failed++;
					if (rvs[r].recoverable && strcmp(OPS[o].name, "hw_key_generate"))
						fail_msg(__LINE__, "%s: recoverable fault %s at call %u "
						         "not recovered: %s (%s)", OPS[o].name, rvs[r].rv,
						         k, hw_errname(e), hw_last_detail());
				}
				expect_healthy(rules, __LINE__);
			}
			CU_ASSERT(k <= MAX_CALLS);
		}
	}
	printf("\n    %lu faulted runs: %lu succeeded (output verified), %lu failed cleanly",
	       runs, ok, failed);
}

/* ------------------------------------------------------------------ */

static int suite_init(void)
{
	const char *dir = getenv("HW_TEST_DIR");
	hw_err e;

	fmt(G.control, sizeof G.control, "%s/faultmod.control", dir);
	fmt(G.stats, sizeof G.stats, "%s/faultmod.stats", dir);
	control("nospec");
	if ((e = hw_ctx_new(&G.ctx)) != HW_OK ||
	    (e = hw_ctx_set_module(G.ctx, getenv("FAULTMOD"))) != HW_OK ||
	    (e = hw_ctx_set_token(G.ctx, getenv("HSMWRAP_TOKEN"))) != HW_OK ||
	    (e = hw_ctx_set_pin_source(G.ctx, getenv("HSMWRAP_PIN_SOURCE"))) != HW_OK ||
	    (e = hw_ctx_open(G.ctx)) != HW_OK ||
	    (e = hw_key_generate(G.ctx, "f-env", HW_KEY_AES256, HW_PURPOSE_ENVELOPE, &G.env)) ||
	    (e = hw_key_generate(G.ctx, "f-kw", HW_KEY_AES256, HW_PURPOSE_KEYWRAP, &G.kw)) ||
	    (e = hw_key_generate(G.ctx, "f-ec", HW_KEY_EC_P256, HW_PURPOSE_SIGN, &G.ec)) ||
	    (e = hw_key_generate(G.ctx, "f-rsa", HW_KEY_RSA2048, HW_PURPOSE_SIGN, &G.rsa)) ||
	    (e = hw_encrypt(G.env, MSG, sizeof MSG, (const uint8_t *)"aad", 3, &IN.blob,
	                    &IN.bloblen)) ||
	    (e = hw_datakey_generate(G.env, NULL, IN.dk, &IN.dkblob, &IN.dkbloblen))) {
		fprintf(stderr, "test-faults: setup: %s (%s)\n", hw_errname(e), hw_last_detail());
		return 1;
	}
	memset(IN.material, 0x5a, sizeof IN.material);
	if ((e = hw_wrap(G.kw, IN.material, sizeof IN.material, &IN.wblob, &IN.wbloblen))) {
		fprintf(stderr, "test-faults: setup: %s (%s)\n", hw_errname(e), hw_last_detail());
		return 1;
	}
	return 0;
}

static int suite_cleanup(void)
{
	hw_free(IN.blob);
	hw_free(IN.dkblob);
	hw_free(IN.wblob);
	hw_key_free(G.env);
	hw_key_free(G.kw);
	hw_key_free(G.ec);
	hw_key_free(G.rsa);
	hw_ctx_free(G.ctx);
	return 0;
}

int main(void)
{
	static const struct { const char *name; CU_TestFunc fn; } tests[] = {
		{ "transient errors are retried", test_transient_retried },
		{ "retries are bounded", test_transient_bounded },
		{ "a lost session is replaced", test_lost_session },
		{ "a lost login is re-established", test_lost_login },
		{ "a locked PIN is not retried", test_pin_locked },
		{ "a removed token: clear error, then recovery", test_removed_token },
		{ "a lost token, module shared: not re-initialised", test_lost_token_shared_module },
		{ "short buffers", test_short_buffer },
		{ "delays", test_delay },
		{ "a fault at each call of each operation", test_fault_each_call },
	};
	const char *filter = getenv("HW_TEST_FILTER");
	static char target[4200], ctl[4200], st[4200];
	const char *module = getenv("SOFTHSM_MODULE");
	CU_pSuite s;
	unsigned failures, i;

	if (!getenv("HW_TEST_DIR") || !getenv("HSMWRAP_TOKEN") || !getenv("HSMWRAP_PIN_SOURCE")) {
		fprintf(stderr, "test-faults: run me under tests/with-token.sh\n");
		return 77;
	}
	if (!module || !*module)
		module = getenv("HSMWRAP_MODULE");
	if (!getenv("FAULTMOD") || access(getenv("FAULTMOD"), R_OK) != 0 || !module) {
		fprintf(stderr, "test-faults: FAULTMOD (tests/faultmod/.libs/libfaultmod.so) not "
		        "built or SoftHSM module unknown\n");
		return 77;
	}
	/* The fault module reads these when the library initialises it. */
	fmt(target, sizeof target, "%s", module);
	fmt(ctl, sizeof ctl, "%s/faultmod.control", getenv("HW_TEST_DIR"));
	fmt(st, sizeof st, "%s/faultmod.stats", getenv("HW_TEST_DIR"));
	setenv("FAULTMOD_TARGET", target, 1);
	setenv("FAULTMOD_CONTROL", ctl, 1);
	setenv("FAULTMOD_STATS", st, 1);
	unsetenv("FAULTMOD_SPEC");
	alarm(900);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("faults", suite_init, suite_cleanup);
	if (!s)
		return 99;
	for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		if (filter && !strstr(tests[i].name, filter))
			continue;
		if (!CU_add_test(s, tests[i].name, tests[i].fn))
			return 99;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failures = CU_get_number_of_failure_records();
	printf("\ntest-faults: %lu faults injected, %lu operations verified correct\n", G.faults,
	       G.verified);
	CU_cleanup_registry();
	return failures == 0 ? 0 : 1;
}
