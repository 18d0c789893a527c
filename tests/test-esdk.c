/*
 * Envelope encryption in the AWS Encryption SDK format through the HSM
 * keyring (public API only). Runs under tests/with-token.sh.
 */
#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/Basic.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

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
	if (getenv("ESDK_VERBOSE"))
		fprintf(stderr, "decrypt failed as expected: %s (%s)\n", hw_errname(e),
		        hw_last_detail());
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

	/* A failing writer stops the stream with its error (plaintext comes
	 * a run of frames at a time: the second write is frames 65-72). */
	dec.len = 0;
	dec.fail_after = 1;
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

/* ---------------------------------------------------------------- */
/* Raw RSA recipients and RSA keys in the HSM (issue 3)              */

static hw_key *krsa, *krsa_sign;

static int
rsa_init(void)
{
	/* SoftHSMv2 lacks OAEP-SHA256: the key needs raw RSA (see HW_KEYGEN_RAW_RSA). */
	if (hw_key_generate_opts(ctx, "esdk-rsa", HW_KEY_RSA2048, HW_PURPOSE_DECRYPT,
	                         HW_KEYGEN_RAW_RSA, &krsa) != HW_OK ||
	    hw_key_generate(ctx, "esdk-rsa-sign", HW_KEY_RSA2048, HW_PURPOSE_SIGN,
	                    &krsa_sign) != HW_OK) {
		fprintf(stderr, "rsa_init: %s\n", hw_last_detail());
		return -1;
	}
	return 0;
}

static int
rsa_clean(void)
{
	hw_key_free(krsa);
	hw_key_free(krsa_sign);
	return 0;
}

static void
spki_of(hw_key *k, uint8_t **der, size_t *len)
{
	OK(hw_key_public_der(k, der, len));
}

/* The EDK of `name` in a message: its ciphertext (a pointer into msg). */
static const uint8_t *
edk_ct(const uint8_t *msg, size_t msglen, const char *pid, const char *name, size_t *ctlen)
{
	size_t pl = strlen(pid), nl = strlen(name);

	for (size_t i = 0; i + 2 + pl + 2 + nl + 2 <= msglen; i++) {
		const uint8_t *p = msg + i;

		if (p[0] == pl >> 8 && p[1] == (pl & 255) && memcmp(p + 2, pid, pl) == 0 &&
		    p[2 + pl] == nl >> 8 && p[3 + pl] == (nl & 255) &&
		    memcmp(p + 4 + pl, name, nl) == 0) {
			p += 4 + pl + nl;
			*ctlen = (size_t)p[0] << 8 | p[1];
			return *ctlen + 2 + (size_t)(p - msg) <= msglen ? p + 2 : NULL;
		}
	}
	return NULL;
}

static void
dec_ok(const hw_envelope_cfg *c, hw_key **allowed, size_t n, const uint8_t *msg, size_t len,
       const char *want)
{
	uint8_t *out = NULL;
	size_t outlen = 0;
	hw_err e = hw_envelope_decrypt(ctx, c, allowed, n, NULL, msg, len, &out, &outlen, NULL);

	if (e != HW_OK)
		fprintf(stderr, "decrypt: %s (%s)\n", hw_errname(e), hw_last_detail());
	CU_ASSERT_EQUAL_FATAL(e, HW_OK);
	CU_ASSERT(outlen == strlen(want) && memcmp(out, want, outlen) == 0);
	hw_free_secret(out, outlen);
}

/*
 * A decrypt key made without HW_KEYGEN_RAW_RSA allows RSA-OAEP only. On a
 * token with OAEP over SHA-1 only (SoftHSMv2), an OAEP-SHA256 data key then
 * cannot be unwrapped: it must fail cleanly rather than fall back to raw
 * RSA; OAEP-SHA1 works. (On tokens with OAEP-SHA256 both succeed.)
 */
