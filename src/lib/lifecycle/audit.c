/*
 * Tamper-evident audit log.
 *
 * One JSON object per line. Every record names the SHA-256 of the exact
 * bytes of the line before it ("prev"), so an edited, removed, inserted or
 * moved record breaks the chain; "seq" numbers records so that the break
 * can be located. Digest records carry a signature, made by an EC key in
 * the HSM, over the log id, their seq, time and prev: whoever has no HSM
 * access cannot rebuild a chain that still verifies. Records after the
 * last digest are protected by the chain only.
 *
 * Writers from several processes serialise on flock(): under the lock the
 * last line is re-read to get its hash and seq, the new line is written
 * with one O_APPEND write and fsync'd.
 */
#include "internal.h"
#include "base/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <jansson.h>

#define AUDIT_LINE_MAX (64u * 1024u)
#define GENESIS_PREFIX "hsmwrap-audit-v1 genesis "
#define DIGEST_PREFIX "hsmwrap-audit-v1 digest\n"
#define MAX_MEMBERS 64

/* ---------------------------------------------------------------- */
/* Records and their encoding (jansson)                              */

/*
 * The canonical encoding of a record: jansson's compact form with the
 * members in the order they are set here (JSON_PRESERVE_ORDER), UTF-8
 * as it is (no \u escapes for non-ASCII). For every record without
 * control characters this is byte for byte what the hand-written writer
 * of hsmwrap <= cc16f7c produced; control characters are now escaped
 * jansson's way (\t, \n, \u0001) and DEL is written as it is. The
 * chain hashes the bytes of each line as stored, so logs written either
 * way verify (tests/audit-fixture/).
 */
#define RECORD_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER)

/*
 * What a record may hold: one object whose values are strings,
 * non-negative integers, null, or objects of those (one level deep), at
 * most MAX_MEMBERS members each, names unique and no NUL in any string
 * (JSON_REJECT_DUPLICATES, jansson's default without JSON_ALLOW_NUL).
 */
static bool shape_ok(const json_t *v, int depth)
{
	const char *name;
	json_t *m;

	switch (json_typeof(v)) {
	case JSON_STRING:
	case JSON_NULL:
		return true;
	case JSON_INTEGER:
		return json_integer_value(v) >= 0;
	case JSON_OBJECT:
		if (depth >= 2 || json_object_size(v) > MAX_MEMBERS)
			return false;
		json_object_foreach((json_t *)v, name, m)
			if (!shape_ok(m, depth + 1))
				return false;
		return true;
	default:
		return false;
	}
}

static hw_err parse_record(const uint8_t *line, size_t len, json_t **root)
{
	json_error_t err;

	*root = NULL;
	if (len > AUDIT_LINE_MAX)
		return HW_ERR_TOO_LARGE;
	*root = json_loadb((const char *)line, len, JSON_REJECT_DUPLICATES, &err);
	if (!*root)
		return json_error_code(&err) == json_error_out_of_memory ? HW_ERR_NOMEM
		       : HW_ERR_FORMAT;
	if (!json_is_object(*root) || !shape_ok(*root, 0)) {
		json_decref(*root);
		*root = NULL;
		return HW_ERR_FORMAT;
	}
	return HW_OK;
}

static const json_t *jget(const json_t *o, const char *name)
{
	return json_is_object(o) ? json_object_get(o, name) : NULL;
}

