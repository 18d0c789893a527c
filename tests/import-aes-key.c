/*
 * import-aes-key LABEL KEYFILE [IDHEX]
 *
 * Test fixture: puts a known AES key (16, 24 or 32 bytes from KEYFILE) into
 * the test token as an `envelope` key the way an import ceremony would:
 * CKA_SENSITIVE, not CKA_EXTRACTABLE, encrypt/decrypt only (no wrap/unwrap,
 * which pkcs11-tool --write-object cannot switch off). Interop tests need the
 * same key material on both sides: in the token for hsmwrap, in a file for
 * the other implementation.
 *
 * Raw PKCS#11 through p11-kit on purpose: the fixture must not depend on
 * the library under test. Needs the environment of tests/with-token.sh
 * (HSMWRAP_MODULE, HW_TEST_USER_PIN_FILE; token label hsmwrap-test).
 * Exit 0 imported, 99 setup error.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <p11-kit/p11-kit.h>

static void
die(const char *what, CK_RV rv)
{
	fprintf(stderr, "import-aes-key: %s (CK_RV 0x%lx)\n", what, (unsigned long)rv);
	exit(99);
}

static size_t
read_file(const char *path, unsigned char *buf, size_t max)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		die(path, 0);
	n = fread(buf, 1, max, f);
	if (ferror(f) || fgetc(f) != EOF)
		die("key file too long or unreadable", 0);
	fclose(f);
	return n;
}

static size_t
unhex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s) / 2;

	if (strlen(s) % 2 || n == 0 || n > max)
		die("bad IDHEX", 0);
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			die("bad IDHEX", 0);
		out[i] = (unsigned char)v;
	}
	return n;
}

int
main(int argc, char **argv)
{
	const char *mod = getenv("HSMWRAP_MODULE"), *pinf = getenv("HW_TEST_USER_PIN_FILE");
	CK_FUNCTION_LIST *p11;
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = 64;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL t = CK_TRUE, f = CK_FALSE;
	CK_OBJECT_HANDLE h;
	unsigned char key[33], id[64] = { 0x1e, 0x70 };
	char pin[256];
	size_t keylen, idlen = 2, pinlen;
	CK_RV rv;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: import-aes-key LABEL KEYFILE [IDHEX]\n");
		return 2;
	}
	if (!mod || !pinf)
		die("run under tests/with-token.sh", 0);
	keylen = read_file(argv[2], key, sizeof(key) - 1);
	if (keylen != 16 && keylen != 24 && keylen != 32)
		die("the key file must hold 16, 24 or 32 bytes", 0);
	if (argc == 4)
		idlen = unhex(argv[3], id, sizeof(id));
	pinlen = read_file(pinf, (unsigned char *)pin, sizeof(pin) - 1);

	CK_ATTRIBUTE a[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &t, sizeof(t) },
		{ CKA_PRIVATE, &t, sizeof(t) },
		{ CKA_SENSITIVE, &t, sizeof(t) },
		{ CKA_EXTRACTABLE, &f, sizeof(f) },
		{ CKA_ENCRYPT, &t, sizeof(t) },
		{ CKA_DECRYPT, &t, sizeof(t) },
		{ CKA_WRAP, &f, sizeof(f) },
		{ CKA_UNWRAP, &f, sizeof(f) },
		{ CKA_SIGN, &f, sizeof(f) },
		{ CKA_VERIFY, &f, sizeof(f) },
		{ CKA_DERIVE, &f, sizeof(f) },
		{ CKA_LABEL, argv[1], strlen(argv[1]) },
		{ CKA_ID, id, idlen },
		{ CKA_VALUE, key, keylen },
	};

	p11 = p11_kit_module_load(mod, 0);
	if (!p11)
		die("p11_kit_module_load", 0);
	if ((rv = p11_kit_module_initialize(p11)) != CKR_OK)
		die("C_Initialize", rv);
	if ((rv = p11->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK)
		die("C_GetSlotList", rv);
	for (CK_ULONG i = 0; i < nslots && s == CK_INVALID_HANDLE; i++) {
		CK_TOKEN_INFO ti;

		if (p11->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, "hsmwrap-test ", 13) == 0 &&
		    (rv = p11->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
		                             NULL, &s)) != CKR_OK)
			die("C_OpenSession", rv);
	}
	if (s == CK_INVALID_HANDLE)
		die("token hsmwrap-test not found", 0);
	rv = p11->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, pinlen);
	OPENSSL_cleanse(pin, sizeof(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login", rv);
	rv = p11->C_CreateObject(s, a, sizeof(a) / sizeof(a[0]), &h);
	OPENSSL_cleanse(key, sizeof(key));
	if (rv != CKR_OK)
		die("C_CreateObject", rv);
	p11->C_CloseSession(s);
	p11_kit_module_finalize(p11);
	p11_kit_module_release(p11);
	return 0;
}