static void
test_rsa_oaep_only(void)
{
	hw_key *k = NULL, *only[1];
	hw_envelope_cfg *c256, *c1;
	uint8_t *spki, *msg;
	size_t spkilen, msglen;
	hw_err e;

	OK(hw_key_generate(ctx, "esdk-rsa-oaep-only", HW_KEY_RSA2048, HW_PURPOSE_DECRYPT, &k));
	only[0] = k;
	spki_of(k, &spki, &spkilen);
	OK(hw_envelope_cfg_new(&c1));
	OK(hw_envelope_cfg_set_rsa_padding(c1, HW_RSA_PAD_OAEP_SHA1));
	OK(hw_envelope_cfg_add_rsa_recipient(c1, "hsmwrap", "esdk-rsa-oaep-only", spki, spkilen));
	encrypt_msg(c1, NULL, 0, NULL, (const uint8_t *)"sha1", 4, &msg, &msglen);
	dec_ok(c1, only, 1, msg, msglen, "sha1");
	hw_free(msg);

	OK(hw_envelope_cfg_new(&c256));
	OK(hw_envelope_cfg_add_rsa_recipient(c256, "hsmwrap", "esdk-rsa-oaep-only", spki,
	                                     spkilen));
	encrypt_msg(c256, NULL, 0, NULL, (const uint8_t *)"sha256", 6, &msg, &msglen);
	e = decrypt_fails(c256, only, 1, NULL, msg, msglen);
	if (strstr(hw_ctx_token_uri(ctx), "manufacturer=SoftHSM")) {
		/* No OAEP-SHA256 in SoftHSMv2: success would mean raw RSA was used. */
		CU_ASSERT(e == HW_ERR_UNSUPPORTED || e == HW_ERR_HSM || e == HW_ERR_KEY_PURPOSE);
	} else if (e == HW_OK) {
		dec_ok(c256, only, 1, msg, msglen, "sha256");
	}
	hw_free(msg);
	hw_free(spki);
	hw_envelope_cfg_free(c1);
	hw_envelope_cfg_free(c256);
	OK(hw_key_destroy(k));
	hw_key_free(k);
}

static void
test_rsa_escrow(void)
{
	hw_key *both[1] = { k1 }, *rsa_only[1] = { krsa };
	hw_envelope_cfg *c;
	hw_envelope_info *info;
	uint8_t *spki, *msg;
	size_t spkilen, msglen;

	spki_of(krsa, &spki, &spkilen);
	OK(hw_envelope_cfg_new(&c));
	OK(hw_envelope_cfg_add_rsa_recipient(c, "hsmwrap", "esdk-rsa", spki, spkilen));
	encrypt_msg(c, both, 1, NULL, (const uint8_t *)"escrowed", 8, &msg, &msglen);
	OK(hw_envelope_inspect(msg, msglen, &info));
	CU_ASSERT_EQUAL_FATAL(info->nedks, 2);
	CU_ASSERT_STRING_EQUAL(info->edks[1].provider_id, "hsmwrap");
	/* Raw RSA layout: the name alone, the ciphertext one modulus long. */
	CU_ASSERT(info->edks[1].provider_info_len == 8 &&
	          memcmp(info->edks[1].provider_info, "esdk-rsa", 8) == 0);
	CU_ASSERT_EQUAL(info->edks[1].ciphertext_len, 256);
	CU_ASSERT_PTR_NULL(info->edks[1].key_name);
	hw_envelope_info_free(info);
	/* Either recipient alone decrypts; the RSA key with OAEP-SHA256. */
	dec_ok(NULL, both, 1, msg, msglen, "escrowed");
	dec_ok(c, rsa_only, 1, msg, msglen, "escrowed");
	dec_ok(NULL, rsa_only, 1, msg, msglen, "escrowed");
	/* An RSA key that may only sign is refused, not tried. */
	{
		hw_key *s[1] = { krsa_sign };
		hw_envelope_cfg *c2;

		OK(hw_envelope_cfg_new(&c2));
		CU_ASSERT_EQUAL(decrypt_fails(c2, s, 1, NULL, msg, msglen), HW_ERR_WRONG_KEY);
		hw_envelope_cfg_free(c2);
	}
	hw_free(msg);

	/* Escrow only (no HSM key on the encrypt side). */
	encrypt_msg(c, NULL, 0, NULL, (const uint8_t *)"offline", 7, &msg, &msglen);
	OK(hw_envelope_inspect(msg, msglen, &info));
	CU_ASSERT_EQUAL(info->nedks, 1);
	hw_envelope_info_free(info);
	/* Token search finds the RSA key by its label. */
	dec_ok(NULL, NULL, 0, msg, msglen, "offline");
	hw_free(msg);
	/* Without a recipient, a key is still required. */
	CU_ASSERT_EQUAL(hw_envelope_encrypt(NULL, NULL, 0, NULL, (const uint8_t *)"x", 1, &msg,
	                                    &msglen), HW_ERR_INVALID_ARG);
	hw_envelope_cfg_free(c);
	free(spki);
}

