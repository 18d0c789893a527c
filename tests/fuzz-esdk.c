/*
 * libFuzzer harness for the AWS Encryption SDK message parsers: arbitrary
 * bytes into hw_envelope_inspect() (header only) and into the streaming
 * decryptor (header, frames, non-framed bodies, footer) with a software
 * "plaintext keyring": the data key is the first encrypted data key whose
 * ciphertext has the suite's key length, taken as it is. Seeds made that
 * way (tests/fuzz-corpus/esdk) decrypt, so mutations reach the body and
 * footer code, not only the header checks.
 *
 * Checks besides ASan/UBSan: what inspect accepts is consistent, the
 * decryptor never releases more plaintext than the input holds, a
 * message that decrypts also inspects, and splitting the input into two
 * updates gives the same result as one.
 *
 * Built by tests/esdk.mk: with -fsanitize=fuzzer for `make fuzz`, and as
 * tests/fuzz-replay-esdk (with tests/fuzz-replay.c) for `make check`.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "format/esdk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
violated(const char *what)
{
	fprintf(stderr, "fuzz-esdk: %s\n", what);
	abort();
}

static hw_err
plain_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
             size_t dklen)
{
	(void)arg, (void)aad, (void)aadlen;
	for (size_t i = 0; i < h->nedks; i++)
		if (h->edks[i].ct_len == dklen) {
			memcpy(dk, h->edks[i].ct, dklen);
			return HW_OK;
		}
	return hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "no plaintext data key");
}

typedef struct {
	size_t n;
	uint64_t sum;
} sink;

static hw_err
count_out(void *arg, const uint8_t *p, size_t n)
{
	sink *s = arg;

	s->n += n;
	for (size_t i = 0; i < n; i++)
		s->sum = s->sum * 31 + p[i];
	return HW_OK;
}

static hw_err
decrypt(const uint8_t *data, size_t size, size_t split, sink *out)
{
	esdk_dec_params p;
	esdk_dec *d = NULL;
	hw_err e;

	memset(&p, 0, sizeof(p));
	memset(out, 0, sizeof(*out));
	p.allow_legacy = true;
	p.max_edks = 0;
	p.max_buffer = 1 << 20;
	p.unwrap = plain_unwrap;
	p.out = count_out;
	p.out_arg = out;
	e = esdk_dec_new(&p, &d);
	if (e == HW_OK)
		e = esdk_dec_update(d, data, split);
	if (e == HW_OK)
		e = esdk_dec_update(d, data + split, size - split);
	if (e == HW_OK)
		e = esdk_dec_final(d);
	esdk_dec_free(d);
	return e;
}

static void
check_info(const hw_envelope_info *info, size_t size)
{
	if (info->version != 1 && info->version != 2)
		violated("inspect: bad version");
	if (!info->suite_name || info->header_len > size)
		violated("inspect: header longer than the input");
	if (info->nedks == 0)
		violated("inspect: no data keys");
	if (info->framed != (info->frame_length != 0))
		violated("inspect: framing inconsistent");
	for (size_t i = 0; i < info->npairs; i++)
		if (!info->pairs[i].key || !info->pairs[i].value)
			violated("inspect: missing pair text");
	for (size_t i = 0; i < info->nedks; i++)
		if (!info->edks[i].provider_id || info->edks[i].provider_info_len > size)
			violated("inspect: bad data key entry");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_envelope_info *info = NULL;
	uint8_t *copy = calloc(1, size ? size : 1);
	sink a, b;
	hw_err inspected, ea, eb;

	if (!copy)
		return 0;
	if (size)
		memcpy(copy, data, size);
	inspected = hw_envelope_inspect(copy, size, &info);
	if (inspected == HW_OK)
		check_info(info, size);
	hw_envelope_info_free(info);
	ea = decrypt(copy, size, size, &a);
	eb = decrypt(copy, size, size ? (size_t)data[size - 1] % size : 0, &b);
	if (a.n > size || b.n > size)
		violated("more plaintext than input");
	if (ea != eb || (ea == HW_OK && (a.n != b.n || a.sum != b.sum)))
		violated("one update and two updates disagree");
	if (ea == HW_OK && inspected != HW_OK)
		violated("a message decrypted that does not inspect");
	free(copy);
	return 0;
}

#ifdef FUZZ_ESDK_SEEDS
/*
 * Seed maker (not part of any build): writes messages whose "wrapped" data
 * key is the data key itself, which plain_unwrap() above accepts.
 *   cc -DFUZZ_ESDK_SEEDS ... tests/fuzz-esdk.c <library sources> -o mkseeds
 *   ./mkseeds tests/fuzz-corpus/esdk
 */
static hw_err
plain_wrap(void *arg, const esdk_suite *s, const uint8_t *aad, size_t aadlen,
           const uint8_t *dk, size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	(void)arg, (void)s, (void)aad, (void)aadlen;
	hw_wbuf_str16(edks, "fuzz", 4);
	hw_wbuf_str16(edks, "key\0\0\0\x80\0\0\0\x0c" "0123456789ab", 23);
	hw_wbuf_str16(edks, dk, dklen);
	(*nedks)++;
	return edks->err;
}

static hw_err
to_file(void *arg, const uint8_t *p, size_t n)
{
	return fwrite(p, 1, n, arg) == n ? HW_OK : HW_ERR_IO;
}

int
main(int argc, char **argv)
{
	static const struct {
		uint16_t suite;
		uint32_t frame;
		size_t len;
		int pairs;
	} seeds[] = {
		{ 0x0478, 4, 10, 1 }, { 0x0578, 16, 40, 2 }, { 0x0478, 4096, 0, 0 },
		{ 0x0578, 1, 3, 0 }, { 0x0478, 7, 7, 2 },
	};
	static const uint8_t ks[][8] = { "k", "tenant", "Zeta" };
	static const uint8_t vs[][8] = { "v", "a", "\xc3\xa9" };

	if (argc != 2)
		return 2;
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		char path[512];
		uint8_t pt[64];
		esdk_ec ec = { NULL, 0 };
		esdk_enc_params p;
		esdk_enc *e;
		FILE *f;

		for (int k = 0; k < seeds[i].pairs; k++)
			if (esdk_ec_put(&ec, ks[k], strlen((const char *)ks[k]), vs[k],
			                strlen((const char *)vs[k])) != HW_OK)
				return 1;
		for (size_t k = 0; k < sizeof(pt); k++)
			pt[k] = (uint8_t)('a' + k % 26);
		snprintf(path, sizeof(path), "%s/v2-%04x-f%u-n%zu", argv[1], seeds[i].suite,
		         seeds[i].frame, seeds[i].len);
		f = fopen(path, "wb");
		if (!f)
			return 1;
		memset(&p, 0, sizeof(p));
		p.suite = seeds[i].suite;
		p.frame_len = seeds[i].frame;
		p.wrap = plain_wrap;
		p.out = to_file;
		p.out_arg = f;
		if (esdk_enc_new(&p, &ec, &e) != HW_OK || esdk_enc_update(e, pt, seeds[i].len) ||
		    esdk_enc_final(e))
			return 1;
		esdk_enc_free(e);
		esdk_ec_free(&ec);
		fclose(f);
	}
	return 0;
}
#endif
