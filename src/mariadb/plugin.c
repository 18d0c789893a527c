/*
 * hsmwrap_key_management: a MariaDB encryption plugin whose table keys are
 * kept in an hsmwrap TDE keyring, wrapped by a master key that never
 * leaves the PKCS#11 HSM.
 *
 * The server asks for keys on every page it encrypts or decrypts, from
 * many threads, so the HSM is not on that path: every table key of the
 * keyring is unwrapped once (at start, or when it is created) into a
 * cache in locked, non-dumpable memory, and get_key only reads that cache
 * under a read lock. The HSM is needed again only to create a key id the
 * server asks for the first time and to rotate keys; each such change is
 * saved to the keyring file (atomically, see hw_tde_keyring_add_save)
 * before the new key is handed out, so a crash never loses a key that
 * encrypted data.
 */
#include "config.h"

#define MYSQL_DYNAMIC_PLUGIN
#include <mysql/plugin.h>
#include <mysql/plugin_encryption.h>

#include <hsmwrap.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

/*
 * Debian ships no libmysqlservices.a, which is where plugins normally get
 * this: the server finds the symbol at load time, checks the service
 * version it holds (VERSION_my_print_error, 0x0100 in MariaDB 10.x) and
 * replaces it with the service's function table.
 */
struct my_print_error_service_st *my_print_error_service =
	(struct my_print_error_service_st *)(intptr_t)0x0100;

#define PLUGIN "hsmwrap_key_management"
#define ER_UNKNOWN_ERROR_CODE 1105 /* mysqld_error.h's ER_UNKNOWN_ERROR */
#define KEY_LEN HW_TDE_KEY_LEN
#define DEFAULT_KEYRING "hsmwrap-tde.keyring"

/* ---------------------------------------------------------------- */
/* The key cache: sorted (id, version) entries in locked memory      */

struct ckey {
	uint32_t id, version;
	unsigned char key[KEY_LEN];
};

static struct ckey *cache;      /* mmap'd, mlock'd, MADV_DONTDUMP */
static size_t cache_n, cache_cap, cache_bytes;
static pthread_rwlock_t cache_lock = PTHREAD_RWLOCK_INITIALIZER;
/* Serialises everything that touches the keyring or the HSM. */
static pthread_mutex_t keyring_lock = PTHREAD_MUTEX_INITIALIZER;

static hw_ctx *ctx;
static hw_tde_keyring *keyring;
static char *keyring_path;

/* Read-only status (SHOW GLOBAL STATUS LIKE 'hsmwrap%'). */
static char st_master_label[129];
static char st_master_kcv[7];
static char st_keyring_path[PATH_MAX];
static unsigned st_keys, st_versions, st_generation, st_failures;
static int mlock_warned;

/* A line of the server's error log (flags: ME_NOTE, ME_WARNING or 0). */
static void log_msg(unsigned long flags, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_msg(unsigned long flags, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	my_printf_error(ER_UNKNOWN_ERROR_CODE, "hsmwrap_key_management: %s", ME_ERROR_LOG_ONLY | flags,
	                msg);
}
#define log_error(...) log_msg(0, __VA_ARGS__)
#define log_note(...) log_msg(ME_NOTE, __VA_ARGS__)

/* "PIN incorrect (CKR_PIN_INCORRECT...): detail" for a log line. */
static const char *why(hw_err e, char *buf, size_t len)
{
	const char *d = hw_last_detail();

	snprintf(buf, len, "%s%s%s", hw_strerror(e), d && *d ? ": " : "", d ? d : "");
	return buf;
}

static void region_free(struct ckey *p, size_t bytes)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, bytes);
	munlock(p, bytes);
	munmap(p, bytes);
}

/* Room for one more entry; caller holds cache_lock for writing. */
static int cache_reserve(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t cap, bytes;
	struct ckey *p;

	if (cache_n < cache_cap)
		return 0;
	cap = cache_cap ? cache_cap * 2 : 64;
	bytes = (cap * sizeof(*p) + (size_t)page - 1) / (size_t)page * (size_t)page;
	cap = bytes / sizeof(*p);
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	/* Keys stay out of core dumps and swap. mlock can be refused by
	 * RLIMIT_MEMLOCK: said once, not fatal (the DBA raises the limit). */
	(void)madvise(p, bytes, MADV_DONTDUMP);
	if (mlock(p, bytes) != 0 && !mlock_warned) {
		mlock_warned = 1;
		log_msg(ME_WARNING, "cannot lock the key cache in memory (%s): keys could reach "
		        "swap; raise LimitMEMLOCK", strerror(errno));
	}
	if (cache_n)
		memcpy(p, cache, cache_n * sizeof(*p));
	region_free(cache, cache_bytes);
	cache = p;
	cache_cap = cap;
	cache_bytes = bytes;
	return 0;
}

