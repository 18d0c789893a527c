/*
 * cmd-ca.c - `ca init`, `ca sign`, `ca crl`: a certificate authority whose
 * private key never leaves the HSM.
 *
 * The CA key is an EVP_PKEY of hsmwrap's own OpenSSL provider, built into
 * the CLI and added to a private library context that borrows the CLI's
 * open token (src/provider/builtin.h). OpenSSL then builds, encodes and
 * signs certificates and CRLs as it would with a software key
 * (X509_sign_ctx, X509_CRL_sign_ctx); the signature is made in the HSM.
 * Each result's signature is verified with the key's public half before
 * anything is stored or written.
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
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "ca-parse.h"
#include "../src/provider/builtin.h"

/* Longest validity accepted: 100 years, far beyond any sensible CA. */
#define CA_MAX_DAYS 36500L
#define SERIAL_BYTES 16

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
	hw_key_info ki;             /* its attributes: URI, label, KCV */
	OSSL_LIB_CTX *lc;           /* default + built-in hsmwrap provider */
	OSSL_PROVIDER *dflt, *hw;   /* loaded into lc: each load is a reference */
	EVP_PKEY *pkey;             /* the HSM key, through the provider */
	EVP_PKEY *pub;              /* its public half, for the checks */
	const char *md;
	const char *alg_text;
};

static void signer_free(struct signer *s)
{
	EVP_PKEY_free(s->pkey);
	EVP_PKEY_free(s->pub);
	/* Without the unloads the library context keeps both providers (and
	 * all they hold) alive; the hsmwrap one leaves the lent context alone. */
	if (s->hw)
		OSSL_PROVIDER_unload(s->hw);
	if (s->dflt)
		OSSL_PROVIDER_unload(s->dflt);
	OSSL_LIB_CTX_free(s->lc);
	memset(s, 0, sizeof(*s));
}

/*
 * The hw_err the provider raised (its reason codes are hw_err values and
 * its errors carry its name as the function), else `def`; the queue is
 * cleared. hw_last_detail() still describes the HSM call.
 */
static hw_err provider_err(hw_err def)
{
	const char *func = NULL;
	unsigned long e;
	hw_err found = HW_OK;

	while ((e = ERR_get_error_all(NULL, NULL, &func, NULL, NULL)) != 0)
		if (!found && func && strcmp(func, "hsmwrap") == 0 && ERR_GET_REASON(e) > 0 &&
		    ERR_GET_REASON(e) < 100)
			found = (hw_err)ERR_GET_REASON(e);
	return found ? found : def;
}

/* The CA key as an EVP_PKEY: the provider's store loads its URI. */
static int signer_load(struct cli *cli, hw_ctx *ctx, struct signer *s)
{
	OSSL_STORE_CTX *st = NULL;
	OSSL_STORE_INFO *info;

	if (!(s->lc = OSSL_LIB_CTX_new()) ||
	    !OSSL_PROVIDER_add_builtin(s->lc, "hsmwrap", hwp_builtin_init) ||
	    !(s->dflt = OSSL_PROVIDER_load(s->lc, "default")))
		goto fail;
	hwp_builtin_lend(ctx);
	if ((s->hw = OSSL_PROVIDER_load(s->lc, "hsmwrap")))
		st = OSSL_STORE_open_ex(s->ki.uri, s->lc, "provider=hsmwrap", NULL, NULL, NULL, NULL,
		                        NULL);
	hwp_builtin_lend(NULL);
	if (!st || !OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY))
		goto fail;
	while (!s->pkey && !OSSL_STORE_eof(st) && (info = OSSL_STORE_load(st))) {
		s->pkey = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	if (!s->pkey)
		return cli_fail(cli, provider_err(HW_ERR_KEY_NOT_FOUND),
		                "loading the CA key through the hsmwrap provider");
	ERR_clear_error();
	return 0;
fail:
	OSSL_STORE_close(st);
	return cli_fail(cli, provider_err(HW_ERR_CRYPTO), "starting the hsmwrap provider");
}

/* PKCS#1 v1.5 with SHA-256 for RSA (what every verifier accepts), ECDSA
 * with the hash that matches the curve's strength. */
