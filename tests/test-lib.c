/*
 * test-lib.c - CUnit tests of libhsmwrap through its public API only,
 * against the throwaway SoftHSM tokens set up by tests/with-token.sh.
 */
#include "config.h"

#include <CUnit/Basic.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <p11-kit/uri.h>

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsmwrap.h"
#include "test-common.h"

#define CKR_PIN_INCORRECT_VALUE 0xA0ul

/* What with-token.sh tells us, and what the suites share. */
static struct {
	const char *module;
	const char *token_uri;
	const char *pin_source;
	const char *dir;
	const char *user_pin_file;
	const char *so_pin_file;
	const char *token2;
	const char *user_pin_file2;
	char user_pin[256];
	char user_pin2[256];
	hw_ctx *ctx;
	/* Fixture keys of the operations suite. */
	hw_key *env, *env2, *kw, *kw2, *sign;
} T;

/* Suite preconditions: the shared context and fixture keys exist. */
static int need_ctx(void)
{
	return T.ctx && T.env ? 0 : 1;
}

static int need_fixtures(void)
{
	return T.ctx && T.env && T.env2 && T.kw && T.kw2 && T.sign ? 0 : 1;
}


/* A failed assertion with a formatted explanation. */
static void fail_msg(const char *file, unsigned line, const char *what,
                     const char *arg)
{
	char msg[768];

	fmt(msg, sizeof msg, "%s: %s", what, arg ? arg : "(null)");
	CU_assertImplementation(CU_FALSE, line, msg, file, "", CU_FALSE);
}
#define FAIL(what, arg) fail_msg(__FILE__, __LINE__, (what), (arg))

#define EXPECT_STR(got, want) do { \
	const char *g_ = (got), *w_ = (want); \
	if (g_ == NULL || strcmp(g_, w_) != 0) { \
		char m_[512]; \
		fmt(m_, sizeof m_, "%s is \"%s\", want \"%s\"", #got, \
		         g_ ? g_ : "(null)", w_); \
		CU_assertImplementation(CU_FALSE, __LINE__, m_, __FILE__, "", CU_FALSE); \
	} else { \
		CU_PASS(#got); \
	} \
} while (0)

#define EXPECT_INT(got, want) do { \
	long long g_ = (long long)(got), w_ = (long long)(want); \
	if (g_ != w_) { \
		char m_[512]; \
		fmt(m_, sizeof m_, "%s is %lld, want %lld", #got, g_, w_); \
		CU_assertImplementation(CU_FALSE, __LINE__, m_, __FILE__, "", CU_FALSE); \
	} else { \
		CU_PASS(#got); \
	} \
} while (0)

/* Errors a damaged blob may give; anything else (and success) is a bug. */
static int is_tamper_error(hw_err e)
{
	return e == HW_ERR_INTEGRITY || e == HW_ERR_FORMAT ||
	       e == HW_ERR_WRONG_KEY || e == HW_ERR_KEY_NOT_FOUND;
}

/* ------------------------------------------------------------------ */
/* Small utilities.                                                     */

static void random_bytes(uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("getrandom");
			abort();
		}
		p += r;
		n -= (size_t)r;
	}
}

static int read_text_file(const char *path, char *buf, size_t max)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, max - 1, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return 0;
}

static int write_private_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ssize_t w;

	if (fd < 0)
		return -1;
	w = write(fd, data, len);
	close(fd);
	return w == (ssize_t)len ? 0 : -1;
}

/* "file:" + a fresh path in the test dir holding `pin`. */
static void make_pin_source(char *src, size_t max, const char *name, const char *pin)
{
	char path[512];

	fmt(path, sizeof path, "%s/%s", T.dir, name);
	if (write_private_file(path, pin, strlen(pin)) != 0)
		FAIL("cannot write PIN file", path);
	fmt(src, max, "file:%s", path);
}

