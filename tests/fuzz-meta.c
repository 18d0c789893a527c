/*
 * libFuzzer harness: arbitrary bytes into hw_key_meta_decode(), the parser
 * of the lifecycle metadata objects on the token (CKA_VALUE of the
 * "hsmwrap-key-meta" data objects, which anyone with the user PIN can
 * write). Besides memory errors, it checks that what the parser accepts
 * is canonical: encoding it again gives exactly the input, and it obeys
 * the documented bounds.
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-meta (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-meta: hw_key_meta_decode accepted a value but %s\n", what);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hw_key_meta *m = NULL;
	uint8_t *again = NULL;
	size_t len = 0;

	if (hw_key_meta_decode(data, size, &m) != HW_OK)
		return 0;
	if (m->state < HW_KEY_STATE_ENABLED || m->state > HW_KEY_STATE_PENDING_DELETION)
		violated("the state is unknown");
	if ((m->state == HW_KEY_STATE_PENDING_DELETION) != (m->deletion_date > 0))
		violated("the deletion date does not match the state");
	if (m->nversions == 0 || m->nversions > HW_META_MAX_VERSIONS || m->ntags > HW_META_MAX_TAGS)
		violated("counts are out of bounds");
	for (size_t i = 0; i < m->nversions; i++) {
		size_t n = strnlen(m->versions[i].id_hex, sizeof(m->versions[i].id_hex));
		if (n == 0 || n % 2 || n == sizeof(m->versions[i].id_hex))
			violated("a version id is not hex");
		if (i && m->versions[i].number <= m->versions[i - 1].number)
			violated("versions are not ascending");
	}
	for (size_t i = 0; i < m->ntags; i++)
		if (!m->tags[i].key[0] || strlen(m->tags[i].key) > HW_META_MAX_TAG_KEY ||
		    strchr(m->tags[i].key, '=') || strlen(m->tags[i].value) > HW_META_MAX_TAG_VALUE)
			violated("a tag is out of bounds");
	if (!m->description || strlen(m->description) > HW_META_MAX_DESCRIPTION)
		violated("the description is out of bounds");
	if (hw_key_meta_encode(m, &again, &len) != HW_OK)
		violated("it cannot be encoded again");
	if (len != size || memcmp(again, data, size) != 0)
		violated("encoding it again gives other bytes (not canonical)");
	hw_free(again);
	hw_key_meta_free(m);
	return 0;
}
