#!/bin/sh
# test-keymeta.sh: key lifecycle (issue 5) as an administrator runs it,
# against a real SoftHSM token (tests/with-token.sh): metadata objects,
# versions and rotation (old data still decrypts, new data names the new
# version), enable/disable, the deletion window with its minimum, cancel,
# purge and destruction on next use (HSMWRAP_TEST_NOW moves the clock),
# tags, descriptions and list filters. pkcs11-tool checks independently
# what is on the token. One line per check, then "N passed, N failed".
#
# Exit codes asserted: 0 ok, 2 usage, 4 not found, 5 integrity/format,
# 7 refused by policy (disabled, pending deletion, existing label).

set -u

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE HSMWRAP_TOKEN \
	HSMWRAP_PIN_SOURCE KEYMETA_CHECK; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-keymeta.sh: $v is not set; run me under tests/with-token.sh (make check)" >&2
		exit 99
	fi
done
[ -x "$HSMWRAP" ] && [ -x "$KEYMETA_CHECK" ] || { echo "test-keymeta.sh: not built" >&2; exit 99; }
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)

W=$HW_TEST_DIR/keymeta
mkdir "$W" || exit 99
. "$(dirname "$0")/p11.sh"
. "$(dirname "$0")/lib.sh"
cd "$W" || exit 99
PIN=$(cat "$HW_TEST_USER_PIN_FILE")

# jcheck DESC EXPR WANT: EXPR over the last --json output prints WANT.
jcheck() {
	[ -n "$PYTHON" ] || return 0
	got=$(json_get "$2" <"$W/out" 2>&1)
	if [ "$got" = "$3" ]; then ok "$1"; else bad "$1: got '$got', want '$3'"; fi
}
# km DESC WANT ARGS...: keymeta-check prints WANT on its first line.
km() {
	d=$1
	want=$2
	shift 2
	got=$("$KEYMETA_CHECK" "$@" 2>"$W/km.err" | head -n 1)
	if [ "$got" = "$want" ]; then ok "$d"; else bad "$d: got '$got', want '$want': $(cat "$W/km.err")"; fi
}

P11_SLOT=
if [ -n "$PKCS11_TOOL" ]; then
	P11_SLOT=$(p11_slot hsmwrap-test)
fi
p11() {
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" \
		--slot "${P11_SLOT:-none}" --login --pin env:HW_P11_PIN "$@"
}
# One line per object: CLASS|LABEL|USAGE|ACCESS|APPLICATION.
p11_objects() {
	p11 --list-objects 2>/dev/null | awk '
		function flush() { if (cls != "") print cls "|" label "|" usage "|" access "|" app }
		/^[^ \t]/ { flush(); cls = $1; label = ""; usage = ""; access = ""; app = ""; next }
		/^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); gsub(/\047/, ""); label = $0 }
		/^[ \t]+Usage:/ { sub(/^[ \t]+Usage:[ \t]*/, ""); usage = $0 }
		/^[ \t]+Access:/ { sub(/^[ \t]+Access:[ \t]*/, ""); access = $0 }
		/^[ \t]+application:/ { sub(/^[ \t]+application:[ \t]*/, ""); gsub(/\047/, ""); app = $0 }
		END { flush() }' >"$W/objects"
}
have_p11() {
	[ -n "$PKCS11_TOOL" ] && [ -n "$P11_SLOT" ]
}
# count_objects CLASS LABEL: how many such objects pkcs11-tool sees.
count_objects() {
	grep -c "^$1|$2|" "$W/objects"
}
sens_nonextr() {
	a=$(grep "^$1|$2|" "$W/objects" | head -n 1 | cut -d'|' -f4)
	case $a in
	*sensitive*"never extractable"*) return 0 ;;
	*) return 1 ;;
	esac
}
NOW=$(date +%s)
DAY=86400

# ---------------------------------------------------------------------
# Creation writes the metadata object

expect "key create env key" 0 key create --label app --type aes256
expect "key create keywrap key" 0 key create --label kek --type aes256 --purpose keywrap
expect "key create sign key" 0 key create --label signer --type ec-p256
if have_p11; then
	p11_objects
	check "pkcs11-tool: metadata object of 'app' present" \
		grep -q "^Data|app|||hsmwrap-key-meta$" "$W/objects"
	check "pkcs11-tool: metadata object of 'signer' present" \
		grep -q "^Data|signer|||hsmwrap-key-meta$" "$W/objects"
