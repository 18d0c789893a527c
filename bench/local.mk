# Benchmarks live in bench/ (programs, driver scripts, these fragments).
# hsmwrap-bench: the library against raw PKCS#11 calls on the same token,
# and `make bench`, which runs it on a throwaway SoftHSM token under the
# build tree (never the machine's own token directory).

bin_PROGRAMS += hsmwrap-bench
hsmwrap_bench_SOURCES = bench/hsmwrap-bench.c
hsmwrap_bench_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS)
hsmwrap_bench_LDADD = libhsmwrap.la $(OPENSSL_LIBS) $(P11KIT_LIBS)

EXTRA_DIST += bench/bench-instructions.sh

# Extra options for hsmwrap-bench, e.g. make bench BENCH_ARGS='--seconds 2 --json'
BENCH_ARGS =
BENCH_DIR = $(abs_top_builddir)/bench-token

.PHONY: bench

# The token is created by hsmwrap itself (PINs from files, never argv) and
# thrown away on the next run; --setup creates the two bench keys.
bench: hsmwrap$(EXEEXT) hsmwrap-bench$(EXEEXT)
	@if test -z '$(SOFTHSM_MODULE)' || test ! -f '$(SOFTHSM_MODULE)'; then \
	  echo "make bench: SoftHSMv2 module not found (configure --with-softhsm=PATH)" >&2; \
	  exit 1; \
	fi
	@set -e; rm -rf '$(BENCH_DIR)'; \
	(umask 077; mkdir -p '$(BENCH_DIR)/tokens'; \
	 od -An -tx1 -N8 /dev/urandom | tr -d ' \n' >'$(BENCH_DIR)/so.pin'; \
	 od -An -tx1 -N8 /dev/urandom | tr -d ' \n' >'$(BENCH_DIR)/user.pin'; \
	 printf '%s\n' 'directories.tokendir = $(BENCH_DIR)/tokens' \
	   'objectstore.backend = file' 'log.level = ERROR' 'slots.removable = false' \
	   >'$(BENCH_DIR)/softhsm2.conf'; \
	 : >'$(BENCH_DIR)/hsmwrap.conf'); \
	SOFTHSM2_CONF='$(BENCH_DIR)/softhsm2.conf'; export SOFTHSM2_CONF; \
	HSMWRAP_CONFIG='$(BENCH_DIR)/hsmwrap.conf'; export HSMWRAP_CONFIG; \
	HSMWRAP_MODULE='$(SOFTHSM_MODULE)'; export HSMWRAP_MODULE; \
	HSMWRAP_PIN_SOURCE='file:$(BENCH_DIR)/user.pin'; export HSMWRAP_PIN_SOURCE; \
	unset HSMWRAP_TOKEN; \
	./hsmwrap$(EXEEXT) token init --label bench \
	  --so-pin-source 'file:$(BENCH_DIR)/so.pin' >/dev/null; \
	HSMWRAP_TOKEN='pkcs11:token=bench'; export HSMWRAP_TOKEN; \
	./hsmwrap-bench$(EXEEXT) --setup $(BENCH_ARGS)

# The same comparison in instructions per operation (callgrind), which the
# noise of a shared machine does not move; needs the token `make bench` made.
.PHONY: bench-instructions
bench-instructions: hsmwrap-bench$(EXEEXT)
	@test -f '$(BENCH_DIR)/softhsm2.conf' || { echo "run make bench first" >&2; exit 1; }
	@SOFTHSM2_CONF='$(BENCH_DIR)/softhsm2.conf' HSMWRAP_CONFIG='$(BENCH_DIR)/hsmwrap.conf' \
	HSMWRAP_MODULE='$(SOFTHSM_MODULE)' HSMWRAP_PIN_SOURCE='file:$(BENCH_DIR)/user.pin' \
	HSMWRAP_TOKEN='pkcs11:token=bench' HSMWRAP_BENCH='$(abs_top_builddir)/hsmwrap-bench$(EXEEXT)' \
	$(SHELL) $(top_srcdir)/bench/bench-instructions.sh

clean-local: clean-bench
.PHONY: clean-bench
clean-bench:
	-rm -rf '$(BENCH_DIR)'