static void random_hex(char *out, size_t nbytes)
{
	uint8_t b[64];
	size_t i;

	random_bytes(b, nbytes);
	for (i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static int is_hex(const char *s, size_t len)
{
	size_t i;

	if (strlen(s) != len)
		return 0;
	for (i = 0; i < len; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

static int is_lower_hex(const char *s)
{
	for (; *s; s++)
		if (!isdigit((unsigned char)*s) && !(*s >= 'a' && *s <= 'f'))
			return 0;
	return 1;
}

/*
 * Opens a context; NULL arguments are left unset. Returns the first
 * failure and frees the context then.
 */
static hw_err open_ctx(const char *module, const char *token,
                       const char *pin_source, hw_ctx **out)
{
	hw_ctx *ctx = NULL;
	hw_err rc = hw_ctx_new(&ctx);

	if (rc != HW_OK)
		return rc;
	if (module && (rc = hw_ctx_set_module(ctx, module)) != HW_OK)
		goto fail;
	if (token && (rc = hw_ctx_set_token(ctx, token)) != HW_OK)
		goto fail;
	if (pin_source && (rc = hw_ctx_set_pin_source(ctx, pin_source)) != HW_OK)
		goto fail;
	if ((rc = hw_ctx_open(ctx)) != HW_OK)
		goto fail;
	*out = ctx;
	return HW_OK;
fail:
	hw_ctx_free(ctx);
	return rc;
}

/* open_ctx and a login: where a PIN problem shows up. */
static hw_err open_and_login(const char *module, const char *token,
                             const char *pin_source)
{
	hw_ctx *ctx = NULL;
	hw_err rc = open_ctx(module, token, pin_source, &ctx);

	if (rc != HW_OK)
		return rc;
	rc = hw_ctx_login(ctx);
	hw_ctx_free(ctx);
	return rc;
}

static char *token2_uri(char *buf, size_t max)
{
	fmt(buf, max, "pkcs11:token=%s", T.token2);
	return buf;
}

/* Token label named by a pkcs11: URI, blanks trimmed; "" if none. */
static int uri_token_label(const char *uri, char *label, size_t max)
{
	P11KitUri *u = p11_kit_uri_new();
	CK_TOKEN_INFO *ti;
	size_t n;
	int r;

	label[0] = '\0';
	if (!uri || !u) {
		p11_kit_uri_free(u);
		return -1;
	}
	r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u);
	if (r != P11_KIT_URI_OK) {
		p11_kit_uri_free(u);
		return -1;
	}
	ti = p11_kit_uri_get_token_info(u);
	n = sizeof ti->label;
	while (n > 0 && (ti->label[n - 1] == ' ' || ti->label[n - 1] == '\0'))
		n--;
	if (n >= max)
		n = max - 1;
	memcpy(label, ti->label, n);
	label[n] = '\0';
	p11_kit_uri_free(u);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Suite "api": things that need no token.                              */

#define LAST_ERR HW_ERR_NO_FREE_SLOT

static void test_strerror_all(void)
{
	int a, b;

	for (a = HW_OK; a <= LAST_ERR; a++) {
		const char *s = hw_strerror((hw_err)a);
		const char *n = hw_errname((hw_err)a);

		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT_PTR_NOT_NULL_FATAL(n);
		CU_ASSERT(s[0] != '\0');
		CU_ASSERT(strncmp(n, "HW_", 3) == 0);
		for (b = HW_OK; b < a; b++) {
			if (strcmp(s, hw_strerror((hw_err)b)) == 0)
				FAIL("hw_strerror text shared by two codes", s);
			if (strcmp(n, hw_errname((hw_err)b)) == 0)
				FAIL("hw_errname shared by two codes", n);
		}
	}
	EXPECT_STR(hw_errname(HW_OK), "HW_OK");
	EXPECT_STR(hw_errname(HW_ERR_INTEGRITY), "HW_ERR_INTEGRITY");
	EXPECT_STR(hw_errname(HW_ERR_NO_FREE_SLOT), "HW_ERR_NO_FREE_SLOT");
	/* Unknown codes (a newer library, a caller's bug) must not crash. */
	CU_ASSERT_PTR_NOT_NULL(hw_strerror((hw_err)999));
	CU_ASSERT_PTR_NOT_NULL(hw_errname((hw_err)999));
	CU_ASSERT_PTR_NOT_NULL(hw_strerror((hw_err)-1));
}

static void test_version(void)
{
	EXPECT_STR(hw_version(), PACKAGE_VERSION);
}

static void test_names(void)
{
	static const struct { hw_key_type t; const char *name; } types[] = {
		{ HW_KEY_AES256, "aes256" }, { HW_KEY_RSA2048, "rsa2048" },
		{ HW_KEY_RSA3072, "rsa3072" }, { HW_KEY_RSA4096, "rsa4096" },
		{ HW_KEY_EC_P256, "ec-p256" }, { HW_KEY_EC_P384, "ec-p384" },
		{ HW_KEY_EC_P521, "ec-p521" }, { HW_KEY_ED25519, "ed25519" },
		{ HW_KEY_ED448, "ed448" }, { HW_KEY_RSA2048_PSS, "rsa-pss-2048" },
		{ HW_KEY_RSA3072_PSS, "rsa-pss-3072" }, { HW_KEY_RSA4096_PSS, "rsa-pss-4096" },
	};
	static const struct { hw_purpose p; const char *name; } purposes[] = {
		{ HW_PURPOSE_ENVELOPE, "envelope" }, { HW_PURPOSE_KEYWRAP, "keywrap" },
		{ HW_PURPOSE_SIGN, "sign" },
	};
	hw_key_type t = (hw_key_type)77;
	hw_purpose p = (hw_purpose)77;
	unsigned i, j;

	for (i = 0; i < sizeof types / sizeof types[0]; i++) {
		EXPECT_STR(hw_key_type_name(types[i].t), types[i].name);
		EXPECT_OK(hw_key_type_parse(types[i].name, &t));
		EXPECT_INT(t, types[i].t);
	}
	for (i = 0; i < sizeof purposes / sizeof purposes[0]; i++) {
		EXPECT_STR(hw_purpose_name(purposes[i].p), purposes[i].name);
		EXPECT_OK(hw_purpose_parse(purposes[i].name, &p));
		EXPECT_INT(p, purposes[i].p);
	}
	t = (hw_key_type)77;
	CU_ASSERT(hw_key_type_parse("aes128", &t) != HW_OK);
	CU_ASSERT(hw_key_type_parse("", &t) != HW_OK);
	EXPECT_INT(t, 77); /* out-parameters are written only on success */
	p = (hw_purpose)77;
	CU_ASSERT(hw_purpose_parse("encrypt", &p) != HW_OK);
	EXPECT_INT(p, 77);

	for (i = 0; i < 11; i++) {
		const char *n = hw_cap_name(i);

		CU_ASSERT_PTR_NOT_NULL_FATAL(n);
		CU_ASSERT(n[0] != '\0');
		for (j = 0; j < i; j++)
			CU_ASSERT(strcmp(n, hw_cap_name(j)) != 0);
	}
	EXPECT_STR(hw_cap_name(1), "aes-gcm");
	EXPECT_STR(hw_cap_name(8), "data-objects");
	CU_ASSERT_PTR_NULL(hw_cap_name(11));
	CU_ASSERT_PTR_NULL(hw_cap_name(1000));
	/* Every feature needs known capabilities. */
	for (i = 0; hw_feature_name(i); i++)
		CU_ASSERT(hw_feature_needs(i) != 0 && (hw_feature_needs(i) >> 11) == 0);
	EXPECT_INT(i, 8);
	EXPECT_STR(hw_feature_name(4), "lifecycle");
}

static void test_free_null(void)
{
	hw_free(NULL);
	hw_free_secret(NULL, 0);
	hw_ctx_free(NULL);
	hw_key_free(NULL);
	hw_ectx_free(NULL);
	CU_PASS("freeing NULL is a no-op");
}

static hw_ectx *ectx_of(const char *const *kv)
{
	hw_ectx *ec = NULL;

	if (hw_ectx_new(&ec) != HW_OK)
		return NULL;
	for (; kv && *kv; kv++) {
		if (hw_ectx_add_kv(ec, *kv) != HW_OK) {
			FAIL("hw_ectx_add_kv refused", *kv);
			hw_ectx_free(ec);
			return NULL;
		}
	}
	return ec;
}

/* The serialization of ec is exactly want. */
static void expect_serialized(const hw_ectx *ec, const uint8_t *want, size_t wantlen)
{
	uint8_t *ser = NULL;
	size_t len = 0;

	EXPECT_OK(hw_ectx_serialize(ec, &ser, &len));
	EXPECT_INT(len, wantlen);
	if (ser && len == wantlen)
		CU_ASSERT(memcmp(ser, want, wantlen) == 0);
	hw_free(ser);
}

static void test_ectx_known_answer(void)
{
	/*
	 * AWS Encryption SDK encoding, built by hand: count, then the pairs
	 * sorted by the keys' UTF-8 bytes: "Zeta" (0x5a) < "alph" < "alpha"
	 * (a prefix sorts first) < "\xc3\xa9" (e-acute).
	 */
	static const uint8_t want[] = {
		0x00, 0x04,
		0x00, 0x04, 'Z', 'e', 't', 'a', 0x00, 0x01, '1',
		0x00, 0x04, 'a', 'l', 'p', 'h', 0x00, 0x01, '3',
		0x00, 0x05, 'a', 'l', 'p', 'h', 'a', 0x00, 0x01, '2',
		0x00, 0x02, 0xc3, 0xa9, 0x00, 0x02, 0xc3, 0xbc,
	};
	hw_ectx *ec = NULL;

	REQUIRE_OK(hw_ectx_new(&ec));
	EXPECT_OK(hw_ectx_add(ec, "alpha", "2"));
	EXPECT_OK(hw_ectx_add(ec, "\xc3\xa9", "\xc3\xbc"));
	EXPECT_OK(hw_ectx_add(ec, "Zeta", "1"));
	EXPECT_OK(hw_ectx_add(ec, "alph", "3"));
	EXPECT_INT(hw_ectx_count(ec), 4);
	expect_serialized(ec, want, sizeof want);
	hw_ectx_free(ec);
}

static void test_ectx_empty_and_kv(void)
{
	static const uint8_t want[] = {
		0x00, 0x02,
		0x00, 0x01, 'a', 0x00, 0x03, 'b', '=', 'c',
		0x00, 0x01, 'k', 0x00, 0x01, 'v',
	};
	static char sentinel[] = "sentinel";
	hw_ectx *ec = NULL;
	uint8_t *ser = (uint8_t *)sentinel;
	size_t len = 99;

	REQUIRE_OK(hw_ectx_new(&ec));
	EXPECT_INT(hw_ectx_count(ec), 0);
	EXPECT_OK(hw_ectx_serialize(ec, &ser, &len));
	EXPECT_INT(len, 0);
	/* Compare the pointer, not the bytes: an empty serialization may be
	 * an allocation with nothing initialised in it (valgrind noticed). */
	if (ser != (uint8_t *)sentinel)
		hw_free(ser);

	ser = NULL;
	EXPECT_OK(hw_ectx_add_kv(ec, "k=v"));
	/* Only the first '=' separates: values may contain '='. */
	EXPECT_OK(hw_ectx_add_kv(ec, "a=b=c"));
	CU_ASSERT(hw_ectx_add_kv(ec, "no-equals-sign") != HW_OK);
	EXPECT_INT(hw_ectx_count(ec), 2);
	expect_serialized(ec, want, sizeof want);
	hw_ectx_free(ec);
}

static void test_ectx_duplicate(void)
{
	hw_ectx *ec = NULL;

	REQUIRE_OK(hw_ectx_new(&ec));
	EXPECT_OK(hw_ectx_add(ec, "tenant", "a"));
	CU_ASSERT(hw_ectx_add(ec, "tenant", "b") != HW_OK);
	CU_ASSERT(hw_ectx_add(ec, "tenant", "a") != HW_OK);
	CU_ASSERT(hw_ectx_add_kv(ec, "tenant=c") != HW_OK);
	/* No PKCS#11 call was involved in that failure. */
	EXPECT_INT(hw_last_ckrv(), 0);
	EXPECT_INT(hw_ectx_count(ec), 1);
	hw_ectx_free(ec);
}

static void test_ectx_too_long(void)
{
	/* A field longer than a u16 length cannot be serialized. */
	size_t big = 70000;
	char *v = malloc(big + 1);
	hw_ectx *ec = NULL;
	uint8_t *ser = NULL;
	size_t len = 0;
	hw_err rc;

	CU_ASSERT_PTR_NOT_NULL_FATAL(v);
	memset(v, 'x', big);
	v[big] = '\0';
	REQUIRE_OK(hw_ectx_new(&ec));
	rc = hw_ectx_add(ec, "k", v);
	if (rc == HW_OK) {
		rc = hw_ectx_serialize(ec, &ser, &len);
		if (rc == HW_OK)
			hw_free(ser);
	}
	CU_ASSERT(rc != HW_OK);
	hw_ectx_free(ec);
	free(v);
}

static void test_blob_inspect_garbage(void)
{
	hw_blob_info info;
	hw_blob_info same;
	static const uint8_t junk[] = "hello, this is not a blob at all";

	memset(&info, 0xab, sizeof info);
	memcpy(&same, &info, sizeof info);
	EXPECT(hw_blob_inspect(junk, sizeof junk, &info), HW_ERR_FORMAT);
	EXPECT(hw_blob_inspect(junk, 0, &info), HW_ERR_FORMAT);
	EXPECT(hw_blob_inspect(junk, 1, &info), HW_ERR_FORMAT);
	CU_ASSERT(memcmp(&info, &same, sizeof info) == 0);
}

/* ------------------------------------------------------------------ */
/* Suite "context": modules, tokens, PINs.                              */

static void test_open_by_path(void)
{
	hw_ctx *ctx = NULL;
	char label[64];

	REQUIRE_OK(open_ctx(T.module, T.token_uri, T.pin_source, &ctx));
	/* Token selection may be lazy in practice: force it. */
	EXPECT_OK(hw_ctx_login(ctx));
	CU_ASSERT_PTR_NOT_NULL(hw_ctx_module_path(ctx));
	if (hw_ctx_module_path(ctx))
		CU_ASSERT(strstr(hw_ctx_module_path(ctx), "softhsm") != NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(hw_ctx_token_uri(ctx));
	CU_ASSERT(strncmp(hw_ctx_token_uri(ctx), "pkcs11:", 7) == 0);
	CU_ASSERT(uri_token_label(hw_ctx_token_uri(ctx), label, sizeof label) == 0);
	EXPECT_STR(label, "hsmwrap-test");
	EXPECT_OK(hw_ctx_login(ctx));
	/* A second login is harmless. */
	EXPECT_OK(hw_ctx_login(ctx));
	hw_ctx_free(ctx);
}

/* The header: hw_ctx_open "loads and initialises the module and selects the token". */
static void test_open_selects_token(void)
{
	hw_ctx *ctx = (hw_ctx *)&T;

	EXPECT(open_ctx(T.module, "pkcs11:token=no-such-token", T.pin_source, &ctx),
	       HW_ERR_TOKEN_NOT_FOUND);
	if (ctx != (hw_ctx *)&T) {
		FAIL("hw_ctx_open accepted a URI naming no token", "");
		hw_ctx_free(ctx);
	}
	ctx = NULL;
	REQUIRE_OK(open_ctx(T.module, T.token_uri, T.pin_source, &ctx));
	if (hw_ctx_token_uri(ctx) == NULL)
		FAIL("hw_ctx_token_uri() is NULL right after hw_ctx_open()", T.token_uri);
	hw_ctx_free(ctx);
}

static void test_open_by_p11kit_name(void)
{
	hw_ctx *ctx = NULL;
	hw_key *k = NULL;

	REQUIRE_OK(open_ctx("softhsm2", T.token_uri, T.pin_source, &ctx));
	if (hw_ctx_module_path(ctx))
		CU_ASSERT(strstr(hw_ctx_module_path(ctx), "softhsm") != NULL);
	EXPECT_OK(hw_ctx_login(ctx));
	/* Same token as the path-opened context: it sees the fixture key. */
	EXPECT_OK(hw_key_find(ctx, "lib-env", &k));
	hw_key_free(k);
	hw_ctx_free(ctx);
}

static void test_module_list(void)
{
	char **names = NULL;
	size_t n = 0, i;
	int found = 0;

	REQUIRE_OK(hw_module_list(&names, &n));
	for (i = 0; i < n; i++)
		if (names[i] && strcmp(names[i], "softhsm2") == 0)
			found = 1;
	CU_ASSERT(found);
	hw_strv_free(names, n);
}

static void test_two_contexts(void)
{
	hw_ctx *a = NULL, *b = NULL;
	hw_key *ka = NULL, *kb = NULL;
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN];
	uint8_t *w = NULL;
	size_t wl = 0;

	REQUIRE_OK(open_ctx(T.module, T.token_uri, T.pin_source, &a));
	REQUIRE_OK(open_ctx(T.module, T.token_uri, T.pin_source, &b));
	EXPECT_OK(hw_key_find(a, "lib-env", &ka));
	EXPECT_OK(hw_key_find(b, "lib-env", &kb));
	hw_key_free(kb);
	/* Freeing one context must not finalize the module under the other. */
	hw_ctx_free(b);
	if (ka) {
		EXPECT_OK(hw_datakey_generate(ka, NULL, pt, &w, &wl));
		EXPECT_OK(hw_datakey_decrypt(a, ka, NULL, w, wl, back));
		CU_ASSERT(memcmp(pt, back, sizeof pt) == 0);
		hw_free(w);
	}
	hw_key_free(ka);
	hw_ctx_free(a);
}

static int find_token(const hw_token_info *list, size_t n, const char *label)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (list[i].token_present && strcmp(list[i].label, label) == 0)
			return (int)i;
	return -1;
}

static void test_token_list(void)
{
	hw_token_info *list = NULL;
	size_t n = 0, i;
	int i1, i2, uninit = 0;
	char label[64];

	REQUIRE_OK(hw_token_list(T.ctx, &list, &n));
	i1 = find_token(list, n, "hsmwrap-test");
	i2 = find_token(list, n, T.token2);
	CU_ASSERT_FATAL(i1 >= 0 && i2 >= 0);
	for (i = 0; i < n; i++) {
		if (!list[i].token_present || !list[i].token_initialized) {
			uninit++;
			continue;
		}
		if ((int)i != i1 && (int)i != i2)
			continue;
		EXPECT_INT(list[i].user_pin_initialized, 1);
		EXPECT_INT(list[i].login_required, 1);
		EXPECT_INT(list[i].caps, HW_CAP_ALL | HW_CAP_DATA_OBJECTS | HW_CAP_ALLOWED_MECHS | HW_CAP_EDDSA_GEN);
		CU_ASSERT(list[i].serial[0] != '\0');
		EXPECT_STR(list[i].model, "SoftHSM v2");
		CU_ASSERT(strncmp(list[i].uri, "pkcs11:", 7) == 0);
		CU_ASSERT(uri_token_label(list[i].uri, label, sizeof label) == 0);
		EXPECT_STR(label, list[i].label);
		CU_ASSERT(strstr(list[i].uri, list[i].serial) != NULL);
	}
	CU_ASSERT(list[i1].slot_id != list[i2].slot_id);
	CU_ASSERT(strcmp(list[i1].serial, list[i2].serial) != 0);
	/* SoftHSM always offers one free slot. */
	CU_ASSERT(uninit >= 1);
	hw_free(list);
}

static void test_token_selection(void)
{
	hw_ctx *c2 = NULL, *cs = NULL;
	hw_key *k = (hw_key *)&T, *k2 = NULL;
	hw_token_info *list = NULL;
	size_t n = 0;
	char src2[600], uri[600], label[64];
	int i2;

	fmt(src2, sizeof src2, "file:%s", T.user_pin_file2);
	REQUIRE_OK(open_ctx(T.module, token2_uri(uri, sizeof uri), src2, &c2));
	EXPECT_OK(hw_ctx_login(c2));
	CU_ASSERT(uri_token_label(hw_ctx_token_uri(c2), label, sizeof label) == 0);
	EXPECT_STR(label, T.token2);
	EXPECT_OK(hw_key_generate(c2, "only-on-2", HW_KEY_AES256,
	                          HW_PURPOSE_ENVELOPE, &k2));
	hw_key_free(k2);
	/* The other token does not have it. */
	EXPECT(hw_key_find(T.ctx, "only-on-2", &k), HW_ERR_KEY_NOT_FOUND);
	CU_ASSERT(k == (hw_key *)&T);

	/* Selecting the same token by its serial number finds it. */
	REQUIRE_OK(hw_token_list(T.ctx, &list, &n));
	i2 = find_token(list, n, T.token2);
	CU_ASSERT_FATAL(i2 >= 0);
	fmt(uri, sizeof uri, "pkcs11:serial=%s", list[i2].serial);
	hw_free(list);
	EXPECT_OK(open_ctx(T.module, uri, src2, &cs));
	if (cs) {
		k2 = NULL;
		EXPECT_OK(hw_key_find(cs, "only-on-2", &k2));
		hw_key_free(k2);
		k2 = NULL;
		EXPECT(hw_key_find(cs, "lib-env", &k2), HW_ERR_KEY_NOT_FOUND);
		CU_ASSERT_PTR_NULL(k2);
		hw_ctx_free(cs);
	}
	hw_ctx_free(c2);
}

static void test_token_errors(void)
{
	hw_ctx *ctx = (hw_ctx *)&T;
	hw_err rc;

	/* open + login: the error must come by the first use at the latest. */
	EXPECT(open_and_login(T.module, "pkcs11:token=no-such-token", T.pin_source),
	       HW_ERR_TOKEN_NOT_FOUND);
	EXPECT(open_and_login(T.module, "pkcs11:serial=0000000000000000", T.pin_source),
	       HW_ERR_TOKEN_NOT_FOUND);
	/* Both test tokens (and the free slot) match this. */
	EXPECT(open_and_login(T.module, "pkcs11:model=SoftHSM%20v2", T.pin_source),
	       HW_ERR_TOKEN_AMBIGUOUS);
	EXPECT(open_and_login(T.module, "pkcs11:token=%zz", T.pin_source), HW_ERR_URI);
	EXPECT(open_and_login(T.module, "http://example.com/", T.pin_source), HW_ERR_URI);
	EXPECT(open_and_login(T.module, "token=hsmwrap-test", T.pin_source), HW_ERR_URI);
	EXPECT(open_ctx("/nonexistent/libnothing.so", T.token_uri, T.pin_source, &ctx),
	       HW_ERR_MODULE);
	EXPECT(open_ctx("no-such-p11kit-module", T.token_uri, T.pin_source, &ctx),
	       HW_ERR_MODULE);
	/* A file that exists but is no PKCS#11 module. */
	EXPECT(open_ctx(T.so_pin_file, T.token_uri, T.pin_source, &ctx), HW_ERR_MODULE);
	CU_ASSERT(ctx == (hw_ctx *)&T);
	rc = open_ctx("/usr/lib/x86_64-linux-gnu/libc.so.6", T.token_uri, T.pin_source, &ctx);
	if (access("/usr/lib/x86_64-linux-gnu/libc.so.6", R_OK) == 0)
		EXPECT(rc, HW_ERR_MODULE);
}

static hw_err login_with_source(const char *src)
{
	return open_and_login(T.module, T.token_uri, src);
}

static void test_pin_file_and_env(void)
{
	char src[600];

	EXPECT_OK(login_with_source(T.pin_source));
	EXPECT(login_with_source("file:/nonexistent/dir/user.pin"), HW_ERR_PIN_SOURCE);

	setenv("HW_TEST_PIN_ENV", T.user_pin, 1);
	EXPECT_OK(login_with_source("env:HW_TEST_PIN_ENV"));
	unsetenv("HW_TEST_PIN_ENV");
	EXPECT(login_with_source("env:HW_TEST_PIN_ENV"), HW_ERR_PIN_SOURCE);

	/* Administrators write PIN files with an editor: a final newline. */
	fmt(src, sizeof src, "%s\n", T.user_pin);
	{
		char s2[600];

		make_pin_source(s2, sizeof s2, "pin-nl", src);
		EXPECT_OK(login_with_source(s2));
	}
}

static void test_pin_from_uri(void)
{
	char uri[1024];

	fmt(uri, sizeof uri, "%s?pin-value=%s", T.token_uri, T.user_pin);
	EXPECT_OK(open_and_login(T.module, uri, NULL));
	fmt(uri, sizeof uri, "%s?pin-source=file:%s", T.token_uri, T.user_pin_file);
	EXPECT_OK(open_and_login(T.module, uri, NULL));
	/* An explicit pin source wins over the URI's. */
	fmt(uri, sizeof uri, "%s?pin-value=00000000", T.token_uri);
	EXPECT_OK(open_and_login(T.module, uri, T.pin_source));
}

struct cb_state {
	const char *pin;
	int calls;
	char what[256];
	hw_err answer;
};

static hw_err pin_cb(const char *what, char *buf, size_t max, size_t *len, void *arg)
{
	struct cb_state *st = arg;
	size_t n = strlen(st->pin);

	st->calls++;
	fmt(st->what, sizeof st->what, "%s", what ? what : "");
	if (st->answer != HW_OK)
		return st->answer;
	if (n > max)
		return HW_ERR_CANCELLED;
	memcpy(buf, st->pin, n);
	*len = n;
	return HW_OK;
}

static hw_err login_with_callback(struct cb_state *st, const char *source)
{
	hw_ctx *ctx = NULL;
	hw_err rc = hw_ctx_new(&ctx);

	if (rc != HW_OK)
		return rc;
	if ((rc = hw_ctx_set_module(ctx, T.module)) == HW_OK &&
	    (rc = hw_ctx_set_token(ctx, T.token_uri)) == HW_OK &&
	    (!source || (rc = hw_ctx_set_pin_source(ctx, source)) == HW_OK)) {
		if (st)
			hw_ctx_set_pin_callback(ctx, pin_cb, st);
		if ((rc = hw_ctx_open(ctx)) == HW_OK)
			rc = hw_ctx_login(ctx);
	}
	hw_ctx_free(ctx);
	return rc;
}

static void test_pin_callback(void)
{
	struct cb_state st = { T.user_pin, 0, "", HW_OK };

	EXPECT_OK(login_with_callback(&st, "prompt"));
	EXPECT_INT(st.calls, 1);
	CU_ASSERT(st.what[0] != '\0');
	if (strstr(st.what, "hsmwrap-test") == NULL)
		FAIL("callback's `what` does not name the token", st.what);

	st.calls = 0;
	st.answer = HW_ERR_CANCELLED;
	EXPECT(login_with_callback(&st, "prompt"), HW_ERR_CANCELLED);
	EXPECT_INT(st.calls, 1);

	/* "prompt" without a callback has nobody to ask. */
	CU_ASSERT(login_with_callback(NULL, "prompt") != HW_OK);
}

static void test_wrong_pin(void)
{
	char src[600], uri[600];
	hw_ctx *ctx = NULL;
	hw_key *k = (hw_key *)&T;
	unsigned long ckrv = 0;
	hw_err rc;

	/* Token 2 and two failures only: SoftHSM may lock the PIN later. */
	make_pin_source(src, sizeof src, "wrong.pin", "0000000000000000");
	REQUIRE_OK(open_ctx(T.module, token2_uri(uri, sizeof uri), src, &ctx));
	rc = hw_ctx_login(ctx);
	ckrv = hw_last_ckrv();
	EXPECT(rc, HW_ERR_PIN_INCORRECT);
	EXPECT_INT(ckrv, CKR_PIN_INCORRECT_VALUE);
	CU_ASSERT(hw_last_detail() != NULL);
	/* An operation that logs in implicitly says the same. */
	EXPECT(hw_key_find(ctx, "lib-env", &k), HW_ERR_PIN_INCORRECT);
	CU_ASSERT(k == (hw_key *)&T);
	hw_ctx_free(ctx);

	/* The right PIN still works afterwards. */
	fmt(src, sizeof src, "file:%s", T.user_pin_file2);
	EXPECT_OK(open_and_login(T.module, uri, src));
}

static void *read_ckrv_thread(void *arg)
{
	unsigned long *out = arg;

	*out = hw_last_ckrv();
	return NULL;
}

static void test_last_ckrv_per_thread(void)
{
	char src[600], uri[600];
	unsigned long other = 12345;
	pthread_t th;
	hw_ectx *ec = NULL;

	make_pin_source(src, sizeof src, "wrong2.pin", "1111111111111111");
	EXPECT(open_and_login(T.module, token2_uri(uri, sizeof uri), src),
	       HW_ERR_PIN_INCORRECT);
	EXPECT_INT(hw_last_ckrv(), CKR_PIN_INCORRECT_VALUE);
	CU_ASSERT_FATAL(pthread_create(&th, NULL, read_ckrv_thread, &other) == 0);
	pthread_join(th, NULL);
	EXPECT_INT(other, 0);
	/* A later failure without PKCS#11 involvement resets it. */
	REQUIRE_OK(hw_ectx_new(&ec));
	EXPECT_OK(hw_ectx_add(ec, "a", "1"));
	CU_ASSERT(hw_ectx_add(ec, "a", "1") != HW_OK);
	EXPECT_INT(hw_last_ckrv(), 0);
	hw_ectx_free(ec);
	/* Make sure token 2 is still usable (counter reset). */
	fmt(src, sizeof src, "file:%s", T.user_pin_file2);
	EXPECT_OK(open_and_login(T.module, uri, src));
}

static void test_token_init(void)
{
	char so[40], user[40], so_src[600], user_src[600];
	unsigned long slot = 0xdeadbeef;
	hw_token_info *list = NULL;
	size_t n = 0;
	hw_ctx *ctx = NULL;
	hw_key *k = NULL;
	int i;

	random_hex(so, 8);
	random_hex(user, 8);
	make_pin_source(so_src, sizeof so_src, "init-so.pin", so);
	make_pin_source(user_src, sizeof user_src, "init-user.pin", user);
	REQUIRE_OK(hw_token_init(T.ctx, "lib-init", so_src, user_src, &slot));
	CU_ASSERT(slot != 0xdeadbeef);

	REQUIRE_OK(hw_token_list(T.ctx, &list, &n));
	i = find_token(list, n, "lib-init");
	CU_ASSERT(i >= 0);
	if (i >= 0) {
		EXPECT_INT(list[i].slot_id, slot);
		EXPECT_INT(list[i].token_initialized, 1);
		EXPECT_INT(list[i].user_pin_initialized, 1);
	}
	hw_free(list);

	REQUIRE_OK(open_ctx(T.module, "pkcs11:token=lib-init", user_src, &ctx));
	EXPECT_OK(hw_key_generate(ctx, "on-new-token", HW_KEY_AES256,
	                          HW_PURPOSE_ENVELOPE, &k));
	if (k) {
		uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN];
		uint8_t *w = NULL;
		size_t wl = 0;

		EXPECT_OK(hw_datakey_generate(k, NULL, pt, &w, &wl));
		EXPECT_OK(hw_datakey_decrypt(ctx, NULL, NULL, w, wl, back));
		CU_ASSERT(memcmp(pt, back, sizeof pt) == 0);
		hw_free(w);
		hw_key_free(k);
	}
	hw_ctx_free(ctx);
	/* The user PIN really is the one from the source, and only it. */
	EXPECT(open_and_login(T.module, "pkcs11:token=lib-init", T.pin_source),
	       HW_ERR_PIN_INCORRECT);
}

/* ------------------------------------------------------------------ */
/* Suite "keys".                                                        */

static unsigned type_bits(hw_key_type t)
{
	switch (t) {
	case HW_KEY_AES256: return 256;
	case HW_KEY_RSA2048: return 2048;
	case HW_KEY_RSA3072: return 3072;
	case HW_KEY_RSA4096: return 4096;
	case HW_KEY_EC_P256: return 256;
	case HW_KEY_EC_P384: return 384;
	case HW_KEY_EC_P521: return 521;
	case HW_KEY_ED25519: return 255;
	case HW_KEY_ED448: return 448;
	case HW_KEY_RSA2048_PSS: return 2048;
	case HW_KEY_RSA3072_PSS: return 3072;
	case HW_KEY_RSA4096_PSS: return 4096;
	}
	return 0;
}

static int is_pair(hw_key_type t)
{
	return t != HW_KEY_AES256;
}

static int combination_valid(hw_key_type t, hw_purpose p)
{
	if (t == HW_KEY_AES256)
		return p == HW_PURPOSE_ENVELOPE || p == HW_PURPOSE_KEYWRAP;
	return p == HW_PURPOSE_SIGN;
}

static void hex_to_pct(const char *hex, char *out, size_t max)
{
	size_t i, o = 0;

	for (i = 0; hex[i] && hex[i + 1] && o + 4 < max; i += 2) {
		out[o++] = '%';
		out[o++] = hex[i];
		out[o++] = hex[i + 1];
	}
	out[o] = '\0';
}

/* The key's URI, parsed by p11-kit, names this very object. */
static void check_key_uri(const hw_key_info *in, hw_key_type t)
{
	P11KitUri *u = p11_kit_uri_new();
	CK_ATTRIBUTE *a;
	char hex[300];
	CK_ULONG i;

	CU_ASSERT_FATAL(u != NULL);
	if (strncmp(in->uri, "pkcs11:", 7) != 0)
		FAIL("key URI does not start with pkcs11:", in->uri);
	if (p11_kit_uri_parse(in->uri, P11_KIT_URI_FOR_ANY, u) != P11_KIT_URI_OK) {
		FAIL("p11-kit cannot parse the key URI", in->uri);
		p11_kit_uri_free(u);
		return;
	}
	a = p11_kit_uri_get_attribute(u, CKA_LABEL);
	if (!a || a->ulValueLen != strlen(in->label) ||
	    memcmp(a->pValue, in->label, a->ulValueLen) != 0)
		FAIL("key URI lacks object=<label>", in->uri);
	a = p11_kit_uri_get_attribute(u, CKA_ID);
	if (!a || a->ulValueLen * 2 >= sizeof hex) {
		FAIL("key URI lacks id=", in->uri);
	} else {
		for (i = 0; i < a->ulValueLen; i++)
			sprintf(hex + 2 * i, "%02x", ((unsigned char *)a->pValue)[i]);
		hex[2 * a->ulValueLen] = '\0';
		EXPECT_STR(hex, in->id_hex);
	}
	a = p11_kit_uri_get_attribute(u, CKA_CLASS);
	if (a && a->ulValueLen == sizeof(CK_OBJECT_CLASS)) {
		CK_OBJECT_CLASS c;

		memcpy(&c, a->pValue, sizeof c);
		EXPECT_INT(c, is_pair(t) ? CKO_PRIVATE_KEY : CKO_SECRET_KEY);
	}
	p11_kit_uri_free(u);
}

static void check_usage(const hw_key_info *in, hw_purpose p, hw_key_type t)
{
	switch (p) {
	case HW_PURPOSE_ENVELOPE:
		EXPECT_INT(in->encrypt, 1);
		EXPECT_INT(in->decrypt, 1);
		EXPECT_INT(in->wrap, 0);
		EXPECT_INT(in->unwrap, 0);
		EXPECT_INT(in->sign, 0);
		EXPECT_INT(in->verify, 0);
		EXPECT_INT(in->derive, 0);
		break;
	case HW_PURPOSE_KEYWRAP:
		EXPECT_INT(in->encrypt, 0);
		EXPECT_INT(in->decrypt, 0);
		EXPECT_INT(in->wrap, 1);
		EXPECT_INT(in->unwrap, 1);
		EXPECT_INT(in->sign, 0);
		EXPECT_INT(in->verify, 0);
		EXPECT_INT(in->derive, 0);
		break;
	case HW_PURPOSE_SIGN:
		/* The private half: encrypt/wrap/verify do not apply (-1). */
		EXPECT_INT(in->sign, 1);
		EXPECT_INT(in->decrypt, 0);
		EXPECT_INT(in->unwrap, 0);
		EXPECT_INT(in->derive, 0);
		CU_ASSERT(in->encrypt != 1);
		CU_ASSERT(in->wrap != 1);
		CU_ASSERT(in->verify != 1);
		break;
	default:
		FAIL("unexpected purpose", hw_purpose_name(p));
	}
	(void)t;
}

static void check_key(hw_key *key, const char *label, hw_key_type t, hw_purpose p)
{
	hw_key_info in;
	hw_key *again = NULL;
	char spec[1200], pct[300];

	memset(&in, 0, sizeof in);
	REQUIRE_OK(hw_key_info_get(key, &in));
	EXPECT_STR(hw_key_label(key), label);
	EXPECT_STR(in.label, label);
	EXPECT_INT(in.type, t);
	EXPECT_STR(in.type_name, hw_key_type_name(t));
	EXPECT_INT(in.bits, type_bits(t));
	EXPECT_INT(in.purpose, p);
	EXPECT_INT(in.token, 1);
	EXPECT_INT(in.private_, 1);
	EXPECT_INT(in.sensitive, 1);
	EXPECT_INT(in.extractable, 0);
	EXPECT_INT(in.always_sensitive, 1);
	EXPECT_INT(in.never_extractable, 1);
	EXPECT_INT(in.local, 1);
	check_usage(&in, p, t);

	/* A fresh random 16-byte CKA_ID, lowercase hex. */
	CU_ASSERT(is_hex(in.id_hex, 32));
	CU_ASSERT(is_lower_hex(in.id_hex));
	if (is_pair(t)) {
		EXPECT_STR(in.kcv_alg, "SHA256-SPKI");
		if (!is_hex(in.kcv, 64))
			FAIL("pair fingerprint is not 64 hex digits", in.kcv);
	} else {
		EXPECT_STR(in.kcv_alg, "AES-ECB-zero");
		if (!is_hex(in.kcv, 6))
			FAIL("AES KCV is not 6 hex digits", in.kcv);
	}

	check_key_uri(&in, t);
	/* The URI, the label, id:HEX and a hand-made id URI all find it. */
	EXPECT_OK(hw_key_find(T.ctx, in.uri, &again));
	if (again) {
		hw_key_info in2;

		EXPECT_OK(hw_key_info_get(again, &in2));
		EXPECT_STR(in2.id_hex, in.id_hex);
		EXPECT_STR(in2.kcv, in.kcv);
		hw_key_free(again);
		again = NULL;
	}
	fmt(spec, sizeof spec, "id:%s", in.id_hex);
	EXPECT_OK(hw_key_find(T.ctx, spec, &again));
	if (again) {
		EXPECT_STR(hw_key_label(again), label);
		hw_key_free(again);
		again = NULL;
	}
	hex_to_pct(in.id_hex, pct, sizeof pct);
	fmt(spec, sizeof spec, "pkcs11:id=%s", pct);
	EXPECT_OK(hw_key_find(T.ctx, spec, &again));
	if (again) {
		EXPECT_STR(hw_key_label(again), label);
		hw_key_free(again);
		again = NULL;
	}
	fmt(spec, sizeof spec, "pkcs11:object=%s", label);
	EXPECT_OK(hw_key_find(T.ctx, spec, &again));
	hw_key_free(again);
}

static void test_generate_all_combinations(void)
{
	static const hw_key_type types[] = {
		HW_KEY_AES256, HW_KEY_RSA2048, HW_KEY_RSA3072, HW_KEY_RSA4096,
		HW_KEY_EC_P256, HW_KEY_EC_P384, HW_KEY_EC_P521, HW_KEY_ED25519, HW_KEY_ED448,
		HW_KEY_RSA2048_PSS,
	};
	static const hw_purpose purposes[] = {
		HW_PURPOSE_NONE, HW_PURPOSE_ENVELOPE, HW_PURPOSE_KEYWRAP,
		HW_PURPOSE_SIGN,
	};
	unsigned i, j;
	char kcvs[8][65];
	unsigned nkcv = 0;

	for (i = 0; i < sizeof types / sizeof types[0]; i++) {
		for (j = 0; j < sizeof purposes / sizeof purposes[0]; j++) {
			hw_key_type t = types[i];
			hw_purpose p = purposes[j];
			char label[64];
			hw_key *k = NULL, *probe = (hw_key *)&T;
			hw_err rc;

			fmt(label, sizeof label, "gen-%s-%s", hw_key_type_name(t),
			         p == HW_PURPOSE_NONE ? "none" : hw_purpose_name(p));
			rc = hw_key_generate(T.ctx, label, t, p, &k);
			if (!combination_valid(t, p)) {
				if (rc == HW_OK) {
					FAIL("key generated for an invalid type/purpose", label);
					hw_key_free(k);
				}
				EXPECT(hw_key_find(T.ctx, label, &probe), HW_ERR_KEY_NOT_FOUND);
				CU_ASSERT(probe == (hw_key *)&T);
				continue;
			}
			if (rc != HW_OK) {
				check_rc(rc, HW_OK, label, __FILE__, __LINE__, CU_FALSE);
				continue;
			}
			check_key(k, label, t, p);
			if (nkcv < 8) {
				hw_key_info in;

				if (hw_key_info_get(k, &in) == HW_OK)
					fmt(kcvs[nkcv++], sizeof kcvs[0], "%s", in.kcv);
			}
			hw_key_free(k);
		}
	}
	/* Different keys, different check values. */
	for (i = 0; i < nkcv; i++)
		for (j = 0; j < i; j++)
			if (strcmp(kcvs[i], kcvs[j]) == 0)
				FAIL("two keys share a KCV/fingerprint", kcvs[i]);
}

static void test_fixture_keys(void)
{
	/* The fixtures were made in suite init; check them too. */
	check_key(T.env, "lib-env", HW_KEY_AES256, HW_PURPOSE_ENVELOPE);
	check_key(T.kw, "lib-kw", HW_KEY_AES256, HW_PURPOSE_KEYWRAP);
	check_key(T.sign, "lib-sign", HW_KEY_EC_P256, HW_PURPOSE_SIGN);
}

static void test_duplicate_label(void)
{
	hw_key *k = (hw_key *)&T;

	EXPECT(hw_key_generate(T.ctx, "lib-env", HW_KEY_AES256,
	                       HW_PURPOSE_ENVELOPE, &k), HW_ERR_KEY_EXISTS);
	EXPECT(hw_key_generate(T.ctx, "lib-env", HW_KEY_AES256,
	                       HW_PURPOSE_KEYWRAP, &k), HW_ERR_KEY_EXISTS);
	EXPECT(hw_key_generate(T.ctx, "lib-env", HW_KEY_EC_P256,
	                       HW_PURPOSE_SIGN, &k), HW_ERR_KEY_EXISTS);
	EXPECT(hw_key_generate(T.ctx, "lib-sign", HW_KEY_AES256,
	                       HW_PURPOSE_ENVELOPE, &k), HW_ERR_KEY_EXISTS);
	CU_ASSERT(k == (hw_key *)&T);
}

static void test_find_errors(void)
{
	hw_key *k = (hw_key *)&T;
	hw_err rc;

	EXPECT(hw_key_find(T.ctx, "no-such-key", &k), HW_ERR_KEY_NOT_FOUND);
	EXPECT(hw_key_find(T.ctx, "id:00112233445566778899aabbccddeeff", &k),
	       HW_ERR_KEY_NOT_FOUND);
	EXPECT(hw_key_find(T.ctx, "pkcs11:object=no-such-key", &k),
	       HW_ERR_KEY_NOT_FOUND);
	EXPECT(hw_key_find(T.ctx, "pkcs11:object=lib-env;type=private", &k),
	       HW_ERR_KEY_NOT_FOUND);
	EXPECT(hw_key_find(T.ctx, "pkcs11:object=%zz", &k), HW_ERR_URI);
	rc = hw_key_find(T.ctx, "id:xyz", &k);
	CU_ASSERT(rc == HW_ERR_INVALID_ARG || rc == HW_ERR_KEY_NOT_FOUND);
	CU_ASSERT(rc != HW_OK);
	CU_ASSERT(k == (hw_key *)&T);
	/* type= narrows the search. */
	k = NULL;
	EXPECT_OK(hw_key_find(T.ctx, "pkcs11:object=lib-env;type=secret-key", &k));
	hw_key_free(k);
	k = NULL;
	EXPECT_OK(hw_key_find(T.ctx, "pkcs11:object=lib-sign;type=private", &k));
	hw_key_free(k);
}

static void test_list(void)
{
	static const char *const want[] = { "lib-env", "lib-env2", "lib-kw",
	                                    "lib-kw2", "lib-sign" };
	hw_key **keys = NULL;
	size_t n = 0, i, w;

	REQUIRE_OK(hw_key_list(T.ctx, &keys, &n));
	for (w = 0; w < sizeof want / sizeof want[0]; w++) {
		int count = 0;

		for (i = 0; i < n; i++)
			if (strcmp(hw_key_label(keys[i]), want[w]) == 0)
				count++;
		/* A pair is listed once, by its private half. */
		if (count != 1)
			FAIL("key not listed exactly once", want[w]);
	}
	for (i = 0; i < n; i++) {
		hw_key_info in;

		EXPECT_OK(hw_key_info_get(keys[i], &in));
	}
	hw_key_list_free(keys, n);
}

static void destroy_and_check(hw_key_type t, hw_purpose p, const char *label)
{
	hw_key *k = NULL, *probe = (hw_key *)&T;
	hw_key **keys = NULL;
	size_t n = 0, i;

	REQUIRE_OK(hw_key_generate(T.ctx, label, t, p, &k));
	EXPECT_OK(hw_key_destroy(k));
	hw_key_free(k);
	EXPECT(hw_key_find(T.ctx, label, &probe), HW_ERR_KEY_NOT_FOUND);
	CU_ASSERT(probe == (hw_key *)&T);
	EXPECT_OK(hw_key_list(T.ctx, &keys, &n));
	for (i = 0; i < n; i++)
		if (strcmp(hw_key_label(keys[i]), label) == 0)
			FAIL("destroyed key still listed", label);
	hw_key_list_free(keys, n);
	/* Both halves are gone: the label is free again. */
	k = NULL;
	EXPECT_OK(hw_key_generate(T.ctx, label, t, p, &k));
	hw_key_free(k);
}

static void test_destroy(void)
{
	destroy_and_check(HW_KEY_AES256, HW_PURPOSE_ENVELOPE, "doomed-aes");
	destroy_and_check(HW_KEY_EC_P256, HW_PURPOSE_SIGN, "doomed-ec");
	destroy_and_check(HW_KEY_RSA2048, HW_PURPOSE_SIGN, "doomed-rsa");
}

/* ------------------------------------------------------------------ */
/* Suite "operations": encrypt, data keys, wrap.                        */

static int ops_init(void)
{
	struct { const char *label; hw_key_type t; hw_purpose p; hw_key **out; } f[] = {
		{ "lib-env2", HW_KEY_AES256, HW_PURPOSE_ENVELOPE, &T.env2 },
		{ "lib-kw", HW_KEY_AES256, HW_PURPOSE_KEYWRAP, &T.kw },
		{ "lib-kw2", HW_KEY_AES256, HW_PURPOSE_KEYWRAP, &T.kw2 },
		{ "lib-sign", HW_KEY_EC_P256, HW_PURPOSE_SIGN, &T.sign },
	};
	unsigned i;

	if (!T.ctx || !T.env)
		return 1;
	for (i = 0; i < sizeof f / sizeof f[0]; i++) {
		hw_err rc = hw_key_generate(T.ctx, f[i].label, f[i].t, f[i].p, f[i].out);

		if (rc != HW_OK) {
			fprintf(stderr, "fixture key %s: %s (%s)\n", f[i].label,
			        hw_errname(rc), hw_last_detail());
			return 1;
		}
	}
	return 0;
}

typedef hw_err (*tamper_fn)(const uint8_t *blob, size_t len, void *arg);

/* Every single-bit flip and every truncation must fail, cleanly. */
static void tamper_all(const char *what, const uint8_t *blob, size_t len,
                       tamper_fn fn, void *arg)
{
	uint8_t *copy = malloc(len + 1);
	size_t i;
	unsigned bit, bad = 0;
	char msg[256];

	CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			hw_err rc;

			memcpy(copy, blob, len);
			copy[i] ^= (uint8_t)(1u << bit);
			rc = fn(copy, len, arg);
			if (!is_tamper_error(rc) && bad++ < 5) {
				fmt(msg, sizeof msg, "%s: flip of byte %zu bit %u gave %s",
				         what, i, bit, hw_errname(rc));
				FAIL(msg, hw_last_detail());
			}
		}
	}
	for (i = 0; i < len; i++) {
		hw_err rc;

		memcpy(copy, blob, i);
		rc = fn(copy, i, arg);
		if (!is_tamper_error(rc) && bad++ < 10) {
			fmt(msg, sizeof msg, "%s: truncation to %zu bytes gave %s",
			         what, i, hw_errname(rc));
			FAIL(msg, hw_last_detail());
		}
	}
	memcpy(copy, blob, len);
	copy[len] = 0;
	{
		hw_err rc = fn(copy, len + 1, arg);

		if (!is_tamper_error(rc)) {
			fmt(msg, sizeof msg, "%s: one extra byte gave %s", what,
			         hw_errname(rc));
			FAIL(msg, hw_last_detail());
		}
	}
	CU_ASSERT(bad == 0);
	free(copy);
}

