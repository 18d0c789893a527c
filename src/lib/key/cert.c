/*
 * Certificates stored on the token next to their key pair, as PKCS#11
 * applications (pkcs11-tool, p11-kit, browsers, CloudHSM's tools) expect
 * to find them: a CKO_CERTIFICATE object with the key's CKA_ID and label.
 * The certificate is public, so the object is not CKA_PRIVATE: anyone can
 * read the CA certificate without the PIN.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

/* Beyond any real certificate; keeps a bad caller from filling the token. */
#define CERT_MAX (64u * 1024u)
/* Searches stop here: a key never has this many certificates. */
#define CERT_FIND_MAX 8

typedef struct {
	hw_key *key;
	CK_OBJECT_HANDLE found[CERT_FIND_MAX];
	CK_ULONG nfound;
} cfind_arg;

static CK_RV
find_certs(hw_ctx *ctx, CK_SESSION_HANDLE s, cfind_arg *a)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, a->key->id, a->key->id_len },
	};
	CK_RV rv, final;

	a->nfound = 0;
	rv = ctx->fl->C_FindObjectsInit(s, t, 2);
	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_FindObjects(s, a->found, CERT_FIND_MAX, &a->nfound);
	/* A search left open would fail the session's next borrower. */
	final = ctx->fl->C_FindObjectsFinal(s);
	return rv != CKR_OK ? rv : final;
}

/* The parts of a certificate PKCS#11 wants as separate attributes. */
typedef struct {
	hw_key *key;
	const uint8_t *der;
	size_t len;
	unsigned char *subject, *issuer, *serial;
	int subject_len, issuer_len, serial_len;
	CK_OBJECT_HANDLE h;
} store_arg;

static CK_RV
op_cert_store(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	store_arg *a = arg;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	cfind_arg f = { a->key, { 0 }, 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
		{ CKA_TOKEN, (void *)&yes, sizeof(CK_BBOOL) },
		{ CKA_PRIVATE, (void *)&no, sizeof(CK_BBOOL) },
		{ CKA_LABEL, a->key->label, strlen(a->key->label) },
		{ CKA_ID, a->key->id, a->key->id_len },
		{ CKA_SUBJECT, a->subject, (CK_ULONG)a->subject_len },
		{ CKA_ISSUER, a->issuer, (CK_ULONG)a->issuer_len },
		{ CKA_SERIAL_NUMBER, a->serial, (CK_ULONG)a->serial_len },
		{ CKA_VALUE, (void *)a->der, a->len },
	};
	CK_RV rv;

	/* Checked in the same session run as the creation: a retry after a
	 * lost session must not add a second certificate. */
	rv = find_certs(ctx, s, &f);
	if (rv != CKR_OK)
		return rv;
	if (f.nfound > 0)
		return hw_op_fail(hw_fail(HW_ERR_KEY_EXISTS, 0,
		                          "key '%s' already has a certificate on the token",
		                          a->key->label));
	return ctx->fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &a->h);
}

/* The certificate must certify this key: a CA certificate stored next to
 * another key would make every lookup by CKA_ID lie. */
static hw_err
check_public_key(hw_key *key, X509 *x)
{
	uint8_t *pub = NULL;
	unsigned char *cpub = NULL;
	size_t publen = 0;
	int n;
	hw_err e;

	e = hw_key_public_der(key, &pub, &publen);
	if (e != HW_OK)
		return e;
	n = i2d_PUBKEY(X509_get0_pubkey(x), &cpub);
	if (n <= 0)
		e = hw_fail(HW_ERR_FORMAT, 0, "the certificate's public key is unreadable");
	else if ((size_t)n != publen || memcmp(pub, cpub, publen) != 0)
		e = hw_fail(HW_ERR_WRONG_KEY, 0, "the certificate is not for key '%s'", key->label);
	OPENSSL_free(cpub);
	free(pub);
	return e;
}

