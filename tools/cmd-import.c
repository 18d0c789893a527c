/*
 * cmd-import.c - `key import-params`, `key import` (BYOK) and
 * `key import-components` (custodian components).
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"

#define KEY_BYTES 32
/* A typed component line: 64 hex digits and the spaces between groups. */
#define COMPONENT_LINE_MAX 256

static int parse_type_purpose(struct cli *cli, const struct cli_args *a, hw_key_type *type,
                              hw_purpose *purpose)
{
	const char *ts = cli_opt(a, "type"), *ps = cli_opt(a, "purpose");

	*type = HW_KEY_AES256;
	*purpose = HW_PURPOSE_ENVELOPE;
	if (ts && (hw_key_type_parse(ts, type) || *type != HW_KEY_AES256))
		return cli_usage(cli, a->cmd, "--type '%s': only aes256 keys can be imported", ts);
	if (ps && (hw_purpose_parse(ps, purpose) ||
	           (*purpose != HW_PURPOSE_ENVELOPE && *purpose != HW_PURPOSE_KEYWRAP)))
		return cli_usage(cli, a->cmd, "--purpose '%s': envelope or keywrap", ps);
	return 0;
}

/* The new key's transcript lines; also checks it is not extractable. */
static int new_key_lines(struct cli *cli, hw_key *key, hw_key_info *ki, const char *kcv)
{
	hw_err err = hw_key_info_get(key, ki);

	if (err)
		return cli_fail(cli, err, "reading the imported key's attributes");
	cli_transcript_line(cli, "Key label:", "%s", ki->label);
	cli_transcript_line(cli, "Key type / purpose:", "%s / %s", ki->type_name,
	                    hw_purpose_name(ki->purpose));
	cli_transcript_line(cli, "Key ID:", "%s", ki->id_hex);
	cli_transcript_line(cli, "Key URI:", "%s", ki->uri);
	cli_transcript_line(cli, "Sensitive / extractable:", "%s / %s",
	                    ki->sensitive == 1 ? "yes" : "NO", ki->extractable == 0 ? "no" : "YES");
	/* The token's CKA_CHECK_VALUE where it has one (tokens that leave it
	 * empty on unwrapped keys: computed in the token at import). */
	if (!kcv[0])
		kcv = ki->kcv;
	if (strcmp(ki->kcv_alg, "unavailable") == 0 && kcv == ki->kcv)
		kcv = "";
	snprintf(ki->kcv, sizeof(ki->kcv), "%s", kcv);
	cli_transcript_line(cli, "KCV (AES-ECB of zero block):", "%s",
	                    ki->kcv[0] ? ki->kcv : "unavailable");
	return 0;
}

/* ------------------------------------------------------------------ */

int cmd_key_import_params(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "label");
	const char *out = cli_opt(a, "output") ? cli_opt(a, "output") : "import-pub.pem";
	uint8_t *der = NULL, md[32];
	unsigned mdlen = 0;
	size_t der_len = 0;
	char *pem = NULL, fp[65];
	long pem_len = 0;
	BIO *bio = NULL;
	EVP_PKEY *pk = NULL;
	const unsigned char *p;
	hw_key_info ki;
	hw_key *key = NULL;
	hw_ctx *ctx = NULL;
	hw_err err;
	int rc;

	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	if ((err = hw_import_key_generate(ctx, label, &key))) {
		rc = cli_fail(cli, err, "creating the import key");
		goto out;
	}
	if ((err = hw_key_public_der(key, &der, &der_len)) || (err = hw_key_info_get(key, &ki))) {
		rc = cli_fail(cli, err, "reading the import key");
		goto out;
	}
	p = der;
	bio = BIO_new(BIO_s_mem());
	if (!bio || !(pk = d2i_PUBKEY(NULL, &p, (long)der_len)) || !PEM_write_bio_PUBKEY(bio, pk) ||
	    (pem_len = BIO_get_mem_data(bio, &pem)) <= 0) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "encoding the public key", "PEM encoding failed");
		goto out;
	}
	{
		const struct out_spec o = { out, pem, (size_t)pem_len, 0 };

		if ((err = outfile_write_all(&o, 1))) {
			rc = cli_fail_util(cli, err, "writing the import public key");
			goto out;
		}
	}
	EVP_Digest(der, der_len, md, &mdlen, EVP_sha256(), NULL);
	util_hex(md, 32, fp);
	cli_transcript_begin(cli, "BYOK import key (key import-params)");
	cli_transcript_line(cli, "Import key label:", "%s", ki.label);
	cli_transcript_line(cli, "Import key URI:", "%s", ki.uri);
	cli_transcript_line(cli, "Type:", "RSA-3072, private half unwrap-only, not extractable");
	cli_transcript_line(cli, "Public key file:", "%s", out);
	cli_transcript_line(cli, "SHA-256 of SPKI:", "%s", fp);
	cli_transcript_line(cli, "Owner wraps with:", "openssl pkeyutl -encrypt -pubin -inkey %s "
	                    "-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 "
	                    "-pkeyopt rsa_mgf1_md:sha256 -in key.bin -out key.wrapped", out);
	cli_transcript_end(cli);
