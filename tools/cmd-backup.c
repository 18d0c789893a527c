/*
 * cmd-backup.c - `backup create`, `backup restore`, `backup show`: M-of-N
 * backups of backup-able keys (see src/lib/lifecycle/backup-create.c for the
 * design).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cli.h"

#define BACKUP_FILE_MAX (16u * 1024u * 1024u)
#define SHARE_FILE_MAX 4096u

static int parse_count(const char *s, unsigned long lo, unsigned long hi, unsigned *out)
{
	char *end = NULL;
	unsigned long v;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static void date_text(uint64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm))
		strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(out, n, "%llu", (unsigned long long)t);
}

static void entry_lines(struct cli *cli, const hw_backup_entry *e, const char *state)
{
	char field[64];

	snprintf(field, sizeof(field), "%s:", state);
	cli_transcript_line(cli, field, "%s (%s, ID %s, %u metadata object%s)", e->label,
	                    e->type_name, e->id_hex, e->nmeta, e->nmeta == 1 ? "" : "s");
	cli_transcript_line(cli, "  KCV / fingerprint:", "%s (%s)", e->kcv[0] ? e->kcv
	                    : "unavailable", e->kcv_alg);
}

static int file_exists(const char *p)
{
	struct stat st;

	return lstat(p, &st) == 0;
}

/* ------------------------------------------------------------------ */

int cmd_backup_create(struct cli *cli, const struct cli_args *a)
{
	const char *keys_opt = cli_opt(a, "keys"), *dir = cli_opt(a, "share-dir");
	const char *outp = cli_opt(a, "output");
	const char *so_src = cli_opt(a, "so-pin-source") ? cli_opt(a, "so-pin-source") : "prompt";
	unsigned n = 0, m = 0;
	char *list = NULL, *save = NULL, *tok, id[2 * HW_BACKUP_ID_LEN + 1];
	hw_key **keys = NULL;
	size_t nkeys = 0, cap = 0, filelen = 0;
	uint8_t *file = NULL, md[32];
	hw_backup_share *shares = NULL;
	hw_backup_info *info = NULL;
	struct out_spec *outs = NULL;
	char **paths = NULL, **texts = NULL;
	size_t *tlens = NULL;
	hw_ctx *ctx = NULL;
	hw_err err;
	int rc = 0, made_dir = 0;

	if (parse_count(cli_opt(a, "custodians"), 2, 255, &n))
		return cli_usage(cli, a->cmd, "--custodians: a number from 2 to 255");
	if (parse_count(cli_opt(a, "threshold"), 2, n, &m))
		return cli_usage(cli, a->cmd, "--threshold: a number from 2 to --custodians (%u)", n);
	if ((rc = cli_prepare_pin_source(cli, "SO PIN source", so_src)))
		return rc;
	/* An old share overwritten by a new one would be lost for good. */
	if (file_exists(outp))
		return cli_failf(cli, HW_ERR_INVALID_ARG, "backup create", "%s exists; refusing to "
		                 "overwrite it", outp);
	/* Shares are secrets: a directory made for them is the owner's alone. */
	if ((err = util_make_dir(dir, 0700, &made_dir)))
		return cli_fail_util(cli, err, "--share-dir");
	paths = calloc(n, sizeof(*paths));
	texts = calloc(n, sizeof(*texts));
	tlens = calloc(n, sizeof(*tlens));
	outs = calloc(n + 1, sizeof(*outs));
	if (!paths || !texts || !tlens || !outs || !(list = strdup(keys_opt))) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "backup create", "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		size_t l = strlen(dir) + 32;

		if (!(paths[i] = malloc(l))) {
			rc = cli_failf(cli, HW_ERR_NOMEM, "backup create", "out of memory");
			goto out;
		}
		snprintf(paths[i], l, "%s/share-%u.txt", dir, i + 1);
		if (file_exists(paths[i])) {
			rc = cli_failf(cli, HW_ERR_INVALID_ARG, "backup create", "%s exists; refusing "
			               "to overwrite a share", paths[i]);
			goto out;
		}
	}
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		goto out;
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char what[300];

		if (nkeys == cap) {
			hw_key **g = realloc(keys, (cap = cap ? 2 * cap : 8) * sizeof(*keys));
			if (!g) {
				rc = cli_failf(cli, HW_ERR_NOMEM, "backup create", "out of memory");
				goto out;
			}
			keys = g;
		}
		if ((err = hw_key_find(ctx, tok, &keys[nkeys]))) {
			snprintf(what, sizeof(what), "finding key '%s'", tok);
			rc = cli_fail(cli, err, what);
			goto out;
		}
		nkeys++;
	}
	if (nkeys == 0) {
		rc = cli_usage(cli, a->cmd, "--keys names no key");
		goto out;
	}
	err = hw_backup_create(ctx, so_src, keys, nkeys, n, m, &file, &filelen, &shares, &info);
	if (err) {
		rc = cli_fail(cli, err, "creating the backup");
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		if ((err = hw_backup_share_format(&shares[i], &texts[i], &tlens[i]))) {
			rc = cli_fail(cli, err, "formatting shares");
			goto out;
		}
		outs[i] = (struct out_spec){ paths[i], texts[i], tlens[i], 1 };
	}
	outs[n] = (struct out_spec){ outp, file, filelen, 0 };
	/* All files or none: a backup without its shares is useless. */
	if ((err = outfile_write_all(outs, n + 1))) {
		rc = cli_fail_util(cli, err, "writing the backup and its shares");
		goto out;
	}
	EVP_Digest(file, filelen, md, NULL, EVP_sha256(), NULL);
	cli_transcript_begin(cli, "M-of-N key backup (backup create)");
	util_hex(info->backup_id, HW_BACKUP_ID_LEN, id);
	cli_transcript_line(cli, "Backup ID:", "%s", id);
	cli_transcript_line(cli, "Backup file:", "%s", outp);
	{
		char h[65];
		util_hex(md, 32, h);
		cli_transcript_line(cli, "SHA-256 of backup file:", "%s", h);
	}
	cli_transcript_line(cli, "Threshold:", "%u of %u custodians", m, n);
	cli_transcript_line(cli, "Backup key:", "AES-256, RNG of token XOR host; imported by the "
	                    "SO as a trusted wrap-only session object, destroyed after wrapping");
	cli_transcript_line(cli, "Wrapping:", "AES key wrap with padding (RFC 5649) inside the token");
	for (size_t i = 0; i < info->nentries; i++)
		entry_lines(cli, &info->entries[i], "Backed up");
	for (unsigned i = 0; i < n; i++) {
		char field[64];
		const char *ck = strstr(texts[i], "check: ");

		snprintf(field, sizeof(field), "Share %u:", i + 1);
		cli_transcript_line(cli, field, "%s (check %.8s) for custodian %u", paths[i],
		                    ck ? ck + 7 : "?", i + 1);
	}
	cli_transcript_end(cli);
