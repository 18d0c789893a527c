#!/bin/sh
# test-provider-keys.sh - the key types beyond RSA/P-256/P-384 (issue 13,
# item 1): Ed25519, Ed448, EC P-521 and RSA keys the token restricts to
# RSASSA-PSS, made by `hsmwrap key create` and used through the provider
# by real OpenSSL: certificates, signatures verified by the default
# provider with the public key, and TLS 1.3 handshakes verified by
# s_client. pkcs11-tool checks independently that every key is sensitive
# and never extractable. Bad input: unknown types, a digest with EdDSA,
# PKCS#1 v1.5 or decryption with a PSS-only key: a clear error, no crash.
# Runs under tests/with-token.sh.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
MODDIR=$(dirname "$HSMWRAP")/.libs
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/provider-keys
mkdir -p "$W" || exit 99

if [ -z "$OPENSSL" ] || [ ! -f "$MODDIR/hsmwrap.so" ] || [ -z "$PKCS11_TOOL" ]; then
	echo "test-provider-keys.sh: openssl, pkcs11-tool or $MODDIR/hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

printf 'a message signed in the HSM\n' >"$W/msg"

for kt in ed25519 ed448 ec-p521 rsa-pss-2048; do
	URI="pkcs11:object=k-$kt;type=private"
	if ! "$HSMWRAP" key create --label "k-$kt" --type "$kt" >"$W/create.log" 2>&1; then
		bad "hsmwrap key create --type $kt: $(head -c 300 "$W/create.log")"
		continue
	fi
	if grep -q "^Type: *$kt " "$W/create.log"; then
		ok "$kt: hsmwrap key create reports the type back ($(grep -m1 '^Type:' "$W/create.log"))"
	else
		bad "$kt: key create transcript: $(grep -m1 '^Type' "$W/create.log")"
	fi
	acc=$(p11_access "k-$kt")
	case $acc in
	*sensitive*"never extractable"*) ok "$kt: pkcs11-tool: $acc" ;;
	*) bad "$kt: pkcs11-tool access '$acc'" ;;
	esac

	if ossl pkey $PROV -in "$URI" -pubout -out "$W/$kt.pub" 2>"$W/err" &&
	   grep -q 'BEGIN PUBLIC KEY' "$W/$kt.pub"; then
		ok "$kt: openssl pkey -pubout ($("$OPENSSL" pkey -pubin -in "$W/$kt.pub" -noout -text 2>/dev/null | head -1))"
	else
		bad "$kt: pkey -pubout: $(head -c 300 "$W/err")"
	fi
	expect_reference "$kt" "$URI" "$W/$kt.pub"

	if ossl req $PROV -new -x509 -key "$URI" -subj "/CN=127.0.0.1 $kt" -days 2 \
		-addext "subjectAltName=IP:127.0.0.1" -out "$W/$kt.crt" 2>"$W/err" &&
	   "$OPENSSL" verify -CAfile "$W/$kt.crt" "$W/$kt.crt" >"$W/verify" 2>&1; then
		ok "$kt: req -x509 signed in the HSM, openssl verify ($("$OPENSSL" x509 -in "$W/$kt.crt" -noout -text | grep -m1 'Signature Algorithm' | tr -s ' '))"
	else
		bad "$kt: req/verify: $(head -c 300 "$W/err") $(cat "$W/verify" 2>/dev/null)"
	fi

	case $kt in
	ed*)
		# PureEdDSA: one-shot over the raw message, no digest.
		ossl pkeyutl $PROV -sign -rawin -inkey "$URI" -in "$W/msg" -out "$W/msg.sig" 2>"$W/err"
		"$OPENSSL" pkeyutl -verify -rawin -pubin -inkey "$W/$kt.pub" -in "$W/msg" \
			-sigfile "$W/msg.sig" >"$W/verify" 2>&1 ;;
	ec-p521)
		ossl dgst $PROV -sha512 -sign "$URI" -out "$W/msg.sig" "$W/msg" 2>"$W/err"
		"$OPENSSL" dgst -sha512 -verify "$W/$kt.pub" -signature "$W/msg.sig" "$W/msg" \
			>"$W/verify" 2>&1 ;;
	rsa-pss-*)
		# No -sigopt: a PSS-only key signs with PSS by default.
		ossl dgst $PROV -sha256 -sign "$URI" -out "$W/msg.sig" "$W/msg" 2>"$W/err"
		"$OPENSSL" dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest \
			-verify "$W/$kt.pub" -signature "$W/msg.sig" "$W/msg" >"$W/verify" 2>&1 ;;
	esac
	if grep -q 'Verified OK\|Signature Verified Successfully' "$W/verify"; then
		ok "$kt: signature made in the HSM verifies with the public key in software"
	else
		bad "$kt: signature: $(head -c 300 "$W/err") $(head -c 200 "$W/verify")"
	fi

	"$HSMWRAP" key export-ref "k-$kt" -o "$W/$kt.ref.pem" >/dev/null 2>"$W/err" ||
		bad "$kt: export-ref: $(head -c 200 "$W/err")"
	for keysrc in uri ref; do
		if [ $keysrc = uri ]; then key=$URI; else key=$W/$kt.ref.pem; fi
		if ! start_server "$key" "$W/$kt.crt"; then
			bad "$kt/$keysrc: s_server did not start: $(head -c 400 "$W/server.log")"
			continue
		fi
		tls_check "$kt/$keysrc: TLS 1.3 handshake signed in the HSM" "$W/$kt.crt" -tls1_3
		case $kt in
		ed25519) grep -q 'Peer signature type: ed25519' "$W/client.log" ;;
		ed448) grep -q 'Peer signature type: ed448' "$W/client.log" ;;
		ec-p521) grep -q 'Peer signing digest: SHA512' "$W/client.log" ;;
		rsa-pss-*) grep -q 'Peer signature type: RSA-PSS' "$W/client.log" ;;
		esac || bad "$kt/$keysrc: unexpected signature scheme: $(grep -a 'Peer sig' "$W/client.log" | tr '\n' ' ')"
		cleanup
	done