/* -- direct -- */

static const uint8_t AAD[] = "tenant=acme;purpose=test";

static void test_direct_roundtrip(void)
{
	static const size_t sizes[] = { 0, 1, 16, 4096, HW_DIRECT_MAX };
	hw_key_info ki;
	unsigned i;

	REQUIRE_OK(hw_key_info_get(T.env, &ki));
	for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i], bl = 0, ol = 0;
		uint8_t *pt = malloc(n + 1), *blob = NULL, *out = NULL;
		hw_blob_info bi;

		CU_ASSERT_PTR_NOT_NULL_FATAL(pt);
		random_bytes(pt, n);
		EXPECT_OK(hw_encrypt(T.env, pt, n, AAD, sizeof AAD, &blob, &bl));
		if (!blob) {
			free(pt);
			continue;
		}
		CU_ASSERT(bl > n + 16 + 12);
		EXPECT_OK(hw_decrypt(T.ctx, T.env, blob, bl, AAD, sizeof AAD, &out, &ol));
		EXPECT_INT(ol, n);
		if (ol == n && n > 0)
			CU_ASSERT(out && memcmp(out, pt, n) == 0);
		hw_free_secret(out, ol);
		out = NULL;
		/* The blob names its key. */
		EXPECT_OK(hw_decrypt(T.ctx, NULL, blob, bl, AAD, sizeof AAD, &out, &ol));
		EXPECT_INT(ol, n);
		if (ol == n && n > 0)
			CU_ASSERT(out && memcmp(out, pt, n) == 0);
		hw_free_secret(out, ol);

		memset(&bi, 0, sizeof bi);
		EXPECT_OK(hw_blob_inspect(blob, bl, &bi));
		EXPECT_INT(bi.kind, HW_BLOB_DIRECT);
		CU_ASSERT(bi.version >= 1);
		EXPECT_STR(bi.key_label, "lib-env");
		EXPECT_STR(bi.key_id_hex, ki.id_hex);
		EXPECT_INT(bi.payload_len, n + 16);
		hw_free(blob);
		free(pt);
	}
}

