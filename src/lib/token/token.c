/* Slots and tokens: listing with capabilities, and initialisation. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

static void
copy_padded(char *dst, size_t dstsz, const unsigned char *src, size_t srclen)
{
	size_t n = p11_kit_space_strlen(src, srclen);
	if (n >= dstsz)
		n = dstsz - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static unsigned
slot_caps(CK_FUNCTION_LIST *fl, CK_SLOT_ID slot, const CK_TOKEN_INFO *ti)
{
	CK_MECHANISM_TYPE *m = NULL;
	CK_ULONG n = 0;
	unsigned c;

	if (fl->C_GetMechanismList(slot, NULL, &n) != CKR_OK || n == 0 ||
	    !(m = calloc(n, sizeof(*m))) || fl->C_GetMechanismList(slot, m, &n) != CKR_OK)
		n = 0;
	c = hw_caps_of(m, n, ti);
	free(m);
	return c;
}

static void
token_uri(const CK_TOKEN_INFO *ti, char *out, size_t outsz)
{
	P11KitUri *u = p11_kit_uri_new();
	char *s = NULL;

	out[0] = '\0';
	if (!u)
		return;
	*p11_kit_uri_get_token_info(u) = *ti;
	if (p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s) == P11_KIT_URI_OK && s)
		snprintf(out, outsz, "%s", s);
	free(s);
	p11_kit_uri_free(u);
}

static hw_err
slot_list(hw_ctx *ctx, CK_BBOOL present, CK_SLOT_ID **slots, CK_ULONG *n)
{
	CK_RV rv;

	*slots = NULL;
	*n = 0;
	rv = ctx->fl->C_GetSlotList(present, NULL, n);
	if (rv == CKR_OK && *n > 0) {
		*slots = calloc(*n, sizeof(**slots));
		if (!*slots)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		rv = ctx->fl->C_GetSlotList(present, *slots, n);
	}
	if (rv != CKR_OK) {
		free(*slots);
		*slots = NULL;
		return hw_fail_ck(rv, "C_GetSlotList");
	}
	return HW_OK;
}

/* On success returns with the call lock held: release with hw_calls_leave(). */
static hw_err
enter_module(hw_ctx *ctx)
{
	hw_err e;

	if (!ctx)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no context");
	e = hw_ctx_open(ctx);
	if (e != HW_OK)
		return e;
	hw_calls_enter();
	e = hw_module_ensure(ctx->mod);
	if (e != HW_OK)
		hw_calls_leave();
	return e;
}

/* C_GetTokenInfo reads the token's record: under the shared I/O lock
 * (token/module.c says why). */
static CK_RV
token_info(hw_ctx *ctx, CK_SLOT_ID slot, CK_TOKEN_INFO *ti)
{
	int fd = hw_module_io_lock(ctx->mod, false);
	CK_RV rv = ctx->fl->C_GetTokenInfo(slot, ti);

	hw_module_io_unlock(fd);
	return rv;
}

HW_EXPORT hw_err
hw_token_list(hw_ctx *ctx, hw_token_info **list, size_t *count)
{
	CK_SLOT_ID *slots;
	CK_ULONG n;
	hw_token_info *v;
	hw_err e;

	if (!list || !count)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_token_list");
	e = enter_module(ctx);
	if (e != HW_OK)
		return e;
	e = slot_list(ctx, CK_FALSE, &slots, &n);
	if (e != HW_OK) {
		hw_calls_leave();
		return e;
	}
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		hw_calls_leave();
		free(slots);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (CK_ULONG i = 0; i < n; i++) {
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;
		hw_token_info *t = &v[i];

		t->slot_id = slots[i];
		if (ctx->fl->C_GetSlotInfo(slots[i], &si) != CKR_OK)
			continue;
		copy_padded(t->slot_description, sizeof(t->slot_description),
		            si.slotDescription, sizeof(si.slotDescription));
		t->token_present = (si.flags & CKF_TOKEN_PRESENT) != 0;
		if (!t->token_present || token_info(ctx, slots[i], &ti) != CKR_OK)
			continue;
		t->token_initialized = (ti.flags & CKF_TOKEN_INITIALIZED) != 0;
		t->user_pin_initialized = (ti.flags & CKF_USER_PIN_INITIALIZED) != 0;
		t->login_required = (ti.flags & CKF_LOGIN_REQUIRED) != 0;
		copy_padded(t->label, sizeof(t->label), ti.label, sizeof(ti.label));
		copy_padded(t->manufacturer, sizeof(t->manufacturer), ti.manufacturerID,
		            sizeof(ti.manufacturerID));
		copy_padded(t->model, sizeof(t->model), ti.model, sizeof(ti.model));
		copy_padded(t->serial, sizeof(t->serial), ti.serialNumber, sizeof(ti.serialNumber));
		if (ti.ulFreePublicMemory != CK_UNAVAILABLE_INFORMATION &&
		    ti.ulFreePublicMemory != CK_EFFECTIVELY_INFINITE)
			t->free_objects_hint = ti.ulFreePublicMemory;
		token_uri(&ti, t->uri, sizeof(t->uri));
		t->caps = slot_caps(ctx->fl, slots[i], &ti);
	}
	hw_calls_leave();
	free(slots);
	*list = v;
	*count = n;
	return HW_OK;
}

