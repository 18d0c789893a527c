/*
 * Encryption contexts: non-secret key/value pairs bound to ciphertext as
 * AAD, as KMS and the AWS Encryption SDK do. The serialization is the
 * ESDK's, so the same context means the same bytes everywhere.
 */
#include "internal.h"
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

struct hw_ectx {
	char **keys;
	char **values;
	size_t n, cap;
};

/* Well-formed UTF-8 only (no overlongs, surrogates or values past U+10FFFF). */
static bool
utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i], need, min, cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			need = 1, min = 0x80, cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			need = 2, min = 0x800, cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			need = 3, min = 0x10000, cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= need)
			return false;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += need + 1;
	}
	return true;
}

HW_EXPORT hw_err
hw_ectx_new(hw_ectx **out)
{
	hw_ectx *ec;

	if (!out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_ectx_new");
	ec = calloc(1, sizeof(*ec));
	if (!ec)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	*out = ec;
	return HW_OK;
}

HW_EXPORT hw_err
hw_ectx_add(hw_ectx *ec, const char *key, const char *value)
{
	char *k, *v;

	if (!ec || !key || !value || !*key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "context keys must be non-empty");
	if (!utf8_valid((const unsigned char *)key, strlen(key)) ||
	    !utf8_valid((const unsigned char *)value, strlen(value)))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "context pairs must be UTF-8");
	if (strlen(key) > UINT16_MAX || strlen(value) > UINT16_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "context pair too long");
	for (size_t i = 0; i < ec->n; i++)
		if (strcmp(ec->keys[i], key) == 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "context key '%s' given twice", key);
	if (ec->n == ec->cap) {
		size_t cap = ec->cap ? ec->cap * 2 : 4;
		char **nk = realloc(ec->keys, cap * sizeof(*nk));
		if (!nk)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		ec->keys = nk;
		char **nv = realloc(ec->values, cap * sizeof(*nv));
		if (!nv)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		ec->values = nv;
		ec->cap = cap;
	}
	k = strdup(key);
	v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	ec->keys[ec->n] = k;
	ec->values[ec->n] = v;
	ec->n++;
	return HW_OK;
}

HW_EXPORT hw_err
hw_ectx_add_kv(hw_ectx *ec, const char *kv)
{
	const char *eq = kv ? strchr(kv, '=') : NULL;
	char *key;
	hw_err e;

	if (!eq || eq == kv)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "context must be KEY=VALUE");
	key = strndup(kv, (size_t)(eq - kv));
	if (!key)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = hw_ectx_add(ec, key, eq + 1);
	free(key);
	return e;
}

HW_EXPORT size_t
hw_ectx_count(const hw_ectx *ec)
{
	return ec ? ec->n : 0;
}

/* UTF-8 byte order, shorter first on a common prefix: memcmp semantics. */
static int
cmp_keys(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	int c = memcmp(a, b, la < lb ? la : lb);
	if (c)
		return c;
	return la < lb ? -1 : la > lb;
}

HW_EXPORT hw_err
hw_ectx_serialize(const hw_ectx *ec, uint8_t **out, size_t *len)
{
	size_t *order = NULL, n = ec ? ec->n : 0;
	hw_wbuf w;

	if (!out || !len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_ectx_serialize");
	if (n > UINT16_MAX)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "too many context pairs");
	hw_wbuf_init(&w, UINT16_MAX);
	if (n > 0) {
		order = malloc(n * sizeof(*order));
		if (!order)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		/* Insertion sort: contexts hold a handful of pairs. */
		for (size_t i = 0; i < n; i++) {
			size_t j = i;
			while (j > 0 && cmp_keys(ec->keys[order[j - 1]], ec->keys[i]) > 0) {
				order[j] = order[j - 1];
				j--;
			}
			order[j] = i;
		}
		hw_wbuf_u16(&w, (uint16_t)n);
		for (size_t i = 0; i < n; i++) {
			hw_wbuf_str16(&w, ec->keys[order[i]], strlen(ec->keys[order[i]]));
			hw_wbuf_str16(&w, ec->values[order[i]], strlen(ec->values[order[i]]));
		}
		free(order);
	}
	hw_err e = hw_wbuf_finish(&w, out, len);
	if (e != HW_OK)
		return hw_fail(e, 0, "serialized context exceeds 65535 bytes");
	return HW_OK;
}

HW_EXPORT void
hw_ectx_free(hw_ectx *ec)
{
	if (!ec)
		return;
	for (size_t i = 0; i < ec->n; i++) {
		free(ec->keys[i]);
		free(ec->values[i]);
	}
	free(ec->keys);
	free(ec->values);
	free(ec);
}
