/*
 * cmd-ca.c - `ca init`, `ca sign`, `ca crl`: a certificate authority whose
 * private key never leaves the HSM.
 *
 * OpenSSL encodes every part of a certificate or CRL (names, times,
 * extensions, public keys); the to-be-signed structure is put together here
 * from those parts, hashed on the host and signed inside the HSM with
 * hw_sign_digest(). OpenSSL 3.0 offers no public way to set the signature
 * algorithm inside a TBSCertificate or TBSCertList other than signing with
 * a software key (X509_sign), so the few outer SEQUENCEs are written here.
 * The result is parsed back by OpenSSL and its signature verified with the
 * HSM key's public half before anything is stored or written: a broken
 * encoding or a wrong signature never leaves the process.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "ca-parse.h"

/* Longest validity accepted: 100 years, far beyond any sensible CA. */
#define CA_MAX_DAYS 36500L
#define SERIAL_BYTES 16

/* ------------------------------------------------------------------ */
/* A growable DER buffer. Any failure sticks (bad) and is checked once  */
/* at the end, so building code reads like the ASN.1 it writes.         */

struct der {
	unsigned char *p;
	size_t len, cap;
	int bad;
};

static void der_free(struct der *d)
{
	OPENSSL_free(d->p);
	memset(d, 0, sizeof(*d));
}

static void der_put(struct der *d, const void *b, size_t n)
{
	if (d->bad)
		return;
	/* Nothing we write comes near this; it keeps lengths in int range. */
	if (n > (size_t)INT_MAX / 4 || d->len > (size_t)INT_MAX / 4) {
		d->bad = 1;
		return;
	}
	if (d->len + n > d->cap) {
		size_t cap = (d->len + n) * 2 + 64;
		unsigned char *q = OPENSSL_realloc(d->p, cap);

		if (!q) {
			d->bad = 1;
			return;
		}
		d->p = q;
		d->cap = cap;
	}
	if (n)
		memcpy(d->p + d->len, b, n);
	d->len += n;
}

/* Appends what an i2d function returned (n, buf) and frees buf. */
static void der_take(struct der *d, int n, unsigned char *buf)
{
	if (n <= 0)
		d->bad = 1;
	else
		der_put(d, buf, (size_t)n);
	OPENSSL_free(buf);
}

#define DER_I2D(d, fn, v) do { \
		unsigned char *b_ = NULL; \
		int n_ = fn((v), &b_); \
		der_take((d), n_, b_); \
	} while (0)

/* Appends tag, length and the content of `c`. */
static void der_tlv(struct der *d, int constructed, int tag, int xclass, const struct der *c)
{
	unsigned char hdr[16], *p = hdr;
	int total;

	if (c->bad || d->bad || c->len > (size_t)INT_MAX / 4) {
		d->bad = 1;
		return;
	}
	total = ASN1_object_size(constructed, (int)c->len, tag);
	if (total < 0 || (size_t)total - c->len > sizeof(hdr)) {
		d->bad = 1;
		return;
	}
	ASN1_put_object(&p, constructed, (int)c->len, tag, xclass);
	der_put(d, hdr, (size_t)(p - hdr));
	der_put(d, c->p, c->len);
}

static void der_seq(struct der *d, struct der *c)
{
	der_tlv(d, 1, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL, c);
	der_free(c);
}

/* [n] EXPLICIT around c. */
static void der_explicit(struct der *d, int n, struct der *c)
{
	der_tlv(d, 1, n, V_ASN1_CONTEXT_SPECIFIC, c);
	der_free(c);
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

/*
 * The DER of a certificate or request file: its first PEM block named
 * `pem_name` or `old_name` (the label older tools wrote), or the whole
 * file as DER. Free *der with OPENSSL_free.
 */
static int read_der_file(struct cli *cli, const char *path, const char *what,
                         const char *pem_name, const char *old_name, unsigned char **der,
                         long *len)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	char *name = NULL, *header = NULL;
	hw_err err = util_read_file(path, CLI_MAX_BLOB, 0, &buf, &n);
	BIO *bio;

	if (err)
		return cli_fail_util(cli, err, what);
	*der = NULL;
	bio = BIO_new_mem_buf(buf, (int)n);
	while (bio && !*der && PEM_read_bio(bio, &name, &header, der, len) > 0) {
		if (strcmp(name, pem_name) != 0 && strcmp(name, old_name) != 0) {
			OPENSSL_free(*der);
			*der = NULL;
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		name = header = NULL;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (!*der && (*der = OPENSSL_memdup(buf, n)))
		*len = (long)n;
	util_free(buf, n, 0);
	if (!*der)
		return cli_failf(cli, HW_ERR_NOMEM, what, "out of memory");
	return 0;
}

/* Exactly one `kind` (ASN.1 type `it`) from a PEM or DER file: nothing
 * may follow it. */
static int read_one_file(struct cli *cli, const char *path, const char *what,
                         const char *pem_name, const char *old_name, const ASN1_ITEM *it,
                         const char *kind, void **out)
{
	unsigned char *der;
	const unsigned char *p;
	long len;
	ASN1_VALUE *v;
	int rc = read_der_file(cli, path, what, pem_name, old_name, &der, &len);

	if (rc)
		return rc;
	p = der;
	v = ASN1_item_d2i(NULL, &p, len, it);
	if (v && p != der + len) {
		ASN1_item_free(v, it);
		v = NULL;
	}
	OPENSSL_free(der);
	ERR_clear_error();
	if (!v)
		return cli_failf(cli, HW_ERR_FORMAT, what, "%s is not a PEM or DER %s", path, kind);
	*out = v;
	return 0;
}

static int read_x509_file(struct cli *cli, const char *path, const char *what, X509 **out)
{
	void *v;
	int rc = read_one_file(cli, path, what, PEM_STRING_X509, PEM_STRING_X509_OLD,
	                       ASN1_ITEM_rptr(X509), "X.509 certificate", &v);

	if (!rc)
		*out = v;
	return rc;
}

static int read_csr_file(struct cli *cli, const char *path, X509_REQ **out)
{
	void *v;
	int rc = read_one_file(cli, path, "reading the certificate request", PEM_STRING_X509_REQ,
	                       PEM_STRING_X509_REQ_OLD, ASN1_ITEM_rptr(X509_REQ),
	                       "PKCS#10 request", &v);

	if (!rc)
		*out = v;
	return rc;
}

static int parse_days(struct cli *cli, const struct cli_args *a, long def, long *days)
{
	const char *s = cli_opt(a, "days");
	char *end;

	*days = def;
	if (!s)
		return 0;
	errno = 0;
	*days = strtol(s, &end, 10);
	if (errno || end == s || *end || *days < 1 || *days > CA_MAX_DAYS)
		return cli_usage(cli, a->cmd, "--days must be a whole number from 1 to %ld, not '%s'",
		                 CA_MAX_DAYS, s);
	return 0;
}

static void name_text(const X509_NAME *n, char *out, size_t outsz)
{
	if (!X509_NAME_oneline(n, out, (int)outsz))
		snprintf(out, outsz, "(unprintable)");
}

static void time_text(const ASN1_TIME *t, char *out, size_t outsz)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1 || !strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, outsz, "(invalid)");
}