/* The EDK decrypts with software RSA-OAEP-SHA256 (as any SDK would). */
static void
test_rsa_recipient_interop(void)
{
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
	EVP_PKEY_CTX *pc;
	uint8_t *spki = NULL, *msg, dk[512];
	const uint8_t *ct;
	size_t ctlen = 0, msglen, dklen = sizeof(dk);
	int spkilen;
	hw_envelope_cfg *c;
	static const hw_rsa_padding pads[] = { HW_RSA_PAD_OAEP_SHA256, HW_RSA_PAD_OAEP_SHA1,
	                                       HW_RSA_PAD_OAEP_SHA384, HW_RSA_PAD_OAEP_SHA512,
	                                       HW_RSA_PAD_PKCS1 };
	static const char *mds[] = { "SHA256", "SHA1", "SHA384", "SHA512", NULL };

	CU_ASSERT_FATAL(pk != NULL);
	spkilen = i2d_PUBKEY(pk, &spki);
	CU_ASSERT_FATAL(spkilen > 0);
	for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]); i++) {
		OK(hw_envelope_cfg_new(&c));
		OK(hw_envelope_cfg_set_rsa_padding(c, pads[i]));
		OK(hw_envelope_cfg_add_rsa_recipient(c, "escrow-ns", "offline-1", spki,
		                                     (size_t)spkilen));
		encrypt_msg(c, &k1, 1, NULL, (const uint8_t *)"x", 1, &msg, &msglen);
		ct = edk_ct(msg, msglen, "escrow-ns", "offline-1", &ctlen);
		CU_ASSERT_FATAL(ct != NULL && ctlen == 384);
		pc = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
		CU_ASSERT_FATAL(pc && EVP_PKEY_decrypt_init(pc) == 1);
		if (mds[i]) {
			CU_ASSERT(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) == 1);
			CU_ASSERT(EVP_PKEY_CTX_set_rsa_oaep_md_name(pc, mds[i], NULL) == 1);
			CU_ASSERT(EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, mds[i], NULL) == 1);
		} else {
			CU_ASSERT(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1);
		}
		dklen = sizeof(dk);
		CU_ASSERT(EVP_PKEY_decrypt(pc, dk, &dklen, ct, ctlen) == 1);
		/* The data key of suite 0x0578. */
		CU_ASSERT_EQUAL(dklen, 32);
		EVP_PKEY_CTX_free(pc);
		hw_free(msg);
		hw_envelope_cfg_free(c);
	}
	/* Recipient validation. */
	OK(hw_envelope_cfg_new(&c));
	CU_ASSERT_EQUAL(hw_envelope_cfg_add_rsa_recipient(c, "ns", "n", spki, (size_t)spkilen - 1),
	                HW_ERR_FORMAT);
	CU_ASSERT_EQUAL(hw_envelope_cfg_add_rsa_recipient(c, "", "n", spki, (size_t)spkilen),
	                HW_ERR_INVALID_ARG);
	CU_ASSERT_EQUAL(hw_envelope_cfg_add_rsa_recipient(c, "aws-kms", "n", spki,
	                                                  (size_t)spkilen), HW_ERR_INVALID_ARG);
	CU_ASSERT_EQUAL(hw_envelope_cfg_set_rsa_padding(c, (hw_rsa_padding)99), HW_ERR_INVALID_ARG);
	OPENSSL_free(spki);
	EVP_PKEY_free(pk);
	{
		EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
		EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		uint8_t *d1 = NULL, *d2 = NULL;
		int l1 = i2d_PUBKEY(small, &d1), l2 = i2d_PUBKEY(ec, &d2);

		CU_ASSERT_EQUAL(hw_envelope_cfg_add_rsa_recipient(c, "ns", "n", d1, (size_t)l1),
		                HW_ERR_INVALID_ARG);
		CU_ASSERT_EQUAL(hw_envelope_cfg_add_rsa_recipient(c, "ns", "n", d2, (size_t)l2),
		                HW_ERR_INVALID_ARG);
		OPENSSL_free(d1);
		OPENSSL_free(d2);
		EVP_PKEY_free(small);
		EVP_PKEY_free(ec);
	}
	hw_envelope_cfg_free(c);
}