/* First index with (id, version) >= the given pair. */
static size_t cache_lower(uint32_t id, uint32_t version)
{
	size_t lo = 0, hi = cache_n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cache[mid].id < id || (cache[mid].id == id && cache[mid].version < version))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int cache_insert(uint32_t id, uint32_t version, const unsigned char key[KEY_LEN])
{
	size_t i;
	int rc = 0;

	pthread_rwlock_wrlock(&cache_lock);
	i = cache_lower(id, version);
	if (i < cache_n && cache[i].id == id && cache[i].version == version) {
		memcpy(cache[i].key, key, KEY_LEN);
	} else if (cache_reserve() == 0) {
		memmove(&cache[i + 1], &cache[i], (cache_n - i) * sizeof(*cache));
		cache[i].id = id;
		cache[i].version = version;
		memcpy(cache[i].key, key, KEY_LEN);
		cache_n++;
		st_versions++;
		if (version == 1)
			st_keys++;
	} else {
		rc = -1;
	}
	pthread_rwlock_unlock(&cache_lock);
	return rc;
}

/* Latest cached version of id, 0 if none; caller holds cache_lock. */
static uint32_t cache_latest(uint32_t id)
{
	size_t i = cache_lower(id, UINT32_MAX);

	if (i < cache_n && cache[i].id == id)
		return cache[i].version;   /* version UINT32_MAX itself */
	return i > 0 && cache[i - 1].id == id ? cache[i - 1].version : 0;
}

static void cache_wipe(void)
{
	pthread_rwlock_wrlock(&cache_lock);
	region_free(cache, cache_bytes);
	cache = NULL;
	cache_n = cache_cap = cache_bytes = 0;
	pthread_rwlock_unlock(&cache_lock);
}

/* ---------------------------------------------------------------- */
/* Keyring changes (keyring_lock held)                               */

static void refresh_status(void)
{
	hw_tde_keyring_info *info = NULL;

	if (hw_tde_keyring_info_get(keyring, &info) != HW_OK)
		return;
	snprintf(st_master_label, sizeof(st_master_label), "%s", info->master_label);
	snprintf(st_master_kcv, sizeof(st_master_kcv), "%s", info->master_kcv);
	st_generation = info->generation;
	hw_tde_keyring_info_free(info);
}

/* Unwraps (id, version) in the HSM into the cache. */
static hw_err load_key(uint32_t id, uint32_t version)
{
	unsigned char k[KEY_LEN];
	hw_err e = hw_tde_key_get(keyring, id, version, k, NULL);

	if (e == HW_OK && cache_insert(id, version, k) != 0)
		e = HW_ERR_NOMEM;
	OPENSSL_cleanse(k, sizeof(k));
	return e;
}

/* A new version of table key id (version 1: a new id), saved, cached. */
static hw_err add_version(uint32_t id, uint32_t *version_out)
{
	uint32_t v = 0;
	hw_err e = hw_tde_keyring_add_save(keyring, keyring_path, id, &v);

	if (e == HW_OK)
		e = load_key(id, v);
	refresh_status();
	if (e == HW_OK && version_out)
		*version_out = v;
	if (e != HW_OK)
		st_failures++;
	return e;
}

/* ---------------------------------------------------------------- */
/* The encryption plugin interface                                   */

static unsigned int get_latest_key_version(unsigned int key_id)
{
	uint32_t v;
	char buf[512];
	hw_err e;

	pthread_rwlock_rdlock(&cache_lock);
	v = cache_latest(key_id);
	pthread_rwlock_unlock(&cache_lock);
	if (v)
		return v;
	/* A key id asked for the first time: create it (once, under the lock). */
	pthread_mutex_lock(&keyring_lock);
	pthread_rwlock_rdlock(&cache_lock);
	v = cache_latest(key_id);
	pthread_rwlock_unlock(&cache_lock);
	if (!v && keyring) {
		e = add_version(key_id, &v);
		if (e != HW_OK) {
			log_error("cannot create table key %u in %s: %s", key_id, keyring_path,
			          why(e, buf, sizeof(buf)));
			v = 0;
		} else {
			log_note("created table key %u in %s", key_id, keyring_path);
		}
	}
	pthread_mutex_unlock(&keyring_lock);
	return v ? v : ENCRYPTION_KEY_VERSION_INVALID;
}

