/*
 * Key lifecycle metadata, kept on the token next to the keys so that it
 * travels with them (backups, a second host): one CKO_DATA object per
 * logical key, CKA_APPLICATION "hsmwrap-key-meta", CKA_LABEL = the key's
 * label, CKA_VALUE =
 *
 *   "HWM" | format u8 (1) | serial u32 | state u8 | deletion date u64 | purpose u8
 *   | created u64 | current version u32
 *   | nversions u16 | (number u32 | key id str16 | created u64) * nversions
 *   | ntags u16 | (key str16 | value str16) * ntags
 *   | description str16
 *
 * (times in Unix seconds, str16 = u16 length + bytes.) Decoding accepts
 * only the canonical form: ascending versions, sorted unique tags, the
 * current version among the versions, a deletion date exactly when the
 * key is pending deletion, no trailing bytes. So a value either means
 * one thing or is refused, and encode(decode(x)) == x.
 *
 * Tokens may refuse to change CKA_VALUE of a data object (SoftHSMv2 does),
 * so an update writes a new object, then destroys the old one; the serial
 * says which is newer if an update stops in between, and the older one is
 * removed at the next read.
 *
 * Versions are separate key objects: version 1 keeps the label L, version
 * n >= 2 is "L#n". Blobs and ESDK messages name the key object they used,
 * so they name the version; metadata applies to an object only if it
 * lists the object's CKA_ID, so a stray object labelled "L#3" is never
 * taken for a version.
 */
#include "internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#define META_MAGIC "HWM"
#define META_FORMAT 1
/* A state change made elsewhere is seen by a running process this late at most. */
#define STATE_TTL_MS 1000u
#define META_VALUE_MAX (64u * 1024u)

static const char *state_names[] = {
	[HW_KEY_STATE_ENABLED] = "enabled",
	[HW_KEY_STATE_DISABLED] = "disabled",
	[HW_KEY_STATE_PENDING_DELETION] = "pending-deletion",
};

HW_EXPORT const char *
hw_key_state_name(hw_key_state s)
{
	if (s < HW_KEY_STATE_ENABLED || s > HW_KEY_STATE_PENDING_DELETION)
		return "unknown";
	return state_names[s];
}

HW_EXPORT hw_err
hw_key_state_parse(const char *s, hw_key_state *out)
{
	for (unsigned i = HW_KEY_STATE_ENABLED; s && out && i <= HW_KEY_STATE_PENDING_DELETION; i++)
		if (strcmp(s, state_names[i]) == 0) {
			*out = (hw_key_state)i;
			return HW_OK;
		}
	return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown key state '%s' (enabled, disabled or "
	               "pending-deletion)", s ? s : "");
}

bool
hw_label_is_version(const char *label, size_t *baselen, unsigned *n)
{
	const char *hash = strrchr(label, '#');
	unsigned long v = 0;

	if (!hash || hash == label || !hash[1] || hash[1] == '0' || strlen(hash + 1) > 9)
		return false;
	for (const char *p = hash + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v < 2)
		return false;
	if (baselen)
		*baselen = (size_t)(hash - label);
	if (n)
		*n = (unsigned)v;
	return true;
}

static void
version_label(const char *base, unsigned n, char *out, size_t outsz)
{
	if (n <= 1)
		snprintf(out, outsz, "%s", base);
	else
		snprintf(out, outsz, "%s#%u", base, n);
}

/* ---------------------------------------------------------------- */
/* The structure and its encoding                                    */

HW_EXPORT void
hw_key_meta_free(hw_key_meta *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->ntags; i++) {
		free(m->tags[i].key);
		free(m->tags[i].value);
	}
	free(m->tags);
	free(m->versions);
	free(m->description);
	free(m);
}

HW_EXPORT void
hw_key_meta_list_free(hw_key_meta **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		hw_key_meta_free(v[i]);
	free(v);
}

static char *
dup_n(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		if (n)
			memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

static int
unhex_id(const char *hex, uint8_t *out, size_t *len)
{
	size_t n = strlen(hex);

	if (n == 0 || n % 2 || n / 2 > 64)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = hex[2 * i + (size_t)j];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else
				return -1;
		}
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

static hw_err
bad(const char *what)
{
	return hw_fail(HW_ERR_FORMAT, 0, "key metadata: %s", what);
}

static bool
tag_key_ok(const uint8_t *p, size_t n)
{
	return n >= 1 && n <= HW_META_MAX_TAG_KEY && !memchr(p, 0, n) && !memchr(p, '=', n);
}

/* Byte order of tag keys: what "sorted" means in the encoding. */
static int
cmp_bytes(const char *a, const char *b)
{
	return strcmp(a, b);
}

HW_EXPORT hw_err
hw_key_meta_decode(const uint8_t *in, size_t len, hw_key_meta **out)
{
	hw_rbuf r;
	const uint8_t *magic, *p;
	size_t n;
	uint8_t fmt, state, purpose;
	uint64_t deletion, created;
	uint32_t current, serial;
	uint16_t nv, nt;
	hw_key_meta *m;
	hw_err e = HW_ERR_FORMAT;

	if (!in || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_meta_decode");
	hw_rbuf_init(&r, in, len);
	if (hw_rbuf_bytes(&r, 3, &magic) != HW_OK || memcmp(magic, META_MAGIC, 3) != 0)
		return bad("not a metadata value");
	if (hw_rbuf_u8(&r, &fmt) != HW_OK || fmt != META_FORMAT)
		return bad("unsupported format version");
	if (hw_rbuf_u32(&r, &serial) != HW_OK ||
	    hw_rbuf_u8(&r, &state) != HW_OK || hw_rbuf_u64(&r, &deletion) != HW_OK ||
	    hw_rbuf_u8(&r, &purpose) != HW_OK || hw_rbuf_u64(&r, &created) != HW_OK ||
	    hw_rbuf_u32(&r, &current) != HW_OK || hw_rbuf_u16(&r, &nv) != HW_OK)
		return bad("truncated");
	if (state < HW_KEY_STATE_ENABLED || state > HW_KEY_STATE_PENDING_DELETION)
		return bad("unknown state");
	if ((state == HW_KEY_STATE_PENDING_DELETION) != (deletion != 0) || deletion > INT64_MAX ||
	    created > INT64_MAX)
		return bad("bad dates");
	if (purpose > HW_PURPOSE_DERIVE)
		return bad("unknown purpose");
	if (nv == 0 || nv > HW_META_MAX_VERSIONS)
		return bad("bad number of versions");
	m = calloc(1, sizeof(*m));
	if (!m)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	m->stored = 1;
	m->serial = serial;
	m->state = (hw_key_state)state;
	m->deletion_date = (int64_t)deletion;
	m->purpose = (hw_purpose)purpose;
	m->created = (int64_t)created;
	m->current = current;
	m->versions = calloc(nv, sizeof(*m->versions));
	if (!m->versions) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto fail;
	}
	for (size_t i = 0; i < nv; i++) {
		hw_key_version_info *v = &m->versions[i];
		uint32_t num;
		uint64_t vc;

		if (hw_rbuf_u32(&r, &num) != HW_OK || hw_rbuf_str16(&r, &p, &n) != HW_OK ||
		    hw_rbuf_u64(&r, &vc) != HW_OK) {
			e = bad("truncated version");
			goto fail;
		}
		if (num == 0 || num > 999999999u || (i > 0 && num <= m->versions[i - 1].number)) {
			e = bad("versions not ascending");
			goto fail;
		}
		if (n == 0 || n > 64 || vc > INT64_MAX) {
			e = bad("bad version");
			goto fail;
		}
		v->number = num;
		hw_hex(p, n, v->id_hex);
		v->created = (int64_t)vc;
	}
	m->nversions = nv;
	{
		bool cur = false;
		for (size_t i = 0; i < nv; i++)
			cur |= m->versions[i].number == current;
		if (!cur) {
			e = bad("the current version is not one of the versions");
			goto fail;
		}
	}
	if (hw_rbuf_u16(&r, &nt) != HW_OK || nt > HW_META_MAX_TAGS) {
		e = bad("bad number of tags");
		goto fail;
	}
	m->tags = calloc(nt ? nt : 1, sizeof(*m->tags));
	if (!m->tags) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto fail;
	}
	for (size_t i = 0; i < nt; i++) {
		const uint8_t *kp, *vp;
		size_t kn, vn;

		if (hw_rbuf_str16(&r, &kp, &kn) != HW_OK || hw_rbuf_str16(&r, &vp, &vn) != HW_OK) {
			e = bad("truncated tag");
			goto fail;
		}
		if (!tag_key_ok(kp, kn) || vn > HW_META_MAX_TAG_VALUE || memchr(vp, 0, vn)) {
			e = bad("bad tag");
			goto fail;
		}
		m->tags[i].key = dup_n(kp, kn);
		m->tags[i].value = dup_n(vp, vn);
		m->ntags = i + 1;
		if (!m->tags[i].key || !m->tags[i].value) {
			e = hw_fail(HW_ERR_NOMEM, 0, NULL);
			goto fail;
		}
		if (i > 0 && cmp_bytes(m->tags[i - 1].key, m->tags[i].key) >= 0) {
			e = bad("tags not sorted or repeated");
			goto fail;
		}
	}
	if (hw_rbuf_str16(&r, &p, &n) != HW_OK || n > HW_META_MAX_DESCRIPTION || memchr(p, 0, n)) {
		e = bad("bad description");
		goto fail;
	}
	m->description = dup_n(p, n);
	if (!m->description) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto fail;
	}
	if (hw_rbuf_left(&r) != 0) {
		e = bad("trailing bytes");
		goto fail;
	}
	*out = m;
	return HW_OK;
