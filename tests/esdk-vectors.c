/*
 * Runs the list that tests/esdk-vectors.sh makes from the AWS Encryption
 * SDK test vectors:
 *
 *   VEC name ok|fail kind provider-id key-name key-hex ct-path pt-path context
 *     kind "aes": the key is imported into the test token (raw PKCS#11,
 *     non-extractable, label = key name) and the message is decrypted by
 *     hw_envelope_decrypt with the key namespace = provider id and the
 *     manifest's context as required (reproduced) pairs.
 *     Other kinds are counted as skipped, with the reason.
 *   KAT name ok|fail dek msgid commit cek ct-hex pt-hex context
 *     key-commitment known answers: the format engine (esdk.h) with a
 *     static data key; derivation outputs are compared too.
 *
 * Binary fields are hex, "-" = empty. Needs the environment of
 * tests/with-token.sh. Exit 0 when every vector gave the expected result.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>

#include "hsmwrap.h"
#include "internal.h"
#include "esdk.h"

static unsigned dec_ok, rej_ok, failures, skipped_rsa, skipped_kms, skipped_other;
static unsigned kat_pass, kat_rej, kat_fail, v1_refused;

static void
die(const char *what)
{
	fprintf(stderr, "esdk-vectors: %s\n", what);
	exit(99);
}

static uint8_t *
unhex(const char *s, size_t *len)
{
	size_t n = strcmp(s, "-") == 0 ? 0 : strlen(s);
	uint8_t *b = malloc(n / 2 + 1);

	if (!b || n % 2)
		die("bad hex");
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			die("bad hex");
		b[i] = (uint8_t)v;
	}
	*len = n / 2;
	return b;
}

static char *
unhex_str(const char *s)
{
	size_t n;
	char *p = (char *)unhex(s, &n);

	p[n] = '\0';
	return p;
}

static uint8_t *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	size_t cap = 0, n = 0, r;

	if (!f)
		die(path);
	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			b = realloc(b, cap);
			if (!b)
				die("out of memory");
		}
		r = fread(b + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	*len = n;
	return b;
}

/* "k=v,k=v" with hex sides into a public context (NULL for "-"). */
static hw_ectx *
parse_ectx(const char *s)
{
	hw_ectx *ec;
	char *copy, *tok, *save = NULL;

	if (strcmp(s, "-") == 0)
		return NULL;
	if (hw_ectx_new(&ec) != HW_OK)
		die("hw_ectx_new");
	copy = strdup(s);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '='), *k, *v;
		if (!eq)
			die("bad context");
		*eq = '\0';
		k = unhex_str(tok);
		v = unhex_str(eq + 1);
		if (hw_ectx_add(ec, k, v) != HW_OK)
			die("hw_ectx_add");
		free(k);
		free(v);
	}
	free(copy);
	return ec;
}

/* ---------------------------------------------------------------- */
/* Importing a vector's AES key into the test token with raw PKCS#11 */

static CK_FUNCTION_LIST *p11;
static CK_SESSION_HANDLE p11s;

static void
p11_open(void)
{
	const char *mod = getenv("HSMWRAP_MODULE"), *pinf = getenv("HW_TEST_USER_PIN_FILE");
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	char pin[256];
	size_t pl;
	FILE *f;
	CK_RV rv;

	if (!mod || !pinf)
		die("run under tests/with-token.sh");
	p11 = p11_kit_module_load(mod, 0);
	if (!p11)
		die("p11_kit_module_load");
	/* A managed module: p11-kit counts this initialisation apart from the
	 * library's own. */
	rv = p11_kit_module_initialize(p11);
	if (rv != CKR_OK)
		die("p11_kit_module_initialize");
	if (p11->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		die("C_GetSlotList");
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (p11->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (memcmp(ti.label, "hsmwrap-test ", 13) != 0)
			continue;
		if (p11->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
		                       &p11s) != CKR_OK)
			die("C_OpenSession");
		f = fopen(pinf, "r");
		if (!f)
			die(pinf);
		pl = fread(pin, 1, sizeof(pin) - 1, f);
		fclose(f);
		rv = p11->C_Login(p11s, CKU_USER, (CK_UTF8CHAR *)pin, pl);
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
			die("C_Login");
		return;
	}
	die("token hsmwrap-test not found");
}

