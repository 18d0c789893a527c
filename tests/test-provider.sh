#!/bin/sh
# test-provider.sh - the hsmwrap OpenSSL provider with real OpenSSL peers.
# Runs under tests/with-token.sh (throwaway SoftHSM token, HSMWRAP_* set).
# One "ok"/"FAIL" line per check, then "N passed, N failed".
#
# Checks: openssl pkey/req/dgst/verify with pkcs11: URIs, s_server with
# the HSM key (RSA and EC) and s_client over TLS 1.2 and 1.3 verifying the
# certificate, the same through a key-reference file, pkcs11-tool's view
# of the keys, and bad input (unknown key, wrong PIN, corrupt or stale
# reference) failing with a message and without a crash.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
MODDIR=$(dirname "$HSMWRAP")/.libs
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/provider
mkdir -p "$W" || exit 99

if [ -z "$OPENSSL" ] || [ ! -f "$MODDIR/hsmwrap.so" ]; then
	echo "test-provider.sh: openssl or $MODDIR/hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

# ---------------------------------------------------------------------
# Keys and the basics, per key type.

for kt in rsa2048 ec-p256; do
	if ! "$HSMWRAP" key create --label "tls-$kt" --type "$kt" >"$W/create.log" 2>&1; then
		bad "hsmwrap key create tls-$kt: $(cat "$W/create.log")"
		continue
	fi
	URI="pkcs11:object=tls-$kt;type=private"

	if ossl pkey $PROV -in "$URI" -pubout -out "$W/$kt.pub" 2>"$W/err" &&
	   grep -q 'BEGIN PUBLIC KEY' "$W/$kt.pub"; then
		ok "$kt: openssl pkey -in '$URI' -pubout"
	else
		bad "$kt: openssl pkey -pubout: $(head -c 300 "$W/err")"
	fi

	expect_reference "$kt" "$URI" "$W/$kt.pub"

	if ossl req $PROV -new -x509 -key "$URI" -subj "/CN=127.0.0.1 $kt" -days 2 \
		-addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:TRUE" \
		-out "$W/$kt.crt" 2>"$W/err" &&
	   "$OPENSSL" verify -CAfile "$W/$kt.crt" "$W/$kt.crt" >"$W/verify" 2>&1; then
		ok "$kt: openssl req -x509 -key URI; openssl verify: $(cat "$W/verify")"
	else
		bad "$kt: req/verify: $(head -c 300 "$W/err") $(cat "$W/verify" 2>/dev/null)"
	fi

	"$OPENSSL" x509 -in "$W/$kt.crt" -pubkey -noout >"$W/$kt.crtpub" 2>/dev/null
	if cmp -s "$W/$kt.pub" "$W/$kt.crtpub"; then
		ok "$kt: the certificate carries the HSM key's public key"
	else
		bad "$kt: certificate public key differs from pkey -pubout"
	fi

	printf 'message for %s\n' "$kt" >"$W/msg"
	for md in sha256 sha384; do
		if ossl dgst $PROV -"$md" -sign "$URI" -out "$W/msg.sig" "$W/msg" 2>"$W/err" &&
		   "$OPENSSL" dgst -"$md" -verify "$W/$kt.pub" -signature "$W/msg.sig" "$W/msg" \
			>"$W/verify" 2>&1; then
			ok "$kt: openssl dgst -$md -sign URI, verified with the public key"
		else
			bad "$kt: dgst -$md: $(head -c 300 "$W/err") $(cat "$W/verify")"
		fi
	done
	if [ "$kt" = rsa2048 ]; then
		if ossl dgst $PROV -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest \
			-sign "$URI" -out "$W/msg.sig" "$W/msg" 2>"$W/err" &&
		   "$OPENSSL" dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest \
			-verify "$W/$kt.pub" -signature "$W/msg.sig" "$W/msg" >"$W/verify" 2>&1; then
			ok "$kt: RSA-PSS signature (salt = digest length) verifies"
		else
			bad "$kt: RSA-PSS: $(head -c 300 "$W/err") $(cat "$W/verify")"
		fi
		expect_fail "$kt: RSA-PSS with a 20-byte salt is refused, not faked" "salt" \
			ossl dgst $PROV -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:20 \
			-sign "$URI" -out "$W/msg.sig" "$W/msg"
		# A sign key may not decrypt: the HSM says no, nothing falls back.
		printf 'secret' | "$OPENSSL" pkeyutl -encrypt -pubin -inkey "$W/$kt.pub" \
			-out "$W/ct" 2>/dev/null
		expect_fail "$kt: RSA decryption with a sign-only key fails cleanly" "purpose\|not allow" \
			ossl pkeyutl $PROV -decrypt -inkey "$URI" -in "$W/ct" -out "$W/pt"
	fi

	"$HSMWRAP" key export-ref "tls-$kt" -o "$W/$kt.ref.pem" >"$W/ref.log" 2>&1
	if grep -q 'BEGIN HSMWRAP KEY REFERENCE' "$W/$kt.ref.pem" 2>/dev/null &&
	   ! grep -qi 'PRIVATE KEY' "$W/$kt.ref.pem" &&
	   ! grep -qF "$(cat "$HW_TEST_USER_PIN_FILE")" "$W/$kt.ref.pem"; then
		ok "$kt: hsmwrap key export-ref wrote a reference (no key, no PIN)"
	else
		bad "$kt: export-ref: $(cat "$W/ref.log")"
	fi
	if ossl pkey $PROV -in "$W/$kt.ref.pem" -pubout -out "$W/$kt.refpub" 2>"$W/err" &&
	   cmp -s "$W/$kt.pub" "$W/$kt.refpub"; then
		ok "$kt: openssl pkey -in key-reference file -pubout gives the same key"
	else
		bad "$kt: pkey -in ref: $(head -c 300 "$W/err")"
	fi
