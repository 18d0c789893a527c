# MariaDB benchmark (issue 11): `make bench-mariadb` runs the same sysbench
# OLTP workload on three servers side by side (no encryption,
# file_key_management, hsmwrap_key_management), their start-up times, and
# the plugin's get_key latency (hsmwrap-bench-getkey), on a throwaway token.
# BENCH_ROUNDS, BENCH_SECONDS, BENCH_THREADS, BENCH_ROWS tune it.
EXTRA_DIST += bench/bench-mariadb.sh bench/bench-getkey.c bench/mariadb.mk
if HAVE_MARIADB
noinst_PROGRAMS += hsmwrap-bench-getkey
hsmwrap_bench_getkey_SOURCES = bench/bench-getkey.c
hsmwrap_bench_getkey_CFLAGS = $(AM_CFLAGS) $(MARIADB_PLUGIN_CFLAGS)
hsmwrap_bench_getkey_LDADD = -ldl -lpthread
BENCH_MARIADB_DEPS = hsmwrap_key_management.la hsmwrap-bench-getkey$(EXEEXT)
endif
.PHONY: bench-mariadb
bench-mariadb: hsmwrap$(EXEEXT) $(BENCH_MARIADB_DEPS)
	@SOFTHSM_MODULE='$(SOFTHSM_MODULE)' HSMWRAP='$(abs_top_builddir)/hsmwrap$(EXEEXT)' \
	HW_TEST_TIMEOUT=0 $(SHELL) $(top_srcdir)/tests/with-token.sh $(SHELL) $(top_srcdir)/bench/bench-mariadb.sh