static int signer_init(struct cli *cli, hw_ctx *ctx, hw_key *key, struct signer *s)
{
	uint8_t *spki = NULL;
	size_t spki_len = 0;
	const unsigned char *p;
	char group[32] = "";
	hw_err err;

	memset(s, 0, sizeof(*s));
	s->key = key;
	if ((err = hw_key_info_get(key, &s->ki)))
		return cli_fail(cli, err, "reading the CA key's attributes");
	err = hw_key_public_der(key, &spki, &spki_len);
	if (err)
		return cli_fail(cli, err, "reading the CA key's public half");
	p = spki;
	s->pub = d2i_PUBKEY(NULL, &p, (long)spki_len);
	hw_free(spki);
	if (!s->pub)
		return cli_failf(cli, HW_ERR_CRYPTO, "reading the CA key's public half",
		                 "OpenSSL cannot parse it");
	if (EVP_PKEY_is_a(s->pub, "RSA")) {
		s->md = "SHA256";
		s->alg_text = "sha256WithRSAEncryption";
		return signer_load(cli, ctx, s);
	}
	if (EVP_PKEY_is_a(s->pub, "EC") &&
	    EVP_PKEY_get_group_name(s->pub, group, sizeof(group), NULL)) {
		if (strcmp(group, "P-384") == 0 || strcmp(group, "secp384r1") == 0) {
			s->md = "SHA384";
			s->alg_text = "ecdsa-with-SHA384";
			return signer_load(cli, ctx, s);
		}
		if (strcmp(group, "P-256") == 0 || strcmp(group, "prime256v1") == 0) {
			s->md = "SHA256";
			s->alg_text = "ecdsa-with-SHA256";
			return signer_load(cli, ctx, s);
		}
	}
	return cli_failf(cli, HW_ERR_KEY_PURPOSE, "choosing the signature algorithm",
	                 "key '%s' is neither RSA nor EC P-256/P-384", hw_key_label(key));
}

/* Signs x or crl in the HSM and checks the signature with the public half. */
static int sign_and_check(struct cli *cli, const struct signer *s, X509 *x, X509_CRL *crl)
{
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	int ok;

	ok = mc && EVP_DigestSignInit_ex(mc, NULL, s->md, s->lc, NULL, s->pkey, NULL) == 1 &&
	     (x ? X509_sign_ctx(x, mc) : X509_CRL_sign_ctx(crl, mc)) > 0;
	EVP_MD_CTX_free(mc);
	if (!ok)
		return cli_fail(cli, provider_err(HW_ERR_CRYPTO), "signing in the HSM");
	if ((x ? X509_verify(x, s->pub) : X509_CRL_verify(crl, s->pub)) != 1) {
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_CRYPTO, x ? "checking the new certificate" :
		                 "checking the new CRL", "its signature does not verify with the "
		                 "public key of '%s'", hw_key_label(s->key));
	}
	return 0;
}

