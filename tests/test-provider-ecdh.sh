#!/bin/sh
# test-provider-ecdh.sh - ECDH in the HSM through the provider (issue 13,
# item 3). A `derive` EC key (CKA_DERIVE, no signing; sensitive and never
# extractable, which pkcs11-tool confirms) agrees on a secret with a
# software key: openssl pkeyutl -derive with the HSM key and the peer's
# public key gives the same bytes as the software side with the HSM key's
# public half. Bad input: a sign key (no CKA_DERIVE: the token refuses),
# a peer on another curve, an RSA key, a derive key asked to sign, an
# unknown purpose: a clear error, no crash, no software fallback.
# Runs under tests/with-token.sh.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
MODDIR=$(dirname "$HSMWRAP")/.libs
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/provider-ecdh
mkdir -p "$W" || exit 99

if [ -z "$OPENSSL" ] || [ ! -f "$MODDIR/hsmwrap.so" ] || [ -z "$PKCS11_TOOL" ]; then
	echo "test-provider-ecdh.sh: openssl, pkcs11-tool or $MODDIR/hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

for kt in ec-p256 ec-p384 ec-p521; do
	case $kt in ec-p256) curve=P-256 ;; ec-p384) curve=P-384 ;; *) curve=P-521 ;; esac
	URI="pkcs11:object=dh-$kt;type=private"
	if ! "$HSMWRAP" key create --label "dh-$kt" --type "$kt" --purpose derive \
		>"$W/create.log" 2>&1; then
		bad "key create --purpose derive $kt: $(head -c 300 "$W/create.log")"
		continue
	fi
	acc=$(p11_access "dh-$kt")
	case $acc in
	*sensitive*"never extractable"*) ok "$kt derive key: pkcs11-tool: $acc" ;;
	*) bad "$kt derive key: pkcs11-tool access '$acc'" ;;
	esac
	ossl pkey $PROV -in "$URI" -pubout -out "$W/hsm.pub" 2>"$W/err" ||
		bad "$kt: pkey -pubout: $(head -c 200 "$W/err")"
	"$OPENSSL" genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$curve" -out "$W/peer.key" \
		2>/dev/null
	"$OPENSSL" pkey -in "$W/peer.key" -pubout -out "$W/peer.pub" 2>/dev/null
	ossl pkeyutl $PROV -derive -inkey "$URI" -peerkey "$W/peer.pub" -out "$W/s.hsm" 2>"$W/err"
	"$OPENSSL" pkeyutl -derive -inkey "$W/peer.key" -peerkey "$W/hsm.pub" -out "$W/s.soft" \
		2>>"$W/err"
	if [ -s "$W/s.hsm" ] && cmp -s "$W/s.hsm" "$W/s.soft"; then
		ok "$kt: pkeyutl -derive in the HSM = the software side's secret ($(wc -c <"$W/s.hsm") bytes)"
	else
		bad "$kt: ECDH secrets differ or failed: $(head -c 300 "$W/err")"
	fi
	rm -f "$W/s.hsm" "$W/s.soft"
done

# ---------------------------------------------------------------------
# Bad input.

"$HSMWRAP" key create --label dh-sign --type ec-p256 >/dev/null 2>&1
"$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/p256.key" 2>/dev/null
"$OPENSSL" pkey -in "$W/p256.key" -pubout -out "$W/p256.pub" 2>/dev/null
expect_fail "a sign key has no CKA_DERIVE: the token refuses ECDH" "ECDH with the HSM key" \
	ossl pkeyutl $PROV -derive -inkey "pkcs11:object=dh-sign;type=private" \
	-peerkey "$W/p256.pub" -out "$W/x"
expect_fail "a peer on another curve" "another curve\|different\|mismatch" \
	ossl pkeyutl $PROV -derive -inkey "pkcs11:object=dh-ec-p384;type=private" \
	-peerkey "$W/p256.pub" -out "$W/x"
"$HSMWRAP" key create --label dh-rsa --type rsa2048 >/dev/null 2>&1
expect_fail "an RSA key cannot do ECDH" "not supported\|derive\|operation" \
	ossl pkeyutl $PROV -derive -inkey "pkcs11:object=dh-rsa;type=private" \
	-peerkey "$W/p256.pub" -out "$W/x"
printf 'msg' >"$W/msg"
expect_fail "a derive key does not sign" "purpose\|not allow\|cannot" \
	ossl dgst $PROV -sha256 -sign "pkcs11:object=dh-ec-p256;type=private" -out "$W/x" "$W/msg"
expect_fail "derive is for EC keys only" "does not fit" \
	"$HSMWRAP" key create --label bad --type rsa2048 --purpose derive
[ -s "$W/x" ] && bad "a failed operation left output behind"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
