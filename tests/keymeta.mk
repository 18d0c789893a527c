# Key lifecycle (issue 5): metadata, versions, rotation, states.

TESTS += tests/test-keymeta.sh
EXTRA_DIST += tests/test-keymeta.sh

FUZZ_NAMES += meta
check_PROGRAMS += tests/fuzz-replay-meta
TESTS += tests/fuzz-replay-meta
tests_fuzz_replay_meta_SOURCES = tests/fuzz-meta.c tests/fuzz-replay.c
tests_fuzz_replay_meta_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/meta"'
tests_fuzz_replay_meta_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

FUZZ_BINS += tests/fuzz-meta-fuzzer$(EXEEXT)
tests/fuzz-meta-fuzzer$(EXEEXT): tests/fuzz-meta.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-meta.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl

# A small library client for what the CLI does not offer (ESDK messages,
# blob headers, a long-lived process).
check_PROGRAMS += tests/keymeta-check
tests_keymeta_check_SOURCES = tests/keymeta-check.c
tests_keymeta_check_LDADD = libhsmwrap.la
AM_TESTS_ENVIRONMENT += KEYMETA_CHECK='$(abs_top_builddir)/tests/keymeta-check'; export KEYMETA_CHECK;