HW_EXPORT hw_err
hw_cert_store(hw_key *key, const uint8_t *der, size_t len)
{
	const unsigned char *p = der;
	store_arg a;
	X509 *x = NULL;
	hw_err e;

	if (!key || !der || len == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_cert_store");
	hw_clear_error();
	if (key->cls != CKO_PRIVATE_KEY || key->id_len == 0)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "'%s' is not a key pair with a CKA_ID",
		               key->label);
	if (len > CERT_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "a certificate of %zu bytes", len);
	x = d2i_X509(NULL, &p, (long)len);
	if (!x || p != der + len) {
		X509_free(x);
		return hw_fail(HW_ERR_FORMAT, 0, "not one DER X.509 certificate");
	}
	memset(&a, 0, sizeof(a));
	a.key = key;
	a.der = der;
	a.len = len;
	e = check_public_key(key, x);
	if (e != HW_OK)
		goto out;
	a.subject_len = i2d_X509_NAME(X509_get_subject_name(x), &a.subject);
	a.issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &a.issuer);
	a.serial_len = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &a.serial);
	if (a.subject_len <= 0 || a.issuer_len <= 0 || a.serial_len <= 0) {
		e = hw_fail(HW_ERR_CRYPTO, 0, "encoding the certificate's names");
		goto out;
	}
	/* Not idempotent: a retry after a device error could store it twice. */
	e = hw_ctx_run_once(key->ctx, op_cert_store, &a, "C_CreateObject (certificate)");
out:
	OPENSSL_free(a.subject);
	OPENSSL_free(a.issuer);
	OPENSSL_free(a.serial);
	X509_free(x);
	return e;
}

typedef struct {
	cfind_arg f;
	uint8_t *der;
	CK_ULONG len;
} get_arg;

static CK_RV
op_cert_get(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	get_arg *a = arg;
	CK_ATTRIBUTE t = { CKA_VALUE, NULL, 0 };
	CK_RV rv = find_certs(ctx, s, &a->f);

	if (rv != CKR_OK || a->f.nfound != 1)
		return rv;
	rv = ctx->fl->C_GetAttributeValue(s, a->f.found[0], &t, 1);
	if (rv != CKR_OK)
		return rv;
	if (t.ulValueLen == CK_UNAVAILABLE_INFORMATION || t.ulValueLen == 0 ||
	    t.ulValueLen > CERT_MAX)
		return hw_op_fail(hw_fail(HW_ERR_FORMAT, 0, "the certificate object has no value"));
	free(a->der);
	a->der = t.pValue = malloc(t.ulValueLen);
	if (!a->der)
		return CKR_HOST_MEMORY;
	rv = ctx->fl->C_GetAttributeValue(s, a->f.found[0], &t, 1);
	a->len = t.ulValueLen;
	return rv;
}

HW_EXPORT hw_err
hw_cert_get(hw_key *key, uint8_t **der, size_t *len)
{
	get_arg a;
	hw_err e;

	if (!key || !der || !len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_cert_get");
	hw_clear_error();
	if (key->id_len == 0)
		return hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "key '%s' has no CKA_ID", key->label);
	memset(&a, 0, sizeof(a));
	a.f.key = key;
	e = hw_ctx_run(key->ctx, op_cert_get, &a, "reading the certificate");
	if (e == HW_OK && a.f.nfound == 0)
		e = hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "no certificate for key '%s' on the token",
		            key->label);
	else if (e == HW_OK && a.f.nfound > 1)
		e = hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "%lu certificates for key '%s' on the token",
		            (unsigned long)a.f.nfound, key->label);
	if (e == HW_OK) {
		*der = a.der;
		*len = a.len;
		return HW_OK;
	}
	free(a.der);
	return e;
}

static CK_RV
op_cert_destroy(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	cfind_arg *a = arg;
	CK_RV rv = find_certs(ctx, s, a);

	for (CK_ULONG i = 0; rv == CKR_OK && i < a->nfound; i++)
		rv = ctx->fl->C_DestroyObject(s, a->found[i]);
	return rv;
}

HW_EXPORT hw_err
hw_cert_destroy(hw_key *key)
{
	cfind_arg a;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_cert_destroy");
	hw_clear_error();
	if (key->id_len == 0)
		return HW_OK;
	memset(&a, 0, sizeof(a));
	a.key = key;
	return hw_ctx_run_once(key->ctx, op_cert_destroy, &a, "C_DestroyObject (certificate)");
}

/* ---------------------------------------------------------------- */
/* Finding certificates by URI (the OpenSSL provider's store)        */

typedef struct {
	CK_ATTRIBUTE tmpl[3];
	CK_ULONG ntmpl;
	hw_cert_entry *certs;       /* HW_CERT_FIND_MAX entries */
	size_t n;
} list_arg;

static void
list_reset(list_arg *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->certs[i].der);
	memset(a->certs, 0, HW_CERT_FIND_MAX * sizeof(*a->certs));
	a->n = 0;
}

