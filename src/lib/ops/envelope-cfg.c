/*
 * Envelope encryption settings (hw_envelope_cfg): suite, frame length,
 * commitment policy, limits, RSA recipients, the cache and the threads.
 */
#include "ops/envelope.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

static const hw_envelope_cfg defaults = {
	.suite = HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384,
	.frame_len = 4096,
	.policy = HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
	.max_edks = 16,
	.ns = DEFAULT_NAMESPACE,
	.max_buffer = DEFAULT_MAX_BUFFER,
	.reject_signed = false,
	.rsa_pad = HW_RSA_PAD_OAEP_SHA256,
};

const hw_envelope_cfg *
cfg_or_default(const hw_envelope_cfg *cfg)
{
	return cfg ? cfg : &defaults;
}

HW_EXPORT hw_err
hw_envelope_cfg_new(hw_envelope_cfg **out)
{
	hw_envelope_cfg *c;

	if (!out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_new");
	c = malloc(sizeof(*c));
	if (!c)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	*c = defaults;
	*out = c;
	return HW_OK;
}

HW_EXPORT void
hw_envelope_cfg_free(hw_envelope_cfg *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nrcpts; i++) {
		free(cfg->rcpts[i].pid);
		free(cfg->rcpts[i].name);
		EVP_PKEY_free(cfg->rcpts[i].pub);
	}
	free(cfg->rcpts);
	free(cfg);
}

static bool
name_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= max && esdk_utf8_ok((const uint8_t *)s, n);
}

HW_EXPORT hw_err
hw_envelope_cfg_add_rsa_recipient(hw_envelope_cfg *cfg, const char *provider_id,
                                  const char *key_name, const uint8_t *spki_der, size_t len)
{
	const unsigned char *p = spki_der;
	EVP_PKEY *pk = NULL;
	rsa_rcpt *n, r;

	if (!cfg || !spki_der || len == 0 || len > LONG_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_add_rsa_recipient");
	if (!name_ok(provider_id, 255) || !name_ok(key_name, UINT16_MAX))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an RSA recipient needs a provider id (1 to "
		               "255 bytes of UTF-8) and a key name (UTF-8)");
	if (strncmp(provider_id, "aws-kms", 7) == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the provider id may not start with 'aws-kms'");
	pk = d2i_PUBKEY(NULL, &p, (long)len);
	if (!pk || p != spki_der + len) {
		EVP_PKEY_free(pk);
		return hw_fail(HW_ERR_FORMAT, 0, "not a DER SubjectPublicKeyInfo");
	}
	if (!EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_get_bits(pk) < 2048 ||
	    EVP_PKEY_get_size(pk) > RSA_MAX_BYTES) {
		EVP_PKEY_free(pk);
		return hw_fail(HW_ERR_INVALID_ARG, 0, "an RSA recipient needs an RSA key of 2048 to "
		               "8192 bits");
	}
	memset(&r, 0, sizeof(r));
	r.pub = pk;
	r.pid = strdup(provider_id);
	r.name = strdup(key_name);
	n = realloc(cfg->rcpts, (cfg->nrcpts + 1) * sizeof(*n));
	if (!r.pid || !r.name || !n ||
	    EVP_Digest(spki_der, len, r.spki_sha256, NULL, EVP_sha256(), NULL) != 1) {
		free(r.pid);
		free(r.name);
		EVP_PKEY_free(pk);
		if (n)
			cfg->rcpts = n;
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	cfg->rcpts = n;
	cfg->rcpts[cfg->nrcpts++] = r;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_rsa_padding(hw_envelope_cfg *cfg, hw_rsa_padding pad)
{
	if (!cfg || pad < HW_RSA_PAD_PKCS1 || pad > HW_RSA_PAD_OAEP_SHA512)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown RSA padding");
	cfg->rsa_pad = pad;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_cache(hw_envelope_cfg *cfg, hw_cache *c)
{
	if (!cfg)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_set_cache");
	cfg->cache = c;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_suite(hw_envelope_cfg *cfg, unsigned suite)
{
	if (!cfg || (suite != HW_SUITE_AES256_HKDF_SHA512_COMMIT &&
	             suite != HW_SUITE_AES256_HKDF_SHA512_COMMIT_ECDSA_P384))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "suite 0x%04x: hsmwrap encrypts with 0x0478 "
		               "or 0x0578", suite);
	cfg->suite = (uint16_t)suite;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_frame_length(hw_envelope_cfg *cfg, uint32_t len)
{
	if (!cfg || len == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the frame length must be 1 to 2^32 - 1");
	cfg->frame_len = len;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_commitment_policy(hw_envelope_cfg *cfg, hw_commitment_policy p)
{
	if (!cfg || (p != HW_COMMIT_REQUIRE_ENCRYPT_REQUIRE_DECRYPT &&
	             p != HW_COMMIT_REQUIRE_ENCRYPT_ALLOW_DECRYPT))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "unknown commitment policy");
	cfg->policy = p;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_max_edks(hw_envelope_cfg *cfg, unsigned n)
{
	if (!cfg || n > UINT16_MAX)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "at most 65535 encrypted data keys");
	cfg->max_edks = n;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_key_namespace(hw_envelope_cfg *cfg, const char *ns)
{
	size_t n = ns ? strlen(ns) : 0;

	if (!cfg || n == 0 || n >= sizeof(cfg->ns))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace must be 1 to 255 bytes");
	/* The SDKs keep this prefix for their KMS keyrings (raw-aes-keyring.md). */
	if (strncmp(ns, "aws-kms", 7) == 0)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace may not start with "
		               "'aws-kms'");
	if (!esdk_utf8_ok((const uint8_t *)ns, n))
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the key namespace must be UTF-8");
	memcpy(cfg->ns, ns, n + 1);
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_max_buffer(hw_envelope_cfg *cfg, size_t bytes)
{
	if (!cfg || bytes < 4096)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "the buffer limit must be at least 4096 bytes");
	cfg->max_buffer = bytes;
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_threads(hw_envelope_cfg *cfg, unsigned threads)
{
	if (!cfg || threads > ESDK_PIPE_MAX_THREADS)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "threads: 0 (one per CPU) to %u",
		               ESDK_PIPE_MAX_THREADS);
	cfg->threads = threads;
	return HW_OK;
}

unsigned
cfg_threads(const hw_envelope_cfg *c)
{
	long n;

	if (c->threads)
		return c->threads;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > (long)ESDK_PIPE_MAX_THREADS ? ESDK_PIPE_MAX_THREADS : (unsigned)n;
}

HW_EXPORT hw_err
hw_envelope_cfg_set_reject_signed(hw_envelope_cfg *cfg, int reject)
{
	if (!cfg)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_cfg_set_reject_signed");
	cfg->reject_signed = reject != 0;
	return HW_OK;
}

