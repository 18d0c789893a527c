/*
 * cmd-tde.c - `tde init` and `tde keyring add|list|rekey|get`: database
 * master keys and the keyring files of table keys they wrap.
 *
 * Every command that changes a keyring holds an exclusive lock on
 * KEYRING.lock from reading it to replacing it, so two administrators
 * cannot lose each other's changes. The library writes the keyring
 * atomically and removes what a killed writer left behind
 * (hw_tde_keyring_save).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

int cmd_tde_init(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "label");
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_key_info ki;
	hw_err err;
	int rc;

	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	err = hw_key_generate(ctx, label, HW_KEY_AES256, HW_PURPOSE_ENVELOPE, &key);
	if (err) {
		rc = cli_fail(cli, err, "creating the TDE master key");
		goto out;
	}
	if ((err = hw_key_info_get(key, &ki))) {
		rc = cli_fail(cli, err, "reading the TDE master key");
		goto out;
	}
	cli_transcript_begin(cli, "tde init");
	cli_transcript_line(cli, "Master key:", "%s (AES-256, envelope: AES-GCM wrap of table keys)",
	                    ki.label);
	cli_transcript_line(cli, "Key ID:", "%s", ki.id_hex);
	cli_transcript_line(cli, "Key URI:", "%s", ki.uri);
	cli_transcript_line(cli, kcv_alg_text(ki.kcv_alg), "%s", ki.kcv[0] ? ki.kcv : "unavailable");
	cli_transcript_line(cli, "Sensitive:", "%s", ki.sensitive == 1 ? "yes" : "NO");
	cli_transcript_line(cli, "Extractable:", "%s", ki.extractable == 0 ? "no" : "YES");
	cli_transcript_end(cli);
	if (cli->json)
		key_info_json(cli->out, "key", &ki);
out:
	cli_close_key(ctx, key);
	return rc;
}

/* ------------------------------------------------------------------ */

static int parse_u32(const char *s, uint32_t *v)
{
	char *end = NULL;
	unsigned long long x;

	if (!s || !*s || *s == '-')
		return -1;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno || *end || x > UINT32_MAX)
		return -1;
	*v = (uint32_t)x;
	return 0;
}

/* Exclusive lock for a read-modify-write of the keyring; -1 on failure. */
static int lock_keyring(struct cli *cli, const char *path, int *fd_out, int *rc)
{
	char *lp = NULL;
	int fd;

	if (asprintf(&lp, "%s.lock", path) < 0) {
		*rc = cli_failf(cli, HW_ERR_NOMEM, "locking keyring", "out of memory");
		return -1;
	}
	fd = open(lp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX) < 0) {
		*rc = cli_failf(cli, HW_ERR_IO, "locking keyring", "%s: %s", lp, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(lp);
		return -1;
	}
	free(lp);
	*fd_out = fd;
	return 0;
}

static int keyring_matches(const hw_tde_keyring_info *info, hw_key *key)
{
	hw_key_info ki;

	if (hw_key_info_get(key, &ki))
		return 0;
	return strcmp(ki.id_hex, info->master_id) == 0;
}

