#!/bin/sh
# test-backup.sh: M-of-N backup and restore as custodians run it, on two
# real SoftHSM tokens (tests/with-token.sh with HW_TEST_SECOND_TOKEN=1):
#  - `key create --backupable` and what pkcs11-tool sees of it;
#  - `backup create` (the SO marks the backup key trusted) and its refusals;
#  - `backup restore` onto the second token: keys, ids, KCVs, metadata
#    objects, and that restored keys work with data made on the first;
#  - every failure path (too few shares, wrong, corrupt, duplicated or
#    mixed shares, tampered or truncated file, existing label or metadata
#    of a label, a PKCS#11 fault at each call) creates nothing on the
#    second token;
#  - a rotated key: all its versions and its one metadata object.
# Prints "ok: ..." / "FAIL: ..." per check and "N passed, N failed".
set -u
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE HW_TEST_SO_PIN_FILE SOFTHSM_MODULE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-backup.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
if [ -z "${HW_TEST_TOKEN2:-}" ]; then
	echo "test-backup.sh: needs the second token (HW_TEST_SECOND_TOKEN=1)" >&2
	exit 77
fi
OPENSSL_BIN=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)

umask 022
W=$HW_TEST_DIR/backup
mkdir "$W" && cd "$W" || exit 99
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
PIN2=$(cat "$HW_TEST_USER_PIN_FILE2")
SO_PIN=$(cat "$HW_TEST_SO_PIN_FILE")
SO=file:$HW_TEST_SO_PIN_FILE
T2="--token pkcs11:token=$HW_TEST_TOKEN2 --pin-source file:$HW_TEST_USER_PIN_FILE2"
ALL=$W/all-output
: >"$ALL"

. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/p11.sh"

if [ -z "$PKCS11_TOOL" ]; then
	echo "test-backup.sh: pkcs11-tool is needed as the independent reader" >&2
	exit 77
fi
SLOT1=$(p11_slot hsmwrap-test)
SLOT2=$(p11_slot "$HW_TEST_TOKEN2")
p11_1() { HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "$SLOT1" --login --pin env:HW_P11_PIN "$@"; }
p11_2() { HW_P11_PIN=$PIN2 "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "$SLOT2" --login --pin env:HW_P11_PIN "$@"; }
# CLASS|LABEL|USAGE|ACCESS per object.
objects() {
	"$@" --list-objects 2>/dev/null | awk '
		function flush() { if (cls != "") print cls "|" label "|" usage "|" access }
		/^[^ \t]/ { flush(); cls = $1; label = ""; usage = ""; access = ""; next }
		/^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); label = $0 }
		/^[ \t]+Usage:/ { sub(/^[ \t]+Usage:[ \t]*/, ""); usage = $0 }
		/^[ \t]+Access:/ { sub(/^[ \t]+Access:[ \t]*/, ""); access = $0 }
		END { flush() }'
}
token2_empty() { [ -z "$(objects p11_2)" ]; }
# refused2 DESC CODE ARG...: a restore onto token 2 that must fail with
# CODE, say why, and leave token 2 empty.
refused2() {
	d=$1 code=$2
	shift 2
	hw $T2 "$@"
	why=
	[ "$rc" -eq "$code" ] || why="exit $rc, want $code"
	grep -q '^hsmwrap: ..*' "$W/err" || why="$why${why:+; }no message"
	token2_empty || why="$why${why:+; }token 2 is not empty: $(objects p11_2 | tr '\n' ' ')"
	if [ -z "$why" ]; then ok "$d (exit $code, message, nothing created)"; else bad "$d: $why: $(first_err)"; fi
}
# access_of P11FN CLASS LABEL
access_of() { objects "$1" | grep "^$2|$3|" | head -n 1 | cut -d'|' -f4; }
usage_of() { objects "$1" | grep "^$2|$3|" | head -n 1 | cut -d'|' -f3; }
not_extractable() { echo "$1" | grep -q sensitive && ! echo "$1" | sed 's/never extractable//' | grep -q extractable; }
is_backupable() { echo "$1" | grep -q sensitive && echo "$1" | sed 's/never extractable//' | grep -q extractable; }

# ---------------------------------------------------------------------
# Backup-able keys on token 1

