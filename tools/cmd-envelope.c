/*
 * cmd-envelope.c - `encrypt`, `decrypt` and `inspect`: files and streams of
 * any size in the AWS Encryption SDK message format, through libhsmwrap's
 * hw_enc_stream / hw_dec_stream, in memory bounded by the frame length.
 *
 * Output rules (the "no partial output" promise of every hsmwrap command):
 *  - -o FILE: outfile.c's anonymous temporary in FILE's directory, linked
 *    over FILE only when the stream finished (for decryption: after
 *    hw_dec_stream_final(), i.e. after the footer signature verified);
 *    any failure, signal or kill leaves nothing new visible.
 *  - -o - (standard output), or -o naming a device or pipe: ciphertext
 *    streams straight out. Plaintext of an unsigned message streams out
 *    frame by frame as each frame authenticates; plaintext of a signed
 *    message is spooled to an unlinked (O_TMPFILE) mode-0600 file in
 *    $TMPDIR and copied out only after the signature verified, because
 *    its frames are not final until then.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"
#include "outfile.h"

/* Read and write granularity; also the size of the write buffer. */
#define IO_CHUNK (64u * 1024u)
/* What the input pump reads and feeds to a stream at a time: large, so
 * that one update call gives the library's frame workers many jobs (128
 * KiB each) and the kernel few calls. */
#define PUMP_CHUNK (4u << 20)
/* Ciphertext bytes kept to describe the header afterwards (--json, text). */
#define HDR_KEEP (1024u * 1024u)
/* `inspect` reads at most this much looking for the end of the header. */
#define INSPECT_MAX (64u * 1024u * 1024u)

/* ------------------------------------------------------------------ */
/* Termination signals: the stream stops at the next chunk, the        */
/* temporary file is removed, then the signal takes its default effect. */

static volatile sig_atomic_t stop_signal;
static const int stop_sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE };
#define NSTOP (sizeof(stop_sigs) / sizeof(stop_sigs[0]))

static void on_stop(int sig)
{
	stop_signal = sig;
}

static void signals_catch(struct sigaction *old)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocking read of standard input must notice. */
	for (size_t i = 0; i < NSTOP; i++)
		sigaction(stop_sigs[i], &sa, &old[i]);
}

