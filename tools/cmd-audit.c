/*
 * cmd-audit.c - the audit hook of every command, and `audit init`,
 * `audit verify`, `audit show`, `audit digest`.
 *
 * Order of the hook: the log is opened (and its ends checked) before the
 * command runs, so a command that could not be recorded is never run; the
 * record is appended after it, under the log's lock, with its result. If
 * that append fails anyway (disk full between the two), the command's
 * action has happened: the exit status says the run failed, and the
 * message says that the action was done but not recorded.
 *
 * The lock is not held while the command runs: a ceremony waits for
 * custodians and witnesses, and every other audited command on the host
 * would wait with it. Holding the open descriptor is enough to know the
 * log is writable; the chain is read again under the lock at append time.
 */
#include "config.h"

#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"

int cli_audit_is_ceremony(const struct cli_cmd *c)
{
	return c && (c->flags & CLI_CMD_CEREMONY) != 0;
}

static void add_context(const struct cli_args *a, hw_ectx *ec);

/* The record of command a: who, what, which key, which context. */
static void fill_event(struct cli *cli, const struct cli_args *a, hw_audit_event *ev,
                       hw_ectx **ec)
{
	const struct cli_cmd *c = a->cmd;
	const char *k;

	memset(ev, 0, sizeof(*ev));
	ev->action = c->name;
	ev->token = cli->used_token[0] ? cli->used_token : cli_redact(cli->token);
	k = cli_opt(a, "key");
	if (!k)
		k = cli_opt(a, "label");
	if (!k && a->npos && c->args && strstr(c->args, "KEY"))
		k = a->pos[0];
	if (k && strncmp(k, "id:", 3) == 0)
		ev->key_id_hex = k + 3;
	else
		ev->key_label = cli_redact(k);
	*ec = NULL;
	if (hw_ectx_new(ec) == HW_OK)
		add_context(a, *ec);
	ev->context = *ec;
}

static int audit_refused(struct cli *cli, hw_err err, const char *what)
{
	cli->force_exit = EXIT_AUDIT;
	cli_fail(cli, err, what);
	cli->force_exit = 0;
	return EXIT_AUDIT;
}

int cli_audit_begin(struct cli *cli, const struct cli_args *a, hw_audit **out)
{
	const struct cli_cmd *c = a->cmd;
	hw_audit_event ev;
	hw_ectx *ec;
	hw_err err;

	*out = NULL;
	cli->audit_attempt = 0;
	if (!cli->audit_log || (c->flags & (CLI_CMD_NO_AUDIT | CLI_CMD_NO_SETTINGS)))
		return 0;
	err = hw_audit_open(cli->audit_log, out);
	if (err)
		return cli_fail(cli, err, "opening the audit log (nothing was done: commands "
		                "do not run un-audited)");
	hw_audit_set_digest_every(*out, cli->audit_every);
	/* Fail closed: no record of the attempt, no action. */
	fill_event(cli, a, &ev, &ec);
	err = hw_audit_attempt(*out, &ev, &cli->audit_attempt);
	hw_ectx_free(ec);
	if (!err)
		return 0;
	cli->audit_attempt = 0;
	if (cli->audit_fail_open) {
		cli_warn_err("recording the attempt in the audit log (going on: audit_fail_open)",
		             err);
		return 0;
	}
	hw_audit_close(*out);
	*out = NULL;
	return audit_refused(cli, err, "recording the attempt in the audit log (nothing was "
	                     "done; --audit-fail-open would run it un-audited)");
}

/* The signing key of the log's digests, on the configured token. */
static int open_signer(struct cli *cli, hw_audit *log, const char *label,
                       hw_ctx **ctx, hw_key **key)
{
	hw_err err;
	int rc;

	if (!label)
		label = cli->audit_key ? cli->audit_key : hw_audit_key_label(log);
	if ((rc = cli_open_key(cli, label, ctx, key)))
		return rc;
	err = hw_audit_set_signer(log, *key);
	if (err)
		return cli_fail(cli, err, "audit signing key");
	return 0;
}

static void add_context(const struct cli_args *a, hw_ectx *ec)
{
	const char *const *kv;
	size_t n;

	kv = cli_opt_all(a, "context", &n);
	/* A malformed pair made the command fail already; it is left out here. */
	for (size_t i = 0; i < n; i++)
		if (hw_ectx_add_kv(ec, kv[i]) != HW_OK)
			continue;
}