static void test_direct_no_aad_and_random_iv(void)
{
	uint8_t pt[32], *b1 = NULL, *b2 = NULL, *out = NULL;
	size_t l1 = 0, l2 = 0, ol = 0;

	random_bytes(pt, sizeof pt);
	REQUIRE_OK(hw_encrypt(T.env, pt, sizeof pt, NULL, 0, &b1, &l1));
	REQUIRE_OK(hw_encrypt(T.env, pt, sizeof pt, NULL, 0, &b2, &l2));
	EXPECT_INT(l1, l2);
	CU_ASSERT(l1 != l2 || memcmp(b1, b2, l1) != 0);
	EXPECT_OK(hw_decrypt(T.ctx, T.env, b1, l1, NULL, 0, &out, &ol));
	CU_ASSERT(ol == sizeof pt && out && memcmp(out, pt, sizeof pt) == 0);
	hw_free_secret(out, ol);
	out = NULL;
	EXPECT(hw_decrypt(T.ctx, T.env, b1, l1, AAD, sizeof AAD, &out, &ol),
	       HW_ERR_INTEGRITY);
	CU_ASSERT_PTR_NULL(out);
	hw_free(b1);
	hw_free(b2);
}

static void test_direct_too_large(void)
{
	size_t n = HW_DIRECT_MAX + 1;
	uint8_t *pt = calloc(1, n), *blob = (uint8_t *)&T;
	size_t bl = 12345;

	CU_ASSERT_PTR_NOT_NULL_FATAL(pt);
	EXPECT(hw_encrypt(T.env, pt, n, NULL, 0, &blob, &bl), HW_ERR_TOO_LARGE);
	CU_ASSERT(blob == (uint8_t *)&T);
	EXPECT_INT(bl, 12345);
	free(pt);
}

