/*
 * Key-reference files: software that only reads a private-key *file*
 * (nginx's ssl_certificate_key, PEM_read_bio_PrivateKey) loads an HSM key
 * through a PEM block that holds nothing but the key's pkcs11: URI:
 *
 *   -----BEGIN HSMWRAP KEY REFERENCE-----
 *   <base64 of the URI text, e.g. pkcs11:token=t;object=web;id=%01...;type=private>
 *   -----END HSMWRAP KEY REFERENCE-----
 *
 * No key material and no PIN: the PIN comes from the provider's
 * pin-source. Two decoders: PEM -> "DER" (the URI text, structure
 * hsmwrap-key-ref), and that -> an RSA, EC or EdDSA key object. OpenSSL's
 * own PEM decoder may hand the unarmoured body to the second decoder too,
 * so that one recognises the URI text by itself.
 *
 * pkcs11-provider's reference files are read too, so users can switch
 * providers without re-issuing references:
 *
 *   -----BEGIN PKCS#11 PROVIDER URI-----
 *   <base64 of DER SEQUENCE { desc VisibleString "PKCS#11 Provider URI v1.0",
 *                             uri UTF8String }>
 *   -----END PKCS#11 PROVIDER URI-----
 *
 * Its URI may carry pkcs11-provider's own query attributes; p11-kit's
 * parser (in libhsmwrap) rejects what it does not know, with an error.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "provider.h"

/* A reference file is tiny; anything far bigger is something else. */
#define REF_FILE_MAX (64u * 1024u)

#define P11PROV_PEM_LABEL "PKCS#11 PROVIDER URI"
#define P11PROV_DESC "PKCS#11 Provider URI v1.0"

/* pkcs11-provider's reference body, parsed by OpenSSL's DER templates. */
typedef struct {
	ASN1_VISIBLESTRING *desc;
	ASN1_UTF8STRING *uri;
} P11PROV_REF;

ASN1_SEQUENCE(P11PROV_REF) = {
	ASN1_SIMPLE(P11PROV_REF, desc, ASN1_VISIBLESTRING),
	ASN1_SIMPLE(P11PROV_REF, uri, ASN1_UTF8STRING),
} static_ASN1_SEQUENCE_END(P11PROV_REF)


/*
 * The URI inside a pkcs11-provider reference body, as a malloc'd string
 * (*len bytes, NUL-terminated), or NULL if the body is not one.
 */
static unsigned char *
p11prov_uri(const unsigned char *der, long dlen, long *len)
{
	const unsigned char *q = der;
	P11PROV_REF *ref = (P11PROV_REF *)ASN1_item_d2i(NULL, &q, dlen, ASN1_ITEM_rptr(P11PROV_REF));
	unsigned char *out = NULL;
	int n;

	if (ref && q == der + dlen &&
	    ASN1_STRING_length(ref->desc) == (int)strlen(P11PROV_DESC) &&
	    memcmp(ASN1_STRING_get0_data(ref->desc), P11PROV_DESC, strlen(P11PROV_DESC)) == 0 &&
	    (n = ASN1_STRING_length(ref->uri)) > 0 && n <= HWP_URI_MAX &&
	    (out = malloc((size_t)n + 1))) {
		memcpy(out, ASN1_STRING_get0_data(ref->uri), (size_t)n);
		out[n] = '\0';
		*len = n;
	}
	ASN1_item_free((ASN1_VALUE *)ref, ASN1_ITEM_rptr(P11PROV_REF));
	return out;
}

static void *
dec_newctx(void *provctx)
{
	return provctx;             /* stateless: the provider is all we need */
}

static void
dec_freectx(void *ctx)
{
}