int cli_audit_end(struct cli *cli, const struct cli_args *a, hw_audit *log, int rc)
{
	const struct cli_cmd *c = a->cmd;
	hw_audit_event ev;
	hw_ectx *ec = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc2 = 0;

	if (!log)
		return rc;
	fill_event(cli, a, &ev, &ec);
	ev.result = rc == 0 ? HW_OK : cli->last_err ? cli->last_err : HW_ERR_INVALID_ARG;
	err = cli->audit_attempt ? hw_audit_outcome(log, &ev, cli->audit_attempt)
	                         : hw_audit_append(log, &ev);
	hw_ectx_free(ec);
	if (err) {
		rc2 = cli_fail(cli, err, !cli->audit_attempt && rc == 0
		               ? "recording in the audit log (the action WAS done but is not recorded)"
		               : cli->audit_attempt ? "recording the outcome in the audit log (its attempt "
		               "is recorded)" : "recording in the audit log");
		goto out;
	}
	/* Ceremonies end with a signed digest; so does every N-th record. */
	if (cli_audit_is_ceremony(c) || hw_audit_digest_due(log)) {
		if ((rc2 = open_signer(cli, log, NULL, &ctx, &key)))
			goto out;
		err = hw_audit_digest(log, cli_audit_is_ceremony(c) ? "ceremony" : "periodic");
		if (err)
			rc2 = cli_fail(cli, err, "signing the audit digest (the action was done and "
			               "recorded)");
	}
out:
	cli_close_key(ctx, key);
	hw_audit_close(log);
	return rc ? rc : rc2;
}

/* ------------------------------------------------------------------ */

static const char *log_path(struct cli *cli, const struct cli_args *a)
{
	return a->npos ? a->pos[0] : cli->audit_log;
}

static int pem_of(struct cli *cli, const uint8_t *der, size_t len, char **pem, size_t *pemlen)
{
	const uint8_t *p = der;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)len);
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long n;
	int rc = 0;

	if (!pk || !b || PEM_write_bio_PUBKEY(b, pk) != 1 || (n = BIO_get_mem_data(b, &data)) <= 0 ||
	    !(*pem = malloc((size_t)n))) {
		rc = cli_failf(cli, HW_ERR_CRYPTO, "writing public key", "PEM encoding failed");
	} else {
		memcpy(*pem, data, (size_t)n);
		*pemlen = (size_t)n;
	}
	BIO_free(b);
	EVP_PKEY_free(pk);
	return rc;
}

int cmd_audit_init(struct cli *cli, const struct cli_args *a)
{
	const char *path = log_path(cli, a), *label = cli_opt(a, "key");
	const char *curve = cli_opt(a, "curve"), *pub_out = cli_opt(a, "pubkey-out");
	hw_key_type type = HW_KEY_EC_P256;
	hw_audit_event ev;
	hw_audit *log = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_key_info ki;
	uint8_t *der = NULL;
	char *pem = NULL;
	size_t derlen = 0, pemlen = 0;
	hw_err err;
	int rc;

	if (!path)
		return cli_usage(cli, a->cmd, "no LOG given and no --audit-log configured");
	if (curve && strcmp(curve, "p384") == 0)
		type = HW_KEY_EC_P384;
	else if (curve && strcmp(curve, "p256") != 0)
		return cli_usage(cli, a->cmd, "unknown --curve '%s' (p256 or p384)", curve);
	if (access(path, F_OK) == 0)
		return cli_failf(cli, HW_ERR_IO, "starting audit log",
		                 "%s exists; a log is started once", path);
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)))
		return rc;
	if (cli_flag(a, "existing"))
		err = hw_key_find(ctx, label, &key);
	else
		err = hw_key_generate(ctx, label, type, HW_PURPOSE_SIGN, &key);
	if (err) {
		rc = cli_fail(cli, err, cli_flag(a, "existing") ? "finding the audit key"
		              : "creating the audit key");
		goto out;
	}
	if ((err = hw_key_info_get(key, &ki)) || (err = hw_key_public_der(key, &der, &derlen))) {
		rc = cli_fail(cli, err, "reading the audit key");
		goto out;
	}
	if (pub_out) {
		struct out_spec o = { pub_out, NULL, 0, 0 };

		if ((rc = pem_of(cli, der, derlen, &pem, &pemlen)))
			goto out;
		o.data = pem;
		o.len = pemlen;
		if ((err = outfile_write_all(&o, 1))) {
			rc = cli_fail_util(cli, err, "writing the audit public key");
			goto out;
		}
	}
	err = hw_audit_create(path, key, &log);
	if (!err) {
		memset(&ev, 0, sizeof(ev));
		ev.action = "audit init";
		ev.ctx = ctx;
		ev.key = key;
		err = hw_audit_append(log, &ev);
	}
	if (!err)
		err = hw_audit_set_signer(log, key);
	if (!err)
		err = hw_audit_digest(log, "ceremony");
	if (err) {
		rc = cli_fail(cli, err, "starting the audit log");
		goto out;
	}
	cli_transcript_begin(cli, "audit init");
	cli_transcript_line(cli, "Audit log:", "%s", path);
	cli_transcript_line(cli, "Log id:", "%s", hw_audit_log_id(log));
	cli_transcript_line(cli, "Audit key:", "%s (%s, sign only, %s)", ki.label, ki.type_name,
	                    ki.extractable == 0 ? "not extractable" : "EXTRACTABLE");
	cli_transcript_line(cli, "Key URI:", "%s", ki.uri);
	cli_transcript_line(cli, "Key fingerprint:", "SHA-256 of SubjectPublicKeyInfo %s", ki.kcv);
	if (pub_out)
		cli_transcript_line(cli, "Public key file:", "%s", pub_out);
	cli_transcript_end(cli);
	if (cli->json) {
		cj_str(cli->out, "log", path);
		cj_str(cli->out, "log_id", hw_audit_log_id(log));
		cj_str(cli->out, "key", ki.label);
		cj_str(cli->out, "fingerprint", ki.kcv);
	}
	rc = 0;
