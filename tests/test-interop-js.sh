#!/bin/sh
# test-interop-js.sh: interoperability with the AWS Encryption SDK for
# JavaScript (npm @aws-crypto/client-node, pinned in
# tests/interop-js/package-lock.json), both ways, under tests/with-token.sh.
#
# One 32-byte AES key: in a file for the SDK's RawAesKeyringNode (namespace
# "hsmwrap", key name = the HSM key's label, utf8Sorting), and imported into
# the SoftHSM token as a sensitive, non-extractable `envelope` key for
# hsmwrap (tests/import-aes-key; pkcs11-tool checks the attributes).
#
#   JS encrypts, hsmwrap decrypts: all 11 suites (the 9 legacy ones with
#     `decrypt --allow-legacy`, and refused without it), frame lengths 1
#     and 4096.
#   hsmwrap encrypts, JS decrypts: 0x0478 and 0x0578, frame lengths 1 and
#     4096 (hsmwrap encrypts with nothing else).
#   Every message carries an encryption context whose keys sort
#   differently by UTF-8 bytes and by UTF-16 code units; plaintexts are
#   compared byte for byte. Negative checks make sure the comparison can
#   fail: a flipped byte, a wrong key, a missing required pair.
#
# Non-framed (v1) bodies: neither side can make one. The JavaScript SDK
# always encrypts framed (frameLength must be 1..2^32-1) and hsmwrap
# encrypts v2 framed messages only, so non-framed decryption is proved by
# the SDK's own vectors (tests/esdk-vectors.sh), not here.
#
# node_modules: tests/interop-js/node_modules if it is there (in-tree, after
# `npm ci --prefix tests/interop-js`), else `npm ci` into
# $(builddir)/tests/interop-js from the committed lock file (the npm
# registry must be reachable once; later runs reuse it).
# Exit: 0 pass, 1 fail, 77 skipped (no node/npm, or the packages cannot be
# installed), 99 setup error. HSMWRAP_REQUIRE_INTEROP=1 (CI) turns the
# skips into hard errors, so that CI cannot pass without the peer.

set -u

: "${srcdir:=$(dirname "$0")/..}"
jssrc=$(cd "$srcdir/tests/interop-js" && pwd) || exit 99
jsdir=${HW_INTEROP_JS_DIR:-$(pwd)/tests/interop-js}
import=${HW_IMPORT_AES_KEY:-$(pwd)/tests/import-aes-key}

skip() {
	if [ "${HSMWRAP_REQUIRE_INTEROP:-0}" = 1 ]; then
		echo "test-interop-js.sh: $* (HSMWRAP_REQUIRE_INTEROP=1: failing)" >&2
		exit 99
	fi
	echo "test-interop-js.sh: $*; skipping" >&2
	exit 77
}

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE HSMWRAP_TOKEN; do
	eval "val=\${$v:-}"
	[ -n "$val" ] || { echo "test-interop-js.sh: $v is not set; run me under tests/with-token.sh" >&2; exit 99; }
done
[ -x "$HSMWRAP" ] || { echo "test-interop-js.sh: $HSMWRAP is not built" >&2; exit 99; }
[ -x "$import" ] || { echo "test-interop-js.sh: $import is not built" >&2; exit 99; }
command -v node >/dev/null 2>&1 || skip "node (Node.js) is not installed"

# The SDK: reuse an installed copy, else install the locked versions.
have_sdk() {
	(cd "$1" && node -e "require('@aws-crypto/client-node')") >/dev/null 2>&1
}
if have_sdk "$jssrc"; then
	jsdir=$jssrc
elif ! have_sdk "$jsdir"; then
	command -v npm >/dev/null 2>&1 || skip "npm is not installed"
	mkdir -p "$jsdir" || exit 99
	if [ "$(cd "$jssrc" && pwd)" != "$(cd "$jsdir" && pwd)" ]; then
		cp "$jssrc/package.json" "$jssrc/package-lock.json" "$jsdir/" || exit 99
	fi
	echo "test-interop-js.sh: npm ci in $jsdir"
	if ! (cd "$jsdir" && npm ci --no-audit --no-fund --loglevel=error) >"$HW_TEST_DIR/npm.log" 2>&1; then
		cat "$HW_TEST_DIR/npm.log" >&2
		skip "npm ci failed (is the npm registry reachable?)"
	fi
	have_sdk "$jsdir" || skip "@aws-crypto/client-node does not load after npm ci"
