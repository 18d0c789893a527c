# The OpenSSL provider against real peers: openssl pkey/req/dgst/verify,
# s_server and s_client over TLS 1.2 and 1.3, key-reference files.
EXTRA_DIST += tests/test-provider.sh
TESTS += tests/test-provider.sh
