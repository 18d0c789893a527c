/*
 * TDE keyrings: the table keys of a database, each version a 32-byte data
 * key wrapped by the database master key with AES-256-GCM inside the HSM
 * (the blob format of ops.c). The AAD of every wrapped key names the
 * keyring, the table key id and the version, so a wrapped key cannot be
 * moved to another slot or keyring. A seal over the whole file (a GCM tag
 * made by the master key with the file as AAD) makes removed, duplicated
 * or re-ordered entries and edited headers fail on open.
 *
 * File, big-endian, version 1:
 *   "HWTK" | u8 1 | keyring id [16] | u32 generation | u64 created
 *   | str16 master label | str16 master CKA_ID | str16 master KCV (hex)
 *   | u32 n | n x (u32 id | u32 version | u64 created | str16 blob)
 *   | str16 seal
 * Entries are sorted by (id, version), strictly; versions start at 1.
 * The seal is hw_encrypt(master, keyring id, AAD = every byte before it).
 *
 * Saving is atomic (hw_file_write_atomic): a crash leaves the old or the
 * new file and no temporary one; a keyring path that is a symlink is
 * refused rather than replaced.
 */
#include "internal.h"
#include "base/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define TDE_MAGIC "HWTK"
#define TDE_VERSION 1
#define TDE_MAX_FILE (64u * 1024u * 1024u)
#define TDE_MAX_ENTRIES 1000000u

struct tde_entry {
	uint32_t id, version;
	uint64_t created;
	uint8_t *blob;
	size_t bloblen;
};

struct hw_tde_keyring {
	hw_ctx *ctx;
	hw_key *master;
	uint8_t kid[16];
	uint32_t generation;
	uint64_t created;
	char label[129];
	uint8_t mid[64];
	size_t mid_len;
	char kcv[7];
	struct tde_entry *e;
	size_t n, cap;
};

/* ---------------------------------------------------------------- */
/* Parsing (no HSM)                                                  */

static void entries_free(struct tde_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].blob);
	free(e);
}

static hw_err bad(const char *what)
{
	return hw_fail(HW_ERR_FORMAT, 0, "TDE keyring: %s", what);
}

/*
 * Fills kr's header and entries from buf; *body_len is the length of the
 * sealed part, and *seal points at the seal inside buf.
 */
static hw_err parse(const uint8_t *buf, size_t len, struct hw_tde_keyring *kr,
                    size_t *body_len, const uint8_t **seal, size_t *seal_len)
{
	hw_rbuf r;
	const uint8_t *p;
	size_t l;
	uint8_t ver;
	uint32_t n;

	if (len > TDE_MAX_FILE)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "TDE keyring larger than %u bytes", TDE_MAX_FILE);
	hw_rbuf_init(&r, buf, len);
	if (hw_rbuf_bytes(&r, 4, &p) != HW_OK || memcmp(p, TDE_MAGIC, 4) != 0)
		return bad("not a keyring file");
	if (hw_rbuf_u8(&r, &ver) != HW_OK || ver != TDE_VERSION)
		return bad("unknown format version");
	if (hw_rbuf_bytes(&r, 16, &p) != HW_OK)
		return bad("truncated header");
	memcpy(kr->kid, p, 16);
	if (hw_rbuf_u32(&r, &kr->generation) != HW_OK || hw_rbuf_u64(&r, &kr->created) != HW_OK)
		return bad("truncated header");
	if (hw_rbuf_str16(&r, &p, &l) != HW_OK || l == 0 || l >= sizeof(kr->label) ||
	    memchr(p, 0, l))
		return bad("bad master key label");
	memcpy(kr->label, p, l);
	kr->label[l] = '\0';
	if (hw_rbuf_str16(&r, &p, &l) != HW_OK || l == 0 || l > sizeof(kr->mid))
		return bad("bad master key id");
	memcpy(kr->mid, p, l);
	kr->mid_len = l;
	if (hw_rbuf_str16(&r, &p, &l) != HW_OK || (l != 0 && l != 6))
		return bad("bad master key check value");
	for (size_t i = 0; i < l; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return bad("bad master key check value");
	memcpy(kr->kcv, p, l);
	kr->kcv[l] = '\0';
	if (hw_rbuf_u32(&r, &n) != HW_OK || n > TDE_MAX_ENTRIES)
		return bad("bad entry count");
	/* Each entry takes at least 18 bytes: a count beyond that is a lie. */
	if ((uint64_t)n * 18 > hw_rbuf_left(&r))
		return bad("truncated entries");
	kr->e = calloc(n ? n : 1, sizeof(*kr->e));
	if (!kr->e)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	kr->cap = n ? n : 1;
	for (uint32_t i = 0; i < n; i++) {
		struct tde_entry *e = &kr->e[i];

		if (hw_rbuf_u32(&r, &e->id) != HW_OK || hw_rbuf_u32(&r, &e->version) != HW_OK ||
		    hw_rbuf_u64(&r, &e->created) != HW_OK || hw_rbuf_str16(&r, &p, &l) != HW_OK)
			return bad("truncated entry");
		if (e->version == 0 || l == 0)
			return bad("entry with version 0 or no wrapped key");
		if (i > 0 && (e->id < e[-1].id || (e->id == e[-1].id && e->version <= e[-1].version)))
			return bad("entries out of order or duplicated");
		if (i > 0 && e->id == e[-1].id && e->version != e[-1].version + 1)
			return bad("a table key version is missing");
		if ((i == 0 || e->id != e[-1].id) && e->version != 1)
			return bad("a table key does not start at version 1");
		e->blob = malloc(l);
		if (!e->blob)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		memcpy(e->blob, p, l);
		e->bloblen = l;
		kr->n = i + 1;
	}
	*body_len = r.off;
	if (hw_rbuf_str16(&r, seal, seal_len) != HW_OK || *seal_len == 0)
		return bad("missing seal");
	if (hw_rbuf_left(&r))
		return bad("bytes after the seal");
	return HW_OK;
}

