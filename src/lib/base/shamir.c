/*
 * Shamir's secret sharing over GF(2^8) (the AES field, x^8+x^4+x^3+x+1),
 * byte by byte: share i of byte s is f(i), f a random polynomial of degree
 * threshold-1 with f(0) = s. Any threshold shares give f(0) back by
 * Lagrange interpolation; fewer say nothing about it.
 *
 * The field arithmetic uses no tables and no branches on secret data:
 * table lookups indexed by secret bytes leak through the cache. These
 * functions are pure (no HSM, no allocation, no error state), so the
 * known-answer test compiles this file on its own.
 */
#include "internal.h"

#include <string.h>

#include <openssl/crypto.h>

uint8_t
hw_gf256_mul(uint8_t a, uint8_t b)
{
	uint8_t r = 0;

	for (int i = 0; i < 8; i++) {
		/* Masks instead of ifs: the same work whatever the bits are. */
		r ^= (uint8_t)(-(b & 1)) & a;
		a = (uint8_t)((a << 1) ^ ((uint8_t)(-(a >> 7)) & 0x1b));
		b >>= 1;
	}
	return r;
}

/* a^254 = a^-1 (and 0 for 0), by a fixed chain of squarings. */
uint8_t
hw_gf256_inv(uint8_t a)
{
	uint8_t r = a, sq = a;

	/* 254 = 0b11111110: a^2 * a^4 * ... * a^128. */
	sq = hw_gf256_mul(sq, sq);
	r = sq;
	for (int i = 0; i < 6; i++) {
		sq = hw_gf256_mul(sq, sq);
		r = hw_gf256_mul(r, sq);
	}
	return r;
}

int
hw_shamir_split(const uint8_t *secret, size_t len, unsigned n, unsigned m,
                const uint8_t *coeffs, uint8_t *shares)
{
	if (!secret || !shares || len == 0 || m < 1 || n < m || n > 255 || (m > 1 && !coeffs))
		return -1;
	for (unsigned i = 0; i < n; i++) {
		uint8_t x = (uint8_t)(i + 1);

		for (size_t b = 0; b < len; b++) {
			/* Horner: coefficients of byte b are coeffs[b*(m-1) + k],
			 * k = 0 for x^1 up to m-2 for x^(m-1). */
			uint8_t y = 0;

			for (unsigned k = m - 1; k >= 1; k--)
				y = hw_gf256_mul((uint8_t)(y ^ coeffs[b * (m - 1) + (k - 1)]), x);
			shares[i * len + b] = (uint8_t)(y ^ secret[b]);
		}
	}
	return 0;
}

int
hw_shamir_combine(const uint8_t *xs, const uint8_t *const *ys, size_t k, size_t len,
                  uint8_t *secret)
{
	if (!xs || !ys || !secret || k == 0 || k > 255 || len == 0)
		return -1;
	/* Distinct, non-zero x: otherwise the interpolation is meaningless. */
	for (size_t i = 0; i < k; i++) {
		if (xs[i] == 0)
			return -1;
		for (size_t j = i + 1; j < k; j++)
			if (xs[i] == xs[j])
				return -1;
	}
	memset(secret, 0, len);
	for (size_t j = 0; j < k; j++) {
		/* L_j(0) = prod_{i != j} x_i / (x_i - x_j); minus is xor here. */
		uint8_t num = 1, den = 1, l;

		for (size_t i = 0; i < k; i++) {
			if (i == j)
				continue;
			num = hw_gf256_mul(num, xs[i]);
			den = hw_gf256_mul(den, (uint8_t)(xs[i] ^ xs[j]));
		}
		l = hw_gf256_mul(num, hw_gf256_inv(den));
		for (size_t b = 0; b < len; b++)
			secret[b] ^= hw_gf256_mul(l, ys[j][b]);
	}
	return 0;
}
