#!/bin/sh
# test-cli.sh: runs the real `hsmwrap` binary as an administrator would,
# under tests/with-token.sh, and checks its results independently with
# OpenSC's pkcs11-tool and OpenSSL where it can. Prints one line per check
# ("ok: ..." or "FAIL: ...") and finally "N passed, N failed".
#
# Exit codes asserted here are the CLI contract's:
#   0 ok, 1 other, 2 usage, 3 authentication, 4 not found, 5 integrity,
#   6 HSM, 7 refused by policy.

set -u

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE HW_TEST_SO_PIN_FILE \
	SOFTHSM_MODULE HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-cli.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
if [ ! -x "$HSMWRAP" ]; then
	echo "test-cli.sh: $HSMWRAP is not built" >&2
	exit 99
fi
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
OPENSSL_BIN=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)

# A typical administrator's umask: secret outputs must be 0600 by design.
umask 022
W=$HW_TEST_DIR/cli
mkdir "$W" || exit 99
. "$(dirname "$0")/p11.sh"
. "$(dirname "$0")/lib.sh"
cd "$W" || exit 99

# shellcheck disable=SC2153 # set by with-token.sh, checked above
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
SO_PIN=$(cat "$HW_TEST_SO_PIN_FILE")
PIN2=
[ -n "${HW_TEST_USER_PIN_FILE2:-}" ] && PIN2=$(cat "$HW_TEST_USER_PIN_FILE2")
# Every byte hsmwrap prints goes here too, for the PIN leak check.
ALL=$W/all-output
: >"$ALL"

filemode() {
	stat -c %a "$1" 2>/dev/null
}

is_json() {
	[ -n "$PYTHON" ] && "$PYTHON" -m json.tool <"$1" >/dev/null 2>&1
}

size() {
	wc -c <"$1" | tr -d ' '
}

P11_SLOT=
[ -z "$PKCS11_TOOL" ] || P11_SLOT=$(p11_slot hsmwrap-test)
p11() {
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" \
		--slot "${P11_SLOT:-none}" --login --pin env:HW_P11_PIN "$@"
}

# One line per object: CLASS|LABEL|USAGE|ACCESS, from pkcs11-tool's listing.
p11_objects() {
	p11 --list-objects 2>/dev/null | awk '
		function flush() { if (cls != "") print cls "|" label "|" usage "|" access }
		/^[^ \t]/ { flush(); cls = $1; label = ""; usage = ""; access = ""; next }
		/^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); label = $0 }
		/^[ \t]+Usage:/ { sub(/^[ \t]+Usage:[ \t]*/, ""); usage = $0 }
		/^[ \t]+Access:/ { sub(/^[ \t]+Access:[ \t]*/, ""); access = $0 }
		END { flush() }'
}

# A comma-separated list, normalised for comparison.
normset() {
	echo "$1" | tr ',' '\n' | sed 's/^ *//; s/ *$//' | grep -v '^$' | sort | tr '\n' ','
}

# p11_check CLASS LABEL WANT_USAGE: the object is sensitive, never
# extractable, generated on the token, and has exactly WANT_USAGE.
p11_check() {
	line=$(grep "^$1|$2|" "$W/objects" | head -n 1)
	if [ -z "$line" ]; then
		bad "pkcs11-tool: no $1 key object labelled $2"
		return
	fi
	usage=$(echo "$line" | cut -d'|' -f3)
	access=$(echo "$line" | cut -d'|' -f4)
	want_access=$(normset "sensitive, always sensitive, never extractable, local")
	if [ "$(normset "$access")" = "$want_access" ]; then
		ok "pkcs11-tool: $1 key $2 is sensitive, never extractable, local ($access)"
	else
		bad "pkcs11-tool: $1 key $2 access is '$access'"
	fi
	if [ "$(normset "$usage")" = "$(normset "$3")" ]; then
		ok "pkcs11-tool: $1 key $2 usage is exactly '$3'"
	else
		bad "pkcs11-tool: $1 key $2 usage is '$usage', want '$3'"
	fi
}

# ---------------------------------------------------------------------
# Tokens

expect "token list" 0 token list
check "token list shows the test token" grep -q 'hsmwrap-test$' "$W/out"
check "token list says the test token is usable" \
	sh -c "grep -A12 'Label: *hsmwrap-test\$' '$W/out' | grep -q 'Usable: *yes'"
