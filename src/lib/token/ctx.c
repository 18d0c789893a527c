/*
 * Contexts: one module, one token, one login, a pool of sessions.
 *
 * PKCS#11 login state belongs to the application and token, not to a
 * session, so one C_Login serves every pooled session. Sessions are
 * serial (one operation at a time), so each thread borrows one from the
 * pool for the length of an operation; the pool lock is held only to
 * push or pop a handle, never across an HSM call other than login.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

static _Thread_local hw_err op_err;

CK_RV
hw_op_fail(hw_err err)
{
	op_err = err;
	return HW_CKR_HWERR;
}

HW_EXPORT hw_err
hw_ctx_new(hw_ctx **out)
{
	hw_ctx *ctx;

	if (!out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_ctx_new");
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	ctx->pin = hw_secmem_alloc(HW_PIN_MAX);
	if (!ctx->pin) {
		free(ctx);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	pthread_mutex_init(&ctx->lock, NULL);
	ctx->pool_max = 32;
	hw_fork_register(&ctx->lock);
	*out = ctx;
	return HW_OK;
}

static hw_err
set_string(hw_ctx *ctx, char **field, const char *v)
{
	char *copy = NULL;

	if (!ctx)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no context");
	if (ctx->mod)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "context already open");
	if (v && !(copy = strdup(v)))
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	free(*field);
	*field = copy;
	return HW_OK;
}

HW_EXPORT hw_err
hw_ctx_set_module(hw_ctx *ctx, const char *name_or_path)
{
	return set_string(ctx, &ctx->module_spec, name_or_path);
}

HW_EXPORT hw_err
hw_ctx_set_module_init_args(hw_ctx *ctx, const char *init_args)
{
	return set_string(ctx, &ctx->module_init_args, init_args);
}

HW_EXPORT hw_err
hw_ctx_set_token(hw_ctx *ctx, const char *uri)
{
	char *shown = NULL;
	hw_err e = set_string(ctx, &ctx->token_spec, uri);

	/* A URI may carry pin-value (RFC 7512): messages use this copy. */
	if (e == HW_OK && uri && (e = hw_uri_redact(uri, &shown)) != HW_OK)
		return e;
	free(ctx->token_shown);
	ctx->token_shown = shown;
	return HW_OK;
}

HW_EXPORT hw_err
hw_ctx_set_pin_source(hw_ctx *ctx, const char *source)
{
	hw_err e = set_string(ctx, &ctx->pin_source, source);
	if (e == HW_OK && source && ctx) {
		OPENSSL_cleanse(ctx->pin, HW_PIN_MAX);
		ctx->have_pin = false;
	}
	return e;
}

HW_EXPORT void
hw_ctx_set_pin_callback(hw_ctx *ctx, hw_pin_cb cb, void *arg)
{
	if (!ctx)
		return;
	ctx->pin_cb = cb;
	ctx->pin_cb_arg = arg;
}

HW_EXPORT void
hw_ctx_set_pool_size(hw_ctx *ctx, unsigned n)
{
	if (ctx)
		ctx->pool_max = n ? n : 1;
}

/* The slot/token must match every attribute the URI gives. */
static bool
token_matches(hw_ctx *ctx, CK_SLOT_ID slot, const CK_TOKEN_INFO *ti)
{
	CK_SLOT_INFO si;
	CK_INFO mi;
	P11KitUri *u = ctx->token_uri;
	CK_SLOT_ID want;

	if (!u)
		return (ti->flags & CKF_TOKEN_INITIALIZED) != 0;
	if (!p11_kit_uri_match_token_info(u, (CK_TOKEN_INFO *)ti))
		return false;
	want = p11_kit_uri_get_slot_id(u);
	if (want != (CK_SLOT_ID)-1 && want != slot)
		return false;
	if (ctx->fl->C_GetSlotInfo(slot, &si) == CKR_OK &&
	    !p11_kit_uri_match_slot_info(u, &si))
		return false;
	if (ctx->fl->C_GetInfo(&mi) == CKR_OK && !p11_kit_uri_match_module_info(u, &mi))
		return false;
	return true;
}

