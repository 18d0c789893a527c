/*
 * Key lifecycle operations on the metadata record (key/state.c keeps it on
 * the token, format/keymeta.c encodes it): enabling and disabling a key,
 * scheduling and cancelling its deletion, tags and description, reading
 * and listing records, purging keys past their deletion date, rotation
 * (a new version becomes current), and destroying every version at once.
 * Each change is read-modify-write on one session (hw_meta_update).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	return hw_meta_update(key, fn_state, &state, NULL);
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
	e = hw_meta_update(key, fn_schedule, &days, &m);
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
	return hw_meta_update(key, fn_cancel, NULL, NULL);
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
	return strcmp(((const hw_key_tag *)a)->key, ((const hw_key_tag *)b)->key);
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

		if (!eq || !hw_meta_tag_key_ok((const uint8_t *)kv, kn) ||
		    strlen(eq + 1) > HW_META_MAX_TAG_VALUE)
			return hw_fail(HW_ERR_INVALID_ARG, 0, "bad tag '%s': KEY=VALUE with a key of 1 "
			               "to %u bytes and a value of at most %u", kv, HW_META_MAX_TAG_KEY,
			               HW_META_MAX_TAG_VALUE);
		k = strndup(kv, kn);
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
	return hw_meta_update(key, fn_tags, &t, NULL);
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
	return hw_meta_update(key, fn_describe, (void *)text, NULL);
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
	rv = hw_meta_read_s(ctx, s, a->key->base, &a->m, &mh);
	if (rv == CKR_OK && a->m && !hw_meta_version_of(a->m, a->key)) {
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
	if ((e = hw_key_ensure_identified(key)) != HW_OK)
		return e;
	e = hw_ctx_run(key->ctx, op_get, &a, "reading key metadata");
	if (e != HW_OK)
		return e;
	if (!a.m && !(a.m = hw_meta_defaults(key)))
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
	rv = hw_meta_find_s(ctx, s, a->label, 0, &found, &n);
	if (rv != CKR_OK)
		return rv;
	a->v = calloc(n ? n : 1, sizeof(*a->v));
	if (!a->v) {
		free(found);
		return CKR_HOST_MEMORY;
	}
	a->h = found;              /* compacted in place below */
	for (size_t i = 0; i < n; i++) {
		rv = hw_meta_load_s(ctx, s, found[i], &a->v[a->n]);
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
	int64_t now = hw_meta_now(ctx);
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
			hw_fmt_utc(m->deletion_date, when, sizeof(when));
			rv = hw_op_fail(m->state != HW_KEY_STATE_PENDING_DELETION ?
			                hw_fail(HW_ERR_INVALID_ARG, 0, "key '%s' is not pending deletion",
			                        m->label) :
			                hw_fail(HW_ERR_KEY_PENDING_DELETION, 0, "the deletion window of "
			                        "key '%s' ends on %s", m->label, when));
			break;
		}
		rv = hw_meta_purge_s(ctx, s, m, l.h[i]);
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
	hw_version_label(m->label, v.number, label, sizeof(label));
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
	e = hw_meta_update(cur, fn_add_version, &v, NULL);
	if (e != HW_OK) {
		e = hw_key_destroy_after(nk, e, "version");
		goto out;
	}
	snprintf(nk->base, sizeof(nk->base), "%s", m->label);
	nk->version = v.number;
	hw_key_cache_state(nk, m);
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

static CK_RV
op_destroy_all(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	hw_key *key = arg;
	hw_key_meta *m = NULL;
	CK_OBJECT_HANDLE mh = CK_INVALID_HANDLE;
	CK_RV rv = hw_meta_read_s(ctx, s, key->base, &m, &mh);

	if (rv != CKR_OK)
		return rv;
	if (!m || !hw_meta_version_of(m, key)) {
		hw_key_meta_free(m);
		return hw_op_fail(HW_ERR_KEY_NOT_FOUND);
	}
	rv = hw_meta_purge_s(ctx, s, m, mh);
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
	if ((e = hw_key_ensure_identified(key)) != HW_OK)
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
