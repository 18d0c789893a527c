/*
 * faultmod - a PKCS#11 module for tests that stands in front of a real one
 * (FAULTMOD_TARGET, e.g. SoftHSM) and makes chosen calls misbehave, so the
 * test suite can show what libhsmwrap does when an HSM fails.
 *
 * Every call is forwarded unless a rule fires. Rules (FAULTMOD_SPEC, or a
 * "spec ..." line of the control file) are separated by ';', fields by ':':
 *
 *   FUNC[:nth=N|:every=N|:count=N][:rv=NAME|0xHEX][:short=1][:delay_ms=N]
 *
 *   FUNC      a PKCS#11 function name, or * for every call
 *   nth=N     fire on the N-th matching call only (counting from 1)
 *   every=N   fire on every N-th matching call
 *   count=N   fire on the first N matching calls
 *             (none of the three: fire on every matching call)
 *   rv=...    what to return (default CKR_DEVICE_ERROR; no failure when the
 *             rule only has delay_ms)
 *   short=1   C_Encrypt/C_Decrypt/C_Sign/C_WrapKey/C_GetAttributeValue:
 *             CKR_BUFFER_TOO_SMALL claiming 16 bytes more than given
 *   delay_ms  sleep this long before the call
 *
 * Faults are made realistic where PKCS#11 implies a side effect:
 * CKR_SESSION_HANDLE_INVALID/CLOSED really close the session in the target,
 * and CKR_USER_NOT_LOGGED_IN really logs the application out first, so a
 * library that only pretends to recover is caught.
 *
 * FAULTMOD_CONTROL names a file the test may rewrite at any time; it is
 * read on every call. Lines: "removed" (the token is gone: C_GetSlotList
 * with tokenPresent hides it, slot calls give CKR_TOKEN_NOT_PRESENT,
 * session calls CKR_DEVICE_REMOVED, and every session in the target is
 * closed, as a real removal does), "present", "spec RULES" (replaces
 * the rules and resets their counters), and "lost-until-init": the token
 * is hidden from C_GetSlotList, as by "removed", but only until the
 * process initialises the module again (as SoftHSMv2 does when its
 * C_Initialize reads a token file another process is rewriting).
 *
 * FAULTMOD_STATS names a file rewritten after every call with
 * "injected N" and "calls FUNC N" lines.
 *
 * Only C_GetFunctionList is exported.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_RULES 16
#define MAX_FUNCS 80
#define FM_SHORT ((CK_RV)0x8fa17001UL)    /* internal: fake a short buffer */

