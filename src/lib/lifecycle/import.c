/*
 * Bringing outside key material into the token without it ever being
 * readable there afterwards:
 *  - BYOK as in KMS: an RSA-3072 import key whose private half can only
 *    unwrap; the owner wraps with plain OpenSSL (RSA-OAEP-SHA-256, or
 *    RSA-AES = OAEP of a temporary AES key + AES-KWP of the target), and
 *    C_UnwrapKey turns the blob into a non-extractable key inside the HSM;
 *  - a value the caller holds (custodian components XORed in memory),
 *    created with C_CreateObject.
 * Both give the key the attributes key.c gives generated keys.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define BOOL_ATTR(t, v) (CK_ATTRIBUTE){ (t), (void *)(v), sizeof(CK_BBOOL) }

CK_ULONG
hw_secret_key_template(hw_ctx *ctx, hw_purpose purpose, const char *label, bool extractable,
                       hw_tmpl_store *st, CK_ATTRIBUTE *t)
{
	bool envelope = purpose == HW_PURPOSE_ENVELOPE;
	bool keywrap = purpose == HW_PURPOSE_KEYWRAP;
	CK_ULONG n = 0;

	st->cls = CKO_SECRET_KEY;
	st->kt = CKK_AES;
	st->yes = CK_TRUE;
	st->no = CK_FALSE;
	/* Least privilege, as for generated keys: one mechanism per purpose. */
	st->allowed = envelope ? CKM_AES_GCM : ctx->kwp_mech;
	t[n++] = (CK_ATTRIBUTE){ CKA_CLASS, &st->cls, sizeof(st->cls) };
	t[n++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &st->kt, sizeof(st->kt) };
	t[n++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label, strlen(label) };
	t[n++] = (CK_ATTRIBUTE){ CKA_ID, st->id, sizeof(st->id) };
	t[n++] = BOOL_ATTR(CKA_TOKEN, &st->yes);
	t[n++] = BOOL_ATTR(CKA_PRIVATE, &st->yes);
	t[n++] = BOOL_ATTR(CKA_SENSITIVE, &st->yes);
	t[n++] = BOOL_ATTR(CKA_EXTRACTABLE, extractable ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_WRAP_WITH_TRUSTED, extractable ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_ENCRYPT, envelope ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_DECRYPT, envelope ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_WRAP, keywrap ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_UNWRAP, keywrap ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_SIGN, &st->no);
	t[n++] = BOOL_ATTR(CKA_VERIFY, &st->no);
	t[n++] = BOOL_ATTR(CKA_DERIVE, &st->no);
	if (hw_ctx_can(ctx, HW_CAP_ALLOWED_MECHS))
		t[n++] = (CK_ATTRIBUTE){ CKA_ALLOWED_MECHANISMS, &st->allowed, sizeof(st->allowed) };
	return n;
}

hw_err
hw_label_free_check(hw_ctx *ctx, const char *label)
{
	hw_key *existing = NULL;
	hw_err e = hw_key_find(ctx, label, &existing);

	hw_key_free(existing);
	if (e == HW_OK || e == HW_ERR_KEY_AMBIGUOUS)
		return hw_fail(HW_ERR_KEY_EXISTS, 0, "%s", label);
	if (e != HW_ERR_KEY_NOT_FOUND)
		return e;
	hw_clear_error();
	return HW_OK;
}

static hw_err
check_new_key(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose)
{
	hw_err e;

	if (!ctx || !label || !*label || strlen(label) > 128)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "a key label of 1 to 128 bytes is required");
	if (type != HW_KEY_AES256)
		return hw_fail(HW_ERR_UNSUPPORTED, 0, "only aes256 keys can be imported");
	if (purpose != HW_PURPOSE_ENVELOPE && purpose != HW_PURPOSE_KEYWRAP)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "purpose %s does not fit a %s key",
		               hw_purpose_name(purpose), hw_key_type_name(type));
	hw_clear_error();
	e = hw_ctx_ready(ctx);
	if (e != HW_OK)
		return e;
	e = hw_ctx_require(ctx, purpose == HW_PURPOSE_KEYWRAP ? HW_CAP_AES_KWP : HW_CAP_AES_GCM,
	                   "key import");
	return e != HW_OK ? e : hw_label_free_check(ctx, label);
}

