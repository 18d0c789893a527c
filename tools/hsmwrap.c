/*
 * hsmwrap.c - entry point of the hsmwrap tool: global options, defaults
 * from the environment and the config file, dispatch, errors and exit
 * statuses.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "settings.h"

/* ------------------------------------------------------------------ */
/* Errors                                                              */

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
	struct jw w;
	char rv[32];

	jw_init(&w);
	snprintf(rv, sizeof(rv), "0x%08lx", ckrv);
	jw_obj_begin(&w, NULL);
	jw_bool(&w, "ok", 0);
	jw_str(&w, "error", hw_errname(err));
	jw_str(&w, "message", hw_strerror(err));
	jw_str(&w, "what", what);
	jw_str(&w, "detail", detail);
	jw_str(&w, "ckrv", rv);
	jw_uint(&w, "exit", (unsigned long long)cli_exit_code(err));
	jw_obj_end(&w);
	if (!w.failed)
		printf("%s\n", w.buf);
	jw_free(&w);
	/* The success document must not follow: one document per run. */
	jw_reset(&cli->out);
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
	return cli_exit_code(err);
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
/* Contexts                                                            */

int cli_pin_source_ok(const char *src)
{
	return strcmp(src, "prompt") == 0 ||
	       (strncmp(src, "file:", 5) == 0 && src[5]) ||
	       (strncmp(src, "env:", 4) == 0 && src[4]);
}

/* A PIN file others can read is a PIN others know: say so, but go on. */
static void check_pin_file(const char *src)
{
	struct stat st;

	if (strncmp(src, "file:", 5) != 0 || stat(src + 5, &st) < 0)
		return;
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		fprintf(stderr, "%s: warning: PIN file %s is accessible by other users (mode %04o)\n",
		        PROG, src + 5, (unsigned)(st.st_mode & 07777));
}

int cli_prepare_pin_source(struct cli *cli, const char *what, const char *src)
{
	if (!cli_pin_source_ok(src))
		return cli_failf(cli, HW_ERR_INVALID_ARG, what,
		                 "not file:PATH, env:NAME or prompt");
	check_pin_file(src);
	return 0;
}

int cli_ctx(struct cli *cli, const char *module, unsigned flags, hw_ctx **out)
{
	hw_ctx *ctx = NULL;
	hw_err err;
	int rc;

	if (!module)
		module = cli->module;
	if ((flags & CLI_CTX_LOGIN) && (rc = cli_prepare_pin_source(cli, "PIN source", cli->pin_source)))
		return rc;
	err = hw_ctx_new(&ctx);
	if (err)
		return cli_fail(cli, err, "creating context");
	if ((module && (err = hw_ctx_set_module(ctx, module))) ||
	    (cli->module_init_args && (err = hw_ctx_set_module_init_args(ctx, cli->module_init_args)))) {
		rc = cli_fail(cli, err, "selecting module");
		goto fail;
	}
	if ((flags & CLI_CTX_TOKEN) && cli->token && (err = hw_ctx_set_token(ctx, cli->token))) {
		rc = cli_fail(cli, err, "selecting token");
		goto fail;
	}
	if ((err = hw_ctx_set_pin_source(ctx, cli->pin_source))) {
		rc = cli_fail(cli, err, "setting PIN source");
		goto fail;
	}
	/* Harmless for other sources; token init may prompt for the SO PIN only. */
	hw_ctx_set_pin_callback(ctx, util_pin_prompt, &cli->prompt);
	if (!(flags & CLI_CTX_NO_OPEN) && (err = hw_ctx_open(ctx))) {
		rc = cli_fail(cli, err, "loading module");
		goto fail;
	}
	/* The token is selected lazily, by the login. */
	if ((flags & CLI_CTX_LOGIN) && (err = hw_ctx_login(ctx))) {
		rc = cli_fail(cli, err, cli_exit_code(err) == EXIT_NOT_FOUND ?
		              "selecting token" : "logging in");
		goto fail;
	}
	if (flags & CLI_CTX_LOGIN)
		cli_audit_note_ctx(ctx);
	*out = ctx;
	return 0;
fail:
	hw_ctx_free(ctx);
	return rc;
}

int cli_open_key(struct cli *cli, const char *spec, hw_ctx **ctx, hw_key **key)
{
	char what[300];
	hw_err err;
	int rc;

	*key = NULL;
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, ctx)))
		return rc;
	err = hw_key_find(*ctx, spec, key);
	if (!err)
		return 0;
	snprintf(what, sizeof(what), "finding key '%s'", spec);
	return cli_fail(cli, err, what);
}

