/*
 * Key management for HSM-held RSA and EC keys.
 *
 * A key object pairs the hw_key of the private half (which never leaves
 * the HSM) with a host copy of the public half. Everything public -- size,
 * group, default digest, the public components -- is answered from that
 * copy, so certificates can be matched against the key (EVP_PKEY_eq,
 * SSL_CTX_check_private_key) and the public key encoded by the default
 * provider. Export of the private half is refused: OpenSSL then uses this
 * provider's signature and decryption, and can never quietly move the
 * operation to a software key.
 *
 * Public-only objects exist too (new + import): OpenSSL 3.0 matches keys
 * of two providers by importing the other key's public half here.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/x509.h>

#include "provider.h"

/* Host-side helpers must never resolve to this provider again. */
#define NOT_US "provider!=" HWP_NAME

static hwp_key *
key_alloc(hwp_prov *p, int kind)
{
	hwp_key *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	atomic_init(&k->refs, 1);
	k->prov = p;
	k->kind = kind;
	return k;
}

void
hwp_key_unref(hwp_key *k)
{
	if (!k || atomic_fetch_sub(&k->refs, 1) != 1)
		return;
	hw_key_free(k->key);
	EVP_PKEY_free(k->pub);
	free(k);
}

const char *
hwp_key_type_name(const hwp_key *k)
{
	static const char *const names[] = {
		[HWP_RSA] = "RSA", [HWP_EC] = "EC", [HWP_ED25519] = "ED25519", [HWP_ED448] = "ED448",
	};

	return names[k->kind];
}

/* A provider key around an HSM key pair (taken over, freed on failure). */
static hwp_key *
key_wrap(hwp_prov *p, hw_key *key)
{
	uint8_t *der = NULL;
	const unsigned char *q;
	size_t len = 0;
	EVP_PKEY *pub = NULL;
	hwp_key *k = NULL;
	hw_err e;

	HWP_HSM_BEGIN();
	e = hw_key_public_der(key, &der, &len);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(p, e, "reading the key's public half");
		goto out;
	}
	q = der;
	pub = d2i_PUBKEY_ex(NULL, &q, (long)len, p->libctx, NOT_US);
	if (!pub) {
		hwp_raise(p, HWP_R_INTERNAL, "decoding the public key of '%s'", hw_key_label(key));
		goto out;
	}
	if (EVP_PKEY_is_a(pub, "RSA"))
		k = key_alloc(p, HWP_RSA);
	else if (EVP_PKEY_is_a(pub, "EC"))
		k = key_alloc(p, HWP_EC);
	else if (EVP_PKEY_is_a(pub, "ED25519"))
		k = key_alloc(p, HWP_ED25519);
	else if (EVP_PKEY_is_a(pub, "ED448"))
		k = key_alloc(p, HWP_ED448);
	else
		hwp_raise(p, HWP_R_WRONG_KEY_TYPE, "'%s' is not an RSA, EC or EdDSA key",
		          hw_key_label(key));
	if (k && k->kind == HWP_RSA) {
		hw_key_info ki;
		HWP_HSM_BEGIN();
		e = hw_key_info_get(key, &ki);
		HWP_HSM_END();
		if (e) {
			hwp_raise_hw(p, e, "reading the key's attributes");
			hwp_key_unref(k);
			k = NULL;
			goto out;
		}
		k->pss_only = ki.type == HW_KEY_RSA2048_PSS || ki.type == HW_KEY_RSA3072_PSS ||
		              ki.type == HW_KEY_RSA4096_PSS;
	}
	if (k) {
		k->key = key;
		k->pub = pub;
		key = NULL;
		pub = NULL;
	}
out:
	hw_free(der);
	EVP_PKEY_free(pub);
	hw_key_free(key);
	return k;
}

hwp_key *
hwp_key_open(hwp_prov *p, const char *uri)
{
	hw_ctx *ctx = hwp_ctx(p, uri);
	hw_key *key = NULL;
	hw_err e;

	if (!ctx)
		return NULL;
	HWP_HSM_BEGIN();
	e = hw_key_find(ctx, uri, &key);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(p, e, "finding the key");
		return NULL;
	}
	return key_wrap(p, key);
}