static const char *jstr(const json_t *o, const char *name)
{
	const json_t *v = jget(o, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jnum(const json_t *o, const char *name, uint64_t *x)
{
	const json_t *v = jget(o, name);

	/* Never negative: shape_ok. */
	if (!json_is_integer(v))
		return false;
	*x = (uint64_t)json_integer_value(v);
	return true;
}

static bool is_hex(const char *s, size_t len)
{
	if (!s || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Valid UTF-8 passes; a byte that is not UTF-8 becomes U+FFFD, so every
 * string can be a JSON string (jansson takes UTF-8 only). NULL: null. */
static json_t *jtext(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n, i = 0;
	hw_wbuf w;
	uint8_t *out;
	size_t outlen;
	json_t *v;

	if (!s)
		return json_null();
	n = strlen(s);
	hw_wbuf_init(&w, 3 * n + 1);
	while (i < n) {
		unsigned c = p[i], need = 0, cp = 0, min = 0;

		if (c < 0x80) {
			hw_wbuf_u8(&w, (uint8_t)c);
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			need = 1, min = 0x80, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			need = 2, min = 0x800, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			need = 3, min = 0x10000, cp = c & 0x07;
		if (need && n - i > need) {
			unsigned k;

			for (k = 1; k <= need && (p[i + k] & 0xc0) == 0x80; k++)
				cp = (cp << 6) | (p[i + k] & 0x3f);
			if (k > need && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
				hw_wbuf_put(&w, p + i, need + 1);
				i += need + 1;
				continue;
			}
		}
		hw_wbuf_put(&w, "\xef\xbf\xbd", 3);
		i++;
	}
	if (hw_wbuf_finish(&w, &out, &outlen) != HW_OK)
		return NULL;
	v = json_stringn_nocheck((const char *)out, outlen);
	free(out);
	return v;
}

/* Sets o.name = v (v's reference is taken); false if anything is missing. */
static bool jset(json_t *o, const char *name, json_t *v)
{
	return o && json_object_set_new_nocheck(o, name, v) == 0;
}

/* The record's canonical line (without its newline) into w. */
static hw_err put_record(hw_wbuf *w, const json_t *rec)
{
	char *s = json_dumps(rec, RECORD_FLAGS);

	if (!s)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	hw_wbuf_put(w, s, strlen(s));
	free(s);
	return HW_OK;
}

static void now_utc(char out[32])
{
	struct timespec ts;
	struct tm tm;
	char base[24];

	clock_gettime(CLOCK_REALTIME, &ts);
	if (!gmtime_r(&ts.tv_sec, &tm)) {
		snprintf(out, 32, "1970-01-01T00:00:00.000Z");
		return;
	}
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 32, "%.19s.%03uZ", base, (unsigned)(ts.tv_nsec / 1000000L) % 1000u);
}

static void sha256_hex(const uint8_t *p, size_t n, char out[65])
{
	uint8_t md[32];
	unsigned mdlen = 0;

	if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1)
		memset(md, 0, sizeof(md));
	hw_hex(md, 32, out);
}

static void genesis_prev(const char *log_id, char out[65])
{
	char g[sizeof(GENESIS_PREFIX) + 64];

	snprintf(g, sizeof(g), "%s%s", GENESIS_PREFIX, log_id);
	sha256_hex((const uint8_t *)g, strlen(g), out);
}

/* What a digest signature covers. */
static size_t digest_msg(char *buf, size_t n, const char *log_id, uint64_t seq,
                         const char *time, const char *prev)
{
	int l = snprintf(buf, n, DIGEST_PREFIX "%s\n%" PRIu64 "\n%s\n%s\n", log_id, seq,
	                 time, prev);

	return l < 0 ? 0 : (size_t)l;
}

/* ---------------------------------------------------------------- */
/* The log handle                                                    */

struct hw_audit {
	int fd;
	char *path;
	char log_id[33];
	char key_label[129];
	char key_fp[65];
	char alg[16];               /* "ecdsa-sha256" | "ecdsa-sha384" */
	hw_key *signer;
	unsigned every;
	bool due;
};

HW_EXPORT const char *
hw_audit_key_label(const hw_audit *log)
{
	return log ? log->key_label : "";
}

HW_EXPORT const char *
hw_audit_log_id(const hw_audit *log)
{
	return log ? log->log_id : "";
}

HW_EXPORT int
hw_audit_digest_due(const hw_audit *log)
{
	return log && log->due;
}

static hw_err io_fail(const char *what, const char *path)
{
	return hw_fail(HW_ERR_IO, 0, "%s %s: %s", what, path, strerror(errno));
}

static hw_err read_at(int fd, uint8_t *buf, size_t n, off_t off)
{
	while (n) {
		ssize_t k = pread(fd, buf, n, off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return HW_ERR_IO;
		buf += k;
		n -= (size_t)k;
		off += k;
	}
	return HW_OK;
}

/* The first line of the file, parsed: it must be a genesis record. */
static hw_err read_genesis(hw_audit *a)
{
	uint8_t *buf;
	struct stat st;
	size_t n;
	const uint8_t *nl;
	json_t *root = NULL;
	const json_t *k;
	const char *s;
	uint64_t seq;
	hw_err e;

	if (fstat(a->fd, &st) < 0)
		return io_fail("reading", a->path);
	n = (size_t)st.st_size < AUDIT_LINE_MAX + 1 ? (size_t)st.st_size : AUDIT_LINE_MAX + 1;
	if (n == 0)
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s is empty (no genesis record)", a->path);
	buf = malloc(n);
	if (!buf)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (read_at(a->fd, buf, n, 0) != HW_OK) {
		free(buf);
		return io_fail("reading", a->path);
	}
	nl = memchr(buf, '\n', n);
	e = nl ? parse_record(buf, (size_t)(nl - buf), &root) : HW_ERR_FORMAT;
	free(buf);
	if (e != HW_OK)
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s: line 1 is not a genesis record",
		               a->path);
	k = jget(root, "audit_key");
	s = jstr(root, "type");
	if (!s || strcmp(s, "genesis") != 0 || !jnum(root, "seq", &seq) || seq != 0 ||
	    !is_hex(jstr(root, "log_id"), 32) || !k ||
	    !is_hex(jstr(k, "fingerprint"), 64) || !jstr(k, "label") || !jstr(k, "alg")) {
		json_decref(root);
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s: line 1 is not a genesis record",
		               a->path);
	}
	snprintf(a->log_id, sizeof(a->log_id), "%s", jstr(root, "log_id"));
	snprintf(a->key_fp, sizeof(a->key_fp), "%s", jstr(k, "fingerprint"));
	snprintf(a->key_label, sizeof(a->key_label), "%s", jstr(k, "label"));
	snprintf(a->alg, sizeof(a->alg), "%s", jstr(k, "alg"));
	json_decref(root);
	return HW_OK;
}

/*
 * Under the lock: seq and hash of the last line. A last line without its
 * newline is a torn write or a cut file: appending would hide it.
 */
static hw_err read_tail(hw_audit *a, uint64_t *seq, char hash[65])
{
	struct stat st;
	size_t n, start;
	uint8_t *buf;
	json_t *root = NULL;
	hw_err e;

	if (fstat(a->fd, &st) < 0)
		return io_fail("reading", a->path);
	if (st.st_size == 0)
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s is empty (no genesis record)", a->path);
	n = (size_t)st.st_size < AUDIT_LINE_MAX + 2 ? (size_t)st.st_size : AUDIT_LINE_MAX + 2;
	buf = malloc(n);
	if (!buf)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (read_at(a->fd, buf, n, st.st_size - (off_t)n) != HW_OK) {
		free(buf);
		return io_fail("reading", a->path);
	}
	if (buf[n - 1] != '\n') {
		free(buf);
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s: the last record is incomplete "
		               "(no newline); run `hsmwrap audit verify`", a->path);
	}
	for (start = n - 1; start > 0 && buf[start - 1] != '\n'; start--)
		;
	if (start == 0 && n == AUDIT_LINE_MAX + 2) {
		free(buf);
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s: the last record is too long", a->path);
	}
	e = parse_record(buf + start, n - 1 - start, &root);
	if (e == HW_OK && !jnum(root, "seq", seq))
		e = HW_ERR_FORMAT;
	if (e == HW_OK)
		sha256_hex(buf + start, n - 1 - start, hash);
	json_decref(root);
	free(buf);
	if (e != HW_OK)
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s: the last record cannot be read; "
		               "run `hsmwrap audit verify`", a->path);
	return HW_OK;
}

