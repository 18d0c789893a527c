# TLS benchmark (issue 4): `make bench-tls` (handshakes/s and signatures/s:
# PEM key, the hsmwrap provider, the libp11 engine, raw C_Sign).

# Provider signatures/s against raw C_Sign (same key, same run), and the
# threads test test-provider.sh runs.
noinst_PROGRAMS += hsmwrap-bench-sign
hsmwrap_bench_sign_SOURCES = bench/bench-sign.c
hsmwrap_bench_sign_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS)
hsmwrap_bench_sign_LDADD = $(OPENSSL_LIBS) $(P11KIT_LIBS) -ldl -lpthread

# make bench-tls: handshakes/s (PEM key, hsmwrap provider, libp11 engine)
# and provider signatures/s against raw C_Sign, on a throwaway token.
# BENCH_ROUNDS, BENCH_SECONDS, BENCH_SIGN_ROUNDS tune it.
EXTRA_DIST += bench/bench-tls.sh bench/bench-sign.c
.PHONY: bench-tls
bench-tls: hsmwrap$(EXEEXT) hsmwrap-bench-sign$(EXEEXT) hsmwrap.la
	@SOFTHSM_MODULE='$(SOFTHSM_MODULE)' HSMWRAP='$(abs_top_builddir)/hsmwrap$(EXEEXT)' \
	OPENSSL_BIN='$(OPENSSL_BIN)' \
	HW_TEST_TIMEOUT=0 $(SHELL) $(top_srcdir)/tests/with-token.sh $(SHELL) $(top_srcdir)/bench/bench-tls.sh