/* Imports once per label; the vectors use one key per name. */
static void
import_aes(const char *label, const uint8_t *key, size_t keylen)
{
	static char done[16][129];
	static unsigned ndone;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_BYTE id[4] = { 0xe5, 0xd4, 0, (CK_BYTE)ndone };
	CK_ATTRIBUTE a[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_PRIVATE, &t, sizeof(t) },
		{ CKA_SENSITIVE, &t, sizeof(t) },
		{ CKA_EXTRACTABLE, &f, sizeof(f) },
		{ CKA_ENCRYPT, &t, sizeof(t) },
		{ CKA_DECRYPT, &t, sizeof(t) },
		{ CKA_WRAP, &f, sizeof(f) },
		{ CKA_UNWRAP, &f, sizeof(f) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, id, sizeof(id) },
		{ CKA_VALUE, (void *)key, keylen },
	};
	CK_OBJECT_HANDLE h;

	for (unsigned i = 0; i < ndone; i++)
		if (strcmp(done[i], label) == 0)
			return;
	if (ndone == 16 || strlen(label) >= sizeof(done[0]))
		die("too many vector keys");
	if (!p11)
		p11_open();
	if (p11->C_CreateObject(p11s, a, sizeof(a) / sizeof(a[0]), &h) != CKR_OK)
		die("C_CreateObject");
	strcpy(done[ndone++], label);
}

/* ---------------------------------------------------------------- */

static hw_ctx *ctx;

static void
ctx_open(void)
{
	if (ctx)
		return;
	if (hw_ctx_new(&ctx) != HW_OK || hw_ctx_set_module(ctx, getenv("HSMWRAP_MODULE")) ||
	    hw_ctx_set_token(ctx, getenv("HSMWRAP_TOKEN")) ||
	    hw_ctx_set_pin_source(ctx, getenv("HSMWRAP_PIN_SOURCE")) || hw_ctx_open(ctx) ||
	    hw_ctx_login(ctx))
		die("cannot open the test token");
}

static void
run_vec(char **f)
{
	const char *name = f[1], *kind = f[3];
	bool want_ok = strcmp(f[2], "ok") == 0;
	hw_envelope_cfg *cfg;
	hw_ectx *req;
	uint8_t *ct, *pt = NULL, *key, *out = NULL;
	size_t ctlen, ptlen = 0, keylen, outlen = 0;
	char *ns, *kname;
	hw_err e;

	if (strcmp(kind, "aes") != 0) {
		if (strcmp(kind, "rsa") == 0)
			skipped_rsa++;
		else if (strcmp(kind, "kms") == 0)
			skipped_kms++;
		else
			skipped_other++;
		return;
	}
	ctx_open();
	ns = unhex_str(f[4]);
	kname = unhex_str(f[5]);
	key = unhex(f[6], &keylen);
	import_aes(kname, key, keylen);
	ct = slurp(f[7], &ctlen);
	if (want_ok)
		pt = slurp(f[8], &ptlen);
	req = parse_ectx(f[9]);
	if (hw_envelope_cfg_new(&cfg) || hw_envelope_cfg_set_key_namespace(cfg, ns) ||
	    hw_envelope_cfg_set_commitment_policy(cfg, HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT))
		die("cfg");
	/* allowed == NULL: the library finds the key named by the message. */
	e = hw_envelope_decrypt(ctx, cfg, NULL, 0, req, ct, ctlen, &out, &outlen, NULL);
	if (want_ok && e == HW_OK && outlen == ptlen && memcmp(out, pt, ptlen) == 0) {
		dec_ok++;
		/* Without key commitment, the default policy must refuse it. */
		if (ctlen > 0 && ct[0] == 1) {
			uint8_t *o2 = NULL;
			size_t o2len = 0;
			hw_envelope_cfg *strict;

			if (hw_envelope_cfg_new(&strict) || hw_envelope_cfg_set_key_namespace(strict, ns))
				die("cfg");
			if (hw_envelope_decrypt(ctx, strict, NULL, 0, req, ct, ctlen, &o2, &o2len,
			                        NULL) == HW_OK) {
				failures++;
				printf("FAIL %s: a v1 message decrypted under REQUIRE_REQUIRE\n", name);
				hw_free_secret(o2, o2len);
			} else {
				v1_refused++;
			}
			hw_envelope_cfg_free(strict);
		}
	} else if (!want_ok && e != HW_OK) {
		rej_ok++;
		if (getenv("ESDK_VERBOSE"))
			printf("rejected %s: %s (%s)\n", name, hw_errname(e), hw_last_detail());
	} else {
		failures++;
		printf("FAIL %s: expected %s, got %s (%s)\n", name, want_ok ? "plaintext" : "an error",
		       hw_errname(e), hw_last_detail());
	}
	if (out)
		hw_free_secret(out, outlen);
	hw_envelope_cfg_free(cfg);
	hw_ectx_free(req);
	free(ns);
	free(kname);
	free(key);
	free(ct);
	free(pt);
}

/* ---------------------------------------------------------------- */
/* Key-commitment known answers through the format engine            */

typedef struct {
	const uint8_t *dk;
	size_t len;
} static_key;

static hw_err
static_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
              size_t dklen)
{
	static_key *k = arg;

	(void)h, (void)aad, (void)aadlen;
	if (k->len != dklen)
		return hw_fail(HW_ERR_WRONG_KEY, 0, "static key length");
	memcpy(dk, k->dk, dklen);
	return HW_OK;
}

static hw_err
to_wbuf(void *arg, const uint8_t *p, size_t n)
{
	hw_wbuf_put(arg, p, n);
	return ((hw_wbuf *)arg)->err;
}

