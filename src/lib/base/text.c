/*
 * The few text forms every layer shows people or reads back: hex for key
 * ids, KCVs and digests, and UTC dates in messages. Pure: no HSM, no
 * error state.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void
hw_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int
hexdigit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int
hw_unhex(const char *s, uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(s);

	if (n == 0 || n % 2 || n / 2 > max)
		return -1;
	/* Strictly two hex digits per byte: sscanf's %2x would take "0g" as
	 * 0x00 and " 1" as 0x01 (found by tests/fuzz-keyspec.c). */
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexdigit(s[2 * i]), lo = hexdigit(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*len = n / 2;
	return 0;
}

void
hw_fmt_utc(int64_t t, char *out, size_t outsz)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, outsz, "%lld", (long long)t);
}
