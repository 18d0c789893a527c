/*
 * cmd-key.c - `key create`, `key list`, `key show`, `key destroy`.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

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
		                 "rsa4096, rsa-pss-2048, rsa-pss-3072, rsa-pss-4096, ec-p256, "
		                 "ec-p384, ec-p521, ed25519 or ed448)", ts);
	if (!ps) {
		*purpose = type_is_aes(*type) ? HW_PURPOSE_ENVELOPE : HW_PURPOSE_SIGN;
		return 0;
	}
	if (hw_purpose_parse(ps, purpose) || *purpose == HW_PURPOSE_NONE)
		return cli_usage(cli, a->cmd, "unknown --purpose '%s' (envelope, keywrap, sign, "
		                 "decrypt or derive)", ps);
	if (*purpose == HW_PURPOSE_DECRYPT ? !hw_key_type_is_rsa(*type) || *type >= HW_KEY_RSA2048_PSS
	    : *purpose == HW_PURPOSE_DERIVE ? !hw_key_type_is_ec(*type)
	    : type_is_aes(*type) != (*purpose != HW_PURPOSE_SIGN))
		return cli_usage(cli, a->cmd, "purpose %s does not fit type %s: envelope and "
		                 "keywrap need aes256, sign an rsa, ec or ed type, decrypt an "
		                 "rsa type (not rsa-pss), derive an ec-p* type", ps, ts);
	if (cli_flag(a, "allow-raw-rsa") && *purpose != HW_PURPOSE_DECRYPT)
		return cli_usage(cli, a->cmd, "--allow-raw-rsa is for --purpose decrypt keys only");
	return 0;
}

static void create_transcript(struct cli *cli, hw_ctx *ctx, const hw_key_info *ki)
{
	char when[32];
	time_t now = time(NULL);
	struct tm tm;

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	if (cli->json) {
		cj_str(cli->out, "created", when);
		cj_str(cli->out, "module", hw_ctx_module_path(ctx));
		cj_str(cli->out, "token", hw_ctx_token_uri(ctx));
		key_info_json(cli->out, "key", ki);
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
	                           (cli_flag(a, "backupable") ? HW_KEYGEN_BACKUPABLE : 0) |
	                           (cli_flag(a, "allow-raw-rsa") ? HW_KEYGEN_RAW_RSA : 0), &key);
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

/* Tokens return objects in no particular order; listings should be stable (by label). */
/* One row of `key list`: a logical key, shown by its current version. */
struct list_row {
	hw_key_info ki;
	const hw_key_meta *m;       /* NULL: no metadata (version 1, enabled) */
	const char *label;          /* logical label */
	int hidden;                 /* an older version: counted, not shown */
};

static int by_row_label(const void *a, const void *b)
{
	const struct list_row *x = a, *y = b;
	/* Not x->label: it may point into a row that qsort is moving. */
	int c = strcmp(x->m ? x->m->label : x->ki.label, y->m ? y->m->label : y->ki.label);

	return c ? c : strcmp(x->ki.id_hex, y->ki.id_hex);
}

static const char *row_state(const struct list_row *r)
{
	return hw_key_state_name(r->m ? r->m->state : HW_KEY_STATE_ENABLED);
}

static const hw_key_version_info *meta_version_of(const hw_key_meta *m, const char *id_hex)
{
	for (size_t i = 0; i < m->nversions; i++)
		if (strcmp(m->versions[i].id_hex, id_hex) == 0)
			return &m->versions[i];
	return NULL;
}

/* "k=v" matches that tag, "k" any value of tag k. */
static int has_tag(const hw_key_meta *m, const char *want)
{
	const char *eq = strchr(want, '=');
	size_t kn = eq ? (size_t)(eq - want) : strlen(want);

	for (size_t i = 0; m && i < m->ntags; i++)
		if (strlen(m->tags[i].key) == kn && memcmp(m->tags[i].key, want, kn) == 0 &&
		    (!eq || strcmp(m->tags[i].value, eq + 1) == 0))
			return 1;
	return 0;
}