HW_EXPORT hw_err
hw_kcv_aes(const uint8_t *key, size_t len, uint8_t kcv[3])
{
	static const uint8_t zero[16];
	uint8_t out[32];
	int n = 0, n2 = 0;
	const EVP_CIPHER *c = len == 16 ? EVP_aes_128_ecb() : len == 24 ? EVP_aes_192_ecb()
	                      : len == 32 ? EVP_aes_256_ecb() : NULL;
	EVP_CIPHER_CTX *cc;
	hw_err e = HW_OK;

	if (!key || !kcv || !c)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an AES key of 16, 24 or 32 bytes");
	cc = EVP_CIPHER_CTX_new();
	if (!cc || EVP_EncryptInit_ex(cc, c, NULL, key, NULL) != 1 ||
	    EVP_CIPHER_CTX_set_padding(cc, 0) != 1 ||
	    EVP_EncryptUpdate(cc, out, &n, zero, sizeof(zero)) != 1 ||
	    EVP_EncryptFinal_ex(cc, out + n, &n2) != 1 || n + n2 != 16)
		e = hw_fail(HW_ERR_CRYPTO, 0, "AES-ECB for the key check value");
	else
		memcpy(kcv, out, 3);
	EVP_CIPHER_CTX_free(cc);
	OPENSSL_cleanse(out, sizeof(out));
	return e;
}


/*
 * A throwaway session AES key that can do one thing (`use`, with `mech`
 * only) and is never readable: the ECB copy that gives a KCV, and the
 * temporary key of RSA-AES.
 */
typedef struct {
	CK_OBJECT_CLASS cls;
	CK_KEY_TYPE kt;
	CK_BBOOL yes, no;
	CK_MECHANISM_TYPE mech;
} session_tmpl;

#define SESSION_TMPL_MAX 12

static CK_ULONG
session_key_template(session_tmpl *st, CK_ATTRIBUTE_TYPE use, CK_MECHANISM_TYPE mech,
                     CK_ATTRIBUTE *t)
{
	CK_ULONG n = 0;

	st->cls = CKO_SECRET_KEY;
	st->kt = CKK_AES;
	st->yes = CK_TRUE;
	st->no = CK_FALSE;
	st->mech = mech;
	t[n++] = (CK_ATTRIBUTE){ CKA_CLASS, &st->cls, sizeof(st->cls) };
	t[n++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &st->kt, sizeof(st->kt) };
	t[n++] = BOOL_ATTR(CKA_TOKEN, &st->no);
	t[n++] = BOOL_ATTR(CKA_PRIVATE, &st->yes);
	t[n++] = BOOL_ATTR(CKA_SENSITIVE, &st->yes);
	t[n++] = BOOL_ATTR(CKA_EXTRACTABLE, &st->no);
	t[n++] = BOOL_ATTR(CKA_ENCRYPT, use == CKA_ENCRYPT ? &st->yes : &st->no);
	t[n++] = BOOL_ATTR(CKA_DECRYPT, &st->no);
	t[n++] = BOOL_ATTR(CKA_WRAP, &st->no);
	t[n++] = BOOL_ATTR(CKA_UNWRAP, use == CKA_UNWRAP ? &st->yes : &st->no);
	t[n++] = (CK_ATTRIBUTE){ CKA_ALLOWED_MECHANISMS, &st->mech, sizeof(st->mech) };
	return n;
}

/* AES-ECB of the zero block under h; *got when the token gave the whole
 * block, whose first 3 bytes are the KCV. */
static CK_RV
ecb_kcv(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, uint8_t kcv[3], bool *got)
{
	CK_MECHANISM me = { CKM_AES_ECB, NULL, 0 };
	uint8_t zero[16] = { 0 }, out[16];
	CK_ULONG outlen = sizeof(out);
	CK_RV rv = ctx->fl->C_EncryptInit(s, &me, h);

	if (rv == CKR_OK)
		rv = ctx->fl->C_Encrypt(s, zero, sizeof(zero), out, &outlen);
	*got = rv == CKR_OK && outlen == sizeof(out);
	if (*got)
		memcpy(kcv, out, 3);
	OPENSSL_cleanse(out, sizeof(out));
	return rv;
}