else
	bad "pkcs11-tool not available: cannot check the token independently"
fi
expect "key show --json app" 0 --json key show app
cp "$W/out" app1.json
jcheck "new key: version 1, enabled, metadata stored" \
	'(d["version"], d["lifecycle"]["state"], d["lifecycle"]["stored"], d["lifecycle"]["current_version"], len(d["lifecycle"]["versions"]), d["lifecycle"]["purpose"])' \
	"(1, 'enabled', True, 1, 1, 'envelope')"
expect "key create refuses a version-like label" 2 key create --label 'app#2' --type aes256
expect "key create takes '#' not followed by a number" 0 key create --label 'team#a' --type aes256
expect "key create takes '#1' (version 1 is the plain label)" 0 key create --label 'x#1' --type aes256

# ---------------------------------------------------------------------
# Rotation: old data still decrypts, new data names the new version

head -c 1000 /dev/urandom >msg
expect "data key with version 1" 0 datakey generate --key app --plaintext-out dk1 -o dk1.w
expect "wrap with keywrap version 1" 0 wrap --key kek -i dk1 -o kek1.w
km "ESDK message with version 1" HW_OK env-encrypt app msg msg1.enc
km "ESDK message 1 names 'app'" app env-names msg1.enc
ID1=
[ -n "$PYTHON" ] && ID1=$(json_get 'd["key"]["id"]' <app1.json)
km "blob 1 names 'app' and version 1's id" "app $ID1" blob-label dk1.w

expect "key rotate app" 0 key rotate app
check "rotate prints a transcript" grep -q 'ceremony transcript: key rotation' "$W/out"
check "rotate transcript has the new version's URI" grep -q 'URI: .*object=app%232' "$W/out"
check "rotate transcript has the KCV" grep -Eq 'KCV.* [0-9a-f]{6}$' "$W/out"
expect "key rotate app --json" 0 --json key rotate app
jcheck "rotate --json transcript names version 3" \
	'[i["value"] for i in d["transcript"]["items"] if i["field"]=="Version label:"]' "['app#3']"
expect "key show --json app after two rotations" 0 --json key show app
jcheck "plain label finds the current version" \
	'(d["key"]["label"], d["version"], d["lifecycle"]["current_version"], [v["label"] for v in d["lifecycle"]["versions"]])' \
	"('app#3', 3, 3, ['app', 'app#2', 'app#3'])"
jcheck "the new version is sensitive and not extractable" \
	'(d["key"]["sensitive"], d["key"]["extractable"], d["key"]["never_extractable"], d["key"]["purpose"])' \
	"(True, False, True, 'envelope')"
expect "key show app#2 names that version" 0 --json key show 'app#2'
jcheck "version label finds exactly that version" '(d["key"]["label"], d["version"])' "('app#2', 2)"

expect "data key with the current version" 0 datakey generate --key app --plaintext-out dk3 -o dk3.w
blob_label() { "$KEYMETA_CHECK" blob-label "$1" | cut -d' ' -f1; }
check "new blob names version 3" test "$(blob_label dk3.w)" = "app#3"
expect "old data key decrypts with --key app" 0 datakey decrypt --key app -i dk1.w -o dk1.back
check "old data key round trip" cmp -s dk1 dk1.back
expect "new data key decrypts" 0 datakey decrypt --key app -i dk3.w -o dk3.back
check "new data key round trip" cmp -s dk3 dk3.back
expect "old data key decrypts with --key app#2 (same logical key)" 0 \
	datakey decrypt --key 'app#2' -i dk1.w -o dk1.back2
expect "another key's blob is still refused" 5 datakey decrypt --key kek -i dk1.w -o x
km "ESDK message with the current version" HW_OK env-encrypt app msg msg3.enc
km "ESDK message 3 names 'app#3'" "app#3" env-names msg3.enc
km "old ESDK message decrypts, key found by name (no allowed keys)" HW_OK env-decrypt - msg1.enc msg1.out
check "old ESDK message round trip" cmp -s msg msg1.out
km "old ESDK message decrypts with allowed key 'app' (current version)" HW_OK \
	env-decrypt app msg1.enc msg1.out2
km "new ESDK message decrypts with allowed key 'app'" HW_OK env-decrypt app msg3.enc msg3.out
check "new ESDK message round trip" cmp -s msg msg3.out
km "ESDK message is refused for another allowed key" HW_ERR_WRONG_KEY env-decrypt kek msg1.enc x

