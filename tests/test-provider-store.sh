#!/bin/sh
# test-provider-store.sh - certificates and foreign key references through
# the provider (issue 13, item 2). The CA ceremony (hsmwrap ca init) stores
# its certificate on the token; a TLS server certificate issued by it is
# written next to its key with pkcs11-tool. Then: openssl storeutl -certs
# lists them, a URI without type= yields key and certificate, s_server
# takes both key and certificate from the token (verified by s_client
# against the CA), and pkcs11-provider's "PKCS#11 PROVIDER URI" reference
# files -- built here independently with openssl asn1parse -genconf --
# load like hsmwrap's own. Bad input: no certificate, an unknown type=, a
# corrupt pkcs11-provider reference: a clear error, no crash.
# Runs under tests/with-token.sh.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
MODDIR=$(dirname "$HSMWRAP")/.libs
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/provider-store
mkdir -p "$W" || exit 99

if [ -z "$OPENSSL" ] || [ ! -f "$MODDIR/hsmwrap.so" ] || [ -z "$PKCS11_TOOL" ]; then
	echo "test-provider-store.sh: openssl, pkcs11-tool or $MODDIR/hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

# fp FILE: SHA-256 fingerprint of a PEM certificate.
fp() { "$OPENSSL" x509 -in "$1" -noout -fingerprint -sha256 2>/dev/null; }

# ---------------------------------------------------------------------
# A CA on the token, and a server certificate stored next to its key.

if ! "$HSMWRAP" ca init --key root-ca --type ec-p384 --subject "/O=hsmwrap test/CN=Store Root" \
	--days 30 -o "$W/root.pem" >"$W/ca.log" 2>&1; then
	bad "hsmwrap ca init: $(head -c 300 "$W/ca.log")"
	echo "$passed passed, $failed failed"
	exit 1
fi
"$HSMWRAP" key create --label web --type ec-p256 >"$W/web.log" 2>&1 ||
	bad "key create web: $(head -c 300 "$W/web.log")"
id=$(awk '/^URI:/ { if (match($0, /id=[^;]*/)) print substr($0, RSTART + 3, RLENGTH - 3) }' \
	"$W/web.log" | tr -d '%')
ossl req $PROV -new -key "pkcs11:object=web;type=private" -subj "/CN=127.0.0.1" \
	-out "$W/web.csr" 2>"$W/err" || bad "req -new with the HSM key: $(head -c 300 "$W/err")"
"$HSMWRAP" ca sign --key root-ca --csr "$W/web.csr" --profile tls-server --san IP:127.0.0.1 \
	--days 10 -o "$W/web.pem" >"$W/sign.log" 2>&1 || bad "ca sign: $(head -c 300 "$W/sign.log")"
"$OPENSSL" x509 -in "$W/web.pem" -outform DER -out "$W/web.der" 2>/dev/null
p11 --write-object "$W/web.der" --type cert --id "$id" --label web >"$W/p11.log" 2>&1 ||
	bad "pkcs11-tool --write-object: $(head -c 300 "$W/p11.log")"

# ---------------------------------------------------------------------
# storeutl.

if ossl storeutl $PROV -certs "pkcs11:token=hsmwrap-test" >"$W/all.txt" 2>"$W/err" &&
   grep -q 'Total found: 2' "$W/all.txt"; then
	ok "storeutl -certs 'pkcs11:token=hsmwrap-test' lists the CA's and the server's certificates"
else
	bad "storeutl -certs token: $(grep Total "$W/all.txt") $(head -c 300 "$W/err")"
fi
if ossl storeutl $PROV -certs "pkcs11:object=root-ca;type=cert" >"$W/root.txt" 2>"$W/err" &&
   sed -n '/BEGIN CERT/,/END CERT/p' "$W/root.txt" >"$W/root-token.pem" &&
   [ -n "$(fp "$W/root.pem")" ] && [ "$(fp "$W/root.pem")" = "$(fp "$W/root-token.pem")" ]; then
	ok "storeutl -certs 'pkcs11:object=root-ca;type=cert' is the ceremony's certificate"
else
	bad "storeutl root-ca: $(head -c 300 "$W/err")"
