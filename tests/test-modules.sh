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
printf 'module = %s\nmodule_init_args = configdir=sql:%s\n' "$NSS_MODULE" "$W/nowhere" >"$W/bad.conf"
# A wrong database must not silently become an empty one.
expect "init args naming a missing database fail" 4 --config "$W/bad.conf" \
	--token "$NSS_TOKEN" --pin-source "file:$NSS_PIN_FILE" key list

# 3. Registered with p11-kit, as its users do.
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
