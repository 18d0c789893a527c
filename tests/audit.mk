# Audit log and TDE keyrings (issue 5): shell suites under with-token.sh,
# and the libFuzzer harnesses of the audit record parser and the keyring
# file parser, replayed over their seed corpora in `make check` (see
# tests/fuzz.mk).

TESTS += tests/test-audit.sh tests/test-tde.sh
EXTRA_DIST += tests/test-audit.sh tests/test-tde.sh tests/audit-fixture

FUZZ_NAMES += audit keyring
check_PROGRAMS += tests/fuzz-replay-audit tests/fuzz-replay-keyring
TESTS += tests/fuzz-replay-audit tests/fuzz-replay-keyring

tests_fuzz_replay_audit_SOURCES = tests/fuzz-audit.c tests/fuzz-replay.c
tests_fuzz_replay_audit_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/audit"'
tests_fuzz_replay_audit_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

tests_fuzz_replay_keyring_SOURCES = tests/fuzz-keyring.c tests/fuzz-replay.c
tests_fuzz_replay_keyring_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/keyring"'
tests_fuzz_replay_keyring_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

FUZZ_BINS += tests/fuzz-audit-fuzzer$(EXEEXT) tests/fuzz-keyring-fuzzer$(EXEEXT)

tests/fuzz-audit-fuzzer$(EXEEXT): tests/fuzz-audit.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-audit.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl

tests/fuzz-keyring-fuzzer$(EXEEXT): tests/fuzz-keyring.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-keyring.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl
