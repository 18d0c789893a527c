/*
 * test-cluster.c - a cluster of two tokens holding the same keys, one of
 * them reached through p11-kit's remoting (p11-kit server exporting a
 * SoftHSM token on a Unix socket, used through p11-kit-client.so), under
 * load from several threads. Midway the server is killed (SIGKILL), later
 * started again. Every operation must succeed with the right result: no
 * operation is lost while one member is up.
 *
 * Run by tests/test-cluster.sh, which provides (environment):
 *   HW_CL_MODULE_A, HW_CL_TOKEN_A, HW_CL_PIN_A   member A (direct)
 *   HW_CL_MODULE_B, HW_CL_TOKEN_B, HW_CL_PIN_B   member B (remote)
 *   HW_CL_SERVER_CMD   shell command that starts the server in the
 *                      foreground (it is run, killed and run again)
 *   HW_CL_SECONDS      length of the load run (default 6)
 *
 * It links the library's sources: the shared key material is imported
 * into both tokens with raw PKCS#11 calls through each member's context.
 */
#include "internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define THREADS 4
#define AES_LABEL "cluster-aes"
#define EC_LABEL "cluster-ec"

static uint8_t aes_key[32];
static uint8_t key_id[HW_ID_LEN], ec_id[HW_ID_LEN];
static EVP_PKEY *ec_host;           /* the EC key pair both tokens hold */
static atomic_int stop;
static atomic_ulong ops_done, ops_failed, wrong_results;
static atomic_ulong ops_before_kill, ops_after_kill;
static atomic_int phase;            /* 0 both up, 1 B killed, 2 B restarted */

static void
die(const char *what, hw_err e)
{
	fprintf(stderr, "test-cluster: %s: %s (%s; CK_RV 0x%lx)\n", what,
	        e ? hw_strerror(e) : "failed", e ? hw_last_detail() : "",
	        e ? hw_last_ckrv() : 0UL);
	exit(1);
}

static const char *
env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "test-cluster: %s not set\n", name);
		exit(99);
	}
	return v;
}

/* ---- shared key material, imported into each token ---- */

typedef struct {
	CK_ATTRIBUTE *attrs;
	CK_ULONG n;
} create_arg;

static CK_RV
op_create(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	create_arg *a = arg;
	CK_OBJECT_HANDLE h;

	return ctx->fl->C_CreateObject(s, a->attrs, a->n, &h);
}

