#!/bin/sh
# test-tde.sh: TDE master keys and keyrings of table keys, as a database
# administrator uses them: tde init, keyring add/list/get/rekey, every
# failure path, tampered keyrings, and kill -9 at every step of a rekey
# (the keyring must then be the old one or the new one, and every table key
# must still unwrap to the same bytes). Runs under tests/with-token.sh.
#
# The kill points come from HSMWRAP_TEST_CRASH_AT=N, a test hook of
# src/lib/lifecycle/tde.c that makes the process SIGKILL itself at its N-th step
# (each table key re-wrapped, then each step of the atomic save); a few
# rekeys are also killed from outside after a random delay.

set -u
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE HSMWRAP_TOKEN \
	HSMWRAP_PIN_SOURCE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-tde.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)
unset HSMWRAP_AUDIT_LOG HSMWRAP_TEST_CRASH_AT

umask 022
W=$HW_TEST_DIR/tde
mkdir "$W" || exit 99
cd "$W" || exit 99
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
ALL=$W/all-output
: >"$ALL"

. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/p11.sh"
size() { wc -c <"$1" | tr -d ' '; }
hexof() { od -An -tx1 "$1" | tr -d ' \n'; }

# ---------------------------------------------------------------------
# Master keys

expect "tde init" 0 tde init --label DB.MK.1
check "tde init prints a transcript with the KCV" \
	sh -c "grep -q 'ceremony transcript: tde init' '$W/out' && grep -q 'KCV (AES-ECB of zero block)' '$W/out'"
check "the transcript says not extractable" grep -q 'Extractable: *no' "$W/out"
expect "tde init --json" 0 --json tde init --label DB.MK.2
if [ -n "$PYTHON" ]; then
	check "the master key is an AES-256 envelope key, sensitive, not extractable" \
		[ "$(json_get '(d["key"]["type"], d["key"]["purpose"], d["key"]["sensitive"], d["key"]["extractable"], d["key"]["never_extractable"])' <"$W/out")" = "('aes256', 'envelope', True, False, True)" ]
fi
if [ -n "$PKCS11_TOOL" ] && [ -x "$PKCS11_TOOL" ]; then
	slot=$(p11_slot hsmwrap-test)
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "${slot:-none}" \
		--login --pin env:HW_P11_PIN --list-objects --type secrkey >"$W/p11" 2>/dev/null
	for k in DB.MK.1 DB.MK.2; do
		check "pkcs11-tool: $k is sensitive and never extractable" \
			sh -c "grep -A10 'label: *$k\$' '$W/p11' | grep 'Access:' | grep -q 'never extractable'"
	done
fi
expect "tde init with an existing label is refused" 7 tde init --label DB.MK.1
expect "tde init without --label" 2 tde init

# ---------------------------------------------------------------------
# A keyring

KR=$W/db.keyring
expect "keyring add without --key on a new keyring" 2 tde keyring add -f "$KR" --id 1
check "... creates no file" [ ! -e "$KR" ]
expect "keyring add with a missing master key" 4 tde keyring add -f "$KR" --key nope --id 1
check "... creates no file" [ ! -e "$KR" ]
"$HSMWRAP" key create --label signer --type ec-p256 >/dev/null 2>&1
expect "keyring add with a sign key as master is refused" 7 \
	tde keyring add -f "$KR" --key signer --id 1
expect "keyring add creates the keyring" 0 tde keyring add -f "$KR" --key DB.MK.1 --id 1
check "... saying so" grep -q 'Table key 1 version 1 added .*(new keyring)' "$W/out"
expect "keyring add --id 2" 0 tde keyring add -f "$KR" --id 2
expect "keyring add --id 4294967295" 0 tde keyring add -f "$KR" --key DB.MK.1 --id 4294967295
expect "keyring add of a new version of table key 1" 0 tde keyring add -f "$KR" --id 1
check "... is version 2" grep -q 'Table key 1 version 2 added' "$W/out"
expect "keyring add --id -1" 2 tde keyring add -f "$KR" --id -1
expect "keyring add --id 4294967296" 2 tde keyring add -f "$KR" --id 4294967296
expect "keyring add with another master key is refused" 5 \
	tde keyring add -f "$KR" --key DB.MK.2 --id 3
