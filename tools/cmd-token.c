/*
 * cmd-token.c - `token list` and `token init`.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Everything hsmwrap does needs every capability bit. */
static int token_usable(const hw_token_info *t)
{
	return t->token_initialized && (t->caps & HW_CAP_ALL) == HW_CAP_ALL;
}

static void missing_caps(const hw_token_info *t, char *buf, size_t n)
{
	const char *name;
	size_t used = 0;

	buf[0] = '\0';
	for (unsigned i = 0; (name = hw_cap_name(i)) != NULL; i++) {
		if (t->caps & (1u << i))
			continue;
		used += (size_t)snprintf(buf + used, used < n ? n - used : 0, "%s%s",
		                         used ? ", " : "", name);
	}
}

static int has_feature(const hw_token_info *t, unsigned i)
{
	return (t->caps & hw_feature_needs(i)) == hw_feature_needs(i);
}

/* "envelope, keywrap" (want = 1) or the ones the token lacks (want = 0). */
static void features_text(const hw_token_info *t, int want, char *buf, size_t n)
{
	const char *name;
	size_t used = 0;

	buf[0] = '\0';
	for (unsigned i = 0; (name = hw_feature_name(i)) != NULL; i++)
		if (has_feature(t, i) == want)
			used += (size_t)snprintf(buf + used, used < n ? n - used : 0, "%s%s",
			                         used ? ", " : "", name);
}

static void token_json(json_t *parent, const hw_token_info *t)
{
	json_t *w = cj_obj(parent, "token"), *caps, *feats, *missing;
	const char *name;

	cj_str(w, "label", t->label);
	cj_str(w, "manufacturer", t->manufacturer);
	cj_str(w, "model", t->model);
	cj_str(w, "serial", t->serial);
	cj_str(w, "uri", t->uri);
	cj_bool(w, "initialized", t->token_initialized);
	cj_bool(w, "user_pin_initialized", t->user_pin_initialized);
	cj_bool(w, "login_required", t->login_required);
	if (t->free_objects_hint)
		cj_uint(w, "free_objects", t->free_objects_hint);
	else
		cj_null(w, "free_objects");
	caps = cj_obj(w, "capabilities");
	for (unsigned i = 0; (name = hw_cap_name(i)) != NULL; i++)
		cj_bool(caps, name, (t->caps >> i) & 1u);
	feats = cj_obj(w, "features");
	for (unsigned i = 0; (name = hw_feature_name(i)) != NULL; i++)
		cj_bool(feats, name, has_feature(t, i));
	cj_bool(w, "usable", token_usable(t));
	missing = cj_arr(w, "missing");
	for (unsigned i = 0; (name = hw_cap_name(i)) != NULL; i++)
		if (!(t->caps & (1u << i)))
			cj_str(missing, NULL, name);
}

static void token_text(const hw_token_info *t)
{
	char missing[256];

	printf("  Slot %lu: %s\n", t->slot_id, t->slot_description);
	if (!t->token_present) {
		printf("    (no token present)\n");
		return;
	}
	missing_caps(t, missing, sizeof(missing));
	if (!t->token_initialized) {
		printf("    Token:          not initialized (hsmwrap token init can use it)\n");
		printf("    Model:          %s %s\n", t->manufacturer, t->model);
		if (missing[0])
			printf("    Missing:        %s\n", missing);
		return;
	}
	printf("    Label:          %s\n", t->label);
	printf("    Manufacturer:   %s\n", t->manufacturer);
	printf("    Model:          %s\n", t->model);
	printf("    Serial:         %s\n", t->serial);
	printf("    URI:            %s\n", t->uri);
	printf("    Initialized:    %s\n", t->token_initialized ? "yes" : "no");
	printf("    User PIN set:   %s\n", t->user_pin_initialized ? "yes" : "no");
	printf("    Login required: %s\n", t->login_required ? "yes" : "no");
	if (t->free_objects_hint)
		printf("    Free objects:   %lu\n", t->free_objects_hint);
	if (token_usable(t)) {
		char yes[256], no[256];

		printf("    Usable:         yes\n");
		features_text(t, 1, yes, sizeof(yes));
		features_text(t, 0, no, sizeof(no));
		printf("    Features:       %s\n", yes);
		if (no[0])
			printf("    Not supported:  %s (missing %s)\n", no, missing);
	} else {
		printf("    Usable:         no (missing %s)\n", missing);
	}
}

/* The slots of one module: as text, or into its JSON object `mod`. */
static void slots_out(json_t *mod, const hw_token_info *list, size_t n)
{
	if (mod) {
		json_t *slots = cj_arr(mod, "slots");

		for (size_t i = 0; i < n; i++) {
			json_t *s = cj_obj(slots, NULL);

			cj_uint(s, "slot_id", list[i].slot_id);
			cj_str(s, "description", list[i].slot_description);
			cj_bool(s, "token_present", list[i].token_present);
			if (list[i].token_present)
				token_json(s, &list[i]);
			else
				cj_null(s, "token");
		}
		return;
	}
	if (n == 0)
		printf("  (no slots)\n");
	for (size_t i = 0; i < n; i++)
		token_text(&list[i]);
}

/*
 * Opens `name` without selecting a token. Returns the error and sets
 * *what instead of reporting it: the caller decides whether it is fatal.
 */