static void
run_kat(char **f)
{
	const char *name = f[1];
	bool want_ok = strcmp(f[2], "ok") == 0;
	size_t dklen, midlen, cklen, ceklen, ctlen, ptlen;
	uint8_t *dk = unhex(f[3], &dklen), *mid = unhex(f[4], &midlen);
	uint8_t *ck = unhex(f[5], &cklen), *cek = unhex(f[6], &ceklen);
	uint8_t *ct = unhex(f[7], &ctlen), *pt = unhex(f[8], &ptlen);
	uint8_t key[32], commit[32];
	static_key sk = { dk, dklen };
	hw_ectx *ec = parse_ectx(f[9]);
	uint8_t *ser = NULL;
	size_t serlen = 0;
	esdk_ec req = { NULL, 0 };
	esdk_dec_params p;
	esdk_dec *d = NULL;
	hw_wbuf w;
	hw_err e;
	bool derive_ok;
	const esdk_suite *suite;

	/* The KDF on its own (the suite id is part of the derivation). */
	suite = ctlen >= 3 ? esdk_suite_get((uint16_t)(ct[1] << 8 | ct[2])) : NULL;
	derive_ok = suite && midlen == 32 && esdk_derive(suite, dk, mid, midlen, key,
	                                        commit) == HW_OK &&
	            (ceklen == 0 || (ceklen == 32 && memcmp(key, cek, 32) == 0)) &&
	            (cklen == 0 || (cklen == 32 && memcmp(commit, ck, 32) == 0));
	if (ec && (hw_ectx_serialize(ec, &ser, &serlen) != HW_OK ||
	           esdk_ec_parse(ser, serlen, &req) != HW_OK))
		die("KAT context");
	memset(&p, 0, sizeof(p));
	p.max_buffer = 1 << 20;
	p.required = &req;
	p.unwrap = static_unwrap;
	p.unwrap_arg = &sk;
	hw_wbuf_init(&w, SIZE_MAX);
	p.out = to_wbuf;
	p.out_arg = &w;
	e = esdk_dec_new(&p, &d);
	if (e == HW_OK)
		e = esdk_dec_update(d, ct, ctlen);
	if (e == HW_OK)
		e = esdk_dec_final(d);
	if (want_ok && e == HW_OK && derive_ok && w.len == ptlen &&
	    (ptlen == 0 || memcmp(w.p, pt, ptlen) == 0)) {
		kat_pass++;
	} else if (!want_ok && e != HW_OK && w.len == 0) {
		kat_rej++;
		if (getenv("ESDK_VERBOSE"))
			printf("rejected %s: %s (%s)\n", name, hw_errname(e), hw_last_detail());
	} else {
		kat_fail++;
		printf("FAIL %s: expected %s, got %s (%s), derivation %s, %zu bytes out\n", name,
		       want_ok ? "plaintext" : "an error", hw_errname(e), hw_last_detail(),
		       derive_ok ? "matches" : "DIFFERS", w.len);
	}
	hw_wbuf_free(&w);
	esdk_dec_free(d);
	esdk_ec_free(&req);
	free(ser);
	hw_ectx_free(ec);
	free(dk), free(mid), free(ck), free(cek), free(ct), free(pt);
}

int
main(int argc, char **argv)
{
	FILE *list;
	char *line = NULL;
	size_t cap = 0;

	if (argc != 2)
		die("usage: esdk-vectors LIST");
	list = fopen(argv[1], "r");
	if (!list)
		die(argv[1]);
	while (getline(&line, &cap, list) > 0) {
		char *f[12], *save = NULL;
		int n = 0;

		line[strcspn(line, "\n")] = '\0';
		for (char *t = strtok_r(line, "\t", &save); t && n < 12; t = strtok_r(NULL, "\t", &save))
			f[n++] = t;
		if (n == 10 && strcmp(f[0], "VEC") == 0)
			run_vec(f);
		else if (n == 10 && strcmp(f[0], "KAT") == 0)
			run_kat(f);
		else
			die("bad list line");
	}
	free(line);
	fclose(list);
	printf("vectors: %u decrypted as expected, %u rejected as expected, %u wrong\n", dec_ok,
	       rej_ok, failures);
	printf("vectors: %u v1 messages refused under the default commitment policy\n",
	       v1_refused);
	printf("vectors skipped: %u Raw RSA (no RSA keyring yet), %u AWS KMS (no KMS here), "
	       "%u other\n", skipped_rsa, skipped_kms, skipped_other);
	printf("commitment KATs: %u decrypted, %u rejected as expected, %u wrong\n", kat_pass,
	       kat_rej, kat_fail);
	hw_ctx_free(ctx);
	if (p11) {
		p11->C_CloseSession(p11s);
		p11_kit_module_finalize(p11);
		p11_kit_module_release(p11);
	}
	return failures || kat_fail || dec_ok + rej_ok + kat_pass + kat_rej == 0 ? 1 : 0;
}