expect "token list --json" 0 --json token list
check "token list --json is valid JSON" is_json "$W/out"
if [ -n "$PYTHON" ]; then
	caps=$("$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
for m in d["modules"]:
    for s in m["slots"]:
        t = s.get("token") or {}
        if t.get("label") == "hsmwrap-test":
            c = t["capabilities"]
            print(" ".join(sorted(k for k in c if c[k])), "usable" if t.get("usable") else "unusable")
' <"$W/out" 2>&1)
	want="aes-gcm aes-keygen aes-kwp allowed-mechanisms data-objects ec-keygen ecdsa eddsa-keygen random rsa-keygen rsa-pss usable"
	if [ "$caps" = "$want" ]; then
		ok "token list --json: test token has every capability and is usable"
	else
		bad "token list --json: test token capabilities: '$caps', want '$want'"
	fi
else
	bad "python3 not installed: cannot check JSON output"
fi

# token init on the free slot, PINs from files.
od -An -tx1 -N8 /dev/urandom | tr -d ' \n' >"$W/new-so.pin"
od -An -tx1 -N8 /dev/urandom | tr -d ' \n' >"$W/new-user.pin"
chmod 600 "$W/new-so.pin" "$W/new-user.pin"
NEW_PIN=$(cat "$W/new-user.pin")
NEW_SO_PIN=$(cat "$W/new-so.pin")
expect "token init on a free slot" 0 --pin-source "file:$W/new-user.pin" \
	token init --label cli-init --so-pin-source "file:$W/new-so.pin"
expect "token list after init" 0 token list
check "token list shows the new token" grep -q 'cli-init$' "$W/out"
NEWTOK="--token pkcs11:token=cli-init --pin-source file:$W/new-user.pin"
# shellcheck disable=SC2086 # NEWTOK is options, split on purpose
expect "new token: key create" 0 $NEWTOK key create --label fresh --type aes256
# shellcheck disable=SC2086
expect "new token: datakey generate" 0 $NEWTOK datakey generate --key fresh \
	--plaintext-out "$W/fresh.pt" -o "$W/fresh.wr"
# shellcheck disable=SC2086
expect "new token: datakey decrypt" 0 $NEWTOK datakey decrypt --key fresh \
	-i "$W/fresh.wr" -o "$W/fresh.back"
check "new token: data key round trip" cmp -s "$W/fresh.pt" "$W/fresh.back"
# More keys than one C_FindObjects batch (64): listing and lookup must see them all.
i=0
while [ $i -lt 70 ]; do
	# shellcheck disable=SC2086
	"$HSMWRAP" $NEWTOK key create --label "many-$i" --type aes256 >/dev/null 2>&1 || break
	i=$((i + 1))
done
check "new token: 70 more keys created" test $i -eq 70
# shellcheck disable=SC2086
expect "new token: key list of 71 keys" 0 $NEWTOK key list
check "new token: key list shows all 71 keys" test "$(grep -c '^many-\|^fresh ' "$W/out")" -eq 71
# shellcheck disable=SC2086
expect "new token: the 70th key is found by label" 0 $NEWTOK key show many-69
newout
refused "new token: the other token's PIN is refused" 3 \
	--token pkcs11:token=cli-init datakey generate --key fresh \
	--plaintext-out "$O/pt" -o "$O/wr"

# ---------------------------------------------------------------------
# Keys

expect "key create aes256 envelope" 0 key create --label env1 --type aes256 --purpose envelope
check "key create prints the KCV" grep -q 'KCV' "$W/out"
expect "key create aes256 (default purpose)" 0 key create --label env2 --type aes256
expect "key create aes256 keywrap" 0 key create --label kw1 --type aes256 --purpose keywrap
expect "key create aes256 keywrap (second)" 0 key create --label kw2 --type aes256 --purpose keywrap
expect "key create rsa2048 sign (default purpose)" 0 key create --label rsa1 --type rsa2048
expect "key create ec-p256 sign" 0 key create --label ec1 --type ec-p256 --purpose sign
expect "key create rsa2048 decrypt (escrow private half)" 0 key create --label dec1 \
	--type rsa2048 --purpose decrypt
expect "key create rsa2048 decrypt with raw RSA allowed" 0 key create --label dec2 \
	--type rsa2048 --purpose decrypt --allow-raw-rsa

newout
refused "key create with an existing label" 7 key create --label env1 --type aes256
refused "key create with a bad type" 2 key create --label x1 --type aes128
refused "key create aes256 for signing" 2 key create --label x2 --type aes256 --purpose sign
refused "key create without --label" 2 key create --type aes256
refused "key create ec-p256 for decrypting" 2 key create --label x3 --type ec-p256 --purpose decrypt
refused "--allow-raw-rsa on a sign key" 2 key create --label x4 --type rsa2048 --allow-raw-rsa

# Independent check of what is on the token, with OpenSC's pkcs11-tool.
if [ -n "$PKCS11_TOOL" ] && [ -x "$PKCS11_TOOL" ]; then
	p11_objects >"$W/objects"
	p11_check Secret env1 "encrypt, decrypt"
	p11_check Secret env2 "encrypt, decrypt"
	p11_check Secret kw1 "wrap, unwrap"
	p11_check Private rsa1 "sign"
	p11_check Private ec1 "sign"
	for k in rsa1 ec1; do
		u=$(grep "^Public|$k|" "$W/objects" | cut -d'|' -f3)
		if [ "$(normset "$u")" = "$(normset verify)" ]; then
			ok "pkcs11-tool: public key $k is verify-only"
		else
			bad "pkcs11-tool: public key $k usage is '$u', want 'verify'"
		fi
	done
	# CKA_PRIVATE: without a login another client sees no secret or private key.
	"$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "${P11_SLOT:-none}" \
		--list-objects >"$W/public-objects" 2>/dev/null
	if grep -qE 'label: *(env1|env2|kw1|kw2)$' "$W/public-objects" ||
		grep -q 'Private Key' "$W/public-objects"; then
		bad "pkcs11-tool without login sees hsmwrap's secret or private keys"
	elif grep -qE 'label: *(rsa1|ec1)$' "$W/public-objects"; then
		ok "pkcs11-tool without login sees only the public halves"
	else
		bad "pkcs11-tool without login: unexpected listing"
	fi
else
	bad "pkcs11-tool not installed (opensc): cannot check the keys independently"
fi

expect "key list" 0 key list
for k in env1 env2 kw1 kw2 rsa1 ec1; do
	check "key list shows $k" grep -q "^$k " "$W/out"
done
expect "key list --json" 0 --json key list
check "key list --json is valid JSON" is_json "$W/out"
if [ -n "$PYTHON" ]; then
	n=$(json_get 'sorted(k["label"] for k in d["keys"])' <"$W/out" 2>&1)
	case $n in
	*"'ec1'"*"'env1'"*"'env2'"*"'kw1'"*"'kw2'"*"'rsa1'"*) ok "key list --json lists the keys" ;;
	*) bad "key list --json: labels $n" ;;
	esac
