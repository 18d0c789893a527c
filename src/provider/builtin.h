/*
 * The provider built into a program instead of loaded from hsmwrap.so.
 * The hsmwrap CLI adds it to a private library context and signs its CA
 * certificates and CRLs through it (tools/cmd-ca.c): OpenSSL builds and
 * signs the whole structure, and the ceremony exercises the provider.
 */
#ifndef HWP_BUILTIN_H
#define HWP_BUILTIN_H

#include <openssl/core.h>

#include "hsmwrap.h"

/* For OSSL_PROVIDER_add_builtin(libctx, "hsmwrap", hwp_builtin_init). */
OSSL_provider_init_fn hwp_builtin_init;

/*
 * The open context that provider instances started from now on use
 * instead of opening the token again: the program has already logged in.
 * It is borrowed, never freed by the provider, and must outlive the
 * library context. NULL: open one from the configuration, as hsmwrap.so.
 */
void hwp_builtin_lend(hw_ctx *ctx);

#endif
