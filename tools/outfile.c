/*
 * outfile.c - output files that appear whole or not at all (outfile.h).
 *
 * A file output is the library's hw_file (src/lib/base/file.c): an
 * anonymous O_TMPFILE linked into place only once complete, because
 * nothing can remove a named temporary after SIGKILL or SIGXFSZ and a
 * decrypt's temporary holds plaintext. What is the CLI's own here: "-",
 * devices and pipes as streams, several outputs all or none, and holding
 * termination signals while a name is settled.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "outfile.h"

struct outfile {
	const char *path;           /* the target (caller's string) */
	hw_file *file;              /* file outputs */
	int fd;
	int stream;                 /* written in place */
	int owned;                  /* fd is ours to close */
	int committed;
	int is_stdout;              /* the stream is the process's standard output */
};

static hw_err errno_err(int e)
{
	return e == ENOMEM ? HW_ERR_NOMEM : HW_ERR_IO;
}

static hw_err fail(const char *path, int e, const char *what)
{
	util_set_detail("%s: %s%s%s", path, what ? what : "", what ? ": " : "", strerror(e));
	return errno_err(e);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int no_tmpfile(void)
{
	const char *t = getenv("HSMWRAP_TEST_NO_TMPFILE");

	return t && strcmp(t, "1") == 0;
}

static int is_stdout_file(const struct stat *st)
{
	struct stat out;

	return S_ISREG(st->st_mode) && fstat(STDOUT_FILENO, &out) == 0 &&
	       out.st_dev == st->st_dev && out.st_ino == st->st_ino;
}

static hw_err open_stream(struct outfile *o, const char *path)
{
	o->stream = 1;
	o->fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (o->fd < 0)
		return fail(path, errno, NULL);
	o->owned = 1;
	return HW_OK;
}

static hw_err open_file(struct outfile *o, unsigned flags)
{
	mode_t mode = (flags & OUTFILE_SECRET) ? 0600 : util_plain_mode();
	hw_err err = hw_file_create(o->path, (unsigned)mode, &o->file);

	if (err) {
		util_set_detail("%s", hw_last_detail());
		return err;
	}
	o->fd = hw_file_fd(o->file);
	return HW_OK;
}

hw_err outfile_open(const char *path, unsigned flags, struct outfile **out)
{
	struct outfile *o;
	struct stat st;
	hw_err err = HW_OK;

	*out = NULL;
	if (!path || !*path) {
		util_set_detail("empty output file name");
		return HW_ERR_INVALID_ARG;
	}
	o = calloc(1, sizeof(*o));
	if (!o)
		return fail(path, ENOMEM, NULL);
	o->path = path;
	o->fd = -1;
	if (strcmp(path, "-") == 0) {
		o->stream = 1;
		o->fd = STDOUT_FILENO;
	} else if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			err = open_file(o, flags);
		else
			err = fail(path, errno, NULL);
	} else if (S_ISLNK(st.st_mode)) {
		/* Devices and pipes only: /dev/stdout, /dev/fd/N, /dev/null. */
		if (stat(path, &st) == 0 && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
			err = open_stream(o, path);
		} else if (is_stdout_file(&st)) {
			/* `-o /dev/stdout >file`: the file the caller opened for us. */
			o->stream = 1;
			o->fd = STDOUT_FILENO;
		} else {
			util_set_detail("%s is a symbolic link; hsmwrap neither replaces a link nor "
			                "writes through it: give the path of the file itself "
			                "(or -o - for standard output)", path);
			err = HW_ERR_INVALID_ARG;
		}
	} else if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
		err = open_stream(o, path);
	} else if (S_ISDIR(st.st_mode)) {
		err = fail(path, EISDIR, NULL);
	} else if (!S_ISREG(st.st_mode)) {
		util_set_detail("%s is neither a regular file, a character device nor a pipe",
		                path);
		err = HW_ERR_INVALID_ARG;
	} else {
		err = open_file(o, flags);
	}
	if (err) {
		outfile_free(o);
		return err;
	}
	if (o->stream) {
		struct stat a, b;

		o->is_stdout = fstat(o->fd, &a) == 0 && fstat(STDOUT_FILENO, &b) == 0 &&
		               a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	}
	*out = o;
	return HW_OK;
}

int outfile_is_stream(const struct outfile *o)
{
	return o->stream;
}

int outfile_fd(const struct outfile *o)
{
	return o->fd;
}

hw_err outfile_write(struct outfile *o, const void *data, size_t len)
{
	if (write_all(o->fd, data, len) < 0)
		return fail(o->stream && o->fd == STDOUT_FILENO ? "standard output" : o->path,
		            errno, NULL);
	return HW_OK;
}

hw_err outfile_commit(struct outfile *o)
{
	sigset_t set, old;
	hw_err err = HW_OK;

	if (o->committed)
		return HW_OK;
	if (o->stream) {
		o->committed = 1;
		/* The data went to standard output: the report goes to stderr. */
		if (o->is_stdout) {
			fflush(stdout);
			dup2(STDERR_FILENO, STDOUT_FILENO);
		}
		return HW_OK;
	}
	/* The slow part first, while signals still end the process. */
	if (fsync(o->fd) < 0)
		return fail(o->path, errno, NULL);
	/* Termination signals wait until the name is settled either way. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	sigprocmask(SIG_BLOCK, &set, &old);
	err = hw_file_commit(o->file);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (err) {
		util_set_detail("%s", hw_last_detail());
		return err;
	}
	o->committed = 1;
	return HW_OK;
}

void outfile_free(struct outfile *o)
{
	if (!o)
		return;
	hw_file_free(o->file);
	if (o->owned && o->fd >= 0)
		close(o->fd);
	free(o);
}

int outfile_spool(void)
{
	const char *dir = getenv("TMPDIR");
	char *tmp = NULL;
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	if (!no_tmpfile()) {
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
	}
	if (asprintf(&tmp, "%s/hsmwrap-spool.XXXXXX", dir) < 0) {
		errno = ENOMEM;
		return -1;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd >= 0)
		unlink(tmp);
	free(tmp);
	return fd;
}

/* All or none: every output is written in full before any is committed. */
hw_err outfile_write_all(const struct out_spec *outs, size_t n)
{
	struct outfile *of[8] = { 0 };
	size_t streams = 0, i, done = 0;
	hw_err err = HW_OK;

	if (n > sizeof(of) / sizeof(of[0])) {
		util_set_detail("too many output files");
		return HW_ERR_INVALID_ARG;
	}
	for (i = 0; i < n && !err; i++) {
		err = outfile_open(outs[i].path, outs[i].secret ? OUTFILE_SECRET : 0, &of[i]);
		if (!err && outfile_is_stream(of[i]) && ++streams > 1) {
			util_set_detail("%s: only one output may be standard output or a device",
			           outs[i].path);
			err = HW_ERR_INVALID_ARG;
		}
	}
	/* Files first, so a stream is written only once everything else was. */
	for (i = 0; i < n && !err; i++)
		if (!outfile_is_stream(of[i]))
			err = outfile_write(of[i], outs[i].data, outs[i].len);
	for (i = 0; i < n && !err; i++)
		if (outfile_is_stream(of[i]))
			err = outfile_write(of[i], outs[i].data, outs[i].len);
	for (i = 0; i < n && !err; i++, done++)
		err = outfile_commit(of[i]);
	/* A later commit failed: take back the files already in place. */
	for (i = 0; err && i < done; i++)
		if (!outfile_is_stream(of[i]))
			unlink(outs[i].path);
	for (i = 0; i < n; i++)
		outfile_free(of[i]);
	return err;
}

/* One file in or out for a command, a failure reported as `what`. */
int cli_read_file(struct cli *cli, const char *path, size_t cap, int secret, const char *what,
                  uint8_t **buf, size_t *len)
{
	hw_err err = util_read_file(path, cap, secret, buf, len);

	return err ? cli_fail_util(cli, err, what) : 0;
}

int cli_write_file(struct cli *cli, const char *path, const void *data, size_t len,
                   int secret, const char *what)
{
	const struct out_spec o = { path, data, len, secret };
	hw_err err = outfile_write_all(&o, 1);

	return err ? cli_fail_util(cli, err, what) : 0;
}