/* Decrypting with another padding than the message's fails, with no output. */
static void
test_rsa_padding(void)
{
	hw_key *rsa_only[1] = { krsa };
	hw_envelope_cfg *enc, *dec;
	uint8_t *spki, *msg;
	size_t spkilen, msglen;

	spki_of(krsa, &spki, &spkilen);
	OK(hw_envelope_cfg_new(&enc));
	OK(hw_envelope_cfg_add_rsa_recipient(enc, "hsmwrap", "esdk-rsa", spki, spkilen));
	encrypt_msg(enc, NULL, 0, NULL, (const uint8_t *)"padded", 6, &msg, &msglen);
	OK(hw_envelope_cfg_new(&dec));
	/* OAEP-SHA1: the token's own OAEP; -SHA512: raw RSA + host check. */
	OK(hw_envelope_cfg_set_rsa_padding(dec, HW_RSA_PAD_OAEP_SHA1));
	CU_ASSERT_EQUAL(decrypt_fails(dec, rsa_only, 1, NULL, msg, msglen), HW_ERR_INTEGRITY);
	OK(hw_envelope_cfg_set_rsa_padding(dec, HW_RSA_PAD_OAEP_SHA512));
	CU_ASSERT_EQUAL(decrypt_fails(dec, rsa_only, 1, NULL, msg, msglen), HW_ERR_INTEGRITY);
	/* PKCS#1 v1.5 is not among the key's allowed mechanisms. */
	OK(hw_envelope_cfg_set_rsa_padding(dec, HW_RSA_PAD_PKCS1));
	CU_ASSERT_NOT_EQUAL(decrypt_fails(dec, rsa_only, 1, NULL, msg, msglen), HW_OK);
	OK(hw_envelope_cfg_set_rsa_padding(dec, HW_RSA_PAD_OAEP_SHA256));
	dec_ok(dec, rsa_only, 1, msg, msglen, "padded");
	hw_free(msg);
	/* A message made with OAEP-SHA1 decrypts through the token's OAEP. */
	OK(hw_envelope_cfg_set_rsa_padding(enc, HW_RSA_PAD_OAEP_SHA1));
	OK(hw_envelope_cfg_set_rsa_padding(dec, HW_RSA_PAD_OAEP_SHA1));
	encrypt_msg(enc, NULL, 0, NULL, (const uint8_t *)"sha-1", 5, &msg, &msglen);
	dec_ok(dec, rsa_only, 1, msg, msglen, "sha-1");
	/* A flipped bit in the RSA ciphertext. */
	{
		size_t ctlen;
		uint8_t *ct = (uint8_t *)edk_ct(msg, msglen, "hsmwrap", "esdk-rsa", &ctlen);

		CU_ASSERT_FATAL(ct != NULL);
		ct[ctlen / 2] ^= 1;
		CU_ASSERT_EQUAL(decrypt_fails(dec, rsa_only, 1, NULL, msg, msglen),
		                HW_ERR_INTEGRITY);
	}
	hw_free(msg);
	hw_envelope_cfg_free(enc);
	hw_envelope_cfg_free(dec);
	free(spki);
}

/* ---------------------------------------------------------------- */
/* Data-key cache, counting the HSM calls through tests/faultmod     */

static hw_ctx *fctx;
static hw_key *fk1, *fk2;
static char stats_path[4096];

static int
cache_init(void)
{
	if (!getenv("FAULTMOD") || !*stats_path)
		return -1;
	if (hw_ctx_new(&fctx) || hw_ctx_set_module(fctx, getenv("FAULTMOD")) ||
	    hw_ctx_set_token(fctx, getenv("HSMWRAP_TOKEN")) ||
	    hw_ctx_set_pin_source(fctx, getenv("HSMWRAP_PIN_SOURCE")) || hw_ctx_open(fctx) ||
	    hw_key_find(fctx, "esdk-k1", &fk1) || hw_key_find(fctx, "esdk-k2", &fk2)) {
		fprintf(stderr, "cache_init: %s\n", hw_last_detail());
		return -1;
	}
	return 0;
}

static int
cache_clean(void)
{
	hw_key_free(fk1);
	hw_key_free(fk2);
	hw_ctx_free(fctx);
	return 0;
}

