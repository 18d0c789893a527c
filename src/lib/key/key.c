/*
 * Key objects on the token: generation with safe attributes, lookup by
 * label, id or URI, listing, destruction, and what an administrator wants
 * to see of a key (attributes, URI, KCV or public-key fingerprint). Which
 * version of which logical key an object is, and whether it may be used,
 * is key/state.c; the calls as callers see them are key/logical.c.
 *
 * A hw_key remembers the key's CKA_ID and class, not just its handle:
 * object handles are only meaningful within one process (and module
 * initialisation), so after fork the handle is found again by id.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

static const struct {
	const char *name;
	hw_key_type type;
	CK_KEY_TYPE ck;
	unsigned bits;
} types[] = {
	{ "aes256", HW_KEY_AES256, CKK_AES, 256 },
	{ "rsa2048", HW_KEY_RSA2048, CKK_RSA, 2048 },
	{ "rsa3072", HW_KEY_RSA3072, CKK_RSA, 3072 },
	{ "rsa4096", HW_KEY_RSA4096, CKK_RSA, 4096 },
	{ "ec-p256", HW_KEY_EC_P256, CKK_EC, 256 },
	{ "ec-p384", HW_KEY_EC_P384, CKK_EC, 384 },
	{ "ec-p521", HW_KEY_EC_P521, CKK_EC, 521 },
	{ "ed25519", HW_KEY_ED25519, CKK_EC_EDWARDS, 255 },
	{ "ed448", HW_KEY_ED448, CKK_EC_EDWARDS, 448 },
	{ "rsa-pss-2048", HW_KEY_RSA2048_PSS, CKK_RSA, 2048 },
	{ "rsa-pss-3072", HW_KEY_RSA3072_PSS, CKK_RSA, 3072 },
	{ "rsa-pss-4096", HW_KEY_RSA4096_PSS, CKK_RSA, 4096 },
};
#define NTYPES (sizeof(types) / sizeof(types[0]))

/* DER OIDs for CKA_EC_PARAMS (namedCurve). */
static const uint8_t oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t oid_p521[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23 };
/* id-Ed25519 and id-Ed448 (RFC 8410), the form SoftHSM and PKCS#11 3.0 take. */
static const uint8_t oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };
static const uint8_t oid_ed448[] = { 0x06, 0x03, 0x2b, 0x65, 0x71 };

/* The curve OIDs of the EC and Edwards types, for CKA_EC_PARAMS. */
static const struct {
	hw_key_type type;
	const uint8_t *oid;
	size_t len;
	const char *ossl;           /* OpenSSL group or key type name */
} curves[] = {
	{ HW_KEY_EC_P256, oid_p256, sizeof(oid_p256), "P-256" },
	{ HW_KEY_EC_P384, oid_p384, sizeof(oid_p384), "P-384" },
	{ HW_KEY_EC_P521, oid_p521, sizeof(oid_p521), "P-521" },
	{ HW_KEY_ED25519, oid_ed25519, sizeof(oid_ed25519), "ED25519" },
	{ HW_KEY_ED448, oid_ed448, sizeof(oid_ed448), "ED448" },
};
#define NCURVES (sizeof(curves) / sizeof(curves[0]))

/* The curve entry whose OID is params (CKA_EC_PARAMS), or NULL. */
static const __typeof__(curves[0]) *
curve_by_oid(const uint8_t *params, size_t len)
{
	for (size_t i = 0; i < NCURVES; i++)
		if (curves[i].len == len && memcmp(curves[i].oid, params, len) == 0)
			return &curves[i];
	return NULL;
}

static const __typeof__(curves[0]) *
curve_by_type(hw_key_type t)
{
	for (size_t i = 0; i < NCURVES; i++)
		if (curves[i].type == t)
			return &curves[i];
	return NULL;
}

HW_EXPORT int
hw_key_type_is_rsa(hw_key_type t)
{
	return t == HW_KEY_RSA2048 || t == HW_KEY_RSA3072 || t == HW_KEY_RSA4096 ||
	       t == HW_KEY_RSA2048_PSS || t == HW_KEY_RSA3072_PSS || t == HW_KEY_RSA4096_PSS;
}

HW_EXPORT int
hw_key_type_is_ec(hw_key_type t)
{
	return t == HW_KEY_EC_P256 || t == HW_KEY_EC_P384 || t == HW_KEY_EC_P521;
}

HW_EXPORT int
hw_key_type_is_eddsa(hw_key_type t)
{
	return t == HW_KEY_ED25519 || t == HW_KEY_ED448;
}

int
hw_key_type_is_pss(hw_key_type t)
{
	return t == HW_KEY_RSA2048_PSS || t == HW_KEY_RSA3072_PSS || t == HW_KEY_RSA4096_PSS;
}

static const char *purposes[] = {
	[HW_PURPOSE_NONE] = "none",
	[HW_PURPOSE_ENVELOPE] = "envelope",
	[HW_PURPOSE_KEYWRAP] = "keywrap",
	[HW_PURPOSE_SIGN] = "sign",
	[HW_PURPOSE_DECRYPT] = "decrypt",
	[HW_PURPOSE_DERIVE] = "derive",
};

HW_EXPORT const char *
hw_key_type_name(hw_key_type t)
{
	for (size_t i = 0; i < NTYPES; i++)
		if (types[i].type == t)
			return types[i].name;
	return "unknown";
}

HW_EXPORT hw_err
hw_key_type_parse(const char *s, hw_key_type *t)
{
	for (size_t i = 0; s && i < NTYPES; i++) {
		if (strcmp(types[i].name, s) == 0) {
			*t = types[i].type;
			return HW_OK;
		}
	}
	return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown key type '%s'", s ? s : "");
}

HW_EXPORT const char *
hw_purpose_name(hw_purpose p)
{
	return (unsigned)p < sizeof(purposes) / sizeof(purposes[0]) ? purposes[p] : "unknown";
}

HW_EXPORT hw_err
hw_purpose_parse(const char *s, hw_purpose *p)
{
	for (unsigned i = HW_PURPOSE_ENVELOPE; s && i <= HW_PURPOSE_DERIVE; i++) {
		if (strcmp(purposes[i], s) == 0) {
			*p = (hw_purpose)i;
			return HW_OK;
		}
	}
	return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown purpose '%s'", s ? s : "");
}