static void list_text(const struct list_row *r, size_t n)
{
	int lw = 5;
	size_t shown = 0;

	for (size_t i = 0; i < n; i++)
		if (!r[i].hidden && (int)strlen(r[i].label) > lw)
			lw = (int)strlen(r[i].label);
	for (size_t i = 0; i < n; i++) {
		if (r[i].hidden)
			continue;
		if (!shown++)
			printf("%-*s  %-8s  %-8s  %-16s  %-8s  %-32s  %s\n", lw, "LABEL", "TYPE",
			       "PURPOSE", "STATE", "VERSIONS", "ID", "KCV/FINGERPRINT");
		printf("%-*s  %-8s  %-8s  %-16s  %-8zu  %-32s  %s\n", lw, r[i].label, r[i].ki.type_name,
		       key_purpose_text(r[i].ki.purpose), row_state(&r[i]), r[i].m ? r[i].m->nversions : 1,
		       r[i].ki.id_hex, key_kcv_value(&r[i].ki));
	}
	if (!shown)
		printf("No keys on this token.\n");
}

static void meta_json(json_t *parent, const hw_key_meta *m);

static void list_json(struct cli *cli, const struct list_row *r, size_t n)
{
	json_t *keys = cj_arr(cli->out, "keys");

	for (size_t i = 0; i < n; i++) {
		hw_key_info ki;
		json_t *k, *tags;

		if (r[i].hidden)
			continue;
		ki = r[i].ki;
		snprintf(ki.label, sizeof(ki.label), "%s", r[i].label);
		k = cj_obj(keys, NULL);
		key_info_fields(k, &ki);
		cj_str(k, "object_label", r[i].ki.label);
		cj_str(k, "state", row_state(&r[i]));
		cj_uint(k, "versions", r[i].m ? r[i].m->nversions : 1);
		cj_uint(k, "current_version", r[i].m ? r[i].m->current : 1);
		tags = cj_obj(k, "tags");
		for (size_t t = 0; r[i].m && t < r[i].m->ntags; t++)
			cj_str(tags, r[i].m->tags[t].key, r[i].m->tags[t].value);
	}
}

int cmd_key_list(struct cli *cli, const struct cli_args *a)
{
	const char *state_s = cli_opt(a, "state"), *type_s = cli_opt(a, "type");
	const char *const *tags;
	size_t ntags = 0;
	hw_key_state want_state = HW_KEY_STATE_ENABLED;
	hw_key **keys = NULL;
	hw_key_meta **metas = NULL;
	struct list_row *rows = NULL;
	hw_ctx *ctx = NULL;
	size_t n = 0, nm = 0;
	hw_err err;
	int rc;

	tags = cli_opt_all(a, "tag", &ntags);
	if (state_s && hw_key_state_parse(state_s, &want_state))
		return cli_usage(cli, a->cmd, "unknown --state '%s' (enabled, disabled or "
		                 "pending-deletion)", state_s);
	for (size_t i = 0; i < ntags; i++)
		if (!tags[i][0] || tags[i][0] == '=')
			return cli_usage(cli, a->cmd, "--tag wants KEY=VALUE or KEY, not '%s'", tags[i]);
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	err = hw_key_list(ctx, &keys, &n);
	if (!err)
		err = hw_key_meta_list(ctx, &metas, &nm);
	if (err) {
		rc = cli_fail(cli, err, "listing keys");
		goto out;
	}
	rows = calloc(n ? n : 1, sizeof(*rows));
	if (!rows) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "listing keys", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n && !rc; i++)
		rc = key_info(cli, keys[i], &rows[i].ki);
	if (rc)
		goto out;
	/* Group the version objects under their logical key: one search for
	 * all metadata instead of one per key keeps long listings fast. */
	for (size_t i = 0; i < n; i++) {
		struct list_row *r = &rows[i];
		const hw_key_version_info *v = NULL;

		r->label = r->ki.label;
		for (size_t j = 0; j < nm && !v; j++)
			if ((v = meta_version_of(metas[j], r->ki.id_hex)))
				r->m = metas[j];
		if (r->m) {
			r->label = r->m->label;
			r->hidden = v->number != r->m->current;
		}
	}
	/* A logical key whose current version is missing still shows (its newest). */
	for (size_t j = 0; j < nm; j++) {
		struct list_row *best = NULL;
		unsigned best_n = 0;
		int shown = 0;

		for (size_t i = 0; i < n; i++) {
			const hw_key_version_info *v;
			if (rows[i].m != metas[j])
				continue;
			shown |= !rows[i].hidden;
			v = meta_version_of(metas[j], rows[i].ki.id_hex);
			if (v && v->number >= best_n) {
				best_n = v->number;
				best = &rows[i];
			}
		}
		if (!shown && best)
			best->hidden = 0;
	}
	for (size_t i = 0; i < n; i++) {
		struct list_row *r = &rows[i];
		if (state_s && (r->m ? r->m->state : HW_KEY_STATE_ENABLED) != want_state)
			r->hidden = 1;
		if (type_s && strcmp(r->ki.type_name, type_s) != 0)
			r->hidden = 1;
		for (size_t t = 0; t < ntags; t++)
			if (!has_tag(r->m, tags[t]))
				r->hidden = 1;
	}
	qsort(rows, n, sizeof(*rows), by_row_label);
	/* The sort moved the rows, and the labels of keys without metadata
	 * (tokens without data objects) with them. */
	for (size_t i = 0; i < n; i++)
		if (!rows[i].m)
			rows[i].label = rows[i].ki.label;
	if (cli->json)
		list_json(cli, rows, n);
	else
		list_text(rows, n);
