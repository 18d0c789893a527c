/*
 * What a token can do for hsmwrap, in one place.
 *
 * A capability is a mechanism (any one of a short list) or a behaviour no
 * mechanism list reveals. Behaviours come from the quirk table, keyed by
 * the token's manufacturer and model; everything else from
 * C_GetMechanismList. A feature is what a user asks for (envelope keys,
 * rotation, ...) and needs a set of capabilities. Supporting a new token
 * is a line in quirks[] at most; a new feature is a line in features[].
 *
 * A feature a token lacks is refused before anything is done on the
 * token (hw_ctx_require), with an error naming the token and what it
 * lacks, and `token list` shows each token's features.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	const char *needs;          /* what is missing, for error messages */
	CK_MECHANISM_TYPE mech[2];  /* any one suffices */
	unsigned nmech;             /* 0: not a mechanism (a flag or quirk) */
} caps[] = {
	{ "aes-keygen", "CKM_AES_KEY_GEN", { CKM_AES_KEY_GEN }, 1 },
	{ "aes-gcm", "CKM_AES_GCM", { CKM_AES_GCM }, 1 },
	{ "aes-kwp", "CKM_AES_KEY_WRAP_KWP (RFC 5649)",
	  { CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD }, 2 },
	{ "rsa-keygen", "CKM_RSA_PKCS_KEY_PAIR_GEN", { CKM_RSA_PKCS_KEY_PAIR_GEN }, 1 },
	{ "rsa-pss", "CKM_RSA_PKCS_PSS", { CKM_RSA_PKCS_PSS }, 1 },
	{ "ec-keygen", "CKM_EC_KEY_PAIR_GEN", { CKM_EC_KEY_PAIR_GEN }, 1 },
	{ "ecdsa", "CKM_ECDSA", { CKM_ECDSA }, 1 },
	{ "random", "a random number generator (CKF_RNG)", { 0 }, 0 },
	{ "data-objects", "private token data objects (CKO_DATA)", { 0 }, 0 },
	{ "allowed-mechanisms", "CKA_ALLOWED_MECHANISMS", { 0 }, 0 },
	{ "eddsa-keygen", "CKM_EC_EDWARDS_KEY_PAIR_GEN", { CKM_EC_EDWARDS_KEY_PAIR_GEN }, 1 },
};
#define NCAPS (sizeof(caps) / sizeof(caps[0]))

/*
 * Behaviours measured on real tokens, by CK_TOKEN_INFO manufacturerID and
 * model (prefix match; NULL matches any).
 */
static const struct {
	const char *manufacturer, *model;
	unsigned lacks;
} quirks[] = {
	/* NSS softokn 3.87: C_CreateObject refuses token and private data
	 * objects (CKR_ATTRIBUTE_VALUE_INVALID), and C_GenerateKey fails with
	 * CKR_GENERAL_ERROR when given CKA_ALLOWED_MECHANISMS. */
	{ "Mozilla Foundation", "NSS", HW_CAP_DATA_OBJECTS | HW_CAP_ALLOWED_MECHS },
};

static const struct {
	const char *name;
	unsigned needs;
} features[] = {
	/* key create aes256, encrypt/decrypt, datakey, TDE keyring */
	{ "envelope", HW_CAP_AES_GEN | HW_CAP_AES_GCM },
	/* keywrap keys, wrap/unwrap, key import */
	{ "keywrap", HW_CAP_AES_GEN | HW_CAP_AES_KWP },
	{ "rsa-sign", HW_CAP_RSA_GEN | HW_CAP_RSA_PSS },
	{ "ec-sign", HW_CAP_EC_GEN | HW_CAP_ECDSA },
	/* versions, rotation, enable/disable, deletion, tags, descriptions */
	{ "lifecycle", HW_CAP_DATA_OBJECTS },
	/* backup create/restore: the share record is a data object */
	{ "backup", HW_CAP_DATA_OBJECTS | HW_CAP_AES_KWP },
	/* each key usable with one mechanism only (least privilege) */
	{ "mechanism-pinning", HW_CAP_ALLOWED_MECHS },
	{ "eddsa-sign", HW_CAP_EDDSA_GEN },
};
#define NFEATURES (sizeof(features) / sizeof(features[0]))

HW_EXPORT const char *
hw_cap_name(unsigned i)
{
	return i < NCAPS ? caps[i].name : NULL;
}

HW_EXPORT const char *
hw_feature_name(unsigned i)
{
	return i < NFEATURES ? features[i].name : NULL;
}

HW_EXPORT unsigned
hw_feature_needs(unsigned i)
{
	return i < NFEATURES ? features[i].needs : 0;
}

static bool
padded_prefix(const unsigned char *field, size_t n, const char *prefix)
{
	size_t len = strlen(prefix);

	return len <= n && memcmp(field, prefix, len) == 0;
}

unsigned
hw_caps_of(const CK_MECHANISM_TYPE *m, size_t n, const CK_TOKEN_INFO *ti)
{
	unsigned c = HW_CAP_DATA_OBJECTS | HW_CAP_ALLOWED_MECHS;

	for (unsigned i = 0; i < NCAPS; i++)
		for (size_t j = 0; j < n; j++)
			for (unsigned k = 0; k < caps[i].nmech; k++)
				if (m[j] == caps[i].mech[k])
					c |= 1u << i;
	if (ti->flags & CKF_RNG)
		c |= HW_CAP_RANDOM;
	for (size_t q = 0; q < sizeof(quirks) / sizeof(quirks[0]); q++)
		if ((!quirks[q].manufacturer ||
		     padded_prefix(ti->manufacturerID, sizeof(ti->manufacturerID),
		                   quirks[q].manufacturer)) &&
		    (!quirks[q].model ||
		     padded_prefix(ti->model, sizeof(ti->model), quirks[q].model)))
			c &= ~quirks[q].lacks;
	return c;
}

/* What cap bit i is, for error messages; NULL past the last. */
const char *
hw_cap_needs(unsigned i)
{
	return i < NCAPS ? caps[i].needs : NULL;
}