fi

expect "key show env1" 0 key show env1
check "key show: Extractable no" grep -q 'Extractable *no' "$W/out"
check "key show: Sensitive yes" grep -q 'Sensitive *yes' "$W/out"
expect "key show --json env1" 0 --json key show env1
check "key show --json is valid JSON" is_json "$W/out"
if [ -n "$PYTHON" ]; then
	cp "$W/out" "$W/env1.json"
	attrs=$(json_get '(d["key"]["sensitive"], d["key"]["extractable"], d["key"]["never_extractable"], d["key"]["purpose"], len(d["key"]["kcv"]))' <"$W/env1.json" 2>&1)
	if [ "$attrs" = "(True, False, True, 'envelope', 6)" ]; then
		ok "key show --json: env1 sensitive, not extractable, envelope, 6-digit KCV"
	else
		bad "key show --json: env1 attributes $attrs"
	fi
	purpose=$( "$HSMWRAP" --json key show env2 2>/dev/null | json_get 'd["key"]["purpose"]' 2>&1)
	check "aes256 without --purpose is an envelope key" [ "$purpose" = envelope ]
	purpose=$( "$HSMWRAP" --json key show rsa1 2>/dev/null | json_get 'd["key"]["purpose"]' 2>&1)
	check "rsa2048 without --purpose is a sign key" [ "$purpose" = sign ]
	ENV1_ID=$(json_get 'd["key"]["id"]' <"$W/env1.json")
	ENV1_URI=$(json_get 'd["key"]["uri"]' <"$W/env1.json")
	expect "key show by id:HEX" 0 key show "id:$ENV1_ID"
	check "key show by id:HEX finds env1" grep -q 'Label: *env1$' "$W/out"
	expect "key show by URI" 0 key show "$ENV1_URI"
	check "key show by URI finds env1" grep -q 'Label: *env1$' "$W/out"

	# Fingerprints of pairs: SHA-256 of the public key's DER SPKI, as
	# pkcs11-tool exports it and OpenSSL hashes it.
	for k in rsa1 ec1; do
		fp=$("$HSMWRAP" --json key show "$k" 2>/dev/null | json_get 'd["key"]["kcv"]' 2>&1)
		if [ -n "$PKCS11_TOOL" ] && [ -n "$OPENSSL_BIN" ] &&
			p11 --read-object --type pubkey --label "$k" -o "$W/$k.spki" >/dev/null 2>&1; then
			want=$("$OPENSSL_BIN" dgst -sha256 -r "$W/$k.spki" | cut -d' ' -f1)
			if [ "$(echo "$fp" | tr 'A-F' 'a-f')" = "$want" ]; then
				ok "fingerprint of $k is SHA-256 of its SPKI"
			else
				bad "fingerprint of $k is '$fp', SHA-256 of SPKI is '$want'"
			fi
		else
			bad "cannot export the public key of $k with pkcs11-tool"
		fi
	done
