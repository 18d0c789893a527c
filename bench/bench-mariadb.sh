#!/bin/sh
# bench-mariadb.sh - the same sysbench OLTP workload on three mariadbd
# servers running side by side: no encryption, file_key_management (keys
# in a local file, MariaDB's own plugin) and hsmwrap_key_management (table
# keys unwrapped by a master key in SoftHSM). Both encrypting servers use
# innodb_encrypt_tables=ON and innodb_encrypt_log=ON; the buffer pool is
# smaller than the data so that pages are decrypted on every read from disk.
# Rounds are interleaved (each round runs the three in rotating order) and
# medians are printed. Then: start-up time of each (median of restarts),
# and get_key latency of the plugin (hsmwrap-bench-getkey).
#
# Run by `make bench-mariadb` under tests/with-token.sh (throwaway token).
# BENCH_ROUNDS (3), BENCH_SECONDS (10), BENCH_THREADS (4), BENCH_ROWS (50000).
# Numbers on a shared machine are noisy: compare ratios, not absolutes.

set -u

HSMWRAP=${HSMWRAP:?}
TOP=$(cd "$(dirname "$HSMWRAP")" && pwd)
PLUGIN_SO=$TOP/.libs/hsmwrap_key_management.so
GETKEY=$TOP/hsmwrap-bench-getkey
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}
THREADS=${BENCH_THREADS:-4}
ROWS=${BENCH_ROWS:-50000}
W=${HW_TEST_DIR:?run me under tests/with-token.sh}/bench-mariadb
PATH=$PATH:/usr/sbin:/usr/local/sbin
die() { echo "bench-mariadb: $*" >&2; exit 1; }
for p in mariadbd mariadb-install-db mariadb sysbench; do
	command -v $p >/dev/null || die "$p not found (apt-get install mariadb-server sysbench)"
done
[ -f "$PLUGIN_SO" ] || die "$PLUGIN_SO not built (configure found no libmariadbd-dev?)"
SYSPLUGINS=$(mariadbd --no-defaults --verbose --help 2>/dev/null | awk '$1 == "plugin-dir" { print $2 }')
[ -f "$SYSPLUGINS/file_key_management.so" ] || die "no file_key_management.so in $SYSPLUGINS"
mkdir -p "$W/plugins" || exit 1
ln -sf "$PLUGIN_SO" "$W/plugins/hsmwrap_key_management.so"
ln -sf "$SYSPLUGINS/file_key_management.so" "$W/plugins/file_key_management.so"
USER_OPT=
[ "$(id -u)" -eq 0 ] && USER_OPT=--user=root

