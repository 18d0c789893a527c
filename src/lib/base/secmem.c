/*
 * secmem.c - memory for secrets (PINs): its own pages, excluded from core
 * dumps (MADV_DONTDUMP) and locked against swapping (mlock) where
 * RLIMIT_MEMLOCK allows; wiped and unlocked when freed.
 *
 * Why whole pages rather than malloc: madvise and mlock work on pages, and
 * a secret sharing a page with ordinary heap data would drag it along (or
 * be left out when that page is released).
 */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <openssl/crypto.h>

/* The mapping's size sits in front of the caller's bytes, so that the
 * caller need not remember it (a buffer that grew, a PIN of any length). */
#define HDR 16

static size_t page_round(size_t n)
{
	long ps = sysconf(_SC_PAGESIZE);
	size_t p = ps > 0 ? (size_t)ps : 4096;

	return (n + p - 1) / p * p;
}

HW_EXPORT void *
hw_secmem_alloc(size_t len)
{
	size_t n;
	uint8_t *p;

	if (len > SIZE_MAX - 2 * HDR - 65536)
		return NULL;
	n = page_round(len + HDR);
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Both are best effort: an old kernel or a low memlock limit must not
	 * stop a login. The secret is wiped after use either way. */
#ifdef MADV_DONTDUMP
	(void)madvise(p, n, MADV_DONTDUMP);
#endif
	(void)mlock(p, n);
	memcpy(p, &n, sizeof(n));
	return p + HDR;
}

HW_EXPORT void
hw_secmem_free(void *mem)
{
	uint8_t *p;
	size_t n;

	if (!mem)
		return;
	p = (uint8_t *)mem - HDR;
	memcpy(&n, p, sizeof(n));
	OPENSSL_cleanse(p, n);
	(void)munlock(p, n);
	(void)munmap(p, n);
}

HW_EXPORT hw_err
hw_process_harden(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return hw_fail(HW_ERR_IO, 0, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	return HW_OK;
}