/* Hex as `openssl x509 -serial` prints it. */
static void int_text(const ASN1_INTEGER *i, char *out, size_t outsz)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(i, NULL);
	char *h = bn ? BN_bn2hex(bn) : NULL;

	snprintf(out, outsz, "%s", h ? h : "(invalid)");
	OPENSSL_free(h);
	BN_free(bn);
}

/* SHA-256 as `openssl x509 -fingerprint -sha256` prints it. */
static void fingerprint(const unsigned char *der, size_t len, char *out, size_t outsz)
{
	unsigned char md[32];
	unsigned mdlen = 0;
	size_t o = 0;

	out[0] = '\0';
	if (EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL) != 1 || outsz < 3 * 32)
		return;
	for (unsigned i = 0; i < mdlen; i++)
		o += (size_t)snprintf(out + o, outsz - o, "%s%02X", i ? ":" : "", md[i]);
}

/* SHA-1 of the subjectPublicKey bits: RFC 5280 4.2.1.2, method (1). */
static int key_id(const X509_PUBKEY *xpub, unsigned char id[20])
{
	const unsigned char *pk;
	int pklen;
	unsigned idlen = 0;

	if (!X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, xpub) ||
	    EVP_Digest(pk, (size_t)pklen, id, &idlen, EVP_sha1(), NULL) != 1 || idlen != 20)
		return -1;
	return 0;
}

static ASN1_INTEGER *random_serial(void)
{
	unsigned char b[SERIAL_BYTES];
	BIGNUM *bn;
	ASN1_INTEGER *i = NULL;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return NULL;
	/* Positive and always 16 bytes long: 126 random bits, the top two fixed. */
	b[0] = (unsigned char)((b[0] & 0x3f) | 0x40);
	bn = BN_bin2bn(b, sizeof(b), NULL);
	if (bn)
		i = BN_to_ASN1_INTEGER(bn, NULL);
	BN_free(bn);
	OPENSSL_cleanse(b, sizeof(b));
	return i;
}

/* ------------------------------------------------------------------ */
/* Extensions                                                          */

static int ext_push(STACK_OF(X509_EXTENSION) *sk, X509_EXTENSION *e)
{
	if (!e)
		return -1;
	if (!sk_X509_EXTENSION_push(sk, e)) {
		X509_EXTENSION_free(e);
		return -1;
	}
	return 0;
}

/* An extension from OpenSSL's config syntax ("critical,CA:TRUE"). */
static int ext_conf(STACK_OF(X509_EXTENSION) *sk, int nid, const char *value)
{
	X509V3_CTX v3;

	memset(&v3, 0, sizeof(v3));
	X509V3_set_ctx(&v3, NULL, NULL, NULL, NULL, 0);
	X509V3_set_ctx_nodb(&v3);
	return ext_push(sk, X509V3_EXT_nconf_nid(NULL, &v3, nid, value));
}

static int ext_ski(STACK_OF(X509_EXTENSION) *sk, const unsigned char id[20])
{
	ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
	int r = -1;

	if (os && ASN1_OCTET_STRING_set(os, id, 20))
		r = ext_push(sk, X509V3_EXT_i2d(NID_subject_key_identifier, 0, os));
	ASN1_OCTET_STRING_free(os);
	return r;
}

static int ext_aki(STACK_OF(X509_EXTENSION) *sk, const unsigned char *id, int idlen)
{
	AUTHORITY_KEYID *ak = AUTHORITY_KEYID_new();
	int r = -1;

	if (ak && (ak->keyid = ASN1_OCTET_STRING_new()) &&
	    ASN1_OCTET_STRING_set(ak->keyid, id, idlen))
		r = ext_push(sk, X509V3_EXT_i2d(NID_authority_key_identifier, 0, ak));
	AUTHORITY_KEYID_free(ak);
	return r;
}

/* ------------------------------------------------------------------ */
/* Signing in the HSM                                                  */

struct signer {
	hw_key *key;
	EVP_PKEY *pub;              /* the HSM key's public half */
	uint8_t *spki;              /* its DER SubjectPublicKeyInfo */
	size_t spki_len;
	hw_sig_alg alg;
	const char *md;
	int sig_nid;
	int null_params;            /* RSA: parameters NULL; ECDSA: absent */
	const char *alg_text;
};

static void signer_free(struct signer *s)
{
	EVP_PKEY_free(s->pub);
	hw_free(s->spki);
	memset(s, 0, sizeof(*s));
}

/* PKCS#1 v1.5 with SHA-256 for RSA (what every verifier accepts), ECDSA
 * with the hash that matches the curve's strength. */
