/*
 * file.c - files the library writes whole: they appear complete or not at
 * all, whatever happens to the process (kill -9, full disk, power loss).
 *
 * Why an anonymous O_TMPFILE rather than a named temporary: a named one
 * survives a SIGKILL and nothing would ever remove it. An O_TMPFILE inode
 * has no name until it is complete and synced; then it is linked under a
 * temporary name and renamed over the target (linkat cannot replace a
 * name). That name exists for two system calls; its inode is locked
 * (flock) from before it has a name, which is how hw_file_sweep() tells an
 * abandoned temporary from one in use.
 *
 * The TDE keyring and every output file of the CLI (tools/outfile.c) are
 * written this way, so any of them removes what another left behind.
 */
#include "internal.h"

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

#define TMP_PREFIX ".hsmwrap-tmp."
#define TMP_RAND 6
#define TMP_NAME_MAX (sizeof(TMP_PREFIX) + TMP_RAND)

static unsigned crash_step;

void hw_crash_point(void)
{
	const char *at = getenv("HSMWRAP_TEST_CRASH_AT");

	crash_step++;
	if (at && *at && strtoul(at, NULL, 10) == crash_step)
		raise(SIGKILL);
}

hw_err hw_write_all(int fd, const void *data, size_t n)
{
	const uint8_t *p = data;

	while (n) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0)
			errno = EIO;
		if (k <= 0)
			return HW_ERR_IO;
		p += k;
		n -= (size_t)k;
	}
	return HW_OK;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* TMP_PREFIX followed by TMP_RAND characters of [A-Za-z0-9]. */
static void random_name(char out[TMP_NAME_MAX])
{
	static const char set[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char r[TMP_RAND];

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* Only uniqueness matters here; a collision is retried. */
		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (unsigned char)(rand() ^ getpid());
	}
	memcpy(out, TMP_PREFIX, sizeof(TMP_PREFIX) - 1);
	for (size_t i = 0; i < TMP_RAND; i++)
		out[sizeof(TMP_PREFIX) - 1 + i] = set[r[i] % (sizeof(set) - 1)];
	out[sizeof(TMP_PREFIX) - 1 + TMP_RAND] = '\0';
}

static bool is_tmp_name(const char *name)
{
	size_t pl = sizeof(TMP_PREFIX) - 1;

	if (strncmp(name, TMP_PREFIX, pl) != 0 || strlen(name) != pl + TMP_RAND)
		return false;
	for (size_t i = pl; i < pl + TMP_RAND; i++)
		if (!((name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= 'a' && name[i] <= 'z') ||
		      (name[i] >= '0' && name[i] <= '9')))
			return false;
	return true;
}

HW_EXPORT void
hw_file_sweep(const char *dir)
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

static bool no_tmpfile(void)
{
	const char *t = getenv("HSMWRAP_TEST_NO_TMPFILE");

	return t && strcmp(t, "1") == 0;
}

/*
 * The named fallback: created and locked, then checked to still be ours
 * (a sweeper may have removed it between open and flock).
 */
static int named_tmp(const char *dir, mode_t mode, char **tmp_out)
{
	for (int tries = 0; tries < 16; tries++) {
		char name[TMP_NAME_MAX];
		struct stat a, b;
		char *tmp = NULL;
		int fd;

		random_name(name);
		if (asprintf(&tmp, "%s/%s", dir, name) < 0) {
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
		*tmp_out = tmp;
		return fd;
	}
	errno = EEXIST;
	return -1;
}

/* Gives the complete anonymous inode a temporary name beside the target. */
static int link_tmpfile(int fd, const char *dir, char **tmp_out)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	for (int tries = 0; tries < 16; tries++) {
		char name[TMP_NAME_MAX];
		char *tmp = NULL;
		int r;

		random_name(name);
		if (asprintf(&tmp, "%s/%s", dir, name) < 0) {
			errno = ENOMEM;
			return -1;
		}
		r = linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW);
		/* Without /proc, AT_EMPTY_PATH does it (needs CAP_DAC_READ_SEARCH). */
		if (r < 0 && errno == ENOENT)
			r = linkat(fd, "", AT_FDCWD, tmp, AT_EMPTY_PATH);
		if (r == 0) {
			*tmp_out = tmp;
			return 0;
		}
		free(tmp);
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

/* A new name, or an existing regular file: anything else is refused. */
static hw_err check_target(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return HW_OK;
		return hw_fail(HW_ERR_IO, 0, "%s: %s", path, strerror(errno));
	}
	if (S_ISLNK(st.st_mode))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "%s is a symbolic link; hsmwrap neither "
		               "replaces a link nor writes through it: give the path of the file "
		               "itself", path);
	if (!S_ISREG(st.st_mode))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "%s is not a regular file", path);
	return HW_OK;
}

