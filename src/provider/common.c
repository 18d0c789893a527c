/*
 * The provider's lowest layer: errors raised through the core and the
 * lazily opened HSM context. Every other file of the provider calls down
 * into this one; provider.c (entry point and dispatch tables) sits on top
 * and nothing calls up into it:
 *
 *   common.c < keymgmt.c < store.c, decoder.c, signature.c, asym.c, ... < provider.c
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "provider.h"

/* ------------------------------------------------------------------ */
/* Errors                                                              */

void
hwp_raise(hwp_prov *p, int reason, const char *fmt, ...)
{
	va_list ap;

	if (!p || !p->new_error || !p->vset_error)
		return;
	p->new_error(p->handle);
	if (p->set_error_debug)
		p->set_error_debug(p->handle, __FILE__, __LINE__, HWP_NAME);
	va_start(ap, fmt);
	p->vset_error(p->handle, reason, fmt, ap);
	va_end(ap);
}

void
hwp_raise_hw(hwp_prov *p, hw_err e, const char *what)
{
	const char *d = hw_last_detail();
	unsigned long rv = hw_last_ckrv();

	/* The reason code is the hw_err itself: its string is hw_strerror(). */
	if (rv)
		hwp_raise(p, (int)e, "%s%s%s (CK_RV 0x%lx)", what, *d ? ": " : "", d, rv);
	else
		hwp_raise(p, (int)e, "%s%s%s", what, *d ? ": " : "", d);
}

#define HW_ERR_LAST HW_ERR_NO_FREE_SLOT
static OSSL_ITEM reasons[HW_ERR_LAST + 7 + 1];

static void
init_reasons(void)
{
	static const OSSL_ITEM own[] = {
		{ HWP_R_BAD_URI, "not a usable pkcs11: key URI" },
		{ HWP_R_NOT_SUPPORTED, "operation not supported by an HSM key" },
		{ HWP_R_BAD_REFERENCE, "corrupt hsmwrap key reference" },
		{ HWP_R_PRIVATE_EXPORT, "the private key stays in the HSM and cannot be exported" },
		{ HWP_R_WRONG_KEY_TYPE, "the key is of another type" },
		{ HWP_R_INTERNAL, "internal error in the hsmwrap provider" },
	};
	size_t n = 0;

	for (int e = 1; e <= HW_ERR_LAST; e++)
		reasons[n++] = (OSSL_ITEM){ (unsigned)e, (void *)hw_strerror((hw_err)e) };
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		reasons[n++] = own[i];
	reasons[n] = (OSSL_ITEM){ 0, NULL };
}

const OSSL_ITEM *
hwp_reasons(void *provctx)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, init_reasons);
	return reasons;
}

/* ------------------------------------------------------------------ */
/* The HSM context                                                     */

hw_ctx *
hwp_ctx(hwp_prov *p, const char *uri)
{
	hw_ctx *ctx = NULL;
	hw_err e;

	pthread_mutex_lock(&p->lock);
	if (p->ctx) {
		ctx = p->ctx;
		goto out;
	}
	/* Without a configured token the key URI's token attributes (and its
	 * module-path or pin-source, if any) select it: a key URI is a valid
	 * token URI, libhsmwrap ignores the object attributes there. */
	HWP_HSM_BEGIN();
	if ((e = hw_ctx_new(&ctx)) ||
	    (p->module && (e = hw_ctx_set_module(ctx, p->module))) ||
	    (p->module_init_args &&
	     (e = hw_ctx_set_module_init_args(ctx, p->module_init_args))) ||
	    ((p->token || uri) && (e = hw_ctx_set_token(ctx, p->token ? p->token : uri))) ||
	    (p->pin_source && (e = hw_ctx_set_pin_source(ctx, p->pin_source))) ||
	    (e = hw_ctx_open(ctx))) {
		HWP_HSM_END();
		hwp_raise_hw(p, e, "opening the HSM token");
		hw_ctx_free(ctx);
		ctx = NULL;
		goto out;
	}
	HWP_HSM_END();
	p->ctx = ctx;
out:
	pthread_mutex_unlock(&p->lock);
	return ctx;
}

