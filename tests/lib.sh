# tests/lib.sh - what the shell suites share: pass/fail counters and the
# way each runs hsmwrap and checks its exit status. Source it after
# setting W (the suite's work directory) and ALL (a file collecting every
# output, which suites search for leaked secrets).

npass=0
nfail=0
ok() { npass=$((npass + 1)); echo "ok: $*"; }
bad() { nfail=$((nfail + 1)); echo "FAIL: $*"; }
# check DESC CMD...: ok if CMD succeeds.
check() { d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# hw ARG...: hsmwrap's output in $W/out and $W/err (and $ALL), status in $rc.
hw() {
	"$HSMWRAP" "$@" >"$W/out" 2>"$W/err"
	rc=$?
	cat "$W/out" "$W/err" >>"$ALL"
}
first_err() { head -n 2 "$W/err" | tr '\n' ' '; }
# expect DESC CODE ARG...: hsmwrap ARG... exits with CODE.
expect() {
	d=$1 code=$2
	shift 2
	hw "$@"
	if [ "$rc" -eq "$code" ]; then
		ok "$d (exit $code)"
		return 0
	fi
	bad "$d: exit $rc, want $code: $(first_err)"
	return 1
}
# json_get EXPR < JSON: a Python expression over the document d.
json_get() {
	"$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
# flip FILE OFFSET: inverts one byte in place (an inverted byte always
# differs; a byte set to a constant may already have had that value).
flip() {
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059 # the format is the octal escape of the byte
	printf "\\$(printf %o $((b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
