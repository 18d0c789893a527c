/*
 * libFuzzer harness: arbitrary bytes into hw_backup_inspect(), the parser
 * a backup file passes through before any share is combined or anything
 * is created on a token. Besides memory errors (ASan/UBSan) it checks that
 * whatever the parser accepts is consistent: a sane threshold, at least
 * one key, terminated labels, lowercase hex ids and KCVs, a known type.
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-backup (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-backup: hw_backup_inspect accepted a file but %s\n", what);
	abort();
}

static int lower_hex(const char *s, size_t max)
{
	const char *end = memchr(s, '\0', max);

	if (!end || (end - s) % 2)
		return 0;
	for (; s < end; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

static void check_info(const hw_backup_info *in, size_t size)
{
	if (in->version != 1)
		violated("the version is not 1");
	if (in->threshold < 2 || in->threshold > in->custodians || in->custodians > 255)
		violated("the threshold is out of range");
	if (in->nentries == 0 || in->nentries > size / 32)
		violated("the key count does not fit the input");
	for (size_t i = 0; i < in->nentries; i++) {
		const hw_backup_entry *e = &in->entries[i];
		size_t l = strnlen(e->label, sizeof(e->label));

		if (l == 0 || l == sizeof(e->label))
			violated("a label is empty or not terminated");
		if (!lower_hex(e->id_hex, sizeof(e->id_hex)) || !e->id_hex[0])
			violated("an id is not lowercase hex");
		if (!lower_hex(e->kcv, sizeof(e->kcv)))
			violated("a KCV is not lowercase hex");
		if (!memchr(e->type_name, '\0', sizeof(e->type_name)) ||
		    (strncmp(e->type_name, "aes", 3) && strncmp(e->type_name, "rsa", 3) &&
		     strncmp(e->type_name, "ec", 2)))
			violated("a key type is unknown");
		if (!memchr(e->kcv_alg, '\0', sizeof(e->kcv_alg)))
			violated("a KCV algorithm is not terminated");
		for (size_t j = 0; j < i; j++)
			if (!strcmp(in->entries[j].label, e->label) ||
			    !strcmp(in->entries[j].id_hex, e->id_hex))
				violated("two keys share a label or id");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_backup_info *info = NULL;
	uint8_t *copy = malloc(size ? size : 1);

	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	if (hw_backup_inspect(copy, size, &info) == HW_OK) {
		check_info(info, size);
		hw_backup_info_free(info);
	}
	free(copy);
	return 0;
}
