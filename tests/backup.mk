# Key import (BYOK, custodian components) and M-of-N backup/restore:
# the Shamir known-answer test, CLI tests on real SoftHSM tokens, and the
# fuzz harnesses of the backup-file and share parsers (replayed here like
# tests/fuzz.mk replays its own).

libhsmwrap_la_SOURCES += src/lib/shamir.c src/lib/import.c src/lib/backup.c
hsmwrap_SOURCES += tools/cmd-import.c tools/cmd-backup.c

# shamir.c is pure arithmetic: compiled into the test directly, so the test
# sees its internal functions without exporting them from the library.
check_PROGRAMS += tests/test-shamir
TESTS += tests/test-shamir
tests_test_shamir_SOURCES = tests/test-shamir.c src/lib/shamir.c
tests_test_shamir_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/src/lib
tests_test_shamir_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS)
tests_test_shamir_LDADD = $(OPENSSL_LIBS)

TESTS += tests/test-import.sh tests/test-backup.sh
EXTRA_DIST += tests/test-import.sh tests/test-backup.sh
