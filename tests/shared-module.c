/*
 * shared-module - the hsmwrap provider in a process that also uses the
 * same PKCS#11 module directly (pkcs11-provider's users report this
 * "double C_Initialize": an application with its own PKCS#11 code, or
 * the libp11 engine, next to the provider).
 *
 * The other user initialises SoftHSM first and logs in; then the
 * provider, loaded into a library context, signs with an HSM key (its
 * C_Initialize finds the module initialised and shares it; its login
 * finds the user logged in). The signature verifies in software, the
 * other user's session still works, and after the provider is unloaded
 * it still works: the provider never finalises a module it did not
 * initialise.
 *
 * Usage (under tests/with-token.sh, OPENSSL_MODULES at the provider):
 *   shared-module MODULE TOKEN-LABEL PIN-FILE KEY-URI
 * Prints "ok ..." lines; exits 0 when all passed, 1 otherwise.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

static int failed;

static void
check(int ok, const char *what)
{
	printf("%s %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok) {
		ERR_print_errors_fp(stdout);
		failed = 1;
	}
}

/* The other user's session is alive and logged in. */
static int
session_alive(CK_FUNCTION_LIST *fl, CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO si;

	return fl->C_GetSessionInfo(s, &si) == CKR_OK &&
	       (si.state == CKS_RW_USER_FUNCTIONS || si.state == CKS_RO_USER_FUNCTIONS);
}

static EVP_PKEY *
load_key(OSSL_LIB_CTX *libctx, const char *uri)
{
	OSSL_STORE_CTX *st = OSSL_STORE_open_ex(uri, libctx, NULL, NULL, NULL, NULL, NULL, NULL);
	EVP_PKEY *k = NULL;

	while (st && !k && !OSSL_STORE_eof(st)) {
		OSSL_STORE_INFO *info = OSSL_STORE_load(st);

		if (info && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
			k = OSSL_STORE_INFO_get1_PKEY(info);
		OSSL_STORE_INFO_free(info);
	}
	OSSL_STORE_close(st);
	return k;
}

/* Signs msg with key in libctx and verifies with its public half in the
 * default library context (software). */
static int
sign_verify(OSSL_LIB_CTX *libctx, EVP_PKEY *key)
{
	static const unsigned char msg[] = "signed next to another PKCS#11 user";
	unsigned char sig[512], *der = NULL;
	const unsigned char *p;
	size_t siglen = sizeof(sig);
	EVP_MD_CTX *md = EVP_MD_CTX_new(), *mv = EVP_MD_CTX_new();
	EVP_PKEY *pub = NULL;
	int derlen, ok = 0;

	if (md && mv &&
	    EVP_DigestSignInit_ex(md, NULL, "SHA256", libctx, NULL, key, NULL) == 1 &&
	    EVP_DigestSign(md, sig, &siglen, msg, sizeof(msg)) == 1 &&
	    (derlen = i2d_PUBKEY(key, &der)) > 0) {
		p = der;
		pub = d2i_PUBKEY(NULL, &p, derlen);
		ok = pub && EVP_DigestVerifyInit(mv, NULL, EVP_sha256(), NULL, pub) == 1 &&
		     EVP_DigestVerify(mv, sig, siglen, msg, sizeof(msg)) == 1;
	}
	OPENSSL_free(der);
	EVP_PKEY_free(pub);
	EVP_MD_CTX_free(md);
	EVP_MD_CTX_free(mv);
	return ok;
}

int
main(int argc, char **argv)
{
	CK_C_GetFunctionList gfl;
	CK_FUNCTION_LIST *fl = NULL;
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	char pin[256] = { 0 };
	size_t pinlen = 0;
	FILE *f;
	void *dl;

	/* Line by line: LeakSanitizer ends the process without flushing. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 5) {
		fprintf(stderr, "usage: %s MODULE TOKEN-LABEL PIN-FILE KEY-URI\n", argv[0]);
		return 2;
	}
	if (!(dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) ||
	    !(gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList")) || gfl(&fl) != CKR_OK) {
		fprintf(stderr, "cannot load %s\n", argv[1]);
		return 2;
	}
	if ((f = fopen(argv[3], "r"))) {
		if (fgets(pin, sizeof(pin), f))
			pinlen = strcspn(pin, "\r\n");
		fclose(f);
	}

	/* The other user: first to initialise, logged in. */
	check(fl->C_Initialize(NULL) == CKR_OK, "the other user initialises the module first");
	if (fl->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK)
		for (CK_ULONG i = 0; i < n && s == CK_INVALID_HANDLE; i++) {
			CK_TOKEN_INFO ti;
			size_t l = strlen(argv[2]);

			if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK && l <= 32 &&
			    !memcmp(ti.label, argv[2], l) && (l == 32 || ti.label[l] == ' '))
				fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s);
		}
	check(s != CK_INVALID_HANDLE &&
	      fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, pinlen) == CKR_OK,
	      "the other user logs in");

	/* The provider in the same process, on the same module. */
	OSSL_LIB_CTX *libctx = OSSL_LIB_CTX_new();
	OSSL_PROVIDER *def = libctx ? OSSL_PROVIDER_load(libctx, "default") : NULL;
	OSSL_PROVIDER *hw = libctx ? OSSL_PROVIDER_load(libctx, "hsmwrap") : NULL;
	check(def && hw, "the hsmwrap provider loads");
	EVP_PKEY *key = hw ? load_key(libctx, argv[4]) : NULL;
	check(key != NULL, "the provider loads the HSM key (module shared, not re-initialised)");
	check(key && sign_verify(libctx, key), "the provider signs in the HSM; verified in software");
	check(key && sign_verify(libctx, key), "... and again");
	check(session_alive(fl, s), "the other user's session is still logged in");
	EVP_PKEY_free(key);
	OSSL_PROVIDER_unload(hw);
	OSSL_PROVIDER_unload(def);
	OSSL_LIB_CTX_free(libctx);
	check(session_alive(fl, s), "after the provider is unloaded the other user's session works "
	      "(the provider did not finalise the module)");

	if (s != CK_INVALID_HANDLE)
		fl->C_CloseSession(s);
	check(fl->C_Finalize(NULL) == CKR_OK, "the other user finalises the module");
	memset(pin, 0, sizeof(pin));
	return failed;
}
