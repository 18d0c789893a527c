# `make check-valgrind`: the library's C test programs under valgrind
# memcheck (any error or definite/indirect leak fails the test). Slow: CI
# runs the ASan/UBSan build instead; this is the second opinion (valgrind
# also sees the PKCS#11 module and OpenSSL, which are not instrumented).
VALGRIND_TESTS = tests/test-lib tests/test-esdk
VALGRIND_CMD = $(abs_top_builddir)/libtool --mode=execute valgrind -q \
	--error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect --suppressions=$(abs_top_srcdir)/tests/valgrind.supp
EXTRA_DIST += tests/valgrind.supp

check-valgrind:
	@command -v valgrind >/dev/null || { echo "valgrind not installed"; exit 1; }
	$(MAKE) $(AM_MAKEFLAGS) check TESTS='$(VALGRIND_TESTS)' \
		LOG_COMPILER='$(SHELL) $(abs_top_srcdir)/tests/with-token.sh $(VALGRIND_CMD)'

.PHONY: check-valgrind