static int signer_init(struct cli *cli, hw_key *key, struct signer *s)
{
	const unsigned char *p;
	char group[32] = "";
	hw_err err;

	memset(s, 0, sizeof(*s));
	s->key = key;
	err = hw_key_public_der(key, &s->spki, &s->spki_len);
	if (err)
		return cli_fail(cli, err, "reading the CA key's public half");
	p = s->spki;
	s->pub = d2i_PUBKEY(NULL, &p, (long)s->spki_len);
	if (!s->pub)
		return cli_failf(cli, HW_ERR_CRYPTO, "reading the CA key's public half",
		                 "OpenSSL cannot parse it");
	if (EVP_PKEY_is_a(s->pub, "RSA")) {
		s->alg = HW_SIG_RSA_PKCS1_SHA256;
		s->md = "SHA256";
		s->sig_nid = NID_sha256WithRSAEncryption;
		s->null_params = 1;
		s->alg_text = "sha256WithRSAEncryption";
		return 0;
	}
	if (EVP_PKEY_is_a(s->pub, "EC") &&
	    EVP_PKEY_get_group_name(s->pub, group, sizeof(group), NULL)) {
		if (strcmp(group, "P-384") == 0 || strcmp(group, "secp384r1") == 0) {
			s->alg = HW_SIG_ECDSA_SHA384;
			s->md = "SHA384";
			s->sig_nid = NID_ecdsa_with_SHA384;
			s->alg_text = "ecdsa-with-SHA384";
			return 0;
		}
		if (strcmp(group, "P-256") == 0 || strcmp(group, "prime256v1") == 0) {
			s->alg = HW_SIG_ECDSA_SHA256;
			s->md = "SHA256";
			s->sig_nid = NID_ecdsa_with_SHA256;
			s->alg_text = "ecdsa-with-SHA256";
			return 0;
		}
	}
	return cli_failf(cli, HW_ERR_KEY_PURPOSE, "choosing the signature algorithm",
	                 "key '%s' is neither RSA nor EC P-256/P-384", hw_key_label(key));
}

static void der_sigalg(struct der *d, const struct signer *s)
{
	X509_ALGOR *a = X509_ALGOR_new();

	if (!a || !X509_ALGOR_set0(a, OBJ_nid2obj(s->sig_nid),
	                           s->null_params ? V_ASN1_NULL : V_ASN1_UNDEF, NULL))
		d->bad = 1;
	else
		DER_I2D(d, i2d_X509_ALGOR, a);
	X509_ALGOR_free(a);
}

/* SEQUENCE { tbs, signatureAlgorithm, signatureValue } into out. */
static int sign_tbs(struct cli *cli, const struct signer *s, struct der *tbs, struct der *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	uint8_t *sig = NULL;
	size_t siglen = 0;
	struct der body = { 0 }, bits = { 0 };
	static const unsigned char no_unused_bits = 0;
	hw_err err;

	if (tbs->bad)
		return cli_failf(cli, HW_ERR_CRYPTO, "encoding", "out of memory or bad value");
	if (EVP_Digest(tbs->p, tbs->len, md, &mdlen, EVP_get_digestbyname(s->md), NULL) != 1)
		return cli_failf(cli, HW_ERR_CRYPTO, "hashing", "%s failed", s->md);
	err = hw_sign_digest(s->key, s->alg, md, mdlen, &sig, &siglen);
	if (err)
		return cli_fail(cli, err, "signing in the HSM");
	der_put(&body, tbs->p, tbs->len);
	der_sigalg(&body, s);
	der_put(&bits, &no_unused_bits, 1);
	der_put(&bits, sig, siglen);
	der_tlv(&body, 0, V_ASN1_BIT_STRING, V_ASN1_UNIVERSAL, &bits);
	der_free(&bits);
	der_seq(out, &body);
	hw_free(sig);
	if (out->bad)
		return cli_failf(cli, HW_ERR_CRYPTO, "encoding", "out of memory");
	return 0;
}

/*
 * TBSCertificate (RFC 5280 4.1): version 3, serial, signature algorithm,
 * issuer, validity, subject, the subject's SubjectPublicKeyInfo as DER,
 * extensions.
 */
struct tbs_cert {
	const ASN1_INTEGER *serial;
	const X509_NAME *issuer, *subject;
	const ASN1_TIME *not_before, *not_after;
	const unsigned char *spki;
	size_t spki_len;
	const STACK_OF(X509_EXTENSION) *exts;
};

static void der_tbs_cert(struct der *d, const struct signer *s, const struct tbs_cert *t)
{
	static const unsigned char v3[] = { 0x02, 0x01, 0x02 };
	struct der body = { 0 }, ver = { 0 }, validity = { 0 }, exts = { 0 };

	der_put(&ver, v3, sizeof(v3));
	der_explicit(&body, 0, &ver);
	DER_I2D(&body, i2d_ASN1_INTEGER, t->serial);
	der_sigalg(&body, s);
	DER_I2D(&body, i2d_X509_NAME, t->issuer);
	DER_I2D(&validity, i2d_ASN1_TIME, t->not_before);
	DER_I2D(&validity, i2d_ASN1_TIME, t->not_after);
	der_seq(&body, &validity);
	DER_I2D(&body, i2d_X509_NAME, t->subject);
	der_put(&body, t->spki, t->spki_len);
	DER_I2D(&exts, i2d_X509_EXTENSIONS, t->exts);
	der_explicit(&body, 3, &exts);
	der_seq(d, &body);
}

/* Parses our own DER back and checks its signature with the CA key. */
static int finish_cert(struct cli *cli, const struct signer *s, const struct der *der, X509 **out)
{
	const unsigned char *p = der->p;
	X509 *x = d2i_X509(NULL, &p, (long)der->len);

	if (!x || p != der->p + der->len || X509_verify(x, s->pub) != 1) {
		X509_free(x);
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_CRYPTO, "checking the new certificate",
		                 "its signature does not verify with the public key of '%s'",
		                 hw_key_label(s->key));
	}
	*out = x;
	return 0;
}

static int pem_of(struct cli *cli, X509 *x, X509_CRL *crl, char **pem, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long n;

	if (!bio || !(x ? PEM_write_bio_X509(bio, x) : PEM_write_bio_X509_CRL(bio, crl)) ||
	    (n = BIO_get_mem_data(bio, &data)) <= 0 || !(*pem = malloc((size_t)n))) {
		BIO_free(bio);
		return cli_failf(cli, HW_ERR_CRYPTO, "encoding PEM", "out of memory");
	}
	memcpy(*pem, data, (size_t)n);
	*len = (size_t)n;
	BIO_free(bio);
	return 0;
}

static int write_pem(struct cli *cli, const char *path, const char *pem, size_t len,
                     const char *what)
{
	return cli_write_file(cli, path, pem, len, 0, what);
}

