/*
 * cmd-provider.c - `key export-ref`: a key-reference PEM file for the
 * hsmwrap OpenSSL provider. The file holds only the key's pkcs11: URI
 * (base64 in a HSMWRAP KEY REFERENCE block): no key material, no PIN, so
 * it is written with the ordinary umask mode, like a certificate.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "cli.h"

/* Also in cli.h once the command is in the table; repeated so this file
 * builds on its own (-Wmissing-prototypes). */
int cmd_key_export_ref(struct cli *cli, const struct cli_args *a);

/* Must match src/provider/provider.h. */
#define REF_PEM_LABEL "HSMWRAP KEY REFERENCE"

int cmd_key_export_ref(struct cli *cli, const struct cli_args *a)
{
	hw_key_info ki;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	BIO *mem = NULL;
	char *pem = NULL;
	long pemlen;
	hw_err err;
	int rc;

	if ((rc = cli_open_key(cli, a->pos[0], &ctx, &key)))
		goto out;
	if ((err = hw_key_info_get(key, &ki))) {
		rc = cli_fail(cli, err, "reading the key's attributes");
		goto out;
	}
	/* Only key pairs can stand behind a TLS or CA private key. */
	if (!hw_key_type_is_rsa(ki.type) && !hw_key_type_is_ec(ki.type) &&
	    !hw_key_type_is_eddsa(ki.type)) {
		rc = cli_failf(cli, HW_ERR_KEY_PURPOSE, "exporting a key reference",
		               "'%s' is a %s key; only RSA, EC and EdDSA key pairs can be referenced",
		               ki.label, ki.type_name);
		goto out;
	}
	if (!ki.uri[0]) {
		rc = cli_failf(cli, HW_ERR_HSM, "exporting a key reference",
		               "no pkcs11: URI for key '%s'", ki.label);
		goto out;
	}
	mem = BIO_new(BIO_s_mem());
	if (!mem || PEM_write_bio(mem, REF_PEM_LABEL, "", (const unsigned char *)ki.uri,
	                          (long)strlen(ki.uri)) <= 0 ||
	    (pemlen = BIO_get_mem_data(mem, &pem)) <= 0) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "exporting a key reference", "PEM encoding failed");
		goto out;
	}
	{
		const struct out_spec o = { cli_opt(a, "output"), pem, (size_t)pemlen, 0 };

		err = outfile_write_all(&o, 1);
	}
	if (err) {
		rc = cli_fail_util(cli, err, "writing the key reference");
		goto out;
	}
	if (cli->json) {
		cj_str(cli->out, "key", ki.label);
		cj_str(cli->out, "uri", ki.uri);
		cj_str(cli->out, "output", cli_opt(a, "output"));
	} else {
		printf("Wrote a reference to key '%s' (%s) into %s.\nURI: %s\n", ki.label,
		       ki.type_name, cli_opt(a, "output"), ki.uri);
	}
out:
	BIO_free(mem);
	cli_close_key(ctx, key);
	return rc;
}
