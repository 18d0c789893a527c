#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/crypto.h>

/* Like errno: per thread, so concurrent callers do not see each other's. */
static _Thread_local unsigned long last_ckrv;
static _Thread_local char last_detail[256];

static const struct {
	const char *name;
	const char *text;
} errs[] = {
	[HW_OK] = { "HW_OK", "success" },
	[HW_ERR_INVALID_ARG] = { "HW_ERR_INVALID_ARG", "invalid argument" },
	[HW_ERR_NOMEM] = { "HW_ERR_NOMEM", "out of memory" },
	[HW_ERR_MODULE] = { "HW_ERR_MODULE", "the PKCS#11 module could not be loaded" },
	[HW_ERR_TOKEN_NOT_FOUND] = { "HW_ERR_TOKEN_NOT_FOUND", "no token matches the token URI (is the HSM connected and the URI right?)" },
	[HW_ERR_TOKEN_AMBIGUOUS] = { "HW_ERR_TOKEN_AMBIGUOUS", "more than one token matches; name it by token= and serial=" },
	[HW_ERR_URI] = { "HW_ERR_URI", "malformed pkcs11: URI" },
	[HW_ERR_PIN_SOURCE] = { "HW_ERR_PIN_SOURCE", "the PIN could not be read from its source" },
	[HW_ERR_PIN_INCORRECT] = { "HW_ERR_PIN_INCORRECT", "incorrect PIN" },
	[HW_ERR_PIN_LOCKED] = { "HW_ERR_PIN_LOCKED", "the PIN is locked after too many failures; the security officer must reset it" },
	[HW_ERR_KEY_NOT_FOUND] = { "HW_ERR_KEY_NOT_FOUND", "no such key on the token" },
	[HW_ERR_KEY_EXISTS] = { "HW_ERR_KEY_EXISTS", "a key with this label already exists" },
	[HW_ERR_KEY_AMBIGUOUS] = { "HW_ERR_KEY_AMBIGUOUS", "more than one key matches; name it by id" },
	[HW_ERR_KEY_PURPOSE] = { "HW_ERR_KEY_PURPOSE", "the key's purpose does not allow this operation" },
	[HW_ERR_WRONG_KEY] = { "HW_ERR_WRONG_KEY", "the data was protected with a different key" },
	[HW_ERR_FORMAT] = { "HW_ERR_FORMAT", "malformed or truncated input" },
	[HW_ERR_INTEGRITY] = { "HW_ERR_INTEGRITY", "integrity check failed: the data was altered, or the context or key is wrong" },
	[HW_ERR_TOO_LARGE] = { "HW_ERR_TOO_LARGE", "input too large" },
	[HW_ERR_UNSUPPORTED] = { "HW_ERR_UNSUPPORTED", "the token does not support a mechanism hsmwrap needs" },
	[HW_ERR_HSM] = { "HW_ERR_HSM", "the HSM reported an error" },
	[HW_ERR_DEVICE] = { "HW_ERR_DEVICE", "the token was removed or the device failed" },
	[HW_ERR_IO] = { "HW_ERR_IO", "input/output error" },
	[HW_ERR_CRYPTO] = { "HW_ERR_CRYPTO", "host cryptography (OpenSSL) failed" },
	[HW_ERR_CANCELLED] = { "HW_ERR_CANCELLED", "PIN entry cancelled" },
	[HW_ERR_NOT_LOGGED_IN] = { "HW_ERR_NOT_LOGGED_IN", "not logged in to the token" },
	[HW_ERR_NO_FREE_SLOT] = { "HW_ERR_NO_FREE_SLOT", "no slot with an uninitialised token is free" },
	[HW_ERR_KEY_DISABLED] = { "HW_ERR_KEY_DISABLED", "key disabled: it may not be used until it is enabled again" },
	[HW_ERR_KEY_PENDING_DELETION] = { "HW_ERR_KEY_PENDING_DELETION", "the key is pending deletion: it may not be used (cancel the deletion to keep it)" },
};

#define NERRS (sizeof(errs) / sizeof(errs[0]))

HW_EXPORT const char *
hw_strerror(hw_err err)
{
	if ((unsigned)err >= NERRS || !errs[err].text)
		return "unknown error";
	return errs[err].text;
}

HW_EXPORT const char *
hw_errname(hw_err err)
{
	if ((unsigned)err >= NERRS || !errs[err].name)
		return "HW_ERR_UNKNOWN";
	return errs[err].name;
}

HW_EXPORT unsigned long
hw_last_ckrv(void)
{
	return last_ckrv;
}

HW_EXPORT const char *
hw_last_detail(void)
{
	return last_detail;
}

void
hw_clear_error(void)
{
	last_ckrv = 0;
	last_detail[0] = '\0';
}

hw_err
hw_fail(hw_err err, unsigned long ckrv, const char *fmt, ...)
{
	va_list ap;

	last_ckrv = ckrv;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(last_detail, sizeof(last_detail), fmt, ap);
		va_end(ap);
	} else {
		last_detail[0] = '\0';
	}
	return err;
}

hw_err
hw_err_from_ckrv(CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
		return HW_OK;
	case CKR_HOST_MEMORY:
		return HW_ERR_NOMEM;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		return HW_ERR_PIN_INCORRECT;
	case CKR_PIN_LOCKED:
		return HW_ERR_PIN_LOCKED;
	case CKR_USER_NOT_LOGGED_IN:
		return HW_ERR_NOT_LOGGED_IN;
	case CKR_ENCRYPTED_DATA_INVALID:
	case CKR_ENCRYPTED_DATA_LEN_RANGE:
	case CKR_WRAPPED_KEY_INVALID:
	case CKR_WRAPPED_KEY_LEN_RANGE:
	case CKR_AEAD_DECRYPT_FAILED:
		return HW_ERR_INTEGRITY;
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_NOT_WRAPPABLE:
	case CKR_KEY_UNEXTRACTABLE:
	case CKR_WRAPPING_KEY_TYPE_INCONSISTENT:
	case CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT:
		return HW_ERR_KEY_PURPOSE;
	case CKR_MECHANISM_INVALID:
	case CKR_FUNCTION_NOT_SUPPORTED:
		return HW_ERR_UNSUPPORTED;
	case CKR_DEVICE_REMOVED:
	case CKR_DEVICE_ERROR:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
		return HW_ERR_DEVICE;
	case CKR_DATA_LEN_RANGE:
		return HW_ERR_TOO_LARGE;
	default:
		return HW_ERR_HSM;
	}
}

hw_err
hw_fail_ck(CK_RV rv, const char *what)
{
	return hw_fail(hw_err_from_ckrv(rv), rv, "%s: %s (CK_RV 0x%lx)", what,
	               p11_kit_strerror(rv), (unsigned long)rv);
}

HW_EXPORT void
hw_free(void *p)
{
	free(p);
}

HW_EXPORT void
hw_free_secret(void *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

HW_EXPORT const char *
hw_version(void)
{
	return PACKAGE_VERSION;
}