/* Reads the whole input (at most max bytes) into a malloc'd buffer. */
static unsigned char *
slurp(hwp_prov *p, OSSL_CORE_BIO *cin, size_t max, size_t *len)
{
	unsigned char *buf = malloc(max + 1);
	size_t n = 0, got;

	if (!buf || !p->bio_read_ex) {
		free(buf);
		return NULL;
	}
	while (n < max + 1 && p->bio_read_ex(cin, buf + n, max + 1 - n, &got) && got > 0)
		n += got;
	if (n > max) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

static int
pem2der_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
               void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	hwp_prov *p = ctx;
	size_t len = 0;
	unsigned char *in = slurp(p, cin, REF_FILE_MAX, &len);
	char *name = NULL, *header = NULL;
	unsigned char *data = NULL;
	long dlen = 0;
	BIO *b;
	int ok = 1, found = 0;

	if (!in)
		return 1;               /* not ours: carry on with other decoders */
	if (!memmem(in, len, "-----BEGIN " HWP_REF_PEM_LABEL "-----",
	            sizeof("-----BEGIN " HWP_REF_PEM_LABEL "-----") - 1) &&
	    !memmem(in, len, "-----BEGIN " P11PROV_PEM_LABEL "-----",
	            sizeof("-----BEGIN " P11PROV_PEM_LABEL "-----") - 1)) {
		free(in);
		return 1;
	}
	b = BIO_new_mem_buf(in, (int)len);
	/* A file may hold other PEM blocks (a certificate) before ours. */
	ERR_set_mark();
	while (b && !found && PEM_read_bio(b, &name, &header, &data, &dlen) > 0) {
		found = strcmp(name, HWP_REF_PEM_LABEL) == 0 ? 1
		        : strcmp(name, P11PROV_PEM_LABEL) == 0 ? 2 : 0;
		if (!found) {
			OPENSSL_free(data);
			data = NULL;
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		name = header = NULL;
	}
	ERR_pop_to_mark();
	if (found == 2) {
		/* Unwrapped here: the key decoders then see plain URI text. */
		long ulen = 0;
		unsigned char *uri = p11prov_uri(data, dlen, &ulen);

		OPENSSL_free(data);
		data = NULL;
		if (!uri) {
			hwp_raise(p, HWP_R_BAD_REFERENCE, "the " P11PROV_PEM_LABEL " block is not "
			          "a pkcs11-provider URI reference (" P11PROV_DESC ")");
			BIO_free(b);
			free(in);
			return 0;
		}
		data = OPENSSL_malloc((size_t)ulen);
		if (data)
			memcpy(data, uri, (size_t)ulen);
		dlen = ulen;
		free(uri);
		if (!data)
			found = 0;
	}
	if (!found) {
		/* Fatal, not "not ours": OpenSSL's decoder drops the errors of a
		 * decoder that returns 1, and the user would only learn that no
		 * decoder understood the file. */
		hwp_raise(p, HWP_R_BAD_REFERENCE, "the " HWP_REF_PEM_LABEL " block is not valid PEM");
		ok = 0;
	} else {
		OSSL_PARAM params[3];
		params[0] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, data,
		                                              (size_t)dlen);
		params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
		                                             (char *)HWP_REF_STRUCTURE, 0);
		params[2] = OSSL_PARAM_construct_end();
		ok = data_cb(params, data_cbarg);
	}
	OPENSSL_free(data);
	BIO_free(b);
	free(in);
	return ok;
}

/* The URI text of a reference, NUL-terminated, or NULL if it is not one. */
static char *
ref_uri(const unsigned char *in, size_t len)
{
	char *s;

	if (len < 8 || len > HWP_URI_MAX || memcmp(in, "pkcs11:", 7) != 0)
		return NULL;
	/* Tolerate one trailing newline (a file written by hand). */
	if (in[len - 1] == '\n')
		len--;
	for (size_t i = 0; i < len; i++)
		if (in[i] <= 0x20 || in[i] >= 0x7f)
			return NULL;
	if (!(s = malloc(len + 1)))
		return NULL;
	memcpy(s, in, len);
	s[len] = '\0';
	return s;
}

/*
 * The RSA and the EC decoder may both be offered one reference; the key's
 * type is only known once it is found in the HSM. The last lookup is kept
 * for a moment so the second decoder neither searches nor -- with a wrong
 * PIN -- logs in a second time (each failed login counts towards lockout).
 */
static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	hwp_prov *prov;
	char *uri;
	hwp_key *key;               /* NULL: the lookup failed */
	time_t when;
} memo;

