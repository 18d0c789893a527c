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

#define AUDIT_LINE_MAX (64u * 1024u)
#define GENESIS_PREFIX "hsmwrap-audit-v1 genesis "
#define DIGEST_PREFIX "hsmwrap-audit-v1 digest\n"
#define MAX_MEMBERS 64

/* ---------------------------------------------------------------- */
/* A small JSON reader for records: one object whose values are      */
/* strings, non-negative integers, null, or objects of those.        */

enum { JV_NULL = 1, JV_STR, JV_NUM, JV_OBJ };

struct jmember;

struct jv {
	int type;
	char *s;                    /* JV_STR: NUL-terminated, no NUL inside */
	uint64_t num;
	struct jmember *m;          /* JV_OBJ */
	size_t n;
};

struct jmember {
	char *name;
	struct jv v;
};

static void jv_free(struct jv *v)
{
	free(v->s);
	for (size_t i = 0; i < v->n; i++) {
		free(v->m[i].name);
		jv_free(&v->m[i].v);
	}
	free(v->m);
	memset(v, 0, sizeof(*v));
}

static int peek(const hw_rbuf *r)
{
	return hw_rbuf_left(r) ? *hw_rbuf_pos(r) : -1;
}

static void skip_ws(hw_rbuf *r)
{
	int c;

	while ((c = peek(r)) == ' ' || c == '\t')
		(void)hw_rbuf_bytes(r, 1, NULL);
}

static hw_err expect_ch(hw_rbuf *r, int want)
{
	uint8_t c;

	skip_ws(r);
	if (hw_rbuf_u8(r, &c) != HW_OK || c != want)
		return HW_ERR_FORMAT;
	return HW_OK;
}

static hw_err hex4(hw_rbuf *r, unsigned *v)
{
	const uint8_t *p;

	if (hw_rbuf_bytes(r, 4, &p) != HW_OK)
		return HW_ERR_FORMAT;
	*v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;

		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return HW_ERR_FORMAT;
		*v = (*v << 4) | d;
	}
	return HW_OK;
}

