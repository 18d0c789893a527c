/*
 * args.c - command-line options: the global options table, parsing a
 * command's options against its entry in the command table (getopt_long),
 * and reading the parsed values. PIN options are guarded here: a PIN is
 * never taken from argv, and never echoed back in an error.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const struct cli_global_opt cli_global_opts[] = {
	{ "module", "NAME|PATH", "HSMWRAP_MODULE",
	  "PKCS#11 module: a p11-kit module name or the path of a module. Default: "
	  HW_DEFAULT_MODULE "." },
	{ "module-init-args", "STR", "HSMWRAP_MODULE_INIT_ARGS",
	  "The string the module gets at initialisation (pReserved), e.g. for NSS softokn "
	  "\"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='' flags=\". Default: the "
	  "x-init-reserved option of the module's p11-kit configuration. Config: module_init_args." },
	{ "token", "URI", "HSMWRAP_TOKEN",
	  "The token, as a pkcs11: URI (e.g. pkcs11:token=prod). Without it the module must "
	  "hold exactly one initialised token." },
	{ "pin-source", "SRC", "HSMWRAP_PIN_SOURCE",
	  "Where the user PIN comes from: file:PATH (the first line of the file), env:NAME "
	  "(an environment variable) or prompt (asked on /dev/tty without echo). Default: prompt. "
	  "There is no way to give a PIN on the command line." },
	{ "config", "FILE", "HSMWRAP_CONFIG",
	  "Configuration file. Default: " SYSCONFDIR "/hsmwrap.conf, which may be absent." },
	{ "json", NULL, NULL,
	  "Print exactly one JSON document on standard output, also on failure." },
	{ "help", NULL, NULL, "Show this help." },
	{ "version", NULL, NULL, "Show the version." },
	{ "audit-log", "FILE", "HSMWRAP_AUDIT_LOG",
	  "Append a record of every command to this audit log (see `audit init`): the attempt, "
	  "synced before the command acts, then its outcome. A command whose attempt cannot be "
	  "recorded is not run (exit 8). Config: audit_log." },
	{ "audit-key", "L", "HSMWRAP_AUDIT_KEY",
	  "Audit signing key for digests. Default: the key the log's genesis names. "
	  "Config: audit_key." },
	{ "audit-fail-open", NULL, "HSMWRAP_AUDIT_FAIL_OPEN",
	  "Availability first: run a command even when its audit record cannot be written "
	  "(exit 1 afterwards). Default: fail closed, nothing is done (exit 8). Environment: "
	  "1 or 0. Config: audit_fail_open = yes|no." },
	{ "allow-shared-pin-file", NULL, "HSMWRAP_ALLOW_SHARED_PIN_FILE",
	  "Accept a PIN file that group or others may access (with a warning). Default: such "
	  "a file is refused (exit 3). Environment: 1 or 0. Config: allow_shared_pin_file = "
	  "yes|no." },
	{ 0 }
};

static int opt_index(const struct cli_cmd *c, const char *name)
{
	for (int i = 0; c->opts[i].name; i++)
		if (strcmp(c->opts[i].name, name) == 0)
			return i;
	return -1;
}

const char *cli_opt(const struct cli_args *a, const char *name)
{
	int i = opt_index(a->cmd, name);

	return i < 0 ? NULL : a->val[i];
}

int cli_flag(const struct cli_args *a, const char *name)
{
	return cli_opt(a, name) != NULL;
}

const char *const *cli_opt_all(const struct cli_args *a, const char *name, size_t *n)
{
	int i = opt_index(a->cmd, name);

	*n = i < 0 ? 0 : a->nmulti[i];
	return i < 0 ? NULL : (const char *const *)a->multi[i];
}

void cli_args_free(struct cli_args *a)
{
	for (int i = 0; i < CLI_MAX_OPTS; i++)
		free(a->multi[i]);
	free(a->pos);
}

/*
 * getopt_long accepts unique prefixes, so "--pin 1234" would be taken as
 * --pin-source. Options naming a PIN source must be spelt out in full.
 * Call right after getopt_long returned the option.
 */
int cli_pin_option_abbreviated(char **argv, const char *name)
{
	const char *tok = optarg == argv[optind - 1] ? argv[optind - 2] : argv[optind - 1];
	size_t l = strlen(name);

	if (!strstr(name, "pin-source"))
		return 0;
	return !(strncmp(tok, "--", 2) == 0 && strncmp(tok + 2, name, l) == 0 &&
	         (tok[2 + l] == '\0' || tok[2 + l] == '='));
}

int cli_no_pin_on_argv(struct cli *cli, const struct cli_cmd *c, const char *name)
{
	return cli_usage(cli, c, "a PIN is never accepted on the command line; "
	                 "spell out --%s with file:PATH, env:NAME or prompt", name);
}

static int is_global_option(const char *arg)
{
	for (const struct cli_global_opt *g = cli_global_opts; g->name; g++) {
		size_t l = strlen(g->name);

		if (strncmp(arg, "--", 2) == 0 && strncmp(arg + 2, g->name, l) == 0 &&
		    (arg[2 + l] == '\0' || arg[2 + l] == '='))
			return 1;
	}
	return 0;
}