done

# ---------------------------------------------------------------------
# TLS: s_server with the HSM key, s_client verifying against the cert.

for kt in rsa2048 ec-p256; do
	for keysrc in uri ref; do
		if [ "$keysrc" = uri ]; then key="pkcs11:object=tls-$kt;type=private"; else key=$W/$kt.ref.pem; fi
		if ! start_server "$key" "$W/$kt.crt"; then
			bad "$kt/$keysrc: s_server did not start: $(head -c 400 "$W/server.log")"
			continue
		fi
		for v in tls1_2 tls1_3; do
			timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" -"$v" \
				-verify_return_error -CAfile "$W/$kt.crt" </dev/null >"$W/client.log" 2>&1
			rc=$?
			if [ $rc -eq 0 ] && grep -q 'Verify return code: 0 (ok)' "$W/client.log"; then
				ok "$kt/$keysrc: s_client -$v verified s_server's HSM key ($(grep -m1 -o 'Cipher is [^ ]*' "$W/client.log"))"
			else
				bad "$kt/$keysrc: s_client -$v exit $rc: $(grep -m3 -i 'error\|alert' "$W/client.log" | tr '\n' ' ') server: $(head -c 300 "$W/server.log")"
			fi
		done
		cleanup
	done
done

# ---------------------------------------------------------------------
# Regression: hsmwrap listed BEFORE the default provider. Unqualified
# fetches of "EC" then land in hsmwrap, and libssl used to drop every NIST
# group: TLS 1.2 with an EC key failed with "no shared cipher", TLS 1.3
# with only P-256/P-384 key shares with "no suitable key share". The
# provider now announces those groups and makes the ephemeral keys.

PROV_SAVED=$PROV
PROV="-provider hsmwrap -provider default"
for kt in ec-p256 rsa2048; do
	key="pkcs11:object=tls-$kt;type=private"
	if ! start_server "$key" "$W/$kt.crt"; then
		bad "hsmwrap first, $kt: s_server did not start: $(head -c 400 "$W/server.log")"
		continue
	fi
	for v in "-tls1_2" "-tls1_3 -groups P-256:P-384"; do
		timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" $v \
			-verify_return_error -CAfile "$W/$kt.crt" </dev/null >"$W/client.log" 2>&1
		rc=$?
		if [ $rc -eq 0 ] && grep -q 'Verify return code: 0 (ok)' "$W/client.log"; then
			ok "hsmwrap first, $kt: s_client $v ($(grep -m1 -o 'Cipher is [^ ]*' "$W/client.log"), $(grep -m1 -o 'Server Temp Key: [^,]*, [^,]*' "$W/client.log"))"
		else
			bad "hsmwrap first, $kt: s_client $v exit $rc: $(grep -a -m3 -i 'error\|alert' "$W/client.log" | tr '\n' ' ') server: $(head -c 300 "$W/server.log")"
		fi
	done
	cleanup