static hw_err
select_token_once(hw_ctx *ctx)
{
	CK_SLOT_ID *slots = NULL, found = 0;
	CK_ULONG n = 0;
	CK_TOKEN_INFO ti, found_ti;
	unsigned matches = 0;
	P11KitUri *fmt;
	char *s = NULL;
	CK_RV rv;

	rv = ctx->fl->C_GetSlotList(CK_TRUE, NULL, &n);
	if (rv == CKR_OK && n > 0) {
		slots = calloc(n, sizeof(*slots));
		if (!slots)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		rv = ctx->fl->C_GetSlotList(CK_TRUE, slots, &n);
	}
	if (rv != CKR_OK) {
		free(slots);
		return hw_fail_ck(rv, "C_GetSlotList");
	}
	for (CK_ULONG i = 0; i < n; i++) {
		if (ctx->fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (!token_matches(ctx, slots[i], &ti))
			continue;
		if (matches++ == 0) {
			found = slots[i];
			found_ti = ti;
		}
	}
	free(slots);
	if (matches == 0)
		return hw_fail(HW_ERR_TOKEN_NOT_FOUND, 0, "%s",
		               ctx->token_shown ? ctx->token_shown : "no initialised token");
	if (matches > 1)
		return hw_fail(HW_ERR_TOKEN_AMBIGUOUS, 0, "%u tokens match %s", matches,
		               ctx->token_shown ? ctx->token_shown : "(no token URI given)");
	ctx->slot = found;
	ctx->tinfo = found_ti;
	ctx->have_slot = true;

	/* The canonical URI of what we selected, for messages and key URIs. */
	fmt = p11_kit_uri_new();
	if (fmt) {
		*p11_kit_uri_get_token_info(fmt) = found_ti;
		if (p11_kit_uri_format(fmt, P11_KIT_URI_FOR_TOKEN, &s) == P11_KIT_URI_OK && s) {
			snprintf(ctx->token_uri_str, sizeof(ctx->token_uri_str), "%s", s);
			free(s);
		}
		p11_kit_uri_free(fmt);
	}
	return HW_OK;
}

static hw_err
read_mechanisms(hw_ctx *ctx)
{
	CK_ULONG n = 0;
	CK_RV rv;

	free(ctx->mechs);
	ctx->mechs = NULL;
	ctx->nmechs = 0;
	rv = ctx->fl->C_GetMechanismList(ctx->slot, NULL, &n);
	if (rv == CKR_OK && n > 0) {
		/* Room to spare: p11-kit 0.24's remoting client counts only the
		 * mechanisms it can carry, then writes the server's whole list. */
		CK_ULONG cap = n * 2 + 64;

		ctx->mechs = calloc(cap, sizeof(*ctx->mechs));
		if (!ctx->mechs)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		n = cap;
		rv = ctx->fl->C_GetMechanismList(ctx->slot, ctx->mechs, &n);
		if (rv == CKR_OK && n > cap)
			rv = CKR_GENERAL_ERROR;
	}
	if (rv != CKR_OK)
		return hw_fail_ck(rv, "C_GetMechanismList");
	ctx->nmechs = n;
	/* Prefer the v3.0 name; v2.40 tokens offer RFC 5649 as ..._PAD. */
	ctx->kwp_mech = 0;
	if (hw_ctx_has_mech(ctx, CKM_AES_KEY_WRAP_KWP))
		ctx->kwp_mech = CKM_AES_KEY_WRAP_KWP;
	else if (hw_ctx_has_mech(ctx, CKM_AES_KEY_WRAP_PAD))
		ctx->kwp_mech = CKM_AES_KEY_WRAP_PAD;
	ctx->caps = hw_caps_of(ctx->mechs, ctx->nmechs, &ctx->tinfo);
	return HW_OK;
}

bool
hw_ctx_has_mech(hw_ctx *ctx, CK_MECHANISM_TYPE m)
{
	for (size_t i = 0; i < ctx->nmechs; i++)
		if (ctx->mechs[i] == m)
			return true;
	return false;
}

/* A module named by the token URI (module-name= or module-path=). */
static const char *
uri_module(hw_ctx *ctx)
{
	const char *m;

	if (!ctx->token_uri)
		return NULL;
	m = p11_kit_uri_get_module_path(ctx->token_uri);
	if (!m)
		m = p11_kit_uri_get_module_name(ctx->token_uri);
	return m;
}

HW_EXPORT hw_err
hw_ctx_open(hw_ctx *ctx)
{
	const char *spec;
	hw_err e;
	int r;

	if (!ctx)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no context");
	hw_clear_error();
	if (ctx->mod)
		return ctx->token_spec ? hw_ctx_ready(ctx) : HW_OK;
	if (ctx->token_spec) {
		ctx->token_uri = p11_kit_uri_new();
		if (!ctx->token_uri)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		r = p11_kit_uri_parse(ctx->token_spec, P11_KIT_URI_FOR_ANY, ctx->token_uri);
		if (r != P11_KIT_URI_OK) {
			p11_kit_uri_free(ctx->token_uri);
			ctx->token_uri = NULL;
			return hw_fail(HW_ERR_URI, 0, "%s: %s", ctx->token_shown,
			               p11_kit_uri_message(r));
		}
	}
	spec = ctx->module_spec ? ctx->module_spec : uri_module(ctx);
	if (!spec)
		spec = HW_DEFAULT_MODULE;
	e = hw_module_acquire(spec, ctx->module_init_args, &ctx->mod);
	if (e != HW_OK)
		return e;
	ctx->fl = ctx->mod->fl;
	ctx->gen = hw_fork_generation();
	/* A named token is selected now, so a wrong URI fails here; without
	 * one, selection waits (token list and token init need none). */
	return ctx->token_spec ? hw_ctx_ready(ctx) : HW_OK;
}

/*
 * A token URI that matched a moment ago may match nothing now: a network
 * HSM reconnecting, or SoftHSMv2, which rewrites its token record in place
 * (at every C_Login) and whose readers may then lose the token. hsmwrap's
 * own processes do not tear it any more (the module I/O lock, token/
 * module.c), but other programs using the token can. SoftHSM keeps that
 * loss for the life of the module's initialisation, so before some of the
 * retries the module is initialised again when that is safe
 * (hw_module_restart: only this context uses it and it has no session
 * yet, which is the case for the first selection of a CLI command).
 * Tries over about 4 s (measured: on a loaded machine, 1 s was not always
 * enough for 14 processes) tell that from a wrong URI, which then takes
 * that long to report. Called with the call lock held: fork() waits that
 * long at most.
 */
static hw_err
select_token(hw_ctx *ctx)
{
	static const unsigned backoff_ms[] = { 10, 30, 60, 120, 250, 500, 1000, 2000 };
	hw_err e;
	int fd = hw_module_io_lock(ctx->mod, false);

	e = select_token_once(ctx);
	hw_module_io_unlock(fd);
	for (size_t i = 0; e == HW_ERR_TOKEN_NOT_FOUND && ctx->token_spec &&
	     i < sizeof(backoff_ms) / sizeof(backoff_ms[0]); i++) {
		struct timespec ts = { 0, (long)backoff_ms[i] * 1000000L };
		nanosleep(&ts, NULL);
		hw_clear_error();
		/* A first selection (no token lost before, so no session and
		 * no handle exists) may restart the module; three times at most,
		 * as a networked module may take long to start. */
		if (i % 3 == 0 && ctx->epoch == 0)
			(void)hw_module_restart(ctx->mod);
		if ((e = hw_module_ensure(ctx->mod)) != HW_OK)
			return e;
		fd = hw_module_io_lock(ctx->mod, false);
		e = select_token_once(ctx);
		hw_module_io_unlock(fd);
	}
	return e;
}

/* Token selection is lazy so that `token list` and `token init` work
 * without one. Call with ctx->lock held. */
static hw_err
ensure_token_locked(hw_ctx *ctx)
{
	hw_err e;

	if (ctx->have_slot)
		return HW_OK;
	e = select_token(ctx);
	if (e == HW_OK)
		e = read_mechanisms(ctx);
	if (e != HW_OK) {
		ctx->have_slot = false;
		/* Say what happened, not only that no token matches now. */
		if (ctx->token_lost && e == HW_ERR_TOKEN_NOT_FOUND)
			e = hw_fail(HW_ERR_DEVICE, CKR_TOKEN_NOT_PRESENT,
			            "the token %s was removed and is not back",
			            ctx->token_uri_str[0] ? ctx->token_uri_str : "in use");
		return e;
	}
	ctx->token_lost = false;
	return HW_OK;
}

/* hw_ctx_ready without the call lock, for callers that hold it. */
static hw_err
ready_locked(hw_ctx *ctx)
{
	hw_err e;

	if (!ctx || !ctx->mod)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "context not open");
	pthread_mutex_lock(&ctx->lock);
	if (ctx->gen != hw_fork_generation()) {
		/* Forked child: the parent's sessions, login and slot
		 * enumeration do not carry over. Handles are forgotten, not
		 * closed: they belong to the parent's module instance. */
		e = hw_module_ensure(ctx->mod);
		if (e != HW_OK) {
			pthread_mutex_unlock(&ctx->lock);
			return e;
		}
		ctx->nidle = 0;
		ctx->logged_in = false;
		ctx->have_slot = false;
		ctx->gen = hw_fork_generation();
	}
	e = ensure_token_locked(ctx);
	pthread_mutex_unlock(&ctx->lock);
	return e;
}