out:
	BIO_free(bio);
	EVP_PKEY_free(pk);
	hw_free(der);
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */

int cmd_key_import(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "label"), *ps = cli_opt(a, "padding");
	hw_import_padding padding = HW_IMPORT_OAEP_SHA256;
	hw_key_type type;
	hw_purpose purpose;
	uint8_t *blob = NULL;
	size_t bloblen = 0;
	hw_key *ikey = NULL, *key = NULL;
	char kcv[7] = "";
	hw_key_info ki;
	hw_ctx *ctx = NULL;
	char what[300];
	hw_err err;
	int rc;

	if ((rc = parse_type_purpose(cli, a, &type, &purpose)))
		return rc;
	if (ps && hw_import_padding_parse(ps, &padding))
		return cli_usage(cli, a->cmd, "--padding '%s': oaep-sha256, oaep-sha1, rsa-aes-kwp "
		                 "or rsa-aes-kwp-sha1", ps);
	if ((err = util_read_file(cli_opt(a, "wrapped"), 8192, 0, &blob, &bloblen)))
		return cli_fail_util(cli, err, "reading the wrapped key");
	if (bloblen == 0) {
		rc = cli_failf(cli, HW_ERR_FORMAT, "reading the wrapped key", "%s is empty",
		               cli_opt(a, "wrapped"));
		goto out;
	}
	if ((rc = cli_open_key(cli, cli_opt(a, "import-key"), &ctx, &ikey)))
		goto out;
	err = hw_key_import_wrapped(ctx, ikey, label, type, purpose, padding, blob, bloblen, &key,
	                            kcv);
	if (err) {
		snprintf(what, sizeof(what), "importing key '%s'", label);
		rc = cli_fail(cli, err, what);
		goto out;
	}
	cli_transcript_begin(cli, "BYOK key import (key import)");
	cli_transcript_line(cli, "Import key:", "%s", hw_key_label(ikey));
	cli_transcript_line(cli, "Wrapping:", "%s",
	                    padding == HW_IMPORT_OAEP_SHA256 ? "RSA-OAEP, SHA-256, MGF1-SHA-256"
	                    : padding == HW_IMPORT_OAEP_SHA1 ? "RSA-OAEP, SHA-1, MGF1-SHA-1"
	                    : padding == HW_IMPORT_RSA_AES_KWP
	                    ? "RSA-AES: RSA-OAEP-SHA-256 of a temporary AES key + AES-KWP "
	                      "(two C_UnwrapKey calls inside the token)"
	                    : "RSA-AES: RSA-OAEP-SHA-1 of a temporary AES key + AES-KWP "
	                      "(two C_UnwrapKey calls inside the token)");
	cli_transcript_line(cli, "Wrapped key file:", "%s", cli_opt(a, "wrapped"));
	if (!(rc = new_key_lines(cli, key, &ki, kcv)))
		cli_transcript_end(cli);
out:
	util_free(blob, bloblen, 0);
	hw_key_free(key);
	cli_close_key(ctx, ikey);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Custodian components                                                */

/*
 * Hex digits of a component, spaces and a final newline allowed (paper
 * forms print them in groups). Exactly KEY_BYTES bytes, else -1.
 */