int
hwp_key_pass(hwp_key *k, OSSL_CALLBACK *cb, void *cbarg)
{
	int type = OSSL_OBJECT_PKEY;
	OSSL_PARAM params[4];
	hwp_key *ref = k;
	int ok;

	/* The reference is the address of our pointer; load() takes it over
	 * by clearing it, as OpenSSL's own providers do. */
	params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
	                                             (char *)hwp_key_type_name(k), 0);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &ref,
	                                              sizeof(ref));
	params[3] = OSSL_PARAM_construct_end();
	ok = cb(params, cbarg);
	hwp_key_unref(ref);
	return ok;
}

/* ------------------------------------------------------------------ */

static void *
km_load(const void *reference, size_t reference_sz)
{
	hwp_key *k;

	if (!reference || reference_sz != sizeof(k))
		return NULL;
	k = *(hwp_key *const *)reference;
	*(hwp_key **)reference = NULL;
	return k;
}

static void
km_free(void *kd)
{
	hwp_key_unref(kd);
}

static void *
km_dup(const void *kd, int selection)
{
	hwp_key *k = (hwp_key *)kd, *d;

	/* Immutable once built: sharing is a faithful copy. */
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) || !k->key) {
		atomic_fetch_add(&k->refs, 1);
		return k;
	}
	/* A copy without the private half must not carry the HSM handle:
	 * CMS builds an ECDH peer's key from ours (EVP_PKEY_copy_parameters,
	 * then the peer's point), so it becomes a soft key to be filled. */
	if (!k->pub || !(d = key_alloc(k->prov, k->kind)))
		return NULL;
	d->soft = 1;
	if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) {
		d->pub = EVP_PKEY_dup(k->pub);
		d->soft_pub = 1;
	} else if ((d->pub = EVP_PKEY_new()) && EVP_PKEY_copy_parameters(d->pub, k->pub) != 1) {
		EVP_PKEY_free(d->pub);
		d->pub = NULL;
	}
	if (!d->pub) {
		hwp_key_unref(d);
		return NULL;
	}
	return d;
}

static void *
rsa_new(void *provctx)
{
	return key_alloc(provctx, HWP_RSA);
}

static void *
ec_new(void *provctx)
{
	return key_alloc(provctx, HWP_EC);
}

static void *
ed25519_new(void *provctx)
{
	return key_alloc(provctx, HWP_ED25519);
}

static void *
ed448_new(void *provctx)
{
	return key_alloc(provctx, HWP_ED448);
}

static int
km_has(const void *kd, int selection)
{
	const hwp_key *k = kd;

	if (!k)
		return 0;
	if (k->soft)
		return !((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->soft_priv) &&
		       !((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && !k->soft_pub);
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !k->key)
		return 0;
	if ((selection & (OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)) &&
	    !k->pub)
		return 0;
	return 1;
}

static int
km_match(const void *kd1, const void *kd2, int selection)
{
	const hwp_key *a = kd1, *b = kd2;

	/* A private key is matched through its public half: a pair is one key. */
	if (!a || !b || !a->pub || !b->pub || a->kind != b->kind)
		return 0;
	return EVP_PKEY_eq(a->pub, b->pub) == 1;
}

static int
km_get_params(void *kd, OSSL_PARAM params[])
{
	hwp_key *k = kd;

	return k && k->pub && EVP_PKEY_get_params(k->pub, params);
}

/* What every key type reports of its size (the public half's). */
#define KM_SIZE_PARAMS                                             \
	OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),                    \
	OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),           \
	OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL)
/* The public key as an octet string, for EC and EdDSA alike. */
#define KM_PUBKEY_PARAMS                                                   \
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),  \
	OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0)
/* An EC key's group and how its points are written. */
#define EC_FORMAT_PARAMS                                                          \
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),                  \
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),                 \
	OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0)