HW_EXPORT const char *
hw_key_label(const hw_key *key)
{
	return key ? key->label : NULL;
}

/* ---------------------------------------------------------------- */
/* Finding objects                                                   */

/* Objects are fetched in chunks; a token may hold thousands of keys. */
#define FIND_CHUNK 64

typedef struct {
	CK_ATTRIBUTE tmpl[4];
	CK_ULONG ntmpl;
	size_t limit;               /* stop after this many; 0 = all */
	CK_OBJECT_HANDLE *found;    /* malloc'd: find_free() */
	size_t nfound, cap;
} find_arg;

static void
find_free(find_arg *a)
{
	free(a->found);
	a->found = NULL;
	a->nfound = a->cap = 0;
}

static CK_RV
find_on(hw_ctx *ctx, CK_SESSION_HANDLE s, find_arg *a)
{
	CK_OBJECT_HANDLE chunk[FIND_CHUNK];
	CK_ULONG got = 0, want;
	CK_RV rv, final;

	a->nfound = 0;
	rv = ctx->fl->C_FindObjectsInit(s, a->tmpl, a->ntmpl);
	if (rv != CKR_OK)
		return rv;
	for (;;) {
		want = FIND_CHUNK;
		if (a->limit && a->limit - a->nfound < want)
			want = a->limit - a->nfound;
		if (want == 0)
			break;
		rv = ctx->fl->C_FindObjects(s, chunk, want, &got);
		if (rv != CKR_OK || got == 0)
			break;
		if (a->nfound + got > a->cap) {
			size_t cap = (a->nfound + got) * 2;
			CK_OBJECT_HANDLE *n = realloc(a->found, cap * sizeof(*n));
			if (!n) {
				rv = CKR_HOST_MEMORY;
				break;
			}
			a->found = n;
			a->cap = cap;
		}
		memcpy(a->found + a->nfound, chunk, got * sizeof(*chunk));
		a->nfound += got;
	}
	/* A search left open would fail the session's next borrower. */
	final = ctx->fl->C_FindObjectsFinal(s);
	if (rv == CKR_OK)
		rv = final;
	/* Nothing found may only mean the token logged us out. */
	if (rv == CKR_OK && a->nfound == 0 && hw_ctx_logged_in(ctx))
		rv = hw_session_check_login(ctx, s);
	return rv;
}

static CK_RV
op_find(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	return find_on(ctx, s, arg);
}

/* Reads attributes; those the token will not reveal get CK_UNAVAILABLE_INFORMATION. */
static CK_RV
get_attrs(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n)
{
	CK_RV rv = ctx->fl->C_GetAttributeValue(s, h, t, n);
	if (rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID)
		rv = CKR_OK;
	return rv;
}

static int
bool_attr(const CK_ATTRIBUTE *a)
{
	if (a->ulValueLen != sizeof(CK_BBOOL))
		return -1;
	return *(CK_BBOOL *)a->pValue ? 1 : 0;
}

typedef struct {
	CK_OBJECT_HANDLE h;
	hw_key *key;                /* filled in */
} load_arg;

/* Builds a hw_key from a secret or private key object. */
static CK_RV
op_load(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	load_arg *a = arg;
	hw_key *k = a->key;
	CK_BBOOL enc = 0, dec = 0, wrap = 0, unwrap = 0, sign = 0, aa = 0;
	char label[129] = { 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &k->cls, sizeof(k->cls) },
		{ CKA_KEY_TYPE, &k->ktype, sizeof(k->ktype) },
		{ CKA_ID, k->id, sizeof(k->id) },
		{ CKA_LABEL, label, sizeof(label) - 1 },
		{ CKA_ENCRYPT, &enc, sizeof(enc) },
		{ CKA_DECRYPT, &dec, sizeof(dec) },
		{ CKA_WRAP, &wrap, sizeof(wrap) },
		{ CKA_UNWRAP, &unwrap, sizeof(unwrap) },
		{ CKA_SIGN, &sign, sizeof(sign) },
		{ CKA_ALWAYS_AUTHENTICATE, &aa, sizeof(aa) },
	};
	find_arg f;
	CK_RV rv;

	rv = get_attrs(ctx, s, a->h, t, sizeof(t) / sizeof(t[0]));
	if (rv != CKR_OK)
		return rv;
	k->id_len = t[2].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0 : t[2].ulValueLen;
	if (t[3].ulValueLen != CK_UNAVAILABLE_INFORMATION)
		label[t[3].ulValueLen] = '\0';
	else
		label[0] = '\0';
	snprintf(k->label, sizeof(k->label), "%s", label);
	k->can_encrypt = bool_attr(&t[4]) == 1;
	k->can_decrypt = bool_attr(&t[5]) == 1;
	k->can_wrap = bool_attr(&t[6]) == 1;
	k->can_unwrap = bool_attr(&t[7]) == 1;
	k->can_sign = bool_attr(&t[8]) == 1;
	k->always_auth = k->cls == CKO_PRIVATE_KEY && bool_attr(&t[9]) == 1;
	k->handle = a->h;
	k->pub_handle = CK_INVALID_HANDLE;

	if (k->cls == CKO_PRIVATE_KEY && k->id_len > 0) {
		CK_OBJECT_CLASS pub = CKO_PUBLIC_KEY;
		memset(&f, 0, sizeof(f));
		f.tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &pub, sizeof(pub) };
		f.tmpl[1] = (CK_ATTRIBUTE){ CKA_ID, k->id, k->id_len };
		f.ntmpl = 2;
		f.limit = 1;
		rv = find_on(ctx, s, &f);
		if (rv == CKR_OK && f.nfound >= 1)
			k->pub_handle = f.found[0];
		find_free(&f);
		return rv;
	}
	return CKR_OK;
}

