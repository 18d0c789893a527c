# Test suite. Every test runs under tests/with-token.sh, which gives it a
# throwaway SoftHSM token in a fresh temporary directory (exit 77 = skipped
# when SoftHSM is missing).

EXTRA_DIST += tests/with-token.sh tests/copy-out.sh tests/test-cli.sh tests/no-cunit.sh tests/lib.sh tests/p11.sh

TEST_EXTENSIONS = .sh
LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/with-token.sh
SH_LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/with-token.sh $(SHELL)

# The second token is cheap and lets every test check that the one named
# by the URI is used, not merely the only one there is.
# With --enable-sanitizers, LeakSanitizer runs at every exit (SoftHSM 2.6.1
# leaks nothing at exit, so no suppressions are needed); a leak changes
# the exit status, which the tests assert exactly.
AM_TESTS_ENVIRONMENT = \
	SOFTHSM_MODULE='$(SOFTHSM_MODULE)'; export SOFTHSM_MODULE; \
	SOFTHSM2_UTIL='$(SOFTHSM2_UTIL)'; export SOFTHSM2_UTIL; \
	PKCS11_TOOL='$(PKCS11_TOOL)'; export PKCS11_TOOL; \
	OPENSSL_BIN='$(OPENSSL_BIN)'; export OPENSSL_BIN; \
	HSMWRAP='$(abs_top_builddir)/hsmwrap'; export HSMWRAP; \
	HW_TEST_SECOND_TOKEN=1; export HW_TEST_SECOND_TOKEN; \
	UBSAN_OPTIONS="print_stacktrace=1$${UBSAN_OPTIONS:+:$$UBSAN_OPTIONS}"; \
	export UBSAN_OPTIONS;

if HAVE_CUNIT
check_PROGRAMS += tests/test-lib tests/test-threads
TESTS += tests/test-lib tests/test-threads

tests_test_lib_SOURCES = tests/test-lib.c tests/test-common.h
tests_test_lib_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(P11KIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_test_lib_LDADD = libhsmwrap.la $(CUNIT_LIBS) $(P11KIT_LIBS) $(OPENSSL_LIBS)

tests_test_threads_SOURCES = tests/test-threads.c tests/test-common.h
tests_test_threads_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS)
tests_test_threads_LDADD = libhsmwrap.la $(CUNIT_LIBS) $(OPENSSL_LIBS)
else
# Say so in the test report instead of silently running fewer tests.
TESTS += tests/no-cunit.sh
endif

TESTS += tests/test-cli.sh
TESTS += tests/test-modules.sh
# Many processes on one token (14 processes, 186 operations, about 30-60 s
# on a loaded 2-core machine). `make check-multiproc` runs it alone, e.g.
# repeatedly or scaled up with MP_READERS, MP_WRITERS, MP_ROUNDS.
TESTS += tests/test-multiproc.sh
EXTRA_DIST += tests/test-multiproc.sh
check-multiproc: all tests/faultmod/libfaultmod.la
	$(AM_TESTS_ENVIRONMENT) $(SHELL) $(top_srcdir)/tests/with-token.sh \
		$(SHELL) $(top_srcdir)/tests/test-multiproc.sh
.PHONY: check-multiproc
EXTRA_DIST += tests/test-modules.sh tests/nss.sh