fail:
	hw_key_meta_free(m);
	return e;
}

HW_EXPORT hw_err
hw_key_meta_encode(const hw_key_meta *m, uint8_t **out, size_t *len)
{
	hw_wbuf w;
	bool cur = false;

	if (!m || !out || !len)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_meta_encode");
	/* Written only in the form decode accepts. */
	if (m->state < HW_KEY_STATE_ENABLED || m->state > HW_KEY_STATE_PENDING_DELETION ||
	    (m->state == HW_KEY_STATE_PENDING_DELETION) != (m->deletion_date > 0) ||
	    m->deletion_date < 0 || m->created < 0 || (unsigned)m->purpose > HW_PURPOSE_DERIVE ||
	    m->nversions == 0 || m->nversions > HW_META_MAX_VERSIONS ||
	    m->ntags > HW_META_MAX_TAGS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "key metadata out of bounds");
	for (size_t i = 0; i < m->nversions; i++) {
		cur |= m->versions[i].number == m->current;
		if (m->versions[i].number == 0 || m->versions[i].number > 999999999u ||
		    (i && m->versions[i].number <= m->versions[i - 1].number) ||
		    m->versions[i].created < 0)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "key metadata: bad versions");
	}
	if (!cur)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "key metadata: bad current version");
	for (size_t i = 0; i < m->ntags; i++) {
		const hw_key_tag *t = &m->tags[i];
		if (!t->key || !t->value || !tag_key_ok((const uint8_t *)t->key, strlen(t->key)) ||
		    strlen(t->value) > HW_META_MAX_TAG_VALUE ||
		    (i && cmp_bytes(m->tags[i - 1].key, t->key) >= 0))
			return hw_fail(HW_ERR_INVALID_ARG, 0, "key metadata: bad tags");
	}
	if (m->description && strlen(m->description) > HW_META_MAX_DESCRIPTION)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "the description is longer than %u bytes",
		               HW_META_MAX_DESCRIPTION);

	hw_wbuf_init(&w, META_VALUE_MAX);
	hw_wbuf_put(&w, META_MAGIC, 3);
	hw_wbuf_u8(&w, META_FORMAT);
	hw_wbuf_u32(&w, m->serial);
	hw_wbuf_u8(&w, (uint8_t)m->state);
	hw_wbuf_u64(&w, (uint64_t)m->deletion_date);
	hw_wbuf_u8(&w, (uint8_t)m->purpose);
	hw_wbuf_u64(&w, (uint64_t)m->created);
	hw_wbuf_u32(&w, m->current);
	hw_wbuf_u16(&w, (uint16_t)m->nversions);
	for (size_t i = 0; i < m->nversions; i++) {
		uint8_t id[64];
		size_t idn = 0;

		if (unhex_id(m->versions[i].id_hex, id, &idn) != 0) {
			hw_wbuf_free(&w);
			return hw_fail(HW_ERR_INVALID_ARG, 0, "key metadata: bad version id");
		}
		hw_wbuf_u32(&w, m->versions[i].number);
		hw_wbuf_str16(&w, id, idn);
		hw_wbuf_u64(&w, (uint64_t)m->versions[i].created);
	}
	hw_wbuf_u16(&w, (uint16_t)m->ntags);
	for (size_t i = 0; i < m->ntags; i++) {
		hw_wbuf_str16(&w, m->tags[i].key, strlen(m->tags[i].key));
		hw_wbuf_str16(&w, m->tags[i].value, strlen(m->tags[i].value));
	}
	hw_wbuf_str16(&w, m->description ? m->description : "",
	              m->description ? strlen(m->description) : 0);
	return hw_wbuf_finish(&w, out, len);
}

/* ---------------------------------------------------------------- */
/* Clocks                                                            */

/*
 * Wall-clock time for the deletion window. HSMWRAP_TEST_NOW (Unix
 * seconds) replaces it so that the tests can pass a 7-day window, but
 * only on a SoftHSM token and never in a setuid program: on a real HSM
 * the window cannot be shortened through the environment. (On SoftHSM
 * whoever sets the environment can also read the token's files.)
 */
static int64_t
wall_now(hw_ctx *ctx)
{
	const char *t = secure_getenv("HSMWRAP_TEST_NOW");

	if (t && *t && ctx && strncmp((const char *)ctx->tinfo.manufacturerID, "SoftHSM", 7) == 0) {
		char *end;
		long long v = strtoll(t, &end, 10);
		if (*end == '\0' && v > 0)
			return (int64_t)v;
	}
	return (int64_t)time(NULL);
}

/* ctx->logged_in changes under the lock when another thread logs in. */
bool
hw_ctx_logged_in(hw_ctx *ctx)
{
	bool v;

	pthread_mutex_lock(&ctx->lock);
	v = ctx->logged_in;
	pthread_mutex_unlock(&ctx->lock);
	return v;
}

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* Never 0, which means "not read yet". */
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + 1;
}

/* ---------------------------------------------------------------- */
/* Metadata objects on a session                                     */

static const CK_OBJECT_CLASS data_class = CKO_DATA;

