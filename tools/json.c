/*
 * json.c - the --json documents, built with jansson. These setters add the
 * two rules jansson leaves to its caller: a NULL string is JSON null, and
 * bytes that are not UTF-8 (token labels are arbitrary bytes) become
 * U+FFFD instead of losing the field. A failed allocation anywhere marks
 * the document unusable (cj_failed), so a truncated document is never
 * printed as if it were whole.
 */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int failed;

/* Length of the valid UTF-8 sequence at s, or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n;
	unsigned cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* A copy of s with every byte that starts no valid sequence as U+FFFD. */
static char *utf8_repair(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str), o = 0;
	char *out = malloc(3 * len + 1);

	if (!out)
		return NULL;
	while (*s) {
		size_t n = utf8_seq(s);

		if (n == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			s++;
		} else {
			memcpy(out + o, s, n);
			o += n;
			s += n;
		}
	}
	out[o] = '\0';
	return out;
}

static json_t *string_value(const char *s)
{
	json_t *v;
	char *fixed;

	if (!s)
		return json_null();
	if ((v = json_string(s)))
		return v;
	if (!(fixed = utf8_repair(s)))
		return NULL;
	v = json_string(fixed);
	free(fixed);
	return v;
}

/* Adds v under key to an object, or appends it to an array (key NULL). */
static json_t *put(json_t *parent, const char *key, json_t *v)
{
	char *fixed = NULL;
	int rc;

	if (!v) {
		failed = 1;
		return NULL;
	}
	if (json_is_array(parent)) {
		rc = json_array_append(parent, v);
	} else if (key && json_is_object(parent)) {
		rc = json_object_set(parent, key, v);
		if (rc && (fixed = utf8_repair(key)))
			rc = json_object_set(parent, fixed, v);
		free(fixed);
	} else {
		rc = -1;
	}
	/* The parent holds its own reference; the one returned is borrowed. */
	json_decref(v);
	if (rc) {
		failed = 1;
		return NULL;
	}
	return v;
}

void cj_str(json_t *o, const char *key, const char *v)
{
	put(o, key, string_value(v));
}

void cj_bool(json_t *o, const char *key, int v)
{
	put(o, key, json_boolean(v));
}

void cj_tri(json_t *o, const char *key, int v)
{
	put(o, key, v < 0 ? json_null() : json_boolean(v));
}

void cj_null(json_t *o, const char *key)
{
	put(o, key, json_null());
}

void cj_uint(json_t *o, const char *key, unsigned long long v)
{
	/* Sizes and counts, far below 2^63; past it the document is refused. */
	put(o, key, v <= (unsigned long long)LLONG_MAX ? json_integer((json_int_t)v) : NULL);
}

json_t *cj_obj(json_t *o, const char *key)
{
	return put(o, key, json_object());
}

json_t *cj_arr(json_t *o, const char *key)
{
	return put(o, key, json_array());
}

int cj_failed(void)
{
	return failed;
}

int cj_print(FILE *f, const json_t *doc)
{
	char *text;

	if (failed || !doc || !(text = json_dumps(doc, JSON_COMPACT)))
		return -1;
	fprintf(f, "%s\n", text);
	free(text);
	return 0;
}
