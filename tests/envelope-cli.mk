# CLI envelope encryption (issue 3): encrypt, decrypt and inspect against
# the real test token, including every-offset truncation and bit flips.
EXTRA_DIST += tests/test-envelope-cli.sh
TESTS += tests/test-envelope-cli.sh
# Raw RSA data keys through the CLI (issue 15): encrypt --rsa-key and
# --rsa-recipient, decrypt --rsa-padding, the SDK's Raw RSA vectors.
EXTRA_DIST += tests/test-envelope-rsa.sh
TESTS += tests/test-envelope-rsa.sh
