/*
 * report.c - how the tool fails: exit statuses and the errors each one
 * covers, messages on stderr, the one JSON error document, usage hints.
 * Everything else in tools/ reports through here, so it sits at the
 * bottom with util.c and calls nothing of the CLI above it.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const hw_err exit_other[] = { HW_ERR_IO, HW_ERR_NOMEM, HW_ERR_CRYPTO, HW_OK };
static const hw_err exit_usage[] = { HW_ERR_INVALID_ARG, HW_ERR_URI, HW_OK };
static const hw_err exit_auth[] = {
	HW_ERR_PIN_INCORRECT, HW_ERR_PIN_LOCKED, HW_ERR_PIN_SOURCE, HW_ERR_CANCELLED,
	HW_ERR_NOT_LOGGED_IN, HW_OK
};
static const hw_err exit_notfound[] = {
	HW_ERR_MODULE, HW_ERR_TOKEN_NOT_FOUND, HW_ERR_TOKEN_AMBIGUOUS, HW_ERR_KEY_NOT_FOUND,
	HW_ERR_KEY_AMBIGUOUS, HW_ERR_NO_FREE_SLOT, HW_OK
};
static const hw_err exit_integrity[] = {
	HW_ERR_FORMAT, HW_ERR_INTEGRITY, HW_ERR_WRONG_KEY, HW_ERR_TOO_LARGE, HW_OK
};
static const hw_err exit_hsm[] = { HW_ERR_HSM, HW_ERR_DEVICE, HW_ERR_UNSUPPORTED, HW_OK };
static const hw_err exit_policy[] = { HW_ERR_KEY_PURPOSE, HW_ERR_KEY_EXISTS,
	HW_ERR_KEY_DISABLED, HW_ERR_KEY_PENDING_DELETION, HW_OK };
static const hw_err exit_none[] = { HW_OK };

const struct cli_exit_class cli_exit_classes[] = {
	{ EXIT_OK, "Success.", exit_none },
	{ EXIT_FAILURE_OTHER, "Other failure: input/output, out of memory, host-side crypto.", exit_other },
	{ EXIT_USAGE, "Usage error: unknown or missing option or argument, malformed URI, "
	  "bad --context, destroy without --yes, bad configuration file, an output or keyring "
	  "file that is a symbolic link.", exit_usage },
	{ EXIT_AUTH, "Authentication failure: wrong or locked PIN, unreadable PIN source, "
	  "prompt cancelled or impossible.", exit_auth },
	{ EXIT_NOT_FOUND, "Not found: module, token or key missing or ambiguous, no free slot.",
	  exit_notfound },
	{ EXIT_INTEGRITY, "Integrity failure: malformed, tampered, too large, wrong key or "
	  "wrong encryption context.", exit_integrity },
	{ EXIT_HSM, "HSM failure: the token failed, was removed, or lacks a needed mechanism.",
	  exit_hsm },
	{ EXIT_POLICY, "Refused by policy: the key's purpose does not allow the operation, or "
	  "a key with that label exists, or the key is disabled or pending deletion.", exit_policy },
	{ EXIT_AUDIT, "Not done for want of an audit record: an audit log is configured and the "
	  "record of the attempt could not be written (full disk, I/O error); nothing was done. "
	  "See --audit-fail-open.", exit_none },
	{ -1, NULL, NULL }
};


int cli_exit_code(hw_err err)
{
	for (const struct cli_exit_class *x = cli_exit_classes; x->meaning; x++)
		for (const hw_err *e = x->errs; *e != HW_OK; e++)
			if (*e == err)
				return x->code;
	return err == HW_OK ? EXIT_OK : EXIT_FAILURE_OTHER;
}

static void json_error(struct cli *cli, hw_err err, const char *what,
                       const char *detail, unsigned long ckrv)
{
	json_t *doc = json_object();
	char rv[32];

	snprintf(rv, sizeof(rv), "0x%08lx", ckrv);
	cj_bool(doc, "ok", 0);
	cj_str(doc, "error", hw_errname(err));
	cj_str(doc, "message", hw_strerror(err));
	cj_str(doc, "what", what);
	cj_str(doc, "detail", detail);
	cj_str(doc, "ckrv", rv);
	cj_uint(doc, "exit", (unsigned long long)(cli->force_exit ? cli->force_exit
	                                                          : cli_exit_code(err)));
	cj_print(stdout, doc);
	json_decref(doc);
	/* The success document must not follow: one document per run. */
	cli->json_sent = 1;
}

