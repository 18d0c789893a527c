#!/bin/sh
# test-import.sh: key import as administrators and key owners run it, on
# a real SoftHSM token (under tests/with-token.sh):
#  - BYOK: `key import-params`, then the owner's plain openssl commands
#    exactly as README.md documents them, then `key import`; the KCV
#    hsmwrap prints must equal the KCV computed on the host with openssl;
#  - custodian components from files, with every refusal;
#  - pkcs11-tool as the independent reader: imported keys are sensitive
#    and not extractable, the import key's private half can only unwrap.
# Prints "ok: ..." / "FAIL: ..." per check and "N passed, N failed".
set -u
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-import.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
OPENSSL_BIN=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
if [ -z "$OPENSSL_BIN" ]; then
	echo "test-import.sh: openssl is needed (the key owner's side)" >&2
	exit 77
fi
openssl() { "$OPENSSL_BIN" "$@"; }

umask 022
W=$HW_TEST_DIR/import
mkdir "$W" && cd "$W" || exit 99
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
ALL=$W/all-output
: >"$ALL"

. "$TESTS_DIR/lib.sh"
. "$TESTS_DIR/p11.sh"
# key_absent LABEL: the token has no key LABEL (checked with hsmwrap key list).
key_absent() {
	"$HSMWRAP" key list >"$W/list" 2>&1 && ! grep -q "^$1 " "$W/list"
}
# refused DESC CODE LABEL ARG...: exit CODE, a message, and no key LABEL made.
refused() {
	d=$1 code=$2 label=$3
	shift 3
	hw "$@"
	why=
	[ "$rc" -eq "$code" ] || why="exit $rc, want $code"
	grep -q '^hsmwrap: ..*' "$W/err" || why="$why${why:+; }no message"
	key_absent "$label" || why="$why${why:+; }key '$label' was created"
	if [ -z "$why" ]; then ok "$d (exit $code, message, nothing created)"; else bad "$d: $why: $(first_err)"; fi
}
# printed_kcv: the KCV line of hsmwrap's transcript.
printed_kcv() {
	sed -n 's/^ *KCV (AES-ECB of zero block): *\([0-9a-f]*\).*/\1/p' "$W/out" | head -n 1
}
# host_kcv HEXKEY: AES-256-ECB of a zero block, first 3 bytes, with openssl.
head -c 16 /dev/zero >zero16
host_kcv() {
	openssl enc -aes-256-ecb -nopad -K "$1" -in zero16 | od -An -tx1 | tr -d ' \n' | cut -c1-6
}
hexof() { od -An -tx1 "$1" | tr -d ' \n'; }

P11_SLOT=
if [ -n "$PKCS11_TOOL" ]; then
	P11_SLOT=$(p11_slot hsmwrap-test)
fi
# One line per object: CLASS|LABEL|USAGE|ACCESS.
p11_objects() {
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" --slot "${P11_SLOT:-none}" \
		--login --pin env:HW_P11_PIN --list-objects 2>/dev/null | awk '
		function flush() { if (cls != "") print cls "|" label "|" usage "|" access }
		/^[^ \t]/ { flush(); cls = $1; label = ""; usage = ""; access = ""; next }
		/^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); label = $0 }
		/^[ \t]+Usage:/ { sub(/^[ \t]+Usage:[ \t]*/, ""); usage = $0 }
		/^[ \t]+Access:/ { sub(/^[ \t]+Access:[ \t]*/, ""); access = $0 }
		END { flush() }'
}
# p11_nonextractable CLASS LABEL USAGE: sensitive, not extractable, exactly USAGE.
p11_nonextractable() {
	if [ -z "$PKCS11_TOOL" ]; then
		echo "skip: pkcs11-tool not installed ($2)"
		return
	fi
	line=$(p11_objects | grep "^$1|$2|" | head -n 1)
	access=$(echo "$line" | cut -d'|' -f4)
	usage=$(echo "$line" | cut -d'|' -f3)
	# "never extractable" would contain the word too: drop it first.
	if [ -n "$line" ] && echo "$access" | grep -q 'sensitive' &&
		! echo "$access" | sed 's/never extractable//' | grep -q 'extractable'; then
		ok "pkcs11-tool: $1 $2 is sensitive and not extractable ($access)"
	else
		bad "pkcs11-tool: $1 $2: '$line'"
	fi
	if [ "$(echo "$usage" | tr -d ' ')" = "$3" ]; then
		ok "pkcs11-tool: $1 $2 usage is exactly '$3'"
	else
		bad "pkcs11-tool: $1 $2 usage is '$usage', want '$3'"
	fi
}

