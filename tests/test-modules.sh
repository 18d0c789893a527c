#!/bin/sh
# test-modules.sh: module init arguments (issue 12). NSS softokn needs its
# database location in C_Initialize's pReserved; hsmwrap passes it from
# --module-init-args, HSMWRAP_MODULE_INIT_ARGS, the config file, or the
# x-init-reserved option of a module registered with p11-kit. The p11-kit
# registration lives in a private module directory: p11-kit ignores user
# configuration when running as root, so as root the test bind-mounts its
# directory over p11-kit's in a private mount namespace (unshare -m); as
# another user it uses $XDG_CONFIG_HOME/pkcs11/modules. /etc is untouched.
# One line per check, then "N passed, N failed".

set -u
for v in HSMWRAP HW_TEST_DIR; do
	eval "val=\${$v:-}"
	[ -n "$val" ] || { echo "test-modules.sh: $v is not set; run me under tests/with-token.sh" >&2; exit 99; }
done
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/nss.sh"
PYTHON=$(command -v python3 2>/dev/null || :)

W=$HW_TEST_DIR/modules
mkdir "$W" || exit 99
ALL=$W/all-output
: >"$ALL"
# Only the NSS token here: the SoftHSM one of with-token.sh stays out.
unset HSMWRAP_MODULE HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE HSMWRAP_MODULE_INIT_ARGS
nss_setup "$W/db" || exit 99

NSSDB='NSS Certificate DB'
lists_nss() { grep -q "Label: *$NSSDB" "$W/out"; }

# 1. What a user saw before: the module given by path, without arguments.
expect "softokn by path without init args fails" 4 --config /dev/null --module "$NSS_MODULE" token list
check "the error says the module refused its arguments" grep -q "C_Initialize.*Invalid arguments" "$W/err"

# 2. The arguments from each place a module given by path takes them.
expect "--module-init-args" 0 --config /dev/null --module "$NSS_MODULE" \
	--module-init-args "$NSS_INIT_ARGS" token list
check "token list shows the NSS database token" lists_nss
HSMWRAP_MODULE_INIT_ARGS=$NSS_INIT_ARGS expect "HSMWRAP_MODULE_INIT_ARGS" 0 \
	--config /dev/null --module "$NSS_MODULE" token list
check "  ...shows the NSS database token" lists_nss
printf 'module = %s\nmodule_init_args = %s\n' "$NSS_MODULE" "$NSS_INIT_ARGS" >"$W/hsmwrap.conf"
expect "module_init_args in hsmwrap.conf" 0 --config "$W/hsmwrap.conf" token list
check "  ...shows the NSS database token" lists_nss
# The password of the database is the token's user PIN.
expect "a key made on softokn with the config file" 0 --config "$W/hsmwrap.conf" \
	--token "$NSS_TOKEN" --pin-source "file:$NSS_PIN_FILE" key create --label m1 --type ec-p256
expect "  ...is listed" 0 --config "$W/hsmwrap.conf" --token "$NSS_TOKEN" \
	--pin-source "file:$NSS_PIN_FILE" key list
check "  ...by its label" grep -q m1 "$W/out"
# 3. Capabilities (src/lib/token/caps.c): what softokn lacks is refused
# before anything is done, naming the token and what it lacks.
NSSW="--config $W/hsmwrap.conf --token $NSS_TOKEN --pin-source file:$NSS_PIN_FILE"
expect "token list --json on softokn" 0 --config "$W/hsmwrap.conf" --json token list
if [ -n "$PYTHON" ]; then
	f=$(json_get '[s["token"]["features"] for m in d["modules"] for s in m["slots"] if s["token"] and s["token"]["label"] == "NSS Certificate DB"][0]' <"$W/out")
	check "softokn features: envelope, keywrap, rsa-sign, ec-sign ($f)" [ "$f" = "{'envelope': True, 'keywrap': True, 'rsa-sign': True, 'ec-sign': True, 'lifecycle': False, 'backup': False, 'mechanism-pinning': False, 'eddsa-sign': False}" ]
fi
expect "token list text on softokn" 0 --config "$W/hsmwrap.conf" token list
check "  ...names what is not supported and why" grep -q "Not supported:  lifecycle, backup, mechanism-pinning, eddsa-sign (missing data-objects, allowed-mechanisms, eddsa-keygen)" "$W/out"
# shellcheck disable=SC2086
expect "key rotate on softokn is refused" 6 $NSSW key rotate m1
check "  ...naming the token and the missing capability" \
	grep -q "key rotate: the token 'NSS Certificate DB' (NSS 3) has no private token data objects" "$W/err"