void cli_close_key(hw_ctx *ctx, hw_key *key)
{
	hw_key_free(key);
	hw_ctx_free(ctx);
}

int cli_ectx(struct cli *cli, const struct cli_args *a, hw_ectx **out)
{
	const char *const *kv;
	hw_ectx *ec = NULL;
	size_t n;
	hw_err err;

	kv = cli_opt_all(a, "context", &n);
	err = hw_ectx_new(&ec);
	if (err)
		return cli_fail(cli, err, "encryption context");
	for (size_t i = 0; i < n; i++) {
		err = hw_ectx_add_kv(ec, kv[i]);
		if (err == HW_ERR_NOMEM) {
			hw_ectx_free(ec);
			return cli_fail(cli, err, "encryption context");
		}
		if (err) {
			hw_ectx_free(ec);
			return cli_usage(cli, a->cmd,
			                 "bad --context '%s': expected KEY=VALUE with a non-empty "
			                 "key given once (%s)", kv[i], hw_strerror(err));
		}
	}
	*out = ec;
	return 0;
}

int cli_distinct_paths(struct cli *cli, const struct cli_args *a,
                       const char *in_opt, const char *out_opt)
{
	const char *in = cli_opt(a, in_opt), *out = cli_opt(a, out_opt);

	if (in && out && util_same_file(in, out))
		return cli_usage(cli, a->cmd, "--%s and --%s name the same file '%s'%s",
		                 in_opt, out_opt, out, strcmp(in_opt, "input") == 0 ?
		                 "; an input is never overwritten" : "");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Command options                                                     */

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

static void args_free(struct cli_args *a)
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
static int pin_option_abbreviated(char **argv, const char *name)
{
	const char *tok = optarg == argv[optind - 1] ? argv[optind - 2] : argv[optind - 1];
	size_t l = strlen(name);

	if (!strstr(name, "pin-source"))
		return 0;
	return !(strncmp(tok, "--", 2) == 0 && strncmp(tok + 2, name, l) == 0 &&
	         (tok[2 + l] == '\0' || tok[2 + l] == '='));
}

static int no_pin_on_argv(struct cli *cli, const struct cli_cmd *c, const char *name)
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
static int unknown_option(struct cli *cli, const struct cli_cmd *c, const char *arg)
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
static int parse_command(struct cli *cli, const struct cli_cmd *c, int argc, char **argv,
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

			return unknown_option(cli, c, optopt ? buf : argv[optind - 1]);
		} else if (ch == ':') {
			i = optopt >= 256 ? optopt - 256 : find_short(c, optopt);
			return cli_usage(cli, c, "option --%s needs an argument (%s)",
			                 i >= 0 ? c->opts[i].name : "?",
			                 i >= 0 && c->opts[i].metavar ? c->opts[i].metavar : "");
		} else if (i >= 0 && c->opts[i].metavar &&
		           pin_option_abbreviated(argv, c->opts[i].name)) {
			return no_pin_on_argv(cli, c, c->opts[i].name);
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

/* ------------------------------------------------------------------ */
/* Help output (also as JSON)                                          */

static int print_text(struct cli *cli, void (*fn)(FILE *, const void *), const void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if (!cli->json) {
		fn(stdout, arg);
		return 0;
	}
	f = open_memstream(&text, &len);
	if (!f)
		return cli_failf(cli, HW_ERR_NOMEM, "help", "out of memory");
	fn(f, arg);
	fclose(f);
	jw_str(&cli->out, "text", text);
	free(text);
	return 0;
}

static void text_overview(FILE *f, const void *arg)
{
	(void)arg;
	cli_help_overview(f);
}

static void text_command(FILE *f, const void *arg)
{
	cli_help_command(f, arg);
}

static void text_family(FILE *f, const void *arg)
{
	cli_help_family(f, arg);
}

static void text_man(FILE *f, const void *arg)
{
	(void)arg;
	cli_man_page(f);
}

int cmd_help(struct cli *cli, const struct cli_args *a)
{
	const struct cli_cmd *c;
	int words = 0;

	if (cli_flag(a, "man"))
		return print_text(cli, text_man, NULL);
	if (a->npos == 0)
		return print_text(cli, text_overview, NULL);
	c = cli_find_command(a->pos[0], a->npos > 1 ? a->pos[1] : NULL, &words);
	if (c && (unsigned)words == a->npos)
		return print_text(cli, text_command, c);
	if (a->npos == 1 && cli_is_family(a->pos[0]))
		return print_text(cli, text_family, a->pos[0]);
	return cli_usage(cli, a->cmd, "unknown command '%s%s%s'", a->pos[0],
	                 a->npos > 1 ? " " : "", a->npos > 1 ? a->pos[1] : "");
}

/* ------------------------------------------------------------------ */
/* main                                                                */

enum { G_MODULE = 256, G_TOKEN, G_PIN_SOURCE, G_CONFIG, G_JSON, G_VERSION };
enum { G_AUDIT_LOG = 300, G_AUDIT_KEY, G_MODULE_INIT_ARGS };

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
			if (pin_option_abbreviated(argv, "pin-source"))
				return no_pin_on_argv(cli, NULL, "pin-source");
			cli->pin_source = optarg;
			break;
		case G_CONFIG: cli->config = optarg; cli->config_explicit = 1; break;
		case G_JSON: cli->json = 1; break;
		case G_AUDIT_LOG: cli->audit_log = optarg; break;
		case G_AUDIT_KEY: cli->audit_key = optarg; break;
		case 'h':
			print_text(cli, text_overview, NULL);
			return -1;
		case G_VERSION:
			if (cli->json) {
				jw_str(&cli->out, "version", PACKAGE_VERSION);
				jw_str(&cli->out, "library", hw_version());
			} else {
				printf("%s %s (libhsmwrap %s)\n", PROG, PACKAGE_VERSION, hw_version());
			}
			return -1;
		case ':':
			return cli_usage(cli, NULL, "option %s needs an argument", argv[optind - 1]);
		default: {
			char buf[3] = { '-', (char)optopt, 0 };

			return unknown_option(cli, NULL, optopt && optopt < 256 ? buf : argv[optind - 1]);
		}
		}
	}
	return 0;
}

