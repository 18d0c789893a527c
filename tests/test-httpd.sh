#!/bin/sh
# test-httpd.sh - Apache httpd (Debian apache2, mod_ssl) serving HTTPS with
# an HSM key, and mutual TLS with HSM-held client keys (issue 13).
# Runs under tests/with-token.sh (throwaway SoftHSM token, HSMWRAP_* set).
# One "ok"/"FAIL" line per check, then "N passed, N failed".
#
# httpd knows nothing of the HSM: SSLCertificateKeyFile names a
# key-reference file, OpenSSL loads the
# hsmwrap provider from OPENSSL_CONF. The server requires a client
# certificate issued by the test root (SSLVerifyClient require). Clients:
#  - curl with --key naming the client's key-reference file: its
#    CertificateVerify is signed in the HSM too (RSA and EC client keys),
#    over TLS 1.2 and 1.3; httpd's log shows the client's CN (in the
#    sanitizer build, openssl s_client if curl cannot run there: CLIENT);
#  - openssl s_client -key pkcs11:URI (the provider by URI);
#  - curl without a client certificate and with one from another CA:
#    refused.
# The prefork children (forked after the key is loaded) sign; the log
# shows several served.
#
# httpd does not serve as root: when run as root, the test hands its
# directory (token, PIN file, configuration) to `nobody` and starts httpd
# as that user, as a service account would run it.
#
# Skips (77) without apache2, curl or openssl.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
HTTPD=${HTTPD:-$(PATH=$PATH:/usr/sbin:/sbin command -v apache2 2>/dev/null || :)}
HTTPD_MODULES=${HTTPD_MODULES:-/usr/lib/apache2/modules}
CURL=${CURL:-$(command -v curl 2>/dev/null || :)}
MODDIR=$(cd "$(dirname "$HSMWRAP")/.libs" 2>/dev/null && pwd)
N_REQ=${N_REQ:-40}
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/httpd
mkdir -p "$W/logs" "$W/html" || exit 99

if [ -z "$HTTPD" ] || [ -z "$CURL" ] || [ -z "$OPENSSL" ] ||
   [ ! -f "$HTTPD_MODULES/mod_ssl.so" ] || [ ! -f "$MODDIR/hsmwrap.so" ]; then
	if [ -n "${HSMWRAP_REQUIRE_HTTPD:-}" ]; then
		echo "test-httpd.sh: apache2 (mod_ssl), curl, openssl or hsmwrap.so missing" >&2
		exit 99
	fi
	echo "test-httpd.sh: apache2 (mod_ssl), curl, openssl or hsmwrap.so missing; skipping" >&2
	exit 77
fi

. "$(dirname "$0")/provider-lib.sh"

# httpd runs as nobody when we are root (see as_service), and nobody may
# not reach the build tree (a clone under /root is mode 0700): the provider
# and the library it links go into the test's directory, handed over below.
if [ "$(id -u)" -eq 0 ]; then
	. "$(dirname "$0")/copy-out.sh"
	mkdir -p "$W/lib" && copy_out "$MODDIR/hsmwrap.so" "$W/lib" >/dev/null ||
		{ echo "cannot copy the provider for httpd" >&2; exit 99; }
	MODDIR=$W/lib
	LD_LIBRARY_PATH=$W/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export LD_LIBRARY_PATH
fi

HTTPD_PID=
# stop_httpd: TERM, and KILL what is still there after 5 s (a process
# stopped or blocked in a prompt does not act on TERM); only then wait,
# so that this can never hang.
stop_httpd() {
	if [ -s "$W/httpd.pid" ]; then
		kill "$(cat "$W/httpd.pid")" 2>/dev/null
	fi
	[ -n "$HTTPD_PID" ] && kill "$HTTPD_PID" 2>/dev/null
	for i in $(seq 1 25); do
		pgrep -f "$W/httpd.conf" >/dev/null 2>&1 || break
		sleep 0.2
	done
	pkill -KILL -f "$W/httpd.conf" 2>/dev/null
	[ -n "$HTTPD_PID" ] && { kill -KILL "$HTTPD_PID" 2>/dev/null; wait "$HTTPD_PID" 2>/dev/null; }
	HTTPD_PID=
	rm -f "$W/httpd.pid"
}
trap 'stop_httpd; cleanup' EXIT

