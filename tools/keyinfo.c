/*
 * keyinfo.c - a key as the CLI shows it (text, JSON fields, KCV or
 * fingerprint), shared by the key, ca and tde commands so they describe a
 * key the same way.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char *kcv_alg_text(const char *kcv_alg)
{
	if (strcmp(kcv_alg, "AES-ECB-zero") == 0)
		return "KCV (AES-ECB of zero block)";
	if (strcmp(kcv_alg, "SHA256-SPKI") == 0)
		return "Fingerprint (SHA-256 of SubjectPublicKeyInfo)";
	return "KCV";
}

const char *key_kcv_value(const hw_key_info *ki)
{
	return ki->kcv[0] && strcmp(ki->kcv_alg, "unavailable") != 0 ? ki->kcv : "unavailable";
}

const char *key_purpose_text(hw_purpose p)
{
	const char *s = hw_purpose_name(p);

	return s ? s : "none";
}

void key_info_fields(json_t *w, const hw_key_info *ki)
{
	cj_str(w, "label", ki->label);
	cj_str(w, "id", ki->id_hex);
	cj_str(w, "type", ki->type_name);
	cj_uint(w, "bits", ki->bits);
	cj_str(w, "purpose", key_purpose_text(ki->purpose));
	cj_str(w, "uri", ki->uri);
	cj_str(w, "kcv", ki->kcv[0] ? ki->kcv : NULL);
	cj_str(w, "kcv_alg", ki->kcv_alg);
	cj_tri(w, "token", ki->token);
	cj_tri(w, "private", ki->private_);
	cj_tri(w, "sensitive", ki->sensitive);
	cj_tri(w, "extractable", ki->extractable);
	cj_tri(w, "always_sensitive", ki->always_sensitive);
	cj_tri(w, "never_extractable", ki->never_extractable);
	cj_tri(w, "local", ki->local);
	cj_tri(w, "encrypt", ki->encrypt);
	cj_tri(w, "decrypt", ki->decrypt);
	cj_tri(w, "wrap", ki->wrap);
	cj_tri(w, "unwrap", ki->unwrap);
	cj_tri(w, "sign", ki->sign);
	cj_tri(w, "verify", ki->verify);
	cj_tri(w, "derive", ki->derive);
}

void key_info_json(json_t *o, const char *name, const hw_key_info *ki)
{
	key_info_fields(cj_obj(o, name), ki);
}

const char *key_tri_text(int v)
{
	return v < 0 ? "unknown" : v ? "yes" : "no";
}

void key_info_text(const hw_key_info *ki, int attributes)
{
	static const struct { const char *name; size_t off; } attrs[] = {
		{ "Token object", offsetof(hw_key_info, token) },
		{ "Private", offsetof(hw_key_info, private_) },
		{ "Sensitive", offsetof(hw_key_info, sensitive) },
		{ "Extractable", offsetof(hw_key_info, extractable) },
		{ "Always sensitive", offsetof(hw_key_info, always_sensitive) },
		{ "Never extractable", offsetof(hw_key_info, never_extractable) },
		{ "Generated on token", offsetof(hw_key_info, local) },
		{ "Encrypt", offsetof(hw_key_info, encrypt) },
		{ "Decrypt", offsetof(hw_key_info, decrypt) },
		{ "Wrap", offsetof(hw_key_info, wrap) },
		{ "Unwrap", offsetof(hw_key_info, unwrap) },
		{ "Sign", offsetof(hw_key_info, sign) },
		{ "Verify", offsetof(hw_key_info, verify) },
		{ "Derive", offsetof(hw_key_info, derive) },
	};

	printf("Label:    %s\n", ki->label);
	printf("Type:     %s (%u bits)\n", ki->type_name, ki->bits);
	printf("Purpose:  %s\n", key_purpose_text(ki->purpose));
	printf("ID:       %s\n", ki->id_hex);
	printf("URI:      %s\n", ki->uri);
	printf("%s: %s\n", kcv_alg_text(ki->kcv_alg), key_kcv_value(ki));
	if (!attributes)
		return;
	printf("Attributes:\n");
	for (size_t i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		int v;

		memcpy(&v, (const char *)ki + attrs[i].off, sizeof(v));
		printf("  %-19s %s\n", attrs[i].name, key_tri_text(v));
	}
}
