/*
 * An advisory lock between processes sharing one token, for changes that
 * read, modify and write several objects (lifecycle metadata, rotation).
 *
 * PKCS#11 has no transactions, and two processes updating one key's
 * metadata would each write a new object from the same old one: the last
 * write would win and the other change be lost. flock(2) on a file named
 * after the module and the token serialises such updates on one machine.
 * The file lives in $HSMWRAP_LOCK_DIR, else /tmp; it is shared by every
 * user of the token, so it is made readable and writable by all (holding
 * it only delays others' updates; it guards no secret). A lock held
 * longer than HW_TOKEN_LOCK_WAIT_MS fails the update with HW_ERR_DEVICE.
 *
 * Nested use in one thread (rotation updates metadata) takes it once.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define HW_TOKEN_LOCK_WAIT_MS 60000

static _Thread_local int held_fd = -1;
static _Thread_local unsigned held_depth;

static void
sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Directory/hsmwrap-<first 16 bytes of SHA-256(module, token)>.lock */
static hw_err
lock_path(hw_ctx *ctx, char *out, size_t n)
{
	const char *dir = getenv("HSMWRAP_LOCK_DIR");
	unsigned char md[32];
	unsigned mdlen = 0;
	char hex[33];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	int ok = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) &&
	         EVP_DigestUpdate(h, ctx->mod->path, strlen(ctx->mod->path) + 1) &&
	         EVP_DigestUpdate(h, ctx->tinfo.manufacturerID, sizeof(ctx->tinfo.manufacturerID)) &&
	         EVP_DigestUpdate(h, ctx->tinfo.model, sizeof(ctx->tinfo.model)) &&
	         EVP_DigestUpdate(h, ctx->tinfo.serialNumber, sizeof(ctx->tinfo.serialNumber)) &&
	         EVP_DigestUpdate(h, ctx->tinfo.label, sizeof(ctx->tinfo.label)) &&
	         EVP_DigestFinal_ex(h, md, &mdlen);

	EVP_MD_CTX_free(h);
	if (!ok)
		return hw_fail(HW_ERR_CRYPTO, 0, "SHA-256 of the token lock name");
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (!dir || !*dir)
		dir = "/tmp";
	if ((size_t)snprintf(out, n, "%s/hsmwrap-%s.lock", dir, hex) >= n)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "HSMWRAP_LOCK_DIR is too long");
	return HW_OK;
}

hw_err
hw_token_lock(hw_ctx *ctx)
{
	char path[4096];
	struct stat st;
	unsigned waited = 0;
	hw_err e;
	int fd;

	if (held_depth) {
		held_depth++;
		return HW_OK;
	}
	if ((e = hw_ctx_ready(ctx)) != HW_OK || (e = lock_path(ctx, path, sizeof(path))) != HW_OK)
		return e;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
	if (fd < 0)
		return hw_fail(HW_ERR_IO, 0, "token lock %s: %s", path, strerror(errno));
	/* Shared by every user of the token, whatever their umask. */
	if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && (st.st_mode & 0777) != 0666)
		(void)fchmod(fd, 0666);
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			e = hw_fail(HW_ERR_IO, 0, "token lock %s: %s", path, strerror(errno));
			close(fd);
			return e;
		}
		if (waited >= HW_TOKEN_LOCK_WAIT_MS) {
			close(fd);
			return hw_fail(HW_ERR_DEVICE, 0, "another process has held the token lock %s "
			               "for %u s", path, waited / 1000);
		}
		sleep_ms(5);
		waited += 5;
	}
	held_fd = fd;
	held_depth = 1;
	return HW_OK;
}

void
hw_token_unlock(void)
{
	if (held_depth == 0 || --held_depth > 0)
		return;
	(void)flock(held_fd, LOCK_UN);
	close(held_fd);
	held_fd = -1;
}
