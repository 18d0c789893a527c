/*
 * One-shot envelope encryption and decryption: a stream over one buffer.
 */
#include "ops/envelope.h"

#include <stdlib.h>
#include <string.h>

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
	uint64_t len = inlen;
	hw_wbuf w;
	hw_err e;

	if ((!in && inlen) || !out || !outlen)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_encrypt");
	hw_clear_error();
	hw_wbuf_init(&w, SIZE_MAX);
	e = enc_open(cfg, keys, nkeys, ec, &len, to_wbuf, &w, &enc);
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