out:
	if (rc && pub_out && pem && !log)
		(void)unlink(pub_out);
	if (rc && key && !cli_flag(a, "existing") && !log) {
		/* No half-made ceremony: a key nobody can use as audit key is removed. */
		if (hw_key_destroy(key))
			cli_warn_err("removing the new audit key", hw_last_ckrv() ? HW_ERR_HSM : HW_ERR_IO);
	}
	hw_audit_close(log);
	free(der);
	free(pem);
	cli_close_key(ctx, key);
	return rc;
}

/* The public key of the log's audit key: from a PEM file or the HSM. */
static int verify_key(struct cli *cli, const struct cli_args *a, const char *path,
                      uint8_t **der, size_t *derlen)
{
	const char *pem = cli_opt(a, "pubkey"), *label = cli_opt(a, "key");
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc;

	if (pem && label)
		return cli_usage(cli, a->cmd, "--pubkey and --key are alternatives");
	if (pem) {
		BIO *b = BIO_new_file(pem, "r");
		EVP_PKEY *pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
		uint8_t *p = NULL;
		int n = pk ? i2d_PUBKEY(pk, &p) : -1;

		BIO_free(b);
		EVP_PKEY_free(pk);
		if (n <= 0)
			return cli_failf(cli, b ? HW_ERR_FORMAT : HW_ERR_IO, "reading the audit public key",
			                 "%s: not a PEM public key", pem);
		*der = malloc((size_t)n);
		if (*der)
			memcpy(*der, p, (size_t)n);
		OPENSSL_free(p);
		*derlen = (size_t)n;
		return *der ? 0 : cli_failf(cli, HW_ERR_NOMEM, "reading the audit public key", "%s", pem);
	}
	if (!label)
		label = cli->audit_key;
	if (!label) {
		/* The genesis names it; its fingerprint is checked by the verifier. */
		uint8_t *buf = NULL, *nl;
		size_t len = 0;
		hw_audit_entry *en = NULL;
		FILE *f = fopen(path, "rb");
		char line[70000];

		if (!f)
			return cli_failf(cli, HW_ERR_IO, "reading audit log", "%s: %s", path,
			                 strerror(errno));
		len = fread(line, 1, sizeof(line), f);
		fclose(f);
		buf = (uint8_t *)line;
		nl = memchr(buf, '\n', len);
		if (!nl || hw_audit_entry_parse(buf, (size_t)(nl - buf), &en) ||
		    strcmp(en->type, "genesis") != 0 || !en->key_label) {
			hw_audit_entry_free(en);
			return cli_failf(cli, HW_ERR_INTEGRITY, "reading audit log",
			                 "%s: line 1 is not a genesis record naming an audit key", path);
		}
		rc = cli_open_key(cli, en->key_label, &ctx, &key);
		hw_audit_entry_free(en);
	} else {
		rc = cli_open_key(cli, label, &ctx, &key);
	}
	if (!rc && (err = hw_key_public_der(key, der, derlen)))
		rc = cli_fail(cli, err, "reading the audit key's public key");
	cli_close_key(ctx, key);
	return rc;
}

