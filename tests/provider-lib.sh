# tests/provider-lib.sh - what the provider suites share (sourced after
# HSMWRAP, OPENSSL, MODDIR and W are set): pass/fail counters, openssl with
# the provider (and the sanitizer runtime a sanitized build needs), a
# failure check that also catches crashes, and s_server on a random port,
# stopped by the EXIT trap whatever way the suite ends.

# A sanitized provider needs its sanitizer runtime in the (uninstrumented)
# openssl binary, preloaded: the one the module itself was linked with.
PRELOAD=$(ldd "$MODDIR/hsmwrap.so" 2>/dev/null | awk '/asan/ { print $3; exit }')
SERVER_PID=

# s_server stops at EOF on its stdin: it reads a FIFO we hold open (fd 3).
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
	exec 3>&-
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

# ossl ARGS...: openssl with the provider's build directory; leak checks
# are off for the uninstrumented openssl binary's own allocations.
ossl() {
	if [ -n "$PRELOAD" ]; then
		LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} \
			OPENSSL_MODULES=$MODDIR "$OPENSSL" "$@"
	else
		OPENSSL_MODULES=$MODDIR "$OPENSSL" "$@"
	fi
}
# ossl_exec ARG...: the same, replacing the (sub)shell it runs in, so that
# `ossl_exec ... &` leaves openssl's own pid in $! (a backgrounded ossl
# would leave the subshell's: killing that does not stop openssl).
ossl_exec() {
	if [ -n "$PRELOAD" ]; then
		LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} \
			OPENSSL_MODULES=$MODDIR exec "$OPENSSL" "$@"
	else
		OPENSSL_MODULES=$MODDIR exec "$OPENSSL" "$@"
	fi
}
# default first: unqualified fetches (ECDHE keys, TLS 1.2 ECDSA checks)
# must land in the default provider; keys from pkcs11: URIs and
# reference files still come to hsmwrap. See conf/hsmwrap-provider.cnf.
PROV="-provider default -provider hsmwrap"

# expect_reference NAME URI PUBFILE: writing the HSM key out gives its
# key reference (a pkcs11: URI without PIN, no key material) that loads
# back to the same public key; the encodings that would need key material
# (DER, traditional PEM) are refused.
expect_reference() {
	kn=$1 uri=$2 pub=$3 ref=$W/$1.ref
	rm -f "$ref"
	if ! ossl pkey $PROV -in "$uri" -out "$ref" 2>"$W/err"; then
		bad "$kn: openssl pkey -out: $(head -c 300 "$W/err")"
	elif ! grep -q 'BEGIN HSMWRAP KEY REFERENCE' "$ref" || grep -q 'PRIVATE KEY' "$ref"; then
		bad "$kn: pkey -out wrote something else than a reference: $(head -c 100 "$ref")"
	elif ! sed '1d;$d' "$ref" | base64 -d 2>/dev/null | grep -q '^pkcs11:.*type=private' ||
	     sed '1d;$d' "$ref" | base64 -d 2>/dev/null | grep -qi 'pin-'; then
		bad "$kn: the reference is not a PIN-less pkcs11: URI"
	elif ! ossl pkey $PROV -in "$ref" -pubout -out "$ref.pub" 2>"$W/err" || ! cmp -s "$ref.pub" "$pub"; then
		bad "$kn: the written reference does not load back to the same key: $(head -c 300 "$W/err")"
	else
		ok "$kn: openssl pkey -out writes a key reference, not the key"
	fi
	expect_fail "$kn: DER private key output is refused" "stays in the HSM" \
		ossl pkey $PROV -in "$uri" -outform DER -out "$W/$kn.der"
	expect_fail "$kn: traditional PEM private key output is refused" "stays in the HSM" \
		ossl pkey $PROV -in "$uri" -traditional -out "$W/$kn.trad"
}

# expect_fail NAME PATTERN CMD...: fails (no signal) and says PATTERN on stderr.
expect_fail() {
	name=$1 pat=$2
	shift 2
	"$@" >"$W/out" 2>"$W/err"
	rc=$?
	if [ $rc -eq 0 ]; then
		bad "$name: succeeded"
	elif [ $rc -ge 126 ]; then
		bad "$name: exit $rc (crash?): $(head -c 300 "$W/err")"
	elif ! grep -qi -- "$pat" "$W/err"; then
		bad "$name: exit $rc but no '$pat' in: $(head -c 300 "$W/err")"
	else
		ok "$name (exit $rc: $(grep -i -m1 -- "$pat" "$W/err" | cut -c1-110))"
	fi
}

# start_server KEY CERT [S_SERVER ARG...]: s_server on 127.0.0.1, a random
# free port (retried on a clash), accepting up to 2 connections. Sets PORT.
start_server() {
	srv_key=$1 srv_cert=$2
	shift 2
	for try in 1 2 3 4 5; do
		PORT=$(( $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 20000 + 20000 ))
		: >"$W/server.log"
		rm -f "$W/stdin"
		mkfifo "$W/stdin" || return 1
		ossl_exec s_server $PROV -key "$srv_key" -cert "$srv_cert" -accept "127.0.0.1:$PORT" \
			-naccept 2 "$@" >"$W/server.log" 2>&1 <"$W/stdin" &
		SERVER_PID=$!
		exec 3>"$W/stdin"
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
			grep -q ACCEPT "$W/server.log" && return 0
			kill -0 "$SERVER_PID" 2>/dev/null || break
			sleep 0.25
		done
		cleanup
	done
	return 1
}


# p11 ARG...: pkcs11-tool logged in to the test token (by slot: see p11.sh).
. "$(dirname "$0")/p11.sh"
p11() {
	slot=$(p11_slot hsmwrap-test "$HSMWRAP_MODULE")
	HW_P11_PIN=$(cat "$HW_TEST_USER_PIN_FILE") "$PKCS11_TOOL" --module "$HSMWRAP_MODULE" \
		--slot "${slot:-none}" --login --pin env:HW_P11_PIN "$@"
}

# p11_access LABEL: pkcs11-tool's "Access:" line for the private key LABEL
# (sensitive, never extractable...): an independent reader of the token.
p11_access() {
	p11 --list-objects --type privkey 2>/dev/null | awk -v l="$1" '
		/^[^ \t]/ { cur = "" } /label:/ { cur = $2 }
		/Access:/ && cur == l { sub(/^[ \t]+Access:[ \t]*/, ""); print }'
}

# tls_check NAME CAFILE S_CLIENT-ARG...: s_client against $PORT verifies the
# server against CAFILE; NAME ok with the cipher and peer signature type.
tls_check() {
	name=$1 ca=$2
	shift 2
	timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" -verify_return_error \
		-CAfile "$ca" "$@" </dev/null >"$W/client.log" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q 'Verify return code: 0 (ok)' "$W/client.log"; then
		ok "$name ($(grep -a -m1 -o 'Cipher is [^ ]*' "$W/client.log"), $(grep -a -m1 -o 'Peer signature type: .*' "$W/client.log"))"
	else
		bad "$name: s_client exit $rc: $(grep -a -m3 -i 'error\|alert' "$W/client.log" | tr '\n' ' ') server: $(head -c 300 "$W/server.log")"
	fi
}
