# Interoperability with the AWS Encryption SDK for JavaScript (issue 3),
# both ways, every suite; see tests/test-interop-js.sh. The SDK's npm
# packages are pinned by tests/interop-js/package-lock.json and installed
# with `npm ci` into $(builddir)/tests/interop-js when missing (never
# committed). tests/import-aes-key puts the same key into the test token.

check_PROGRAMS += tests/import-aes-key
tests_import_aes_key_SOURCES = tests/import-aes-key.c
tests_import_aes_key_CFLAGS = $(AM_CFLAGS) $(P11KIT_CFLAGS) $(OPENSSL_CFLAGS)
tests_import_aes_key_LDADD = $(P11KIT_LIBS) $(OPENSSL_LIBS)

TESTS += tests/test-interop-js.sh
EXTRA_DIST += tests/test-interop-js.sh tests/interop-js/package.json \
	tests/interop-js/package-lock.json tests/interop-js/esdk.js

AM_TESTS_ENVIRONMENT += \
	HW_IMPORT_AES_KEY='$(abs_top_builddir)/tests/import-aes-key'; \
	export HW_IMPORT_AES_KEY; \
	HW_INTEROP_JS_DIR='$(abs_top_builddir)/tests/interop-js'; \
	export HW_INTEROP_JS_DIR;

clean-local: clean-interop-js
.PHONY: clean-interop-js
# In an out-of-tree build the installed packages are the build's own.
clean-interop-js:
	-test '$(abs_top_builddir)' = '$(abs_top_srcdir)' || \
	  rm -rf '$(abs_top_builddir)/tests/interop-js'
