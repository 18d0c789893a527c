/*
 * hsmwrap-bench-getkey PLUGIN.so: the latency of the MariaDB plugin's
 * key calls, measured by loading the plugin the way the server does
 * (dlopen, the print-error service filled in, system variables set, init)
 * without a server around it:
 *   - init: opening the token and a new keyring;
 *   - a key id asked for the first time (created in the HSM and saved);
 *   - get_key from the cache, 1 thread and 4 threads at once;
 *   - get_latest_key_version of a known id.
 * Settings come from the environment of tests/with-token.sh
 * (HSMWRAP_MODULE, HSMWRAP_TOKEN, HSMWRAP_PIN_SOURCE, HW_TEST_DIR) and the
 * master key BENCH.MK that bench-mariadb.sh made.
 */
#include "config.h"

#define MYSQL_DYNAMIC_PLUGIN
#include <mysql/plugin.h>
#include <mysql/plugin_encryption.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "hsmwrap-bench-getkey"
#define NKEYS 8
#define CALLS 2000000L
#define THREADS 4

static void fake_printv(unsigned int nr, const char *fmt, unsigned long flags, va_list ap)
{
	/* Notes are the plugin's normal chatter; errors are shown. */
	if (!(flags & ME_NOTE)) {
		fputs(PROG ": plugin says: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
}

static void fake_printf(unsigned int nr, const char *fmt, unsigned long flags, ...)
{
	va_list ap;

	va_start(ap, flags);
	fake_printv(nr, fmt, flags, ap);
	va_end(ap);
}

static void fake_error(unsigned int nr, unsigned long flags, ...)
{
	fprintf(stderr, PROG ": plugin error %u\n", nr);
}

static struct my_print_error_service_st fake_service = { fake_error, fake_printf, fake_printv };

/* The layout MYSQL_SYSVAR_STR declares. */
struct str_var {
	MYSQL_PLUGIN_VAR_HEADER;
	char **value;
	const char *def_val;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct st_mariadb_encryption *enc;

static void *getkey_loop(void *arg)
{
	unsigned char key[32];
	unsigned int len;
	long n = *(long *)arg;

	for (long i = 0; i < n; i++) {
		len = sizeof(key);
		if (enc->get_key(1 + (unsigned)(i % NKEYS), 1, key, &len) != 0) {
			fprintf(stderr, PROG ": get_key failed\n");
			exit(1);
		}
	}
	return NULL;
}

static void set_var(struct st_maria_plugin *p, const char *name, const char *val)
{
	for (struct st_mysql_sys_var **v = p->system_vars; *v; v++) {
		struct str_var *s = (struct str_var *)*v;

		if (strcmp(s->name, name) == 0) {
			*s->value = strdup(val);
			return;
		}
	}
	fprintf(stderr, PROG ": the plugin has no variable %s\n", name);
	exit(1);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *dir = getenv("HW_TEST_DIR");
	char keyring[4096];
	struct st_maria_plugin *p;
	void *h, **svc;
	double t0, t1, create[NKEYS];
	pthread_t th[THREADS];
	long per = CALLS / THREADS, one = CALLS;

	if (argc != 2 || !dir) {
		fprintf(stderr, "usage: " PROG " PLUGIN.so (under tests/with-token.sh)\n");
		return 2;
	}
	h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		fprintf(stderr, PROG ": %s\n", dlerror());
		return 1;
	}
	svc = dlsym(h, "my_print_error_service");
	p = dlsym(h, "_maria_plugin_declarations_");
	if (!svc || !p) {
		fprintf(stderr, PROG ": %s is not a MariaDB plugin\n", argv[1]);
		return 1;
	}
	*svc = &fake_service;
	snprintf(keyring, sizeof(keyring), "%s/bench-getkey.keyring", dir);
	unlink(keyring);
	set_var(p, "module", getenv("HSMWRAP_MODULE") ? getenv("HSMWRAP_MODULE") : "");
	set_var(p, "token", getenv("HSMWRAP_TOKEN") ? getenv("HSMWRAP_TOKEN") : "");
	set_var(p, "pin_source", getenv("HSMWRAP_PIN_SOURCE") ? getenv("HSMWRAP_PIN_SOURCE") : "");
	set_var(p, "master_key", "BENCH.MK");
	set_var(p, "keyring", keyring);
	enc = p->info;

	t0 = now();
	if (p->init(NULL) != 0) {
		fprintf(stderr, PROG ": plugin init failed\n");
		return 1;
	}
	t1 = now();
	printf("get_key latency (hsmwrap_key_management loaded without a server)\n");
	printf("  init (log in, create the keyring): %.1f ms\n", (t1 - t0) * 1e3);
	for (unsigned id = 1; id <= NKEYS; id++) {
		t0 = now();
		if (enc->get_latest_key_version(id) != 1) {
			fprintf(stderr, PROG ": creating key %u failed\n", id);
			return 1;
		}
		create[id - 1] = now() - t0;
	}
	qsort(create, NKEYS, sizeof(create[0]), cmp_double);
	printf("  a new key id (HSM data key, keyring saved with fsync, unwrapped): "
	       "median %.2f ms of %d\n", create[NKEYS / 2] * 1e3, NKEYS);

	t0 = now();
	getkey_loop(&one);
	t1 = now();
	printf("  get_key from the cache, 1 thread: %.0f ns per call (%ld calls)\n",
	       (t1 - t0) * 1e9 / (double)CALLS, CALLS);
	t0 = now();
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, getkey_loop, &per);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	t1 = now();
	printf("  get_key from the cache, %d threads at once: %.0f ns per call, %.1f M calls/s "
	       "in all\n", THREADS, (t1 - t0) * 1e9 / (double)per, (double)CALLS / (t1 - t0) / 1e6);
	t0 = now();
	for (long i = 0; i < CALLS; i++)
		if (enc->get_latest_key_version(1 + (unsigned)(i % NKEYS)) != 1)
			return 1;
	t1 = now();
	printf("  get_latest_key_version of a known id: %.0f ns per call\n",
	       (t1 - t0) * 1e9 / (double)CALLS);
	p->deinit(NULL);
	unlink(keyring);
	return 0;
}