static void test_direct_wrong_aad(void)
{
	static const uint8_t other[] = "tenant=evil;purpose=test";
	uint8_t pt[40], *blob = NULL, *out = NULL;
	size_t bl = 0, ol = 0;

	random_bytes(pt, sizeof pt);
	REQUIRE_OK(hw_encrypt(T.env, pt, sizeof pt, AAD, sizeof AAD, &blob, &bl));
	EXPECT(hw_decrypt(T.ctx, T.env, blob, bl, other, sizeof other, &out, &ol),
	       HW_ERR_INTEGRITY);
	EXPECT(hw_decrypt(T.ctx, T.env, blob, bl, NULL, 0, &out, &ol), HW_ERR_INTEGRITY);
	EXPECT(hw_decrypt(T.ctx, T.env, blob, bl, AAD, sizeof AAD - 1, &out, &ol),
	       HW_ERR_INTEGRITY);
	CU_ASSERT_PTR_NULL(out);
	hw_free(blob);
}

struct dec_arg { hw_key *key; };

static hw_err try_decrypt(const uint8_t *blob, size_t len, void *arg)
{
	struct dec_arg *a = arg;
	uint8_t *out = NULL;
	size_t ol = 0;
	hw_err rc = hw_decrypt(T.ctx, a->key, blob, len, AAD, sizeof AAD, &out, &ol);

	if (rc == HW_OK)
		hw_free_secret(out, ol);
	return rc;
}

static void test_direct_tamper(void)
{
	uint8_t pt[40], *blob = NULL;
	size_t bl = 0;
	struct dec_arg with = { T.env }, without = { NULL };

	random_bytes(pt, sizeof pt);
	REQUIRE_OK(hw_encrypt(T.env, pt, sizeof pt, AAD, sizeof AAD, &blob, &bl));
	CU_ASSERT(try_decrypt(blob, bl, &with) == HW_OK);
	tamper_all("direct, key given", blob, bl, try_decrypt, &with);
	tamper_all("direct, key from blob", blob, bl, try_decrypt, &without);
	hw_free(blob);
}

static void test_direct_other_key_and_purpose(void)
{
	uint8_t pt[16] = "sixteen bytes!!", *blob = (uint8_t *)&T, *out = NULL;
	size_t bl = 0, ol = 0;

	EXPECT(hw_encrypt(T.kw, pt, sizeof pt, NULL, 0, &blob, &bl), HW_ERR_KEY_PURPOSE);
	EXPECT(hw_encrypt(T.sign, pt, sizeof pt, NULL, 0, &blob, &bl), HW_ERR_KEY_PURPOSE);
	CU_ASSERT(blob == (uint8_t *)&T);
	blob = NULL;
	REQUIRE_OK(hw_encrypt(T.env, pt, sizeof pt, NULL, 0, &blob, &bl));
	EXPECT(hw_decrypt(T.ctx, T.env2, blob, bl, NULL, 0, &out, &ol), HW_ERR_WRONG_KEY);
	CU_ASSERT_PTR_NULL(out);
	hw_free(blob);
}

/* A failed operation must not spoil the (only) pooled session for the next. */
static void test_pool_after_failure(void)
{
	hw_ctx *ctx = NULL;
	hw_key *k = NULL;
	uint8_t pt[24], *blob = NULL, *out = NULL, *empty = NULL;
	size_t bl = 0, ol = 0, el = 0;
	int round;

	REQUIRE_OK(hw_ctx_new(&ctx));
	hw_ctx_set_pool_size(ctx, 1);
	EXPECT_OK(hw_ctx_set_module(ctx, T.module));
	EXPECT_OK(hw_ctx_set_token(ctx, T.token_uri));
	EXPECT_OK(hw_ctx_set_pin_source(ctx, T.pin_source));
	EXPECT_OK(hw_ctx_open(ctx));
	EXPECT_OK(hw_key_find(ctx, "lib-env", &k));
	if (!k) {
		hw_ctx_free(ctx);
		return;
	}
	random_bytes(pt, sizeof pt);
	EXPECT_OK(hw_encrypt(k, pt, sizeof pt, NULL, 0, &blob, &bl));
	for (round = 0; blob && round < 3; round++) {
		blob[bl - 1] ^= 1;
		EXPECT(hw_decrypt(ctx, k, blob, bl, NULL, 0, &out, &ol), HW_ERR_INTEGRITY);
		blob[bl - 1] ^= 1;
		out = NULL;
		EXPECT_OK(hw_decrypt(ctx, k, blob, bl, NULL, 0, &out, &ol));
		CU_ASSERT(ol == sizeof pt && out && memcmp(out, pt, ol) == 0);
		hw_free_secret(out, ol);
		out = NULL;
	}
	/* Empty plaintext, even without a buffer. */
	EXPECT_OK(hw_encrypt(k, NULL, 0, NULL, 0, &empty, &el));
	if (empty) {
		EXPECT_OK(hw_decrypt(ctx, k, empty, el, NULL, 0, &out, &ol));
		EXPECT_INT(ol, 0);
		hw_free_secret(out, ol);
	}
	hw_free(empty);
	hw_free(blob);
	hw_key_free(k);
	hw_ctx_free(ctx);
}

/* -- data keys -- */

static const char *const CTX_AB[] = { "a=1", "b=2", NULL };
static const char *const CTX_BA[] = { "b=2", "a=1", NULL };

static void test_datakey_roundtrip(void)
{
	hw_ectx *ab = ectx_of(CTX_AB), *ba = ectx_of(CTX_BA);
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN], zero[HW_DATAKEY_LEN] = { 0 };
	uint8_t *w = NULL;
	size_t wl = 0;
	hw_blob_info bi;
	hw_key_info ki;

	CU_ASSERT_FATAL(ab && ba);
	REQUIRE_OK(hw_datakey_generate(T.env, ab, pt, &w, &wl));
	CU_ASSERT(memcmp(pt, zero, sizeof pt) != 0);
	/* Context order does not matter. */
	memset(back, 0, sizeof back);
	EXPECT_OK(hw_datakey_decrypt(T.ctx, T.env, ba, w, wl, back));
	CU_ASSERT(memcmp(pt, back, sizeof pt) == 0);
	memset(back, 0, sizeof back);
	EXPECT_OK(hw_datakey_decrypt(T.ctx, NULL, ab, w, wl, back));
	CU_ASSERT(memcmp(pt, back, sizeof pt) == 0);

	REQUIRE_OK(hw_key_info_get(T.env, &ki));
	memset(&bi, 0, sizeof bi);
	EXPECT_OK(hw_blob_inspect(w, wl, &bi));
	EXPECT_INT(bi.kind, HW_BLOB_DATAKEY);
	CU_ASSERT(bi.version >= 1);
	EXPECT_STR(bi.key_label, "lib-env");
	EXPECT_STR(bi.key_id_hex, ki.id_hex);
	EXPECT_INT(bi.payload_len, HW_DATAKEY_LEN + 16);
	hw_free(w);
	hw_ectx_free(ab);
	hw_ectx_free(ba);
}

static void test_datakey_empty_context(void)
{
	hw_ectx *empty = ectx_of(NULL);
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN];
	uint8_t *w = NULL;
	size_t wl = 0;

	CU_ASSERT_FATAL(empty != NULL);
	REQUIRE_OK(hw_datakey_generate(T.env, NULL, pt, &w, &wl));
	EXPECT_OK(hw_datakey_decrypt(T.ctx, T.env, empty, w, wl, back));
	CU_ASSERT(memcmp(pt, back, sizeof pt) == 0);
	hw_free(w);
	w = NULL;
	REQUIRE_OK(hw_datakey_generate(T.env, empty, pt, &w, &wl));
	EXPECT_OK(hw_datakey_decrypt(T.ctx, T.env, NULL, w, wl, back));
	CU_ASSERT(memcmp(pt, back, sizeof pt) == 0);
	hw_free(w);
	hw_ectx_free(empty);
}

static void test_datakey_wrong_context(void)
{
	static const char *const wrong_value[] = { "a=1", "b=3", NULL };
	static const char *const missing[] = { "a=1", NULL };
	static const char *const extra[] = { "a=1", "b=2", "c=3", NULL };
	static const char *const key_case[] = { "A=1", "b=2", NULL };
	static const char *const swapped[] = { "a=2", "b=1", NULL };
	const char *const *bad[] = { wrong_value, missing, extra, key_case, swapped, NULL };
	hw_ectx *ab = ectx_of(CTX_AB);
	uint8_t pt[HW_DATAKEY_LEN], back[HW_DATAKEY_LEN], same[HW_DATAKEY_LEN];
	uint8_t *w = NULL;
	size_t wl = 0;
	unsigned i;

	CU_ASSERT_FATAL(ab != NULL);
	REQUIRE_OK(hw_datakey_generate(T.env, ab, pt, &w, &wl));
	memset(back, 0x5a, sizeof back);
	memcpy(same, back, sizeof same);
	for (i = 0; bad[i]; i++) {
		hw_ectx *ec = ectx_of(bad[i]);

		EXPECT(hw_datakey_decrypt(T.ctx, T.env, ec, w, wl, back), HW_ERR_INTEGRITY);
		hw_ectx_free(ec);
	}
	EXPECT(hw_datakey_decrypt(T.ctx, T.env, NULL, w, wl, back), HW_ERR_INTEGRITY);
	/* Nothing is written on failure. */
	CU_ASSERT(memcmp(back, same, sizeof back) == 0);
	hw_free(w);
	hw_ectx_free(ab);
}

static void test_datakey_fresh(void)
{
	uint8_t p1[HW_DATAKEY_LEN], p2[HW_DATAKEY_LEN];
	uint8_t *w1 = NULL, *w2 = NULL;
	size_t l1 = 0, l2 = 0;

	REQUIRE_OK(hw_datakey_generate(T.env, NULL, p1, &w1, &l1));
	REQUIRE_OK(hw_datakey_generate(T.env, NULL, p2, &w2, &l2));
	CU_ASSERT(memcmp(p1, p2, sizeof p1) != 0);
	CU_ASSERT(l1 != l2 || memcmp(w1, w2, l1) != 0);
	hw_free(w1);
	hw_free(w2);
}

static void test_datakey_purpose_and_other_key(void)
{
	uint8_t pt[HW_DATAKEY_LEN], keep[HW_DATAKEY_LEN];
	uint8_t *w = (uint8_t *)&T;
	size_t wl = 777;

	memset(pt, 0x5a, sizeof pt);
	memcpy(keep, pt, sizeof keep);
	EXPECT(hw_datakey_generate(T.kw, NULL, pt, &w, &wl), HW_ERR_KEY_PURPOSE);
	EXPECT(hw_datakey_generate(T.sign, NULL, pt, &w, &wl), HW_ERR_KEY_PURPOSE);
	CU_ASSERT(memcmp(pt, keep, sizeof pt) == 0);
	CU_ASSERT(w == (uint8_t *)&T);
	EXPECT_INT(wl, 777);

	w = NULL;
	REQUIRE_OK(hw_datakey_generate(T.env, NULL, pt, &w, &wl));
	EXPECT(hw_datakey_decrypt(T.ctx, T.env2, NULL, w, wl, keep), HW_ERR_WRONG_KEY);
	hw_free(w);
}

struct dk_arg { hw_key *key; hw_ectx *ec; };

static hw_err try_datakey(const uint8_t *blob, size_t len, void *arg)
{
	struct dk_arg *a = arg;
	uint8_t pt[HW_DATAKEY_LEN];

	return hw_datakey_decrypt(T.ctx, a->key, a->ec, blob, len, pt);
}

