/*
 * PIN sources. A PIN never comes from argv: it is read from a file
 * (through p11-kit's file PIN callback), a named environment variable, or
 * an interactive callback. Every copy is wiped once it has been used.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <p11-kit/pin.h>
#include <p11-kit/uri.h>
#include <strings.h>

/* PIN files written by editors and `echo` end in a newline that is not part of the PIN. */
static size_t
trim_newline(const char *p, size_t len)
{
	while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
		len--;
	return len;
}

static hw_err
store(char *pin, size_t max, size_t *len, const char *src, size_t n, const char *where)
{
	n = trim_newline(src, n);
	if (n == 0)
		return hw_fail(HW_ERR_PIN_SOURCE, 0, "%s: the PIN is empty", where);
	if (n >= max)
		return hw_fail(HW_ERR_PIN_SOURCE, 0, "%s: the PIN is too long", where);
	memcpy(pin, src, n);
	pin[n] = '\0';
	*len = n;
	return HW_OK;
}

static hw_err
from_file(const char *path, char *pin, size_t max, size_t *len)
{
	P11KitPin *p;
	const unsigned char *v;
	size_t n = 0;
	hw_err e;

	p = p11_kit_pin_file_callback(path, NULL, "PIN", 0, NULL);
	if (!p)
		return hw_fail(HW_ERR_PIN_SOURCE, 0, "cannot read PIN file %s", path);
	v = p11_kit_pin_get_value(p, &n);
	e = store(pin, max, len, (const char *)v, n, path);
	/* p11-kit frees PIN buffers without wiping them; we own the only
	 * reference, so wipe it here. */
	OPENSSL_cleanse((void *)v, n);
	p11_kit_pin_unref(p);
	return e;
}

hw_err
hw_pin_read(const char *source, const char *what, hw_pin_cb cb, void *cbarg,
            char *pin, size_t max, size_t *len)
{
	const char *v;
	hw_err e;

	if (!source)
		return hw_fail(HW_ERR_PIN_SOURCE, 0, "no PIN source");
	if (strncmp(source, "env:", 4) == 0) {
		v = getenv(source + 4);
		if (!v)
			return hw_fail(HW_ERR_PIN_SOURCE, 0,
			               "environment variable %s is not set", source + 4);
		return store(pin, max, len, v, strlen(v), source);
	}
	if (strncmp(source, "file:", 5) == 0) {
		/* RFC 7512 pin-source values may be file: URIs (file:///x). */
		const char *path = source + 5;
		if (strncmp(path, "//", 2) == 0)
			path += 2;
		return from_file(path, pin, max, len);
	}
	if (source[0] == '/')
		return from_file(source, pin, max, len);
	if (strcmp(source, "prompt") == 0) {
		size_t n = 0;
		if (!cb)
			return hw_fail(HW_ERR_PIN_SOURCE, 0, "prompt: no interactive PIN entry available");
		/* One byte stays free for the terminator. */
		e = cb(what, pin, max - 1, &n, cbarg);
		if (e != HW_OK) {
			OPENSSL_cleanse(pin, max);
			return hw_fail(e, 0, "%s", what);
		}
		if (n >= max) {
			OPENSSL_cleanse(pin, max);
			return hw_fail(HW_ERR_PIN_SOURCE, 0, "%s: too long", what);
		}
		pin[n] = '\0';
		n = trim_newline(pin, n);
		pin[n] = '\0';
		if (n == 0)
			return hw_fail(HW_ERR_PIN_SOURCE, 0, "%s: the PIN is empty", what);
		*len = n;
		return HW_OK;
	}
	/* Not echoed: a PIN typed where its source belongs must not reach logs. */
	return hw_fail(HW_ERR_PIN_SOURCE, 0,
	               "unknown PIN source: use file:PATH, env:NAME or prompt");
}

/* Any PIN spelling, also percent-encoded ("p%69n"), counts: not shown. */
static bool
mentions_pin(const char *s)
{
	for (; *s; s++)
		if (strncasecmp(s, "pin", 3) == 0 || *s == '%')
			return true;
	return false;
}

HW_EXPORT hw_err
hw_uri_redact(const char *uri, char **out)
{
	P11KitUri *u;
	char *s = NULL;

	if (!uri || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_uri_redact");
	*out = NULL;
	u = p11_kit_uri_new();
	if (!u)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK) {
		p11_kit_uri_set_pin_value(u, NULL);
		p11_kit_uri_set_pin_source(u, NULL);
		if (p11_kit_uri_format(u, P11_KIT_URI_FOR_ANY, &s) != P11_KIT_URI_OK)
			s = NULL;
	} else if (!mentions_pin(uri)) {
		s = strdup(uri);
	} else {
		s = strdup("(a PKCS#11 URI naming a PIN, not shown)");
	}
	p11_kit_uri_free(u);
	if (!s)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	*out = s;
	return HW_OK;
}