static int unknown_command(struct cli *cli, int argc, char **argv)
{
	const char *w1 = argv[0], *w2 = argc > 1 ? argv[1] : NULL;

	if (!cli_is_family(w1))
		return cli_usage(cli, NULL, "unknown command '%s'", w1);
	if (w2 && (strcmp(w2, "--help") == 0 || strcmp(w2, "-h") == 0)) {
		print_text(cli, text_family, w1);
		return -1;
	}
	cli_help_family(stderr, w1);
	if (!w2)
		return cli_usage(cli, NULL, "'%s' needs a subcommand", w1);
	return cli_usage(cli, NULL, "unknown command '%s %s'", w1, w2);
}

static int dispatch(struct cli *cli, int argc, char **argv)
{
	const struct cli_cmd *c;
	struct cli_args a;
	hw_audit *audit = NULL;
	int words = 0, rc;

	c = cli_find_command3(argc, argv, &words);
	if (!c)
		c = cli_find_command(argv[0], argc > 1 ? argv[1] : NULL, &words);
	if (!c)
		return unknown_command(cli, argc, argv);
	/* getopt starts after argv[0], so hand it the last word of the name. */
	rc = parse_command(cli, c, argc - (words - 1), argv + (words - 1), &a);
	if (rc < 0)
		rc = print_text(cli, text_command, c) ? EXIT_FAILURE_OTHER : -1;
	else if (rc == 0 && !(c->flags & CLI_CMD_NO_SETTINGS))
		rc = resolve_settings(cli);
	/* A configured audit log must be writable before anything is done. */
	if (rc == 0 && !(c->flags & CLI_CMD_NO_SETTINGS))
		rc = cli_audit_begin(cli, c, &audit);
	if (rc == 0) {
		rc = c->run(cli, &a);
		rc = cli_audit_end(cli, &a, audit, rc);
	}
	args_free(&a);
	return rc;
}

int main(int argc, char **argv)
{
	struct cli cli;
	int rc;

	memset(&cli, 0, sizeof(cli));
	jw_init(&cli.out);
	/* Pre-open the success document; failures replace it. */
	jw_obj_begin(&cli.out, NULL);
	jw_bool(&cli.out, "ok", 1);

	rc = parse_global(&cli, argc, argv);
	if (rc == 0 && optind >= argc) {
		rc = cli_usage(&cli, NULL, "no command given");
	} else if (rc == 0) {
		rc = dispatch(&cli, argc - optind, argv + optind);
	}
	if (rc < 0)
		rc = 0;
	if (rc == 0 && cli.json && !cli.json_sent) {
		jw_obj_end(&cli.out);
		if (cli.out.failed) {
			rc = cli_failf(&cli, HW_ERR_NOMEM, "writing JSON", "out of memory");
		} else {
			printf("%s\n", cli.out.buf);
		}
	}
	if (fflush(stdout) != 0 && rc == 0) {
		fprintf(stderr, "%s: writing standard output: %s\n", PROG, strerror(errno));
		rc = EXIT_FAILURE_OTHER;
	}
	jw_free(&cli.out);
	conf_values_free(&conf);
	return rc;
}
