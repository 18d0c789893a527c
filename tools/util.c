/*
 * util.c - files, JSON, hex and the PIN prompt for the hsmwrap tool.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cli.h"

static char detail_buf[1024];

const char *util_detail(void)
{
	return detail_buf;
}

__attribute__((format(printf, 1, 2)))
static void set_detail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail_buf, sizeof(detail_buf), fmt, ap);
	va_end(ap);
}

void util_set_detail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail_buf, sizeof(detail_buf), fmt, ap);
	va_end(ap);
}

static hw_err errno_err(int e)
{
	return e == ENOMEM ? HW_ERR_NOMEM : HW_ERR_IO;
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */

/* A secret (a key file, a share) lives in hw_secmem: not in core dumps,
 * not swapped out where the memlock limit allows. */
static uint8_t *buf_alloc(size_t n, int secret)
{
	return secret ? hw_secmem_alloc(n) : malloc(n);
}

void util_free(void *buf, size_t len, int secret)
{
	(void)len;
	if (secret)
		hw_secmem_free(buf);
	else
		free(buf);
}

/* realloc() may leave a copy of a secret behind: move it by hand. */
static uint8_t *grow(uint8_t *buf, size_t used, size_t newcap, int secret)
{
	uint8_t *n = buf_alloc(newcap, secret);

	if (!n)
		return NULL;
	if (used)
		memcpy(n, buf, used);
	util_free(buf, used, secret);
	return n;
}

static hw_err read_fd(int fd, const char *path, size_t cap, size_t hint,
                      int secret, uint8_t **out, size_t *outlen)
{
	size_t bufcap = hint ? hint + 1 : 4096, used = 0;
	uint8_t *buf;

	/* One byte over the cap is enough to know the input is too large. */
	if (bufcap > cap + 1)
		bufcap = cap + 1;
	buf = buf_alloc(bufcap, secret);
	if (!buf) {
		set_detail("%s", path);
		return HW_ERR_NOMEM;
	}
	for (;;) {
		ssize_t r;

		if (used == bufcap) {
			size_t nc = bufcap * 2 > cap + 1 ? cap + 1 : bufcap * 2;
			uint8_t *n;

			if (nc == bufcap)
				break;
			n = grow(buf, used, nc, secret);
			if (!n) {
				util_free(buf, used, secret);
				set_detail("%s", path);
				return HW_ERR_NOMEM;
			}
			buf = n;
			bufcap = nc;
		}
		r = read(fd, buf + used, bufcap - used);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			util_free(buf, used, secret);
			set_detail("%s: %s", path, strerror(e));
			return errno_err(e);
		}
		if (r == 0)
			break;
		used += (size_t)r;
	}
	if (used > cap) {
		util_free(buf, used, secret);
		set_detail("%s: larger than %zu bytes", path, cap);
		return HW_ERR_TOO_LARGE;
	}
	*out = buf;
	*outlen = used;
	return HW_OK;
}

hw_err util_read_file(const char *path, size_t cap, int secret,
                      uint8_t **buf, size_t *len)
{
	struct stat st = { 0 };
	size_t hint = 0;
	hw_err err;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int e = errno;

		set_detail("%s: %s", path, strerror(e));
		return errno_err(e);
	}
	if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
		int e = S_ISDIR(st.st_mode) ? EISDIR : errno;

		close(fd);
		set_detail("%s: %s", path, strerror(e));
		return HW_ERR_IO;
	}
	if (S_ISREG(st.st_mode)) {
		if ((unsigned long long)st.st_size > cap) {
			close(fd);
			set_detail("%s: %lld bytes, more than the limit of %zu",
			           path, (long long)st.st_size, cap);
			return HW_ERR_TOO_LARGE;
		}
		hint = (size_t)st.st_size;
	}
	err = read_fd(fd, path, cap, hint, secret, buf, len);
	close(fd);
	return err;
}

/* ------------------------------------------------------------------ */
/* Atomic writing                                                      */

