/*
 * libFuzzer harness for the strings an operator types at `hsmwrap ca`:
 * --subject (ca_parse_subject), --revoke (ca_parse_serial) and --san
 * (ca_san_ok). They end up in certificates the HSM signs, so a parser
 * slip would put something else in a CA's certificate than was typed.
 *
 * Input: one mode byte (0: subject, 1: serial, 2: SAN, by value mod 3),
 * then the string (cut at the first NUL, as argv would). Checks besides
 * the sanitizers':
 *  - an accepted subject has at least one attribute, and every value is
 *    the text between '=' and the next unescaped '/' with escapes removed
 *    (so a '/' or '\' can never split or merge attributes unseen);
 *  - an accepted serial is positive and equals the hex given (leading
 *    zeros, "0x" and ':' aside);
 *  - an accepted SAN list has only DNS:, IP:, email: and URI: names.
 *
 * Built as tests/fuzz-replay-ca (with tests/fuzz-replay.c) for `make
 * check`, and with -fsanitize=fuzzer by `make fuzz`.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>

#include "ca-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CA_FUZZ_MAX 4096

static void violated(const char *what, const char *in)
{
	fprintf(stderr, "fuzz-ca: %s (input '%s')\n", what, in);
	abort();
}

/* The i-th value of a subject as the parser should have read it. */
static int nth_value(const char *s, int i, char *out, size_t outsz)
{
	int idx = -1;
	size_t k = 0;
	int in_value = 0;

	for (const char *p = s; *p; p++) {
		if (*p == '/') {
			if (idx == i)
				break;
			idx++;
			k = 0;
			in_value = 0;
			continue;
		}
		if (*p == '\\' && p[1])
			p++;
		else if (*p == '=' && !in_value) {
			in_value = 1;
			continue;
		}
		if (idx == i && in_value && k + 1 < outsz)
			out[k++] = *p;
	}
	out[k] = '\0';
	return idx >= i ? 0 : -1;
}

static void check_subject(const char *s)
{
	char why[256], want[CA_FUZZ_MAX + 1];
	X509_NAME *n = ca_parse_subject(s, why, sizeof(why));
	int count;

	if (!n) {
		if (!why[0])
			violated("subject refused without a reason", s);
		return;
	}
	count = X509_NAME_entry_count(n);
	if (count < 1)
		violated("accepted subject has no attribute", s);
	for (int i = 0; i < count; i++) {
		const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i));
		unsigned char *utf8 = NULL;
		int len = ASN1_STRING_to_UTF8(&utf8, v);

		if (len < 0 || nth_value(s, i, want, sizeof(want)) != 0 ||
		    strlen(want) != (size_t)len || memcmp(want, utf8, (size_t)len) != 0)
			violated("a value differs from the text typed", s);
		OPENSSL_free(utf8);
	}
	X509_NAME_free(n);
}

static void check_serial(const char *s)
{
	ASN1_INTEGER *i = ca_parse_serial(s);
	BIGNUM *bn;
	char *hex, want[CA_FUZZ_MAX + 1];
	const char *p = s;
	size_t k = 0;

	if (!i)
		return;
	if (strncmp(p, "0x", 2) == 0 || strncmp(p, "0X", 2) == 0)
		p += 2;
	for (; *p; p++)
		if (*p != ':')
			want[k++] = (char)toupper((unsigned char)*p);
	want[k] = '\0';
	p = want;
	while (*p == '0')
		p++;
	bn = ASN1_INTEGER_to_BN(i, NULL);
	hex = bn ? BN_bn2hex(bn) : NULL;
	if (!hex || BN_is_negative(bn) || BN_is_zero(bn))
		violated("serial not positive", s);
	{
		const char *h = hex;

		while (*h == '0')
			h++;
		if (strcmp(h, p) != 0)
			violated("serial differs from the hex typed", s);
	}
	OPENSSL_free(hex);
	BN_free(bn);
	ASN1_INTEGER_free(i);
}

static void check_san(const char *s)
{
	int host = -1;
	const char *p = s;

	if (ca_san_ok(s, &host) != 0)
		return;
	if (host != 0 && host != 1)
		violated("has_host not set", s);
	while (*p) {
		size_t n = strcspn(p, ",");

		while (*p == ' ' && n) {
			p++;
			n--;
		}
		if (!(strncmp(p, "DNS:", 4) == 0 || strncmp(p, "IP:", 3) == 0 ||
		      strncmp(p, "email:", 6) == 0 || strncmp(p, "URI:", 4) == 0))
			violated("accepted a SAN name of another kind", s);
		p += n;
		if (*p == ',')
			p++;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[CA_FUZZ_MAX + 1];
	size_t n;

	if (size < 1 || size - 1 > CA_FUZZ_MAX)
		return 0;
	n = size - 1;
	memcpy(s, data + 1, n);
	s[n] = '\0';
	switch (data[0] % 3) {
	case 0: check_subject(s); break;
	case 1: check_serial(s); break;
	default: check_san(s); break;
	}
	ERR_clear_error();
	return 0;
}