static hw_err
read_pin(hw_ctx *ctx, const char *source, const char *what, char *pin, size_t *len)
{
	return hw_pin_read(source, what, ctx->pin_cb, ctx->pin_cb_arg, pin, HW_PIN_MAX, len);
}

/* PKCS#11 labels are 32 bytes, space padded, no terminator. */
static void
pad_label(CK_UTF8CHAR out[32], const char *label)
{
	size_t n = strlen(label);
	memset(out, ' ', 32);
	memcpy(out, label, n > 32 ? 32 : n);
}

static hw_err
find_by_label(hw_ctx *ctx, const CK_UTF8CHAR padded[32], CK_SLOT_ID *out, bool *found)
{
	CK_SLOT_ID *slots;
	CK_ULONG n;
	CK_TOKEN_INFO ti;
	hw_err e = slot_list(ctx, CK_TRUE, &slots, &n);

	*found = false;
	if (e != HW_OK)
		return e;
	for (CK_ULONG i = 0; i < n; i++) {
		if (token_info(ctx, slots[i], &ti) == CKR_OK &&
		    (ti.flags & CKF_TOKEN_INITIALIZED) && memcmp(ti.label, padded, 32) == 0) {
			*out = slots[i];
			*found = true;
			break;
		}
	}
	free(slots);
	return HW_OK;
}

static hw_err init_locked(hw_ctx *ctx, const char *label, const char *so_src,
                          const char *user_src, unsigned long *slot_out);

HW_EXPORT hw_err
hw_token_init(hw_ctx *ctx, const char *label, const char *so_src, const char *user_src,
              unsigned long *slot_out)
{
	hw_err e;


	if (!label || !*label || strlen(label) > 32)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "token label must be 1 to 32 bytes");
	e = enter_module(ctx);
	if (e != HW_OK)
		return e;
	e = init_locked(ctx, label, so_src, user_src, slot_out);
	hw_calls_leave();
	return e;
}

static hw_err
init_locked(hw_ctx *ctx, const char *label, const char *so_src, const char *user_src,
            unsigned long *slot_out)
{
	/* Not on the stack: a core dump or swap must not see either PIN. */
	char *so = hw_secmem_alloc(HW_PIN_MAX), *user = hw_secmem_alloc(HW_PIN_MAX);
	size_t so_len = 0, user_len = 0;
	CK_UTF8CHAR padded[32];
	CK_SLOT_ID *slots = NULL, slot = 0;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_ULONG n;
	CK_TOKEN_INFO ti;
	bool have = false, exists;
	CK_RV rv;
	hw_err e;
	int fd;

	if (!so || !user) {
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
		goto out;
	}
	pad_label(padded, label);
	e = find_by_label(ctx, padded, &slot, &exists);
	if (e != HW_OK)
		goto out;
	if (exists) {
		e = hw_fail(HW_ERR_KEY_EXISTS, 0, "a token labelled '%s' already exists", label);
		goto out;
	}

	e = slot_list(ctx, CK_TRUE, &slots, &n);
	if (e != HW_OK)
		goto out;
	for (CK_ULONG i = 0; i < n && !have; i++) {
		if (token_info(ctx, slots[i], &ti) == CKR_OK &&
		    !(ti.flags & CKF_TOKEN_INITIALIZED)) {
			slot = slots[i];
			have = true;
		}
	}
	free(slots);
	if (!have) {
		e = hw_fail(HW_ERR_NO_FREE_SLOT, 0, "module %s", ctx->mod->path);
		goto out;
	}

	e = read_pin(ctx, so_src ? so_src : "prompt", "security officer PIN", so, &so_len);
	if (e == HW_OK)
		e = read_pin(ctx, user_src ? user_src : (ctx->pin_source ? ctx->pin_source : "prompt"),
		             "new user PIN", user, &user_len);
	if (e != HW_OK)
		goto out;

	/* Each of these rewrites the token's record (token/module.c). */
	fd = hw_module_io_lock(ctx->mod, true);
	rv = ctx->fl->C_InitToken(slot, (CK_UTF8CHAR *)so, so_len, padded);
	if (rv != CKR_OK) {
		hw_module_io_unlock(fd);
		e = hw_fail_ck(rv, "C_InitToken");
		goto out;
	}
	rv = ctx->fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv == CKR_OK)
		rv = ctx->fl->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so, so_len);
	if (rv == CKR_OK) {
		rv = ctx->fl->C_InitPIN(s, (CK_UTF8CHAR *)user, user_len);
		ctx->fl->C_Logout(s);
	}
	if (s != CK_INVALID_HANDLE)
		ctx->fl->C_CloseSession(s);
	hw_module_io_unlock(fd);
	if (rv != CKR_OK) {
		e = hw_fail_ck(rv, "setting the user PIN");
		goto out;
	}
	/* Some modules (SoftHSMv2) move a token to a new slot id once it is
	 * initialised: report where it is now. */
	e = find_by_label(ctx, padded, &slot, &exists);
	if (e == HW_OK && slot_out)
		*slot_out = slot;
out:
	hw_secmem_free(so);
	hw_secmem_free(user);
	return e;
}
