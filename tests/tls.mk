# TLS servers with HSM keys (issue 4): Debian's nginx with a key-reference
# file; Apache httpd (mod_ssl) with a reference or a pkcs11: URI, requiring
# client certificates whose keys are in the HSM too (issue 13). The TLS
# benchmark (`make bench-tls`) is in bench/tls.mk.
EXTRA_DIST += tests/test-nginx.sh tests/test-httpd.sh
TESTS += tests/test-nginx.sh tests/test-httpd.sh
