#!/bin/sh
# demo.sh - envelope encryption with a key that never leaves an embedded
# SoftHSM token, as a transcript: create a key, encrypt a file, show the
# header, decrypt it, and see altered input refused.
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

say "Generate an envelope key inside the HSM (sensitive, never extractable)"
run hsmwrap key create --label demo-envelope --type aes256 --purpose envelope

say "Encrypt a file (AWS Encryption SDK format, suite 0x0578, 4 KiB frames)"
i=0
while [ $i -lt 300 ]; do
	printf 'Quarterly report, line %d: revenue up, costs down.\n' "$i"
	i=$((i + 1))
done >"$d/report.txt"
run hsmwrap encrypt --key demo-envelope --context dept=finance --context year=2026 \
	-i "$d/report.txt" -o "$d/report.txt.enc"
run ls -l "$d/report.txt" "$d/report.txt.enc"

say "Show the header: readable without the HSM or a PIN, nothing decrypted"
run hsmwrap inspect "$d/report.txt.enc"

say "Decrypt it (the HSM unwraps the data key) and compare"
run hsmwrap decrypt --context dept=finance -i "$d/report.txt.enc" -o "$d/report.check"
run cmp "$d/report.txt" "$d/report.check"

say "The context is authenticated: a different one must be refused"
printf '$ hsmwrap decrypt --context dept=sales -i %s -o %s\n' "$d/report.txt.enc" "$d/report.other"
if "$hsmwrap_bin" decrypt --context dept=sales -i "$d/report.txt.enc" -o "$d/report.other"; then
	die "decryption with the wrong context succeeded"
fi
[ ! -e "$d/report.other" ] || die "a refused decryption left $d/report.other behind"
echo "(refused, as it must be; no output file was written)"

say "One altered byte anywhere is refused too, and releases nothing"
run cp "$d/report.txt.enc" "$d/report.tampered"
printf '$ printf X | dd of=%s bs=1 seek=5000 conv=notrunc\n' "$d/report.tampered"
printf 'X' | dd of="$d/report.tampered" bs=1 seek=5000 conv=notrunc 2>/dev/null
printf '$ hsmwrap decrypt -i %s -o %s\n' "$d/report.tampered" "$d/report.bad"
status=0
"$hsmwrap_bin" decrypt -i "$d/report.tampered" -o "$d/report.bad" || status=$?
[ $status -eq 5 ] || die "decryption of an altered message gave exit status $status, not 5"
[ ! -e "$d/report.bad" ] || die "a refused decryption left $d/report.bad behind"
echo "(refused with exit status 5, integrity; no output file was written)"

say "The key on the token, its attributes and key check value"
run hsmwrap key list
run hsmwrap key show demo-envelope

printf '\nDEMO OK: token "demo" in %s/tokens holds demo-envelope; %s/report.txt\n' "$d" "$d"
printf 'survived encrypt/decrypt unchanged, and altered input was refused.\n'