hw_err
hw_key_load(hw_ctx *ctx, CK_OBJECT_HANDLE h, hw_key **out)
{
	load_arg a;
	hw_key *k = calloc(1, sizeof(*k));
	hw_err e;

	if (!k)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	k->ctx = ctx;
	a.h = h;
	a.key = k;
	e = hw_ctx_run(ctx, op_load, &a, "reading key attributes");
	if (e != HW_OK) {
		free(k);
		return e;
	}
	pthread_mutex_lock(&ctx->lock);
	k->gen = ctx->gen;
	k->epoch = ctx->key_epoch;
	pthread_mutex_unlock(&ctx->lock);
	*out = k;
	return HW_OK;
}

/*
 * Runs a search for secret keys, then private keys, with the extra
 * attributes in `extra` (class may be fixed by the caller); at most
 * `limit` handles per class (0 = all). *found is malloc'd.
 */
static hw_err
find_keys(hw_ctx *ctx, const CK_ATTRIBUTE *extra, CK_ULONG nextra, CK_OBJECT_CLASS only,
          size_t limit, CK_OBJECT_HANDLE **found, size_t *n)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_SECRET_KEY, CKO_PRIVATE_KEY };
	CK_OBJECT_HANDLE *all = NULL, *grown;
	size_t count = 0;
	find_arg f;
	hw_err e;

	for (size_t c = 0; c < 2; c++) {
		CK_OBJECT_CLASS cls = classes[c];
		if (only != (CK_OBJECT_CLASS)-1 && only != cls)
			continue;
		memset(&f, 0, sizeof(f));
		f.tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
		for (CK_ULONG i = 0; i < nextra && i < 3; i++)
			f.tmpl[1 + i] = extra[i];
		f.ntmpl = 1 + (nextra < 3 ? nextra : 3);
		f.limit = limit;
		e = hw_ctx_run(ctx, op_find, &f, "searching keys");
		if (e == HW_OK && f.nfound) {
			grown = realloc(all, (count + f.nfound) * sizeof(*all));
			if (!grown) {
				e = hw_fail(HW_ERR_NOMEM, 0, NULL);
			} else {
				all = grown;
				memcpy(all + count, f.found, f.nfound * sizeof(*all));
				count += f.nfound;
			}
		}
		find_free(&f);
		if (e != HW_OK) {
			free(all);
			return e;
		}
	}
	*found = all;
	*n = count;
	return HW_OK;
}

static hw_err
find_one(hw_ctx *ctx, const CK_ATTRIBUTE *extra, CK_ULONG nextra, CK_OBJECT_CLASS only,
         const char *what, hw_key **out)
{
	CK_OBJECT_HANDLE *h = NULL;
	size_t n = 0;
	/* Two per class are enough to tell "one" from "ambiguous". */
	hw_err e;

	/* Twice at most: a handle found in one run goes stale if the token
	 * logs us out before the next reads it (SoftHSMv2 drops private
	 * handles at logout); the search is then made again. */
	for (int attempt = 0; attempt < 2; attempt++) {
		e = find_keys(ctx, extra, nextra, only, 2, &h, &n);
		if (e == HW_OK && n == 0)
			e = hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "%s", what);
		else if (e == HW_OK && n > 1)
			e = hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "more than one key matches %s", what);
		else if (e == HW_OK)
			e = hw_key_load(ctx, h[0], out);
		free(h);
		h = NULL;
		if (e == HW_OK || !hw_is_stale_handle(hw_last_ckrv()))
			break;
	}
	return e;
}

hw_err
hw_key_find_by_id(hw_ctx *ctx, const uint8_t *id, size_t id_len, hw_key **out)
{
	char hex[2 * 64 + 1];
	CK_ATTRIBUTE a = { CKA_ID, (void *)id, id_len };

	if (id_len == 0 || id_len > 64)
		return hw_fail(HW_ERR_FORMAT, 0, "bad key id length");
	hw_hex(id, id_len, hex);
	return find_one(ctx, &a, 1, (CK_OBJECT_CLASS)-1, hex, out);
}

void
hw_key_spec_free(hw_key_spec *ks)
{
	if (ks->uri)
		p11_kit_uri_free(ks->uri);
	memset(ks, 0, sizeof(*ks));
}

hw_err
hw_key_spec_parse(const char *spec, hw_key_spec *ks)
{
	CK_ATTRIBUTE *a;
	int r;

	memset(ks, 0, sizeof(*ks));
	ks->only = (CK_OBJECT_CLASS)-1;
	if (!spec || !*spec)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an empty key name");
	if (strncmp(spec, "id:", 3) == 0) {
		if (hw_unhex(spec + 3, ks->id, sizeof(ks->id), &ks->id_len) != 0 || ks->id_len == 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "id: wants an even number of hex digits "
			               "(at most %zu bytes)", sizeof(ks->id));
		ks->attrs[ks->nattrs++] = (CK_ATTRIBUTE){ CKA_ID, ks->id, ks->id_len };
		return HW_OK;
	}
	if (strncmp(spec, "pkcs11:", 7) != 0) {
		ks->attrs[ks->nattrs++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)spec, strlen(spec) };
		ks->by_label = true;
		return HW_OK;
	}
	if (!(ks->uri = p11_kit_uri_new()))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	r = p11_kit_uri_parse(spec, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, ks->uri);
	if (r != P11_KIT_URI_OK) {
		hw_key_spec_free(ks);
		return hw_fail(HW_ERR_URI, 0, "%s", p11_kit_uri_message(r));
	}
	if ((a = p11_kit_uri_get_attribute(ks->uri, CKA_LABEL)))
		ks->attrs[ks->nattrs++] = *a;
	if ((a = p11_kit_uri_get_attribute(ks->uri, CKA_ID)))
		ks->attrs[ks->nattrs++] = *a;
	if ((a = p11_kit_uri_get_attribute(ks->uri, CKA_CLASS)) &&
	    a->ulValueLen == sizeof(CK_OBJECT_CLASS)) {
		ks->only = *(CK_OBJECT_CLASS *)a->pValue;
		/* type=public names the pair; we hand out its private half. */
		if (ks->only == CKO_PUBLIC_KEY)
			ks->only = CKO_PRIVATE_KEY;
	}
	if (ks->nattrs == 0) {
		hw_key_spec_free(ks);
		return hw_fail(HW_ERR_URI, 0, "the key URI needs object= or id=");
	}
	return HW_OK;
}

