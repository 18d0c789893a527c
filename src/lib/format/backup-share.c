/*
 * The custodian share file codec: the text a custodian keeps (one share of
 * the backup key, see format/backup.h), with a check value that catches a
 * transcription error before a restore. Pure host code, no HSM.
 */
#include "internal.h"
#include "format/backup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

static void
share_check(const hw_backup_share *s, uint8_t out[4])
{
	static const char dom[] = "hsmwrap-backup-share v1";
	uint8_t hdr[3] = { (uint8_t)s->index, (uint8_t)s->threshold, (uint8_t)s->custodians };
	uint8_t md[32];
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	memset(md, 0, sizeof(md));
	if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(c, dom, sizeof(dom) - 1) == 1 &&
	    EVP_DigestUpdate(c, s->backup_id, HW_BACKUP_ID_LEN) == 1 &&
	    EVP_DigestUpdate(c, hdr, sizeof(hdr)) == 1 &&
	    EVP_DigestUpdate(c, s->share, HW_SHARE_LEN) == 1)
		EVP_DigestFinal_ex(c, md, NULL);
	EVP_MD_CTX_free(c);
	memcpy(out, md, 4);
}

int
bk_share_numbers_ok(unsigned index, unsigned threshold, unsigned custodians)
{
	return threshold >= 2 && custodians >= threshold && custodians <= HW_SHARES_MAX &&
	       index >= 1 && index <= custodians;
}

HW_EXPORT hw_err
hw_backup_share_format(const hw_backup_share *s, char **text, size_t *len)
{
	char id[2 * HW_BACKUP_ID_LEN + 1], sh[2 * HW_SHARE_LEN + 1], ck[9], *buf;
	uint8_t c[4];
	const size_t cap = 512;
	int n;

	if (!s || !text || !len || !bk_share_numbers_ok(s->index, s->threshold, s->custodians))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_backup_share_format");
	if (!(buf = malloc(cap)))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	share_check(s, c);
	hw_hex(s->backup_id, HW_BACKUP_ID_LEN, id);
	hw_hex(s->share, HW_SHARE_LEN, sh);
	hw_hex(c, 4, ck);
	n = snprintf(buf, cap,
	             "hsmwrap-backup-share v1\nbackup-id: %s\nindex: %u\nthreshold: %u\n"
	             "custodians: %u\nshare: %s\ncheck: %s\n",
	             id, s->index, s->threshold, s->custodians, sh, ck);
	OPENSSL_cleanse(sh, sizeof(sh));
	if (n < 0 || (size_t)n >= cap) {
		hw_free_secret(buf, cap);
		return hw_fail(HW_ERR_CRYPTO, 0, "formatting a share");
	}
	*text = buf;
	*len = (size_t)n;
	return HW_OK;
}

/* The next line (without its "\n", and a "\r" before it) into line[]. */
static hw_err
next_line(hw_rbuf *r, char *line, size_t cap)
{
	size_t n = 0;
	uint8_t c;

	for (;;) {
		if (hw_rbuf_u8(r, &c) != HW_OK)
			return hw_fail(HW_ERR_FORMAT, 0, "share file truncated");
		if (c == '\n')
			break;
		if (c == 0 || n + 1 >= cap)
			return hw_fail(HW_ERR_FORMAT, 0, "share file line too long or binary");
		line[n++] = (char)c;
	}
	if (n && line[n - 1] == '\r')
		n--;
	line[n] = '\0';
	return HW_OK;
}

/* Exactly n bytes as 2n hex digits. */
static int
unhex_exact(const char *s, uint8_t *out, size_t n)
{
	size_t got = 0;

	return hw_unhex(s, out, n, &got) || got != n ? -1 : 0;
}

static int
parse_uint(const char *s, unsigned max, unsigned *v)
{
	unsigned long x = 0;

	if (!*s || strlen(s) > 3)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		x = x * 10 + (unsigned long)(*s - '0');
	}
	if (x > max)
		return -1;
	*v = (unsigned)x;
	return 0;
}

HW_EXPORT hw_err
hw_backup_share_parse(const char *text, size_t len, hw_backup_share *out)
{
	static const char *const keys[] = { "backup-id: ", "index: ", "threshold: ",
	                                    "custodians: ", "share: ", "check: " };
	char line[160];
	hw_backup_share s;
	uint8_t ck[4], want[4];
	hw_rbuf r;
	hw_err e = HW_OK;

	if (!text || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_backup_share_parse");
	if (len > 4096)
		return hw_fail(HW_ERR_FORMAT, 0, "not a share file (too large)");
	memset(&s, 0, sizeof(s));
	hw_rbuf_init(&r, (const uint8_t *)text, len);
	if ((e = next_line(&r, line, sizeof(line))) || strcmp(line, "hsmwrap-backup-share v1")) {
		e = hw_fail(HW_ERR_FORMAT, 0, "not an hsmwrap share file (v1)");
		goto out;
	}
	for (int i = 0; i < 6; i++) {
		const char *v;
		int bad;

		if ((e = next_line(&r, line, sizeof(line))))
			goto out;
		if (strncmp(line, keys[i], strlen(keys[i])) != 0) {
			e = hw_fail(HW_ERR_FORMAT, 0, "share file: expected '%.*s'",
			            (int)strlen(keys[i]) - 2, keys[i]);
			goto out;
		}
		v = line + strlen(keys[i]);
		switch (i) {
		case 0: bad = unhex_exact(v, s.backup_id, HW_BACKUP_ID_LEN); break;
		case 1: bad = parse_uint(v, 255, &s.index); break;
		case 2: bad = parse_uint(v, 255, &s.threshold); break;
		case 3: bad = parse_uint(v, 255, &s.custodians); break;
		case 4: bad = unhex_exact(v, s.share, HW_SHARE_LEN); break;
		default: bad = unhex_exact(v, ck, 4); break;
		}
		if (bad) {
			e = hw_fail(HW_ERR_FORMAT, 0, "share file: bad %.*s value",
			            (int)strlen(keys[i]) - 2, keys[i]);
			goto out;
		}
	}
	/* Trailing blank lines are harmless (editors add them); nothing else. */
	while (hw_rbuf_left(&r)) {
		uint8_t c;
		(void)hw_rbuf_u8(&r, &c);
		if (c != '\n' && c != '\r' && c != ' ') {
			e = hw_fail(HW_ERR_FORMAT, 0, "share file: trailing data");
			goto out;
		}
	}
	if (!bk_share_numbers_ok(s.index, s.threshold, s.custodians)) {
		e = hw_fail(HW_ERR_FORMAT, 0, "share file: index %u, threshold %u of %u",
		            s.index, s.threshold, s.custodians);
		goto out;
	}
	share_check(&s, want);
	if (CRYPTO_memcmp(ck, want, 4) != 0) {
		e = hw_fail(HW_ERR_INTEGRITY, 0, "share %u: the check value does not match "
		            "(a transcription error or an altered share)", s.index);
		goto out;
	}
	*out = s;
out:
	OPENSSL_cleanse(&s, sizeof(s));
	OPENSSL_cleanse(line, sizeof(line));
	return e;
}