check "no lock or temporary file is left but the lock file" \
	[ "$(ls -A "$W" | grep -c 'db.keyring')" -eq 2 ]

expect "keyring list" 0 tde keyring list -f "$KR"
check "list names the master key and its KCV" \
	grep -q 'Master key: DB.MK.1 (id [0-9a-f]*, KCV (AES-ECB of zero block) [0-9a-f]\{6\})' "$W/out"
check "list shows four table key versions" [ "$(grep -cE '^[0-9]+ +[0-9]+ +20' "$W/out")" -eq 4 ]
check "list shows 1/1, 1/2, 2/1, 4294967295/1 in order" \
	[ "$(grep -E '^[0-9]+ +[0-9]+ +20' "$W/out" | awk '{printf "%s/%s ", $1, $2}')" = "1/1 1/2 2/1 4294967295/1 " ]
expect "keyring list --json" 0 --json tde keyring list -f "$KR"
if [ -n "$PYTHON" ]; then
	check "list --json has ids, versions and the master key" \
		[ "$(json_get '(d["master_key"], len(d["keys"]), d["keys"][1]["version"], d["generation"])' <"$W/out")" = "('DB.MK.1', 4, 2, 4)" ]
fi

expect "keyring get --id 1 (latest)" 0 tde keyring get -f "$KR" --id 1 -o k1
check "... says version 2" grep -q 'version 2' "$W/out"
expect "keyring get --id 1 --version 1" 0 tde keyring get -f "$KR" --id 1 --version 1 -o k1v1
expect "keyring get --id 1 --version 2" 0 tde keyring get -f "$KR" --id 1 --version 2 -o k1v2
expect "keyring get --id 2" 0 tde keyring get -f "$KR" --id 2 -o k2
check "a table key is 32 bytes, mode 0600" \
	sh -c "[ \$(wc -c <k1) -eq 32 ] && [ \$(stat -c %a k1) = 600 ]"
check "latest is version 2" cmp -s k1 k1v2
check "versions and ids hold different keys" \
	sh -c "! cmp -s k1v1 k1v2 && ! cmp -s k1v1 k2 && ! cmp -s k1v2 k2"
expect "keyring get of an unknown id" 4 tde keyring get -f "$KR" --id 3 -o k3
check "... writes nothing" [ ! -e k3 ]
expect "keyring get of an unknown version" 4 tde keyring get -f "$KR" --id 1 --version 3 -o k3
expect "keyring get --version 0" 2 tde keyring get -f "$KR" --id 1 --version 0 -o k3
expect "keyring get onto the keyring itself" 2 tde keyring get -f "$KR" --id 1 -o "$KR"
expect "keyring list of a missing file" 1 tde keyring list -f "$W/none"

# ---------------------------------------------------------------------
# Tampering: every change to the file is refused, and nothing is released.

cp "$KR" orig.keyring
n=$(size "$KR")
fails=0
for off in 0 4 5 12 21 25 27 30 40 50 60 70 80 100 150 200 300 400 \
	$((n / 2)) $((n - 40)) $((n - 17)) $((n - 1)); do
	cp orig.keyring t.keyring
	flip t.keyring "$off"
	"$HSMWRAP" tde keyring get -f t.keyring --id 1 -o tk >/dev/null 2>"$W/err"
	r=$?
	if [ "$r" -ne 5 ] && [ "$r" -ne 4 ] || [ -e tk ]; then
		fails=$((fails + 1))
		echo "  byte $off flipped: exit $r: $(head -n 1 "$W/err")"
	fi
	rm -f tk
done
check "a flipped byte anywhere (22 offsets) is refused and releases no key" [ "$fails" -eq 0 ]
fails=0
for len in 0 4 30 $((n / 2)) $((n - 1)); do
	head -c "$len" orig.keyring >t.keyring
	"$HSMWRAP" tde keyring list -f t.keyring >/dev/null 2>&1
	[ $? -eq 5 ] || fails=$((fails + 1))
done
check "a truncated keyring (5 lengths) is refused (exit 5)" [ "$fails" -eq 0 ]
cp orig.keyring t.keyring
printf 'x' >>t.keyring
expect "bytes after the seal are refused" 5 tde keyring list -f t.keyring
# A keyring of the same master with other entries: its entries cannot be
# spliced in, nor can the whole of it pass for the first.
expect "a second keyring under the same master" 0 tde keyring add -f other.keyring --key DB.MK.1 --id 1
if [ -n "$PYTHON" ]; then
	"$PYTHON" - orig.keyring other.keyring spliced.keyring <<'PYEOF'