struct rule {
	char func[48];
	unsigned long nth, every, count, delay_ms;
	CK_RV rv;
	int fails, is_short;
	unsigned long seen;                 /* matching calls so far */
	unsigned long fired;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST *T;               /* the target */
static void *target_dl;
static struct rule rules[MAX_RULES];
static size_t nrules;
static int removed;
static int lost;                          /* "lost-until-init" is on */
static unsigned long inits;               /* C_Initialize calls so far */
static unsigned long lost_init;           /* inits when it was turned on */
static char *control_cache;
static unsigned long injected;
static struct { const char *name; unsigned long n; } calls[MAX_FUNCS];
static size_t ncalls;

static const struct { const char *name; CK_RV rv; } rv_names[] = {
	{ "CKR_DEVICE_ERROR", CKR_DEVICE_ERROR },
	{ "CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY },
	{ "CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED },
	{ "CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED },
	{ "CKR_GENERAL_ERROR", CKR_GENERAL_ERROR },
	{ "CKR_HOST_MEMORY", CKR_HOST_MEMORY },
	{ "CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID },
	{ "CKR_SESSION_CLOSED", CKR_SESSION_CLOSED },
	{ "CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN },
	{ "CKR_PIN_LOCKED", CKR_PIN_LOCKED },
	{ "CKR_PIN_INCORRECT", CKR_PIN_INCORRECT },
	{ "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT },
	{ "CKR_BUFFER_TOO_SMALL", CKR_BUFFER_TOO_SMALL },
	{ "CKR_OPERATION_ACTIVE", CKR_OPERATION_ACTIVE },
};

static void
sleep_ms(unsigned long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* "C_Encrypt:nth=3:rv=CKR_DEVICE_ERROR;C_Login:rv=CKR_PIN_LOCKED" */
static void
parse_spec(const char *spec)
{
	char *copy, *save = NULL, *r;

	nrules = 0;
	if (!spec || !(copy = strdup(spec)))
		return;
	for (r = strtok_r(copy, ";\n", &save); r && nrules < MAX_RULES;
	     r = strtok_r(NULL, ";\n", &save)) {
		struct rule *u = &rules[nrules];
		char *save2 = NULL, *f = strtok_r(r, ":", &save2);
		int has_rv = 0;

		while (f && *f == ' ')
			f++;
		if (!f || !*f)
			continue;
		memset(u, 0, sizeof(*u));
		snprintf(u->func, sizeof(u->func), "%s", f);
		u->rv = CKR_DEVICE_ERROR;
		u->fails = 1;
		while ((f = strtok_r(NULL, ":", &save2))) {
			char *v = strchr(f, '=');
			if (!v)
				continue;
			*v++ = '\0';
			if (!strcmp(f, "nth"))
				u->nth = strtoul(v, NULL, 0);
			else if (!strcmp(f, "every"))
				u->every = strtoul(v, NULL, 0);
			else if (!strcmp(f, "count"))
				u->count = strtoul(v, NULL, 0);
			else if (!strcmp(f, "delay_ms"))
				u->delay_ms = strtoul(v, NULL, 0);
			else if (!strcmp(f, "short"))
				u->is_short = atoi(v) != 0;
			else if (!strcmp(f, "rv")) {
				has_rv = 1;
				u->rv = strtoul(v, NULL, 0);
				for (size_t i = 0; i < sizeof(rv_names) / sizeof(rv_names[0]); i++)
					if (!strcmp(v, rv_names[i].name))
						u->rv = rv_names[i].rv;
			}
		}
		/* A rule that only delays does not fail. */
		if (u->delay_ms && !has_rv && !u->is_short)
			u->fails = 0;
		nrules++;
	}
	free(copy);
}

/* Every session in the target ends, as when a token is pulled out. */
static void
close_all_sessions(void)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;

	if (T->C_GetSlotList(CK_FALSE, slots, &n) != CKR_OK)
		return;
	for (CK_ULONG i = 0; i < n; i++)
		T->C_CloseAllSessions(slots[i]);
}

/* Re-reads the control file when its content changed. Call with mu held. */
static void
read_control(void)
{
	const char *path = getenv("FAULTMOD_CONTROL");
	char buf[4096], *line, *save = NULL;
	size_t n = 0;
	FILE *f;
	int was_removed = removed, was_lost = lost;

	if (!path || !(f = fopen(path, "r")))
		return;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if (control_cache && !strcmp(control_cache, buf))
		return;
	free(control_cache);
	control_cache = strdup(buf);
	removed = 0;
	lost = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, "removed"))
			removed = 1;
		else if (!strcmp(line, "lost-until-init"))
			lost = 1;
		else if (!strncmp(line, "spec ", 5))
			parse_spec(line + 5);
		else if (!strcmp(line, "nospec"))
			nrules = 0;
	}
	if (removed && !was_removed && T)
		close_all_sessions();
	if (lost && !was_lost)
		lost_init = inits;
}

/* The token is hidden from C_GetSlotList. Call with mu held. */
static int
hidden(void)
{
	return removed || (lost && inits == lost_init);
}

static void
write_stats(void)
{
	const char *path = getenv("FAULTMOD_STATS");
	char tmp[4096];
	FILE *f;

	if (!path || snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return;
	if (!(f = fopen(tmp, "w")))
		return;
	fprintf(f, "injected %lu\n", injected);
	for (size_t i = 0; i < ncalls; i++)
		fprintf(f, "calls %s %lu\n", calls[i].name, calls[i].n);
	fclose(f);
	rename(tmp, path);
}

static void
count_call(const char *name)
{
	for (size_t i = 0; i < ncalls; i++) {
		if (!strcmp(calls[i].name, name)) {
			calls[i].n++;
			return;
		}
	}
	if (ncalls < MAX_FUNCS) {
		calls[ncalls].name = name;
		calls[ncalls++].n = 1;
	}
}

static int
fires(struct rule *u)
{
	unsigned long k = ++u->seen;

	if (u->nth)
		return k == u->nth;
	if (u->every)
		return k % u->every == 0;
	if (u->count)
		return k <= u->count;
	return 1;
}

enum kind { GLOBAL, SLOT, SESSION };

/*
 * Decides the fate of one call: CKR_OK to forward it, or what to return.
 * Side effects of a fault (closing the session, logging out) happen here.
 */
static CK_RV
enter(const char *name, enum kind kind, CK_SESSION_HANDLE s)
{
	unsigned long delay = 0;
	CK_RV rv = CKR_OK;

	pthread_mutex_lock(&mu);
	read_control();
	count_call(name);
	if (removed && kind != GLOBAL && strcmp(name, "C_CloseSession") != 0) {
		rv = kind == SLOT ? CKR_TOKEN_NOT_PRESENT : CKR_DEVICE_REMOVED;
		injected++;
	}
	for (size_t i = 0; rv == CKR_OK && i < nrules; i++) {
		struct rule *u = &rules[i];
		if (strcmp(u->func, "*") != 0 && strcmp(u->func, name) != 0)
			continue;
		if (!fires(u))
			continue;
		delay += u->delay_ms;
		if (!u->fails)
			continue;
		u->fired++;
		injected++;
		rv = u->is_short ? FM_SHORT : u->rv;
		if (kind == SESSION && (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED))
			T->C_CloseSession(s);
		else if (kind == SESSION && rv == CKR_USER_NOT_LOGGED_IN)
			T->C_Logout(s);
	}
	write_stats();
	pthread_mutex_unlock(&mu);
	if (delay)
		sleep_ms(delay);
	return rv;
}

/* Output-length functions turn FM_SHORT into a short-buffer answer. */
static CK_RV
short_answer(CK_RV rv, CK_ULONG *len)
{
	if (rv != FM_SHORT)
		return rv;
	if (len)
		*len += 16;
	return CKR_BUFFER_TOO_SMALL;
}

static CK_RV
load_target(void)
{
	const char *path = getenv("FAULTMOD_TARGET");
	CK_RV (*gfl)(CK_FUNCTION_LIST **);

	if (T)
		return CKR_OK;
	if (!path)
		return CKR_GENERAL_ERROR;
	target_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!target_dl)
		return CKR_GENERAL_ERROR;
	*(void **)&gfl = dlsym(target_dl, "C_GetFunctionList");
	if (!gfl || gfl(&T) != CKR_OK || !T)
		return CKR_GENERAL_ERROR;
	return CKR_OK;
}

/* ---- wrappers ---------------------------------------------------- */

#define G(name, decl, args)                                                 \
	static CK_RV fm_##name decl                                         \
	{                                                                   \
		CK_RV rv = enter(#name, GLOBAL, 0);                         \
		return rv != CKR_OK ? short_answer(rv, NULL) : T->name args; \
	}
#define SL(name, decl, args)                                                \
	static CK_RV fm_##name decl                                         \
	{                                                                   \
		CK_RV rv = enter(#name, SLOT, 0);                           \
		return rv != CKR_OK ? short_answer(rv, NULL) : T->name args; \
	}
#define SE(name, decl, args)                                                \
	static CK_RV fm_##name decl                                         \
	{                                                                   \
		CK_RV rv = enter(#name, SESSION, s);                        \
		return rv != CKR_OK ? short_answer(rv, NULL) : T->name args; \
	}
/* Session functions with an output length. */
#define SO(name, decl, args, lenp)                                          \
	static CK_RV fm_##name decl                                         \
	{                                                                   \
		CK_RV rv = enter(#name, SESSION, s);                        \
		return rv != CKR_OK ? short_answer(rv, lenp) : T->name args; \
	}

static CK_RV
fm_C_Initialize(void *args)
{
	CK_RV rv = load_target();

	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&mu);
	inits++;
	parse_spec(getenv("FAULTMOD_SPEC"));
	read_control();
	pthread_mutex_unlock(&mu);
	rv = enter("C_Initialize", GLOBAL, 0);
	return rv != CKR_OK ? rv : T->C_Initialize(args);
}

static CK_RV
fm_C_Finalize(void *r)
{
	pthread_mutex_lock(&mu);
	write_stats();
	pthread_mutex_unlock(&mu);
	return T ? T->C_Finalize(r) : CKR_CRYPTOKI_NOT_INITIALIZED;
}

static CK_RV
fm_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID *list, CK_ULONG *n)
{
	CK_RV rv = enter("C_GetSlotList", GLOBAL, 0);
	int gone;

	if (rv != CKR_OK)
		return short_answer(rv, NULL);
	pthread_mutex_lock(&mu);
	gone = hidden();
	pthread_mutex_unlock(&mu);
	if (gone && present) {
		/* SoftHSM always has one empty slot: show only slots without
		 * an initialised token, i.e. hide every token. */
		CK_SLOT_ID all[64];
		CK_ULONG k = 64, out = 0;
		CK_TOKEN_INFO ti;
		rv = T->C_GetSlotList(CK_TRUE, all, &k);
		if (rv != CKR_OK)
			return rv;
		for (CK_ULONG i = 0; i < k; i++) {
			if (T->C_GetTokenInfo(all[i], &ti) == CKR_OK &&
			    (ti.flags & CKF_TOKEN_INITIALIZED))
				continue;
			if (list && out < *n)
				list[out] = all[i];
			out++;
		}
		if (list && out > *n) {
			*n = out;
			return CKR_BUFFER_TOO_SMALL;
		}
		*n = out;
		return CKR_OK;
	}
	return T->C_GetSlotList(present, list, n);
}

static CK_RV
fm_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
	CK_RV rv = enter("C_GetSlotInfo", GLOBAL, 0);
	int gone;

	if (rv != CKR_OK)
		return short_answer(rv, NULL);
	rv = T->C_GetSlotInfo(slot, info);
	pthread_mutex_lock(&mu);
	gone = removed;
	pthread_mutex_unlock(&mu);
	if (rv == CKR_OK && gone)
		info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
	return rv;
}

G(C_GetInfo, (CK_INFO *i), (i))
SL(C_GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO *i), (slot, i))
G(C_WaitForSlotEvent, (CK_FLAGS f, CK_SLOT_ID *slot, void *r), (f, slot, r))
SL(C_GetMechanismList, (CK_SLOT_ID slot, CK_MECHANISM_TYPE *m, CK_ULONG *n), (slot, m, n))
SL(C_GetMechanismInfo, (CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *i), (slot, t, i))
SL(C_InitToken, (CK_SLOT_ID slot, CK_UTF8CHAR *pin, CK_ULONG len, CK_UTF8CHAR *label),
   (slot, pin, len, label))
SE(C_InitPIN, (CK_SESSION_HANDLE s, CK_UTF8CHAR *pin, CK_ULONG len), (s, pin, len))
SE(C_SetPIN, (CK_SESSION_HANDLE s, CK_UTF8CHAR *o, CK_ULONG ol, CK_UTF8CHAR *n, CK_ULONG nl),
   (s, o, ol, n, nl))
SL(C_OpenSession, (CK_SLOT_ID slot, CK_FLAGS f, void *app, CK_NOTIFY notify, CK_SESSION_HANDLE *s),
   (slot, f, app, notify, s))
SE(C_CloseSession, (CK_SESSION_HANDLE s), (s))
SL(C_CloseAllSessions, (CK_SLOT_ID slot), (slot))
SE(C_GetSessionInfo, (CK_SESSION_HANDLE s, CK_SESSION_INFO *i), (s, i))
SE(C_GetOperationState, (CK_SESSION_HANDLE s, CK_BYTE *st, CK_ULONG *l), (s, st, l))
SE(C_SetOperationState, (CK_SESSION_HANDLE s, CK_BYTE *st, CK_ULONG l, CK_OBJECT_HANDLE e,
                         CK_OBJECT_HANDLE a), (s, st, l, e, a))
SE(C_Login, (CK_SESSION_HANDLE s, CK_USER_TYPE u, CK_UTF8CHAR *pin, CK_ULONG len), (s, u, pin, len))
SE(C_Logout, (CK_SESSION_HANDLE s), (s))
SE(C_CreateObject, (CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *o),
   (s, t, n, o))
SE(C_CopyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n,
                  CK_OBJECT_HANDLE *o), (s, h, t, n, o))
SE(C_DestroyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h), (s, h))
SE(C_GetObjectSize, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ULONG *n), (s, h, n))
SO(C_GetAttributeValue, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n),
   (s, h, t, n), (n ? &t[0].ulValueLen : NULL))