/* Only the name is echoed: "--pin=1234" must not reach a log. */
int cli_unknown_option(struct cli *cli, const struct cli_cmd *c, const char *arg)
{
	int l = (int)strcspn(arg, "=");

	if (c && is_global_option(arg))
		return cli_usage(cli, c, "%.*s is a global option: put it before the command",
		                 l, arg);
	return cli_usage(cli, c, "unknown option %.*s", l, arg);
}

static int find_short(const struct cli_cmd *c, int ch)
{
	for (int i = 0; c->opts[i].name; i++)
		if (c->opts[i].short_name == ch)
			return i;
	return -1;
}

/* Fills a getopt_long table; option i has value 256 + i. */
static void build_getopt(const struct cli_cmd *c, struct option *lo, char *so, size_t solen)
{
	size_t k = 0, s = 0;

	/* '-': positionals in order, even with POSIXLY_CORRECT; ':': we report. */
	so[s++] = '-';
	so[s++] = ':';
	for (int i = 0; c->opts[i].name; i++, k++) {
		lo[k].name = c->opts[i].name;
		lo[k].has_arg = c->opts[i].metavar ? required_argument : no_argument;
		lo[k].flag = NULL;
		lo[k].val = 256 + i;
		if (c->opts[i].short_name && s + 3 < solen) {
			so[s++] = (char)c->opts[i].short_name;
			if (c->opts[i].metavar)
				so[s++] = ':';
		}
	}
	lo[k++] = (struct option){ "help", no_argument, NULL, 'h' };
	lo[k] = (struct option){ 0, 0, 0, 0 };
	so[s++] = 'h';
	so[s] = '\0';
}

static int store_opt(struct cli *cli, struct cli_args *a, int i, const char *val, int argc)
{
	const struct cli_opt_spec *o = &a->cmd->opts[i];

	if (o->flags & CLI_OPT_REPEAT) {
		if (!a->multi[i] && !(a->multi[i] = calloc((size_t)argc + 1, sizeof(char *))))
			return cli_failf(cli, HW_ERR_NOMEM, "parsing options", "out of memory");
		a->multi[i][a->nmulti[i]++] = val;
	} else if (a->val[i]) {
		return cli_usage(cli, a->cmd, "--%s given more than once", o->name);
	}
	a->val[i] = val ? val : "";
	return 0;
}

/* Returns 0, an exit status, or -1 when --help was asked for. */
int cli_args_parse(struct cli *cli, const struct cli_cmd *c, int argc, char **argv,
                   struct cli_args *a)
{
	struct option lo[CLI_MAX_OPTS + 2];
	char so[2 * CLI_MAX_OPTS + 4];
	int ch, rc, help = 0;

	memset(a, 0, sizeof(*a));
	a->cmd = c;
	a->pos = calloc((size_t)argc + 1, sizeof(char *));
	if (!a->pos)
		return cli_failf(cli, HW_ERR_NOMEM, "parsing options", "out of memory");
	build_getopt(c, lo, so, sizeof(so));
	opterr = 0;
	optind = 0;
	while ((ch = getopt_long(argc, argv, so, lo, NULL)) != -1) {
		int i = ch >= 256 ? ch - 256 : find_short(c, ch);

		if (ch == 1) {
			a->pos[a->npos++] = optarg;
		} else if (ch == 'h') {
			help = 1;
		} else if (ch == '?') {
			char buf[3] = { '-', (char)optopt, 0 };

			return cli_unknown_option(cli, c, optopt ? buf : argv[optind - 1]);
		} else if (ch == ':') {
			i = optopt >= 256 ? optopt - 256 : find_short(c, optopt);
			return cli_usage(cli, c, "option --%s needs an argument (%s)",
			                 i >= 0 ? c->opts[i].name : "?",
			                 i >= 0 && c->opts[i].metavar ? c->opts[i].metavar : "");
		} else if (i >= 0 && c->opts[i].metavar &&
		           cli_pin_option_abbreviated(argv, c->opts[i].name)) {
			return cli_no_pin_on_argv(cli, c, c->opts[i].name);
		} else if (i >= 0 && (rc = store_opt(cli, a, i, optarg, argc))) {
			return rc;
		}
	}
	while (optind < argc)
		a->pos[a->npos++] = argv[optind++];
	if (help)
		return -1;
	for (int i = 0; c->opts[i].name; i++)
		if ((c->opts[i].flags & CLI_OPT_REQUIRED) && !a->val[i])
			return cli_usage(cli, c, "missing --%s %s", c->opts[i].name,
			                 c->opts[i].metavar ? c->opts[i].metavar : "");
	if (a->npos < c->npos_min)
		return cli_usage(cli, c, "missing %s", c->args ? c->args : "argument");
	if (a->npos > c->npos_max)
		return cli_usage(cli, c, "unexpected argument '%s'", a->pos[c->npos_max]);
	return 0;
}

