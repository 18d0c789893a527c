/*
 * settings.h - the hsmwrap configuration file (/etc/hsmwrap.conf):
 * "name = value" lines, '#' comments. A pure parser (no I/O, no CLI
 * state) so that it can be fuzzed on its own.
 */
#ifndef HSMWRAP_SETTINGS_H
#define HSMWRAP_SETTINGS_H

#include <stddef.h>

struct conf_values {
	char *module, *module_init_args, *token, *pin_source;
	char *audit_log, *audit_key, *audit_every;
	char *audit_fail_open, *allow_shared_pin_file;  /* "yes" or "no" */
};

/*
 * Parses text[0..len) (NUL bytes are an error) into *out, which must be
 * zeroed or hold earlier values (a later line overrides). On error returns
 * -1 with a message (naming `path` and the line) in err; *out then holds
 * the lines before the bad one. Free with conf_values_free().
 */
int conf_parse(const char *path, const char *text, size_t len, struct conf_values *out,
               char *err, size_t errlen);
void conf_values_free(struct conf_values *v);

#endif