static const OSSL_PARAM *
rsa_gettable(void *provctx)
{
	static const OSSL_PARAM t[] = {
		KM_SIZE_PARAMS,
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

static const OSSL_PARAM *
ec_gettable(void *provctx)
{
	static const OSSL_PARAM t[] = {
		KM_SIZE_PARAMS,
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
		KM_PUBKEY_PARAMS,
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_PUB_X, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_PUB_Y, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

static const OSSL_PARAM *
ed_gettable(void *provctx)
{
	static const OSSL_PARAM t[] = {
		KM_SIZE_PARAMS,
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_MANDATORY_DIGEST, NULL, 0),
		KM_PUBKEY_PARAMS,
		OSSL_PARAM_END
	};
	return t;
}

static int
km_export(void *kd, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
	hwp_key *k = kd;

	if (!k || !k->pub)
		return 0;
	/* A soft key is the default provider's to use: all of it goes. */
	if (k->soft)
		return EVP_PKEY_export(k->pub, selection, cb, cbarg);
	if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && k->key) {
		hwp_raise(k->prov, HWP_R_PRIVATE_EXPORT, "key '%s'", hw_key_label(k->key));
		return 0;
	}
	return EVP_PKEY_export(k->pub, selection & ~OSSL_KEYMGMT_SELECT_PRIVATE_KEY, cb, cbarg);
}

static int
km_import(void *kd, int selection, const OSSL_PARAM params[])
{
	hwp_key *k = kd;
	EVP_PKEY_CTX *pc;
	EVP_PKEY *pub = NULL;
	int ok;

	if (!k || k->pub || k->key)
		return 0;
	/* Software private keys belong to the default provider, not here. */
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) ||
	    OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY)) {
		hwp_raise(k->prov, HWP_R_NOT_SUPPORTED, "importing a software private key");
		return 0;
	}
	pc = EVP_PKEY_CTX_new_from_name(k->prov->libctx, hwp_key_type_name(k), NOT_US);
	ok = pc && EVP_PKEY_fromdata_init(pc) == 1 &&
	     EVP_PKEY_fromdata(pc, &pub, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) == 1;
	EVP_PKEY_CTX_free(pc);
	if (ok)
		k->pub = pub;
	return ok;
}

static const OSSL_PARAM *
rsa_types(int selection)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
		OSSL_PARAM_END
	};
	return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? t : NULL;
}

static const OSSL_PARAM *
ec_types(int selection)
{
	static const OSSL_PARAM t[] = {
		EC_FORMAT_PARAMS,
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_END
	};
	return (selection & (OSSL_KEYMGMT_SELECT_PUBLIC_KEY | OSSL_KEYMGMT_SELECT_ALL_PARAMETERS))
	       ? t : NULL;
}

static const OSSL_PARAM *
ed_types(int selection)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
		OSSL_PARAM_END
	};
	return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? t : NULL;
}

static const char *
ed25519_opname(int op)
{
	return op == OSSL_OP_SIGNATURE ? "ED25519" : NULL;
}

static const char *
ed448_opname(int op)
{
	return op == OSSL_OP_SIGNATURE ? "ED448" : NULL;
}

static const char *
rsa_opname(int op)
{
	return op == OSSL_OP_SIGNATURE || op == OSSL_OP_ASYM_CIPHER ? "RSA" : NULL;
}

static const char *
ec_opname(int op)
{
	/* ECDH: the key exchange of soft keys, done by the default provider. */
	return op == OSSL_OP_SIGNATURE ? "ECDSA" : op == OSSL_OP_KEYEXCH ? "ECDH" : NULL;
}

/* ------------------------------------------------------------------ */
/*
 * Software EC keys, made for OpenSSL by the default provider.
 *
 * An unqualified fetch ("EC", no properties) takes the first provider
 * that offers the algorithm. With hsmwrap activated before the default
 * provider that is this key manager, and libssl then dropped every NIST
 * curve it had learnt from the default provider (it keeps a TLS group
 * only if the group's key manager comes from the provider that announced
 * it): TLS 1.2 with an EC certificate failed with "no shared cipher",
 * TLS 1.3 with P-256 key shares with "no suitable key share". So this
 * provider announces the NIST groups itself and its EC key manager makes
 * the ephemeral keys libssl asks for: generation (and the parameters-only
 * key for a peer's share) is delegated to the default provider, the
 * result is held as a soft key, exported whole on request, and ECDH runs
 * in the default provider. HSM keys are unaffected.
 */
