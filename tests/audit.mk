# Audit log and TDE keyrings (issue 5): shell suites under with-token.sh,
# and the libFuzzer harnesses of the audit record parser and the keyring
# file parser, replayed over their seed corpora in `make check` (see
# tests/fuzz.mk).

TESTS += tests/test-audit.sh tests/test-tde.sh
EXTRA_DIST += tests/test-audit.sh tests/test-tde.sh
