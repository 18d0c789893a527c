#!/bin/sh
# bench-tls.sh - full TLS handshakes per second against `openssl s_server`
# for one key held three ways, and signatures/s against raw C_Sign:
#
#   pem      the key in a PEM file (software: the ceiling)
#   hsmwrap  the key in SoftHSM, through the hsmwrap provider
#   libp11   the same HSM key, through the libp11 engine
#            (Debian libengine-pkcs11-openssl)
#
# for RSA-2048, EC P-256 and Ed25519 (libp11 0.4 has no EdDSA: two ways
# for it). The PEM key is a different key of the same
# type and size; hsmwrap and libp11 use the very same HSM key. Load comes
# from `openssl s_time -new` (a full handshake per connection, TLS 1.3 and
# TLS 1.2). All six servers run at once and the s_time runs are
# interleaved in rotating order, BENCH_ROUNDS rounds of BENCH_SECONDS
# each; medians are printed. Then hsmwrap-bench-sign compares provider
# signatures/s with raw C_Sign on the same keys, interleaved too.
#
# Run by `make bench-tls` under tests/with-token.sh (throwaway token).
# Numbers on a shared machine are noisy: compare ratios, not absolutes.

set -u

HSMWRAP=${HSMWRAP:?}
OPENSSL=${OPENSSL_BIN:-openssl}
MODDIR=$(cd "$(dirname "$HSMWRAP")/.libs" && pwd)
BENCH_SIGN=$(dirname "$HSMWRAP")/hsmwrap-bench-sign
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-3}
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/bench-tls
ENGINE_SO=${LIBP11_ENGINE:-}
for e in /usr/lib/*/engines-3/pkcs11.so /usr/lib/engines-3/pkcs11.so; do
	[ -z "$ENGINE_SO" ] && [ -f "$e" ] && ENGINE_SO=$e
done
mkdir -p "$W" || exit 1
PIDS=
KEYTYPES="rsa2048 ec-p256 ed25519"

cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	exec 3>&-
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "bench-tls: $*" >&2; exit 1; }

# s_server reads its stdin until EOF: they all read one FIFO kept open.
mkfifo "$W/stdin" || die "mkfifo"
exec 3<>"$W/stdin"

# OpenSSL configurations: the hsmwrap provider (default first, as
# shipped), and the libp11 engine. The engine takes its PIN from its own
# 0600 config file (libp11 has no pin-source); never from argv.
printf '%s\n' 'openssl_conf = init' '[init]' 'providers = prov' '[prov]' \
	'default = dflt' 'hsmwrap = hw' '[dflt]' 'activate = 1' '[hw]' 'activate = 1' \
	"module = $MODDIR/hsmwrap.so" >"$W/hsmwrap.cnf"
(umask 077
printf '%s\n' 'openssl_conf = init' '[init]' 'engines = eng' '[eng]' 'pkcs11 = p11' '[p11]' \
	'engine_id = pkcs11' "dynamic_path = $ENGINE_SO" "MODULE_PATH = $HSMWRAP_MODULE" \
	"PIN = $(cat "${HSMWRAP_PIN_SOURCE#file:}")" 'init = 0' >"$W/libp11.cnf")

PORTBASE=$(( $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 20000 + 20000 ))
n=0
# start NAME CONF KEYARGS...: one s_server, port recorded in $W/NAME.port
start() {
	name=$1 conf=$2
	shift 2
	n=$((n + 1))
	port=$((PORTBASE + n))
	OPENSSL_CONF=$conf "$OPENSSL" s_server -quiet -accept "127.0.0.1:$port" \
		-cert "$W/$kt.crt" "$@" <&3 >"$W/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	echo "$port" >"$W/$name.port"
	# One at a time: SoftHSM processes opening the token file store while
	# another one rewrites it may see no token at all.
	sleep 1.5
}

# make_key KT: the HSM key, its certificate, and a PEM key of the same type.
make_key() {
	kt=$1
	"$HSMWRAP" key create --label "bench-$kt" --type "$kt" >/dev/null || die "key create"
	URI="pkcs11:object=bench-$kt;type=private"
	OPENSSL_CONF=$W/hsmwrap.cnf "$OPENSSL" req -new -x509 -key "$URI" -subj /CN=localhost \
		-days 2 -out "$W/$kt.crt" 2>"$W/req.log" || die "req: $(cat "$W/req.log")"
	case $kt in
	rsa2048) "$OPENSSL" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/$kt.key" ;;
	ed25519) "$OPENSSL" genpkey -algorithm ED25519 -out "$W/$kt.key" ;;
	*) "$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$kt.key" ;;
	esac 2>/dev/null
	"$OPENSSL" req -new -x509 -key "$W/$kt.key" -subj /CN=localhost -days 2 \
		-out "$W/$kt.pem.crt" 2>/dev/null
}

# start_all KT: its servers, PEM, hsmwrap and (not for Ed25519) libp11.
start_all() {
	kt=$1
	URI="pkcs11:object=bench-$kt;type=private"
	start "$kt-hsmwrap" "$W/hsmwrap.cnf" -key "$URI"
	[ -n "$ENGINE_SO" ] && [ "$kt" != ed25519 ] && start "$kt-libp11" "$W/libp11.cnf" \
		-engine pkcs11 -keyform engine -key "$URI"
	# the PEM server has its own certificate
	n=$((n + 1))
	port=$((PORTBASE + n))
	OPENSSL_CONF=/dev/null "$OPENSSL" s_server -quiet -accept "127.0.0.1:$port" \
		-cert "$W/$kt.pem.crt" -key "$W/$kt.key" <&3 >"$W/$kt-pem.log" 2>&1 &
	PIDS="$PIDS $!"
	echo "$port" >"$W/$kt-pem.port"
}

# Servers start once their keys exist: SoftHSM processes that opened the
# token before a key was added may not see it. The Ed25519 key comes
# last, after the libp11 servers loaded theirs: libp11 0.4.12 cannot
# enumerate a token's private keys once one of them is an EdDSA key
# ("Unable to enumerate private keys"), so it would find none at all.
for kt in $KEYTYPES; do
	[ "$kt" = ed25519 ] || make_key "$kt"
done
for kt in $KEYTYPES; do
	[ "$kt" = ed25519 ] || start_all "$kt"
done
case " $KEYTYPES " in
*" ed25519 "*) make_key ed25519; start_all ed25519 ;;
esac
sleep 2
for f in "$W"/*.log; do
	case $f in */req.log) continue ;; esac
	grep -qi "error\|unable" "$f" && die "$(basename "$f"): $(head -c 400 "$f")"
