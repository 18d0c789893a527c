/*
 * Keys as callers see them (include/hsmwrap.h): a plain label names the
 * logical key, i.e. its current version; a key is born with its lifecycle
 * record and leaves with its certificate and its place in that record;
 * and every use of a key first asks its state (key/state.c). The token
 * objects underneath are key/key.c.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

HW_EXPORT hw_err
hw_key_find(hw_ctx *ctx, const char *spec, hw_key **out)
{
	bool by_label = false;
	hw_err e = hw_key_find_object(ctx, spec, &by_label, out);

	if (e != HW_OK)
		return e;
	/* A URI or id names one object exactly (how blobs and messages find the
	 * version they were made with); a plain label names the logical key,
	 * that is its current version. */
	e = hw_key_identify(out, by_label);
	if (e != HW_OK) {
		hw_key_free(*out);
		*out = NULL;
	}
	return e;
}

/* Every use of a key comes here: a disabled or deleted key does nothing. */
CK_RV
hw_key_handle_ck(hw_key *key, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h)
{
	CK_RV rv = hw_key_state_check(key, s);

	if (rv != CKR_OK)
		return rv;
	return hw_key_handle_raw(key, s, h);
}

hw_err
hw_key_handle(hw_key *key, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *h)
{
	CK_RV rv = hw_key_handle_ck(key, s, h);

	if (rv == HW_CKR_HWERR)
		return HW_ERR_KEY_NOT_FOUND;
	if (rv != CKR_OK)
		return hw_fail_ck(rv, "finding the key again");
	return HW_OK;
}

/* ---------------------------------------------------------------- */
/* Generation                                                        */

HW_EXPORT hw_err
hw_key_generate(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose,
                hw_key **out)
{
	return hw_key_generate_opts(ctx, label, type, purpose, 0, out);
}

static hw_err generate_locked(hw_ctx *ctx, const char *label, hw_key_type type,
                              hw_purpose purpose, unsigned flags, hw_key **out);

HW_EXPORT hw_err
hw_key_generate_opts(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose,
                     unsigned flags, hw_key **out)
{
	hw_key *key = NULL;
	bool aes = type == HW_KEY_AES256;
	hw_err e;

	if (!ctx || !label || !*label || strlen(label) > 128)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "a key label of 1 to 128 bytes is required");
	if (hw_label_is_version(label, NULL, NULL))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "labels ending in '#' and a number of 2 or more "
		               "name key versions (as made by key rotate): '%s' cannot be a new key's "
		               "label", label);
	if (type < HW_KEY_AES256 || type > HW_KEY_RSA4096_PSS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown key type");
	if (aes ? purpose != HW_PURPOSE_ENVELOPE && purpose != HW_PURPOSE_KEYWRAP
	        : purpose != HW_PURPOSE_SIGN &&
	          !(purpose == HW_PURPOSE_DECRYPT && hw_key_type_is_rsa(type) &&
	            !hw_key_type_is_pss(type)) &&
	          !(purpose == HW_PURPOSE_DERIVE && hw_key_type_is_ec(type)))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "purpose %s does not fit a %s key",
		               hw_purpose_name(purpose), hw_key_type_name(type));
	hw_clear_error();
	e = hw_ctx_ready(ctx);
	if (e != HW_OK)
		return e;
	{
		unsigned needs = !aes ? (hw_key_type_is_eddsa(type) ? HW_CAP_EDDSA_GEN
		                         : hw_key_type_is_ec(type)
		                         ? HW_CAP_EC_GEN |
		                           (purpose == HW_PURPOSE_SIGN ? HW_CAP_ECDSA : 0u)
		                         : purpose == HW_PURPOSE_SIGN ? HW_CAP_RSA_GEN | HW_CAP_RSA_PSS
		                         : HW_CAP_RSA_GEN)
		               : purpose == HW_PURPOSE_KEYWRAP ? HW_CAP_AES_GEN | HW_CAP_AES_KWP
		               : HW_CAP_AES_GEN | HW_CAP_AES_GCM;
		/* A backup-able key is only worth making where backups work. */
		if (flags & HW_KEYGEN_BACKUPABLE)
			needs |= HW_CAP_DATA_OBJECTS | HW_CAP_AES_KWP;
		if ((e = hw_ctx_require(ctx, needs, "creating the key")) != HW_OK)
			return e;
	}
	/* Two processes making one label would both find it free. */
	if ((e = hw_token_lock(ctx)) != HW_OK)
		return e;
	e = generate_locked(ctx, label, type, purpose, flags, &key);
	hw_token_unlock();
	if (e != HW_OK)
		return e;
	if (out)
		*out = key;
	else
		hw_key_free(key);
	return HW_OK;
}

static hw_err
generate_locked(hw_ctx *ctx, const char *label, hw_key_type type, hw_purpose purpose,
                unsigned flags, hw_key **out)
{
	uint8_t id[HW_ID_LEN];
	hw_key *existing = NULL, *key = NULL;
	hw_err e;

	e = hw_key_find(ctx, label, &existing);
	if (e == HW_OK || e == HW_ERR_KEY_AMBIGUOUS) {
		hw_key_free(existing);
		return hw_fail(HW_ERR_KEY_EXISTS, 0, "%s", label);
	}
	if (e != HW_ERR_KEY_NOT_FOUND)
		return e;
	hw_clear_error();

	if (flags & ~(unsigned)(HW_KEYGEN_BACKUPABLE | HW_KEYGEN_RAW_RSA))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown key generation flags");
	if ((flags & HW_KEYGEN_RAW_RSA) && purpose != HW_PURPOSE_DECRYPT)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "raw RSA is an option of decrypt keys only");
	e = hw_key_gen_object(ctx, label, type, purpose, flags, id, &key);
	/* The lifecycle metadata goes with the key, or the key goes: no
	 * half-made keys. */
	if (e == HW_OK && (e = hw_meta_create(key, purpose)) != HW_OK)
		e = hw_key_destroy_after(key, e, "key");
	if (e != HW_OK) {
		hw_key_free(key);
		return e;
	}
	*out = key;
	return HW_OK;
}


/* ---------------------------------------------------------------- */
/* Destroy                                                           */

HW_EXPORT hw_err
hw_key_destroy(hw_key *key)
{
	hw_err e;

	if (!key)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "no key");
	/* Which logical key it belongs to is read while the object is there. */
	if ((e = hw_key_identify(&key, false)) != HW_OK)
		return e;
	/* A certificate stored next to a key pair (ca init) names a key that
	 * no longer exists once the pair is gone: it goes first. */
	if (key->cls == CKO_PRIVATE_KEY && (e = hw_cert_destroy(key)) != HW_OK)
		return e;
	e = hw_key_destroy_object(key);
	if (e == HW_OK)
		e = hw_meta_forget(key);
	return e;
}

hw_err
hw_key_destroy_after(hw_key *key, hw_err e, const char *what)
{
	char detail[256];
	unsigned long ckrv = hw_last_ckrv();
	hw_err d;

	snprintf(detail, sizeof(detail), "%s", hw_last_detail());
	d = hw_key_destroy(key);
	return hw_fail(e, ckrv, "%s%s%s%s", detail,
	               d == HW_OK ? " (the new " : " (and destroying the new ", what,
	               d == HW_OK ? " was destroyed again)" : " failed too)");
}