int cmd_audit_verify(struct cli *cli, const struct cli_args *a)
{
	const char *path = log_path(cli, a);
	hw_audit_report rep;
	uint8_t *der = NULL;
	size_t derlen = 0;
	hw_err err;
	int rc;

	if (!path)
		return cli_usage(cli, a->cmd, "no LOG given and no --audit-log configured");
	if ((rc = verify_key(cli, a, path, &der, &derlen)))
		return rc;
	err = hw_audit_verify_file(path, der, derlen, &rep);
	free(der);
	if (err == HW_ERR_INTEGRITY) {
		char what[200];

		if (rep.bad_seq_known)
			snprintf(what, sizeof(what), "audit log %s: first bad record: line %llu (seq %llu)",
			         path, (unsigned long long)rep.bad_line, (unsigned long long)rep.bad_seq);
		else
			snprintf(what, sizeof(what), "audit log %s: first bad record: line %llu", path,
			         (unsigned long long)rep.bad_line);
		if (cli->json && !cli->json_sent) {
			/* The error document, with the location for scripts. */
			json_t *doc = json_object();

			cj_bool(doc, "ok", 0);
			cj_str(doc, "error", hw_errname(err));
			cj_uint(doc, "bad_line", rep.bad_line);
			if (rep.bad_seq_known)
				cj_uint(doc, "bad_seq", rep.bad_seq);
			else
				cj_null(doc, "bad_seq");
			cj_str(doc, "reason", rep.reason);
			cj_uint(doc, "exit", EXIT_INTEGRITY);
			cj_print(stdout, doc);
			json_decref(doc);
			cli->json_sent = 1;
		}
		return cli_failf(cli, err, what, "%s", rep.reason);
	}
	if (err)
		return cli_fail(cli, err, "verifying audit log");
	if (rep.uncovered)
		fprintf(stderr, "%s: %s: warning: %llu record(s) after the last signed digest are "
		        "not covered (run `hsmwrap audit digest`)\n", PROG, path,
		        (unsigned long long)rep.uncovered);
	/* Still running, or stopped after acting (crash, full disk): worth a look. */
	if (rep.unfinished)
		fprintf(stderr, "%s: %s: warning: %llu attempt(s) have no outcome record, the first "
		        "at seq %llu (a command still running, or one that stopped after it began)\n",
		        PROG, path, (unsigned long long)rep.unfinished,
		        (unsigned long long)rep.unfinished_seq);
	if (cli->json) {
		cj_str(cli->out, "log", path);
		cj_str(cli->out, "log_id", rep.log_id);
		cj_uint(cli->out, "records", rep.records);
		cj_uint(cli->out, "digests", rep.digests);
		cj_uint(cli->out, "uncovered", rep.uncovered);
		cj_uint(cli->out, "unfinished", rep.unfinished);
		if (rep.unfinished)
			cj_uint(cli->out, "first_unfinished_seq", rep.unfinished_seq);
		else
			cj_null(cli->out, "first_unfinished_seq");
		cj_str(cli->out, "key", rep.key_label);
		cj_str(cli->out, "fingerprint", rep.key_fingerprint);
		cj_uint(cli->out, "head_seq", rep.head_seq);
		cj_str(cli->out, "head", rep.head);
	} else {
		printf("Audit log %s: %llu records, %llu signed digests verified, chain intact.\n",
		       path, (unsigned long long)rep.records, (unsigned long long)rep.digests);
		printf("Log id:     %s\n", rep.log_id);
		printf("Audit key:  %s (SHA-256 of public key %s)\n", rep.key_label, rep.key_fingerprint);
		printf("Head:       seq %llu, SHA-256 %s\n", (unsigned long long)rep.head_seq, rep.head);
		if (rep.unfinished)
			printf("Unfinished: %llu attempt(s) without an outcome, the first at seq %llu\n",
			       (unsigned long long)rep.unfinished, (unsigned long long)rep.unfinished_seq);
	}
	if (rep.uncovered && cli_flag(a, "strict"))
		return cli_failf(cli, HW_ERR_INTEGRITY, "verifying audit log (--strict)",
		                 "%llu record(s) after the last signed digest are not covered",
		                 (unsigned long long)rep.uncovered);
	return 0;
}

static int time_ok(const char *t)
{
	if (strlen(t) < 4 || strlen(t) > 24)
		return 0;
	for (const char *p = t; *p; p++)
		if (!strchr("0123456789-:T.Z", *p))
			return 0;
	return 1;
}

static int entry_matches(const hw_audit_entry *e, const struct cli_args *a)
{
	const char *k = cli_opt(a, "key"), *since = cli_opt(a, "since");
	const char *until = cli_opt(a, "until"), *act = cli_opt(a, "action");

	if (since && strncmp(e->time, since, strlen(since)) < 0)
		return 0;
	if (until && strncmp(e->time, until, strlen(until)) > 0)
		return 0;
	if (act && (!e->action || strcmp(e->action, act) != 0))
		return 0;
	if (k && strncmp(k, "id:", 3) == 0)
		return e->key_id && strcmp(e->key_id, k + 3) == 0;
	if (k)
		return e->key_label && strcmp(e->key_label, k) == 0;
	return 1;
}

