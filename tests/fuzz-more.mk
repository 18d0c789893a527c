# More parsers under the fuzzers (issue 6): the configuration file.
# Replayed over tests/fuzz-corpus/config in make check, fuzzed by `make fuzz`.
check_PROGRAMS += tests/fuzz-replay-config
TESTS += tests/fuzz-replay-config
tests_fuzz_replay_config_SOURCES = tests/fuzz-config.c tests/fuzz-replay.c tools/settings.c \
	tools/settings.h
tests_fuzz_replay_config_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/tools \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/config"'

FUZZ_NAMES += config
FUZZ_BINS += tests/fuzz-config-fuzzer$(EXEEXT)
tests/fuzz-config-fuzzer$(EXEEXT): tests/fuzz-config.c tools/settings.c tools/settings.h config.h
	@mkdir -p tests; echo "  FUZZCC   $@"; \
	$(FUZZ_CC) $(FUZZ_CFLAGS) -D_GNU_SOURCE -I$(top_srcdir)/tools -I$(top_builddir) \
	  -o $@ $(top_srcdir)/tests/fuzz-config.c $(top_srcdir)/tools/settings.c