/* Handles of metadata objects (of `label`, or all if NULL); malloc'd. */
static CK_RV
meta_find_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label, size_t limit,
            CK_OBJECT_HANDLE **found, size_t *n)
{
	CK_ATTRIBUTE t[3] = {
		{ CKA_CLASS, (void *)&data_class, sizeof(data_class) },
		{ CKA_APPLICATION, (void *)HW_META_APP, sizeof(HW_META_APP) - 1 },
		{ CKA_LABEL, (void *)label, label ? strlen(label) : 0 },
	};
	CK_OBJECT_HANDLE chunk[64], *all = NULL, *grown;
	CK_ULONG got = 0;
	size_t count = 0;
	CK_RV rv, final;

	*found = NULL;
	*n = 0;
	rv = ctx->fl->C_FindObjectsInit(s, t, label ? 3 : 2);
	if (rv != CKR_OK)
		return rv;
	for (;;) {
		rv = ctx->fl->C_FindObjects(s, chunk, 64, &got);
		if (rv != CKR_OK || got == 0)
			break;
		grown = realloc(all, (count + got) * sizeof(*all));
		if (!grown) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		all = grown;
		memcpy(all + count, chunk, got * sizeof(*chunk));
		count += got;
		if (limit && count >= limit)
			break;
	}
	final = ctx->fl->C_FindObjectsFinal(s);
	if (rv == CKR_OK)
		rv = final;
	/* Private objects: nothing found may only mean we were logged out. */
	if (rv == CKR_OK && count == 0 && hw_ctx_logged_in(ctx))
		rv = hw_session_check_login(ctx, s);
	if (rv != CKR_OK) {
		free(all);
		return rv;
	}
	*found = all;
	*n = count;
	return CKR_OK;
}

/* Reads and decodes one metadata object; label gets its CKA_LABEL. */
static CK_RV
meta_load_s(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, hw_key_meta **out)
{
	char label[129] = { 0 };
	CK_ATTRIBUTE t[2] = { { CKA_LABEL, NULL, 0 }, { CKA_VALUE, NULL, 0 } };
	uint8_t *val = NULL;
	hw_key_meta *m = NULL;
	CK_RV rv;
	hw_err e;

	rv = ctx->fl->C_GetAttributeValue(s, h, t, 2);
	if (rv != CKR_OK)
		return rv;
	if (t[0].ulValueLen > 128 || t[1].ulValueLen > META_VALUE_MAX)
		return hw_op_fail(bad("oversized metadata object"));
	val = malloc(t[1].ulValueLen ? t[1].ulValueLen : 1);
	if (!val)
		return CKR_HOST_MEMORY;
	t[0].pValue = label;
	t[1].pValue = val;
	rv = ctx->fl->C_GetAttributeValue(s, h, t, 2);
	if (rv == CKR_OK) {
		label[t[0].ulValueLen] = '\0';
		e = hw_key_meta_decode(val, t[1].ulValueLen, &m);
		if (e != HW_OK) {
			hw_fail(e, 0, "the metadata of key '%s' is damaged", label);
			rv = hw_op_fail(e);
		} else {
			snprintf(m->label, sizeof(m->label), "%s", label);
			for (size_t i = 0; i < m->nversions; i++)
				version_label(label, m->versions[i].number, m->versions[i].label,
				              sizeof(m->versions[i].label));
			*out = m;
		}
	}
	free(val);
	return rv;
}

/*
 * The metadata of `label`: *out NULL (and *h invalid) if there is none.
 * Of several objects (an update interrupted) the newest counts; the
 * others are removed.
 */
static CK_RV
meta_read_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label, hw_key_meta **out,
            CK_OBJECT_HANDLE *h)
{
	CK_OBJECT_HANDLE *found = NULL;
	size_t n = 0, best = 0;
	hw_key_meta **all = NULL;
	CK_RV rv;

	*out = NULL;
	*h = CK_INVALID_HANDLE;
	rv = meta_find_s(ctx, s, label, 0, &found, &n);
	if (rv != CKR_OK || n == 0) {
		free(found);
		return rv;
	}
	all = calloc(n, sizeof(*all));
	if (!all) {
		free(found);
		return CKR_HOST_MEMORY;
	}
	for (size_t i = 0; i < n && rv == CKR_OK; i++) {
		rv = meta_load_s(ctx, s, found[i], &all[i]);
		if (rv == CKR_OK && all[i]->serial > all[best]->serial)
			best = i;
	}
	if (rv == CKR_OK) {
		for (size_t i = 0; i < n; i++)
			if (i != best)
				(void)ctx->fl->C_DestroyObject(s, found[i]);
		*out = all[best];
		*h = found[best];
		all[best] = NULL;
	}
	for (size_t i = 0; i < n; i++)
		hw_key_meta_free(all[i]);
	free(all);
	free(found);
	return rv;
}

static CK_RV
meta_write_s(hw_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h, hw_key_meta *m)
{
	static const CK_BBOOL yes = CK_TRUE;
	uint8_t *val = NULL;
	size_t len = 0;
	CK_OBJECT_HANDLE nh = CK_INVALID_HANDLE;
	hw_err e;
	CK_RV rv;

	m->serial++;
	e = hw_key_meta_encode(m, &val, &len);
	if (e != HW_OK)
		return hw_op_fail(e);
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, (void *)&data_class, sizeof(data_class) },
		{ CKA_TOKEN, (void *)&yes, sizeof(yes) },
		{ CKA_PRIVATE, (void *)&yes, sizeof(yes) },
		{ CKA_MODIFIABLE, (void *)&yes, sizeof(yes) },
		{ CKA_APPLICATION, (void *)HW_META_APP, sizeof(HW_META_APP) - 1 },
		{ CKA_LABEL, (void *)m->label, strlen(m->label) },
		{ CKA_VALUE, val, len },
	};
	rv = ctx->fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &nh);
	free(val);
	if (rv != CKR_OK)
		return rv;
	/* If this fails the newer serial still wins at the next read. */
	if (*h != CK_INVALID_HANDLE)
		(void)ctx->fl->C_DestroyObject(s, *h);
	*h = nh;
	return CKR_OK;
}

/* Every metadata object of the key, an older one left by an interrupted update too. */
static CK_RV
meta_destroy_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *label)
{
	CK_OBJECT_HANDLE *found = NULL;
	size_t n = 0;
	CK_RV rv = meta_find_s(ctx, s, label, 0, &found, &n);

	for (size_t i = 0; i < n && rv == CKR_OK; i++)
		rv = ctx->fl->C_DestroyObject(s, found[i]);
	free(found);
	return rv;
}

/* Destroys every key object of every version, then the metadata object. */
static CK_RV
purge_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const hw_key_meta *m, CK_OBJECT_HANDLE mh)
{
	static const CK_OBJECT_CLASS classes[] = { CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY };
	CK_RV rv = CKR_OK;

	for (size_t i = 0; i < m->nversions && rv == CKR_OK; i++) {
		uint8_t id[64];
		size_t idn = 0;

		if (unhex_id(m->versions[i].id_hex, id, &idn) != 0)
			continue;
		for (size_t c = 0; c < 3 && rv == CKR_OK; c++) {
			CK_ATTRIBUTE t[2] = {
				{ CKA_CLASS, (void *)&classes[c], sizeof(classes[c]) },
				{ CKA_ID, id, idn },
			};
			CK_OBJECT_HANDLE hs[8];
			CK_ULONG got = 0;
			CK_RV final;

			rv = ctx->fl->C_FindObjectsInit(s, t, 2);
			if (rv != CKR_OK)
				break;
			rv = ctx->fl->C_FindObjects(s, hs, 8, &got);
			final = ctx->fl->C_FindObjectsFinal(s);
			if (rv == CKR_OK)
				rv = final;
			for (CK_ULONG k = 0; k < got && rv == CKR_OK; k++) {
				rv = ctx->fl->C_DestroyObject(s, hs[k]);
				if (rv == CKR_OBJECT_HANDLE_INVALID)
					rv = CKR_OK;
			}
		}
	}
	(void)mh;
	if (rv == CKR_OK)
		rv = meta_destroy_s(ctx, s, m->label);
	return rv;
}

