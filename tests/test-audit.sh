#!/bin/sh
# test-audit.sh: the tamper-evident audit log, as an administrator and an
# auditor use it. Real commands append records; `audit verify` must accept
# the log as written and find every kind of tampering, naming the first bad
# record (line and seq) and exiting 5. Prints "ok: ..." / "FAIL: ..." lines
# and "N passed, N failed". Runs under tests/with-token.sh.

set -u
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE HSMWRAP_TOKEN \
	HSMWRAP_PIN_SOURCE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-audit.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)

umask 022
W=$HW_TEST_DIR/audit
mkdir "$W" || exit 99
cd "$W" || exit 99
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
ALL=$W/all-output
: >"$ALL"
unset HSMWRAP_AUDIT_LOG HSMWRAP_AUDIT_KEY HSMWRAP_AUDIT_DIGEST_EVERY

. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/p11.sh"
lines() { wc -l <"$1" | tr -d ' '; }
# Hash of line N of FILE without its newline, as the chain defines it.
line_hash() { sed -n "$2p" "$1" | tr -d '\n' | sha256sum | cut -c1-64; }

LOG=$W/audit.jsonl

# ---------------------------------------------------------------------
# Starting a log

expect "audit init creates the audit key and the log" 0 \
	audit init --key audit-key --pubkey-out "$W/audit.pub.pem" "$LOG"
check "the transcript names the log id and the key fingerprint" \
	sh -c "grep -q 'Log id:' '$W/out' && grep -q 'Key fingerprint:' '$W/out'"
check "the log starts with genesis, the init record and a signed digest" \
	sh -c "[ \$(wc -l <'$LOG') -eq 3 ] && sed -n 1p '$LOG' | grep -q '\"type\":\"genesis\"' &&
	       sed -n 3p '$LOG' | grep -q '\"type\":\"digest\",\"reason\":\"ceremony\"'"
check "the public key file is PEM" grep -q 'BEGIN PUBLIC KEY' "$W/audit.pub.pem"
expect "audit key attributes" 0 --json key show audit-key
if [ -n "$PYTHON" ]; then
	check "the audit key is a non-extractable, sensitive EC sign key" \
		[ "$(json_get '(d["key"]["extractable"], d["key"]["sensitive"], d["key"]["purpose"], d["key"]["type"])' <"$W/out")" = "(False, True, 'sign', 'ec-p256')" ]
fi
if [ -n "$PKCS11_TOOL" ] && [ -x "$PKCS11_TOOL" ]; then
	slot=$(p11_slot hsmwrap-test)
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "${slot:-none}" \
		--login --pin env:HW_P11_PIN --list-objects --type privkey >"$W/p11" 2>/dev/null
	check "pkcs11-tool: the audit private key is never extractable" \
		sh -c "grep -A12 'label: *audit-key' '$W/p11' | grep -q 'never extractable'"
fi
expect "a second audit init on the same log is refused" 1 \
	audit init --key audit-key2 "$LOG"
expect "... and creates no key" 4 key show audit-key2
expect "audit verify of a fresh log" 0 audit verify --strict "$LOG"

# ---------------------------------------------------------------------
# Records of real commands

export HSMWRAP_AUDIT_LOG="$LOG"
export HSMWRAP_AUDIT_DIGEST_EVERY=6
expect "key create (audited)" 0 key create --label app-kek --type aes256
expect "datakey generate (audited)" 0 datakey generate --key app-kek --context app=billing \
	--context env=prod --plaintext-out "$W/dk.pt" -o "$W/dk.wrapped"
expect "datakey decrypt with a wrong context fails (audited)" 5 datakey decrypt \
	--key app-kek --context app=other -i "$W/dk.wrapped" -o "$W/dk2.pt"
expect "key list (audited)" 0 key list
expect "key show of a missing key (audited)" 4 key show no-such-key
expect "key show (audited)" 0 key show app-kek
HSMWRAP_AUDIT_DIGEST_EVERY=x "$HSMWRAP" key list >/dev/null 2>&1
check "a bad digest interval is a usage error" [ "$?" -eq 2 ]
# Fail closed: each command records its attempt (synced before it acts),
# then its outcome; audit init records itself once.
check "one outcome record per command" \
	sh -c "grep '\"type\":\"event\"' '$LOG' | grep -vc '\"result\":\"attempt\"' | grep -qx 7"
check "one attempt record per audited command" \
	sh -c "grep -c '\"result\":\"attempt\"' '$LOG' | grep -qx 6"
