#!/bin/sh
# test-provider-cms.sh - CMS (S/MIME) with HSM keys through the provider
# (issue 13): `openssl cms -sign` with RSA (PKCS#1 v1.5 and PSS), ECDSA and
# Ed25519 keys on the token, verified by a plain `openssl cms -verify` that
# never loads the provider; `openssl cms -decrypt` of messages a plain
# `openssl cms -encrypt` made for an HSM key's certificate: RSA-OAEP (SHA-1
# and SHA-256) key transport and ECDH key agreement (RFC 5753: the secret
# from the HSM, the X9.63 KDF on the host; P-256 and P-384). Bad input:
# the wrong HSM key, a key of the wrong purpose, a tampered message: a
# clear error and no plaintext. Runs under tests/with-token.sh.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
MODDIR=$(dirname "$HSMWRAP")/.libs
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/provider-cms
mkdir -p "$W" || exit 99

if [ -z "$OPENSSL" ] || [ ! -f "$MODDIR/hsmwrap.so" ] || [ -z "$PKCS11_TOOL" ]; then
	echo "test-provider-cms.sh: openssl, pkcs11-tool or $MODDIR/hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

# mk LABEL TYPE PURPOSE: an HSM key, checked sensitive and never extractable.
mk() {
	if ! "$HSMWRAP" key create --label "$1" --type "$2" --purpose "$3" >"$W/create.log" 2>&1; then
		bad "key create $1 ($2, $3): $(head -c 300 "$W/create.log")"
		return 1
	fi
	case $(p11_access "$1") in
	*sensitive*"never extractable"*) ;;
	*) bad "$1: pkcs11-tool access '$(p11_access "$1")'" ;;
	esac
}
uri() { echo "pkcs11:object=$1;type=private"; }

printf 'To: board\n\nThe quarterly figures, under embargo.\n' >"$W/msg"
"$OPENSSL" req -new -x509 -newkey rsa:2048 -nodes -keyout "$W/ca.key" -subj /CN=cms-test-ca \
	-days 2 -out "$W/ca.crt" 2>/dev/null || exit 99

# ---------------------------------------------------------------------
# Signing: the HSM key signs, software verifies.

# sign_case NAME LABEL TYPE [CMS-SIGN-ARG...]
sign_case() {
	name=$1 label=$2 type=$3
	shift 3
	mk "$label" "$type" sign || return
	if ! ossl req $PROV -new -x509 -key "$(uri "$label")" -subj "/CN=$label" -days 2 \
		-out "$W/$label.crt" 2>"$W/err"; then
		bad "$name: a certificate for the HSM key: $(head -c 300 "$W/err")"
		return
	fi
	rm -f "$W/$label.p7"
	if ! ossl cms $PROV -sign -binary -signer "$W/$label.crt" -inkey "$(uri "$label")" "$@" \
		-in "$W/msg" -outform PEM -out "$W/$label.p7" 2>"$W/err"; then
		bad "$name: cms -sign: $(head -c 300 "$W/err")"
		return
	fi
	content=
	case " $* " in *" -nodetach "*) ;; *) content="-content $W/msg" ;; esac
	# shellcheck disable=SC2086 # content is an option and its file
	if "$OPENSSL" cms -verify -binary -CAfile "$W/$label.crt" -inform PEM -in "$W/$label.p7" \
		$content -out "$W/$label.out" 2>"$W/err" && cmp -s "$W/msg" "$W/$label.out"; then
		ok "$name: signed in the HSM, verified by plain openssl cms"
	else
		bad "$name: verify: $(head -c 300 "$W/err")"
	fi
}
sign_case "RSA-2048 PKCS#1 v1.5" cms-rsa rsa2048 -nodetach
sign_case "RSA-3072 PSS" cms-pss rsa3072 -nodetach -keyopt rsa_padding_mode:pss
"$OPENSSL" cms -cmsout -print -inform PEM -in "$W/cms-pss.p7" 2>/dev/null | grep -q 'rsassaPss' &&
	ok "... the PSS signature says rsassaPss" || bad "... the PSS message has no rsassaPss signature"