SE(C_SetAttributeValue, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG n),
   (s, h, t, n))
SE(C_FindObjectsInit, (CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n), (s, t, n))
SE(C_FindObjects, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *o, CK_ULONG max, CK_ULONG *n),
   (s, o, max, n))
SE(C_FindObjectsFinal, (CK_SESSION_HANDLE s), (s))
SE(C_EncryptInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k), (s, m, k))
SO(C_Encrypt, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol), ol)
SE(C_EncryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol))
SE(C_EncryptFinal, (CK_SESSION_HANDLE s, CK_BYTE *out, CK_ULONG *ol), (s, out, ol))
SE(C_DecryptInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k), (s, m, k))
SO(C_Decrypt, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol), ol)
SE(C_DecryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol))
SE(C_DecryptFinal, (CK_SESSION_HANDLE s, CK_BYTE *out, CK_ULONG *ol), (s, out, ol))
SE(C_DigestInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m), (s, m))
SE(C_Digest, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol))
SE(C_DigestUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il), (s, in, il))
SE(C_DigestKey, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k), (s, k))
SE(C_DigestFinal, (CK_SESSION_HANDLE s, CK_BYTE *out, CK_ULONG *ol), (s, out, ol))
SE(C_SignInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k), (s, m, k))
SO(C_Sign, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol), ol)
SE(C_SignUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il), (s, in, il))
SE(C_SignFinal, (CK_SESSION_HANDLE s, CK_BYTE *out, CK_ULONG *ol), (s, out, ol))
SE(C_SignRecoverInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k), (s, m, k))
SE(C_SignRecover, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol))
SE(C_VerifyInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k), (s, m, k))
SE(C_Verify, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *sig, CK_ULONG sl),
   (s, in, il, sig, sl))