static hw_err lock_log(hw_audit *a)
{
	while (flock(a->fd, LOCK_EX) < 0) {
		if (errno != EINTR)
			return io_fail("locking", a->path);
	}
	return HW_OK;
}

static void unlock_log(hw_audit *a)
{
	(void)flock(a->fd, LOCK_UN);
}

/* One line, all or nothing: a failed write is cut off again (we hold the lock). */
static hw_err append_line(hw_audit *a, hw_wbuf *w)
{
	struct stat st;
	hw_err e;

	hw_wbuf_u8(w, '\n');
	if (w->err != HW_OK)
		return hw_fail(w->err, 0, "audit record too large");
	if (fstat(a->fd, &st) < 0)
		return io_fail("writing", a->path);
	e = hw_write_all(a->fd, w->p, w->len);
	if (e == HW_OK && fsync(a->fd) < 0)
		e = HW_ERR_IO;
	if (e != HW_OK) {
		e = io_fail("writing", a->path);
		if (ftruncate(a->fd, st.st_size) == 0)
			(void)fsync(a->fd);
	}
	return e;
}

/* Blank-padded PKCS#11 field to a C string. */
static void unpad(char *out, const unsigned char *in, size_t n)
{
	memcpy(out, in, n);
	while (n && (out[n - 1] == ' ' || out[n - 1] == '\0'))
		n--;
	out[n] = '\0';
}