/* ------------------------------------------------------------------ */
/* The CA certificate must be the HSM key's and allowed to sign.        */

static int check_ca(struct cli *cli, const struct signer *s, X509 *ca, uint32_t need_ku,
                    const char *need)
{
	EVP_PKEY *capub = X509_get0_pubkey(ca);

	if (!capub || EVP_PKEY_eq(capub, s->pub) != 1) {
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_WRONG_KEY, "checking the CA certificate",
		                 "its public key is not the one of key '%s'", hw_key_label(s->key));
	}
	if (X509_check_ca(ca) < 1 || !(X509_get_key_usage(ca) & need_ku))
		return cli_failf(cli, HW_ERR_KEY_PURPOSE, "checking the CA certificate",
		                 "it is not a CA certificate allowed to %s", need);
	return 0;
}

/* --ca-cert, or the certificate stored next to the key. */
static int load_ca_cert(struct cli *cli, const struct cli_args *a, hw_key *key, X509 **ca)
{
	const char *path = cli_opt(a, "ca-cert");
	uint8_t *der = NULL;
	size_t len = 0;
	const unsigned char *p;
	hw_err err;

	if (path)
		return read_x509_file(cli, path, "reading the CA certificate", ca);
	err = hw_cert_get(key, &der, &len);
	if (err)
		return cli_fail(cli, err, "reading the CA certificate from the token (or give --ca-cert)");
	p = der;
	*ca = d2i_X509(NULL, &p, (long)len);
	hw_free(der);
	if (!*ca) {
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_FORMAT, "reading the CA certificate from the token",
		                 "the stored certificate does not parse");
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* ca init                                                             */

struct issued {
	char subject[512], serial[80], not_before[32], not_after[32], sha256[100];
};

static void issued_of(X509 *x, const struct der *der, struct issued *is)
{
	name_text(X509_get_subject_name(x), is->subject, sizeof(is->subject));
	int_text(X509_get0_serialNumber(x), is->serial, sizeof(is->serial));
	time_text(X509_get0_notBefore(x), is->not_before, sizeof(is->not_before));
	time_text(X509_get0_notAfter(x), is->not_after, sizeof(is->not_after));
	fingerprint(der->p, der->len, is->sha256, sizeof(is->sha256));
}

static void issued_json(struct cli *cli, const char *name, const struct issued *is,
                        const char *out)
{
	json_t *o = cj_obj(cli->out, name);

	cj_str(o, "subject", is->subject);
	cj_str(o, "serial", is->serial);
	cj_str(o, "not_before", is->not_before);
	cj_str(o, "not_after", is->not_after);
	cj_str(o, "sha256", is->sha256);
	cj_str(o, "file", out);
}

static int init_type(struct cli *cli, const struct cli_args *a, hw_key_type *t)
{
	const char *s = cli_opt(a, "type");

	if (hw_key_type_parse(s, t) ||
	    (*t != HW_KEY_RSA3072 && *t != HW_KEY_RSA4096 && *t != HW_KEY_EC_P384))
		return cli_usage(cli, a->cmd, "--type must be rsa3072, rsa4096 or ec-p384, not '%s'",
		                 s);
	return 0;
}

/* What the root and the leaf certificates are both made of besides
 * their names and keys: a fresh serial, validity from now, extensions. */
struct cert_parts {
	STACK_OF(X509_EXTENSION) *exts;
	ASN1_INTEGER *serial;
	ASN1_TIME *nb, *na;
};

/* 0 when every part was made; the parts are freed by parts_free() either way. */
static int parts_new(struct cert_parts *c, long days)
{
	c->exts = sk_X509_EXTENSION_new_null();
	c->serial = random_serial();
	c->nb = X509_time_adj_ex(NULL, 0, 0, NULL);
	c->na = X509_time_adj_ex(NULL, (int)days, 0, NULL);
	return !c->exts || !c->serial || !c->nb || !c->na;
}

static void parts_free(struct cert_parts *c)
{
	ASN1_TIME_free(c->nb);
	ASN1_TIME_free(c->na);
	ASN1_INTEGER_free(c->serial);
	sk_X509_EXTENSION_pop_free(c->exts, X509_EXTENSION_free);
}

/* The TBSCertificate of the parts, signed by s, parsed back and checked. */
static int issue_cert(struct cli *cli, const struct signer *s, const struct cert_parts *c,
                      const X509_NAME *issuer, const X509_NAME *subject,
                      const unsigned char *spki, size_t spki_len, struct der *der, X509 **out)
{
	const struct tbs_cert t = { c->serial, issuer, subject, c->nb, c->na, spki, spki_len,
	                            c->exts };
	struct der tbs = { 0 };
	int rc;

	der_tbs_cert(&tbs, s, &t);
	if (!(rc = sign_tbs(cli, s, &tbs, der)))
		rc = finish_cert(cli, s, der, out);
	der_free(&tbs);
	return rc;
}

/* Builds, signs and checks the self-signed certificate. */
static int build_root(struct cli *cli, const struct signer *s, const X509_NAME *subject,
                      long days, struct der *der, X509 **out)
{
	struct cert_parts c;
	int bad = parts_new(&c, days);
	X509_PUBKEY *xpub = NULL;
	const unsigned char *p = s->spki;
	unsigned char id[20];
	int rc = 0;

	xpub = d2i_X509_PUBKEY(NULL, &p, (long)s->spki_len);
	if (bad || !xpub || key_id(xpub, id) ||
	    ext_conf(c.exts, NID_basic_constraints, "critical,CA:TRUE") ||
	    ext_conf(c.exts, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    ext_ski(c.exts, id) || ext_aki(c.exts, id, 20)) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "building the certificate", "OpenSSL failed");
		goto out;
	}
	rc = issue_cert(cli, s, &c, subject, subject, s->spki, s->spki_len, der, out);
out:
	X509_PUBKEY_free(xpub);
	parts_free(&c);
	ERR_clear_error();
	return rc;
}

/* The directory of an output file exists and is writable. */
static int output_dir_ok(struct cli *cli, const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	int ok;

	if (!dir)
		return cli_failf(cli, HW_ERR_NOMEM, "checking the output directory", "out of memory");
	ok = access(dir, W_OK | X_OK) == 0;
	if (!ok)
		cli_failf(cli, HW_ERR_IO, "checking the output directory", "%s: %s", dir,
		          strerror(errno));
	free(dir);
	return ok ? 0 : EXIT_FAILURE_OTHER;
}