static int parse_component(const char *s, size_t len, uint8_t out[KEY_BYTES])
{
	size_t nd = 0;
	unsigned hi = 0;

	for (size_t i = 0; i < len; i++) {
		int c = (unsigned char)s[i], v;

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return -1;
		if (nd >= 2 * KEY_BYTES)
			return -1;
		if (nd % 2 == 0)
			hi = (unsigned)v;
		else
			out[nd / 2] = (uint8_t)(hi << 4 | (unsigned)v);
		nd++;
	}
	hi = 0;
	return nd == 2 * KEY_BYTES ? 0 : -1;
}

/* A y/n answer from /dev/tty (echoed: it is not secret). */
static int tty_confirm(const char *question)
{
	FILE *tty = fopen("/dev/tty", "r+");
	char line[16];
	int yes = 0;

	if (!tty)
		return -1;
	fprintf(tty, "%s [y/N] ", question);
	fflush(tty);
	if (fgets(line, sizeof(line), tty))
		yes = line[0] == 'y' || line[0] == 'Y';
	fclose(tty);
	return yes;
}

int cmd_key_import_components(struct cli *cli, const struct cli_args *a)
{
	const char *label = cli_opt(a, "label"), *cs = cli_opt(a, "count");
	size_t nfiles = 0;
	const char *const *files = cli_opt_all(a, "component-file", &nfiles);
	hw_key_type type;
	hw_purpose purpose;
	uint8_t (*comp)[KEY_BYTES] = NULL;
	uint8_t *combined = NULL, kcv[3], any;
	char kcvhex[7], hostkcv[7], tokkcv[7] = "", *end = NULL, what[300];
	unsigned long count;
	hw_key *key = NULL;
	hw_key_info ki;
	hw_ctx *ctx = NULL;
	hw_err err;
	int rc;

	if ((rc = parse_type_purpose(cli, a, &type, &purpose)))
		return rc;
	count = strtoul(cs, &end, 10);
	if (!*cs || *end || count < 2 || count > 16)
		return cli_usage(cli, a->cmd, "--count '%s': 2 to 16 custodians", cs);
	if (nfiles && nfiles != count)
		return cli_usage(cli, a->cmd, "%zu --component-file options for --count %lu: give "
		                 "one per custodian, or none to be prompted", nfiles, count);
	/* Opened first: a wrong PIN or taken label should not waste the
	 * custodians' time. */
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	{
		hw_key *existing = NULL;

		err = hw_key_find(ctx, label, &existing);
		hw_key_free(existing);
		if (err == HW_OK || err == HW_ERR_KEY_AMBIGUOUS) {
			rc = cli_failf(cli, HW_ERR_KEY_EXISTS, "importing components",
			               "a key labelled '%s' exists; nothing was imported", label);
			goto out;
		}
	}
	/* Key material: out of core dumps and swap (hw_secmem, zeroed pages). */
	comp = hw_secmem_alloc(count * KEY_BYTES);
	combined = hw_secmem_alloc(KEY_BYTES);
	if (!comp || !combined) {
		rc = cli_failf(cli, HW_ERR_NOMEM, "importing components", "out of memory");
		goto out;
	}
	cli_transcript_begin(cli, "Key import from custodian components (key import-components)");
	cli_transcript_line(cli, "New key label:", "%s", label);
	cli_transcript_line(cli, "Custodians:", "%lu", count);
	cli_transcript_line(cli, "Combination:", "XOR in host memory (no XOR derivation in the "
	                    "token); weaker than combining inside the HSM");
	for (unsigned long i = 0; i < count; i++) {
		if (nfiles) {
			uint8_t *buf = NULL;
			size_t len = 0;

			if ((err = util_read_file(files[i], 4096, 1, &buf, &len))) {
				rc = cli_fail_util(cli, err, "reading a component");
				goto out;
			}
			rc = parse_component((const char *)buf, len, comp[i]);
			util_free(buf, len, 1);
			if (rc) {
				rc = cli_failf(cli, HW_ERR_FORMAT, "reading a component", "%s: a component "
				               "is %d hex digits (spaces allowed); nothing was imported",
				               files[i], 2 * KEY_BYTES);
				goto out;
			}
		} else {
			char *buf = hw_secmem_alloc(COMPONENT_LINE_MAX);
			size_t len = 0;

			snprintf(what, sizeof(what), "component of custodian %lu of %lu (%d hex digits)",
			         i + 1, count, 2 * KEY_BYTES);
			err = buf ? util_pin_prompt(what, buf, COMPONENT_LINE_MAX, &len, &cli->prompt)
			          : HW_ERR_NOMEM;
			if (!err && parse_component(buf, len, comp[i]))
				err = HW_ERR_FORMAT;
			hw_secmem_free(buf);
			if (err) {
				rc = cli_failf(cli, err, "reading a component", "custodian %lu: %s; nothing "
				               "was imported", i + 1, err == HW_ERR_FORMAT
				               ? "not 64 hex digits" : cli->prompt.note[0]
				               ? cli->prompt.note : "prompt cancelled");
				goto out;
			}
		}
		any = 0;
		for (size_t b = 0; b < KEY_BYTES; b++)
			any |= comp[i][b];
		for (unsigned long j = 0; j < i && any; j++)
			if (CRYPTO_memcmp(comp[i], comp[j], KEY_BYTES) == 0) {
				rc = cli_failf(cli, HW_ERR_INVALID_ARG, "checking components", "custodian "
				               "%lu gave the same component as custodian %lu; nothing was "
				               "imported", i + 1, j + 1);
				goto out;
			}
		if (!any) {
			rc = cli_failf(cli, HW_ERR_INVALID_ARG, "checking components", "custodian %lu's "
			               "component is all zeros; nothing was imported", i + 1);
			goto out;
		}
		if ((err = hw_kcv_aes(comp[i], KEY_BYTES, kcv))) {
			rc = cli_fail(cli, err, "component KCV");
			goto out;
		}
		util_hex(kcv, 3, kcvhex);
		snprintf(what, sizeof(what), "Component %lu KCV:", i + 1);
		cli_transcript_line(cli, what, "%s", kcvhex);
		if (!nfiles) {
			char q[200];
			int ok;

			snprintf(q, sizeof(q), "Custodian %lu: the component's KCV is %s. Does it match "
			         "your record?", i + 1, kcvhex);
			ok = tty_confirm(q);
			if (ok != 1) {
				rc = cli_failf(cli, HW_ERR_CANCELLED, "confirming a component", "custodian "
				               "%lu did not confirm KCV %s; nothing was imported", i + 1,
				               kcvhex);
				goto out;
			}
		}
		/* Kept (wiped at the end) so later ones can be checked for duplicates. */
		for (size_t b = 0; b < KEY_BYTES; b++)
			combined[b] ^= comp[i][b];
	}
	any = 0;
	for (size_t b = 0; b < KEY_BYTES; b++)
		any |= combined[b];
	if (!any) {
		rc = cli_failf(cli, HW_ERR_INVALID_ARG, "combining components", "the components "
		               "XOR to zero; nothing was imported");
		goto out;
	}
	if ((err = hw_kcv_aes(combined, KEY_BYTES, kcv))) {
		rc = cli_fail(cli, err, "key KCV");
		goto out;
	}
	util_hex(kcv, 3, hostkcv);
	err = hw_key_import_value(ctx, label, type, purpose, combined, KEY_BYTES, &key, tokkcv);
	OPENSSL_cleanse(combined, KEY_BYTES);
	if (err) {
		snprintf(what, sizeof(what), "importing key '%s'", label);
		rc = cli_fail(cli, err, what);
		goto out;
	}
	if ((rc = new_key_lines(cli, key, &ki, tokkcv)))
		goto out;
	cli_transcript_line(cli, "KCV computed on host:", "%s", hostkcv);
	if (strcmp(ki.kcv, hostkcv) != 0) {
		/* The token holds something else than what the custodians gave. */
		hw_err derr = hw_key_destroy(key);

		if (derr)
			cli_warn_err("destroying the mismatching key", derr);
		rc = cli_failf(cli, HW_ERR_INTEGRITY, "importing components", "the token's KCV %s "
		               "differs from the host's %s; the key was destroyed", ki.kcv, hostkcv);
		goto out;
	}
	cli_transcript_end(cli);
out:
	hw_secmem_free(combined);
	OPENSSL_cleanse(kcv, sizeof(kcv));
	hw_secmem_free(comp);
	hw_key_free(key);
	hw_ctx_free(ctx);
	return rc;
}
