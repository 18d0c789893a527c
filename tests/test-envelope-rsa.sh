#!/bin/sh
# test-envelope-rsa.sh: Raw RSA data keys through the CLI (issue 15).
#  - The AWS Encryption SDK's Raw RSA vectors (ESDK-NET 4.0.1: OAEP-SHA512,
#    and a second data key with OAEP-SHA256) decrypt with `hsmwrap
#    decrypt`, the private key on the token under the keyring's key name:
#    with no --rsa-padding (each padding tried in turn), with the right
#    one named, and never with a wrong one named.
#  - `hsmwrap encrypt --rsa-key` (an HSM key pair's public half) with each
#    of the five paddings, decrypted by the HSM key with and without
#    --rsa-padding.
#  - `hsmwrap encrypt --rsa-recipient NAME=PEM` (offline escrow) needs no
#    token; the escrow key's holder decrypts once the private key (made by
#    openssl, imported by pkcs11-tool) is on a token under NAME.
# Run under tests/with-token.sh. Exit: 0 pass, 1 fail, 77 skip, 99 setup.

set -u
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-envelope-rsa.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
OPENSSL_BIN=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)
if [ -z "$OPENSSL_BIN" ] || [ -z "$PKCS11_TOOL" ] || [ -z "$PYTHON" ]; then
	echo "test-envelope-rsa.sh: needs openssl, pkcs11-tool and python3; skipping" >&2
	exit 77
fi
vecdir=${ESDK_VECTORS_DIR:-$TESTS_DIR/../../shared/vectors/esdk}

umask 022
W=$HW_TEST_DIR/envelope-rsa
mkdir "$W" && cd "$W" || exit 99
ALL=$W/all-output
: >"$ALL"
. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/p11.sh"

# import_rsa LABEL DERFILE: an RSA private key onto the test token, as the
# SDK's Raw RSA keyring holder would put it there.
import_rsa() {
	HW_P11_PIN=$(cat "$HW_TEST_USER_PIN_FILE") env -u LD_PRELOAD ASAN_OPTIONS=detect_leaks=0 "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" \
		--slot "$(p11_slot hsmwrap-test)" --login --pin env:HW_P11_PIN --write-object "$2" \
		--type privkey --label "$1" --usage-decrypt >"$W/p11tool.log" 2>&1 && return 0
	echo "pkcs11-tool --write-object $1 failed:" >&2
	cat "$W/p11tool.log" >&2
	return 1
}

printf 'attack at dawn\n' >pt
head -c 100000 /dev/urandom >big

# ---------------------------------------------------------------------
# Usage

expect "encrypt without any recipient" 2 encrypt -i pt -o x.enc
check "... says what is needed" grep -q -- '--key, --rsa-key or --rsa-recipient' "$W/err"
expect "an --rsa-recipient without NAME=" 2 encrypt --rsa-recipient pub.pem -i pt -o x.enc
expect "an unknown --rsa-padding" 2 encrypt --rsa-recipient a=pub.pem --rsa-padding oaep-md5 \
	-i pt -o x.enc
expect "decrypt with an unknown --rsa-padding" 2 decrypt --rsa-padding oaep -i pt -o x
check "... nothing written" test ! -e x.enc -a ! -e x

# ---------------------------------------------------------------------
# An HSM key pair's public half, each padding

expect "key create rsa3072 decrypt (raw RSA allowed: SoftHSM has OAEP-SHA1 only)" 0 \
	key create --label rsa-esc --type rsa3072 --purpose decrypt --allow-raw-rsa
for pad in oaep-sha256 oaep-sha1 oaep-sha384 oaep-sha512; do
	expect "encrypt --rsa-key --rsa-padding $pad" 0 encrypt --rsa-key rsa-esc \
		--rsa-padding "$pad" --context case="$pad" -i big -o "big.$pad"
	expect "... decrypts without --rsa-padding (tried in order)" 0 decrypt \
		-i "big.$pad" -o "big.$pad.out"
	check "... to the plaintext" cmp -s big "big.$pad.out"
	expect "... and with --rsa-padding $pad" 0 decrypt --rsa-padding "$pad" \
		-i "big.$pad" -o "big.$pad.named"
	check "... to the plaintext" cmp -s big "big.$pad.named"
	wrong=oaep-sha384
	[ "$pad" = oaep-sha384 ] && wrong=oaep-sha256
	expect "... but not with --rsa-padding $wrong" 5 decrypt --rsa-padding "$wrong" \
		-i "big.$pad" -o "big.$pad.wrong"
	check "... which writes nothing" test ! -e "big.$pad.wrong"
