/*
 * main.c - entry point of the hsmwrap tool: global options, defaults from
 * the environment and the config file, dispatch through the command table
 * (commands.c) with the audit hook around each command, and the exit
 * status. Nothing below calls back into this file.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cli.h"
#include "settings.h"

/* ------------------------------------------------------------------ */
/* Settings: option > environment > config file > built-in default.    */

static struct conf_values conf;

static int conf_load(struct cli *cli)
{
	uint8_t *data;
	size_t len;
	char err[512];
	hw_err e;

	/* The default file is optional; one that was asked for is not. */
	if (!cli->config_explicit && access(cli->config, F_OK) < 0 && errno == ENOENT)
		return 0;
	e = util_read_file(cli->config, 64 * 1024, 0, &data, &len);
	if (e)
		return cli_fail_util(cli, e, "reading configuration");
	if (conf_parse(cli->config, (const char *)data, len, &conf, err, sizeof(err)) != 0) {
		util_free(data, len, 0);
		return cli_failf(cli, HW_ERR_INVALID_ARG, "reading configuration", "%s", err);
	}
	util_free(data, len, 0);
	return 0;
}

static const char *env_value(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* A yes/no switch: option (already 2) > environment (1/0) > config (yes/no). */
static int yes_no(struct cli *cli, const char *env, const char *conf_val, const char *conf_name,
                  int *out)
{
	const char *v = env_value(env);

	if (*out)
		return 0;
	if (v) {
		if (strcmp(v, "1") && strcmp(v, "0"))
			return cli_failf(cli, HW_ERR_INVALID_ARG, env, "'%s' is not 1 or 0", v);
		*out = strcmp(v, "1") == 0;
		return 0;
	}
	if (conf_val) {
		if (strcmp(conf_val, "yes") && strcmp(conf_val, "no"))
			return cli_failf(cli, HW_ERR_INVALID_ARG, "configuration",
			                 "%s: '%s' is not yes or no", conf_name, conf_val);
		*out = strcmp(conf_val, "yes") == 0;
	}
	return 0;
}

static int resolve_settings(struct cli *cli)
{
	int rc;

	if (!cli->config) {
		cli->config = env_value("HSMWRAP_CONFIG");
		cli->config_explicit = cli->config != NULL;
	}
	if (!cli->config)
		cli->config = SYSCONFDIR "/hsmwrap.conf";
	rc = conf_load(cli);
	if (rc)
		return rc;

	if (!cli->module && !(cli->module = env_value("HSMWRAP_MODULE")))
		cli->module = conf.module;
	if (!cli->module_init_args &&
	    !(cli->module_init_args = env_value("HSMWRAP_MODULE_INIT_ARGS")))
		cli->module_init_args = conf.module_init_args;
	/* Only then does `token list` stick to one module. */
	cli->module_explicit = cli->module != NULL;
	if (!cli->token && !(cli->token = env_value("HSMWRAP_TOKEN")))
		cli->token = conf.token;
	if (!cli->pin_source && !(cli->pin_source = env_value("HSMWRAP_PIN_SOURCE")))
		cli->pin_source = conf.pin_source;
	if (!cli->pin_source)
		cli->pin_source = "prompt";
	/* The value is not echoed: it may be a PIN typed in the wrong place. */
	if (!cli_pin_source_ok(cli->pin_source))
		return cli_failf(cli, HW_ERR_INVALID_ARG, "PIN source",
		                 "not file:PATH, env:NAME or prompt");
	if (!cli->audit_log && !(cli->audit_log = env_value("HSMWRAP_AUDIT_LOG")))
		cli->audit_log = conf.audit_log;
	if (!cli->audit_key && !(cli->audit_key = env_value("HSMWRAP_AUDIT_KEY")))
		cli->audit_key = conf.audit_key;
	if ((rc = yes_no(cli, "HSMWRAP_AUDIT_FAIL_OPEN", conf.audit_fail_open, "audit_fail_open",
	                 &cli->audit_fail_open)) ||
	    (rc = yes_no(cli, "HSMWRAP_ALLOW_SHARED_PIN_FILE", conf.allow_shared_pin_file,
	                 "allow_shared_pin_file", &cli->allow_shared_pin_file)))
		return rc;
	{
		const char *ev = env_value("HSMWRAP_AUDIT_DIGEST_EVERY");
		char *end = NULL;
		unsigned long n;

		if (!ev)
			ev = conf.audit_every;
		if (ev) {
			errno = 0;
			n = strtoul(ev, &end, 10);
			if (errno || !*ev || *end || n == 0 || n > 1000000)
				return cli_failf(cli, HW_ERR_INVALID_ARG, "audit digest interval",
				                 "'%s' is not a number of records from 1 to 1000000", ev);
			cli->audit_every = (unsigned)n;
		}
	}
	return 0;
}


/* ------------------------------------------------------------------ */
/* main                                                                */

enum { G_MODULE = 256, G_TOKEN, G_PIN_SOURCE, G_CONFIG, G_JSON, G_VERSION };
enum { G_AUDIT_LOG = 300, G_AUDIT_KEY, G_MODULE_INIT_ARGS, G_AUDIT_FAIL_OPEN, G_ALLOW_SHARED_PIN };

static const struct option global_long[] = {
	{ "module", required_argument, NULL, G_MODULE },
	{ "module-init-args", required_argument, NULL, G_MODULE_INIT_ARGS },
	{ "token", required_argument, NULL, G_TOKEN },
	{ "pin-source", required_argument, NULL, G_PIN_SOURCE },
	{ "config", required_argument, NULL, G_CONFIG },
	{ "json", no_argument, NULL, G_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, G_VERSION },
	{ "audit-log", required_argument, NULL, G_AUDIT_LOG },
	{ "audit-key", required_argument, NULL, G_AUDIT_KEY },
	{ "audit-fail-open", no_argument, NULL, G_AUDIT_FAIL_OPEN },
	{ "allow-shared-pin-file", no_argument, NULL, G_ALLOW_SHARED_PIN },
	{ 0, 0, 0, 0 }
};

/* Returns 0 to go on, -1 after --help/--version, or an exit status. */
static int parse_global(struct cli *cli, int argc, char **argv)
{
	int ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+:h", global_long, NULL)) != -1) {
		switch (ch) {
		case G_MODULE: cli->module = optarg; break;
		case G_MODULE_INIT_ARGS: cli->module_init_args = optarg; break;
		case G_TOKEN: cli->token = optarg; break;
		case G_PIN_SOURCE:
			if (cli_pin_option_abbreviated(argv, "pin-source"))
				return cli_no_pin_on_argv(cli, NULL, "pin-source");
			cli->pin_source = optarg;
			break;
		case G_CONFIG: cli->config = optarg; cli->config_explicit = 1; break;
		case G_JSON: cli->json = 1; break;
		case G_AUDIT_LOG: cli->audit_log = optarg; break;
		case G_AUDIT_KEY: cli->audit_key = optarg; break;
		/* 2: set by option; environment and config may not undo it. */
		case G_AUDIT_FAIL_OPEN: cli->audit_fail_open = 2; break;
		case G_ALLOW_SHARED_PIN: cli->allow_shared_pin_file = 2; break;
		case 'h':
			cli_show_overview(cli);
			return -1;
		case G_VERSION:
			if (cli->json) {
				cj_str(cli->out, "version", PACKAGE_VERSION);
				cj_str(cli->out, "library", hw_version());
			} else {
				printf("%s %s (libhsmwrap %s)\n", PROG, PACKAGE_VERSION, hw_version());
			}
			return -1;
		case ':':
			return cli_usage(cli, NULL, "option %s needs an argument", argv[optind - 1]);
		default: {
			char buf[3] = { '-', (char)optopt, 0 };

			return cli_unknown_option(cli, NULL, optopt && optopt < 256 ? buf : argv[optind - 1]);
		}
		}
	}
	return 0;
}