static void kr_free(struct hw_tde_keyring *kr)
{
	if (!kr)
		return;
	entries_free(kr->e, kr->n);
	hw_key_free(kr->master);
	free(kr);
}

static void fill_info(const struct hw_tde_keyring *kr, hw_tde_keyring_info *info)
{
	hw_hex(kr->kid, sizeof(kr->kid), info->keyring_id);
	snprintf(info->master_label, sizeof(info->master_label), "%s", kr->label);
	hw_hex(kr->mid, kr->mid_len, info->master_id);
	snprintf(info->master_kcv, sizeof(info->master_kcv), "%s", kr->kcv);
	info->generation = kr->generation;
	info->created = kr->created;
	info->nentries = kr->n;
	for (size_t i = 0; i < kr->n; i++) {
		info->entries[i].id = kr->e[i].id;
		info->entries[i].version = kr->e[i].version;
		info->entries[i].created = kr->e[i].created;
	}
}

static hw_err make_info(const struct hw_tde_keyring *kr, hw_tde_keyring_info **out)
{
	hw_tde_keyring_info *info = calloc(1, sizeof(*info));

	if (info)
		info->entries = calloc(kr->n ? kr->n : 1, sizeof(*info->entries));
	if (!info || !info->entries) {
		free(info);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	fill_info(kr, info);
	*out = info;
	return HW_OK;
}

HW_EXPORT void
hw_tde_keyring_info_free(hw_tde_keyring_info *info)
{
	if (!info)
		return;
	free(info->entries);
	free(info);
}

HW_EXPORT hw_err
hw_tde_keyring_inspect(const uint8_t *buf, size_t len, hw_tde_keyring_info **out)
{
	struct hw_tde_keyring *kr;
	const uint8_t *seal;
	size_t body, seal_len;
	hw_blob_info bi;
	hw_err e;

	if ((!buf && len) || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_inspect");
	kr = calloc(1, sizeof(*kr));
	if (!kr)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	e = parse(buf, len, kr, &body, &seal, &seal_len);
	if (e == HW_OK && hw_blob_inspect(seal, seal_len, &bi) != HW_OK)
		e = bad("the seal is not a blob");
	if (e == HW_OK)
		e = make_info(kr, out);
	kr_free(kr);
	return e;
}

/* ---------------------------------------------------------------- */
/* Wrapped table keys                                                */

/* The AAD of table key (id, version): the keyring, the slot. */
static hw_err slot_ectx(const struct hw_tde_keyring *kr, uint32_t id, uint32_t version,
                        hw_ectx **out)
{
	char kid[33], sid[16], sver[16];
	hw_ectx *ec = NULL;
	hw_err e;

	hw_hex(kr->kid, sizeof(kr->kid), kid);
	snprintf(sid, sizeof(sid), "%" PRIu32, id);
	snprintf(sver, sizeof(sver), "%" PRIu32, version);
	e = hw_ectx_new(&ec);
	if (e == HW_OK)
		e = hw_ectx_add(ec, "hsmwrap-tde-keyring", kid);
	if (e == HW_OK)
		e = hw_ectx_add(ec, "table-key-id", sid);
	if (e == HW_OK)
		e = hw_ectx_add(ec, "table-key-version", sver);
	if (e != HW_OK) {
		hw_ectx_free(ec);
		return e;
	}
	*out = ec;
	return HW_OK;
}

/* A blob of the keyring must name the master key the header names. */
static hw_err check_blob_key(const struct hw_tde_keyring *kr, const uint8_t *blob, size_t len)
{
	hw_blob_info bi;
	char mid[129];

	if (hw_blob_inspect(blob, len, &bi) != HW_OK ||
	    (bi.kind != HW_BLOB_DATAKEY && bi.kind != HW_BLOB_DIRECT))
		return bad("an entry is not a wrapped data key");
	hw_hex(kr->mid, kr->mid_len, mid);
	if (strcmp(mid, bi.key_id_hex) != 0)
		return hw_fail(HW_ERR_INTEGRITY, 0, "TDE keyring: an entry is wrapped by key "
		               "'%s', not by the master key '%s'", bi.key_label, kr->label);
	return HW_OK;
}

static hw_err unwrap_entry(const struct hw_tde_keyring *kr, hw_key *master,
                           const struct tde_entry *en, uint8_t out[32])
{
	hw_blob_info bi;
	hw_ectx *ec = NULL;
	uint8_t *ser = NULL, *pt = NULL;
	size_t serlen = 0, ptlen = 0;
	hw_err e;

	if (hw_blob_inspect(en->blob, en->bloblen, &bi) != HW_OK)
		return bad("an entry is not a wrapped data key");
	e = slot_ectx(kr, en->id, en->version, &ec);
	if (e != HW_OK)
		return e;
	if (bi.kind == HW_BLOB_DATAKEY) {
		e = hw_datakey_decrypt(master->ctx, master, ec, en->blob, en->bloblen, out);
	} else {
		/* Re-wrapped by a rekey: the same AAD, as a direct-encryption blob. */
		e = hw_ectx_serialize(ec, &ser, &serlen);
		if (e == HW_OK)
			e = hw_decrypt(master->ctx, master, en->blob, en->bloblen, ser, serlen, &pt,
			               &ptlen);
		if (e == HW_OK && ptlen != HW_DATAKEY_LEN)
			e = hw_fail(HW_ERR_FORMAT, 0, "TDE keyring: a table key is not 32 bytes");
		if (e == HW_OK)
			memcpy(out, pt, HW_DATAKEY_LEN);
		if (pt)
			hw_free_secret(pt, ptlen);
		free(ser);
	}
	hw_ectx_free(ec);
	return e;
}

/* ---------------------------------------------------------------- */
/* Serialisation and the seal                                        */

static hw_err serialize_body(const struct hw_tde_keyring *kr, hw_wbuf *w)
{
	hw_wbuf_put(w, TDE_MAGIC, 4);
	hw_wbuf_u8(w, TDE_VERSION);
	hw_wbuf_put(w, kr->kid, sizeof(kr->kid));
	hw_wbuf_u32(w, kr->generation);
	hw_wbuf_u64(w, kr->created);
	hw_wbuf_str16(w, kr->label, strlen(kr->label));
	hw_wbuf_str16(w, kr->mid, kr->mid_len);
	hw_wbuf_str16(w, kr->kcv, strlen(kr->kcv));
	hw_wbuf_u32(w, (uint32_t)kr->n);
	for (size_t i = 0; i < kr->n; i++) {
		hw_wbuf_u32(w, kr->e[i].id);
		hw_wbuf_u32(w, kr->e[i].version);
		hw_wbuf_u64(w, kr->e[i].created);
		hw_wbuf_str16(w, kr->e[i].blob, kr->e[i].bloblen);
	}
	return w->err;
}

static hw_err check_seal(const struct hw_tde_keyring *kr, const uint8_t *body, size_t body_len,
                         const uint8_t *seal, size_t seal_len)
{
	uint8_t *pt = NULL;
	size_t ptlen = 0;
	hw_err e;

	e = check_blob_key(kr, seal, seal_len);
	if (e == HW_ERR_FORMAT)
		return bad("the seal is not a blob");
	if (e != HW_OK)
		return e;
	e = hw_decrypt(kr->ctx, kr->master, seal, seal_len, body, body_len, &pt, &ptlen);
	if (e == HW_ERR_INTEGRITY)
		return hw_fail(e, hw_last_ckrv(), "TDE keyring: the seal does not verify (the file "
		               "was altered)");
	if (e != HW_OK)
		return e;
	if (ptlen != sizeof(kr->kid) || CRYPTO_memcmp(pt, kr->kid, ptlen) != 0)
		e = hw_fail(HW_ERR_INTEGRITY, 0, "TDE keyring: the seal belongs to another keyring");
	hw_free_secret(pt, ptlen);
	return e;
}

static hw_err find_master(hw_ctx *ctx, const uint8_t *id, size_t id_len, const char *label,
                          hw_key **out)
{
	char spec[140];
	hw_err e;

	snprintf(spec, sizeof(spec), "id:");
	hw_hex(id, id_len, spec + 3);
	e = hw_key_find(ctx, spec, out);
	if (e == HW_ERR_KEY_NOT_FOUND)
		return hw_fail(e, 0, "the keyring's master key '%s' is not on the token", label);
	return e;
}

/* The whole file, at most TDE_MAX_FILE bytes; *buf to free(). */
static hw_err read_file(const char *path, uint8_t **buf_out, size_t *len_out)
{
	uint8_t *buf;
	size_t len;
	struct stat st;
	FILE *f;

	f = fopen(path, "rb");
	if (!f)
		return hw_fail(HW_ERR_IO, 0, "%s: %s", path, strerror(errno));
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > TDE_MAX_FILE) {
		fclose(f);
		return hw_fail(st.st_size > TDE_MAX_FILE ? HW_ERR_TOO_LARGE : HW_ERR_IO, 0,
		               "%s: not a keyring file of at most %u bytes", path, TDE_MAX_FILE);
	}
	len = (size_t)st.st_size;
	buf = malloc(len ? len : 1);
	if (!buf || fread(buf, 1, len, f) != len) {
		fclose(f);
		free(buf);
		return hw_fail(buf ? HW_ERR_IO : HW_ERR_NOMEM, 0, "reading %s", path);
	}
	fclose(f);
	*buf_out = buf;
	*len_out = len;
	return HW_OK;
}

HW_EXPORT hw_err
hw_tde_keyring_open(hw_ctx *ctx, const char *path, hw_tde_keyring **out)
{
	struct hw_tde_keyring *kr;
	uint8_t *buf = NULL;
	const uint8_t *seal;
	size_t len = 0, body, seal_len;
	hw_err e;

	if (!ctx || !path || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_open");
	hw_clear_error();
	e = read_file(path, &buf, &len);
	if (e != HW_OK)
		return e;
	kr = calloc(1, sizeof(*kr));
	if (!kr) {
		free(buf);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	kr->ctx = ctx;
	e = parse(buf, len, kr, &body, &seal, &seal_len);
	if (e == HW_OK)
		e = find_master(ctx, kr->mid, kr->mid_len, kr->label, &kr->master);
	if (e == HW_OK)
		e = check_seal(kr, buf, body, seal, seal_len);
	for (size_t i = 0; e == HW_OK && i < kr->n; i++)
		e = check_blob_key(kr, kr->e[i].blob, kr->e[i].bloblen);
	free(buf);
	if (e != HW_OK) {
		kr_free(kr);
		return e;
	}
	*out = kr;
	return HW_OK;
}

HW_EXPORT void
hw_tde_keyring_close(hw_tde_keyring *kr)
{
	kr_free(kr);
}

HW_EXPORT hw_err
hw_tde_keyring_info_get(const hw_tde_keyring *kr, hw_tde_keyring_info **out)
{
	if (!kr || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_info_get");
	return make_info(kr, out);
}

HW_EXPORT hw_err
hw_tde_key_get(hw_tde_keyring *kr, uint32_t id, uint32_t version, uint8_t out[32],
               uint32_t *version_out)
{
	const struct tde_entry *found = NULL;
	uint8_t k[HW_DATAKEY_LEN];
	hw_err e;

	if (!kr || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_key_get");
	hw_clear_error();
	for (size_t i = 0; i < kr->n; i++)
		if (kr->e[i].id == id && (version == 0 || kr->e[i].version == version))
			found = &kr->e[i];  /* sorted: the last match is the latest */
	if (!found)
		return version ? hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "table key %" PRIu32 " version %"
		                         PRIu32 " is not in the keyring", id, version)
		               : hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "table key %" PRIu32
		                         " is not in the keyring", id);
	e = unwrap_entry(kr, kr->master, found, k);
	if (e == HW_OK) {
		memcpy(out, k, sizeof(k));
		if (version_out)
			*version_out = found->version;
	}
	OPENSSL_cleanse(k, sizeof(k));
	return e;
}

/* ---------------------------------------------------------------- */
/* Administration                                                    */

static hw_err set_master(struct hw_tde_keyring *kr, hw_key *master)
{
	hw_key_info ki;
	hw_err e = hw_key_info_get(master, &ki);

	if (e != HW_OK)
		return e;
	if (ki.type != HW_KEY_AES256 || ki.purpose != HW_PURPOSE_ENVELOPE)
		return hw_fail(HW_ERR_KEY_PURPOSE, 0, "the TDE master key '%s' must be an AES-256 "
		               "envelope key", master->label);
	snprintf(kr->label, sizeof(kr->label), "%s", master->label);
	memcpy(kr->mid, master->id, master->id_len);
	kr->mid_len = master->id_len;
	snprintf(kr->kcv, sizeof(kr->kcv), "%.6s", strcmp(ki.kcv_alg, "AES-ECB-zero") == 0 ?
	         ki.kcv : "");
	return HW_OK;
}

HW_EXPORT hw_err
hw_tde_keyring_create(hw_key *master, hw_tde_keyring **out)
{
	struct hw_tde_keyring *kr;
	hw_key *copy = NULL;
	hw_err e;

	if (!master || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_create");
	hw_clear_error();
	kr = calloc(1, sizeof(*kr));
	if (!kr)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	kr->ctx = master->ctx;
	kr->created = (uint64_t)time(NULL);
	e = hw_random(kr->kid, sizeof(kr->kid));
	if (e == HW_OK)
		e = set_master(kr, master);
	if (e == HW_OK)
		e = find_master(master->ctx, master->id, master->id_len, master->label, &copy);
	if (e != HW_OK) {
		kr_free(kr);
		return e;
	}
	kr->master = copy;
	*out = kr;
	return HW_OK;
}

static hw_err grow(struct hw_tde_keyring *kr)
{
	struct tde_entry *ne;
	size_t cap;

	if (kr->n < kr->cap)
		return HW_OK;
	if (kr->n >= TDE_MAX_ENTRIES)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "a keyring holds at most %u table keys",
		               TDE_MAX_ENTRIES);
	cap = kr->cap ? kr->cap * 2 : 16;
	ne = realloc(kr->e, cap * sizeof(*ne));
	if (!ne)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	kr->e = ne;
	kr->cap = cap;
	return HW_OK;
}

HW_EXPORT hw_err
hw_tde_keyring_add(hw_tde_keyring *kr, uint32_t id, uint32_t *version_out)
{
	uint8_t dk[HW_DATAKEY_LEN], *blob = NULL;
	size_t bloblen = 0, pos = 0;
	uint32_t version = 1;
	hw_ectx *ec = NULL;
	hw_err e;

	if (!kr)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_add");
	hw_clear_error();
	/* After the last entry with an id <= this one: the order stays sorted. */
	for (pos = 0; pos < kr->n && kr->e[pos].id <= id; pos++)
		if (kr->e[pos].id == id)
			version = kr->e[pos].version + 1;
	if (version == 0)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "table key %" PRIu32 " has no versions left", id);
	e = grow(kr);
	if (e == HW_OK)
		e = slot_ectx(kr, id, version, &ec);
	if (e == HW_OK)
		e = hw_datakey_generate(kr->master, ec, dk, &blob, &bloblen);
	/* Only the wrapped form is kept; the database asks for it when needed. */
	OPENSSL_cleanse(dk, sizeof(dk));
	hw_ectx_free(ec);
	if (e != HW_OK)
		return e;
	memmove(&kr->e[pos + 1], &kr->e[pos], (kr->n - pos) * sizeof(*kr->e));
	kr->e[pos].id = id;
	kr->e[pos].version = version;
	kr->e[pos].created = (uint64_t)time(NULL);
	kr->e[pos].blob = blob;
	kr->e[pos].bloblen = bloblen;
	kr->n++;
	if (version_out)
		*version_out = version;
	return HW_OK;
}

HW_EXPORT hw_err
hw_tde_keyring_rekey(hw_tde_keyring *kr, hw_key *new_master)
{
	struct tde_entry *ne = NULL;
	hw_key *copy = NULL;
	char oldlabel[129];
	uint8_t oldmid[64];
	size_t oldmid_len;
	char oldkcv[7];
	hw_err e;

	if (!kr || !new_master)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_rekey");
	hw_clear_error();
	if (new_master->id_len == kr->mid_len && memcmp(new_master->id, kr->mid, kr->mid_len) == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is the keyring's master key already",
		               new_master->label);
	memcpy(oldlabel, kr->label, sizeof(oldlabel));
	memcpy(oldmid, kr->mid, sizeof(oldmid));
	oldmid_len = kr->mid_len;
	memcpy(oldkcv, kr->kcv, sizeof(oldkcv));
	e = set_master(kr, new_master);
	if (e == HW_OK)
		e = find_master(new_master->ctx, new_master->id, new_master->id_len,
		                new_master->label, &copy);
	if (e == HW_OK && !(ne = calloc(kr->n ? kr->n : 1, sizeof(*ne))))
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
	/* All new blobs are made before any old one is dropped: a failure
	 * half-way leaves the keyring as it was. */
	for (size_t i = 0; e == HW_OK && i < kr->n; i++) {
		uint8_t dk[HW_DATAKEY_LEN], *ser = NULL;
		size_t serlen = 0;
		hw_ectx *ec = NULL;

		hw_crash_point();
		e = unwrap_entry(kr, kr->master, &kr->e[i], dk);
		if (e == HW_OK)
			e = slot_ectx(kr, kr->e[i].id, kr->e[i].version, &ec);
		if (e == HW_OK)
			e = hw_ectx_serialize(ec, &ser, &serlen);
		if (e == HW_OK)
			e = hw_encrypt(copy, dk, sizeof(dk), ser, serlen, &ne[i].blob, &ne[i].bloblen);
		OPENSSL_cleanse(dk, sizeof(dk));
		free(ser);
		hw_ectx_free(ec);
		ne[i].id = kr->e[i].id;
		ne[i].version = kr->e[i].version;
		ne[i].created = kr->e[i].created;
	}
	if (e != HW_OK) {
		if (ne)
			entries_free(ne, kr->n);
		hw_key_free(copy);
		memcpy(kr->label, oldlabel, sizeof(oldlabel));
		memcpy(kr->mid, oldmid, sizeof(oldmid));
		kr->mid_len = oldmid_len;
		memcpy(kr->kcv, oldkcv, sizeof(oldkcv));
		return e;
	}
	entries_free(kr->e, kr->n);
	kr->e = ne;
	kr->cap = kr->n ? kr->n : 1;
	hw_key_free(kr->master);
	kr->master = copy;
	return HW_OK;
}

HW_EXPORT hw_err
hw_tde_keyring_save(hw_tde_keyring *kr, const char *path)
{
	uint8_t *seal = NULL;
	size_t seal_len = 0;
	bool replaced = false;
	hw_wbuf w;
	hw_err e;

	if (!kr || !path)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_save");
	hw_clear_error();
	kr->generation++;
	hw_wbuf_init(&w, TDE_MAX_FILE);
	e = serialize_body(kr, &w);
	if (e == HW_OK)
		e = hw_encrypt(kr->master, kr->kid, sizeof(kr->kid), w.p, w.len, &seal, &seal_len);
	if (e == HW_OK) {
		hw_wbuf_str16(&w, seal, seal_len);
		e = w.err;
	}
	free(seal);
	if (e != HW_OK) {
		kr->generation--;
		hw_wbuf_free(&w);
		return e == HW_ERR_TOO_LARGE ? hw_fail(e, 0, "keyring too large") : e;
	}
	/* A crash at any step leaves the old file or the new one, and the
	 * next save sweeps a temporary a kill left behind. */
	e = hw_file_write_atomic(path, w.p, w.len, 0600, &replaced);
	/* Once replaced, the file on disk is the new generation. */
	if (e != HW_OK && !replaced)
		kr->generation--;
	hw_wbuf_free(&w);
	return e;
}

/* ---------------------------------------------------------------- */
/* A keyring kept by a running database (the MariaDB plugin)         */

/* PATH.lock, exclusively: the lock the CLI's writers take too. */
static hw_err lock_path(const char *path, int *fd_out)
{
	char *lp = NULL;
	int fd;

	if (asprintf(&lp, "%s.lock", path) < 0)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	fd = open(lp, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX) < 0) {
		hw_err e = hw_fail(HW_ERR_IO, 0, "locking %s: %s", lp, strerror(errno));

		if (fd >= 0)
			close(fd);
		free(lp);
		return e;
	}
	free(lp);
	*fd_out = fd;
	return HW_OK;
}

/*
 * The file must still be the generation this keyring read or wrote: if an
 * administrator changed it meanwhile (a rekey while the database ran),
 * saving our copy would silently undo that change.
 */
static hw_err check_on_disk(const struct hw_tde_keyring *kr, const char *path)
{
	struct hw_tde_keyring disk = { 0 };
	const uint8_t *seal;
	size_t len = 0, body, seal_len;
	uint8_t *buf = NULL;
	hw_err e = read_file(path, &buf, &len);

	if (e == HW_OK)
		e = parse(buf, len, &disk, &body, &seal, &seal_len);
	if (e == HW_OK && (memcmp(disk.kid, kr->kid, sizeof(kr->kid)) != 0 ||
	                   disk.generation != kr->generation))
		e = hw_fail(HW_ERR_INTEGRITY, 0, "TDE keyring %s was changed by another process "
		            "(generation %" PRIu32 ", this copy is %" PRIu32 "): not overwritten",
		            path, disk.generation, kr->generation);
	entries_free(disk.e, disk.n);
	free(buf);
	return e;
}

/* Drops entry (id, version), the one hw_tde_keyring_add just made. */
static void drop_entry(struct hw_tde_keyring *kr, uint32_t id, uint32_t version)
{
	for (size_t i = 0; i < kr->n; i++)
		if (kr->e[i].id == id && kr->e[i].version == version) {
			free(kr->e[i].blob);
			memmove(&kr->e[i], &kr->e[i + 1], (kr->n - i - 1) * sizeof(*kr->e));
			kr->n--;
			return;
		}
}

HW_EXPORT hw_err
hw_tde_keyring_add_save(hw_tde_keyring *kr, const char *path, uint32_t id,
                        uint32_t *version_out)
{
	uint32_t version = 0, gen;
	int lockfd = -1;
	hw_err e;

	if (!kr || !path)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_add_save");
	hw_clear_error();
	e = lock_path(path, &lockfd);
	if (e == HW_OK)
		e = check_on_disk(kr, path);
	if (e == HW_OK)
		e = hw_tde_keyring_add(kr, id, &version);
	if (e == HW_OK) {
		gen = kr->generation;
		e = hw_tde_keyring_save(kr, path);
		/* Not on disk: not in memory either, so that no one uses a key
		 * a crash would lose. (Renamed but not synced: it is the file.) */
		if (e != HW_OK && kr->generation == gen)
			drop_entry(kr, id, version);
	}
	if (lockfd >= 0)
		close(lockfd);
	if (e == HW_OK && version_out)
		*version_out = version;
	return e;
}

HW_EXPORT hw_err
hw_tde_keyring_create_file(hw_ctx *ctx, const char *master_label, const char *path,
                           hw_tde_keyring **out)
{
	hw_tde_keyring *kr = NULL;
	hw_key *master = NULL;
	struct stat st;
	int lockfd = -1;
	hw_err e;

	if (!ctx || !master_label || !*master_label || !path || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_tde_keyring_create_file");
	hw_clear_error();
	e = lock_path(path, &lockfd);
	/* Under the lock: two first starts must not make two keyrings. */
	if (e == HW_OK && stat(path, &st) == 0)
		e = hw_fail(HW_ERR_IO, 0, "%s exists already", path);
	if (e == HW_OK) {
		e = hw_key_find(ctx, master_label, &master);
		if (e == HW_ERR_KEY_NOT_FOUND)
			e = hw_fail(e, 0, "the master key '%s' is not on the token", master_label);
	}
	if (e == HW_OK)
		e = hw_tde_keyring_create(master, &kr);
	if (e == HW_OK)
		e = hw_tde_keyring_save(kr, path);
	hw_key_free(master);
	if (lockfd >= 0)
		close(lockfd);
	if (e != HW_OK) {
		hw_tde_keyring_close(kr);
		return e;
	}
	*out = kr;
	return HW_OK;
}