char *util_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

mode_t util_plain_mode(void)
{
	mode_t m = umask(077);

	umask(m);
	return 0666 & ~m;
}

void util_sync_dir(const char *path)
{
	char *dir = util_dir_of(path);
	int fd;

	if (!dir)
		return;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd >= 0) {
		/* Some file systems refuse fsync on directories; the rename stands. */
		(void)fsync(fd);
		close(fd);
	}
}

hw_err util_make_dir(const char *path, mode_t mode, int *created)
{
	struct stat st;
	char *parent;
	int e;

	*created = 0;
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return HW_OK;
		set_detail("%s exists and is not a directory", path);
		return HW_ERR_INVALID_ARG;
	}
	if (errno == ENOENT && mkdir(path, mode) == 0) {
		*created = 1;
		/* The new entry in its parent must survive a crash with the files. */
		util_sync_dir(path);
		return HW_OK;
	}
	e = errno;
	/* One level only: a mistyped parent should not grow a tree. */
	if (e == ENOENT && (parent = util_dir_of(path))) {
		set_detail("cannot create directory %s: its parent %s does not exist", path, parent);
		free(parent);
	} else {
		set_detail("cannot create directory %s: %s", path, strerror(e));
	}
	return HW_ERR_IO;
}

int util_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (strcmp(a, b) == 0)
		return 1;
	if (stat(a, &sa) < 0 || stat(b, &sb) < 0)
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ------------------------------------------------------------------ */
/* Hex                                                                 */

void util_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* ------------------------------------------------------------------ */
/* PIN prompt                                                          */

static volatile sig_atomic_t prompt_signal;

static void on_prompt_signal(int sig)
{
	prompt_signal = sig;
}

struct tty_state {
	int fd;
	struct termios saved;
	struct sigaction old[4];
};

static const int prompt_signals[4] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

/* No SA_RESTART: a signal must end the read so the terminal is restored. */
static int tty_open(struct tty_state *t, struct pin_prompt *pp)
{
	struct termios noecho;
	struct sigaction sa;

	t->fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (t->fd < 0) {
		snprintf(pp->note, sizeof(pp->note),
		         "no terminal to prompt for the PIN (/dev/tty: %s); use --pin-source file:PATH or env:NAME",
		         strerror(errno));
		return -1;
	}
	if (tcgetattr(t->fd, &t->saved) < 0) {
		snprintf(pp->note, sizeof(pp->note),
		         "/dev/tty is not a terminal (%s); use --pin-source file:PATH or env:NAME",
		         strerror(errno));
		close(t->fd);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_prompt_signal;
	sigemptyset(&sa.sa_mask);
	prompt_signal = 0;
	for (int i = 0; i < 4; i++)
		sigaction(prompt_signals[i], &sa, &t->old[i]);
	noecho = t->saved;
	noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
	noecho.c_lflag |= ECHONL;
	tcsetattr(t->fd, TCSAFLUSH, &noecho);
	return 0;
}

static void tty_close(struct tty_state *t)
{
	tcsetattr(t->fd, TCSAFLUSH, &t->saved);
	close(t->fd);
	for (int i = 0; i < 4; i++)
		sigaction(prompt_signals[i], &t->old[i], NULL);
}

static void tty_say(int fd, const char *a, const char *b, const char *c)
{
	(void)!write(fd, a, strlen(a));
	(void)!write(fd, b, strlen(b));
	(void)!write(fd, c, strlen(c));
}

/*
 * One line into buf (not NUL-terminated). Returns its length, -1 when
 * cancelled (EOF, signal, read error) and -2 when longer than max.
 */
static long tty_read_line(int fd, char *buf, size_t max)
{
	size_t n = 0;
	int too_long = 0;

	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);

		if (r < 0 && errno == EINTR && !prompt_signal)
			continue;
		if (r <= 0 || prompt_signal) {
			OPENSSL_cleanse(&c, 1);
			return -1;
		}
		if (c == '\n' || c == '\r')
			break;
		if (n < max)
			buf[n++] = c;
		else
			too_long = 1;
		OPENSSL_cleanse(&c, 1);
	}
	return too_long ? -2 : (long)n;
}

