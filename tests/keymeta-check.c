/*
 * keymeta-check: what tests/test-keymeta.sh needs of the library that the
 * CLI does not (yet) offer: ESDK messages (which version's label an
 * encrypted data key names; decryption with and without allowed keys),
 * blob headers, and a long-lived process that must see a key disabled by
 * someone else. The token comes from HSMWRAP_MODULE, HSMWRAP_TOKEN and
 * HSMWRAP_PIN_SOURCE, as with-token.sh sets them.
 *
 *   keymeta-check env-encrypt KEY IN OUT
 *   keymeta-check env-decrypt KEY|- IN OUT   (- : no allowed keys, find by name)
 *   keymeta-check env-names IN               (EDK key names, one a line)
 *   keymeta-check blob-label FILE            (label and key id of a blob)
 *   keymeta-check hold KEY COMMAND           (datakey, COMMAND, wait, datakey again)
 *
 * Prints the hw_err name on failure and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hsmwrap.h"

static int fail(const char *what, hw_err e)
{
	printf("%s\n", hw_errname(e));
	fprintf(stderr, "keymeta-check: %s: %s (%s)\n", what, hw_strerror(e), hw_last_detail());
	return 1;
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 20, n;

	if (!f)
		return -1;
	*buf = malloc(cap);
	n = *buf ? fread(*buf, 1, cap, f) : 0;
	fclose(f);
	if (!*buf)
		return -1;
	*len = n;
	return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(buf, 1, len, f) != len) {
		if (f)
			fclose(f);
		return -1;
	}
	return fclose(f);
}

static hw_err open_ctx(hw_ctx **ctx)
{
	hw_err e = hw_ctx_new(ctx);

	if (!e && getenv("HSMWRAP_MODULE"))
		e = hw_ctx_set_module(*ctx, getenv("HSMWRAP_MODULE"));
	if (!e && getenv("HSMWRAP_TOKEN"))
		e = hw_ctx_set_token(*ctx, getenv("HSMWRAP_TOKEN"));
	if (!e && getenv("HSMWRAP_PIN_SOURCE"))
		e = hw_ctx_set_pin_source(*ctx, getenv("HSMWRAP_PIN_SOURCE"));
	if (!e)
		e = hw_ctx_open(*ctx);
	return e;
}

int main(int argc, char **argv)
{
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	uint8_t *in = NULL, *out = NULL;
	size_t inlen = 0, outlen = 0;
	hw_err e;
	int rc = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: see the comment at the top of keymeta-check.c\n");
		return 2;
	}
	if (strcmp(argv[1], "env-names") == 0 || strcmp(argv[1], "blob-label") == 0) {
		if (read_file(argv[2], &in, &inlen) != 0)
			return 2;
		if (argv[1][0] == 'e') {
			hw_envelope_info *info = NULL;
			if ((e = hw_envelope_inspect(in, inlen, &info)))
				return fail("inspect", e);
			for (size_t i = 0; i < info->nedks; i++)
				printf("%s\n", info->edks[i].key_name ? info->edks[i].key_name : "?");
			hw_envelope_info_free(info);
		} else {
			hw_blob_info bi;
			if ((e = hw_blob_inspect(in, inlen, &bi)))
				return fail("inspect", e);
			printf("%s %s\n", bi.key_label, bi.key_id_hex);
		}
		free(in);
		return 0;
	}
	if (argc < 4)
		return 2;
	if ((e = open_ctx(&ctx)))
		return fail("opening the token", e);
	if (strcmp(argv[2], "-") != 0 && (e = hw_key_find(ctx, argv[2], &key))) {
		rc = fail("finding the key", e);
		goto out;
	}
	if (strcmp(argv[1], "hold") == 0) {
		uint8_t dk[HW_DATAKEY_LEN];
		uint8_t *w = NULL;
		size_t wl = 0;

		if ((e = hw_datakey_generate(key, NULL, dk, &w, &wl))) {
			rc = fail("first use", e);
			goto out;
		}
		hw_free(w);
		w = NULL;
		if (system(argv[3]) != 0) {
			fprintf(stderr, "keymeta-check: '%s' failed\n", argv[3]);
			rc = 2;
			goto out;
		}
		/* The library promises to see a change within a second. */
		usleep(1200 * 1000);
		if ((e = hw_datakey_generate(key, NULL, dk, &w, &wl))) {
			rc = fail("second use", e);
			goto out;
		}
		hw_free(w);
		printf("HW_OK\n");
		goto out;
	}
	if (argc < 5 || read_file(argv[3], &in, &inlen) != 0) {
		rc = 2;
		goto out;
	}
	if (strcmp(argv[1], "env-encrypt") == 0) {
		e = hw_envelope_encrypt(NULL, &key, 1, NULL, in, inlen, &out, &outlen);
	} else if (strcmp(argv[1], "env-decrypt") == 0) {
		e = hw_envelope_decrypt(ctx, NULL, key ? &key : NULL, key ? 1 : 0, NULL, in, inlen,
		                        &out, &outlen, NULL);
	} else {
		rc = 2;
		goto out;
	}
	if (e) {
		rc = fail(argv[1], e);
		goto out;
	}
	if (write_file(argv[4], out, outlen) != 0) {
		rc = 2;
		goto out;
	}
	printf("HW_OK\n");
out:
	free(in);
	if (out)
		hw_free_secret(out, outlen);
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}
