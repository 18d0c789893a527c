/*
 * cmd-key.c - `key create`, `key list`, `key show`, `key destroy`.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

const char *kcv_alg_text(const char *kcv_alg)
{
	if (strcmp(kcv_alg, "AES-ECB-zero") == 0)
		return "KCV (AES-ECB of zero block)";
	if (strcmp(kcv_alg, "SHA256-SPKI") == 0)
		return "Fingerprint (SHA-256 of SubjectPublicKeyInfo)";
	return "KCV";
}

static const char *kcv_value(const hw_key_info *ki)
{
	return ki->kcv[0] && strcmp(ki->kcv_alg, "unavailable") != 0 ? ki->kcv : "unavailable";
}

static const char *purpose_str(hw_purpose p)
{
	const char *s = hw_purpose_name(p);

	return s ? s : "none";
}

void key_info_json(struct jw *w, const char *name, const hw_key_info *ki)
{
	jw_obj_begin(w, name);
	jw_str(w, "label", ki->label);
	jw_str(w, "id", ki->id_hex);
	jw_str(w, "type", ki->type_name);
	jw_uint(w, "bits", ki->bits);
	jw_str(w, "purpose", purpose_str(ki->purpose));
	jw_str(w, "uri", ki->uri);
	jw_str(w, "kcv", ki->kcv[0] ? ki->kcv : NULL);
	jw_str(w, "kcv_alg", ki->kcv_alg);
	jw_tri(w, "token", ki->token);
	jw_tri(w, "private", ki->private_);
	jw_tri(w, "sensitive", ki->sensitive);
	jw_tri(w, "extractable", ki->extractable);
	jw_tri(w, "always_sensitive", ki->always_sensitive);
	jw_tri(w, "never_extractable", ki->never_extractable);
	jw_tri(w, "local", ki->local);
	jw_tri(w, "encrypt", ki->encrypt);
	jw_tri(w, "decrypt", ki->decrypt);
	jw_tri(w, "wrap", ki->wrap);
	jw_tri(w, "unwrap", ki->unwrap);
	jw_tri(w, "sign", ki->sign);
	jw_tri(w, "verify", ki->verify);
	jw_tri(w, "derive", ki->derive);
	jw_obj_end(w);
}

static const char *yn(int v)
{
	return v < 0 ? "unknown" : v ? "yes" : "no";
}

static void key_info_text(const hw_key_info *ki, int attributes)
{
	static const struct { const char *name; size_t off; } attrs[] = {
		{ "Token object", offsetof(hw_key_info, token) },
		{ "Private", offsetof(hw_key_info, private_) },
		{ "Sensitive", offsetof(hw_key_info, sensitive) },
		{ "Extractable", offsetof(hw_key_info, extractable) },
		{ "Always sensitive", offsetof(hw_key_info, always_sensitive) },
		{ "Never extractable", offsetof(hw_key_info, never_extractable) },
		{ "Generated on token", offsetof(hw_key_info, local) },
		{ "Encrypt", offsetof(hw_key_info, encrypt) },
		{ "Decrypt", offsetof(hw_key_info, decrypt) },
		{ "Wrap", offsetof(hw_key_info, wrap) },
		{ "Unwrap", offsetof(hw_key_info, unwrap) },
		{ "Sign", offsetof(hw_key_info, sign) },
		{ "Verify", offsetof(hw_key_info, verify) },
		{ "Derive", offsetof(hw_key_info, derive) },
	};

	printf("Label:    %s\n", ki->label);
	printf("Type:     %s (%u bits)\n", ki->type_name, ki->bits);
	printf("Purpose:  %s\n", purpose_str(ki->purpose));
	printf("ID:       %s\n", ki->id_hex);
	printf("URI:      %s\n", ki->uri);
	printf("%s: %s\n", kcv_alg_text(ki->kcv_alg), kcv_value(ki));
	if (!attributes)
		return;
	printf("Attributes:\n");
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		int v;

		memcpy(&v, (const char *)ki + attrs[i].off, sizeof(v));
		printf("  %-19s %s\n", attrs[i].name, yn(v));
	}
}

static int key_info(struct cli *cli, hw_key *key, hw_key_info *ki)
{
	hw_err err = hw_key_info_get(key, ki);
	char what[300];

	if (!err)
		return 0;
	snprintf(what, sizeof(what), "reading attributes of key '%s'", hw_key_label(key));
	return cli_fail(cli, err, what);
}

/* ------------------------------------------------------------------ */

static int type_is_aes(hw_key_type t)
{
	return t == HW_KEY_AES256;
}

static int parse_create(struct cli *cli, const struct cli_args *a,
                        hw_key_type *type, hw_purpose *purpose)
{
	const char *ts = cli_opt(a, "type"), *ps = cli_opt(a, "purpose");

	if (hw_key_type_parse(ts, type))
		return cli_usage(cli, a->cmd, "unknown --type '%s' (aes256, rsa2048, rsa3072, "
		                 "rsa4096, ec-p256 or ec-p384)", ts);
	if (!ps) {
		*purpose = type_is_aes(*type) ? HW_PURPOSE_ENVELOPE : HW_PURPOSE_SIGN;
		return 0;
	}
	if (hw_purpose_parse(ps, purpose) || *purpose == HW_PURPOSE_NONE)
		return cli_usage(cli, a->cmd, "unknown --purpose '%s' (envelope, keywrap or sign)", ps);
	if (type_is_aes(*type) != (*purpose != HW_PURPOSE_SIGN))
		return cli_usage(cli, a->cmd, "purpose %s does not fit type %s: envelope and "
		                 "keywrap need aes256, sign needs an rsa or ec type", ps, ts);
	return 0;
}

