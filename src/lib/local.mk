# libhsmwrap: the PKCS#11 shim. Only hw_* symbols are exported.
lib_LTLIBRARIES += libhsmwrap.la
# Listed bottom-up, one folder per layer (doc/ARCHITECTURE.md): a file
# calls only files of its own layer or of the layers listed before it.
libhsmwrap_la_SOURCES = \
	src/lib/internal.h \
	src/lib/base/buf.h src/lib/base/buf.c \
	src/lib/base/err.c \
	src/lib/base/text.c \
	src/lib/base/secmem.c \
	src/lib/base/file.c \
	src/lib/base/shamir.c \
	src/lib/format/blob.c \
	src/lib/format/ectx.c \
	src/lib/format/esdk.h src/lib/format/esdk-frame.c \
	src/lib/format/esdk-pipe.c \
	src/lib/format/esdk.c \
	src/lib/format/keymeta.c \
	src/lib/format/backup.h src/lib/format/backup-file.c \
	src/lib/format/backup-share.c \
	src/lib/token/module.c \
	src/lib/token/pin.c \
	src/lib/token/ctx.c \
	src/lib/token/token.c \
	src/lib/token/caps.c \
	src/lib/token/tlock.c \
	src/lib/key/key.c \
	src/lib/key/cert.c \
	src/lib/key/state.c \
	src/lib/key/logical.c \
	src/lib/key/pkey.c \
	src/lib/ops/ops.c \
	src/lib/ops/sign.c \
	src/lib/ops/envelope.h \
	src/lib/ops/envelope-cfg.c \
	src/lib/ops/envelope-cache.c \
	src/lib/ops/envelope-keyring.c \
	src/lib/ops/envelope-stream.c \
	src/lib/ops/envelope-oneshot.c \
	src/lib/ops/envelope-inspect.c \
	src/lib/ops/cluster.c \
	src/lib/lifecycle/meta.c \
	src/lib/lifecycle/import.c \
	src/lib/lifecycle/audit.c \
	src/lib/lifecycle/backup-create.c \
	src/lib/lifecycle/backup-restore.c \
	src/lib/lifecycle/tde.c
libhsmwrap_la_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS) $(JANSSON_CFLAGS) \
	-fvisibility=hidden
libhsmwrap_la_LIBADD = $(OPENSSL_LIBS) $(P11KIT_LIBS) $(JANSSON_LIBS)
libhsmwrap_la_LDFLAGS = $(AM_LDFLAGS) -version-info $(HW_LT_VERSION) \
	-Wl,--version-script=$(top_srcdir)/src/lib/hsmwrap.sym -no-undefined
EXTRA_libhsmwrap_la_DEPENDENCIES = src/lib/hsmwrap.sym
EXTRA_DIST += src/lib/hsmwrap.sym
