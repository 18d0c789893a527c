/*
 * Envelope encryption in the AWS Encryption SDK format through the HSM
 * keyring (public API only). Runs under tests/with-token.sh.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <openssl/rand.h>

#include "hsmwrap.h"

static hw_ctx *ctx;
static hw_key *k1, *k2, *k3, *kw;

#define OK(x) CU_ASSERT_EQUAL_FATAL((x), HW_OK)

static hw_key *
make_key(const char *label, hw_purpose purpose)
{
	hw_key *k = NULL;

	if (hw_key_generate(ctx, label, HW_KEY_AES256, purpose, &k) != HW_OK) {
		fprintf(stderr, "hw_key_generate %s: %s (%s)\n", label, hw_strerror(HW_ERR_HSM),
		        hw_last_detail());
		return NULL;
	}
	return k;
}

static int
suite_init(void)
{
	if (hw_ctx_new(&ctx) || hw_ctx_set_module(ctx, getenv("HSMWRAP_MODULE")) ||
	    hw_ctx_set_token(ctx, getenv("HSMWRAP_TOKEN")) ||
	    hw_ctx_set_pin_source(ctx, getenv("HSMWRAP_PIN_SOURCE")) || hw_ctx_open(ctx))
		return -1;
	k1 = make_key("esdk-k1", HW_PURPOSE_ENVELOPE);
	k2 = make_key("esdk-k2", HW_PURPOSE_ENVELOPE);
	k3 = make_key("esdk k3/%odd", HW_PURPOSE_ENVELOPE);
	kw = make_key("esdk-kwp", HW_PURPOSE_KEYWRAP);
	return k1 && k2 && k3 && kw ? 0 : -1;
}

static int
suite_clean(void)
{
	hw_key_free(k1);
	hw_key_free(k2);
	hw_key_free(k3);
	hw_key_free(kw);
	hw_ctx_free(ctx);
	return 0;
}

static uint8_t *
rnd(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	CU_ASSERT_FATAL(p != NULL);
	CU_ASSERT_FATAL(RAND_bytes(p, (int)(n ? n : 1)) == 1);
	return p;
}

static hw_ectx *
ectx2(const char *k, const char *v, const char *k2_, const char *v2)
{
	hw_ectx *ec;

	OK(hw_ectx_new(&ec));
	if (k)
		OK(hw_ectx_add(ec, k, v));
	if (k2_)
		OK(hw_ectx_add(ec, k2_, v2));
	return ec;
}

static hw_envelope_cfg *
cfg_of(unsigned suite, uint32_t frame)
{
	hw_envelope_cfg *c;

	OK(hw_envelope_cfg_new(&c));
	OK(hw_envelope_cfg_set_suite(c, suite));
	OK(hw_envelope_cfg_set_frame_length(c, frame));
	return c;
}

static void
encrypt_msg(const hw_envelope_cfg *c, hw_key **keys, size_t nkeys, const hw_ectx *ec,
            const uint8_t *pt, size_t len, uint8_t **msg, size_t *msglen)
{
	hw_err e = hw_envelope_encrypt(c, keys, nkeys, ec, pt, len, msg, msglen);

	if (e != HW_OK)
		fprintf(stderr, "encrypt: %s (%s)\n", hw_errname(e), hw_last_detail());
	CU_ASSERT_EQUAL_FATAL(e, HW_OK);
}

/* Decrypts and expects failure with no output. */
static hw_err
decrypt_fails(const hw_envelope_cfg *c, hw_key **allowed, size_t n, const hw_ectx *req,
              const uint8_t *msg, size_t len)
{
	uint8_t *out = (uint8_t *)"untouched";
	size_t outlen = 12345;
	hw_ectx *ec = (hw_ectx *)"x";
	hw_err e = hw_envelope_decrypt(ctx, c, allowed, n, req, msg, len, &out, &outlen, &ec);

	CU_ASSERT_NOT_EQUAL(e, HW_OK);
	CU_ASSERT(out == (uint8_t *)"untouched" && outlen == 12345 && ec == (hw_ectx *)"x");
	if (e == HW_OK) {
		hw_free_secret(out, outlen);
		hw_ectx_free(ec);
	}
	return e;
}

