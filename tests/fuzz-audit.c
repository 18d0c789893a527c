/*
 * libFuzzer harness: arbitrary bytes into the audit log reader, the parser
 * an auditor runs over a log an attacker may have edited. Each line goes
 * to hw_audit_entry_parse(), and the whole input to hw_audit_verify() (with
 * a fixed P-256 public key: inputs cannot sign, but everything up to the
 * signature check is reached). Besides memory errors (ASan/UBSan), it
 * checks what the reader promises: an accepted record has a known shape,
 * and a rejected log names a line that exists.
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-audit (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * SubjectPublicKeyInfo of the P-256 audit key that signed the seed log
 * tests/fuzz-corpus/audit/log-signed (its private half is gone), so that
 * mutations of the seed reach the signature checks.
 */
static const uint8_t spki[] = {
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
	0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0xb7,
	0x29, 0x70, 0x35, 0x0f, 0x5b, 0xb9, 0xa8, 0x04, 0xae, 0xee, 0xef, 0x42, 0x1c, 0x83,
	0x22, 0xc2, 0x31, 0xac, 0xb6, 0x96, 0x3e, 0x84, 0xcf, 0x6a, 0xc5, 0xd1, 0xbf, 0xdc,
	0xa7, 0x26, 0xab, 0x97, 0xf4, 0x52, 0xdc, 0xb8, 0x32, 0x0b, 0xa6, 0x14, 0xaf, 0x70,
	0xf6, 0xed, 0x80, 0x22, 0xf2, 0x43, 0xe8, 0x5f, 0x20, 0x6d, 0x00, 0x04, 0xff, 0x92,
	0xd6, 0x01, 0xdd, 0xe0, 0x12, 0x32, 0x17
};

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-audit: %s\n", what);
	abort();
}

static void check_entry(const hw_audit_entry *e)
{
	if (strcmp(e->type, "genesis") && strcmp(e->type, "event") && strcmp(e->type, "digest") &&
	    !memchr(e->type, 0, sizeof(e->type)))
		violated("an accepted record's type is not terminated");
	if (!e->time || !e->prev)
		violated("an accepted record lacks time or prev");
	for (size_t i = 0; i < e->ncontext; i++)
		if (!e->context[i].key || !e->context[i].value)
			violated("an accepted record has a context pair without key or value");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_audit_report rep;
	size_t start = 0, nlines = 0;
	uint8_t *copy;
	hw_err err;

	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	for (size_t i = 0; i <= size; i++) {
		if (i < size && copy[i] != '\n')
			continue;
		if (i > start || i < size) {
			/* Each line in its own exact-size buffer, so ASan sees overreads. */
			size_t len = i - start;
			uint8_t *line = malloc(len ? len : 1);
			hw_audit_entry *e = NULL;

			if (line) {
				if (len)
					memcpy(line, copy + start, len);
				if (hw_audit_entry_parse(line, len, &e) == HW_OK) {
					check_entry(e);
					hw_audit_entry_free(e);
				}
				free(line);
			}
			nlines++;
		}
		start = i + 1;
	}
	memset(&rep, 0xa5, sizeof(rep));
	err = hw_audit_verify(copy, size, spki, sizeof(spki), &rep);
	if (err == HW_ERR_INTEGRITY) {
		if (rep.bad_line == 0 || rep.bad_line > nlines + 1)
			violated("a rejected log names a line that does not exist");
		if (!memchr(rep.reason, 0, sizeof(rep.reason)) || !rep.reason[0])
			violated("a rejected log has no reason");
	} else if (err == HW_OK) {
		if (rep.records == 0 || rep.uncovered > rep.records)
			violated("an accepted log has inconsistent counts");
	}
	free(copy);
	return 0;
}