expect "key rotate kek" 0 key rotate kek
expect "wrap with keywrap version 2" 0 wrap --key kek -i dk1 -o kek2.w
check "wrapped blob names kek#2" test "$(blob_label kek2.w)" = "kek#2"
expect "unwrap of a version-1 blob with --key kek" 0 unwrap --key kek -i kek1.w -o kek1.back
check "version-1 unwrap round trip" cmp -s dk1 kek1.back
expect "key rotate signer" 0 key rotate signer

if have_p11; then
	p11_objects
	check "pkcs11-tool: app#2 sensitive, never extractable" sens_nonextr Secret 'app#2'
	check "pkcs11-tool: app#3 sensitive, never extractable" sens_nonextr Secret 'app#3'
	check "pkcs11-tool: kek#2 sensitive, never extractable" sens_nonextr Secret 'kek#2'
	check "pkcs11-tool: signer#2 private key sensitive, never extractable" sens_nonextr Private 'signer#2'
	check "pkcs11-tool: app#3 usage encrypt, decrypt" \
		grep -q "^Secret|app#3|encrypt, decrypt|" "$W/objects"
	check "pkcs11-tool: kek#2 usage wrap, unwrap" grep -q "^Secret|kek#2|wrap, unwrap|" "$W/objects"
	check "pkcs11-tool: one metadata object for app after updates" \
		test "$(count_objects Data app)" -eq 1
fi

expect "key list" 0 key list
check "key list shows app once, 3 versions" grep -Eq '^app +aes256 +envelope +enabled +3 ' "$W/out"
check "key list does not list versions as keys" sh -c "! grep -q '^app#' '$W/out'"
expect "key list --json" 0 --json key list
jcheck "key list --json: app has 3 versions, current 3" \
	'[(k["label"], k["object_label"], k["versions"], k["current_version"]) for k in d["keys"] if k["label"]=="app"]' \
	"[('app', 'app#3', 3, 3)]"

# ---------------------------------------------------------------------
# Keys made before metadata existed: version 1, enabled

expect "key create legacy" 0 key create --label legacy --type aes256
if have_p11; then
	p11 --delete-object --type data --label legacy --application-label hsmwrap-key-meta \
		>/dev/null 2>&1
	p11_objects
	check "legacy: metadata object removed" test "$(count_objects Data legacy)" -eq 0
	expect "legacy key show" 0 --json key show legacy
	jcheck "legacy key: version 1, enabled, defaults" \
		'(d["version"], d["lifecycle"]["state"], d["lifecycle"]["stored"])' "(1, 'enabled', False)"
	expect "legacy key still works" 0 datakey generate --key legacy --plaintext-out l1 -o l1.w
	expect "legacy key rotates" 0 key rotate legacy
	expect "legacy key's old data decrypts" 0 datakey decrypt --key legacy -i l1.w -o l1.back
	check "legacy round trip" cmp -s l1 l1.back
	p11_objects
	check "legacy: metadata object written by rotate" test "$(count_objects Data legacy)" -eq 1
	# A damaged metadata object fails closed: it could have said "disabled".
	printf 'HWM\001garbage' >bad.meta
	expect "key create dmg" 0 key create --label dmg --type aes256
	p11 --delete-object --type data --label dmg --application-label hsmwrap-key-meta >/dev/null 2>&1
	p11 --write-object bad.meta --type data --label dmg --application-label hsmwrap-key-meta \
		--private >/dev/null 2>&1
	expect "damaged metadata is refused" 5 key show dmg
	check "damaged metadata: clear message" grep -q 'metadata of key .dmg. is damaged' "$W/err"
	p11 --delete-object --type data --label dmg --application-label hsmwrap-key-meta >/dev/null 2>&1
	expect "without it the key is usable again" 0 key show dmg
fi

# ---------------------------------------------------------------------
# Disable / enable: enforced by the library at every use

expect "key disable app" 0 key disable app
expect "data key with a disabled key" 7 datakey generate --key app --plaintext-out x -o x.w
check "disabled: clear message" grep -q 'key disabled' "$W/err"
check "disabled: no output" test ! -e x.w
expect "decrypt with a disabled key (old version too)" 7 datakey decrypt --key app -i dk1.w -o x
expect "--json error names HW_ERR_KEY_DISABLED" 7 --json datakey generate --key app \
	--plaintext-out x -o x.w