/*
 * A failed ceremony leaves no key (and no certificate) behind. The
 * certificate is looked for even when storing it seemed to fail: a token
 * may have created it and then reported an error. Only objects with the
 * new key's random CKA_ID are touched.
 */
static void init_rollback(hw_key *key)
{
	hw_err err;

	if ((err = hw_cert_destroy(key)))
		cli_warn_err("removing the new certificate from the token again", err);
	if ((err = hw_key_destroy(key)))
		cli_warn_err("destroying the new key again (remove it by hand)", err);
}

int cmd_ca_init(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "key"), *out = cli_opt(a, "output");
	hw_key_type type;
	X509_NAME *subject = NULL;
	struct signer s = { 0 };
	struct der der = { 0 };
	struct issued is;
	hw_key_info ki;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	X509 *x = NULL;
	char why[256], *pem = NULL;
	size_t pemlen = 0;
	int rc;
	long days;
	hw_err err;

	if ((rc = init_type(cli, a, &type)) || (rc = parse_days(cli, a, 3650, &days)))
		return rc;
	if (!(subject = ca_parse_subject(cli_opt(a, "subject"), why, sizeof(why))))
		return cli_usage(cli, a->cmd, "bad --subject: %s", why);
	/* A mistyped -o should not cost a key generation and its rollback. */
	if ((rc = output_dir_ok(cli, out)))
		goto out;
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		goto out;
	err = hw_key_generate(ctx, label, type, HW_PURPOSE_SIGN, &key);
	if (err) {
		snprintf(why, sizeof(why), "creating CA key '%s'", label);
		rc = cli_fail(cli, err, why);
		goto out;
	}
	if ((err = hw_key_info_get(key, &ki))) {
		rc = cli_fail(cli, err, "reading the new key's attributes");
		goto rollback;
	}
	if ((rc = signer_init(cli, key, &s)) || (rc = build_root(cli, &s, subject, days, &der, &x)))
		goto rollback;
	if ((err = hw_cert_store(key, der.p, der.len))) {
		rc = cli_fail(cli, err, "storing the certificate on the token");
		goto rollback;
	}
	if ((rc = pem_of(cli, x, NULL, &pem, &pemlen)) ||
	    (rc = write_pem(cli, out, pem, pemlen, "writing the CA certificate")))
		goto rollback;

	issued_of(x, &der, &is);
	cli_transcript_begin(cli, "ca init (root CA key and self-signed certificate)");
	cli_transcript_line(cli, "Module:", "%s", hw_ctx_module_path(ctx));
	cli_transcript_line(cli, "Key label:", "%s", ki.label);
	cli_transcript_line(cli, "Key type:", "%s (generated in the HSM, sensitive, "
	                    "not extractable)", ki.type_name);
	cli_transcript_line(cli, "Key ID:", "%s", ki.id_hex);
	cli_transcript_line(cli, "Key URI:", "%s", ki.uri);
	cli_transcript_line(cli, "Public key SHA-256:", "%s", ki.kcv);
	cli_transcript_line(cli, "Subject:", "%s", is.subject);
	cli_transcript_line(cli, "Serial:", "%s", is.serial);
	cli_transcript_line(cli, "Not before:", "%s", is.not_before);
	cli_transcript_line(cli, "Not after:", "%s", is.not_after);
	cli_transcript_line(cli, "Signature algorithm:", "%s", s.alg_text);
	cli_transcript_line(cli, "Certificate SHA-256:", "%s", is.sha256);
	cli_transcript_line(cli, "Certificate file:", "%s", out);
	cli_transcript_line(cli, "Token object:", "certificate '%s' (ID %s) stored next to the key",
	                    ki.label, ki.id_hex);
	cli_transcript_end(cli);
	if (cli->json) {
		key_info_json(cli->out, "key", &ki);
		issued_json(cli, "certificate", &is, out);
	}
	goto out;
rollback:
	init_rollback(key);
out:
	free(pem);
	der_free(&der);
	X509_free(x);
	signer_free(&s);
	X509_NAME_free(subject);
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* ca sign                                                             */

enum profile { PROF_INTERMEDIATE, PROF_TLS_SERVER, PROF_TLS_CLIENT };

static const char *const profile_names[] = { "intermediate", "tls-server", "tls-client" };

static int parse_profile(struct cli *cli, const struct cli_args *a, enum profile *pr,
                         char **san)
{
	const char *s = cli_opt(a, "profile");
	const char *const *sans;
	size_t nsan, total = 1;
	int host;

	*san = NULL;
	*pr = PROF_TLS_SERVER;
	if (s) {
		size_t i;

		for (i = 0; i < 3 && strcmp(s, profile_names[i]) != 0; i++)
			;
		if (i == 3)
			return cli_usage(cli, a->cmd, "--profile must be intermediate, tls-server or "
			                 "tls-client, not '%s'", s);
		*pr = (enum profile)i;
	}
	sans = cli_opt_all(a, "san", &nsan);
	for (size_t i = 0; i < nsan; i++)
		total += strlen(sans[i]) + 1;
	if (nsan && *pr == PROF_INTERMEDIATE)
		return cli_usage(cli, a->cmd, "--san does not apply to the intermediate profile");
	if (!nsan && *pr == PROF_TLS_SERVER)
		return cli_usage(cli, a->cmd, "the tls-server profile needs --san (e.g. "
		                 "--san DNS:www.example.com,IP:192.0.2.1): clients check the "
		                 "name there, not in the subject");
	if (!nsan)
		return 0;
	if (!(*san = malloc(total)))
		return cli_failf(cli, HW_ERR_NOMEM, "reading --san", "out of memory");
	(*san)[0] = '\0';
	for (size_t i = 0; i < nsan; i++) {
		if (i)
			strcat(*san, ",");
		strcat(*san, sans[i]);
	}
	if (ca_san_ok(*san, &host) || (*pr == PROF_TLS_SERVER && !host)) {
		int rc = cli_usage(cli, a->cmd, "bad --san '%s': a comma-separated list of DNS:, IP:, "
		                   "email: or URI: names%s", *san,
		                   *pr == PROF_TLS_SERVER ? ", with at least one DNS: or IP:" : "");
		free(*san);
		*san = NULL;
		return rc;
	}
	return 0;
}