# ---------------------------------------------------------------------
# BYOK: the import key

expect "key import-params" 0 key import-params --label byok-import -o import-pub.pem
check "the public key file is an RSA-3072 public key" \
	sh -c "'$OPENSSL_BIN' pkey -pubin -in import-pub.pem -noout -text | grep -q '3072 bit'"
check "import-params prints a transcript with the SPKI fingerprint" \
	grep -q 'SHA-256 of SPKI:' "$W/out"
fp=$(openssl pkey -pubin -in import-pub.pem -outform DER | openssl dgst -sha256 -r | cut -c1-64)
check "the transcript's fingerprint is the file's" grep -q "$fp" "$W/out"
expect "import-params refuses an existing label" 7 key import-params --label byok-import -o other.pem
check "... and writes no public key" test ! -e other.pem
p11_nonextractable Private byok-import "unwrap"
if [ -n "$PKCS11_TOOL" ]; then
	p11_objects | grep -q '^Public|byok-import|' && ok "pkcs11-tool: public half present" ||
		bad "pkcs11-tool: public half of byok-import missing"
fi

# ---------------------------------------------------------------------
# BYOK, RSA-OAEP with SHA-256: the owner's commands exactly as in README.md

openssl rand -out key.bin 32
openssl pkeyutl -encrypt -pubin -inkey import-pub.pem \
	-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 \
	-in key.bin -out key.wrapped
want=$(host_kcv "$(hexof key.bin)")
hw key import --label byok-256 --import-key byok-import --wrapped key.wrapped
if [ "$rc" -eq 0 ]; then
	ok "key import (oaep-sha256) (exit 0)"
	check "oaep-sha256: printed KCV $(printed_kcv) = host KCV $want" test "$(printed_kcv)" = "$want"
	p11_nonextractable Secret byok-256 "encrypt,decrypt"
elif [ "$rc" -eq 6 ] && grep -q 'oaep-sha1' "$W/err"; then
	# SoftHSMv2 accepts OAEP only with SHA-1 in C_UnwrapKey.
	ok "key import (oaep-sha256): the token refuses SHA-256 OAEP unwrapping and the message names --padding oaep-sha1 (exit 6)"
	check "... and no key was created" key_absent byok-256
else
	bad "key import (oaep-sha256): exit $rc: $(first_err)"
fi

# ---------------------------------------------------------------------
# BYOK, RSA-OAEP with SHA-1 (README.md's commands for SoftHSMv2)

openssl pkeyutl -encrypt -pubin -inkey import-pub.pem \
	-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1 \
	-in key.bin -out key.wrapped
expect "key import --padding oaep-sha1" 0 \
	key import --label byok-env --import-key byok-import --wrapped key.wrapped --padding oaep-sha1
check "oaep-sha1: printed KCV $(printed_kcv) = host KCV $want" test "$(printed_kcv)" = "$want"
check "key import prints a ceremony transcript" grep -q 'ceremony transcript' "$W/out"
check "the transcript says the key is not extractable" grep -q 'Sensitive / extractable: *yes / no' "$W/out"
p11_nonextractable Secret byok-env "encrypt,decrypt"
expect "key show byok-env shows the same KCV" 0 key show byok-env
check "key show's KCV is $want" grep -q "$want" "$W/out"
expect "the imported envelope key makes data keys" 0 \
	datakey generate --key byok-env --plaintext-out dk.bin -o dk.wrapped
expect "... and opens them" 0 datakey decrypt --key byok-env -i dk.wrapped -o dk2.bin
check "... to the same data key" cmp -s dk.bin dk2.bin

# ---------------------------------------------------------------------
# BYOK, RSA-AES key wrap (emulated: two C_UnwrapKey calls in the token)

openssl rand -out kw.bin 32
openssl rand -out ephemeral.bin 32
openssl pkeyutl -encrypt -pubin -inkey import-pub.pem \
	-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1 \
	-in ephemeral.bin -out ephemeral.wrapped
openssl enc -id-aes256-wrap-pad -K "$(hexof ephemeral.bin)" -iv A65959A6 \
	-in kw.bin -out kw.kwp
cat ephemeral.wrapped kw.kwp >kw.wrapped
wantkw=$(host_kcv "$(hexof kw.bin)")
expect "key import --padding rsa-aes-kwp-sha1 --purpose keywrap" 0 \
	key import --label byok-kw --import-key byok-import --wrapped kw.wrapped \
	--padding rsa-aes-kwp-sha1 --purpose keywrap