SE(C_VerifyUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il), (s, in, il))
SE(C_VerifyFinal, (CK_SESSION_HANDLE s, CK_BYTE *sig, CK_ULONG sl), (s, sig, sl))
SE(C_VerifyRecoverInit, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k), (s, m, k))
SE(C_VerifyRecover, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out, CK_ULONG *ol),
   (s, in, il, out, ol))
SE(C_DigestEncryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out,
                           CK_ULONG *ol), (s, in, il, out, ol))
SE(C_DecryptDigestUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out,
                           CK_ULONG *ol), (s, in, il, out, ol))
SE(C_SignEncryptUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out,
                         CK_ULONG *ol), (s, in, il, out, ol))
SE(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il, CK_BYTE *out,
                           CK_ULONG *ol), (s, in, il, out, ol))
SE(C_GenerateKey, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_ATTRIBUTE *t, CK_ULONG n,
                   CK_OBJECT_HANDLE *k), (s, m, t, n, k))
SE(C_GenerateKeyPair, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_ATTRIBUTE *pt, CK_ULONG pn,
                       CK_ATTRIBUTE *vt, CK_ULONG vn, CK_OBJECT_HANDLE *pk,
                       CK_OBJECT_HANDLE *vk), (s, m, pt, pn, vt, vn, pk, vk))