done

CONFIGS=
for kt in $KEYTYPES; do
	for how in pem hsmwrap libp11; do
		[ -f "$W/$kt-$how.port" ] && CONFIGS="$CONFIGS $kt-$how"
	done
done

# One s_time run: handshakes per second of wall time, timed here (s_time
# prints whole seconds only).
s_time() {
	t0=$(date +%s.%N)
	cnt=$(OPENSSL_CONF=/dev/null "$OPENSSL" s_time -connect "127.0.0.1:$(cat "$W/$1.port")" \
		-new -"$2" -time "$SECS" 2>/dev/null |
		awk '/connections in [0-9.]+ real seconds/ { print $1; f = 1 } END { if (!f) print 0 }')
	t1=$(date +%s.%N)
	awk -v n="$cnt" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", n / (b - a) }'
}

: >"$W/results"
for r in $(seq 1 "$ROUNDS"); do
	# rotate the order each round
	set -- $CONFIGS
	i=0
	while [ $i -lt $(( (r - 1) % $# )) ]; do
		first=$1
		shift
		set -- "$@" "$first"
		i=$((i + 1))
	done
	for c in "$@"; do
		for v in tls1_3 tls1_2; do
			echo "$c $v $(s_time "$c" "$v")" >>"$W/results"
		done
	done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "Full TLS handshakes/s (openssl s_time -new against openssl s_server,"
echo "median of $ROUNDS interleaved rounds of ${SECS} s; client and server on one 2-core machine)"
echo
printf '%-8s %-7s %9s %9s %9s  %12s %12s\n' key TLS pem hsmwrap libp11 hsmwrap/pem hsmwrap/libp11
for kt in $KEYTYPES; do
	for v in tls1_3 tls1_2; do
		p=$(awk -v c="$kt-pem" -v v=$v '$1 == c && $2 == v { print $3 }' "$W/results" | median)
		h=$(awk -v c="$kt-hsmwrap" -v v=$v '$1 == c && $2 == v { print $3 }' "$W/results" | median)
		l=$(awk -v c="$kt-libp11" -v v=$v '$1 == c && $2 == v { print $3 }' "$W/results" | median)
		printf '%-8s %-7s %9s %9s %9s  %12s %12s\n' "$kt" "$v" "$p" "$h" "${l:-n/a}" \
			"$(awk -v a="$h" -v b="$p" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')" \
			"$(awk -v a="$h" -v b="${l:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
	done
done
echo
cleanup
trap - EXIT

if [ -x "$BENCH_SIGN" ]; then
	OPENSSL_MODULES=$MODDIR "$BENCH_SIGN" -s "${BENCH_SIGN_SECONDS:-0.5}" \
		-r "${BENCH_SIGN_ROUNDS:-7}" bench-rsa2048 bench-ec-p256 bench-ed25519
fi
