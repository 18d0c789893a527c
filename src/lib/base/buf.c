#include "internal.h"
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void
hw_rbuf_init(hw_rbuf *r, const uint8_t *p, size_t len)
{
	r->p = p;
	r->len = p ? len : 0;
	r->off = 0;
}

size_t
hw_rbuf_left(const hw_rbuf *r)
{
	return r->len - r->off;
}

const uint8_t *
hw_rbuf_pos(const hw_rbuf *r)
{
	return r->p + r->off;
}

hw_err
hw_rbuf_bytes(hw_rbuf *r, size_t n, const uint8_t **p)
{
	if (n > hw_rbuf_left(r))
		return HW_ERR_FORMAT;
	if (p)
		*p = r->p + r->off;
	r->off += n;
	return HW_OK;
}

static hw_err
read_be(hw_rbuf *r, size_t n, uint64_t *v)
{
	const uint8_t *p;
	uint64_t x = 0;

	if (hw_rbuf_bytes(r, n, &p) != HW_OK)
		return HW_ERR_FORMAT;
	for (size_t i = 0; i < n; i++)
		x = (x << 8) | p[i];
	*v = x;
	return HW_OK;
}

hw_err
hw_rbuf_u8(hw_rbuf *r, uint8_t *v)
{
	uint64_t x;
	hw_err e = read_be(r, 1, &x);
	if (e == HW_OK)
		*v = (uint8_t)x;
	return e;
}

hw_err
hw_rbuf_u16(hw_rbuf *r, uint16_t *v)
{
	uint64_t x;
	hw_err e = read_be(r, 2, &x);
	if (e == HW_OK)
		*v = (uint16_t)x;
	return e;
}

hw_err
hw_rbuf_u32(hw_rbuf *r, uint32_t *v)
{
	uint64_t x;
	hw_err e = read_be(r, 4, &x);
	if (e == HW_OK)
		*v = (uint32_t)x;
	return e;
}

hw_err
hw_rbuf_u64(hw_rbuf *r, uint64_t *v)
{
	return read_be(r, 8, v);
}

hw_err
hw_rbuf_str16(hw_rbuf *r, const uint8_t **p, size_t *n)
{
	uint16_t l;
	size_t save = r->off;

	if (hw_rbuf_u16(r, &l) != HW_OK || hw_rbuf_bytes(r, l, p) != HW_OK) {
		r->off = save;
		return HW_ERR_FORMAT;
	}
	*n = l;
	return HW_OK;
}

void
hw_wbuf_init(hw_wbuf *w, size_t max)
{
	memset(w, 0, sizeof(*w));
	w->max = max;
}

/* Growth copies the old bytes and wipes them: the buffer may hold secrets. */
static int
reserve(hw_wbuf *w, size_t n)
{
	size_t need, cap;
	uint8_t *np;

	if (w->err != HW_OK)
		return -1;
	if (n > w->max - w->len) {
		w->err = HW_ERR_TOO_LARGE;
		return -1;
	}
	need = w->len + n;
	if (need <= w->cap)
		return 0;
	cap = w->cap ? w->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > w->max)
		cap = w->max;
	np = malloc(cap);
	if (!np) {
		w->err = HW_ERR_NOMEM;
		return -1;
	}
	if (w->p) {
		memcpy(np, w->p, w->len);
		OPENSSL_cleanse(w->p, w->cap);
		free(w->p);
	}
	w->p = np;
	w->cap = cap;
	return 0;
}

void
hw_wbuf_reserve(hw_wbuf *w, size_t n)
{
	reserve(w, n);
}

uint8_t *
hw_wbuf_append(hw_wbuf *w, size_t n)
{
	uint8_t *p;

	if (reserve(w, n ? n : 1) != 0)
		return NULL;
	p = w->p + w->len;
	memset(p, 0, n);
	w->len += n;
	return p;
}

void
hw_wbuf_put(hw_wbuf *w, const void *p, size_t n)
{
	if (n == 0 || reserve(w, n) != 0)
		return;
	memcpy(w->p + w->len, p, n);
	w->len += n;
}

static void
write_be(hw_wbuf *w, uint64_t v, size_t n)
{
	uint8_t b[8];

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	hw_wbuf_put(w, b, n);
}

void hw_wbuf_u8(hw_wbuf *w, uint8_t v) { write_be(w, v, 1); }
void hw_wbuf_u16(hw_wbuf *w, uint16_t v) { write_be(w, v, 2); }
void hw_wbuf_u32(hw_wbuf *w, uint32_t v) { write_be(w, v, 4); }
void hw_wbuf_u64(hw_wbuf *w, uint64_t v) { write_be(w, v, 8); }

void
hw_wbuf_str16(hw_wbuf *w, const void *p, size_t n)
{
	if (n > UINT16_MAX) {
		if (w->err == HW_OK)
			w->err = HW_ERR_TOO_LARGE;
		return;
	}
	hw_wbuf_u16(w, (uint16_t)n);
	hw_wbuf_put(w, p, n);
}

hw_err
hw_wbuf_finish(hw_wbuf *w, uint8_t **out, size_t *len)
{
	hw_err e = w->err;

	if (e == HW_OK && !w->p && reserve(w, 1) != 0)
		e = w->err;
	if (e != HW_OK) {
		hw_wbuf_free(w);
		return e;
	}
	*out = w->p;
	*len = w->len;
	w->p = NULL;
	w->len = w->cap = 0;
	return HW_OK;
}

void
hw_wbuf_free(hw_wbuf *w)
{
	if (w->p) {
		OPENSSL_cleanse(w->p, w->cap);
		free(w->p);
	}
	w->p = NULL;
	w->len = w->cap = 0;
}
