# Reliability harness (issue 6): a fault-injecting PKCS#11 module in front
# of SoftHSM, the library and CLI under faults, and a 16-thread stress test
# with a fork in the middle, also built with ThreadSanitizer (make tsan-stress).

# The fault module is a test fixture, never installed; -rpath only makes
# libtool build a shared object. Tests load .libs/libfaultmod.so by path.
check_LTLIBRARIES = tests/faultmod/libfaultmod.la
tests_faultmod_libfaultmod_la_SOURCES = tests/faultmod/faultmod.c
tests_faultmod_libfaultmod_la_CFLAGS = $(AM_CFLAGS) $(P11KIT_CFLAGS) -fvisibility=hidden
tests_faultmod_libfaultmod_la_LDFLAGS = -module -avoid-version -rpath /nowhere -no-undefined
tests_faultmod_libfaultmod_la_LIBADD = -ldl -lpthread

FAULTMOD = $(abs_top_builddir)/tests/faultmod/.libs/libfaultmod.so
AM_TESTS_ENVIRONMENT += FAULTMOD='$(FAULTMOD)'; export FAULTMOD;

EXTRA_DIST += tests/test-faults-cli.sh

if HAVE_CUNIT
check_PROGRAMS += tests/test-faults tests/test-stress
TESTS += tests/test-faults tests/test-stress

tests_test_faults_SOURCES = tests/test-faults.c tests/test-common.h
tests_test_faults_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(P11KIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_test_faults_LDADD = libhsmwrap.la $(CUNIT_LIBS) $(P11KIT_LIBS) $(OPENSSL_LIBS)
EXTRA_tests_test_faults_DEPENDENCIES = tests/faultmod/libfaultmod.la

tests_test_stress_SOURCES = tests/test-stress.c
tests_test_stress_CFLAGS = $(AM_CFLAGS) $(CUNIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_test_stress_LDADD = libhsmwrap.la $(CUNIT_LIBS) $(OPENSSL_LIBS)
endif

TESTS += tests/test-faults-cli.sh

# ThreadSanitizer build of the stress test: the library's sources compiled
# straight into one binary (like the fuzzers), run under with-token.sh.
TSAN_CC = clang
TSAN_CFLAGS = -g -O1 -std=c11 -fno-omit-frame-pointer -fsanitize=thread
TSAN_STRESS = tests/test-stress-tsan$(EXEEXT)

$(TSAN_STRESS): tests/test-stress.c $(libhsmwrap_la_SOURCES) config.h
	@srcs=; for f in $(libhsmwrap_la_SOURCES); do \
	  case $$f in *.c) srcs="$$srcs $(top_srcdir)/$$f";; esac; \
	done; \
	mkdir -p tests; \
	echo "  TSANCC   $@"; \
	$(TSAN_CC) $(TSAN_CFLAGS) -D_GNU_SOURCE -DSYSCONFDIR='"$(sysconfdir)"' \
	  -I$(top_srcdir)/include -I$(top_srcdir)/src/lib -I$(top_builddir) \
	  `$(PKG_CONFIG) --cflags libcrypto p11-kit-1 jansson cunit` \
	  -o $@ $$srcs $(top_srcdir)/tests/test-stress.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson cunit` -lpthread -ldl

# halt_on_error: the first race fails the run. SoftHSM and OpenSSL are not
# instrumented; races inside them are not reported (only ours are).
.PHONY: tsan-stress
tsan-stress: $(TSAN_STRESS)
	SOFTHSM_MODULE='$(SOFTHSM_MODULE)' SOFTHSM2_UTIL='$(SOFTHSM2_UTIL)' \
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $${TSAN_OPTIONS:-}" \
	  $(SHELL) $(top_srcdir)/tests/with-token.sh ./$(TSAN_STRESS)

clean-local: clean-tsan
.PHONY: clean-tsan
clean-tsan:
	-rm -f $(TSAN_STRESS)