expect "key create --backupable (envelope)" 0 key create --label bk-env --type aes256 --backupable
expect "key create --backupable (keywrap)" 0 key create --label bk-kw --type aes256 --purpose keywrap --backupable
expect "key create --backupable (ec-p256)" 0 key create --label bk-ec --type ec-p256 --backupable
expect "key create --backupable (rsa2048)" 0 key create --label bk-rsa --type rsa2048 --backupable
expect "key create without --backupable" 0 key create --label nb --type aes256
a=$(access_of p11_1 Secret bk-env)
check "pkcs11-tool: a --backupable key is sensitive and extractable ($a)" is_backupable "$a"
a=$(access_of p11_1 Secret nb)
check "pkcs11-tool: a key without it is never extractable ($a)" sh -c "echo '$a' | grep -q 'never extractable'"
expect "key show --backupable key" 0 key show bk-env
check "key show says it is extractable" grep -q 'Extractable *yes' "$W/out"

# Metadata objects of the application travel with their key; others do not.
# Every key `key create` makes has one (hsmwrap-key-meta); bk-env's gets a
# tag and a description so that its value is worth comparing.
expect "key tag bk-env" 0 key tag bk-env owner=backup-test
expect "key describe bk-env" 0 key describe bk-env --description "restored from a backup"
printf 'not ours' >foreign.bin
p11_1 --write-object foreign.bin --type data --label bk-env --application-label other-app --private >/dev/null 2>&1 ||
	bad "setup: pkcs11-tool could not write a foreign data object"
# meta_of P11FN LABEL OUT: the value of LABEL's lifecycle metadata object.
meta_of() { "$1" --read-object --type data --label "$2" --application-label hsmwrap-key-meta -o "$3" >/dev/null 2>&1; }
meta_of p11_1 bk-env meta.bin || bad "setup: pkcs11-tool cannot read bk-env's metadata object"
check "token 1: bk-env has its metadata object and the foreign one" \
	test "$(objects p11_1 | grep -c "^Data|'bk-env'|")" -eq 2

# Data made with the keys on token 1, to be opened on token 2 after restore.
expect "a data key under bk-env (token 1)" 0 datakey generate --key bk-env --context app=backup --plaintext-out dk.bin -o dk.wrapped
printf 'material of exactly 32 bytes!!!!' >m.bin
expect "key material wrapped under bk-kw (token 1)" 0 wrap --key bk-kw -i m.bin -o m.wrapped

"$HSMWRAP" key list >list1 2>&1

# ---------------------------------------------------------------------
# backup create: refusals (nothing written)

mkdir shares other
expect "backup create of a key that is not backup-able" 7 backup create --keys bk-env,nb \
	--custodians 3 --threshold 2 -o refused.hwb --share-dir other --so-pin-source "$SO"
check "... names the key and --backupable" grep -q "'nb' is not backup-able.*--backupable" "$W/err"
check "... writes nothing" sh -c "[ ! -e refused.hwb ] && [ -z \"\$(ls -A other)\" ]"
expect "threshold above custodians" 2 backup create --keys bk-env --custodians 2 --threshold 3 \
	-o refused.hwb --share-dir other --so-pin-source "$SO"
expect "threshold 1" 2 backup create --keys bk-env --custodians 3 --threshold 1 \
	-o refused.hwb --share-dir other --so-pin-source "$SO"
expect "a share directory whose parent is missing" 1 backup create --keys bk-env --custodians 3 \
	--threshold 2 -o refused.hwb --share-dir no-such-dir/shares --so-pin-source "$SO"
check "... says which parent is missing" grep -q 'cannot create directory no-such-dir/shares: its parent no-such-dir does not exist' "$W/err"
check "... and creates nothing" sh -c "[ ! -e refused.hwb ] && [ ! -e no-such-dir ]"
: >a-file
expect "a share directory that is a file" 2 backup create --keys bk-env --custodians 3 \
	--threshold 2 -o refused.hwb --share-dir a-file --so-pin-source "$SO"
check "... says it is not a directory" grep -q 'a-file exists and is not a directory' "$W/err"
expect "an unknown key" 4 backup create --keys bk-env,no-such-key --custodians 3 --threshold 2 \
	-o refused.hwb --share-dir other --so-pin-source "$SO"
expect "the same key twice" 2 backup create --keys bk-env,bk-env --custodians 3 --threshold 2 \
	-o refused.hwb --share-dir other --so-pin-source "$SO"
