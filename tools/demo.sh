#!/bin/sh
# demo.sh - a key ceremony on an embedded SoftHSM token, as a transcript.
#
# Run by `make demo` from the build tree, which passes:
#   HSMWRAP_BIN     the built hsmwrap
#   SOFTHSM_MODULE  the SoftHSMv2 module configure found
#   DEMO_DIR        where the token lives (default: ./demo), recreated each run
#
# Everything happens in DEMO_DIR with its own softhsm2.conf: the machine's
# default SoftHSM token directory is never touched.

set -eu

hsmwrap_bin=${HSMWRAP_BIN:-./hsmwrap}
module=${SOFTHSM_MODULE:-}
demo=${DEMO_DIR:-$(pwd)/demo}

die() {
	echo "demo: $*" >&2
	exit 1
}

[ -n "$module" ] && [ -f "$module" ] ||
	die "SoftHSMv2 module not found (install softhsm2, or configure --with-softhsm=PATH)"
[ -x "$hsmwrap_bin" ] || die "$hsmwrap_bin is not built (run make first)"

# Show commands relative to the build tree, as an operator would type them.
cd "$(dirname "$demo")"
d=$(basename "$demo")

step=0
say() {
	step=$((step + 1))
	printf '\n## %d. %s\n' "$step" "$*"
}

# Prints the command, then runs it; `hsmwrap` stands for the built binary.
run() {
	printf '$ %s\n' "$*"
	if [ "$1" = hsmwrap ]; then
		shift
		"$hsmwrap_bin" "$@"
	else
		"$@"
	fi
}

trap 'status=$?; [ $status -eq 0 ] || printf "\nDEMO FAILED (exit status %d) at step %d\n" "$status" "$step" >&2' EXIT

# The tokens and PIN files are private to us.
umask 077

say "A fresh SoftHSM token store in $d/ (the previous demo is discarded)"
rm -rf "$d"
mkdir -p "$d/tokens"
cat >"$d/softhsm2.conf" <<EOF
directories.tokendir = $demo/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
# No system-wide hsmwrap.conf or caller environment leaks into the demo.
: >"$d/hsmwrap.conf"
unset HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE
printf '$ export SOFTHSM2_CONF=%s\n' "$demo/softhsm2.conf"
SOFTHSM2_CONF=$demo/softhsm2.conf
printf '$ export HSMWRAP_MODULE=%s HSMWRAP_CONFIG=%s\n' "$module" "$d/hsmwrap.conf"
HSMWRAP_MODULE=$module
HSMWRAP_CONFIG=$d/hsmwrap.conf
export SOFTHSM2_CONF HSMWRAP_MODULE HSMWRAP_CONFIG

say "Random SO and user PINs, readable by us only"
for who in so user; do
	pin=$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
	[ ${#pin} -eq 16 ] || die "could not read /dev/urandom"
	printf '%s' "$pin" >"$d/$who.pin"
	chmod 600 "$d/$who.pin"
done
pin=
run ls -l "$d/so.pin" "$d/user.pin"

say "Initialise a token labelled 'demo' and set its user PIN"
run hsmwrap --pin-source "file:$d/user.pin" token init --label demo \
	--so-pin-source "file:$d/so.pin"
printf '$ export HSMWRAP_TOKEN=pkcs11:token=demo HSMWRAP_PIN_SOURCE=file:%s\n' "$d/user.pin"
HSMWRAP_TOKEN=pkcs11:token=demo
HSMWRAP_PIN_SOURCE=file:$d/user.pin
export HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE
run hsmwrap token list

say "Generate an envelope key and a keywrap key inside the HSM"
run hsmwrap key create --label demo-envelope --type aes256 --purpose envelope
run hsmwrap key create --label demo-keywrap --type aes256 --purpose keywrap

say "Generate a data key, returned in plaintext and wrapped by demo-envelope"
run hsmwrap datakey generate --key demo-envelope --context app=demo \
	--plaintext-out "$d/datakey.bin" -o "$d/datakey.wrapped"
run ls -l "$d/datakey.bin" "$d/datakey.wrapped"

say "Decrypt the wrapped data key in the HSM and compare"
run hsmwrap datakey decrypt --key demo-envelope --context app=demo \
	-i "$d/datakey.wrapped" -o "$d/datakey.check"
run cmp "$d/datakey.bin" "$d/datakey.check"

say "The context is bound to the data key: another context must be refused"
printf '$ hsmwrap datakey decrypt --key demo-envelope --context app=other -i %s -o %s\n' \
	"$d/datakey.wrapped" "$d/datakey.other"
if "$hsmwrap_bin" datakey decrypt --key demo-envelope --context app=other \
	-i "$d/datakey.wrapped" -o "$d/datakey.other"; then
	die "decryption with the wrong context succeeded"
fi
[ ! -e "$d/datakey.other" ] || die "a refused decryption left $d/datakey.other behind"
echo "(refused, as it must be; no output file was written)"

say "Wrap the data key with demo-keywrap (AES-KWP, RFC 5649) and unwrap it again"
run hsmwrap wrap --key demo-keywrap -i "$d/datakey.bin" -o "$d/datakey.kwp"
run hsmwrap unwrap --key demo-keywrap -i "$d/datakey.kwp" -o "$d/datakey.unwrapped"
run cmp "$d/datakey.bin" "$d/datakey.unwrapped"

say "The keys on the token, their attributes and key check values"
run hsmwrap key list
run hsmwrap key show demo-envelope
run hsmwrap key show demo-keywrap

printf '\nDEMO OK: token "demo" in %s/tokens holds demo-envelope and demo-keywrap;\n' "$d"
printf 'the data key survived generate/decrypt and wrap/unwrap unchanged.\n'