static unsigned int get_key(unsigned int key_id, unsigned int version, unsigned char *dst,
                            unsigned int *len)
{
	unsigned int rc = ENCRYPTION_KEY_VERSION_INVALID;
	size_t i;

	if (*len < KEY_LEN) {
		*len = KEY_LEN;
		return ENCRYPTION_KEY_BUFFER_TOO_SMALL;
	}
	pthread_rwlock_rdlock(&cache_lock);
	i = cache_lower(key_id, version);
	if (i < cache_n && cache[i].id == key_id && cache[i].version == version) {
		*len = KEY_LEN;
		if (dst)
			memcpy(dst, cache[i].key, KEY_LEN);
		rc = 0;
	}
	pthread_rwlock_unlock(&cache_lock);
	return rc;
}

static struct st_mariadb_encryption hsmwrap_key_management = {
	MariaDB_ENCRYPTION_INTERFACE_VERSION,
	get_latest_key_version,
	get_key,
	NULL, NULL, NULL, NULL, NULL   /* the server's own AES (my_crypt) */
};

/* ---------------------------------------------------------------- */
/* System variables                                                  */

static char *opt_module, *opt_token, *opt_pin_source, *opt_keyring, *opt_master_key;
static int opt_rotate_key;

static MYSQL_SYSVAR_STR(module, opt_module, PLUGIN_VAR_RQCMDARG | PLUGIN_VAR_READONLY,
	"PKCS#11 module of the HSM: a p11-kit module name or a path", NULL, NULL, "");
static MYSQL_SYSVAR_STR(token, opt_token, PLUGIN_VAR_RQCMDARG | PLUGIN_VAR_READONLY,
	"pkcs11: URI of the token holding the master key, e.g. pkcs11:token=db", NULL, NULL, "");
static MYSQL_SYSVAR_STR(pin_source, opt_pin_source, PLUGIN_VAR_RQCMDARG | PLUGIN_VAR_READONLY,
	"Where the user PIN is read: file:PATH or env:NAME (never the PIN itself)", NULL, NULL, "");
static MYSQL_SYSVAR_STR(keyring, opt_keyring, PLUGIN_VAR_RQCMDARG | PLUGIN_VAR_READONLY,
	"The hsmwrap TDE keyring file (default: " DEFAULT_KEYRING " in the datadir)", NULL, NULL,
	"");
static MYSQL_SYSVAR_STR(master_key, opt_master_key, PLUGIN_VAR_RQCMDARG | PLUGIN_VAR_READONLY,
	"Label of the HSM master key that wraps the table keys when the plugin creates the "
	"keyring at first start (hsmwrap tde init makes one)", NULL, NULL, "");

/*
 * The rotation happens in the check function, not the update function,
 * because only check can fail the SET statement with an error.
 */
static int check_rotate(MYSQL_THD thd, struct st_mysql_sys_var *var, void *save,
                        struct st_mysql_value *value)
{
	long long n = 0;
	uint32_t *ids = NULL, v = 0;
	size_t nids = 0;
	char buf[512];
	hw_err e = HW_OK;

