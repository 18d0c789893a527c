/*
 * settings.c - parser of the configuration file; see settings.h.
 */
#include "config.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"

static const struct {
	const char *name, *alias;
	size_t off;
} settings[] = {
	{ "module", NULL, offsetof(struct conf_values, module) },
	{ "module_init_args", "module-init-args", offsetof(struct conf_values, module_init_args) },
	{ "token", NULL, offsetof(struct conf_values, token) },
	{ "pin-source", NULL, offsetof(struct conf_values, pin_source) },
	{ "audit_log", "audit-log", offsetof(struct conf_values, audit_log) },
	{ "audit_key", "audit-key", offsetof(struct conf_values, audit_key) },
	{ "audit_digest_every", "audit-digest-every", offsetof(struct conf_values, audit_every) },
	{ "audit_fail_open", "audit-fail-open", offsetof(struct conf_values, audit_fail_open) },
	{ "allow_shared_pin_file", "allow-shared-pin-file",
	  offsetof(struct conf_values, allow_shared_pin_file) },
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

void conf_values_free(struct conf_values *v)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		char **slot = (char **)((char *)v + settings[i].off);

		free(*slot);
		*slot = NULL;
	}
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int line_parse(const char *path, unsigned lineno, char *line, struct conf_values *out,
                      char *err, size_t errlen)
{
	char *eq, *name, *value, **slot = NULL;

	name = trim(line);
	if (!*name || *name == '#')
		return 0;
	/* Values (pkcs11: URIs) contain '=': only the first one separates. */
	eq = strchr(name, '=');
	if (!eq) {
		snprintf(err, errlen, "%s:%u: expected 'name = value'", path, lineno);
		return -1;
	}
	*eq = '\0';
	name = trim(name);
	value = trim(eq + 1);
	for (size_t i = 0; i < NSETTINGS && !slot; i++)
		if (strcmp(name, settings[i].name) == 0 ||
		    (settings[i].alias && strcmp(name, settings[i].alias) == 0))
			slot = (char **)((char *)out + settings[i].off);
	if (!slot) {
		snprintf(err, errlen, "%s:%u: unknown setting '%.64s' (known: module, "
		         "module_init_args, token, pin-source, audit_log, audit_key, audit_digest_every)", path, lineno, name);
		return -1;
	}
	if (!*value) {
		snprintf(err, errlen, "%s:%u: empty value for '%s'", path, lineno, name);
		return -1;
	}
	free(*slot);
	if (!(*slot = strdup(value))) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	return 0;
}

int conf_parse(const char *path, const char *text, size_t len, struct conf_values *out,
               char *err, size_t errlen)
{
	char *copy, *line, *next;
	unsigned lineno = 0;
	int rc = 0;

	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		return -1;
	}
	if (!(copy = malloc(len + 1))) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	/* strtok_r would merge empty lines and so miscount line numbers. */
	for (line = copy; line && !rc; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		rc = line_parse(path, ++lineno, line, out, err, errlen);
	}
	free(copy);
	return rc;
}