static hwp_key *
open_ref(hwp_prov *p, const char *uri, int *failed_before)
{
	hwp_key *k = NULL;
	time_t now = time(NULL);

	*failed_before = 0;
	pthread_mutex_lock(&memo_lock);
	if (memo.uri && memo.prov == p && strcmp(memo.uri, uri) == 0 && now - memo.when <= 2) {
		k = memo.key;
		if (k)
			atomic_fetch_add(&k->refs, 1);
		else
			*failed_before = 1;
		pthread_mutex_unlock(&memo_lock);
		return k;
	}
	pthread_mutex_unlock(&memo_lock);

	k = hwp_key_open(p, uri);

	pthread_mutex_lock(&memo_lock);
	free(memo.uri);
	hwp_key_unref(memo.key);
	memo.prov = p;
	memo.uri = strdup(uri);
	memo.key = k;
	memo.when = now;
	if (k)
		atomic_fetch_add(&k->refs, 1);
	pthread_mutex_unlock(&memo_lock);
	return k;
}

void
hwp_decoder_forget(hwp_prov *p)
{
	pthread_mutex_lock(&memo_lock);
	if (memo.prov == p) {
		free(memo.uri);
		hwp_key_unref(memo.key);
		memset(&memo, 0, sizeof(memo));
	}
	pthread_mutex_unlock(&memo_lock);
}

static int
der2key(hwp_prov *p, int kind, OSSL_CORE_BIO *cin, OSSL_CALLBACK *data_cb, void *data_cbarg)
{
	size_t len = 0;
	unsigned char *in = slurp(p, cin, HWP_URI_MAX + 1, &len);
	char *uri = in ? ref_uri(in, len) : NULL;
	hwp_key *k;
	int failed_before, ok;

	free(in);
	if (!uri)
		return 1;               /* not a reference: someone else's DER */
	k = open_ref(p, uri, &failed_before);
	if (!k) {
		if (failed_before)
			hwp_raise(p, HWP_R_BAD_REFERENCE, "key reference %.200s could not be loaded",
			          uri);
		free(uri);
		/* Fatal: no other decoder can load a reference, and only a
		 * failing decoder's errors (key not found, wrong PIN) reach the
		 * application. */
		return 0;
	}
	free(uri);
	if (k->kind != kind) {
		hwp_key_unref(k);
		return 1;               /* the other type's decoder takes it */
	}
	ok = hwp_key_pass(k, data_cb, data_cbarg);
	return ok;
}

static int
der2rsa_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
               void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	return der2key(ctx, HWP_RSA, cin, data_cb, data_cbarg);
}

static int
der2ec_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
              void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	return der2key(ctx, HWP_EC, cin, data_cb, data_cbarg);
}

static int
der2ed25519_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                   void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	return der2key(ctx, HWP_ED25519, cin, data_cb, data_cbarg);
}

static int
der2ed448_decode(void *ctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                 void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
	return der2key(ctx, HWP_ED448, cin, data_cb, data_cbarg);
}

static int
dec_does_selection(void *provctx, int selection)
{
	/* A reference stands for the whole key pair. */
	return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

#define FN(id, f) { OSSL_FUNC_DECODER_##id, (void (*)(void))(f) }

const OSSL_DISPATCH hwp_pem2der_decoder[] = {
	FN(NEWCTX, dec_newctx), FN(FREECTX, dec_freectx), FN(DECODE, pem2der_decode),
	{ 0, NULL }
};

const OSSL_DISPATCH hwp_der2rsa_decoder[] = {
	FN(NEWCTX, dec_newctx), FN(FREECTX, dec_freectx), FN(DECODE, der2rsa_decode),
	FN(DOES_SELECTION, dec_does_selection),
	{ 0, NULL }
};

const OSSL_DISPATCH hwp_der2ec_decoder[] = {
	FN(NEWCTX, dec_newctx), FN(FREECTX, dec_freectx), FN(DECODE, der2ec_decode),
	FN(DOES_SELECTION, dec_does_selection),
	{ 0, NULL }
};

const OSSL_DISPATCH hwp_der2ed25519_decoder[] = {
	FN(NEWCTX, dec_newctx), FN(FREECTX, dec_freectx), FN(DECODE, der2ed25519_decode),
	FN(DOES_SELECTION, dec_does_selection),
	{ 0, NULL }
};

const OSSL_DISPATCH hwp_der2ed448_decoder[] = {
	FN(NEWCTX, dec_newctx), FN(FREECTX, dec_freectx), FN(DECODE, der2ed448_decode),
	FN(DOES_SELECTION, dec_does_selection),
	{ 0, NULL }
};