printf 'wrong-so-pin' >wrong-so.pin && chmod 600 wrong-so.pin
expect "a wrong SO PIN" 3 backup create --keys bk-env --custodians 3 --threshold 2 \
	-o refused.hwb --share-dir other --so-pin-source file:wrong-so.pin
check "... says the SO login failed" grep -q 'security officer' "$W/err"
expect "a wrong SO PIN with a new share directory" 3 backup create --keys bk-env --custodians 3 \
	--threshold 2 -o refused.hwb --share-dir new-shares --so-pin-source file:wrong-so.pin
check "... removes the directory it made" test ! -e new-shares
check "... writes nothing" sh -c "[ ! -e refused.hwb ] && [ -z \"\$(ls -A other)\" ]"
expect "... and token 1 still works for the user afterwards" 0 datakey decrypt --key bk-env \
	--context app=backup -i dk.wrapped -o dk.check
check "... (same data key)" cmp -s dk.bin dk.check
: >exists.hwb
expect "an existing backup file is not overwritten" 2 backup create --keys bk-env --custodians 3 \
	--threshold 2 -o exists.hwb --share-dir other --so-pin-source "$SO"
check "... and no shares are written" test -z "$(ls -A other)"

# ---------------------------------------------------------------------
# backup create

expect "backup create 3 of 5" 0 backup create --keys bk-env,bk-kw,bk-ec,bk-rsa \
	--custodians 5 --threshold 3 -o keys.hwb --share-dir shares --so-pin-source "$SO"
cp "$W/out" create.out
check "the transcript names the backup id" grep -q 'Backup ID:' create.out
for k in bk-env bk-kw bk-ec bk-rsa; do
	kcv=$(awk -v k="$k" '$1 == k { print $5 }' list1)
	check "the transcript lists $k" grep -q "Backed up: *$k " create.out
	check "backup show lists $k with its KCV $kcv" sh -c "'$HSMWRAP' backup show keys.hwb | grep -q '$k.*$kcv'"
done
check "the transcript shows bk-env carries 1 metadata object" grep -q 'bk-env (aes256, ID [0-9a-f]*, 1 metadata object)' create.out
check "five share files" test "$(ls shares | wc -l)" -eq 5
check "share files are mode 0600" test "$(stat -c %a shares/share-1.txt)" = 600
check "share files say their index and threshold" sh -c "grep -q '^index: 2$' shares/share-2.txt && grep -q '^threshold: 3$' shares/share-2.txt"
id=$(sed -n 's/^backup-id: //p' shares/share-1.txt)
check "the share's backup id is the transcript's" grep -q "Backup ID: *$id" create.out
expect "backup show --json" 0 --json backup show keys.hwb
if [ -n "$PYTHON" ]; then
	check "backup show --json: 4 keys, 3 of 5" "$PYTHON" -c '
import json,sys; d=json.load(open(sys.argv[1]))
assert d["threshold"] == 3 and d["custodians"] == 5 and len(d["keys"]) == 4' "$W/out"
fi
check "the backup key never stays on token 1" test "$(objects p11_1 | grep -c '^Secret')" -eq 3
expect "a second backup (for mixing shares)" 0 backup create --keys bk-env --custodians 3 \
	--threshold 3 -o other.hwb --share-dir other --so-pin-source "$SO"
expect "a third backup with the same threshold (3 of 5), into a new directory" 0 backup create \
	--keys bk-kw --custodians 5 --threshold 3 -o third.hwb --share-dir other2 --so-pin-source "$SO"
check "... which it created with mode 0700, five shares in it" \
	sh -c "[ \"\$(stat -c %a other2)\" = 700 ] && [ \"\$(ls other2 | wc -l)\" -eq 5 ]"

# ---------------------------------------------------------------------
# Restore refusals on token 2: nothing created

check "token 2 starts empty" token2_empty
S=shares
refused2 "restore with 2 shares of 3" 2 backup restore -i keys.hwb --share $S/share-1.txt --share $S/share-4.txt
check "... says how many are needed" grep -q '2 shares given, this backup needs 3' "$W/err"
refused2 "restore with a share given twice" 2 backup restore -i keys.hwb \
	--share $S/share-1.txt --share $S/share-1.txt --share $S/share-2.txt