check "rsa-aes: printed KCV $(printed_kcv) = host KCV $wantkw" test "$(printed_kcv)" = "$wantkw"
p11_nonextractable Secret byok-kw "wrap,unwrap"
printf 'twenty-four bytes of key' >m.bin
expect "the imported keywrap key wraps" 0 wrap --key byok-kw -i m.bin -o m.wrapped
expect "... and unwraps" 0 unwrap --key byok-kw -i m.wrapped -o m2.bin
check "... to the same material" cmp -s m.bin m2.bin

# ---------------------------------------------------------------------
# BYOK refusals: nothing is created

cp key.wrapped bad.wrapped
flip bad.wrapped 100
refused "a corrupted OAEP blob" 5 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped bad.wrapped --padding oaep-sha1
head -c 200 key.wrapped >short.wrapped
refused "a truncated OAEP blob" 5 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped short.wrapped --padding oaep-sha1
cp kw.wrapped bad-kw.wrapped
sz=$(wc -c <bad-kw.wrapped)
flip bad-kw.wrapped $((sz - 3))
refused "an RSA-AES blob with a corrupted AES-KWP part" 5 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped bad-kw.wrapped --padding rsa-aes-kwp-sha1
refused "an RSA-AES blob without its AES-KWP part" 5 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped ephemeral.wrapped --padding rsa-aes-kwp-sha1
refused "an existing label" 7 byok-env2 \
	key import --label byok-env --import-key byok-import --wrapped key.wrapped --padding oaep-sha1
"$HSMWRAP" key create --label not-an-import-key --type ec-p256 >/dev/null 2>&1
refused "an import key that is not one" 7 byok-bad \
	key import --label byok-bad --import-key not-an-import-key --wrapped key.wrapped --padding oaep-sha1
refused "an unknown import key" 4 byok-bad \
	key import --label byok-bad --import-key no-such-key --wrapped key.wrapped --padding oaep-sha1
refused "an unknown padding" 2 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped key.wrapped --padding pkcs1
refused "a non-AES type" 2 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped key.wrapped --type rsa2048
: >empty.wrapped
refused "an empty wrapped file" 5 byok-bad \
	key import --label byok-bad --import-key byok-import --wrapped empty.wrapped --padding oaep-sha1

# ---------------------------------------------------------------------
# Custodian components from files

c1=$(openssl rand -hex 32)
c2=$(openssl rand -hex 32)
c3=$(openssl rand -hex 32)
# xorhex A B: byte-wise XOR of two 64-digit hex strings.
xorhex() {
	a=$1 b=$2 r= i=0
	while [ $i -lt 64 ]; do
		x=$(( 0x$(echo "$a" | cut -c$((i + 1))-$((i + 2))) ^ 0x$(echo "$b" | cut -c$((i + 1))-$((i + 2))) ))
		r=$r$(printf %02x "$x")
		i=$((i + 2))
	done
	echo "$r"
}
echo "$c1" >c1.txt
# Paper forms print components in groups: spaces are allowed.
echo "$c2" | sed 's/\(....\)/\1 /g' >c2.txt
echo "$c3" | tr a-f A-F >c3.txt
k=$(xorhex "$(xorhex "$c1" "$c2")" "$c3")
wantc=$(host_kcv "$k")
expect "key import-components --count 3 with component files" 0 \
	key import-components --label comp-key --count 3 \
	--component-file c1.txt --component-file c2.txt --component-file c3.txt
check "component 1's KCV is shown" grep -q "Component 1 KCV: *$(host_kcv "$c1")" "$W/out"
check "component 2's KCV is shown" grep -q "Component 2 KCV: *$(host_kcv "$c2")" "$W/out"
check "component 3's KCV is shown" grep -q "Component 3 KCV: *$(host_kcv "$c3")" "$W/out"
check "final KCV $(printed_kcv) = host KCV of the XOR $wantc" test "$(printed_kcv)" = "$wantc"
check "the transcript says the XOR was done in host memory" grep -q 'XOR in host memory' "$W/out"
p11_nonextractable Secret comp-key "encrypt,decrypt"
expect "key show comp-key: the token's own KCV agrees" 0 key show comp-key
check "... $wantc" grep -q "$wantc" "$W/out"

expect "a keywrap key from 2 components" 0 key import-components --label comp-kw --count 2 \
	--purpose keywrap --component-file c1.txt --component-file c2.txt
check "... with the KCV of c1 XOR c2" test "$(printed_kcv)" = "$(host_kcv "$(xorhex "$c1" "$c2")")"
p11_nonextractable Secret comp-kw "wrap,unwrap"