static void show_entry(json_t *records, const hw_audit_entry *e)
{
	if (records) {
		json_t *r = cj_obj(records, NULL), *ctx;

		cj_uint(r, "seq", e->seq);
		cj_str(r, "time", e->time);
		cj_str(r, "type", e->type);
		cj_str(r, "user", e->user);
		cj_str(r, "host", e->host);
		cj_str(r, "token", e->token);
		cj_str(r, "action", e->action);
		cj_str(r, "key", e->key_label);
		cj_str(r, "key_id", e->key_id);
		cj_str(r, "key_version", e->key_version);
		ctx = cj_obj(r, "context");
		for (size_t i = 0; i < e->ncontext; i++)
			cj_str(ctx, e->context[i].key, e->context[i].value);
		cj_str(r, "result", e->result);
		if (e->attempt)
			cj_uint(r, "attempt", e->attempt);
		cj_str(r, "reason", e->reason);
		return;
	}
	printf("%6llu %s %-7s", (unsigned long long)e->seq, e->time, e->type);
	if (strcmp(e->type, "event") == 0) {
		printf(" %s@%s \"%s\" key=%s result=%s", e->user ? e->user : "?",
		       e->host ? e->host : "?", e->action ? e->action : "?",
		       e->key_label ? e->key_label : e->key_id ? e->key_id : "-",
		       e->result ? e->result : "?");
		for (size_t i = 0; i < e->ncontext; i++)
			printf(" %s%s=%s", i ? "" : "context: ", e->context[i].key, e->context[i].value);
	} else if (strcmp(e->type, "digest") == 0) {
		printf(" signed digest (%s)", e->reason ? e->reason : "?");
	} else {
		printf(" log started, audit key %s", e->key_label ? e->key_label : "?");
	}
	putchar('\n');
}

int cmd_audit_show(struct cli *cli, const struct cli_args *a)
{
	const char *path = log_path(cli, a);
	unsigned long long lineno = 0, shown = 0;
	json_t *records = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int rc = 0;

	if (!path)
		return cli_usage(cli, a->cmd, "no LOG given and no --audit-log configured");
	if ((cli_opt(a, "since") && !time_ok(cli_opt(a, "since"))) ||
	    (cli_opt(a, "until") && !time_ok(cli_opt(a, "until"))))
		return cli_usage(cli, a->cmd, "times are UTC like 2026-11-29 or 2026-11-29T22:00:00Z");
	f = fopen(path, "rb");
	if (!f)
		return cli_failf(cli, HW_ERR_IO, "reading audit log", "%s: %s", path, strerror(errno));
	if (cli->json)
		records = cj_arr(cli->out, "records");
	while ((n = getline(&line, &cap, f)) > 0) {
		hw_audit_entry *e = NULL;
		size_t len = (size_t)n;

		lineno++;
		if (line[len - 1] == '\n')
			len--;
		if (hw_audit_entry_parse((const uint8_t *)line, len, &e)) {
			rc = cli_failf(cli, HW_ERR_FORMAT, "reading audit log",
			               "%s: line %llu is not an audit record", path, lineno);
			break;
		}
		if (entry_matches(e, a)) {
			show_entry(records, e);
			shown++;
		}
		hw_audit_entry_free(e);
	}
	free(line);
	fclose(f);
	if (rc)
		return rc;
	if (cli->json)
		cj_uint(cli->out, "shown", shown);
	return 0;
}

int cmd_audit_digest(struct cli *cli, const struct cli_args *a)
{
	const char *path = log_path(cli, a);
	hw_audit *log = NULL;
	hw_ctx *ctx = NULL;
	hw_key *key = NULL;
	hw_err err;
	int rc;

	if (!path)
		return cli_usage(cli, a->cmd, "no LOG given and no --audit-log configured");
	if ((err = hw_audit_open(path, &log)))
		return cli_fail(cli, err, "opening the audit log");
	rc = open_signer(cli, log, cli_opt(a, "key"), &ctx, &key);
	if (!rc && (err = hw_audit_digest(log, "manual")))
		rc = cli_fail(cli, err, "signing the audit digest");
	if (!rc && !cli->json)
		printf("Signed digest appended to %s.\n", path);
	cli_close_key(ctx, key);
	hw_audit_close(log);
	return rc;
}
