/*
 * libFuzzer harness: arbitrary bytes into hw_backup_share_parse(), the
 * parser of the share files custodians bring to a restore. Whatever it
 * accepts must be in range, and must survive a round trip through
 * hw_backup_share_format() unchanged (so a share is never re-written
 * differently from what was read).
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-share (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-share: hw_backup_share_parse accepted a share but %s\n", what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_backup_share s, again;
	char *text = NULL, *copy = malloc(size ? size : 1);
	size_t len = 0;

	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	if (hw_backup_share_parse(copy, size, &s) == HW_OK) {
		if (s.threshold < 2 || s.threshold > s.custodians || s.custodians > 255 ||
		    s.index < 1 || s.index > s.custodians)
			violated("its numbers are out of range");
		if (hw_backup_share_format(&s, &text, &len) != HW_OK)
			violated("it cannot be formatted again");
		if (hw_backup_share_parse(text, len, &again) != HW_OK ||
		    memcmp(&s, &again, sizeof(s)) != 0)
			violated("it does not survive a round trip");
		hw_free_secret(text, len);
	}
	free(copy);
	return 0;
}