static unsigned long
calls(const char *fn)
{
	char line[256], key[128];
	unsigned long v = 0, n;
	FILE *f = fopen(stats_path, "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "calls %127s %lu", key, &n) == 2 && strcmp(key, fn) == 0)
			v = n;
	fclose(f);
	return v;
}

static hw_envelope_cfg *
cache_cfg(hw_cache *cache, unsigned suite)
{
	hw_envelope_cfg *c = cfg_of(suite, 4096);

	OK(hw_envelope_cfg_set_cache(c, cache));
	return c;
}

/* Encrypts len bytes with fk1 and the cache; returns the C_Encrypt calls it made. */
static unsigned long
enc_calls(hw_envelope_cfg *c, const hw_ectx *ec, size_t len, uint8_t **msg, size_t *msglen)
{
	unsigned long before = calls("C_Encrypt");
	uint8_t *pt = rnd(len), *m = NULL;
	size_t ml = 0;

	encrypt_msg(c, &fk1, 1, ec, pt, len, &m, &ml);
	free(pt);
	if (msg) {
		*msg = m;
		*msglen = ml;
	} else {
		hw_free(m);
	}
	return calls("C_Encrypt") - before;
}

static void
test_cache_args(void)
{
	hw_cache *c = NULL;

	CU_ASSERT_EQUAL(hw_cache_new(0, 1000, 0, 0, &c), HW_ERR_INVALID_ARG);
	CU_ASSERT_EQUAL(hw_cache_new(1, 0, 0, 0, &c), HW_ERR_INVALID_ARG);
	CU_ASSERT_EQUAL(hw_cache_new(1, 1000, (UINT64_C(1) << 32) + 1, 0, &c),
	                HW_ERR_INVALID_ARG);
	CU_ASSERT_EQUAL(hw_cache_new(1, 1000, 0, UINT64_MAX, &c), HW_ERR_INVALID_ARG);
	CU_ASSERT_PTR_NULL(c);
	OK(hw_cache_new(1, 1000, 0, 0, &c));
	hw_cache_free(c);
	hw_cache_free(NULL);
	CU_ASSERT_EQUAL(hw_envelope_cfg_set_cache(NULL, NULL), HW_ERR_INVALID_ARG);
}

static void
test_cache_decrypt(void)
{
	hw_key *allowed[1] = { fk1 };
	hw_envelope_cfg *c, *plain;
	hw_cache *cache;
	hw_ectx *ec = ectx2("tenant", "a", NULL, NULL), *other = ectx2("extra", "pair", NULL,
	                                                                   NULL);
	uint8_t *msg, *msg2, *out;
	size_t msglen, msg2len, outlen;
	unsigned long before;

	OK(hw_cache_new(8, 60000, 0, 0, &cache));
	c = cache_cfg(cache, 0x0578);
	plain = cfg_of(0x0578, 4096);
	encrypt_msg(plain, &k1, 1, ec, (const uint8_t *)"cached", 6, &msg, &msglen);
	encrypt_msg(plain, &k1, 1, ec, (const uint8_t *)"other", 5, &msg2, &msg2len);
	/* Without the cache: one HSM unwrap per message. */
	before = calls("C_Decrypt");
	for (int i = 0; i < 3; i++) {
		OK(hw_envelope_decrypt(fctx, plain, allowed, 1, NULL, msg, msglen, &out, &outlen,
		                       NULL));
		hw_free_secret(out, outlen);
	}
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 3);
	/* With it: one for five decryptions, by allowed keys and by token search alike... */
	before = calls("C_Decrypt");
	for (int i = 0; i < 5; i++) {
		OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, msg, msglen, &out, &outlen, NULL));
		CU_ASSERT(outlen == 6 && memcmp(out, "cached", 6) == 0);
		hw_free_secret(out, outlen);
	}
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 1);
	/* ... streaming too (the same key set, so the same partition). */
	before = calls("C_Decrypt");
	{
		hw_dec_stream *s;
		sink sk = { NULL, 0, 0, -1 };

		OK(hw_dec_stream_new(fctx, c, allowed, 1, NULL, sink_write, &sk, &s));
		for (size_t o = 0; o < msglen; o += 7)
			OK(hw_dec_stream_update(s, msg + o, msglen - o < 7 ? msglen - o : 7));
		OK(hw_dec_stream_final(s, NULL));
		hw_dec_stream_free(s);
		CU_ASSERT(sk.len == 6 && memcmp(sk.p, "cached", 6) == 0);
		free(sk.p);
	}
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 0);
	/* Another message (other EDKs): its own HSM call. */
	before = calls("C_Decrypt");
	OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, msg2, msg2len, &out, &outlen, NULL));
	hw_free_secret(out, outlen);
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 1);
	/* The same EDKs under another context (a reproduced pair) are not served
	 * from the cache: the HSM is asked, and its AES-GCM check refuses. */
	before = calls("C_Decrypt");
	CU_ASSERT_EQUAL(decrypt_fails(c, allowed, 1, other, msg, msglen), HW_ERR_INTEGRITY);
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 1);
	/* Another key set is another partition. */
	{
		hw_key *both[2] = { fk1, k2 };

		before = calls("C_Decrypt");
		OK(hw_envelope_decrypt(fctx, c, both, 2, NULL, msg, msglen, &out, &outlen, NULL));
		hw_free_secret(out, outlen);
		CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 1);
	}
	hw_free(msg);
	hw_free(msg2);
	hw_envelope_cfg_free(c);
	hw_envelope_cfg_free(plain);
	hw_cache_free(cache);
	hw_ectx_free(ec);
	hw_ectx_free(other);
}