int cmd_tde_keyring_add(struct cli *cli, const struct cli_args *a)
{
	const char *path = cli_opt(a, "keyring"), *label = cli_opt(a, "key");
	hw_tde_keyring *kr = NULL;
	hw_tde_keyring_info *info = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	uint32_t id, version = 0;
	int lockfd = -1, rc = 0, exists;
	hw_err err;

	if (parse_u32(cli_opt(a, "id"), &id))
		return cli_usage(cli, a->cmd, "--id must be a number from 0 to 4294967295");
	if (lock_keyring(cli, path, &lockfd, &rc))
		return rc;
	exists = access(path, F_OK) == 0;
	if (!exists && !label) {
		rc = cli_usage(cli, a->cmd, "%s does not exist: give --key L (the master key) to "
		               "create it", path);
		goto out;
	}
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		goto out;
	if (exists) {
		err = hw_tde_keyring_open(ctx, path, &kr);
		if (err) {
			rc = cli_fail(cli, err, "opening the keyring");
			goto out;
		}
		if (label) {
			if ((err = hw_key_find(ctx, label, &key))) {
				rc = cli_fail(cli, err, "finding the master key");
				goto out;
			}
			if ((err = hw_tde_keyring_info_get(kr, &info)) || !keyring_matches(info, key)) {
				rc = err ? cli_fail(cli, err, "keyring")
				         : cli_failf(cli, HW_ERR_WRONG_KEY, "adding a table key",
				                     "the keyring's master key is '%s', not '%s'",
				                     info->master_label, label);
				goto out;
			}
		}
	} else {
		if ((err = hw_key_find(ctx, label, &key))) {
			rc = cli_fail(cli, err, "finding the master key");
			goto out;
		}
		if ((err = hw_tde_keyring_create(key, &kr))) {
			rc = cli_fail(cli, err, "creating the keyring");
			goto out;
		}
	}
	if ((err = hw_tde_keyring_add(kr, id, &version))) {
		rc = cli_fail(cli, err, "adding a table key");
		goto out;
	}
	if ((err = hw_tde_keyring_save(kr, path))) {
		rc = cli_fail(cli, err, "writing the keyring");
		goto out;
	}
	if (cli->json) {
		cj_str(cli->out, "keyring", path);
		cj_uint(cli->out, "id", id);
		cj_uint(cli->out, "version", version);
	} else {
		printf("Table key %" PRIu32 " version %" PRIu32 " added to %s%s.\n", id, version, path,
		       exists ? "" : " (new keyring)");
	}
out:
	hw_tde_keyring_info_free(info);
	hw_tde_keyring_close(kr);
	cli_close_key(ctx, key);
	if (lockfd >= 0)
		close(lockfd);
	return rc;
}

static int open_keyring(struct cli *cli, const char *path, hw_ctx **ctx, hw_tde_keyring **kr)
{
	hw_err err;
	int rc;

	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, ctx)))
		return rc;
	err = hw_tde_keyring_open(*ctx, path, kr);
	return err ? cli_fail(cli, err, "opening the keyring") : 0;
}

static void fmt_time(uint64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm))
		strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(out, 32, "?");
}

int cmd_tde_keyring_list(struct cli *cli, const struct cli_args *a)
{
	const char *path = cli_opt(a, "keyring");
	hw_tde_keyring *kr = NULL;
	hw_tde_keyring_info *info = NULL;
	hw_ctx *ctx = NULL;
	hw_err err;
	char t[32];
	int rc;

	if ((rc = open_keyring(cli, path, &ctx, &kr)))
		goto out;
	if ((err = hw_tde_keyring_info_get(kr, &info))) {
		rc = cli_fail(cli, err, "keyring");
		goto out;
	}
	if (cli->json) {
		cj_str(cli->out, "keyring", path);
		cj_str(cli->out, "keyring_id", info->keyring_id);
		cj_str(cli->out, "master_key", info->master_label);
		cj_str(cli->out, "master_id", info->master_id);
		cj_str(cli->out, "master_kcv", info->master_kcv);
		cj_str(cli->out, "kcv_alg", "AES-ECB-zero");
		cj_uint(cli->out, "generation", info->generation);
		json_t *keys = cj_arr(cli->out, "keys");

		for (size_t i = 0; i < info->nentries; i++) {
			json_t *k = cj_obj(keys, NULL);

			fmt_time(info->entries[i].created, t);
			cj_uint(k, "id", info->entries[i].id);
			cj_uint(k, "version", info->entries[i].version);
			cj_str(k, "created", t);
		}
		goto out;
	}
	printf("Keyring:    %s (id %s, generation %" PRIu32 ", integrity verified)\n", path,
	       info->keyring_id, info->generation);
	printf("Master key: %s (id %s, KCV (AES-ECB of zero block) %s)\n", info->master_label,
	       info->master_id, info->master_kcv[0] ? info->master_kcv : "unavailable");
	printf("%-10s %-8s %s\n", "TABLE KEY", "VERSION", "CREATED (UTC)");
	for (size_t i = 0; i < info->nentries; i++) {
		fmt_time(info->entries[i].created, t);
		printf("%-10" PRIu32 " %-8" PRIu32 " %s\n", info->entries[i].id,
		       info->entries[i].version, t);
	}
out:
	hw_tde_keyring_info_free(info);
	hw_tde_keyring_close(kr);
	hw_ctx_free(ctx);
	return rc;
}

