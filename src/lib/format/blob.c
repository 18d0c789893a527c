/*
 * The self-describing blob that carries direct ciphertexts, wrapped data
 * keys and wrapped key material:
 *
 *   "HWB" | version u8 (1) | kind u8 | alg u8 | key id (u16 len + bytes)
 *   | key label (u16 len + bytes)                  <- header, bound as AAD
 *   | iv_len u8 | iv | payload_len u32 | payload (ciphertext || tag)
 *
 * The header is authenticated with AES-GCM (direct and data-key blobs), so
 * a blob cannot be re-labelled or passed off as another kind. The IV is
 * outside it because some HSMs choose the IV themselves during C_Encrypt;
 * GCM authenticates the IV anyway.
 */
#include "internal.h"
#include "base/buf.h"

#include <string.h>

#define MAGIC "HWB"
#define BLOB_VERSION 1
#define ALG_AES256_GCM 1
#define ALG_AES_KWP 2
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

static uint8_t
kind_alg(hw_blob_kind kind)
{
	return kind == HW_BLOB_WRAPPED ? ALG_AES_KWP : ALG_AES256_GCM;
}

hw_err
hw_blob_parse(const uint8_t *in, size_t len, hw_blob *b)
{
	hw_rbuf r;
	const uint8_t *magic;
	uint8_t version, kind, alg, iv_len;
	uint32_t plen;

	memset(b, 0, sizeof(*b));
	hw_rbuf_init(&r, in, len);
	if (hw_rbuf_bytes(&r, 3, &magic) != HW_OK || memcmp(magic, MAGIC, 3) != 0)
		return hw_fail(HW_ERR_FORMAT, 0, "not an hsmwrap blob");
	if (hw_rbuf_u8(&r, &version) != HW_OK)
		return hw_fail(HW_ERR_FORMAT, 0, "truncated blob header");
	if (version != BLOB_VERSION)
		return hw_fail(HW_ERR_FORMAT, 0, "unsupported blob version %u", version);
	if (hw_rbuf_u8(&r, &kind) != HW_OK || hw_rbuf_u8(&r, &alg) != HW_OK ||
	    hw_rbuf_str16(&r, &b->key_id, &b->key_id_len) != HW_OK ||
	    hw_rbuf_str16(&r, &b->label, &b->label_len) != HW_OK)
		return hw_fail(HW_ERR_FORMAT, 0, "truncated blob header");
	if (kind < HW_BLOB_DIRECT || kind > HW_BLOB_WRAPPED || alg != kind_alg(kind))
		return hw_fail(HW_ERR_FORMAT, 0, "unknown blob kind or algorithm");
	if (b->key_id_len == 0 || b->key_id_len > 64 || b->label_len > 128)
		return hw_fail(HW_ERR_FORMAT, 0, "bad key reference in blob");
	b->header = in;
	b->header_len = r.off;
	if (hw_rbuf_u8(&r, &iv_len) != HW_OK ||
	    iv_len != (alg == ALG_AES256_GCM ? GCM_IV_LEN : 0) ||
	    hw_rbuf_bytes(&r, iv_len, &b->iv) != HW_OK)
		return hw_fail(HW_ERR_FORMAT, 0, "bad IV in blob");
	b->iv_len = iv_len;
	if (hw_rbuf_u32(&r, &plen) != HW_OK || hw_rbuf_bytes(&r, plen, &b->payload) != HW_OK)
		return hw_fail(HW_ERR_FORMAT, 0, "truncated blob payload");
	b->payload_len = plen;
	if (hw_rbuf_left(&r) != 0)
		return hw_fail(HW_ERR_FORMAT, 0, "trailing bytes after blob");
	switch (kind) {
	case HW_BLOB_DIRECT:
		if (plen < GCM_TAG_LEN || plen > HW_DIRECT_MAX + GCM_TAG_LEN)
			return hw_fail(HW_ERR_FORMAT, 0, "bad ciphertext length");
		break;
	case HW_BLOB_DATAKEY:
		if (plen != HW_DATAKEY_LEN + GCM_TAG_LEN)
			return hw_fail(HW_ERR_FORMAT, 0, "bad wrapped data key length");
		break;
	case HW_BLOB_WRAPPED:
		/* RFC 5649: at least one 8-byte block plus the 8-byte AIV. */
		if (plen < 16 || plen % 8 || plen > HW_WRAP_MAX_MATERIAL + 8)
			return hw_fail(HW_ERR_FORMAT, 0, "bad wrapped key length");
		break;
	}
	b->kind = (hw_blob_kind)kind;
	b->version = version;
	return HW_OK;
}

size_t
hw_blob_header_len(const hw_key *key)
{
	return 3 + 1 + 1 + 1 + 2 + key->id_len + 2 + strlen(key->label);
}

void
hw_blob_put_header(hw_wbuf *w, hw_blob_kind kind, const hw_key *key)
{
	hw_wbuf_put(w, MAGIC, 3);
	hw_wbuf_u8(w, BLOB_VERSION);
	hw_wbuf_u8(w, (uint8_t)kind);
	hw_wbuf_u8(w, kind_alg(kind));
	hw_wbuf_str16(w, key->id, key->id_len);
	hw_wbuf_str16(w, key->label, strlen(key->label));
}

void
hw_blob_put_body(hw_wbuf *w, size_t iv_len, size_t payload_len, uint8_t **iv,
                 uint8_t **payload)
{
	hw_wbuf_u8(w, (uint8_t)iv_len);
	*iv = hw_wbuf_append(w, iv_len);
	hw_wbuf_u32(w, (uint32_t)payload_len);
	*payload = hw_wbuf_append(w, payload_len);
}

HW_EXPORT hw_err
hw_blob_inspect(const uint8_t *blob, size_t len, hw_blob_info *info)
{
	hw_blob b;
	hw_err e;

	if (!blob || !info)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_blob_inspect");
	e = hw_blob_parse(blob, len, &b);
	if (e != HW_OK)
		return e;
	memset(info, 0, sizeof(*info));
	info->kind = b.kind;
	info->version = b.version;
	memcpy(info->key_label, b.label, b.label_len);
	info->key_label[b.label_len] = '\0';
	hw_hex(b.key_id, b.key_id_len, info->key_id_hex);
	info->payload_len = b.payload_len;
	return HW_OK;
}