static void test_datakey_tamper(void)
{
	struct dk_arg with = { T.env, ectx_of(CTX_AB) }, without = { NULL, NULL };
	uint8_t pt[HW_DATAKEY_LEN];
	uint8_t *w = NULL;
	size_t wl = 0;

	without.ec = with.ec;
	CU_ASSERT_FATAL(with.ec != NULL);
	REQUIRE_OK(hw_datakey_generate(T.env, with.ec, pt, &w, &wl));
	CU_ASSERT(try_datakey(w, wl, &with) == HW_OK);
	tamper_all("datakey, key given", w, wl, try_datakey, &with);
	tamper_all("datakey, key from blob", w, wl, try_datakey, &without);
	hw_free(w);
	hw_ectx_free(with.ec);
}

/* -- wrap -- */

static size_t kwp_len(size_t n)
{
	return (n + 7) / 8 * 8 + 8;
}

static void test_wrap_roundtrip(void)
{
	static const size_t sizes[] = { 16, 24, 32, 17, 4096, 1, 8, 9, 4095 };
	hw_key_info ki;
	unsigned i;

	REQUIRE_OK(hw_key_info_get(T.kw, &ki));
	for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i], bl = 0, bl2 = 0, ol = 0;
		uint8_t *m = malloc(n), *blob = NULL, *blob2 = NULL, *out = NULL;
		hw_blob_info bi;

		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		random_bytes(m, n);
		if (n % 8 != 0) {
			/*
			 * SoftHSM 2.6's CKM_AES_KEY_WRAP_PAD zero-pads the value
			 * before RFC 5649 wrapping, so the result would not be RFC
			 * 5649 and unwrap could not restore the length: hsmwrap
			 * refuses instead of producing a non-standard blob.
			 */
			blob = (uint8_t *)&T;
			EXPECT(hw_wrap(T.kw, m, n, &blob, &bl), HW_ERR_UNSUPPORTED);
			CU_ASSERT(blob == (uint8_t *)&T);
			free(m);
			continue;
		}
		EXPECT_OK(hw_wrap(T.kw, m, n, &blob, &bl));
		if (!blob) {
			free(m);
			continue;
		}
		memset(&bi, 0, sizeof bi);
		EXPECT_OK(hw_blob_inspect(blob, bl, &bi));
		EXPECT_INT(bi.kind, HW_BLOB_WRAPPED);
		CU_ASSERT(bi.version >= 1);
		EXPECT_STR(bi.key_label, "lib-kw");
		EXPECT_STR(bi.key_id_hex, ki.id_hex);
		/* RFC 5649: the padded length plus the 8-byte integrity block. */
		EXPECT_INT(bi.payload_len, kwp_len(n));
		CU_ASSERT(bl > kwp_len(n));

		EXPECT_OK(hw_unwrap(T.ctx, T.kw, blob, bl, &out, &ol));
		EXPECT_INT(ol, n);
		if (out && ol == n)
			CU_ASSERT(memcmp(out, m, n) == 0);
		hw_free_secret(out, ol);
		out = NULL;
		EXPECT_OK(hw_unwrap(T.ctx, NULL, blob, bl, &out, &ol));
		EXPECT_INT(ol, n);
		if (out && ol == n)
			CU_ASSERT(memcmp(out, m, n) == 0);
		hw_free_secret(out, ol);

		/*
		 * KWP is deterministic (fixed AIV, no nonce): wrapping the same
		 * material again gives the same RFC 5649 ciphertext, which sits
		 * at the end of the blob.
		 */
		EXPECT_OK(hw_wrap(T.kw, m, n, &blob2, &bl2));
		if (blob2 && bl2 == bl && bl >= kwp_len(n))
			CU_ASSERT(memcmp(blob + bl - kwp_len(n), blob2 + bl2 - kwp_len(n),
			                 kwp_len(n)) == 0);
		hw_free(blob2);
		hw_free(blob);
		free(m);
	}
}

static void test_wrap_limits_and_purpose(void)
{
	uint8_t *m = calloc(1, HW_WRAP_MAX_MATERIAL + 1), *blob = (uint8_t *)&T;
	uint8_t *out = NULL;
	size_t bl = 4242, ol = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(m);
	EXPECT(hw_wrap(T.kw, m, HW_WRAP_MAX_MATERIAL + 1, &blob, &bl), HW_ERR_TOO_LARGE);
	CU_ASSERT(hw_wrap(T.kw, m, 0, &blob, &bl) != HW_OK);
	EXPECT(hw_wrap(T.env, m, 32, &blob, &bl), HW_ERR_KEY_PURPOSE);
	EXPECT(hw_wrap(T.sign, m, 32, &blob, &bl), HW_ERR_KEY_PURPOSE);
	CU_ASSERT(blob == (uint8_t *)&T);
	EXPECT_INT(bl, 4242);

	blob = NULL;
	random_bytes(m, 32);
	REQUIRE_OK(hw_wrap(T.kw, m, 32, &blob, &bl));
	EXPECT(hw_unwrap(T.ctx, T.kw2, blob, bl, &out, &ol), HW_ERR_WRONG_KEY);
	CU_ASSERT_PTR_NULL(out);
	hw_free(blob);
	free(m);
}

static hw_err try_unwrap(const uint8_t *blob, size_t len, void *arg)
{
	struct dec_arg *a = arg;
	uint8_t *out = NULL;
	size_t ol = 0;
	hw_err rc = hw_unwrap(T.ctx, a->key, blob, len, &out, &ol);

	if (rc == HW_OK)
		hw_free_secret(out, ol);
	return rc;
}

static void test_wrap_tamper(void)
{
	struct dec_arg with = { T.kw }, without = { NULL };
	uint8_t m[32], *blob = NULL;
	size_t bl = 0;

	random_bytes(m, sizeof m);
	REQUIRE_OK(hw_wrap(T.kw, m, sizeof m, &blob, &bl));
	CU_ASSERT(try_unwrap(blob, bl, &with) == HW_OK);
	tamper_all("wrapped, key given", blob, bl, try_unwrap, &with);
	tamper_all("wrapped, key from blob", blob, bl, try_unwrap, &without);
	hw_free(blob);
}

/* A blob of one kind must never be accepted as another. */
static void test_cross_kind(void)
{
	hw_ectx *ec = ectx_of(CTX_AB);
	uint8_t *ser = NULL, *dk = NULL, *direct = NULL, *wrapped = NULL, *out = NULL;
	size_t serl = 0, dkl = 0, directl = 0, wrappedl = 0, ol = 0;
	uint8_t pt[HW_DATAKEY_LEN];
	hw_err rc;

	CU_ASSERT_FATAL(ec != NULL);
	REQUIRE_OK(hw_ectx_serialize(ec, &ser, &serl));
	REQUIRE_OK(hw_datakey_generate(T.env, ec, pt, &dk, &dkl));
	REQUIRE_OK(hw_encrypt(T.env, pt, sizeof pt, ser, serl, &direct, &directl));
	REQUIRE_OK(hw_wrap(T.kw, pt, sizeof pt, &wrapped, &wrappedl));

	rc = hw_decrypt(T.ctx, NULL, dk, dkl, ser, serl, &out, &ol);
	CU_ASSERT(is_tamper_error(rc));
	if (rc == HW_OK)
		hw_free_secret(out, ol);
	rc = hw_decrypt(T.ctx, NULL, wrapped, wrappedl, NULL, 0, &out, &ol);
	CU_ASSERT(is_tamper_error(rc) || rc == HW_ERR_KEY_PURPOSE);
	if (rc == HW_OK)
		hw_free_secret(out, ol);
	rc = hw_datakey_decrypt(T.ctx, NULL, ec, direct, directl, pt);
	CU_ASSERT(is_tamper_error(rc));
	rc = hw_unwrap(T.ctx, NULL, direct, directl, &out, &ol);
	CU_ASSERT(is_tamper_error(rc) || rc == HW_ERR_KEY_PURPOSE);
	if (rc == HW_OK)
		hw_free_secret(out, ol);
	rc = hw_unwrap(T.ctx, NULL, dk, dkl, &out, &ol);
	CU_ASSERT(is_tamper_error(rc) || rc == HW_ERR_KEY_PURPOSE);
	if (rc == HW_OK)
		hw_free_secret(out, ol);

	hw_free(ser);
	hw_free(dk);
	hw_free(direct);
	hw_free(wrapped);
	hw_ectx_free(ec);
}

/* ------------------------------------------------------------------ */
/* Suite "independent": check the HSM's outputs with OpenSSL and raw    */
/* PKCS#11, not only through hsmwrap itself.                            */

static struct {
	void *dl;
	CK_FUNCTION_LIST *fl;
	CK_SESSION_HANDLE s;
	int open;
} R;

static const uint8_t KNOWN_KEY[32] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
	0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
	0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

/*
 * Our own session on the module hsmwrap already loaded. The module is
 * initialised once per process, so CKR_CRYPTOKI_ALREADY_INITIALIZED is
 * expected, and we must not C_Finalize it under the library.
 */
static int raw_init(void)
{
	CK_C_GetFunctionList gfl;
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16, i;
	CK_RV rv;

	if (need_fixtures() != 0)
		return 1;
	R.dl = dlopen(T.module, RTLD_NOW | RTLD_LOCAL);
	if (!R.dl)
		return 1;
	gfl = (CK_C_GetFunctionList)dlsym(R.dl, "C_GetFunctionList");
	if (!gfl || gfl(&R.fl) != CKR_OK)
		return 1;
	rv = R.fl->C_Initialize(NULL);
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return 1;
	if (R.fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return 1;
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		char label[33];

		if (R.fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(label, ti.label, 32);
		label[32] = '\0';
		if (strncmp(label, "hsmwrap-test ", 13) != 0)
			continue;
		if (R.fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION,
		                        NULL, NULL, &R.s) != CKR_OK)
			return 1;
		R.open = 1;
		rv = R.fl->C_Login(R.s, CKU_USER, (CK_UTF8CHAR *)T.user_pin,
		                   strlen(T.user_pin));
		return rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN ? 0 : 1;
	}
	return 1;
}

static int raw_cleanup(void)
{
	if (R.open)
		R.fl->C_CloseSession(R.s);
	R.open = 0;
	/* No C_Finalize and no dlclose: the library still uses the module. */
	return 0;
}

static CK_OBJECT_HANDLE raw_create_aes(const char *label, const uint8_t id[4],
                                       CK_BBOOL crypt, CK_BBOOL wrap)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof cls },
		{ CKA_KEY_TYPE, &kt, sizeof kt },
		{ CKA_TOKEN, &yes, sizeof yes },
		{ CKA_PRIVATE, &yes, sizeof yes },
		{ CKA_SENSITIVE, &yes, sizeof yes },
		{ CKA_EXTRACTABLE, &no, sizeof no },
		{ CKA_ENCRYPT, &crypt, sizeof crypt },
		{ CKA_DECRYPT, &crypt, sizeof crypt },
		{ CKA_WRAP, &wrap, sizeof wrap },
		{ CKA_UNWRAP, &wrap, sizeof wrap },
		{ CKA_SIGN, &no, sizeof no },
		{ CKA_VERIFY, &no, sizeof no },
		{ CKA_DERIVE, &no, sizeof no },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)id, 4 },
		{ CKA_VALUE, (void *)KNOWN_KEY, sizeof KNOWN_KEY },
	};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv = R.fl->C_CreateObject(R.s, t, sizeof t / sizeof t[0], &h);

	if (rv != CKR_OK) {
		char m[64];

		fmt(m, sizeof m, "C_CreateObject rv 0x%lx", (unsigned long)rv);
		FAIL(m, label);
		return CK_INVALID_HANDLE;
	}
	return h;
}

/* The object of class `cls` with the CKA_ID given in hex, or none. */
static CK_OBJECT_HANDLE raw_find(CK_OBJECT_CLASS cls, const char *id_hex)
{
	uint8_t id[64];
	size_t n = strlen(id_hex) / 2, i;
	CK_ATTRIBUTE t[2] = {
		{ CKA_CLASS, &cls, sizeof cls },
		{ CKA_ID, id, 0 },
	};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG got = 0;

	if (n > sizeof id)
		return CK_INVALID_HANDLE;
	for (i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(id_hex + 2 * i, "%2x", &v) != 1)
			return CK_INVALID_HANDLE;
		id[i] = (uint8_t)v;
	}
	t[1].ulValueLen = n;
	if (R.fl->C_FindObjectsInit(R.s, t, 2) != CKR_OK)
		return CK_INVALID_HANDLE;
	if (R.fl->C_FindObjects(R.s, &h, 1, &got) != CKR_OK || got != 1)
		h = CK_INVALID_HANDLE;
	R.fl->C_FindObjectsFinal(R.s);
	return h;
}

/* A variable-length attribute, malloc'd; NULL if missing. */
static uint8_t *raw_attr(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, size_t *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	uint8_t *p;

	if (R.fl->C_GetAttributeValue(R.s, h, &a, 1) != CKR_OK ||
	    a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return NULL;
	p = malloc(a.ulValueLen + 1);
	if (!p)
		return NULL;
	a.pValue = p;
	if (R.fl->C_GetAttributeValue(R.s, h, &a, 1) != CKR_OK) {
		free(p);
		return NULL;
	}
	*len = a.ulValueLen;
	return p;
}

static int raw_bool(CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type)
{
	CK_BBOOL v = CK_FALSE;
	CK_ATTRIBUTE a = { type, &v, sizeof v };

	if (R.fl->C_GetAttributeValue(R.s, h, &a, 1) != CKR_OK)
		return -1;
	return v ? 1 : 0;
}

static size_t host_kwp(const uint8_t *in, size_t n, uint8_t *out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0;

	if (!c)
		return 0;
	EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	if (EVP_EncryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, KNOWN_KEY, NULL) != 1 ||
	    EVP_EncryptUpdate(c, out, &l1, in, (int)n) != 1 ||
	    EVP_EncryptFinal_ex(c, out + l1, &l2) != 1)
		l1 = l2 = 0;
	EVP_CIPHER_CTX_free(c);
	return (size_t)l1 + (size_t)l2;
}