/* DER of a certificate or CRL; NULL when out of memory. */
static unsigned char *der_of(X509 *x, X509_CRL *crl, size_t *len)
{
	unsigned char *der = NULL;
	int n = x ? i2d_X509(x, &der) : i2d_X509_CRL(crl, &der);

	if (n <= 0) {
		OPENSSL_free(der);
		return NULL;
	}
	*len = (size_t)n;
	return der;
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

static void issued_of(X509 *x, const unsigned char *der, size_t len, struct issued *is)
{
	name_text(X509_get_subject_name(x), is->subject, sizeof(is->subject));
	int_text(X509_get0_serialNumber(x), is->serial, sizeof(is->serial));
	time_text(X509_get0_notBefore(x), is->not_before, sizeof(is->not_before));
	time_text(X509_get0_notAfter(x), is->not_after, sizeof(is->not_after));
	fingerprint(der, len, is->sha256, sizeof(is->sha256));
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

/* A version 3 certificate of the parts, signed by s and checked. */
static int issue_cert(struct cli *cli, const struct signer *s, const struct cert_parts *c,
                      const X509_NAME *issuer, const X509_NAME *subject, EVP_PKEY *subject_key,
                      X509 **out)
{
	X509 *x = X509_new_ex(s->lc, NULL);
	int ok, rc;

	ok = x && X509_set_version(x, X509_VERSION_3) && X509_set_serialNumber(x, c->serial) &&
	     X509_set_issuer_name(x, issuer) && X509_set_subject_name(x, subject) &&
	     X509_set1_notBefore(x, c->nb) && X509_set1_notAfter(x, c->na) &&
	     X509_set_pubkey(x, subject_key);
	for (int i = 0; ok && i < sk_X509_EXTENSION_num(c->exts); i++)
		ok = X509_add_ext(x, sk_X509_EXTENSION_value(c->exts, i), -1);
	if (!ok) {
		X509_free(x);
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_CRYPTO, "building the certificate", "OpenSSL failed");
	}
	if ((rc = sign_and_check(cli, s, x, NULL))) {
		X509_free(x);
		return rc;
	}
	*out = x;
	return 0;
}

/* Builds, signs and checks the self-signed certificate. */
static int build_root(struct cli *cli, const struct signer *s, const X509_NAME *subject,
                      long days, X509 **out)
{
	struct cert_parts c;
	int bad = parts_new(&c, days);
	X509_PUBKEY *xpub = NULL;
	unsigned char id[20];
	int rc = 0;

	if (bad || !X509_PUBKEY_set(&xpub, s->pub) || key_id(xpub, id) ||
	    ext_conf(c.exts, NID_basic_constraints, "critical,CA:TRUE") ||
	    ext_conf(c.exts, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    ext_ski(c.exts, id) || ext_aki(c.exts, id, 20)) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "building the certificate", "OpenSSL failed");
		goto out;
	}
	rc = issue_cert(cli, s, &c, subject, subject, s->pub, out);
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
	unsigned char *der = NULL;
	size_t derlen = 0;
	struct issued is;
	const hw_key_info *ki = &s.ki;
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
	if ((rc = signer_init(cli, ctx, key, &s)) || (rc = build_root(cli, &s, subject, days, &x)))
		goto rollback;
	if (!(der = der_of(x, NULL, &derlen))) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "encoding the certificate", "out of memory");
		goto rollback;
	}
	if ((err = hw_cert_store(key, der, derlen))) {
		rc = cli_fail(cli, err, "storing the certificate on the token");
		goto rollback;
	}
	if ((rc = pem_of(cli, x, NULL, &pem, &pemlen)) ||
	    (rc = write_pem(cli, out, pem, pemlen, "writing the CA certificate")))
		goto rollback;

	issued_of(x, der, derlen, &is);
	cli_transcript_begin(cli, "ca init (root CA key and self-signed certificate)");
	cli_transcript_line(cli, "Module:", "%s", hw_ctx_module_path(ctx));
	cli_transcript_line(cli, "Key label:", "%s", ki->label);
	cli_transcript_line(cli, "Key type:", "%s (generated in the HSM, sensitive, "
	                    "not extractable)", ki->type_name);
	cli_transcript_line(cli, "Key ID:", "%s", ki->id_hex);
	cli_transcript_line(cli, "Key URI:", "%s", ki->uri);
	cli_transcript_line(cli, "Public key SHA-256:", "%s", ki->kcv);
	cli_transcript_line(cli, "Subject:", "%s", is.subject);
	cli_transcript_line(cli, "Serial:", "%s", is.serial);
	cli_transcript_line(cli, "Not before:", "%s", is.not_before);
	cli_transcript_line(cli, "Not after:", "%s", is.not_after);
	cli_transcript_line(cli, "Signature algorithm:", "%s", s.alg_text);
	cli_transcript_line(cli, "Certificate SHA-256:", "%s", is.sha256);
	cli_transcript_line(cli, "Certificate file:", "%s", out);
	cli_transcript_line(cli, "Token object:", "certificate '%s' (ID %s) stored next to the key",
	                    ki->label, ki->id_hex);
	cli_transcript_end(cli);
	if (cli->json) {
		key_info_json(cli->out, "key", ki);
		issued_json(cli, "certificate", &is, out);
	}
	goto out;
rollback:
	init_rollback(key);
out:
	free(pem);
	OPENSSL_free(der);
	X509_free(x);               /* before the library context it was made in */
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
                      enum profile pr, const char *san, long days, X509 **out)
{
	struct cert_parts c;
	int bad = parts_new(&c, days);
	X509_PUBKEY *xpub = X509_REQ_get_X509_PUBKEY(req);
	const ASN1_OCTET_STRING *ca_id = X509_get0_subject_key_id(ca);
	unsigned char id[20], caid[20];
	int rc = 0;

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
	           : ext_aki(c.exts, caid, 20))) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "building the certificate", "OpenSSL failed");
		goto out;
	}
	rc = issue_cert(cli, s, &c, X509_get_subject_name(ca), X509_REQ_get_subject_name(req),
	                X509_REQ_get0_pubkey(req), out);
out:
	parts_free(&c);
	ERR_clear_error();
	return rc;
}