/* The token's own CKA_CHECK_VALUE of h, where it set one. */
static bool
token_check_value(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, uint8_t kcv[3])
{
	uint8_t cv[16];
	CK_ATTRIBUTE a = { CKA_CHECK_VALUE, cv, sizeof(cv) };
	CK_RV rv = ctx->fl->C_GetAttributeValue(s, h, &a, 1);

	if (rv != CKR_OK || a.ulValueLen < 3 || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return false;
	memcpy(kcv, cv, 3);
	return true;
}

/* Best effort, so that key listings show the KCV we computed. */
static void
store_check_value(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, uint8_t kcv[3])
{
	CK_ATTRIBUTE a = { CKA_CHECK_VALUE, kcv, 3 };

	(void)ctx->fl->C_SetAttributeValue(s, h, &a, 1);
}

/*
 * KCV of a key the token unwraps from `blob`, for tokens that leave
 * CKA_CHECK_VALUE empty on unwrapped keys (SoftHSMv2): the same blob is
 * unwrapped once more as a session key that can only do AES-ECB, which
 * encrypts the zero block and is destroyed. Only 3 bytes are kept.
 */
CK_RV
hw_kcv_by_unwrap(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE unwrapper,
                 const uint8_t *blob, size_t len, uint8_t kcv[3])
{
	session_tmpl st;
	CK_ATTRIBUTE t[SESSION_TMPL_MAX];
	CK_ULONG nt = session_key_template(&st, CKA_ENCRYPT, CKM_AES_ECB, t);
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	bool got;
	CK_RV rv;

	rv = ctx->fl->C_UnwrapKey(s, m, unwrapper, (CK_BYTE_PTR)blob, len, t, nt, &h);
	if (rv != CKR_OK)
		return rv;
	rv = ecb_kcv(ctx, s, h, kcv, &got);
	if (rv == CKR_OK && !got)
		rv = CKR_FUNCTION_FAILED;
	(void)ctx->fl->C_DestroyObject(s, h);
	return rv;
}

bool
hw_kcv_unsupported(CK_RV rv)
{
	switch (rv) {
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_FUNCTION_NOT_SUPPORTED:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_TEMPLATE_INCONSISTENT:
	case CKR_TEMPLATE_INCOMPLETE:
	case CKR_ATTRIBUTE_VALUE_INVALID:
	case CKR_ATTRIBUTE_TYPE_INVALID:
	case CKR_ATTRIBUTE_READ_ONLY:
		return true;
	default:
		return false;
	}
}

/* The token's CKA_CHECK_VALUE of h, or the KCV computed from the blob
 * (then also stored in CKA_CHECK_VALUE where the token lets us, so that
 * key listings show it). */
CK_RV
hw_kcv_of_unwrapped(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_MECHANISM *m,
                    CK_OBJECT_HANDLE unwrapper, const uint8_t *blob, size_t len,
                    uint8_t kcv[3], bool *have)
{
	CK_RV rv;

	*have = token_check_value(ctx, s, h, kcv);
	if (*have)
		return CKR_OK;
	rv = hw_kcv_by_unwrap(ctx, s, m, unwrapper, blob, len, kcv);
	/* A token that will not make the ECB copy just gives no KCV (the
	 * caller says so); a lost session or a failing device is an error. */
	if (hw_kcv_unsupported(rv))
		return CKR_OK;
	if (rv != CKR_OK)
		return rv;
	*have = true;
	store_check_value(ctx, s, h, kcv);
	return CKR_OK;
}

/* ---------------------------------------------------------------- */
/* The import key pair                                               */

typedef struct {
	const char *label;
	uint8_t id[HW_ID_LEN];
	CK_OBJECT_HANDLE h, pub;
} impgen_arg;

static CK_RV
op_import_keygen(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	impgen_arg *a = arg;
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static const CK_BYTE e65537[] = { 0x01, 0x00, 0x01 };
	CK_OBJECT_CLASS pubc = CKO_PUBLIC_KEY, privc = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = CKK_RSA;
	CK_ULONG bits = 3072;
	CK_MECHANISM_TYPE allowed = CKM_RSA_PKCS_OAEP;
	CK_MECHANISM mech = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE pub[] = {
		{ CKA_CLASS, &pubc, sizeof(pubc) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_LABEL, (void *)a->label, strlen(a->label) },
		{ CKA_ID, a->id, sizeof(a->id) },
		BOOL_ATTR(CKA_TOKEN, &yes),
		BOOL_ATTR(CKA_PRIVATE, &no),
		BOOL_ATTR(CKA_WRAP, &yes),
		BOOL_ATTR(CKA_ENCRYPT, &no),
		BOOL_ATTR(CKA_VERIFY, &no),
		{ CKA_MODULUS_BITS, &bits, sizeof(bits) },
		{ CKA_PUBLIC_EXPONENT, (void *)e65537, sizeof(e65537) },
	};
	/* Unwrap only: CKA_DECRYPT would let anyone with the PIN decrypt
	 * the OAEP blob and read the key material on the host. */
	CK_ATTRIBUTE priv[] = {
		{ CKA_CLASS, &privc, sizeof(privc) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_LABEL, (void *)a->label, strlen(a->label) },
		{ CKA_ID, a->id, sizeof(a->id) },
		BOOL_ATTR(CKA_TOKEN, &yes),
		BOOL_ATTR(CKA_PRIVATE, &yes),
		BOOL_ATTR(CKA_SENSITIVE, &yes),
		BOOL_ATTR(CKA_EXTRACTABLE, &no),
		BOOL_ATTR(CKA_UNWRAP, &yes),
		BOOL_ATTR(CKA_DECRYPT, &no),
		BOOL_ATTR(CKA_SIGN, &no),
		BOOL_ATTR(CKA_DERIVE, &no),
		{ CKA_ALLOWED_MECHANISMS, &allowed, sizeof(allowed) },
	};

	return ctx->fl->C_GenerateKeyPair(s, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
	                                  sizeof(priv) / sizeof(priv[0]), &a->pub, &a->h);
}

HW_EXPORT hw_err
hw_import_key_generate(hw_ctx *ctx, const char *label, hw_key **out)
{
	impgen_arg a;
	hw_err e;

	if (!ctx || !label || !*label || strlen(label) > 128)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "a key label of 1 to 128 bytes is required");
	hw_clear_error();
	if ((e = hw_ctx_ready(ctx)) != HW_OK || (e = hw_label_free_check(ctx, label)) != HW_OK)
		return e;
	if (!hw_ctx_has_mech(ctx, CKM_RSA_PKCS_OAEP))
		return hw_fail(HW_ERR_UNSUPPORTED, 0, "RSA-OAEP (CKM_RSA_PKCS_OAEP)");
	memset(&a, 0, sizeof(a));
	a.label = label;
	if ((e = hw_random(a.id, sizeof(a.id))) != HW_OK)
		return e;
	e = hw_ctx_run_once(ctx, op_import_keygen, &a, "C_GenerateKeyPair (import key)");
	if (e != HW_OK || !out)
		return e;
	return hw_key_find_by_id(ctx, a.id, sizeof(a.id), out);
}

