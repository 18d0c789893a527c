/*
 * ca-parse.c - parsers for what an operator types on the `hsmwrap ca`
 * command line: subject names, serial numbers, subject alternative names.
 * No HSM and no CLI state: tests/fuzz-ca.c drives them directly.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include "ca-parse.h"

/*
 * "/CN=Example Root CA/O=Example" as openssl -subj takes it: '/' separates
 * attributes, a backslash takes the next character literally. Values are
 * UTF-8. Returns NULL with a reason in why.
 */
X509_NAME *ca_parse_subject(const char *s, char *why, size_t whysz)
{
	X509_NAME *n = X509_NAME_new();
	char *buf = malloc(strlen(s) + 1);
	const char *p = s;

	if (!n || !buf) {
		snprintf(why, whysz, "out of memory");
		goto fail;
	}
	if (*p != '/') {
		snprintf(why, whysz, "it must start with '/', e.g. /CN=Example Root CA");
		goto fail;
	}
	while (*p == '/') {
		size_t k = 0;
		char *eq = NULL;
		int nid;

		for (p++; *p && *p != '/'; p++) {
			/* An escaped '=' belongs to the type or value, never splits them. */
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '=' && !eq)
				eq = buf + k;
			buf[k++] = *p;
		}
		buf[k] = '\0';
		if (k == 0 && !*p)
			break;                      /* a trailing '/' */
		if (!eq || eq == buf || !eq[1]) {
			snprintf(why, whysz, "'%s' is not TYPE=VALUE", buf);
			goto fail;
		}
		*eq = '\0';
		nid = OBJ_txt2nid(buf);
		if (nid == NID_undef) {
			snprintf(why, whysz, "unknown attribute type '%s'", buf);
			goto fail;
		}
		if (!X509_NAME_add_entry_by_NID(n, nid, MBSTRING_UTF8,
		                                (const unsigned char *)(eq + 1), -1, -1, 0)) {
			snprintf(why, whysz, "value '%s' is not valid for %s", eq + 1, buf);
			goto fail;
		}
	}
	if (X509_NAME_entry_count(n) == 0) {
		snprintf(why, whysz, "it names no attribute");
		goto fail;
	}
	free(buf);
	ERR_clear_error();
	return n;
fail:
	free(buf);
	X509_NAME_free(n);
	ERR_clear_error();
	return NULL;
}

/* A serial as `openssl x509 -serial` prints it: hex, optional 0x and colons. */
ASN1_INTEGER *ca_parse_serial(const char *s)
{
	char hex[2 * 20 + 1];
	size_t k = 0;
	BIGNUM *bn = NULL;
	ASN1_INTEGER *i = NULL;

	if (strncmp(s, "0x", 2) == 0 || strncmp(s, "0X", 2) == 0)
		s += 2;
	for (; *s; s++) {
		if (*s == ':')
			continue;
		if (!strchr("0123456789abcdefABCDEF", *s) || k + 1 >= sizeof(hex))
			return NULL;
		hex[k++] = *s;
	}
	hex[k] = '\0';
	if (k == 0 || !BN_hex2bn(&bn, hex) || BN_is_zero(bn)) {
		BN_free(bn);
		return NULL;
	}
	i = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	return i;
}

/* Only the name forms a certificate for a host or person needs; the
 * others (dirName, otherName, RID) are refused. */
int ca_san_ok(const char *san, int *has_host)
{
	static const char *const kinds[] = { "DNS:", "IP:", "email:", "URI:" };
	const char *p = san;

	*has_host = 0;
	while (*p) {
		size_t n = strcspn(p, ","), k;

		while (*p == ' ' && n) {
			p++;
			n--;
		}
		for (k = 0; k < 4; k++)
			if (strncmp(p, kinds[k], strlen(kinds[k])) == 0 && n > strlen(kinds[k]))
				break;
		if (k == 4)
			return -1;
		if (k < 2)
			*has_host = 1;
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}