fi
esdk() {
	NODE_PATH=$jsdir/node_modules node "$jssrc/esdk.js" "$@"
}
echo "test-interop-js.sh: AWS Encryption SDK for JavaScript $(cd "$jsdir" &&
	node -p "require('@aws-crypto/client-node/package.json').version"), node $(node --version)"

W=$HW_TEST_DIR/interop-js
mkdir "$W" || exit 99
. "$(dirname "$0")/p11.sh"
cd "$W" || exit 99

npass=0
nfail=0
ok() {
	npass=$((npass + 1))
	echo "ok: $*"
}
bad() {
	nfail=$((nfail + 1))
	echo "FAIL: $*"
}

# The key: random material, in a file for the SDK and in the token.
LABEL=interop-js
head -c 32 /dev/urandom >key.bin
head -c 32 /dev/urandom >other.bin
[ "$(wc -c <key.bin)" -eq 32 ] || { echo "cannot make key.bin" >&2; exit 99; }
"$import" "$LABEL" key.bin 1a5e || exit 99

# The key as an independent client sees it: sensitive, not extractable,
# encrypt/decrypt only; hsmwrap sees an envelope key.
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
if [ -n "$PKCS11_TOOL" ]; then
	PIN=$(cat "$HW_TEST_USER_PIN_FILE")
	P11_SLOT=$(p11_slot hsmwrap-test)
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "${P11_SLOT:-none}" \
		--login --pin env:HW_P11_PIN --list-objects --type secrkey --label "$LABEL" \
		>p11.txt 2>&1
	if grep -q "Access:.*sensitive" p11.txt && ! grep -q "extractable" p11.txt &&
	   grep -q "Usage: *encrypt, decrypt$" p11.txt; then
		ok "imported key: sensitive, not extractable, encrypt/decrypt only (pkcs11-tool)"
	else
		bad "imported key attributes (pkcs11-tool)"; cat p11.txt
	fi
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "${P11_SLOT:-none}" \
		--login --pin env:HW_P11_PIN --read-object --type secrkey --label "$LABEL" \
		-o leaked.bin >read.txt 2>&1
	# Refused for the right reason, not because the login or lookup failed.
	if [ -s leaked.bin ] || ! grep -q CKR_ATTRIBUTE_SENSITIVE read.txt; then
		bad "reading the key value out"; cat read.txt
	else
		ok "the key value cannot be read out (CKR_ATTRIBUTE_SENSITIVE)"
	fi
fi
if "$HSMWRAP" key list 2>&1 | grep -q "^$LABEL  *aes256  *envelope"; then
	ok "hsmwrap key list: $LABEL is an aes256 envelope key"
else
	bad "hsmwrap key list does not show $LABEL as an envelope key"; "$HSMWRAP" key list
fi

# Context keys: U+FF21 sorts before U+1F600 by UTF-8 bytes (EF.. < F0..)
# but after it by UTF-16 code units (FF21 > D83D): a wrong order breaks
# the header authentication.
K1=$(printf '\357\274\241')             # U+FF21
K2=$(printf '\360\237\230\200')         # U+1F600
set -- --context "purpose=interop" --context "$K1=fullwidth" --context "$K2=emoji" \
	--context "b=2" --context "a=1"

# Plaintexts: several frames, an exact multiple of the frame length (the
# final frame is then empty), and empty.
head -c 10000 /dev/urandom >pt.10000
head -c 8192 /dev/urandom >pt.8192
: >pt.0
head -c 300 /dev/urandom >pt.300

# plaintexts for a frame length: frame length 1 makes a frame per byte.
pts_for() {
	if [ "$1" = 1 ]; then echo "pt.300 pt.0"; else echo "pt.10000 pt.8192 pt.0"; fi
}

# js_to_hw SUITE FL PT
js_to_hw() {
	_s=$1 _fl=$2 _pt=$3 m=js-$1-$2-$3
	shift 3
	legacy=
	case $_s in 0x0478|0x0578) ;; *) legacy=--allow-legacy ;; esac
	if ! esdk encrypt --key-file key.bin --key-name "$LABEL" --suite "$_s" --frame-length "$_fl" \
		"$@" -i "$_pt" -o "$m.esdk" 2>"$m.err"; then
		bad "JS encrypt $_s frame $_fl $_pt"; cat "$m.err"; return
	fi
	# shellcheck disable=SC2086 # $legacy is one word or none
	if "$HSMWRAP" decrypt $legacy -i "$m.esdk" -o "$m.out" 2>"$m.err" &&
	   cmp -s "$_pt" "$m.out"; then
		ok "JS -> hsmwrap: suite $_s, frame length $_fl, $_pt"
	else
		bad "JS -> hsmwrap: suite $_s, frame length $_fl, $_pt"; cat "$m.err"
	fi
}

