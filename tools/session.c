/*
 * session.c - what commands need to talk to the token: PIN sources, a
 * configured context (module, token, login), a key found by its spec, and
 * the encryption context built from --context options.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"

int cli_pin_source_ok(const char *src)
{
	return strcmp(src, "prompt") == 0 ||
	       (strncmp(src, "file:", 5) == 0 && src[5]) ||
	       (strncmp(src, "env:", 4) == 0 && src[4]);
}

/*
 * A PIN file others can read is a PIN others know (and one they can write
 * is a lockout they control): refused unless --allow-shared-pin-file.
 */
static int check_pin_file(struct cli *cli, const char *what, const char *src)
{
	struct stat st;

	if (strncmp(src, "file:", 5) != 0 || stat(src + 5, &st) < 0 ||
	    !(st.st_mode & (S_IRWXG | S_IRWXO)))
		return 0;
	if (cli->allow_shared_pin_file) {
		fprintf(stderr, "%s: warning: PIN file %s is accessible by other users (mode %04o)\n",
		        PROG, src + 5, (unsigned)(st.st_mode & 07777));
		return 0;
	}
	return cli_failf(cli, HW_ERR_PIN_SOURCE, what,
	                 "PIN file %s is accessible by other users (mode %04o): chmod 600 it, "
	                 "or accept that with --allow-shared-pin-file", src + 5,
	                 (unsigned)(st.st_mode & 07777));
}

int cli_prepare_pin_source(struct cli *cli, const char *what, const char *src)
{
	if (!cli_pin_source_ok(src))
		return cli_failf(cli, HW_ERR_INVALID_ARG, what,
		                 "not file:PATH, env:NAME or prompt");
	return check_pin_file(cli, what, src);
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
	    (cli->module_init_args &&
	     (err = hw_ctx_set_module_init_args(ctx, cli->module_init_args)))) {
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
	/* The token the audit record names (label and serial included). */
	if ((flags & CLI_CTX_LOGIN) && hw_ctx_token_uri(ctx))
		snprintf(cli->used_token, sizeof(cli->used_token), "%s", hw_ctx_token_uri(ctx));
	*out = ctx;
	return 0;
fail:
	hw_ctx_free(ctx);
	return rc;
}

/* A few strings per run: kept in a small ring, freed at exit. */
static char *redacted[16];
static size_t nredacted;

static void redacted_free(void)
{
	for (size_t i = 0; i < nredacted; i++)
		free(redacted[i]);
	nredacted = 0;
}

const char *cli_redact(const char *spec)
{
	char *s = NULL;

	if (!spec || strncasecmp(spec, "pkcs11:", 7) != 0)
		return spec;
	if (hw_uri_redact(spec, &s) != HW_OK)
		return "(a PKCS#11 URI, not shown)";
	if (nredacted == 0)
		atexit(redacted_free);
	if (nredacted == sizeof(redacted) / sizeof(redacted[0])) {
		hw_free(s);
		return "(a PKCS#11 URI, not shown)";
	}
	redacted[nredacted++] = s;
	return s;
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
	snprintf(what, sizeof(what), "finding key '%s'", cli_redact(spec));
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

