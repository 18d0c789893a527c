/*
 * Known-answer tests of the GF(2^8) arithmetic and Shamir sharing in
 * src/lib/base/shamir.c (compiled into this program on its own). The field
 * products are FIPS-197's worked examples (section 4.2); the shares were
 * computed by an independent, table-driven implementation (log/exp tables
 * with generator 0x03) for a fixed secret and fixed coefficients.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

static void check(int cond, const char *what)
{
	printf("%s: %s\n", cond ? "ok" : "FAIL", what);
	if (!cond)
		failures++;
}

static void unhex(const char *h, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		sscanf(h + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

static const char *const kat_shares[5] = {
	"19082b0a6d1c1f1e11e00322051417162938db3a1d2c2f2e211033d235242726",
	"3257b88d7db8d76201c97d88a3a692e77411d37d96d3bc92f1143be35356f98c",
	"3b4e819404b1de6b083064b1baaf9bee7d082a64afdab59bf82d221a4a5ff085",
	"945610b29c9eee7a06469b8f7be253718b49bb34766f1ffc80748424fd64a280",
	"9d4f29abe597e7730fbf82b662eb5a788250422d4f6616f5894d9ddde46dab89",
};

int main(void)
{
	uint8_t secret[32], coeffs[64], shares[5 * 32], want[32], got[32];
	int all_inv = 1, comb_ok = 1;

	check(hw_gf256_mul(0x57, 0x83) == 0xc1, "FIPS-197 {57}*{83} = {c1}");
	check(hw_gf256_mul(0x57, 0x13) == 0xfe, "FIPS-197 {57}*{13} = {fe}");
	check(hw_gf256_mul(0x57, 0x02) == 0xae, "FIPS-197 xtime({57}) = {ae}");
	check(hw_gf256_inv(0x53) == 0xca, "inverse of {53} is {ca} (FIPS-197 S-box derivation)");
	check(hw_gf256_inv(0) == 0, "inverse of 0 is 0 by convention");
	for (unsigned a = 1; a < 256; a++)
		if (hw_gf256_mul((uint8_t)a, hw_gf256_inv((uint8_t)a)) != 1)
			all_inv = 0;
	check(all_inv, "a * a^-1 = 1 for all 255 non-zero a");

	for (int i = 0; i < 32; i++)
		secret[i] = (uint8_t)(0x10 + i);
	for (int i = 0; i < 64; i++)
		coeffs[i] = (uint8_t)(7 * i + 1);
	check(hw_shamir_split(secret, 32, 5, 3, coeffs, shares) == 0, "split 3-of-5");
	for (int i = 0; i < 5; i++) {
		char what[64];
		unhex(kat_shares[i], want, 32);
		snprintf(what, sizeof(what), "share %d matches the independent implementation", i + 1);
		check(memcmp(shares + 32 * i, want, 32) == 0, what);
	}
	/* Every 3-subset and the whole set rebuild the secret; 2 do not. */
	for (int a = 0; a < 5; a++)
		for (int b = a + 1; b < 5; b++)
			for (int c = b + 1; c < 5; c++) {
				uint8_t xs[3] = { (uint8_t)(a + 1), (uint8_t)(b + 1), (uint8_t)(c + 1) };
				const uint8_t *ys[3] = { shares + 32 * a, shares + 32 * b, shares + 32 * c };
				if (hw_shamir_combine(xs, ys, 3, 32, got) != 0 || memcmp(got, secret, 32))
					comb_ok = 0;
			}
	check(comb_ok, "all 10 subsets of 3 shares rebuild the secret");
	{
		uint8_t xs[5] = { 1, 2, 3, 4, 5 };
		const uint8_t *ys[5] = { shares, shares + 32, shares + 64, shares + 96, shares + 128 };
		check(hw_shamir_combine(xs, ys, 5, 32, got) == 0 && !memcmp(got, secret, 32),
		      "all 5 shares rebuild the secret");
		check(hw_shamir_combine(xs, ys, 2, 32, got) == 0 && memcmp(got, secret, 32),
		      "2 shares of a 3-of-5 give something else");
		shares[64] ^= 1;
		check(hw_shamir_combine(xs, ys, 3, 32, got) == 0 && memcmp(got, secret, 32),
		      "a corrupted share gives something else");
		check(hw_shamir_combine(xs, ys, 5, 32, got) == 0 && memcmp(got, secret, 32),
		      "a corrupted share among more than threshold gives something else");
		xs[1] = 1;
		check(hw_shamir_combine(xs, ys, 3, 32, got) == -1, "duplicate x refused");
		xs[1] = 0;
		check(hw_shamir_combine(xs, ys, 3, 32, got) == -1, "x = 0 refused");
	}
	check(hw_shamir_split(secret, 32, 2, 3, coeffs, shares) == -1, "threshold above count refused");
	check(hw_shamir_split(secret, 32, 256, 3, coeffs, shares) == -1, "more than 255 shares refused");
	{
		uint8_t one[32];
		check(hw_shamir_split(secret, 32, 1, 1, NULL, one) == 0 && !memcmp(one, secret, 32),
		      "1-of-1 is the secret itself");
	}
	printf("%d failed\n", failures);
	return failures ? 1 : 0;
}