check "each outcome names its attempt" \
	sh -c "grep '\"action\":\"key create\"' '$LOG' | tail -n 1 | grep -q '\"result\":\"ok\",\"attempt\":[0-9]'"
check "the record names action, key and context" \
	grep -q '"action":"datakey generate","key":{"label":"app-kek","id":null,"version":null},"context":{"app":"billing","env":"prod"},"result":"ok"' "$LOG"
check "a failure is recorded with its error name" \
	grep -q '"action":"datakey decrypt".*"result":"HW_ERR_INTEGRITY"' "$LOG"
check "who: OS user and token" \
	grep -q "\"who\":{\"user\":\"$(id -un)\",\"uid\":$(id -u)," "$LOG"
check "who: the token the command used, by label and serial" \
	grep -q '"token":"hsmwrap-test","serial":"[^"][^"]*","uri":"pkcs11:[^"]*"},"action":"key create"' "$LOG"
check "a periodic digest was signed" \
	grep -q '^{"seq":[0-9]*,"time":"[^"]*","type":"digest","reason":"periodic"' "$LOG"
check "times are UTC with milliseconds" \
	sh -c "sed -n 4p '$LOG' | grep -Eq '\"time\":\"20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\"'"
check "the log holds no PIN" sh -c "! grep -qF '$PIN' '$LOG'"
if od -An -tx1 "$W/dk.pt" | tr -d ' \n' >"$W/dk.hex" && grep -qiF -f "$W/dk.hex" "$LOG"; then
	bad "a plaintext data key appears in the audit log"
else
	ok "the audit log holds no plaintext key"
fi
expect "audit verify after real commands" 0 audit verify "$LOG"
check "records after the last digest are reported" grep -q 'not covered' "$W/err"
expect "audit verify --strict refuses uncovered records" 5 audit verify --strict "$LOG"
expect "audit digest" 0 audit digest "$LOG"
expect "audit verify --strict after audit digest" 0 audit verify --strict "$LOG"
expect "audit verify with the PEM public key (no HSM)" 0 \
	--module /nonexistent/module.so audit verify --pubkey "$W/audit.pub.pem" --strict "$LOG"
check "verify prints the head hash" grep -q "SHA-256 $(line_hash "$LOG" "$(lines "$LOG")")" "$W/out"

# Concurrent writers chain correctly.
n0=$(lines "$LOG")
for i in 1 2 3 4 5 6; do
	"$HSMWRAP" key show app-kek >/dev/null 2>&1 &
done
wait
# Outcomes of any result: this checks the chain under concurrent writers;
# SoftHSM itself can still make a reader miss the token while another
# process logs in (README, "Many processes on one token").
check "six concurrent commands appended six records" \
	[ "$(grep '"action":"key show","key":{"label":"app-kek"' "$LOG" | grep -vc '"result":"attempt"')" -eq 7 ]
check "... and six attempt records before them" \
	[ "$(grep '"action":"key show","key":{"label":"app-kek"' "$LOG" | grep -c '"result":"attempt"')" -eq 7 ]
expect "the chain is intact after concurrent appends" 0 audit verify "$LOG"
check "no record was lost (and digests were added)" [ "$(lines "$LOG")" -ge $((n0 + 6)) ]

# A ceremony ends with a signed digest.
expect "tde init (a ceremony) with the audit log" 0 tde init --label audit-mk
check "the ceremony's record is followed by a ceremony digest" \
	sh -c "tail -n 2 '$LOG' | head -n 1 | grep -q '\"action\":\"tde init\"' &&
	       tail -n 1 '$LOG' | grep -q '\"reason\":\"ceremony\"'"

# ---------------------------------------------------------------------
# No audit, no action

expect "a missing audit log stops the command" 1 --audit-log "$W/missing.jsonl" \
	key create --label never-made --type aes256
check "... saying why" grep -q 'un-audited' "$W/err"
expect "... and nothing was done" 4 --audit-log "$LOG" key show never-made
cp "$LOG" "$W/torn.jsonl"
printf '{"seq":99,"ti' >>"$W/torn.jsonl"
expect "a log with a torn last record stops the command" 5 --audit-log "$W/torn.jsonl" \
	key create --label never-made2 --type aes256
expect "... and nothing was done" 4 key show never-made2
mkdir "$W/ro" && cp "$LOG" "$W/ro/log" && chmod 0444 "$W/ro/log"
if [ "$(id -u)" -ne 0 ]; then
	expect "a read-only log stops the command" 1 --audit-log "$W/ro/log" key list