import struct, sys
def parse(b):
    o = 4 + 1 + 16 + 4 + 8
    for _ in range(3):
        (l,) = struct.unpack('>H', b[o:o+2]); o += 2 + l
    (n,) = struct.unpack('>I', b[o:o+4]); o += 4
    ents = []
    for _ in range(n):
        s = o; o += 16
        (l,) = struct.unpack('>H', b[o:o+2]); o += 2 + l
        ents.append((s, o))
    return ents
a = open(sys.argv[1], 'rb').read(); b = open(sys.argv[2], 'rb').read()
ea, eb = parse(a), parse(b)
# Entry (1,1) of the other keyring in place of entry (1,1) of the first.
out = a[:ea[0][0]] + b[eb[0][0]:eb[0][1]] + a[ea[0][1]:]
open(sys.argv[3], 'wb').write(out)
PYEOF
	expect "an entry spliced in from another keyring is refused" 5 \
		tde keyring get -f spliced.keyring --id 1 --version 1 -o tk
	check "... and releases nothing" [ ! -e tk ]
fi

# ---------------------------------------------------------------------
# Rekey

expect "rekey to the same master key is refused" 2 tde keyring rekey -f "$KR" --new-key DB.MK.1
expect "rekey to a missing key" 4 tde keyring rekey -f "$KR" --new-key nope
check "... leaves the keyring as it was" cmp -s "$KR" orig.keyring
expect "rekey to a sign key is refused" 7 tde keyring rekey -f "$KR" --new-key signer
check "... leaves the keyring as it was" cmp -s "$KR" orig.keyring
expect "rekey to DB.MK.2" 0 tde keyring rekey -f "$KR" --new-key DB.MK.2
check "rekey prints a transcript with both master keys" \
	sh -c "grep -q 'Old master key: *DB.MK.1' '$W/out' && grep -q 'New master key: *DB.MK.2' '$W/out' &&
	       grep -q 'Table keys re-wrapped: *4' '$W/out'"
expect "list after rekey" 0 tde keyring list -f "$KR"
check "the master key is now DB.MK.2" grep -q 'Master key: DB.MK.2' "$W/out"
same=0
for spec in "1 1 k1v1" "1 2 k1v2" "2 1 k2"; do
	set -- $spec
	"$HSMWRAP" tde keyring get -f "$KR" --id "$1" --version "$2" -o r.key >/dev/null 2>&1 &&
		cmp -s r.key "$3" && same=$((same + 1))
	rm -f r.key
done
check "every table key is the same after rekey" [ "$same" -eq 3 ]
"$HSMWRAP" key destroy DB.MK.1 --yes >/dev/null 2>&1
expect "the old master key is no longer needed" 0 tde keyring get -f "$KR" --id 1 -o r.key
expect "the old keyring copy needs the old master key" 4 tde keyring list -f orig.keyring

# ---------------------------------------------------------------------
# kill -9 during rekey, at every step

expect "master key for the crash test" 0 tde init --label CR.MK.A
expect "second master key for the crash test" 0 tde init --label CR.MK.B
CK=$W/crash.keyring
for id in 1 2 3 4 5 6; do
	"$HSMWRAP" tde keyring add -f "$CK" --key CR.MK.A --id "$id" >/dev/null 2>&1 || bad "crash fixture add $id"
done
"$HSMWRAP" tde keyring add -f "$CK" --id 3 >/dev/null 2>&1 || bad "crash fixture add 3 v2"
mkdir base
for spec in "1 1" "2 1" "3 1" "3 2" "4 1" "5 1" "6 1"; do
	set -- $spec
	"$HSMWRAP" tde keyring get -f "$CK" --id "$1" --version "$2" -o "base/$1.$2" >/dev/null 2>&1 ||
		bad "crash fixture get $1/$2"