/* ---------------------------------------------------------------- */
/* Unwrapping into the token                                         */

static const struct {
	const char *name;
	hw_import_padding p;
} paddings[] = {
	{ "oaep-sha256", HW_IMPORT_OAEP_SHA256 },
	{ "rsa-aes-kwp", HW_IMPORT_RSA_AES_KWP },
	{ "oaep-sha1", HW_IMPORT_OAEP_SHA1 },
	{ "rsa-aes-kwp-sha1", HW_IMPORT_RSA_AES_KWP_SHA1 },
};

HW_EXPORT hw_err
hw_import_padding_parse(const char *s, hw_import_padding *p)
{
	for (size_t i = 0; s && i < sizeof(paddings) / sizeof(paddings[0]); i++) {
		if (strcmp(paddings[i].name, s) == 0) {
			*p = paddings[i].p;
			return HW_OK;
		}
	}
	return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown import padding '%s'", s ? s : "");
}

HW_EXPORT const char *
hw_import_padding_name(hw_import_padding p)
{
	for (size_t i = 0; i < sizeof(paddings) / sizeof(paddings[0]); i++)
		if (paddings[i].p == p)
			return paddings[i].name;
	return "unknown";
}

typedef struct {
	hw_key *ikey;
	hw_import_padding padding;
	const uint8_t *wrapped;
	size_t len;
	CK_ATTRIBUTE *t;
	CK_ULONG nt;
	CK_OBJECT_HANDLE h;
	uint8_t kcv[3];
	bool have_kcv;
} unwrap_arg;

