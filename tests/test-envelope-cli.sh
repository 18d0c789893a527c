#!/bin/sh
# test-envelope-cli.sh: `hsmwrap encrypt`, `decrypt` and `inspect` against
# the real test token (tests/with-token.sh): round trips for both suites and
# several frame lengths, files and pipes, several keys and a second token,
# required context, and bad input - a small message truncated at every
# byte offset and with a bit flipped at every byte - which must fail with a
# documented exit status and leave no output, temporary or spool file.
# Prints "ok: ..." / "FAIL: ..." lines and finally "N passed, N failed".
#
# Exit statuses asserted (the CLI contract, cli_exit_classes):
#   2 usage, 4 key not on the token, 5 malformed/truncated/altered message,
#   wrong context, none of the --key keys, more data keys than --max-edks.

set -u

for v in HSMWRAP HW_TEST_DIR HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-envelope-cli.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
[ -x "$HSMWRAP" ] || { echo "test-envelope-cli.sh: $HSMWRAP is not built" >&2; exit 99; }
PYTHON=$(command -v python3 2>/dev/null || :)

# ok/bad/check/expect; hw runs $HW_BIN, and no $ALL is kept (2000 runs).
. "$(dirname "$0")/lib.sh"
# The every-offset loops run hsmwrap about 2000 times: the libtool wrapper
# script would triple their time, so they run the binary it wraps.
unwrapped_hsmwrap

# The source tree, absolute, before we move to the work directory.
SRCDIR=$(cd "${srcdir:-$(dirname "$0")/..}" && pwd)
umask 022
W=$HW_TEST_DIR/envelope-cli
mkdir "$W" "$W/tmp" || exit 99
. "$(dirname "$0")/p11.sh"
cd "$W" || exit 99
# Spool files of signed plaintext on stdout go here, so we can see none stays.
TMPDIR=$W/tmp
export TMPDIR