struct hw_file {
	char *path;
	char *dir;
	char *tmp;                  /* its temporary name, while it has one */
	int fd;
	bool replaced;              /* renamed over path */
};

HW_EXPORT void
hw_file_free(hw_file *f)
{
	if (!f)
		return;
	if (f->tmp)
		(void)unlink(f->tmp);
	if (f->fd >= 0)
		close(f->fd);
	free(f->tmp);
	free(f->dir);
	free(f->path);
	free(f);
}

HW_EXPORT hw_err
hw_file_create(const char *path, unsigned mode, hw_file **out)
{
	hw_file *f;
	hw_err e;

	if (!path || !*path || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_file_create");
	*out = NULL;
	e = check_target(path);
	if (e != HW_OK)
		return e;
	f = calloc(1, sizeof(*f));
	if (!f)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	f->fd = -1;
	f->path = strdup(path);
	f->dir = dir_of(path);
	if (!f->path || !f->dir) {
		hw_file_free(f);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	hw_file_sweep(f->dir);
	if (!no_tmpfile()) {
		f->fd = open(f->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, (mode_t)mode);
		/* The open mode went through the umask; set it exactly. Locked
		 * before it has a name, so no sweeper takes it for abandoned. */
		if (f->fd >= 0 && (fchmod(f->fd, (mode_t)mode) < 0 || flock(f->fd, LOCK_EX) < 0)) {
			e = hw_fail(HW_ERR_IO, 0, "%s: %s", path, strerror(errno));
			hw_file_free(f);
			return e;
		}
	}
	/* EOPNOTSUPP, EISDIR or EINVAL: a file system or kernel without it. */
	if (f->fd < 0 && (f->fd = named_tmp(f->dir, (mode_t)mode, &f->tmp)) < 0) {
		e = hw_fail(HW_ERR_IO, 0, "%s: cannot create a file in its directory: %s", path,
		            strerror(errno));
		hw_file_free(f);
		return e;
	}
	*out = f;
	return HW_OK;
}

HW_EXPORT int
hw_file_fd(const hw_file *f)
{
	return f ? f->fd : -1;
}

HW_EXPORT hw_err
hw_file_commit(hw_file *f)
{
	int dfd;

	if (!f)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_file_commit");
	if (f->replaced)
		return HW_OK;
	if (fsync(f->fd) < 0)
		return hw_fail(HW_ERR_IO, 0, "writing %s: %s", f->path, strerror(errno));
	if (!f->tmp && link_tmpfile(f->fd, f->dir, &f->tmp) < 0)
		return hw_fail(HW_ERR_IO, 0, "%s: cannot link the new file into its directory: %s",
		               f->path, strerror(errno));
	hw_crash_point();
	if (rename(f->tmp, f->path) < 0)
		return hw_fail(HW_ERR_IO, 0, "writing %s: %s", f->path, strerror(errno));
	free(f->tmp);
	f->tmp = NULL;
	f->replaced = true;
	hw_crash_point();
	/* The rename is durable only once the directory is. Some file systems
	 * cannot sync a directory at all (EINVAL): the rename stands there. */
	dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || (fsync(dfd) < 0 && errno != EINVAL)) {
		hw_err e = hw_fail(HW_ERR_IO, 0, "syncing directory %s: %s", f->dir, strerror(errno));

		if (dfd >= 0)
			close(dfd);
		return e;
	}
	close(dfd);
	return HW_OK;
}

hw_err hw_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode,
                            bool *replaced)
{
	hw_file *f = NULL;
	hw_err e;

	if (replaced)
		*replaced = false;
	e = hw_file_create(path, mode, &f);
	if (e != HW_OK)
		return e;
	hw_crash_point();
	e = hw_write_all(f->fd, data, len / 2);
	hw_crash_point();
	if (e == HW_OK)
		e = hw_write_all(f->fd, (const uint8_t *)data + len / 2, len - len / 2);
	hw_crash_point();
	if (e != HW_OK)
		e = hw_fail(HW_ERR_IO, 0, "writing %s: %s", path, strerror(errno));
	else
		e = hw_file_commit(f);
	if (replaced)
		*replaced = f->replaced;
	hw_file_free(f);
	return e;
}
