# tests/lib.sh - what the shell suites share: pass/fail counters and the
# way each runs hsmwrap and checks its exit status. The functions use W
# (the suite's work directory) and, if set, ALL (a file collecting every
# output, which suites search for leaked secrets).

npass=0
nfail=0
ok() { npass=$((npass + 1)); echo "ok: $*"; }
bad() { nfail=$((nfail + 1)); echo "FAIL: $*"; }
# check DESC CMD...: ok if CMD succeeds.
check() { d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# hw ARG...: hsmwrap's output in $W/out and $W/err (and $ALL, where the
# suite collects outputs), status in $rc. A suite that runs hsmwrap
# thousands of times sets HW_BIN to the binary behind the libtool wrapper.
hw() {
	"${HW_BIN:-$HSMWRAP}" "$@" >"$W/out" 2>"$W/err"
	rc=$?
	[ -z "${ALL:-}" ] || cat "$W/out" "$W/err" >>"$ALL"
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
# unwrapped_hsmwrap: HW_BIN becomes the binary behind the libtool wrapper
# $HSMWRAP where there is one (with the library path it needs), else
# $HSMWRAP: signals and /proc must reach hsmwrap itself, and loops of
# thousands of runs would spend most of their time in the wrapper.
unwrapped_hsmwrap() {
	HW_BIN=$HSMWRAP
	bdir=$(dirname "$HSMWRAP")
	if [ -x "$bdir/.libs/hsmwrap" ] && [ -d "$bdir/.libs" ]; then
		HW_BIN=$bdir/.libs/hsmwrap
		LD_LIBRARY_PATH=$bdir/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
		export LD_LIBRARY_PATH
	fi
}
# flip FILE OFFSET: inverts one byte in place (an inverted byte always
# differs; a byte set to a constant may already have had that value).
flip() {
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059 # the format is the octal escape of the byte
	printf "\\$(printf %o $((b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
# newout: a fresh empty directory $O for the outputs of a command that
# must fail.
outn=0
newout() {
	outn=$((outn + 1))
	O=$W/fail.$outn
	mkdir "$O"
}
# refused DESC CODE ARG...: hsmwrap must exit with CODE, say why on
# stderr ("hsmwrap: ..."), and add nothing to $O: no output file and no
# temporary file left behind. (Suites whose failures must leave other
# things untouched define their own refused.)
refused() {
	d=$1
	code=$2
	shift 2
	before=$(cd "$O" && ls -A)
	hw "$@"
	after=$(cd "$O" && ls -A)
	why=
	[ "$rc" -eq "$code" ] || why="exit $rc, want $code"
	grep -q '^hsmwrap: ..*' "$W/err" || why="$why${why:+; }no 'hsmwrap: ...' message on stderr"
	[ "$before" = "$after" ] ||
		why="$why${why:+; }left behind in the output dir: $(echo "$after" | tr '\n' ' ')"
	if [ -z "$why" ]; then
		ok "$d (exit $code, message, no output left)"
	else
		bad "$d: $why: $(first_err)"
	fi
}