static CK_RV
op_cert_list(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	list_arg *a = arg;
	CK_OBJECT_HANDLE found[HW_CERT_FIND_MAX];
	CK_ULONG nfound = 0;
	CK_RV rv, final;

	/* A retried run starts over. */
	list_reset(a);
	rv = ctx->fl->C_FindObjectsInit(s, a->tmpl, a->ntmpl);
	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_FindObjects(s, found, HW_CERT_FIND_MAX, &nfound);
	final = ctx->fl->C_FindObjectsFinal(s);
	if (rv == CKR_OK)
		rv = final;
	for (CK_ULONG i = 0; rv == CKR_OK && i < nfound; i++) {
		hw_cert_entry *c = &a->certs[a->n];
		CK_ATTRIBUTE t[2] = {
			{ CKA_VALUE, NULL, 0 },
			{ CKA_LABEL, c->label, sizeof(c->label) - 1 },
		};

		rv = ctx->fl->C_GetAttributeValue(s, found[i], t, 2);
		if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
		    t[0].ulValueLen == CK_UNAVAILABLE_INFORMATION || t[0].ulValueLen == 0 ||
		    t[0].ulValueLen > CERT_MAX) {
			rv = CKR_OK;        /* not a certificate we can hand out: skip it */
			memset(c->label, 0, sizeof(c->label));
			continue;
		}
		if (rv != CKR_OK)
			break;
		if (!(t[0].pValue = malloc(t[0].ulValueLen)))
			return CKR_HOST_MEMORY;
		t[1].ulValueLen = sizeof(c->label) - 1;
		rv = ctx->fl->C_GetAttributeValue(s, found[i], t, 2);
		if (rv != CKR_OK) {
			free(t[0].pValue);
			break;
		}
		c->der = t[0].pValue;
		c->len = t[0].ulValueLen;
		c->label[t[1].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0 : t[1].ulValueLen] = '\0';
		a->n++;
	}
	return rv;
}

HW_EXPORT void
hw_cert_entries_free(hw_cert_entry *certs, size_t n)
{
	for (size_t i = 0; certs && i < n; i++)
		free(certs[i].der);
	free(certs);
}

HW_EXPORT hw_err
hw_cert_find(hw_ctx *ctx, const char *uri, hw_cert_entry **certs, size_t *n)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	P11KitUri *u = NULL;
	CK_ATTRIBUTE *attr;
	list_arg a;
	hw_err e;
	int r;

	if (!ctx || !uri || !certs || !n)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_cert_find");
	hw_clear_error();
	if ((e = hw_ctx_ready(ctx)) != HW_OK)
		return e;
	if (!(u = p11_kit_uri_new()))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, u);
	if (r != P11_KIT_URI_OK) {
		p11_kit_uri_free(u);
		return hw_fail(HW_ERR_URI, 0, "%s", p11_kit_uri_message(r));
	}
	if ((attr = p11_kit_uri_get_attribute(u, CKA_CLASS)) &&
	    (attr->ulValueLen != sizeof(CK_OBJECT_CLASS) ||
	     *(CK_OBJECT_CLASS *)attr->pValue != CKO_CERTIFICATE)) {
		p11_kit_uri_free(u);
		return hw_fail(HW_ERR_URI, 0, "the URI names a key (type=), not certificates");
	}
	/* A URI for another token must not silently list this one's. */
	if (!p11_kit_uri_match_token_info(u, &ctx->tinfo)) {
		p11_kit_uri_free(u);
		*certs = NULL;
		*n = 0;
		return HW_OK;
	}
	memset(&a, 0, sizeof(a));
	a.tmpl[a.ntmpl++] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	if ((attr = p11_kit_uri_get_attribute(u, CKA_LABEL)))
		a.tmpl[a.ntmpl++] = *attr;
	if ((attr = p11_kit_uri_get_attribute(u, CKA_ID)))
		a.tmpl[a.ntmpl++] = *attr;
	if (!(a.certs = calloc(HW_CERT_FIND_MAX, sizeof(*a.certs)))) {
		p11_kit_uri_free(u);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	e = hw_ctx_run(ctx, op_cert_list, &a, "searching certificates");
	p11_kit_uri_free(u);
	if (e != HW_OK) {
		list_reset(&a);
		free(a.certs);
		return e;
	}
	*certs = a.certs;
	*n = a.n;
	return HW_OK;
}
