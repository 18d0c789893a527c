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

# Key names and token URIs (hw_key_spec_parse and p11-kit's URI parser as
# hsmwrap uses it). The replay links the library's sources: the parser is
# internal.
check_PROGRAMS += tests/fuzz-replay-keyspec
TESTS += tests/fuzz-replay-keyspec
tests_fuzz_replay_keyspec_SOURCES = tests/fuzz-keyspec.c tests/fuzz-replay.c \
	$(libhsmwrap_la_SOURCES)
tests_fuzz_replay_keyspec_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/keyspec"'
tests_fuzz_replay_keyspec_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS) $(JANSSON_CFLAGS)
tests_fuzz_replay_keyspec_LDADD = $(OPENSSL_LIBS) $(P11KIT_LIBS) $(JANSSON_LIBS) -lpthread

FUZZ_NAMES += keyspec
FUZZ_BINS += tests/fuzz-keyspec-fuzzer$(EXEEXT)
tests/fuzz-keyspec-fuzzer$(EXEEXT): tests/fuzz-keyspec.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-keyspec.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl
