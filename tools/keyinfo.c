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

void key_info_fields(struct jw *w, const hw_key_info *ki)
{
	jw_str(w, "label", ki->label);
	jw_str(w, "id", ki->id_hex);
	jw_str(w, "type", ki->type_name);
	jw_uint(w, "bits", ki->bits);
	jw_str(w, "purpose", key_purpose_text(ki->purpose));
	jw_str(w, "uri", ki->uri);
	jw_str(w, "kcv", ki->kcv[0] ? ki->kcv : NULL);
	jw_str(w, "kcv_alg", ki->kcv_alg);
	jw_tri(w, "token", ki->token);
	jw_tri(w, "private", ki->private_);
	jw_tri(w, "sensitive", ki->sensitive);
	jw_tri(w, "extractable", ki->extractable);
	jw_tri(w, "always_sensitive", ki->always_sensitive);
	jw_tri(w, "never_extractable", ki->never_extractable);
	jw_tri(w, "local", ki->local);
	jw_tri(w, "encrypt", ki->encrypt);
	jw_tri(w, "decrypt", ki->decrypt);
	jw_tri(w, "wrap", ki->wrap);
	jw_tri(w, "unwrap", ki->unwrap);
	jw_tri(w, "sign", ki->sign);
	jw_tri(w, "verify", ki->verify);
	jw_tri(w, "derive", ki->derive);
}

void key_info_json(struct jw *w, const char *name, const hw_key_info *ki)
{
	jw_obj_begin(w, name);
	key_info_fields(w, ki);
	jw_obj_end(w);
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