done
expect "a wrong context is refused after trying every padding" 5 decrypt \
	--context case=other -i big.oaep-sha512 -o big.ctx
check "... and writes nothing" test ! -e big.ctx
# hsmwrap's decrypt keys allow OAEP only (CKA_ALLOWED_MECHANISMS).
expect "encrypt --rsa-key --rsa-padding pkcs1" 0 encrypt --rsa-key rsa-esc --rsa-padding pkcs1 \
	-i pt -o pt.pkcs1
expect "... an OAEP-only key refuses PKCS#1 v1.5 when it is named" 6 decrypt \
	--rsa-padding pkcs1 -i pt.pkcs1 -o pt.pkcs1.out
expect "... and when every padding is tried, the message does not decrypt" 5 decrypt \
	-i pt.pkcs1 -o pt.pkcs1.out
check "... which says every padding was tried" grep -q 'every --rsa-padding tried' "$W/err"
check "... and writes nothing" test ! -e pt.pkcs1.out
expect "key create aes256" 0 key create --label aes-also --type aes256
expect "--key and --rsa-key together (--json)" 0 --json encrypt --key aes-also --rsa-key rsa-esc \
	-i pt -o both.enc
check "... the document lists both" \
	[ "$(json_get '" ".join(d["keys"] + d["rsa_recipients"])' <"$W/out")" = "aes-also rsa-esc" ]
expect "... and the AES key alone decrypts it" 0 decrypt --key aes-also -i both.enc -o both.out
check "... to the plaintext" cmp -s pt both.out
expect "... and so does the RSA key alone" 0 decrypt --key rsa-esc -i both.enc -o both.out2
check "... to the plaintext" cmp -s pt both.out2

# ---------------------------------------------------------------------
# Offline escrow to a PEM public key: no token involved in encrypting

"$OPENSSL_BIN" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out escrow.key 2>/dev/null &&
	"$OPENSSL_BIN" pkey -in escrow.key -pubout -out escrow.pem &&
	"$OPENSSL_BIN" pkey -in escrow.key -outform DER -out escrow.der || exit 99
expect "encrypt --rsa-recipient with a module that does not exist (no token needed)" 0 \
	--module "$W/no-such-module.so" encrypt --rsa-recipient escrow-2026=escrow.pem \
	--rsa-padding oaep-sha512 --context purpose=escrow -i big -o big.escrow
check "inspect shows the escrow key's name" sh -c "'$HSMWRAP' inspect big.escrow | grep -q escrow-2026"
expect "... and the token cannot decrypt it yet" 4 decrypt -i big.escrow -o big.escrow.out
check "... writing nothing" test ! -e big.escrow.out
import_rsa escrow-2026 escrow.der || { bad "pkcs11-tool could not import the escrow key"; }
expect "the escrow key's holder decrypts it (padding found)" 0 decrypt --context purpose=escrow \
	-i big.escrow -o big.escrow.out
check "... to the plaintext" cmp -s big big.escrow.out
expect "escrow with PKCS#1 v1.5 (legacy SDK keyrings)" 0 encrypt \
	--rsa-recipient escrow-2026=escrow.pem --rsa-padding pkcs1 -i big -o big.escrow1
expect "... decrypts with the padding found" 0 decrypt -i big.escrow1 -o big.escrow1.out
check "... to the plaintext" cmp -s big big.escrow1.out
expect "... and with --rsa-padding pkcs1" 0 decrypt --rsa-padding pkcs1 -i big.escrow1 \
	-o big.escrow1.named
check "... to the plaintext" cmp -s big big.escrow1.named
"$OPENSSL_BIN" req -new -x509 -key escrow.key -subj /CN=escrow -days 2 -out escrow.crt 2>/dev/null ||
	exit 99