static hw_err prompt_once(struct tty_state *t, struct pin_prompt *pp,
                          const char *label, const char *what,
                          char *buf, size_t max, size_t *len)
{
	long n;

	tty_say(t->fd, label, what, ": ");
	n = tty_read_line(t->fd, buf, max);
	if (n == -2) {
		snprintf(pp->note, sizeof(pp->note), "PIN longer than %zu bytes", max);
		return HW_ERR_CANCELLED;
	}
	if (n == -1)
		tty_say(t->fd, "", "", "\n");
	if (n <= 0) {
		snprintf(pp->note, sizeof(pp->note), "%s",
		         prompt_signal ? "interrupted" : "no PIN entered");
		return HW_ERR_CANCELLED;
	}
	*len = (size_t)n;
	return HW_OK;
}

/* A new PIN is asked twice; a typo must not lock anyone out. */
static hw_err prompt_confirmed(struct tty_state *t, struct pin_prompt *pp,
                               const char *what, char *buf, size_t max, size_t *len)
{
	char *again = hw_secmem_alloc(max ? max : 1);
	hw_err err = HW_ERR_CANCELLED;
	int fresh = strncmp(what, "new ", 4) == 0;

	if (!again)
		return HW_ERR_NOMEM;
	for (int tries = 0; tries < 3; tries++) {
		size_t n1 = 0, n2 = 0;

		err = prompt_once(t, pp, fresh ? "Enter " : "Enter new ", what, buf, max, &n1);
		if (!err)
			err = prompt_once(t, pp, fresh ? "Repeat " : "Repeat new ", what, again,
			                  max, &n2);
		if (err)
			break;
		if (n1 == n2 && CRYPTO_memcmp(buf, again, n1) == 0) {
			*len = n1;
			break;
		}
		OPENSSL_cleanse(buf, max);
		tty_say(t->fd, "The entries differ; try again.", "", "\n");
		snprintf(pp->note, sizeof(pp->note), "the PIN entries did not match");
		err = HW_ERR_CANCELLED;
	}
	hw_secmem_free(again);
	return err;
}

hw_err util_pin_prompt(const char *what, char *buf, size_t max, size_t *len, void *arg)
{
	struct pin_prompt *pp = arg;
	struct tty_state t;
	hw_err err;

	pp->note[0] = '\0';
	if (tty_open(&t, pp) < 0)
		return HW_ERR_CANCELLED;
	/* One byte stays free: the library terminates the PIN in place. */
	if (pp->confirm)
		err = prompt_confirmed(&t, pp, what, buf, max ? max - 1 : 0, len);
	else
		err = prompt_once(&t, pp, "Enter ", what, buf, max ? max - 1 : 0, len);
	if (err)
		OPENSSL_cleanse(buf, max);
	else
		pp->note[0] = '\0';
	tty_close(&t);
	return err;
}

/* ------------------------------------------------------------------ */
/* Help text                                                           */

void util_wrap(FILE *f, const char *text, unsigned indent, unsigned first_col, unsigned width)
{
	unsigned col = first_col;
	const char *p = text;

	if (col < indent) {
		fprintf(f, "%*s", (int)(indent - col), "");
		col = indent;
	}
	while (*p) {
		size_t wl = strcspn(p, " \n");

		if (col > indent && col + 1 + wl > width) {
			fprintf(f, "\n%*s", (int)indent, "");
			col = indent;
		} else if (col > indent) {
			fputc(' ', f);
			col++;
		}
		fwrite(p, 1, wl, f);
		col += (unsigned)wl;
		p += wl;
		while (*p == ' ' || *p == '\n')
			p++;
	}
	fputc('\n', f);
}