/* The request must be signed by the key it carries, and the key usable. */
static int check_csr(struct cli *cli, X509_REQ *req)
{
	EVP_PKEY *pk = X509_REQ_get0_pubkey(req);

	if (!pk || X509_REQ_verify(req, pk) != 1) {
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_INTEGRITY, "checking the certificate request",
		                 "its signature does not verify with the public key it carries");
	}
	if (EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) < 2048)
		return cli_failf(cli, HW_ERR_KEY_PURPOSE, "checking the certificate request",
		                 "an RSA key of %d bits is too weak (2048 at least)",
		                 EVP_PKEY_get_bits(pk));
	if (!EVP_PKEY_is_a(pk, "RSA") && !EVP_PKEY_is_a(pk, "EC") &&
	    !EVP_PKEY_is_a(pk, "ED25519") && !EVP_PKEY_is_a(pk, "ED448"))
		return cli_failf(cli, HW_ERR_KEY_PURPOSE, "checking the certificate request",
		                 "only RSA, EC, Ed25519 and Ed448 keys are certified");
	return 0;
}

/* RFC 5280 4.2.1.6: with an empty subject the names are all in the SAN,
 * which must then be critical. */
static int ext_san(STACK_OF(X509_EXTENSION) *sk, const char *san, int critical)
{
	size_t n = strlen(san) + sizeof("critical,");
	char *v = malloc(n);
	int r = -1;

	if (v) {
		snprintf(v, n, "%s%s", critical ? "critical," : "", san);
		r = ext_conf(sk, NID_subject_alt_name, v);
	}
	free(v);
	return r;
}

static int leaf_exts(STACK_OF(X509_EXTENSION) *sk, enum profile pr, int rsa, const char *san,
                     int empty_subject)
{
	switch (pr) {
	case PROF_INTERMEDIATE:
		return ext_conf(sk, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
		       ext_conf(sk, NID_key_usage, "critical,keyCertSign,cRLSign");
	case PROF_TLS_SERVER:
		/* keyEncipherment: TLS 1.2 RSA key exchange with an RSA key. */
		return ext_conf(sk, NID_basic_constraints, "critical,CA:FALSE") ||
		       ext_conf(sk, NID_key_usage, rsa ? "critical,digitalSignature,keyEncipherment"
		                                     : "critical,digitalSignature") ||
		       ext_conf(sk, NID_ext_key_usage, "serverAuth") ||
		       ext_san(sk, san, empty_subject);
	case PROF_TLS_CLIENT:
		return ext_conf(sk, NID_basic_constraints, "critical,CA:FALSE") ||
		       ext_conf(sk, NID_key_usage, "critical,digitalSignature") ||
		       ext_conf(sk, NID_ext_key_usage, "clientAuth") ||
		       (san && ext_san(sk, san, empty_subject));
	}
	return -1;
}

static int build_leaf(struct cli *cli, const struct signer *s, X509 *ca, X509_REQ *req,
                      enum profile pr, const char *san, long days, struct der *der, X509 **out)
{
	struct cert_parts c;
	int bad = parts_new(&c, days);
	X509_PUBKEY *xpub = X509_REQ_get_X509_PUBKEY(req);
	const ASN1_OCTET_STRING *ca_id = X509_get0_subject_key_id(ca);
	unsigned char id[20], caid[20];
	unsigned char *spki = NULL;
	int spki_len, rc = 0;

	if (bad || !xpub || key_id(xpub, id) ||
	    (!ca_id && key_id(X509_get_X509_PUBKEY(ca), caid))) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "building the certificate", "OpenSSL failed");
		goto out;
	}
	if (ASN1_TIME_compare(c.na, X509_get0_notAfter(ca)) > 0) {
		char until[32];

		time_text(X509_get0_notAfter(ca), until, sizeof(until));
		rc = cli_failf(cli, HW_ERR_INVALID_ARG, "checking --days",
		               "the certificate would outlive the CA certificate (valid until %s)",
		               until);
		goto out;
	}
	if (leaf_exts(c.exts, pr, EVP_PKEY_is_a(X509_REQ_get0_pubkey(req), "RSA"), san,
	              X509_NAME_entry_count(X509_REQ_get_subject_name(req)) == 0)) {
		rc = cli_failf(cli, HW_ERR_INVALID_ARG, "building the extensions",
		               "OpenSSL refused them (a malformed --san name?)");
		goto out;
	}
	if (ext_ski(c.exts, id) ||
	    (ca_id ? ext_aki(c.exts, ASN1_STRING_get0_data(ca_id), ASN1_STRING_length(ca_id))
	           : ext_aki(c.exts, caid, 20)) ||
	    (spki_len = i2d_X509_PUBKEY(xpub, &spki)) <= 0) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "building the certificate", "OpenSSL failed");
		goto out;
	}
	rc = issue_cert(cli, s, &c, X509_get_subject_name(ca), X509_REQ_get_subject_name(req),
	                spki, (size_t)spki_len, der, out);
out:
	OPENSSL_free(spki);
	parts_free(&c);
	ERR_clear_error();
	return rc;
}

static void ca_transcript_head(struct cli *cli, const char *ceremony, hw_key *key, X509 *ca,
                               const struct signer *s)
{
	hw_key_info ki;
	unsigned char *der = NULL;
	char name[512], fp[100] = "";
	int n = i2d_X509(ca, &der);

	if (n > 0)
		fingerprint(der, (size_t)n, fp, sizeof(fp));
	OPENSSL_free(der);
	name_text(X509_get_subject_name(ca), name, sizeof(name));
	cli_transcript_begin(cli, ceremony);
	if (hw_key_info_get(key, &ki) == HW_OK) {
		cli_transcript_line(cli, "CA key label:", "%s", ki.label);
		cli_transcript_line(cli, "CA key ID:", "%s", ki.id_hex);
		cli_transcript_line(cli, "CA key URI:", "%s", ki.uri);
		cli_transcript_line(cli, "CA public key SHA-256:", "%s", ki.kcv);
	} else {
		cli_transcript_line(cli, "CA key label:", "%s", hw_key_label(key));
	}
	cli_transcript_line(cli, "CA subject:", "%s", name);
	cli_transcript_line(cli, "CA certificate SHA-256:", "%s", fp);
	cli_transcript_line(cli, "Signature algorithm:", "%s", s->alg_text);
}