expect "a certificate works as a recipient too, and two recipients" 0 encrypt \
	--rsa-recipient escrow-2026=escrow.crt --rsa-recipient escrow-b=escrow.pem -i pt -o two.enc
expect "... which the escrow key decrypts" 0 decrypt --key escrow-2026 -i two.enc -o two.out
check "... to the plaintext" cmp -s pt two.out
printf 'not a key\n' >junk.pem
expect "a file that is no public key" 5 encrypt --rsa-recipient x=junk.pem -i pt -o junk.enc
check "... says so" grep -q 'not a PEM public key or certificate' "$W/err"
"$OPENSSL_BIN" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null |
	"$OPENSSL_BIN" pkey -pubout -out small.pem
expect "an RSA key under 2048 bits" 2 encrypt --rsa-recipient x=small.pem -i pt -o small.enc
check "no output for the refused ones" test ! -e junk.enc -a ! -e small.enc

# ---------------------------------------------------------------------
# The SDK's Raw RSA vectors through the CLI

if [ -f "$vecdir/v4-Net-4.0.1.zip" ]; then
	"$PYTHON" - "$vecdir/v4-Net-4.0.1.zip" "$W/vec" >vectors <<'EOF' || exit 99
import base64, json, os, sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
root = sys.argv[2]
man = json.load(open(os.path.join(root, "manifest.json")))
keys = json.load(open(os.path.join(root, "keys.json")))["keys"]
der = base64.b64decode("".join(l for l in keys["rsa-4096-private"]["material"].splitlines()
                               if l and not l.startswith("-----")))
open(os.path.join(root, "rsa-4096.der"), "wb").write(der)
for tid, t in sorted(man["tests"].items()):
    mks = t["master-keys"]
    if tid[:4] not in ("0478", "0578") or mks[0].get("encryption-algorithm") != "rsa":
        continue
    pads = ",".join("%s:oaep-%s" % (m["key"], m["padding-hash"]) for m in mks)
    ctx = " ".join("--context=%s=%s" % kv for kv in t.get("encryption-context", {}).items())
    print(tid, os.path.join(root, t["ciphertext"][7:]),
          os.path.join(root, t["result"]["output"]["plaintext"][7:]), pads, ctx or "-")
EOF
	# The vectors' public-key data keys are for the same key pair.
	import_rsa rsa-4096-private vec/rsa-4096.der && import_rsa rsa-4096-public vec/rsa-4096.der ||
		bad "pkcs11-tool could not import the vectors' RSA key"
	NS=aws-raw-vectors-persistant
	nvec=0
	while read -r tid ct ptf pads ctx; do
		nvec=$((nvec + 1))
		[ "$ctx" = - ] && ctx=
		short=${tid%%-cmm*}
		# shellcheck disable=SC2086 # ctx is a list of --context options
		expect "vector $short: decrypt, padding not named" 0 decrypt --namespace "$NS" $ctx \
			-i "$ct" -o "v$nvec.out" && check "... plaintext $short" cmp -s "$ptf" "v$nvec.out"
		for kp in $(echo "$pads" | tr ',' ' '); do
			key=${kp%%:*} pad=${kp#*:}
			# shellcheck disable=SC2086
			expect "vector $short: --key $key --rsa-padding $pad" 0 decrypt --namespace "$NS" \
				--key "$key" --rsa-padding "$pad" $ctx -i "$ct" -o "v$nvec.$key"
			check "... plaintext" cmp -s "$ptf" "v$nvec.$key"
			# shellcheck disable=SC2086
			expect "vector $short: --key $key, padding found" 0 decrypt --namespace "$NS" \
				--key "$key" $ctx -i "$ct" -o "v$nvec.$key.auto"
			wrong=pkcs1
			# shellcheck disable=SC2086
			expect "vector $short: --key $key --rsa-padding $wrong refused" 5 decrypt \
				--namespace "$NS" --key "$key" --rsa-padding "$wrong" $ctx -i "$ct" \
				-o "v$nvec.$key.wrong"
			check "... nothing written" test ! -e "v$nvec.$key.wrong"
		done
	done <vectors
	check "the vector set has Raw RSA messages ($nvec)" [ "$nvec" -ge 8 ]
else
	echo "note: no ESDK vectors in $vecdir; the vector part is skipped"
fi

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