static hw_err module_open(const char *name, const char *init_args, hw_ctx **out,
                          const char **what)
{
	hw_ctx *ctx = NULL;
	hw_err err;

	*what = "creating context";
	if ((err = hw_ctx_new(&ctx)))
		return err;
	*what = "loading module";
	if (!(err = hw_ctx_set_module(ctx, name)) &&
	    !(err = hw_ctx_set_module_init_args(ctx, init_args)))
		err = hw_ctx_open(ctx);
	if (err) {
		hw_ctx_free(ctx);
		return err;
	}
	*out = ctx;
	return HW_OK;
}

/* One module; failures are fatal only when the module was asked for. */
static int list_module(struct cli *cli, json_t *modules, const char *name, int fatal)
{
	hw_token_info *list = NULL;
	json_t *mod = NULL;
	hw_ctx *ctx = NULL;
	const char *what;
	char whatbuf[600];
	size_t n = 0;
	hw_err err;

	/* Init arguments given to hsmwrap belong to the module it was given. */
	err = module_open(name, fatal ? cli->module_init_args : NULL, &ctx, &what);
	if (!err) {
		what = "listing slots";
		err = hw_token_list(ctx, &list, &n);
	}
	snprintf(whatbuf, sizeof(whatbuf), "module %s: %s", name, what);
	if (err && fatal) {
		hw_ctx_free(ctx);
		return cli_fail(cli, err, whatbuf);
	}
	if (cli->json) {
		mod = cj_obj(modules, NULL);
		cj_str(mod, "name", name);
		cj_str(mod, "path", ctx ? hw_ctx_module_path(ctx) : NULL);
		cj_bool(mod, "ok", !err);
		if (err) {
			cj_str(mod, "error", hw_errname(err));
			cj_str(mod, "message", hw_strerror(err));
			cj_str(mod, "detail", hw_last_detail());
		}
	} else {
		printf("Module %s", name);
		if (ctx && hw_ctx_module_path(ctx) && strcmp(name, hw_ctx_module_path(ctx)) != 0)
			printf(" (%s)", hw_ctx_module_path(ctx));
		printf(err ? ": unavailable\n" : "\n");
	}
	if (err)
		cli_warn_err(whatbuf, err);
	else
		slots_out(mod, list, n);
	hw_free(list);
	hw_ctx_free(ctx);
	return 0;
}

int cmd_token_list(struct cli *cli, const struct cli_args *a)
{
	char **names = NULL;
	size_t n = 0;
	hw_err err;
	json_t *modules = NULL;
	int rc = 0;

	(void)a;
	if (!cli->module_explicit) {
		err = hw_module_list(&names, &n);
		if (err)
			return cli_fail(cli, err, "listing p11-kit modules");
	}
	if (cli->json)
		modules = cj_arr(cli->out, "modules");
	if (cli->module_explicit)
		rc = list_module(cli, modules, cli->module, 1);
	for (size_t i = 0; i < n && !rc; i++) {
		if (i && !cli->json)
			putchar('\n');
		rc = list_module(cli, modules, names[i], 0);
	}
	if (!cli->json && !cli->module_explicit && n == 0)
		printf("No PKCS#11 modules are registered with p11-kit; use --module PATH.\n");
	hw_strv_free(names, n);
	return rc;
}

/* ------------------------------------------------------------------ */

/* The new token's URI, for the record; not worth failing over. */
static void new_token_uri(hw_ctx *ctx, unsigned long slot, char *uri, size_t n)
{
	hw_token_info *list = NULL;
	size_t count = 0;

	uri[0] = '\0';
	if (hw_token_list(ctx, &list, &count))
		return;
	for (size_t i = 0; i < count; i++)
		if (list[i].slot_id == slot)
			snprintf(uri, n, "%s", list[i].uri);
	hw_free(list);
}

int cmd_token_init(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "label");
	const char *so_src = cli_opt(a, "so-pin-source");
	unsigned long slot = 0;
	char uri[512];
	hw_ctx *ctx = NULL;
	hw_err err;
	int rc;

	if (!so_src)
		so_src = "prompt";
	if ((rc = cli_prepare_pin_source(cli, "SO PIN source", so_src)) ||
	    (rc = cli_prepare_pin_source(cli, "PIN source", cli->pin_source)))
		return rc;
	/* No token is selected: the one to initialise does not exist yet. */
	if ((rc = cli_ctx(cli, NULL, 0, &ctx)))
		return rc;
	cli->prompt.confirm = 1;
	err = hw_token_init(ctx, label, so_src, cli->pin_source, &slot);
	cli->prompt.confirm = 0;
	if (err) {
		rc = cli_fail(cli, err, "initialising token");
		hw_ctx_free(ctx);
		return rc;
	}
	new_token_uri(ctx, slot, uri, sizeof(uri));
	if (cli->json) {
		cj_uint(cli->out, "slot_id", slot);
		cj_str(cli->out, "label", label);
		cj_str(cli->out, "uri", uri[0] ? uri : NULL);
		cj_str(cli->out, "module", hw_ctx_module_path(ctx));
	} else {
		/* No slot number: some modules renumber a token once initialised. */
		printf("Initialised token '%s'.\n", label);
		if (uri[0])
			printf("URI: %s\n", uri);
	}
	hw_ctx_free(ctx);
	return 0;
}