fi

unset HSMWRAP_AUDIT_LOG

# ---------------------------------------------------------------------
# Showing

expect "audit show --key" 0 audit show --key app-kek "$LOG"
nk=$(grep -c '"key":{"label":"app-kek"' "$LOG")
check "audit show --key lists only that key's records ($nk)" \
	sh -c "[ \$(wc -l <'$W/out') -eq $nk ] && ! grep -v 'key=app-kek' '$W/out' | grep -q ."
expect "audit show --action" 0 audit show --action "datakey decrypt" "$LOG"
check "audit show --action shows the failure and the context" \
	grep -q 'result=HW_ERR_INTEGRITY context: app=other' "$W/out"
expect "audit show --since in the future" 0 audit show --since 2999-01-01 "$LOG"
check "... shows nothing" [ ! -s "$W/out" ]
expect "audit show --until before the log" 0 audit show --until 2000 "$LOG"
check "... shows nothing" [ ! -s "$W/out" ]
# The first record's day, not today's: a run may cross midnight UTC.
first_day=$(head -n 1 "$LOG" | sed -n 's/.*"time":"\([0-9-]*\)T.*/\1/p')
expect "audit show --since the first record's day" 0 audit show --since "$first_day" "$LOG"
check "... shows every record" [ "$(lines "$W/out")" -eq "$(lines "$LOG")" ]
expect "audit show with a bad time" 2 audit show --since yesterday "$LOG"
expect "audit show --json" 0 --json audit show --action "key create" "$LOG"
if [ -n "$PYTHON" ]; then
	check "audit show --json is one document with the records" \
		[ "$(json_get 'd["records"][0]["key"], d["shown"]' <"$W/out")" = "('app-kek', 2)" ]
fi

# ---------------------------------------------------------------------
# Tampering, each kind on a fresh copy

expect "audit digest covers the last records" 0 audit digest "$LOG"

N=$(lines "$LOG")
# The records to tamper with: line 5 and 6 are events (seq 4 and 5).
sed -n 5p "$LOG" | grep -q '"seq":4,.*"type":"event"' || bad "fixture: line 5 is not event seq 4"
sed -n 6p "$LOG" | grep -q '"seq":5,.*"type":"event"' || bad "fixture: line 6 is not event seq 5"

# tampered DESC FILE WANT: verify exits 5 and names WANT ("line 5 (seq 4)").
tampered() {
	hw audit verify --pubkey "$W/audit.pub.pem" "$2"
	if [ "$rc" -eq 5 ] && grep -qF "first bad record: $3" "$W/err"; then
		ok "$1: detected at $3 (exit 5)"
	else
		bad "$1: exit $rc, want 5 naming '$3': $(head -n 1 "$W/err")"
	fi
}

sed '5s/"time":"[^"]*"/"time":"2000-01-01T00:00:00.000Z"/' "$LOG" >t-edit
tampered "an edited field" t-edit "line 5 (seq 4)"
sed '6s/"user":"[^"]*"/"user":"mallory"/' "$LOG" >t-edit2
tampered "an edited user" t-edit2 "line 6 (seq 5)"
sed '5d' "$LOG" >t-del
tampered "a deleted record" t-del "line 5 (seq 5)"
sed -n '1,4p' "$LOG" >t-swap && sed -n 6p "$LOG" >>t-swap && sed -n 5p "$LOG" >>t-swap &&
	sed -n "7,\$p" "$LOG" >>t-swap
tampered "two records swapped" t-swap "line 5 (seq 5)"
h5=$(line_hash "$LOG" 5)
forged='{"seq":5,"time":"2026-01-01T00:00:00.000Z","type":"event","who":{"user":"mallory"},"action":"key destroy","key":{"label":"app-kek","id":null,"version":null},"context":{},"result":"ok","prev":"'$h5'"}'
{ sed -n '1,5p' "$LOG"; echo "$forged"; sed -n "6,\$p" "$LOG"; } >t-ins
tampered "an inserted forged record" t-ins "line 6 (seq 5)"
# A digest record whose signature was altered.
d=$(grep -n '"type":"digest","reason":"periodic"' "$LOG" | head -n 1 | cut -d: -f1)
sed "${d}s/\"sig\":\"30/\"sig\":\"31/" "$LOG" >t-sig
tampered "a broken digest signature" t-sig "line $d (seq $((d - 1)))"
sed "${d}s/\"reason\":\"periodic\"/\"reason\":\"manual\"/" "$LOG" >t-dig
tampered "an edited digest record" t-dig "line $d (seq $((d - 1)))"
if [ -n "$PYTHON" ]; then
	# The attacker rebuilds the whole chain after an edit: only the
	# signatures, made with the key in the HSM, give it away.
	"$PYTHON" - "$LOG" t-rechain <<'EOF'