hw_err
hw_ctx_ready(hw_ctx *ctx)
{
	hw_err e;

	hw_calls_enter();
	e = ready_locked(ctx);
	hw_calls_leave();
	return e;
}

static hw_err
get_pin_locked(hw_ctx *ctx)
{
	char what[128];
	const char *src = ctx->pin_source;
	const char *val;
	size_t len = 0;
	hw_err e;

	if (ctx->have_pin)
		return HW_OK;
	snprintf(what, sizeof(what), "user PIN for token '%.*s'",
	         (int)p11_kit_space_strlen(ctx->tinfo.label, sizeof(ctx->tinfo.label)),
	         (const char *)ctx->tinfo.label);
	if (!src && ctx->token_uri) {
		val = p11_kit_uri_get_pin_value(ctx->token_uri);
		if (val) {
			len = strlen(val);
			if (len >= HW_PIN_MAX)
				return hw_fail(HW_ERR_PIN_SOURCE, 0, "pin-value too long");
			memcpy(ctx->pin, val, len + 1);
			ctx->pin_len = len;
			ctx->have_pin = true;
			return HW_OK;
		}
		src = p11_kit_uri_get_pin_source(ctx->token_uri);
	}
	if (!src)
		src = ctx->pin_cb ? "prompt" : NULL;
	if (!src)
		return hw_fail(HW_ERR_PIN_SOURCE, 0,
		               "no PIN source: give file:PATH, env:NAME or prompt");
	e = hw_pin_read(src, what, ctx->pin_cb, ctx->pin_cb_arg, ctx->pin,
	                HW_PIN_MAX, &len);
	if (e != HW_OK)
		return e;
	ctx->pin_len = len;
	ctx->have_pin = true;
	return HW_OK;
}