echo "$c1" | cut -c1-62 >short.txt
echo "${c1}00" >long.txt
echo "$c1" | sed 's/^./g/' >nothex.txt
printf '%064d\n' 0 >zero.txt
xorhex "$c1" "$c2" >c12.txt
refused "a component of 31 bytes" 5 comp-bad key import-components --label comp-bad --count 2 \
	--component-file c1.txt --component-file short.txt
refused "a component of 33 bytes" 5 comp-bad key import-components --label comp-bad --count 2 \
	--component-file c1.txt --component-file long.txt
refused "a component that is not hex" 5 comp-bad key import-components --label comp-bad --count 2 \
	--component-file nothex.txt --component-file c2.txt
refused "an all-zero component" 2 comp-bad key import-components --label comp-bad --count 2 \
	--component-file c1.txt --component-file zero.txt
refused "the same component twice" 2 comp-bad key import-components --label comp-bad --count 2 \
	--component-file c1.txt --component-file c1.txt
check "... naming both custodians" grep -q 'custodian 2 gave the same component as custodian 1' "$W/err"
refused "components that XOR to zero" 2 comp-bad key import-components --label comp-bad --count 3 \
	--component-file c1.txt --component-file c2.txt --component-file c12.txt
refused "fewer component files than --count" 2 comp-bad key import-components --label comp-bad \
	--count 3 --component-file c1.txt --component-file c2.txt
refused "--count 1" 2 comp-bad key import-components --label comp-bad --count 1 \
	--component-file c1.txt
refused "an existing label" 7 comp-bad2 key import-components --label comp-key --count 2 \
	--component-file c1.txt --component-file c2.txt
refused "a missing component file" 1 comp-bad key import-components --label comp-bad --count 2 \
	--component-file c1.txt --component-file no-such-file.txt
# Without files each custodian is asked on the terminal; with none there
# (setsid: no controlling terminal) the prompt is impossible.
if command -v setsid >/dev/null 2>&1; then
	hw_nottty() {
		setsid "$HSMWRAP" "$@" >"$W/out" 2>"$W/err" </dev/null
		rc=$?
		cat "$W/out" "$W/err" >>"$ALL"
	}
	hw_nottty key import-components --label comp-bad --count 2
	if [ "$rc" -eq 3 ] && key_absent comp-bad; then
		ok "prompting without a terminal fails cleanly (exit 3, nothing created)"
	else
		bad "prompting without a terminal: exit $rc: $(first_err)"
	fi
fi

# On a terminal (script(1) gives one): each custodian types the component
# without echo and confirms its KCV; a custodian who does not confirm stops it.
if command -v script >/dev/null 2>&1; then
	# on_tty LINE...: runs hsmwrap on a pty, typing one LINE per prompt.
	on_tty() {
		cmd=$1
		shift
		{ for l in "$@"; do sleep 1; echo "$l"; done; sleep 2; } |
			script -qec "$cmd; echo \"exit=\$?\"" /dev/null >"$W/tty" 2>&1
		tr -d '\r' <"$W/tty" >"$W/out"
		cat "$W/out" >>"$ALL"
		rc=$(sed -n 's/^exit=//p' "$W/out" | tail -n 1)
	}
	on_tty "'$HSMWRAP' key import-components --label tty-key --count 2" "$c1" y "$c2" y
	check "components typed on a terminal: exit 0" test "$rc" = 0
	check "... each custodian was asked to confirm the component's KCV" \
		grep -q "Custodian 2: the component's KCV is $(host_kcv "$c2")" "$W/out"
	check "... the final KCV is the host's KCV of c1 XOR c2" \
		test "$(printed_kcv)" = "$(host_kcv "$(xorhex "$c1" "$c2")")"
	check "... and the components were not echoed" sh -c "! grep -qi -e '$c1' -e '$c2' '$W/out'"
	on_tty "'$HSMWRAP' key import-components --label tty-no --count 2" "$c1" n
	check "a custodian who does not confirm the KCV stops the import (exit 3)" test "$rc" = 3
	check "... and nothing was created" key_absent tty-no
else
	echo "skip: script(1) not installed; terminal prompts not tested"
fi

# ---------------------------------------------------------------------
# Secrets never printed: PIN, key material, components.

for s in "$PIN" "$(hexof key.bin)" "$(hexof kw.bin)" "$(hexof ephemeral.bin)" "$c1" "$c2" "$c3" "$k"; do
	if grep -qiF -- "$s" "$ALL"; then
		bad "a secret (${#s} characters) appears in hsmwrap's output"
	else
		ok "a secret (${#s} characters) never appears in hsmwrap's output"
	fi
done

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