done

# ---------------------------------------------------------------------
# Keys with CKA_ALWAYS_AUTHENTICATE (made by pkcs11-tool --always-auth,
# as PIV cards and guarded HSM keys are): every operation needs a
# context-specific login, which the library does with the user PIN after
# C_SignInit/C_DecryptInit. Without it the token says "not logged in".

for aa in ec:EC:prime256v1 rsa:rsa:2048; do
	name=aa-${aa%%:*} ktype=${aa#*:}
	URI="pkcs11:object=$name;type=private"
	usage=--usage-sign
	[ "${aa%%:*}" = rsa ] && usage="--usage-sign --usage-decrypt"
	# shellcheck disable=SC2086
	if ! p11 --keypairgen --key-type "$ktype" --label "$name" --id "$(printf %s "$name" | od -An -tx1 | tr -d ' \n')" \
		--always-auth $usage >"$W/p11.log" 2>&1; then
		bad "$name: pkcs11-tool --keypairgen --always-auth: $(head -c 300 "$W/p11.log")"
		continue
	fi
	case $(p11_access "$name") in
	*"always authenticate"*) ;;
	*) bad "$name: the key is not always-authenticate: $(p11_access "$name")"; continue ;;
	esac
	if ossl pkey $PROV -in "$URI" -pubout -out "$W/$name.pub" 2>"$W/err" &&
	   ossl dgst $PROV -sha256 -sign "$URI" -out "$W/$name.sig" "$W/msg" 2>>"$W/err" &&
	   ossl dgst $PROV -sha256 -sign "$URI" -out "$W/$name.sig2" "$W/msg" 2>>"$W/err" &&
	   "$OPENSSL" dgst -sha256 -verify "$W/$name.pub" -signature "$W/$name.sig" "$W/msg" >/dev/null 2>&1 &&
	   "$OPENSSL" dgst -sha256 -verify "$W/$name.pub" -signature "$W/$name.sig2" "$W/msg" >/dev/null 2>&1; then
		ok "$name: always-authenticate key signs (context-specific login each time), verified"
	else
		bad "$name: always-authenticate signing: $(head -c 300 "$W/err")"
	fi
	if [ "${aa%%:*}" = rsa ]; then
		"$OPENSSL" pkeyutl -encrypt -pubin -inkey "$W/$name.pub" -in "$W/msg" -out "$W/$name.ct" 2>/dev/null
		if ossl pkeyutl $PROV -decrypt -inkey "$URI" -in "$W/$name.ct" -out "$W/$name.pt" 2>"$W/err" &&
		   cmp -s "$W/msg" "$W/$name.pt"; then
			ok "$name: always-authenticate key decrypts"
		else
			bad "$name: always-authenticate decryption: $(head -c 300 "$W/err")"
		fi
	fi
	# A TLS server signs once per handshake: a login per handshake.
	if ossl req $PROV -new -x509 -key "$URI" -subj "/CN=127.0.0.1 $name" -days 2 \
		-addext "subjectAltName=IP:127.0.0.1" -out "$W/$name.crt" 2>"$W/err" &&
	   start_server "$URI" "$W/$name.crt"; then
		tls_check "$name: TLS 1.3 handshake with the always-authenticate key" "$W/$name.crt" -tls1_3
		cleanup
	else
		bad "$name: certificate/s_server: $(head -c 300 "$W/err") $(head -c 300 "$W/server.log")"
	fi