	if (value->val_int(value, &n) || n < -1 || n == 0 || n > UINT32_MAX) {
		my_printf_error(ER_UNKNOWN_ERROR_CODE, "hsmwrap_key_management: rotate_key takes a "
		                "key id, or -1 for every key", 0);
		return 1;
	}
	pthread_mutex_lock(&keyring_lock);
	pthread_rwlock_rdlock(&cache_lock);
	ids = calloc(cache_n ? cache_n : 1, sizeof(*ids));
	for (size_t i = 0; ids && i < cache_n; i++)
		if ((n == -1 || cache[i].id == (uint32_t)n) && (nids == 0 || ids[nids - 1] != cache[i].id))
			ids[nids++] = cache[i].id;
	pthread_rwlock_unlock(&cache_lock);
	if (!ids) {
		pthread_mutex_unlock(&keyring_lock);
		my_printf_error(ER_UNKNOWN_ERROR_CODE, "hsmwrap_key_management: out of memory", 0);
		return 1;
	}
	if (nids == 0 && n != -1) {
		pthread_mutex_unlock(&keyring_lock);
		free(ids);
		my_printf_error(ER_UNKNOWN_ERROR_CODE, "hsmwrap_key_management: there is no table "
		                "key %lld to rotate", 0, n);
		return 1;
	}
	for (size_t i = 0; e == HW_OK && i < nids; i++) {
		e = add_version(ids[i], &v);
		if (e != HW_OK)
			my_printf_error(ER_UNKNOWN_ERROR_CODE, "hsmwrap_key_management: rotating table "
			                "key %u failed: %s (keys in use are unchanged)", ME_ERROR_LOG,
			                ids[i], why(e, buf, sizeof(buf)));
		else
			log_note("table key %u is now at version %u", ids[i], v);
	}
	pthread_mutex_unlock(&keyring_lock);
	free(ids);
	if (e != HW_OK)
		return 1;
	*(int *)save = (int)n;
	return 0;
}

static void update_rotate(MYSQL_THD thd, struct st_mysql_sys_var *var, void *ptr,
                          const void *save)
{
	*(int *)ptr = *(const int *)save;
}

static MYSQL_SYSVAR_INT(rotate_key, opt_rotate_key, PLUGIN_VAR_RQCMDARG,
	"Set to a table key id to add a new version of that key (the server re-encrypts "
	"in the background, see innodb_encryption_rotate_key_age), -1 for every key",
	check_rotate, update_rotate, 0, -1, INT_MAX, 0);

static struct st_mysql_sys_var *sysvars[] = {
	MYSQL_SYSVAR(module),
	MYSQL_SYSVAR(token),
	MYSQL_SYSVAR(pin_source),
	MYSQL_SYSVAR(keyring),
	MYSQL_SYSVAR(master_key),
	MYSQL_SYSVAR(rotate_key),
	NULL
};

static char *stp_master_label = st_master_label;
static char *stp_master_kcv = st_master_kcv;
static char *stp_keyring = st_keyring_path;

static struct st_mysql_show_var status[] = {
	{ PLUGIN "_master_key", (char *)&stp_master_label, SHOW_CHAR_PTR },
	{ PLUGIN "_master_key_kcv", (char *)&stp_master_kcv, SHOW_CHAR_PTR },
	{ PLUGIN "_keyring", (char *)&stp_keyring, SHOW_CHAR_PTR },
	{ PLUGIN "_keyring_generation", (char *)&st_generation, SHOW_UINT },
	{ PLUGIN "_keys", (char *)&st_keys, SHOW_UINT },
	{ PLUGIN "_key_versions", (char *)&st_versions, SHOW_UINT },
	{ PLUGIN "_failures", (char *)&st_failures, SHOW_UINT },
	{ NULL, NULL, SHOW_UNDEF }
};

/* ---------------------------------------------------------------- */
/* Start and stop                                                    */

static void shutdown_all(void)
{
	cache_wipe();
	hw_tde_keyring_close(keyring);
	keyring = NULL;
	hw_ctx_free(ctx);
	ctx = NULL;
	free(keyring_path);
	keyring_path = NULL;
}

/* The keyring's absolute path: the server runs in its datadir. */
static int resolve_keyring_path(void)
{
	const char *p = opt_keyring && *opt_keyring ? opt_keyring : DEFAULT_KEYRING;
	char cwd[PATH_MAX];

	if (p[0] == '/') {
		keyring_path = strdup(p);
	} else if (getcwd(cwd, sizeof(cwd))) {
		if (asprintf(&keyring_path, "%s/%s", cwd, p) < 0)
			keyring_path = NULL;
	}
	if (!keyring_path)
		return -1;
	snprintf(st_keyring_path, sizeof(st_keyring_path), "%s", keyring_path);
	return 0;
}