/* SIGPIPE is only reported (EPIPE); the others are re-raised after cleanup. */
static void signals_restore(const struct sigaction *old)
{
	for (size_t i = 0; i < NSTOP; i++)
		sigaction(stop_sigs[i], &old[i], NULL);
	if (stop_signal && stop_signal != SIGPIPE) {
		signal(stop_signal, SIG_DFL);
		raise(stop_signal);
	}
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static int is_stdio(const char *path)
{
	return strcmp(path, "-") == 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR && !stop_signal)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Strict decimal in [lo, hi]; no sign, no spaces, no suffix. */
static int parse_uint(const char *s, unsigned long long lo, unsigned long long hi,
                      unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (!s[0] || s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Header strings come from the input: show control characters escaped. */
static void put_safe(FILE *f, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			fprintf(f, "\\x%02x", *p);
		/* UTF-8 of U+0080..U+009F: C1 controls some terminals obey. */
		else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			fprintf(f, "\\u%04x", p[1]);
			p++;
		} else {
			fputc(*p, f);
		}
	}
}


/* ------------------------------------------------------------------ */
/* The first bytes of a message, kept to describe its header.          */

struct keep {
	uint8_t *p;
	size_t len;
};

static void keep_add(struct keep *k, const uint8_t *data, size_t n)
{
	size_t room;

	if (k->len >= HDR_KEEP || n == 0)
		return;
	if (!k->p && !(k->p = malloc(HDR_KEEP)))
		return;                 /* only the report loses detail */
	room = HDR_KEEP - k->len;
	if (n > room)
		n = room;
	memcpy(k->p + k->len, data, n);
	k->len += n;
}

static hw_envelope_info *keep_info(const struct keep *k)
{
	hw_envelope_info *info = NULL;

	if (!k->p || hw_envelope_inspect(k->p, k->len, &info) != HW_OK)
		return NULL;
	return info;
}

/* ------------------------------------------------------------------ */
/* Input                                                               */

struct source {
	const char *name;           /* for messages */
	int fd;
	int owned;
	unsigned long long total;
};

static int source_open(struct cli *cli, const char *path, struct source *s)
{
	struct stat st;

	memset(s, 0, sizeof(*s));
	if (is_stdio(path)) {
		s->name = "standard input";
		s->fd = STDIN_FILENO;
		return 0;
	}
	s->name = path;
	s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (s->fd < 0)
		return cli_failf(cli, errno == ENOMEM ? HW_ERR_NOMEM : HW_ERR_IO, "reading input",
		                 "%s: %s", path, strerror(errno));
	s->owned = 1;
	if (fstat(s->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(s->fd);
		s->owned = 0;
		return cli_failf(cli, HW_ERR_IO, "reading input", "%s: %s", path, strerror(EISDIR));
	}
	return 0;
}

static void source_close(struct source *s)
{
	if (s->owned)
		close(s->fd);
	s->owned = 0;
}

/* Bytes read (0 at the end) or -1 with errno set (EINTR after a signal). */
static ssize_t source_read(struct source *s, uint8_t *buf, size_t cap)
{
	for (;;) {
		ssize_t r;

		if (stop_signal) {
			errno = EINTR;
			return -1;
		}
		r = read(s->fd, buf, cap);
		if (r < 0 && errno == EINTR)
			continue;
		if (r > 0)
			s->total += (unsigned long long)r;
		return r;
	}
}

/* ------------------------------------------------------------------ */
/* Output                                                              */

enum sink_mode {
	SINK_FILE,                  /* outfile.c: appears whole at commit or never */
	SINK_STDOUT,                /* straight to standard output, a device or pipe */
	SINK_SPOOL,                 /* unlinked temp file, copied to stdout at the end */
	SINK_UNDECIDED,             /* stdout, plaintext: decided by the suite */
};

struct sink {
	enum sink_mode mode;
	const char *path;           /* the output's name, "-": standard output */
	struct outfile *of;         /* NULL for "-" */
	int fd;
	int out_fd;                 /* SINK_SPOOL: where the spool goes at the end */
	int secret;                 /* plaintext: mode 0600, buffers wiped */
	uint8_t *buf;
	size_t used;
	unsigned long long total;
	struct keep *keep;          /* encryption: the ciphertext's first bytes */
	const struct keep *hdr;     /* decryption, SINK_UNDECIDED: the input's */
	int failed;                 /* a write failed: detail[] says why */
	char detail[512];
};

static void sink_fail(struct sink *k, const char *what, int e)
{
	k->failed = 1;
	snprintf(k->detail, sizeof(k->detail), "%s: %s", what, strerror(e));
}

static int sink_init(struct cli *cli, struct sink *k, const char *path, int secret)
{
	memset(k, 0, sizeof(*k));
	k->fd = -1;
	k->secret = secret;
	k->buf = malloc(IO_CHUNK);
	if (!k->buf)
		return cli_failf(cli, HW_ERR_NOMEM, "output", "out of memory");
	k->path = path;
	k->mode = SINK_FILE;
	if (is_stdio(path)) {
		k->mode = secret ? SINK_UNDECIDED : SINK_STDOUT;
		k->fd = STDOUT_FILENO;
	}
	return 0;
}

/*
 * The output, opened only once there is work. A device or pipe named by
 * -o is a stream like standard output and follows the same release rules.
 */
static int sink_create(struct cli *cli, struct sink *k)
{
	hw_err err;

	if (k->mode != SINK_FILE)
		return 0;
	err = outfile_open(k->path, k->secret ? OUTFILE_SECRET : 0, &k->of);
	if (err)
		return cli_fail_util(cli, err, "writing output");
	k->fd = outfile_fd(k->of);
	if (outfile_is_stream(k->of))
		k->mode = k->secret ? SINK_UNDECIDED : SINK_STDOUT;
	return 0;
}

/* Plaintext spooled until a signature verifies: nobody else may open it. */
static int spool_open(struct sink *k)
{
	int fd = outfile_spool();

	if (fd < 0) {
		sink_fail(k, "spool file", errno);
		return -1;
	}
	k->out_fd = k->fd;
	k->fd = fd;
	k->mode = SINK_SPOOL;
	return 0;
}

static int sink_out(struct sink *k, const uint8_t *p, size_t n)
{
	if (write_all(k->fd, p, n) < 0) {
		sink_fail(k, k->mode == SINK_FILE || k->of ? k->path :
		          k->mode == SINK_SPOOL ? "spool file" : "standard output", errno);
		return -1;
	}
	return 0;
}

static int sink_flush(struct sink *k)
{
	if (!k->used || k->failed)
		return k->failed ? -1 : 0;
	if (sink_out(k, k->buf, k->used) < 0)
		return -1;
	if (k->secret)
		OPENSSL_cleanse(k->buf, k->used);
	k->used = 0;
	return 0;
}

/* hw_write_cb for both streams. */
static hw_err sink_write(void *arg, const uint8_t *data, size_t len)
{
	struct sink *k = arg;

	if (k->failed)
		return HW_ERR_IO;
	if (stop_signal) {
		sink_fail(k, "interrupted", EINTR);
		return HW_ERR_IO;
	}
	if (k->mode == SINK_UNDECIDED) {
		/* The header has been read in full before any plaintext comes. */
		hw_envelope_info *info = keep_info(k->hdr);
		int sign = !info || info->signed_;

		hw_envelope_info_free(info);
		if (sign ? spool_open(k) < 0 : (k->mode = SINK_STDOUT, 0))
			return HW_ERR_IO;
	}
	if (k->keep)
		keep_add(k->keep, data, len);
	k->total += len;
	/* The library hands over runs of frames (up to 128 KiB): those go
	 * straight out, without a copy through the buffer. */
	if (k->used == 0 && len >= IO_CHUNK)
		return sink_out(k, data, len) < 0 ? HW_ERR_IO : HW_OK;
	while (len) {
		size_t n = IO_CHUNK - k->used;

		if (n > len)
			n = len;
		memcpy(k->buf + k->used, data, n);
		k->used += n;
		data += n;
		len -= n;
		if (k->used == IO_CHUNK && sink_flush(k) < 0)
			return HW_ERR_IO;
	}
	return HW_OK;
}

static int spool_copy_out(struct sink *k)
{
	ssize_t r;

	if (lseek(k->fd, 0, SEEK_SET) < 0) {
		sink_fail(k, "spool file", errno);
		return -1;
	}
	while ((r = read(k->fd, k->buf, IO_CHUNK)) != 0) {
		if (r < 0 && errno == EINTR && !stop_signal)
			continue;
		if (r < 0) {
			sink_fail(k, "spool file", errno);
			return -1;
		}
		if (write_all(k->out_fd, k->buf, (size_t)r) < 0) {
			OPENSSL_cleanse(k->buf, (size_t)r);
			sink_fail(k, k->of ? k->path : "standard output", errno);
			return -1;
		}
		OPENSSL_cleanse(k->buf, (size_t)r);
	}
	return 0;
}

/* Everything is final: make the output visible. 0 or -1 (detail set). */
static int sink_commit(struct sink *k)
{
	if (sink_flush(k) < 0)
		return -1;
	if (stop_signal) {
		sink_fail(k, "interrupted", EINTR);
		return -1;
	}
	if (k->mode == SINK_SPOOL && spool_copy_out(k) < 0)
		return -1;
	/* A file appears now; a stream that is standard output sends the
	 * report to stderr from here on. */
	if (k->of && outfile_commit(k->of)) {
		k->failed = 1;
		snprintf(k->detail, sizeof(k->detail), "%s", util_detail());
		return -1;
	}
	return 0;
}

/* Removes whatever was not committed and wipes the buffer. */
static void sink_free(struct sink *k)
{
	if (k->buf) {
		if (k->secret)
			OPENSSL_cleanse(k->buf, IO_CHUNK);
		free(k->buf);
	}
	/* An uncommitted file output disappears with its anonymous inode. */
	outfile_free(k->of);
	if (k->mode == SINK_SPOOL && k->fd >= 0)
		close(k->fd);
	memset(k, 0, sizeof(*k));
	k->fd = -1;
}

/* ------------------------------------------------------------------ */
/* Options shared by the commands                                      */

struct suite_name {
	unsigned id;
	const char *name;
};

static const struct suite_name suite_names[] = {
	{ HW_SUITE_AES256_HKDF_SHA512_COMMIT, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY" },
	{ HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384,
	  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384" },
};

static int parse_suite(const char *s, unsigned *out)
{
	for (size_t i = 0; i < sizeof(suite_names) / sizeof(suite_names[0]); i++) {
		char hex[8];

		snprintf(hex, sizeof(hex), "0x%04x", suite_names[i].id);
		if (strcasecmp(s, hex) == 0 || strcasecmp(s, hex + 2) == 0 ||
		    strcasecmp(s, suite_names[i].name) == 0) {
			*out = suite_names[i].id;
			return 0;
		}
	}
	return -1;
}

/*
 * --json's document goes to standard output, which then cannot also carry
 * the data: refuse rather than interleave them.
 */
static int check_paths(struct cli *cli, const struct cli_args *a, const char *in,
                       const char *out)
{
	if (cli->json && is_stdio(out))
		return cli_usage(cli, a->cmd, "--json prints its document on standard output; "
		                 "give -o FILE");
	if (!is_stdio(in) && !is_stdio(out))
		return cli_distinct_paths(cli, a, "input", "output");
	return 0;
}

/* The context as the message stores it (inspect, --json). */
static void pairs_json(json_t *w, const char *name, const hw_envelope_info *info)
{
	json_t *o = cj_obj(w, name);

	for (size_t i = 0; info && i < info->npairs; i++)
		cj_str(o, info->pairs[i].key, info->pairs[i].value);
}

static void header_json(json_t *w, const hw_envelope_info *info)
{
	char hex[2 * 32 + 1], suite[8];

	if (!info) {
		cj_null(w, "suite");
		cj_null(w, "message_id");
		return;
	}
	util_hex(info->message_id, info->message_id_len, hex);
	snprintf(suite, sizeof(suite), "0x%04x", info->suite);
	cj_str(w, "suite", suite);
	cj_str(w, "suite_name", info->suite_name);
	cj_bool(w, "signed", info->signed_);
	cj_str(w, "message_id", hex);
	cj_uint(w, "frame_length", info->frame_length);
}

/* The context on one line, "k=v, k2=v2", for the text reports. */
static void print_pairs_line(FILE *f, const hw_envelope_info *info)
{
	size_t shown = 0;

	for (size_t i = 0; info && i < info->npairs; i++) {
		/* The signing key's public half is long and says nothing to a reader. */
		if (strcmp(info->pairs[i].key, "aws-crypto-public-key") == 0)
			continue;
		fputs(shown++ ? ", " : "", f);
		put_safe(f, info->pairs[i].key);
		fputc('=', f);
		put_safe(f, info->pairs[i].value);
	}
	if (!shown)
		fputs("(none)", f);
	fputc('\n', f);
}

/* Reports a stream failure, preferring the output's own reason. */
static int stream_fail(struct cli *cli, const struct sink *k, hw_err err, const char *what)
{
	if (k->failed)
		return cli_failf(cli, HW_ERR_IO, what, "%s", k->detail);
	return cli_fail(cli, err, what);
}

/* ------------------------------------------------------------------ */
/* Raw RSA recipients: the data key encrypted to an RSA public key.    */

/*
 * Names for --rsa-padding, in the order decrypt tries them when none is
 * named (the message does not record it): hsmwrap's default, the other
 * OAEP hashes, and PKCS#1 v1.5, the legacy one, last.
 */
static const struct {
	const char *name;
	hw_rsa_padding pad;
} rsa_pads[] = {
	{ "oaep-sha256", HW_RSA_PAD_OAEP_SHA256 },
	{ "oaep-sha1", HW_RSA_PAD_OAEP_SHA1 },
	{ "oaep-sha384", HW_RSA_PAD_OAEP_SHA384 },
	{ "oaep-sha512", HW_RSA_PAD_OAEP_SHA512 },
	{ "pkcs1", HW_RSA_PAD_PKCS1 },
};
#define NPADS (sizeof(rsa_pads) / sizeof(rsa_pads[0]))

/* --rsa-padding into cfg; *named says whether it was given. */
static int rsa_padding_opt(struct cli *cli, const struct cli_args *a, hw_envelope_cfg *cfg,
                           int *named)
{
	const char *s = cli_opt(a, "rsa-padding");
	hw_err err;

	*named = s != NULL;
	if (!s)
		return 0;
	for (size_t i = 0; i < NPADS; i++) {
		if (strcmp(s, rsa_pads[i].name) != 0)
			continue;
		if ((err = hw_envelope_cfg_set_rsa_padding(cfg, rsa_pads[i].pad)))
			return cli_fail(cli, err, "--rsa-padding");
		return 0;
	}
	return cli_usage(cli, a->cmd, "unknown --rsa-padding '%s' (oaep-sha256, oaep-sha1, "
	                 "oaep-sha384, oaep-sha512 or pkcs1)", s);
}

static const char *key_namespace(const struct cli_args *a)
{
	const char *ns = cli_opt(a, "namespace");

	return ns ? ns : "hsmwrap";
}

/* DER SubjectPublicKeyInfo of a PEM public key or certificate; free with free(). */
static hw_err pem_public_key(const uint8_t *pem, size_t len, uint8_t **der, int *derlen)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	unsigned char *out = NULL;
	int n;

	if (!bio)
		return HW_ERR_NOMEM;
	pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (!pk && BIO_reset(bio) == 1 && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
		pk = X509_get_pubkey(x);
	X509_free(x);
	BIO_free(bio);
	n = pk ? i2d_PUBKEY(pk, &out) : -1;
	EVP_PKEY_free(pk);
	if (n <= 0)
		return HW_ERR_FORMAT;
	*der = out;
	*derlen = n;
	return HW_OK;
}

/* Each --rsa-recipient NAME=FILE: a public key the host holds (escrow). */
static int add_rsa_files(struct cli *cli, const struct cli_args *a, hw_envelope_cfg *cfg)
{
	size_t n;
	const char *const *specs = cli_opt_all(a, "rsa-recipient", &n);

	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(specs[i], '=');
		char name[256], what[300];
		uint8_t *pem = NULL, *der = NULL;
		size_t pemlen = 0;
		int derlen = 0;
		hw_err err;

		if (!eq || eq == specs[i] || !eq[1] || (size_t)(eq - specs[i]) >= sizeof(name))
			return cli_usage(cli, a->cmd, "bad --rsa-recipient '%s': expected NAME=FILE "
			                 "(the key name stored in the message, and a PEM public key)",
			                 specs[i]);
		snprintf(name, sizeof(name), "%.*s", (int)(eq - specs[i]), specs[i]);
		snprintf(what, sizeof(what), "RSA recipient '%s'", name);
		if ((err = util_read_file(eq + 1, 64 * 1024, 0, &pem, &pemlen)))
			return cli_fail_util(cli, err, what);
		err = pem_public_key(pem, pemlen, &der, &derlen);
		util_free(pem, pemlen, 0);
		if (err)
			return cli_failf(cli, err, what, "%s: not a PEM public key or certificate",
			                 eq + 1);
		err = hw_envelope_cfg_add_rsa_recipient(cfg, key_namespace(a), name, der,
		                                        (size_t)derlen);
		OPENSSL_free(der);
		if (err)
			return cli_fail(cli, err, what);
	}
	return 0;
}

/*
 * A Raw RSA data key (of namespace ns, if not NULL): its provider info is
 * the bare key name, where a Raw AES one (hsmwrap's) also holds an IV.
 */
static int is_rsa_edk(const hw_envelope_edk *k, const char *ns)
{
	return !k->key_name && strncmp(k->provider_id, "aws-kms", 7) != 0 &&
	       (!ns || strcmp(k->provider_id, ns) == 0);
}

static const char *rsa_edk_name(const hw_envelope_edk *k, char *buf, size_t n)
{
	snprintf(buf, n, "%.*s", (int)k->provider_info_len, (const char *)k->provider_info);
	return buf;
}

/* Each --rsa-key: the public half of an RSA key pair on the token. */
static int add_rsa_keys(struct cli *cli, const struct cli_args *a, hw_ctx *ctx,
                        hw_envelope_cfg *cfg)
{
	size_t n;
	const char *const *specs = cli_opt_all(a, "rsa-key", &n);

	for (size_t i = 0; i < n; i++) {
		hw_key *key = NULL;
		uint8_t *der = NULL;
		size_t len = 0;
		char what[300];
		hw_err err;

		snprintf(what, sizeof(what), "RSA key '%s'", specs[i]);
		if (!(err = hw_key_find(ctx, specs[i], &key)) &&
		    !(err = hw_key_public_der(key, &der, &len)))
			err = hw_envelope_cfg_add_rsa_recipient(cfg, key_namespace(a),
			                                        hw_key_label(key), der, len);
		hw_free(der);
		hw_key_free(key);
		if (err)
			return cli_fail(cli, err, what);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* encrypt                                                             */

/* --threads, for both commands. */
static int threads_config(struct cli *cli, const struct cli_args *a, hw_envelope_cfg *cfg)
{
	const char *s = cli_opt(a, "threads");
	unsigned long long v;
	hw_err err;

	if (!s)
		return 0;
	if (parse_uint(s, 1, 256, &v) < 0)
		return cli_usage(cli, a->cmd, "--threads must be 1 to 256");
	if ((err = hw_envelope_cfg_set_threads(cfg, (unsigned)v)))
		return cli_fail(cli, err, "--threads");
	return 0;
}

static int enc_config(struct cli *cli, const struct cli_args *a, hw_envelope_cfg **out)
{
	const char *s;
	unsigned long long v;
	unsigned suite;
	int named, rc;
	hw_envelope_cfg *cfg = NULL;
	hw_err err;

	if ((err = hw_envelope_cfg_new(&cfg)))
		return cli_fail(cli, err, "encrypt");
	*out = cfg;
	if ((s = cli_opt(a, "suite"))) {
		if (parse_suite(s, &suite) < 0)
			return cli_usage(cli, a->cmd, "unknown --suite '%s' (0x0478, 0x0578, or their "
			                 "SDK names)", s);
		if ((err = hw_envelope_cfg_set_suite(cfg, suite)))
			return cli_fail(cli, err, "encrypt");
	}
	if ((s = cli_opt(a, "frame-length"))) {
		if (parse_uint(s, 1, UINT32_MAX, &v) < 0)
			return cli_usage(cli, a->cmd, "--frame-length must be 1 to 4294967295 bytes");
		if ((err = hw_envelope_cfg_set_frame_length(cfg, (uint32_t)v)))
			return cli_fail(cli, err, "encrypt");
	}
	if ((s = cli_opt(a, "namespace")) &&
	    (err = hw_envelope_cfg_set_key_namespace(cfg, s)))
		return cli_fail(cli, err, "--namespace");
	if ((rc = rsa_padding_opt(cli, a, cfg, &named)) || (rc = add_rsa_files(cli, a, cfg)))
		return rc;
	return threads_config(cli, a, cfg);
}

/* All --key options, found on the token; *keys has n entries to free. */
static int find_keys(struct cli *cli, const struct cli_args *a, hw_ctx *ctx,
                     hw_key ***keys, size_t *n)
{
	const char *const *specs = cli_opt_all(a, "key", n);
	char what[300];

	*keys = calloc(*n ? *n : 1, sizeof(**keys));
	if (!*keys)
		return cli_failf(cli, HW_ERR_NOMEM, "finding keys", "out of memory");
	for (size_t i = 0; i < *n; i++) {
		hw_err err = hw_key_find(ctx, specs[i], &(*keys)[i]);

		if (err) {
			snprintf(what, sizeof(what), "finding key '%s'", specs[i]);
			return cli_fail(cli, err, what);
		}
	}
	return 0;
}

static void free_keys(hw_key **keys, size_t n)
{
	for (size_t i = 0; keys && i < n; i++)
		hw_key_free(keys[i]);
	free(keys);
}

/* A stream's update call, for pump(). */
typedef hw_err (*feed_fn)(void *stream, const uint8_t *in, size_t len);

static hw_err feed_enc(void *s, const uint8_t *in, size_t len)
{
	return hw_enc_stream_update(s, in, len);
}

static hw_err feed_dec(void *s, const uint8_t *in, size_t len)
{
	return hw_dec_stream_update(s, in, len);
}

/* Feeds the rest of the input to a stream, a chunk at a time: 0, or the
 * exit status after the failure was reported and the output discarded. */
static int pump(struct cli *cli, struct source *src, struct sink *out, uint8_t *chunk,
                feed_fn feed, void *stream, const char *what)
{
	for (;;) {
		ssize_t r = source_read(src, chunk, PUMP_CHUNK);
		hw_err err;

		if (r == 0)
			return 0;
		if (r < 0) {
			if (stop_signal)
				sink_fail(out, "interrupted", EINTR);
			else
				sink_fail(out, src->name, errno);
			return stream_fail(cli, out, HW_ERR_IO, "reading input");
		}
		if ((err = feed(stream, chunk, (size_t)r)))
			return stream_fail(cli, out, err, what);
	}
}

/*
 * What encrypt and decrypt share around their stream: the paths, the
 * signal handling, the input, the output with the message's first bytes,
 * and the pump's chunk.
 */
struct run {
	const char *in_path, *out_path;
	struct sigaction old[NSTOP];
	struct source src;
	struct sink out;
	struct keep hdr;
	uint8_t *chunk;
};

static int run_start(struct cli *cli, const struct cli_args *a, struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->in_path = cli_opt(a, "input");
	r->out_path = cli_opt(a, "output");
	if (!r->in_path)
		r->in_path = "-";
	if (!r->out_path)
		r->out_path = "-";
	r->src.fd = -1;
	r->out.fd = -1;
	stop_signal = 0;
	signals_catch(r->old);
	return check_paths(cli, a, r->in_path, r->out_path);
}

/* The output, created only once there is work, and the pump's chunk. */
static int run_output(struct cli *cli, struct run *r, int secret, const char *what)
{
	int rc;

	if ((rc = sink_init(cli, &r->out, r->out_path, secret)) ||
	    (rc = sink_create(cli, &r->out)))
		return rc;
	if (!(r->chunk = malloc(PUMP_CHUNK)))
		return cli_failf(cli, HW_ERR_NOMEM, what, "out of memory");
	return 0;
}

/* The stream's final call said err; only if it succeeded is the output
 * released. */
static int run_commit(struct cli *cli, struct run *r, hw_err err, const char *what)
{
	if (err)
		return stream_fail(cli, &r->out, err, what);
	if (sink_commit(&r->out) < 0)
		return stream_fail(cli, &r->out, HW_ERR_IO, "writing output");
	return 0;
}

static void run_json(struct cli *cli, const struct run *r, const hw_envelope_info *info)
{
	pairs_json(cli->out, "context", info);
	cj_str(cli->out, "input", r->in_path);
	cj_str(cli->out, "output", r->out_path);
	cj_uint(cli->out, "bytes_in", r->src.total);
	cj_uint(cli->out, "bytes_out", r->out.total);
}

/* Removes an uncommitted output; the chunk held one side of the data in
 * the clear, so it is wiped. Signals are restored by the caller, last. */
static void run_free(struct run *r)
{
	sink_free(&r->out);
	source_close(&r->src);
	if (r->chunk) {
		OPENSSL_cleanse(r->chunk, PUMP_CHUNK);
		free(r->chunk);
	}
	free(r->hdr.p);
}

int cmd_encrypt(struct cli *cli, const struct cli_args *a)
{
	struct run r;
	hw_envelope_cfg *cfg = NULL;
	hw_enc_stream *enc = NULL;
	hw_envelope_info *info = NULL;
	hw_ectx *ec = NULL;
	hw_ctx *ctx = NULL;
	hw_key **keys = NULL;
	size_t nkeys = 0, naes = 0, nrsa = 0, nfiles = 0;
	char name[256];
	hw_err err;
	int rc;

	if ((rc = run_start(cli, a, &r)))
		goto done;
	if (is_stdio(r.out_path) && isatty(STDOUT_FILENO)) {
		rc = cli_usage(cli, a->cmd, "refusing to write ciphertext to a terminal; give -o "
		               "FILE or redirect standard output");
		goto done;
	}
	cli_opt_all(a, "key", &naes);
	cli_opt_all(a, "rsa-key", &nrsa);
	cli_opt_all(a, "rsa-recipient", &nfiles);
	if (!naes && !nrsa && !nfiles) {
		rc = cli_usage(cli, a->cmd, "give at least one --key, --rsa-key or --rsa-recipient");
		goto done;
	}
	if ((rc = enc_config(cli, a, &cfg)) || (rc = cli_ectx(cli, a, &ec)))
		goto done;
	if ((rc = source_open(cli, r.in_path, &r.src)))
		goto done;
	/* Escrow to public key files alone needs no token at all. */
	if ((naes || nrsa) &&
	    ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)) ||
	     (rc = find_keys(cli, a, ctx, &keys, &nkeys)) ||
	     (rc = add_rsa_keys(cli, a, ctx, cfg))))
		goto done;
	if ((rc = run_output(cli, &r, 0, "encrypt")))
		goto done;
	r.out.keep = &r.hdr;
	err = hw_enc_stream_new(cfg, keys, nkeys, ec, sink_write, &r.out, &enc);
	if (err) {
		rc = stream_fail(cli, &r.out, err, "encrypting");
		goto done;
	}
	if ((rc = pump(cli, &r.src, &r.out, r.chunk, feed_enc, enc, "encrypting")) ||
	    (rc = run_commit(cli, &r, hw_enc_stream_final(enc), "encrypting")))
		goto done;
	info = keep_info(&r.hdr);
	if (cli->json) {
		json_t *names;

		header_json(cli->out, info);
		names = cj_arr(cli->out, "keys");
		for (size_t i = 0; i < nkeys; i++)
			cj_str(names, NULL, hw_key_label(keys[i]));
		names = cj_arr(cli->out, "rsa_recipients");
		for (size_t i = 0; info && i < info->nedks; i++)
			if (is_rsa_edk(&info->edks[i], NULL))
				cj_str(names, NULL, rsa_edk_name(&info->edks[i], name, sizeof(name)));
		run_json(cli, &r, info);
	} else if (!is_stdio(r.out_path)) {
		char hex[2 * 32 + 1] = "?";

		if (info)
			util_hex(info->message_id, info->message_id_len, hex);
		printf("Encrypted %llu bytes into %s (%llu bytes), suite 0x%04x, message ID %s.\n",
		       r.src.total, r.out_path, r.out.total, info ? info->suite : 0u, hex);
		if (nkeys) {
			printf("Data key wrapped by:");
			for (size_t i = 0; i < nkeys; i++)
				printf("%s '%s'", i ? "," : "", hw_key_label(keys[i]));
			putchar('\n');
		}
		if (nrsa || nfiles) {
			const char *pad = cli_opt(a, "rsa-padding");

			printf("Data key encrypted (%s) to RSA public keys:", pad ? pad : "oaep-sha256");
			for (size_t i = 0, k = 0; info && i < info->nedks; i++)
				if (is_rsa_edk(&info->edks[i], NULL))
					printf("%s '%s'", k++ ? "," : "",
					       rsa_edk_name(&info->edks[i], name, sizeof(name)));
			putchar('\n');
		}
		printf("Context: ");
		print_pairs_line(stdout, info);
	}
done:
	hw_enc_stream_free(enc);
	run_free(&r);
	hw_envelope_info_free(info);
	free_keys(keys, nkeys);
	hw_ctx_free(ctx);
	hw_ectx_free(ec);
	hw_envelope_cfg_free(cfg);
	signals_restore(r.old);
	return rc;
}

/* ------------------------------------------------------------------ */
/* decrypt                                                             */

static int dec_config(struct cli *cli, const struct cli_args *a, hw_envelope_cfg **out,
                      int *pad_named)
{
	const char *s;
	unsigned long long v;
	hw_envelope_cfg *cfg = NULL;
	hw_err err;
	int rc;

	if ((err = hw_envelope_cfg_new(&cfg)))
		return cli_fail(cli, err, "decrypt");
	*out = cfg;
	if (cli_flag(a, "allow-legacy") &&
	    (err = hw_envelope_cfg_set_commitment_policy(cfg,
	                                                 HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT)))
		return cli_fail(cli, err, "decrypt");
	if ((s = cli_opt(a, "max-edks"))) {
		if (parse_uint(s, 0, 65535, &v) < 0)
			return cli_usage(cli, a->cmd, "--max-edks must be 0 (no limit) to 65535");
		if ((err = hw_envelope_cfg_set_max_edks(cfg, (unsigned)v)))
			return cli_fail(cli, err, "decrypt");
	}
	if ((s = cli_opt(a, "namespace")) &&
	    (err = hw_envelope_cfg_set_key_namespace(cfg, s)))
		return cli_fail(cli, err, "--namespace");
	if ((rc = rsa_padding_opt(cli, a, cfg, pad_named)))
		return rc;
	return threads_config(cli, a, cfg);
}

/*
 * A decryption stream fed the prefetched header: 0, or the exit status
 * after the failure was reported. When the message holds Raw RSA data keys
 * and --rsa-padding was not named, each padding is tried in the order of
 * rsa_pads: the message does not say which one was used, and a wrong one
 * fails the unwrap (HW_ERR_INTEGRITY) before any plaintext exists, so the
 * next try starts again from the same header bytes. A padding the key or
 * token does not allow (hsmwrap's decrypt keys allow OAEP only) is passed
 * over.
 */
static int dec_start(struct cli *cli, hw_ctx *ctx, hw_envelope_cfg *cfg, hw_key **keys,
                     size_t nkeys, const hw_ectx *req, struct sink *out,
                     const struct keep *hdr, int try_pads, hw_dec_stream **dec)
{
	char first[512] = "";
	hw_err err = HW_OK;

	for (size_t p = 0; p < (try_pads ? NPADS : 1); p++) {
		if (try_pads && (err = hw_envelope_cfg_set_rsa_padding(cfg, rsa_pads[p].pad)))
			return cli_fail(cli, err, "decrypting");
		hw_dec_stream_free(*dec);
		*dec = NULL;
		/* Without --key, the message names its key and any key on the token may serve. */
		err = hw_dec_stream_new(ctx, cfg, nkeys ? keys : NULL, nkeys, req, sink_write, out,
		                        dec);
		if (!err)
			err = hw_dec_stream_update(*dec, hdr->p, hdr->len);
		if (err == HW_OK || out->total != 0 ||
		    (err != HW_ERR_INTEGRITY && err != HW_ERR_UNSUPPORTED))
			break;
		if (err == HW_ERR_INTEGRITY && !first[0])
			snprintf(first, sizeof(first), "%s (every --rsa-padding tried)",
			         hw_last_detail());
	}
	if (err == HW_OK)
		return 0;
	/* A padding the key does not allow says nothing; one that failed does. */
	if (err == HW_ERR_UNSUPPORTED && first[0] && out->total == 0)
		return cli_failf(cli, HW_ERR_INTEGRITY, "decrypting", "%s", first);
	return stream_fail(cli, out, err, "decrypting");
}

/*
 * Reads the input until its header parses (or HDR_KEEP bytes, whatever
 * the stream decides then), before the token is opened: input that is not
 * a message needs no PIN, and the token is not touched for it. Nothing is
 * lost: the bytes stay in *hdr and are fed to the stream first.
 */
static int prefetch_header(struct cli *cli, struct source *src, struct keep *hdr,
                           hw_envelope_info **info)
{
	hw_err err = HW_ERR_FORMAT;

	*info = NULL;
	if (!(hdr->p = malloc(HDR_KEEP)))
		return cli_failf(cli, HW_ERR_NOMEM, "decrypt", "out of memory");
	while (hdr->len < HDR_KEEP) {
		size_t want = HDR_KEEP - hdr->len;
		ssize_t r = source_read(src, hdr->p + hdr->len, want < IO_CHUNK ? want : IO_CHUNK);

		if (r < 0)
			return cli_failf(cli, HW_ERR_IO, "reading input", "%s: %s", src->name,
			                 stop_signal ? "interrupted" : strerror(errno));
		if (r == 0) {
			if (hdr->len == 0)
				return cli_failf(cli, HW_ERR_FORMAT, "decrypting", "%s is empty",
				                 src->name);
			return cli_fail(cli, hw_envelope_inspect(hdr->p, hdr->len, info),
			                "decrypting");
		}
		hdr->len += (size_t)r;
		err = hw_envelope_inspect(hdr->p, hdr->len, info);
		if (err == HW_OK)
			return 0;
		/* Only "too short" can change with more input. */
		if (err != HW_ERR_FORMAT)
			return cli_fail(cli, err, "decrypting");
	}
	return 0;
}

int cmd_decrypt(struct cli *cli, const struct cli_args *a)
{
	struct run r;
	hw_envelope_cfg *cfg = NULL;
	hw_dec_stream *dec = NULL;
	hw_envelope_info *info = NULL;
	hw_ectx *req = NULL;
	int pad_named = 0, try_pads = 0;
	hw_ctx *ctx = NULL;
	hw_key **keys = NULL;
	size_t nkeys = 0;
	int rc;

	if ((rc = run_start(cli, a, &r)))
		goto done;
	if ((rc = dec_config(cli, a, &cfg, &pad_named)) || (rc = cli_ectx(cli, a, &req)))
		goto done;
	if ((rc = source_open(cli, r.in_path, &r.src)) ||
	    (rc = prefetch_header(cli, &r.src, &r.hdr, &info)))
		goto done;
	if (info && !info->committing && !cli_flag(a, "allow-legacy")) {
		rc = cli_failf(cli, HW_ERR_FORMAT, "decrypting", "%s is a legacy message (suite "
		               "0x%04x, no key commitment); --allow-legacy decrypts it", r.src.name,
		               info->suite);
		goto done;
	}
	for (size_t i = 0; info && i < info->nedks; i++)
		try_pads |= !pad_named && is_rsa_edk(&info->edks[i], key_namespace(a));
	hw_envelope_info_free(info);
	info = NULL;
	if ((rc = cli_ctx(cli, NULL, CLI_CTX_TOKEN | CLI_CTX_LOGIN, &ctx)) ||
	    (rc = find_keys(cli, a, ctx, &keys, &nkeys)))
		goto done;
	if ((rc = run_output(cli, &r, 1, "decrypt")))
		goto done;
	r.out.hdr = &r.hdr;
	if ((rc = dec_start(cli, ctx, cfg, keys, nkeys, req, &r.out, &r.hdr, try_pads, &dec)) ||
	    (rc = pump(cli, &r.src, &r.out, r.chunk, feed_dec, dec, "decrypting")))
		goto done;
	/* Only now is the message authenticated as a whole (signature included). */
	if ((rc = run_commit(cli, &r, hw_dec_stream_final(dec, NULL), "decrypting")))
		goto done;
	info = keep_info(&r.hdr);
	if (cli->json) {
		header_json(cli->out, info);
		run_json(cli, &r, info);
	} else if (!is_stdio(r.out_path)) {
		printf("Decrypted %llu bytes into %s (suite 0x%04x, authenticated%s).\n",
		       r.out.total, r.out_path, info ? info->suite : 0u,
		       info && info->signed_ ? ", signature verified" : "");
		printf("Context: ");
		print_pairs_line(stdout, info);
	}
done:
	hw_dec_stream_free(dec);
	run_free(&r);
	hw_envelope_info_free(info);
	free_keys(keys, nkeys);
	hw_ctx_free(ctx);
	hw_ectx_free(req);
	hw_envelope_cfg_free(cfg);
	signals_restore(r.old);
	return rc;
}

/* ------------------------------------------------------------------ */
/* inspect                                                             */

/*
 * Reads until the header parses: 64 KiB first, doubling, at most
 * INSPECT_MAX. The header is parsed by the library's parser only.
 */
static int read_header(struct cli *cli, const char *path, hw_envelope_info **info)
{
	struct source src;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, want = IO_CHUNK;
	int eof = 0, rc;
	hw_err err = HW_ERR_FORMAT;

	if ((rc = source_open(cli, path, &src)))
		return rc;
	for (;;) {
		while (!eof && len < want) {
			ssize_t r;

			if (cap < want) {
				uint8_t *n = realloc(buf, want);

				if (!n) {
					rc = cli_failf(cli, HW_ERR_NOMEM, "reading input", "out of memory");
					goto out;
				}
				buf = n;
				cap = want;
			}
			r = source_read(&src, buf + len, want - len);
			if (r < 0) {
				rc = cli_failf(cli, HW_ERR_IO, "reading input", "%s: %s", src.name,
				               strerror(errno));
				goto out;
			}
			if (r == 0)
				eof = 1;
			len += (size_t)r;
		}
		err = len ? hw_envelope_inspect(buf, len, info) : HW_ERR_FORMAT;
		/* Too short might only mean the header is longer than what was read. */
		if (err != HW_ERR_FORMAT || eof || want >= INSPECT_MAX)
			break;
		want *= 2;
	}
	if (err == HW_ERR_FORMAT && len == 0)
		rc = cli_failf(cli, err, "reading header", "%s is empty", src.name);
	else if (err)
		rc = cli_fail(cli, err, "reading header");
out:
	free(buf);
	source_close(&src);
	return rc;
}

static void inspect_text(const hw_envelope_info *info)
{
	char hex[2 * 32 + 1];

	util_hex(info->message_id, info->message_id_len, hex);
	printf("Format:          AWS Encryption SDK message, version %u\n", info->version);
	printf("Suite:           0x%04x %s\n", info->suite, info->suite_name);
	printf("Key commitment:  %s\n", info->committing ? "yes" : "no (legacy; decrypt needs "
	       "--allow-legacy)");
	printf("Signed:          %s\n", info->signed_ ? "yes (ECDSA footer)" : "no");
	printf("Message ID:      %s\n", hex);
	if (info->framed)
		printf("Body:            framed, %lu-byte frames\n",
		       (unsigned long)info->frame_length);
	else
		printf("Body:            not framed (one block)\n");
	printf("Header:          %zu bytes\n", info->header_len);
	printf("Context:         %zu pair%s\n", info->npairs, info->npairs == 1 ? "" : "s");
	for (size_t i = 0; i < info->npairs; i++) {
		fputs("  ", stdout);
		put_safe(stdout, info->pairs[i].key);
		fputs(" = ", stdout);
		put_safe(stdout, info->pairs[i].value);
		fputc('\n', stdout);
	}
	printf("Wrapped data keys: %zu\n", info->nedks);
	for (size_t i = 0; i < info->nedks; i++) {
		const hw_envelope_edk *k = &info->edks[i];

		printf("  %zu. provider ", i + 1);
		put_safe(stdout, k->provider_id);
		if (k->key_name) {
			fputs(", key '", stdout);
			put_safe(stdout, k->key_name);
			fputc('\'', stdout);
		} else if (is_rsa_edk(k, NULL)) {
			char name[256];

			fputs(", RSA key '", stdout);
			put_safe(stdout, rsa_edk_name(k, name, sizeof(name)));
			fputc('\'', stdout);
		} else {
			printf(", provider info %zu bytes", k->provider_info_len);
		}
		printf(", %zu bytes\n", k->ciphertext_len);
	}
}

int cmd_inspect(struct cli *cli, const struct cli_args *a)
{
	hw_envelope_info *info = NULL;
	int rc = read_header(cli, a->pos[0], &info);

	if (rc)
		return rc;
	if (cli->json) {
		json_t *w = cli->out, *edks;

		cj_uint(w, "version", info->version);
		header_json(w, info);
		cj_bool(w, "committing", info->committing);
		cj_bool(w, "framed", info->framed);
		cj_uint(w, "header_length", info->header_len);
		pairs_json(w, "context", info);
		edks = cj_arr(w, "data_keys");
		for (size_t i = 0; i < info->nedks; i++) {
			const hw_envelope_edk *k = &info->edks[i];
			char *pi = malloc(2 * k->provider_info_len + 1);
			json_t *o = cj_obj(edks, NULL);

			cj_str(o, "provider_id", k->provider_id);
			cj_str(o, "key_name", k->key_name);
			if (pi)
				util_hex(k->provider_info, k->provider_info_len, pi);
			cj_str(o, "provider_info", pi);
			free(pi);
			cj_uint(o, "length", k->ciphertext_len);
		}
	} else {
		inspect_text(info);
	}
	hw_envelope_info_free(info);
	return 0;
}