# The provider's settings as an administrator writes them (test-nginx.sh
# does the same): the PIN from the pin-source file, never from here.
sed -e "s|^# *module = .*|module = $MODDIR/hsmwrap.so|" \
    -e "s|^#pkcs11-module = .*|pkcs11-module = $HSMWRAP_MODULE|" \
    -e "s|^#token = .*|token = $HSMWRAP_TOKEN|" \
    -e "s|^#pin-source = .*|pin-source = $HSMWRAP_PIN_SOURCE|" \
    "$(dirname "$0")/../conf/hsmwrap-provider.cnf" >"$W/openssl.cnf" || exit 99
grep -q "^module = " "$W/openssl.cnf" || { echo "openssl.cnf template changed" >&2; exit 99; }

# with_conf CMD...: a program that knows nothing of hsmwrap, with the
# provider from openssl.cnf (and the sanitizer runtime it may need).
with_conf() {
	if [ -n "$PRELOAD" ]; then
		OPENSSL_CONF=$W/openssl.cnf LD_PRELOAD=$PRELOAD \
			ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} "$@"
	else
		OPENSSL_CONF=$W/openssl.cnf "$@"
	fi
}

# ---------------------------------------------------------------------
# A root CA in the HSM, a server key and two client keys in the HSM,
# certificates for each; a second, foreign CA in software.

"$HSMWRAP" ca init --key httpd-root --type ec-p384 --subject "/CN=hsmwrap httpd test root" \
	--days 2 -o "$W/root.pem" >"$W/root.log" 2>&1 ||
	{ bad "ca init: $(head -c 300 "$W/root.log")"; echo "$passed passed, $failed failed"; exit 1; }

# issue LABEL TYPE PROFILE CN [SAN]: key in the HSM, its reference, a CSR
# signed through the reference, a certificate from the HSM root.
issue() {
	if "$HSMWRAP" key create --label "$1" --type "$2" >"$W/issue.log" 2>&1 &&
	   "$HSMWRAP" key export-ref "$1" -o "$W/$1.key.pem" >>"$W/issue.log" 2>&1 &&
	   with_conf "$OPENSSL" req -new -key "$W/$1.key.pem" -subj "/CN=$4" \
		-out "$W/$1.csr" >>"$W/issue.log" 2>&1 &&
	   "$HSMWRAP" ca sign --key httpd-root --ca-cert "$W/root.pem" --csr "$W/$1.csr" \
		--profile "$3" ${5:+--san "$5"} --days 1 -o "$W/$1.crt" >>"$W/issue.log" 2>&1 &&
	   "$OPENSSL" verify -CAfile "$W/root.pem" "$W/$1.crt" >/dev/null 2>>"$W/issue.log"; then
		ok "$1: $2 key in the HSM, $3 certificate from the HSM root"
		return 0
	fi
	bad "$1: $(head -c 400 "$W/issue.log")"
	return 1
}
issue web-ec ec-p256 tls-server localhost IP:127.0.0.1,DNS:localhost
issue client-rsa rsa2048 tls-client "alice rsa"
issue client-ec ec-p256 tls-client "bob ec"

"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj "/CN=foreign root" -keyout "$W/foreign-root.key" -out "$W/foreign-root.pem" \
	>/dev/null 2>&1 &&
"$OPENSSL" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
	-subj "/CN=mallory" -CA "$W/foreign-root.pem" -CAkey "$W/foreign-root.key" \
	-keyout "$W/mallory.key" -out "$W/mallory.crt" >/dev/null 2>&1 ||
	bad "the foreign CA and its client certificate (software)"

