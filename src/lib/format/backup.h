/*
 * The M-of-N backup file and the custodian share file (internal): pure
 * codecs, no HSM, shared by the codecs (format/backup-file.c,
 * format/backup-share.c) and the ceremonies that use them
 * (lifecycle/backup-create.c, lifecycle/backup-restore.c).
 *
 * File format v1 (big-endian, every field through hw_rbuf/hw_wbuf):
 *   "HWBK" u8 version=1, backup_id[16], u8 threshold, u8 custodians,
 *   u64 created, salt[32], keycheck[16], u16 nentries, entries, tag[32]
 * entry:
 *   u32 class, u32 key type, str16 label, str16 id, u32 value_len,
 *   u32 flags (HWBK_F_*), u16 nmech + u32 mech each, str16 kcv (raw),
 *   str16 wrapped, str16 pub_a, str16 pub_b (RSA modulus/exponent or EC
 *   params/point of a pair's public half), u16 nmeta + (str16 application,
 *   str16 label, str16 value, u8 private) each
 * keycheck = HKDF-SHA-256(backup key, salt, "hsmwrap backup v1 key check"),
 * so wrong shares are told apart from a tampered file; tag =
 * HMAC-SHA-256(HKDF(backup key, salt, "hsmwrap backup v1 mac"), all before).
 */
#ifndef HW_FORMAT_BACKUP_H
#define HW_FORMAT_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "hsmwrap.h"

#define HWBK_VERSION 1
#define HWBK_MAX_ENTRIES 1024
#define HWBK_MAX_META 64
#define HWBK_MAX_MECHS 64
#define HWBK_FILE_MAX (16u * 1024u * 1024u)
/* The backup key, which the shares split. */
#define HWBK_KEY_LEN 32
#define HWBK_SALT_LEN 32

enum {
	HWBK_F_PRIVATE = 1u << 0,
	HWBK_F_ENCRYPT = 1u << 1,
	HWBK_F_DECRYPT = 1u << 2,
	HWBK_F_WRAP = 1u << 3,
	HWBK_F_UNWRAP = 1u << 4,
	HWBK_F_SIGN = 1u << 5,
	HWBK_F_VERIFY = 1u << 6,
	HWBK_F_DERIVE = 1u << 7,
	HWBK_F_ALL = 0xffu,
};

/* Pointers below point into the file parsed (or the caller's buffers
 * when writing): nothing is copied. */
typedef struct {
	const uint8_t *app, *label, *value;
	size_t app_len, label_len, value_len;
	uint8_t private_;
} bk_meta;

typedef struct {
	uint32_t cls, ktype;
	const uint8_t *label, *id, *kcv, *wrapped, *pub_a, *pub_b;
	size_t label_len, id_len, kcv_len, wrapped_len, pub_a_len, pub_b_len;
	uint32_t value_len, flags;
	uint16_t nmech;
	CK_MECHANISM_TYPE mechs[HWBK_MAX_MECHS];
	uint16_t nmeta;
	bk_meta meta[HWBK_MAX_META];
} bk_entry;

typedef struct {
	uint8_t version;
	const uint8_t *backup_id, *salt, *keycheck, *tag;
	uint8_t threshold, custodians;
	uint64_t created;
	uint16_t nentries;
	bk_entry *entries;          /* calloc'd */
	size_t signed_len;          /* bytes covered by the tag */
} bk_file;

/* ---- format/backup-file.c ---- */
/* Checks the structure only: the tag needs the backup key (bk_file_tag).
 * On success f points into in and must be freed with bk_file_free. */
hw_err bk_file_parse(const uint8_t *in, size_t len, bk_file *f);
void bk_file_free(bk_file *f);
/* The file of n entries, created now, keycheck and tag derived from bk. */
hw_err bk_file_write(const bk_entry *entries, size_t n, const uint8_t bk[HWBK_KEY_LEN],
                     const uint8_t salt[HWBK_SALT_LEN], const uint8_t *backup_id,
                     unsigned threshold, unsigned custodians, uint8_t **file,
                     size_t *filelen);
/* The public summary of a parsed file (hw_backup_info_free). */
hw_err bk_info_make(const bk_file *f, hw_backup_info **out);
hw_err bk_keycheck(const uint8_t bk[HWBK_KEY_LEN], const uint8_t salt[HWBK_SALT_LEN],
                   uint8_t kc[16]);
hw_err bk_file_tag(const uint8_t bk[HWBK_KEY_LEN], const uint8_t salt[HWBK_SALT_LEN],
                   const uint8_t *data, size_t len, uint8_t tag[32]);

/* ---- format/backup-share.c ---- */
/* What a share file and a restore accept as index, M and N. */
int bk_share_numbers_ok(unsigned index, unsigned threshold, unsigned custodians);

#endif
