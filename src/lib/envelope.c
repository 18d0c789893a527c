/*
 * Envelope encryption in the AWS Encryption SDK message format (esdk.c)
 * with an HSM keyring: the data key is wrapped and unwrapped by AES-256-GCM
 * inside the HSM, and the result is stored exactly as the SDK's Raw AES
 * keyring stores it, so that any SDK holding the same key decrypts it.
 */
#include "internal.h"
#include "esdk.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define DEFAULT_NAMESPACE "hsmwrap"
#define DEFAULT_MAX_BUFFER ((size_t)64 << 20)
#define WRAP_TAG_BITS 128u
_Static_assert(ESDK_IV_LEN == sizeof(((hw_gcm_arg *)0)->iv), "hw_op_gcm uses 96-bit IVs");
#define PINFO_TRAILER (4 + 4 + ESDK_IV_LEN)

struct hw_envelope_cfg {
	uint16_t suite;
	uint32_t frame_len;
	hw_commitment_policy policy;
	unsigned max_edks;
	char ns[256];
	size_t max_buffer;
	bool reject_signed;
};

static const hw_envelope_cfg defaults = {
	.suite = HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384,
	.frame_len = 4096,
	.policy = HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
	.max_edks = 16,
	.ns = DEFAULT_NAMESPACE,
	.max_buffer = DEFAULT_MAX_BUFFER,
	.reject_signed = false,
};

static const hw_envelope_cfg *
cfg_or_default(const hw_envelope_cfg *cfg)
{
	return cfg ? cfg : &defaults;
}