echo "served by httpd with an HSM key" >"$W/html/index.html"

# ---------------------------------------------------------------------
# httpd

# write_conf KEY PORT: prefork, 4 children, client certificates required,
# the client's CN, the protocol and the child's pid in the access log.
write_conf() {
	cat >"$W/httpd.conf" <<EOF
ServerRoot $W
ServerName localhost
Listen 127.0.0.1:$2
PidFile $W/httpd.pid
ErrorLog $W/logs/error.log
LogLevel warn ssl:info
LoadModule mpm_prefork_module $HTTPD_MODULES/mod_mpm_prefork.so
LoadModule authz_core_module $HTTPD_MODULES/mod_authz_core.so
LoadModule mime_module $HTTPD_MODULES/mod_mime.so
LoadModule dir_module $HTTPD_MODULES/mod_dir.so
LoadModule ssl_module $HTTPD_MODULES/mod_ssl.so
StartServers 4
MinSpareServers 4
MaxSpareServers 8
MaxRequestWorkers 8
KeepAlive Off
Mutex file:$W/logs
DefaultRuntimeDir $W/logs
TypesConfig /dev/null
LogFormat "%P %{SSL_PROTOCOL}x %{SSL_CLIENT_VERIFY}x cn=%{SSL_CLIENT_S_DN_CN}x %>s" hw
CustomLog $W/logs/access.log hw
DocumentRoot $W/html
<Directory $W/html>
	Require all granted
</Directory>
SSLEngine on
# A key that does not load is an error, never a pass-phrase prompt on a
# terminal nobody watches.
SSLPassPhraseDialog exec:/bin/false
SSLProtocol -all +TLSv1.2 +TLSv1.3
SSLSessionCache none
SSLSessionTickets off
SSLCertificateFile $W/web-ec.crt
SSLCertificateKeyFile $1
SSLCACertificateFile $W/root.pem
SSLVerifyClient require
SSLVerifyDepth 1
EOF
}

# As root, httpd and everything it reads belong to nobody (see the top).
as_service() {
	if [ "$(id -u)" -eq 0 ]; then
		setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
	else
		"$@"
	fi
}
# hand_over: what httpd reads and writes, to its user (root's own later
# writes, new token objects and logs included).
hand_over() {
	if [ "$(id -u)" -eq 0 ]; then
		chown -R nobody:nogroup "$HW_TEST_DIR" || exit 99
	fi
}

# start_httpd KEY: on a random free port (retried on a clash). Sets PORT.
start_httpd() {
	for try in 1 2 3 4 5; do
		PORT=$(( $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 20000 + 20000 ))
		write_conf "$1" "$PORT"
		: >"$W/logs/error.log"
		: >"$W/logs/access.log"
		hand_over
		# -DFOREGROUND: the parent stays our child, stopped by the trap.
		with_conf as_service "$HTTPD" -f "$W/httpd.conf" -DFOREGROUND \
			</dev/null >"$W/httpd.out" 2>&1 &
		HTTPD_PID=$!
		for i in $(seq 1 40); do
			kill -0 "$HTTPD_PID" 2>/dev/null || break
			grep -q 'resuming normal operations' "$W/logs/error.log" && return 0
			sleep 0.25
		done
		stop_httpd
		grep -q "Address already in use" "$W/logs/error.log" "$W/httpd.out" || return 1
	done
	return 1
}

# Debian 12's curl (7.88.1-10+deb12u15) deadlocks in setlocale() when the
# ASan runtime is preloaded, before it sends anything; the sanitizer stage
# needs that preload for curl to load the instrumented provider. When the
# probe below hangs, the HSM-key clients are openssl s_client instead (the
# provider by reference file as well, one connection per request), so that
# httpd's side is still exercised under the sanitizers. The plain build
# always uses curl.
CLIENT=curl
if [ -n "$PRELOAD" ]; then
	with_conf timeout 20 "$CURL" -sS --max-time 5 http://127.0.0.1:1/ >/dev/null 2>&1
	if [ $? -eq 124 ]; then
		CLIENT=s_client
		N_REQ=${N_REQ_S_CLIENT:-8}
		echo "note: curl hangs with the sanitizer runtime preloaded; HSM client keys via openssl s_client, $N_REQ connections each"
	fi
