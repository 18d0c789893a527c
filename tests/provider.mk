# The OpenSSL provider against real peers: openssl pkey/req/dgst/verify,
# s_server and s_client over TLS 1.2 and 1.3, key-reference files.
EXTRA_DIST += tests/test-provider.sh
TESTS += tests/test-provider.sh
# Ed25519, Ed448, P-521 and PSS-only RSA keys through the provider.
EXTRA_DIST += tests/test-provider-keys.sh tests/provider-lib.sh tests/test-provider-store.sh \
	tests/test-provider-ecdh.sh tests/test-provider-cms.sh tests/test-provider-genpkey.sh
TESTS += tests/test-provider-keys.sh tests/test-provider-store.sh tests/test-provider-ecdh.sh \
	tests/test-provider-cms.sh tests/test-provider-genpkey.sh
# The provider next to another user of the same PKCS#11 module in one
# process (run by test-provider-keys.sh).
check_PROGRAMS += tests/shared-module
tests_shared_module_SOURCES = tests/shared-module.c
tests_shared_module_CFLAGS = $(AM_CFLAGS) $(P11KIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_shared_module_LDADD = $(OPENSSL_LIBS)