PIDS=
cleanup() {
	for v in plain file hsmwrap; do
		[ -f "$W/$v/pid" ] && kill "$(cat "$W/$v/pid")" 2>/dev/null
	done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$HSMWRAP" tde init --label BENCH.MK >/dev/null || die "tde init failed"
(umask 077
 printf '1;%s\n2;%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
	"$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$W/file-keys.txt")

ENC="--innodb-encrypt-tables=ON --innodb-encrypt-log=ON --innodb-encryption-threads=1"
opts() {
	case $1 in
	plain) echo "" ;;
	# AES_CTR, as the server's own my_crypt uses for a plugin that brings
	# no cipher (hsmwrap's): file_key_management's default AES_CBC is
	# slower and would flatter hsmwrap by ~10%.
	file) echo "--plugin-load-add=file_key_management --file-key-management-filename=$W/file-keys.txt
		--file-key-management-encryption-algorithm=AES_CTR $ENC" ;;
	hsmwrap) echo "--plugin-load-add=hsmwrap_key_management --hsmwrap-key-management=FORCE
		--hsmwrap-key-management-module=$HSMWRAP_MODULE --hsmwrap-key-management-token=$HSMWRAP_TOKEN
		--hsmwrap-key-management-pin-source=$HSMWRAP_PIN_SOURCE
		--hsmwrap-key-management-master-key=BENCH.MK $ENC" ;;
	esac
}
# start V: starts server V and waits; prints the milliseconds it took.
start() {
	D=$W/$1
	t0=$(date +%s%N)
	# shellcheck disable=SC2046 # option lists split on whitespace
	mariadbd --no-defaults --datadir="$D" --socket="$D/sock" --skip-networking \
		--pid-file="$D/pid" --log-error="$D/err.log" --plugin-dir="$W/plugins" \
		--innodb-buffer-pool-size=8M --innodb-log-file-size=64M --max-connections=50 \
		$USER_OPT $(opts "$1") >/dev/null 2>&1 &
	PIDS="$PIDS $!"
	i=0
	until mariadb --no-defaults -S "$D/sock" -uroot -e 'DO 1' >/dev/null 2>&1; do
		kill -0 $! 2>/dev/null || die "server $1 did not start: $(tail -n 5 "$D/err.log")"
		i=$((i + 1))
		[ $i -lt 1200 ] || die "server $1 did not answer"
		sleep 0.05
	done
	echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
stop() {
	D=$W/$1
	p=$(cat "$D/pid" 2>/dev/null) || return 0
	kill "$p" 2>/dev/null
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	rm -f "$D/pid"
}
sb() {
	v=$1
	shift
	sysbench oltp_read_write --db-driver=mysql --mysql-socket="$W/$v/sock" --mysql-user=root \
		--mysql-db=sbtest --tables=2 --table-size="$ROWS" --threads="$THREADS" "$@"
}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "preparing three servers ($ROWS rows x 2 tables each, buffer pool 8M)..."
for v in plain file hsmwrap; do
	mariadb-install-db --no-defaults --datadir="$W/$v" $USER_OPT \
		--auth-root-authentication-method=normal >"$W/install-$v.log" 2>&1 || die "install-db $v"
	start $v >/dev/null
	mariadb --no-defaults -S "$W/$v/sock" -uroot -e 'CREATE DATABASE sbtest'
	sb $v prepare >"$W/prepare-$v.log" 2>&1 || die "sysbench prepare $v: $(tail -n 3 "$W/prepare-$v.log")"
done

echo "sysbench oltp_read_write, $THREADS threads, $ROUNDS rounds of ${SECS}s, interleaved"
order="plain file hsmwrap"
r=1
while [ $r -le "$ROUNDS" ]; do
	for v in $order; do
		sb $v --time="$SECS" --report-interval=0 run >"$W/run-$v-$r.log" 2>&1 || die "sysbench run $v"
		tps=$(awk '/transactions:/ { gsub(/[(]/, "", $3); print $3 }' "$W/run-$v-$r.log")
		lat=$(awk '/95th percentile:/ { print $3 }' "$W/run-$v-$r.log")
		echo "$tps" >>"$W/tps-$v"
		echo "$lat" >>"$W/p95-$v"
		echo "  round $r $v: $tps tps, p95 $lat ms"
	done
	# rotate the order so that no variant always runs first
	order="$(echo "$order" | cut -d' ' -f2-) $(echo "$order" | cut -d' ' -f1)"
	r=$((r + 1))
done

echo "start-up (server already initialised, median of 3 restarts)"
for v in plain file hsmwrap; do
	stop $v
	for i in 1 2 3; do
		start $v >>"$W/start-$v"
		stop $v
	done
done

tp=$(median <"$W/tps-plain")
printf '\n%-26s %12s %10s %12s %12s\n' variant "tps(median)" "vs plain" "p95 ms" "start ms"
for v in plain file hsmwrap; do
	t=$(median <"$W/tps-$v")
	printf '%-26s %12s %9.1f%% %12s %12s\n' \
		"$(case $v in plain) echo 'no encryption';; file) echo file_key_management;; hsmwrap) echo hsmwrap_key_management;; esac)" \
		"$t" "$(echo "$t $tp" | awk '{ print 100 * $1 / $2 }')" "$(median <"$W/p95-$v")" "$(median <"$W/start-$v")"
done
tf=$(median <"$W/tps-file")
th=$(median <"$W/tps-hsmwrap")
echo "$th $tf" | awk '{ printf "hsmwrap / file_key_management: %.1f%% of the throughput\n", 100 * $1 / $2 }'
echo "start-up added by hsmwrap over file_key_management: $(( $(median <"$W/start-hsmwrap") - $(median <"$W/start-file") )) ms"
echo "keyring after the run: $("$HSMWRAP" tde keyring list -f "$W/hsmwrap/hsmwrap-tde.keyring" 2>/dev/null | grep -c -E "^ *[0-9]+ ") table key versions"

if [ -x "$GETKEY" ]; then
	echo
	"$GETKEY" "$PLUGIN_SO" || die "hsmwrap-bench-getkey failed"
fi
