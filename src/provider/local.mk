# hsmwrap.so: the OpenSSL 3 provider (issue 4), a libtool module installed
# into OpenSSL's own modules directory so `-provider hsmwrap` and
# openssl.cnf find it without a path.
#
# The directory comes from configure (PKG_CHECK_VAR of libcrypto's
# modulesdir, or --with-modulesdir=DIR). make distcheck installs into a
# staging prefix, so it is pointed below $(libdir) instead of the system
# directory.
osslmodulesdir = $(OSSL_MODULESDIR)
# Single quotes: configure gets the literal ${libdir}, which make expands.
AM_DISTCHECK_CONFIGURE_FLAGS = --with-modulesdir='$${libdir}/ossl-modules'
# The provider's code is a convenience library: hsmwrap.so is made of it,
# and the CLI links it in to sign CA certificates through it
# (src/provider/builtin.h, tools/cmd-ca.c).
noinst_LTLIBRARIES += libhwprov.la
libhwprov_la_SOURCES = \
	src/provider/provider.h \
	src/provider/builtin.h \
	src/provider/common.c \
	src/provider/keymgmt.c \
	src/provider/store.c \
	src/provider/signature.c \
	src/provider/asym.c \
	src/provider/keyexch.c \
	src/provider/decoder.c \
	src/provider/encoder.c \
	src/provider/provider.c
libhwprov_la_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) -fvisibility=hidden
osslmodules_LTLIBRARIES = hsmwrap.la
hsmwrap_la_SOURCES =
hsmwrap_la_LIBADD = libhwprov.la libhsmwrap.la $(OPENSSL_LIBS)
# Only the entry point is exported (it is marked visible in provider.c).
hsmwrap_la_LDFLAGS = $(AM_LDFLAGS) -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^OSSL_provider_init$$'

# `hsmwrap key export-ref` writes the provider's key-reference files.
hsmwrap_SOURCES += tools/cmd-provider.c
hsmwrap_LDADD += libhwprov.la

EXTRA_DIST += conf/hsmwrap-provider.cnf