/* What a key without a metadata object is: version 1, enabled. */
static hw_key_meta *
meta_defaults(const hw_key *key)
{
	hw_key_meta *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->versions = calloc(1, sizeof(*m->versions));
	m->tags = calloc(1, sizeof(*m->tags));
	m->description = calloc(1, 1);
	if (!m->versions || !m->tags || !m->description) {
		hw_key_meta_free(m);
		return NULL;
	}
	snprintf(m->label, sizeof(m->label), "%s", key->base[0] ? key->base : key->label);
	m->state = HW_KEY_STATE_ENABLED;
	m->purpose = key->cls == CKO_PRIVATE_KEY ? (key->can_sign ? HW_PURPOSE_SIGN
	                                            : key->can_decrypt ? HW_PURPOSE_DECRYPT
	                                            : HW_PURPOSE_NONE)
	           : key->can_encrypt ? HW_PURPOSE_ENVELOPE
	           : key->can_wrap ? HW_PURPOSE_KEYWRAP : HW_PURPOSE_NONE;
	m->current = 1;
	m->nversions = 1;
	m->versions[0].number = 1;
	snprintf(m->versions[0].label, sizeof(m->versions[0].label), "%s", m->label);
	hw_hex(key->id, key->id_len, m->versions[0].id_hex);
	return m;
}

static const hw_key_version_info *
meta_version_by_id(const hw_key_meta *m, const hw_key *key)
{
	char hex[129];

	hw_hex(key->id, key->id_len, hex);
	for (size_t i = 0; i < m->nversions; i++)
		if (strcmp(m->versions[i].id_hex, hex) == 0)
			return &m->versions[i];
	return NULL;
}

static void
set_cached_state(hw_key *key, const hw_key_meta *m)
{
	pthread_mutex_lock(&key->ctx->lock);
	key->state = m ? m->state : HW_KEY_STATE_ENABLED;
	key->deletion_date = m ? m->deletion_date : 0;
	key->state_ms = mono_ms();
	pthread_mutex_unlock(&key->ctx->lock);
}

/*
 * Which logical key the object is a version of: base and version, and
 * the metadata that applies (*m NULL if none), with its handle.
 */
static CK_RV
identify_s(hw_ctx *ctx, CK_SESSION_HANDLE s, hw_key *key, hw_key_meta **m, CK_OBJECT_HANDLE *mh)
{
	size_t bl;
	unsigned n;
	const hw_key_version_info *v;
	CK_RV rv;

	*m = NULL;
	if (key->id_len && hw_label_is_version(key->label, &bl, &n)) {
		char base[129];
		snprintf(base, sizeof(base), "%.*s", (int)bl, key->label);
		rv = meta_read_s(ctx, s, base, m, mh);
		if (rv != CKR_OK)
			return rv;
		if (*m && (v = meta_version_by_id(*m, key)) && v->number == n) {
			snprintf(key->base, sizeof(key->base), "%s", base);
			key->version = n;
			return CKR_OK;
		}
		hw_key_meta_free(*m);
		*m = NULL;
	}
	snprintf(key->base, sizeof(key->base), "%s", key->label);
	key->version = 1;
	if (!key->label[0] || !key->id_len)
		return CKR_OK;
	rv = meta_read_s(ctx, s, key->label, m, mh);
	if (rv != CKR_OK)
		return rv;
	if (*m && (v = meta_version_by_id(*m, key))) {
		key->version = v->number;
		return CKR_OK;
	}
	/* Metadata of another object of that label (a key destroyed and made
	 * again without it): it does not apply. */
	hw_key_meta_free(*m);
	*m = NULL;
	*mh = CK_INVALID_HANDLE;
	return CKR_OK;
}

static void
fmt_date(int64_t t, char *out, size_t outsz)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, outsz, "%lld", (long long)t);
}

/* The state's verdict on a use of the key; may purge it (on session s). */
static CK_RV
judge_s(hw_ctx *ctx, CK_SESSION_HANDLE s, const char *base, const hw_key_meta *m,
        CK_OBJECT_HANDLE mh, hw_key_state state, int64_t deletion)
{
	char when[40];
	CK_RV rv;

	if (state == HW_KEY_STATE_DISABLED)
		return hw_op_fail(hw_fail(HW_ERR_KEY_DISABLED, 0, "key '%s' is disabled (hsmwrap key "
		                          "enable '%s')", base, base));
	if (state != HW_KEY_STATE_PENDING_DELETION)
		return CKR_OK;
	fmt_date(deletion, when, sizeof(when));
	if (wall_now(ctx) < deletion)
		return hw_op_fail(hw_fail(HW_ERR_KEY_PENDING_DELETION, 0, "key '%s' is pending "
		                          "deletion on %s (hsmwrap key cancel-deletion '%s')", base,
		                          when, base));
	if (m) {
		rv = purge_s(ctx, s, m, mh);
		if (rv != CKR_OK)
			return rv;
	}
	return hw_op_fail(hw_fail(HW_ERR_KEY_NOT_FOUND, 0, "key '%s' (its deletion date %s has "
	                          "passed: it was destroyed now)", base, when));
}

/*
 * identify_s on a copy of the key's identity, taken and published under
 * the context lock: other threads may be using the same hw_key.
 */
static CK_RV
identify_copy(hw_key *key, hw_ctx *ctx, CK_SESSION_HANDLE s, hw_key *probe, hw_key_meta **m,
              CK_OBJECT_HANDLE *mh)
{
	CK_RV rv;

	memset(probe, 0, sizeof(*probe));
	pthread_mutex_lock(&ctx->lock);
	memcpy(probe->label, key->label, sizeof(probe->label));
	memcpy(probe->id, key->id, sizeof(probe->id));
	probe->id_len = key->id_len;
	probe->cls = key->cls;
	probe->can_encrypt = key->can_encrypt;
	probe->can_wrap = key->can_wrap;
	probe->can_sign = key->can_sign;
	pthread_mutex_unlock(&ctx->lock);
	rv = identify_s(ctx, s, probe, m, mh);
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&ctx->lock);
	memcpy(key->base, probe->base, sizeof(key->base));
	key->version = probe->version;
	pthread_mutex_unlock(&ctx->lock);
	return CKR_OK;
}

CK_RV
hw_key_state_check(hw_key *key, CK_SESSION_HANDLE s)
{
	hw_ctx *ctx = key->ctx;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	hw_key_state state;
	int64_t deletion;
	char base[129];
	CK_RV rv;

	pthread_mutex_lock(&ctx->lock);
	if (key->state_ms && mono_ms() - key->state_ms < STATE_TTL_MS) {
		state = key->state;
		deletion = key->deletion_date;
		snprintf(base, sizeof(base), "%s", key->base);
		pthread_mutex_unlock(&ctx->lock);
		if (state == HW_KEY_STATE_ENABLED)
			return CKR_OK;
		/* Past the deletion date: read again, purging needs the metadata. */
		if (state != HW_KEY_STATE_PENDING_DELETION || wall_now(ctx) < deletion)
			return judge_s(ctx, s, base, NULL, CK_INVALID_HANDLE, state, deletion);
	} else {
		pthread_mutex_unlock(&ctx->lock);
	}
	{
		hw_key probe;

		rv = identify_copy(key, ctx, s, &probe, &m, &mh);
		if (rv != CKR_OK)
			return rv;
		set_cached_state(key, m);
		rv = judge_s(ctx, s, probe.base, m, mh, m ? m->state : HW_KEY_STATE_ENABLED,
		             m ? m->deletion_date : 0);
	}
	hw_key_meta_free(m);
	return rv;
}

