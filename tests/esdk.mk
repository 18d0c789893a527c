# AWS Encryption SDK message format (issue 3): tests, vectors, fuzzing.
#
#  tests/test-esdk        CUnit: round trips through the HSM keyring, streaming,
#                         bad input (truncation, bit flips, wrong key/context,
#                         EDK limit), inspect. Public API only.
#  tests/esdk-vectors.sh  the SDK's decrypt vectors (Raw AES keys imported into
#                         the test token) and the key-commitment known answers.
#                         tests/esdk-vectors links the library's sources
#                         itself: the KATs drive the internal format engine
#                         with a static data key.
#  tests/fuzz-esdk.c      libFuzzer harness (header parser, decryptor with a
#                         fixed software key); replayed in `make check`.

EXTRA_DIST += tests/esdk-vectors.sh tests/fuzz-corpus/esdk

# Every library source, compiled into test programs that need internals.
ESDK_LIB_SOURCES = $(libhsmwrap_la_SOURCES)
ESDK_INTERNAL_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS) $(JANSSON_CFLAGS)
ESDK_INTERNAL_LIBS = $(OPENSSL_LIBS) $(P11KIT_LIBS) $(JANSSON_LIBS) -lpthread

check_PROGRAMS += tests/esdk-vectors tests/fuzz-replay-esdk
tests_esdk_vectors_SOURCES = tests/esdk-vectors.c $(ESDK_LIB_SOURCES)
tests_esdk_vectors_CFLAGS = $(ESDK_INTERNAL_CFLAGS) -DHW_ESDK_TEST_HOOKS
tests_esdk_vectors_LDADD = $(ESDK_INTERNAL_LIBS)

TESTS += tests/esdk-vectors.sh
# esdk-vectors.sh finds the vectors next to the source tree, or in
# $ESDK_VECTORS_DIR, and the runner in the build tree.
AM_TESTS_ENVIRONMENT += \
	ESDK_VECTORS_RUNNER='$(abs_top_builddir)/tests/esdk-vectors'; \
	export ESDK_VECTORS_RUNNER;

if HAVE_CUNIT
check_PROGRAMS += tests/test-esdk
TESTS += tests/test-esdk
tests_test_esdk_SOURCES = tests/test-esdk.c
tests_test_esdk_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_test_esdk_LDADD = libhsmwrap.la $(CUNIT_LIBS) $(OPENSSL_LIBS)
endif

# Fuzzing, as tests/fuzz.mk does it (replay in make check; `make fuzz` runs
# the libFuzzer build too: this fragment must be included after fuzz.mk). The harness needs the internal API, so the replay build
# compiles the library sources in as well.
TESTS += tests/fuzz-replay-esdk
tests_fuzz_replay_esdk_SOURCES = tests/fuzz-esdk.c tests/fuzz-replay.c $(ESDK_LIB_SOURCES)
tests_fuzz_replay_esdk_CFLAGS = $(ESDK_INTERNAL_CFLAGS)
tests_fuzz_replay_esdk_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/esdk"'
tests_fuzz_replay_esdk_LDADD = $(ESDK_INTERNAL_LIBS)

tests/fuzz-esdk-fuzzer$(EXEEXT): tests/fuzz-esdk.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-esdk.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl

FUZZ_NAMES += esdk
FUZZ_BINS += tests/fuzz-esdk-fuzzer$(EXEEXT)

CLEANFILES += tests/fuzz-esdk-fuzzer$(EXEEXT)

# test-esdk counts HSM calls through the fault module (data-key cache tests).
EXTRA_tests_test_esdk_DEPENDENCIES = tests/faultmod/libfaultmod.la

# The data-key cache shared by threads, under ThreadSanitizer:
# make tsan-esdk (the whole of test-esdk, built like tsan-stress in faults.mk).
TSAN_ESDK = tests/test-esdk-tsan$(EXEEXT)
CLEANFILES += $(TSAN_ESDK)

$(TSAN_ESDK): tests/test-esdk.c $(libhsmwrap_la_SOURCES) config.h
	@srcs=; for f in $(libhsmwrap_la_SOURCES); do \
	  case $$f in *.c) srcs="$$srcs $(top_srcdir)/$$f";; esac; \
	done; \
	mkdir -p tests; \
	echo "  TSANCC   $@"; \
	$(TSAN_CC) $(TSAN_CFLAGS) -D_GNU_SOURCE -DSYSCONFDIR='"$(sysconfdir)"' \
	  -I$(top_srcdir)/include -I$(top_srcdir)/src/lib -I$(top_builddir) \
	  `$(PKG_CONFIG) --cflags libcrypto p11-kit-1 jansson cunit` \
	  -o $@ $$srcs $(top_srcdir)/tests/test-esdk.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson cunit` -lpthread -ldl

.PHONY: tsan-esdk
tsan-esdk: $(TSAN_ESDK) $(TSAN_ESDK_PIPE) tests/faultmod/libfaultmod.la
	FAULTMOD='$(FAULTMOD)' SOFTHSM_MODULE='$(SOFTHSM_MODULE)' \
	SOFTHSM2_UTIL='$(SOFTHSM2_UTIL)' \
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $${TSAN_OPTIONS:-}" \
	  $(SHELL) $(top_srcdir)/tests/with-token.sh ./$(TSAN_ESDK)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $${TSAN_OPTIONS:-}" \
	  ./$(TSAN_ESDK_PIPE)

# The frame pipeline against the serial code, byte for byte (issue 14):
# internal API with a fixed data key, signing key and message id.
check_PROGRAMS += tests/test-esdk-pipe
TESTS += tests/test-esdk-pipe
tests_test_esdk_pipe_SOURCES = tests/test-esdk-pipe.c $(ESDK_LIB_SOURCES)
tests_test_esdk_pipe_CFLAGS = $(ESDK_INTERNAL_CFLAGS) -DHW_ESDK_TEST_HOOKS
tests_test_esdk_pipe_LDADD = $(ESDK_INTERNAL_LIBS)

# ... and under ThreadSanitizer, in make tsan-esdk (workers, cancellation).
TSAN_ESDK_PIPE = tests/test-esdk-pipe-tsan$(EXEEXT)
CLEANFILES += $(TSAN_ESDK_PIPE)

$(TSAN_ESDK_PIPE): tests/test-esdk-pipe.c $(libhsmwrap_la_SOURCES) config.h
	@srcs=; for f in $(libhsmwrap_la_SOURCES); do \
	  case $$f in *.c) srcs="$$srcs $(top_srcdir)/$$f";; esac; \
	done; \
	mkdir -p tests; \
	echo "  TSANCC   $@"; \
	$(TSAN_CC) $(TSAN_CFLAGS) -D_GNU_SOURCE -DHW_ESDK_TEST_HOOKS \
	  -DSYSCONFDIR='"$(sysconfdir)"' \
	  -I$(top_srcdir)/include -I$(top_srcdir)/src/lib -I$(top_builddir) \
	  `$(PKG_CONFIG) --cflags libcrypto p11-kit-1 jansson` \
	  -o $@ $$srcs $(top_srcdir)/tests/test-esdk-pipe.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl
