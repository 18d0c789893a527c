# Clusters (issue 6): two tokens with the same keys, one reached through
# p11-kit remoting, under load while the remote server is killed.
# tests/test-cluster links the library's sources: it imports the shared
# key material with raw PKCS#11 calls through each member's context.
EXTRA_DIST += tests/test-cluster.sh
check_PROGRAMS += tests/test-cluster
tests_test_cluster_SOURCES = tests/test-cluster.c $(libhsmwrap_la_SOURCES)
tests_test_cluster_CFLAGS = $(AM_CFLAGS) $(OPENSSL_CFLAGS) $(P11KIT_CFLAGS) $(JANSSON_CFLAGS)
tests_test_cluster_LDADD = $(OPENSSL_LIBS) $(P11KIT_LIBS) $(JANSSON_LIBS) -lpthread
TESTS += tests/test-cluster.sh
AM_TESTS_ENVIRONMENT += \
	HW_CLUSTER_RUNNER='$(abs_top_builddir)/tests/test-cluster'; export HW_CLUSTER_RUNNER; \
	P11_MODULE_PATH='$(P11_MODULE_PATH)'; export P11_MODULE_PATH;
