# Fuzzing. Two builds of each harness in tests/fuzz-NAME.c:
#  - tests/fuzz-replay-NAME, an ordinary test in `make check` that replays
#    the seed corpus tests/fuzz-corpus/NAME/ (and truncations/corruptions
#    of it), so the harnesses are compiled and exercised in every CI run;
#  - `make fuzz`: libFuzzer binaries compiled with a plain clang command
#    (no libtool) from the library sources plus the harness, with ASan and
#    UBSan, each run for FUZZ_SECONDS over its seeds.

FUZZ_NAMES = blob ectx
FUZZ_SECONDS = 60
FUZZ_CC = clang
FUZZ_CFLAGS = -g -O1 -std=c11 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_WORK = fuzz-work

EXTRA_DIST += tests/fuzz-corpus tests/fuzz-replay.c

check_PROGRAMS += tests/fuzz-replay-blob tests/fuzz-replay-ectx
TESTS += tests/fuzz-replay-blob tests/fuzz-replay-ectx

tests_fuzz_replay_blob_SOURCES = tests/fuzz-blob.c tests/fuzz-replay.c
tests_fuzz_replay_blob_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/blob"'
tests_fuzz_replay_blob_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

tests_fuzz_replay_ectx_SOURCES = tests/fuzz-ectx.c tests/fuzz-replay.c
tests_fuzz_replay_ectx_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_CORPUS_DIR='"$(abs_top_srcdir)/tests/fuzz-corpus/ectx"'
tests_fuzz_replay_ectx_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

FUZZ_BINS = tests/fuzz-blob-fuzzer$(EXEEXT) tests/fuzz-ectx-fuzzer$(EXEEXT)

# The library's .c files come from libhsmwrap_la_SOURCES, so a new source
# file is fuzzed without touching this fragment. FUZZ_BUILD_FROM builds
# from the files in the shell variable fuzz_srcs instead: a harness of a
# pure codec needs only the codec and base/ (tests/backup.mk).
FUZZ_BUILD = fuzz_srcs="$(libhsmwrap_la_SOURCES)"; $(FUZZ_BUILD_FROM)
FUZZ_BUILD_FROM = \
	srcs=; for f in $$fuzz_srcs; do \
	  case $$f in *.c) srcs="$$srcs $(top_srcdir)/$$f";; esac; \
	done; \
	mkdir -p tests; \
	echo "  FUZZCC   $@"; \
	$(FUZZ_CC) $(FUZZ_CFLAGS) -D_GNU_SOURCE -DSYSCONFDIR='"$(sysconfdir)"' \
	  -I$(top_srcdir)/include -I$(top_srcdir)/src/lib -I$(top_builddir) \
	  `$(PKG_CONFIG) --cflags libcrypto p11-kit-1 jansson` \
	  -o $@ $$srcs

tests/fuzz-blob-fuzzer$(EXEEXT): tests/fuzz-blob.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-blob.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl

tests/fuzz-ectx-fuzzer$(EXEEXT): tests/fuzz-ectx.c $(libhsmwrap_la_SOURCES) config.h
	@$(FUZZ_BUILD) $(top_srcdir)/tests/fuzz-ectx.c \
	  `$(PKG_CONFIG) --libs libcrypto p11-kit-1 jansson` -lpthread -ldl

# New inputs libFuzzer finds go to $(FUZZ_WORK)/NAME/corpus, never into the
# source tree; crashes to $(FUZZ_WORK)/NAME/crash-*. A run that finds one
# fails and prints the end of its log.
.PHONY: fuzz
fuzz: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_NAMES); do \
	  w=$(FUZZ_WORK)/$$t; mkdir -p $$w/corpus; \
	  echo "  FUZZ     $$t for $(FUZZ_SECONDS) s (log: $$w/fuzz.log)"; \
	  if ASAN_OPTIONS=detect_leaks=1 ./tests/fuzz-$$t-fuzzer$(EXEEXT) \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	      -print_final_stats=1 -artifact_prefix=$$w/ \
	      $$w/corpus $(top_srcdir)/tests/fuzz-corpus/$$t >$$w/fuzz.log 2>&1; then \
	    grep -E '^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|Done )' $$w/fuzz.log || true; \
	  else \
	    echo "fuzz: $$t FAILED; end of $$w/fuzz.log:" >&2; \
	    tail -n 60 $$w/fuzz.log >&2; \
	    ls -l $$w/crash-* $$w/leak-* $$w/timeout-* $$w/oom-* 2>/dev/null >&2 || true; \
	    exit 1; \
	  fi; \
	done

clean-local: clean-fuzz
.PHONY: clean-fuzz
clean-fuzz:
	-rm -rf $(FUZZ_WORK) $(FUZZ_BINS)