static void
forget_pin_locked(hw_ctx *ctx)
{
	OPENSSL_cleanse(ctx->pin, HW_PIN_MAX);
	ctx->pin_len = 0;
	ctx->have_pin = false;
}

static hw_err
login_locked(hw_ctx *ctx, CK_SESSION_HANDLE s)
{
	CK_RV rv;
	hw_err e;

	if (ctx->logged_in)
		return HW_OK;
	if (!(ctx->tinfo.flags & CKF_LOGIN_REQUIRED)) {
		ctx->logged_in = true;
		return HW_OK;
	}
	if (ctx->tinfo.flags & CKF_PROTECTED_AUTHENTICATION_PATH && !ctx->pin_source &&
	    !ctx->pin_cb) {
		int fd = hw_module_io_lock(ctx->mod, true);

		rv = ctx->fl->C_Login(s, CKU_USER, NULL, 0);
		hw_module_io_unlock(fd);
	} else {
		int fd;

		e = get_pin_locked(ctx);
		if (e != HW_OK)
			return e;
		fd = hw_module_io_lock(ctx->mod, true);
		rv = ctx->fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)ctx->pin, ctx->pin_len);
		hw_module_io_unlock(fd);
		/* SoftHSMv2 fails a login with CKR_GENERAL_ERROR while another
		 * process rewrites its token file. That is no verdict on the PIN
		 * (a wrong one is CKR_PIN_INCORRECT and is never retried), so a
		 * few more tries cost no lockout. Its token flags may read as
		 * zero then too: "PIN not initialised" (about 2.5 s in all). */
		for (unsigned i = 0; i < 7 && (rv == CKR_GENERAL_ERROR || rv == CKR_DEVICE_ERROR ||
		                               rv == CKR_FUNCTION_FAILED ||
		                               rv == CKR_USER_PIN_NOT_INITIALIZED); i++) {
			struct timespec ts = { 0, (long)(20u << i) * 1000000L };
			nanosleep(&ts, NULL);
			fd = hw_module_io_lock(ctx->mod, true);
			rv = ctx->fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)ctx->pin, ctx->pin_len);
			hw_module_io_unlock(fd);
		}
	}
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv != CKR_OK) {
		/* A wrong PIN must not be retried silently: it counts
		 * towards the token's lockout. */
		forget_pin_locked(ctx);
		return hw_fail_ck(rv, "login");
	}
	ctx->logged_in = true;
	ctx->key_epoch++;
	return HW_OK;
}

CK_RV
hw_session_check_login(hw_ctx *ctx, CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO si;

	if (!(ctx->tinfo.flags & CKF_LOGIN_REQUIRED) ||
	    ctx->fl->C_GetSessionInfo(s, &si) != CKR_OK)
		return CKR_OK;
	if (si.state == CKS_RO_PUBLIC_SESSION || si.state == CKS_RW_PUBLIC_SESSION)
		return CKR_USER_NOT_LOGGED_IN;
	return CKR_OK;
}

CK_RV
hw_ctx_login_context(hw_ctx *ctx, CK_SESSION_HANDLE s)
{
	CK_RV rv;
	hw_err e;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->tinfo.flags & CKF_PROTECTED_AUTHENTICATION_PATH && !ctx->pin_source &&
	    !ctx->pin_cb) {
		int fd = hw_module_io_lock(ctx->mod, true);

		rv = ctx->fl->C_Login(s, CKU_CONTEXT_SPECIFIC, NULL, 0);
		hw_module_io_unlock(fd);
	} else if ((e = get_pin_locked(ctx)) != HW_OK) {
		pthread_mutex_unlock(&ctx->lock);
		return hw_op_fail(e);
	} else {
		int fd = hw_module_io_lock(ctx->mod, true);

		rv = ctx->fl->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR *)ctx->pin,
		                      ctx->pin_len);
		hw_module_io_unlock(fd);
		/* As at login: a wrong PIN is never tried again. */
		if (rv == CKR_PIN_INCORRECT)
			forget_pin_locked(ctx);
	}
	pthread_mutex_unlock(&ctx->lock);
	return rv;
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

/* Which pool a borrowed session belongs to: fork generation and token epoch. */
typedef struct {
	unsigned long gen, epoch;
} sess_tag;

/*
 * Borrow a session; opens one when the pool is empty. When C_OpenSession
 * fails, *open_rv holds its CK_RV so the caller can recover (a removed
 * token); a failed login leaves it CKR_OK: that is never retried.
 */