static void
test_cache_decrypt_limits(void)
{
	hw_key *allowed[1] = { fk1 };
	hw_envelope_cfg *c, *plain = cfg_of(0x0478, 4096);
	hw_cache *cache;
	uint8_t *m[3], *out;
	size_t ml[3], outlen;
	unsigned long before;

	for (int i = 0; i < 3; i++)
		encrypt_msg(plain, &k1, 1, NULL, (const uint8_t *)"m", 1, &m[i], &ml[i]);
	/* Two messages per data key. */
	OK(hw_cache_new(8, 60000, 2, 0, &cache));
	c = cache_cfg(cache, 0x0478);
	before = calls("C_Decrypt");
	for (int i = 0; i < 5; i++) {
		OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[0], ml[0], &out, &outlen, NULL));
		hw_free_secret(out, outlen);
	}
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 3);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	/* One entry: the least recently used goes. */
	OK(hw_cache_new(2, 60000, 0, 0, &cache));
	c = cache_cfg(cache, 0x0478);
	before = calls("C_Decrypt");
	for (int i = 0; i < 3; i++) {
		OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[i], ml[i], &out, &outlen, NULL));
		hw_free_secret(out, outlen);
	}
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 3);
	before = calls("C_Decrypt");
	OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[2], ml[2], &out, &outlen, NULL));
	hw_free_secret(out, outlen);
	OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[1], ml[1], &out, &outlen, NULL));
	hw_free_secret(out, outlen);
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 0);
	OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[0], ml[0], &out, &outlen, NULL));
	hw_free_secret(out, outlen);
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 1);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	/* Age. */
	OK(hw_cache_new(8, 60, 0, 0, &cache));
	c = cache_cfg(cache, 0x0478);
	before = calls("C_Decrypt");
	for (int i = 0; i < 2; i++) {
		OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[0], ml[0], &out, &outlen, NULL));
		hw_free_secret(out, outlen);
	}
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 1);
	nanosleep(&(struct timespec){ 0, 120 * 1000000L }, NULL);
	OK(hw_envelope_decrypt(fctx, c, allowed, 1, NULL, m[0], ml[0], &out, &outlen, NULL));
	hw_free_secret(out, outlen);
	CU_ASSERT_EQUAL(calls("C_Decrypt") - before, 2);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	hw_envelope_cfg_free(plain);
	for (int i = 0; i < 3; i++)
		hw_free(m[i]);
}

/* Same EDKs (same data key) in two messages of a cache entry. */
static bool
same_edks(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	hw_envelope_info *x, *y;
	bool same;

	OK(hw_envelope_inspect(a, al, &x));
	OK(hw_envelope_inspect(b, bl, &y));
	same = x->nedks == y->nedks && x->edks[0].provider_info_len == y->edks[0].provider_info_len &&
	       memcmp(x->edks[0].provider_info, y->edks[0].provider_info,
	              x->edks[0].provider_info_len) == 0;
	/* Never the same message id. */
	CU_ASSERT(memcmp(x->message_id, y->message_id, 32) != 0);
	hw_envelope_info_free(x);
	hw_envelope_info_free(y);
	return same;
}

static void
test_cache_encrypt(void)
{
	hw_cache *cache;
	hw_envelope_cfg *c;
	hw_ectx *a = ectx2("tenant", "a", NULL, NULL), *b = ectx2("tenant", "b", NULL, NULL);
	uint8_t *m1, *m2, *m3, *out;
	size_t l1, l2, l3, outlen;
	unsigned long n;

	for (int s = 0; s < 2; s++) {
		unsigned suite = s ? 0x0578 : 0x0478;

		OK(hw_cache_new(8, 60000, 0, 0, &cache));
		c = cache_cfg(cache, suite);
		n = enc_calls(c, a, 100, &m1, &l1);
		n += enc_calls(c, a, 100, &m2, &l2);
		n += enc_calls(c, a, 100, NULL, NULL);
		CU_ASSERT_EQUAL(n, 1);
		CU_ASSERT(same_edks(m1, l1, m2, l2));
		/* Signed: the signing key is reused with its data key. */
		if (suite == 0x0578) {
			hw_envelope_info *x, *y;

			OK(hw_envelope_inspect(m1, l1, &x));
			OK(hw_envelope_inspect(m2, l2, &y));
			CU_ASSERT_STRING_EQUAL(x->pairs[0].key, "aws-crypto-public-key");
			CU_ASSERT_STRING_EQUAL(x->pairs[0].value, y->pairs[0].value);
			hw_envelope_info_free(x);
			hw_envelope_info_free(y);
		}
		/* Both decrypt, without a cache, with the right context only. */
		OK(hw_envelope_decrypt(ctx, NULL, NULL, 0, a, m2, l2, &out, &outlen, NULL));
		CU_ASSERT_EQUAL(outlen, 100);
		hw_free_secret(out, outlen);
		CU_ASSERT_EQUAL(decrypt_fails(NULL, NULL, 0, b, m2, l2), HW_ERR_INTEGRITY);
		/* Another context never gets that data key. */
		n = enc_calls(c, b, 100, &m3, &l3);
		CU_ASSERT_EQUAL(n, 1);
		CU_ASSERT(!same_edks(m1, l1, m3, l3));
		OK(hw_envelope_decrypt(ctx, NULL, NULL, 0, b, m3, l3, &out, &outlen, NULL));
		hw_free_secret(out, outlen);
		/* Nor another suite, nor another key set. */
		{
			hw_envelope_cfg *c2 = cache_cfg(cache, suite ^ 0x0100);
			hw_key *two[2] = { fk1, fk2 };
			uint8_t *m4;
			size_t l4;

			CU_ASSERT_EQUAL(enc_calls(c2, a, 100, NULL, NULL), 1);
			hw_envelope_cfg_free(c2);
			n = calls("C_Encrypt");
			encrypt_msg(c, two, 2, a, (const uint8_t *)"x", 1, &m4, &l4);
			CU_ASSERT_EQUAL(calls("C_Encrypt") - n, 2);
			hw_free(m4);
		}
		/* Streaming (length unknown) bypasses the cache. */
		n = calls("C_Encrypt");
		for (int i = 0; i < 2; i++) {
			hw_enc_stream *st;
			sink sk = { NULL, 0, 0, -1 };

			OK(hw_enc_stream_new(c, &fk1, 1, a, sink_write, &sk, &st));
			OK(hw_enc_stream_update(st, (const uint8_t *)"abc", 3));
			OK(hw_enc_stream_final(st));
			hw_enc_stream_free(st);
			free(sk.p);
		}
		CU_ASSERT_EQUAL(calls("C_Encrypt") - n, 2);
		hw_free(m1);
		hw_free(m2);
		hw_free(m3);
		hw_envelope_cfg_free(c);
		hw_cache_free(cache);
	}
	hw_ectx_free(a);
	hw_ectx_free(b);
}

