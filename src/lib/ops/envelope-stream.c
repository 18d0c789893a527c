/*
 * Envelope encryption streams (hw_enc_stream, hw_dec_stream) in the AWS
 * Encryption SDK message format (format/esdk.c), with the HSM keyring and
 * the data-key cache around it.
 */
#include "ops/envelope.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

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

/*
 * The caching CMM's encrypt side, around the keyring: a hit gives the
 * data key, its EDKs and signing key of an earlier message made for the
 * same keys, suite and context; a miss makes fresh ones (here, so that
 * they can be cached) and records the EDKs the keyring writes.
 */
typedef struct {
	wrap_arg *w;
	cache_mat m;
	uint8_t id[CACHE_ID_LEN];
	uint8_t dk[ESDK_MAX_KEY_LEN];
	size_t dklen;
	EVP_PKEY *sk;
} enc_caching;

static hw_err
enc_cache_begin(const hw_envelope_cfg *c, hw_key *const *keys, size_t nkeys, const esdk_ec *uec,
                uint64_t len, enc_caching *ec, esdk_enc_params *p)
{
	const esdk_suite *s = esdk_suite_get(c->suite);
	uint8_t part[64], *ser = NULL;
	size_t serlen = 0;
	hw_err e;

	if (!s)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "suite 0x%04x", c->suite);
	e = esdk_ec_serialize(uec, &ser, &serlen);
	if (e == HW_OK)
		e = enc_partition(c, keys, nkeys, part);
	if (e == HW_OK)
		e = enc_cache_id(part, c->suite, ser, serlen, ec->id);
	free(ser);
	if (e != HW_OK)
		return e;
	if (cache_get(c->cache, ENT_ENC, ec->id, len, &ec->m)) {
		if (ec->m.dklen == s->key_len) {
			p->dk = ec->m.dk;
			p->sign_key = ec->m.sk;
			ec->w->replay = &ec->m;
			return HW_OK;
		}
		mat_clear(&ec->m);
	}
	ec->dklen = s->key_len;
	if (RAND_bytes(ec->dk, (int)ec->dklen) != 1)
		return hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes");
	if (s->sig_curve && !(ec->sk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", s->sig_curve)))
		return hw_fail(HW_ERR_CRYPTO, 0, "ECDSA %s key generation", s->sig_curve);
	p->dk = ec->dk;
	p->sign_key = ec->sk;
	ec->w->record = true;
	return HW_OK;
}

static void
enc_cache_end(const hw_envelope_cfg *c, hw_err e, uint64_t len, enc_caching *ec)
{
	wrap_arg *w = ec->w;

	if (e == HW_OK && w->record)
		cache_put(c->cache, ENT_ENC, ec->id, len, ec->dk, ec->dklen, w->rec_edks,
		          w->rec_edkslen, w->rec_nedks, w->rec_ec, w->rec_eclen, ec->sk);
	mat_clear(&ec->m);
	OPENSSL_cleanse(ec->dk, sizeof(ec->dk));
	EVP_PKEY_free(ec->sk);
	free(w->rec_edks);
	free(w->rec_ec);
}

/* len: the whole plaintext's length if known (one-shot), else NULL. */
hw_err
enc_open(const hw_envelope_cfg *cfg, hw_key *const *keys, size_t nkeys, const hw_ectx *ec,
         const uint64_t *len, esdk_write_fn out, void *out_arg, esdk_enc **res)
{
	const hw_envelope_cfg *c = cfg_or_default(cfg);
	wrap_arg w;
	enc_caching cc;
	esdk_enc_params p;
	esdk_ec uec;
	uint8_t *ser;
	/* The SDK caches only when the length is known and within the limit. */
	bool caching = c->cache && len && *len <= c->cache->max_bytes;
	hw_err e = nkeys || !c->nrcpts ? check_keys(keys, nkeys) : HW_OK;

	if (e != HW_OK)
		return e;
	/* Before any HSM work (encrypt.md: fail if more EDKs than the maximum). */
	if (c->max_edks && nkeys + c->nrcpts > c->max_edks)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "%zu keys, more than the limit of %u encrypted "
		               "data keys", nkeys + c->nrcpts, c->max_edks);
	e = ec_import(ec, &uec, &ser);
	if (e != HW_OK)
		return e;
	memset(&w, 0, sizeof(w));
	w.keys = keys;
	w.nkeys = nkeys;
	w.cfg = c;
	memset(&cc, 0, sizeof(cc));
	cc.w = &w;
	memset(&p, 0, sizeof(p));
	p.suite = c->suite;
	p.frame_len = c->frame_len;
	p.max_edks = c->max_edks;
	p.wrap = kr_wrap;
	p.wrap_arg = &w;
	p.out = out;
	p.out_arg = out_arg;
	p.threads = cfg_threads(c);
	if (caching)
		e = enc_cache_begin(c, keys, nkeys, &uec, *len, &cc, &p);
	if (e == HW_OK)
		e = esdk_enc_new(&p, &uec, res);
	if (caching)
		enc_cache_end(c, e, *len, &cc);
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
	e = enc_open(cfg, keys, nkeys, ec, NULL, write, arg, &s->e);
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

/* ---------------------------------------------------------------- */
/* Decryption API                                                    */


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

hw_err
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
	s->u.rsa_pad = c->rsa_pad;
	s->u.cache = c->cache;
	e = s->ns ? ec_import(required, &s->req, &s->req_ser) : hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (e == HW_OK && c->cache)
		e = dec_partition(c, ctx, s->allowed, nallowed, s->u.part);
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
	p.threads = cfg_threads(c);
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