out:
	free(rows);
	hw_key_meta_list_free(metas, nm);
	hw_key_list_free(keys, n);
	hw_ctx_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Lifecycle (issue 5): versions, states, tags.                        */

static void fmt_time(int64_t t, char *out, size_t outsz)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, outsz, "unknown");
}

static void meta_json(json_t *parent, const hw_key_meta *m)
{
	json_t *w = cj_obj(parent, "lifecycle"), *versions, *tags;
	char when[40];

	cj_str(w, "label", m->label);
	cj_bool(w, "stored", m->stored);
	cj_str(w, "state", hw_key_state_name(m->state));
	if (m->state == HW_KEY_STATE_PENDING_DELETION) {
		fmt_time(m->deletion_date, when, sizeof(when));
		cj_str(w, "deletion_date", when);
	} else {
		cj_null(w, "deletion_date");
	}
	cj_str(w, "purpose", key_purpose_text(m->purpose));
	fmt_time(m->created, when, sizeof(when));
	cj_str(w, "created", m->created ? when : NULL);
	cj_uint(w, "current_version", m->current);
	versions = cj_arr(w, "versions");
	for (size_t i = 0; i < m->nversions; i++) {
		json_t *v = cj_obj(versions, NULL);

		cj_uint(v, "number", m->versions[i].number);
		cj_str(v, "label", m->versions[i].label);
		cj_str(v, "id", m->versions[i].id_hex);
		fmt_time(m->versions[i].created, when, sizeof(when));
		cj_str(v, "created", m->versions[i].created ? when : NULL);
		cj_bool(v, "current", m->versions[i].number == m->current);
	}
	tags = cj_obj(w, "tags");
	for (size_t i = 0; i < m->ntags; i++)
		cj_str(tags, m->tags[i].key, m->tags[i].value);
	cj_str(w, "description", m->description);
}