# A transcription error: one digit of the share changed, check not updated.
sed 's/^\(share: \)\(.\)/\1X\2/; s/^share: X0/share: 1/; s/^share: X[^0]/share: 0/' $S/share-2.txt >typo.txt
sed -n 's/^share: //p' typo.txt | grep -q X && bad "setup: typo.txt"
refused2 "a share with a transcription error" 5 backup restore -i keys.hwb \
	--share $S/share-1.txt --share typo.txt --share $S/share-3.txt
check "... is caught by the share's check value" grep -q 'check value does not match' "$W/err"
sed 's/^threshold: 3/threshold: 4/' $S/share-2.txt >thr.txt
refused2 "a share with an edited threshold" 5 backup restore -i keys.hwb \
	--share $S/share-1.txt --share thr.txt --share $S/share-3.txt
printf 'hsmwrap-backup-share v1\nbackup-id: zz\n' >garbage.txt
refused2 "a malformed share file" 5 backup restore -i keys.hwb \
	--share $S/share-1.txt --share garbage.txt --share $S/share-3.txt
refused2 "a share of another backup (mixed backups)" 5 backup restore -i keys.hwb \
	--share $S/share-1.txt --share other/share-2.txt --share $S/share-3.txt
check "... names it" grep -q 'belongs to another backup' "$W/err"
refused2 "shares of another 3-of-5 backup for this file" 5 backup restore -i keys.hwb \
	--share other2/share-1.txt --share other2/share-2.txt --share other2/share-3.txt
if [ -n "$PYTHON" ]; then
	# A wrong share that passes its own check: the share value changed and
	# the check value recomputed (an altered share, not a typo).
	"$PYTHON" - "$S/share-2.txt" forged.txt <<'PY'
import hashlib, sys
lines = open(sys.argv[1]).read().splitlines()
f = dict(l.split(": ", 1) for l in lines[1:])
share = bytearray(bytes.fromhex(f["share"])); share[0] ^= 1
h = hashlib.sha256(b"hsmwrap-backup-share v1" + bytes.fromhex(f["backup-id"]) +
                   bytes([int(f["index"]), int(f["threshold"]), int(f["custodians"])]) +
                   bytes(share)).hexdigest()[:8]
f["share"] = share.hex(); f["check"] = h
out = [lines[0]] + ["%s: %s" % (k, f[k]) for k in ("backup-id", "index", "threshold", "custodians", "share", "check")]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
	refused2 "a wrong share with a valid check value" 5 backup restore -i keys.hwb \
		--share $S/share-1.txt --share forged.txt --share $S/share-3.txt
	check "... says the shares do not rebuild the key" grep -q 'do not rebuild' "$W/err"
	refused2 "a wrong share among more than the threshold" 5 backup restore -i keys.hwb \
		--share $S/share-1.txt --share forged.txt --share $S/share-3.txt --share $S/share-4.txt
fi
# tampered COPY OFFSET: a copy of keys.hwb with one byte inverted.
tampered() { cp keys.hwb "$1" && flip "$1" "$2"; }
size=$(wc -c <keys.hwb)
tampered t-mid.hwb $((size / 2))
refused2 "a backup file with a byte changed in a wrapped key" 5 backup restore -i t-mid.hwb \
	--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
check "... says the file was altered" grep -q 'altered' "$W/err"
tampered t-tag.hwb $((size - 1))
refused2 "a backup file with its tag changed" 5 backup restore -i t-tag.hwb \
	--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
tampered t-kc.hwb 70
refused2 "a backup file with its key check changed" 5 backup restore -i t-kc.hwb \
	--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
tampered t-thr.hwb 21
refused2 "a backup file with its threshold changed" 5 backup restore -i t-thr.hwb \
	--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
head -c $((size - 40)) keys.hwb >t-trunc.hwb
refused2 "a truncated backup file" 5 backup restore -i t-trunc.hwb \
	--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
cp keys.hwb t-long.hwb
printf 'x' >>t-long.hwb
refused2 "a backup file with a byte appended" 5 backup restore -i t-long.hwb \
	--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
"$HSMWRAP" $T2 key create --label bk-kw --type aes256 >/dev/null 2>&1
# The key and its metadata object: what token 2 must still hold afterwards.
objects p11_2 | sort >before2
check "token 2 holds bk-kw and its metadata object" sh -c \
	"grep -q '^Secret|bk-kw|' before2 && grep -q \"^Data|'bk-kw'|\" before2 && test \$(wc -l <before2) -eq 2"