/*
 * An unwrap that fails on data the owner sent: most tokens say
 * CKR_WRAPPED_KEY_INVALID or CKR_ENCRYPTED_DATA_INVALID, SoftHSMv2 says
 * CKR_GENERAL_ERROR when the padding does not check out.
 */
static CK_RV
unwrap_refused(CK_RV rv)
{
	if (rv != CKR_GENERAL_ERROR && rv != CKR_WRAPPED_KEY_INVALID &&
	    rv != CKR_WRAPPED_KEY_LEN_RANGE && rv != CKR_ENCRYPTED_DATA_INVALID &&
	    rv != CKR_ENCRYPTED_DATA_LEN_RANGE && rv != CKR_DATA_LEN_RANGE)
		return rv;
	return hw_op_fail(hw_fail(HW_ERR_INTEGRITY, rv, "the wrapped key does not unwrap with "
	                          "this import key: altered, truncated, wrapped with another "
	                          "padding, or for another import key"));
}

/* Tokens that take OAEP only with SHA-1 (SoftHSMv2) say so with a
 * parameter error; name the way out instead of a bare CK_RV. */
static CK_RV
oaep_hash_refused(CK_RV rv)
{
	if (rv != CKR_ARGUMENTS_BAD && rv != CKR_MECHANISM_PARAM_INVALID)
		return rv;
	return hw_op_fail(hw_fail(HW_ERR_UNSUPPORTED, rv, "the token refuses RSA-OAEP with SHA-256 "
	                          "in C_UnwrapKey (SoftHSMv2 accepts only SHA-1 there): wrap with "
	                          "rsa_oaep_md:sha1 and rsa_mgf1_md:sha1 and import with --padding "
	                          "oaep-sha1 (or rsa-aes-kwp-sha1)"));
}

static CK_RV
op_import_unwrap(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	unwrap_arg *a = arg;
	bool sha1 = a->padding == HW_IMPORT_OAEP_SHA1 || a->padding == HW_IMPORT_RSA_AES_KWP_SHA1;
	bool rsa_aes = a->padding == HW_IMPORT_RSA_AES_KWP ||
	               a->padding == HW_IMPORT_RSA_AES_KWP_SHA1;
	CK_RSA_PKCS_OAEP_PARAMS oaep = { sha1 ? CKM_SHA_1 : CKM_SHA256,
	                                 sha1 ? CKG_MGF1_SHA1 : CKG_MGF1_SHA256,
	                                 CKZ_DATA_SPECIFIED, NULL, 0 };
	CK_MECHANISM m_oaep = { CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep) };
	CK_MECHANISM m_kwp = { ctx->kwp_mech, NULL, 0 };
	CK_OBJECT_HANDLE ih, eh = CK_INVALID_HANDLE;
	CK_ATTRIBUTE mod = { CKA_MODULUS, NULL, 0 };
	CK_RV rv = hw_key_handle_ck(a->ikey, s, &ih);

	if (rv != CKR_OK)
		return rv;
	a->h = CK_INVALID_HANDLE;
	if (!rsa_aes) {
		rv = unwrap_refused(ctx->fl->C_UnwrapKey(s, &m_oaep, ih, (CK_BYTE_PTR)a->wrapped,
		                                         a->len, a->t, a->nt, &a->h));
		if (rv == CKR_OK)
			rv = hw_kcv_of_unwrapped(ctx, s, a->h, &m_oaep, ih, a->wrapped, a->len, a->kcv,
			                         &a->have_kcv);
		return sha1 ? rv : oaep_hash_refused(rv);
	}

	/* RSA-AES emulated in two unwraps, both inside the token: the
	 * temporary AES key becomes a session object that can only unwrap
	 * and is destroyed at once, so its value is never on the host. */
	rv = ctx->fl->C_GetAttributeValue(s, ih, &mod, 1);
	if (rv != CKR_OK)
		return rv;
	if (mod.ulValueLen == CK_UNAVAILABLE_INFORMATION || mod.ulValueLen >= a->len)
		return hw_op_fail(hw_fail(HW_ERR_FORMAT, 0,
		                          "the RSA-AES blob is shorter than the RSA modulus"));
	{
		session_tmpl st;
		CK_ATTRIBUTE et[SESSION_TMPL_MAX];
		CK_ULONG net = session_key_template(&st, CKA_UNWRAP, ctx->kwp_mech, et);

		rv = unwrap_refused(ctx->fl->C_UnwrapKey(s, &m_oaep, ih, (CK_BYTE_PTR)a->wrapped,
		                                         mod.ulValueLen, et, net, &eh));
		if (!sha1)
			rv = oaep_hash_refused(rv);
	}
	if (rv != CKR_OK)
		return rv;
	rv = unwrap_refused(ctx->fl->C_UnwrapKey(s, &m_kwp, eh,
	                                         (CK_BYTE_PTR)a->wrapped + mod.ulValueLen,
	                                         a->len - mod.ulValueLen, a->t, a->nt, &a->h));
	if (rv == CKR_OK)
		rv = hw_kcv_of_unwrapped(ctx, s, a->h, &m_kwp, eh, a->wrapped + mod.ulValueLen,
		                         a->len - mod.ulValueLen, a->kcv, &a->have_kcv);
	(void)ctx->fl->C_DestroyObject(s, eh);
	return rv;
}

