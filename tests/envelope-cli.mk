# CLI envelope encryption (issue 3): encrypt, decrypt and inspect against
# the real test token, including every-offset truncation and bit flips.
EXTRA_DIST += tests/test-envelope-cli.sh
TESTS += tests/test-envelope-cli.sh