done
cp "$CK" crash.orig
# 7 re-wraps, then 5 steps of the save (temp file made, half written, all
# written, fsync'd, renamed): steps 1..12. 13 is past the end.
old=0
new=0
broken=0
for step in 1 2 3 4 5 6 7 8 9 10 11 12 13; do
	cp crash.orig "$CK"
	HSMWRAP_TEST_CRASH_AT=$step "$HSMWRAP" tde keyring rekey -f "$CK" --new-key CR.MK.B \
		>/dev/null 2>&1
	r=$?
	if [ "$step" -le 12 ] && [ "$r" -ne 137 ]; then
		bad "rekey with a crash at step $step: exit $r, want 137 (SIGKILL)"
	fi
	"$HSMWRAP" tde keyring list -f "$CK" >"$W/out" 2>&1
	if grep -q 'Master key: CR.MK.A' "$W/out"; then
		old=$((old + 1))
		cmp -s "$CK" crash.orig || { broken=$((broken + 1)); echo "  step $step: old master but changed file"; }
	elif grep -q 'Master key: CR.MK.B' "$W/out"; then
		new=$((new + 1))
	else
		broken=$((broken + 1))
		echo "  step $step: keyring unusable: $(head -n 1 "$W/out")"
		continue
	fi
	for f in base/*; do
		b=${f#base/}
		"$HSMWRAP" tde keyring get -f "$CK" --id "${b%.*}" --version "${b#*.}" -o got \
			>/dev/null 2>&1 && cmp -s got "$f" ||
			{ broken=$((broken + 1)); echo "  step $step: table key $b differs or is lost"; }
		rm -f got
	done
done
check "kill -9 at each of 12 rekey steps: the keyring is old or new, every table key intact ($old old, $new new)" \
	[ "$broken" -eq 0 ]
check "a kill before the rename leaves the old keyring, after it the new" \
	[ "$old" -eq 11 ] && [ "$new" -eq 2 ]
# The save is an anonymous O_TMPFILE until it is complete and synced: a
# kill while writing it leaves nothing visible. Only between linking it
# under a temporary name and the rename (step 11) is there a name, which
# the next save removes.
ntemps() { ls -A "$W" | grep -c '^\.hsmwrap-tmp\.' ; }
check "the crash loop leaves no temporary file of the keyring" [ "$(ntemps)" -eq 0 ]
check "... nor any of the old-style .NAME.tmp.* ones" \
	[ "$(ls -A "$W" | grep -c '^\.crash\.keyring\.tmp\.')" -eq 0 ]
for step in 8 9 10 11; do
	cp crash.orig "$CK"
	HSMWRAP_TEST_CRASH_AT=$step "$HSMWRAP" tde keyring rekey -f "$CK" --new-key CR.MK.B \
		>/dev/null 2>&1
	if [ "$step" -lt 11 ]; then
		check "kill -9 at save step $step (temporary being written): no temporary visible" \
			[ "$(ntemps)" -eq 0 ]
	else
		check "kill -9 between link and rename: one temporary left, mode 0600" \
			sh -c "[ $(ntemps) -eq 1 ] && ls -l '$W'/.hsmwrap-tmp.* | grep -q '^-rw-------'"
	fi
done
check "... the keyring is still the old one" cmp -s "$CK" crash.orig
expect "the next rekey succeeds" 0 tde keyring rekey -f "$CK" --new-key CR.MK.B
check "... and removes the dead writer's temporary file" [ "$(ntemps)" -eq 0 ]
# Without O_TMPFILE (some file systems): a named temporary from the start.
cp crash.orig "$CK"
HSMWRAP_TEST_NO_TMPFILE=1 HSMWRAP_TEST_CRASH_AT=9 "$HSMWRAP" tde keyring rekey -f "$CK" \
	--new-key CR.MK.B >/dev/null 2>&1
check "no O_TMPFILE, kill -9 mid-write: a named temporary is left" [ "$(ntemps)" -eq 1 ]
check "... the keyring is still the old one" cmp -s "$CK" crash.orig
HSMWRAP_TEST_NO_TMPFILE=1 "$HSMWRAP" tde keyring add -f "$CK" --id 7 >"$W/out" 2>&1
check "no O_TMPFILE: the next save succeeds" grep -q 'added to' "$W/out"
check "... and removes the dead writer's temporary file" [ "$(ntemps)" -eq 0 ]
# A temporary another live writer holds (flock) is not taken away.
cp crash.orig "$CK"
if command -v flock >/dev/null 2>&1; then
	(umask 077; exec 9>"$W/.hsmwrap-tmp.Live01"; flock -x 9; exec sleep 5) &
	holder=$!
	sleep 0.3
	"$HSMWRAP" tde keyring add -f "$CK" --id 8 >/dev/null 2>&1 || bad "save next to a live temporary"
	check "a temporary still locked by its writer is left alone" [ -e "$W/.hsmwrap-tmp.Live01" ]
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	rm -f "$W/.hsmwrap-tmp.Live01"
fi

# Killed from outside, at random moments. SoftHSM rewrites its token file
# in place at every login, so a kill landing there truncates it and the
# whole test token is gone (a SoftHSM limitation; a real HSM keeps its
# state itself): the token directory is restored then, and the keyring is
# checked all the same.
broken=0
softhsm_hit=0
tokdir=$(sed -n 's/^directories.tokendir = //p' "$SOFTHSM2_CONF")
for i in 1 2 3 4 5 6; do
	cp crash.orig "$CK"
	rm -rf tokens.saved && cp -a "$tokdir" tokens.saved
	"$HSMWRAP" tde keyring rekey -f "$CK" --new-key CR.MK.B >/dev/null 2>&1 &
	pid=$!
	sleep "0.0$(od -An -tu1 -N1 /dev/urandom | tr -d ' ' | cut -c1)$i"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	if find "$tokdir" -name token.object -size 0 | grep -q .; then
		softhsm_hit=$((softhsm_hit + 1))
		rm -rf "$tokdir" && cp -a tokens.saved "$tokdir"
	fi
	"$HSMWRAP" tde keyring get -f "$CK" --id 3 --version 2 -o got >/dev/null 2>&1 &&
		cmp -s got base/3.2 || broken=$((broken + 1))
	rm -f got
done
[ "$softhsm_hit" -eq 0 ] ||
	echo "note: $softhsm_hit kill(s) hit SoftHSM's own token file; token restored"
check "rekey killed at 6 random moments: table key 3/2 still intact" [ "$broken" -eq 0 ]

# ---------------------------------------------------------------------
# A keyring path that is a symbolic link: read through it, but never
# replaced nor written through (whoever controls the link would choose
# where the keyring lands); the link and its target stay as they were.

mkdir linkdir
expect "a keyring for the link tests" 0 tde keyring add -f linkdir/real.keyring --key CR.MK.B --id 1
cp linkdir/real.keyring link.orig
ln -s real.keyring linkdir/link.keyring
expect "keyring list through a symlink works (reading follows it)" 0 \
	tde keyring list -f linkdir/link.keyring
expect "keyring add through a symlink is refused" 2 tde keyring add -f linkdir/link.keyring --id 2
check "... saying it is a symbolic link" grep -q 'linkdir/link.keyring is a symbolic link' "$W/err"
check "... the link is still a link to the keyring" \
	[ -L linkdir/link.keyring ] && [ "$(readlink linkdir/link.keyring)" = real.keyring ]
check "... and the keyring it points to is untouched" cmp -s linkdir/real.keyring link.orig
expect "keyring rekey through a symlink is refused" 2 \
	tde keyring rekey -f linkdir/link.keyring --new-key CR.MK.A
check "... the keyring it points to is untouched" cmp -s linkdir/real.keyring link.orig
check "... and no temporary is left" [ "$(ls -A linkdir | grep -c '^\.hsmwrap-tmp\.')" -eq 0 ]
ln -s "$W/nowhere.keyring" linkdir/dangling.keyring
expect "a new keyring at a dangling symlink is refused" 2 \
	tde keyring add -f linkdir/dangling.keyring --key CR.MK.B --id 1
check "... nothing is created where the link points" [ ! -e "$W/nowhere.keyring" ]
expect "the keyring itself (no link) is still writable" 0 \
	tde keyring add -f linkdir/real.keyring --id 2

check "no PIN in any output" sh -c "! grep -qF '$PIN' '$ALL'"
if grep -qiF "$(hexof k1v1)" "$ALL"; then
	bad "a plaintext table key appears in hsmwrap's output"
else
	ok "plaintext table keys never appear in hsmwrap's output"
fi
echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
