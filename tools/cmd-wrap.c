/*
 * cmd-wrap.c - `wrap` and `unwrap`: key material under a keywrap key.
 */
#include "config.h"

#include <stdio.h>

#include "cli.h"

static void done(struct cli *cli, const struct cli_args *a, hw_key *key, const char *verb,
                 size_t len)
{
	if (cli->json) {
		cj_str(cli->out, "key", hw_key_label(key));
		cj_str(cli->out, "input", cli_opt(a, "input"));
		cj_str(cli->out, "output", cli_opt(a, "output"));
		cj_uint(cli->out, "length", len);
	} else {
		printf("%s %zu bytes of key material with key '%s' into %s.\n", verb, len,
		       hw_key_label(key), cli_opt(a, "output"));
	}
}

int cmd_wrap(struct cli *cli, const struct cli_args *a)
{
	const char *in_path = cli_opt(a, "input");
	uint8_t *material = NULL, *blob = NULL;
	size_t len = 0, bloblen = 0;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc;

	if ((rc = cli_distinct_paths(cli, a, "input", "output")) ||
	    (rc = cli_read_file(cli, in_path, HW_WRAP_MAX_MATERIAL, 1, "reading key material",
	                        &material, &len)))
		return rc;
	if (len == 0) {
		rc = cli_failf(cli, HW_ERR_FORMAT, "reading key material", "%s is empty", in_path);
		goto out;
	}
	if ((rc = cli_open_key(cli, cli_opt(a, "key"), &ctx, &key)))
		goto out;
	err = hw_wrap(key, material, len, &blob, &bloblen);
	if (err) {
		rc = cli_fail(cli, err, "wrapping key material");
		goto out;
	}
	rc = cli_write_file(cli, cli_opt(a, "output"), blob, bloblen, 0, "writing wrapped key");
	if (!rc)
		done(cli, a, key, "Wrapped", len);
out:
	util_free(material, len, 1);
	hw_free(blob);
	cli_close_key(ctx, key);
	return rc;
}

int cmd_unwrap(struct cli *cli, const struct cli_args *a)
{
	const char *in_path = cli_opt(a, "input");
	uint8_t *blob = NULL, *material = NULL;
	size_t bloblen = 0, len = 0;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc;

	if ((rc = cli_distinct_paths(cli, a, "input", "output")) ||
	    (rc = cli_read_file(cli, in_path, CLI_MAX_BLOB, 0, "reading wrapped key", &blob,
	                        &bloblen)))
		return rc;
	if ((rc = cli_open_key(cli, cli_opt(a, "key"), &ctx, &key)))
		goto out;
	err = hw_unwrap(ctx, key, blob, bloblen, &material, &len);
	if (err) {
		rc = cli_fail(cli, err, "unwrapping key material");
		goto out;
	}
	rc = cli_write_file(cli, cli_opt(a, "output"), material, len, 1, "writing key material");
	if (!rc)
		done(cli, a, key, "Unwrapped", len);
out:
	if (material)
		hw_free_secret(material, len);
	util_free(blob, bloblen, 0);
	cli_close_key(ctx, key);
	return rc;
}
