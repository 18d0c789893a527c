# Key import (BYOK, custodian components) and M-of-N backup/restore:
# the Shamir known-answer test, CLI tests on real SoftHSM tokens, and the
# fuzz harnesses of the backup-file and share parsers (replayed here like
# tests/fuzz.mk replays its own).

hsmwrap_SOURCES += tools/cmd-import.c tools/cmd-backup.c

# shamir.c is pure arithmetic: compiled into the test directly, so the test
# sees its internal functions without exporting them from the library.
check_PROGRAMS += tests/test-shamir
TESTS += tests/test-shamir
tests_test_shamir_SOURCES = tests/test-shamir.c src/lib/base/shamir.c
tests_test_shamir_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/src/lib
tests_test_shamir_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS)
tests_test_shamir_LDADD = $(OPENSSL_LIBS)

TESTS += tests/test-import.sh tests/test-backup.sh
EXTRA_DIST += tests/test-import.sh tests/test-backup.sh

# Fuzzing of the two parsers (see tests/fuzz.mk): replayed over the seed
# corpus in every `make check`, and libFuzzer binaries for `make fuzz`.
FUZZ_NAMES += backup share
check_PROGRAMS += tests/fuzz-replay-backup tests/fuzz-replay-share
TESTS += tests/fuzz-replay-backup tests/fuzz-replay-share

tests_fuzz_replay_backup_SOURCES = tests/fuzz-backup.c tests/fuzz-replay.c
tests_fuzz_replay_backup_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/backup"'
tests_fuzz_replay_backup_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

tests_fuzz_replay_share_SOURCES = tests/fuzz-share.c tests/fuzz-replay.c
tests_fuzz_replay_share_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/share"'
tests_fuzz_replay_share_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

FUZZ_BINS += tests/fuzz-backup-fuzzer$(EXEEXT) tests/fuzz-share-fuzzer$(EXEEXT)

tests/fuzz-backup-fuzzer$(EXEEXT): tests/fuzz-backup.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-backup.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl

tests/fuzz-share-fuzzer$(EXEEXT): tests/fuzz-share.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-share.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl
