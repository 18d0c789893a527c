/*
 * outfile.c - output files that appear whole or not at all (outfile.h).
 *
 * Why an anonymous O_TMPFILE rather than a named temporary: nothing can
 * remove a named temporary after SIGKILL or SIGXFSZ, and a decrypt's
 * temporary holds plaintext. An O_TMPFILE inode has no name until
 * outfile_commit() links it, so the kernel frees it on any death.
 *
 * linkat() cannot replace an existing name, so a committed file is
 * linked under a temporary name first and renamed over the target. That
 * name exists for two system calls; its inode is locked by its creator
 * (flock) from before it has a name, which is what lets outfile_sweep()
 * tell an abandoned temporary from one in use.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "outfile.h"

#define TMP_PREFIX ".hsmwrap-tmp."
#define TMP_RAND 6

struct outfile {
	const char *path;           /* the target (caller's string) */
	char *dir;                  /* its directory (file outputs) */
	char *tmp;                  /* named temporary (fallback), NULL otherwise */
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

/* ".hsmwrap-tmp." followed by TMP_RAND characters of [A-Za-z0-9]. */
static void random_name(char *out)
{
	static const char set[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char r[TMP_RAND];

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* Only uniqueness matters here; collisions are retried. */
		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (unsigned char)(rand() ^ getpid());
	}
	memcpy(out, TMP_PREFIX, sizeof(TMP_PREFIX) - 1);
	for (size_t i = 0; i < TMP_RAND; i++)
		out[sizeof(TMP_PREFIX) - 1 + i] = set[r[i] % (sizeof(set) - 1)];
	out[sizeof(TMP_PREFIX) - 1 + TMP_RAND] = '\0';
}

static int is_tmp_name(const char *name)
{
	size_t pl = sizeof(TMP_PREFIX) - 1;

	if (strncmp(name, TMP_PREFIX, pl) != 0 || strlen(name) != pl + TMP_RAND)
		return 0;
	for (size_t i = pl; i < pl + TMP_RAND; i++)
		if (!((name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= 'a' && name[i] <= 'z') ||
		      (name[i] >= '0' && name[i] <= '9')))
			return 0;
	return 1;
}

void outfile_sweep(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		struct stat st, again;
		int fd;

		if (!is_tmp_name(de->d_name))
			continue;
		fd = openat(dirfd(d), de->d_name,
		            O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* Only our own plain files, and only once their creator let go. */
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
		    st.st_nlink == 1 && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
		    fstatat(dirfd(d), de->d_name, &again, AT_SYMLINK_NOFOLLOW) == 0 &&
		    again.st_dev == st.st_dev && again.st_ino == st.st_ino)
			(void)unlinkat(dirfd(d), de->d_name, 0);
		close(fd);
	}
	closedir(d);
}

/* The named fallback: created, locked, then checked to still be ours. */
static int named_tmp(struct outfile *o, mode_t mode)
{
	for (int tries = 0; tries < 16; tries++) {
		char name[sizeof(TMP_PREFIX) + TMP_RAND];
		struct stat a, b;
		char *tmp = NULL;
		int fd;

		random_name(name);
		if (asprintf(&tmp, "%s/%s", o->dir, name) < 0) {
			errno = ENOMEM;
			return -1;
		}
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			int e = errno;

			free(tmp);
			if (e == EEXIST)
				continue;
			errno = e;
			return -1;
		}
		/* A sweeper may have taken it between open and flock: start over. */
		if (flock(fd, LOCK_EX) < 0 || fstat(fd, &a) < 0 || lstat(tmp, &b) < 0 ||
		    a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
			close(fd);
			free(tmp);
			continue;
		}
		if (fchmod(fd, mode) < 0) {
			int e = errno;

			unlink(tmp);
			close(fd);
			free(tmp);
			errno = e;
			return -1;
		}
		o->tmp = tmp;
		return fd;
	}
	errno = EEXIST;
	return -1;
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

	o->dir = util_dir_of(o->path);
	if (!o->dir)
		return fail(o->path, ENOMEM, NULL);
	outfile_sweep(o->dir);
	o->fd = -1;
	if (!no_tmpfile())
		o->fd = open(o->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
	if (o->fd >= 0) {
		/* The open mode went through the umask; set it exactly. */
		if (fchmod(o->fd, mode) < 0) {
			int e = errno;

			close(o->fd);
			o->fd = -1;
			return fail(o->path, e, NULL);
		}
	} else {
		/* EOPNOTSUPP, EISDIR or EINVAL: a file system or kernel without it. */
		o->fd = named_tmp(o, mode);
		if (o->fd < 0)
			return fail(o->path, errno, "cannot create a file in its directory");
	}
	o->owned = 1;
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

/* Gives the anonymous inode a temporary name beside the target. */
static int link_tmpfile(struct outfile *o)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->fd);
	for (int tries = 0; tries < 16; tries++) {
		char name[sizeof(TMP_PREFIX) + TMP_RAND];
		char *tmp = NULL;
		int r;

		random_name(name);
		if (asprintf(&tmp, "%s/%s", o->dir, name) < 0) {
			errno = ENOMEM;
			return -1;
		}
		r = linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW);
		/* Without /proc, AT_EMPTY_PATH does it (needs CAP_DAC_READ_SEARCH). */
		if (r < 0 && errno == ENOENT)
			r = linkat(o->fd, "", AT_FDCWD, tmp, AT_EMPTY_PATH);
		if (r == 0) {
			o->tmp = tmp;
			return 0;
		}
		free(tmp);
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
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
	if (fsync(o->fd) < 0)
		return fail(o->path, errno, NULL);
	/* Termination signals wait until the name is settled either way. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGQUIT);
	sigprocmask(SIG_BLOCK, &set, &old);
	if (!o->tmp && (flock(o->fd, LOCK_EX) < 0 || link_tmpfile(o) < 0))
		err = fail(o->path, errno, "cannot link the new file into its directory");
	if (!err && rename(o->tmp, o->path) < 0)
		err = fail(o->path, errno, NULL);
	if (!err) {
		free(o->tmp);
		o->tmp = NULL;
		o->committed = 1;
		util_sync_dir(o->path);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return err;
}

void outfile_free(struct outfile *o)
{
	if (!o)
		return;
	if (o->tmp)
		unlink(o->tmp);
	if (o->owned && o->fd >= 0)
		close(o->fd);
	free(o->tmp);
	free(o->dir);
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
