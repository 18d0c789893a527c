#!/bin/sh
# with-token.sh PROGRAM [ARG...]
#
# Runs PROGRAM against a throwaway SoftHSM token in a fresh temporary
# directory, so that no test ever touches the machine's own token store.
# Exports SOFTHSM2_CONF, HSMWRAP_MODULE, HSMWRAP_TOKEN, HSMWRAP_PIN_SOURCE,
# HSMWRAP_CONFIG, HSMWRAP_LOCK_DIR, HW_TEST_DIR, HW_TEST_SO_PIN_FILE, HW_TEST_USER_PIN_FILE
# (see doc/HELPERS-CONTEXT.md, "Test token convention").
# With HW_TEST_SECOND_TOKEN=1 a second token `hsmwrap-test2` with its own
# PINs is created too (HW_TEST_TOKEN2, HW_TEST_SO_PIN_FILE2,
# HW_TEST_USER_PIN_FILE2), for tests that must pick one token among several.
#
# Exit status: PROGRAM's; 77 (skip) when SoftHSM is not installed;
# 99 (hard error) when the fixture itself cannot be set up, or PROGRAM
# ran longer than HW_TEST_TIMEOUT seconds (default 1200; 0: no limit, as
# the benchmarks set it) and was stopped.

set -u

module=${SOFTHSM_MODULE:-}
util=${SOFTHSM2_UTIL:-}
[ -n "$util" ] || util=$(command -v softhsm2-util 2>/dev/null) || util=

if [ -z "$module" ] || [ ! -f "$module" ]; then
	echo "with-token.sh: SoftHSM module not found (configure --with-softhsm=PATH); skipping" >&2
	exit 77
fi
if [ -z "$util" ] || [ ! -x "$util" ]; then
	echo "with-token.sh: softhsm2-util not found; skipping" >&2
	exit 77
fi
if [ $# -eq 0 ]; then
	echo "usage: with-token.sh PROGRAM [ARG...]" >&2
	exit 99
fi

# Everything below holds PINs and token files: private to us. The caller's
# umask is restored for PROGRAM, so that file modes it checks are the ones
# the code under test sets, not an artefact of this fixture.
saved_umask=$(umask)
umask 077
dir=$(mktemp -d "${TMPDIR:-/tmp}/hsmwrap-test.XXXXXXXX") || exit 99
# The EXIT trap also runs when a signal trap calls exit, so the directory
# goes away however the test ends.
trap 'rm -rf "$dir"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
	echo "with-token.sh: $*" >&2
	[ -f "$dir/softhsm2-util.log" ] && cat "$dir/softhsm2-util.log" >&2
	exit 99
}

random_pin() {
	od -An -tx1 -N8 /dev/urandom | tr -d ' \n'
}

# write_pin FILE: a fresh random PIN, no trailing newline, mode 0600.
write_pin() {
	pin=$(random_pin)
	[ ${#pin} -eq 16 ] || fail "could not read /dev/urandom"
	printf '%s' "$pin" >"$1" || fail "cannot write $1"
	chmod 600 "$1"
}

mkdir "$dir/tokens" || fail "cannot create $dir/tokens"
cat >"$dir/softhsm2.conf" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = ALL
EOF
# An empty config file keeps a system-wide hsmwrap.conf out of the tests.
: >"$dir/hsmwrap.conf"

SOFTHSM2_CONF=$dir/softhsm2.conf
export SOFTHSM2_CONF

# init_token LABEL SO_PIN_FILE USER_PIN_FILE
# softhsm2-util only takes PINs on its command line. That briefly shows
# them in the process list, which is acceptable here only because the
# token is a throwaway one in a private temp dir with random PINs;
# hsmwrap itself never accepts a PIN on argv.
init_token() {
	write_pin "$2"
	write_pin "$3"
	"$util" --init-token --free --label "$1" \
		--so-pin "$(cat "$2")" --pin "$(cat "$3")" \
		>>"$dir/softhsm2-util.log" 2>&1 ||
		fail "softhsm2-util could not initialise token '$1'"
}

init_token hsmwrap-test "$dir/so.pin" "$dir/user.pin"
HW_TEST_DIR=$dir
HW_TEST_SO_PIN_FILE=$dir/so.pin
HW_TEST_USER_PIN_FILE=$dir/user.pin
HSMWRAP_MODULE=$module
HSMWRAP_TOKEN=pkcs11:token=hsmwrap-test
HSMWRAP_PIN_SOURCE=file:$dir/user.pin
HSMWRAP_CONFIG=$dir/hsmwrap.conf
export HW_TEST_DIR HW_TEST_SO_PIN_FILE HW_TEST_USER_PIN_FILE
export HSMWRAP_MODULE HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE HSMWRAP_CONFIG
# hsmwrap's inter-process locks (token and module I/O): a test's own, not
# shared with other test runs on the machine nor left behind in /tmp.
HSMWRAP_LOCK_DIR=$dir
export HSMWRAP_LOCK_DIR

if [ "${HW_TEST_SECOND_TOKEN:-0}" = 1 ]; then
	init_token hsmwrap-test2 "$dir/so2.pin" "$dir/user2.pin"
	HW_TEST_TOKEN2=hsmwrap-test2
	HW_TEST_SO_PIN_FILE2=$dir/so2.pin
	HW_TEST_USER_PIN_FILE2=$dir/user2.pin
	export HW_TEST_TOKEN2 HW_TEST_SO_PIN_FILE2 HW_TEST_USER_PIN_FILE2
fi

umask "$saved_umask"
# Not exec: the trap above must still remove the directory afterwards.
# A watchdog: a test that hangs (a server that never answers, a prompt
# nobody sees) fails after HW_TEST_TIMEOUT seconds instead of holding the
# whole run until CI's limit. timeout(1) runs the test in a process group
# of its own and signals all of it, servers the test started included.
limit=${HW_TEST_TIMEOUT:-1200}
timeout -k 10 "$limit" "$@"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
	echo "with-token.sh: $* did not finish within $limit s; stopped" >&2
	rc=99
fi

# A test stops what it starts (servers, background hsmwrap runs), on every
# path. Anything still running in or on the test's directory (its working
# directory or an argument under it) was left behind: a hard error, after
# it is killed so it cannot outlive the directory.
left=
for p in /proc/[0-9]*; do
	pid=${p#/proc/}
	[ "$pid" = "$$" ] && continue
	cwd=$(readlink "$p/cwd" 2>/dev/null) || cwd=
	args=$(tr '\000' ' ' 2>/dev/null <"$p/cmdline") || args=
	case "$cwd/ $args" in
	"$dir"/* | *" $dir"/* | *"=$dir"/*) left="$left $pid" ;;
	esac
done
if [ -n "$left" ]; then
	echo "with-token.sh: $* left processes behind:" >&2
	for pid in $left; do
		echo "  $pid: $(tr '\000' ' ' 2>/dev/null <"/proc/$pid/cmdline")" >&2
		kill -9 "$pid" 2>/dev/null
	done
	exit 99
fi
exit $rc