jcheck "--json error" '(d["error"], d["exit"])' "('HW_ERR_KEY_DISABLED', 7)"
km "ESDK decrypt with a disabled key (library)" HW_ERR_KEY_DISABLED env-decrypt - msg1.enc x
expect "rotate a disabled key" 7 key rotate app
expect "key list --state disabled" 0 key list --state disabled
check "--state disabled lists app only" sh -c "grep -q '^app ' '$W/out' && ! grep -q '^kek ' '$W/out'"
expect "key enable app" 0 key enable app
expect "data key after enable" 0 datakey decrypt --key app -i dk1.w -o dk1.back3
check "works after enable" cmp -s dk1 dk1.back3
km "a running process sees a disable within a second" HW_ERR_KEY_DISABLED \
	hold legacy "$HSMWRAP key disable legacy >/dev/null"
expect "key enable legacy" 0 key enable legacy

# ---------------------------------------------------------------------
# Deletion window

expect "schedule-deletion --days 6 refused" 2 key schedule-deletion app --days 6
expect "schedule-deletion --days 31 refused" 2 key schedule-deletion app --days 31
expect "schedule-deletion --days x refused" 2 key schedule-deletion app --days 7x
expect "key still enabled after refusals" 0 --json key show app
jcheck "still enabled" 'd["lifecycle"]["state"]' enabled
before=$(date +%s)
expect "schedule-deletion default 30 days" 0 --json key schedule-deletion app
after=$(date +%s)
jcheck "pending deletion" 'd["lifecycle"]["state"]' pending-deletion
if [ -n "$PYTHON" ]; then
	# Compared as instants, not calendar days: a run across midnight UTC
	# would otherwise expect the wrong day.
	dd=$(json_get 'd["lifecycle"]["deletion_date"]' <"$W/out")
	t=$(date -u -d "$dd" +%s 2>/dev/null || echo 0)
	if [ "$t" -ge $((before + 30 * DAY - 1)) ] && [ "$t" -le $((after + 30 * DAY + 1)) ]; then
		ok "deletion date is 30 days ahead ($dd)"
	else
		bad "deletion date $dd is not 30 days after the command ($(date -u -d "@$before"))"
	fi
fi
expect "use while pending deletion" 7 datakey decrypt --key app -i dk1.w -o x
check "pending deletion: clear message" grep -q 'pending deletion' "$W/err"
expect "enable while pending deletion refused" 7 key enable app
expect "purge before the window refused" 7 key purge app
expect "purge of all before the window destroys nothing" 0 key purge
check "purge says nothing was due" grep -q 'No key is past' "$W/out"
expect "cancel-deletion" 0 key cancel-deletion app
expect "after cancel the key is disabled" 0 --json key show app
jcheck "disabled after cancel" 'd["lifecycle"]["state"]' disabled
expect "cancel again refused" 2 key cancel-deletion app
expect "enable after cancel" 0 key enable app
expect "key works after cancel and enable" 0 datakey decrypt --key app -i dk3.w -o x.back
expect "purge of a key not pending deletion refused" 2 key purge app

expect "schedule-deletion app --days 7" 0 key schedule-deletion app --days 7
expect "schedule-deletion kek --days 10" 0 key schedule-deletion kek --days 10
# expect_at DAYS DESC CODE ARG...: expect, with the clock DAYS days ahead.
expect_at() {
	HSMWRAP_TEST_NOW=$((NOW + $1 * DAY))
	export HSMWRAP_TEST_NOW
	shift
	expect "$@"
	unset HSMWRAP_TEST_NOW
}
expect_at 6 "6 days later: purge app refused" 7 key purge app
expect_at 8 "8 days later: key purge" 0 key purge
check "purge names app" grep -q "Destroyed key 'app'" "$W/out"
check "purge leaves kek (window not over)" sh -c "! grep -q \"'kek'\" '$W/out'"
expect "purged key is not found" 4 key show app
expect "purged key's version is not found" 4 key show 'app#2'
if have_p11; then
	p11_objects
	check "pkcs11-tool: no object of app left (versions, metadata)" \
		sh -c "! grep -q '|app|\\||app#' '$W/objects'"
	check "pkcs11-tool: kek's objects still there" test "$(count_objects Secret 'kek#2')" -eq 1
fi
expect "the label is free again" 0 key create --label app --type aes256
expect "new key app is version 1" 0 --json key show app
jcheck "new app: one version" 'len(d["lifecycle"]["versions"])' 1

