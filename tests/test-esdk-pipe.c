/*
 * test-esdk-pipe: the multi-threaded frame pipeline (src/lib/format/
 * esdk-pipe.c) against the serial code, through the internal format engine
 * with a static data key, a fixed signing key and a fixed message id
 * (HW_ESDK_TEST_HOOKS), so that the same plaintext must give the same
 * bytes whatever the thread count and however the input is cut:
 *
 *  - encryption with 1 thread is the reference; 2, 3 and 8 threads, and
 *    inputs in one piece, in 1 MiB pieces and in odd pieces, give the same
 *    message (0x0578: the same up to the footer, whose ECDSA signature is
 *    randomised; every message's signature verifies on decryption);
 *  - every message decrypts with 1 and with 4 threads to the plaintext;
 *  - a changed byte in frame 100: decryption fails with HW_ERR_INTEGRITY
 *    naming frame 100, and released plaintext is whole frames before it;
 *  - a writer failing in the middle stops encryption and decryption with
 *    its error, and the stream refuses further input.
 *
 * Also built with ThreadSanitizer (make tsan-esdk). No token needed.
 * Exit 0 pass, 1 fail.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "internal.h"
#include "format/esdk.h"

static unsigned checks, failures;

#define CHECK(cond, ...)                                                            \
	do {                                                                        \
		checks++;                                                           \
		if (!(cond)) {                                                      \
			failures++;                                                 \
			printf("FAIL %s:%d: ", __FILE__, __LINE__);                 \
			printf(__VA_ARGS__);                                        \
			printf(" (%s)\n", hw_last_detail());                        \
		}                                                                   \
	} while (0)

static const uint8_t DK[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t MSGID[32] = "message id message id message id";

typedef struct {
	hw_wbuf w;
	int fail_after;             /* calls until an injected error; -1 never */
} sink;

static hw_err
to_sink(void *arg, const uint8_t *p, size_t n)
{
	sink *s = arg;

	if (s->fail_after == 0)
		return hw_fail(HW_ERR_IO, 0, "injected write failure");
	if (s->fail_after > 0)
		s->fail_after--;
	hw_wbuf_put(&s->w, p, n);
	return s->w.err;
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

static hw_err
plain_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen,
             uint8_t *dk, size_t dklen)
{
	(void)arg, (void)h, (void)aad, (void)aadlen;
	memcpy(dk, DK, dklen);
	return HW_OK;
}

static EVP_PKEY *sign_key;

/* Cuts: 0 = one piece, 1 = 1 MiB pieces, 2 = odd pieces. */
static size_t
piece(int cut, size_t off, size_t left)
{
	size_t n = cut == 0 ? left : cut == 1 ? (size_t)1 << 20 : 1 + off * 7919 % 300007;

	return n < left ? n : left;
}

static hw_err
encrypt(uint16_t suite, uint32_t fl, unsigned threads, int cut, const uint8_t *pt,
        size_t len, sink *out)
{
	esdk_enc_params p;
	esdk_ec ec = { NULL, 0 };
	esdk_enc *e = NULL;
	hw_err r;

	memset(&p, 0, sizeof(p));
	p.suite = suite;
	p.frame_len = fl;
	p.wrap = plain_wrap;
	p.dk = DK;
	p.sign_key = sign_key;
	p.threads = threads;
	p.out = to_sink;
	p.out_arg = out;
	esdk_enc_test_set_msgid(MSGID);
	r = esdk_enc_new(&p, &ec, &e);
	for (size_t off = 0; r == HW_OK && off < len;) {
		size_t n = piece(cut, off, len - off);

		r = esdk_enc_update(e, pt + off, n);
		off += n;
	}
	if (r == HW_OK)
		r = esdk_enc_final(e);
	if (r != HW_OK && esdk_enc_update(e, pt, len ? 1 : 0) == HW_OK && len)
		r = HW_ERR_CRYPTO;      /* a failed stream must stay failed */
	esdk_enc_free(e);
	return r;
}

static hw_err
decrypt(unsigned threads, int cut, const uint8_t *msg, size_t len, sink *out)
{
	esdk_dec_params p;
	esdk_dec *d = NULL;
	hw_err r;

	memset(&p, 0, sizeof(p));
	p.max_buffer = 64 << 20;
	p.unwrap = plain_unwrap;
	p.threads = threads;
	p.out = to_sink;
	p.out_arg = out;
	r = esdk_dec_new(&p, &d);
	for (size_t off = 0; r == HW_OK && off < len;) {
		size_t n = piece(cut, off, len - off);

		r = esdk_dec_update(d, msg + off, n);
		off += n;
	}
	if (r == HW_OK)
		r = esdk_dec_final(d);
	esdk_dec_free(d);
	return r;
}

static void
sink_init(sink *s, int fail_after)
{
	hw_wbuf_init(&s->w, SIZE_MAX);
	s->fail_after = fail_after;
}

/* Header and body: all but the footer (whose ECDSA signature is random). */
static size_t
body_end(const uint8_t *m, size_t mlen, uint32_t fl, size_t ptlen)
{
	esdk_header h;
	size_t n, full = ptlen / fl, rem = ptlen % fl;

	if (esdk_header_parse(m, mlen, 0, &h, NULL) != HW_OK)
		return 0;
	n = h.len;
	esdk_header_free(&h);
	/* The last frame is the final frame, full when the length divides. */
	if (rem == 0 && full > 0) {
		full--;
		rem = fl;
	}
	return n + full * ((size_t)fl + 32) + rem + 40;
}

