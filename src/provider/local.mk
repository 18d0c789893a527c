# hsmwrap.so: the OpenSSL 3 provider (issue 4), a libtool module installed
# into OpenSSL's own modules directory so `-provider hsmwrap` and
# openssl.cnf find it without a path.
#
# The directory is asked of pkg-config when make runs (backquotes, so the
# install rules' shell expands it: $(shell) would be a GNU make extension,
# which automake -Werror refuses). Override: make osslmodulesdir=DIR.
# Better, once configure.ac has it:
#   PKG_CHECK_VAR([OSSL_MODULESDIR], [libcrypto], [modulesdir])
# and then osslmodulesdir = $(OSSL_MODULESDIR) here.
osslmodulesdir = `$(PKG_CONFIG) --variable=modulesdir libcrypto`
osslmodules_LTLIBRARIES = hsmwrap.la
hsmwrap_la_SOURCES = \
	src/provider/provider.h \
	src/provider/provider.c \
	src/provider/keymgmt.c \
	src/provider/store.c \
	src/provider/signature.c \
	src/provider/asym.c \
	src/provider/decoder.c
hsmwrap_la_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) -fvisibility=hidden
hsmwrap_la_LIBADD = libhsmwrap.la $(OPENSSL_LIBS)
# Only the entry point is exported (it is marked visible in provider.c).
hsmwrap_la_LDFLAGS = $(AM_LDFLAGS) -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^OSSL_provider_init$$'

# `hsmwrap key export-ref` writes the provider's key-reference files.
hsmwrap_SOURCES += tools/cmd-provider.c

EXTRA_DIST += conf/hsmwrap-provider.cnf