# Destroyed on next use once the window is over.
expect_at 9 "9 days later: kek still pending" 7 unwrap --key kek -i kek1.w -o x
expect_at 11 "11 days later: use of kek" 4 unwrap --key kek -i kek1.w -o x
check "next use: says it was destroyed" grep -q 'destroyed' "$W/err"
check "next use: no output" test ! -e x
if have_p11; then
	p11_objects
	check "pkcs11-tool: kek and kek#2 gone with their metadata" \
		sh -c "! grep -Eq '\\|kek(#2)?\\|' '$W/objects'"
fi
# The test clock does not go backwards for anyone: a setuid program or
# another token would ignore it (documented); here it only moves the date.

# ---------------------------------------------------------------------
# key destroy: a version, or the whole logical key

expect "key create d1" 0 key create --label d1 --type aes256
expect "rotate d1 (2)" 0 key rotate d1
expect "rotate d1 (3)" 0 key rotate d1
expect "destroy version d1#2" 0 key destroy 'd1#2' --yes
expect "d1 after destroying version 2" 0 --json key show d1
jcheck "versions 1 and 3 left, 3 current" \
	'([v["number"] for v in d["lifecycle"]["versions"]], d["version"])' "([1, 3], 3)"
expect "destroy the current version d1#3" 0 key destroy 'd1#3' --yes
expect "d1 after destroying the current version" 0 --json key show d1
jcheck "version 1 is current again" '([v["number"] for v in d["lifecycle"]["versions"]], d["version"])' \
	"([1], 1)"
expect "rotate d1 (again)" 0 key rotate d1
expect "destroy d1 (the logical key)" 0 key destroy d1 --yes
check "destroy says all versions" grep -q 'all 2 versions' "$W/out"
expect "d1 is gone" 4 key show d1
expect "d1#2 is gone" 4 key show 'd1#2'
if have_p11; then
	p11_objects
	check "pkcs11-tool: nothing of d1 left" sh -c "! grep -Eq '\\|d1(#[0-9]+)?\\|' '$W/objects'"
fi
expect "the label d1 is free again" 0 key create --label d1 --type aes256

# ---------------------------------------------------------------------
# Tags, description, list filters

expect "key tag" 0 key tag signer env=prod team=pki
expect "key tag another" 0 key tag legacy env=dev
expect "key tag replace and remove" 0 --json key tag signer team=crypto --remove env
jcheck "tags after replace/remove" 'd["lifecycle"]["tags"]' "{'team': 'crypto'}"
expect "key tag env=prod again" 0 key tag signer env=prod
expect "key tag without tags refused" 2 key tag signer
expect "key tag with a bad tag refused" 2 key tag signer =x
expect "key describe" 0 key describe signer --description "Release signing key, PKI team"
expect "key show has description and tags" 0 key show signer
check "show: description" grep -q 'Release signing key, PKI team' "$W/out"
check "show: tag" grep -q 'env=prod' "$W/out"
check "show: state" grep -q 'State  *enabled' "$W/out"
expect "key list --tag env=prod" 0 key list --tag env=prod
check "--tag env=prod: signer only" sh -c "grep -q '^signer ' '$W/out' && ! grep -q '^legacy ' '$W/out'"
expect "key list --tag env" 0 key list --tag env
check "--tag env: signer and legacy" sh -c "grep -q '^signer ' '$W/out' && grep -q '^legacy ' '$W/out'"
expect "key list --tag env=prod --tag team=crypto" 0 key list --tag env=prod --tag team=crypto
check "both tags: signer" grep -q '^signer ' "$W/out"
expect "key list --tag nope=1" 0 key list --tag nope=1
check "no match: message" grep -q 'No keys' "$W/out"
expect "key list --type ec-p256" 0 key list --type ec-p256
check "--type ec-p256: signer only" sh -c "grep -q '^signer ' '$W/out' && ! grep -q '^legacy ' '$W/out'"
check "--type: signer shows 2 versions" grep -Eq '^signer +ec-p256 +sign +enabled +2 ' "$W/out"
expect "key list --state pending-deletion" 0 key list --state pending-deletion
check "nothing pending" grep -q 'No keys' "$W/out"
expect "key list --state bogus refused" 2 key list --state bogus
expect "key sign key still signs after rotation (show)" 0 --json key show signer
jcheck "signer current version 2" '(d["version"], d["key"]["label"])' "(2, 'signer#2')"

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