/*
 * Keys made on the token: openssl genpkey (or EVP_PKEY_generate) with
 * -pkeyopt hsmwrap-label:LABEL generates the pair in the HSM (see hsm_gen)
 * and returns the HSM key, whose PEM encoding is a key reference
 * (encoder.c); hsmwrap-purpose picks sign (the default), decrypt (RSA) or
 * derive (EC). Without a label, EC makes soft keys as above, and RSA and
 * EdDSA refuse rather than make a software key nobody asked for.
 */
typedef struct {
	hwp_prov *prov;
	int kind;
	EVP_PKEY_CTX *pc;           /* EC without a label: the soft key's maker */
	int keypair;
	char label[129];            /* non-empty: generate on the token */
	char purpose[16];
	char group[32];
	size_t bits;
} gen_ctx;

static void
gen_cleanup(void *vg)
{
	gen_ctx *g = vg;

	if (g) {
		EVP_PKEY_CTX_free(g->pc);
		free(g);
	}
}

/* copy_utf8 P BUF: the parameter's string into BUF, refused if too long. */
#define copy_utf8(p, buf) \
	(OSSL_PARAM_get_utf8_string_ptr((p), &str) && strlen(str) < sizeof(buf) && \
	 strcpy((buf), str))

static int
gen_set_params(void *vg, const OSSL_PARAM params[])
{
	gen_ctx *g = vg;
	const char *str;

	for (const OSSL_PARAM *p = params; p && p->key; p++) {
		if (!strcmp(p->key, HWP_GEN_LABEL)) {
			if (!copy_utf8(p, g->label))
				return 0;
		} else if (!strcmp(p->key, HWP_GEN_PURPOSE)) {
			if (!copy_utf8(p, g->purpose))
				return 0;
		} else if (!strcmp(p->key, OSSL_PKEY_PARAM_GROUP_NAME)) {
			if (!copy_utf8(p, g->group))
				return 0;
		} else if (!strcmp(p->key, OSSL_PKEY_PARAM_RSA_BITS)) {
			if (!OSSL_PARAM_get_size_t(p, &g->bits))
				return 0;
		} else if (g->kind != HWP_EC) {
			hwp_raise(g->prov, HWP_R_NOT_SUPPORTED, "key generation parameter '%s'",
			          p->key);
			return 0;
		}
	}
	/* The soft EC key's maker takes what it knows and ignores ours. */
	return !g->pc || !params || EVP_PKEY_CTX_set_params(g->pc, params) == 1;
}

#define GEN_HSM_PARAMS \
	OSSL_PARAM_utf8_string(HWP_GEN_LABEL, NULL, 0), \
	OSSL_PARAM_utf8_string(HWP_GEN_PURPOSE, NULL, 0)

static const OSSL_PARAM *
ec_gen_settable(void *vg, void *provctx)
{
	static const OSSL_PARAM t[] = {
		EC_FORMAT_PARAMS,
		GEN_HSM_PARAMS,
		OSSL_PARAM_END
	};
	return t;
}

static const OSSL_PARAM *
rsa_gen_settable(void *vg, void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_size_t(OSSL_PKEY_PARAM_RSA_BITS, NULL),
		GEN_HSM_PARAMS,
		OSSL_PARAM_END
	};
	return t;
}

static const OSSL_PARAM *
ed_gen_settable(void *vg, void *provctx)
{
	static const OSSL_PARAM t[] = { GEN_HSM_PARAMS, OSSL_PARAM_END };
	return t;
}