# hw_to_js SUITE FL PT
hw_to_js() {
	_s=$1 _fl=$2 _pt=$3 m=hw-$1-$2-$3
	shift 3
	if ! "$HSMWRAP" encrypt --key "$LABEL" --suite "$_s" --frame-length "$_fl" "$@" \
		-i "$_pt" -o "$m.esdk" 2>"$m.err"; then
		bad "hsmwrap encrypt $_s frame $_fl $_pt"; cat "$m.err"; return
	fi
	if esdk decrypt --key-file key.bin --key-name "$LABEL" "$@" -i "$m.esdk" -o "$m.out" \
		2>"$m.err" && cmp -s "$_pt" "$m.out"; then
		ok "hsmwrap -> JS: suite $_s, frame length $_fl, $_pt"
	else
		bad "hsmwrap -> JS: suite $_s, frame length $_fl, $_pt"; cat "$m.err"
	fi
}

for s in 0x0014 0x0046 0x0078 0x0114 0x0146 0x0178 0x0214 0x0346 0x0378 0x0478 0x0578; do
	for fl in 1 4096; do
		for pt in $(pts_for $fl); do
			js_to_hw "$s" "$fl" "$pt" "$@"
		done
	done
done
for s in 0x0478 0x0578; do
	for fl in 1 4096; do
		for pt in $(pts_for $fl); do
			hw_to_js "$s" "$fl" "$pt" "$@"
		done
	done
done

# The checks above must be able to fail.

# A legacy message without --allow-legacy: refused, nothing written.
rm -f refused.out
if [ ! -s js-0x0178-4096-pt.10000.esdk ]; then
	bad "no legacy message to refuse"
elif "$HSMWRAP" decrypt -i js-0x0178-4096-pt.10000.esdk -o refused.out 2>refused.err; then
	bad "a legacy (v1) message decrypts without --allow-legacy"
elif [ -e refused.out ]; then
	bad "refused legacy message left an output file"
else
	ok "legacy (v1) message refused without --allow-legacy: $(head -n 1 refused.err)"
fi

# One flipped byte in the middle of a JS message: integrity error (5).
f=js-0x0478-4096-pt.10000.esdk
[ -s "$f" ] || exit 99
n=$(wc -c <"$f")
half=$((n / 2))
{ head -c "$half" "$f"
  dd if="$f" bs=1 skip="$half" count=1 2>/dev/null | LC_ALL=C tr '\000-\377' '\001-\377\000'
  tail -c +$((half + 2)) "$f"; } >flipped.esdk
dd if="$f" bs=1 skip="$half" count=1 2>/dev/null | od -An -tx1 >b1
dd if=flipped.esdk bs=1 skip="$half" count=1 2>/dev/null | od -An -tx1 >b2
rm -f flipped.out
"$HSMWRAP" decrypt -i flipped.esdk -o flipped.out 2>flipped.err
rc=$?
if ! cmp -s b1 b2 && [ "$(wc -c <flipped.esdk)" -eq "$n" ] && [ $rc -eq 5 ] && [ ! -e flipped.out ]; then
	ok "a JS message with one byte changed: exit 5, no output"
else
	bad "a JS message with one byte changed: exit $rc (want 5)"; cat flipped.err
fi

# The JS SDK holding another key cannot decrypt hsmwrap's message, and
# refuses a context pair the message does not have.
if esdk decrypt --key-file other.bin --key-name "$LABEL" -i hw-0x0578-4096-pt.10000.esdk \
	-o wrong.out 2>/dev/null; then
	bad "JS decrypts hsmwrap's message with another key"
else
	ok "JS refuses hsmwrap's message with another key"
fi
if esdk decrypt --key-file key.bin --key-name "$LABEL" --context purpose=other \
	-i hw-0x0478-4096-pt.10000.esdk -o wrong.out 2>/dev/null; then
	bad "JS accepts a wrong context value"
else
	ok "JS refuses a context value the message does not have"
fi
# hsmwrap's message really was made with the context (JS requires each pair).
if esdk decrypt --key-file key.bin --key-name "$LABEL" --context "$K2=emoji" --context a=1 \
	-i hw-0x0578-1-pt.300.esdk -o ctx.out 2>ctx.err && cmp -s pt.300 ctx.out; then
	ok "hsmwrap's message carries the context, non-ASCII keys included"
else
	bad "hsmwrap's message context"; cat ctx.err
fi

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