static void ca_transcript_head(struct cli *cli, const char *ceremony, X509 *ca,
                               const struct signer *s)
{
	unsigned char *der = NULL;
	char name[512], fp[100] = "";
	int n = i2d_X509(ca, &der);

	if (n > 0)
		fingerprint(der, (size_t)n, fp, sizeof(fp));
	OPENSSL_free(der);
	name_text(X509_get_subject_name(ca), name, sizeof(name));
	cli_transcript_begin(cli, ceremony);
	cli_transcript_line(cli, "CA key label:", "%s", s->ki.label);
	cli_transcript_line(cli, "CA key ID:", "%s", s->ki.id_hex);
	cli_transcript_line(cli, "CA key URI:", "%s", s->ki.uri);
	cli_transcript_line(cli, "CA public key SHA-256:", "%s", s->ki.kcv);
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
	unsigned char *der = NULL;
	size_t derlen = 0;
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
	    (rc = load_ca_cert(cli, a, key, &ca)) || (rc = signer_init(cli, ctx, key, &s)) ||
	    (rc = check_ca(cli, &s, ca, KU_KEY_CERT_SIGN, "sign certificates")))
		goto out;
	if (pr == PROF_INTERMEDIATE && X509_get_pathlen(ca) == 0) {
		rc = cli_failf(cli, HW_ERR_KEY_PURPOSE, "checking the CA certificate",
		               "its path length constraint (0) forbids issuing CA certificates");
		goto out;
	}
	if ((rc = build_leaf(cli, &s, ca, req, pr, san, days, &x)))
		goto out;
	if (!(der = der_of(x, NULL, &derlen))) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "encoding the certificate", "out of memory");
		goto out;
	}
	if ((rc = pem_of(cli, x, NULL, &pem, &pemlen)) ||
	    (rc = write_pem(cli, out, pem, pemlen, "writing the certificate")))
		goto out;

	issued_of(x, der, derlen, &is);
	n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki);
	spki_fp[0] = '\0';
	if (n > 0)
		fingerprint(spki, (size_t)n, spki_fp, sizeof(spki_fp));
	ca_transcript_head(cli, "ca sign (certificate from a request)", ca, &s);
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
	OPENSSL_free(der);
	X509_free(x);               /* before the library context it was made in */
	signer_free(&s);
	X509_free(ca);
	X509_REQ_free(req);
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

/* A version 2 CRL (RFC 5280 5.1) of the parts, signed by s and checked. */
static int build_crl(struct cli *cli, const struct signer *s, const X509_NAME *issuer,
                     const ASN1_TIME *this_upd, const ASN1_TIME *next_upd,
                     const struct revoked *r, const STACK_OF(X509_EXTENSION) *exts,
                     X509_CRL **out)
{
	X509_CRL *crl = X509_CRL_new_ex(s->lc, NULL);
	int ok, rc;

	ok = crl && X509_CRL_set_version(crl, X509_CRL_VERSION_2) &&
	     X509_CRL_set_issuer_name(crl, issuer) && X509_CRL_set1_lastUpdate(crl, this_upd) &&
	     X509_CRL_set1_nextUpdate(crl, next_upd);
	for (size_t i = 0; ok && i < r->n; i++) {
		X509_REVOKED *rev = X509_REVOKED_new();

		ok = rev && X509_REVOKED_set_serialNumber(rev, r->serial[i]) &&
		     X509_REVOKED_set_revocationDate(rev, (ASN1_TIME *)this_upd) &&
		     X509_CRL_add0_revoked(crl, rev);
		if (!ok)
			X509_REVOKED_free(rev);
	}
	for (int i = 0; ok && i < sk_X509_EXTENSION_num(exts); i++)
		ok = X509_CRL_add_ext(crl, sk_X509_EXTENSION_value(exts, i), -1);
	if (!ok) {
		X509_CRL_free(crl);
		ERR_clear_error();
		return cli_failf(cli, HW_ERR_CRYPTO, "building the CRL", "OpenSSL failed");
	}
	if ((rc = sign_and_check(cli, s, NULL, crl))) {
		X509_CRL_free(crl);
		return rc;
	}
	*out = crl;
	return 0;
}

int cmd_ca_crl(struct cli *cli, const struct cli_args *a)
{
	const char *out = cli_opt(a, "output");
	struct revoked r = { 0 };
	struct signer s = { 0 };
	unsigned char *der = NULL;
	size_t derlen = 0;
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
	    (rc = load_ca_cert(cli, a, key, &ca)) || (rc = signer_init(cli, ctx, key, &s)) ||
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
	if ((rc = build_crl(cli, &s, X509_get_subject_name(ca), this_upd, next_upd, &r, exts,
	                    &crl)))
		goto out;
	if (!(der = der_of(NULL, crl, &derlen))) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "encoding the CRL", "out of memory");
		goto out;
	}
	if ((rc = pem_of(cli, NULL, crl, &pem, &pemlen)) ||
	    (rc = write_pem(cli, out, pem, pemlen, "writing the CRL")))
		goto out;

	time_text(this_upd, tu, sizeof(tu));
	time_text(next_upd, nu, sizeof(nu));
	fingerprint(der, derlen, fp, sizeof(fp));
	name_text(X509_get_subject_name(ca), issuer, sizeof(issuer));
	ca_transcript_head(cli, "ca crl (certificate revocation list)", ca, &s);
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
	OPENSSL_free(der);
	X509_CRL_free(crl);         /* before the library context it was made in */
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
