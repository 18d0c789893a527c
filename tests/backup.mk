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

# The two parsers are pure codecs: the harnesses are built from them and
# the base they stand on, not from the library, so a parser that starts to
# need a token (or anything above format/) no longer links.
BACKUP_CODEC_SOURCES = src/lib/base/buf.c src/lib/base/err.c src/lib/base/text.c \
	src/lib/format/backup-file.c src/lib/format/backup-share.c
BACKUP_CODEC_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS)

tests_fuzz_replay_backup_SOURCES = tests/fuzz-backup.c tests/fuzz-replay.c \
	$(BACKUP_CODEC_SOURCES)
tests_fuzz_replay_backup_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/backup"'
tests_fuzz_replay_backup_CFLAGS = $(BACKUP_CODEC_CFLAGS)
tests_fuzz_replay_backup_LDADD = $(OPENSSL_LIBS) $(P11KIT_LIBS)

tests_fuzz_replay_share_SOURCES = tests/fuzz-share.c tests/fuzz-replay.c \
	$(BACKUP_CODEC_SOURCES)
tests_fuzz_replay_share_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/share"'
tests_fuzz_replay_share_CFLAGS = $(BACKUP_CODEC_CFLAGS)
tests_fuzz_replay_share_LDADD = $(OPENSSL_LIBS) $(P11KIT_LIBS)

FUZZ_BINS += tests/fuzz-backup-fuzzer$(EXEEXT) tests/fuzz-share-fuzzer$(EXEEXT)

tests/fuzz-backup-fuzzer$(EXEEXT): tests/fuzz-backup.c $(BACKUP_CODEC_SOURCES) config.h
	@fuzz_srcs="$(BACKUP_CODEC_SOURCES)"; $(FUZZ_BUILD_FROM) \
	  $(top_srcdir)/tests/fuzz-backup.c `$(PKG_CONFIG) --libs libcrypto p11-kit-1`

tests/fuzz-share-fuzzer$(EXEEXT): tests/fuzz-share.c $(BACKUP_CODEC_SOURCES) config.h
	@fuzz_srcs="$(BACKUP_CODEC_SOURCES)"; $(FUZZ_BUILD_FROM) \
	  $(top_srcdir)/tests/fuzz-share.c `$(PKG_CONFIG) --libs libcrypto p11-kit-1`
