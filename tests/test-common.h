/*
 * test-common.h - assertion helpers shared by the CUnit test programs:
 * a failed check says which error came back, the library's detail text
 * and the PKCS#11 return value behind it.
 */
#ifndef HW_TEST_COMMON_H
#define HW_TEST_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <CUnit/CUnit.h>

#include "hsmwrap.h"

/*
 * snprintf for messages and names: truncation is acceptable (and, for a
 * path or URI, makes the test fail visibly), so it is not a warning.
 */
static void fmt(char *buf, size_t max, const char *format, ...)
	__attribute__((format(printf, 3, 4), unused));

static void fmt(char *buf, size_t max, const char *format, ...)
{
	va_list ap;

	va_start(ap, format);
	if (vsnprintf(buf, max, format, ap) < 0 && max > 0)
		buf[0] = '\0';
	va_end(ap);
}

static void __attribute__((unused))
check_rc(hw_err got, hw_err want, const char *expr, const char *file, unsigned line,
         CU_BOOL fatal)
{
	char msg[768];

	if (got == want) {
		CU_assertImplementation(CU_TRUE, line, expr, file, "", fatal);
		return;
	}
	fmt(msg, sizeof msg, "%s -> %s, want %s (detail \"%s\", ckrv 0x%lx)", expr,
	    hw_errname(got), hw_errname(want), hw_last_detail(), hw_last_ckrv());
	CU_assertImplementation(CU_FALSE, line, msg, file, "", fatal);
}

#define EXPECT(expr, want) check_rc((expr), (want), #expr, __FILE__, __LINE__, CU_FALSE)
#define REQUIRE(expr, want) check_rc((expr), (want), #expr, __FILE__, __LINE__, CU_TRUE)
#define EXPECT_RC(expr, want) EXPECT(expr, want)
#define EXPECT_OK(expr) EXPECT(expr, HW_OK)
#define REQUIRE_OK(expr) REQUIRE(expr, HW_OK)

/* Seconds on a monotonic clock. */
static double __attribute__((unused))
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif /* HW_TEST_COMMON_H */
