/*
 * The HSM keyring: the data key is wrapped and unwrapped by AES-256-GCM
 * inside the HSM, and stored exactly as the SDK's Raw AES keyring stores it,
 * so that any SDK holding the same key decrypts it; RSA recipients as the
 * Raw RSA keyring stores them.
 */
#include "ops/envelope.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* ---------------------------------------------------------------- */
/* HSM keyring                                                       */

/* ---- RSA: encrypt to host public keys, decrypt in the HSM ---- */

static const char *
oaep_md_name(hw_rsa_padding pad)
{
	switch (pad) {
	case HW_RSA_PAD_OAEP_SHA1:
		return "SHA1";
	case HW_RSA_PAD_OAEP_SHA384:
		return "SHA384";
	case HW_RSA_PAD_OAEP_SHA512:
		return "SHA512";
	default:
		return "SHA256";
	}
}

static hw_err
rsa_encrypt(const rsa_rcpt *r, hw_rsa_padding pad, const uint8_t *dk, size_t dklen,
            uint8_t *out, size_t *outlen)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, r->pub, NULL);
	const char *md = oaep_md_name(pad);
	size_t n = RSA_MAX_BYTES;
	bool oaep = pad != HW_RSA_PAD_PKCS1;
	bool ok = pc && EVP_PKEY_encrypt_init(pc) == 1 &&
	          EVP_PKEY_CTX_set_rsa_padding(pc, oaep ? RSA_PKCS1_OAEP_PADDING :
	                                       RSA_PKCS1_PADDING) == 1 &&
	          (!oaep || (EVP_PKEY_CTX_set_rsa_oaep_md_name(pc, md, NULL) == 1 &&
	                     EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, md, NULL) == 1)) &&
	          EVP_PKEY_encrypt(pc, out, &n, dk, dklen) == 1;

	EVP_PKEY_CTX_free(pc);
	if (!ok)
		return hw_fail(HW_ERR_CRYPTO, 0, "RSA encryption of the data key for '%s'", r->name);
	*outlen = n;
	return HW_OK;
}

typedef struct {
	hw_key *key;
	CK_MECHANISM_TYPE mech;
	CK_RSA_PKCS_OAEP_PARAMS oaep;
	const uint8_t *in;
	size_t inlen;
	uint8_t out[RSA_MAX_BYTES];
	size_t outlen;
} rsa_arg;