out:
	for (unsigned i = 0; i < n; i++) {
		if (paths)
			free(paths[i]);
		if (texts && texts[i])
			hw_free_secret(texts[i], tlens[i]);
	}
	free(paths);
	free(texts);
	free(tlens);
	free(outs);
	free(list);
	if (shares)
		hw_free_secret(shares, n * sizeof(*shares));
	hw_free(file);
	hw_backup_info_free(info);
	for (size_t i = 0; i < nkeys; i++)
		hw_key_free(keys[i]);
	free(keys);
	hw_ctx_free(ctx);
	/* Nothing was written into it (all outputs or none): leave no trace. */
	if (rc && made_dir)
		(void)rmdir(dir);
	return rc;
}

/* ------------------------------------------------------------------ */

int cmd_backup_restore(struct cli *cli, const struct cli_args *a)
{
	const char *in = cli_opt(a, "input");
	size_t nshare_files = 0, filelen = 0;
	const char *const *share_files = cli_opt_all(a, "share", &nshare_files);
	hw_backup_share *shares = NULL;
	hw_backup_info *info = NULL;
	uint8_t *file = NULL;
	char id[2 * HW_BACKUP_ID_LEN + 1];
	hw_ctx *ctx = NULL;
	hw_err err;
	int rc = 0;

	if ((err = util_read_file(in, BACKUP_FILE_MAX, 0, &file, &filelen)))
		return cli_fail_util(cli, err, "reading the backup file");
	if (!(shares = calloc(nshare_files ? nshare_files : 1, sizeof(*shares)))) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "backup restore", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nshare_files; i++) {
		uint8_t *txt = NULL;
		size_t len = 0;
		char what[300];

		if ((err = util_read_file(share_files[i], SHARE_FILE_MAX, 1, &txt, &len))) {
			rc = cli_fail_util(cli, err, "reading a share");
			goto out;
		}
		err = hw_backup_share_parse((const char *)txt, len, &shares[i]);
		util_free(txt, len, 1);
		if (err) {
			snprintf(what, sizeof(what), "reading share %s; nothing was restored",
			         share_files[i]);
			rc = cli_fail(cli, err, what);
			goto out;
		}
	}
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		goto out;
	err = hw_backup_restore(ctx, file, filelen, shares, nshare_files,
	                        cli_flag(a, "backupable") ? HW_RESTORE_BACKUPABLE : 0, &info);
	if (err) {
		rc = cli_fail(cli, err, "restoring the backup; nothing was restored");
		goto out;
	}
	cli_transcript_begin(cli, "M-of-N key restore (backup restore)");
	util_hex(info->backup_id, HW_BACKUP_ID_LEN, id);
	cli_transcript_line(cli, "Backup ID:", "%s", id);
	cli_transcript_line(cli, "Backup file:", "%s (authenticated)", in);
	cli_transcript_line(cli, "Onto token:", "%s", hw_ctx_token_uri(ctx));
	for (size_t i = 0; i < nshare_files; i++) {
		char field[64];
		snprintf(field, sizeof(field), "Share %u:", shares[i].index);
		cli_transcript_line(cli, field, "%s", share_files[i]);
	}
	cli_transcript_line(cli, "Restored keys are:", "%s", cli_flag(a, "backupable")
	                    ? "sensitive, backup-able (extractable by a trusted key only)"
	                    : "sensitive, not extractable");
	for (size_t i = 0; i < info->nentries; i++)
		entry_lines(cli, &info->entries[i], "Restored (KCV matches)");
	cli_transcript_end(cli);