fi
if ossl storeutl $PROV -noout "pkcs11:object=web" >"$W/web.txt" 2>"$W/err" &&
   grep -q '^0: Pkey' "$W/web.txt" && grep -q '^1: Certificate' "$W/web.txt"; then
	ok "storeutl 'pkcs11:object=web' (no type=) yields the key, then its certificate"
else
	bad "storeutl web: $(grep -a '^[0-9]:\|Total' "$W/web.txt" | tr '\n' ' ') $(head -c 300 "$W/err")"
fi

# ---------------------------------------------------------------------
# s_server with key and certificate from the token.

if start_server "pkcs11:object=web;type=private" "pkcs11:object=web;type=cert"; then
	tls_check "s_server -cert 'pkcs11:object=web;type=cert', s_client verifies against the CA" \
		"$W/root.pem" -tls1_3
	tls_check "the same over TLS 1.2" "$W/root.pem" -tls1_2
	cleanup
else
	bad "s_server with key and cert URIs did not start: $(head -c 400 "$W/server.log")"
fi

# ---------------------------------------------------------------------
# pkcs11-provider's key-reference files.

# p11prov_ref URI DESC > FILE: the PEM pkcs11-provider writes, built from
# its ASN.1 definition with openssl's own encoder.
p11prov_ref() {
	# '#' starts a comment in openssl's config syntax: escape it.
	printf 'asn1=SEQUENCE:ref\n[ref]\ndesc=VISIBLESTRING:%s\nuri=UTF8:%s\n' \
		"$(printf '%s' "$2" | sed 's/#/\\#/g')" "$1" >"$W/ref.cnf"
	"$OPENSSL" asn1parse -genconf "$W/ref.cnf" -out "$W/ref.der" >/dev/null 2>&1 &&
	{ echo '-----BEGIN PKCS#11 PROVIDER URI-----'
	  "$OPENSSL" base64 -in "$W/ref.der"
	  echo '-----END PKCS#11 PROVIDER URI-----'; }
}

web_uri=$(awk '/^URI:/ { print $2 }' "$W/web.log")
p11prov_ref "$web_uri" "PKCS#11 Provider URI v1.0" >"$W/web.p11prov.pem"
ossl pkey $PROV -in "pkcs11:object=web;type=private" -pubout -out "$W/web.pub" 2>/dev/null
if ossl pkey $PROV -in "$W/web.p11prov.pem" -pubout -out "$W/web.refpub" 2>"$W/err" &&
   cmp -s "$W/web.pub" "$W/web.refpub"; then
	ok "a pkcs11-provider reference file (PKCS#11 PROVIDER URI) loads the same key"
else
	bad "pkcs11-provider reference: $(head -c 300 "$W/err")"
fi
if start_server "$W/web.p11prov.pem" "pkcs11:object=web;type=cert"; then
	tls_check "s_server -key pkcs11-provider-reference.pem" "$W/root.pem" -tls1_3
	cleanup
else
	bad "s_server with a pkcs11-provider reference did not start: $(head -c 400 "$W/server.log")"
fi

# ---------------------------------------------------------------------
# Bad input.

expect_fail "a certificate URI matching nothing" "no certificate on the token" \
	ossl s_server $PROV -key "pkcs11:object=web;type=private" \
	-cert "pkcs11:object=no-such;type=cert" -accept 127.0.0.1:0 -naccept 1
expect_fail "an unknown type= in the URI" "type= must be" \
	ossl storeutl $PROV "pkcs11:object=web;type=secret-key"
p11prov_ref "$web_uri" "Not a pkcs11-provider reference" >"$W/wrongdesc.pem"
expect_fail "a pkcs11-provider reference with the wrong description" "pkcs11-provider URI reference" \
	ossl pkey $PROV -in "$W/wrongdesc.pem" -pubout
{
	echo '-----BEGIN PKCS#11 PROVIDER URI-----'
	echo 'MAA='
	echo '-----END PKCS#11 PROVIDER URI-----'
} >"$W/empty.pem"
expect_fail "an empty pkcs11-provider reference" "pkcs11-provider URI reference" \
	ossl pkey $PROV -in "$W/empty.pem" -pubout

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