fi

# get NAME WANT-CN TLS-VERSION CERT KEY: N_REQ requests, each a new
# connection with the client certificate CERT and its key KEY (a
# key-reference file); every one served with WANT-CN verified.
get() {
	gname=$1 want=$2 v=$3 cert=$4 key=$5
	: >"$W/logs/access.log"
	if [ "$CLIENT" = curl ]; then
		with_conf "$CURL" -sS --fail --max-time 300 --no-sessionid -H 'Connection: close' \
			--cacert "$W/root.pem" --tlsv"$v" --tls-max "$v" --cert "$cert" --key "$key" \
			"https://localhost:$PORT/?n=[1-$N_REQ]" \
			--resolve "localhost:$PORT:127.0.0.1" >"$W/curl.out" 2>"$W/curl.err"
		rc=$?
	else
		rc=0
		: >"$W/curl.out"
		for i in $(seq 1 "$N_REQ"); do
			printf 'GET /?n=%s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$i" |
				with_conf timeout 60 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" \
					-servername localhost -verify_return_error -CAfile "$W/root.pem" \
					-quiet -tls$(echo "$v" | tr . _) -cert "$cert" -key "$key" \
					>>"$W/curl.out" 2>"$W/curl.err" || rc=$?
		done
	fi
	got=$(grep -c "served by httpd with an HSM key" "$W/curl.out")
	sleep 0.3
	seen=$(grep -c "SUCCESS cn=$want 200" "$W/logs/access.log")
	pids=$(awk '{ print $1 }' "$W/logs/access.log" | sort -u | wc -l)
	if [ $rc -eq 0 ] && [ "$got" -eq "$N_REQ" ] && [ "$seen" -eq "$N_REQ" ]; then
		ok "$gname: $got/$N_REQ pages, client '$want' verified by httpd ($(awk 'NR == 1 { print $2 }' "$W/logs/access.log"), $pids children)"
	else
		bad "$gname: $CLIENT exit $rc, $got/$N_REQ pages, $seen verified: $(head -c 300 "$W/curl.err") $(tail -c 400 "$W/logs/error.log")"
	fi
}

# refused NAME CURL-ARG...: the server does not serve the page. These
# clients hold no HSM key, so curl runs without the provider (and without
# the sanitizer runtime it would need: see CLIENT above).
refused() {
	rname=$1
	shift
	env -u OPENSSL_CONF "$CURL" -sS --fail --max-time 60 --cacert "$W/root.pem" "$@" \
		--resolve "localhost:$PORT:127.0.0.1" "https://localhost:$PORT/" \
		>"$W/curl.out" 2>"$W/curl.err"
	rc=$?
	if [ $rc -ne 0 ] && ! grep -q "served by httpd" "$W/curl.out"; then
		ok "$rname (curl exit $rc: $(head -n1 "$W/curl.err" | cut -c1-100))"
	else
		bad "$rname: curl exit $rc, served: $(head -c 100 "$W/curl.out")"
	fi
}

# ---------------------------------------------------------------------
# The server key by reference file. (Debian's mod_ssl is built with the
# ENGINE API: it hands a `pkcs11:` SSLCertificateKeyFile to the libp11
# engine, not to OpenSSL's store, so httpd takes HSM keys by reference.)

