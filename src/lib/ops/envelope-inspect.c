/*
 * hw_envelope_inspect: what a message's header says, without a key.
 */
#include "ops/envelope.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- */
/* Inspection                                                        */

/* NUL-terminated copy; an embedded NUL becomes U+FFFD so the string is whole. */
static char *
text_dup(const uint8_t *p, size_t n)
{
	size_t nul = 0;
	char *s, *q;

	for (size_t i = 0; i < n; i++)
		nul += p[i] == 0;
	s = malloc(n + 2 * nul + 1);
	if (!s)
		return NULL;
	q = s;
	for (size_t i = 0; i < n; i++) {
		if (p[i]) {
			*q++ = (char)p[i];
		} else {
			*q++ = (char)0xef;
			*q++ = (char)0xbf;
			*q++ = (char)0xbd;
		}
	}
	*q = '\0';
	return s;
}

HW_EXPORT void
hw_envelope_info_free(hw_envelope_info *info)
{
	if (!info)
		return;
	for (size_t i = 0; info->pairs && i < info->npairs; i++) {
		free(info->pairs[i].key);
		free(info->pairs[i].value);
	}
	for (size_t i = 0; info->edks && i < info->nedks; i++) {
		free(info->edks[i].provider_id);
		free(info->edks[i].provider_info);
		free(info->edks[i].key_name);
	}
	free(info->pairs);
	free(info->edks);
	free(info);
}

static hw_err
info_fill(const esdk_header *h, hw_envelope_info *info)
{
	info->version = h->version;
	info->suite = h->suite->id;
	info->suite_name = h->suite->name;
	info->committing = h->suite->kdf == ESDK_KDF_COMMIT;
	info->signed_ = h->suite->sig_curve != NULL;
	memcpy(info->message_id, h->msgid, h->msgid_len);
	info->message_id_len = h->msgid_len;
	info->framed = h->content_type == ESDK_CT_FRAMED;
	info->frame_length = h->frame_len;
	info->header_len = h->len;
	info->pairs = calloc(h->ec.n ? h->ec.n : 1, sizeof(*info->pairs));
	info->edks = calloc(h->nedks, sizeof(*info->edks));
	if (!info->pairs || !info->edks)
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	for (size_t i = 0; i < h->ec.n; i++) {
		info->pairs[i].key = text_dup(h->ec.p[i].k, h->ec.p[i].klen);
		info->pairs[i].value = text_dup(h->ec.p[i].v, h->ec.p[i].vlen);
		info->npairs++;
		if (!info->pairs[i].key || !info->pairs[i].value)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (size_t i = 0; i < h->nedks; i++) {
		const esdk_edk *k = &h->edks[i];
		hw_envelope_edk *o = &info->edks[i];

		info->nedks++;
		o->provider_id = text_dup(k->pid, k->pid_len);
		o->provider_info = malloc(k->pinfo_len ? k->pinfo_len : 1);
		o->provider_info_len = k->pinfo_len;
		o->ciphertext_len = k->ct_len;
		if (!o->provider_id || !o->provider_info)
			return hw_fail(HW_ERR_NOMEM, 0, NULL);
		memcpy(o->provider_info, k->pinfo, k->pinfo_len);
		/* Raw-AES layout: name || 128 || 12 || IV. */
		if (k->pinfo_len >= PINFO_TRAILER) {
			const uint8_t *t = k->pinfo + k->pinfo_len - PINFO_TRAILER;
			static const uint8_t want[8] = { 0, 0, 0, 0x80, 0, 0, 0, 0x0c };

			if (memcmp(t, want, sizeof(want)) == 0) {
				o->key_name = text_dup(k->pinfo, k->pinfo_len - PINFO_TRAILER);
				if (!o->key_name)
					return hw_fail(HW_ERR_NOMEM, 0, NULL);
			}
		}
	}
	return HW_OK;
}

HW_EXPORT hw_err
hw_envelope_inspect(const uint8_t *in, size_t inlen, hw_envelope_info **out)
{
	esdk_header h;
	hw_envelope_info *info;
	hw_err e;

	if (!in || !out)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_envelope_inspect");
	hw_clear_error();
	e = esdk_header_parse(in, inlen, 0, &h, NULL);
	if (e != HW_OK)
		return e;
	info = calloc(1, sizeof(*info));
	if (!info)
		e = hw_fail(HW_ERR_NOMEM, 0, NULL);
	else
		e = info_fill(&h, info);
	esdk_header_free(&h);
	if (e != HW_OK) {
		hw_envelope_info_free(info);
		return e;
	}
	*out = info;
	return HW_OK;
}