/* ---------------------------------------------------------------- */
/* Identification after a lookup                                     */

typedef struct {
	hw_key *key;
	hw_key_meta *m;             /* out */
	bool purged;
} ident_arg;

static CK_RV
op_identify(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	ident_arg *a = arg;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	CK_RV rv;

	hw_key probe;

	hw_key_meta_free(a->m);
	a->m = NULL;
	rv = identify_copy(a->key, ctx, s, &probe, &a->m, &mh);
	if (rv != CKR_OK)
		return rv;
	/* Past its deletion date: destroyed now, on this first use. */
	if (a->m && a->m->state == HW_KEY_STATE_PENDING_DELETION &&
	    wall_now(ctx) >= a->m->deletion_date) {
		rv = judge_s(ctx, s, probe.base, a->m, mh, a->m->state, a->m->deletion_date);
		a->purged = true;
	}
	return rv;
}

static hw_err
identify(hw_key *key, hw_key_meta **m)
{
	ident_arg a = { key, NULL, false };
	hw_err e = hw_ctx_run(key->ctx, op_identify, &a, "reading key metadata");

	if (e != HW_OK) {
		hw_key_meta_free(a.m);
		return e;
	}
	set_cached_state(key, a.m);
	if (m)
		*m = a.m;
	else
		hw_key_meta_free(a.m);
	return HW_OK;
}

static hw_err
ensure_identified(hw_key *key)
{
	bool known;

	pthread_mutex_lock(&key->ctx->lock);
	known = key->base[0] != '\0';
	pthread_mutex_unlock(&key->ctx->lock);
	return known ? HW_OK : identify(key, NULL);
}

hw_err
hw_key_identify(hw_key **keyp, bool current)
{
	hw_key *key = *keyp, *cur = NULL;
	hw_key_meta *m = NULL;
	char want[140], spec[140];
	hw_err e;

	e = identify(key, &m);
	if (e != HW_OK || !current || !m || key->version != 1 || m->current == 1 ||
	    strcmp(key->base, key->label) != 0) {
		hw_key_meta_free(m);
		return e;
	}
	/* Found by its plain label: the logical key, i.e. its current version. */
	for (size_t i = 0; i < m->nversions; i++)
		if (m->versions[i].number == m->current)
			snprintf(spec, sizeof(spec), "id:%s", m->versions[i].id_hex);
	version_label(key->base, m->current, want, sizeof(want));
	{
		uint8_t id[64];
		size_t idn = 0;
		(void)unhex_id(spec + 3, id, &idn);
		e = hw_key_find_by_id(key->ctx, id, idn, &cur);
	}
	if (e == HW_ERR_KEY_NOT_FOUND)
		e = hw_fail(e, 0, "version %u of key '%s' (the current one) is missing from the "
		            "token", m->current, key->base);
	if (e == HW_OK && (strcmp(cur->label, want) != 0 || cur->cls != key->cls)) {
		e = hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "the current version of key '%s' should be "
		            "labelled '%s', the token's object is '%s'", key->base, want, cur->label);
	}
	if (e == HW_OK) {
		snprintf(cur->base, sizeof(cur->base), "%s", key->base);
		cur->version = m->current;
		set_cached_state(cur, m);
		hw_key_free(key);
		*keyp = cur;
		cur = NULL;
	}
	hw_key_free(cur);
	hw_key_meta_free(m);
	return e;
}

HW_EXPORT const char *
hw_key_logical_label(hw_key *key)
{
	if (!key)
		return NULL;
	if (ensure_identified(key) != HW_OK)
		return key->label;
	return key->base;
}

HW_EXPORT unsigned
hw_key_version(hw_key *key)
{
	if (!key || ensure_identified(key) != HW_OK)
		return 0;
	return key->version;
}

hw_err
hw_key_find_sibling(hw_key *key, const uint8_t *name, size_t nl, hw_key **out)
{
	char label[129];
	size_t bl;
	unsigned n;
	hw_err e;

	if (nl == 0 || nl > 128 || memchr(name, 0, nl))
		return HW_ERR_KEY_NOT_FOUND;
	memcpy(label, name, nl);
	label[nl] = '\0';
	if ((e = ensure_identified(key)) != HW_OK)
		return e;
	if (strcmp(label, key->base) != 0 &&
	    !(hw_label_is_version(label, &bl, &n) && bl == strlen(key->base) &&
	      memcmp(label, key->base, bl) == 0))
		return HW_ERR_KEY_NOT_FOUND;
	e = hw_key_find_label_exact(key->ctx, label, out);
	if (e == HW_OK && strcmp((*out)->base, key->base) != 0) {
		/* A look-alike label that the metadata does not list. */
		hw_key_free(*out);
		*out = NULL;
		return HW_ERR_KEY_NOT_FOUND;
	}
	return e;
}

/* ---------------------------------------------------------------- */
/* Creating and changing metadata                                    */

typedef hw_err (*meta_fn)(hw_key_meta *m, void *arg, int64_t now);

typedef struct {
	hw_key *key;
	meta_fn fn;
	void *fnarg;
	bool create;                /* a new key: replace whatever is there */
	hw_purpose purpose;
	hw_key_meta *result;        /* out */
} update_arg;

static CK_RV
op_update(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	update_arg *a = arg;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	int64_t now = wall_now(ctx);
	hw_err e;
	CK_RV rv;

	hw_key_meta_free(a->result);
	a->result = NULL;
	rv = meta_read_s(ctx, s, a->key->base, &m, &mh);
	if (rv != CKR_OK)
		return rv;
	if (a->create) {
		/* Left over from a key of that label destroyed outside hsmwrap:
		 * replaced, with a newer serial in case removing it fails. */
		uint32_t serial = m ? m->serial : 0;
		hw_key_meta_free(m);
		m = meta_defaults(a->key);
		if (!m)
			return CKR_HOST_MEMORY;
		m->serial = serial;
		m->purpose = a->purpose;
		m->created = now;
		m->versions[0].created = now;
	} else if (m && !meta_version_by_id(m, a->key)) {
		hw_key_meta_free(m);
		return hw_op_fail(hw_fail(HW_ERR_KEY_AMBIGUOUS, 0, "the metadata object labelled "
		                          "'%s' belongs to another key object", a->key->base));
	}
	if (!m) {
		m = meta_defaults(a->key);
		if (!m)
			return CKR_HOST_MEMORY;
	}
	if (!a->create && m->state == HW_KEY_STATE_PENDING_DELETION && now >= m->deletion_date) {
		rv = judge_s(ctx, s, a->key->base, m, mh, m->state, m->deletion_date);
		hw_key_meta_free(m);
		return rv;
	}
	if (a->fn && (e = a->fn(m, a->fnarg, now)) != HW_OK) {
		hw_key_meta_free(m);
		return hw_op_fail(e);
	}
	rv = meta_write_s(ctx, s, &mh, m);
	if (rv != CKR_OK) {
		hw_key_meta_free(m);
		return rv;
	}
	a->result = m;
	return CKR_OK;
}