static void meta_text(const hw_key_meta *m, unsigned version)
{
	char when[40];

	printf("Lifecycle%s:\n", m->stored ? "" : " (no metadata object: made before hsmwrap "
	       "kept one; these are the defaults)");
	printf("  Logical key        %s\n", m->label);
	printf("  This version       %u (current: %u)\n", version, m->current);
	if (m->state == HW_KEY_STATE_PENDING_DELETION) {
		fmt_time(m->deletion_date, when, sizeof(when));
		printf("  State              pending-deletion (destroyed from %s)\n", when);
	} else {
		printf("  State              %s\n", hw_key_state_name(m->state));
	}
	fmt_time(m->created, when, sizeof(when));
	printf("  Created            %s\n", when);
	printf("  Description        %s\n", m->description && m->description[0] ?
	       m->description : "(none)");
	printf("  Versions           %zu\n", m->nversions);
	for (size_t i = 0; i < m->nversions; i++) {
		fmt_time(m->versions[i].created, when, sizeof(when));
		printf("    %-4u %-24s %s  created %s%s\n", m->versions[i].number,
		       m->versions[i].label, m->versions[i].id_hex, when,
		       m->versions[i].number == m->current ? "  (current)" : "");
	}
	printf("  Tags               %s\n", m->ntags ? "" : "(none)");
	for (size_t i = 0; i < m->ntags; i++)
		printf("    %s=%s\n", m->tags[i].key, m->tags[i].value);
}

int cmd_key_rotate(struct cli *cli, const struct cli_args *a)
{
	hw_key *key = NULL, *nk = NULL;
	hw_key_meta *m = NULL;
	hw_key_info ki;
	hw_ctx *ctx = NULL;
	char what[300];
	hw_err err;
	int rc;

	if ((rc = cli_open_key(cli, a->pos[0], &ctx, &key)))
		goto out;
	err = hw_key_rotate(key, &nk);
	if (err) {
		snprintf(what, sizeof(what), "rotating key '%s'", cli_redact(a->pos[0]));
		rc = cli_fail(cli, err, what);
		goto out;
	}
	if ((rc = key_info(cli, nk, &ki)))
		goto out;
	err = hw_key_meta_get(nk, &m);
	if (err) {
		rc = cli_fail(cli, err, "reading the key's lifecycle metadata");
		goto out;
	}
	cli_transcript_begin(cli, "key rotation");
	cli_transcript_line(cli, "Module:", "%s", hw_ctx_module_path(ctx));
	cli_transcript_line(cli, "Key:", "%s", m->label);
	cli_transcript_line(cli, "New version:", "%u (now current)", hw_key_version(nk));
	cli_transcript_line(cli, "Version label:", "%s", ki.label);
	cli_transcript_line(cli, "Type:", "%s (%u bits)", ki.type_name, ki.bits);
	cli_transcript_line(cli, "Purpose:", "%s", key_purpose_text(ki.purpose));
	cli_transcript_line(cli, "ID:", "%s", ki.id_hex);
	cli_transcript_line(cli, "URI:", "%s", ki.uri);
	cli_transcript_line(cli, kcv_alg_text(ki.kcv_alg), "%s", key_kcv_value(&ki));
	cli_transcript_line(cli, "Sensitive:", "%s", key_tri_text(ki.sensitive));
	cli_transcript_line(cli, "Extractable:", "%s", key_tri_text(ki.extractable));
	for (size_t i = 0; i < m->nversions; i++)
		if (m->versions[i].number != m->current)
			cli_transcript_line(cli, "Kept for decryption:", "version %u (%s, ID %s)",
			                    m->versions[i].number, m->versions[i].label,
			                    m->versions[i].id_hex);
	cli_transcript_end(cli);
out:
	hw_key_meta_free(m);
	hw_key_free(nk);
	cli_close_key(ctx, key);
	return rc;
}

/* The common shape of the lifecycle commands: find KEY, change it, say so. */
enum life_op { LIFE_ENABLE, LIFE_DISABLE, LIFE_SCHEDULE, LIFE_CANCEL, LIFE_TAG, LIFE_DESCRIBE };