sign_case "ECDSA P-256" cms-ec ec-p256 -nodetach
# Not Ed25519: OpenSSL 3.0's CMS cannot sign with EdDSA keys at all ("no
# default digest", software keys alike; RFC 8419 support came later).
sign_case "RSA-2048 detached" cms-rsa2 rsa2048

# A signature over other content must not verify: the check above can fail.
if [ -s "$W/cms-rsa2.p7" ]; then
	printf 'tampered\n' >"$W/msg2"
	if "$OPENSSL" cms -verify -binary -CAfile "$W/cms-rsa2.crt" -inform PEM \
		-in "$W/cms-rsa2.p7" -content "$W/msg2" -out /dev/null 2>/dev/null; then
		bad "a detached signature verified over other content"
	else
		ok "a detached signature over other content is refused"
	fi
fi

# ---------------------------------------------------------------------
# Decryption: software encrypts to the HSM key's certificate.

# recip_cert LABEL: a certificate for the HSM key's public half, issued by
# the software CA (a decrypt or derive key cannot sign its own).
recip_cert() {
	ossl pkey $PROV -in "$(uri "$1")" -pubout -out "$W/$1.pub" 2>"$W/err" &&
		"$OPENSSL" x509 -new -force_pubkey "$W/$1.pub" -subj "/CN=$1" -CA "$W/ca.crt" \
			-CAkey "$W/ca.key" -days 2 -out "$W/$1.crt" 2>>"$W/err"
}

# refused NAME PATTERN CMD...: expect_fail, and not the plaintext written
# (openssl streams into -out, so a failed run may leave other bytes).
refused() {
	rm -f "$W/x.dec"
	expect_fail "$@"
	if [ -f "$W/x.dec" ] && grep -q embargo "$W/x.dec"; then bad "$1: plaintext written"; fi
}
# decrypt_case NAME LABEL [CMS-ENCRYPT-ARG...]
decrypt_case() {
	name=$1 label=$2
	shift 2
	rm -f "$W/$label.enc" "$W/$label.dec"
	if ! "$OPENSSL" cms -encrypt -binary -recip "$W/$label.crt" -aes-256-cbc "$@" -in "$W/msg" \
		-out "$W/$label.enc" 2>"$W/err"; then
		bad "$name: software cms -encrypt: $(head -c 300 "$W/err")"
		return
	fi
	if ossl cms $PROV -decrypt -binary -recip "$W/$label.crt" -inkey "$(uri "$label")" \
		-in "$W/$label.enc" -out "$W/$label.dec" 2>"$W/err" && cmp -s "$W/msg" "$W/$label.dec"; then
		ok "$name: decrypted with the HSM key"
	else
		bad "$name: cms -decrypt: $(head -c 300 "$W/err")"
	fi
}

if mk cms-dec rsa2048 decrypt && recip_cert cms-dec; then
	decrypt_case "RSA-OAEP (SHA-1) key transport" cms-dec -keyopt rsa_padding_mode:oaep
	# SoftHSM 2.6 has RSA-OAEP with SHA-1 only: the token's refusal must
	# be an error (CMS itself would hide it behind a random key).
	printf 'sixteen byte key' >"$W/k"
	"$OPENSSL" pkeyutl -encrypt -pubin -inkey "$W/cms-dec.pub" -pkeyopt rsa_padding_mode:oaep \
		-pkeyopt rsa_oaep_md:sha256 -in "$W/k" -out "$W/k.enc" 2>/dev/null
	refused "RSA-OAEP-SHA256 on a token without it: the HSM's refusal" "HSM" \
		ossl pkeyutl $PROV -decrypt -inkey "$(uri cms-dec)" -pkeyopt rsa_padding_mode:oaep \
		-pkeyopt rsa_oaep_md:sha256 -in "$W/k.enc" -out "$W/x.dec"
