/*
 * PKCS#11 modules: loaded through p11-kit, initialised once per process.
 *
 * Modules are loaded unmanaged so that we call C_Initialize ourselves with
 * CKF_OS_LOCKING_OK, and shared by every context in the process: PKCS#11
 * allows one C_Initialize per module and process, so the count lives here.
 *
 * fork(): the child inherits a copy of the module's state, which PKCS#11
 * says is unusable. A fork generation counter (bumped by a pthread_atfork
 * child handler) tells contexts and modules to re-initialise lazily, before
 * their first operation in the child. The prepare handler takes every
 * registered lock so the child never inherits one held by a thread that
 * does not exist there.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static hw_module *modules;

static atomic_ulong fork_gen = 1;

/*
 * Every call into a module happens with call_lock held shared; fork()
 * takes it exclusive. Without it a thread could be inside the module,
 * holding the module's own mutexes, at the moment of fork, and the child
 * would block forever on its first call (seen with SoftHSMv2). Writers are
 * preferred so that a steady stream of operations cannot starve fork().
 */
static pthread_rwlock_t call_lock;
static pthread_once_t call_lock_once = PTHREAD_ONCE_INIT;

/* Context locks taken around fork; order: call_lock, fork_lock, ctx locks,
 * reg_lock, module locks. */
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t **fork_locks;
static size_t nfork_locks, fork_locks_cap;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
call_lock_init(void)
{
	pthread_rwlockattr_t attr;

	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&call_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
}

void
hw_calls_enter(void)
{
	pthread_once(&call_lock_once, call_lock_init);
	pthread_rwlock_rdlock(&call_lock);
}

void
hw_calls_leave(void)
{
	pthread_rwlock_unlock(&call_lock);
}

/* OpenSSL's DRBG has locks of its own: draw under the call lock too. */
hw_err
hw_random(uint8_t *buf, size_t len)
{
	int ok;

	hw_calls_enter();
	ok = RAND_bytes(buf, (int)len);
	hw_calls_leave();
	return ok == 1 ? HW_OK : hw_fail(HW_ERR_CRYPTO, 0, "RAND_bytes");
}

static void
fork_prepare(void)
{
	pthread_once(&call_lock_once, call_lock_init);
	pthread_rwlock_wrlock(&call_lock);
	pthread_mutex_lock(&fork_lock);
	for (size_t i = 0; i < nfork_locks; i++)
		pthread_mutex_lock(fork_locks[i]);
	pthread_mutex_lock(&reg_lock);
	for (hw_module *m = modules; m; m = m->next)
		pthread_mutex_lock(&m->lock);
}

static void
unlock_all_mutexes(void)
{
	for (hw_module *m = modules; m; m = m->next)
		pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&reg_lock);
	for (size_t i = nfork_locks; i > 0; i--)
		pthread_mutex_unlock(fork_locks[i - 1]);
	pthread_mutex_unlock(&fork_lock);
}

static void
fork_parent(void)
{
	unlock_all_mutexes();
	pthread_rwlock_unlock(&call_lock);
}

static void
fork_child(void)
{
	atomic_fetch_add(&fork_gen, 1);
	unlock_all_mutexes();
	/* glibc records a write-locked rwlock's owner by thread id, which
	 * differs in the child: unlocking would take the reader path and
	 * corrupt it. The child is single-threaded here, so start afresh. */
	call_lock_init();
}

