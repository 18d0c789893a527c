/*
 * Runs the list that tests/esdk-vectors.sh makes from the AWS Encryption
 * SDK test vectors:
 *
 *   VEC name ok|fail kind provider-id key-name key-hex ct-path pt-path context
 *     kind "aes": the key is imported into the test token (raw PKCS#11,
 *     non-extractable, label = key name) and the message is decrypted by
 *     hw_envelope_decrypt with the key namespace = provider id and the
 *     manifest's context as required (reproduced) pairs.
 *     kind "rsa:PAD:first|extra": key-hex is the DER private key, imported
 *     (sensitive, non-extractable, decrypt only, label = key name);
 *     PAD = pkcs1 | oaep-sha1 | oaep-sha256 | oaep-sha384 | oaep-sha512 is
 *     the configured RSA padding. "first": the library finds the key on
 *     the token; "extra" (another EDK of the same message): only that key
 *     is allowed, so that EDK and its padding are the ones used.
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
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "hsmwrap.h"
#include "internal.h"
#include "format/esdk.h"

static unsigned dec_ok, rej_ok, failures, skipped_rsa, skipped_kms, skipped_other;
static unsigned dec_aes, dec_rsa, dec_rsa_extra;
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

/* The RSA private key of a vector, as a token object: n, e, d and the CRT values. */
static void
import_rsa(const char *label, const uint8_t *der, size_t derlen)
{
	static char done[16][129];
	static unsigned ndone;
	static const char *names[8] = {
		OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
		OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2,
		OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
		OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
	};
	static const CK_ATTRIBUTE_TYPE types[8] = {
		CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2,
		CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT,
	};
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = CKK_RSA;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_BYTE id[4] = { 0xe5, 0xd5, 0, (CK_BYTE)ndone };
	uint8_t *val[8] = { NULL };
	CK_ATTRIBUTE a[12 + 8] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_PRIVATE, &t, sizeof(t) },
		{ CKA_SENSITIVE, &t, sizeof(t) },
		{ CKA_EXTRACTABLE, &f, sizeof(f) },
		{ CKA_DECRYPT, &t, sizeof(t) },
		{ CKA_SIGN, &f, sizeof(f) },
		{ CKA_UNWRAP, &f, sizeof(f) },
		{ CKA_DERIVE, &f, sizeof(f) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, id, sizeof(id) },
	};
	const unsigned char *p = der;
	EVP_PKEY *pk;
	CK_OBJECT_HANDLE h;

	for (unsigned i = 0; i < ndone; i++)
		if (strcmp(done[i], label) == 0)
			return;
	if (ndone == 16 || strlen(label) >= sizeof(done[0]))
		die("too many vector keys");
	pk = d2i_AutoPrivateKey(NULL, &p, (long)derlen);
	if (!pk || !EVP_PKEY_is_a(pk, "RSA"))
		die("vector RSA key");
	for (int i = 0; i < 8; i++) {
		BIGNUM *bn = NULL;
		int n;

		if (EVP_PKEY_get_bn_param(pk, names[i], &bn) != 1)
			die("vector RSA key component");
		n = BN_num_bytes(bn);
		val[i] = malloc((size_t)n + 1);
		if (!val[i] || BN_bn2bin(bn, val[i]) != n)
			die("BN_bn2bin");
		BN_clear_free(bn);
		a[12 + i] = (CK_ATTRIBUTE){ types[i], val[i], (CK_ULONG)n };
	}
	EVP_PKEY_free(pk);
	if (!p11)
		p11_open();
	if (p11->C_CreateObject(p11s, a, sizeof(a) / sizeof(a[0]), &h) != CKR_OK)
		die("C_CreateObject (RSA)");
	for (int i = 0; i < 8; i++) {
		OPENSSL_cleanse(val[i], a[12 + i].ulValueLen);
		free(val[i]);
	}
	strcpy(done[ndone++], label);
}