static void
same_bytes(void)
{
	static const uint16_t suites[] = { 0x0478, 0x0578 };
	static const uint32_t fls[] = { 4096, 1000, 65536 };
	static const size_t sizes[] = { 0, 100, 4096 * 64, 4096 * 64 + 1, 3 * 1000 * 1000 + 7 };
	static const unsigned threads[] = { 2, 3, 8 };
	size_t maxlen = 3 * 1000 * 1000 + 7;
	uint8_t *pt = malloc(maxlen);

	if (!pt || RAND_bytes(pt, (int)maxlen) != 1)
		exit(99);
	for (size_t a = 0; a < 2; a++)
		for (size_t b = 0; b < 3; b++)
			for (size_t c = 0; c < sizeof(sizes) / sizeof(sizes[0]); c++) {
				uint16_t suite = suites[a];
				uint32_t fl = fls[b];
				size_t len = sizes[c], reflen, refend;
				sink ref;

				sink_init(&ref, -1);
				CHECK(encrypt(suite, fl, 1, 0, pt, len, &ref) == HW_OK,
				      "0x%04x fl %u len %zu: serial encrypt", suite, fl, len);
				reflen = ref.w.len;
				refend = body_end(ref.w.p, reflen, fl, len);
				CHECK(refend && refend <= reflen && (suite == 0x0578 || refend == reflen),
				      "0x%04x fl %u len %zu: message layout", suite, fl, len);
				for (size_t t = 0; t < 3; t++)
					for (int cut = 0; cut < 3; cut++) {
						sink o;
						size_t end;

						sink_init(&o, -1);
						CHECK(encrypt(suite, fl, threads[t], cut, pt, len, &o) ==
						      HW_OK, "0x%04x fl %u len %zu threads %u cut %d: "
						      "encrypt", suite, fl, len, threads[t], cut);
						end = body_end(o.w.p, o.w.len, fl, len);
						CHECK(end == refend && memcmp(o.w.p, ref.w.p, end) == 0,
						      "0x%04x fl %u len %zu threads %u cut %d: other "
						      "bytes than with 1 thread", suite, fl, len,
						      threads[t], cut);
						hw_wbuf_free(&o.w);
					}
				for (unsigned th = 1; th <= 4; th += 3)
					for (int cut = 0; cut < 3; cut += 2) {
						sink o;

						sink_init(&o, -1);
						CHECK(decrypt(th, cut, ref.w.p, reflen, &o) == HW_OK &&
						      o.w.len == len && (len == 0 || memcmp(o.w.p, pt, len) == 0),
						      "0x%04x fl %u len %zu: decrypt, %u threads, cut "
						      "%d", suite, fl, len, th, cut);
						hw_wbuf_free(&o.w);
					}
				hw_wbuf_free(&ref.w);
			}
	free(pt);
}

/* Frame 100 altered: whole frames before it may come out, nothing else. */
static void
tampered(void)
{
	size_t len = 2 << 20, hdr;
	uint8_t *pt = malloc(len);
	sink m, o;
	hw_err r;

	if (!pt || RAND_bytes(pt, (int)len) != 1)
		exit(99);
	for (uint16_t suite = 0x0478; suite <= 0x0578; suite += 0x100) {
		sink_init(&m, -1);
		if (encrypt(suite, 4096, 1, 0, pt, len, &m) != HW_OK)
			exit(99);
		hdr = body_end(m.w.p, m.w.len, 4096, len) - (len / 4096 - 1) * (4096 + 32) -
		      (4096 + 40);
		m.w.p[hdr + 99 * (4096 + 32) + 100] ^= 1;
		for (unsigned th = 1; th <= 4; th += 3) {
			sink_init(&o, -1);
			r = decrypt(th, 0, m.w.p, m.w.len, &o);
			CHECK(r == HW_ERR_INTEGRITY && strstr(hw_last_detail(), "frame 100 "),
			      "0x%04x, %u threads: frame 100 altered gives %s", suite, th,
			      hw_errname(r));
			CHECK(o.w.len % 4096 == 0 && o.w.len < 99 * 4096 + 1 &&
			      (o.w.len == 0 || memcmp(o.w.p, pt, o.w.len) == 0),
			      "0x%04x, %u threads: %zu bytes released before frame 100", suite, th,
			      o.w.len);
			hw_wbuf_free(&o.w);
		}
		hw_wbuf_free(&m.w);
	}
	free(pt);
}

static void
failing_writer(void)
{
	size_t len = 5 << 20;
	uint8_t *pt = malloc(len);
	sink m, o;
	hw_err r;

	if (!pt || RAND_bytes(pt, (int)len) != 1)
		exit(99);
	sink_init(&m, -1);
	if (encrypt(0x0478, 4096, 1, 0, pt, len, &m) != HW_OK)
		exit(99);
	for (unsigned th = 1; th <= 4; th += 3) {
		sink_init(&o, 5);
		r = encrypt(0x0578, 4096, th, 1, pt, len, &o);
		CHECK(r == HW_ERR_IO, "encrypt, %u threads, writer fails: %s", th, hw_errname(r));
		hw_wbuf_free(&o.w);
		sink_init(&o, 5);
		r = decrypt(th, 1, m.w.p, m.w.len, &o);
		CHECK(r == HW_ERR_IO && o.w.len < len, "decrypt, %u threads, writer fails: %s",
		      th, hw_errname(r));
		hw_wbuf_free(&o.w);
	}
	hw_wbuf_free(&m.w);
	free(pt);
}

int
main(void)
{
	sign_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	if (!sign_key)
		return 99;
	same_bytes();
	tampered();
	failing_writer();
	EVP_PKEY_free(sign_key);
	printf("test-esdk-pipe: %u checks, %u failed\n", checks, failures);
	return failures ? 1 : 0;
}