HW_EXPORT hw_err
hw_envelope_cfg_new(hw_envelope_cfg **out)
{
	hw_envelope_cfg *c;

	if (!out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_new");
	c = malloc(sizeof(*c));
	if (!c)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	*c = defaults;
	*out = c;
	return HW_OK;
}

HW_EXPORT void
hw_envelope_cfg_free(hw_envelope_cfg *cfg)
{
	free(cfg);
}

HW_EXPORT hw_err
hw_envelope_cfg_set_suite(hw_envelope_cfg *cfg, unsigned suite)
{
	if (!cfg || (suite != HW_SUITE_AES256_HKDF_SHA512_COMMIT &&
	             suite != HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "suite 0x%04x: hsmwrap encrypts with 0x0478 "
		               "or 0x0578", suite);
	cfg->suite = (uint16_t)suite;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_frame_length(hw_envelope_cfg *cfg, uint32_t len)
{
	if (!cfg || len == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the frame length must be 1 to 2^32 - 1");
	cfg->frame_len = len;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_commitment_policy(hw_envelope_cfg *cfg, hw_commitment_policy p)
{
	if (!cfg || (p != HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT &&
	             p != HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown commitment policy");
	cfg->policy = p;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_max_edks(hw_envelope_cfg *cfg, unsigned n)
{
	if (!cfg || n > UINT16_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "at most 65535 encrypted data keys");
	cfg->max_edks = n;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_key_namespace(hw_envelope_cfg *cfg, const char *ns)
{
	size_t n = ns ? strlen(ns) : 0;

	if (!cfg || n == 0 || n >= sizeof(cfg->ns))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace must be 1 to 255 bytes");
	/* The SDKs keep this prefix for their KMS keyrings (raw-aes-keyring.md). */
	if (strncmp(ns, "aws-kms", 7) == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace may not start with "
		               "'aws-kms'");
	if (!esdk_utf8_ok((const uint8_t *)ns, n))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace must be UTF-8");
	memcpy(cfg->ns, ns, n + 1);
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_max_buffer(hw_envelope_cfg *cfg, size_t bytes)
{
	if (!cfg || bytes < 4096)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the buffer limit must be at least 4096 bytes");
	cfg->max_buffer = bytes;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_reject_signed(hw_envelope_cfg *cfg, int reject)
{
	if (!cfg)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_set_reject_signed");
	cfg->reject_signed = reject != 0;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Contexts between the public hw_ectx and the format's pairs         */

/* *ser keeps the bytes the pairs point into. */
static hw_err
ec_import(const hw_ectx *in, esdk_ec *ec, uint8_t **ser)
{
	size_t len = 0;
	hw_err e;

	ec->p = NULL;
	ec->n = 0;
	*ser = NULL;
	if (!in)
		return HW_OK;
	e = hw_ectx_serialize(in, ser, &len);
	if (e == HW_OK)
		e = esdk_ec_parse(*ser, len, ec);
	if (e != HW_OK) {
		free(*ser);
		*ser = NULL;
	}
	return e;
}

static hw_err
ec_export(const esdk_ec *ec, hw_ectx **out)
{
	hw_ectx *x = NULL;
	hw_err e = hw_ectx_new(&x);

	for (size_t i = 0; e == HW_OK && i < ec->n; i++) {
		char *k = strndup((const char *)ec->p[i].k, ec->p[i].klen);
		char *v = strndup((const char *)ec->p[i].v, ec->p[i].vlen);

		if (!k || !v)
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		else if (strlen(k) != ec->p[i].klen || strlen(v) != ec->p[i].vlen || !*k)
			e = hw_fail(HW_ERR_UNSUPPORTED, 0, "the message's encryption context has an "
			            "empty key or a NUL character, which hw_ectx cannot hold");
		else
			e = hw_ectx_add(x, k, v);
		free(k);
		free(v);
	}
	if (e != HW_OK) {
		hw_ectx_free(x);
		return e;
	}
	*out = x;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* HSM keyring                                                       */

typedef struct {
	hw_key *const *keys;
	size_t nkeys;
	const char *ns;
} wrap_arg;

static hw_err
kr_wrap(void *arg, const esdk_suite *s, const uint8_t *aad, size_t aadlen, const uint8_t *dk,
        size_t dklen, hw_wbuf *edks, size_t *nedks)
{
	wrap_arg *w = arg;
	uint8_t ct[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
	hw_err e = HW_OK;

	(void)s;
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
		hw_wbuf_str16(edks, w->ns, strlen(w->ns));
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

typedef struct {
	hw_ctx *ctx;
	hw_key *const *allowed;
	size_t nallowed;
	const char *ns;
} unwrap_arg;

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
	if (nl == 0 || memchr(name, 0, nl))
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

static hw_err
kr_unwrap(void *arg, const esdk_header *h, const uint8_t *aad, size_t aadlen, uint8_t *dk,
          size_t dklen)
{
	unwrap_arg *u = arg;
	size_t nsl = strlen(u->ns), tried = 0;
	uint8_t out[ESDK_MAX_KEY_LEN + ESDK_TAG_LEN];
	hw_err hard = HW_OK;
	char hard_detail[256] = "", names[256] = "";
	size_t nlen = 0;

	for (size_t i = 0; i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];
		hw_key *key = NULL, *owned = NULL;
		size_t nl;
		hw_gcm_arg a;
		hw_rbuf r;
		uint32_t tagbits, ivlen;
		const uint8_t *iv;
		hw_err e;

		if (k->pid_len != nsl || memcmp(k->pid, u->ns, nsl) != 0 ||
		    k->pinfo_len < PINFO_TRAILER)
			continue;
		nl = k->pinfo_len - PINFO_TRAILER;
		hw_rbuf_init(&r, k->pinfo + nl, PINFO_TRAILER);
		(void)hw_rbuf_u32(&r, &tagbits);
		(void)hw_rbuf_u32(&r, &ivlen);
		(void)hw_rbuf_bytes(&r, ESDK_IV_LEN, &iv);
		if (tagbits != WRAP_TAG_BITS || ivlen != ESDK_IV_LEN ||
		    k->ct_len != dklen + ESDK_TAG_LEN)
			continue;
		if (nlen + nl + 4 < sizeof(names))
			nlen += (size_t)snprintf(names + nlen, sizeof(names) - nlen, "%s'%.*s'",
			                         nlen ? ", " : "", (int)nl, (const char *)k->pinfo);
		e = find_named(u, k->pinfo, nl, &key, &owned);
		if (e == HW_ERR_KEY_NOT_FOUND)
			continue;
		if (e == HW_OK && (key->cls != CKO_SECRET_KEY || !key->can_decrypt))
			e = hw_fail(HW_ERR_KEY_PURPOSE, 0, "key '%s' may not unwrap data keys",
			            key->label);
		if (e == HW_OK) {
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
			tried++;
			e = hw_ctx_run(key->ctx, hw_op_gcm, &a, "AES-GCM unwrapping of the data "
			               "key in the HSM");
			if (e == HW_OK && a.outlen != dklen)
				e = hw_fail(HW_ERR_HSM, 0, "the token returned a data key of %lu bytes",
				            (unsigned long)a.outlen);
			/* Some tokens report a failed tag check as a general error. */
			if (e == HW_ERR_HSM && hw_last_ckrv() == CKR_GENERAL_ERROR)
				e = HW_ERR_INTEGRITY;
		}
		hw_key_free(owned);
		if (e == HW_OK) {
			memcpy(dk, out, dklen);
			OPENSSL_cleanse(out, sizeof(out));
			return HW_OK;
		}
		OPENSSL_cleanse(out, sizeof(out));
		if (e != HW_ERR_INTEGRITY && hard == HW_OK) {
			hard = e;
			snprintf(hard_detail, sizeof(hard_detail), "%s", hw_last_detail());
		}
	}
	if (hard != HW_OK)
		return hw_fail(hard, hw_last_ckrv(), "%s", hard_detail);
	if (tried)
		return hw_fail(HW_ERR_INTEGRITY, 0, "the data key wrapped for %s did not decrypt "
		               "(wrong encryption context, altered message, or another key with "
		               "that label)", names);
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

/* ---------------------------------------------------------------- */
/* Encryption API                                                    */

struct hw_enc_stream {
	esdk_enc *e;
	hw_write_cb write;
	void *arg;
};

static hw_err
check_keys(hw_key *const *keys, size_t n)
{
	if (!keys || n == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "at least one key is needed");
	if (n > UINT16_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "too many keys");
	for (size_t i = 0; i < n; i++)
		if (!keys[i])
			return hw_fail(HW_ERR_INVALID_ARG, 0, "key %zu is NULL", i);
	return HW_OK;
}

static hw_err
enc_open(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys, const hw_ectx *ec,
         esdk_write_fn out, void *out_arg, esdk_enc **res)
{
	const hw_envelope_cfg *c = cfg_or_default(cfg);
	wrap_arg w = { keys, nkeys, c->ns };
	esdk_enc_params p;
	esdk_ec uec;
	uint8_t *ser;
	hw_err e = check_keys(keys, nkeys);

	if (e != HW_OK)
		return e;
	/* Before any HSM work (encrypt.md: fail if more EDKs than the maximum). */
	if (c->max_edks && nkeys > c->max_edks)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "%zu keys, more than the limit of %u encrypted "
		               "data keys", nkeys, c->max_edks);
	e = ec_import(ec, &uec, &ser);
	if (e != HW_OK)
		return e;
	memset(&p, 0, sizeof(p));
	p.suite = c->suite;
	p.frame_len = c->frame_len;
	p.max_edks = c->max_edks;
	p.wrap = kr_wrap;
	p.wrap_arg = &w;
	p.out = out;
	p.out_arg = out_arg;
	e = esdk_enc_new(&p, &uec, res);
	esdk_ec_free(&uec);
	free(ser);
	return e;
}

HW_EXPORT hw_err
hw_enc_stream_new(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys,
                  const hw_ectx *ec, hw_write_cb write, void *arg, hw_enc_stream **out)
{
	hw_enc_stream *s;
	hw_err e;

	if (!write || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_enc_stream_new");
	hw_clear_error();
	s = calloc(1, sizeof(*s));
	if (!s)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = enc_open(cfg, keys, nkeys, ec, write, arg, &s->e);
	if (e != HW_OK) {
		free(s);
		return e;
	}
	*out = s;
	return HW_OK;
}

HW_EXPORT hw_err
hw_enc_stream_update(hw_enc_stream *s, const uint8_t *in, size_t len)
{
	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_enc_stream_update");
	return esdk_enc_update(s->e, in, len);
}

HW_EXPORT hw_err
hw_enc_stream_final(hw_enc_stream *s)
{
	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_enc_stream_final");
	return esdk_enc_final(s->e);
}

HW_EXPORT void
hw_enc_stream_free(hw_enc_stream *s)
{
	if (!s)
		return;
	esdk_enc_free(s->e);
	free(s);
}

/* One-shot output: a growing buffer, wiped on growth and on failure. */
static hw_err
to_wbuf(void *arg, const uint8_t *p, size_t n)
{
	hw_wbuf *w = arg;

	hw_wbuf_put(w, p, n);
	return w->err == HW_OK ? HW_OK : hw_fail(w->err, 0, "output buffer");
}

HW_EXPORT hw_err
hw_envelope_encrypt(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys,
                    const hw_ectx *ec, const uint8_t *in, size_t inlen, uint8_t **out,
                    size_t *outlen)
{
	esdk_enc *enc = NULL;
	hw_wbuf w;
	hw_err e;

	if ((!in && inlen) || !out || !outlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_encrypt");
	hw_clear_error();
	hw_wbuf_init(&w, SIZE_MAX);
	e = enc_open(cfg, keys, nkeys, ec, to_wbuf, &w, &enc);
	if (e == HW_OK)
		e = esdk_enc_update(enc, in, inlen);
	if (e == HW_OK)
		e = esdk_enc_final(enc);
	esdk_enc_free(enc);
	if (e != HW_OK) {
		hw_wbuf_free(&w);
		return e;
	}
	return hw_wbuf_finish(&w, out, outlen);
}

/* ---------------------------------------------------------------- */
/* Decryption API                                                    */

struct hw_dec_stream {
	esdk_dec *d;
	unwrap_arg u;
	esdk_ec req;
	uint8_t *req_ser;
	hw_key **allowed;           /* copy of the caller's array */
	char *ns;                   /* copy: cfg may be freed while the stream lives */
};

static hw_err
check_required(const esdk_ec *req)
{
	size_t n = strlen(ESDK_RESERVED_PREFIX);

	for (size_t i = 0; i < req->n; i++)
		if (req->p[i].klen >= n && memcmp(req->p[i].k, ESDK_RESERVED_PREFIX, n) == 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "required context keys may not start "
			               "with 'aws-crypto-'");
	return HW_OK;
}

static hw_err
dec_open(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed, size_t nallowed,
         const hw_ectx *required, esdk_write_fn out, void *out_arg, hw_dec_stream **res)
{
	const hw_envelope_cfg *c = cfg_or_default(cfg);
	hw_dec_stream *s;
	esdk_dec_params p;
	hw_err e;

	if (allowed ? (nallowed == 0 || check_keys(allowed, nallowed) != HW_OK) : !ctx)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "give allowed keys, or a context to find "
		               "keys in");
	s = calloc(1, sizeof(*s));
	if (!s)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (allowed) {
		s->allowed = malloc(nallowed * sizeof(*s->allowed));
		if (!s->allowed) {
			free(s);
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		}
		memcpy(s->allowed, allowed, nallowed * sizeof(*s->allowed));
	}
	s->ns = strdup(c->ns);
	s->u.ctx = ctx;
	s->u.allowed = s->allowed;
	s->u.nallowed = nallowed;
	s->u.ns = s->ns;
	e = s->ns ? ec_import(required, &s->req, &s->req_ser) : hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (e == HW_OK)
		e = check_required(&s->req);
	if (e != HW_OK)
		goto fail;
	memset(&p, 0, sizeof(p));
	p.allow_legacy = c->policy == HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT;
	p.reject_signed = c->reject_signed;
	p.max_edks = c->max_edks;
	p.max_buffer = c->max_buffer;
	p.required = &s->req;
	p.unwrap = kr_unwrap;
	p.unwrap_arg = &s->u;
	p.out = out;
	p.out_arg = out_arg;
	e = esdk_dec_new(&p, &s->d);
	if (e != HW_OK)
		goto fail;
	*res = s;
	return HW_OK;
fail:
	hw_dec_stream_free(s);
	return e;
}

HW_EXPORT hw_err
hw_dec_stream_new(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed,
                  size_t nallowed, const hw_ectx *required, hw_write_cb write, void *arg,
                  hw_dec_stream **out)
{
	if (!write || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_dec_stream_new");
	hw_clear_error();
	return dec_open(ctx, cfg, allowed, nallowed, required, write, arg, out);
}

HW_EXPORT hw_err
hw_dec_stream_update(hw_dec_stream *s, const uint8_t *in, size_t len)
{
	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_dec_stream_update");
	return esdk_dec_update(s->d, in, len);
}

HW_EXPORT hw_err
hw_dec_stream_final(hw_dec_stream *s, hw_ectx **ec_out)
{
	hw_err e;

	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_dec_stream_final");
	e = esdk_dec_final(s->d);
	if (e == HW_OK && ec_out)
		e = ec_export(esdk_dec_context(s->d), ec_out);
	return e;
}

HW_EXPORT void
hw_dec_stream_free(hw_dec_stream *s)
{
	if (!s)
		return;
	esdk_dec_free(s->d);
	esdk_ec_free(&s->req);
	free(s->req_ser);
	free(s->allowed);
	free(s->ns);
	free(s);
}

HW_EXPORT hw_err
hw_envelope_decrypt(hw_ctx *ctx, const hw_envelope_cfg *cfg, hw_key *const *allowed,
                    size_t nallowed, const hw_ectx *required, const uint8_t *in,
                    size_t inlen, uint8_t **out, size_t *outlen, hw_ectx **ec_out)
{
	hw_dec_stream *s = NULL;
	hw_ectx *ec = NULL;
	hw_wbuf w;
	hw_err e;

	if (!in || !out || !outlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_decrypt");
	hw_clear_error();
	hw_wbuf_init(&w, SIZE_MAX);
	e = dec_open(ctx, cfg, allowed, nallowed, required, to_wbuf, &w, &s);
	if (e == HW_OK)
		e = esdk_dec_update(s->d, in, inlen);
	if (e == HW_OK)
		e = hw_dec_stream_final(s, ec_out ? &ec : NULL);
	hw_dec_stream_free(s);
	if (e == HW_OK)
		e = hw_wbuf_finish(&w, out, outlen);
	else
		hw_wbuf_free(&w);
	if (e != HW_OK) {
		hw_ectx_free(ec);
		return e;
	}
	if (ec_out)
		*ec_out = ec;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Inspection                                                        */

/* NUL-terminated copy; an embedded NUL becomes U+FFFD so the string is whole. */
static char *
text_dup(const uint8_t *p, size_t n)
{
	size_t nul = 0;
	char *s, *q;

	for (size_t i = 0; i < n; i++)
		nul += p[i] == 0;
	s = malloc(n + 2 * nul + 1);
	if (!s)
		return NULL;
	q = s;
	for (size_t i = 0; i < n; i++) {
		if (p[i]) {
			*q++ = (char)p[i];
		} else {
			*q++ = (char)0xef;
			*q++ = (char)0xbf;
			*q++ = (char)0xbd;
		}
	}
	*q = '\0';
	return s;
}

HW_EXPORT void
hw_envelope_info_free(hw_envelope_info *info)
{
	if (!info)
		return;
	for (size_t i = 0; info->pairs && i < info->npairs; i++) {
		free(info->pairs[i].key);
		free(info->pairs[i].value);
	}
	for (size_t i = 0; info->edks && i < info->nedks; i++) {
		free(info->edks[i].provider_id);
		free(info->edks[i].provider_info);
		free(info->edks[i].key_name);
	}
	free(info->pairs);
	free(info->edks);
	free(info);
}

static hw_err
info_fill(const esdk_header *h, hw_envelope_info *info)
{
	info->version = h->version;
	info->suite = h->suite->id;
	info->suite_name = h->suite->name;
	info->committing = h->suite->kdf == ESDK_KDF_COMMIT;
	info->signed_ = h->suite->sig_curve != NULL;
	memcpy(info->message_id, h->msgid, h->msgid_len);
	info->message_id_len = h->msgid_len;
	info->framed = h->content_type == ESDK_CT_FRAMED;
	info->frame_length = h->frame_len;
	info->header_len = h->len;
	info->pairs = calloc(h->ec.n ? h->ec.n : 1, sizeof(*info->pairs));
	info->edks = calloc(h->nedks, sizeof(*info->edks));
	if (!info->pairs || !info->edks)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	for (size_t i = 0; i < h->ec.n; i++) {
		info->pairs[i].key = text_dup(h->ec.p[i].k, h->ec.p[i].klen);
		info->pairs[i].value = text_dup(h->ec.p[i].v, h->ec.p[i].vlen);
		info->npairs++;
		if (!info->pairs[i].key || !info->pairs[i].value)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (size_t i = 0; i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];
		hw_envelope_edk *o = &info->edks[i];

		info->nedks++;
		o->provider_id = text_dup(k->pid, k->pid_len);
		o->provider_info = malloc(k->pinfo_len ? k->pinfo_len : 1);
		o->provider_info_len = k->pinfo_len;
		o->ciphertext_len = k->ct_len;
		if (!o->provider_id || !o->provider_info)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		memcpy(o->provider_info, k->pinfo, k->pinfo_len);
		/* Raw-AES layout: name || 128 || 12 || IV. */
		if (k->pinfo_len >= PINFO_TRAILER) {
			const uint8_t *t = k->pinfo + k->pinfo_len - PINFO_TRAILER;
			static const uint8_t want[8] = { 0, 0, 0, 0x80, 0, 0, 0, 0x0c };

			if (memcmp(t, want, sizeof(want)) == 0) {
				o->key_name = text_dup(k->pinfo, k->pinfo_len - PINFO_TRAILER);
				if (!o->key_name)
					return hw_fail(HW_ERR_NOMEM, 0, NULL);
			}
		}
	}
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_inspect(const uint8_t *in, size_t inlen, hw_envelope_info **out)
{
	esdk_header h;
	hw_envelope_info *info;
	hw_err e;

	if (!in || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_inspect");
	hw_clear_error();
	e = esdk_header_parse(in, inlen, 0, &h, NULL);
	if (e != HW_OK)
		return e;
	info = calloc(1, sizeof(*info));
	if (!info)
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
	else
		e = info_fill(&h, info);
	esdk_header_free(&h);
	if (e != HW_OK) {
		hw_envelope_info_free(info);
		return e;
	}
	*out = info;
	return HW_OK;
}