static hw_err
parse_pad(const char *s, hw_rsa_padding *pad)
{
	static const struct { const char *n; hw_rsa_padding p; } t[] = {
		{ "pkcs1", HW_RSA_PAD_PKCS1 },
		{ "oaep-sha1", HW_RSA_PAD_OAEP_SHA1 },
		{ "oaep-sha256", HW_RSA_PAD_OAEP_SHA256 },
		{ "oaep-sha384", HW_RSA_PAD_OAEP_SHA384 },
		{ "oaep-sha512", HW_RSA_PAD_OAEP_SHA512 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(s, t[i].n) == 0) {
			*pad = t[i].p;
			return HW_OK;
		}
	return HW_ERR_INVALID_ARG;
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
	char *ns, *kname, padname[32] = "";
	hw_rsa_padding pad = HW_RSA_PAD_OAEP_SHA256;
	hw_key *only = NULL;
	bool rsa = strncmp(kind, "rsa:", 4) == 0, extra = false;
	hw_err e;

	if (rsa) {
		const char *c = strchr(kind + 4, ':');

		if (!c || (size_t)(c - kind - 4) >= sizeof(padname))
			die("bad rsa kind");
		memcpy(padname, kind + 4, (size_t)(c - kind - 4));
		if (parse_pad(padname, &pad) != HW_OK)
			die("unknown RSA padding in the manifest");
		extra = strcmp(c + 1, "extra") == 0;
	}
	if (strcmp(kind, "aes") != 0 && !rsa) {
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
	if (rsa)
		import_rsa(kname, key, keylen);
	else
		import_aes(kname, key, keylen);
	ct = slurp(f[7], &ctlen);
	if (want_ok)
		pt = slurp(f[8], &ptlen);
	req = parse_ectx(f[9]);
	if (hw_envelope_cfg_new(&cfg) || hw_envelope_cfg_set_key_namespace(cfg, ns) ||
	    hw_envelope_cfg_set_commitment_policy(cfg, HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT) ||
	    hw_envelope_cfg_set_rsa_padding(cfg, pad))
		die("cfg");
	if (extra && hw_key_find(ctx, kname, &only) != HW_OK)
		die("the imported RSA key is not found by its label");
	/* allowed == NULL: the library finds the key named by the message. */
	e = hw_envelope_decrypt(ctx, cfg, only ? &only : NULL, only ? 1 : 0, req, ct, ctlen, &out,
	                        &outlen, NULL);
	if (want_ok && e == HW_OK && outlen == ptlen && memcmp(out, pt, ptlen) == 0) {
		if (extra) {
			dec_rsa_extra++;
			goto done;
		}
		dec_ok++;
		if (rsa)
			dec_rsa++;
		else
			dec_aes++;
		/* Without key commitment, the default policy must refuse it. */
		if (ctlen > 0 && ct[0] == 1) {
			uint8_t *o2 = NULL;
			size_t o2len = 0;
			hw_envelope_cfg *strict;

			if (hw_envelope_cfg_new(&strict) || hw_envelope_cfg_set_key_namespace(strict, ns) ||
			    hw_envelope_cfg_set_rsa_padding(strict, pad))
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
		printf("FAIL %s%s: expected %s, got %s (%s)\n", name, extra ? " (second EDK)" : "",
		       want_ok ? "plaintext" : "an error", hw_errname(e), hw_last_detail());
	}
done:
	hw_key_free(only);
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

static hw_err
plain_wrap(void *arg, const esdk_suite *s, const uint8_t *aad, size_t aadlen,
           const uint8_t *dk, size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	(void)arg, (void)s, (void)aad, (void)aadlen;
	hw_wbuf_str16(edks, "test", 4);
	hw_wbuf_str16(edks, "key", 3);
	hw_wbuf_str16(edks, dk, dklen);
	(*nedks)++;
	return edks->err;
}

/*
 * Frame count overflow: sequence numbers are 32-bit and 0xffffffff marks
 * the final frame, so a message has at most 2^32 - 1 frames. The
 * encryptor must refuse the frame after the last regular one rather than
 * wrap the counter (which would reuse an IV under the same key).
 */
static unsigned
check_frame_limit(void)
{
	esdk_enc_params p;
	esdk_ec ec = { NULL, 0 };
	esdk_enc *e = NULL;
	hw_wbuf w;
	hw_err r1, r2;
	unsigned bad = 0;

	memset(&p, 0, sizeof(p));
	p.suite = 0x0478;
	p.frame_len = 1;
	p.wrap = plain_wrap;
	hw_wbuf_init(&w, SIZE_MAX);
	p.out = to_wbuf;
	p.out_arg = &w;
	if (esdk_enc_new(&p, &ec, &e) != HW_OK)
		die("frame limit: esdk_enc_new");
	esdk_enc_test_set_seq(e, UINT32_MAX - 1);
	/* Frame 0xfffffffe is the last regular one; one byte more is held
	 * back as the candidate final frame; the next regular frame after
	 * that would need sequence number 0xffffffff. */
	r1 = esdk_enc_update(e, (const uint8_t *)"ab", 2);
	r2 = r1 == HW_OK ? esdk_enc_update(e, (const uint8_t *)"c", 1) : r1;
	if (r1 != HW_OK || r2 == HW_OK) {
		printf("FAIL frame limit: %s then %s (want success, then a refusal)\n",
		       hw_errname(r1), hw_errname(r2));
		bad++;
	} else {
		printf("frame count limit: frame 2^32-1 refused (%s: %s)\n", hw_errname(r2),
		       hw_last_detail());
	}
	esdk_enc_free(e);
	hw_wbuf_free(&w);
	return bad;
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
	printf("vectors decrypted: %u Raw AES, %u Raw RSA (with the key found on the token); "
	       "%u Raw RSA messages also through their second EDK (another padding)\n", dec_aes,
	       dec_rsa, dec_rsa_extra);
	printf("vectors skipped: %u Raw RSA (no private key), %u AWS KMS (no KMS here), "
	       "%u other\n", skipped_rsa, skipped_kms, skipped_other);
	printf("commitment KATs: %u decrypted, %u rejected as expected, %u wrong\n", kat_pass,
	       kat_rej, kat_fail);
	failures += check_frame_limit();
	hw_ctx_free(ctx);
	if (p11) {
		p11->C_CloseSession(p11s);
		p11_kit_module_finalize(p11);
		p11_kit_module_release(p11);
	}
	return failures || kat_fail || dec_ok + rej_ok + kat_pass + kat_rej == 0 ? 1 : 0;
}