SO(C_WrapKey, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k,
               CK_BYTE *out, CK_ULONG *ol), (s, m, w, k, out, ol), ol)
SE(C_UnwrapKey, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE u, CK_BYTE *in,
                 CK_ULONG il, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *k),
   (s, m, u, in, il, t, n, k))
SE(C_DeriveKey, (CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE b, CK_ATTRIBUTE *t,
                 CK_ULONG n, CK_OBJECT_HANDLE *k), (s, m, b, t, n, k))
SE(C_SeedRandom, (CK_SESSION_HANDLE s, CK_BYTE *in, CK_ULONG il), (s, in, il))
SE(C_GenerateRandom, (CK_SESSION_HANDLE s, CK_BYTE *out, CK_ULONG ol), (s, out, ol))
SE(C_GetFunctionStatus, (CK_SESSION_HANDLE s), (s))
SE(C_CancelFunction, (CK_SESSION_HANDLE s), (s))

static CK_RV fm_C_GetFunctionList(CK_FUNCTION_LIST **out);

#define F(name) .name = fm_##name
static CK_FUNCTION_LIST fl = {
	.version = { 2, 40 },
	F(C_Initialize), F(C_Finalize), F(C_GetInfo), F(C_GetFunctionList),
	F(C_GetSlotList), F(C_GetSlotInfo), F(C_GetTokenInfo), F(C_GetMechanismList),
	F(C_GetMechanismInfo), F(C_InitToken), F(C_InitPIN), F(C_SetPIN), F(C_OpenSession),
	F(C_CloseSession), F(C_CloseAllSessions), F(C_GetSessionInfo), F(C_GetOperationState),
	F(C_SetOperationState), F(C_Login), F(C_Logout), F(C_CreateObject), F(C_CopyObject),
	F(C_DestroyObject), F(C_GetObjectSize), F(C_GetAttributeValue), F(C_SetAttributeValue),
	F(C_FindObjectsInit), F(C_FindObjects), F(C_FindObjectsFinal), F(C_EncryptInit),
	F(C_Encrypt), F(C_EncryptUpdate), F(C_EncryptFinal), F(C_DecryptInit), F(C_Decrypt),
	F(C_DecryptUpdate), F(C_DecryptFinal), F(C_DigestInit), F(C_Digest), F(C_DigestUpdate),
	F(C_DigestKey), F(C_DigestFinal), F(C_SignInit), F(C_Sign), F(C_SignUpdate),
	F(C_SignFinal), F(C_SignRecoverInit), F(C_SignRecover), F(C_VerifyInit), F(C_Verify),
	F(C_VerifyUpdate), F(C_VerifyFinal), F(C_VerifyRecoverInit), F(C_VerifyRecover),
	F(C_DigestEncryptUpdate), F(C_DecryptDigestUpdate), F(C_SignEncryptUpdate),
	F(C_DecryptVerifyUpdate), F(C_GenerateKey), F(C_GenerateKeyPair), F(C_WrapKey),
	F(C_UnwrapKey), F(C_DeriveKey), F(C_SeedRandom), F(C_GenerateRandom),
	F(C_GetFunctionStatus), F(C_CancelFunction), F(C_WaitForSlotEvent),
};

static CK_RV
fm_C_GetFunctionList(CK_FUNCTION_LIST **out)
{
	if (!out)
		return CKR_ARGUMENTS_BAD;
	*out = &fl;
	return CKR_OK;
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out);

EXPORT CK_RV
C_GetFunctionList(CK_FUNCTION_LIST **out)
{
	return fm_C_GetFunctionList(out);
}