fi

newout
refused "key show of an unknown key" 4 key show no-such-key
hw --json key show no-such-key
if [ "$rc" -eq 4 ] && is_json "$W/out" &&
	[ "$(json_get '(d["ok"], d["error"])' <"$W/out" 2>&1)" = "(False, 'HW_ERR_KEY_NOT_FOUND')" ]; then
	ok "--json error document for an unknown key"
else
	bad "--json error document for an unknown key: exit $rc: $(cat "$W/out")"
fi

# Destroy: refused without --yes, and the key stays.
expect "key create for destroy" 0 key create --label doomed --type ec-p256
if [ -n "$PKCS11_TOOL" ]; then
	p11_objects >"$W/objects"
	check "pkcs11-tool sees both halves of the new pair" \
		sh -c "grep -q '^Private|doomed|' '$W/objects' && grep -q '^Public|doomed|' '$W/objects'"
fi
newout
refused "key destroy without --yes" 2 key destroy doomed
expect "key still there after refused destroy" 0 key show doomed
expect "key destroy --yes" 0 key destroy doomed --yes
expect "destroyed key is gone" 4 key show doomed
if [ -n "$PKCS11_TOOL" ]; then
	p11_objects >"$W/objects"
	if grep -q '|doomed|' "$W/objects"; then
		bad "pkcs11-tool still sees a half of the destroyed pair"
	else
		ok "pkcs11-tool sees neither half of the destroyed pair"
	fi
fi

# Two objects with one label (made by another client): ambiguous -> 4.
if [ -n "$PKCS11_TOOL" ]; then
	if p11 --keygen --key-type AES:32 --label twin --id 01 >/dev/null 2>&1 &&
		p11 --keygen --key-type AES:32 --label twin --id 02 >/dev/null 2>&1; then
		newout
		refused "key name matching two keys" 4 --json datakey generate --key twin \
			--plaintext-out "$O/pt" -o "$O/wr"
		e=$(json_get 'd["error"]' <"$W/out" 2>&1)
		check "... and the error is HW_ERR_KEY_AMBIGUOUS" [ "$e" = HW_ERR_KEY_AMBIGUOUS ]
	else
		bad "pkcs11-tool could not create two keys with one label"
	fi
fi

# ---------------------------------------------------------------------
# Data keys

expect "datakey generate with context" 0 datakey generate --key env1 \
	--context tenant=acme --context app=billing --plaintext-out "$W/dk.pt" -o "$W/dk.wr"
check "plaintext data key is 32 bytes" [ "$(size "$W/dk.pt")" -eq 32 ]
check "plaintext data key file is mode 0600" [ "$(filemode "$W/dk.pt")" = 600 ]
expect "datakey decrypt, context in another order" 0 datakey decrypt --key env1 \
	--context app=billing --context tenant=acme -i "$W/dk.wr" -o "$W/dk.back"
check "data key round trip" cmp -s "$W/dk.pt" "$W/dk.back"
check "decrypted data key file is mode 0600" [ "$(filemode "$W/dk.back")" = 600 ]
expect "datakey decrypt, key by id:HEX" 0 datakey decrypt --key "id:${ENV1_ID:-none}" \
	--context app=billing --context tenant=acme -i "$W/dk.wr" -o "$W/dk.back2"