# no_leftovers DIR: no hsmwrap temporary file in DIR, no spool file in
# TMPDIR. Shell globs only: it runs after each of ~1500 hsmwrap runs.
no_leftovers() {
	for f in "$1"/.hsmwrap.* "$TMPDIR"/* "$TMPDIR"/.[!.]*; do
		[ -e "$f" ] && return 1
	done
	return 0
}

# refused DESC CODE OUTFILE ARG...: exit CODE, a message, OUTFILE absent
# (or, if it existed before, unchanged) and nothing else left behind.
refused() {
	d=$1 code=$2 of=$3
	shift 3
	before=
	[ -e "$of" ] && before=$(cksum <"$of")
	hw "$@"
	why=
	[ "$rc" -eq "$code" ] || why="exit $rc, want $code"
	grep -q '^hsmwrap: ..*' "$W/err" || why="$why${why:+; }no 'hsmwrap: ...' message"
	if [ -n "$before" ]; then
		[ "$(cksum <"$of")" = "$before" ] || why="$why${why:+; }$of was changed"
	elif [ -e "$of" ]; then
		why="$why${why:+; }$of exists"
		rm -f "$of"
	fi
	no_leftovers "$(dirname "$of")" || why="$why${why:+; }temporary file left"
	if [ -z "$why" ]; then ok "$d (exit $code, no output)"; else bad "$d: $why: $(first_err)"; fi
}

size() { wc -c <"$1" | tr -d ' '; }

# flipbit FILE OFFSET BIT: a copy of FILE in $W/flipped with one bit inverted.
flipbit() {
	cp "$1" "$W/flipped"
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	x=$((b ^ (1 << $3)))
	# shellcheck disable=SC2059 # the format is the octal escape of the byte
	printf "\\$(printf %o "$x")" | dd of="$W/flipped" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

# ---------------------------------------------------------------------
# Setup: keys on the test token, one on the second token.

expect "key create env1" 0 key create --label env1 --type aes256 || exit 99
expect "key create env2" 0 key create --label env2 --type aes256 || exit 99
expect "key create env3" 0 key create --label env3 --type aes256 || exit 99
expect "key create kw (keywrap)" 0 key create --label kw --type aes256 --purpose keywrap
T2=
if [ -n "${HW_TEST_TOKEN2:-}" ] && [ -n "${HW_TEST_USER_PIN_FILE2:-}" ]; then
	T2="--token pkcs11:token=$HW_TEST_TOKEN2 --pin-source file:$HW_TEST_USER_PIN_FILE2"
	# shellcheck disable=SC2086 # T2 is a list of options
	expect "key create on the second token" 0 $T2 key create --label offsite --type aes256
fi

# ---------------------------------------------------------------------
# Round trips: both suites, frame lengths 1, 4096, 100000, sizes around them.

head -c 250001 /dev/urandom >big
: >empty
roundtrip() {
	suite=$1 fl=$2 n=$3
	head -c "$n" big >pt
	rm -f ct dt
	if ! "$HW_BIN" encrypt --key env1 --context app=rt --suite "$suite" --frame-length "$fl" \
		-i pt -o ct >/dev/null 2>"$W/err"; then
		bad "encrypt suite $suite frame $fl size $n: $(first_err)"
		return
	fi
	if ! "$HW_BIN" decrypt --context app=rt -i ct -o dt >/dev/null 2>"$W/err"; then
		bad "decrypt suite $suite frame $fl size $n: $(first_err)"
		return
	fi
	if cmp -s pt dt; then
		ok "round trip suite $suite, frame length $fl, $n bytes"
	else
		bad "round trip suite $suite, frame length $fl, $n bytes: plaintext differs"
	fi
}
for suite in 0x0478 0x0578; do
	for n in 0 1 2 1000; do roundtrip "$suite" 1 $n; done
	for n in 0 1 4095 4096 4097 12289; do roundtrip "$suite" 4096 $n; done
	for n in 0 99999 100000 100001 250001; do roundtrip "$suite" 100000 $n; done
done
roundtrip AES_256_GCM_HKDF_SHA512_COMMIT_KEY 512 3000
roundtrip aes_256_gcm_hkdf_sha512_commit_key_ecdsa_p384 512 3000

expect "encrypt with the default suite" 0 encrypt --key env1 -i big -o def.enc
expect "inspect it" 0 inspect def.enc
check "the default suite is 0x0578, signed" grep -q '^Suite: *0x0578 AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384' "$W/out"
check "the default frame length is 4096" grep -q '4096-byte frames' "$W/out"
check "inspect names the key" grep -q "provider hsmwrap, key 'env1', 48 bytes" "$W/out"
check "the encrypted file has the usual mode (0644 under umask 022)" \
	test "$(stat -c %a def.enc)" = 644
expect "decrypt it" 0 decrypt -i def.enc -o def.dec
check "decrypted file equals the plaintext" cmp -s big def.dec
check "decrypted plaintext has mode 0600" test "$(stat -c %a def.dec)" = 600

# 5 MiB, through files and through pipes, both suites.
head -c 5242880 /dev/urandom >five
for suite in 0x0478 0x0578; do
	rm -f five.enc five.dec
	expect "encrypt 5 MiB ($suite)" 0 encrypt --key env1 --suite $suite -i five -o five.enc
	expect "decrypt 5 MiB ($suite)" 0 decrypt -i five.enc -o five.dec
	check "5 MiB round trip ($suite)" cmp -s five five.dec
	# decrypt reads the header before it opens the token, so the two
	# processes never open the SoftHSM token files at the same moment.
	if "$HW_BIN" encrypt --key env1 --suite $suite <five 2>"$W/err" |
		"$HW_BIN" decrypt 2>>"$W/err" | cmp -s - five; then
		ok "5 MiB stdin | encrypt | decrypt | stdout ($suite)"
	else
		bad "5 MiB pipe round trip ($suite): $(cat "$W/err")"
	fi
done
check "no spool file left after the pipes" no_leftovers "$W"
expect "encrypt from stdin (-i -) to a file" 0 encrypt --key env1 -i - -o stdin.enc <big
if "$HW_BIN" decrypt -i stdin.enc -o - 2>"$W/err" | cmp -s - big; then
	ok "decrypt from a file to stdout (-o -)"
else
	bad "decrypt to stdout: $(first_err)"
fi
expect "empty input" 0 encrypt --key env1 -i empty -o empty.enc
expect "decrypt the empty message" 0 decrypt -i empty.enc -o empty.dec
check "an empty file round trips to an empty file" test -f empty.dec -a ! -s empty.dec
# The wrapper script the user runs works the same.
if "$HSMWRAP" encrypt --key env1 -i empty 2>"$W/err" | "$HSMWRAP" decrypt 2>>"$W/err" | cmp -s - empty; then
	ok "the installed-style hsmwrap ($HSMWRAP) round trips too"
else
	bad "round trip through $HSMWRAP: $(first_err)"
fi

# ---------------------------------------------------------------------
# Several keys, a key not on the token, --key restrictions, --max-edks.

head -c 5000 big >pt5
expect "encrypt for env1, env2 and env3" 0 encrypt --key env1 --key env2 --key env3 -i pt5 -o three.enc
expect "inspect the three-key message" 0 inspect three.enc
check "inspect lists 3 wrapped data keys" grep -q '^Wrapped data keys: 3' "$W/out"
for k in env1 env2 env3; do
	rm -f three.dec
	expect "decrypt with only --key $k allowed" 0 decrypt --key $k -i three.enc -o three.dec
	check "plaintext via $k" cmp -s pt5 three.dec
done
rm -f three.dec
refused "--max-edks 2 refuses a message with 3 data keys" 5 three.dec \
	decrypt --max-edks 2 -i three.enc -o three.dec
check "the refusal names the limit" grep -q 'limit of 2' "$W/err"
expect "--max-edks 3 accepts it" 0 decrypt --max-edks 3 -i three.enc -o three.dec
rm -f three.dec
expect "--max-edks 0 means no limit" 0 decrypt --max-edks 0 -i three.enc -o three.dec
expect "encrypt for env1 only" 0 encrypt --key env1 -i pt5 -o one.enc
refused "decrypt with only --key env2 allowed: wrong key" 5 one.dec \
	decrypt --key env2 -i one.enc -o one.dec
refused "a keywrap key cannot encrypt" 7 kw.enc encrypt --key kw -i pt5 -o kw.enc
refused "encrypt with a key that does not exist" 4 nokey.enc encrypt --key nosuch -i pt5 -o nokey.enc
if [ -n "$T2" ]; then
	# shellcheck disable=SC2086
	expect "encrypt on the second token" 0 $T2 encrypt --key offsite -i pt5 -o offsite.enc
	expect "inspect needs no token" 0 inspect offsite.enc
	check "inspect shows the second token's key" grep -q "key 'offsite'" "$W/out"
	refused "decrypt a message whose key is not on the token" 4 offsite.dec \
		decrypt -i offsite.enc -o offsite.dec
	check "the refusal names the missing key" grep -q "'offsite'" "$W/err"
	# shellcheck disable=SC2086
	expect "the second token decrypts it" 0 $T2 decrypt -i offsite.enc -o offsite.dec
	check "plaintext from the second token" cmp -s pt5 offsite.dec
fi

# ---------------------------------------------------------------------
# Encryption context: --context on decrypt means "these pairs must be present".

expect "encrypt with two context pairs" 0 encrypt --key env1 --context app=billing \
	--context env=prod --suite 0x0478 -i pt5 -o ctx.enc
expect "decrypt with both pairs required" 0 decrypt --context env=prod --context app=billing \
	-i ctx.enc -o ctx.dec
rm -f ctx.dec
expect "decrypt with one pair required" 0 decrypt --context app=billing -i ctx.enc -o ctx.dec
rm -f ctx.dec
expect "decrypt with no pair required" 0 decrypt -i ctx.enc -o ctx.dec
check "text output shows the context" grep -q '^Context: app=billing, env=prod' "$W/out"
refused "a required pair with another value" 5 ctx.dec2 decrypt --context app=payroll -i ctx.enc -o ctx.dec2
refused "a required pair the message lacks" 5 ctx.dec2 decrypt --context region=eu -i ctx.enc -o ctx.dec2
refused "a reserved aws-crypto- pair on decrypt" 2 ctx.dec2 \
	decrypt --context aws-crypto-public-key=x -i ctx.enc -o ctx.dec2
refused "a reserved aws-crypto- pair on encrypt" 2 ctx.enc2 \
	encrypt --key env1 --context aws-crypto-x=1 -i pt5 -o ctx.enc2
refused "a malformed --context" 2 ctx.enc2 encrypt --key env1 --context novalue -i pt5 -o ctx.enc2

# ---------------------------------------------------------------------
# Paths, options and existing files.

refused "input and output the same file" 2 pt5 encrypt --key env1 -i pt5 -o pt5
ln -s pt5 pt5.link
refused "output a symlink to the input" 2 pt5 encrypt --key env1 -i pt5 -o pt5.link
refused "decrypt onto its own input" 2 one.enc decrypt -i one.enc -o one.enc
refused "an unknown suite" 2 bad.enc encrypt --key env1 --suite 0x0014 -i pt5 -o bad.enc
refused "frame length 0" 2 bad.enc encrypt --key env1 --frame-length 0 -i pt5 -o bad.enc
refused "frame length 2^32" 2 bad.enc encrypt --key env1 --frame-length 4294967296 -i pt5 -o bad.enc
refused "a non-numeric --max-edks" 2 bad.dec decrypt --max-edks many -i one.enc -o bad.dec
refused "--json with the data on stdout" 2 bad.enc --json encrypt --key env1 -i pt5 -o -
refused "encrypt without --key" 2 bad.enc encrypt -i pt5 -o bad.enc
refused "a missing input file" 1 bad.enc encrypt --key env1 -i nosuchfile -o bad.enc
refused "an output in a missing directory" 1 nodir/bad.enc encrypt --key env1 -i pt5 -o nodir/bad.enc
printf 'precious' >keep.out
refused "an existing output is untouched when decryption fails" 5 keep.out \
	decrypt --context app=other -i one.enc -o keep.out
refused "an existing output is untouched when the key is missing" 4 keep.out \
	encrypt --key nosuch -i pt5 -o keep.out
expect "an existing output is replaced on success" 0 decrypt -i one.enc -o keep.out
check "the replaced output holds the plaintext" cmp -s keep.out pt5

# ---------------------------------------------------------------------
# Truncation at every byte offset, and one bit flipped at every byte.

head -c 40 big >small
expect "small signed message (frames of 16)" 0 encrypt --key env1 --context t=1 \
	--frame-length 16 -i small -o small.s
expect "small unsigned message (frames of 16)" 0 encrypt --key env1 --context t=1 \
	--suite 0x0478 --frame-length 16 -i small -o small.u

# Cut at every offset, to a file: exit 5, no output, no temporary file.
len=$(size small.s)
i=0 nbad=0
while [ $i -lt "$len" ]; do
	head -c $i small.s >cut.msg
	"$HW_BIN" decrypt -i cut.msg -o cut.dec >/dev/null 2>"$W/err"
	st=$?
	if [ $st -ne 5 ] || [ -e cut.dec ] || ! no_leftovers "$W"; then
		nbad=$((nbad + 1))
		[ $nbad -le 5 ] && bad "signed message cut at $i: exit $st$([ -e cut.dec ] && echo ', output left'): $(first_err)"
		rm -f cut.dec .hsmwrap.* "$TMPDIR"/*
	fi
	i=$((i + 1))
done
[ $nbad -eq 0 ] && ok "signed message ($len bytes) cut at each offset: exit 5, no output, no temp file"

# On stdout: an unsigned message releases only the whole frames before the
# cut (each authenticated), never more; exit 5 all the same.
len=$(size small.u)
i=0 nbad=0
while [ $i -lt "$len" ]; do
	head -c $i small.u >cut.msg
	"$HW_BIN" decrypt -i cut.msg -o - >cut.out 2>"$W/err"
	st=$?
	n=$(size cut.out)
	head -c "$n" small >prefix
	if [ $st -ne 5 ] || [ $((n % 16)) -ne 0 ] || ! cmp -s prefix cut.out; then
		nbad=$((nbad + 1))
		[ $nbad -le 5 ] && bad "unsigned message cut at $i to stdout: exit $st, $n bytes out"
	fi
	i=$((i + 1))
done
[ $nbad -eq 0 ] && ok "unsigned message ($len bytes) cut at each offset, to stdout: exit 5, only whole authenticated frames released"

# A signed message releases nothing on stdout unless its signature verifies:
# every offset in the last 120 bytes (last frame and footer), every 16th before.
len=$(size small.s)
i=0 nbad=0 nrun=0
while [ $i -lt "$len" ]; do
	head -c $i small.s >cut.msg
	"$HW_BIN" decrypt -i cut.msg -o - >cut.out 2>"$W/err"
	st=$?
	nrun=$((nrun + 1))
	if [ $st -ne 5 ] || [ -s cut.out ] || ! no_leftovers "$W"; then
		nbad=$((nbad + 1))
		[ $nbad -le 5 ] && bad "signed message cut at $i to stdout: exit $st, $(size cut.out) bytes out"
		rm -f "$TMPDIR"/*
	fi
	if [ $i -lt $((len - 120)) ]; then i=$((i + 16)); else i=$((i + 1)); fi
done
[ $nbad -eq 0 ] && ok "signed message cut at $nrun offsets, to stdout: exit 5, nothing released, no spool left"

# One bit flipped at each byte of the signed message (bit = offset mod 8):
# exit 5, or 4 when the flip renamed the key or its namespace; never any
# output. The variants are made in one go when python3 is there.
len=$(size small.s)
mkdir flips
if [ -n "$PYTHON" ]; then
	"$PYTHON" -c '
import sys
m = open(sys.argv[1], "rb").read()
for i in range(len(m)):
    b = bytearray(m); b[i] ^= 1 << (i % 8)
    open("flips/%d" % i, "wb").write(b)' small.s
fi
i=0 nbad=0 n4=0 n5=0
while [ $i -lt "$len" ]; do
	f=flips/$i
	[ -f "$f" ] || { flipbit small.s $i $((i % 8)); f=$W/flipped; }
	"$HW_BIN" decrypt -i "$f" -o flip.dec >/dev/null 2>"$W/err"
	st=$?
	case $st in 4) n4=$((n4 + 1)) ;; 5) n5=$((n5 + 1)) ;; esac
	if { [ $st -ne 5 ] && [ $st -ne 4 ]; } || [ -e flip.dec ] || ! no_leftovers "$W"; then
		nbad=$((nbad + 1))
		[ $nbad -le 5 ] && bad "signed message bit flipped at $i: exit $st$([ -e flip.dec ] && echo ', output left'): $(first_err)"
		rm -f flip.dec .hsmwrap.*
	fi
	i=$((i + 1))
done
[ $nbad -eq 0 ] && ok "signed message with a bit flipped at each of its $len bytes: refused ($n5 x exit 5, $n4 x exit 4), no output"
check "some flips were caught as wrong key names (exit 4)" test "$n4" -gt 0
# The same flips in the footer, to stdout: nothing may come out.
i=$((len - 110)) nbad=0
while [ $i -lt "$len" ]; do
	f=flips/$i
	[ -f "$f" ] || { flipbit small.s $i $((i % 8)); f=$W/flipped; }
	"$HW_BIN" decrypt -i "$f" -o - >flip.out 2>"$W/err"
	st=$?
	if [ $st -ne 5 ] || [ -s flip.out ]; then
		nbad=$((nbad + 1))
		[ $nbad -le 5 ] && bad "signed footer flipped at $i to stdout: exit $st, $(size flip.out) bytes out"
	fi
	i=$((i + 11))
done
[ $nbad -eq 0 ] && ok "signed message with its footer altered, to stdout: nothing released"
refused "a header that does not parse needs no PIN: exit 5, not 3" 5 pin.dec \
	--pin-source file:/nonexistent decrypt -i flips/0 -o pin.dec
cat small.s small.s >twice
refused "bytes after the end of the message" 5 twice.dec decrypt -i twice -o twice.dec
refused "not a message at all" 5 junk.dec decrypt -i pt5 -o junk.dec
refused "an empty input" 5 empty.dec2 decrypt -i empty -o empty.dec2

# ---------------------------------------------------------------------
# A legacy (v1, no key commitment) message from the SDK's public test
# vectors: refused by default, decrypted with --allow-legacy. Its key is
# imported with pkcs11-tool as the vectors name it (namespace
# aws-raw-vectors-persistant, key aes-256); its context is reproduced, not
# stored, so --context supplies it.

vecdir=${ESDK_VECTORS_DIR:-$SRCDIR/../shared/vectors/esdk}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
vec=0014-ec_len_2-cmm_RequiredEncryptionContext-98c06395-2ff4-4610-9e20-650c1d8d9544
if [ -f "$vecdir/valid-Net-4.0.0.zip" ] && [ -n "$PYTHON" ] && [ -n "$PKCS11_TOOL" ] &&
	[ -n "${SOFTHSM_MODULE:-}" ]; then
	mkdir vec
	"$PYTHON" -c '
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
open("vec/msg", "wb").write(z.read("ciphertexts/" + sys.argv[2]))
open("vec/plain", "wb").write(z.read("plaintexts/small"))' "$vecdir/valid-Net-4.0.0.zip" "$vec"
	echo AAECAwQFBgcICRAREhMUFRYXGBkgISIjJCUmJygpMDE= | base64 -d >vec/key
	slot=$(p11_slot hsmwrap-test)
	HW_P11_PIN=$(cat "$HW_TEST_USER_PIN_FILE") "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" \
		--slot "${slot:-none}" --login --pin env:HW_P11_PIN --write-object vec/key \
		--type secrkey --key-type AES:32 --label aes-256 --usage-decrypt --sensitive \
		>"$W/err" 2>&1 || bad "importing the vector key with pkcs11-tool: $(tail -n 1 "$W/err")"
	rm -f vec/key
	expect "inspect a v1 vector" 0 inspect vec/msg
	check "inspect says legacy, suite 0x0014" grep -q '^Key commitment: *no (legacy' "$W/out"
	refused "a legacy message without --allow-legacy" 5 vec/out \
		decrypt --namespace aws-raw-vectors-persistant --context key1=val1 --context key2=val2 \
		-i vec/msg -o vec/out
	check "the refusal names --allow-legacy" grep -q -- '--allow-legacy' "$W/err"
	expect "the legacy message with --allow-legacy" 0 decrypt --allow-legacy \
		--namespace aws-raw-vectors-persistant --context key1=val1 --context key2=val2 \
		-i vec/msg -o vec/out
	check "its plaintext is the vector's" cmp -s vec/out vec/plain
	refused "the legacy message without its reproduced context" 5 vec/out2 \
		decrypt --allow-legacy --namespace aws-raw-vectors-persistant -i vec/msg -o vec/out2
else
	echo "skip: legacy vector (needs $vecdir, python3 and pkcs11-tool)"
fi

# ---------------------------------------------------------------------
# inspect: no token, no PIN.

expect "inspect with no module, token or PIN source usable" 0 \
	--module /nonexistent/module.so --pin-source file:/nonexistent inspect small.s
check "inspect shows the context" grep -q '^  t = 1$' "$W/out"
check "inspect shows the frame length" grep -q '16-byte frames' "$W/out"
expect "inspect from stdin" 0 inspect - <small.u
check "inspect of the unsigned message" grep -q '^Signed: *no' "$W/out"
refused "inspect of a non-message" 5 "$W/none" inspect pt5
head -c 100 small.s >cut.msg
refused "inspect of a truncated header" 5 "$W/none" inspect cut.msg
refused "inspect of an empty file" 5 "$W/none" inspect empty
refused "inspect of a missing file" 1 "$W/none" inspect nosuchfile

# ---------------------------------------------------------------------
# --json

if [ -n "$PYTHON" ]; then
	expect "encrypt --json" 0 --json encrypt --key env1 --key env2 --context app=j -i pt5 -o j.enc
	check "encrypt --json: suite, keys, bytes, message id" test \
		"$(json_get 'd["suite"], d["keys"], d["bytes_in"], d["bytes_out"] == '"$(size j.enc)"', len(d["message_id"]), d["context"]["app"]' <"$W/out")" = \
		"('0x0578', ['env1', 'env2'], 5000, True, 64, 'j')"
	mid=$(json_get 'd["message_id"]' <"$W/out")
	expect "decrypt --json" 0 --json decrypt --context app=j -i j.enc -o j.dec
	check "decrypt --json: context, bytes, message id" test \
		"$(json_get 'd["context"]["app"], d["bytes_out"], d["message_id"] == "'"$mid"'"' <"$W/out")" = \
		"('j', 5000, True)"
	expect "inspect --json" 0 --json inspect j.enc
	check "inspect --json: version, committing, data keys" test \
		"$(json_get 'd["version"], d["committing"], d["signed"], [k["key_name"] for k in d["data_keys"]], d["data_keys"][0]["provider_id"], d["frame_length"]' <"$W/out")" = \
		"(2, True, True, ['env1', 'env2'], 'hsmwrap', 4096)"
	hw --json decrypt --context app=other -i j.enc -o j.dec2
	check "decrypt --json failure: one document, ok false, exit 5" test \
		"$rc $(json_get 'd["ok"], d["error"], d["exit"]' <"$W/out")" = "5 (False, 'HW_ERR_INTEGRITY', 5)"
else
	echo "skip: --json checks (no python3)"
fi

# ---------------------------------------------------------------------
# A termination signal in the middle of a stream leaves nothing behind.

rm -f sig.enc
( head -c 100000 big; sleep 3; head -c 100000 big ) |
	"$HW_BIN" encrypt --key env1 -o sig.enc 2>"$W/err" &
pid=$!
sleep 1
# $! is the last process of the pipeline: hsmwrap.
kill -TERM $pid 2>/dev/null
wait $pid
st=$?
if [ $st -eq 143 ] && [ ! -e sig.enc ] && no_leftovers "$W"; then
	ok "SIGTERM during encrypt: killed by the signal, no output, no temp file"
else
	bad "SIGTERM during encrypt: status $st, output $([ -e sig.enc ] && echo left || echo absent)"
fi

check "no temporary or spool file anywhere" no_leftovers "$W"
echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
