/*
 * libFuzzer harness: arbitrary bytes into hw_blob_inspect(), the parser
 * every wrapped data key and ciphertext passes through before the HSM sees
 * it. Besides memory errors (ASan/UBSan), it checks that whatever the parser
 * accepts is consistent: a known kind, terminated strings, a lowercase hex
 * key id, and a payload that fits in the input.
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-blob (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-blob: hw_blob_inspect accepted a blob but %s\n", what);
	abort();
}

static int is_terminated(const char *s, size_t max)
{
	return memchr(s, '\0', max) != NULL;
}

static void check_info(const hw_blob_info *info, size_t size)
{
	size_t i, idlen;

	if (info->kind != HW_BLOB_DIRECT && info->kind != HW_BLOB_DATAKEY &&
	    info->kind != HW_BLOB_WRAPPED)
		violated("the kind is unknown");
	if (!is_terminated(info->key_label, sizeof(info->key_label)))
		violated("the label is not terminated");
	if (!is_terminated(info->key_id_hex, sizeof(info->key_id_hex)))
		violated("the key id is not terminated");
	idlen = strlen(info->key_id_hex);
	if (idlen == 0 || idlen % 2 != 0)
		violated("the key id is empty or of odd length");
	for (i = 0; i < idlen; i++) {
		char c = info->key_id_hex[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			violated("the key id is not lowercase hex");
	}
	if (info->payload_len == 0 || info->payload_len >= size)
		violated("the payload length does not fit the input");
	if (strlen(info->key_label) + idlen / 2 + info->payload_len >= size)
		violated("the parts add up to more than the input");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_blob_info info;
	uint8_t *copy;

	/*
	 * An exact-size heap copy, so that ASan sees any read past the end
	 * (libFuzzer does this too, the replay driver might not).
	 */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	if (size)
		memcpy(copy, data, size);
	memset(&info, 0xa5, sizeof(info));
	if (hw_blob_inspect(copy, size, &info) == HW_OK)
		check_info(&info, size);
	free(copy);
	return 0;
}