static gen_ctx *
gen_new(hwp_prov *p, int kind, int selection)
{
	gen_ctx *g = calloc(1, sizeof(*g));

	if (g) {
		g->prov = p;
		g->kind = kind;
		g->keypair = (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
		strcpy(g->purpose, "sign");
	}
	return g;
}

static void *
ec_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
	hwp_prov *p = provctx;
	gen_ctx *g = gen_new(p, HWP_EC, selection);

	if (!g)
		return NULL;
	/* Soft keys need another provider (the default one); keys made on the
	 * token do not, so its absence is only an error for soft keys. */
	ERR_set_mark();
	g->pc = EVP_PKEY_CTX_new_from_name(p->libctx, "EC", NOT_US);
	if (g->pc && (g->keypair ? EVP_PKEY_keygen_init(g->pc) : EVP_PKEY_paramgen_init(g->pc)) != 1) {
		EVP_PKEY_CTX_free(g->pc);
		g->pc = NULL;
	}
	ERR_pop_to_mark();
	if (!gen_set_params(g, params)) {
		gen_cleanup(g);
		return NULL;
	}
	return g;
}

#define HSM_GEN_INIT(name, kind) \
	static void *name(void *provctx, int selection, const OSSL_PARAM params[]) \
	{ \
		gen_ctx *g = gen_new(provctx, kind, selection); \
		if (g && !gen_set_params(g, params)) { \
			gen_cleanup(g); \
			g = NULL; \
		} \
		return g; \
	}
HSM_GEN_INIT(rsa_gen_init, HWP_RSA)
HSM_GEN_INIT(ed25519_gen_init, HWP_ED25519)
HSM_GEN_INIT(ed448_gen_init, HWP_ED448)

/* libssl makes its share in the group of the peer's: a soft key here. */
static int
ec_gen_set_template(void *vg, void *templ)
{
	gen_ctx *g = vg;
	hwp_key *t = templ;
	EVP_PKEY_CTX *pc;

	if (!t || !t->pub)
		return 0;
	pc = EVP_PKEY_CTX_new_from_pkey(g->prov->libctx, t->pub, NOT_US);
	if (!pc || (g->keypair ? EVP_PKEY_keygen_init(pc) : EVP_PKEY_paramgen_init(pc)) != 1) {
		EVP_PKEY_CTX_free(pc);
		return 0;
	}
	EVP_PKEY_CTX_free(g->pc);
	g->pc = pc;
	return 1;
}

/* hsmwrap's key type name for what OpenSSL asked: rsa3072, ec-p384... */
static const char *
gen_type_name(const gen_ctx *g)
{
	static const struct {
		const char *group, *type;
	} ec[] = {
		{ "P-256", "ec-p256" }, { "prime256v1", "ec-p256" }, { "secp256r1", "ec-p256" },
		{ "P-384", "ec-p384" }, { "secp384r1", "ec-p384" },
		{ "P-521", "ec-p521" }, { "secp521r1", "ec-p521" },
	};

	switch (g->kind) {
	case HWP_RSA:
		return g->bits == 0 || g->bits == 2048 ? "rsa2048" : g->bits == 3072 ? "rsa3072"
		       : g->bits == 4096 ? "rsa4096" : NULL;
	case HWP_EC:
		for (size_t i = 0; i < sizeof(ec) / sizeof(ec[0]); i++)
			if (!OPENSSL_strcasecmp(g->group, ec[i].group))
				return ec[i].type;
		return NULL;
	case HWP_ED25519:
		return "ed25519";
	default:
		return "ed448";
	}
}

/*
 * The key pair made in the HSM by hw_key_generate: sensitive, never
 * extractable, a fresh CKA_ID, on the provider's token. What was asked
 * that hsmwrap does not make (RSA-1024, a curve it lacks, an unknown
 * purpose) is refused here, before the token is touched.
 */