hw_err
hw_key_find_object(hw_ctx *ctx, const char *spec, bool *by_label, hw_key **out)
{
	hw_key_spec ks;
	hw_err e;

	if (!ctx || !spec || !*spec || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_find");
	hw_clear_error();
	e = hw_ctx_ready(ctx);
	if (e != HW_OK)
		return e;
	e = hw_key_spec_parse(spec, &ks);
	if (e != HW_OK)
		return e;
	/* A key URI for another token must not silently match this one. */
	if (ks.uri && !p11_kit_uri_match_token_info(ks.uri, &ctx->tinfo))
		e = hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "the URI names another token than %s",
		            ctx->token_uri_str);
	else {
		char *shown = NULL;

		/* A key URI may carry pin-value: messages name it without. */
		if (ks.uri && hw_uri_redact(spec, &shown) != HW_OK)
			shown = NULL;
		e = find_one(ctx, ks.attrs, ks.nattrs, ks.only,
		             shown ? shown : ks.uri ? "the key URI" : spec, out);
		free(shown);
	}
	*by_label = ks.by_label;
	hw_key_spec_free(&ks);
	return e;
}

hw_err
hw_key_find_label_raw(hw_ctx *ctx, const char *label, hw_key **out)
{
	CK_ATTRIBUTE a = { CKA_LABEL, (void *)label, strlen(label) };

	return find_one(ctx, &a, 1, (CK_OBJECT_CLASS)-1, label, out);
}

HW_EXPORT hw_err
hw_key_list(hw_ctx *ctx, hw_key ***keys, size_t *count)
{
	CK_OBJECT_HANDLE *h = NULL;
	hw_key **v;
	size_t n = 0;
	hw_err e;

	if (!ctx || !keys || !count)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_list");
	e = find_keys(ctx, NULL, 0, (CK_OBJECT_CLASS)-1, 0, &h, &n);
	if (e != HW_OK)
		return e;
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		free(h);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (size_t i = 0; i < n; i++) {
		e = hw_key_load(ctx, h[i], &v[i]);
		if (e != HW_OK) {
			hw_key_list_free(v, i);
			free(h);
			return e;
		}
	}
	free(h);
	*keys = v;
	*count = n;
	return HW_OK;
}

HW_EXPORT void
hw_key_list_free(hw_key **keys, size_t n)
{
	if (!keys)
		return;
	for (size_t i = 0; i < n; i++)
		hw_key_free(keys[i]);
	free(keys);
}

HW_EXPORT void
hw_key_free(hw_key *key)
{
	free(key);
}

typedef struct {
	hw_key *key;
	CK_OBJECT_HANDLE h, pub;
} handle_arg;

static CK_RV
op_refind(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	handle_arg *a = arg;
	find_arg f;
	CK_OBJECT_CLASS pub = CKO_PUBLIC_KEY;
	CK_RV rv;

	memset(&f, 0, sizeof(f));
	f.tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &a->key->cls, sizeof(a->key->cls) };
	f.tmpl[1] = (CK_ATTRIBUTE){ CKA_ID, a->key->id, a->key->id_len };
	f.ntmpl = 2;
	f.limit = 2;
	rv = find_on(ctx, s, &f);
	if (rv == CKR_OK && f.nfound != 1)
		rv = hw_op_fail(hw_fail(f.nfound ? HW_ERR_KEY_AMBIGUOUS : HW_ERR_KEY_NOT_FOUND, 0,
		                        "key '%s' (gone from the token?)", a->key->label));
	if (rv != CKR_OK) {
		find_free(&f);
		return rv;
	}
	a->h = f.found[0];
	a->pub = CK_INVALID_HANDLE;
	if (a->key->cls == CKO_PRIVATE_KEY) {
		f.tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &pub, sizeof(pub) };
		f.limit = 1;
		rv = find_on(ctx, s, &f);
		if (rv == CKR_OK && f.nfound >= 1)
			a->pub = f.found[0];
	}
	find_free(&f);
	return rv;
}

CK_RV
hw_key_handle_raw(hw_key *key, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h)
{
	hw_ctx *ctx = key->ctx;
	handle_arg a = { key, CK_INVALID_HANDLE, CK_INVALID_HANDLE };
	unsigned long gen, epoch;
	CK_RV rv;

	pthread_mutex_lock(&ctx->lock);
	if (key->gen == ctx->gen && key->epoch == ctx->key_epoch) {
		*h = key->handle;
		pthread_mutex_unlock(&ctx->lock);
		return CKR_OK;
	}
	gen = ctx->gen;
	epoch = ctx->key_epoch;
	pthread_mutex_unlock(&ctx->lock);
	/* A module error goes back to the op runner, which may recover from
	 * it (a lost session, a transient failure) and run the op again. */
	rv = op_refind(ctx, s, &a);
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&ctx->lock);
	key->handle = a.h;
	key->pub_handle = a.pub;
	key->gen = gen;
	key->epoch = epoch;
	pthread_mutex_unlock(&ctx->lock);
	*h = a.h;
	return CKR_OK;
}

/* ---------------------------------------------------------------- */
/* Generation                                                        */

typedef struct {
	const char *label;
	size_t label_len;
	hw_key_type type;
	hw_purpose purpose;
	uint8_t id[HW_ID_LEN];
	CK_OBJECT_HANDLE h, pub;
	bool backupable;            /* HW_KEYGEN_BACKUPABLE */
	bool raw_rsa;               /* HW_KEYGEN_RAW_RSA */
} gen_arg;

#define BOOL_ATTR(t, v) { (t), (void *)(v), sizeof(CK_BBOOL) }