int cmd_ca_sign(struct cli *cli, const struct cli_args *a)
{
	const char *out = cli_opt(a, "output");
	enum profile pr;
	char *san = NULL, *pem = NULL, spki_fp[100];
	struct signer s = { 0 };
	struct der der = { 0 };
	struct issued is;
	X509_REQ *req = NULL;
	X509 *ca = NULL, *x = NULL;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	unsigned char *spki = NULL;
	size_t pemlen = 0;
	long days;
	int rc, n;

	/* Everything that needs no HSM is checked before the PIN is used. */
	if ((rc = parse_profile(cli, a, &pr, &san)) || (rc = parse_days(cli, a, 365, &days)) ||
	    (rc = cli_distinct_paths(cli, a, "csr", "output")) ||
	    (rc = read_csr_file(cli, cli_opt(a, "csr"), &req)) || (rc = check_csr(cli, req)))
		goto out;
	if (X509_NAME_entry_count(X509_REQ_get_subject_name(req)) == 0 &&
	    (pr == PROF_INTERMEDIATE || !san)) {
		rc = cli_failf(cli, HW_ERR_FORMAT, "checking the certificate request",
		               "its subject is empty: a CA needs a subject, a leaf at least --san");
		goto out;
	}
	if (cli_opt(a, "ca-cert") && (rc = cli_distinct_paths(cli, a, "ca-cert", "output")))
		goto out;
	if ((rc = cli_open_key(cli, cli_opt(a, "key"), &ctx, &key)) ||
	    (rc = load_ca_cert(cli, a, key, &ca)) || (rc = signer_init(cli, key, &s)) ||
	    (rc = check_ca(cli, &s, ca, KU_KEY_CERT_SIGN, "sign certificates")))
		goto out;
	if (pr == PROF_INTERMEDIATE && X509_get_pathlen(ca) == 0) {
		rc = cli_failf(cli, HW_ERR_KEY_PURPOSE, "checking the CA certificate",
		               "its path length constraint (0) forbids issuing CA certificates");
		goto out;
	}
	if ((rc = build_leaf(cli, &s, ca, req, pr, san, days, &der, &x)) ||
	    (rc = pem_of(cli, x, NULL, &pem, &pemlen)) ||
	    (rc = write_pem(cli, out, pem, pemlen, "writing the certificate")))
		goto out;

	issued_of(x, &der, &is);
	n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki);
	spki_fp[0] = '\0';
	if (n > 0)
		fingerprint(spki, (size_t)n, spki_fp, sizeof(spki_fp));
	ca_transcript_head(cli, "ca sign (certificate from a request)", key, ca, &s);
	cli_transcript_line(cli, "Profile:", "%s", profile_names[pr]);
	cli_transcript_line(cli, "Subject:", "%s", is.subject);
	cli_transcript_line(cli, "Subject alt names:", "%s", san ? san : "(none)");
	cli_transcript_line(cli, "Subject key SHA-256:", "%s", spki_fp);
	cli_transcript_line(cli, "Serial:", "%s", is.serial);
	cli_transcript_line(cli, "Not before:", "%s", is.not_before);
	cli_transcript_line(cli, "Not after:", "%s", is.not_after);
	cli_transcript_line(cli, "Certificate SHA-256:", "%s", is.sha256);
	cli_transcript_line(cli, "Certificate file:", "%s", out);
	cli_transcript_end(cli);
	if (cli->json) {
		cj_str(cli->out, "profile", profile_names[pr]);
		issued_json(cli, "certificate", &is, out);
	}
out:
	OPENSSL_free(spki);
	free(pem);
	free(san);
	der_free(&der);
	X509_free(x);
	X509_free(ca);
	X509_REQ_free(req);
	signer_free(&s);
	cli_close_key(ctx, key);
	return rc;
}

/* ------------------------------------------------------------------ */
/* ca crl                                                              */

static int parse_crl_number(struct cli *cli, const struct cli_args *a, uint64_t *num)
{
	const char *s = cli_opt(a, "crl-number");
	char *end;
	unsigned long long v;

	/* Without state kept anywhere, the clock gives numbers that grow. */
	*num = (uint64_t)time(NULL);
	if (!s)
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-')
		return cli_usage(cli, a->cmd, "--crl-number must be a non-negative whole number, "
		                 "not '%s'", s);
	*num = v;
	return 0;
}

struct revoked {
	ASN1_INTEGER **serial;
	size_t n;
};

static void revoked_free(struct revoked *r)
{
	for (size_t i = 0; i < r->n; i++)
		ASN1_INTEGER_free(r->serial[i]);
	free(r->serial);
	memset(r, 0, sizeof(*r));
}

static int parse_revoked(struct cli *cli, const struct cli_args *a, struct revoked *r)
{
	const char *const *v;
	size_t n;

	v = cli_opt_all(a, "revoke", &n);
	memset(r, 0, sizeof(*r));
	if (n == 0)
		return 0;
	if (!(r->serial = calloc(n, sizeof(*r->serial))))
		return cli_failf(cli, HW_ERR_NOMEM, "reading --revoke", "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (!(r->serial[r->n] = ca_parse_serial(v[i])))
			return cli_usage(cli, a->cmd, "--revoke takes a certificate serial in hex "
			                 "(as openssl x509 -serial prints it), not '%s'", v[i]);
		for (size_t j = 0; j < r->n; j++)
			if (ASN1_INTEGER_cmp(r->serial[j], r->serial[r->n]) == 0) {
				ASN1_INTEGER_free(r->serial[r->n]);
				r->serial[r->n] = NULL;
				return cli_usage(cli, a->cmd, "serial %s is given twice", v[i]);
			}
		r->n++;
	}
	return 0;
}