done

# ---------------------------------------------------------------------
# Another user of the same module in the same process (its own
# C_Initialize first, logged in): the provider shares the module, signs,
# and never finalises it under the other user (tests/shared-module.c).

SHARED=$(dirname "$HSMWRAP")/tests/shared-module
if [ -x "$SHARED" ]; then
	OPENSSL_MODULES=$MODDIR "$SHARED" "$HSMWRAP_MODULE" hsmwrap-test "$HW_TEST_USER_PIN_FILE" \
		"pkcs11:object=k-ec-p521;type=private" >"$W/shared.log" 2>&1
	rc=$?
	while IFS= read -r line; do
		case $line in
		"ok   "*) ok "shared module: ${line#ok   }" ;;
		"FAIL "*) bad "shared module: ${line#FAIL }" ;;
		esac
	done <"$W/shared.log"
	[ $rc -eq 0 ] || bad "shared-module exit $rc: $(grep -v '^ok' "$W/shared.log" | head -c 300)"
else
	bad "tests/shared-module was not built"
fi

# ---------------------------------------------------------------------
# Bad input.

expect_fail "an unknown key type is a usage error naming the types" "unknown --type.*ed25519" \
	"$HSMWRAP" key create --label bad --type ed9999
expect_fail "an RSA-PSS-only key cannot be a decrypt key" "does not fit" \
	"$HSMWRAP" key create --label bad --type rsa-pss-2048 --purpose decrypt
expect_fail "Ed25519 with a digest is refused (PureEdDSA signs the message)" "no digest\|not supported" \
	ossl dgst $PROV -sha256 -sign "pkcs11:object=k-ed25519;type=private" -out "$W/x" "$W/msg"
expect_fail "PKCS#1 v1.5 with a PSS-only key is refused" "RSA-PSS signatures only" \
	ossl dgst $PROV -sha256 -sigopt rsa_padding_mode:pkcs1 \
	-sign "pkcs11:object=k-rsa-pss-2048;type=private" -out "$W/x" "$W/msg"
"$OPENSSL" pkeyutl -encrypt -pubin -inkey "$W/rsa-pss-2048.pub" -in "$W/msg" -out "$W/ct" 2>/dev/null
expect_fail "a PSS-only key does not decrypt (the token's flags, no fallback)" "purpose\|not allow" \
	ossl pkeyutl $PROV -decrypt -inkey "pkcs11:object=k-rsa-pss-2048;type=private" \
	-in "$W/ct" -out "$W/pt"
# The token itself enforces the restriction: pkcs11-tool, bypassing
# hsmwrap, cannot make a PKCS#1 v1.5 signature with the key either, and
# can make a PSS one (the control: the same key). By --id: pkcs11-tool's
# --sign does not select by --label, it took the first signing key
# found (an RSA key without restriction, once there was one).
pss_id=$(p11 --list-objects --type privkey 2>/dev/null |
	awk '/^[^ \t]/ { l = "" } /label:/ { l = $2 } /ID:/ && l == "k-rsa-pss-2048" { print $2; exit }')
p11 --sign -m RSA-PKCS --id "${pss_id:-none}" -i "$W/msg" -o "$W/p11.sig" >"$W/p11.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q 'C_SignInit failed: rv = CKR_MECHANISM_INVALID' "$W/p11.log"; then
	ok "the token refuses PKCS#1 v1.5 with the PSS-only key to pkcs11-tool too"
else
	bad "pkcs11-tool PKCS#1 with the PSS-only key (id ${pss_id:-?}, exit $rc): $(head -c 300 "$W/p11.log")"
fi
if p11 --sign -m SHA256-RSA-PKCS-PSS --id "${pss_id:-none}" -i "$W/msg" -o "$W/p11.sig" \
	>"$W/p11.log" 2>&1 &&
   "$OPENSSL" dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest \
	-verify "$W/rsa-pss-2048.pub" -signature "$W/p11.sig" "$W/msg" >/dev/null 2>&1; then
	ok "... and signs with PSS for pkcs11-tool (the same key), verified"
else
	bad "pkcs11-tool PSS with the PSS-only key: $(head -c 300 "$W/p11.log")"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