static void
roundtrip(unsigned suite, uint32_t frame, size_t size)
{
	hw_envelope_cfg *c = cfg_of(suite, frame);
	hw_ectx *ec = ectx2("purpose", "test", "Zeta", "\xc3\xa9t\xc3\xa9"), *got = NULL;
	uint8_t *pt = rnd(size), *msg, *out = NULL;
	size_t msglen, outlen;
	hw_envelope_info *info;
	hw_err e;

	encrypt_msg(c, &k1, 1, ec, pt, size, &msg, &msglen);
	/* Frames: ceil(size / frame), at least 1, the last one full if exact. */
	{
		size_t frames = size ? (size + frame - 1) / frame : 1, body;
		body = (frames - 1) * ((size_t)frame + 32) + 40 + (size - (frames - 1) * frame);
		OK(hw_envelope_inspect(msg, msglen, &info));
		CU_ASSERT_EQUAL(info->version, 2);
		CU_ASSERT_EQUAL(info->suite, suite);
		CU_ASSERT(info->framed && info->frame_length == frame);
		CU_ASSERT_EQUAL(info->nedks, 1);
		CU_ASSERT_STRING_EQUAL(info->edks[0].provider_id, "hsmwrap");
		CU_ASSERT(info->edks[0].key_name && strcmp(info->edks[0].key_name, "esdk-k1") == 0);
		CU_ASSERT_EQUAL(info->npairs, suite == 0x0578 ? 3 : 2);
		CU_ASSERT_FATAL(msglen >= info->header_len + body);
		if (suite == 0x0478) {
			CU_ASSERT_EQUAL(msglen, info->header_len + body);
		} else {
			size_t f = info->header_len + body;
			CU_ASSERT_FATAL(msglen >= f + 2);
			CU_ASSERT_EQUAL(msglen - f, 2 + ((size_t)msg[f] << 8 | msg[f + 1]));
		}
		hw_envelope_info_free(info);
	}
	e = hw_envelope_decrypt(ctx, NULL, NULL, 0, ec, msg, msglen, &out, &outlen, &got);
	if (e != HW_OK)
		fprintf(stderr, "decrypt 0x%04x/%u/%zu: %s (%s)\n", suite, frame, size,
		        hw_errname(e), hw_last_detail());
	CU_ASSERT_EQUAL_FATAL(e, HW_OK);
	CU_ASSERT_EQUAL(outlen, size);
	CU_ASSERT(outlen == size && memcmp(out, pt, size) == 0);
	CU_ASSERT_EQUAL(hw_ectx_count(got), suite == 0x0578 ? 3 : 2);
	hw_free_secret(out, outlen);
	hw_ectx_free(got);
	hw_free(msg);
	free(pt);
	hw_ectx_free(ec);
	hw_envelope_cfg_free(c);
}

static void
test_roundtrips(void)
{
	static const size_t sizes[] = { 0, 1, 4095, 4096, 4097, 1u << 20 };
	static const unsigned suites[] = { 0x0478, 0x0578 };
	static const uint32_t frames[] = { 1, 4096 };

	for (size_t s = 0; s < 2; s++)
		for (size_t f = 0; f < 2; f++)
			for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++)
				roundtrip(suites[s], frames[f], sizes[z]);
}

static void
test_default_cfg(void)
{
	uint8_t *msg, *out;
	size_t msglen, outlen;
	hw_envelope_info *info;

	encrypt_msg(NULL, &k1, 1, NULL, (const uint8_t *)"hello", 5, &msg, &msglen);
	OK(hw_envelope_inspect(msg, msglen, &info));
	CU_ASSERT_EQUAL(info->suite, 0x0578);
	CU_ASSERT_EQUAL(info->frame_length, 4096);
	CU_ASSERT_EQUAL(info->npairs, 1);
	CU_ASSERT_STRING_EQUAL(info->pairs[0].key, "aws-crypto-public-key");
	CU_ASSERT_EQUAL(strlen(info->pairs[0].value), 68);
	CU_ASSERT(info->signed_ && info->committing);
	hw_envelope_info_free(info);
	OK(hw_envelope_decrypt(ctx, NULL, NULL, 0, NULL, msg, msglen, &out, &outlen, NULL));
	CU_ASSERT(outlen == 5 && memcmp(out, "hello", 5) == 0);
	hw_free_secret(out, outlen);
	hw_free(msg);
}

