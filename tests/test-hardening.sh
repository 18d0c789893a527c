#!/bin/sh
# test-hardening.sh: hsmwrap against its own environment (issue 16).
#  - output files: symbolic links refused, /dev/stdout, "-" and a FIFO
#    streamed, SIGKILL and a file-size limit in the middle of large
#    decrypts and encrypts leave nothing visible and the old file intact,
#    the named-temporary fallback is swept by the next run (and only what
#    is safe to remove);
#  - secrets: a PIN in a token URI (pin-value) never appears in any output,
#    --json document or the audit log; the process is not dumpable; a PIN
#    file readable by others is refused unless allowed;
#  - audit fails closed on a full file system (a small tmpfs this test
#    mounts; skipped with a message where mount is impossible).
# Prints "ok: ..." / "FAIL: ..." lines and finally "N passed, N failed".

set -u

for v in HSMWRAP HW_TEST_DIR HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE HW_TEST_USER_PIN_FILE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-hardening.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
[ -x "$HSMWRAP" ] || { echo "test-hardening.sh: $HSMWRAP is not built" >&2; exit 99; }
PYTHON=$(command -v python3 2>/dev/null || :)

SRCDIR=$(cd "${srcdir:-$(dirname "$0")/..}" && pwd)
. "$SRCDIR/tests/lib.sh"
# Signals and /proc/PID must reach hsmwrap itself, not the libtool wrapper.
unwrapped_hsmwrap
HSMWRAP=$HW_BIN

umask 022
W=$HW_TEST_DIR/hardening
ALL=$W/all-output
mkdir "$W" "$W/tmp" || exit 99
cd "$W" || exit 99
TMPDIR=$W/tmp
export TMPDIR
: >"$ALL"