static void
import_keys(hw_ctx *ctx)
{
	CK_OBJECT_CLASS sec = CKO_SECRET_KEY, priv = CKO_PRIVATE_KEY;
	CK_KEY_TYPE aes = CKK_AES, ec = CKK_EC;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	uint8_t params[64], d[48];
	size_t plen = 0;
	BIGNUM *bn = NULL;
	int dlen;

	CK_ATTRIBUTE at[] = {
		{ CKA_CLASS, &sec, sizeof(sec) },
		{ CKA_KEY_TYPE, &aes, sizeof(aes) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },
		{ CKA_LABEL, AES_LABEL, strlen(AES_LABEL) },
		{ CKA_ID, key_id, sizeof(key_id) },
		{ CKA_VALUE, aes_key, sizeof(aes_key) },
	};
	create_arg a = { at, sizeof(at) / sizeof(at[0]) };
	hw_err e = hw_ctx_run(ctx, op_create, &a, "importing the AES key");

	if (e)
		die("import AES key", e);

	/* The P-256 private key: named curve OID as CKA_EC_PARAMS, scalar as CKA_VALUE. */
	static const uint8_t p256_oid[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	memcpy(params, p256_oid, sizeof(p256_oid));
	plen = sizeof(p256_oid);
	if (!EVP_PKEY_get_bn_param(ec_host, OSSL_PKEY_PARAM_PRIV_KEY, &bn) ||
	    (dlen = BN_bn2binpad(bn, d, 32)) != 32)
		die("EC private scalar", 0);
	BN_clear_free(bn);
	CK_ATTRIBUTE pt[] = {
		{ CKA_CLASS, &priv, sizeof(priv) },
		{ CKA_KEY_TYPE, &ec, sizeof(ec) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &yes, sizeof(yes) },
		{ CKA_LABEL, EC_LABEL, strlen(EC_LABEL) },
		{ CKA_ID, ec_id, sizeof(ec_id) },
		{ CKA_EC_PARAMS, params, plen },
		{ CKA_VALUE, d, 32 },
	};
	create_arg b = { pt, sizeof(pt) / sizeof(pt[0]) };
	e = hw_ctx_run(ctx, op_create, &b, "importing the EC key");
	OPENSSL_cleanse(d, sizeof(d));
	if (e)
		die("import EC key", e);
}

static hw_ctx *
member_ctx(const char *module, const char *token, const char *pin)
{
	hw_ctx *ctx;
	hw_err e;

	if ((e = hw_ctx_new(&ctx)) || (e = hw_ctx_set_module(ctx, module)) ||
	    (e = hw_ctx_set_token(ctx, token)) || (e = hw_ctx_set_pin_source(ctx, pin)))
		die("configuring a member", e);
	return ctx;
}

/* ---- the p11-kit server ---- */

static pid_t
server_start(void)
{
	const char *cmd = env("HW_CL_SERVER_CMD"), *sock = env("HW_CL_SOCKET");
	pid_t pid = fork();

	if (pid < 0)
		die("fork", 0);
	if (pid == 0) {
		/* Its own process group: `p11-kit server` runs the real server
		 * (p11-kit-server) as a child, and both must die. */
		setpgid(0, 0);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	/* Wait until it listens. */
	for (int i = 0; i < 200 && access(sock, F_OK) != 0; i++)
		usleep(25000);
	if (access(sock, F_OK) != 0)
		die("the p11-kit server did not create its socket", 0);
	return pid;
}

static void
server_kill(pid_t pid)
{
	const char *sock = env("HW_CL_SOCKET");

	kill(-pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(sock);
}

/* ---- the load ---- */

static hw_cluster *cl;

static bool
one_round(unsigned i)
{
	uint8_t dk[32], dk2[32], msg[1024], *w = NULL, *out = NULL, *sig = NULL;
	size_t wl = 0, ol = 0, sl = 0;
	hw_ectx *ec = NULL;
	bool ok = true;
	hw_err e;

	RAND_bytes(msg, sizeof(msg));
	if (hw_ectx_new(&ec) || hw_ectx_add(ec, "round", "load"))
		die("context", 0);
	switch (i % 4) {
	case 0:
		e = hw_cluster_datakey_generate(cl, AES_LABEL, ec, dk, &w, &wl);
		if (!e)
			e = hw_cluster_datakey_decrypt(cl, ec, w, wl, dk2);
		if (!e && memcmp(dk, dk2, 32) != 0)
			atomic_fetch_add(&wrong_results, 1);
		OPENSSL_cleanse(dk, 32);
		OPENSSL_cleanse(dk2, 32);
		break;
	case 1:
		e = hw_cluster_encrypt(cl, AES_LABEL, msg, 200, (const uint8_t *)"aad", 3, &w, &wl);
		if (!e)
			e = hw_cluster_decrypt(cl, w, wl, (const uint8_t *)"aad", 3, &out, &ol);
		if (!e && (ol != 200 || memcmp(out, msg, 200) != 0))
			atomic_fetch_add(&wrong_results, 1);
		break;
	case 2: {
		hw_envelope_cfg *cfg;

		if (hw_envelope_cfg_new(&cfg) ||
		    hw_envelope_cfg_set_suite(cfg, HW_SUITE_AES256_HKDF_SHA512_COMMIT))
			die("envelope cfg", 0);
		e = hw_cluster_envelope_encrypt(cl, cfg, AES_LABEL, ec, msg, sizeof(msg), &w, &wl);
		if (!e)
			e = hw_cluster_envelope_decrypt(cl, cfg, ec, w, wl, &out, &ol, NULL);
		if (!e && (ol != sizeof(msg) || memcmp(out, msg, ol) != 0))
			atomic_fetch_add(&wrong_results, 1);
		hw_envelope_cfg_free(cfg);
		break;
	}
	default: {
		EVP_MD_CTX *md = EVP_MD_CTX_new();

		e = hw_cluster_sign(cl, EC_LABEL, HW_SIG_ECDSA_SHA256, msg, sizeof(msg), &sig, &sl);
		if (!e && (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, ec_host) != 1 ||
		           EVP_DigestVerify(md, sig, sl, msg, sizeof(msg)) != 1))
			atomic_fetch_add(&wrong_results, 1);
		EVP_MD_CTX_free(md);
		break;
	}
	}
	if (e) {
		fprintf(stderr, "test-cluster: operation %u failed: %s (%s)\n", i % 4,
		        hw_strerror(e), hw_last_detail());
		ok = false;
	}
	hw_free(w);
	hw_free(sig);
	if (out)
		hw_free_secret(out, ol);
	hw_ectx_free(ec);
	return ok;
}

static void *
worker(void *arg)
{
	unsigned i = (unsigned)(uintptr_t)arg;

	while (!atomic_load(&stop)) {
		if (!one_round(i++))
			atomic_fetch_add(&ops_failed, 1);
		atomic_fetch_add(&ops_done, 1);
		if (atomic_load(&phase) == 1)
			atomic_fetch_add(&ops_after_kill, 1);
		else if (atomic_load(&phase) == 0)
			atomic_fetch_add(&ops_before_kill, 1);
	}
	return NULL;
}

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void
print_members(const char *when, hw_cluster_member st[2])
{
	for (size_t i = 0; i < 2; i++) {
		if (hw_cluster_member_status(cl, i, &st[i]))
			die("member status", 0);
		printf("%-18s member %c: %s, %lu ops, %lu failures", when, (int)('A' + i),
		       st[i].healthy ? "healthy" : "out", st[i].ops, st[i].failures);
		if (st[i].failures)
			printf(", last: %s (CK_RV 0x%lx): %s", hw_errname(st[i].last_error),
			       st[i].last_ckrv, st[i].last_detail);
		printf("\n");
	}
}

int
main(void)
{
	unsigned seconds = getenv("HW_CL_SECONDS") ? (unsigned)atoi(getenv("HW_CL_SECONDS")) : 6;
	hw_cluster_member st[2], before_restart[2];
	pthread_t th[THREADS];
	EVP_PKEY_CTX *kctx;
	hw_ctx *a, *b;
	pid_t server;
	int rc = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* p11-kit's client writes to its socket without MSG_NOSIGNAL: once the
	 * server is gone, a write raises SIGPIPE. Servers ignore it anyway
	 * (nginx does); an application using remoting must too (README). */
	signal(SIGPIPE, SIG_IGN);
	if (seconds < 3)
		seconds = 3;
	if (RAND_bytes(aes_key, sizeof(aes_key)) != 1 || RAND_bytes(key_id, sizeof(key_id)) != 1 ||
	    RAND_bytes(ec_id, sizeof(ec_id)) != 1)
		die("random", 0);
	kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!kctx || EVP_PKEY_keygen_init(kctx) != 1 ||
	    EVP_PKEY_CTX_set_group_name(kctx, "P-256") != 1 || EVP_PKEY_keygen(kctx, &ec_host) != 1)
		die("EC key", 0);
	EVP_PKEY_CTX_free(kctx);

	server = server_start();
	a = member_ctx(env("HW_CL_MODULE_A"), env("HW_CL_TOKEN_A"), env("HW_CL_PIN_A"));
	b = member_ctx(env("HW_CL_MODULE_B"), env("HW_CL_TOKEN_B"), env("HW_CL_PIN_B"));
	{
		hw_err e;

		if ((e = hw_ctx_open(a)))
			die("opening member A", e);
		if ((e = hw_ctx_open(b)))
			die("opening member B (through p11-kit remoting)", e);
	}
	/* Same material, same labels and ids, as replication would leave them. */
	import_keys(a);
	import_keys(b);
	OPENSSL_cleanse(aes_key, sizeof(aes_key));

	if (hw_cluster_new(&cl) || hw_cluster_add(cl, a) || hw_cluster_add(cl, b))
		die("cluster", 0);
	/* Short back-off so the restarted member is tried again within the run. */
	hw_cluster_set_retry(cl, 200, 1000);

	for (unsigned i = 0; i < THREADS; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i * 7)) != 0)
			die("pthread_create", 0);

	sleep_ms(seconds * 1000 / 3);
	print_members("both up:", st);
	/* Member B signs only: see hw_cluster_member's note on remoting. */
	if (st[0].ops < 10 || st[1].ops < 10) {
		fprintf(stderr, "test-cluster: load was not spread over both members\n");
		rc = 1;
	}
	server_kill(server);
	atomic_store(&phase, 1);
	printf("killed the p11-kit server (member B) with SIGKILL\n");

	sleep_ms(seconds * 1000 / 3);
	print_members("B killed:", before_restart);
	if (before_restart[1].failures <= st[1].failures) {
		fprintf(stderr, "test-cluster: killing the server went unnoticed\n");
		rc = 1;
	}
	server = server_start();
	atomic_store(&phase, 2);
	printf("started the p11-kit server again\n");

	sleep_ms(seconds * 1000 / 3);
	atomic_store(&stop, 1);
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	print_members("B restarted:", st);
	printf("operations: %lu (%lu while B was down), failed: %lu, wrong results: %lu\n",
	       atomic_load(&ops_done), atomic_load(&ops_after_kill), atomic_load(&ops_failed),
	       atomic_load(&wrong_results));
	/* A failed member is retried after its back-off, with a fresh
	 * context (p11-kit's client does not reconnect by itself). */
	printf("member B after the restart: %s (%lu ops since)\n",
	       st[1].ops > before_restart[1].ops ? "back in use" : "not back",
	       st[1].ops - before_restart[1].ops);
	if (atomic_load(&ops_failed) || atomic_load(&wrong_results) ||
	    atomic_load(&ops_after_kill) == 0 || st[1].ops <= before_restart[1].ops)
		rc = 1;

	hw_cluster_free(cl);
	server_kill(server);
	EVP_PKEY_free(ec_host);
	printf("%s\n", rc ? "FAIL" : "PASS: nothing lost");
	return rc;
}
