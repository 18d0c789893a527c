/*
 * cli.h - shared pieces of the hsmwrap command-line tool.
 *
 * Every command is one entry in the table of commands.c (its help text,
 * options and examples live there and nowhere else) plus a run function
 * in a tools/cmd-*.c file.  A new command family is a new cmd-*.c file
 * and one table entry per command.
 *
 * Files call downwards only (no cycles; see doc/ARCHITECTURE.md):
 *   main.c            entry point: global options, settings, dispatch, audit hook
 *   commands.c        the command table, lookup, help and man page
 *   cmd-*.c           one file per command family
 *   keyinfo.c, session.c, transcript.c, args.c, report.c
 *                     helpers every command uses
 *   util.c, settings.c, ca-parse.c   no CLI state at all
 */
#ifndef HSMWRAP_CLI_H
#define HSMWRAP_CLI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

#include "hsmwrap.h"

#define PROG "hsmwrap"

/* Caps on input files: well above any blob we write, far below memory. */
#define CLI_MAX_BLOB (1024u * 1024u)

/* Exit statuses: see cli_exit_classes for what maps to each. */
enum {
	EXIT_OK = 0,
	EXIT_FAILURE_OTHER = 1,
	EXIT_USAGE = 2,
	EXIT_AUTH = 3,
	EXIT_NOT_FOUND = 4,
	EXIT_INTEGRITY = 5,
	EXIT_HSM = 6,
	EXIT_POLICY = 7,
	EXIT_AUDIT = 8,
};

/* ------------------------------------------------------------------ */
/* json.c: --json documents (jansson).                                 */
/* Each setter adds to an object under `key`, or appends to an array   */
/* (key NULL). Out of memory makes cj_failed() true and cj_print fail. */

void cj_str(json_t *o, const char *key, const char *v);  /* NULL -> null */
void cj_bool(json_t *o, const char *key, int v);
/* PKCS#11 tri-state: -1 -> null, 0 -> false, else true. */
void cj_tri(json_t *o, const char *key, int v);
void cj_null(json_t *o, const char *key);
void cj_uint(json_t *o, const char *key, unsigned long long v);
/* A new empty object or array in o; the pointer is borrowed from o. */
json_t *cj_obj(json_t *o, const char *key);
json_t *cj_arr(json_t *o, const char *key);
int cj_failed(void);
/* The document in compact form and a newline; -1 if it is incomplete. */
int cj_print(FILE *f, const json_t *doc);

/* ------------------------------------------------------------------ */
/* Command table.                                                      */

struct cli;
struct cli_args;

enum {
	CLI_OPT_REQUIRED = 1u << 0, /* checked by the parser */
	CLI_OPT_REPEAT = 1u << 1,   /* may be given more than once */
	/* Shown as mandatory, but the command checks it with its own message. */
	CLI_OPT_CONFIRM = 1u << 2,
};

struct cli_opt_spec {
	const char *name;           /* long name without "--" */
	int short_name;             /* 0 if none */
	const char *metavar;        /* NULL for a flag */
	unsigned flags;
	const char *help;
};

enum {
	CLI_CMD_NO_SETTINGS = 1u << 0, /* runs without config/environment */
	/* Ends with a signed audit digest (key ceremonies): see cmd-audit.c. */
	CLI_CMD_CEREMONY = 1u << 1,
	/* Never recorded in the audit log (audit commands write it themselves). */
	CLI_CMD_NO_AUDIT = 1u << 2,
};

struct cli_cmd {
	const char *name;           /* "key create" */
	const char *args;           /* positional arguments, e.g. "KEY"; NULL if none */
	unsigned npos_min, npos_max;
	unsigned flags;
	const char *summary;        /* one line for the command list */
	const char *description;    /* one paragraph */
	const struct cli_opt_spec *opts; /* terminated by a zeroed entry */
	const char *const *examples;     /* NULL-terminated; "# text" is a comment */
	int (*run)(struct cli *cli, const struct cli_args *a);
};

struct cli_global_opt {
	const char *name;
	const char *metavar;
	const char *env;            /* environment variable supplying a default */
	const char *help;
};

struct cli_exit_class {
	int code;
	const char *meaning;
	const hw_err *errs;         /* terminated by HW_OK */
};

/* commands.c */
extern const struct cli_cmd cli_commands[];
extern const size_t cli_ncommands;
/* args.c */
extern const struct cli_global_opt cli_global_opts[];
/* report.c */
extern const struct cli_exit_class cli_exit_classes[];

/* commands.c: lookup and help. */
/* The command named by the leading words of argv (the longest name that
 * matches); *words says how many. NULL if none. */
