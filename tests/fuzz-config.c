/*
 * libFuzzer harness for the configuration file parser (tools/settings.c),
 * which reads /etc/hsmwrap.conf or a file named by --config / HSMWRAP_CONFIG.
 * Checks besides the sanitizers': an accepted file yields values that are
 * non-empty, trimmed and single-line, and parsing is deterministic (the
 * same input twice gives the same values).
 *
 * Built as tests/fuzz-replay-config (with tests/fuzz-replay.c) for `make
 * check`, and with -fsanitize=fuzzer by `make fuzz`.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_value(const char *v)
{
	size_t n;

	if (!v)
		return;
	n = strlen(v);
	if (n == 0 || isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]) ||
	    strchr(v, '\n'))
		abort();
}

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_values a = { 0 }, b = { 0 };
	char err[512];
	int ra = conf_parse("fuzz.conf", (const char *)data, size, &a, err, sizeof(err));
	int rb = conf_parse("fuzz.conf", (const char *)data, size, &b, err, sizeof(err));

	if (ra != rb)
		abort();
	if (ra == 0) {
		const char *va[] = { a.module, a.token, a.pin_source, a.audit_log, a.audit_key,
		                     a.audit_every };
		const char *vb[] = { b.module, b.token, b.pin_source, b.audit_log, b.audit_key,
		                     b.audit_every };

		for (size_t i = 0; i < sizeof(va) / sizeof(va[0]); i++) {
			check_value(va[i]);
			if (!same(va[i], vb[i]))
				abort();
		}
	} else if (!err[0]) {
		abort();        /* a refusal must say why */
	}
	conf_values_free(&a);
	conf_values_free(&b);
	return 0;
}
