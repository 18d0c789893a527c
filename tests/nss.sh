# tests/nss.sh - an NSS softokn token (the PKCS#11 module of Firefox and
# system NSS) in a private database, for tests that run on it. Source it,
# then call nss_setup DIR: it creates the database with certutil and sets
#   NSS_MODULE     path of libsoftokn3.so
#   NSS_INIT_ARGS  the module's init arguments (pReserved) naming DIR
#   NSS_PIN_FILE   the database password, which is the token's user PIN
#   NSS_TOKEN      URI of the token that holds keys ("NSS Certificate DB")
# Returns 1 (with a message) when softokn or certutil is missing.

nss_find_module() {
	for d in ${NSS_SOFTOKN_DIR:-} /usr/lib/$(gcc -print-multiarch 2>/dev/null) \
		/usr/lib64 /usr/lib /usr/lib/nss /usr/lib64/nss; do
		[ -f "$d/libsoftokn3.so" ] && { echo "$d/libsoftokn3.so"; return 0; }
	done
	return 1
}

nss_setup() {
	NSS_MODULE=$(nss_find_module) || { echo "nss.sh: libsoftokn3.so not found (libnss3)" >&2; return 1; }
	command -v certutil >/dev/null 2>&1 || { echo "nss.sh: certutil not found (libnss3-tools)" >&2; return 1; }
	mkdir -p "$1" || return 1
	(umask 077 && od -An -tx1 -N8 /dev/urandom | tr -d ' \n' >"$1/db.pin") || return 1
	certutil -N -d "sql:$1" -f "$1/db.pin" >"$1/certutil.log" 2>&1 ||
		{ cat "$1/certutil.log" >&2; return 1; }
	NSS_INIT_ARGS="configdir='sql:$1' certPrefix='' keyPrefix='' secmod='' flags="
	NSS_PIN_FILE=$1/db.pin
	NSS_TOKEN='pkcs11:token=NSS%20Certificate%20DB'
	return 0
}