static int life_run(struct cli *cli, const struct cli_args *a, enum life_op op,
                    unsigned days, const char *const *set, size_t nset,
                    const char *const *remove, size_t nremove)
{
	hw_key *key = NULL;
	hw_key_meta *m = NULL;
	hw_ctx *ctx = NULL;
	int64_t when = 0;
	char what[300], date[40];
	hw_err err = HW_OK;
	int rc;

	if ((rc = cli_open_key(cli, a->pos[0], &ctx, &key)))
		goto out;
	switch (op) {
	case LIFE_ENABLE:
		err = hw_key_set_state(key, HW_KEY_STATE_ENABLED);
		break;
	case LIFE_DISABLE:
		err = hw_key_set_state(key, HW_KEY_STATE_DISABLED);
		break;
	case LIFE_SCHEDULE:
		err = hw_key_schedule_deletion(key, days, &when);
		break;
	case LIFE_CANCEL:
		err = hw_key_cancel_deletion(key);
		break;
	case LIFE_TAG:
		err = hw_key_update_tags(key, set, nset, remove, nremove);
		break;
	case LIFE_DESCRIBE:
		err = hw_key_set_description(key, cli_opt(a, "description"));
		break;
	}
	if (!err)
		err = hw_key_meta_get(key, &m);
	if (err) {
		snprintf(what, sizeof(what), "%s key '%s'", a->cmd->name + 4, cli_redact(a->pos[0]));
		rc = cli_fail(cli, err, what);
		goto out;
	}
	if (cli->json) {
		meta_json(cli->out, m);
		goto out;
	}
	switch (op) {
	case LIFE_SCHEDULE:
		fmt_time(when, date, sizeof(date));
		printf("Key '%s' is pending deletion: every use fails from now on, and it is "
		       "destroyed (all %zu version%s) from %s by `key purge` or its next use. "
		       "`key cancel-deletion` keeps it.\n", m->label, m->nversions,
		       m->nversions == 1 ? "" : "s", date);
		break;
	case LIFE_CANCEL:
		printf("Deletion of key '%s' cancelled; the key is disabled (`key enable` to use "
		       "it again).\n", m->label);
		break;
	case LIFE_TAG:
		printf("Tags of key '%s':%s\n", m->label, m->ntags ? "" : " (none)");
		for (size_t i = 0; i < m->ntags; i++)
			printf("  %s=%s\n", m->tags[i].key, m->tags[i].value);
		break;
	case LIFE_DESCRIBE:
		printf("Description of key '%s' set.\n", m->label);
		break;
	default:
		printf("Key '%s' is now %s.\n", m->label, hw_key_state_name(m->state));
	}
out:
	hw_key_meta_free(m);
	cli_close_key(ctx, key);
	return rc;
}

int cmd_key_enable(struct cli *cli, const struct cli_args *a)
{
	return life_run(cli, a, LIFE_ENABLE, 0, NULL, 0, NULL, 0);
}

int cmd_key_disable(struct cli *cli, const struct cli_args *a)
{
	return life_run(cli, a, LIFE_DISABLE, 0, NULL, 0, NULL, 0);
}

int cmd_key_schedule_deletion(struct cli *cli, const struct cli_args *a)
{
	const char *ds = cli_opt(a, "days");
	unsigned long days = HW_DELETION_DEFAULT_DAYS;
	char *end = NULL;

	if (ds) {
		days = strtoul(ds, &end, 10);
		if (!*ds || *end || ds[0] == '-' || days < HW_DELETION_MIN_DAYS ||
		    days > HW_DELETION_MAX_DAYS)
			return cli_usage(cli, a->cmd, "--days must be a number of days from %u to %u, "
			                 "not '%s'", HW_DELETION_MIN_DAYS, HW_DELETION_MAX_DAYS, ds);
	}
	return life_run(cli, a, LIFE_SCHEDULE, (unsigned)days, NULL, 0, NULL, 0);
}

int cmd_key_cancel_deletion(struct cli *cli, const struct cli_args *a)
{
	return life_run(cli, a, LIFE_CANCEL, 0, NULL, 0, NULL, 0);
}

