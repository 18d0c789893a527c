/*
 * Key references out: writing an HSM key as a private-key PEM file
 * (openssl genpkey -out, openssl pkey -out, PEM_write_bio_PrivateKey)
 * writes the key-reference block decoder.c reads back: the key's pkcs11:
 * URI, never key material (the host has none) and never a PIN. The same
 * file `hsmwrap key export-ref` writes. Soft keys are not ours to encode.
 */
#include "config.h"

#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/pem.h>

#include "provider.h"

static void *
enc_newctx(void *provctx)
{
	return provctx;
}

static void
enc_freectx(void *vctx)
{
	(void)vctx;
}

/* Only the private key has no other encoding: public keys and parameters
 * go to the default provider's encoders, through the host copy. */
static int
enc_does_selection(void *provctx, int selection)
{
	return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

static int
enc_encode(void *vctx, OSSL_CORE_BIO *cout, const void *obj, const OSSL_PARAM abstract[],
           int selection, OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
	hwp_prov *p = vctx;
	const hwp_key *k = obj;
	hw_key_info ki;
	BIO *mem = NULL;
	char *pem;
	long len;
	size_t done = 0;
	hw_err e;
	int ok = 0;

	if (!k || !k->key) {
		hwp_raise(p, HWP_R_PRIVATE_EXPORT, "only keys held by the HSM are written as references");
		return 0;
	}
	HWP_HSM_BEGIN();
	e = hw_key_info_get(k->key, &ki);
	HWP_HSM_END();
	if (e || !ki.uri[0]) {
		hwp_raise_hw(p, e ? e : HW_ERR_HSM, "reading the key's pkcs11: URI");
		return 0;
	}
	if (!p->bio_write_ex || !(mem = BIO_new(BIO_s_mem())) ||
	    PEM_write_bio(mem, HWP_REF_PEM_LABEL, "", (const unsigned char *)ki.uri,
	                  (long)strlen(ki.uri)) <= 0 ||
	    (len = BIO_get_mem_data(mem, &pem)) <= 0) {
		hwp_raise(p, HWP_R_INTERNAL, "PEM-encoding the key reference");
		goto out;
	}
	ok = p->bio_write_ex(cout, pem, (size_t)len, &done) && done == (size_t)len;
out:
	BIO_free(mem);
	return ok;
}

#define FN(id, f) { OSSL_FUNC_ENCODER_##id, (void (*)(void))(f) }

const OSSL_DISPATCH hwp_ref_encoder[] = {
	FN(NEWCTX, enc_newctx), FN(FREECTX, enc_freectx),
	FN(DOES_SELECTION, enc_does_selection), FN(ENCODE, enc_encode),
	{ 0, NULL }
};
