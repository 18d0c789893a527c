# TLS servers with HSM keys (issue 4): Debian's nginx with a key-reference
# file. The TLS benchmark (`make bench-tls`) is in bench/tls.mk.
EXTRA_DIST += tests/test-nginx.sh
TESTS += tests/test-nginx.sh
