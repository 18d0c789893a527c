/*
 * The key lifecycle metadata record (key/state.c keeps it on the token,
 * one CKO_DATA object per logical key, in CKA_VALUE):
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
 * Versions are separate key objects: version 1 keeps the label L, version
 * n >= 2 is "L#n" (hw_version_label).
 *
 * Pure: no HSM. tests/fuzz-meta.c fuzzes the decoder.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_MAGIC "HWM"
#define META_FORMAT 1

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

void
hw_version_label(const char *base, unsigned n, char *out, size_t outsz)
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

static hw_err
bad(const char *what)
{
	return hw_fail(HW_ERR_FORMAT, 0, "key metadata: %s", what);
}

bool
hw_meta_tag_key_ok(const uint8_t *p, size_t n)
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
		if (!hw_meta_tag_key_ok(kp, kn) || vn > HW_META_MAX_TAG_VALUE || memchr(vp, 0, vn)) {
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
		if (!t->key || !t->value || !hw_meta_tag_key_ok((const uint8_t *)t->key, strlen(t->key)) ||
		    strlen(t->value) > HW_META_MAX_TAG_VALUE ||
		    (i && cmp_bytes(m->tags[i - 1].key, t->key) >= 0))
			return hw_fail(HW_ERR_INVALID_ARG, 0, "key metadata: bad tags");
	}
	if (m->description && strlen(m->description) > HW_META_MAX_DESCRIPTION)
		return hw_fail(HW_ERR_TOO_LARGE, 0, "the description is longer than %u bytes",
		               HW_META_MAX_DESCRIPTION);

	hw_wbuf_init(&w, HW_META_VALUE_MAX);
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

		if (hw_unhex(m->versions[i].id_hex, id, sizeof(id), &idn) != 0) {
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