const struct cli_cmd *cli_find_command(int argc, const char *const *argv, int *words);
/* True if some command's name starts with the family word `w`. */
int cli_is_family(const char *w);
/* How many leading words of argv name a family of commands ("tde",
 * "tde keyring"), joined into buf; 0 if even the first does not. */
int cli_find_family(int argc, const char *const *argv, char *buf, size_t size);
void cli_help_overview(FILE *f);
void cli_help_family(FILE *f, const char *family);
void cli_help_command(FILE *f, const struct cli_cmd *c);
void cli_man_page(FILE *f);
/* Help on stdout, or as the "text" of the --json document; 0 or exit status. */
int cli_show_overview(struct cli *cli);
int cli_show_family(struct cli *cli, const char *family);
int cli_show_command(struct cli *cli, const struct cli_cmd *c);

/* ------------------------------------------------------------------ */
/* Parsed command options (args.c).                                    */

#define CLI_MAX_OPTS 16

struct cli_args {
	const struct cli_cmd *cmd;
	const char *val[CLI_MAX_OPTS];    /* last value; "" for a given flag */
	const char **multi[CLI_MAX_OPTS]; /* all values of repeatable options */
	size_t nmulti[CLI_MAX_OPTS];
	const char **pos;
	size_t npos;
};

const char *cli_opt(const struct cli_args *a, const char *name);
int cli_flag(const struct cli_args *a, const char *name);
const char *const *cli_opt_all(const struct cli_args *a, const char *name, size_t *n);
/* Parses argv (argv[0]: the last word of the command's name) against the
 * command's options. Returns 0, an exit status, or -1 when --help was asked
 * for; release with cli_args_free() whatever it returned. */
int cli_args_parse(struct cli *cli, const struct cli_cmd *c, int argc, char **argv,
                   struct cli_args *a);
void cli_args_free(struct cli_args *a);
/*
 * getopt_long accepts unique prefixes, so "--pin 1234" would be taken as
 * --pin-source. Options naming a PIN source must be spelt out in full.
 * Call right after getopt_long returned the option.
 */
int cli_pin_option_abbreviated(char **argv, const char *name);
int cli_no_pin_on_argv(struct cli *cli, const struct cli_cmd *c, const char *name);
/* Usage error naming the option only: "--pin=1234" must not reach a log. */
int cli_unknown_option(struct cli *cli, const struct cli_cmd *c, const char *arg);

/* ------------------------------------------------------------------ */
/* Global state and error reporting.                                   */

struct pin_prompt {
	int confirm;                /* ask twice: a new PIN is being set */
	char note[256];             /* why the prompt failed, for the error message */
};

struct cli {
	const char *module;         /* NULL: library default */
	const char *module_init_args; /* NULL: the module's p11-kit config */
	const char *token;
	const char *pin_source;
	const char *config;
	int config_explicit;
	int module_explicit;        /* module set by option, environment or config */
	int json;
	int json_sent;              /* the error document went out */
	json_t *out;                /* success document, printed at the end */
	json_t *transcript;         /* its transcript "items", between begin and end */
	struct pin_prompt prompt;
	char detail[1024];          /* detail of a CLI-side failure */
	/* Audit log settings (option > environment > config file). */
	const char *audit_log;
	const char *audit_key;      /* NULL: the key the log's genesis names */
	unsigned audit_every;       /* records between periodic digests, 0: default */
	hw_err last_err;            /* of the last failure reported, for the audit record */
	/* Availability first: act even when the audit record cannot be written. */
	int audit_fail_open;
	int allow_shared_pin_file;  /* accept a PIN file others can read */
	int force_exit;             /* non-zero: the exit status of the failure reported */
	uint64_t audit_attempt;     /* seq of this run's attempt record; 0: none written */
	char used_token[512];       /* URI of the token logged in to, for the audit record */
};

/* report.c: errors and exit statuses. */