static void
test_cache_encrypt_limits(void)
{
	hw_cache *cache;
	hw_envelope_cfg *c;
	hw_ectx *ec[3] = { ectx2("k", "1", NULL, NULL), ectx2("k", "2", NULL, NULL),
	                   ectx2("k", "3", NULL, NULL) };
	unsigned long n = 0;

	/* Messages: 3 per data key, so 7 messages take 3. */
	OK(hw_cache_new(8, 60000, 3, 0, &cache));
	c = cache_cfg(cache, 0x0478);
	for (int i = 0; i < 7; i++)
		n += enc_calls(c, ec[0], 10, NULL, NULL);
	CU_ASSERT_EQUAL(n, 3);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	/* Bytes: 100 per data key; 40 + 40 fit, the third starts anew; a
	 * message over the limit on its own is never cached. */
	OK(hw_cache_new(8, 60000, 0, 100, &cache));
	c = cache_cfg(cache, 0x0478);
	n = enc_calls(c, ec[0], 40, NULL, NULL);
	n += enc_calls(c, ec[0], 40, NULL, NULL);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_EQUAL(enc_calls(c, ec[0], 40, NULL, NULL), 1);
	CU_ASSERT_EQUAL(enc_calls(c, ec[0], 60, NULL, NULL), 0);
	CU_ASSERT_EQUAL(enc_calls(c, ec[1], 101, NULL, NULL), 1);
	CU_ASSERT_EQUAL(enc_calls(c, ec[1], 101, NULL, NULL), 1);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	/* Entries: two; the least recently used is evicted. */
	OK(hw_cache_new(2, 60000, 0, 0, &cache));
	c = cache_cfg(cache, 0x0478);
	n = 0;
	for (int i = 0; i < 3; i++)
		n += enc_calls(c, ec[i], 10, NULL, NULL);
	CU_ASSERT_EQUAL(n, 3);
	CU_ASSERT_EQUAL(enc_calls(c, ec[2], 10, NULL, NULL), 0);
	CU_ASSERT_EQUAL(enc_calls(c, ec[1], 10, NULL, NULL), 0);
	CU_ASSERT_EQUAL(enc_calls(c, ec[0], 10, NULL, NULL), 1);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	/* Age. */
	OK(hw_cache_new(8, 60, 0, 0, &cache));
	c = cache_cfg(cache, 0x0478);
	CU_ASSERT_EQUAL(enc_calls(c, ec[0], 10, NULL, NULL), 1);
	CU_ASSERT_EQUAL(enc_calls(c, ec[0], 10, NULL, NULL), 0);
	nanosleep(&(struct timespec){ 0, 120 * 1000000L }, NULL);
	CU_ASSERT_EQUAL(enc_calls(c, ec[0], 10, NULL, NULL), 1);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	for (int i = 0; i < 3; i++)
		hw_ectx_free(ec[i]);
}

/* Escrow recipients are part of the cached materials and of the partition. */
static void
test_cache_rsa(void)
{
	hw_cache *cache;
	hw_envelope_cfg *c;
	hw_key *rsa_only[1] = { krsa };
	uint8_t *spki, *m1, *m2;
	size_t spkilen, l1, l2;

	spki_of(krsa, &spki, &spkilen);
	OK(hw_cache_new(8, 60000, 0, 0, &cache));
	c = cache_cfg(cache, 0x0578);
	CU_ASSERT_EQUAL(enc_calls(c, NULL, 10, NULL, NULL), 1);
	OK(hw_envelope_cfg_add_rsa_recipient(c, "hsmwrap", "esdk-rsa", spki, spkilen));
	CU_ASSERT_EQUAL(enc_calls(c, NULL, 10, &m1, &l1), 1);
	CU_ASSERT_EQUAL(enc_calls(c, NULL, 10, &m2, &l2), 0);
	{
		uint8_t *out;
		size_t outlen;

		OK(hw_envelope_decrypt(ctx, NULL, rsa_only, 1, NULL, m2, l2, &out, &outlen, NULL));
		CU_ASSERT_EQUAL(outlen, 10);
		hw_free_secret(out, outlen);
	}
	hw_free(m1);
	hw_free(m2);
	hw_envelope_cfg_free(c);
	hw_cache_free(cache);
	free(spki);
}