static hw_err
meta_update(hw_key *key, meta_fn fn, void *fnarg, hw_key_meta **result)
{
	update_arg a;
	hw_err e;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	hw_clear_error();
	if ((e = hw_ctx_require(key->ctx, HW_CAP_DATA_OBJECTS, "key lifecycle")) != HW_OK ||
	    (e = ensure_identified(key)) != HW_OK)
		return e;
	memset(&a, 0, sizeof(a));
	a.key = key;
	a.fn = fn;
	a.fnarg = fnarg;
	/* Read, change and write on one session; running it again reads
	 * again. The lock keeps a concurrent updater's change from being lost. */
	if ((e = hw_token_lock(key->ctx)) != HW_OK)
		return e;
	e = hw_ctx_run(key->ctx, op_update, &a, "updating key metadata");
	hw_token_unlock();
	if (e != HW_OK) {
		hw_key_meta_free(a.result);
		return e;
	}
	set_cached_state(key, a.result);
	if (result)
		*result = a.result;
	else
		hw_key_meta_free(a.result);
	return HW_OK;
}

hw_err
hw_meta_create(hw_key *key, hw_purpose purpose)
{
	update_arg a;
	hw_err e, d;

	memset(&a, 0, sizeof(a));
	snprintf(key->base, sizeof(key->base), "%s", key->label);
	key->version = 1;
	/* Such a token keeps keys without versions or states (caps.c). */
	if (!hw_ctx_can(key->ctx, HW_CAP_DATA_OBJECTS))
		return HW_OK;
	a.key = key;
	a.create = true;
	a.purpose = purpose;
	e = hw_ctx_run_once(key->ctx, op_update, &a, "creating the key's metadata object");
	if (e == HW_OK) {
		set_cached_state(key, a.result);
		hw_key_meta_free(a.result);
		return HW_OK;
	}
	hw_key_meta_free(a.result);
	/* No half-made keys: a key without its metadata goes again. */
	{
		char detail[256];
		unsigned long ckrv = hw_last_ckrv();
		snprintf(detail, sizeof(detail), "%s", hw_last_detail());
		d = hw_key_destroy(key);
		return hw_fail(e, ckrv, "%s%s", detail, d == HW_OK ? " (the new key was destroyed "
		               "again)" : " (and destroying the new key failed too)");
	}
}

static hw_err
not_while_pending(const hw_key_meta *m, const char *what)
{
	if (m->state == HW_KEY_STATE_PENDING_DELETION)
		return hw_fail(HW_ERR_KEY_PENDING_DELETION, 0, "key '%s' is pending deletion: cancel "
		               "the deletion before %s", m->label, what);
	return HW_OK;
}

static hw_err
fn_state(hw_key_meta *m, void *arg, int64_t now)
{
	hw_key_state want = *(hw_key_state *)arg;
	hw_err e = not_while_pending(m, want == HW_KEY_STATE_ENABLED ? "enabling it" :
	                             "disabling it");

	(void)now;
	if (e == HW_OK)
		m->state = want;
	return e;
}

HW_EXPORT hw_err
hw_key_set_state(hw_key *key, hw_key_state state)
{
	if (state != HW_KEY_STATE_ENABLED && state != HW_KEY_STATE_DISABLED)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "a key is enabled or disabled here; deletion "
		               "has its own calls");
	return meta_update(key, fn_state, &state, NULL);
}

static hw_err
fn_schedule(hw_key_meta *m, void *arg, int64_t now)
{
	unsigned days = *(unsigned *)arg;
	hw_err e = not_while_pending(m, "scheduling it again");

	if (e != HW_OK)
		return e;
	m->state = HW_KEY_STATE_PENDING_DELETION;
	m->deletion_date = now + (int64_t)days * 86400;
	return HW_OK;
}

HW_EXPORT hw_err
hw_key_schedule_deletion(hw_key *key, unsigned days, int64_t *when)
{
	hw_key_meta *m = NULL;
	hw_err e;

	if (days < HW_DELETION_MIN_DAYS || days > HW_DELETION_MAX_DAYS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the deletion waiting period is %u to %u days, "
		               "not %u", HW_DELETION_MIN_DAYS, HW_DELETION_MAX_DAYS, days);
	e = meta_update(key, fn_schedule, &days, &m);
	if (e == HW_OK && when)
		*when = m->deletion_date;
	hw_key_meta_free(m);
	return e;
}

static hw_err
fn_cancel(hw_key_meta *m, void *arg, int64_t now)
{
	(void)arg;
	(void)now;
	if (m->state != HW_KEY_STATE_PENDING_DELETION)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is not pending deletion", m->label);
	m->state = HW_KEY_STATE_DISABLED;
	m->deletion_date = 0;
	return HW_OK;
}

HW_EXPORT hw_err
hw_key_cancel_deletion(hw_key *key)
{
	return meta_update(key, fn_cancel, NULL, NULL);
}

typedef struct {
	const char *const *set;
	size_t nset;
	const char *const *remove;
	size_t nremove;
} tags_arg;

static int
tag_cmp(const void *a, const void *b)
{
	return cmp_bytes(((const hw_key_tag *)a)->key, ((const hw_key_tag *)b)->key);
}

static hw_err
fn_tags(hw_key_meta *m, void *arg, int64_t now)
{
	tags_arg *t = arg;

	(void)now;
	for (size_t i = 0; i < t->nremove; i++)
		for (size_t j = 0; j < m->ntags; j++)
			if (strcmp(m->tags[j].key, t->remove[i]) == 0) {
				free(m->tags[j].key);
				free(m->tags[j].value);
				memmove(&m->tags[j], &m->tags[j + 1], (m->ntags - j - 1) * sizeof(*m->tags));
				m->ntags--;
				break;
			}
	for (size_t i = 0; i < t->nset; i++) {
		const char *kv = t->set[i], *eq = strchr(kv, '=');
		size_t kn = eq ? (size_t)(eq - kv) : 0;
		char *k, *v;
		size_t j;

		if (!eq || !tag_key_ok((const uint8_t *)kv, kn) ||
		    strlen(eq + 1) > HW_META_MAX_TAG_VALUE)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "bad tag '%s': KEY=VALUE with a key of 1 "
			               "to %u bytes and a value of at most %u", kv, HW_META_MAX_TAG_KEY,
			               HW_META_MAX_TAG_VALUE);
		k = dup_n((const uint8_t *)kv, kn);
		v = strdup(eq + 1);
		if (!k || !v) {
			free(k);
			free(v);
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		}
		for (j = 0; j < m->ntags && strcmp(m->tags[j].key, k) != 0; j++)
			;
		if (j < m->ntags) {
			free(k);
			free(m->tags[j].value);
			m->tags[j].value = v;
			continue;
		}
		if (m->ntags >= HW_META_MAX_TAGS) {
			free(k);
			free(v);
			return hw_fail(HW_ERR_TOO_LARGE, 0, "a key has at most %u tags", HW_META_MAX_TAGS);
		}
		{
			hw_key_tag *g = realloc(m->tags, (m->ntags + 1) * sizeof(*g));
			if (!g) {
				free(k);
				free(v);
				return hw_fail(HW_ERR_NOMEM, 0, NULL);
			}
			m->tags = g;
		}
		m->tags[m->ntags].key = k;
		m->tags[m->ntags].value = v;
		m->ntags++;
	}
	qsort(m->tags, m->ntags, sizeof(*m->tags), tag_cmp);
	return HW_OK;
}

HW_EXPORT hw_err
hw_key_update_tags(hw_key *key, const char *const *set, size_t nset,
                   const char *const *remove, size_t nremove)
{
	tags_arg t = { set, nset, remove, nremove };

	if ((nset && !set) || (nremove && !remove))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_update_tags");
	for (size_t i = 0; i < nset; i++)
		if (!set[i])
			return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_update_tags");
	for (size_t i = 0; i < nremove; i++)
		if (!remove[i])
			return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_update_tags");
	return meta_update(key, fn_tags, &t, NULL);
}

