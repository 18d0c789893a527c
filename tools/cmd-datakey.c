/*
 * cmd-datakey.c - `datakey generate` and `datakey decrypt`.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"

/* Context, token and key: the common start of both commands. */
static int open_key(struct cli *cli, const struct cli_args *a, hw_ectx **ec,
                    hw_ctx **ctx, hw_key **key)
{
	int rc;

	if ((rc = cli_ectx(cli, a, ec)))
		return rc;
	return cli_open_key(cli, cli_opt(a, "key"), ctx, key);
}

static void close_key(hw_ectx *ec, hw_ctx *ctx, hw_key *key)
{
	cli_close_key(ctx, key);
	hw_ectx_free(ec);
}

int cmd_datakey_generate(struct cli *cli, const struct cli_args *a)
{
	const char *pt_path = cli_opt(a, "plaintext-out"), *out_path = cli_opt(a, "output");
	uint8_t dk[HW_DATAKEY_LEN];
	uint8_t *wrapped = NULL;
	size_t wrappedlen = 0;
	hw_ectx *ec = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc;

	if ((rc = cli_distinct_paths(cli, a, "plaintext-out", "output")))
		return rc;
	if ((rc = open_key(cli, a, &ec, &ctx, &key)))
		goto out;
	err = hw_datakey_generate(key, ec, dk, &wrapped, &wrappedlen);
	if (err) {
		rc = cli_fail(cli, err, "generating data key");
		goto out;
	}
	{
		/* The wrapped key is staged first: it is useless without the plaintext. */
		const struct out_spec outs[2] = {
			{ out_path, wrapped, wrappedlen, 0 },
			{ pt_path, dk, sizeof(dk), 1 },
		};

		err = outfile_write_all(outs, 2);
	}
	if (err) {
		rc = cli_fail_util(cli, err, "writing data key");
		goto out;
	}
	if (cli->json) {
		cj_str(cli->out, "key", hw_key_label(key));
		cj_str(cli->out, "wrapped", out_path);
		cj_str(cli->out, "plaintext_out", pt_path);
		cj_uint(cli->out, "context_pairs", hw_ectx_count(ec));
	} else {
		printf("Data key generated with key '%s'.\n", hw_key_label(key));
		printf("Wrapped:   %s\n", out_path);
		printf("Plaintext: %s (mode 0600; delete it when no longer needed)\n", pt_path);
	}
out:
	OPENSSL_cleanse(dk, sizeof(dk));
	hw_free(wrapped);
	close_key(ec, ctx, key);
	return rc;
}

int cmd_datakey_decrypt(struct cli *cli, const struct cli_args *a)
{
	const char *in_path = cli_opt(a, "input"), *out_path = cli_opt(a, "output");
	uint8_t dk[HW_DATAKEY_LEN];
	uint8_t *blob = NULL;
	size_t bloblen = 0;
	hw_ectx *ec = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc;

	if ((rc = cli_distinct_paths(cli, a, "input", "output")))
		return rc;
	/* Read before opening the token: a bad file needs no PIN. */
	if ((rc = cli_read_file(cli, in_path, CLI_MAX_BLOB, 0, "reading wrapped data key", &blob,
	                        &bloblen)))
		return rc;
	if ((rc = open_key(cli, a, &ec, &ctx, &key)))
		goto out;
	err = hw_datakey_decrypt(ctx, key, ec, blob, bloblen, dk);
	if (err) {
		rc = cli_fail(cli, err, "decrypting data key");
		goto out;
	}
	if ((rc = cli_write_file(cli, out_path, dk, sizeof(dk), 1, "writing data key")))
		goto out;
	if (cli->json) {
		cj_str(cli->out, "key", hw_key_label(key));
		cj_str(cli->out, "input", in_path);
		cj_str(cli->out, "output", out_path);
	} else {
		printf("Data key decrypted with key '%s' into %s (mode 0600).\n",
		       hw_key_label(key), out_path);
	}
out:
	OPENSSL_cleanse(dk, sizeof(dk));
	util_free(blob, bloblen, 0);
	close_key(ec, ctx, key);
	return rc;
}
