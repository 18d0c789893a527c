# Envelope encryption benchmark (issue 3): `hsmwrap-bench envelope` and
# `make bench-envelope`, which runs it next to openssl speed, age and the
# AWS Encryption SDK for JavaScript on the same data and prints the ratios
# (bench/bench-envelope.sh). Uses the throwaway token of `make bench`.

hsmwrap_bench_SOURCES += bench/bench-envelope.c
EXTRA_DIST += bench/bench-envelope.sh

# e.g. make bench-envelope BENCH_ENVELOPE_ARGS='--sizes 1M --rounds 5'
BENCH_ENVELOPE_ARGS =

.PHONY: bench-envelope
bench-envelope: hsmwrap$(EXEEXT) hsmwrap-bench$(EXEEXT)
	@test -f '$(BENCH_DIR)/softhsm2.conf' || $(MAKE) $(AM_MAKEFLAGS) bench BENCH_ARGS='--ops encrypt --threads 1 --rounds 1 --seconds 0.05' >/dev/null
	@SOFTHSM2_CONF='$(BENCH_DIR)/softhsm2.conf' HSMWRAP_CONFIG='$(BENCH_DIR)/hsmwrap.conf' \
	HSMWRAP_MODULE='$(SOFTHSM_MODULE)' HSMWRAP_PIN_SOURCE='file:$(BENCH_DIR)/user.pin' \
	HSMWRAP_TOKEN='pkcs11:token=bench' HSMWRAP='$(abs_top_builddir)/hsmwrap$(EXEEXT)' HSMWRAP_BENCH='$(abs_top_builddir)/hsmwrap-bench$(EXEEXT)' \
	OPENSSL_BIN='$(OPENSSL_BIN)' HW_INTEROP_JS_SRC='$(abs_top_srcdir)/tests/interop-js' \
	HW_INTEROP_JS_DIR='$(abs_top_builddir)/tests/interop-js' \
	$(SHELL) $(top_srcdir)/bench/bench-envelope.sh $(BENCH_ENVELOPE_ARGS)