static void put_utf8(hw_wbuf *w, unsigned cp)
{
	if (cp < 0x80) {
		hw_wbuf_u8(w, (uint8_t)cp);
	} else if (cp < 0x800) {
		hw_wbuf_u8(w, (uint8_t)(0xc0 | (cp >> 6)));
		hw_wbuf_u8(w, (uint8_t)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		hw_wbuf_u8(w, (uint8_t)(0xe0 | (cp >> 12)));
		hw_wbuf_u8(w, (uint8_t)(0x80 | ((cp >> 6) & 0x3f)));
		hw_wbuf_u8(w, (uint8_t)(0x80 | (cp & 0x3f)));
	} else {
		hw_wbuf_u8(w, (uint8_t)(0xf0 | (cp >> 18)));
		hw_wbuf_u8(w, (uint8_t)(0x80 | ((cp >> 12) & 0x3f)));
		hw_wbuf_u8(w, (uint8_t)(0x80 | ((cp >> 6) & 0x3f)));
		hw_wbuf_u8(w, (uint8_t)(0x80 | (cp & 0x3f)));
	}
}

/* A JSON string into a NUL-terminated C string; \u0000 is refused. */
static hw_err parse_str(hw_rbuf *r, char **out)
{
	hw_wbuf w;
	uint8_t c, *p;
	size_t len;
	hw_err e = HW_OK;

	if (expect_ch(r, '"') != HW_OK)
		return HW_ERR_FORMAT;
	hw_wbuf_init(&w, AUDIT_LINE_MAX + 1);
	for (;;) {
		if (hw_rbuf_u8(r, &c) != HW_OK || c < 0x20) {
			e = HW_ERR_FORMAT;
			break;
		}
		if (c == '"')
			break;
		if (c != '\\') {
			hw_wbuf_u8(&w, c);
			continue;
		}
		if (hw_rbuf_u8(r, &c) != HW_OK) {
			e = HW_ERR_FORMAT;
			break;
		}
		switch (c) {
		case '"': case '\\': case '/': hw_wbuf_u8(&w, c); break;
		case 'b': hw_wbuf_u8(&w, '\b'); break;
		case 'f': hw_wbuf_u8(&w, '\f'); break;
		case 'n': hw_wbuf_u8(&w, '\n'); break;
		case 'r': hw_wbuf_u8(&w, '\r'); break;
		case 't': hw_wbuf_u8(&w, '\t'); break;
		case 'u': {
			unsigned cp, lo;

			if (hex4(r, &cp) != HW_OK || cp == 0) {
				e = HW_ERR_FORMAT;
				break;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				uint8_t b1, b2;

				if (hw_rbuf_u8(r, &b1) != HW_OK || hw_rbuf_u8(r, &b2) != HW_OK ||
				    b1 != '\\' || b2 != 'u' || hex4(r, &lo) != HW_OK ||
				    lo < 0xdc00 || lo > 0xdfff) {
					e = HW_ERR_FORMAT;
					break;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				e = HW_ERR_FORMAT;
				break;
			}
			put_utf8(&w, cp);
			break;
		}
		default:
			e = HW_ERR_FORMAT;
		}
		if (e != HW_OK)
			break;
	}
	hw_wbuf_u8(&w, 0);
	if (e == HW_OK)
		e = hw_wbuf_finish(&w, &p, &len);
	else
		hw_wbuf_free(&w);
	if (e != HW_OK)
		return HW_ERR_FORMAT;
	*out = (char *)p;
	return HW_OK;
}

static hw_err parse_value(hw_rbuf *r, struct jv *v, int depth);

static hw_err parse_obj(hw_rbuf *r, struct jv *v, int depth)
{
	hw_err e;

	if (expect_ch(r, '{') != HW_OK)
		return HW_ERR_FORMAT;
	v->type = JV_OBJ;
	skip_ws(r);
	if (peek(r) == '}')
		return expect_ch(r, '}');
	for (;;) {
		struct jmember *m;
		char *name = NULL;

		if (v->n == MAX_MEMBERS)
			return HW_ERR_FORMAT;
		if (parse_str(r, &name) != HW_OK)
			return HW_ERR_FORMAT;
		/* A duplicate name would let two readers see two records. */
		for (size_t i = 0; i < v->n; i++) {
			if (strcmp(v->m[i].name, name) == 0) {
				free(name);
				return HW_ERR_FORMAT;
			}
		}
		m = realloc(v->m, (v->n + 1) * sizeof(*m));
		if (!m) {
			free(name);
			return HW_ERR_NOMEM;
		}
		v->m = m;
		memset(&m[v->n], 0, sizeof(m[v->n]));
		m[v->n].name = name;
		v->n++;
		if (expect_ch(r, ':') != HW_OK)
			return HW_ERR_FORMAT;
		e = parse_value(r, &m[v->n - 1].v, depth + 1);
		if (e != HW_OK)
			return e;
		skip_ws(r);
		if (peek(r) == ',') {
			(void)hw_rbuf_bytes(r, 1, NULL);
			continue;
		}
		return expect_ch(r, '}');
	}
}

static hw_err parse_value(hw_rbuf *r, struct jv *v, int depth)
{
	int c;

	skip_ws(r);
	c = peek(r);
	if (c == '"') {
		v->type = JV_STR;
		return parse_str(r, &v->s);
	}
	if (c == '{') {
		if (depth >= 2)
			return HW_ERR_FORMAT;
		return parse_obj(r, v, depth);
	}
	if (c == 'n') {
		const uint8_t *p;

		if (hw_rbuf_bytes(r, 4, &p) != HW_OK || memcmp(p, "null", 4) != 0)
			return HW_ERR_FORMAT;
		v->type = JV_NULL;
		return HW_OK;
	}
	if (c >= '0' && c <= '9') {
		uint64_t x = 0;
		int digits = 0;

		/* Integers only, without leading zeros, and no wrap-around. */
		while ((c = peek(r)) >= '0' && c <= '9') {
			if (digits == 1 && x == 0)
				return HW_ERR_FORMAT;
			if (x > (UINT64_MAX - (uint64_t)(c - '0')) / 10)
				return HW_ERR_FORMAT;
			x = x * 10 + (uint64_t)(c - '0');
			digits++;
			(void)hw_rbuf_bytes(r, 1, NULL);
		}
		v->type = JV_NUM;
		v->num = x;
		return HW_OK;
	}
	return HW_ERR_FORMAT;
}

static hw_err parse_record(const uint8_t *line, size_t len, struct jv *root)
{
	hw_rbuf r;
	hw_err e;

	memset(root, 0, sizeof(*root));
	if (len > AUDIT_LINE_MAX)
		return HW_ERR_TOO_LARGE;
	hw_rbuf_init(&r, line, len);
	e = parse_obj(&r, root, 0);
	if (e == HW_OK) {
		skip_ws(&r);
		if (hw_rbuf_left(&r))
			e = HW_ERR_FORMAT;
	}
	if (e != HW_OK)
		jv_free(root);
	return e;
}

static const struct jv *jget(const struct jv *o, const char *name)
{
	if (!o || o->type != JV_OBJ)
		return NULL;
	for (size_t i = 0; i < o->n; i++)
		if (strcmp(o->m[i].name, name) == 0)
			return &o->m[i].v;
	return NULL;
}

static const char *jstr(const struct jv *o, const char *name)
{
	const struct jv *v = jget(o, name);

	return v && v->type == JV_STR ? v->s : NULL;
}

static bool jnum(const struct jv *o, const char *name, uint64_t *x)
{
	const struct jv *v = jget(o, name);

	if (!v || v->type != JV_NUM)
		return false;
	*x = v->num;
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

/* ---------------------------------------------------------------- */
/* Record writer                                                     */

static void w_raw(hw_wbuf *w, const char *s)
{
	hw_wbuf_put(w, s, strlen(s));
}

/* Valid UTF-8 passes; control characters are escaped; a byte that is not
 * UTF-8 becomes U+FFFD, so every line is valid JSON. */
static void w_str(hw_wbuf *w, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), i = 0;

	hw_wbuf_u8(w, '"');
	while (i < n) {
		unsigned c = p[i], need = 0, cp = 0, min = 0;

		if (c == '"' || c == '\\') {
			hw_wbuf_u8(w, '\\');
			hw_wbuf_u8(w, (uint8_t)c);
			i++;
			continue;
		}
		if (c < 0x20 || c == 0x7f) {
			char esc[8];

			snprintf(esc, sizeof(esc), "\\u%04x", c);
			w_raw(w, esc);
			i++;
			continue;
		}
		if (c < 0x80) {
			hw_wbuf_u8(w, (uint8_t)c);
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
				hw_wbuf_put(w, p + i, need + 1);
				i += need + 1;
				continue;
			}
		}
		w_raw(w, "\xef\xbf\xbd");
		i++;
	}
	hw_wbuf_u8(w, '"');
}

static void w_member(hw_wbuf *w, const char *name, bool first)
{
	if (!first)
		hw_wbuf_u8(w, ',');
	w_str(w, name);
	hw_wbuf_u8(w, ':');
}

static void w_kstr(hw_wbuf *w, const char *name, const char *v, bool first)
{
	w_member(w, name, first);
	if (v)
		w_str(w, v);
	else
		w_raw(w, "null");
}

static void w_knum(hw_wbuf *w, const char *name, uint64_t v, bool first)
{
	char num[32];

	w_member(w, name, first);
	snprintf(num, sizeof(num), "%" PRIu64, v);
	w_raw(w, num);
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

static hw_err write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return HW_ERR_IO;
		p += k;
		n -= (size_t)k;
	}
	return HW_OK;
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
	struct jv root;
	const struct jv *k;
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
	k = jget(&root, "audit_key");
	s = jstr(&root, "type");
	if (!s || strcmp(s, "genesis") != 0 || !jnum(&root, "seq", &seq) || seq != 0 ||
	    !is_hex(jstr(&root, "log_id"), 32) || !k ||
	    !is_hex(jstr(k, "fingerprint"), 64) || !jstr(k, "label") || !jstr(k, "alg")) {
		jv_free(&root);
		return hw_fail(HW_ERR_FORMAT, 0, "audit log %s: line 1 is not a genesis record",
		               a->path);
	}
	snprintf(a->log_id, sizeof(a->log_id), "%s", jstr(&root, "log_id"));
	snprintf(a->key_fp, sizeof(a->key_fp), "%s", jstr(k, "fingerprint"));
	snprintf(a->key_label, sizeof(a->key_label), "%s", jstr(k, "label"));
	snprintf(a->alg, sizeof(a->alg), "%s", jstr(k, "alg"));
	jv_free(&root);
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
	struct jv root;
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
	if (e == HW_OK && !jnum(&root, "seq", seq))
		e = HW_ERR_FORMAT;
	if (e == HW_OK)
		sha256_hex(buf + start, n - 1 - start, hash);
	jv_free(&root);
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
	e = write_all(a->fd, w->p, w->len);
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

static void who(hw_wbuf *w, hw_ctx *ctx, const char *token)
{
	const struct passwd *pw = getpwuid(geteuid());
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
	w_member(w, "who", false);
	hw_wbuf_u8(w, '{');
	w_kstr(w, "user", pw ? pw->pw_name : "?", true);
	w_knum(w, "uid", (uint64_t)geteuid(), false);
	w_kstr(w, "host", host, false);
	w_kstr(w, "token", tlabel[0] ? tlabel : NULL, false);
	w_kstr(w, "serial", serial[0] ? serial : NULL, false);
	/* The caller's URI may carry pin-value: the record never does. */
	if (uri && uri == token) {
		if (hw_uri_redact(token, &shown) != HW_OK)
			shown = NULL;
		uri = shown ? shown : "(not shown)";
	}
	w_kstr(w, "uri", uri, false);
	free(shown);
	hw_wbuf_u8(w, '}');
}

/* The context's pairs, read back from its ESDK serialization. */
static hw_err context_member(hw_wbuf *w, const hw_ectx *ec)
{
	uint8_t *ser = NULL;
	size_t serlen = 0;
	uint16_t count = 0;
	hw_rbuf r;
	hw_err e;

	w_member(w, "context", false);
	hw_wbuf_u8(w, '{');
	if (!ec || hw_ectx_count(ec) == 0) {
		hw_wbuf_u8(w, '}');
		return HW_OK;
	}
	e = hw_ectx_serialize(ec, &ser, &serlen);
	if (e != HW_OK)
		return e;
	hw_rbuf_init(&r, ser, serlen);
	e = hw_rbuf_u16(&r, &count);
	for (uint16_t i = 0; e == HW_OK && i < count; i++) {
		const uint8_t *k, *v;
		size_t kl, vl;
		char *ks, *vs;

		if ((e = hw_rbuf_str16(&r, &k, &kl)) != HW_OK ||
		    (e = hw_rbuf_str16(&r, &v, &vl)) != HW_OK)
			break;
		ks = strndup((const char *)k, kl);
		vs = strndup((const char *)v, vl);
		if (ks && vs) {
			w_member(w, ks, i == 0);
			w_str(w, vs);
		} else {
			e = HW_ERR_NOMEM;
		}
		free(ks);
		free(vs);
	}
	free(ser);
	hw_wbuf_u8(w, '}');
	return e == HW_OK ? HW_OK : hw_fail(e, 0, "encryption context");
}

/* result: NULL for ev->result; attempt: the attempt's seq this is the outcome of, or 0. */
static hw_err build_event(hw_wbuf *w, uint64_t seq, const char *prev, const hw_audit_event *ev,
                          const char *result, uint64_t attempt)
{
	char t[32], idhex[129];
	const char *label = ev->key_label, *id = ev->key_id_hex;

	now_utc(t);
	if (ev->key) {
		label = ev->key->label;
		hw_hex(ev->key->id, ev->key->id_len, idhex);
		id = idhex;
	}
	hw_wbuf_u8(w, '{');
	w_knum(w, "seq", seq, true);
	w_kstr(w, "time", t, false);
	w_kstr(w, "type", "event", false);
	who(w, ev->ctx, ev->token);
	w_kstr(w, "action", ev->action, false);
	w_member(w, "key", false);
	if (label || id) {
		hw_wbuf_u8(w, '{');
		w_kstr(w, "label", label, true);
		w_kstr(w, "id", id, false);
		w_kstr(w, "version", ev->key_version, false);
		hw_wbuf_u8(w, '}');
	} else {
		w_raw(w, "null");
	}
	if (context_member(w, ev->context) != HW_OK)
		return hw_last_ckrv() ? HW_ERR_HSM : HW_ERR_NOMEM;
	w_kstr(w, "result", result ? result : ev->result == HW_OK ? "ok" : hw_errname(ev->result),
	       false);
	if (attempt)
		w_knum(w, "attempt", attempt, false);
	w_kstr(w, "prev", prev, false);
	hw_wbuf_u8(w, '}');
	return HW_OK;
}

/* Under the lock; the last line was seq `last`, hash `prev`. */
static hw_err write_digest(hw_audit *a, uint64_t last, const char *prev, const char *reason)
{
	char t[32], msg[512], *sighex = NULL;
	hw_sig_alg alg = strcmp(a->alg, "ecdsa-sha384") == 0 ? HW_SIG_ECDSA_SHA384
	                                                      : HW_SIG_ECDSA_SHA256;
	uint8_t *sig = NULL;
	size_t siglen = 0, mlen;
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
	hw_wbuf_init(&w, AUDIT_LINE_MAX);
	hw_wbuf_u8(&w, '{');
	w_knum(&w, "seq", last + 1, true);
	w_kstr(&w, "time", t, false);
	w_kstr(&w, "type", "digest", false);
	w_kstr(&w, "reason", reason, false);
	w_knum(&w, "covers", last, false);
	w_kstr(&w, "alg", a->alg, false);
	w_kstr(&w, "sig", sighex, false);
	w_kstr(&w, "prev", prev, false);
	hw_wbuf_u8(&w, '}');
	free(sighex);
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
	hw_wbuf_init(&w, AUDIT_LINE_MAX);
	hw_wbuf_u8(&w, '{');
	w_knum(&w, "seq", 0, true);
	w_kstr(&w, "time", t, false);
	w_kstr(&w, "type", "genesis", false);
	w_kstr(&w, "log_id", a->log_id, false);
	w_member(&w, "audit_key", false);
	hw_wbuf_u8(&w, '{');
	w_kstr(&w, "label", a->key_label, true);
	w_kstr(&w, "id", ki.id_hex, false);
	w_kstr(&w, "alg", a->alg, false);
	w_kstr(&w, "fingerprint", a->key_fp, false);
	hw_wbuf_u8(&w, '}');
	w_kstr(&w, "prev", prev, false);
	hw_wbuf_u8(&w, '}');
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

static hw_err v_genesis(struct vstate *st, const struct jv *root, const uint8_t *spki,
                        size_t spki_len)
{
	hw_audit_report *rep = st->rep;
	const struct jv *k = jget(root, "audit_key");
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

static hw_err v_digest(struct vstate *st, const struct jv *root, uint64_t seq)
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
static hw_err v_attempts(struct vstate *st, const struct jv *root, uint64_t seq)
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
	struct jv root;
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
	if (!jnum(&root, "seq", &seq) || !(prev = jstr(&root, "prev")) || !is_hex(prev, 64) ||
	    !(type = jstr(&root, "type"))) {
		jv_free(&root);
		return vbad(st, st->line, NULL, "record without seq, type or prev");
	}
	sha256_hex(p, n, h);
	if (st->line == 1) {
		e = v_genesis(st, &root, spki, spki_len);
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
		e = v_digest(st, &root, seq);
	} else if (strcmp(type, "event") != 0) {
		e = vbad(st, st->line, &seq, "unknown record type");
	} else {
		e = v_attempts(st, &root, seq);
	}
	is_digest = strcmp(type, "digest") == 0;
	jv_free(&root);
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

static hw_err dup_field(const struct jv *o, const char *name, char **out)
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
	struct jv root;
	const struct jv *who, *key, *ctx;
	const char *type;
	hw_audit_entry *en;
	hw_err e;

	if ((!line && len) || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_audit_entry_parse");
	e = parse_record(line, len, &root);
	if (e != HW_OK)
		return hw_fail(e, 0, "not an audit record");
	type = jstr(&root, "type");
	en = calloc(1, sizeof(*en));
	if (!en) {
		jv_free(&root);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	if (!type || strlen(type) >= sizeof(en->type) || !jnum(&root, "seq", &en->seq) ||
	    !jstr(&root, "time") || !jstr(&root, "prev")) {
		jv_free(&root);
		hw_audit_entry_free(en);
		return hw_fail(HW_ERR_FORMAT, 0, "not an audit record (seq, type, time, prev)");
	}
	snprintf(en->type, sizeof(en->type), "%s", type);
	who = jget(&root, "who");
	key = jget(&root, "key");
	ctx = jget(&root, "context");
	if (strcmp(type, "genesis") == 0)
		key = jget(&root, "audit_key");
	e = dup_field(&root, "time", &en->time);
	if (e == HW_OK) e = dup_field(&root, "prev", &en->prev);
	if (e == HW_OK) e = dup_field(&root, "action", &en->action);
	if (e == HW_OK) e = dup_field(&root, "result", &en->result);
	if (e == HW_OK) e = dup_field(&root, "reason", &en->reason);
	if (e == HW_OK) e = dup_field(who, "user", &en->user);
	if (e == HW_OK) e = dup_field(who, "host", &en->host);
	if (e == HW_OK) e = dup_field(who, "uri", &en->token);
	if (e == HW_OK) e = dup_field(key, "label", &en->key_label);
	if (e == HW_OK) e = dup_field(key, "id", &en->key_id);
	if (e == HW_OK) e = dup_field(key, "version", &en->key_version);
	if (e == HW_OK && !jnum(&root, "attempt", &en->attempt))
		en->attempt = 0;
	if (e == HW_OK && ctx && ctx->type == JV_OBJ && ctx->n) {
		en->context = calloc(ctx->n, sizeof(*en->context));
		if (!en->context)
			e = HW_ERR_NOMEM;
		for (size_t i = 0; e == HW_OK && i < ctx->n; i++) {
			if (ctx->m[i].v.type != JV_STR) {
				e = HW_ERR_FORMAT;
				break;
			}
			en->context[i].key = strdup(ctx->m[i].name);
			en->context[i].value = strdup(ctx->m[i].v.s);
			en->ncontext = i + 1;
			if (!en->context[i].key || !en->context[i].value)
				e = HW_ERR_NOMEM;
		}
	}
	jv_free(&root);
	if (e != HW_OK) {
		hw_audit_entry_free(en);
		return hw_fail(e, 0, "audit record");
	}
	*out = en;
	return HW_OK;
}