/*
 * AES-KWP by the token equals RFC 5649 as OpenSSL computes it, with a key
 * whose value we know (imported, since hsmwrap's own keys never leave).
 */
static void test_kwp_known_answer(void)
{
	static const uint8_t id[4] = { 0xc0, 0xff, 0xee, 0x01 };
	static const size_t sizes[] = { 8, 16, 32, 40, 4096 };
	hw_key *k = NULL;
	hw_key_info ki;
	unsigned i;

	CU_ASSERT_FATAL(raw_create_aes("kwp-known", id, CK_FALSE, CK_TRUE) != CK_INVALID_HANDLE);
	REQUIRE_OK(hw_key_find(T.ctx, "kwp-known", &k));
	EXPECT_OK(hw_key_info_get(k, &ki));
	EXPECT_INT(ki.purpose, HW_PURPOSE_KEYWRAP);
	EXPECT_STR(ki.id_hex, "c0ffee01");
	for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i], bl = 0, ol = 0, want_len;
		uint8_t *m = malloc(n), *want = malloc(n + 16), *blob = NULL, *out = NULL;
		hw_blob_info bi;

		CU_ASSERT_PTR_NOT_NULL_FATAL(m);
		CU_ASSERT_PTR_NOT_NULL_FATAL(want);
		random_bytes(m, n);
		want_len = host_kwp(m, n, want);
		EXPECT_INT(want_len, kwp_len(n));
		EXPECT_OK(hw_wrap(k, m, n, &blob, &bl));
		if (blob && bl > want_len) {
			EXPECT_OK(hw_blob_inspect(blob, bl, &bi));
			EXPECT_INT(bi.payload_len, want_len);
			if (memcmp(blob + bl - want_len, want, want_len) != 0)
				FAIL("token's KWP output differs from RFC 5649 (OpenSSL)", "");
			EXPECT_OK(hw_unwrap(T.ctx, NULL, blob, bl, &out, &ol));
			CU_ASSERT(ol == n && out && memcmp(out, m, n) == 0);
			hw_free_secret(out, ol);
		}
		hw_free(blob);
		free(m);
		free(want);
	}
	hw_key_free(k);
}

/* Offsets into a blob, per the format documented in src/lib/format/blob.c. */
struct blob_parts {
	size_t header_len;
	const uint8_t *iv;
	size_t iv_len;
	const uint8_t *payload;
	size_t payload_len;
};

static int split_blob(const uint8_t *b, size_t len, struct blob_parts *p)
{
	size_t off = 6, l;

	if (len < 6 || memcmp(b, "HWB", 3) != 0)
		return -1;
	for (int f = 0; f < 2; f++) {
		if (off + 2 > len)
			return -1;
		l = (size_t)b[off] << 8 | b[off + 1];
		off += 2 + l;
	}
	p->header_len = off;
	if (off + 1 > len)
		return -1;
	p->iv_len = b[off];
	p->iv = b + off + 1;
	off += 1 + p->iv_len;
	if (off + 4 > len)
		return -1;
	l = (size_t)b[off] << 24 | (size_t)b[off + 1] << 16 | (size_t)b[off + 2] << 8 | b[off + 3];
	off += 4;
	if (off + l != len)
		return -1;
	p->payload = b + off;
	p->payload_len = l;
	return 0;
}

/* Host AES-256-GCM with KNOWN_KEY; returns plaintext length or -1. */
static long host_gcm_open(const struct blob_parts *p, const uint8_t *aad, size_t aadlen,
                          uint8_t *out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	size_t ctlen = p->payload_len - 16;
	int l = 0, l2 = 0, ok;

	if (!c || p->payload_len < 16)
		return -1;
	ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)p->iv_len, NULL) == 1 &&
	     EVP_DecryptInit_ex(c, NULL, NULL, KNOWN_KEY, p->iv) == 1 &&
	     EVP_DecryptUpdate(c, NULL, &l, aad, (int)aadlen) == 1 &&
	     EVP_DecryptUpdate(c, out, &l, p->payload, (int)ctlen) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16,
	                         (void *)(p->payload + ctlen)) == 1 &&
	     EVP_DecryptFinal_ex(c, out + l, &l2) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? (long)(l + l2) : -1;
}

/* Host GCM seal of pt under KNOWN_KEY with a fresh IV into a copy of `tmpl`. */
static uint8_t *host_gcm_seal(const uint8_t *tmpl, size_t tlen, const struct blob_parts *p,
                              const uint8_t *aad, size_t aadlen, const uint8_t *pt, size_t n)
{
	uint8_t *b = malloc(tlen);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	size_t iv_off = (size_t)(p->iv - tmpl), pay_off = (size_t)(p->payload - tmpl);
	int l = 0, l2 = 0, ok;

	if (!b || !c || n + 16 != p->payload_len) {
		free(b);
		EVP_CIPHER_CTX_free(c);
		return NULL;
	}
	memcpy(b, tmpl, tlen);
	random_bytes(b + iv_off, p->iv_len);
	ok = EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)p->iv_len, NULL) == 1 &&
	     EVP_EncryptInit_ex(c, NULL, NULL, KNOWN_KEY, b + iv_off) == 1 &&
	     EVP_EncryptUpdate(c, NULL, &l, aad, (int)aadlen) == 1 &&
	     EVP_EncryptUpdate(c, b + pay_off, &l, pt, (int)n) == 1 &&
	     EVP_EncryptFinal_ex(c, b + pay_off + l, &l2) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, b + pay_off + n) == 1;
	EVP_CIPHER_CTX_free(c);
	if (!ok) {
		free(b);
		return NULL;
	}
	return b;
}

static uint8_t *cat(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
	uint8_t *p = malloc(al + bl + 1);

	if (p) {
		memcpy(p, a, al);
		if (bl)
			memcpy(p + al, b, bl);
	}
	return p;
}

/*
 * With a known envelope key: the KCV is the standard one, and AES-GCM
 * blobs (direct and data-key) interoperate with OpenSSL both ways, with
 * AAD = blob header || caller's AAD (serialized context for data keys).
 */
static void test_gcm_and_kcv_known_answer(void)
{
	static const uint8_t id[4] = { 0xc0, 0xff, 0xee, 0x02 };
	static const uint8_t zero[16];
	uint8_t ecb[32], pt[100], back[100], dk[HW_DATAKEY_LEN], dk2[HW_DATAKEY_LEN];
	uint8_t *blob = NULL, *aad = NULL, *host = NULL, *out = NULL, *ser = NULL;
	size_t bl = 0, ol = 0, serl = 0;
	char want_kcv[8];
	int l = 0;
	EVP_CIPHER_CTX *c;
	struct blob_parts p;
	hw_key *k = NULL;
	hw_key_info ki;
	hw_ectx *ec = ectx_of(CTX_AB);

	CU_ASSERT_FATAL(ec != NULL);
	CU_ASSERT_FATAL(raw_create_aes("gcm-known", id, CK_TRUE, CK_FALSE) != CK_INVALID_HANDLE);
	REQUIRE_OK(hw_key_find(T.ctx, "gcm-known", &k));
	EXPECT_OK(hw_key_info_get(k, &ki));
	EXPECT_INT(ki.purpose, HW_PURPOSE_ENVELOPE);

	c = EVP_CIPHER_CTX_new();
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT_FATAL(EVP_EncryptInit_ex(c, EVP_aes_256_ecb(), NULL, KNOWN_KEY, NULL) == 1);
	EVP_CIPHER_CTX_set_padding(c, 0);
	CU_ASSERT_FATAL(EVP_EncryptUpdate(c, ecb, &l, zero, 16) == 1);
	EVP_CIPHER_CTX_free(c);
	fmt(want_kcv, sizeof want_kcv, "%02x%02x%02x", ecb[0], ecb[1], ecb[2]);
	EXPECT_STR(ki.kcv_alg, "AES-ECB-zero");
	if (strcasecmp(ki.kcv, want_kcv) != 0)
		FAIL("KCV differs from AES-ECB(key, 0^128)", ki.kcv);

	/* Direct: the token encrypts, OpenSSL decrypts... */
	random_bytes(pt, sizeof pt);
	REQUIRE_OK(hw_encrypt(k, pt, sizeof pt, AAD, sizeof AAD, &blob, &bl));
	CU_ASSERT_FATAL(split_blob(blob, bl, &p) == 0);
	EXPECT_INT(p.iv_len, 12);
	aad = cat(blob, p.header_len, AAD, sizeof AAD);
	CU_ASSERT_FATAL(aad != NULL);
	EXPECT_INT(host_gcm_open(&p, aad, p.header_len + sizeof AAD, back), (long)sizeof pt);
	CU_ASSERT(memcmp(back, pt, sizeof pt) == 0);
	/* ...and OpenSSL encrypts, the token decrypts. */
	host = host_gcm_seal(blob, bl, &p, aad, p.header_len + sizeof AAD, pt, sizeof pt);
	CU_ASSERT_FATAL(host != NULL);
	EXPECT_OK(hw_decrypt(T.ctx, NULL, host, bl, AAD, sizeof AAD, &out, &ol));
	CU_ASSERT(ol == sizeof pt && out && memcmp(out, pt, sizeof pt) == 0);
	hw_free_secret(out, ol);
	free(host);
	free(aad);
	hw_free(blob);
	blob = NULL;

	/* Data key: AAD is the header and the serialized context. */
	REQUIRE_OK(hw_ectx_serialize(ec, &ser, &serl));
	REQUIRE_OK(hw_datakey_generate(k, ec, dk, &blob, &bl));
	CU_ASSERT_FATAL(split_blob(blob, bl, &p) == 0);
	aad = cat(blob, p.header_len, ser, serl);
	CU_ASSERT_FATAL(aad != NULL);
	EXPECT_INT(host_gcm_open(&p, aad, p.header_len + serl, back), HW_DATAKEY_LEN);
	CU_ASSERT(memcmp(back, dk, HW_DATAKEY_LEN) == 0);
	random_bytes(dk2, sizeof dk2);
	host = host_gcm_seal(blob, bl, &p, aad, p.header_len + serl, dk2, sizeof dk2);
	CU_ASSERT_FATAL(host != NULL);
	EXPECT_OK(hw_datakey_decrypt(T.ctx, k, ec, host, bl, dk));
	CU_ASSERT(memcmp(dk, dk2, sizeof dk) == 0);
	free(host);
	free(aad);
	hw_free(blob);
	hw_free(ser);
	hw_ectx_free(ec);
	hw_key_free(k);
}

/* Rebuilds the public key from the token's public-key object. */
static EVP_PKEY *raw_public_key(const char *id_hex)
{
	static const uint8_t oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	static const uint8_t oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
	CK_OBJECT_HANDLE h = raw_find(CKO_PUBLIC_KEY, id_hex);
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *pc = NULL;
	EVP_PKEY *pk = NULL;
	uint8_t *a = NULL, *b = NULL;
	size_t al = 0, bl = 0;
	BIGNUM *n = NULL, *e = NULL;
	const char *type = NULL;

	if (h == CK_INVALID_HANDLE || !bld)
		goto out;
	if ((a = raw_attr(h, CKA_MODULUS, &al)) && (b = raw_attr(h, CKA_PUBLIC_EXPONENT, &bl))) {
		n = BN_bin2bn(a, (int)al, NULL);
		e = BN_bin2bn(b, (int)bl, NULL);
		if (!n || !e || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			goto out;
		type = "RSA";
	} else {
		const char *curve;
		size_t hdr;

		free(a);
		a = raw_attr(h, CKA_EC_PARAMS, &al);
		b = raw_attr(h, CKA_EC_POINT, &bl);
		if (!a || !b)
			goto out;
		if (al == sizeof oid_p256 && memcmp(a, oid_p256, al) == 0)
			curve = "P-256";
		else if (al == sizeof oid_p384 && memcmp(a, oid_p384, al) == 0)
			curve = "P-384";
		else
			goto out;
		/* CKA_EC_POINT is a DER OCTET STRING around the point. */
		if (bl < 3 || b[0] != 0x04)
			goto out;
		hdr = b[1] < 0x80 ? 2 : 2 + (b[1] & 0x7f);
		if (hdr >= bl)
			goto out;
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curve, 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, b + hdr, bl - hdr))
			goto out;
		type = "EC";
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	pc = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (!params || !pc || EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
out:
	EVP_PKEY_CTX_free(pc);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	free(a);
	free(b);
	return pk;
}

static int host_verify(EVP_PKEY *pk, hw_sig_alg alg, const uint8_t *msg, size_t len,
                       const uint8_t *sig, size_t siglen)
{
	const EVP_MD *md;
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pc = NULL;
	int pss = 0, ok;

	switch (alg) {
	case HW_SIG_RSA_PSS_SHA256: pss = 1; /* fall through */
	case HW_SIG_RSA_PKCS1_SHA256:
	case HW_SIG_ECDSA_SHA256: md = EVP_sha256(); break;
	case HW_SIG_RSA_PSS_SHA384: pss = 1; /* fall through */
	case HW_SIG_RSA_PKCS1_SHA384:
	case HW_SIG_ECDSA_SHA384: md = EVP_sha384(); break;
	case HW_SIG_RSA_PSS_SHA512: pss = 1; /* fall through */
	case HW_SIG_RSA_PKCS1_SHA512: md = EVP_sha512(); break;
	default: EVP_MD_CTX_free(mc); return -1;
	}
	ok = mc && EVP_DigestVerifyInit(mc, &pc, md, NULL, pk) == 1;
	if (ok && pss)
		ok = EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) == 1 &&
		     EVP_PKEY_CTX_set_rsa_mgf1_md(pc, md) == 1;
	ok = ok && EVP_DigestVerify(mc, sig, siglen, msg, len) == 1;
	EVP_MD_CTX_free(mc);
	return ok;
}

