# hsmwrap against its own environment (issue 16): output files, secrets
# in messages and core dumps, audit that fails closed.
TESTS += tests/test-hardening.sh
EXTRA_DIST += tests/test-hardening.sh