static hw_err
session_get(hw_ctx *ctx, bool login, CK_SESSION_HANDLE *out, sess_tag *tag, CK_RV *open_rv)
{
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_SLOT_ID slot;
	CK_RV rv;
	hw_err e = HW_OK;

	bool need_login;

	*open_rv = CKR_OK;
	pthread_mutex_lock(&ctx->lock);
	if (ctx->nidle > 0)
		s = ctx->idle[--ctx->nidle];
	need_login = login && !ctx->logged_in;
	slot = ctx->slot;
	tag->gen = ctx->gen;
	tag->epoch = ctx->epoch;
	pthread_mutex_unlock(&ctx->lock);

	if (s == CK_INVALID_HANDLE) {
		rv = ctx->fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
		                            NULL, NULL, &s);
		if (rv != CKR_OK) {
			*open_rv = rv;
			return hw_fail_ck(rv, "C_OpenSession");
		}
	}
	if (need_login) {
		pthread_mutex_lock(&ctx->lock);
		e = login_locked(ctx, s);
		pthread_mutex_unlock(&ctx->lock);
		if (e != HW_OK) {
			ctx->fl->C_CloseSession(s);
			return e;
		}
	}
	*out = s;
	return HW_OK;
}

static void
session_put(hw_ctx *ctx, CK_SESSION_HANDLE s, sess_tag tag)
{
	pthread_mutex_lock(&ctx->lock);
	/* A session from before a fork is not ours to keep or close. */
	if (tag.gen != ctx->gen) {
		pthread_mutex_unlock(&ctx->lock);
		return;
	}
	/* One from before a token removal is dead: close it, do not pool it. */
	if (tag.epoch == ctx->epoch && ctx->nidle < ctx->pool_max) {
		if (ctx->nidle == ctx->idle_cap) {
			size_t cap = ctx->idle_cap ? ctx->idle_cap * 2 : 8;
			CK_SESSION_HANDLE *n = realloc(ctx->idle, cap * sizeof(*n));
			if (n) {
				ctx->idle = n;
				ctx->idle_cap = cap;
			}
		}
		if (ctx->nidle < ctx->idle_cap) {
			ctx->idle[ctx->nidle++] = s;
			pthread_mutex_unlock(&ctx->lock);
			return;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	ctx->fl->C_CloseSession(s);
}

/*
 * After a failure the session may still have an operation active (PKCS#11
 * keeps it after CKR_BUFFER_TOO_SMALL, some tokens after other errors
 * too), which would fail every later borrower with CKR_OPERATION_ACTIVE.
 * So the session is closed; a fresh one is opened first so that the
 * login, which ends with the application's last session, survives.
 */
static void
session_replace(hw_ctx *ctx, CK_SESSION_HANDLE s, sess_tag tag)
{
	CK_SESSION_HANDLE fresh;
	CK_SLOT_ID slot;

	if (tag.gen != hw_fork_generation())
		return;
	pthread_mutex_lock(&ctx->lock);
	slot = ctx->slot;
	pthread_mutex_unlock(&ctx->lock);
	if (ctx->fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
	                           &fresh) == CKR_OK)
		session_put(ctx, fresh, tag);
	ctx->fl->C_CloseSession(s);
}

/*
 * The token went away (or came back as a new one): its sessions and login
 * are gone and object handles may differ. Drop them all; the next attempt
 * selects the token again. Sessions other threads hold are closed when
 * they come back (their epoch is old).
 */
static void
token_lost(hw_ctx *ctx, sess_tag tag)
{
	CK_SESSION_HANDLE *idle = NULL;
	size_t n = 0;

	pthread_mutex_lock(&ctx->lock);
	if (tag.gen == ctx->gen && tag.epoch == ctx->epoch) {
		/* First to notice: later reporters of the same loss do nothing. */
		idle = ctx->idle;
		n = ctx->nidle;
		ctx->idle = NULL;
		ctx->nidle = ctx->idle_cap = 0;
		ctx->logged_in = false;
		ctx->have_slot = false;
		ctx->token_lost = true;
		ctx->epoch++;
		ctx->key_epoch++;
	}
	pthread_mutex_unlock(&ctx->lock);
	for (size_t i = 0; i < n; i++)
		ctx->fl->C_CloseSession(idle[i]);
	free(idle);
}

/* The call lock is not held while sleeping, so fork() need not wait. */
static void
backoff(unsigned n)
{
	static const long ms[] = { 10, 50 };
	struct timespec ts = { 0, ms[n < 2 ? n : 1] * 1000000L };

	hw_calls_leave();
	nanosleep(&ts, NULL);
	hw_calls_enter();
}

enum { RUN_LOGIN = 1, RUN_ONCE = 2 };

static hw_err run_attempts(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what, unsigned flags);

static hw_err
run(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what, unsigned flags)
{
	hw_err e;

	hw_clear_error();
	hw_calls_enter();
	e = run_attempts(ctx, op, arg, what, flags);
	hw_calls_leave();
	return e;
}

static bool
is_transient(CK_RV rv)
{
	return rv == CKR_DEVICE_ERROR || rv == CKR_FUNCTION_FAILED;
}

static bool
is_removal(CK_RV rv)
{
	return rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT;
}

bool
hw_is_stale_handle(CK_RV rv)
{
	return rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID ||
	       rv == CKR_WRAPPING_KEY_HANDLE_INVALID || rv == CKR_UNWRAPPING_KEY_HANDLE_INVALID;
}

static hw_err
removed_error(CK_RV rv, const char *what)
{
	return hw_fail(HW_ERR_DEVICE, rv, "%s: the token was removed (%s, CK_RV 0x%lx)", what,
	               p11_kit_strerror(rv), (unsigned long)rv);
}

/* Retry budgets per kind of failure; see hw_ctx_run in internal.h. */
#define MAX_SESSION_RECOVERIES 2
#define MAX_LOGIN_RECOVERIES 1
#define MAX_TRANSIENT_RETRIES 2
#define MAX_REMOVAL_RETRIES 1

static hw_err
run_attempts(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what, unsigned flags)
{
	bool login = flags & RUN_LOGIN, once = flags & RUN_ONCE;
	unsigned sess = 0, relogin = 0, transient = 0, removal = 0, stale = 0;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	sess_tag tag;
	CK_RV rv = CKR_OK;
	hw_err e;

	for (;;) {
		e = ready_locked(ctx);
		if (e != HW_OK)
			return e;
		e = session_get(ctx, login, &s, &tag, &rv);
		if (e != HW_OK) {
			/* Opening a session did nothing on the token: safe to retry. */
			if (is_removal(rv) && removal++ < MAX_REMOVAL_RETRIES) {
				token_lost(ctx, tag);
				continue;
			}
			if (is_removal(rv))
				return removed_error(rv, "C_OpenSession");
			if (is_transient(rv) && transient < MAX_TRANSIENT_RETRIES) {
				backoff(transient++);
				continue;
			}
			return e;
		}
		rv = op(ctx, s, arg);
		if (rv == CKR_OK || rv == HW_CKR_HWERR) {
			session_put(ctx, s, tag);
			return rv == CKR_OK ? HW_OK : op_err;
		}
		if (hw_is_stale_handle(rv) && stale++ == 0) {
			/* A cached key handle went stale: the token logged us out
			 * (which invalidates private handles on some tokens) or
			 * was replaced. Find the key again, logging in if needed. */
			pthread_mutex_lock(&ctx->lock);
			if (login && hw_session_check_login(ctx, s) != CKR_OK)
				ctx->logged_in = false;
			ctx->key_epoch++;
			pthread_mutex_unlock(&ctx->lock);
			session_put(ctx, s, tag);
			continue;
		}
		if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) {
			/* The token dropped it (restart, timeout): open another. */
			if (sess++ < MAX_SESSION_RECOVERIES)
				continue;
		} else if (rv == CKR_OPERATION_ACTIVE) {
			/* Left busy by an earlier failure: a fresh session. */
			session_replace(ctx, s, tag);
			if (sess++ < MAX_SESSION_RECOVERIES)
				continue;
			return hw_fail_ck(rv, what);
		} else if (rv == CKR_USER_NOT_LOGGED_IN && login) {
			pthread_mutex_lock(&ctx->lock);
			ctx->logged_in = false;
			pthread_mutex_unlock(&ctx->lock);
			session_put(ctx, s, tag);
			if (relogin++ < MAX_LOGIN_RECOVERIES)
				continue;
			return hw_fail_ck(rv, what);
		} else if (is_removal(rv)) {
			token_lost(ctx, tag);
			ctx->fl->C_CloseSession(s);
			if (!once && removal++ < MAX_REMOVAL_RETRIES)
				continue;
			return removed_error(rv, what);
		} else if (is_transient(rv)) {
			session_replace(ctx, s, tag);
			if (!once && transient < MAX_TRANSIENT_RETRIES) {
				backoff(transient++);
				continue;
			}
			return hw_fail_ck(rv, what);
		} else {
			session_replace(ctx, s, tag);
			return hw_fail_ck(rv, what);
		}
		return hw_fail_ck(rv, what);
	}
}