int cli_exit_code(hw_err err);
/* Library failure: detail and CK_RV come from hw_last_detail()/hw_last_ckrv(). */
int cli_fail(struct cli *cli, hw_err err, const char *what);
/* Failure found by the tool itself; detail is a printf format. */
int cli_failf(struct cli *cli, hw_err err, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Failure of a util_* function: its detail is in util_detail(). */
int cli_fail_util(struct cli *cli, hw_err err, const char *what);
int cli_usage(struct cli *cli, const struct cli_cmd *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Non-fatal problem (one module of several): reported on stderr only. */
void cli_warn_err(const char *what, hw_err err);
/* "hsmwrap [GLOBAL OPTIONS] NAME ARGS [--opt X]...", also used by help. */
void cli_synopsis(FILE *f, const struct cli_cmd *c);
void cli_usage_hint(FILE *f, const struct cli_cmd *c);

/* session.c: PIN sources, contexts and keys. */

enum {
	CLI_CTX_TOKEN = 1u << 0,    /* select the --token (else no token) */
	CLI_CTX_LOGIN = 1u << 1,    /* log in now, so PIN errors say so */
	CLI_CTX_NO_OPEN = 1u << 2,  /* leave hw_ctx_open() to the caller */
};
/*
 * A configured context for `module` (NULL: the resolved one). On failure
 * the error has been reported and the exit status is returned (>0).
 */
int cli_ctx(struct cli *cli, const char *module, unsigned flags, hw_ctx **out);
/* Opens the token (logged in) and finds KEY, with the standard error
 * reports; release both with cli_close_key() whatever it returned. */
int cli_open_key(struct cli *cli, const char *spec, hw_ctx **ctx, hw_key **key);
void cli_close_key(hw_ctx *ctx, hw_key *key);
/* An encryption context from all --context options; exit status or 0. */
int cli_ectx(struct cli *cli, const struct cli_args *a, hw_ectx **out);
/* Usage error if the two options name the same file. */
int cli_distinct_paths(struct cli *cli, const struct cli_args *a,
                       const char *in_opt, const char *out_opt);
/*
 * What may be shown of a user-given key or token spec: a pkcs11: URI
 * without pin-value/pin-source (hw_uri_redact), anything else as given.
 * The string lives until exit.
 */
const char *cli_redact(const char *spec);
/* Checks that a pin source string has one of the documented forms. */
int cli_pin_source_ok(const char *src);
int cli_prepare_pin_source(struct cli *cli, const char *what, const char *src);

/* ------------------------------------------------------------------ */
/* util.c                                                              */

/* Detail of the last util_* failure (file name and errno text). */
const char *util_detail(void);
/* Sets that detail (for helpers outside util.c, e.g. outfile.c). */
void util_set_detail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Reads a whole file of at most `cap` bytes (HW_ERR_TOO_LARGE beyond).
 * With `secret`, every buffer is hw_secmem (not dumped, locked) and is
 * wiped; free the result with util_free(buf, len, secret).
 */
hw_err util_read_file(const char *path, size_t cap, int secret,
                      uint8_t **buf, size_t *len);
void util_free(void *buf, size_t len, int secret);

struct out_spec {
	const char *path;
	const void *data;
	size_t len;
	int secret;                 /* mode 0600, else 0666 & ~umask */
};
/*
 * Writes all outputs or none, each through outfile.c (anonymous temporary
 * linked into place on success; "-", devices and pipes streamed; symbolic
 * links refused). On failure nothing new is left and outputs already in
 * place are removed again.
 */
hw_err outfile_write_all(const struct out_spec *outs, size_t n);
/* util_read_file() and outfile_write_all() of one file, a failure
 * reported as `what`: 0 or the exit status. */
int cli_read_file(struct cli *cli, const char *path, size_t cap, int secret, const char *what,
                  uint8_t **buf, size_t *len);
int cli_write_file(struct cli *cli, const char *path, const void *data, size_t len,
                   int secret, const char *what);
/* Mode of a non-secret new file: 0666 less the umask. */
mode_t util_plain_mode(void);
/* Directory part of path ("." or "/" at the ends); free() it. NULL: no memory. */
char *util_dir_of(const char *path);
/* fsync the directory holding path, so a rename into it survives a crash. */
void util_sync_dir(const char *path);
/*
 * Makes directory `path` with `mode` (0700 for secrets) when it is missing;
 * an existing directory is used as it is. The parent must exist. *created
 * says whether it was made here, so a failed command can remove it again.
 */
hw_err util_make_dir(const char *path, mode_t mode, int *created);
/* True if both names refer to the same existing file (or are equal). */
int util_same_file(const char *a, const char *b);

/* Lowercase hex of `len` bytes into `out` (2*len+1 bytes). */
void util_hex(const uint8_t *in, size_t len, char *out);

/* hw_pin_cb for pin source "prompt": reads from /dev/tty without echo. */
hw_err util_pin_prompt(const char *what, char *buf, size_t max, size_t *len, void *arg);

/* Word-wrapped text with a hanging indent (help output). */
void util_wrap(FILE *f, const char *text, unsigned indent, unsigned first_col, unsigned width);

/* ------------------------------------------------------------------ */
/* transcript.c: ceremony transcripts for witnesses (with --json, the  */
/* "transcript" member of the document).                               */

void cli_transcript_begin(struct cli *cli, const char *ceremony);
/* One line of the transcript, e.g. ("Key URI:", "%s", uri). */
void cli_transcript_line(struct cli *cli, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void cli_transcript_end(struct cli *cli);

/* ------------------------------------------------------------------ */
/* Commands (cmd-*.c).                                                 */

int cmd_token_list(struct cli *cli, const struct cli_args *a);
int cmd_token_init(struct cli *cli, const struct cli_args *a);
int cmd_key_create(struct cli *cli, const struct cli_args *a);
int cmd_key_list(struct cli *cli, const struct cli_args *a);
int cmd_key_show(struct cli *cli, const struct cli_args *a);
int cmd_key_destroy(struct cli *cli, const struct cli_args *a);
int cmd_key_export_ref(struct cli *cli, const struct cli_args *a);
int cmd_datakey_generate(struct cli *cli, const struct cli_args *a);
int cmd_datakey_decrypt(struct cli *cli, const struct cli_args *a);
int cmd_wrap(struct cli *cli, const struct cli_args *a);
int cmd_unwrap(struct cli *cli, const struct cli_args *a);
int cmd_encrypt(struct cli *cli, const struct cli_args *a);
int cmd_decrypt(struct cli *cli, const struct cli_args *a);
int cmd_inspect(struct cli *cli, const struct cli_args *a);
int cmd_help(struct cli *cli, const struct cli_args *a);
int cmd_ca_init(struct cli *cli, const struct cli_args *a);
int cmd_ca_sign(struct cli *cli, const struct cli_args *a);
int cmd_ca_crl(struct cli *cli, const struct cli_args *a);

/* cmd-audit.c: the audit hook of main's dispatch. Before a command runs,
 * the configured log must open and take a synced record of the attempt
 * (else the command is not run: EXIT_AUDIT, unless --audit-fail-open);
 * afterwards the outcome is appended, and ceremonies get a signed digest.
 * Returns the final exit status. */
int cli_audit_begin(struct cli *cli, const struct cli_args *a, hw_audit **out);
int cli_audit_end(struct cli *cli, const struct cli_args *a, hw_audit *log, int rc);
int cli_audit_is_ceremony(const struct cli_cmd *c);
int cmd_audit_init(struct cli *cli, const struct cli_args *a);
int cmd_audit_verify(struct cli *cli, const struct cli_args *a);
int cmd_audit_show(struct cli *cli, const struct cli_args *a);
int cmd_audit_digest(struct cli *cli, const struct cli_args *a);
int cmd_tde_init(struct cli *cli, const struct cli_args *a);
int cmd_tde_keyring_add(struct cli *cli, const struct cli_args *a);
int cmd_tde_keyring_list(struct cli *cli, const struct cli_args *a);
int cmd_tde_keyring_rekey(struct cli *cli, const struct cli_args *a);
int cmd_tde_keyring_get(struct cli *cli, const struct cli_args *a);
int cmd_key_rotate(struct cli *cli, const struct cli_args *a);
int cmd_key_enable(struct cli *cli, const struct cli_args *a);
int cmd_key_disable(struct cli *cli, const struct cli_args *a);
int cmd_key_schedule_deletion(struct cli *cli, const struct cli_args *a);
int cmd_key_cancel_deletion(struct cli *cli, const struct cli_args *a);
int cmd_key_purge(struct cli *cli, const struct cli_args *a);
int cmd_key_tag(struct cli *cli, const struct cli_args *a);
int cmd_key_describe(struct cli *cli, const struct cli_args *a);
int cmd_key_import_params(struct cli *cli, const struct cli_args *a);
int cmd_key_import(struct cli *cli, const struct cli_args *a);
int cmd_key_import_components(struct cli *cli, const struct cli_args *a);
int cmd_backup_create(struct cli *cli, const struct cli_args *a);
int cmd_backup_restore(struct cli *cli, const struct cli_args *a);
int cmd_backup_show(struct cli *cli, const struct cli_args *a);

/* keyinfo.c: a key as every command shows it. */
void key_info_json(json_t *o, const char *name, const hw_key_info *ki);
void key_info_fields(json_t *o, const hw_key_info *ki);
/* Label, type, purpose, id, URI and KCV on stdout; with `attributes`, the flags. */
void key_info_text(const hw_key_info *ki, int attributes);
const char *kcv_alg_text(const char *kcv_alg);
const char *key_kcv_value(const hw_key_info *ki);
const char *key_purpose_text(hw_purpose p);
/* PKCS#11 tri-state as "yes", "no" or "unknown" (-1). */
const char *key_tri_text(int v);

#endif /* HSMWRAP_CLI_H */