static int unknown_command(struct cli *cli, int argc, char **argv)
{
	const char *const *words = (const char *const *)argv;
	char family[256];
	int k = cli_find_family(argc, words, family, sizeof(family));

	if (k == 0)
		return cli_usage(cli, NULL, "unknown command '%s'", argv[0]);
	if (k < argc && (strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0)) {
		cli_show_family(cli, family);
		return -1;
	}
	cli_help_family(stderr, family);
	if (k == argc)
		return cli_usage(cli, NULL, "'%s' needs a subcommand", family);
	return cli_usage(cli, NULL, "unknown command '%s %s'", family, argv[k]);
}

static int dispatch(struct cli *cli, int argc, char **argv)
{
	const struct cli_cmd *c;
	struct cli_args a;
	hw_audit *audit = NULL;
	int words = 0, rc;

	c = cli_find_command(argc, (const char *const *)argv, &words);
	if (!c)
		return unknown_command(cli, argc, argv);
	/* getopt starts after argv[0], so hand it the last word of the name. */
	rc = cli_args_parse(cli, c, argc - (words - 1), argv + (words - 1), &a);
	if (rc < 0)
		rc = cli_show_command(cli, c) ? EXIT_FAILURE_OTHER : -1;
	else if (rc == 0 && !(c->flags & CLI_CMD_NO_SETTINGS))
		rc = resolve_settings(cli);
	/* A configured audit log must be writable before anything is done. */
	if (rc == 0 && !(c->flags & CLI_CMD_NO_SETTINGS))
		rc = cli_audit_begin(cli, &a, &audit);
	if (rc == 0) {
		rc = c->run(cli, &a);
		rc = cli_audit_end(cli, &a, audit, rc);
	}
	cli_args_free(&a);
	return rc;
}

int main(int argc, char **argv)
{
	struct cli cli;
	int rc;

	/*
	 * Before any PIN or key is in memory: no core dump and no ptrace by
	 * other processes of this user (README, "Security model"). A file-size
	 * limit must fail a write (EFBIG, cleaned up), not kill us.
	 */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	signal(SIGXFSZ, SIG_IGN);
	memset(&cli, 0, sizeof(cli));
	/* The success document, filled by the command; failures replace it. */
	cli.out = json_object();
	cj_bool(cli.out, "ok", 1);

	rc = parse_global(&cli, argc, argv);
	if (rc == 0 && optind >= argc) {
		rc = cli_usage(&cli, NULL, "no command given");
	} else if (rc == 0) {
		rc = dispatch(&cli, argc - optind, argv + optind);
	}
	if (rc < 0)
		rc = 0;
	if (rc == 0 && cli.json && !cli.json_sent) {
		if (cj_print(stdout, cli.out) != 0)
			rc = cli_failf(&cli, HW_ERR_NOMEM, "writing JSON", "out of memory");
	}
	if (fflush(stdout) != 0 && rc == 0) {
		fprintf(stderr, "%s: writing standard output: %s\n", PROG, strerror(errno));
		rc = EXIT_FAILURE_OTHER;
	}
	json_decref(cli.out);
	conf_values_free(&conf);
	return rc;
}