static void
test_multikey(void)
{
	hw_key *both[2] = { k1, k3 }, *only1[1] = { k1 }, *only3[1] = { k3 }, *only2[1] = { k2 };
	uint8_t *msg, *out;
	size_t msglen, outlen;
	hw_envelope_cfg *c;

	encrypt_msg(NULL, both, 2, NULL, (const uint8_t *)"multi", 5, &msg, &msglen);
	OK(hw_envelope_decrypt(ctx, NULL, only1, 1, NULL, msg, msglen, &out, &outlen, NULL));
	CU_ASSERT(outlen == 5 && memcmp(out, "multi", 5) == 0);
	hw_free_secret(out, outlen);
	/* The second EDK, under a label that needs percent-encoding in a URI. */
	OK(hw_envelope_decrypt(NULL, NULL, only3, 1, NULL, msg, msglen, &out, &outlen, NULL));
	CU_ASSERT(outlen == 5 && memcmp(out, "multi", 5) == 0);
	hw_free_secret(out, outlen);
	/* Wrong key: not one the message is wrapped for. */
	CU_ASSERT_EQUAL(decrypt_fails(NULL, only2, 1, NULL, msg, msglen), HW_ERR_WRONG_KEY);
	/* Another namespace: nothing matches. */
	OK(hw_envelope_cfg_new(&c));
	OK(hw_envelope_cfg_set_key_namespace(c, "other"));
	CU_ASSERT_EQUAL(decrypt_fails(c, NULL, 0, NULL, msg, msglen), HW_ERR_KEY_NOT_FOUND);
	CU_ASSERT_EQUAL(hw_envelope_cfg_set_key_namespace(c, "aws-kms-x"), HW_ERR_INVALID_ARG);
	/* The EDK limit is checked while parsing. */
	OK(hw_envelope_cfg_set_key_namespace(c, "hsmwrap"));
	OK(hw_envelope_cfg_set_max_edks(c, 1));
	CU_ASSERT_EQUAL(decrypt_fails(c, NULL, 0, NULL, msg, msglen), HW_ERR_TOO_LARGE);
	/* ... and on encrypt. */
	CU_ASSERT_EQUAL(hw_envelope_encrypt(c, both, 2, NULL, (const uint8_t *)"x", 1, &out,
	                                    &outlen), HW_ERR_TOO_LARGE);
	hw_envelope_cfg_free(c);
	hw_free(msg);
}

static void
test_context(void)
{
	hw_ectx *ec = ectx2("tenant", "a", "purpose", "p"), *wrong = ectx2("tenant", "b", NULL, NULL);
	hw_ectx *missing = ectx2("absent", "x", NULL, NULL), *subset = ectx2("tenant", "a", NULL, NULL);
	hw_ectx *reserved = ectx2("aws-crypto-public-key", "x", NULL, NULL), *got = NULL;
	uint8_t *msg, *out;
	size_t msglen, outlen;

	encrypt_msg(NULL, &k1, 1, ec, (const uint8_t *)"ctx", 3, &msg, &msglen);
	CU_ASSERT_EQUAL(decrypt_fails(NULL, NULL, 0, wrong, msg, msglen), HW_ERR_INTEGRITY);
	CU_ASSERT_EQUAL(decrypt_fails(NULL, NULL, 0, missing, msg, msglen), HW_ERR_INTEGRITY);
	CU_ASSERT_EQUAL(decrypt_fails(NULL, NULL, 0, reserved, msg, msglen), HW_ERR_INVALID_ARG);
	OK(hw_envelope_decrypt(ctx, NULL, NULL, 0, subset, msg, msglen, &out, &outlen, &got));
	CU_ASSERT_EQUAL(hw_ectx_count(got), 3);
	hw_free_secret(out, outlen);
	hw_ectx_free(got);
	/* Reserved keys are refused on encrypt. */
	CU_ASSERT_EQUAL(hw_envelope_encrypt(NULL, &k1, 1, reserved, (const uint8_t *)"x", 1, &out,
	                                    &outlen), HW_ERR_INVALID_ARG);
	hw_free(msg);
	hw_ectx_free(ec);
	hw_ectx_free(wrong);
	hw_ectx_free(missing);
	hw_ectx_free(subset);
	hw_ectx_free(reserved);
}

static void
test_key_purpose(void)
{
	uint8_t *out;
	size_t outlen;

	CU_ASSERT_EQUAL(hw_envelope_encrypt(NULL, &kw, 1, NULL, (const uint8_t *)"x", 1, &out,
	                                    &outlen), HW_ERR_KEY_PURPOSE);
	CU_ASSERT_EQUAL(hw_envelope_encrypt(NULL, NULL, 0, NULL, (const uint8_t *)"x", 1, &out,
	                                    &outlen), HW_ERR_INVALID_ARG);
}