import hashlib, re, sys
lines = open(sys.argv[1], 'rb').read().split(b'\n')[:-1]
lines[4] = re.sub(rb'"time":"[^"]*"', b'"time":"2000-01-01T00:00:00.000Z"', lines[4], count=1)
for i in range(5, len(lines)):
    h = hashlib.sha256(lines[i - 1]).hexdigest().encode()
    lines[i] = re.sub(rb'"prev":"[0-9a-f]{64}"', b'"prev":"' + h + b'"', lines[i])
open(sys.argv[2], 'wb').write(b'\n'.join(lines) + b'\n')
EOF
	tampered "an edit with the chain rebuilt" t-rechain "line $d (seq $((d - 1)))"
fi
# Cutting the tail.
head -c -20 "$LOG" >t-cut
tampered "a log cut inside its last record" t-cut "line $N"
sed -n "1,$((d + 2))p" "$LOG" >t-tail
head -n $((d + 1)) t-tail >t-tail2
expect "records removed after the last digest: verify warns" 0 \
	audit verify --pubkey "$W/audit.pub.pem" t-tail2
check "... that the rest is not covered" grep -q '1 record(s) after the last signed digest are not covered' "$W/err"
expect "... and --strict fails" 5 audit verify --strict --pubkey "$W/audit.pub.pem" t-tail2
check "the head hash changes when the tail is cut" \
	sh -c "'$HSMWRAP' audit verify --pubkey '$W/audit.pub.pem' t-tail 2>/dev/null | grep Head >h1;
	       '$HSMWRAP' audit verify --pubkey '$W/audit.pub.pem' t-tail2 2>/dev/null | grep Head >h2;
	       ! cmp -s h1 h2"
sed '1s/"label":"audit-key"/"label":"audit-kez"/' "$LOG" >t-gen
tampered "an edited genesis" t-gen "line 1 (seq 0)"
{ echo 'not json'; cat "$LOG"; } >t-junk
tampered "junk before the genesis" t-junk "line 1"
: >t-empty
tampered "an empty log" t-empty "line 1"
expect "the original still verifies" 0 audit verify --strict --pubkey "$W/audit.pub.pem" "$LOG"

# Another key cannot vouch for the log.
"$HSMWRAP" key create --label other-ec --type ec-p256 >/dev/null 2>&1
expect "verify with another key's public key is refused" 5 audit verify --key other-ec "$LOG"
check "... naming the log's audit key" grep -q "audit-key" "$W/err"
expect "audit digest with another key is refused" 5 audit digest --key other-ec "$LOG"
expect "verify --json of a tampered log" 5 --json audit verify --pubkey "$W/audit.pub.pem" t-del
if [ -n "$PYTHON" ]; then
	check "verify --json names the bad line and seq" \
		[ "$(json_get 'd["ok"], d["bad_line"], d["bad_seq"]' <"$W/out")" = "(False, 5, 5)" ]
fi

# Logs written before the JSON library changed (tests/audit-fixture/make-log.sh,
# the hand-written writer) verify as they are, and a copy still takes records.
F=$TESTS_DIR/audit-fixture
expect "a log written by the earlier record writer verifies (no HSM)" 0 \
	--module /nonexistent/module.so audit verify --pubkey "$F/log-v1.pub.pem" "$F/log-v1.jsonl"
check "... all 14 records and 4 signed digests" \
	grep -q "14 records, 4 signed digests verified, chain intact" "$W/out"
expect "audit show reads every record of it" 0 \
	--module /nonexistent/module.so audit show --action "datakey generate" "$F/log-v1.jsonl"
check "... with its escaped and non-ASCII context" \
	sh -c "grep -q 'naïve' '$W/out' && grep -q 'billing' '$W/out'"
sed '7s/"app":"billing"/"app":"billinh"/' "$F/log-v1.jsonl" >t-old-edit
expect "an edit of it is found" 5 audit verify --pubkey "$F/log-v1.pub.pem" t-old-edit
check "... at line 7 (seq 6)" grep -q "line 7" "$W/err"

check "no PIN in any output" sh -c "! grep -qF '$PIN' '$ALL'"
echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