hw $T2 backup restore -i keys.hwb --share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
if [ "$rc" -eq 7 ] && objects p11_2 | sort | cmp -s - before2; then
	ok "a label that exists on token 2 refuses the whole restore (exit 7, nothing created)"
else
	bad "existing label: exit $rc, token 2: $(objects p11_2 | tr '\n' ' '): $(first_err)"
fi
"$HSMWRAP" $T2 key destroy bk-kw --yes >/dev/null 2>&1
check "token 2 is empty again" token2_empty
# Metadata of bk-env left on token 2 without its key (a key destroyed by
# another tool): restoring bk-env would make that metadata its own.
printf 'left behind' >orphan.bin
p11_2 --write-object orphan.bin --type data --label bk-env --application-label hsmwrap-key-meta --private >/dev/null 2>&1 ||
	bad "setup: pkcs11-tool could not write an orphan metadata object"
objects p11_2 | sort >before2
hw $T2 backup restore -i keys.hwb --share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt
if [ "$rc" -eq 7 ] && [ -s before2 ] && objects p11_2 | sort | cmp -s - before2; then
	ok "metadata of a backed-up key on token 2 refuses the whole restore (exit 7, nothing created)"
else
	bad "orphan metadata: exit $rc, token 2: $(objects p11_2 | tr '\n' ' '): $(first_err)"
fi
p11_2 --delete-object --type data --label bk-env --application-label hsmwrap-key-meta >/dev/null 2>&1
check "token 2 is empty again (orphan removed)" token2_empty

empty_token2() {
	for l in bk-env bk-kw bk-ec bk-rsa; do "$HSMWRAP" $T2 key destroy "$l" --yes >/dev/null 2>&1; done
	for l in bk-env bk-kw bk-ec bk-rsa; do
		while p11_2 --delete-object --type data --label $l >/dev/null 2>&1; do :; done
	done
}

