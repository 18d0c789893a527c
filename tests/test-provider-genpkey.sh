#!/bin/sh
# test-provider-genpkey.sh - key generation through OpenSSL (issue 13):
# `openssl genpkey -propquery '?provider=hsmwrap' -pkeyopt
# hsmwrap-label:LABEL` makes the key pair in the HSM (sensitive, never
# extractable: pkcs11-tool checks), `hsmwrap key list` shows it with its
# type and purpose, and the PEM file written is a key reference (no key
# material) that openssl then signs or derives with. Bad input: sizes,
# curves and purposes hsmwrap does not make, a label in use, an RSA key
# without a label: a clear error, nothing made.
# Runs under tests/with-token.sh.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
MODDIR=$(dirname "$HSMWRAP")/.libs
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/provider-genpkey
mkdir -p "$W" || exit 99

if [ -z "$OPENSSL" ] || [ ! -f "$MODDIR/hsmwrap.so" ] || [ -z "$PKCS11_TOOL" ]; then
	echo "test-provider-genpkey.sh: openssl, pkcs11-tool or $MODDIR/hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

GEN="genpkey $PROV -propquery ?provider=hsmwrap"
printf 'signed by a key made through openssl\n' >"$W/msg"

# gen NAME LABEL TYPE PURPOSE GENPKEY-ARG...: genpkey makes LABEL; checks
# the file, the token (pkcs11-tool) and hsmwrap's view (TYPE, PURPOSE).
gen() {
	name=$1 label=$2 type=$3 purpose=$4
	shift 4
	# shellcheck disable=SC2086
	if ! ossl $GEN "$@" -pkeyopt "hsmwrap-label:$label" -out "$W/$label.pem" 2>"$W/err"; then
		bad "$name: genpkey: $(head -c 300 "$W/err")"
		return 1
	fi
	if grep -q -- '-----BEGIN HSMWRAP KEY REFERENCE-----' "$W/$label.pem" &&
		! grep -q 'PRIVATE KEY' "$W/$label.pem" &&
		"$OPENSSL" base64 -d -in "$W/$label.pem" 2>/dev/null | grep -q "object=$label;"; then
		ok "$name: the file written is a key reference to '$label'"
	else
		bad "$name: the file written is not a reference: $(head -c 200 "$W/$label.pem")"
	fi
	case $(p11_access "$label") in
	*sensitive*"never extractable"*) ok "$name: on the token, sensitive, never extractable (pkcs11-tool)" ;;
	*) bad "$name: pkcs11-tool access '$(p11_access "$label")'" ;;
	esac
	"$HSMWRAP" key list >"$W/list" 2>&1
	if grep -q "^$label  *$type  *$purpose " "$W/list"; then
		ok "$name: hsmwrap key list: $type, $purpose"
	else
		bad "$name: key list: $(grep "$label" "$W/list")"
	fi
}

# signs NAME LABEL [DGST-ARG...]: the reference file signs; software verifies.
signs() {
	name=$1 label=$2
	shift 2
	rm -f "$W/sig"
	if ossl pkey $PROV -in "$W/$label.pem" -pubout -out "$W/$label.pub" 2>"$W/err" &&
		ossl pkeyutl $PROV -sign -rawin -inkey "$W/$label.pem" "$@" -in "$W/msg" \
			-out "$W/sig" 2>>"$W/err" &&
		"$OPENSSL" pkeyutl -verify -rawin -pubin -inkey "$W/$label.pub" "$@" -in "$W/msg" \
			-sigfile "$W/sig" >/dev/null 2>>"$W/err"; then
		ok "$name: signs through the reference file; software verifies"
	else
		bad "$name: sign/verify: $(head -c 300 "$W/err")"
	fi
}

gen "EC P-256" gen-ec ec-p256 sign -algorithm EC -pkeyopt group:P-256 &&
	signs "EC P-256" gen-ec -digest sha256
gen "RSA-3072" gen-rsa rsa3072 sign -algorithm RSA -pkeyopt bits:3072 &&
	signs "RSA-3072" gen-rsa -digest sha256
gen "Ed25519" gen-ed ed25519 sign -algorithm ED25519 && signs "Ed25519" gen-ed
gen "RSA-2048 (OpenSSL's default size), decrypt" gen-dec rsa2048 decrypt -algorithm RSA \
	-pkeyopt hsmwrap-purpose:decrypt
if gen "EC P-384, derive" gen-dh ec-p384 derive -algorithm EC -pkeyopt group:secp384r1 \
	-pkeyopt hsmwrap-purpose:derive; then
	"$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$W/peer.key" 2>/dev/null
	"$OPENSSL" pkey -in "$W/peer.key" -pubout -out "$W/peer.pub" 2>/dev/null
	ossl pkey $PROV -in "$W/gen-dh.pem" -pubout -out "$W/gen-dh.pub" 2>/dev/null
	ossl pkeyutl $PROV -derive -inkey "$W/gen-dh.pem" -peerkey "$W/peer.pub" -out "$W/s1" 2>"$W/err"
	"$OPENSSL" pkeyutl -derive -inkey "$W/peer.key" -peerkey "$W/gen-dh.pub" -out "$W/s2" 2>/dev/null
	if [ -s "$W/s1" ] && cmp -s "$W/s1" "$W/s2"; then
		ok "EC P-384 derive: ECDH through the reference file = the software side"
	else
		bad "EC P-384 derive: $(head -c 300 "$W/err")"
	fi
fi
# Re-encoding an HSM key gives the same reference, not key material.
if ossl pkey $PROV -in "$W/gen-ec.pem" -out "$W/again.pem" 2>"$W/err" &&
	cmp -s "$W/gen-ec.pem" "$W/again.pem"; then
	ok "openssl pkey -out on an HSM key writes the same reference"
else
	bad "pkey -out of an HSM key: $(head -c 300 "$W/err")"
fi

# ---------------------------------------------------------------------
# Bad input: nothing made on the token.

"$HSMWRAP" key list >"$W/before" 2>&1
# shellcheck disable=SC2086
expect_fail "RSA-1024 is refused" "2048, 3072 or 4096" \
	ossl $GEN -algorithm RSA -pkeyopt bits:1024 -pkeyopt hsmwrap-label:x1
# shellcheck disable=SC2086
expect_fail "a curve hsmwrap does not make" "P-256, P-384 or P-521" \
	ossl $GEN -algorithm EC -pkeyopt group:secp256k1 -pkeyopt hsmwrap-label:x2
# shellcheck disable=SC2086
expect_fail "an unknown purpose" "purpose 'wrapping'" \
	ossl $GEN -algorithm EC -pkeyopt group:P-256 -pkeyopt hsmwrap-label:x3 \
	-pkeyopt hsmwrap-purpose:wrapping
# shellcheck disable=SC2086
expect_fail "a purpose that does not fit the key type" "purpose\|fit" \
	ossl $GEN -algorithm ED25519 -pkeyopt hsmwrap-label:x4 -pkeyopt hsmwrap-purpose:derive
# shellcheck disable=SC2086
expect_fail "a label already in use" "exists" \
	ossl $GEN -algorithm EC -pkeyopt group:P-256 -pkeyopt hsmwrap-label:gen-ec
# shellcheck disable=SC2086
expect_fail "an RSA key without a label (no software keys from this provider)" \
	"made on the token only" ossl $GEN -algorithm RSA
"$HSMWRAP" key list >"$W/after" 2>&1
if cmp -s "$W/before" "$W/after"; then
	ok "the refused requests made nothing on the token"
else
	bad "the token changed: $(diff "$W/before" "$W/after" | head -c 300)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