/* What both imports hand back: the KCV (empty where the token gave
 * none) and the new key. */
static hw_err
import_result(hw_ctx *ctx, const uint8_t id[HW_ID_LEN], const uint8_t kcv[3], bool have_kcv,
              hw_key **out, char kcv_hex[7])
{
	if (kcv_hex) {
		if (have_kcv)
			hw_hex(kcv, 3, kcv_hex);
		else
			kcv_hex[0] = '\0';
	}
	if (!out)
		return HW_OK;
	return hw_key_find_by_id(ctx, id, HW_ID_LEN, out);
}

typedef struct {
	CK_OBJECT_HANDLE h;
	CK_ULONG value_len;
} destroy_arg;

static CK_RV
op_value_len_or_destroy(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	destroy_arg *a = arg;
	CK_ATTRIBUTE t = { CKA_VALUE_LEN, &a->value_len, sizeof(a->value_len) };
	CK_RV rv = ctx->fl->C_GetAttributeValue(s, a->h, &t, 1);

	/* SoftHSMv2 leaves CKA_VALUE_LEN of unwrapped keys 0: the length is
	 * then only checked by the owner comparing the KCV. */
	if (rv == CKR_OK && (a->value_len == 32 || a->value_len == 0 ||
	                     a->value_len == CK_UNAVAILABLE_INFORMATION))
		return CKR_OK;
	/* Wrong size (or unreadable): the import must not leave it behind. */
	(void)ctx->fl->C_DestroyObject(s, a->h);
	return rv != CKR_OK ? rv
	       : hw_op_fail(hw_fail(HW_ERR_FORMAT, 0, "the unwrapped key is %lu bytes, not 32 "
	                            "(aes256); it was not kept", (unsigned long)a->value_len));
}

HW_EXPORT hw_err
hw_key_import_wrapped(hw_ctx *ctx, hw_key *import_key, const char *label, hw_key_type type,
                      hw_purpose purpose, hw_import_padding padding, const uint8_t *wrapped,
                      size_t len, hw_key **out, char kcv_hex[7])
{
	hw_tmpl_store st;
	CK_ATTRIBUTE t[HW_SECRET_TMPL_MAX];
	unwrap_arg a;
	destroy_arg d;
	hw_err e;

	if (!import_key || !wrapped || len == 0 || len > 8192)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an import key and a wrapped key are required");
	if (padding < HW_IMPORT_OAEP_SHA256 || padding > HW_IMPORT_RSA_AES_KWP_SHA1)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown import padding");
	if ((e = check_new_key(ctx, label, type, purpose)) != HW_OK)
		return e;
	if (import_key->cls != CKO_PRIVATE_KEY || import_key->ktype != CKK_RSA ||
	    !import_key->can_unwrap)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "'%s' is not an import key (an RSA key pair "
		               "made by key import-params)", import_key->label);
	if (!hw_ctx_has_mech(ctx, CKM_RSA_PKCS_OAEP))
		return hw_fail(HW_ERR_UNSUPPORTED, 0, "RSA-OAEP (CKM_RSA_PKCS_OAEP)");
	if ((padding == HW_IMPORT_RSA_AES_KWP || padding == HW_IMPORT_RSA_AES_KWP_SHA1) &&
	    !ctx->kwp_mech)
		return hw_fail(HW_ERR_UNSUPPORTED, 0, "AES key wrap with padding (RFC 5649)");

	memset(&a, 0, sizeof(a));
	a.ikey = import_key;
	a.padding = padding;
	a.wrapped = wrapped;
	a.len = len;
	a.t = t;
	a.nt = hw_secret_key_template(ctx, purpose, label, false, &st, t);
	if ((e = hw_random(st.id, sizeof(st.id))) != HW_OK)
		return e;
	e = hw_ctx_run_once(ctx, op_import_unwrap, &a, "C_UnwrapKey (import)");
	if (e != HW_OK)
		return e;
	d.h = a.h;
	d.value_len = 0;
	e = hw_ctx_run_once(ctx, op_value_len_or_destroy, &d, "checking the imported key");
	if (e != HW_OK)
		return e;
	return import_result(ctx, st.id, a.kcv, a.have_kcv, out, kcv_hex);
}