else
	bad "an RSA decrypt key with a certificate: $(head -c 300 "$W/err")"
fi
for kt in ec-p256 ec-p384; do
	if mk "cms-$kt" "$kt" derive && recip_cert "cms-$kt"; then
		decrypt_case "ECDH $kt (KDF SHA-1, the default)" "cms-$kt"
		decrypt_case "ECDH $kt (KDF SHA-256, AES-128)" "cms-$kt" -keyopt ecdh_kdf_md:sha256 \
			-aes-128-cbc
	else
		bad "an EC derive key $kt with a certificate: $(head -c 300 "$W/err")"
	fi
done

# The KDF alone, against the default provider's: the same bytes.
if [ -s "$W/cms-ec-p256.pub" ]; then
	"$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/peer.key" 2>/dev/null
	"$OPENSSL" pkey -in "$W/peer.key" -pubout -out "$W/peer.pub" 2>/dev/null
	kdf="-pkeyopt kdf-type:X963KDF -pkeyopt kdf-digest:SHA256 -pkeyopt kdf-outlen:48 -pkeyopt kdf-ukm:0a0b0c"
	# shellcheck disable=SC2086
	ossl pkeyutl $PROV -derive -inkey "$(uri cms-ec-p256)" -peerkey "$W/peer.pub" $kdf \
		-out "$W/k.hsm" 2>"$W/err"
	# shellcheck disable=SC2086
	"$OPENSSL" pkeyutl -derive -inkey "$W/peer.key" -peerkey "$W/cms-ec-p256.pub" $kdf \
		-out "$W/k.soft" 2>>"$W/err"
	if [ "$(wc -c <"$W/k.hsm")" -eq 48 ] && cmp -s "$W/k.hsm" "$W/k.soft"; then
		ok "pkeyutl -derive with the X9.63 KDF (SHA-256, 48 bytes, ukm) = the software side's"
	else
		bad "X9.63 KDF output differs: $(head -c 300 "$W/err")"
	fi
fi

# ---------------------------------------------------------------------
# Bad input: a clear error, no plaintext.

if [ -s "$W/cms-dec.enc" ] && mk cms-dec2 rsa2048 decrypt; then
	refused "another HSM key cannot decrypt the message" "decrypt" \
		ossl cms $PROV -decrypt -inkey "$(uri cms-dec2)" -in "$W/cms-dec.enc" -out "$W/x.dec"
fi
if [ -s "$W/cms-ec-p256.enc" ]; then
	refused "an EC sign key cannot do the ECDH of a message" "ECDH\|decrypt" \
		ossl cms $PROV -decrypt -recip "$W/cms-ec-p256.crt" -inkey "$(uri cms-ec)" \
		-in "$W/cms-ec-p256.enc" -out "$W/x.dec"
	"$OPENSSL" cms -encrypt -binary -recip "$W/cms-ec-p256.crt" -aes-256-cbc -outform DER \
		-in "$W/msg" -out "$W/ok.der" 2>/dev/null
	head -c $(($(wc -c <"$W/ok.der") - 24)) "$W/ok.der" >"$W/bad.der"
	refused "a truncated message" "error\|decrypt" \
		ossl cms $PROV -decrypt -binary -inform DER -recip "$W/cms-ec-p256.crt" \
		-inkey "$(uri cms-ec-p256)" -in "$W/bad.der" -out "$W/x.dec"
fi
expect_fail "a decrypt key does not sign" "purpose\|not allow\|cannot\|sign" \
	ossl cms $PROV -sign -signer "$W/cms-dec.crt" -inkey "$(uri cms-dec)" -in "$W/msg" \
	-out "$W/x.dec"
refused "a KDF other than X9.63 is refused, not ignored" "KDF\|not supported" \
	ossl pkeyutl $PROV -derive -inkey "$(uri cms-ec-p256)" -peerkey "$W/cms-ec-p256.pub" \
	-pkeyopt kdf-type:HKDF -out "$W/x.dec"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