done
PROV=$PROV_SAVED

# ---------------------------------------------------------------------
# Several threads signing with one HSM key at once through the provider;
# every signature is verified with the public key by the default provider.

BENCH_SIGN=$(dirname "$HSMWRAP")/hsmwrap-bench-sign
if [ -x "$BENCH_SIGN" ]; then
	if OPENSSL_MODULES=$MODDIR ${PRELOAD:+env LD_PRELOAD=$PRELOAD} "$BENCH_SIGN" -t 8 -n 12 \
		tls-rsa2048 tls-ec-p256 >"$W/threads.log" 2>&1; then
		ok "8 threads signing at once: $(tr '\n' ';' <"$W/threads.log")"
	else
		bad "8 threads signing at once: $(head -c 400 "$W/threads.log")"
	fi
else
	bad "$BENCH_SIGN not built"
fi

# ---------------------------------------------------------------------
# pkcs11-tool, independently: the keys are sensitive and non-extractable.

if [ -n "$PKCS11_TOOL" ]; then
	slot=$(p11_slot hsmwrap-test "$HSMWRAP_MODULE")
	HW_P11_PIN=$(cat "$HW_TEST_USER_PIN_FILE") "$PKCS11_TOOL" --module "$HSMWRAP_MODULE" \
		--slot "${slot:-none}" --login --pin env:HW_P11_PIN --list-objects --type privkey \
		>"$W/p11.log" 2>&1
	for kt in rsa2048 ec-p256; do
		acc=$(awk -v l="tls-$kt" '/^[^ \t]/ { cur = "" } /label:/ { cur = $2 }
			/Access:/ && cur == l { sub(/^[ \t]+Access:[ \t]*/, ""); print }' "$W/p11.log")
		case $acc in
		*"never extractable"*)
			case $acc in
			*sensitive*) ok "pkcs11-tool: tls-$kt private key: $acc" ;;
			*) bad "pkcs11-tool: tls-$kt not sensitive: $acc" ;;
			esac ;;
		*) bad "pkcs11-tool: tls-$kt access '$acc'" ;;
		esac
	done
else
	bad "pkcs11-tool not found"
fi

# ---------------------------------------------------------------------
# Bad input: an error message, a non-zero exit, no crash.

expect_fail "a URI naming no key" "not found\|no such\|could not" \
	ossl pkey $PROV -in "pkcs11:object=no-such-key" -pubout
printf 'wrong-pin-0000' >"$W/wrong.pin"
chmod 600 "$W/wrong.pin"
expect_fail "a wrong PIN" "PIN" \
	env HSMWRAP_PIN_SOURCE="file:$W/wrong.pin" \
	sh -c 'ossl() { :; }; exec "$@"' sh \
	${PRELOAD:+env LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0} \
	env OPENSSL_MODULES="$MODDIR" "$OPENSSL" pkey $PROV -in "pkcs11:object=tls-ec-p256" -pubout
{
	echo '-----BEGIN HSMWRAP KEY REFERENCE-----'
	echo 'cGtjczExOm9iamVjdD10bHMt!!!not base64@@@'
	echo '-----END HSMWRAP KEY REFERENCE-----'
} >"$W/corrupt.pem"
expect_fail "a corrupt key-reference file" "reference\|could not\|unable" \
	ossl pkey $PROV -in "$W/corrupt.pem" -pubout
if "$HSMWRAP" key create --label doomed --type ec-p256 >/dev/null 2>&1 &&
   "$HSMWRAP" key export-ref doomed -o "$W/doomed.pem" >/dev/null 2>&1 &&
   "$HSMWRAP" key destroy doomed --yes >/dev/null 2>&1; then
	expect_fail "a key-reference file naming a destroyed key" "not found\|could not read key" \
		ossl pkey $PROV -in "$W/doomed.pem" -pubout
else
	bad "could not create/export/destroy the key 'doomed'"
fi
expect_fail "an AES key is not an OpenSSL private key" "neither\|purpose\|secret" \
	sh -c '"$1" key create --label aes1 --type aes256 >/dev/null 2>&1; shift; exec "$@"' sh \
	"$HSMWRAP" env ${PRELOAD:+LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0} \
	OPENSSL_MODULES="$MODDIR" "$OPENSSL" pkey $PROV -in "pkcs11:object=aes1" -pubout

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