static CK_RV
op_generate(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	gen_arg *a = arg;
	CK_OBJECT_CLASS sec = CKO_SECRET_KEY, pubc = CKO_PUBLIC_KEY, privc = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt;
	CK_ULONG len = 32, bits = 0;
	static const CK_BYTE e65537[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM_TYPE allowed;
	CK_MECHANISM mech = { 0, NULL, 0 };
	bool envelope = a->purpose == HW_PURPOSE_ENVELOPE;
	bool keywrap = a->purpose == HW_PURPOSE_KEYWRAP;
	bool decrypt = a->purpose == HW_PURPOSE_DECRYPT;
	bool derive = a->purpose == HW_PURPOSE_DERIVE;
	/* OAEP; raw RSA too only when asked (HW_KEYGEN_RAW_RSA), for tokens
	 * whose OAEP lacks the SHA-2 hashes: the OAEP check is then the host's. */
	static const CK_MECHANISM_TYPE dec_mechs[] = { CKM_RSA_PKCS_OAEP, CKM_RSA_X_509 };
	CK_ULONG ndec_mechs = a->raw_rsa ? 2 : 1;

	if (a->type == HW_KEY_AES256) {
		kt = CKK_AES;
		allowed = envelope ? CKM_AES_GCM : ctx->kwp_mech;
		CK_ATTRIBUTE t[] = {
			{ CKA_CLASS, &sec, sizeof(sec) },
			{ CKA_KEY_TYPE, &kt, sizeof(kt) },
			{ CKA_VALUE_LEN, &len, sizeof(len) },
			{ CKA_LABEL, (void *)a->label, a->label_len },
			{ CKA_ID, a->id, sizeof(a->id) },
			BOOL_ATTR(CKA_TOKEN, &yes),
			BOOL_ATTR(CKA_PRIVATE, &yes),
			BOOL_ATTR(CKA_SENSITIVE, &yes),
			/* Backup-able keys can be wrapped, but only by a key the SO
			 * marked CKA_TRUSTED; the token never lets that be cleared. */
			BOOL_ATTR(CKA_EXTRACTABLE, a->backupable ? &yes : &no),
			BOOL_ATTR(CKA_WRAP_WITH_TRUSTED, a->backupable ? &yes : &no),
			BOOL_ATTR(CKA_ENCRYPT, envelope ? &yes : &no),
			BOOL_ATTR(CKA_DECRYPT, envelope ? &yes : &no),
			BOOL_ATTR(CKA_WRAP, keywrap ? &yes : &no),
			BOOL_ATTR(CKA_UNWRAP, keywrap ? &yes : &no),
			BOOL_ATTR(CKA_SIGN, &no),
			BOOL_ATTR(CKA_VERIFY, &no),
			BOOL_ATTR(CKA_DERIVE, &no),
			/* Least privilege: one mechanism per purpose. */
			{ CKA_ALLOWED_MECHANISMS, &allowed, sizeof(allowed) },
		};
		mech.mechanism = CKM_AES_KEY_GEN;
		/* Last: tokens that cannot pin mechanisms (caps.c) reject it. */
		return ctx->fl->C_GenerateKey(s, &mech, t, sizeof(t) / sizeof(t[0]) -
		                              !hw_ctx_can(ctx, HW_CAP_ALLOWED_MECHS), &a->h);
	}

	bool rsa = hw_key_type_is_rsa(a->type), pss = hw_key_type_is_pss(a->type);
	bool eddsa = hw_key_type_is_eddsa(a->type);
	const __typeof__(curves[0]) *cv = curve_by_type(a->type);
	const uint8_t *oid = cv ? cv->oid : oid_p256;
	size_t oid_len = cv ? cv->len : sizeof(oid_p256);
	/* PSS-only keys: the token, not the host, refuses every other use. */
	static const CK_MECHANISM_TYPE pss_mechs[] = {
		CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS,
		CKM_SHA512_RSA_PKCS_PSS,
	};
	static const CK_MECHANISM_TYPE ecdh_mechs[] = { CKM_ECDH1_DERIVE };
	const CK_MECHANISM_TYPE *mechs = decrypt ? dec_mechs : pss ? pss_mechs
	                                 : derive ? ecdh_mechs : NULL;
	CK_ULONG nmechs = decrypt ? ndec_mechs : pss ? sizeof(pss_mechs) / sizeof(pss_mechs[0])
	                  : derive ? 1 : 0;

	kt = rsa ? CKK_RSA : eddsa ? CKK_EC_EDWARDS : CKK_EC;
	for (size_t i = 0; i < NTYPES; i++)
		if (types[i].type == a->type)
			bits = types[i].bits;
	CK_ATTRIBUTE pub[] = {
		{ CKA_CLASS, &pubc, sizeof(pubc) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_LABEL, (void *)a->label, a->label_len },
		{ CKA_ID, a->id, sizeof(a->id) },
		BOOL_ATTR(CKA_TOKEN, &yes),
		BOOL_ATTR(CKA_PRIVATE, &no),
		BOOL_ATTR(CKA_VERIFY, decrypt || derive ? &no : &yes),
		BOOL_ATTR(CKA_ENCRYPT, decrypt ? &yes : &no),
		BOOL_ATTR(CKA_WRAP, &no),
		rsa ? (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) }
		    : (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid, oid_len },
		rsa ? (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, (void *)e65537, sizeof(e65537) }
		    : (CK_ATTRIBUTE){ CKA_DERIVE, (CK_BBOOL *)&no, sizeof(CK_BBOOL) },
	};
	CK_ATTRIBUTE priv[] = {
		{ CKA_CLASS, &privc, sizeof(privc) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_LABEL, (void *)a->label, a->label_len },
		{ CKA_ID, a->id, sizeof(a->id) },
		BOOL_ATTR(CKA_TOKEN, &yes),
		BOOL_ATTR(CKA_PRIVATE, &yes),
		BOOL_ATTR(CKA_SENSITIVE, &yes),
		BOOL_ATTR(CKA_EXTRACTABLE, a->backupable ? &yes : &no),
		BOOL_ATTR(CKA_WRAP_WITH_TRUSTED, a->backupable ? &yes : &no),
		BOOL_ATTR(CKA_SIGN, decrypt || derive ? &no : &yes),
		BOOL_ATTR(CKA_DECRYPT, decrypt ? &yes : &no),
		BOOL_ATTR(CKA_UNWRAP, &no),
		BOOL_ATTR(CKA_DERIVE, derive ? &yes : &no),
		/* Last: only decrypt, PSS-only and derive keys get it. */
		{ CKA_ALLOWED_MECHANISMS, (void *)mechs, nmechs * sizeof(CK_MECHANISM_TYPE) },
	};
	mech.mechanism = rsa ? CKM_RSA_PKCS_KEY_PAIR_GEN
	                 : eddsa ? CKM_EC_EDWARDS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN;
	return ctx->fl->C_GenerateKeyPair(s, &mech, pub, sizeof(pub) / sizeof(pub[0]), priv,
	                                  sizeof(priv) / sizeof(priv[0]) -
	                                  !(mechs && hw_ctx_can(ctx, HW_CAP_ALLOWED_MECHS)), &a->pub,
	                                  &a->h);
}