int cmd_key_tag(struct cli *cli, const struct cli_args *a)
{
	const char *const *remove;
	size_t nremove = 0;

	remove = cli_opt_all(a, "remove", &nremove);
	if (a->npos < 2 && nremove == 0)
		return cli_usage(cli, a->cmd, "give tags to set (KEY=VALUE) or --remove KEY");
	for (size_t i = 1; i < a->npos; i++) {
		const char *eq = strchr(a->pos[i], '=');
		if (!eq || eq == a->pos[i])
			return cli_usage(cli, a->cmd, "a tag is KEY=VALUE, not '%s'", a->pos[i]);
	}
	return life_run(cli, a, LIFE_TAG, 0, a->pos + 1, a->npos - 1, remove, nremove);
}

int cmd_key_describe(struct cli *cli, const struct cli_args *a)
{
	return life_run(cli, a, LIFE_DESCRIBE, 0, NULL, 0, NULL, 0);
}

int cmd_key_purge(struct cli *cli, const struct cli_args *a)
{
	const char *label = a->npos ? a->pos[0] : NULL;
	char **purged = NULL;
	size_t n = 0;
	hw_ctx *ctx = NULL;
	char what[300];
	hw_err err;
	int rc;

	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	/* By label, not found first: finding a key past its date destroys it. */
	err = hw_key_purge(ctx, label, &purged, &n);
	if (err) {
		snprintf(what, sizeof(what), "purging %s%s%s", label ? "key '" : "keys",
		         label ? label : "", label ? "'" : "");
		rc = cli_fail(cli, err, what);
		goto out;
	}
	if (cli->json) {
		json_t *list = cj_arr(cli->out, "purged");

		for (size_t i = 0; i < n; i++)
			cj_str(list, NULL, purged[i]);
	} else if (n == 0) {
		printf("No key is past its deletion date.\n");
	} else {
		for (size_t i = 0; i < n; i++)
			printf("Destroyed key '%s' (every version and its metadata).\n", purged[i]);
	}
out:
	hw_strv_free(purged, n);
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
		hw_key_meta *m = NULL;
		hw_err err = hw_key_meta_get(key, &m);

		if (err) {
			rc = cli_fail(cli, err, "reading the key's lifecycle metadata");
		} else if (cli->json) {
			key_info_json(cli->out, "key", &ki);
			cj_uint(cli->out, "version", hw_key_version(key));
			meta_json(cli->out, m);
		} else {
			key_info_text(&ki, 1);
			meta_text(m, hw_key_version(key));
		}
		hw_key_meta_free(m);
	}
	cli_close_key(ctx, key);
	return rc;
}

/* ------------------------------------------------------------------ */

int cmd_key_destroy(struct cli *cli, const struct cli_args *a)
{
	const char *spec = a->pos[0];
	hw_key_meta *m = NULL;
	size_t nversions = 1;
	int all;
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
	/* A plain label names the logical key: all its versions go. A version
	 * label, id: or URI names one version object. */
	all = strncmp(spec, "pkcs11:", 7) != 0 && strncmp(spec, "id:", 3) != 0 &&
	      strcmp(spec, hw_key_logical_label(key)) == 0;
	if (all)
		nversions = (err = hw_key_meta_get(key, &m)) ? 0 : m->nversions;
	else
		err = HW_OK;
	if (!err)
		err = all ? hw_key_destroy_all(key) : hw_key_destroy(key);
	if (err) {
		snprintf(what, sizeof(what), "destroying key '%s'", ki.label);
		rc = cli_fail(cli, err, what);
		goto out;
	}
	if (cli->json) {
		key_info_json(cli->out, "destroyed", &ki);
		cj_uint(cli->out, "versions_destroyed", all ? nversions : 1);
	} else if (all && nversions > 1) {
		printf("Destroyed key '%s' (%s): all %zu versions and its metadata.\n",
		       hw_key_logical_label(key), ki.type_name, nversions);
	} else {
		printf("Destroyed key '%s' (%s, ID %s).\n", ki.label, ki.type_name, ki.id_hex);
	}
out:
	hw_key_meta_free(m);
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}