# Background processes and the mount are undone however the test ends.
bgpids=
mnt=
pd=
cleanup() {
	for p in $bgpids; do kill -9 "$p" 2>/dev/null; done
	[ -n "$mnt" ] && umount "$mnt" 2>/dev/null
	[ -n "$pd" ] && rm -rf "$pd"
	:
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# only_files DIR NAME...: DIR holds exactly these names (hidden ones too).
only_files() {
	d=$1
	shift
	got=$(ls -A "$d" | sort | tr '\n' ' ')
	want=$(for n in "$@"; do echo "$n"; done | sort | tr '\n' ' ')
	[ "$got" = "$want" ] || { echo "  $d holds: $got (want: $want)"; return 1; }
}

# wait_tmpfile PID: until PID has an anonymous or temporary output open.
wait_tmpfile() {
	i=0
	while [ $i -lt 200 ]; do
		for fd in /proc/"$1"/fd/*; do
			case $(readlink "$fd" 2>/dev/null) in
			*"(deleted)"* | *.hsmwrap-tmp.*) return 0 ;;
			esac
		done
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

expect "key create" 0 key create --label hk --type aes256 || exit 99
expect "key create keywrap" 0 key create --label hkw --type aes256 --purpose keywrap || exit 99
# 16 MiB: several hundred frames, so a kill lands in the middle.
head -c 16777216 /dev/urandom >big || exit 99
expect "encrypt big (unsigned)" 0 encrypt --key hk --suite 0x0478 -i big -o big.enc
expect "encrypt big (signed)" 0 encrypt --key hk -i big -o bigs.enc

# ------------------------------------------------------------------
# Symbolic links are refused: the link and its target stay as they were.
echo precious >target
ln -s target link
expect "decrypt -o symlink refused" 2 decrypt -i big.enc -o link
check "  the message says why" grep -q "symbolic link" "$W/err"
check "  the link is still a link to an intact target" \
	sh -c '[ -L link ] && [ "$(cat target)" = precious ]'
expect "datakey generate --plaintext-out symlink refused" 2 \
	datakey generate --key hk -o wrapped.dk --plaintext-out link
check "  and writes neither output" sh -c '[ ! -e wrapped.dk ] && [ -L link ]'
ln -s nowhere dangling
expect "dangling symlink refused" 2 datakey generate --key hk -o dangling --plaintext-out pt.dk
check "  nothing created through it" sh -c '[ ! -e nowhere ] && [ ! -e pt.dk ]'

# ------------------------------------------------------------------
# /dev/stdout, "-" and a FIFO are streams, written in place.
expect "datakey generate" 0 datakey generate --key hk -o wrapped.dk --plaintext-out pt.dk
"$HSMWRAP" datakey decrypt --key hk -i wrapped.dk -o /dev/stdout >dk.out 2>"$W/err"
rc=$?
check "datakey decrypt -o /dev/stdout (exit $rc)" cmp -s dk.out pt.dk
check "  /dev/stdout is still a link" test -L /dev/stdout
check "  the report went to stderr" grep -q "Data key decrypted" "$W/err"
"$HSMWRAP" datakey decrypt --key hk -i wrapped.dk -o - 2>"$W/err" | cat >dk2.out
check "datakey decrypt -o - writes standard output" cmp -s dk2.out pt.dk
check "  and no file named -" test ! -e ./-
"$HSMWRAP" decrypt -i big.enc -o /dev/stdout 2>"$W/err" | cmp -s - big
check "decrypt -o /dev/stdout into a pipe" test $? -eq 0
"$HSMWRAP" decrypt -i bigs.enc -o /dev/stdout 2>"$W/err" | cmp -s - big
check "decrypt (signed) -o /dev/stdout into a pipe" test $? -eq 0
mkfifo fifo.out
cat fifo.out >fifo.got &
catpid=$!
bgpids="$bgpids $catpid"
"$HSMWRAP" decrypt -i big.enc -o fifo.out >/dev/null 2>"$W/err"
rc=$?
wait $catpid
check "decrypt -o FIFO (exit $rc)" cmp -s fifo.got big
check "  the FIFO is still a FIFO" test -p fifo.out
expect "decrypt -o /dev/null" 0 decrypt -i big.enc -o /dev/null
check "  /dev/null is still a device" test -c /dev/null

# ------------------------------------------------------------------
# SIGKILL in the middle: nothing new visible, the old file intact. The
# input is a FIFO we feed half of, so the kill lands mid-stream for sure.
# kill_mid NAME ENV... -- ARG...: runs hsmwrap with -i in.fifo -o d/old.
kill_mid() {
	name=$1
	feed=$2
	shift 2
	rm -rf d in.fifo
	mkdir d
	echo "old content" >d/old
	mkfifo in.fifo
	"$HSMWRAP" "$@" -i in.fifo -o d/old >/dev/null 2>"$W/err" &
	hpid=$!
	bgpids="$bgpids $hpid"
	exec 3>in.fifo
	head -c $(($(wc -c <"$feed") / 2)) "$feed" >&3
	if wait_tmpfile $hpid; then
		ok "$name: output under way before the kill"
	else
		bad "$name: no temporary output seen"
	fi
	kill -9 $hpid
	wait $hpid 2>/dev/null
	exec 3>&-
}
kill_mid "kill -9 mid decrypt" big.enc decrypt
check "  nothing left, old file intact" only_files d old
check "  old content" grep -qx "old content" d/old
kill_mid "kill -9 mid decrypt (signed)" bigs.enc decrypt
check "  nothing left, old file intact" only_files d old
kill_mid "kill -9 mid encrypt" big encrypt --key hk
check "  nothing left, old file intact" only_files d old
check "  old content" grep -qx "old content" d/old

# The fallback without O_TMPFILE leaves a named temporary behind a kill;
# the next run writing into that directory removes it.
HSMWRAP_TEST_NO_TMPFILE=1
export HSMWRAP_TEST_NO_TMPFILE
kill_mid "kill -9 mid decrypt (named temporary)" big.enc decrypt
check "  the named temporary is there" sh -c 'ls -A d | grep -q "^\.hsmwrap-tmp\.......$"'
left=$(ls -A d | grep '^\.hsmwrap-tmp\.' | head -n 1)
# What the sweep must leave alone: a link, and a file of another user.
ln -s ../target d/.hsmwrap-tmp.LinkAA
: >d/.hsmwrap-tmp.OtherA
chown 65534 d/.hsmwrap-tmp.OtherA 2>/dev/null || rm -f d/.hsmwrap-tmp.OtherA
expect "the next run into that directory" 0 decrypt -i big.enc -o d/new
check "  removed the abandoned temporary" test ! -e "d/$left"
check "  left the link alone" test -L d/.hsmwrap-tmp.LinkAA
if [ -e d/.hsmwrap-tmp.OtherA ]; then
	check "  left another user's file alone" test -f d/.hsmwrap-tmp.OtherA
fi
check "  and wrote its output" cmp -s d/new big
# A temporary in use (its creator's lock held) is not taken either.
rm -rf d2
mkdir d2
rm -f in.fifo
mkfifo in.fifo
"$HSMWRAP" decrypt -i in.fifo -o d2/x >/dev/null 2>&1 &
hpid=$!
bgpids="$bgpids $hpid"
exec 3>in.fifo
head -c 4000000 big.enc >&3
wait_tmpfile $hpid
expect "a run beside a live temporary" 0 datakey decrypt --key hk -i wrapped.dk -o d2/y
check "  the live temporary stays" sh -c 'ls -A d2 | grep -q "^\.hsmwrap-tmp\."'
tail -c +4000001 big.enc >&3
exec 3>&-
wait $hpid
check "  and its owner finishes (exit $?)" cmp -s d2/x big
check "  leaving only its outputs" only_files d2 x y
unset HSMWRAP_TEST_NO_TMPFILE

# A file-size limit: SIGXFSZ is ignored, the write fails cleanly.
echo "old content" >d/old
(ulimit -f 2048; exec "$HSMWRAP" decrypt -i big.enc -o d/old) >/dev/null 2>"$W/err"
rc=$?
check "decrypt under ulimit -f fails with exit 1 (got $rc)" test $rc -eq 1
check "  nothing left, old file intact" only_files d new old .hsmwrap-tmp.LinkAA \
	$( [ -e d/.hsmwrap-tmp.OtherA ] && echo .hsmwrap-tmp.OtherA)
check "  old content" grep -qx "old content" d/old
(ulimit -f 2048; exec "$HSMWRAP" encrypt --key hk -i big -o d/old) >/dev/null 2>"$W/err"
rc=$?
check "encrypt under ulimit -f fails with exit 1 (got $rc)" test $rc -eq 1
check "  old content" grep -qx "old content" d/old
rm -rf d d2

# ------------------------------------------------------------------
# Secrets: a PIN in the token URI (RFC 7512 pin-value) is never shown.
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
PURI="$HSMWRAP_TOKEN?pin-value=$PIN"
LOG=$W/audit.jsonl
expect "audit init" 0 audit init --key hw-audit "$LOG" || exit 99
expect "key list, PIN in the token URI, audited" 0 --audit-log "$LOG" --token "$PURI" key list
expect "key list --json, PIN in the token URI" 0 --json --audit-log "$LOG" --token "$PURI" key list
expect "a token that is not there, PIN in its URI" 4 --json --audit-log "$LOG" \
	--token "pkcs11:token=absent?pin-value=$PIN" key list
check "  the message still names the token" grep -q "token=absent" "$W/err"
expect "a malformed URI with a PIN in it" 2 --json \
	--token "pkcs11:token=a;;bad%zz?pin-value=$PIN" key list
expect "a key URI with a PIN, not found" 4 --json --audit-log "$LOG" \
	key show "pkcs11:object=absent?pin-value=$PIN"
expect "a key URI with a PIN, found" 0 --audit-log "$LOG" \
	key show "pkcs11:object=hk?pin-value=$PIN"
expect "encrypt with the PIN in the token URI" 0 --audit-log "$LOG" --token "$PURI" \
	encrypt --key hk -i target -o t.enc
expect "ca init (a transcript names the token)" 0 --audit-log "$LOG" --token "$PURI" \
	ca init --key pinca --type ec-p384 --subject /CN=pinca -o pinca.pem
expect "ca init --json" 0 --json --token "$PURI" \
	ca init --key pinca2 --type ec-p384 --subject /CN=pinca2 -o pinca2.pem
expect "audit show --json" 0 --json audit show "$LOG"
check "the PIN is in no output, no JSON document" sh -c "! grep -q '$PIN' '$ALL'"
check "the PIN is not in the audit log" sh -c "! grep -q '$PIN' '$LOG'"
check "  which records the token URI, redacted" grep -q 'token=absent' "$LOG"

# A PIN file others can read is refused, unless explicitly allowed.
cp "$HW_TEST_USER_PIN_FILE" shared.pin
chmod 644 shared.pin
expect "PIN file readable by others: refused" 3 --pin-source "file:$W/shared.pin" key list
check "  saying why" grep -q "accessible by other users" "$W/err"
expect "  --allow-shared-pin-file accepts it" 0 --allow-shared-pin-file \
	--pin-source "file:$W/shared.pin" key list
check "  with a warning" grep -q "warning: PIN file" "$W/err"
HSMWRAP_ALLOW_SHARED_PIN_FILE=1
export HSMWRAP_ALLOW_SHARED_PIN_FILE
expect "  so does HSMWRAP_ALLOW_SHARED_PIN_FILE=1" 0 --pin-source "file:$W/shared.pin" key list
unset HSMWRAP_ALLOW_SHARED_PIN_FILE
chmod 640 shared.pin
expect "PIN file readable by the group: refused" 3 --pin-source "file:$W/shared.pin" key list

# Not dumpable: checked from outside by an unprivileged user, while the
# process waits on a FIFO (so it is surely running).
if command -v setpriv >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
	pd=$(mktemp -d /tmp/hsmwrap-dump.XXXXXX)
	chmod 755 "$pd"
	mkfifo "$pd/in"
	chmod 666 "$pd/in"
	# The unprivileged user gets a config of its own and no token: it only
	# has to run and block. It runs a copy of the tool (copy-out.sh).
	. "$SRCDIR/tests/copy-out.sh"
	pbin=$(copy_out "$HSMWRAP" "$pd") || { echo "cannot copy hsmwrap" >&2; exit 99; }
	HSMWRAP_CONFIG=/dev/null LD_LIBRARY_PATH=$pd setpriv --reuid=65534 --regid=65534 \
		--clear-groups "$pbin" decrypt -i "$pd/in" -o "$pd/out" >/dev/null 2>&1 &
	dpid=$!
	bgpids="$bgpids $dpid"
	sleep 0.5
	i=0
	while [ $i -lt 100 ] && ! grep -q "^Uid:.*65534" /proc/$dpid/status 2>/dev/null; do
		sleep 0.05
		i=$((i + 1))
	done
	check "hsmwrap is running as uid 65534" grep -q "^Uid:.*65534" /proc/$dpid/status
	check "  its /proc entries belong to root (not dumpable)" \
		test "$(stat -c %u /proc/$dpid/environ)" = 0
	check "  its own user cannot read its memory map" \
		sh -c "! setpriv --reuid=65534 --regid=65534 --clear-groups cat /proc/$dpid/maps >/dev/null 2>&1"
	# A control: a dumpable process of the same user is readable.
	setpriv --reuid=65534 --regid=65534 --clear-groups sleep 30 &
	spid=$!
	bgpids="$bgpids $spid"
	sleep 0.2
	check "  (control: a dumpable process of that user is readable)" \
		setpriv --reuid=65534 --regid=65534 --clear-groups cat /proc/$spid/maps >/dev/null
	kill $spid 2>/dev/null
	kill -9 $dpid 2>/dev/null
	wait $dpid 2>/dev/null
	rm -rf "$pd"
	pd=
else
	echo "skip: non-dumpable check needs root and setpriv"
fi

# The PIN read at login lives in memory of its own (base/secmem.c):
# locked against swapping where RLIMIT_MEMLOCK allows, and marked
# MADV_DONTDUMP. Checked on a decrypt that is surely logged in and running
# (its output half written, its input still open).
rm -f in.fifo
mkfifo in.fifo
"$HSMWRAP" decrypt -i in.fifo -o lk.out >/dev/null 2>&1 &
hpid=$!
bgpids="$bgpids $hpid"
exec 3>in.fifo
head -c 3000000 big.enc >&3
wait_tmpfile $hpid
memlock=$(ulimit -l)
# ASan/UBSan builds: the sanitizer runtime turns mlock into a no-op.
lockflag=' lo '
if grep -qa __asan_init "$HSMWRAP" 2>/dev/null; then
	echo "skip: a sanitizer build cannot lock memory (mlock is a no-op under ASan)"
	lockflag=' '
elif [ "$memlock" = unlimited ] || [ "$memlock" -ge 64 ]; then
	check "a logged-in hsmwrap has locked memory (VmLck > 0 in /proc/PID/status)" \
		awk '/^VmLck:/ { n = $2 } END { exit !(n > 0) }' "/proc/$hpid/status"
else
	echo "skip: RLIMIT_MEMLOCK is $memlock kB here: nothing can be locked"
fi
if [ -r "/proc/$hpid/smaps" ] && cat "/proc/$hpid/smaps" >/dev/null 2>&1; then
	# VmFlags: lo = locked, dd = left out of core dumps.
	check "  a mapping of it is excluded from core dumps (and locked)" \
		awk -v lo="$lockflag" '/^VmFlags:/ && index($0, lo) && / dd / { f = 1 } END { exit !f }' \
		"/proc/$hpid/smaps"
else
	echo "skip: /proc/PID/smaps of a non-dumpable process needs root"
fi
tail -c +3000001 big.enc >&3
exec 3>&-
wait $hpid
check "  and the decrypt finishes all the same (exit $?)" cmp -s lk.out big
rm -f lk.out in.fifo

# ------------------------------------------------------------------
# Audit fails closed: a full file system under the log.
mkdir mnt
if mount -t tmpfs -o size=512k,mode=0700 hsmwrap-test mnt 2>/dev/null; then
	mnt=$W/mnt
	AL=$mnt/audit.jsonl
	expect "audit init on the small file system" 0 audit init --existing --key hw-audit "$AL"
	dd if=/dev/zero of="$mnt/fill" bs=4096 >/dev/null 2>&1
	# The log's last page may still have room for a few short records:
	# the shortest ones fill it, after which longer ones cannot fit.
	i=0
	while [ $i -lt 40 ]; do
		hw --audit-log "$AL" key list
		[ "$rc" -ne 0 ] && break
		i=$((i + 1))
	done
	check "key list stops at a full file system with exit 8 (got $rc)" test "$rc" -eq 8
	rm -f t2.enc
	expect "encrypt with the log's file system full: refused" 8 --audit-log "$AL" \
		encrypt --key hk -i target -o t2.enc
	check "  saying nothing was done" grep -q "nothing was" "$W/err"
	check "  and nothing was" test ! -e t2.enc
	expect "tde keyring get: refused" 8 --audit-log "$AL" \
		tde keyring get -f none.keyring --id 1 -o tk.out
	check "  no table key written" test ! -e tk.out
	expect "key list: refused" 8 --audit-log "$AL" key list
	expect "key rotate: refused" 8 --audit-log "$AL" key rotate hk
	expect "--json says exit 8" 8 --json --audit-log "$AL" key list
	check "  in its document" grep -q '"exit":8' "$W/out"
	expect "--audit-fail-open runs it (exit 1: not recorded)" 1 --audit-fail-open \
		--audit-log "$AL" encrypt --key hk -i target -o t2.enc
	check "  and the output is there" test -s t2.enc
	rm -f t2.enc
	HSMWRAP_AUDIT_FAIL_OPEN=1
	export HSMWRAP_AUDIT_FAIL_OPEN
	expect "  so does HSMWRAP_AUDIT_FAIL_OPEN=1" 1 \
		--audit-log "$AL" encrypt --key hk -i target -o t2.enc
	unset HSMWRAP_AUDIT_FAIL_OPEN
	rm -f "$mnt/fill"
	expect "with space again the command runs" 0 --audit-log "$AL" \
		encrypt --key hk -i target -o t3.enc
	check "  its attempt and outcome are recorded" \
		sh -c "tail -n 2 '$AL' | head -n 1 | grep -q '\"result\":\"attempt\"' &&
		       tail -n 1 '$AL' | grep -q '\"attempt\":'"
	expect "audit verify: intact" 0 --json audit verify "$AL"
	if [ -n "$PYTHON" ]; then
		check "  no unfinished attempt" test "$(json_get 'd["unfinished"]' <"$W/out")" = 0
	fi
	# Killed after its attempt was recorded: verify reports it.
	rm -f in.fifo
	mkfifo in.fifo
	"$HSMWRAP" --audit-log "$AL" decrypt -i in.fifo -o d.out >/dev/null 2>&1 &
	hpid=$!
	bgpids="$bgpids $hpid"
	exec 3>in.fifo
	head -c 3000000 big.enc >&3
	wait_tmpfile $hpid
	kill -9 $hpid
	wait $hpid 2>/dev/null
	exec 3>&-
	expect "audit verify after a killed command" 0 --json audit verify "$AL"
	if [ -n "$PYTHON" ]; then
		check "  reports one attempt without an outcome" \
			test "$(json_get 'd["unfinished"]' <"$W/out")" = 1
	fi
	check "  and says so on stderr" grep -q "no outcome record" "$W/err"
	umount "$mnt" && mnt=
else
	echo "skip: cannot mount a tmpfs here (not root, or no mount permission): the full-disk audit checks did not run"
fi

echo "$npass passed, $nfail failed"
[ $nfail -eq 0 ]