hw_err
hw_key_gen_object(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose,
                  unsigned flags, uint8_t id[HW_ID_LEN], hw_key **out)
{
	gen_arg a;
	bool aes = type == HW_KEY_AES256;
	hw_err e;

	memset(&a, 0, sizeof(a));
	a.label = label;
	a.label_len = strlen(label);
	a.type = type;
	a.purpose = purpose;
	a.backupable = (flags & HW_KEYGEN_BACKUPABLE) != 0;
	a.raw_rsa = (flags & HW_KEYGEN_RAW_RSA) != 0;
	/* CKA_ID only needs to be unique, not secret. */
	if ((e = hw_random(a.id, sizeof(a.id))) != HW_OK)
		return e;
	/* Not idempotent: a retry after a device error could make a second key. */
	e = hw_ctx_run_once(ctx, op_generate, &a, aes ? "C_GenerateKey" : "C_GenerateKeyPair");
	if (e != HW_OK)
		return e;
	memcpy(id, a.id, sizeof(a.id));
	e = hw_key_load(ctx, a.h, out);
	if (e != HW_OK && e != HW_ERR_NOMEM) {
		/* The key exists; its handle may have gone stale (a session lost
		 * and a re-login in between). Its fresh CKA_ID finds it again, so
		 * the caller can use it, or destroy it on a later failure. */
		hw_clear_error();
		e = hw_key_find_by_id(ctx, a.id, sizeof(a.id), out);
	}
	return e;
}

/* ---------------------------------------------------------------- */
/* Destroy                                                           */

static CK_RV
op_destroy(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	hw_key *key = arg;
	CK_OBJECT_HANDLE h;
	CK_RV rv = hw_key_handle_raw(key, s, &h);

	if (rv != CKR_OK)
		return rv;
	rv = ctx->fl->C_DestroyObject(s, h);
	if (rv == CKR_OK && key->pub_handle != CK_INVALID_HANDLE)
		rv = ctx->fl->C_DestroyObject(s, key->pub_handle);
	return rv;
}

hw_err
hw_key_destroy_object(hw_key *key)
{
	return hw_ctx_run_once(key->ctx, op_destroy, key, "C_DestroyObject");
}

/* ---------------------------------------------------------------- */
/* Public key and attributes                                         */

typedef struct {
	hw_key *key;
	uint8_t *a, *b;             /* RSA: modulus, exponent; EC: params, point */
	CK_ULONG alen, blen;
} pub_arg;

static CK_RV
read_alloc(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE t,
           uint8_t **out, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { t, NULL, 0 };
	CK_RV rv = ctx->fl->C_GetAttributeValue(s, h, &a, 1);

	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 16384)
		return CKR_ATTRIBUTE_TYPE_INVALID;
	a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1);
	if (!a.pValue)
		return CKR_HOST_MEMORY;
	rv = ctx->fl->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK) {
		free(a.pValue);
		return rv;
	}
	*out = a.pValue;
	*len = a.ulValueLen;
	return CKR_OK;
}

