/*
 * outfile.h - the one way hsmwrap writes an output file.
 *
 * Every command that writes a file (encrypt, decrypt, datakey, wrap,
 * unwrap, tde keyring get, key export-ref, ca, backup, audit init...)
 * goes through this, so the rules are the same everywhere:
 *
 *  - "-" means standard output; an existing character device or FIFO
 *    (also behind a link, e.g. /dev/stdout) is written to as a
 *    stream, in place, never replaced. So is a link to the very file that
 *    is our standard output (`-o /dev/stdout >file`).
 *  - A symbolic link to anything else is refused (HW_ERR_INVALID_ARG):
 *    replacing the link would break it, writing through it would let
 *    whoever controls the link choose where a key lands.
 *  - A regular file or a new name: the content goes to an anonymous
 *    O_TMPFILE in the target's directory and is linked into place only by
 *    outfile_commit(), so a crash, kill -9 or a full disk leaves the old
 *    file (or nothing) visible. Where O_TMPFILE is not supported, a named
 *    temporary ".hsmwrap-tmp.XXXXXX" is used instead; its creator holds a
 *    lock on it, and the next hsmwrap writing into that directory removes
 *    the ones whose creator is gone. (The library's hw_file does the file
 *    part; the TDE keyring is written the same way.)
 *
 * Failures set util_detail() (the file name and the reason).
 */
#ifndef HSMWRAP_OUTFILE_H
#define HSMWRAP_OUTFILE_H

#include <stddef.h>

#include "hsmwrap.h"

struct outfile;

enum {
	OUTFILE_SECRET = 1u << 0,   /* mode 0600, else 0666 & ~umask */
};

hw_err outfile_open(const char *path, unsigned flags, struct outfile **out);
/* True when the output is standard output, a device or a FIFO. */
int outfile_is_stream(const struct outfile *o);
/* The descriptor to write to (the temporary file or the stream). */
int outfile_fd(const struct outfile *o);
hw_err outfile_write(struct outfile *o, const void *data, size_t len);
/*
 * File: fsync, link over the target, sync the directory. Stream: when it
 * is the process's standard output, what the command prints afterwards
 * (its text or --json report) goes to standard error instead, so it cannot
 * mix with the data.
 */
hw_err outfile_commit(struct outfile *o);
/* Closes; an uncommitted file output leaves nothing behind. NULL is fine. */
void outfile_free(struct outfile *o);

/*
 * A private scratch file for data that may not be released yet (plaintext
 * of a signed message before its signature verified): an unlinked file in
 * $TMPDIR (else /tmp), mode 0600, never visible under any name when
 * O_TMPFILE works. Returns the descriptor or -1 (errno set).
 */
int outfile_spool(void);
/* Test hook: HSMWRAP_TEST_NO_TMPFILE=1 forces the named-temporary path. */

#endif /* HSMWRAP_OUTFILE_H */