static CK_RV
op_rsa_decrypt(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	rsa_arg *a = arg;
	CK_MECHANISM m = { a->mech, NULL, 0 };
	CK_OBJECT_HANDLE h;
	CK_ULONG outlen = sizeof(a->out);
	CK_RV rv = hw_key_handle_ck(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	if (a->mech == CKM_RSA_PKCS_OAEP) {
		m.pParameter = &a->oaep;
		m.ulParameterLen = sizeof(a->oaep);
	}
	rv = ctx->fl->C_DecryptInit(s, &m, h);
	if (rv == CKR_OK)
		rv = hw_key_auth_ck(a->key, s);
	if (rv == CKR_OK)
		rv = ctx->fl->C_Decrypt(s, (CK_BYTE *)a->in, a->inlen, a->out, &outlen);
	if (rv == CKR_OK)
		a->outlen = outlen;
	return rv;
}

/* XORs MGF1(seed) into out (RFC 8017, B.2.1). */
static bool
mgf1_xor(const EVP_MD *md, const uint8_t *seed, size_t seedlen, uint8_t *out, size_t outlen)
{
	EVP_MD_CTX *x = EVP_MD_CTX_new();
	uint8_t d[EVP_MAX_MD_SIZE];
	size_t hl = (size_t)EVP_MD_get_size(md), done = 0;
	bool ok = x != NULL;

	for (uint32_t i = 0; ok && done < outlen; i++) {
		uint8_t c[4] = { (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
		                 (uint8_t)i };
		size_t n = outlen - done < hl ? outlen - done : hl;

		ok = EVP_DigestInit_ex(x, md, NULL) == 1 && EVP_DigestUpdate(x, seed, seedlen) == 1 &&
		     EVP_DigestUpdate(x, c, 4) == 1 && EVP_DigestFinal_ex(x, d, NULL) == 1;
		for (size_t j = 0; ok && j < n; j++)
			out[done + j] ^= d[j];
		done += n;
	}
	OPENSSL_cleanse(d, sizeof(d));
	EVP_MD_CTX_free(x);
	return ok;
}

/*
 * EME-OAEP decoding (RFC 8017, 7.1.2 step 3) of the raw RSA output em
 * (k bytes, changed in place) for a message of exactly dklen bytes. Every
 * check is folded into one flag without secret-dependent branches, so a
 * caller learns only "valid" or not, as from a token's own OAEP.
 */
static bool
oaep_decode(hw_rsa_padding pad, uint8_t *em, size_t k, uint8_t *dk, size_t dklen)
{
	EVP_MD *md = EVP_MD_fetch(NULL, oaep_md_name(pad), NULL);
	uint8_t lhash[EVP_MAX_MD_SIZE];
	size_t hl = md ? (size_t)EVP_MD_get_size(md) : 0, dblen, one;
	uint8_t *seed, *db;
	unsigned diff;
	bool ok;

	if (!md || k < 2 * hl + 2 + dklen) {
		EVP_MD_free(md);
		return false;
	}
	seed = em + 1;
	db = em + 1 + hl;
	dblen = k - hl - 1;
	ok = mgf1_xor(md, db, dblen, seed, hl) && mgf1_xor(md, seed, hl, db, dblen) &&
	     EVP_Digest("", 0, lhash, NULL, md, NULL) == 1;
	EVP_MD_free(md);
	if (!ok)
		return false;
	diff = em[0];
	for (size_t i = 0; i < hl; i++)
		diff |= db[i] ^ lhash[i];
	one = dblen - dklen - 1;
	for (size_t i = hl; i < one; i++)
		diff |= db[i];
	diff |= db[one] ^ 1u;
	memcpy(dk, db + one + 1, dklen);
	return diff == 0;
}

static bool
oaep_unsupported(CK_RV rv)
{
	return rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID ||
	       rv == CKR_MECHANISM_INVALID;
}

/*
 * The data key from an RSA EDK, decrypted in the HSM with the padding of
 * the configuration. A token without OAEP for that hash (SoftHSMv2 only
 * has SHA-1) gets a raw RSA decryption, if the key allows CKM_RSA_X_509,
 * and the OAEP encoding is checked here; the private key stays inside.
 */
static hw_err
rsa_unwrap(hw_key *key, hw_rsa_padding pad, const uint8_t *ct, size_t ctlen, uint8_t *dk,
           size_t dklen)
{
	rsa_arg *a = calloc(1, sizeof(*a));
	uint8_t *em = NULL;
	hw_err e;

	if (!a)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	a->key = key;
	a->in = ct;
	a->inlen = ctlen;
	if (pad == HW_RSA_PAD_PKCS1) {
		a->mech = CKM_RSA_PKCS;
	} else {
		a->mech = CKM_RSA_PKCS_OAEP;
		hw_rsa_oaep_params(pad, &a->oaep.hashAlg, &a->oaep.mgf);
		a->oaep.source = CKZ_DATA_SPECIFIED;
	}
	e = hw_ctx_run(key->ctx, op_rsa_decrypt, a, "RSA decryption of the data key in the HSM");
	/* SoftHSMv2 reports bad OAEP padding as a general error. */
	if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
		e = hw_fail(HW_ERR_INTEGRITY, CKR_GENERAL_ERROR, "RSA decryption of the data key "
		            "failed in the HSM (another key or padding)");
	if (e == HW_OK && a->outlen != dklen)
		e = hw_fail(HW_ERR_INTEGRITY, 0, "RSA decryption gave %zu bytes, not a data key",
		            a->outlen);
	if (e == HW_OK) {
		memcpy(dk, a->out, dklen);
	} else if (pad != HW_RSA_PAD_PKCS1 && oaep_unsupported(hw_last_ckrv())) {
		hw_clear_error();
		a->mech = CKM_RSA_X_509;
		e = hw_ctx_run(key->ctx, op_rsa_decrypt, a, "raw RSA decryption of the data key "
		               "in the HSM (the token lacks OAEP with this hash)");
		if (e == HW_OK && a->outlen > ctlen)
			e = hw_fail(HW_ERR_HSM, 0, "the token returned %zu bytes of raw RSA output",
			            a->outlen);
		if (e == HW_OK && !(em = calloc(1, ctlen)))
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		if (e == HW_OK) {
			/* Left-pad to the modulus size: some tokens strip leading zeros. */
			memcpy(em + ctlen - a->outlen, a->out, a->outlen);
			if (!oaep_decode(pad, em, ctlen, dk, dklen)) {
				OPENSSL_cleanse(dk, dklen);
				e = hw_fail(HW_ERR_INTEGRITY, CKR_ENCRYPTED_DATA_INVALID, "RSA-OAEP "
				            "decoding failed (another key or padding)");
			}
			OPENSSL_cleanse(em, ctlen);
		}
		free(em);
	}
	OPENSSL_cleanse(a, sizeof(*a));
	free(a);
	return e;
}

/* ---- the keyring callbacks ---- */


static hw_err
wrap_hsm(wrap_arg *w, const uint8_t *aad, size_t aadlen, const uint8_t *dk, size_t dklen,
         hw_wbuf *edks, size_t *nedks)
{
	uint8_t ct[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
	hw_err e = HW_OK;

	for (size_t i = 0; i < w->nkeys && e == HW_OK; i++) {
		hw_key *key = w->keys[i];
		size_t nl = strlen(key->label);
		hw_gcm_arg a;

		if (key->cls != CKO_SECRET_KEY || key->ktype != CKK_AES || !key->can_encrypt)
			return hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' may not wrap data keys (it is "
			               "not an AES envelope key)", key->label);
		if (nl == 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "a key without a label cannot be named "
			               "in a message");
		memset(&a, 0, sizeof(a));
		a.key = key;
		a.encrypt = true;
		a.aad = aad;
		a.aadlen = aadlen;
		a.in = (uint8_t *)dk;
		a.inlen = dklen;
		a.out = ct;
		a.outlen = sizeof(ct);
		e = hw_ctx_run(key->ctx, hw_op_gcm, &a, "AES-GCM wrapping of the data key in the HSM");
		if (e == HW_OK && a.outlen != dklen + ESDK_TAG_LEN)
			e = hw_fail(HW_ERR_HSM, 0, "the token returned %lu bytes of AES-GCM output",
			            (unsigned long)a.outlen);
		if (e != HW_OK)
			break;
		/* Raw AES keyring layout (raw-aes-keyring.md): the IV read back
		 * from the parameters, in case the token chose it. */
		hw_wbuf_str16(edks, w->cfg->ns, strlen(w->cfg->ns));
		hw_wbuf_u16(edks, (uint16_t)(nl + PINFO_TRAILER));
		hw_wbuf_put(edks, key->label, nl);
		hw_wbuf_u32(edks, WRAP_TAG_BITS);
		hw_wbuf_u32(edks, ESDK_IV_LEN);
		hw_wbuf_put(edks, a.iv, ESDK_IV_LEN);
		hw_wbuf_str16(edks, ct, a.outlen);
		if (edks->err != HW_OK)
			e = hw_fail(edks->err, 0, "encrypted data keys");
		else
			(*nedks)++;
	}
	OPENSSL_cleanse(ct, sizeof(ct));
	return e;
}

/* Raw RSA keyring layout (raw-rsa-keyring.md): no AAD, name alone as info. */
static hw_err
wrap_rsa(wrap_arg *w, const uint8_t *dk, size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	uint8_t ct[RSA_MAX_BYTES];
	size_t ctlen = 0;
	hw_err e = HW_OK;

	for (size_t i = 0; i < w->cfg->nrcpts && e == HW_OK; i++) {
		const rsa_rcpt *r = &w->cfg->rcpts[i];

		e = rsa_encrypt(r, w->cfg->rsa_pad, dk, dklen, ct, &ctlen);
		if (e != HW_OK)
			break;
		hw_wbuf_str16(edks, r->pid, strlen(r->pid));
		hw_wbuf_str16(edks, r->name, strlen(r->name));
		hw_wbuf_str16(edks, ct, ctlen);
		if (edks->err != HW_OK)
			e = hw_fail(edks->err, 0, "encrypted data keys");
		else
			(*nedks)++;
	}
	return e;
}

static uint8_t *
dup_bytes(const uint8_t *p, size_t n)
{
	uint8_t *d = malloc(n ? n : 1);

	if (d && n)
		memcpy(d, p, n);
	return d;
}

hw_err
kr_wrap(void *arg, const esdk_suite *s, const uint8_t *aad, size_t aadlen, const uint8_t *dk,
        size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	wrap_arg *w = arg;
	size_t start = edks->len, n0 = *nedks;
	hw_err e;

	(void)s;
	if (w->replay) {
		/* The id covered the caller's context; the full one (with the
		 * cached signing key's public half) must match as well. */
		if (w->replay->eclen != aadlen ||
		    (aadlen && memcmp(w->replay->ec, aad, aadlen) != 0))
			return hw_fail(HW_ERR_CRYPTO, 0, "data-key cache: context mismatch");
		hw_wbuf_put(edks, w->replay->edks, w->replay->edkslen);
		*nedks += w->replay->nedks;
		return edks->err == HW_OK ? HW_OK : hw_fail(edks->err, 0, "encrypted data keys");
	}
	e = wrap_hsm(w, aad, aadlen, dk, dklen, edks, nedks);
	if (e == HW_OK)
		e = wrap_rsa(w, dk, dklen, edks, nedks);
	if (e == HW_OK && w->record) {
		w->rec_edkslen = edks->len - start;
		w->rec_nedks = *nedks - n0;
		w->rec_eclen = aadlen;
		w->rec_edks = dup_bytes(edks->p + start, w->rec_edkslen);
		w->rec_ec = dup_bytes(aad, aadlen);
		if (!w->rec_edks || !w->rec_ec)
			w->record = false;
	}
	return e;
}


/* pkcs11:object=<name>, percent-encoded, so no name is read as a spec. */
static char *
label_uri(const uint8_t *name, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char *u = malloc(15 + 3 * n + 1), *p;

	if (!u)
		return NULL;
	p = u + sprintf(u, "pkcs11:object=");
	for (size_t i = 0; i < n; i++) {
		uint8_t c = name[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return u;
}

static hw_err
find_named(unwrap_arg *u, const uint8_t *name, size_t nl, hw_key **use, hw_key **owned)
{
	char *uri;
	hw_err e;

	*owned = NULL;
	if (u->allowed) {
		for (size_t i = 0; i < u->nallowed; i++)
			if (strlen(u->allowed[i]->label) == nl &&
			    memcmp(u->allowed[i]->label, name, nl) == 0) {
				*use = u->allowed[i];
				return HW_OK;
			}
		/* Another version of an allowed key (made before a rotation). */
		for (size_t i = 0; i < u->nallowed; i++)
			if (hw_key_find_sibling(u->allowed[i], name, nl, owned) == HW_OK) {
				*use = *owned;
				return HW_OK;
			}
		return HW_ERR_KEY_NOT_FOUND;
	}
	if (nl == 0 || nl > 128 || memchr(name, 0, nl))
		return HW_ERR_KEY_NOT_FOUND;
	uri = label_uri(name, nl);
	if (!uri)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = hw_key_find(u->ctx, uri, owned);
	free(uri);
	if (e == HW_OK)
		*use = *owned;
	return e;
}

static bool
is_aes(const hw_key *k)
{
	return k->cls == CKO_SECRET_KEY;
}

static bool
is_rsa_private(const hw_key *k)
{
	return k->cls == CKO_PRIVATE_KEY && k->ktype == CKK_RSA;
}

/*
 * The key an EDK of our namespace names, and how to use it: Raw AES
 * layout (name || 128 || 12 || IV) for AES keys, Raw RSA layout (the
 * whole provider info is the name) for RSA private keys.
 */
static hw_err
edk_key(unwrap_arg *u, const esdk_edk *k, size_t dklen, hw_key **use, hw_key **owned,
        const uint8_t **iv, size_t *nl)
{
	hw_err e;

	*use = *owned = NULL;
	*iv = NULL;
	if (k->pinfo_len >= PINFO_TRAILER && k->ct_len == dklen + ESDK_TAG_LEN) {
		hw_rbuf r;
		uint32_t tagbits, ivlen;

		*nl = k->pinfo_len - PINFO_TRAILER;
		hw_rbuf_init(&r, k->pinfo + *nl, PINFO_TRAILER);
		(void)hw_rbuf_u32(&r, &tagbits);
		(void)hw_rbuf_u32(&r, &ivlen);
		(void)hw_rbuf_bytes(&r, ESDK_IV_LEN, iv);
		if (tagbits == WRAP_TAG_BITS && ivlen == ESDK_IV_LEN) {
			e = find_named(u, k->pinfo, *nl, use, owned);
			if (e != HW_OK && e != HW_ERR_KEY_NOT_FOUND)
				return e;
			if (e == HW_OK && is_aes(*use))
				return HW_OK;
			hw_key_free(*owned);
			*use = *owned = NULL;
		}
		*iv = NULL;
	}
	*nl = k->pinfo_len;
	e = find_named(u, k->pinfo, k->pinfo_len, use, owned);
	if (e != HW_OK)
		return e;
	if (is_rsa_private(*use))
		return HW_OK;
	hw_key_free(*owned);
	*use = *owned = NULL;
	return HW_ERR_KEY_NOT_FOUND;
}

static hw_err
unwrap_aes(hw_key *key, const uint8_t *iv, const esdk_edk *k, const uint8_t *aad,
           size_t aadlen, uint8_t *dk, size_t dklen)
{
	uint8_t out[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
	hw_gcm_arg a;
	hw_err e;

	memset(&a, 0, sizeof(a));
	a.key = key;
	a.encrypt = false;
	memcpy(a.iv, iv, ESDK_IV_LEN);
	a.aad = aad;
	a.aadlen = aadlen;
	a.in = (uint8_t *)k->ct;
	a.inlen = k->ct_len;
	a.out = out;
	a.outlen = sizeof(out);
	e = hw_ctx_run(key->ctx, hw_op_gcm, &a, "AES-GCM unwrapping of the data key in the HSM");
	if (e == HW_OK && a.outlen != dklen)
		e = hw_fail(HW_ERR_HSM, 0, "the token returned a data key of %lu bytes",
		            (unsigned long)a.outlen);
	/* Some tokens report a failed tag check as a general error. */
	if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
		e = HW_ERR_INTEGRITY;
	if (e == HW_OK)
		memcpy(dk, out, dklen);
	OPENSSL_cleanse(out, sizeof(out));
	return e;
}

static hw_err
unwrap_hsm(unwrap_arg *u, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
           size_t dklen)
{
	size_t nsl = strlen(u->ns), tried = 0;
	hw_err hard = HW_OK;
	char hard_detail[256] = "", names[256] = "";
	size_t nlen = 0;

	for (size_t i = 0; i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];
		hw_key *key = NULL, *owned = NULL;
		const uint8_t *iv;
		size_t nl = 0;
		hw_err e;

		if (k->pid_len != nsl || memcmp(k->pid, u->ns, nsl) != 0)
			continue;
		e = edk_key(u, k, dklen, &key, &owned, &iv, &nl);
		if (nlen + nl + 4 < sizeof(names))
			nlen += (size_t)snprintf(names + nlen, sizeof(names) - nlen, "%s'%.*s'",
			                         nlen ? ", " : "", (int)nl, (const char *)k->pinfo);
		if (e == HW_ERR_KEY_NOT_FOUND)
			continue;
		if (e == HW_OK && !key->can_decrypt)
			e = hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' may not unwrap data keys",
			            key->label);
		if (e == HW_OK) {
			tried++;
			e = iv ? unwrap_aes(key, iv, k, aad, aadlen, dk, dklen) :
			    rsa_unwrap(key, u->rsa_pad, k->ct, k->ct_len, dk, dklen);
		}
		hw_key_free(owned);
		if (e == HW_OK)
			return HW_OK;
		if (e != HW_ERR_INTEGRITY && hard == HW_OK) {
			hard = e;
			snprintf(hard_detail, sizeof(hard_detail), "%s", hw_last_detail());
		}
	}
	if (hard != HW_OK)
		return hw_fail(hard, hw_last_ckrv(), "%s", hard_detail);
	if (tried)
		return hw_fail(HW_ERR_INTEGRITY, 0, "the data key wrapped for %s did not decrypt "
		               "(wrong encryption context or RSA padding, altered message, or "
		               "another key with that label)", names);
	if (!nlen)
		return hw_fail(u->allowed ? HW_ERR_WRONG_KEY : HW_ERR_KEY_NOT_FOUND, 0,
		               "the message has no data key wrapped by an HSM key of namespace "
		               "'%s'", u->ns);
	if (u->allowed)
		return hw_fail(HW_ERR_WRONG_KEY, 0, "the message's data key is wrapped for %s, "
		               "none of the keys allowed", names);
	return hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "the message's data key is wrapped for %s, "
	               "none of which is on the token", names);
}

hw_err
kr_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
          size_t dklen)
{
	unwrap_arg *u = arg;
	uint8_t id[CACHE_ID_LEN];
	cache_mat m;
	hw_err e;

	if (u->cache) {
		e = dec_cache_id(u->part, h, aad, aadlen, id);
		if (e != HW_OK)
			return e;
		if (cache_get(u->cache, ENT_DEC, id, 0, &m)) {
			bool fits = m.dklen == dklen;

			if (fits)
				memcpy(dk, m.dk, dklen);
			mat_clear(&m);
			if (fits)
				return HW_OK;
		}
	}
	e = unwrap_hsm(u, h, aad, aadlen, dk, dklen);
	if (e == HW_OK && u->cache)
		cache_put(u->cache, ENT_DEC, id, 0, dk, dklen, NULL, 0, 0, NULL, 0, NULL);
	return e;
}