static void check_pair(const char *label, const hw_sig_alg *algs, unsigned nalgs,
                       const hw_sig_alg *wrong, unsigned nwrong)
{
	static const uint8_t msg[] = "the quick brown fox signs a message";
	hw_key *k = NULL;
	hw_key_info ki;
	EVP_PKEY *pk;
	uint8_t *spki = NULL, md[32];
	char hex[65];
	int spki_len, i;
	unsigned j;
	CK_OBJECT_HANDLE pub, priv;

	REQUIRE_OK(hw_key_find(T.ctx, label, &k));
	REQUIRE_OK(hw_key_info_get(k, &ki));
	pk = raw_public_key(ki.id_hex);
	if (!pk) {
		FAIL("no public key object with the pair's CKA_ID", label);
		hw_key_free(k);
		return;
	}
	/* KCV of a pair: SHA-256 of the DER SubjectPublicKeyInfo. */
	spki_len = i2d_PUBKEY(pk, &spki);
	CU_ASSERT_FATAL(spki_len > 0);
	SHA256(spki, (size_t)spki_len, md);
	OPENSSL_free(spki);
	for (i = 0; i < 32; i++)
		fmt(hex + 2 * i, 3, "%02x", md[i]);
	if (strcasecmp(hex, ki.kcv) != 0)
		FAIL("pair fingerprint is not SHA-256 of the SPKI", ki.kcv);

	/* Both halves: sign-only private key, verify-only public key. */
	pub = raw_find(CKO_PUBLIC_KEY, ki.id_hex);
	priv = raw_find(CKO_PRIVATE_KEY, ki.id_hex);
	EXPECT_INT(raw_bool(pub, CKA_VERIFY), 1);
	EXPECT_INT(raw_bool(pub, CKA_ENCRYPT), 0);
	EXPECT_INT(raw_bool(pub, CKA_WRAP), 0);
	EXPECT_INT(raw_bool(pub, CKA_DERIVE), 0);
	EXPECT_INT(raw_bool(priv, CKA_SIGN), 1);
	EXPECT_INT(raw_bool(priv, CKA_DECRYPT), 0);
	EXPECT_INT(raw_bool(priv, CKA_UNWRAP), 0);
	EXPECT_INT(raw_bool(priv, CKA_DERIVE), 0);
	EXPECT_INT(raw_bool(priv, CKA_SENSITIVE), 1);
	EXPECT_INT(raw_bool(priv, CKA_EXTRACTABLE), 0);

	for (j = 0; j < nalgs; j++) {
		uint8_t *sig = NULL;
		size_t sl = 0;

		EXPECT_OK(hw_sign(k, algs[j], msg, sizeof msg, &sig, &sl));
		if (!sig)
			continue;
		if (host_verify(pk, algs[j], msg, sizeof msg, sig, sl) != 1)
			FAIL("OpenSSL rejects the signature", hw_sig_alg_name(algs[j]));
		/* The verification is real: another message fails. */
		if (host_verify(pk, algs[j], msg, sizeof msg - 1, sig, sl) != 0)
			FAIL("a signature verified for the wrong message", hw_sig_alg_name(algs[j]));
		hw_free(sig);
	}
	for (j = 0; j < nwrong; j++) {
		uint8_t *sig = (uint8_t *)&T;
		size_t sl = 0;
		hw_err rc = hw_sign(k, wrong[j], msg, sizeof msg, &sig, &sl);

		CU_ASSERT(rc == HW_ERR_KEY_PURPOSE || rc == HW_ERR_INVALID_ARG);
		CU_ASSERT(sig == (uint8_t *)&T);
	}
	EVP_PKEY_free(pk);
	hw_key_free(k);
}

static void test_sign_verify(void)
{
	static const hw_sig_alg ec256[] = { HW_SIG_ECDSA_SHA256, HW_SIG_ECDSA_SHA384 };
	static const hw_sig_alg rsa[] = {
		HW_SIG_RSA_PKCS1_SHA256, HW_SIG_RSA_PKCS1_SHA384, HW_SIG_RSA_PKCS1_SHA512,
		HW_SIG_RSA_PSS_SHA256, HW_SIG_RSA_PSS_SHA384, HW_SIG_RSA_PSS_SHA512,
	};
	hw_key *k = NULL;
	uint8_t *sig = (uint8_t *)&T;
	size_t sl = 0;

	check_pair("lib-sign", ec256, 2, rsa, 6);
	REQUIRE_OK(hw_key_generate(T.ctx, "lib-rsa", HW_KEY_RSA2048, HW_PURPOSE_SIGN, &k));
	hw_key_free(k);
	check_pair("lib-rsa", rsa, 6, ec256, 2);
	REQUIRE_OK(hw_key_generate(T.ctx, "lib-ec384", HW_KEY_EC_P384, HW_PURPOSE_SIGN, &k));
	hw_key_free(k);
	check_pair("lib-ec384", ec256, 2, rsa, 1);

	EXPECT(hw_sign(T.env, HW_SIG_ECDSA_SHA256, AAD, sizeof AAD, &sig, &sl),
	       HW_ERR_KEY_PURPOSE);
	EXPECT(hw_sign(T.kw, HW_SIG_RSA_PSS_SHA256, AAD, sizeof AAD, &sig, &sl),
	       HW_ERR_KEY_PURPOSE);
	CU_ASSERT(sig == (uint8_t *)&T);
}

/* Destroying a pair removes the public half too (seen from outside). */
static void test_destroy_pair_both_halves(void)
{
	hw_key *k = NULL;
	hw_key_info ki;

	REQUIRE_OK(hw_key_generate(T.ctx, "doomed-pair", HW_KEY_EC_P256, HW_PURPOSE_SIGN, &k));
	REQUIRE_OK(hw_key_info_get(k, &ki));
	CU_ASSERT(raw_find(CKO_PUBLIC_KEY, ki.id_hex) != CK_INVALID_HANDLE);
	CU_ASSERT(raw_find(CKO_PRIVATE_KEY, ki.id_hex) != CK_INVALID_HANDLE);
	EXPECT_OK(hw_key_destroy(k));
	hw_key_free(k);
	CU_ASSERT(raw_find(CKO_PUBLIC_KEY, ki.id_hex) == CK_INVALID_HANDLE);
	CU_ASSERT(raw_find(CKO_PRIVATE_KEY, ki.id_hex) == CK_INVALID_HANDLE);
}

/* hsmwrap's keys as another PKCS#11 client sees them. */
static void test_raw_attributes_of_secret_keys(void)
{
	hw_key_info ki;
	CK_OBJECT_HANDLE h;
	uint8_t *v;
	size_t vl = 0;

	REQUIRE_OK(hw_key_info_get(T.env, &ki));
	h = raw_find(CKO_SECRET_KEY, ki.id_hex);
	CU_ASSERT_FATAL(h != CK_INVALID_HANDLE);
	EXPECT_INT(raw_bool(h, CKA_SENSITIVE), 1);
	EXPECT_INT(raw_bool(h, CKA_EXTRACTABLE), 0);
	EXPECT_INT(raw_bool(h, CKA_TOKEN), 1);
	EXPECT_INT(raw_bool(h, CKA_PRIVATE), 1);
	EXPECT_INT(raw_bool(h, CKA_ENCRYPT), 1);
	EXPECT_INT(raw_bool(h, CKA_WRAP), 0);
	EXPECT_INT(raw_bool(h, CKA_SIGN), 0);
	EXPECT_INT(raw_bool(h, CKA_VERIFY), 0);
	EXPECT_INT(raw_bool(h, CKA_DERIVE), 0);
	v = raw_attr(h, CKA_VALUE, &vl);
	CU_ASSERT_PTR_NULL(v);
	free(v);

	REQUIRE_OK(hw_key_info_get(T.kw, &ki));
	h = raw_find(CKO_SECRET_KEY, ki.id_hex);
	CU_ASSERT_FATAL(h != CK_INVALID_HANDLE);
	EXPECT_INT(raw_bool(h, CKA_WRAP), 1);
	EXPECT_INT(raw_bool(h, CKA_UNWRAP), 1);
	EXPECT_INT(raw_bool(h, CKA_ENCRYPT), 0);
	EXPECT_INT(raw_bool(h, CKA_DECRYPT), 0);
	EXPECT_INT(raw_bool(h, CKA_SENSITIVE), 1);
	EXPECT_INT(raw_bool(h, CKA_EXTRACTABLE), 0);
	/* A keywrap key must only wrap keys that are themselves safe to wrap. */
	EXPECT_INT(raw_bool(h, CKA_WRAP_WITH_TRUSTED), 0);
}

/* ------------------------------------------------------------------ */

static int setup(void)
{
	hw_err rc;

	T.module = getenv("SOFTHSM_MODULE");
	if (!T.module || !*T.module)
		T.module = getenv("HSMWRAP_MODULE");
	T.token_uri = getenv("HSMWRAP_TOKEN");
	T.pin_source = getenv("HSMWRAP_PIN_SOURCE");
	T.dir = getenv("HW_TEST_DIR");
	T.user_pin_file = getenv("HW_TEST_USER_PIN_FILE");
	T.so_pin_file = getenv("HW_TEST_SO_PIN_FILE");
	T.token2 = getenv("HW_TEST_TOKEN2");
	T.user_pin_file2 = getenv("HW_TEST_USER_PIN_FILE2");
	if (!T.module || !T.token_uri || !T.pin_source || !T.dir ||
	    !T.user_pin_file || !T.so_pin_file || !T.token2 || !T.user_pin_file2) {
		fprintf(stderr, "test-lib: run me under tests/with-token.sh with "
		        "HW_TEST_SECOND_TOKEN=1\n");
		return 77;
	}
	if (read_text_file(T.user_pin_file, T.user_pin, sizeof T.user_pin) != 0 ||
	    read_text_file(T.user_pin_file2, T.user_pin2, sizeof T.user_pin2) != 0) {
		perror("test-lib: PIN file");
		return 99;
	}
	rc = open_ctx(T.module, T.token_uri, T.pin_source, &T.ctx);
	if (rc == HW_OK)
		rc = hw_key_generate(T.ctx, "lib-env", HW_KEY_AES256,
		                     HW_PURPOSE_ENVELOPE, &T.env);
	/* Still run on failure: the token-free tests say what is broken. */
	if (rc != HW_OK)
		fprintf(stderr, "test-lib: cannot open the test token or create a key: "
		        "%s (%s)\n", hw_errname(rc), hw_last_detail());
	return 0;
}

static void teardown(void)
{
	hw_key_free(T.env);
	hw_key_free(T.env2);
	hw_key_free(T.kw);
	hw_key_free(T.kw2);
	hw_key_free(T.sign);
	hw_ctx_free(T.ctx);
}


#define ADD(suite, fn) \
	do { if (!CU_add_test(suite, #fn, fn)) return -1; } while (0)

static int register_tests(void)
{
	CU_pSuite s;

	s = CU_add_suite("api", NULL, NULL);
	if (!s)
		return -1;
	ADD(s, test_strerror_all);
	ADD(s, test_version);
	ADD(s, test_names);
	ADD(s, test_free_null);
	ADD(s, test_ectx_known_answer);
	ADD(s, test_ectx_empty_and_kv);
	ADD(s, test_ectx_duplicate);
	ADD(s, test_ectx_too_long);
	ADD(s, test_blob_inspect_garbage);

	s = CU_add_suite("operations", ops_init, NULL);
	if (!s)
		return -1;
	ADD(s, test_direct_roundtrip);
	ADD(s, test_direct_no_aad_and_random_iv);
	ADD(s, test_direct_too_large);
	ADD(s, test_direct_wrong_aad);
	ADD(s, test_direct_tamper);
	ADD(s, test_direct_other_key_and_purpose);
	ADD(s, test_pool_after_failure);
	ADD(s, test_datakey_roundtrip);
	ADD(s, test_datakey_empty_context);
	ADD(s, test_datakey_wrong_context);
	ADD(s, test_datakey_fresh);
	ADD(s, test_datakey_purpose_and_other_key);
	ADD(s, test_datakey_tamper);
	ADD(s, test_wrap_roundtrip);
	ADD(s, test_wrap_limits_and_purpose);
	ADD(s, test_wrap_tamper);
	ADD(s, test_cross_kind);

	s = CU_add_suite("independent", raw_init, raw_cleanup);
	if (!s)
		return -1;
	ADD(s, test_raw_attributes_of_secret_keys);
	ADD(s, test_kwp_known_answer);
	ADD(s, test_gcm_and_kcv_known_answer);
	ADD(s, test_sign_verify);
	ADD(s, test_destroy_pair_both_halves);

	s = CU_add_suite("keys", need_fixtures, NULL);
	if (!s)
		return -1;
	ADD(s, test_fixture_keys);
	ADD(s, test_generate_all_combinations);
	ADD(s, test_duplicate_label);
	ADD(s, test_find_errors);
	ADD(s, test_list);
	ADD(s, test_destroy);

	s = CU_add_suite("context", need_ctx, NULL);
	if (!s)
		return -1;
	ADD(s, test_open_by_path);
	ADD(s, test_open_selects_token);
	ADD(s, test_open_by_p11kit_name);
	ADD(s, test_module_list);
	ADD(s, test_two_contexts);
	ADD(s, test_token_list);
	ADD(s, test_token_selection);
	ADD(s, test_token_errors);
	ADD(s, test_pin_file_and_env);
	ADD(s, test_pin_from_uri);
	ADD(s, test_pin_callback);
	ADD(s, test_wrong_pin);
	ADD(s, test_last_ckrv_per_thread);
	ADD(s, test_token_init);
	return 0;
}

int main(void)
{
	unsigned failures;
	int rc = setup();

	if (rc != 0)
		return rc;
	if (CU_initialize_registry() != CUE_SUCCESS || register_tests() != 0) {
		fprintf(stderr, "test-lib: %s\n", CU_get_error_msg());
		return 99;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failures = CU_get_number_of_failure_records();
	CU_cleanup_registry();
	teardown();
	return failures == 0 ? 0 : 1;
}