# A PKCS#11 fault at each call of the restore in turn: it either fails and
# leaves token 2 empty, or (a fault it recovers from) restores everything.
# Between runs the token store is put back from a copy (SoftHSM keeps it
# in files; every hsmwrap run loads it afresh).
if [ -n "${FAULTMOD:-}" ] && [ -f "$FAULTMOD" ]; then
	cp -a "$HW_TEST_DIR/tokens" "$W/tokens.snap"
	# What a whole restore leaves on token 2 (keys and metadata objects),
	# from a run without faults; the runs with faults must leave that or nothing.
	"$HSMWRAP" $T2 backup restore -i keys.hwb --share $S/share-1.txt --share $S/share-2.txt \
		--share $S/share-3.txt >/dev/null 2>&1 || bad "setup: a restore without faults failed"
	objects p11_2 | sort >full2
	check "a whole restore: 4 keys (6 key objects) and 4 metadata objects on token 2" \
		test "$(grep -vc '^Data|' full2)" -eq 6 -a "$(grep -c "^Data|'bk-[a-z]*'|" full2)" -eq 4
	rm -rf "$HW_TEST_DIR/tokens" && cp -a "$W/tokens.snap" "$HW_TEST_DIR/tokens"
	check "... and token 2 is empty again from the copy" token2_empty
	# Every call with a device error; the calls that create or destroy
	# objects also with a session the token closes underneath.
	for spec in '*:rv=CKR_DEVICE_ERROR' C_UnwrapKey:rv=CKR_SESSION_HANDLE_INVALID \
		C_CreateObject:rv=CKR_SESSION_HANDLE_INVALID C_Encrypt:rv=CKR_SESSION_HANDLE_INVALID \
		C_DestroyObject:rv=CKR_SESSION_HANDLE_INVALID C_UnwrapKey:rv=CKR_GENERAL_ERROR \
		C_CreateObject:rv=CKR_DEVICE_MEMORY; do
		k=1 runs=0 leftovers=0 complete=0
		func=${spec%%:*} rv=${spec#*:}
		while [ $k -le 250 ]; do
			rm -f fstats
			FAULTMOD_TARGET=$SOFTHSM_MODULE FAULTMOD_STATS=$W/fstats \
				FAULTMOD_SPEC="$func:nth=$k:$rv" \
				"$HSMWRAP" --module "$FAULTMOD" $T2 backup restore -i keys.hwb \
				--share $S/share-1.txt --share $S/share-2.txt --share $S/share-3.txt >/dev/null 2>&1
			st=$?
			n=$(sed -n 's/^injected //p' fstats 2>/dev/null)
			[ "${n:-0}" -gt 0 ] && runs=$((runs + 1))
			if [ $st -ne 0 ]; then
				token2_empty || { leftovers=$((leftovers + 1));
					echo "$spec nth=$k: exit $st left: $(objects p11_2 | tr '\n' ' ')" >>leftovers.log; }
			elif objects p11_2 | sort | cmp -s - full2; then
				[ "${n:-0}" -gt 0 ] && complete=$((complete + 1))
			else
				leftovers=$((leftovers + 1))
				echo "$spec nth=$k: exit 0 left: $(objects p11_2 | tr '\n' ' ')" >>leftovers.log
			fi
			rm -rf "$HW_TEST_DIR/tokens" && cp -a "$W/tokens.snap" "$HW_TEST_DIR/tokens"
			[ "${n:-0}" -eq 0 ] && break
			k=$((k + 1))
		done
		check "restore with $rv at each of its $runs $func calls: all or nothing ($leftovers partial, $complete recovered)" \
			test "$leftovers" -eq 0 -a "$runs" -gt 1 -a "$k" -le 250
	done
	check "token 2 is empty after the fault runs" token2_empty
else
	echo "skip: FAULTMOD not built; restore under faults not tested"
fi

# ---------------------------------------------------------------------
# Restore on token 2

expect "restore with shares 1, 3 and 5" 0 $T2 backup restore -i keys.hwb \
	--share $S/share-1.txt --share $S/share-3.txt --share $S/share-5.txt
check "the restore transcript names the backup" grep -q "Backup ID: *$id" "$W/out"
"$HSMWRAP" $T2 key list >list2 2>&1
for k in bk-env bk-kw bk-ec bk-rsa; do
	l1=$(awk -v k="$k" '$1 == k { print $1, $3, $4, $5 }' list1)
	l2=$(awk -v k="$k" '$1 == k { print $1, $3, $4, $5 }' list2)
	check "$k restored with the same purpose, id and KCV ($l2)" test -n "$l1" -a "$l1" = "$l2"
done
for k in bk-env bk-kw; do
	a=$(access_of p11_2 Secret $k)
	check "pkcs11-tool: restored $k is sensitive and not extractable ($a)" not_extractable "$a"
	check "pkcs11-tool: restored $k has the usage of the original" \
		test "$(usage_of p11_2 Secret $k)" = "$(usage_of p11_1 Secret $k)"
done
for k in bk-ec bk-rsa; do
	a=$(access_of p11_2 Private $k)
	check "pkcs11-tool: restored private key $k is sensitive and not extractable ($a)" not_extractable "$a"
	objects p11_2 | grep -q "^Public|$k|" && ok "pkcs11-tool: public half of $k restored" ||
		bad "pkcs11-tool: public half of $k missing"
done
data=$(objects p11_2 | grep -c "^Data|'bk-env'|")
check "the metadata object was restored, the foreign one was not ($data data object)" test "$data" -eq 1
rm -f meta2.bin
meta_of p11_2 bk-env meta2.bin
check "... it is bk-env's lifecycle metadata, with the same value" cmp -s meta.bin meta2.bin
for k in bk-kw bk-ec bk-rsa; do
	data=$(objects p11_2 | grep -c "^Data|'$k'|")
	check "$k has exactly one metadata object after the restore ($data)" test "$data" -eq 1
done
expect "key show of the restored bk-env" 0 $T2 key show bk-env
check "... shows the tag and description of token 1" sh -c \
	"grep -q 'owner=backup-test' '$W/out' && grep -q 'restored from a backup' '$W/out'"
expect "the restored envelope key opens a data key made on token 1" 0 $T2 datakey decrypt \
	--key bk-env --context app=backup -i dk.wrapped -o dk2.bin
check "... to the same data key" cmp -s dk.bin dk2.bin
expect "the restored keywrap key unwraps what token 1 wrapped" 0 $T2 unwrap --key bk-kw -i m.wrapped -o m2.bin
check "... to the same material" cmp -s m.bin m2.bin
mkdir empty
expect "backup create of a restored (not backup-able) key is refused" 7 $T2 backup create \
	--keys bk-env --custodians 2 --threshold 2 -o again.hwb --share-dir empty \
	--so-pin-source "file:$HW_TEST_SO_PIN_FILE2"
hw $T2 backup restore -i keys.hwb --share $S/share-1.txt --share $S/share-3.txt --share $S/share-5.txt
check "restoring again is refused: the labels exist (exit 7)" test "$rc" -eq 7
check "... and nothing was added" test "$("$HSMWRAP" $T2 key list 2>&1 | wc -l)" -eq "$(wc -l <list2)"

# --backupable: restored copies can be backed up again (by token 2's SO).
empty_token2
check "token 2 emptied" token2_empty
expect "restore --backupable with shares 2, 4 and 5" 0 $T2 backup restore --backupable -i keys.hwb \
	--share $S/share-2.txt --share $S/share-4.txt --share $S/share-5.txt
a=$(access_of p11_2 Secret bk-env)
check "pkcs11-tool: a key restored with --backupable is extractable ($a)" is_backupable "$a"
mkdir shares2
expect "which token 2's SO can back up again (2 of 2)" 0 $T2 backup create --keys bk-env \
	--custodians 2 --threshold 2 -o again.hwb --share-dir shares2 \
	--so-pin-source "file:$HW_TEST_SO_PIN_FILE2"
kcv=$(awk '$1 == "bk-env" { print $5 }' list1)
check "... with the original KCV $kcv" sh -c "'$HSMWRAP' backup show again.hwb | grep -q 'bk-env.*$kcv'"

# ---------------------------------------------------------------------
# A rotated key: every version and the one metadata object travel, so data
# made with an old version opens on token 2, and the plain label finds the
# current version there too.

# versions_of ARGS...: "current: labels" of bk-rot's `key show --json`.
versions_of() {
	"$HSMWRAP" "$@" --json key show bk-rot 2>/dev/null | "$PYTHON" -c '
import json,sys; d=json.load(sys.stdin)
print(d["key"]["label"], d["lifecycle"]["current_version"], [v["label"] for v in d["lifecycle"]["versions"]], d["lifecycle"].get("tags"))'
}
expect "key create --backupable bk-rot" 0 key create --label bk-rot --type aes256 --backupable
expect "key tag bk-rot" 0 key tag bk-rot team=rot
expect "a data key under bk-rot version 1" 0 datakey generate --key bk-rot --context app=rot \
	--plaintext-out r1.bin -o r1.wrapped
expect "key rotate bk-rot" 0 key rotate bk-rot
expect "a data key under bk-rot version 2" 0 datakey generate --key bk-rot --context app=rot \
	--plaintext-out r2.bin -o r2.wrapped
expect "key rotate bk-rot again" 0 key rotate bk-rot
a=$(access_of p11_1 Secret 'bk-rot#3')
check "pkcs11-tool: version 3 is backup-able like version 1 ($a)" is_backupable "$a"
mkdir shares-rot
expect "backup create bk-rot,bk-rot#2 (a version of a key listed)" 2 backup create \
	--keys bk-rot,'bk-rot#2' --custodians 2 --threshold 2 -o rot.hwb --share-dir shares-rot \
	--so-pin-source "$SO"
check "... writes nothing" sh -c "[ ! -e rot.hwb ] && [ -z \"\$(ls -A shares-rot)\" ]"
expect "backup create of the rotated key by its plain label" 0 backup create --keys bk-rot \
	--custodians 2 --threshold 2 -o rot.hwb --share-dir shares-rot --so-pin-source "$SO"
cp "$W/out" rot.out
check "the transcript lists version 1 with the metadata object" \
	grep -q 'Backed up: *bk-rot (aes256, ID [0-9a-f]*, 1 metadata object)' rot.out
check "... and versions 2 and 3 without one" sh -c "grep -q 'Backed up: *bk-rot#2 (aes256, ID [0-9a-f]*, 0 metadata objects)' rot.out && grep -q 'Backed up: *bk-rot#3 (aes256, ID [0-9a-f]*, 0 metadata objects)' rot.out"
check "backup show lists 3 key objects" test "$("$HSMWRAP" backup show rot.hwb | grep -c '^Key: *bk-rot')" -eq 3
expect "restore of the rotated key on token 2" 0 $T2 backup restore -i rot.hwb \
	--share shares-rot/share-1.txt --share shares-rot/share-2.txt
for l in bk-rot 'bk-rot#2' 'bk-rot#3'; do
	check "token 2: $l restored, sensitive and not extractable" not_extractable "$(access_of p11_2 Secret "$l")"
done
data=$(objects p11_2 | grep -c "^Data|'bk-rot")
check "token 2: exactly one metadata object for bk-rot ($data)" test "$data" -eq 1
rm -f rm1.bin rm2.bin
meta_of p11_1 bk-rot rm1.bin
meta_of p11_2 bk-rot rm2.bin
check "... with token 1's value" sh -c "test -s rm1.bin && cmp -s rm1.bin rm2.bin"
if [ -n "$PYTHON" ]; then
	v1=$(versions_of)
	v2=$(versions_of $T2)
	check "token 2 knows the versions, the current one and the tags ($v2)" \
		test -n "$v1" -a "$v1" = "$v2" -a "${v2%% *}" = "bk-rot#3"
fi
expect "token 2 opens the data key of version 1" 0 $T2 datakey decrypt --key bk-rot \
	--context app=rot -i r1.wrapped -o r1.back
check "... to the same data key" cmp -s r1.bin r1.back
expect "token 2 opens the data key of version 2" 0 $T2 datakey decrypt --key bk-rot \
	--context app=rot -i r2.wrapped -o r2.back
check "... to the same data key" cmp -s r2.bin r2.back
expect "token 2 makes a data key with the current version" 0 $T2 datakey generate --key bk-rot \
	--context app=rot --plaintext-out r3.bin -o r3.wrapped
expect "... which token 1 opens" 0 datakey decrypt --key 'bk-rot#3' --context app=rot \
	-i r3.wrapped -o r3.back
check "... to the same data key" cmp -s r3.bin r3.back
hw $T2 backup restore -i rot.hwb --share shares-rot/share-1.txt --share shares-rot/share-2.txt
check "restoring the rotated key again is refused (exit 7)" test "$rc" -eq 7

# A key without metadata (made before hsmwrap kept it): none is invented
# on restore, and metadata of its label on the target refuses the restore.
expect "key create --backupable bk-old" 0 key create --label bk-old --type aes256 --backupable
p11_1 --delete-object --type data --label bk-old --application-label hsmwrap-key-meta >/dev/null 2>&1
check "setup: bk-old has no metadata object" test "$(objects p11_1 | grep -c "^Data|'bk-old'|")" -eq 0
mkdir shares-old
expect "backup create of a key without metadata" 0 backup create --keys bk-old \
	--custodians 2 --threshold 2 -o old.hwb --share-dir shares-old --so-pin-source "$SO"
check "... the transcript says 0 metadata objects" grep -q 'Backed up: *bk-old (.*0 metadata objects)' "$W/out"
p11_2 --write-object orphan.bin --type data --label bk-old --application-label hsmwrap-key-meta --private >/dev/null 2>&1 ||
	bad "setup: pkcs11-tool could not write an orphan metadata object"
objects p11_2 | sort >before2
hw $T2 backup restore -i old.hwb --share shares-old/share-1.txt --share shares-old/share-2.txt
if [ "$rc" -eq 7 ] && objects p11_2 | sort | cmp -s - before2; then
	ok "metadata of bk-old's label on token 2 refuses the restore (exit 7, nothing created)"
else
	bad "orphan metadata of bk-old: exit $rc, token 2: $(objects p11_2 | tr '\n' ' '): $(first_err)"
fi
p11_2 --delete-object --type data --label bk-old --application-label hsmwrap-key-meta >/dev/null 2>&1
expect "restore of the key without metadata" 0 $T2 backup restore -i old.hwb \
	--share shares-old/share-1.txt --share shares-old/share-2.txt
check "... restores the key" test -n "$(access_of p11_2 Secret bk-old)"
check "... and no metadata object" test "$(objects p11_2 | grep -c "^Data|'bk-old'|")" -eq 0

# ---------------------------------------------------------------------
# Secrets never printed.

for s in "$PIN" "$PIN2" "$SO_PIN" $(sed -n 's/^share: //p' $S/share-*.txt); do
	if grep -qiF -- "$s" "$ALL"; then
		bad "a secret (${#s} characters) appears in hsmwrap's output"
	else
		ok "a secret (${#s} characters) never appears in hsmwrap's output"
	fi
done

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