static hwp_key *
hsm_gen(gen_ctx *g)
{
	const char *tname = gen_type_name(g);
	hw_key_type type;
	hw_purpose purpose;
	hw_ctx *ctx;
	hw_key *key = NULL;
	hw_err e;

	if (!tname || hw_key_type_parse(tname, &type)) {
		if (g->kind == HWP_RSA)
			hwp_raise(g->prov, HWP_R_NOT_SUPPORTED,
			          "RSA keys of %zu bits on the token (2048, 3072 or 4096)", g->bits);
		else
			hwp_raise(g->prov, HWP_R_NOT_SUPPORTED,
			          "EC group '%s' on the token (P-256, P-384 or P-521)", g->group);
		return NULL;
	}
	if (hw_purpose_parse(g->purpose, &purpose)) {
		hwp_raise(g->prov, HWP_R_NOT_SUPPORTED, "key purpose '%s'", g->purpose);
		return NULL;
	}
	if (!(ctx = hwp_ctx(g->prov, NULL)))
		return NULL;
	HWP_HSM_BEGIN();
	e = hw_key_generate(ctx, g->label, type, purpose, &key);
	HWP_HSM_END();
	if (e) {
		hwp_raise_hw(g->prov, e, "generating the key on the token");
		return NULL;
	}
	return key_wrap(g->prov, key);
}

static void *
gen(void *vg, OSSL_CALLBACK *cb, void *cbarg)
{
	gen_ctx *g = vg;
	EVP_PKEY *pk = NULL;
	hwp_key *k;

	if (g->label[0])
		return g->keypair ? hsm_gen(g) : NULL;
	if (g->kind != HWP_EC) {
		hwp_raise(g->prov, HWP_R_NOT_SUPPORTED,
		          "%s keys are made on the token only: name one with -pkeyopt "
		          HWP_GEN_LABEL ":LABEL", g->kind == HWP_RSA ? "RSA" : "EdDSA");
		return NULL;
	}
	if (!g->pc) {
		hwp_raise(g->prov, HWP_R_NOT_SUPPORTED, "a software EC key without the default "
		          "provider (or an EC key on the token: -pkeyopt " HWP_GEN_LABEL ":LABEL)");
		return NULL;
	}
	if (EVP_PKEY_generate(g->pc, &pk) != 1 || !(k = key_alloc(g->prov, HWP_EC))) {
		EVP_PKEY_free(pk);
		return NULL;
	}
	k->pub = pk;
	k->soft = 1;
	k->soft_priv = k->soft_pub = g->keypair;
	return k;
}

/* The peer's share goes into a parameters-only soft key. */
static int
ec_set_params(void *kd, const OSSL_PARAM params[])
{
	hwp_key *k = kd;

	if (!k || !k->soft || !k->pub || EVP_PKEY_set_params(k->pub, (OSSL_PARAM *)params) != 1)
		return 0;
	if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY))
		k->soft_pub = 1;
	return 1;
}

static const OSSL_PARAM *
ec_settable(void *provctx)
{
	static const OSSL_PARAM t[] = {
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
		OSSL_PARAM_END
	};
	return t;
}

/* TLS group ids and security bits of RFC 8422 / RFC 8446. */
static const struct {
	const char *tls, *internal;
	unsigned id, secbits;
} nist[] = {
	{ "secp256r1", "prime256v1", 23, 128 }, { "P-256", "prime256v1", 23, 128 },
	{ "secp384r1", "secp384r1", 24, 192 },  { "P-384", "secp384r1", 24, 192 },
	{ "secp521r1", "secp521r1", 25, 256 },  { "P-521", "secp521r1", 25, 256 },
};

int
hwp_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb, void *arg)
{
	if (!capability || strcmp(capability, "TLS-GROUP") != 0)
		return 0;
	for (size_t i = 0; i < sizeof(nist) / sizeof(nist[0]); i++) {
		unsigned id = nist[i].id, bits = nist[i].secbits;
		int mintls = 0x0301, maxtls = 0, mindtls = 0xfeff, maxdtls = 0;
		OSSL_PARAM q[] = {
			OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME, (char *)nist[i].tls, 0),
			OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_NAME_INTERNAL,
			                       (char *)nist[i].internal, 0),
			OSSL_PARAM_utf8_string(OSSL_CAPABILITY_TLS_GROUP_ALG, "EC", 0),
			OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_ID, &id),
			OSSL_PARAM_uint(OSSL_CAPABILITY_TLS_GROUP_SECURITY_BITS, &bits),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_TLS, &mintls),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_TLS, &maxtls),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MIN_DTLS, &mindtls),
			OSSL_PARAM_int(OSSL_CAPABILITY_TLS_GROUP_MAX_DTLS, &maxdtls),
			OSSL_PARAM_END
		};
		q[0].data_size = strlen(nist[i].tls) + 1;
		q[1].data_size = strlen(nist[i].internal) + 1;
		q[2].data_size = 3;
		if (!cb(q, arg))
			return 0;
	}
	return 1;
}

