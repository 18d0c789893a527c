# hsmwrap_key_management.so: the MariaDB key-management plugin (issue 11),
# a libtool module installed into MariaDB's plugin directory so that
# `plugin_load_add = hsmwrap_key_management` finds it. Built only when
# configure found the server's plugin headers (libmariadbd-dev).
if HAVE_MARIADB
mariadbplugindir = $(MARIADB_PLUGINDIR)
mariadbplugin_LTLIBRARIES = hsmwrap_key_management.la
hsmwrap_key_management_la_SOURCES = src/mariadb/plugin.c
# -isystem: the server headers are not written for our warning flags.
hsmwrap_key_management_la_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(MARIADB_PLUGIN_CFLAGS)
hsmwrap_key_management_la_LIBADD = libhsmwrap.la $(OPENSSL_LIBS) -lpthread
# The server looks up the plugin declaration symbols and the services it
# fills in; nothing else is exported (the macros that declare them cannot
# be marked visible, so the export list does it, not -fvisibility).
hsmwrap_key_management_la_LDFLAGS = $(AM_LDFLAGS) -module -avoid-version -shared -no-undefined \
	-export-symbols-regex '^(_maria_.*_|my_print_error_service)$$'
endif
# make distcheck installs into a staging prefix.
AM_DISTCHECK_CONFIGURE_FLAGS += --with-mariadb-plugindir='$${libdir}/mysql/plugin'
EXTRA_DIST += src/mariadb/local.mk