/* TBSCertList (RFC 5280 5.1), version 2. */
static void der_tbs_crl(struct der *d, const struct signer *s, const X509_NAME *issuer,
                        const ASN1_TIME *this_upd, const ASN1_TIME *next_upd,
                        const struct revoked *r, const STACK_OF(X509_EXTENSION) *exts)
{
	static const unsigned char v2[] = { 0x02, 0x01, 0x01 };
	struct der body = { 0 }, list = { 0 }, ext = { 0 };

	der_put(&body, v2, sizeof(v2));
	der_sigalg(&body, s);
	DER_I2D(&body, i2d_X509_NAME, issuer);
	DER_I2D(&body, i2d_ASN1_TIME, this_upd);
	DER_I2D(&body, i2d_ASN1_TIME, next_upd);
	for (size_t i = 0; i < r->n; i++) {
		struct der entry = { 0 };

		DER_I2D(&entry, i2d_ASN1_INTEGER, r->serial[i]);
		DER_I2D(&entry, i2d_ASN1_TIME, this_upd);
		der_seq(&list, &entry);
	}
	/* An empty list is left out, as RFC 5280 asks. */
	if (r->n)
		der_seq(&body, &list);
	DER_I2D(&ext, i2d_X509_EXTENSIONS, exts);
	der_explicit(&body, 0, &ext);
	der_seq(d, &body);
}

int cmd_ca_crl(struct cli *cli, const struct cli_args *a)
{
	const char *out = cli_opt(a, "output");
	struct revoked r = { 0 };
	struct signer s = { 0 };
	struct der tbs = { 0 }, der = { 0 };
	STACK_OF(X509_EXTENSION) *exts = NULL;
	ASN1_TIME *this_upd = NULL, *next_upd = NULL;
	ASN1_INTEGER *num = NULL;
	const ASN1_OCTET_STRING *ca_id;
	unsigned char caid[20];
	X509_CRL *crl = NULL;
	X509 *ca = NULL;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	char *pem = NULL, tu[32], nu[32], fp[100], issuer[512];
	const unsigned char *p;
	size_t pemlen = 0;
	uint64_t number;
	long days;
	int rc;

	if ((rc = parse_days(cli, a, 30, &days)) || (rc = parse_crl_number(cli, a, &number)) ||
	    (rc = parse_revoked(cli, a, &r)))
		goto out;
	if (cli_opt(a, "ca-cert") && (rc = cli_distinct_paths(cli, a, "ca-cert", "output")))
		goto out;
	if ((rc = cli_open_key(cli, cli_opt(a, "key"), &ctx, &key)) ||
	    (rc = load_ca_cert(cli, a, key, &ca)) || (rc = signer_init(cli, key, &s)) ||
	    (rc = check_ca(cli, &s, ca, KU_CRL_SIGN, "sign CRLs")))
		goto out;

	ca_id = X509_get0_subject_key_id(ca);
	exts = sk_X509_EXTENSION_new_null();
	this_upd = X509_time_adj_ex(NULL, 0, 0, NULL);
	next_upd = X509_time_adj_ex(NULL, (int)days, 0, NULL);
	num = ASN1_INTEGER_new();
	if (!exts || !this_upd || !next_upd || !num || !ASN1_INTEGER_set_uint64(num, number) ||
	    (!ca_id && key_id(X509_get_X509_PUBKEY(ca), caid)) ||
	    (ca_id ? ext_aki(exts, ASN1_STRING_get0_data(ca_id), ASN1_STRING_length(ca_id))
	           : ext_aki(exts, caid, 20)) ||
	    ext_push(exts, X509V3_EXT_i2d(NID_crl_number, 0, num))) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "building the CRL", "OpenSSL failed");
		goto out;
	}
	der_tbs_crl(&tbs, &s, X509_get_subject_name(ca), this_upd, next_upd, &r, exts);
	if ((rc = sign_tbs(cli, &s, &tbs, &der)))
		goto out;
	p = der.p;
	crl = d2i_X509_CRL(NULL, &p, (long)der.len);
	if (!crl || p != der.p + der.len || X509_CRL_verify(crl, s.pub) != 1) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "checking the new CRL",
		               "its signature does not verify with the public key of '%s'",
		               hw_key_label(key));
		goto out;
	}
	if ((rc = pem_of(cli, NULL, crl, &pem, &pemlen)) ||
	    (rc = write_pem(cli, out, pem, pemlen, "writing the CRL")))
		goto out;

	time_text(this_upd, tu, sizeof(tu));
	time_text(next_upd, nu, sizeof(nu));
	fingerprint(der.p, der.len, fp, sizeof(fp));
	name_text(X509_get_subject_name(ca), issuer, sizeof(issuer));
	ca_transcript_head(cli, "ca crl (certificate revocation list)", key, ca, &s);
	cli_transcript_line(cli, "CRL number:", "%llu", (unsigned long long)number);
	cli_transcript_line(cli, "This update:", "%s", tu);
	cli_transcript_line(cli, "Next update:", "%s", nu);
	cli_transcript_line(cli, "Revoked certificates:", "%zu", r.n);
	for (size_t i = 0; i < r.n; i++) {
		char sn[80];

		int_text(r.serial[i], sn, sizeof(sn));
		cli_transcript_line(cli, "Revoked serial:", "%s", sn);
	}
	cli_transcript_line(cli, "CRL SHA-256:", "%s", fp);
	cli_transcript_line(cli, "CRL file:", "%s", out);
	cli_transcript_end(cli);
	if (cli->json) {
		json_t *doc = cj_obj(cli->out, "crl"), *revoked;

		cj_str(doc, "issuer", issuer);
		cj_uint(doc, "number", number);
		cj_str(doc, "this_update", tu);
		cj_str(doc, "next_update", nu);
		revoked = cj_arr(doc, "revoked");
		for (size_t i = 0; i < r.n; i++) {
			char sn[80];

			int_text(r.serial[i], sn, sizeof(sn));
			cj_str(revoked, NULL, sn);
		}
		cj_str(doc, "sha256", fp);
		cj_str(doc, "file", out);
	}
out:
	ERR_clear_error();
	free(pem);
	der_free(&tbs);
	der_free(&der);
	X509_CRL_free(crl);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(this_upd);
	ASN1_TIME_free(next_upd);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_free(ca);
	signer_free(&s);
	revoked_free(&r);
	cli_close_key(ctx, key);
	return rc;
}