static void create_transcript(struct cli *cli, hw_ctx *ctx, const hw_key_info *ki)
{
	char when[32];
	time_t now = time(NULL);
	struct tm tm;

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	if (cli->json) {
		jw_str(&cli->out, "created", when);
		jw_str(&cli->out, "module", hw_ctx_module_path(ctx));
		jw_str(&cli->out, "token", hw_ctx_token_uri(ctx));
		key_info_json(&cli->out, "key", ki);
		return;
	}
	printf("Key created by %s %s\n", PROG, PACKAGE_VERSION);
	printf("Date:     %s\n", when);
	printf("Module:   %s\n", hw_ctx_module_path(ctx));
	printf("Token:    %s\n", hw_ctx_token_uri(ctx));
	key_info_text(ki, 0);
}

int cmd_key_create(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "label");
	hw_key_type type;
	hw_purpose purpose;
	hw_key_info ki;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	char what[300];
	hw_err err;
	int rc;

	if ((rc = parse_create(cli, a, &type, &purpose)))
		return rc;
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	err = hw_key_generate_opts(ctx, label, type, purpose,
	                           cli_flag(a, "backupable") ? HW_KEYGEN_BACKUPABLE : 0, &key);
	if (err) {
		snprintf(what, sizeof(what), "creating key '%s'", label);
		rc = cli_fail(cli, err, what);
	} else if (!(rc = key_info(cli, key, &ki))) {
		create_transcript(cli, ctx, &ki);
	}
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */

/* Tokens return objects in no particular order; listings should be stable. */
static int by_label(const void *a, const void *b)
{
	const hw_key_info *x = a, *y = b;
	int c = strcmp(x->label, y->label);

	return c ? c : strcmp(x->id_hex, y->id_hex);
}

static void list_text(const hw_key_info *ki, size_t n)
{
	int lw = 5;

	if (n == 0) {
		printf("No keys on this token.\n");
		return;
	}
	for (size_t i = 0; i < n; i++)
		if ((int)strlen(ki[i].label) > lw)
			lw = (int)strlen(ki[i].label);
	printf("%-*s  %-8s  %-8s  %-32s  %s\n", lw, "LABEL", "TYPE", "PURPOSE", "ID",
	       "KCV/FINGERPRINT");
	for (size_t i = 0; i < n; i++)
		printf("%-*s  %-8s  %-8s  %-32s  %s\n", lw, ki[i].label, ki[i].type_name,
		       purpose_str(ki[i].purpose), ki[i].id_hex, kcv_value(&ki[i]));
}

int cmd_key_list(struct cli *cli, const struct cli_args *a)
{
	hw_key **keys = NULL;
	hw_key_info *ki = NULL;
	hw_ctx *ctx = NULL;
	size_t n = 0;
	hw_err err;
	int rc;

	(void)a;
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	err = hw_key_list(ctx, &keys, &n);
	if (err) {
		rc = cli_fail(cli, err, "listing keys");
		goto out;
	}
	ki = calloc(n ? n : 1, sizeof(*ki));
	if (!ki) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "listing keys", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n && !rc; i++)
		rc = key_info(cli, keys[i], &ki[i]);
	if (rc)
		goto out;
	qsort(ki, n, sizeof(*ki), by_label);
	if (cli->json) {
		jw_arr_begin(&cli->out, "keys");
		for (size_t i = 0; i < n; i++)
			key_info_json(&cli->out, NULL, &ki[i]);
		jw_arr_end(&cli->out);
	} else {
		list_text(ki, n);
	}
out:
	free(ki);
	hw_key_list_free(keys, n);
	hw_ctx_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */

int cmd_key_show(struct cli *cli, const struct cli_args *a)
{
	hw_key_info ki;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	int rc;

	if (!(rc = cli_open_key(cli, a->pos[0], &ctx, &key)) && !(rc = key_info(cli, key, &ki))) {
		if (cli->json)
			key_info_json(&cli->out, "key", &ki);
		else
			key_info_text(&ki, 1);
	}
	cli_close_key(ctx, key);
	return rc;
}

/* ------------------------------------------------------------------ */

int cmd_key_destroy(struct cli *cli, const struct cli_args *a)
{
	const char *spec = a->pos[0];
	hw_key_info ki;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	char what[300];
	hw_err err;
	int rc;

	/* Checked before the token is even opened: nothing can happen without it. */
	if (!cli_flag(a, "yes"))
		return cli_usage(cli, a->cmd, "refusing to destroy key '%s' without --yes; "
		                 "nothing was destroyed", spec);
	if ((rc = cli_open_key(cli, spec, &ctx, &key)) || (rc = key_info(cli, key, &ki)))
		goto out;
	err = hw_key_destroy(key);
	if (err) {
		snprintf(what, sizeof(what), "destroying key '%s'", ki.label);
		rc = cli_fail(cli, err, what);
		goto out;
	}
	if (cli->json)
		key_info_json(&cli->out, "destroyed", &ki);
	else
		printf("Destroyed key '%s' (%s, ID %s).\n", ki.label, ki.type_name, ki.id_hex);
out:
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}