static int report(struct cli *cli, hw_err err, const char *what,
                  const char *detail, unsigned long ckrv)
{
	if (!detail)
		detail = "";
	/* A failed prompt knows better than the library why it failed. */
	if (cli->prompt.note[0] && cli_exit_code(err) == EXIT_AUTH)
		detail = cli->prompt.note;
	cli->last_err = err;
	if (detail[0])
		fprintf(stderr, "%s: %s: %s (%s)\n", PROG, what, hw_strerror(err), detail);
	else
		fprintf(stderr, "%s: %s: %s\n", PROG, what, hw_strerror(err));
	if (cli->json && !cli->json_sent)
		json_error(cli, err, what, detail, ckrv);
	return cli->force_exit ? cli->force_exit : cli_exit_code(err);
}

int cli_fail(struct cli *cli, hw_err err, const char *what)
{
	return report(cli, err, what, hw_last_detail(), hw_last_ckrv());
}

int cli_failf(struct cli *cli, hw_err err, const char *what, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cli->detail, sizeof(cli->detail), fmt, ap);
	va_end(ap);
	return report(cli, err, what, cli->detail, 0);
}

int cli_fail_util(struct cli *cli, hw_err err, const char *what)
{
	return report(cli, err, what, util_detail(), 0);
}

int cli_usage(struct cli *cli, const struct cli_cmd *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cli->detail, sizeof(cli->detail), fmt, ap);
	va_end(ap);
	cli->last_err = HW_ERR_INVALID_ARG;
	fprintf(stderr, "%s: %s: %s\n", PROG, c ? c->name : "usage", cli->detail);
	cli_usage_hint(stderr, c);
	if (cli->json && !cli->json_sent)
		json_error(cli, HW_ERR_INVALID_ARG, c ? c->name : "usage", cli->detail, 0);
	return EXIT_USAGE;
}

void cli_warn_err(const char *what, hw_err err)
{
	const char *d = hw_last_detail();

	if (d && d[0])
		fprintf(stderr, "%s: %s: %s (%s)\n", PROG, what, hw_strerror(err), d);
	else
		fprintf(stderr, "%s: %s: %s\n", PROG, what, hw_strerror(err));
}


/* ------------------------------------------------------------------ */
/* Usage lines, also used by the help of commands.c                    */

void cli_synopsis(FILE *f, const struct cli_cmd *c)
{
	fprintf(f, "%s [GLOBAL OPTIONS] %s", PROG, c->name);
	if (c->args)
		fprintf(f, " %s", c->args);
	for (const struct cli_opt_spec *o = c->opts; o->name; o++) {
		int shown = (o->flags & (CLI_OPT_REQUIRED | CLI_OPT_CONFIRM)) != 0;
		char sw[40];

		if (o->short_name)
			snprintf(sw, sizeof(sw), "-%c", o->short_name);
		else
			snprintf(sw, sizeof(sw), "--%s", o->name);
		fprintf(f, " %s%s%s%s%s%s", shown ? "" : "[", sw, o->metavar ? " " : "",
		        o->metavar ? o->metavar : "", shown ? "" : "]",
		        (o->flags & CLI_OPT_REPEAT) ? "..." : "");
	}
}

void cli_usage_hint(FILE *f, const struct cli_cmd *c)
{
	if (c) {
		fputs("Usage: ", f);
		cli_synopsis(f, c);
		fprintf(f, "\nTry '%s help %s' for more information.\n", PROG, c->name);
	} else {
		fprintf(f, "Try '%s help' for more information.\n", PROG);
	}
}