if start_httpd "$W/web-ec.key.pem"; then
	ok "httpd started, server key by key-reference file"

	for v in 1.2 1.3; do
		get "TLS $v, HSM RSA client key ($CLIENT, key by reference)" "alice rsa" \
			"$v" "$W/client-rsa.crt" "$W/client-rsa.key.pem"
		get "TLS $v, HSM EC client key ($CLIENT, key by reference)" "bob ec" \
			"$v" "$W/client-ec.crt" "$W/client-ec.key.pem"
	done

	# openssl s_client with the client key by URI: mTLS through the provider.
	printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' |
		with_conf timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" -servername localhost \
			-verify_return_error -CAfile "$W/root.pem" -quiet \
			-cert "$W/client-ec.crt" -key "pkcs11:object=client-ec;type=private" \
			>"$W/s_client.out" 2>"$W/s_client.err"
	if grep -q "served by httpd with an HSM key" "$W/s_client.out"; then
		ok "openssl s_client -key pkcs11:URI: mutual TLS, client key in the HSM"
	else
		bad "s_client with the HSM client key: $(head -c 300 "$W/s_client.err") $(tail -c 300 "$W/logs/error.log")"
	fi

	refused "no client certificate: refused"
	refused "a client certificate from another CA: refused" \
		--cert "$W/mallory.crt" --key "$W/mallory.key"
	# A certificate with another HSM key's reference: the client (through
	# the provider) refuses the pair before it connects.
	if [ "$CLIENT" = curl ]; then
		with_conf "$CURL" -sS --fail --max-time 60 --cacert "$W/root.pem" \
			--cert "$W/client-rsa.crt" --key "$W/client-ec.key.pem" \
			--resolve "localhost:$PORT:127.0.0.1" "https://localhost:$PORT/" \
			>"$W/curl.out" 2>"$W/curl.err"
	else
		printf 'GET / HTTP/1.0\r\n\r\n' |
			with_conf timeout 60 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" -quiet \
				-CAfile "$W/root.pem" -cert "$W/client-rsa.crt" -key "$W/client-ec.key.pem" \
				>"$W/curl.out" 2>"$W/curl.err"
	fi
	rc=$?
	if [ $rc -ne 0 ] && ! grep -q "served by httpd" "$W/curl.out" &&
	   grep -qi "private key.*match\|key values mismatch\|unable to set private key" "$W/curl.err"; then
		ok "a client certificate with another HSM key: $CLIENT refuses the pair ($(grep -i -m1 'match\|unable to set' "$W/curl.err" | cut -c1-100))"
	else
		bad "another HSM key's pair: $CLIENT exit $rc, $(head -c 200 "$W/curl.err"), served: $(head -c 100 "$W/curl.out")"
	fi
	if grep -q 'signal\|\[emerg\]\|AH00052' "$W/logs/error.log"; then
		bad "httpd logged: $(grep -m3 'signal\|\[emerg\]\|AH00052' "$W/logs/error.log")"
	else
		ok "no httpd child crashed"
	fi
else
	bad "httpd did not start: $(tail -c 600 "$W/logs/error.log") $(head -c 300 "$W/httpd.out")"
fi
stop_httpd

# A reference naming a destroyed key: httpd does not start, and says why.
if "$HSMWRAP" key create --label doomed --type ec-p256 >/dev/null 2>&1 &&
   "$HSMWRAP" key export-ref doomed -o "$W/doomed.pem" >/dev/null 2>&1 &&
   "$HSMWRAP" key destroy doomed --yes >/dev/null 2>&1; then
	if start_httpd "$W/doomed.pem"; then
		bad "httpd started with a reference to a destroyed key"
	elif grep -q 'AH02564.*doomed.pem' "$W/logs/error.log"; then
		# OpenSSL's decoder chain drops the provider's own reason ("no such
		# key") when it goes on to try the other decoders; httpd names the file.
		ok "a reference to a destroyed key: httpd does not start ($(grep -o -m1 'AH02564.*' "$W/logs/error.log" | sed 's|/.*/||' | cut -c1-120))"
	else
		bad "destroyed key: no reason given: $(tail -c 400 "$W/logs/error.log") $(head -c 200 "$W/httpd.out")"
	fi
else
	bad "could not create/export/destroy the key 'doomed'"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