check "data key round trip via id" cmp -s "$W/dk.pt" "$W/dk.back2"
expect "datakey generate, no context" 0 datakey generate --key env1 \
	--plaintext-out "$W/dk0.pt" -o "$W/dk0.wr"
expect "datakey decrypt, no context" 0 datakey decrypt --key env1 -i "$W/dk0.wr" -o "$W/dk0.back"
check "data key round trip without context" cmp -s "$W/dk0.pt" "$W/dk0.back"
check "two data keys differ" sh -c "! cmp -s '$W/dk.pt' '$W/dk0.pt'"
expect "datakey generate --json" 0 --json datakey generate --key env1 \
	--plaintext-out "$W/dkj.pt" -o "$W/dkj.wr"
check "datakey generate --json is valid JSON" is_json "$W/out"
check "datakey --json does not print the data key" \
	sh -c "! od -An -tx1 '$W/dkj.pt' | tr -d ' \n' | grep -qiF -f - '$W/out'"

# Bad inputs: exact exit code, a message, no output left.
newout
echo "not-the-pin" >"$W/wrong.pin"
refused "wrong PIN" 3 --pin-source "file:$W/wrong.pin" datakey generate --key env1 \
	--plaintext-out "$O/pt" -o "$O/wr"
refused "PIN from an unset environment variable" 3 --pin-source env:HW_TEST_SURELY_UNSET \
	datakey generate --key env1 --plaintext-out "$O/pt" -o "$O/wr"
refused "PIN file that does not exist" 3 --pin-source "file:$W/no-such.pin" \
	datakey decrypt --key env1 -i "$W/dk0.wr" -o "$O/out"
refused "unknown key" 4 datakey generate --key no-such-key --plaintext-out "$O/pt" -o "$O/wr"
refused "unknown key (decrypt)" 4 datakey decrypt --key no-such-key -i "$W/dk0.wr" -o "$O/out"
refused "missing module" 4 --module /nonexistent/libnothing.so datakey generate --key env1 \
	--plaintext-out "$O/pt" -o "$O/wr"
refused "unknown p11-kit module name" 4 --module no-such-p11kit-module key list
refused "token URI naming no token" 4 --token pkcs11:token=no-such-token \
	datakey generate --key env1 --plaintext-out "$O/pt" -o "$O/wr"
refused "malformed token URI" 2 --token 'pkcs11:token=%zz' key list
refused "wrong context value" 5 datakey decrypt --key env1 --context tenant=evil \
	--context app=billing -i "$W/dk.wr" -o "$O/out"
refused "missing context pair" 5 datakey decrypt --key env1 --context tenant=acme \
	-i "$W/dk.wr" -o "$O/out"
refused "extra context pair" 5 datakey decrypt --key env1 --context tenant=acme \
	--context app=billing --context x=y -i "$W/dk.wr" -o "$O/out"
refused "no context where one was bound" 5 datakey decrypt --key env1 -i "$W/dk.wr" -o "$O/out"
refused "data key of another envelope key" 5 datakey decrypt --key env2 -i "$W/dk0.wr" -o "$O/out"
refused "datakey with a keywrap key" 7 datakey generate --key kw1 --plaintext-out "$O/pt" -o "$O/wr"
refused "datakey with a sign key" 7 datakey generate --key ec1 --plaintext-out "$O/pt" -o "$O/wr"
refused "bad --context syntax" 2 datakey generate --key env1 --context novalue \
	--plaintext-out "$O/pt" -o "$O/wr"
refused "duplicate --context key" 2 datakey generate --key env1 --context a=1 --context a=2 \
	--plaintext-out "$O/pt" -o "$O/wr"
refused "datakey generate without -o" 2 datakey generate --key env1 --plaintext-out "$O/pt"
refused "--pin on the command line" 2 --pin "$PIN" key list
refused "--pin after the command" 2 key list --pin "$PIN"
refused "unknown command" 2 frobnicate
refused "unknown option" 2 key list --frobnicate
refused "input file that does not exist" 1 datakey decrypt --key env1 -i "$W/no-such-file" -o "$O/out"
refused "output directory that does not exist" 1 datakey generate --key env1 \
	--plaintext-out "$O/no/such/dir/pt" -o "$O/wr"

