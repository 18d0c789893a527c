# TLS servers with HSM keys (issue 4): Debian's nginx with a key-reference
# file, and `make bench-tls` (handshakes/s and signatures/s: PEM key, the
# hsmwrap provider, the libp11 engine, raw C_Sign).
EXTRA_DIST += tests/test-nginx.sh
TESTS += tests/test-nginx.sh