#define FN(id, f) { OSSL_FUNC_KEYMGMT_##id, (void (*)(void))(f) }

const OSSL_DISPATCH hwp_rsa_keymgmt[] = {
	FN(NEW, rsa_new), FN(FREE, km_free), FN(LOAD, km_load), FN(DUP, km_dup),
	FN(HAS, km_has), FN(MATCH, km_match),
	FN(GET_PARAMS, km_get_params), FN(GETTABLE_PARAMS, rsa_gettable),
	FN(IMPORT, km_import), FN(IMPORT_TYPES, rsa_types),
	FN(EXPORT, km_export), FN(EXPORT_TYPES, rsa_types),
	FN(QUERY_OPERATION_NAME, rsa_opname),
	FN(GEN_INIT, rsa_gen_init), FN(GEN_SET_PARAMS, gen_set_params),
	FN(GEN_SETTABLE_PARAMS, rsa_gen_settable), FN(GEN, gen), FN(GEN_CLEANUP, gen_cleanup),
	{ 0, NULL }
};

const OSSL_DISPATCH hwp_ec_keymgmt[] = {
	FN(NEW, ec_new), FN(FREE, km_free), FN(LOAD, km_load), FN(DUP, km_dup),
	FN(HAS, km_has), FN(MATCH, km_match),
	FN(GET_PARAMS, km_get_params), FN(GETTABLE_PARAMS, ec_gettable),
	FN(IMPORT, km_import), FN(IMPORT_TYPES, ec_types),
	FN(EXPORT, km_export), FN(EXPORT_TYPES, ec_types),
	FN(QUERY_OPERATION_NAME, ec_opname),
	FN(GEN_INIT, ec_gen_init), FN(GEN_SET_PARAMS, gen_set_params),
	FN(GEN_SETTABLE_PARAMS, ec_gen_settable), FN(GEN_SET_TEMPLATE, ec_gen_set_template),
	FN(GEN, gen), FN(GEN_CLEANUP, gen_cleanup),
	FN(SET_PARAMS, ec_set_params), FN(SETTABLE_PARAMS, ec_settable),
	{ 0, NULL }
};

/* EdDSA keys: HSM keys and public-only copies; generation on the token
 * only (TLS key exchange uses X25519/X448, which are not these key types). */
#define ED_KEYMGMT(newfn, opnamefn, geninit) \
	FN(NEW, newfn), FN(FREE, km_free), FN(LOAD, km_load), FN(DUP, km_dup), \
	FN(HAS, km_has), FN(MATCH, km_match), \
	FN(GET_PARAMS, km_get_params), FN(GETTABLE_PARAMS, ed_gettable), \
	FN(IMPORT, km_import), FN(IMPORT_TYPES, ed_types), \
	FN(EXPORT, km_export), FN(EXPORT_TYPES, ed_types), \
	FN(QUERY_OPERATION_NAME, opnamefn), \
	FN(GEN_INIT, geninit), FN(GEN_SET_PARAMS, gen_set_params), \
	FN(GEN_SETTABLE_PARAMS, ed_gen_settable), FN(GEN, gen), FN(GEN_CLEANUP, gen_cleanup), \
	{ 0, NULL }

const OSSL_DISPATCH hwp_ed25519_keymgmt[] = { ED_KEYMGMT(ed25519_new, ed25519_opname, ed25519_gen_init) };
const OSSL_DISPATCH hwp_ed448_keymgmt[] = { ED_KEYMGMT(ed448_new, ed448_opname, ed448_gen_init) };
