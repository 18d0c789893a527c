# Root-CA ceremony (issue 4): ca init/sign/crl against a real token, checked
# with openssl x509/verify/crl, s_server/s_client and pkcs11-tool.
EXTRA_DIST += tests/test-ca.sh
TESTS += tests/test-ca.sh

# The parsers of operator input (--subject, --revoke, --san): replayed over
# tests/fuzz-corpus/ca in make check, fuzzed by `make fuzz`.
check_PROGRAMS += tests/fuzz-replay-ca
TESTS += tests/fuzz-replay-ca
tests_fuzz_replay_ca_SOURCES = tests/fuzz-ca.c tests/fuzz-replay.c tools/ca-parse.c \
	tools/ca-parse.h
tests_fuzz_replay_ca_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tools \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/ca"'
tests_fuzz_replay_ca_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS)
tests_fuzz_replay_ca_LDADD = $(OPENSSL_LIBS)

FUZZ_NAMES += ca
FUZZ_BINS += tests/fuzz-ca-fuzzer$(EXEEXT)
tests/fuzz-ca-fuzzer$(EXEEXT): tests/fuzz-ca.c tools/ca-parse.c tools/ca-parse.h config.h
	@mkdir -p tests; echo "  FUZZCC   $@"; \
	$(FUZZ_CC) $(FUZZ_CFLAGS) -D_GNU_SOURCE -I$(top_srcdir)/tools -I$(top_builddir) \
	  `$(PKG_CONFIG) --cflags libcrypto` -o $@ \
	  $(top_srcdir)/tests/fuzz-ca.c $(top_srcdir)/tools/ca-parse.c \
	  `$(PKG_CONFIG) --libs libcrypto`
