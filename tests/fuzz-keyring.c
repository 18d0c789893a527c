/*
 * libFuzzer harness: arbitrary bytes into hw_tde_keyring_inspect(), the
 * parser every TDE keyring file goes through before the HSM sees any of
 * it. Besides memory errors (ASan/UBSan), it checks what an accepted file
 * promises: terminated hex strings, entries sorted by (id, version) with
 * versions counting up from 1, and no more entries than the bytes allow.
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-keyring (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-keyring: hw_tde_keyring_inspect accepted a file but %s\n", what);
	abort();
}

static int hex_str(const char *s, size_t max)
{
	const char *end = memchr(s, 0, max);

	if (!end)
		return 0;
	for (; s < end; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

static void check_info(const hw_tde_keyring_info *info, size_t size)
{
	if (!hex_str(info->keyring_id, sizeof(info->keyring_id)) || strlen(info->keyring_id) != 32)
		violated("the keyring id is not 32 hex digits");
	if (!hex_str(info->master_id, sizeof(info->master_id)) || !info->master_id[0])
		violated("the master key id is not hex");
	if (!hex_str(info->master_kcv, sizeof(info->master_kcv)))
		violated("the KCV is not hex");
	if (!memchr(info->master_label, 0, sizeof(info->master_label)) || !info->master_label[0])
		violated("the master label is empty or not terminated");
	if (info->nentries * 19 > size)
		violated("there are more entries than bytes allow");
	for (size_t i = 0; i < info->nentries; i++) {
		const hw_tde_entry *e = &info->entries[i];

		if (e->version == 0)
			violated("an entry has version 0");
		if (i == 0 || e->id != e[-1].id) {
			if (e->version != 1 || (i > 0 && e->id < e[-1].id))
				violated("entries are not sorted, or a key does not start at version 1");
		} else if (e->version != e[-1].version + 1) {
			violated("versions do not count up by one");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_tde_keyring_info *info = NULL;
	uint8_t *copy;

	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	if (hw_tde_keyring_inspect(copy, size, &info) == HW_OK) {
		check_info(info, size);
		hw_tde_keyring_info_free(info);
	}
	free(copy);
	return 0;
}