static json_t *who(hw_ctx *ctx, const char *token)
{
	const struct passwd *pw = getpwuid(geteuid());
	json_t *o;
	bool ok;
	char host[256] = "", tlabel[33] = "", serial[17] = "";
	const char *uri = token;
	char *shown = NULL;

	if (gethostname(host, sizeof(host) - 1) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	if (ctx) {
		pthread_mutex_lock(&ctx->lock);
		if (ctx->have_slot) {
			unpad(tlabel, ctx->tinfo.label, sizeof(ctx->tinfo.label));
			unpad(serial, ctx->tinfo.serialNumber, sizeof(ctx->tinfo.serialNumber));
			if (ctx->token_uri_str[0])
				uri = ctx->token_uri_str;
		}
		pthread_mutex_unlock(&ctx->lock);
	} else if (token) {
		/* Only a URI: its token= and serial= are what is known. */
		P11KitUri *pu = p11_kit_uri_new();

		if (pu && p11_kit_uri_parse(token, P11_KIT_URI_FOR_TOKEN, pu) == P11_KIT_URI_OK) {
			CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(pu);

			unpad(tlabel, ti->label, sizeof(ti->label));
			unpad(serial, ti->serialNumber, sizeof(ti->serialNumber));
		}
		if (pu)
			p11_kit_uri_free(pu);
	}
	/* The caller's URI may carry pin-value: the record never does. */
	if (uri && uri == token) {
		if (hw_uri_redact(token, &shown) != HW_OK)
			shown = NULL;
		uri = shown ? shown : "(not shown)";
	}
	o = json_object();
	ok = jset(o, "user", jtext(pw ? pw->pw_name : "?")) &&
	     jset(o, "uid", json_integer((json_int_t)geteuid())) &&
	     jset(o, "host", jtext(host)) &&
	     jset(o, "token", jtext(tlabel[0] ? tlabel : NULL)) &&
	     jset(o, "serial", jtext(serial[0] ? serial : NULL)) &&
	     jset(o, "uri", jtext(uri));
	free(shown);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The context's pairs, read back from its ESDK serialization. */
static hw_err context_member(json_t *rec, const hw_ectx *ec)
{
	uint8_t *ser = NULL;
	size_t serlen = 0;
	uint16_t count = 0;
	json_t *o = json_object();
	hw_rbuf r;
	hw_err e;

	if (!jset(rec, "context", o))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	if (!ec || hw_ectx_count(ec) == 0)
		return HW_OK;
	e = hw_ectx_serialize(ec, &ser, &serlen);
	if (e != HW_OK)
		return e;
	hw_rbuf_init(&r, ser, serlen);
	e = hw_rbuf_u16(&r, &count);
	for (uint16_t i = 0; e == HW_OK && i < count; i++) {
		const uint8_t *k, *v;
		size_t kl, vl;
		char *ks, *vs;
		json_t *key;

		if ((e = hw_rbuf_str16(&r, &k, &kl)) != HW_OK ||
		    (e = hw_rbuf_str16(&r, &v, &vl)) != HW_OK)
			break;
		ks = strndup((const char *)k, kl);
		vs = strndup((const char *)v, vl);
		key = ks ? jtext(ks) : NULL;
		if (!key || !vs || !jset(o, json_string_value(key), jtext(vs)))
			e = HW_ERR_NOMEM;
		json_decref(key);
		free(ks);
		free(vs);
	}
	free(ser);
	return e == HW_OK ? HW_OK : hw_fail(e, 0, "encryption context");
}

/* result: NULL for ev->result; attempt: the attempt's seq this is the outcome of, or 0. */
static hw_err build_event(hw_wbuf *w, uint64_t seq, const char *prev, const hw_audit_event *ev,
                          const char *result, uint64_t attempt)
{
	char t[32], idhex[129];
	const char *label = ev->key_label, *id = ev->key_id_hex;
	json_t *rec = json_object(), *key = json_null();
	hw_err e;

	now_utc(t);
	if (ev->key) {
		label = ev->key->label;
		hw_hex(ev->key->id, ev->key->id_len, idhex);
		id = idhex;
	}
	if (label || id) {
		json_decref(key);
		key = json_object();
		if (!jset(key, "label", jtext(label)) || !jset(key, "id", jtext(id)) ||
		    !jset(key, "version", jtext(ev->key_version))) {
			json_decref(key);
			key = NULL;
		}
	}
	if (!jset(rec, "seq", json_integer((json_int_t)seq)) || !jset(rec, "time", jtext(t)) ||
	    !jset(rec, "type", jtext("event")) || !jset(rec, "who", who(ev->ctx, ev->token)) ||
	    !jset(rec, "action", jtext(ev->action)) || !jset(rec, "key", key)) {
		json_decref(rec);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	if (context_member(rec, ev->context) != HW_OK) {
		json_decref(rec);
		return hw_last_ckrv() ? HW_ERR_HSM : HW_ERR_NOMEM;
	}
	if (!jset(rec, "result", jtext(result ? result
	                                      : ev->result == HW_OK ? "ok" : hw_errname(ev->result))) ||
	    (attempt && !jset(rec, "attempt", json_integer((json_int_t)attempt))) ||
	    !jset(rec, "prev", jtext(prev)))
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
	else
		e = put_record(w, rec);
	json_decref(rec);
	return e;
}

/* Under the lock; the last line was seq `last`, hash `prev`. */
static hw_err write_digest(hw_audit *a, uint64_t last, const char *prev, const char *reason)
{
	char t[32], msg[512], *sighex = NULL;
	hw_sig_alg alg = strcmp(a->alg, "ecdsa-sha384") == 0 ? HW_SIG_ECDSA_SHA384
	                                                      : HW_SIG_ECDSA_SHA256;
	uint8_t *sig = NULL;
	size_t siglen = 0, mlen;
	json_t *rec;
	hw_wbuf w;
	hw_err e;

	now_utc(t);
	mlen = digest_msg(msg, sizeof(msg), a->log_id, last + 1, t, prev);
	e = hw_sign(a->signer, alg, (const uint8_t *)msg, mlen, &sig, &siglen);
	if (e != HW_OK)
		return e;
	sighex = malloc(2 * siglen + 1);
	if (!sighex) {
		free(sig);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	hw_hex(sig, siglen, sighex);
	free(sig);
	rec = json_object();
	if (!jset(rec, "seq", json_integer((json_int_t)(last + 1))) ||
	    !jset(rec, "time", jtext(t)) || !jset(rec, "type", jtext("digest")) ||
	    !jset(rec, "reason", jtext(reason)) ||
	    !jset(rec, "covers", json_integer((json_int_t)last)) ||
	    !jset(rec, "alg", jtext(a->alg)) || !jset(rec, "sig", jtext(sighex)) ||
	    !jset(rec, "prev", jtext(prev))) {
		json_decref(rec);
		free(sighex);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	free(sighex);
	hw_wbuf_init(&w, AUDIT_LINE_MAX);
	e = put_record(&w, rec);
	json_decref(rec);
	if (e == HW_OK)
		e = append_line(a, &w);
	hw_wbuf_free(&w);
	return e;
}

static hw_err key_fingerprint(hw_key *key, char fp[65])
{
	uint8_t *der = NULL;
	size_t len = 0;
	hw_err e = hw_key_public_der(key, &der, &len);

	if (e != HW_OK)
		return e;
	sha256_hex(der, len, fp);
	free(der);
	return HW_OK;
}

static hw_err open_fd(hw_audit *a, const char *path, int flags)
{
	a->path = strdup(path);
	if (!a->path)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	a->fd = open(path, flags | O_CLOEXEC, 0640);
	if (a->fd < 0)
		return errno == ENOENT
		       ? hw_fail(HW_ERR_IO, 0, "no audit log at %s (create one with `hsmwrap "
		                 "audit init`)", path)
		       : io_fail(flags & O_CREAT ? "creating" : "opening", path);
	return HW_OK;
}

HW_EXPORT void
hw_audit_close(hw_audit *log)
{
	if (!log)
		return;
	if (log->fd >= 0)
		close(log->fd);
	free(log->path);
	free(log);
}

static hw_audit *audit_new(void)
{
	hw_audit *a = calloc(1, sizeof(*a));

	if (a) {
		a->fd = -1;
		a->every = HW_AUDIT_DIGEST_EVERY;
	}
	return a;
}

HW_EXPORT hw_err
hw_audit_open(const char *path, hw_audit **out)
{
	hw_audit *a;
	uint64_t seq;
	char h[65];
	hw_err e;

	if (!path || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_open");
	hw_clear_error();
	if (!(a = audit_new()))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = open_fd(a, path, O_RDWR | O_APPEND);
	if (e == HW_OK && (e = lock_log(a)) == HW_OK) {
		e = read_genesis(a);
		if (e == HW_OK)
			e = read_tail(a, &seq, h);
		unlock_log(a);
	}
	if (e != HW_OK) {
		hw_audit_close(a);
		return e;
	}
	*out = a;
	return HW_OK;
}

HW_EXPORT void
hw_audit_set_digest_every(hw_audit *log, unsigned every)
{
	if (log)
		log->every = every ? every : HW_AUDIT_DIGEST_EVERY;
}

HW_EXPORT hw_err
hw_audit_set_signer(hw_audit *log, hw_key *signer)
{
	char fp[65];
	hw_err e;

	if (!log || !signer)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_set_signer");
	e = key_fingerprint(signer, fp);
	if (e != HW_OK)
		return e;
	if (strcmp(fp, log->key_fp) != 0)
		return hw_fail(HW_ERR_WRONG_KEY, 0, "key '%s' is not the audit key of %s "
		               "(fingerprint %.16s..., the log names %.16s... '%s')", signer->label,
		               log->path, fp, log->key_fp, log->key_label);
	log->signer = signer;
	return HW_OK;
}

HW_EXPORT hw_err
hw_audit_create(const char *path, hw_key *signer, hw_audit **out)
{
	hw_key_info ki;
	hw_audit *a;
	uint8_t rnd[16];
	char t[32], prev[65];
	json_t *rec, *key;
	hw_wbuf w;
	hw_err e;

	if (!path || !signer || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_create");
	hw_clear_error();
	e = hw_key_info_get(signer, &ki);
	if (e != HW_OK)
		return e;
	if ((ki.type != HW_KEY_EC_P256 && ki.type != HW_KEY_EC_P384) || ki.sign != 1)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "the audit key '%s' must be an EC P-256 or "
		               "P-384 sign key", signer->label);
	if (!(a = audit_new()))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	snprintf(a->alg, sizeof(a->alg), "%s",
	         ki.type == HW_KEY_EC_P384 ? "ecdsa-sha384" : "ecdsa-sha256");
	snprintf(a->key_label, sizeof(a->key_label), "%s", signer->label);
	e = key_fingerprint(signer, a->key_fp);
	if (e == HW_OK && hw_random(rnd, sizeof(rnd)) != HW_OK)
		e = hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes");
	if (e == HW_OK)
		e = open_fd(a, path, O_RDWR | O_APPEND | O_CREAT | O_EXCL);
	if (e != HW_OK) {
		hw_audit_close(a);
		return e;
	}
	hw_hex(rnd, sizeof(rnd), a->log_id);
	genesis_prev(a->log_id, prev);
	now_utc(t);
	rec = json_object();
	key = json_object();
	if (!jset(key, "label", jtext(a->key_label)) || !jset(key, "id", jtext(ki.id_hex)) ||
	    !jset(key, "alg", jtext(a->alg)) || !jset(key, "fingerprint", jtext(a->key_fp))) {
		json_decref(key);
		key = NULL;
	}
	hw_wbuf_init(&w, AUDIT_LINE_MAX);
	if (!jset(rec, "seq", json_integer(0)) || !jset(rec, "time", jtext(t)) ||
	    !jset(rec, "type", jtext("genesis")) || !jset(rec, "log_id", jtext(a->log_id)) ||
	    !jset(rec, "audit_key", key) || !jset(rec, "prev", jtext(prev)))
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
	else
		e = put_record(&w, rec);
	json_decref(rec);
	if (e == HW_OK)
		e = lock_log(a);
	if (e == HW_OK) {
		e = append_line(a, &w);
		unlock_log(a);
	}
	hw_wbuf_free(&w);
	if (e == HW_OK) {
		/* The new name must survive a crash too. */
		char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
		int dfd;

		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
		free(dir);
	}
	if (e != HW_OK) {
		(void)unlink(path);
		hw_audit_close(a);
		return e;
	}
	a->signer = signer;
	*out = a;
	return HW_OK;
}

static hw_err append_event(hw_audit *log, const hw_audit_event *ev, const char *result,
                           uint64_t attempt, uint64_t *seq_out)
{
	uint64_t seq;
	char prev[65];
	hw_wbuf w;
	hw_err e;

	if (!log || !ev || !ev->action)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_append");
	e = lock_log(log);
	if (e != HW_OK)
		return e;
	e = read_tail(log, &seq, prev);
	if (e == HW_OK) {
		hw_wbuf_init(&w, AUDIT_LINE_MAX);
		e = build_event(&w, seq + 1, prev, ev, result, attempt);
		if (e == HW_OK)
			e = append_line(log, &w);
		if (e == HW_OK) {
			sha256_hex(w.p, w.len - 1, prev);
			seq++;
			if (seq_out)
				*seq_out = seq;
		}
		hw_wbuf_free(&w);
	}
	/* Digests land on multiples of `every`: no state but the seq. */
	if (e == HW_OK && (seq + 1) % log->every == 0) {
		if (log->signer)
			e = write_digest(log, seq, prev, "periodic");
		else
			log->due = true;
	}
	unlock_log(log);
	return e;
}

HW_EXPORT hw_err
hw_audit_append(hw_audit *log, const hw_audit_event *ev)
{
	return append_event(log, ev, NULL, 0, NULL);
}

/*
 * The record is on disk (append_line fsyncs) before this returns: an
 * action taken afterwards can lose its outcome in a crash, never its trace.
 */
HW_EXPORT hw_err
hw_audit_attempt(hw_audit *log, const hw_audit_event *ev, uint64_t *seq)
{
	if (!seq)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_attempt");
	*seq = 0;
	return append_event(log, ev, "attempt", 0, seq);
}

HW_EXPORT hw_err
hw_audit_outcome(hw_audit *log, const hw_audit_event *ev, uint64_t attempt_seq)
{
	if (!attempt_seq)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_outcome");
	return append_event(log, ev, NULL, attempt_seq, NULL);
}

HW_EXPORT hw_err
hw_audit_digest(hw_audit *log, const char *reason)
{
	uint64_t seq;
	char prev[65];
	hw_err e;

	if (!log)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_digest");
	if (!log->signer)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no audit signing key set for %s", log->path);
	e = lock_log(log);
	if (e != HW_OK)
		return e;
	e = read_tail(log, &seq, prev);
	if (e == HW_OK)
		e = write_digest(log, seq, prev, reason ? reason : "manual");
	if (e == HW_OK)
		log->due = false;
	unlock_log(log);
	return e;
}

/* ---------------------------------------------------------------- */
/* Verification, one line at a time                                 */

struct vstate {
	hw_audit_report *rep;
	EVP_PKEY *pub;              /* NULL: the key did not match (already failed) */
	char alg[16];
	uint64_t line;
	/* The two lines before this one, for telling an insertion from an edit. */
	char h1[65], h2[65];
	uint64_t s1, s2;
	bool failed;
	/* Attempts without an outcome so far (seq numbers, in log order). */
	uint64_t *open_att;
	size_t nopen, capopen;
};


static hw_err vbad(struct vstate *st, uint64_t line, const uint64_t *seq, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static hw_err vbad(struct vstate *st, uint64_t line, const uint64_t *seq, const char *fmt, ...)
{
	va_list ap;

	st->failed = true;
	st->rep->bad_line = line;
	st->rep->bad_seq_known = seq != NULL;
	st->rep->bad_seq = seq ? *seq : 0;
	va_start(ap, fmt);
	vsnprintf(st->rep->reason, sizeof(st->rep->reason), fmt, ap);
	va_end(ap);
	return hw_fail(HW_ERR_INTEGRITY, 0, "audit log: line %" PRIu64 ": %s", line,
	               st->rep->reason);
}

static bool hex_decode(const char *s, uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(s);

	if (n % 2 || n / 2 > max || !is_hex(s, n))
		return false;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned hi = s[2 * i] <= '9' ? (unsigned)(s[2 * i] - '0') : (unsigned)(s[2 * i] - 'a' + 10);
		unsigned lo = s[2 * i + 1] <= '9' ? (unsigned)(s[2 * i + 1] - '0')
		                                  : (unsigned)(s[2 * i + 1] - 'a' + 10);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*len = n / 2;
	return true;
}

static hw_err v_genesis(struct vstate *st, const json_t *root, const uint8_t *spki,
                        size_t spki_len)
{
	hw_audit_report *rep = st->rep;
	const json_t *k = jget(root, "audit_key");
	const char *type = jstr(root, "type"), *alg = jstr(k, "alg");
	char want[65], fp[65];
	uint64_t seq;

	if (!type || strcmp(type, "genesis") != 0 || !jnum(root, "seq", &seq) || seq != 0)
		return vbad(st, 1, NULL, "the first record is not a genesis record with seq 0");
	if (!is_hex(jstr(root, "log_id"), 32) || !k || !jstr(k, "label") ||
	    !is_hex(jstr(k, "fingerprint"), 64) || !alg ||
	    (strcmp(alg, "ecdsa-sha256") != 0 && strcmp(alg, "ecdsa-sha384") != 0))
		return vbad(st, 1, &seq, "the genesis record lacks a log id or an audit key");
	snprintf(rep->log_id, sizeof(rep->log_id), "%s", jstr(root, "log_id"));
	snprintf(rep->key_label, sizeof(rep->key_label), "%s", jstr(k, "label"));
	snprintf(rep->key_fingerprint, sizeof(rep->key_fingerprint), "%s", jstr(k, "fingerprint"));
	snprintf(st->alg, sizeof(st->alg), "%s", alg);
	genesis_prev(rep->log_id, want);
	if (!jstr(root, "prev") || strcmp(jstr(root, "prev"), want) != 0)
		return vbad(st, 1, &seq, "the genesis record's prev is not the hash of its log id");
	sha256_hex(spki, spki_len, fp);
	if (strcmp(fp, rep->key_fingerprint) != 0) {
		st->failed = true;
		return hw_fail(HW_ERR_WRONG_KEY, 0, "the public key given (SHA-256 %.16s...) is "
		               "not this log's audit key '%s' (%.16s...)", fp, rep->key_label,
		               rep->key_fingerprint);
	}
	return HW_OK;
}

static hw_err v_digest(struct vstate *st, const json_t *root, uint64_t seq)
{
	const char *alg = jstr(root, "alg"), *sighex = jstr(root, "sig"), *t = jstr(root, "time");
	uint8_t sig[256];
	size_t siglen, mlen;
	uint64_t covers;
	char msg[512];
	EVP_MD_CTX *md;
	int ok;

	if (!jnum(root, "covers", &covers) || covers + 1 != seq || !t || strlen(t) > 40)
		return vbad(st, st->line, &seq, "digest record with a wrong covers or time field");
	if (!alg || strcmp(alg, st->alg) != 0)
		return vbad(st, st->line, &seq, "digest signed with %s, the log's key uses %s",
		            alg ? alg : "(none)", st->alg);
	if (!sighex || !hex_decode(sighex, sig, sizeof(sig), &siglen))
		return vbad(st, st->line, &seq, "digest record without a readable signature");
	mlen = digest_msg(msg, sizeof(msg), st->rep->log_id, seq, t, jstr(root, "prev"));
	md = EVP_MD_CTX_new();
	if (!md)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	ok = EVP_DigestVerifyInit(md, NULL, strcmp(alg, "ecdsa-sha384") == 0 ? EVP_sha384()
	                          : EVP_sha256(), NULL, st->pub) == 1 &&
	     EVP_DigestVerify(md, sig, siglen, (const uint8_t *)msg, mlen) == 1;
	EVP_MD_CTX_free(md);
	if (!ok)
		return vbad(st, st->line, &seq, "the digest signature does not verify");
	st->rep->digests++;
	st->rep->last_digest_line = st->line;
	st->rep->uncovered = 0;
	return HW_OK;
}

/* An attempt record opens, an outcome naming it closes. */
static hw_err v_attempts(struct vstate *st, const json_t *root, uint64_t seq)
{
	const char *result = jstr(root, "result");
	uint64_t att;

	if (result && strcmp(result, "attempt") == 0) {
		if (st->nopen == st->capopen) {
			size_t nc = st->capopen ? st->capopen * 2 : 16;
			uint64_t *n = realloc(st->open_att, nc * sizeof(*n));

			if (!n)
				return hw_fail(HW_ERR_NOMEM, 0, NULL);
			st->open_att = n;
			st->capopen = nc;
		}
		st->open_att[st->nopen++] = seq;
		return HW_OK;
	}
	if (!jnum(root, "attempt", &att))
		return HW_OK;
	for (size_t i = 0; i < st->nopen; i++) {
		if (st->open_att[i] == att) {
			memmove(&st->open_att[i], &st->open_att[i + 1],
			        (st->nopen - i - 1) * sizeof(*st->open_att));
			st->nopen--;
			return HW_OK;
		}
	}
	return vbad(st, st->line, &seq, "outcome of seq %" PRIu64 ", which is not an open "
	            "attempt", att);
}

static hw_err v_line(struct vstate *st, const uint8_t *p, size_t n, const uint8_t *spki,
                     size_t spki_len)
{
	hw_audit_report *rep = st->rep;
	json_t *root = NULL;
	const char *type, *prev;
	char h[65];
	uint64_t seq;
	bool is_digest;
	hw_err e;

	st->line++;
	rep->records = st->line;
	e = parse_record(p, n, &root);
	if (e == HW_ERR_NOMEM)
		return hw_fail(e, 0, NULL);
	if (e != HW_OK)
		return vbad(st, st->line, NULL, "not a well-formed record");
	if (!jnum(root, "seq", &seq) || !(prev = jstr(root, "prev")) || !is_hex(prev, 64) ||
	    !(type = jstr(root, "type"))) {
		json_decref(root);
		return vbad(st, st->line, NULL, "record without seq, type or prev");
	}
	sha256_hex(p, n, h);
	if (st->line == 1) {
		e = v_genesis(st, root, spki, spki_len);
	} else if (strcmp(type, "genesis") == 0) {
		e = vbad(st, st->line, &seq, "a second genesis record");
	} else if (st->line > 2 && seq == st->s2 + 1 && strcmp(prev, st->h2) == 0) {
		/* It follows the line before last: the last one does not belong. */
		e = vbad(st, st->line - 1, &st->s1, "record inserted (the record after it, "
		         "seq %" PRIu64 ", follows the one before it)", seq);
	} else if (seq != st->s1 + 1) {
		e = vbad(st, st->line, &seq, seq > st->s1 + 1
		         ? "seq %" PRIu64 " follows seq %" PRIu64 ": records removed or moved before it"
		         : "seq %" PRIu64 " follows seq %" PRIu64 ": records out of order or duplicated",
		         seq, st->s1);
	} else if (strcmp(prev, st->h1) != 0) {
		e = vbad(st, st->line - 1, &st->s1, "record altered: its hash is not the prev of "
		         "the next record (seq %" PRIu64 ")", seq);
	} else if (strcmp(type, "digest") == 0) {
		e = v_digest(st, root, seq);
	} else if (strcmp(type, "event") != 0) {
		e = vbad(st, st->line, &seq, "unknown record type");
	} else {
		e = v_attempts(st, root, seq);
	}
	is_digest = strcmp(type, "digest") == 0;
	json_decref(root);
	if (e != HW_OK)
		return e;
	if (st->line > 1 && !is_digest)
		rep->uncovered++;
	else if (st->line == 1)
		rep->uncovered = 1;
	memcpy(st->h2, st->h1, sizeof(st->h2));
	st->s2 = st->s1;
	memcpy(st->h1, h, sizeof(st->h1));
	st->s1 = seq;
	memcpy(rep->head, h, sizeof(rep->head));
	rep->head_seq = seq;
	return HW_OK;
}

static hw_err v_begin(struct vstate *st, const uint8_t *spki, size_t spki_len,
                      hw_audit_report *rep)
{
	const uint8_t *p = spki;

	memset(st, 0, sizeof(*st));
	memset(rep, 0, sizeof(*rep));
	st->rep = rep;
	if (!spki || !spki_len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no audit public key");
	st->pub = d2i_PUBKEY(NULL, &p, (long)spki_len);
	if (!st->pub || p != spki + spki_len) {
		EVP_PKEY_free(st->pub);
		st->pub = NULL;
		return hw_fail(HW_ERR_FORMAT, 0, "the audit public key is not a DER "
		               "SubjectPublicKeyInfo");
	}
	return HW_OK;
}

static hw_err v_end(struct vstate *st, hw_err e)
{
	EVP_PKEY_free(st->pub);
	if (e == HW_OK && st->line == 0)
		e = vbad(st, 1, NULL, "the log is empty (no genesis record)");
	st->rep->unfinished = st->nopen;
	st->rep->unfinished_seq = st->nopen ? st->open_att[0] : 0;
	free(st->open_att);
	st->open_att = NULL;
	return e;
}

HW_EXPORT hw_err
hw_audit_verify(const uint8_t *log, size_t len, const uint8_t *spki, size_t spki_len,
                hw_audit_report *rep)
{
	struct vstate st;
	hw_rbuf r;
	hw_err e;

	if ((!log && len) || !rep)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_verify");
	hw_clear_error();
	e = v_begin(&st, spki, spki_len, rep);
	if (e != HW_OK)
		return e;
	hw_rbuf_init(&r, log, len);
	while (e == HW_OK && hw_rbuf_left(&r)) {
		const uint8_t *start = hw_rbuf_pos(&r), *nl = memchr(start, '\n', hw_rbuf_left(&r));
		size_t n;

		if (!nl) {
			e = vbad(&st, st.line + 1, NULL, "incomplete last record (no newline): "
			         "the log was cut or a write was torn");
			break;
		}
		n = (size_t)(nl - start);
		(void)hw_rbuf_bytes(&r, n + 1, NULL);
		e = v_line(&st, start, n, spki, spki_len);
	}
	return v_end(&st, e);
}

HW_EXPORT hw_err
hw_audit_verify_file(const char *path, const uint8_t *spki, size_t spki_len,
                     hw_audit_report *rep)
{
	struct vstate st;
	uint8_t *buf;
	size_t n = 0;
	FILE *f;
	int c;
	hw_err e;

	if (!path || !rep)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_verify_file");
	hw_clear_error();
	e = v_begin(&st, spki, spki_len, rep);
	if (e != HW_OK)
		return e;
	f = fopen(path, "rb");
	buf = malloc(AUDIT_LINE_MAX + 1);
	if (!f || !buf) {
		e = f ? hw_fail(HW_ERR_NOMEM, 0, NULL) : io_fail("opening", path);
		if (f)
			fclose(f);
		free(buf);
		return v_end(&st, e);
	}
	while (e == HW_OK && (c = getc_unlocked(f)) != EOF) {
		if (c != '\n') {
			if (n == AUDIT_LINE_MAX) {
				e = vbad(&st, st.line + 1, NULL, "record longer than %u bytes",
				         AUDIT_LINE_MAX);
				break;
			}
			buf[n++] = (uint8_t)c;
			continue;
		}
		e = v_line(&st, buf, n, spki, spki_len);
		n = 0;
	}
	if (e == HW_OK && ferror(f))
		e = io_fail("reading", path);
	else if (e == HW_OK && n)
		e = vbad(&st, st.line + 1, NULL, "incomplete last record (no newline): "
		         "the log was cut or a write was torn");
	fclose(f);
	free(buf);
	return v_end(&st, e);
}

/* ---------------------------------------------------------------- */
/* Parsed records for readers                                        */

static hw_err dup_field(const json_t *o, const char *name, char **out)
{
	const char *s = jstr(o, name);

	*out = NULL;
	if (s && !(*out = strdup(s)))
		return HW_ERR_NOMEM;
	return HW_OK;
}

HW_EXPORT void
hw_audit_entry_free(hw_audit_entry *e)
{
	if (!e)
		return;
	free(e->time);
	free(e->user);
	free(e->host);
	free(e->token);
	free(e->action);
	free(e->key_label);
	free(e->key_id);
	free(e->key_version);
	free(e->result);
	free(e->reason);
	free(e->prev);
	for (size_t i = 0; i < e->ncontext; i++) {
		free(e->context[i].key);
		free(e->context[i].value);
	}
	free(e->context);
	free(e);
}

HW_EXPORT hw_err
hw_audit_entry_parse(const uint8_t *line, size_t len, hw_audit_entry **out)
{
	json_t *root = NULL;
	const json_t *who, *key, *ctx;
	const char *type;
	hw_audit_entry *en;
	hw_err e;

	if ((!line && len) || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_entry_parse");
	e = parse_record(line, len, &root);
	if (e != HW_OK)
		return hw_fail(e, 0, "not an audit record");
	type = jstr(root, "type");
	en = calloc(1, sizeof(*en));
	if (!en) {
		json_decref(root);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	if (!type || strlen(type) >= sizeof(en->type) || !jnum(root, "seq", &en->seq) ||
	    !jstr(root, "time") || !jstr(root, "prev")) {
		json_decref(root);
		hw_audit_entry_free(en);
		return hw_fail(HW_ERR_FORMAT, 0, "not an audit record (seq, type, time, prev)");
	}
	snprintf(en->type, sizeof(en->type), "%s", type);
	who = jget(root, "who");
	key = jget(root, "key");
	ctx = jget(root, "context");
	if (strcmp(type, "genesis") == 0)
		key = jget(root, "audit_key");
	e = dup_field(root, "time", &en->time);
	if (e == HW_OK) e = dup_field(root, "prev", &en->prev);
	if (e == HW_OK) e = dup_field(root, "action", &en->action);
	if (e == HW_OK) e = dup_field(root, "result", &en->result);
	if (e == HW_OK) e = dup_field(root, "reason", &en->reason);
	if (e == HW_OK) e = dup_field(who, "user", &en->user);
	if (e == HW_OK) e = dup_field(who, "host", &en->host);
	if (e == HW_OK) e = dup_field(who, "uri", &en->token);
	if (e == HW_OK) e = dup_field(key, "label", &en->key_label);
	if (e == HW_OK) e = dup_field(key, "id", &en->key_id);
	if (e == HW_OK) e = dup_field(key, "version", &en->key_version);
	if (e == HW_OK && !jnum(root, "attempt", &en->attempt))
		en->attempt = 0;
	if (e == HW_OK && json_is_object(ctx) && json_object_size(ctx)) {
		const char *name;
		json_t *v;
		size_t i = 0;

		en->context = calloc(json_object_size(ctx), sizeof(*en->context));
		if (!en->context)
			e = HW_ERR_NOMEM;
		json_object_foreach((json_t *)ctx, name, v) {
			if (e != HW_OK)
				break;
			if (!json_is_string(v)) {
				e = HW_ERR_FORMAT;
				break;
			}
			en->context[i].key = strdup(name);
			en->context[i].value = strdup(json_string_value(v));
			en->ncontext = ++i;
			if (!en->context[i - 1].key || !en->context[i - 1].value)
				e = HW_ERR_NOMEM;
		}
	}
	json_decref(root);
	if (e != HW_OK) {
		hw_audit_entry_free(en);
		return hw_fail(e, 0, "audit record");
	}
	*out = en;
	return HW_OK;
}