# Tampered and truncated blobs.
len=$(size "$W/dk0.wr")
for off in $((len / 2)) $((len - 1)) 0 7; do
	cp "$W/dk0.wr" "$W/tampered"
	flip "$W/tampered" "$off"
	newout
	refused "data key blob with byte $off of $len altered" 5 \
		datakey decrypt --key env1 -i "$W/tampered" -o "$O/out"
done
for n in 0 1 10 $((len / 2)) $((len - 16)) $((len - 1)); do
	head -c "$n" "$W/dk0.wr" >"$W/truncated"
	newout
	refused "data key blob truncated to $n of $len bytes" 5 \
		datakey decrypt --key env1 -i "$W/truncated" -o "$O/out"
done
cp "$W/dk0.wr" "$W/longer"
printf 'x' >>"$W/longer"
newout
refused "data key blob with a byte appended" 5 datakey decrypt --key env1 -i "$W/longer" -o "$O/out"

# A failed command leaves an existing output file as it was.
newout
echo "precious" >"$O/out"
cp "$W/dk0.wr" "$W/tampered"
flip "$W/tampered" $((len - 1))
refused "failed decrypt over an existing file" 5 datakey decrypt --key env1 \
	-i "$W/tampered" -o "$O/out"
check "the existing file is unchanged" [ "$(cat "$O/out")" = precious ]

# ---------------------------------------------------------------------
# Key wrapping

head -c 32 /dev/urandom >"$W/km32"
expect "wrap 32 bytes" 0 wrap --key kw1 -i "$W/km32" -o "$W/km32.wr"
expect "unwrap" 0 unwrap --key kw1 -i "$W/km32.wr" -o "$W/km32.back"
check "wrap/unwrap round trip" cmp -s "$W/km32" "$W/km32.back"
check "unwrapped key file is mode 0600" [ "$(filemode "$W/km32.back")" = 600 ]
head -c 4096 /dev/urandom >"$W/km4096"
expect "wrap 4096 bytes" 0 wrap --key kw1 -i "$W/km4096" -o "$W/km4096.wr"
expect "unwrap 4096 bytes" 0 unwrap --key kw1 -i "$W/km4096.wr" -o "$W/km4096.back"
check "4096-byte round trip" cmp -s "$W/km4096" "$W/km4096.back"

# The payload (the blob's last 40 bytes for 32 bytes of material) is RFC
# 5649: the token itself, asked by pkcs11-tool with CKM_AES_KEY_WRAP_PAD
# and the same key, unwraps it to the original material.
if [ -n "$PKCS11_TOOL" ] && [ -n "$PYTHON" ]; then
	KW1_ID=$("$HSMWRAP" --json key show kw1 2>/dev/null | json_get 'd["key"]["id"]' 2>/dev/null)
	tail -c 40 "$W/km32.wr" >"$W/km32.kwp"
	if p11 --unwrap -m 0x210A --id "$KW1_ID" -i "$W/km32.kwp" --key-type GENERIC: \
		--extractable --application-id 0badcafe >/dev/null 2>&1 &&
		p11 --read-object --type secrkey --id 0badcafe -o "$W/km32.p11" >/dev/null 2>&1 &&
		cmp -s "$W/km32" "$W/km32.p11"; then
		ok "pkcs11-tool unwraps hsmwrap's payload (RFC 5649) to the same material"
	else
		bad "pkcs11-tool could not unwrap hsmwrap's payload to the same material"
	fi
	p11 --delete-object --type secrkey --id 0badcafe >/dev/null 2>&1
fi

newout
head -c 17 /dev/urandom >"$W/km17"
# SoftHSM 2.6 cannot do RFC 5649 for lengths that are not whole 8-byte blocks.
refused "wrap 17 bytes on SoftHSM (unsupported)" 6 wrap --key kw1 -i "$W/km17" -o "$O/wr"
head -c 4104 /dev/urandom >"$W/km-big"
refused "wrap more than 4096 bytes" 5 wrap --key kw1 -i "$W/km-big" -o "$O/wr"
refused "wrap with an envelope key" 7 wrap --key env1 -i "$W/km32" -o "$O/wr"
refused "wrap with a sign key" 7 wrap --key rsa1 -i "$W/km32" -o "$O/wr"
refused "unwrap with another keywrap key" 5 unwrap --key kw2 -i "$W/km32.wr" -o "$O/out"
refused "unwrap of a data key blob" 5 unwrap --key kw1 -i "$W/dk0.wr" -o "$O/out"
refused "unknown key (unwrap)" 4 unwrap --key no-such-key -i "$W/km32.wr" -o "$O/out"
len=$(size "$W/km32.wr")
for off in $((len / 2)) $((len - 1)) 20 27; do
	cp "$W/km32.wr" "$W/tampered"
	flip "$W/tampered" "$off"
	newout
	refused "wrapped blob with byte $off of $len altered" 5 \
		unwrap --key kw1 -i "$W/tampered" -o "$O/out"
