/*
 * ca-parse.h - the parsers of `hsmwrap ca` for operator-typed strings,
 * kept apart from the command so that a fuzzing harness (tests/fuzz-ca.c)
 * can drive them without a token.
 */
#ifndef HSMWRAP_CA_PARSE_H
#define HSMWRAP_CA_PARSE_H

#include <stddef.h>

#include <openssl/asn1.h>
#include <openssl/x509.h>

/*
 * "/CN=Example Root CA/O=Example" as openssl -subj takes it. NULL on
 * failure, with the reason in why.
 */
X509_NAME *ca_parse_subject(const char *s, char *why, size_t whysz);
/* A positive serial in hex, optional 0x and colons, at most 20 bytes. */
ASN1_INTEGER *ca_parse_serial(const char *s);
/*
 * 0 if san is a comma-separated list of DNS:, IP:, email: or URI: names,
 * each with a value; *has_host says whether a DNS: or IP: name is there.
 */
int ca_san_ok(const char *san, int *has_host);

#endif