/* Every truncation and every single-bit flip of a small message fails. */
static void
tamper(unsigned suite)
{
	hw_envelope_cfg *c = cfg_of(suite, 4);
	hw_ectx *ec = ectx2("k", "v", NULL, NULL);
	uint8_t *msg, *bad;
	size_t msglen;

	encrypt_msg(c, &k1, 1, ec, (const uint8_t *)"0123456789", 10, &msg, &msglen);
	for (size_t i = 0; i < msglen; i++)
		decrypt_fails(NULL, NULL, 0, NULL, msg, i);
	bad = malloc(msglen + 1);
	CU_ASSERT_FATAL(bad != NULL);
	for (size_t i = 0; i < msglen * 8; i++) {
		memcpy(bad, msg, msglen);
		bad[i / 8] ^= (uint8_t)(1u << (i % 8));
		decrypt_fails(NULL, NULL, 0, NULL, bad, msglen);
	}
	/* Trailing bytes after a complete message. */
	memcpy(bad, msg, msglen);
	bad[msglen] = 0;
	CU_ASSERT_EQUAL(decrypt_fails(NULL, NULL, 0, NULL, bad, msglen + 1), HW_ERR_FORMAT);
	free(bad);
	hw_free(msg);
	hw_ectx_free(ec);
	hw_envelope_cfg_free(c);
}

static void test_tamper_0478(void) { tamper(0x0478); }
static void test_tamper_0578(void) { tamper(0x0578); }

static void
test_base64_hint(void)
{
	const char *b64 = "AgV4abcdefghijklmnopqrstuvwxyz0123456789";

	CU_ASSERT_EQUAL(decrypt_fails(NULL, NULL, 0, NULL, (const uint8_t *)b64, strlen(b64)),
	                HW_ERR_FORMAT);
	CU_ASSERT(strstr(hw_last_detail(), "Base64") != NULL);
}

/* ---- streaming ---- */

typedef struct {
	uint8_t *p;
	size_t len, cap;
	int fail_after;             /* calls until an injected error; -1 never */
} sink;

static hw_err
sink_write(void *arg, const uint8_t *data, size_t len)
{
	sink *s = arg;

	if (s->fail_after == 0)
		return HW_ERR_IO;
	if (s->fail_after > 0)
		s->fail_after--;
	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2;
		s->p = realloc(s->p, s->cap);
		CU_ASSERT_FATAL(s->p != NULL);
	}
	memcpy(s->p + s->len, data, len);
	s->len += len;
	return HW_OK;
}

static void
test_stream(void)
{
	size_t size = 300000;
	uint8_t *pt = rnd(size), *msg = NULL;
	size_t msglen = 0, off, footer;
	sink enc = { NULL, 0, 0, -1 }, dec = { NULL, 0, 0, -1 };
	hw_enc_stream *es;
	hw_dec_stream *ds;
	hw_ectx *got = NULL;
	hw_envelope_info *info;

	OK(hw_enc_stream_new(NULL, &k2, 1, NULL, sink_write, &enc, &es));
	for (off = 0; off < size;) {
		size_t n = 1 + (size_t)(off * 7919 % 20000);
		if (n > size - off)
			n = size - off;
		OK(hw_enc_stream_update(es, pt + off, n));
		off += n;
	}
	OK(hw_enc_stream_final(es));
	CU_ASSERT_NOT_EQUAL(hw_enc_stream_update(es, pt, 1), HW_OK);
	hw_enc_stream_free(es);
	msg = enc.p;
	msglen = enc.len;

	/* Signed: everything but the final frame is out before the footer. */
	OK(hw_envelope_inspect(msg, msglen, &info));
	CU_ASSERT(info->signed_);
	footer = msglen - info->header_len - (size / 4096 * (4096 + 32) + 40 + size % 4096);
	hw_envelope_info_free(info);
	OK(hw_dec_stream_new(ctx, NULL, NULL, 0, NULL, sink_write, &dec, &ds));
	for (off = 0; off < msglen - footer;) {
		size_t n = 1 + (size_t)(off * 104729 % 9000);
		if (n > msglen - footer - off)
			n = msglen - footer - off;
		OK(hw_dec_stream_update(ds, msg + off, n));
		off += n;
	}
	CU_ASSERT_EQUAL(dec.len, size / 4096 * 4096);
	CU_ASSERT_NOT_EQUAL(hw_dec_stream_final(ds, NULL), HW_OK);
	hw_dec_stream_free(ds);

	dec.len = 0;
	OK(hw_dec_stream_new(ctx, NULL, NULL, 0, NULL, sink_write, &dec, &ds));
	for (off = 0; off < msglen; off++)
		if (off < 2000 || off >= msglen - 2000) {
			OK(hw_dec_stream_update(ds, msg + off, 1));
		} else {
			/* The middle in one piece, the ends byte by byte. */
			OK(hw_dec_stream_update(ds, msg + off, msglen - 2000 - off));
			off = msglen - 2000 - 1;
		}
	OK(hw_dec_stream_final(ds, &got));
	CU_ASSERT(dec.len == size && memcmp(dec.p, pt, size) == 0);
	CU_ASSERT_EQUAL(hw_ectx_count(got), 1);
	hw_ectx_free(got);
	/* Bytes after the end. */
	CU_ASSERT_EQUAL(hw_dec_stream_update(ds, msg, 1), HW_ERR_FORMAT);
	hw_dec_stream_free(ds);

	/* A failing writer stops the stream with its error. */
	dec.len = 0;
	dec.fail_after = 3;
	OK(hw_dec_stream_new(ctx, NULL, NULL, 0, NULL, sink_write, &dec, &ds));
	CU_ASSERT_EQUAL(hw_dec_stream_update(ds, msg, msglen), HW_ERR_IO);
	CU_ASSERT_NOT_EQUAL(hw_dec_stream_final(ds, NULL), HW_OK);
	hw_dec_stream_free(ds);

	free(enc.p);
	free(dec.p);
	free(pt);
}