done
for n in 0 1 $((len / 2)) $((len - 8)) $((len - 1)); do
	head -c "$n" "$W/km32.wr" >"$W/truncated"
	newout
	refused "wrapped blob truncated to $n of $len bytes" 5 \
		unwrap --key kw1 -i "$W/truncated" -o "$O/out"
done

# ---------------------------------------------------------------------
# Help

expect "hsmwrap help" 0 help
check "help names the commands" sh -c "grep -q datakey '$W/out' && grep -q unwrap '$W/out'"
expect "hsmwrap help key" 0 help key
check "help key lists key create" grep -q 'key create' "$W/out"
expect "hsmwrap key create --help" 0 key create --help
check "key create --help documents --type" grep -q -- '--type' "$W/out"
expect "hsmwrap help --man" 0 help --man
check "help --man is a man page" grep -q '^\.TH HSMWRAP 1' "$W/out"
check "man page documents the exit codes" grep -qi 'exit' "$W/out"

# Every command of the table, however many words, through `help NAME`,
# `NAME --help` and the man page (whose .SS lines are the table's names).
sed -n 's/^\.SS //p' "$W/out" | sed 's/\\-/-/g' >"$W/names"
check "man page has a section per command, three-word ones too" \
	sh -c "[ \$(wc -l <'$W/names') -ge 40 ] && grep -qx 'tde keyring add' '$W/names'"
nbad=0
while IFS= read -r name; do
	# shellcheck disable=SC2086 # the name's words are separate arguments
	hw help $name
	if [ "$rc" -ne 0 ] || ! head -n 1 "$W/out" | grep -qF "[GLOBAL OPTIONS] $name"; then
		bad "help $name: exit $rc: $(first_err)"
		nbad=$((nbad + 1))
	fi
	# shellcheck disable=SC2086
	hw $name --help
	if [ "$rc" -ne 0 ] || ! head -n 1 "$W/out" | grep -qF "[GLOBAL OPTIONS] $name"; then
		bad "$name --help: exit $rc: $(first_err)"
		nbad=$((nbad + 1))
	fi
done <"$W/names"
check "help NAME and NAME --help reach all $(wc -l <"$W/names") commands" [ "$nbad" -eq 0 ]
expect "hsmwrap help tde keyring add" 0 help tde keyring add
check "help tde keyring add documents --keyring" grep -q -- '--keyring' "$W/out"
expect "hsmwrap help tde keyring (a two-word family)" 0 help tde keyring
check "help tde keyring lists its commands" \
	sh -c "grep -q 'tde keyring add' '$W/out' && grep -q 'tde keyring rekey' '$W/out' && ! grep -q 'tde init' '$W/out'"
expect "hsmwrap --json help tde keyring get" 0 --json help tde keyring get
check "--json help is one document with the text" \
	"$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and "tde keyring get" in d["text"]' "$W/out"
expect "hsmwrap help tde keyring nosuch" 2 help tde keyring nosuch
check "unknown three-word command is named in full" grep -q "unknown command 'tde keyring nosuch'" "$W/err"
expect "hsmwrap tde keyring (no subcommand)" 2 tde keyring
check "a family without its subcommand says so" grep -q "'tde keyring' needs a subcommand" "$W/err"

# ---------------------------------------------------------------------
# Secrets never printed.

i=0
for secret in "$PIN" "$SO_PIN" "$NEW_PIN" "$NEW_SO_PIN" ${PIN2:+"$PIN2"}; do
	i=$((i + 1))
	if grep -qF -- "$secret" "$ALL"; then
		bad "PIN #$i appears in hsmwrap's output"
	else
		ok "PIN #$i never appears in hsmwrap's output"
	fi
done
if od -An -tx1 "$W/dk.pt" | tr -d ' \n' >"$W/dk.hex" && grep -qiF -f "$W/dk.hex" "$ALL"; then
	bad "a plaintext data key appears in hsmwrap's output"
else
	ok "plaintext data keys never appear in hsmwrap's output"
fi

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
