#!/bin/sh
# test-nginx.sh - Debian's nginx serving HTTPS with HSM keys (issue 4).
# Runs under tests/with-token.sh (throwaway SoftHSM token, HSMWRAP_* set).
# One "ok"/"FAIL" line per check, then "N passed, N failed".
#
# nginx knows nothing of the HSM: `ssl_certificate_key` names a
# key-reference file written by `hsmwrap key export-ref`, and OpenSSL
# loads the hsmwrap provider from an OPENSSL_CONF file. The master loads
# the key, the 4 workers (forked) sign. For an RSA-2048 and an EC P-256
# key, curl --cacert root.pem makes N_REQ requests over TLS 1.2 and as
# many over TLS 1.3, each on a new connection with no session resumption,
# so every request is a full handshake signed by the HSM; the access log
# ($pid) shows several workers signed. Then nginx -t with a corrupt
# reference and with one naming a destroyed key: a clear OpenSSL error,
# no crash.
#
# Skips (77) without nginx or curl. Runs as any user: its own prefix,
# config, logs and pid file under $HW_TEST_DIR; a free port on 127.0.0.1.

set -u

HSMWRAP=${HSMWRAP:?HSMWRAP must name the built hsmwrap tool}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
NGINX=${NGINX:-$(PATH=$PATH:/usr/sbin:/sbin command -v nginx 2>/dev/null || :)}
CURL=${CURL:-$(command -v curl 2>/dev/null || :)}
MODDIR=$(cd "$(dirname "$HSMWRAP")/.libs" 2>/dev/null && pwd)
N_REQ=${N_REQ:-200}
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/nginx
mkdir -p "$W/logs" || exit 99

if [ -z "$NGINX" ] || [ -z "$CURL" ] || [ -z "$OPENSSL" ] ||
   [ ! -f "$MODDIR/hsmwrap.so" ]; then
	echo "test-nginx.sh: nginx, curl, openssl or hsmwrap.so missing; skipping" >&2
	exit 77
fi

# A sanitized provider needs its sanitizer runtime preloaded into the
# uninstrumented nginx and openssl binaries (see test-provider.sh).
PRELOAD=$(ldd "$MODDIR/hsmwrap.so" 2>/dev/null | awk '/asan/ { print $3; exit }')
NGINX_PID=

stop_nginx() {
	if [ -n "$NGINX_PID" ]; then
		kill "$NGINX_PID" 2>/dev/null
		wait "$NGINX_PID" 2>/dev/null
	fi
	NGINX_PID=
	# Belt and braces: a master that got away still wrote its pid file.
	if [ -s "$W/nginx.pid" ]; then
		kill "$(cat "$W/nginx.pid")" 2>/dev/null
		rm -f "$W/nginx.pid"
	fi
}
trap stop_nginx EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }

# run CMD...: with the sanitizer runtime when the provider has one.
run() {
	if [ -n "$PRELOAD" ]; then
		LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} "$@"
	else
		"$@"
	fi
}
# run_exec CMD...: the same, replacing the (sub)shell, so that `run_exec
# nginx ... &` leaves nginx's own pid in $!. A backgrounded `run` left the
# subshell's pid: stop_nginx killed that, and the master with its workers
# outlived the test (two of them after each full make check).
run_exec() {
	if [ -n "$PRELOAD" ]; then
		LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} exec "$@"
	else
		exec "$@"
	fi
}

# The OpenSSL configuration nginx runs with: the shipped snippet, with the
# provider's path and token settings filled in, as an administrator would.
# The PIN comes from the pin-source file, never from this file.
sed -e "s|^# *module = .*|module = $MODDIR/hsmwrap.so|" \
    -e "s|^#pkcs11-module = .*|pkcs11-module = $HSMWRAP_MODULE|" \
    -e "s|^#token = .*|token = $HSMWRAP_TOKEN|" \
    -e "s|^#pin-source = .*|pin-source = $HSMWRAP_PIN_SOURCE|" \
    "$(dirname "$0")/../conf/hsmwrap-provider.cnf" >"$W/openssl.cnf" || exit 99
grep -q "^module = " "$W/openssl.cnf" || { echo "openssl.cnf template changed" >&2; exit 99; }
OPENSSL_CONF=$W/openssl.cnf
export OPENSSL_CONF
# The settings come from openssl.cnf: make sure nothing leaks in from the
# test environment instead.
HW_SAVED_PIN_SOURCE=$HSMWRAP_PIN_SOURCE
unset HSMWRAP_MODULE HSMWRAP_TOKEN HSMWRAP_PIN_SOURCE