static hw_err
fn_describe(hw_key_meta *m, void *arg, int64_t now)
{
	char *d = strdup(arg);

	(void)now;
	if (!d)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	free(m->description);
	m->description = d;
	return HW_OK;
}

HW_EXPORT hw_err
hw_key_set_description(hw_key *key, const char *text)
{
	if (!text)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no description");
	if (strlen(text) > HW_META_MAX_DESCRIPTION)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "the description is longer than %u bytes",
		               HW_META_MAX_DESCRIPTION);
	return meta_update(key, fn_describe, (void *)text, NULL);
}

/* ---------------------------------------------------------------- */
/* Reading                                                           */

typedef struct {
	hw_key *key;
	hw_key_meta *m;
} get_arg;

static CK_RV
op_get(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	get_arg *a = arg;
	CK_OBJECT_HANDLE mh;
	CK_RV rv;

	hw_key_meta_free(a->m);
	a->m = NULL;
	rv = meta_read_s(ctx, s, a->key->base, &a->m, &mh);
	if (rv == CKR_OK && a->m && !meta_version_by_id(a->m, a->key)) {
		hw_key_meta_free(a->m);
		a->m = NULL;
	}
	return rv;
}

HW_EXPORT hw_err
hw_key_meta_get(hw_key *key, hw_key_meta **out)
{
	get_arg a = { key, NULL };
	hw_err e;

	if (!key || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_meta_get");
	hw_clear_error();
	if ((e = ensure_identified(key)) != HW_OK)
		return e;
	e = hw_ctx_run(key->ctx, op_get, &a, "reading key metadata");
	if (e != HW_OK)
		return e;
	if (!a.m && !(a.m = meta_defaults(key)))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	*out = a.m;
	return HW_OK;
}

typedef struct {
	const char *label;          /* NULL: all */
	hw_key_meta **v;
	CK_OBJECT_HANDLE *h;
	size_t n;
} list_arg;

static void
list_clear(list_arg *a)
{
	hw_key_meta_list_free(a->v, a->n);
	free(a->h);
	a->v = NULL;
	a->h = NULL;
	a->n = 0;
}

static CK_RV
op_list(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	list_arg *a = arg;
	CK_OBJECT_HANDLE *found = NULL;
	size_t n = 0;
	CK_RV rv;

	list_clear(a);
	rv = meta_find_s(ctx, s, a->label, 0, &found, &n);
	if (rv != CKR_OK)
		return rv;
	a->v = calloc(n ? n : 1, sizeof(*a->v));
	if (!a->v) {
		free(found);
		return CKR_HOST_MEMORY;
	}
	a->h = found;              /* compacted in place below */
	for (size_t i = 0; i < n; i++) {
		rv = meta_load_s(ctx, s, found[i], &a->v[a->n]);
		if (rv != CKR_OK)
			break;
		a->h[a->n] = found[i];
		a->n++;
		/* Two of one key (an interrupted update): the newer counts. */
		for (size_t j = 0; j + 1 < a->n; j++) {
			if (strcmp(a->v[j]->label, a->v[a->n - 1]->label) != 0)
				continue;
			if (a->v[a->n - 1]->serial > a->v[j]->serial) {
				hw_key_meta *t = a->v[j];
				a->v[j] = a->v[a->n - 1];
				a->h[j] = a->h[a->n - 1];
				a->v[a->n - 1] = t;
			}
			hw_key_meta_free(a->v[a->n - 1]);
			a->v[a->n - 1] = NULL;
			a->n--;
			break;
		}
	}
	return rv;
}

HW_EXPORT hw_err
hw_key_meta_list(hw_ctx *ctx, hw_key_meta ***out, size_t *n)
{
	list_arg a = { NULL, NULL, NULL, 0 };
	hw_err e;

	if (!ctx || !out || !n)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_meta_list");
	hw_clear_error();
	if ((e = hw_ctx_ready(ctx)) != HW_OK)
		return e;
	e = hw_ctx_run(ctx, op_list, &a, "listing key metadata");
	if (e != HW_OK) {
		list_clear(&a);
		return e;
	}
	free(a.h);
	*out = a.v;
	*n = a.n;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Purge                                                             */

typedef struct {
	const char *label;
	char **purged;
	size_t npurged;
} purge_arg;

static CK_RV
op_purge(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	purge_arg *a = arg;
	list_arg l = { a->label, NULL, NULL, 0 };
	int64_t now = wall_now(ctx);
	CK_RV rv = op_list(ctx, s, &l);

	if (rv == CKR_OK && a->label && l.n == 0)
		rv = hw_op_fail(hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is not pending deletion "
		                        "(it has no lifecycle metadata)", a->label));
	for (size_t i = 0; i < l.n && rv == CKR_OK; i++) {
		hw_key_meta *m = l.v[i];
		char when[40];

		if (m->state != HW_KEY_STATE_PENDING_DELETION || now < m->deletion_date) {
			if (!a->label)
				continue;
			fmt_date(m->deletion_date, when, sizeof(when));
			rv = hw_op_fail(m->state != HW_KEY_STATE_PENDING_DELETION ?
			                hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is not pending deletion",
			                        m->label) :
			                hw_fail(HW_ERR_KEY_PENDING_DELETION, 0, "the deletion window of "
			                        "key '%s' ends on %s", m->label, when));
			break;
		}
		rv = purge_s(ctx, s, m, l.h[i]);
		if (rv == CKR_OK) {
			char **g = realloc(a->purged, (a->npurged + 1) * sizeof(*g));
			char *dup = strdup(m->label);
			if (!g || !dup) {
				free(dup);
				if (g)
					a->purged = g;
				rv = CKR_HOST_MEMORY;
				break;
			}
			a->purged = g;
			a->purged[a->npurged++] = dup;
		}
	}
	list_clear(&l);
	return rv;
}

HW_EXPORT hw_err
hw_key_purge(hw_ctx *ctx, const char *label, char ***purged, size_t *n)
{
	purge_arg a = { label, NULL, 0 };
	hw_err e;

	if (!ctx || (label && !*label))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_key_purge");
	hw_clear_error();
	if ((e = hw_ctx_ready(ctx)) != HW_OK)
		return e;
	/* Destroying is not idempotent, but running it again only finds less. */
	e = hw_ctx_run(ctx, op_purge, &a, "purging keys past their deletion date");
	if (e != HW_OK || !purged) {
		hw_strv_free(a.purged, a.npurged);
		if (e == HW_OK && n)
			*n = a.npurged;
		return e;
	}
	*purged = a.purged;
	if (n)
		*n = a.npurged;
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Rotation                                                          */

typedef struct {
	unsigned number;
	char id_hex[2 * HW_ID_LEN + 1];
} addver_arg;

static hw_err
fn_add_version(hw_key_meta *m, void *arg, int64_t now)
{
	addver_arg *v = arg;
	hw_key_version_info *g;
	hw_err e;

	/* Ran before (a retried operation): the version is there already. */
	for (size_t i = 0; i < m->nversions; i++)
		if (m->versions[i].number == v->number && strcmp(m->versions[i].id_hex, v->id_hex) == 0) {
			m->current = v->number;
			return HW_OK;
		}
	if ((e = not_while_pending(m, "rotating it")) != HW_OK)
		return e;
	if (m->state == HW_KEY_STATE_DISABLED)
		return hw_fail(HW_ERR_KEY_DISABLED, 0, "key '%s' is disabled: enable it before "
		               "rotating it", m->label);
	if (m->versions[m->nversions - 1].number >= v->number)
		return hw_fail(HW_ERR_KEY_EXISTS, 0, "version %u of key '%s' was made meanwhile",
		               v->number, m->label);
	if (m->nversions >= HW_META_MAX_VERSIONS)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "key '%s' has %u versions, the most it may have",
		               m->label, HW_META_MAX_VERSIONS);
	g = realloc(m->versions, (m->nversions + 1) * sizeof(*g));
	if (!g)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	m->versions = g;
	memset(&g[m->nversions], 0, sizeof(*g));
	g[m->nversions].number = v->number;
	snprintf(g[m->nversions].id_hex, sizeof(g[m->nversions].id_hex), "%s", v->id_hex);
	g[m->nversions].created = now;
	m->nversions++;
	m->current = v->number;
	return HW_OK;
}

