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
 * The names and the lock are the ones the CLI's output files use
 * (tools/outfile.c), so either one removes what the other left behind.
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

void hw_file_sweep(const char *dir)
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

hw_err hw_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                            bool *replaced)
{
	char *dir = NULL, *tmp = NULL;
	int fd = -1, dfd;
	hw_err e;

	if (replaced)
		*replaced = false;
	e = check_target(path);
	if (e != HW_OK)
		return e;
	dir = dir_of(path);
	if (!dir)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	hw_file_sweep(dir);
	if (!no_tmpfile()) {
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
		/* The open mode went through the umask; set it exactly. Locked
		 * before it has a name, so no sweeper takes it for abandoned. */
		if (fd >= 0 && (fchmod(fd, mode) < 0 || flock(fd, LOCK_EX) < 0)) {
			e = hw_fail(HW_ERR_IO, 0, "%s: %s", path, strerror(errno));
			goto out;
		}
	}
	/* EOPNOTSUPP, EISDIR or EINVAL: a file system or kernel without it. */
	if (fd < 0 && (fd = named_tmp(dir, mode, &tmp)) < 0) {
		e = hw_fail(HW_ERR_IO, 0, "creating a file in %s: %s", dir, strerror(errno));
		goto out;
	}
	hw_crash_point();
	e = hw_write_all(fd, data, len / 2);
	hw_crash_point();
	if (e == HW_OK)
		e = hw_write_all(fd, (const uint8_t *)data + len / 2, len - len / 2);
	hw_crash_point();
	if (e == HW_OK && fsync(fd) < 0)
		e = HW_ERR_IO;
	if (e == HW_OK && !tmp && link_tmpfile(fd, dir, &tmp) < 0)
		e = HW_ERR_IO;
	hw_crash_point();
	if (e == HW_OK && rename(tmp, path) < 0)
		e = HW_ERR_IO;
	if (e != HW_OK) {
		e = hw_fail(HW_ERR_IO, 0, "writing %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	if (replaced)
		*replaced = true;
	hw_crash_point();
	/* The rename is durable only once the directory is. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0)
		e = hw_fail(HW_ERR_IO, 0, "syncing directory %s: %s", dir, strerror(errno));
	if (dfd >= 0)
		close(dfd);
out:
	if (tmp) {
		(void)unlink(tmp);
		free(tmp);
	}
	if (fd >= 0)
		close(fd);
	free(dir);
	return e;
}