static void
atfork_init(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

unsigned long
hw_fork_generation(void)
{
	return atomic_load(&fork_gen);
}

void
hw_fork_register(pthread_mutex_t *lock)
{
	pthread_once(&atfork_once, atfork_init);
	pthread_mutex_lock(&fork_lock);
	if (nfork_locks == fork_locks_cap) {
		size_t cap = fork_locks_cap ? fork_locks_cap * 2 : 8;
		pthread_mutex_t **n = realloc(fork_locks, cap * sizeof(*n));
		if (!n) {
			/* Without registration a fork during use could inherit a
			 * held lock; contexts are few, so this is near impossible. */
			pthread_mutex_unlock(&fork_lock);
			return;
		}
		fork_locks = n;
		fork_locks_cap = cap;
	}
	fork_locks[nfork_locks++] = lock;
	pthread_mutex_unlock(&fork_lock);
}

void
hw_fork_unregister(pthread_mutex_t *lock)
{
	pthread_mutex_lock(&fork_lock);
	for (size_t i = 0; i < nfork_locks; i++) {
		if (fork_locks[i] == lock) {
			fork_locks[i] = fork_locks[--nfork_locks];
			break;
		}
	}
	/* The last context gone: nothing of ours stays allocated, so a
	 * library (or provider) unloaded after its contexts leaks nothing. */
	if (nfork_locks == 0) {
		free(fork_locks);
		fork_locks = NULL;
		fork_locks_cap = 0;
	}
	pthread_mutex_unlock(&fork_lock);
}

/*
 * A name without '/' is looked up in p11-kit's module configuration: sets
 * the module's file name and its configured init arguments (p11-kit's
 * "x-init-reserved", which p11-kit itself would pass in pReserved to a
 * managed module), both malloc'd, NULL when absent.
 *
 * We read the option instead of loading the module managed: a managed
 * module is initialised by p11-kit, which then owns C_Initialize and
 * C_Finalize, and our fork handling (re-initialise in the child, with the
 * same arguments) needs to own them.
 */
static void
registered_module(const char *name, char **file, char **reserved)
{
	CK_FUNCTION_LIST **all, *m;

	*file = *reserved = NULL;
	all = p11_kit_modules_load(NULL, P11_KIT_MODULE_UNMANAGED);
	if (!all)
		return;
	m = p11_kit_module_for_name(all, name);
	if (m) {
		*file = p11_kit_module_get_filename(m);
		*reserved = p11_kit_config_option(m, "x-init-reserved");
	}
	p11_kit_modules_release(all);
}

static bool
same_args(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

HW_EXPORT hw_err
hw_module_list(char ***names, size_t *n)
{
	CK_FUNCTION_LIST **all;
	char **v;
	size_t count = 0, k = 0;

	if (!names || !n)
		return hw_fail(HW_ERR_INVALID_ARG, 0, "hw_module_list");
	all = p11_kit_modules_load(NULL, P11_KIT_MODULE_UNMANAGED);
	if (all)
		while (all[count])
			count++;
	v = calloc(count + 1, sizeof(*v));
	if (!v) {
		p11_kit_modules_release(all);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	for (size_t i = 0; i < count; i++) {
		char *name = p11_kit_module_get_name(all[i]);
		if (name)
			v[k++] = name;
	}
	if (all)
		p11_kit_modules_release(all);
	*names = v;
	*n = k;
	return HW_OK;
}

HW_EXPORT void
hw_strv_free(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* C_Initialize reads every token's record: under the shared I/O lock. */
static CK_RV
initialize(hw_module *m)
{
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;
	int fd;

	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	/* NSS softokn reads its database location from here. */
	args.pReserved = m->init_args;
	fd = hw_module_io_lock(m, false);
	rv = m->fl->C_Initialize(&args);
	hw_module_io_unlock(fd);
	return rv;
}

hw_err
hw_module_acquire(const char *spec, const char *init_args, hw_module **out)
{
	char *file = NULL, *reserved = NULL;
	const char *path = spec;
	CK_FUNCTION_LIST *fl;
	hw_module *m;
	hw_err e;

	if (!spec || !*spec)
		return hw_fail(HW_ERR_MODULE, 0, "no PKCS#11 module configured");
	if (!strchr(spec, '/')) {
		registered_module(spec, &file, &reserved);
		if (file)
			path = file;
	}
	/* The caller's arguments override the module's configuration. */
	if (init_args && *init_args)
		reserved = (free(reserved), strdup(init_args));

	pthread_once(&atfork_once, atfork_init);
	hw_calls_enter();
	pthread_mutex_lock(&reg_lock);
	for (m = modules; m; m = m->next) {
		if (strcmp(m->path, path) == 0) {
			/* One C_Initialize per module and process: a second set of
			 * arguments cannot take effect, and ignoring it would
			 * silently use another database. */
			if (!same_args(m->init_args, reserved)) {
				pthread_mutex_unlock(&reg_lock);
				hw_calls_leave();
				e = hw_fail(HW_ERR_MODULE, 0, "%s: already loaded in this process "
				            "with other init arguments", spec);
				free(file);
				free(reserved);
				return e;
			}
			m->refs++;
			pthread_mutex_unlock(&reg_lock);
			free(file);
			free(reserved);
			e = hw_module_ensure(m);
			hw_calls_leave();
			if (e != HW_OK) {
				hw_module_release(m);
				return e;
			}
			*out = m;
			return HW_OK;
		}
	}

	fl = p11_kit_module_load(path, P11_KIT_MODULE_UNMANAGED);
	if (!fl) {
		const char *msg = p11_kit_message();
		pthread_mutex_unlock(&reg_lock);
		hw_calls_leave();
		e = hw_fail(HW_ERR_MODULE, 0, "%s: %s", spec, msg ? msg : "cannot load");
		free(file);
		free(reserved);
		return e;
	}
	m = calloc(1, sizeof(*m));
	if (!m || !(m->path = strdup(path))) {
		free(m);
		p11_kit_module_release(fl);
		pthread_mutex_unlock(&reg_lock);
		hw_calls_leave();
		free(file);
		free(reserved);
		return hw_fail(HW_ERR_NOMEM, 0, NULL);
	}
	free(file);
	/* Kept for the module's lifetime: re-initialising after fork must
	 * pass the same arguments, and a module may keep the pointer. */
	m->init_args = reserved;
	m->fl = fl;
	m->refs = 1;
	pthread_mutex_init(&m->lock, NULL);
	m->next = modules;
	modules = m;
	pthread_mutex_unlock(&reg_lock);

	e = hw_module_ensure(m);
	hw_calls_leave();
	if (e != HW_OK) {
		hw_module_release(m);
		return e;
	}
	*out = m;
	return HW_OK;
}

hw_err
hw_module_ensure(hw_module *m)
{
	unsigned long gen = hw_fork_generation();
	bool child;
	CK_RV rv;

	pthread_mutex_lock(&m->lock);
	if (m->init_gen == gen) {
		pthread_mutex_unlock(&m->lock);
		return HW_OK;
	}
	/* A previous generation means we are in a forked child. */
	child = m->init_gen != 0;
	rv = initialize(m);
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED && child) {
		/* The module did not notice the fork: restart it. */
		m->fl->C_Finalize(NULL);
		rv = initialize(m);
	}
	if (rv == CKR_OK) {
		m->we_initialized = true;
	} else if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		/* Another user in this process initialised it; share, never finalize. */
		m->we_initialized = false;
		rv = CKR_OK;
	}
	if (rv != CKR_OK) {
		pthread_mutex_unlock(&m->lock);
		return hw_fail(HW_ERR_MODULE, rv, "C_Initialize of %s: %s", m->path,
		               p11_kit_strerror(rv));
	}
	m->init_gen = gen;
	pthread_mutex_unlock(&m->lock);
	return HW_OK;
}

/*
 * A token that should be there is not: finalize the module and initialise
 * it again, so that it reads its tokens afresh. The I/O lock keeps
 * hsmwrap's own processes from tearing SoftHSM's token record (see
 * hw_module_io_lock), but not other programs on the same token
 * (softhsm2-util, pkcs11-tool, other PKCS#11 applications): a process that
 * initialised the module while one of them logged in has lost the token
 * until it initialises again, and a retry alone would wait in vain.
 *
 * Only safe when nothing else in this process can hold a session or an
 * object handle of the module: we initialised it (nobody in the process
 * shares it unknown to us), one context uses it (the caller, which has
 * not opened a session yet), and not after a fork (the caller re-selects
 * there anyway). A library and a provider sharing the module in one
 * process therefore never restart it; they keep the retries. reg_lock
 * held throughout keeps another context from starting to use the module
 * meanwhile. Returns whether it restarted; a failed C_Initialize leaves it
 * to be initialised again at next use.
 */
bool
hw_module_restart(hw_module *m)
{
	unsigned long gen = hw_fork_generation();
	bool done = false;
	CK_RV rv;

	pthread_mutex_lock(&reg_lock);
	pthread_mutex_lock(&m->lock);
	if (m->refs == 1 && m->we_initialized && m->init_gen == gen) {
		m->fl->C_Finalize(NULL);
		rv = initialize(m);
		if (rv == CKR_OK) {
			done = true;
		} else {
			/* Not initialised now: hw_module_ensure tries again. */
			m->init_gen = 0;
			m->we_initialized = false;
		}
	}
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&reg_lock);
	return done;
}

void
hw_module_release(hw_module *m)
{
	hw_module **pp;

	if (!m)
		return;
	pthread_mutex_lock(&reg_lock);
	if (--m->refs > 0) {
		pthread_mutex_unlock(&reg_lock);
		return;
	}
	for (pp = &modules; *pp; pp = &(*pp)->next) {
		if (*pp == m) {
			*pp = m->next;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
	hw_calls_enter();
	if (m->we_initialized && m->init_gen == hw_fork_generation())
		m->fl->C_Finalize(NULL);
	p11_kit_module_release(m->fl);
	hw_calls_leave();
	pthread_mutex_destroy(&m->lock);
	free(m->path);
	free(m->init_args);
	free(m);
}

/*
 * The module's I/O lock, one file per module in $HSMWRAP_LOCK_DIR (else
 * /tmp), named after the module's path: shared around every call that
 * reads the token's own record, exclusive around every call that rewrites
 * it. Why (SoftHSMv2 2.6.1's file store, src/lib/object_store):
 *
 * - C_Login, C_InitToken, C_InitPIN and C_SetPIN rewrite token.object in
 *   place. SoftHSM holds an fcntl lock while it truncates and writes, but
 *   writes through stdio and unlocks before fclose() flushes: a reader
 *   taking the lock in that window reads an empty file.
 * - A process that reads it empty in C_Initialize silently drops the
 *   token (ObjectStore: "Failed to open token", ignored): it sees no token
 *   for its whole life, and retrying in the same process cannot help.
 * - One that reads it empty later (C_GetTokenInfo) marks the token object
 *   invalid, and the next change of the token's generation (any object
 *   created or destroyed) makes the whole token invalid in that process
 *   for good (OSToken::index).
 *
 * So readers of token.object (C_Initialize, C_GetTokenInfo) hold it shared
 * and its writers exclusive: no reader can see the writer's window. Other
 * calls need no lock: key objects read torn are re-read once complete,
 * and a new object read torn is only invisible until then.
 *
 * The lock is taken for every module, not only SoftHSM: it costs an
 * open() and two flock() around calls made once per process or per login,
 * and other file-backed tokens may need it just as well. It is always taken
 * innermost, around module calls only, and no other lock is taken while it
 * is held: it cannot be part of a deadlock. The file is opened for each use
 * (never inherited across fork: flock belongs to the open file, which a
 * child would share) and is mode 0666 so every user of the module shares
 * it. When it cannot be opened the call goes ahead unguarded, as it did
 * before the lock existed.
 */
int
hw_module_io_lock(hw_module *m, bool exclusive)
{
	const char *dir = getenv("HSMWRAP_LOCK_DIR");
	unsigned char md[32];
	unsigned mdlen = 0;
	char path[4096];
	struct stat st;
	int fd;

	if (!EVP_Digest(m->path, strlen(m->path), md, &mdlen, EVP_sha256(), NULL))
		return -1;
	if (!dir || !*dir)
		dir = "/tmp";
	if ((size_t)snprintf(path, sizeof(path), "%s/hsmwrap-%02x%02x%02x%02x%02x%02x%02x%02x.io",
	                     dir, md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7]) >=
	    sizeof(path))
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && (st.st_mode & 0777) != 0666)
		(void)fchmod(fd, 0666);
	while (flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

void
hw_module_io_unlock(int fd)
{
	if (fd < 0)
		return;
	(void)flock(fd, LOCK_UN);
	close(fd);
}