# hsmwrap CLI: its settings come from the environment, not openssl.cnf.
hw() {
	HSMWRAP_MODULE=$SOFTHSM_MODULE HSMWRAP_TOKEN=pkcs11:token=hsmwrap-test \
		HSMWRAP_PIN_SOURCE=$HW_SAVED_PIN_SOURCE "$HSMWRAP" "$@"
}

# ---------------------------------------------------------------------
# The test root CA: made by the root-CA ceremony, its key in the HSM.
make_root() {
	hw ca init --key nginx-root --type ec-p384 --subject "/CN=hsmwrap test root" \
		--days 2 -o "$W/root.pem"
}
# sign_csr CSR OUT: a TLS server certificate for 127.0.0.1, issued by the root.
sign_csr() {
	hw ca sign --key nginx-root --ca-cert "$W/root.pem" --csr "$1" --profile tls-server \
		--san IP:127.0.0.1,DNS:localhost --days 1 -o "$2"
}

if make_root >"$W/root.log" 2>&1; then
	ok "test root CA made by hsmwrap ca init (key in the HSM)"
else
	bad "test root CA: $(head -c 300 "$W/root.log")"
fi

# ---------------------------------------------------------------------
# nginx with the key reference

# write_conf KEYREF CERT PORT: nginx.conf in $W, 4 workers, no session
# cache or tickets (every connection a full handshake), $pid logged.
write_conf() {
	user_line=
	[ "$(id -u)" -eq 0 ] && user_line="user root;"
	cat >"$W/nginx.conf" <<EOF
$user_line
worker_processes 4;
daemon off;
master_process on;
pid $W/nginx.pid;
error_log $W/logs/error.log info;
# nginx empties the workers' environment; these must reach them (SoftHSM
# reads its configuration again when a worker re-initialises the module).
env OPENSSL_CONF;
env SOFTHSM2_CONF;
${PRELOAD:+env LD_PRELOAD; env ASAN_OPTIONS;}
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path $W/tmp/body;
	proxy_temp_path $W/tmp/proxy;
	fastcgi_temp_path $W/tmp/fastcgi;
	uwsgi_temp_path $W/tmp/uwsgi;
	scgi_temp_path $W/tmp/scgi;
	log_format hw '\$pid \$ssl_protocol \$ssl_cipher \$ssl_session_reused \$status';
	server {
		listen 127.0.0.1:$3 ssl reuseport;
		server_name localhost;
		ssl_certificate $2;
		ssl_certificate_key $1;
		ssl_protocols TLSv1.2 TLSv1.3;
		ssl_session_cache off;
		ssl_session_tickets off;
		access_log $W/logs/access.log hw;
		root $W/html;
	}
}
EOF
}
mkdir -p "$W/html" "$W/tmp"
echo "served by nginx with an HSM key" >"$W/html/index.html"

# start_nginx KEYREF CERT: on a random free port (retried on a clash).
# Sets PORT and NGINX_PID.
start_nginx() {
	for try in 1 2 3 4 5; do
		PORT=$(( $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 20000 + 20000 ))
		write_conf "$1" "$2" "$PORT"
		: >"$W/logs/error.log"
		: >"$W/logs/access.log"
		run_exec "$NGINX" -p "$W" -c "$W/nginx.conf" -e "$W/logs/error.log" \
			>"$W/nginx.out" 2>&1 &
		NGINX_PID=$!
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
			if ! kill -0 "$NGINX_PID" 2>/dev/null; then
				break
			fi
			# ready once the 4 workers are up
			[ "$(grep -c 'start worker process' "$W/logs/error.log")" -ge 4 ] && return 0
			sleep 0.25
		done
		stop_nginx
		grep -q "Address already in use" "$W/logs/error.log" || return 1
	done
	return 1
}