out:
	if (shares)
		hw_free_secret(shares, (nshare_files ? nshare_files : 1) * sizeof(*shares));
	util_free(file, filelen, 0);
	hw_backup_info_free(info);
	hw_ctx_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */

int cmd_backup_show(struct cli *cli, const struct cli_args *a)
{
	hw_backup_info *info = NULL;
	uint8_t *file = NULL;
	size_t len = 0;
	char id[2 * HW_BACKUP_ID_LEN + 1], date[32];
	hw_err err;

	if ((err = util_read_file(a->pos[0], BACKUP_FILE_MAX, 0, &file, &len)))
		return cli_fail_util(cli, err, "reading the backup file");
	err = hw_backup_inspect(file, len, &info);
	util_free(file, len, 0);
	if (err)
		return cli_fail(cli, err, "reading the backup file");
	util_hex(info->backup_id, HW_BACKUP_ID_LEN, id);
	date_text(info->created, date, sizeof(date));
	if (cli->json) {
		cj_str(cli->out, "backup_id", id);
		cj_uint(cli->out, "version", info->version);
		cj_uint(cli->out, "threshold", info->threshold);
		cj_uint(cli->out, "custodians", info->custodians);
		cj_str(cli->out, "created", date);
		json_t *keys = cj_arr(cli->out, "keys");

		for (size_t i = 0; i < info->nentries; i++) {
			const hw_backup_entry *e = &info->entries[i];
			json_t *k = cj_obj(keys, NULL);

			cj_str(k, "label", e->label);
			cj_str(k, "id", e->id_hex);
			cj_str(k, "type", e->type_name);
			cj_str(k, "kcv", e->kcv[0] ? e->kcv : NULL);
			cj_str(k, "kcv_alg", e->kcv_alg);
			cj_uint(k, "metadata_objects", e->nmeta);
		}
	} else {
		printf("Backup ID:  %s (format v%u, not authenticated: that needs the shares)\n",
		       id, info->version);
		printf("Created:    %s\n", date);
		printf("Threshold:  %u of %u custodians\n", info->threshold, info->custodians);
		for (size_t i = 0; i < info->nentries; i++) {
			const hw_backup_entry *e = &info->entries[i];
			printf("Key:        %s (%s, ID %s, KCV %s, %u metadata)\n", e->label,
			       e->type_name, e->id_hex, e->kcv[0] ? e->kcv : "unavailable", e->nmeta);
		}
	}
	hw_backup_info_free(info);
	return 0;
}