# shellcheck disable=SC2086
expect "key disable on softokn is refused" 6 $NSSW key disable m1
# shellcheck disable=SC2086
expect "  ...and the key is still usable: envelope key" 0 $NSSW key create --label e1 --type aes256
echo "secret data" >"$W/plain"
# shellcheck disable=SC2086
expect "  ...encrypt on softokn" 0 $NSSW encrypt --key e1 -i "$W/plain" -o "$W/plain.enc"
# shellcheck disable=SC2086
expect "  ...decrypt on softokn" 0 $NSSW decrypt -i "$W/plain.enc" -o "$W/plain.dec"
check "  ...round trip" cmp -s "$W/plain" "$W/plain.dec"
# shellcheck disable=SC2086
expect "a backup-able key on softokn is refused" 6 $NSSW key create --label b1 --type aes256 --backupable
# shellcheck disable=SC2086
expect "  ...and nothing was made" 4 $NSSW key show b1
# The same listing on SoftHSM has every feature.
expect "token list --json on SoftHSM" 0 --config /dev/null --module "$SOFTHSM_MODULE" --json token list
if [ -n "$PYTHON" ]; then
	f=$(json_get 'all(all(s["token"]["features"].values()) for m in d["modules"] for s in m["slots"] if s["token"] and s["token"]["initialized"])' <"$W/out")
	check "SoftHSM tokens have every feature" [ "$f" = True ]
fi

printf 'module = %s\nmodule_init_args = configdir=sql:%s\n' "$NSS_MODULE" "$W/nowhere" >"$W/bad.conf"
# A wrong database must not silently become an empty one.
expect "init args naming a missing database fail" 4 --config "$W/bad.conf" \
	--token "$NSS_TOKEN" --pin-source "file:$NSS_PIN_FILE" key list

# 4. Registered with p11-kit, as its users do.
mods=$W/p11-modules
mkdir "$mods" || exit 99
cat >"$mods/nss-test.module" <<MOD
module: $NSS_MODULE
x-init-reserved: $NSS_INIT_ARGS
MOD
# run_registered CMD...: CMD with p11-kit seeing $mods.
if [ "$(id -u)" -eq 0 ]; then
	sysmods=/usr/share/p11-kit/modules
	[ -d "$sysmods" ] && cp "$sysmods"/*.module "$mods"/ 2>/dev/null
	run_registered() {
		unshare -m sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' \
			"$mods" "$sysmods" "$@"
	}
	if ! unshare -m true 2>/dev/null || [ ! -d "$sysmods" ]; then
		echo "test-modules.sh: running as root without unshare -m: cannot register a module privately" >&2
		echo "$npass passed, $nfail failed"
		exit 77
	fi
else
	mkdir -p "$W/home/.config/pkcs11" && ln -s "$mods" "$W/home/.config/pkcs11/modules"
	run_registered() { HOME=$W/home XDG_CONFIG_HOME=$W/home/.config "$@"; }
fi
rhw() {
	run_registered "$HSMWRAP" "$@" >"$W/out" 2>"$W/err"
	rc=$?
	cat "$W/out" "$W/err" >>"$ALL"
}
rhw --config /dev/null --module nss-test token list
check "registered module: token list by name (exit $rc)" [ "$rc" -eq 0 ]
check "  ...shows the NSS database token" lists_nss
rhw --config /dev/null --json --module nss-test token list
if [ -n "$PYTHON" ]; then
	n=$(json_get 'sum(1 for m in d["modules"] for s in m["slots"] if s["token"] and s["token"]["label"] == "NSS Certificate DB")' <"$W/out" 2>/dev/null)
	check "  ...and in --json" [ "$n" = 1 ]
fi
rhw --config /dev/null --module nss-test --token "$NSS_TOKEN" --pin-source "file:$NSS_PIN_FILE" key list
check "registered module: login and key list (exit $rc)" [ "$rc" -eq 0 ] && grep -q m1 "$W/out"
# Without a module option every registered module is listed, softokn too.
rhw --config /dev/null token list
check "token list of all modules includes softokn (exit $rc)" lists_nss

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