int cmd_tde_keyring_rekey(struct cli *cli, const struct cli_args *a)
{
	const char *path = cli_opt(a, "keyring"), *label = cli_opt(a, "new-key");
	hw_tde_keyring *kr = NULL;
	hw_tde_keyring_info *before = NULL, *after = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_key_info ki;
	int lockfd = -1, rc = 0;
	hw_err err;

	if (lock_keyring(cli, path, &lockfd, &rc))
		return rc;
	if ((rc = open_keyring(cli, path, &ctx, &kr)))
		goto out;
	if ((err = hw_key_find(ctx, label, &key)) || (err = hw_key_info_get(key, &ki))) {
		rc = cli_fail(cli, err, "finding the new master key");
		goto out;
	}
	if ((err = hw_tde_keyring_info_get(kr, &before))) {
		rc = cli_fail(cli, err, "keyring");
		goto out;
	}
	if ((err = hw_tde_keyring_rekey(kr, key))) {
		rc = cli_fail(cli, err, "re-wrapping the table keys");
		goto out;
	}
	if ((err = hw_tde_keyring_save(kr, path)) || (err = hw_tde_keyring_info_get(kr, &after))) {
		rc = cli_fail(cli, err, "writing the keyring");
		goto out;
	}
	cli_transcript_begin(cli, "tde keyring rekey");
	cli_transcript_line(cli, "Keyring:", "%s (id %s)", path, after->keyring_id);
	cli_transcript_line(cli, "Old master key:", "%s (id %s, KCV %s)", before->master_label,
	                    before->master_id, before->master_kcv);
	cli_transcript_line(cli, "New master key:", "%s (id %s, KCV %s)", after->master_label,
	                    after->master_id, after->master_kcv);
	cli_transcript_line(cli, "New key URI:", "%s", ki.uri);
	cli_transcript_line(cli, "Table keys re-wrapped:", "%zu", after->nentries);
	cli_transcript_line(cli, "Generation:", "%" PRIu32, after->generation);
	cli_transcript_end(cli);
out:
	hw_tde_keyring_info_free(before);
	hw_tde_keyring_info_free(after);
	hw_tde_keyring_close(kr);
	cli_close_key(ctx, key);
	if (lockfd >= 0)
		close(lockfd);
	return rc;
}

int cmd_tde_keyring_get(struct cli *cli, const struct cli_args *a)
{
	const char *path = cli_opt(a, "keyring"), *out_path = cli_opt(a, "output");
	hw_tde_keyring *kr = NULL;
	hw_ctx *ctx = NULL;
	uint8_t k[HW_TDE_KEY_LEN];
	uint32_t id, version = 0, got = 0;
	hw_err err;
	int rc;

	if (parse_u32(cli_opt(a, "id"), &id))
		return cli_usage(cli, a->cmd, "--id must be a number from 0 to 4294967295");
	if (cli_opt(a, "version") && (parse_u32(cli_opt(a, "version"), &version) || version == 0))
		return cli_usage(cli, a->cmd, "--version must be a number from 1 to 4294967295");
	if ((rc = cli_distinct_paths(cli, a, "keyring", "output")))
		return rc;
	if ((rc = open_keyring(cli, path, &ctx, &kr)))
		goto out;
	if ((err = hw_tde_key_get(kr, id, version, k, &got))) {
		rc = cli_fail(cli, err, "unwrapping the table key");
		goto out;
	}
	{
		const struct out_spec o = { out_path, k, sizeof(k), 1 };

		err = outfile_write_all(&o, 1);
	}
	OPENSSL_cleanse(k, sizeof(k));
	if (err) {
		rc = cli_fail_util(cli, err, "writing the table key");
		goto out;
	}
	if (cli->json) {
		cj_uint(cli->out, "id", id);
		cj_uint(cli->out, "version", got);
		cj_str(cli->out, "output", out_path);
	} else {
		printf("Table key %" PRIu32 " version %" PRIu32 " written to %s (32 bytes, mode 0600).\n",
		       id, got, out_path);
	}
out:
	hw_tde_keyring_close(kr);
	hw_ctx_free(ctx);
	return rc;
}