hw_err
hw_ctx_run(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what)
{
	return run(ctx, op, arg, what, RUN_LOGIN);
}

hw_err
hw_ctx_run_nologin(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what)
{
	return run(ctx, op, arg, what, 0);
}

hw_err
hw_ctx_run_once(hw_ctx *ctx, hw_op_fn op, void *arg, const char *what)
{
	return run(ctx, op, arg, what, RUN_LOGIN | RUN_ONCE);
}

static CK_RV
nop(hw_ctx *ctx, CK_SESSION_HANDLE s, void *arg)
{
	return CKR_OK;
}

HW_EXPORT hw_err
hw_ctx_login(hw_ctx *ctx)
{
	return hw_ctx_run(ctx, nop, NULL, "login");
}

HW_EXPORT const char *
hw_ctx_module_path(const hw_ctx *ctx)
{
	return ctx && ctx->mod ? ctx->mod->path : NULL;
}

HW_EXPORT const char *
hw_ctx_token_uri(const hw_ctx *ctx)
{
	return ctx && ctx->have_slot ? ctx->token_uri_str : NULL;
}

HW_EXPORT void
hw_ctx_free(hw_ctx *ctx)
{
	if (!ctx)
		return;
	hw_fork_unregister(&ctx->lock);
	if (ctx->mod && ctx->gen == hw_fork_generation()) {
		hw_calls_enter();
		for (size_t i = 0; i < ctx->nidle; i++)
			ctx->fl->C_CloseSession(ctx->idle[i]);
		hw_calls_leave();
	}
	/* Logout is left to C_Finalize: another context in this process may
	 * share the login, which PKCS#11 keeps per application and token. */
	hw_module_release(ctx->mod);
	if (ctx->token_uri)
		p11_kit_uri_free(ctx->token_uri);
	hw_secmem_free(ctx->pin);
	free(ctx->idle);
	free(ctx->mechs);
	free(ctx->module_spec);
	free(ctx->module_init_args);
	free(ctx->token_spec);
	free(ctx->token_shown);
	free(ctx->pin_source);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

/* Capabilities (token/caps.c reads them off the token when it is selected). */
hw_err
hw_ctx_require(hw_ctx *ctx, unsigned needs, const char *what)
{
	unsigned missing;
	hw_err e;

	if ((e = hw_ctx_ready(ctx)) != HW_OK)
		return e;
	missing = needs & ~ctx->caps;
	if (!missing)
		return HW_OK;
	for (unsigned i = 0; hw_cap_needs(i); i++)
		if (missing & (1u << i))
			return hw_fail(HW_ERR_UNSUPPORTED, 0, "%s: the token '%.*s' (%.*s) has no %s",
			               what,
			               (int)p11_kit_space_strlen(ctx->tinfo.label,
			                                         sizeof(ctx->tinfo.label)),
			               (const char *)ctx->tinfo.label,
			               (int)p11_kit_space_strlen(ctx->tinfo.model,
			                                         sizeof(ctx->tinfo.model)),
			               (const char *)ctx->tinfo.model, hw_cap_needs(i));
	return HW_OK;
}

bool
hw_ctx_can(hw_ctx *ctx, unsigned cap)
{
	return (ctx->caps & cap) == cap;
}
