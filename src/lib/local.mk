# libhsmwrap: the PKCS#11 shim. Only hw_* symbols are exported.
lib_LTLIBRARIES += libhsmwrap.la
libhsmwrap_la_SOURCES = \
	src/lib/internal.h \
	src/lib/buf.h src/lib/buf.c \
	src/lib/err.c \
	src/lib/module.c \
	src/lib/ctx.c \
	src/lib/pin.c \
	src/lib/token.c \
	src/lib/key.c \
	src/lib/ectx.c \
	src/lib/blob.c \
	src/lib/ops.c \
	src/lib/sign.c \
	src/lib/pkey.c \
	src/lib/esdk.h src/lib/esdk.c \
	src/lib/envelope.c \
	src/lib/cluster.c
libhsmwrap_la_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS) -fvisibility=hidden
libhsmwrap_la_LIBADD = $(OPENSSL_LIBS) $(P11KIT_LIBS)
libhsmwrap_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(HW_LT_VERSION) \
	-Wl,--version-script=$(top_srcdir)/src/lib/hsmwrap.sym -no-undefined
EXTRA_libhsmwrap_la_DEPENDENCIES = src/lib/hsmwrap.sym
EXTRA_DIST += src/lib/hsmwrap.sym