/* An unsigned message: the final frame is released at once. */
static void
test_stream_unsigned(void)
{
	hw_envelope_cfg *c = cfg_of(0x0478, 100);
	uint8_t *pt = rnd(250), *msg;
	size_t msglen;
	sink dec = { NULL, 0, 0, -1 };
	hw_dec_stream *ds;

	encrypt_msg(c, &k1, 1, NULL, pt, 250, &msg, &msglen);
	OK(hw_dec_stream_new(ctx, c, &k1, 1, NULL, sink_write, &dec, &ds));
	OK(hw_dec_stream_update(ds, msg, msglen - 1));
	CU_ASSERT_EQUAL(dec.len, 200);
	OK(hw_dec_stream_update(ds, msg + msglen - 1, 1));
	CU_ASSERT_EQUAL(dec.len, 250);
	OK(hw_dec_stream_final(ds, NULL));
	CU_ASSERT(memcmp(dec.p, pt, 250) == 0);
	hw_dec_stream_free(ds);
	free(dec.p);
	hw_free(msg);
	free(pt);
	hw_envelope_cfg_free(c);
}

static void
test_reject_signed_and_buffer(void)
{
	hw_envelope_cfg *c = cfg_of(0x0578, 1 << 20);
	uint8_t *pt = rnd(2 << 20), *msg;
	size_t msglen;

	encrypt_msg(c, &k1, 1, NULL, pt, 2 << 20, &msg, &msglen);
	OK(hw_envelope_cfg_set_reject_signed(c, 1));
	CU_ASSERT_EQUAL(decrypt_fails(c, NULL, 0, NULL, msg, msglen), HW_ERR_FORMAT);
	OK(hw_envelope_cfg_set_reject_signed(c, 0));
	OK(hw_envelope_cfg_set_max_buffer(c, 512 * 1024));
	CU_ASSERT_EQUAL(decrypt_fails(c, NULL, 0, NULL, msg, msglen), HW_ERR_TOO_LARGE);
	hw_free(msg);
	free(pt);
	hw_envelope_cfg_free(c);
}

int
main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("esdk", suite_init, suite_clean);
	CU_add_test(s, "round trips: suites x frame lengths x sizes", test_roundtrips);
	CU_add_test(s, "defaults: suite 0x0578, frame 4096", test_default_cfg);
	CU_add_test(s, "several keys, wrong key, namespace, EDK limit", test_multikey);
	CU_add_test(s, "encryption context", test_context);
	CU_add_test(s, "key purpose", test_key_purpose);
	CU_add_test(s, "truncation and bit flips, 0x0478", test_tamper_0478);
	CU_add_test(s, "truncation and bit flips, 0x0578", test_tamper_0578);
	CU_add_test(s, "Base64 input", test_base64_hint);
	CU_add_test(s, "streaming, signed", test_stream);
	CU_add_test(s, "streaming, unsigned", test_stream_unsigned);
	CU_add_test(s, "reject signed, buffer limit", test_reject_signed_and_buffer);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
