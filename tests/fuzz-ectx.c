/*
 * libFuzzer harness for encryption contexts: the CLI passes untrusted
 * --context k=v strings to hw_ectx_add_kv(), and the serialization becomes
 * AAD, so a parser slip would silently change what a ciphertext is bound to.
 *
 * Input: one byte of mode bits, then records separated by '\n'. A record
 * goes to hw_ectx_add_kv() or, split at the first 0x01, to hw_ectx_add().
 * The harness keeps its own model of the pairs the library accepted and
 * checks the serialization against it: count, every pair present exactly
 * once, keys strictly ascending in byte order, nothing left over. It also
 * checks that an empty or repeated key is never accepted.
 *
 * Built twice: with -fsanitize=fuzzer by `make fuzz`, and as
 * tests/fuzz-replay-ectx (with tests/fuzz-replay.c) for `make check`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmwrap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PAIRS 64

struct model {
	char *key[MAX_PAIRS];
	char *value[MAX_PAIRS];
	size_t n;
};

static void violated(const char *what)
{
	fprintf(stderr, "fuzz-ectx: %s\n", what);
	abort();
}

static int model_has(const struct model *m, const char *key)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		if (strcmp(m->key[i], key) == 0)
			return 1;
	return 0;
}

static char *dup_n(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s != NULL) {
		memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* Adds one record; on success the model learns what the library now holds. */
static void add_record(hw_ectx *ec, struct model *m, const uint8_t *rec, size_t len,
                       int use_kv)
{
	const uint8_t *sep = memchr(rec, use_kv ? '=' : 0x01, len);
	char *key, *value, *whole = NULL;
	hw_err e;

	if (m->n == MAX_PAIRS)
		return;
	if (sep == NULL) {
		if (!use_kv)
			return;
		/* no '=': the library must refuse it */
		whole = dup_n(rec, len);
		if (whole != NULL && hw_ectx_add_kv(ec, whole) == HW_OK)
			violated("hw_ectx_add_kv accepted a pair without '='");
		free(whole);
		return;
	}
	key = dup_n(rec, (size_t)(sep - rec));
	value = dup_n(sep + 1, len - (size_t)(sep - rec) - 1);
	if (key == NULL || value == NULL)
		goto out;
	if (use_kv) {
		whole = dup_n(rec, len);
		if (whole == NULL)
			goto out;
		e = hw_ectx_add_kv(ec, whole);
	} else {
		e = hw_ectx_add(ec, key, value);
	}
	/* the library sees C strings: the model compares with strlen() too */
	if (e == HW_OK) {
		if (key[0] == '\0')
			violated("an empty context key was accepted");
		if (model_has(m, key))
			violated("a repeated context key was accepted");
		if (use_kv && strchr(whole, '=') != NULL &&
		    (size_t)(strchr(whole, '=') - whole) != strlen(key))
			violated("hw_ectx_add_kv split a pair somewhere else than at the first '='");
		m->key[m->n] = key;
		m->value[m->n] = value;
		m->n++;
		key = value = NULL;
	}
out:
	free(whole);
	free(key);
	free(value);
}

static size_t get_u16(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

static int cmp_bytes(const uint8_t *a, size_t la, const uint8_t *b, size_t lb)
{
	int c = memcmp(a, b, la < lb ? la : lb);

	return c != 0 ? c : (la > lb) - (la < lb);
}

/* Reads one length-prefixed string of the serialization. */
static const uint8_t *take(const uint8_t **p, const uint8_t *end, size_t *len)
{
	const uint8_t *s;

	if (end - *p < 2)
		violated("serialization truncated in a length");
	*len = get_u16(*p);
	s = *p + 2;
	if ((size_t)(end - s) < *len)
		violated("serialization truncated in a string");
	*p = s + *len;
	return s;
}

static void check_serialization(const struct model *m, const uint8_t *ser, size_t len)
{
	const uint8_t *p = ser, *end = ser + len, *prev = NULL;
	size_t i, j, prevlen = 0;
	int *seen;

	if (m->n == 0) {
		if (len != 0)
			violated("an empty context did not serialize to nothing");
		return;
	}
	if (len < 2 || get_u16(ser) != m->n)
		violated("the serialized pair count is wrong");
	p += 2;
	seen = calloc(m->n, sizeof(*seen));
	if (seen == NULL)
		return;
	for (i = 0; i < m->n; i++) {
		size_t klen, vlen;
		const uint8_t *k = take(&p, end, &klen);
		const uint8_t *v = take(&p, end, &vlen);

		if (prev != NULL && cmp_bytes(prev, prevlen, k, klen) >= 0)
			violated("serialized keys are not strictly ascending");
		prev = k;
		prevlen = klen;
		for (j = 0; j < m->n; j++)
			if (strlen(m->key[j]) == klen && memcmp(m->key[j], k, klen) == 0)
				break;
		if (j == m->n || seen[j])
			violated("a serialized key was never added, or appears twice");
		seen[j] = 1;
		if (strlen(m->value[j]) != vlen || memcmp(m->value[j], v, vlen) != 0)
			violated("a serialized value differs from the one added");
	}
	free(seen);
	if (p != end)
		violated("bytes left over after the last serialized pair");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct model m;
	hw_ectx *ec = NULL;
	uint8_t *ser = NULL;
	size_t serlen = 0, i, start;
	unsigned mode;

	if (size == 0)
		return 0;
	mode = data[0];
	data++;
	size--;
	memset(&m, 0, sizeof(m));
	if (hw_ectx_new(&ec) != HW_OK)
		return 0;
	for (start = 0, i = 0; i <= size; i++) {
		if (i == size || data[i] == '\n') {
			/* bit k of mode picks the entry point of record k (mod 8) */
			add_record(ec, &m, data + start, i - start, (mode >> (m.n % 8)) & 1);
			start = i + 1;
		}
	}
	if (hw_ectx_count(ec) != m.n)
		violated("hw_ectx_count differs from the number of accepted pairs");
	if (hw_ectx_serialize(ec, &ser, &serlen) == HW_OK) {
		check_serialization(&m, ser, serlen);
		hw_free(ser);
	}
	hw_ectx_free(ec);
	for (i = 0; i < m.n; i++) {
		free(m.key[i]);
		free(m.value[i]);
	}
	return 0;
}