static int open_token(void)
{
	char buf[512];
	hw_err e;

	if (opt_token && strstr(opt_token, "pin-value")) {
		log_error("the token URI must not hold the PIN (pin-value); use pin_source");
		return -1;
	}
	if (!opt_pin_source || !*opt_pin_source || strcmp(opt_pin_source, "prompt") == 0) {
		log_error("hsmwrap_key_management_pin_source must say where the PIN is read "
		          "(file:PATH or env:NAME); a server cannot prompt");
		return -1;
	}
	e = hw_ctx_new(&ctx);
	if (e == HW_OK && opt_module && *opt_module)
		e = hw_ctx_set_module(ctx, opt_module);
	if (e == HW_OK && opt_token && *opt_token)
		e = hw_ctx_set_token(ctx, opt_token);
	if (e == HW_OK)
		e = hw_ctx_set_pin_source(ctx, opt_pin_source);
	if (e == HW_OK)
		e = hw_ctx_open(ctx);
	if (e == HW_OK)
		e = hw_ctx_login(ctx);
	if (e != HW_OK) {
		log_error("cannot use the HSM (module '%s', token '%s'): %s",
		          opt_module && *opt_module ? opt_module : "default",
		          opt_token && *opt_token ? opt_token : "the only one", why(e, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

static int open_keyring(void)
{
	char buf[512];
	struct stat st;
	hw_err e;

	if (stat(keyring_path, &st) != 0 && errno == ENOENT) {
		if (!opt_master_key || !*opt_master_key) {
			log_error("keyring %s does not exist; to create it at first start, set "
			          "hsmwrap_key_management_master_key to the label of the HSM master key",
			          keyring_path);
			return -1;
		}
		e = hw_tde_keyring_create_file(ctx, opt_master_key, keyring_path, &keyring);
		if (e != HW_OK) {
			log_error("cannot create keyring %s with master key '%s': %s", keyring_path,
			          opt_master_key, why(e, buf, sizeof(buf)));
			return -1;
		}
		log_note("created keyring %s, master key '%s'", keyring_path, opt_master_key);
		return 0;
	}
	e = hw_tde_keyring_open(ctx, keyring_path, &keyring);
	if (e != HW_OK) {
		log_error("cannot open keyring %s: %s", keyring_path, why(e, buf, sizeof(buf)));
		return -1;
	}
	return 0;
}

static int load_all(void)
{
	hw_tde_keyring_info *info = NULL;
	char buf[512];
	hw_err e = hw_tde_keyring_info_get(keyring, &info);

	for (size_t i = 0; e == HW_OK && i < info->nentries; i++) {
		e = load_key(info->entries[i].id, info->entries[i].version);
		if (e != HW_OK)
			log_error("cannot unwrap table key %u version %u of %s: %s",
			          info->entries[i].id, info->entries[i].version, keyring_path,
			          why(e, buf, sizeof(buf)));
	}
	hw_tde_keyring_info_free(info);
	return e == HW_OK ? 0 : -1;
}

static int plugin_init(void *p)
{
	int rc;

	pthread_mutex_lock(&keyring_lock);
	rc = resolve_keyring_path();
	if (rc == 0)
		rc = open_token();
	if (rc == 0)
		rc = open_keyring();
	if (rc == 0)
		rc = load_all();
	if (rc == 0) {
		refresh_status();
		log_note("keyring %s: %u table keys, %u versions, master key '%s' (KCV %s)",
		         keyring_path, st_keys, st_versions, st_master_label,
		         *st_master_kcv ? st_master_kcv : "unknown");
	} else {
		shutdown_all();
	}
	pthread_mutex_unlock(&keyring_lock);
	return rc ? 1 : 0;
}

static int plugin_deinit(void *p)
{
	pthread_mutex_lock(&keyring_lock);
	shutdown_all();
	pthread_mutex_unlock(&keyring_lock);
	return 0;
}

maria_declare_plugin(hsmwrap_key_management)
{
	MariaDB_ENCRYPTION_PLUGIN,
	&hsmwrap_key_management,
	PLUGIN,
	"hsmwrap",
	"Table keys wrapped by a master key kept in a PKCS#11 HSM (hsmwrap TDE keyring)",
	PLUGIN_LICENSE_BSD,
	plugin_init,
	plugin_deinit,
	0x0100,
	status,
	sysvars,
	PACKAGE_VERSION,
	/* The server refuses plugins below gamma unless plugin_maturity is
	 * lowered: declared gamma so that my.cnf needs no such line. */
	MariaDB_PLUGIN_MATURITY_GAMMA
}
maria_declare_plugin_end;