static hw_err rotate_locked(hw_key *key, hw_key **new_version);

/* Two rotations at once would both make version n+1. */
HW_EXPORT hw_err
hw_key_rotate(hw_key *key, hw_key **new_version)
{
	hw_err e;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	if ((e = hw_token_lock(key->ctx)) != HW_OK)
		return e;
	e = rotate_locked(key, new_version);
	hw_token_unlock();
	return e;
}

static hw_err
rotate_locked(hw_key *key, hw_key **new_version)
{
	hw_key_meta *m = NULL;
	hw_key *cur = NULL, *nk = NULL, *exists = NULL;
	hw_key_info info;
	addver_arg v;
	char label[160];
	uint8_t id[HW_ID_LEN];
	hw_err e;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	hw_clear_error();
	if ((e = hw_ctx_require(key->ctx, HW_CAP_DATA_OBJECTS, "key rotate")) != HW_OK)
		return e;
	e = hw_key_meta_get(key, &m);
	if (e != HW_OK)
		return e;
	if (m->state != HW_KEY_STATE_ENABLED) {
		e = m->state == HW_KEY_STATE_DISABLED ?
		    hw_fail(HW_ERR_KEY_DISABLED, 0, "key '%s' is disabled: enable it before rotating "
		            "it", m->label) :
		    hw_fail(HW_ERR_KEY_PENDING_DELETION, 0, "key '%s' is pending deletion", m->label);
		goto out;
	}
	/* The template comes from the current version. */
	{
		char spec[140];
		for (size_t i = 0; i < m->nversions; i++)
			if (m->versions[i].number == m->current)
				snprintf(spec, sizeof(spec), "id:%s", m->versions[i].id_hex);
		e = hw_key_find(key->ctx, spec, &cur);
	}
	if (e == HW_OK)
		e = hw_key_info_get(cur, &info);
	if (e != HW_OK)
		goto out;
	if (info.type == 0 || info.purpose == HW_PURPOSE_NONE) {
		e = hw_fail(HW_ERR_UNSUPPORTED, 0, "key '%s' (%s, no hsmwrap purpose) was not made by "
		            "hsmwrap; it cannot be rotated", m->label, info.type_name);
		goto out;
	}
	v.number = m->versions[m->nversions - 1].number + 1;
	version_label(m->label, v.number, label, sizeof(label));
	if (strlen(label) > 128) {
		e = hw_fail(HW_ERR_INVALID_ARG, 0, "the label of version %u, '%s', would be longer than "
		            "128 bytes", v.number, label);
		goto out;
	}
	e = hw_key_find_label_exact(key->ctx, label, &exists);
	if (e == HW_OK || e == HW_ERR_KEY_AMBIGUOUS) {
		hw_key_free(exists);
		e = hw_fail(HW_ERR_KEY_EXISTS, 0, "an object labelled '%s' is on the token already",
		            label);
		goto out;
	}
	if (e != HW_ERR_KEY_NOT_FOUND)
		goto out;
	hw_clear_error();
	/* A new version is as backup-able as the one it replaces. */
	e = hw_key_gen_object(key->ctx, label, info.type, info.purpose,
	                      info.extractable == 1 ? HW_KEYGEN_BACKUPABLE : 0, id, &nk);
	if (e != HW_OK)
		goto out;
	hw_hex(id, sizeof(id), v.id_hex);
	e = meta_update(cur, fn_add_version, &v, NULL);
	if (e != HW_OK) {
		char detail[256];
		unsigned long ckrv = hw_last_ckrv();
		hw_err d;

		snprintf(detail, sizeof(detail), "%s", hw_last_detail());
		d = hw_key_destroy(nk);
		e = hw_fail(e, ckrv, "%s%s", detail, d == HW_OK ? " (the new version was destroyed "
		            "again)" : " (destroying the new version failed too)");
		goto out;
	}
	snprintf(nk->base, sizeof(nk->base), "%s", m->label);
	nk->version = v.number;
	set_cached_state(nk, m);
	pthread_mutex_lock(&key->ctx->lock);
	key->state_ms = 0;
	pthread_mutex_unlock(&key->ctx->lock);
	if (new_version) {
		*new_version = nk;
		nk = NULL;
	}
out:
	hw_key_free(nk);
	hw_key_free(cur);
	hw_key_meta_free(m);
	return e;
}

/* ---------------------------------------------------------------- */
/* Destruction outside the deletion window                           */

/* After hw_key_destroy: the version goes from the metadata too. */
static CK_RV
op_forget(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	hw_key *key = arg;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	const hw_key_version_info *v;
	CK_RV rv = meta_read_s(ctx, s, key->base, &m, &mh);

	if (rv != CKR_OK || !m)
		return rv;
	v = meta_version_by_id(m, key);
	if (v && m->nversions == 1) {
		rv = meta_destroy_s(ctx, s, m->label);
	} else if (v) {
		size_t i = (size_t)(v - m->versions);
		unsigned gone = v->number;
		memmove(&m->versions[i], &m->versions[i + 1],
		        (m->nversions - i - 1) * sizeof(*m->versions));
		m->nversions--;
		/* The newest remaining version takes over. */
		if (m->current == gone)
			m->current = m->versions[m->nversions - 1].number;
		rv = meta_write_s(ctx, s, &mh, m);
	}
	hw_key_meta_free(m);
	return rv;
}

hw_err
hw_meta_forget(hw_key *key)
{
	hw_err e = ensure_identified(key);

	if (e != HW_OK)
		return e;
	return hw_ctx_run(key->ctx, op_forget, key, "removing the version from the key's metadata");
}

static CK_RV
op_destroy_all(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	hw_key *key = arg;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	CK_RV rv = meta_read_s(ctx, s, key->base, &m, &mh);

	if (rv != CKR_OK)
		return rv;
	if (!m || !meta_version_by_id(m, key)) {
		hw_key_meta_free(m);
		return hw_op_fail(HW_ERR_KEY_NOT_FOUND);
	}
	rv = purge_s(ctx, s, m, mh);
	hw_key_meta_free(m);
	return rv;
}

HW_EXPORT hw_err
hw_key_destroy_all(hw_key *key)
{
	hw_err e;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	hw_clear_error();
	if ((e = ensure_identified(key)) != HW_OK)
		return e;
	/* As in hw_key_destroy: a stored certificate goes with its key pair. */
	if (key->cls == CKO_PRIVATE_KEY && (e = hw_cert_destroy(key)) != HW_OK)
		return e;
	e = hw_ctx_run_once(key->ctx, op_destroy_all, key, "destroying every version of the key");
	/* No metadata: the key is its only version. */
	if (e == HW_ERR_KEY_NOT_FOUND && !hw_last_detail()[0])
		return hw_key_destroy(key);
	return e;
}
