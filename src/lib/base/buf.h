/*
 * Bounded byte reader and writer (the idea of OpenSSH's sshbuf): every
 * format hsmwrap parses or writes goes through these, so no parser does
 * pointer arithmetic of its own. Integers are big-endian.
 */
#ifndef HW_BUF_H
#define HW_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "hsmwrap.h"

/* Read side: a window onto caller-owned bytes. */
typedef struct {
	const uint8_t *p;
	size_t len;
	size_t off;
} hw_rbuf;

void hw_rbuf_init(hw_rbuf *r, const uint8_t *p, size_t len);
size_t hw_rbuf_left(const hw_rbuf *r);
/* Each returns HW_ERR_FORMAT when the input is too short. */
hw_err hw_rbuf_u8(hw_rbuf *r, uint8_t *v);
hw_err hw_rbuf_u16(hw_rbuf *r, uint16_t *v);
hw_err hw_rbuf_u32(hw_rbuf *r, uint32_t *v);
hw_err hw_rbuf_u64(hw_rbuf *r, uint64_t *v);
/* Points *p at the next n bytes and skips them. */
hw_err hw_rbuf_bytes(hw_rbuf *r, size_t n, const uint8_t **p);
/* u16 length then that many bytes. */
hw_err hw_rbuf_str16(hw_rbuf *r, const uint8_t **p, size_t *n);
/* Pointer to the current position (for "everything so far" spans). */
const uint8_t *hw_rbuf_pos(const hw_rbuf *r);

/* Write side: a growing buffer with a hard cap; wiped when freed. */
typedef struct {
	uint8_t *p;
	size_t len;
	size_t cap;
	size_t max;
	hw_err err;                 /* sticky: the first failure */
} hw_wbuf;

void hw_wbuf_init(hw_wbuf *w, size_t max);
void hw_wbuf_u8(hw_wbuf *w, uint8_t v);
void hw_wbuf_u16(hw_wbuf *w, uint16_t v);
void hw_wbuf_u32(hw_wbuf *w, uint32_t v);
void hw_wbuf_u64(hw_wbuf *w, uint64_t v);
void hw_wbuf_put(hw_wbuf *w, const void *p, size_t n);
/* Makes room for n more bytes now, so that later writes do not move the buffer. */
void hw_wbuf_reserve(hw_wbuf *w, size_t n);
/*
 * Appends n zero bytes and returns where they are, for output that a
 * token writes in place; NULL on failure (the sticky error says why).
 * The pointer stays valid while the writes that follow fit the reservation.
 */
uint8_t *hw_wbuf_append(hw_wbuf *w, size_t n);
/* u16 length prefix; HW_ERR_TOO_LARGE if n > 65535. */
void hw_wbuf_str16(hw_wbuf *w, const void *p, size_t n);
/*
 * Hands the bytes to the caller (free with hw_free/hw_free_secret) or
 * returns the sticky error, wiping the buffer.
 */
hw_err hw_wbuf_finish(hw_wbuf *w, uint8_t **out, size_t *len);
/* Wipes and frees. */
void hw_wbuf_free(hw_wbuf *w);

#endif