typedef struct {
	CK_ATTRIBUTE *t;
	CK_ULONG nt;
	CK_OBJECT_HANDLE h;
	const uint8_t *value;
	size_t len;
	uint8_t kcv[3];
	bool have_kcv;
} create_arg;

/*
 * The KCV the token computes of the value it was given: CKA_CHECK_VALUE
 * if it set one, else AES-ECB of the zero block under an ECB-only session
 * copy of the same value (SoftHSMv2 sets none on C_CreateObject), then
 * stored in CKA_CHECK_VALUE where the token allows.
 */
static CK_RV
token_kcv_of_value(hw_ctx *ctx, CK_SESSION_HANDLE s, create_arg *a)
{
	session_tmpl st;
	CK_ATTRIBUTE t[SESSION_TMPL_MAX + 1];
	CK_ULONG nt = session_key_template(&st, CKA_ENCRYPT, CKM_AES_ECB, t);
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv;

	a->have_kcv = token_check_value(ctx, s, a->h, a->kcv);
	if (a->have_kcv)
		return CKR_OK;
	t[nt++] = (CK_ATTRIBUTE){ CKA_VALUE, (void *)a->value, a->len };
	rv = ctx->fl->C_CreateObject(s, t, nt, &h);
	if (rv != CKR_OK)
		return hw_kcv_unsupported(rv) ? CKR_OK : rv;
	rv = ecb_kcv(ctx, s, h, a->kcv, &a->have_kcv);
	(void)ctx->fl->C_DestroyObject(s, h);
	if (rv != CKR_OK && !hw_kcv_unsupported(rv))
		return rv;
	if (a->have_kcv)
		store_check_value(ctx, s, a->h, a->kcv);
	return CKR_OK;
}

static CK_RV
op_create(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	create_arg *a = arg;
	CK_RV rv = ctx->fl->C_CreateObject(s, a->t, a->nt, &a->h);

	return rv == CKR_OK ? token_kcv_of_value(ctx, s, a) : rv;
}

HW_EXPORT hw_err
hw_key_import_value(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose,
                    const uint8_t *value, size_t len, hw_key **out, char kcv_hex[7])
{
	hw_tmpl_store st;
	CK_ATTRIBUTE t[HW_SECRET_TMPL_MAX];
	create_arg a;
	uint8_t any = 0;
	hw_err e;

	if (!value || len != 32)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an aes256 key is 32 bytes, not %zu", len);
	for (size_t i = 0; i < len; i++)
		any |= value[i];
	if (!any)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key is all zeros");
	if ((e = check_new_key(ctx, label, type, purpose)) != HW_OK)
		return e;
	memset(&a, 0, sizeof(a));
	a.t = t;
	a.nt = hw_secret_key_template(ctx, purpose, label, false, &st, t);
	t[a.nt++] = (CK_ATTRIBUTE){ CKA_VALUE, (void *)value, len };
	a.value = value;
	a.len = len;
	if ((e = hw_random(st.id, sizeof(st.id))) != HW_OK)
		return e;
	e = hw_ctx_run_once(ctx, op_create, &a, "C_CreateObject (import)");
	if (e != HW_OK)
		return e;
	return import_result(ctx, st.id, a.kcv, a.have_kcv, out, kcv_hex);
}