static CK_RV
op_pub(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	pub_arg *a = arg;
	CK_OBJECT_HANDLE h;
	CK_RV rv = hw_key_handle_raw(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	/* Public attributes are readable from the private object too, but
	 * CKA_EC_POINT only lives on the public one. */
	if (a->key->pub_handle != CK_INVALID_HANDLE)
		h = a->key->pub_handle;
	free(a->a);
	free(a->b);
	a->a = a->b = NULL;
	if (a->key->ktype == CKK_RSA) {
		rv = read_alloc(ctx, s, h, CKA_MODULUS, &a->a, &a->alen);
		if (rv == CKR_OK)
			rv = read_alloc(ctx, s, h, CKA_PUBLIC_EXPONENT, &a->b, &a->blen);
	} else {
		rv = read_alloc(ctx, s, h, CKA_EC_PARAMS, &a->a, &a->alen);
		if (rv == CKR_OK)
			rv = read_alloc(ctx, s, h, CKA_EC_POINT, &a->b, &a->blen);
	}
	return rv;
}

/* CKA_EC_POINT is a DER OCTET STRING around the point (v2.40); some
 * tokens give the raw point. Accept both. */
static int
ec_point(const uint8_t *p, size_t n, const uint8_t **pt, size_t *ptlen)
{
	if (n >= 2 && p[0] == 0x04 && p[1] < 0x80 && (size_t)p[1] + 2 == n) {
		*pt = p + 2;
		*ptlen = p[1];
		return 0;
	}
	if (n >= 3 && p[0] == 0x04 && p[1] == 0x81 && (size_t)p[2] + 3 == n) {
		*pt = p + 3;
		*ptlen = p[2];
		return 0;
	}
	if (n > 0 && p[0] == 0x04 && n % 2 == 1) {
		*pt = p;
		*ptlen = n;
		return 0;
	}
	return -1;
}

static hw_err
build_pkey(const pub_arg *a, EVP_PKEY **out)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *pc = NULL;
	BIGNUM *n = NULL, *ex = NULL;
	const char *group = NULL;
	const uint8_t *pt;
	size_t ptlen;
	hw_err e = HW_ERR_CRYPTO;

	if (!bld)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (a->key->ktype == CKK_RSA) {
		n = BN_bin2bn(a->a, (int)a->alen, NULL);
		ex = BN_bin2bn(a->b, (int)a->blen, NULL);
		if (!n || !ex || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, ex))
			goto out;
		pc = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else if (a->key->ktype == CKK_EC_EDWARDS) {
		const __typeof__(curves[0]) *cv = curve_by_oid(a->a, a->alen);
		size_t rawlen = cv && cv->type == HW_KEY_ED25519 ? 32 : 57;

		/* CKA_EC_POINT: an OCTET STRING around the raw key (as SoftHSM
		 * writes it) or the raw key itself (PKCS#11 3.0). */
		if (cv && a->blen == rawlen + 2 && a->b[0] == 0x04 && a->b[1] == rawlen) {
			pt = a->b + 2;
		} else if (cv && a->blen == rawlen) {
			pt = a->b;
		} else {
			e = hw_fail(HW_ERR_UNSUPPORTED, 0, "Edwards curve or point encoding");
			goto out;
		}
		if (!(*out = EVP_PKEY_new_raw_public_key_ex(NULL, cv->ossl, NULL, pt, rawlen)))
			goto out;
		e = HW_OK;
		goto out;
	} else {
		const __typeof__(curves[0]) *cv = curve_by_oid(a->a, a->alen);

		group = cv && hw_key_type_is_ec(cv->type) ? cv->ossl : NULL;
		if (!group || ec_point(a->b, a->blen, &pt, &ptlen) != 0) {
			e = hw_fail(HW_ERR_UNSUPPORTED, 0, "EC curve or point encoding");
			goto out;
		}
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen))
			goto out;
		pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	if (!pc || !params || EVP_PKEY_fromdata_init(pc) <= 0 ||
	    EVP_PKEY_fromdata(pc, out, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	e = HW_OK;
out:
	if (e == HW_ERR_CRYPTO)
		hw_fail(e, 0, "building the public key");
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(pc);
	BN_free(n);
	BN_free(ex);
	return e;
}

HW_EXPORT hw_err
hw_key_public_der(hw_key *key, uint8_t **der, size_t *len)
{
	pub_arg a = { key, NULL, NULL, 0, 0 };
	EVP_PKEY *pk = NULL;
	unsigned char *buf = NULL;
	int n;
	hw_err e;

	if (!key || !der || !len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_public_der");
	if (key->cls != CKO_PRIVATE_KEY)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "'%s' is a secret key: it has no public half",
		               key->label);
	e = hw_ctx_run(key->ctx, op_pub, &a, "reading the public key");
	if (e == HW_OK)
		e = build_pkey(&a, &pk);
	if (e == HW_OK) {
		n = i2d_PUBKEY(pk, &buf);
		if (n <= 0) {
			e = hw_fail(HW_ERR_CRYPTO, 0, "encoding the public key");
		} else {
			/* Hand out malloc'd memory so that hw_free() is right. */
			*der = malloc((size_t)n);
			if (!*der) {
				e = hw_fail(HW_ERR_NOMEM, 0, NULL);
			} else {
				memcpy(*der, buf, (size_t)n);
				*len = (size_t)n;
			}
		}
	}
	OPENSSL_free(buf);
	EVP_PKEY_free(pk);
	free(a.a);
	free(a.b);
	return e;
}

typedef struct {
	hw_key *key;
	hw_key_info *info;
	uint8_t kcv[32];
	CK_ULONG kcv_len;
	bool pss_only;              /* RSA restricted to RSASSA-PSS */
} info_arg;

static CK_RV
op_info(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	info_arg *a = arg;
	hw_key_info *in = a->info;
	CK_OBJECT_HANDLE h;
	CK_BBOOL b[14];
	CK_ULONG value_len = 0;
	uint8_t *mod = NULL, *params = NULL;
	CK_ULONG mod_len = 0, params_len = 0;
	static const CK_ATTRIBUTE_TYPE bool_types[14] = {
		CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE,
		CKA_NEVER_EXTRACTABLE, CKA_LOCAL, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP,
		CKA_UNWRAP, CKA_SIGN, CKA_VERIFY, CKA_DERIVE,
	};
	int *fields[14] = {
		&in->token, &in->private_, &in->sensitive, &in->extractable,
		&in->always_sensitive, &in->never_extractable, &in->local, &in->encrypt,
		&in->decrypt, &in->wrap, &in->unwrap, &in->sign, &in->verify, &in->derive,
	};
	CK_ATTRIBUTE t[16];
	CK_RV rv = hw_key_handle_raw(a->key, s, &h);

	if (rv != CKR_OK)
		return rv;
	for (int i = 0; i < 14; i++)
		t[i] = (CK_ATTRIBUTE){ bool_types[i], &b[i], sizeof(b[i]) };
	t[14] = (CK_ATTRIBUTE){ CKA_VALUE_LEN, &value_len, sizeof(value_len) };
	t[15] = (CK_ATTRIBUTE){ CKA_CHECK_VALUE, a->kcv, sizeof(a->kcv) };
	rv = get_attrs(ctx, s, h, t, 16);
	if (rv != CKR_OK)
		return rv;
	for (int i = 0; i < 14; i++)
		*fields[i] = bool_attr(&t[i]);
	a->kcv_len = t[15].ulValueLen == CK_UNAVAILABLE_INFORMATION ? 0 : t[15].ulValueLen;

	in->bits = 0;
	if (a->key->ktype == CKK_AES) {
		in->bits = t[14].ulValueLen == sizeof(value_len) ? (unsigned)value_len * 8 : 0;
	} else if (a->key->ktype == CKK_RSA) {
		if (read_alloc(ctx, s, h, CKA_MODULUS, &mod, &mod_len) == CKR_OK) {
			CK_ULONG i = 0;
			while (i < mod_len && mod[i] == 0)
				i++;
			in->bits = (unsigned)(mod_len - i) * 8;
		}
		/* PSS-only: CKA_ALLOWED_MECHANISMS names nothing but PSS. */
		free(params);
		params = NULL;
		if (read_alloc(ctx, s, h, CKA_ALLOWED_MECHANISMS, &params, &params_len) == CKR_OK &&
		    params_len >= sizeof(CK_MECHANISM_TYPE)) {
			CK_MECHANISM_TYPE m;
			a->pss_only = true;
			for (CK_ULONG i = 0; i + sizeof(m) <= params_len; i += sizeof(m)) {
				memcpy(&m, params + i, sizeof(m));
				if (m != CKM_RSA_PKCS_PSS && m != CKM_SHA256_RSA_PKCS_PSS &&
				    m != CKM_SHA384_RSA_PKCS_PSS && m != CKM_SHA512_RSA_PKCS_PSS &&
				    m != CKM_SHA1_RSA_PKCS_PSS && m != CKM_SHA224_RSA_PKCS_PSS)
					a->pss_only = false;
			}
		}
	} else if (a->key->ktype == CKK_EC || a->key->ktype == CKK_EC_EDWARDS) {
		const __typeof__(curves[0]) *cv = NULL;

		if (read_alloc(ctx, s, h, CKA_EC_PARAMS, &params, &params_len) == CKR_OK)
			cv = curve_by_oid(params, params_len);
		/* SoftHSM keeps an Edwards key's curve on the public half only. */
		if (!cv && a->key->pub_handle != CK_INVALID_HANDLE) {
			free(params);
			params = NULL;
			if (read_alloc(ctx, s, a->key->pub_handle, CKA_EC_PARAMS, &params,
			               &params_len) == CKR_OK)
				cv = curve_by_oid(params, params_len);
		}
		{
			for (size_t i = 0; cv && i < NTYPES; i++)
				if (types[i].type == cv->type)
					in->bits = types[i].bits;
		}
	}
	free(mod);
	free(params);
	return CKR_OK;
}

static void
key_uri(hw_key *key, char *out, size_t outsz)
{
	P11KitUri *u = p11_kit_uri_new();
	CK_ATTRIBUTE a[3] = {
		{ CKA_CLASS, &key->cls, sizeof(key->cls) },
		{ CKA_LABEL, key->label, strlen(key->label) },
		{ CKA_ID, key->id, key->id_len },
	};
	char *s = NULL;

	out[0] = '\0';
	if (!u)
		return;
	*p11_kit_uri_get_token_info(u) = key->ctx->tinfo;
	p11_kit_uri_set_attributes(u, a, key->id_len ? 3 : 2);
	if (p11_kit_uri_format(u, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s) == P11_KIT_URI_OK && s)
		snprintf(out, outsz, "%s", s);
	free(s);
	p11_kit_uri_free(u);
}

static void
derive_type(hw_key *key, hw_key_info *in, bool pss_only)
{
	in->type = 0;
	for (size_t i = 0; i < NTYPES; i++)
		if (types[i].ck == key->ktype && types[i].bits == in->bits &&
		    hw_key_type_is_pss(types[i].type) == pss_only)
			in->type = types[i].type;
	if (in->type)
		snprintf(in->type_name, sizeof(in->type_name), "%s", hw_key_type_name(in->type));
	else if (key->ktype == CKK_AES)
		snprintf(in->type_name, sizeof(in->type_name), "aes%u", in->bits);
	else if (key->ktype == CKK_RSA)
		snprintf(in->type_name, sizeof(in->type_name), "rsa%u", in->bits);
	else if (key->ktype == CKK_EC)
		snprintf(in->type_name, sizeof(in->type_name), "ec");
	else if (key->ktype == CKK_EC_EDWARDS)
		snprintf(in->type_name, sizeof(in->type_name), "eddsa");
	else
		snprintf(in->type_name, sizeof(in->type_name), "other");

	in->purpose = HW_PURPOSE_NONE;
	if (key->cls == CKO_SECRET_KEY && in->encrypt == 1 && in->decrypt == 1 &&
	    in->wrap != 1 && in->unwrap != 1 && in->sign != 1)
		in->purpose = HW_PURPOSE_ENVELOPE;
	else if (key->cls == CKO_SECRET_KEY && in->wrap == 1 && in->unwrap == 1 &&
	         in->encrypt != 1 && in->decrypt != 1)
		in->purpose = HW_PURPOSE_KEYWRAP;
	else if (key->cls == CKO_PRIVATE_KEY && in->sign == 1 && in->decrypt != 1 &&
	         in->unwrap != 1)
		in->purpose = HW_PURPOSE_SIGN;
	else if (key->cls == CKO_PRIVATE_KEY && in->decrypt == 1 && in->sign != 1 &&
	         in->unwrap != 1)
		in->purpose = HW_PURPOSE_DECRYPT;
	else if (key->cls == CKO_PRIVATE_KEY && in->derive == 1 && in->sign != 1 &&
	         in->decrypt != 1 && in->unwrap != 1)
		in->purpose = HW_PURPOSE_DERIVE;
}

HW_EXPORT hw_err
hw_key_info_get(hw_key *key, hw_key_info *info)
{
	info_arg a;
	hw_key_info in;
	hw_err e;

	if (!key || !info)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_info_get");
	memset(&in, 0, sizeof(in));
	memset(&a, 0, sizeof(a));
	a.key = key;
	a.info = &in;
	e = hw_ctx_run(key->ctx, op_info, &a, "reading key attributes");
	if (e != HW_OK)
		return e;
	snprintf(in.label, sizeof(in.label), "%s", key->label);
	hw_hex(key->id, key->id_len, in.id_hex);
	derive_type(key, &in, a.pss_only);
	key_uri(key, in.uri, sizeof(in.uri));

	snprintf(in.kcv_alg, sizeof(in.kcv_alg), "unavailable");
	if (key->cls == CKO_SECRET_KEY && a.kcv_len >= 3) {
		/* CKA_CHECK_VALUE is defined as the first 3 bytes of ECB(0^n). */
		hw_hex(a.kcv, 3, in.kcv);
		snprintf(in.kcv_alg, sizeof(in.kcv_alg), "AES-ECB-zero");
	} else if (key->cls == CKO_PRIVATE_KEY) {
		uint8_t *der = NULL, md[32];
		size_t der_len = 0;
		unsigned mdlen = 0;
		if (hw_key_public_der(key, &der, &der_len) == HW_OK &&
		    EVP_Digest(der, der_len, md, &mdlen, EVP_sha256(), NULL) == 1) {
			hw_hex(md, 32, in.kcv);
			snprintf(in.kcv_alg, sizeof(in.kcv_alg), "SHA256-SPKI");
		}
		free(der);
		hw_clear_error();
	}
	*info = in;
	return HW_OK;
}