typedef struct {
	hw_cache *cache;
	const uint8_t *msg;
	size_t msglen;
	int failures;
} thr_arg;

static void *
thr_main(void *p)
{
	thr_arg *t = p;
	hw_key *allowed[1] = { k1 };
	hw_envelope_cfg *c;
	hw_ectx *ec;

	if (hw_envelope_cfg_new(&c) || hw_envelope_cfg_set_cache(c, t->cache) ||
	    hw_ectx_new(&ec) || hw_ectx_add(ec, "t", "x")) {
		t->failures++;
		return NULL;
	}
	for (int i = 0; i < 20; i++) {
		uint8_t *o = NULL, *m = NULL;
		size_t ol = 0, ml = 0;

		if (hw_envelope_decrypt(ctx, c, allowed, 1, NULL, t->msg, t->msglen, &o, &ol,
		                        NULL) != HW_OK || ol != 4 || memcmp(o, "thrd", 4) != 0)
			t->failures++;
		else
			hw_free_secret(o, ol);
		if (hw_envelope_encrypt(c, allowed, 1, ec, (const uint8_t *)"z", 1, &m, &ml) !=
		    HW_OK)
			t->failures++;
		else if (hw_envelope_decrypt(ctx, c, allowed, 1, NULL, m, ml, &o, &ol, NULL) !=
		         HW_OK || ol != 1)
			t->failures++;
		else
			hw_free_secret(o, ol);
		hw_free(m);
	}
	hw_ectx_free(ec);
	hw_envelope_cfg_free(c);
	return NULL;
}

static void
test_cache_threads(void)
{
	pthread_t th[4];
	thr_arg a[4];
	hw_cache *cache;
	uint8_t *msg;
	size_t msglen;

	/* Small and short-lived, so that evictions race with lookups. */
	OK(hw_cache_new(2, 5, 3, 0, &cache));
	encrypt_msg(NULL, &k1, 1, NULL, (const uint8_t *)"thrd", 4, &msg, &msglen);
	for (int i = 0; i < 4; i++) {
		a[i] = (thr_arg){ cache, msg, msglen, 0 };
		CU_ASSERT_FATAL(pthread_create(&th[i], NULL, thr_main, &a[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CU_ASSERT_EQUAL(a[i].failures, 0);
	}
	hw_free(msg);
	hw_cache_free(cache);
}

int
main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	/* The later suites use this one's keys: cleaned up after all ran. */
	s = CU_add_suite("esdk", suite_init, NULL);
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
	s = CU_add_suite("esdk-rsa", rsa_init, NULL);
	CU_add_test(s, "RSA escrow recipient, RSA key in the HSM", test_rsa_escrow);
	CU_add_test(s, "RSA decrypt key without raw RSA: OAEP only", test_rsa_oaep_only);
	CU_add_test(s, "RSA recipient EDKs decrypt in software, every padding",
	            test_rsa_recipient_interop);
	CU_add_test(s, "RSA padding mismatch fails cleanly", test_rsa_padding);
	/* The fault module only counts calls here (no faults). */
	if (getenv("FAULTMOD") && getenv("HW_TEST_DIR")) {
		snprintf(stats_path, sizeof(stats_path), "%s/esdk-faultmod.stats",
		         getenv("HW_TEST_DIR"));
		setenv("FAULTMOD_TARGET", getenv("HSMWRAP_MODULE"), 1);
		setenv("FAULTMOD_STATS", stats_path, 1);
		unsetenv("FAULTMOD_SPEC");
		unsetenv("FAULTMOD_CONTROL");
	}
	s = CU_add_suite("esdk-cache", cache_init, NULL);
	CU_add_test(s, "cache arguments", test_cache_args);
	CU_add_test(s, "decrypt cache: one HSM call, partitions, contexts", test_cache_decrypt);
	CU_add_test(s, "decrypt cache limits: messages, entries, age", test_cache_decrypt_limits);
	CU_add_test(s, "encrypt cache: reuse, contexts, suites, streams", test_cache_encrypt);
	CU_add_test(s, "encrypt cache limits: messages, bytes, entries, age",
	            test_cache_encrypt_limits);
	CU_add_test(s, "encrypt cache with an RSA recipient", test_cache_rsa);
	CU_add_test(s, "cache shared by 4 threads", test_cache_threads);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	cache_clean();
	rsa_clean();
	suite_clean();
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
