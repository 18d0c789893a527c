/*
 * libFuzzer harness for key names as applications, the CLI (--key,
 * positional KEY) and the provider (pkcs11: URIs in openssl commands and
 * key-reference files) hand them to hw_key_find: a label, "id:HEX" or an
 * RFC 7512 URI (hw_key_spec_parse, src/lib/key/key.c), and token URIs as
 * hw_ctx_set_token takes them. Checks besides the sanitizers':
 *  - a label asks for exactly that CKA_LABEL;
 *  - "id:HEX" asks for exactly the bytes the hex spells;
 *  - a URI asks for at least a label or an id, and for no more than two
 *    attributes.
 *
 * Input: one mode byte (even: key name, odd: token URI), then the string
 * (cut at the first NUL, as argv would).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check_key_name(const char *s)
{
	hw_key_spec ks;

	if (hw_key_spec_parse(s, &ks) != HW_OK)
		return;
	if (ks.nattrs < 1 || ks.nattrs > 2)
		abort();
	if (strncmp(s, "id:", 3) == 0) {
		size_t n = strlen(s + 3);

		if (ks.attrs[0].type != CKA_ID || n % 2 || ks.attrs[0].ulValueLen != n / 2)
			abort();
		for (size_t i = 0; i < n / 2; i++)
			if (((const uint8_t *)ks.attrs[0].pValue)[i] !=
			    (hexval(s[3 + 2 * i]) << 4 | hexval(s[4 + 2 * i])))
				abort();
	} else if (strncmp(s, "pkcs11:", 7) != 0) {
		if (!ks.by_label || ks.attrs[0].type != CKA_LABEL ||
		    ks.attrs[0].ulValueLen != strlen(s) || memcmp(ks.attrs[0].pValue, s, strlen(s)))
			abort();
	} else if (!ks.uri || ks.by_label) {
		abort();
	}
	hw_key_spec_free(&ks);
}

static void check_token_uri(const char *s)
{
	P11KitUri *u = p11_kit_uri_new();
	char *back = NULL;

	if (!u)
		return;
	if (p11_kit_uri_parse(s, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK &&
	    p11_kit_uri_format(u, P11_KIT_URI_FOR_ANY, &back) == P11_KIT_URI_OK) {
		/* What we print for a token parses again. */
		P11KitUri *u2 = p11_kit_uri_new();

		if (u2 && p11_kit_uri_parse(back, P11_KIT_URI_FOR_ANY, u2) != P11_KIT_URI_OK)
			abort();
		p11_kit_uri_free(u2);
	}
	free(back);
	p11_kit_uri_free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1)
		return 0;
	s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	if (data[0] % 2 == 0)
		check_key_name(s);
	else
		check_token_uri(s);
	free(s);
	return 0;
}