for kt in rsa2048 ec-p256; do
	if ! hw key create --label "web-$kt" --type "$kt" >"$W/create.log" 2>&1 ||
	   ! hw key export-ref "web-$kt" -o "$W/$kt.key.pem" >>"$W/create.log" 2>&1; then
		bad "$kt: key create / export-ref: $(head -c 300 "$W/create.log")"
		continue
	fi
	if run "$OPENSSL" req -new -key "$W/$kt.key.pem" -subj "/CN=localhost" \
		-out "$W/$kt.csr" >"$W/req.log" 2>&1 &&
	   sign_csr "$W/$kt.csr" "$W/$kt.crt" >>"$W/req.log" 2>&1 &&
	   run "$OPENSSL" verify -CAfile "$W/root.pem" "$W/$kt.crt" >"$W/verify.log" 2>&1; then
		ok "$kt: CSR signed in the HSM through the key reference; certificate: $(cat "$W/verify.log")"
	else
		bad "$kt: CSR/certificate: $(head -c 400 "$W/req.log") $(cat "$W/verify.log" 2>/dev/null)"
		continue
	fi

	if ! start_nginx "$W/$kt.key.pem" "$W/$kt.crt"; then
		bad "$kt: nginx did not start: $(tail -c 600 "$W/logs/error.log") $(head -c 300 "$W/nginx.out")"
		continue
	fi
	ok "$kt: nginx started, 4 workers, key from $kt.key.pem"

	for v in 1.2 1.3; do
		: >"$W/logs/access.log"
		# curl is the client: no provider. Connection: close and
		# --no-sessionid: a new connection and a
		# full handshake for every one of the N_REQ URLs.
		env -u OPENSSL_CONF "$CURL" -sS --fail --max-time 300 --no-sessionid -H 'Connection: close' --cacert "$W/root.pem" \
			--tlsv"$v" --tls-max "$v" \
			"https://127.0.0.1:$PORT/?n=[1-$N_REQ]" >"$W/curl.out" 2>"$W/curl.err"
		rc=$?
		got=$(grep -c "served by nginx with an HSM key" "$W/curl.out" 2>/dev/null)
		sleep 0.3   # the access log is written after the response
		proto=$(awk '{ print $2 }' "$W/logs/access.log" | sort -u | tr '\n' ' ')
		full=$(awk '$4 == "." && $5 == 200' "$W/logs/access.log" | wc -l)
		pids=$(awk '{ print $1 }' "$W/logs/access.log" | sort -u | wc -l)
		if [ $rc -eq 0 ] && [ "$got" -eq "$N_REQ" ] && [ "$full" -eq "$N_REQ" ] &&
		   [ "$proto" = "TLSv$v " ]; then
			ok "$kt TLS $v: $got/$N_REQ pages, each a full handshake ($(awk 'NR == 1 { print $3 }' "$W/logs/access.log"))"
		else
			bad "$kt TLS $v: curl exit $rc, $got/$N_REQ pages, $full full handshakes, protocols '$proto': $(head -c 300 "$W/curl.err") $(tail -c 400 "$W/logs/error.log")"
		fi
		if [ "$pids" -ge 2 ]; then
			ok "$kt TLS $v: $pids different workers signed ($(awk '{ print $1 }' "$W/logs/access.log" | sort | uniq -c | awk '{ printf "%s%s:%s", s, $2, $1; s = " " }'))"
		else
			bad "$kt TLS $v: only $pids worker(s) served"
		fi
	done
	if grep -q '\[alert\]\|\[emerg\]\|signal' "$W/logs/error.log"; then
		bad "$kt: nginx logged: $(grep -m3 '\[alert\]\|\[emerg\]\|signal' "$W/logs/error.log")"
	else
		ok "$kt: no worker crashed or alerted"
	fi
	stop_nginx
done

# ---------------------------------------------------------------------
# Bad key references: nginx -t fails with OpenSSL's (and hsmwrap's)
# reason, and does not crash.

# nginx_t_fails NAME KEYFILE PATTERN
nginx_t_fails() {
	write_conf "$2" "$W/rsa2048.crt" 1
	: >"$W/t.err"
	run "$NGINX" -t -p "$W" -c "$W/nginx.conf" -e "$W/t.err" >"$W/t.out" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then
		bad "$1: nginx -t accepted it"
	elif [ $rc -ge 126 ]; then
		bad "$1: nginx -t exit $rc (crash?): $(head -c 300 "$W/t.err")"
	elif ! grep -qi -- "$3" "$W/t.err" "$W/t.out"; then
		bad "$1: nginx -t exit $rc but no '$3' in: $(head -c 400 "$W/t.err")"
	else
		ok "$1: nginx -t exit $rc: $(cat "$W/t.err" "$W/t.out" | grep -i -m1 -- "$3" | cut -c1-160)"
	fi
}

{
	echo '-----BEGIN HSMWRAP KEY REFERENCE-----'
	echo 'cGtjczExOm9iamVjdD13ZWIt!!!not base64@@@'
	echo '-----END HSMWRAP KEY REFERENCE-----'
} >"$W/corrupt.pem"
nginx_t_fails "a corrupt key-reference file" "$W/corrupt.pem" "reference"
if hw key create --label doomed --type rsa2048 >/dev/null 2>&1 &&
   hw key export-ref doomed -o "$W/doomed.pem" >/dev/null 2>&1 &&
   hw key destroy doomed --yes >/dev/null 2>&1; then
	nginx_t_fails "a key-reference file naming a destroyed key" "$W/doomed.pem" "no such key\\|not found"
else
	bad "could not create/export/destroy the key 'doomed'"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
