#!/bin/sh
# test-mariadb.sh: the hsmwrap_key_management plugin inside a real mariadbd
# (temporary datadir, own socket, --skip-networking) on the SoftHSM token of
# tests/with-token.sh. Proves: InnoDB tables, the redo log, the binlog and
# Aria encrypted (a marker is in no datadir file after a flush, while a
# server without the plugin leaves it there), temporary files encrypted,
# a restart reads back, rotation raises CURRENT_KEY_VERSION, an offline
# master rekey + restart, every start-up failure with its error-log line
# (and innodb_encrypt_tables=FORCE not coming up), an HSM outage while
# running, kill -9 during key creation, mariadb-backup.
#
# Skips (77) when MariaDB is not installed, unless HSMWRAP_REQUIRE_MARIADB=1.

set -u
TESTS_DIR=$(cd "$(dirname "$0")" && pwd)

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE HSMWRAP_TOKEN \
	HSMWRAP_PIN_SOURCE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-mariadb.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
unset HSMWRAP_AUDIT_LOG HSMWRAP_TEST_CRASH_AT

PATH=$PATH:/usr/sbin:/usr/local/sbin
MARIADBD=$(command -v mariadbd 2>/dev/null || :)
INSTALL_DB=$(command -v mariadb-install-db 2>/dev/null || :)
CLIENT=$(command -v mariadb 2>/dev/null || :)
BACKUP=$(command -v mariadb-backup 2>/dev/null || :)
PLUGIN_SO=$(dirname "$HSMWRAP")/.libs/hsmwrap_key_management.so
missing=
[ -n "$MARIADBD" ] && [ -n "$INSTALL_DB" ] && [ -n "$CLIENT" ] || missing="mariadbd, mariadb-install-db or mariadb (package mariadb-server)"
[ -f "$PLUGIN_SO" ] || missing="${missing:+$missing; }$PLUGIN_SO (configure found no libmariadbd-dev)"
if [ -n "$missing" ]; then
	if [ "${HSMWRAP_REQUIRE_MARIADB:-0}" = 1 ]; then
		echo "test-mariadb.sh: missing $missing, and HSMWRAP_REQUIRE_MARIADB=1" >&2
		exit 99
	fi
	echo "test-mariadb.sh: missing $missing; skipping" >&2
	exit 77
fi

W=$HW_TEST_DIR/mariadb
mkdir -p "$W" || exit 99
cd "$W" || exit 99
ALL=$W/all-output
: >"$ALL"
. "$TESTS_DIR/lib.sh"

# A sanitized plugin needs its sanitizer runtime preloaded into the
# (uninstrumented) server, as test-provider.sh does for openssl.
PRELOAD=$(ldd "$PLUGIN_SO" 2>/dev/null | awk '/libasan/ { print $3; exit }')
USER_OPT=
[ "$(id -u)" -eq 0 ] && USER_OPT=--user=root

PID=
stop_db() {
	if [ -n "$PID" ]; then
		kill "$PID" 2>/dev/null
		i=0
		while kill -0 "$PID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$PID" 2>/dev/null
		wait "$PID" 2>/dev/null
	fi
	PID=
}
trap stop_db EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# A plugin directory with only our plugin and MariaDB's file_key_management.
mkdir -p "$W/plugins"
ln -sf "$PLUGIN_SO" "$W/plugins/hsmwrap_key_management.so"
MARKER=HSMWRAPMARK$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')

# The template datadir, made once (about 3 s); every server gets a copy.
"$INSTALL_DB" --no-defaults --datadir="$W/template" $USER_OPT \
	--auth-root-authentication-method=normal >"$W/install.log" 2>&1 ||
	{ cat "$W/install.log"; echo "mariadb-install-db failed" >&2; exit 99; }

D=
# new_datadir NAME: a fresh copy of the template in $W/NAME, made current.
new_datadir() {
	D=$W/$1
	rm -rf "$D"
	cp -a "$W/template" "$D"
	mkdir -p "$D/tmp"
}

PLUGIN_OPTS="--plugin-load-add=hsmwrap_key_management
--hsmwrap-key-management=FORCE
--hsmwrap-key-management-module=$SOFTHSM_MODULE
--hsmwrap-key-management-token=$HSMWRAP_TOKEN
--hsmwrap-key-management-pin-source=$HSMWRAP_PIN_SOURCE
--hsmwrap-key-management-master-key=DB.MK.1"
ENC_OPTS="--innodb-encrypt-tables=FORCE
--innodb-encrypt-log=ON
--innodb-encryption-threads=2
--innodb-encryption-rotate-key-age=1
--encrypt-tmp-files=ON
--encrypt-binlog=ON
--log-bin=binlog
--aria-encrypt-tables=ON"

# The sanitizer runtime of the plugin, if any, for the server and
# mariadb-backup (leak checks off for their own allocations). Through env,
# so that a background start's $! is the server itself.
PRE_ENV=
[ -z "$PRELOAD" ] || PRE_ENV="env LD_PRELOAD=$PRELOAD ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# launch ARGS...: mariadbd on $D in the background (PID), log in $D/err.log.
launch() {
	: >"$D/err.log"
	$PRE_ENV "$MARIADBD" --no-defaults --datadir="$D" --socket="$D/sock" --skip-networking \
		--pid-file="$D/pid" --log-error="$D/err.log" --tmpdir="$D/tmp" \
		--plugin-dir="$W/plugins" --innodb-buffer-pool-size=32M \
		--innodb-log-file-size=16M $USER_OPT "$@" >/dev/null 2>&1 &
	PID=$!
}
sql() { "$CLIENT" --no-defaults -S "$D/sock" -uroot -N -B "$@"; }
# start_db ARGS...: launch and wait until the server answers (0), or it exits (1).
start_db() {
	launch "$@"
	i=0
	while [ $i -lt 600 ]; do
		if ! kill -0 "$PID" 2>/dev/null; then
			wait "$PID" 2>/dev/null
			PID=
			return 1
		fi
		[ -S "$D/sock" ] && sql -e 'SELECT 1' >/dev/null 2>&1 && return 0
		sleep 0.1
		i=$((i + 1))
	done
	stop_db
	return 1
}
# must_start DESC ARGS...
must_start() {
	d=$1
	shift
	if start_db "$@"; then
		ok "$d"
		return 0
	fi
	bad "$d: the server did not start: $(grep -i -E 'error|hsmwrap' "$D/err.log" | tail -n 5)"
	return 1
}
# must_fail DESC PATTERN ARGS...: the server exits, its log has PATTERN on a
# line naming hsmwrap, and the PIN is not in the log.
must_fail() {
	d=$1 pat=$2
	shift 2
	if start_db "$@"; then
		bad "$d: the server came up"
		stop_db
		return 1
	fi
	line=$(grep 'hsmwrap_key_management: ' "$D/err.log" | grep -i -m1 -- "$pat")
	if [ -z "$line" ]; then
		bad "$d: no hsmwrap line with '$pat' in the error log: $(grep -i error "$D/err.log" | head -n 5)"
	elif grep -q -F "$PIN" "$D/err.log"; then
		bad "$d: the PIN is in the error log"
	else
		ok "$d: $(echo "$line" | sed 's/^.*\[ERROR\] //' | cut -c1-150)"
	fi
}
# no_marker DESC: no file of the datadir holds the marker.
no_marker() {
	found=$(grep -r -l -a -F "$MARKER" "$D" 2>/dev/null)
	if [ -z "$found" ]; then ok "$1"; else bad "$1: marker in $(echo "$found" | tr '\n' ' ')"; fi
}
status_var() { sql -e "SHOW GLOBAL STATUS LIKE 'hsmwrap_key_management_$1'" | cut -f2; }
flush_all() {
	sql -e "SET GLOBAL innodb_max_dirty_pages_pct=0; FLUSH TABLES; FLUSH BINARY LOGS;" &&
	i=0 && while [ "$(sql -e "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'" | cut -f2)" != 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
PIN=$(cat "$HW_TEST_USER_PIN_FILE")

# ---------------------------------------------------------------------
# The master key and a control: without encryption the marker is found.

expect "tde init --label DB.MK.1" 0 tde init --label DB.MK.1

new_datadir plain
if must_start "a server without the plugin starts"; then
	sql -e "CREATE DATABASE d; CREATE TABLE d.t (a VARCHAR(100)) ENGINE=InnoDB;
		INSERT INTO d.t VALUES ('$MARKER')"
	flush_all
	check "control: the marker is found in a datadir without encryption" \
		grep -r -q -a -F "$MARKER" "$D"
	stop_db
fi

# ---------------------------------------------------------------------
# Everything encrypted

new_datadir db
OPTS="$PLUGIN_OPTS $ENC_OPTS"
# shellcheck disable=SC2086 # option lists split on newlines/spaces
if must_start "mariadbd starts with the plugin, a new keyring, every encryption option" $OPTS; then
	check "the plugin created the keyring in the datadir" test -s "$D/hsmwrap-tde.keyring"
	check "the error log says the keyring was created" \
		grep -q "hsmwrap_key_management: created keyring $D/hsmwrap-tde.keyring, master key 'DB.MK.1'" "$D/err.log"
	sql -e "CREATE DATABASE d;
		CREATE TABLE d.t1 (a VARCHAR(100)) ENGINE=InnoDB ENCRYPTED=YES;
		CREATE TABLE d.t2 (a VARCHAR(100)) ENGINE=InnoDB;
		CREATE TABLE d.t3 (a VARCHAR(100)) ENGINE=InnoDB ENCRYPTION_KEY_ID=7;
		CREATE TABLE d.ta (a VARCHAR(100)) ENGINE=Aria TRANSACTIONAL=0 ROW_FORMAT=PAGE;
		INSERT INTO d.t1 VALUES ('$MARKER-1'); INSERT INTO d.t2 VALUES ('$MARKER-2');
		INSERT INTO d.t3 VALUES ('$MARKER-3'); INSERT INTO d.ta VALUES ('$MARKER-a');" >>"$ALL" 2>&1
	check "rows inserted" [ "$(sql -e 'SELECT COUNT(*) FROM d.t1; SELECT COUNT(*) FROM d.t3' | tr '\n' ' ')" = "1 1 " ]
	# A sort bigger than its buffer goes through a temporary file.
	n=$(sql -e "USE d; SET SESSION sort_buffer_size=32768;
		SELECT COUNT(*) FROM (SELECT seq, REPEAT('$MARKER', 5) x FROM seq_1_to_20000 ORDER BY x, seq DESC LIMIT 19999) s" 2>>"$ALL")
	check "a sort through encrypted temporary files (encrypt_tmp_files)" [ "$n" = 19999 ]
	check "key 7 created on demand" [ "$(sql -e "SELECT CURRENT_KEY_ID FROM information_schema.INNODB_TABLESPACES_ENCRYPTION WHERE NAME='d/t3'")" = 7 ]
	flush_all
	no_marker "the marker is in no file of the datadir (InnoDB, redo log, binlog, Aria)"
	check "binlog files exist and were searched" test -s "$D/binlog.000001"
	check "status: master key label" [ "$(status_var master_key)" = DB.MK.1 ]
	check "status: master key KCV (6 hex digits)" sh -c "status_kcv='$(status_var master_key_kcv)'; echo \"\$status_kcv\" | grep -q -E '^[0-9a-f]{6}$'"
	nk=$(status_var keys)
	check "status: table keys 1, 2 (temporary) and 7 at least ($nk)" [ "${nk:-0}" -ge 3 ]
	hw tde keyring list -f "$D/hsmwrap-tde.keyring"
	check "hsmwrap tde keyring list reads the server's keyring" [ "$rc" -eq 0 ]
	check "... and lists table key 7" grep -q -E '^ *7 ' "$W/out"

	# Rotation: a new version, and InnoDB re-encrypts in the background.
	v1=$(sql -e "SELECT CURRENT_KEY_VERSION FROM information_schema.INNODB_TABLESPACES_ENCRYPTION WHERE NAME='d/t1'")
	if sql -e "SET GLOBAL hsmwrap_key_management_rotate_key = 1" >>"$ALL" 2>&1; then
		ok "SET GLOBAL hsmwrap_key_management_rotate_key = 1"
	else
		bad "SET GLOBAL hsmwrap_key_management_rotate_key = 1 failed"
	fi
	i=0
	while [ $i -lt 300 ]; do
		v2=$(sql -e "SELECT CURRENT_KEY_VERSION FROM information_schema.INNODB_TABLESPACES_ENCRYPTION WHERE NAME='d/t1'")
		[ "${v2:-0}" -gt "${v1:-0}" ] && break
		sleep 0.1
		i=$((i + 1))
	done
	check "rotation raised CURRENT_KEY_VERSION of d/t1 ($v1 -> $v2)" [ "${v2:-0}" -gt "${v1:-0}" ]
	sql -e "SET GLOBAL hsmwrap_key_management_rotate_key = -1" >>"$ALL" 2>&1
	check "rotate_key = -1 rotates every key (versions: $(status_var key_versions))" [ "$(status_var key_versions)" -ge $((nk * 2 + 1)) ]
	sql -e "SET GLOBAL hsmwrap_key_management_rotate_key = 4242" >"$W/out" 2>"$W/err"
	check "rotating a key id that does not exist is an SQL error" grep -q "no table key 4242" "$W/err"
	stop_db
fi

# ---------------------------------------------------------------------
# Restart, offline master rekey, restart

# shellcheck disable=SC2086
if must_start "restart with the keyring" $OPTS; then
	check "a restart reads every row back" [ "$(sql -e "SELECT a FROM d.t1 UNION ALL SELECT a FROM d.t2 UNION ALL SELECT a FROM d.t3 UNION ALL SELECT a FROM d.ta" | sort | tr '\n' ' ')" = "$MARKER-1 $MARKER-2 $MARKER-3 $MARKER-a " ]
	stop_db
fi
expect "tde init --label DB.MK.2 (the next master key)" 0 tde init --label DB.MK.2
expect "offline master rekey to DB.MK.2" 0 tde keyring rekey -f "$D/hsmwrap-tde.keyring" --new-key DB.MK.2
# shellcheck disable=SC2086
if must_start "restart after the master rekey" $OPTS; then
	check "the status names the new master key" [ "$(status_var master_key)" = DB.MK.2 ]
	check "after the rekey every row reads back" [ "$(sql -e "SELECT COUNT(*) FROM d.t1 UNION ALL SELECT COUNT(*) FROM d.t3 UNION ALL SELECT COUNT(*) FROM d.ta" | tr '\n' ' ')" = "1 1 1 " ]
	stop_db
fi

# ---------------------------------------------------------------------
# Start-up failures: the server does not come up, the log says why.

KR=$D/hsmwrap-tde.keyring
cp "$KR" "$W/keyring.good"
printf 'not-the-pin' >"$W/wrong.pin"
# shellcheck disable=SC2086
must_fail "wrong PIN" "PIN" $OPTS --hsmwrap-key-management-pin-source="file:$W/wrong.pin"
# Without FORCE on the plugin, InnoDB itself refuses to start unencrypted.
# shellcheck disable=SC2086
must_fail "wrong PIN, plugin not forced, innodb_encrypt_tables=FORCE: no half-encrypted server" \
	"PIN" $ENC_OPTS --plugin-load-add=hsmwrap_key_management \
	--hsmwrap-key-management-module="$SOFTHSM_MODULE" --hsmwrap-key-management-token="$HSMWRAP_TOKEN" \
	--hsmwrap-key-management-pin-source="file:$W/wrong.pin"
check "... and InnoDB said it cannot encrypt" grep -q -i "InnoDB.*encrypt" "$D/err.log"
# shellcheck disable=SC2086
must_fail "a token that is not there" "token" $OPTS --hsmwrap-key-management-token="pkcs11:token=no-such-token"
# shellcheck disable=SC2086
must_fail "a literal PIN in the token URI is refused" "pin-value" $OPTS --hsmwrap-key-management-token="$HSMWRAP_TOKEN;pin-value=1234"
if [ -n "${HW_TEST_TOKEN2:-}" ]; then
	# shellcheck disable=SC2086
	must_fail "the master key is not on the token" "master key 'DB.MK.2' is not on the token" $OPTS \
		--hsmwrap-key-management-token="pkcs11:token=$HW_TEST_TOKEN2" \
		--hsmwrap-key-management-pin-source="file:$HW_TEST_USER_PIN_FILE2"
fi
size=$(wc -c <"$KR" | tr -d ' ')
pos=$((size / 2))
b=$(od -An -tu1 -j "$pos" -N1 "$KR" | tr -d ' ')
# shellcheck disable=SC2059
printf "\\$(printf %o $((b ^ 1)))" | dd of="$KR" bs=1 seek="$pos" conv=notrunc 2>/dev/null
# shellcheck disable=SC2086
must_fail "a tampered keyring (one bit)" "cannot open keyring" $OPTS
head -c $((size - 20)) "$W/keyring.good" >"$KR"
# shellcheck disable=SC2086
must_fail "a truncated keyring" "truncated\|cannot open keyring" $OPTS
rm -f "$KR"
# shellcheck disable=SC2086
must_fail "no keyring and no master_key to create one" "does not exist" $PLUGIN_OPTS $ENC_OPTS --hsmwrap-key-management-master-key=
# shellcheck disable=SC2086
must_fail "no keyring, master_key not on the token" "not on the token" $OPTS --hsmwrap-key-management-master-key=NO.SUCH.KEY
rm -f "$KR"
cp "$W/keyring.good" "$KR"
# shellcheck disable=SC2086
must_start "the good keyring back: the server starts" $OPTS && stop_db

# ---------------------------------------------------------------------
# HSM outage while running (tests/faultmod in front of SoftHSM)

if [ -n "${FAULTMOD:-}" ] && [ -f "$FAULTMOD" ]; then
	echo present >"$W/fm.ctl"
	# shellcheck disable=SC2086
	FAULTMOD_TARGET=$SOFTHSM_MODULE FAULTMOD_CONTROL=$W/fm.ctl
	export FAULTMOD_TARGET FAULTMOD_CONTROL
	# shellcheck disable=SC2086
	if must_start "start through the fault module" $OPTS --hsmwrap-key-management-module="$FAULTMOD"; then
		echo removed >"$W/fm.ctl"
		check "HSM gone: cached keys still read every row" [ "$(sql -e "SELECT COUNT(*) FROM d.t1 UNION ALL SELECT COUNT(*) FROM d.t3" | tr '\n' ' ')" = "1 1 " ]
		check "HSM gone: writes still work" sql -e "INSERT INTO d.t1 VALUES ('x'); INSERT INTO d.t3 VALUES ('y')"
		sql -e "SET GLOBAL hsmwrap_key_management_rotate_key = 1" >"$W/out" 2>"$W/err"
		rrc=$?
		check "HSM gone: rotation fails with an SQL error naming hsmwrap ($(head -c 150 "$W/err"))" \
			sh -c "[ $rrc -ne 0 ] && grep -q 'hsmwrap_key_management: rotating table key 1 failed' '$W/err'"
		sql -e "CREATE TABLE d.t9 (a INT) ENGINE=InnoDB ENCRYPTION_KEY_ID=99" >"$W/out" 2>"$W/err"
		check "HSM gone: a table with a new key id is refused" [ $? -ne 0 ]
		check "HSM gone: the server is still up" sql -e "DO 1"
		echo present >"$W/fm.ctl"
		sql -e "SET GLOBAL hsmwrap_key_management_rotate_key = 1" >"$W/out" 2>"$W/err"
		check "HSM back: rotation works again" [ $? -eq 0 ]
		stop_db
		hw tde keyring list -f "$KR"
		check "after the outage the keyring opens" [ "$rc" -eq 0 ]
	fi
	unset FAULTMOD_TARGET FAULTMOD_CONTROL
else
	bad "FAULTMOD is not set: the outage test cannot run"
fi

# ---------------------------------------------------------------------
# kill -9 while key ids are being created

# shellcheck disable=SC2086
if must_start "start for the kill -9 test" $OPTS; then
	(
		i=100
		while [ $i -lt 400 ]; do
			echo "CREATE TABLE d.k$i (a INT) ENGINE=InnoDB ENCRYPTION_KEY_ID=$i;"
			i=$((i + 1))
		done
	) | sql >/dev/null 2>&1 &
	cpid=$!
	# Kill once some keys exist and more are being made.
	i=0
	while [ $i -lt 200 ] && [ "$(status_var keys 2>/dev/null || echo 0)" -lt 20 ]; do sleep 0.05; i=$((i + 1)); done
	kill -9 "$PID"
	wait "$PID" 2>/dev/null
	PID=
	wait "$cpid" 2>/dev/null
	hw tde keyring list -f "$KR"
	check "after kill -9 the keyring opens ($(grep -c -E '^ *[0-9]+ ' "$W/out") versions)" [ "$rc" -eq 0 ]
	check "the keyring after kill -9 is not empty" test -s "$KR"
	# shellcheck disable=SC2086
	if must_start "restart after kill -9" $OPTS; then
		tables=$(sql -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='d' AND TABLE_NAME LIKE 'k%'")
		unread=0
		for t in $tables; do sql -e "SELECT COUNT(*) FROM d.$t" >/dev/null 2>&1 || unread=$((unread + 1)); done
		check "every table created before the kill reads ($(echo "$tables" | wc -w) tables)" [ "$unread" -eq 0 ]
		stop_db
	fi
fi

# ---------------------------------------------------------------------
# mariadb-backup: backup, prepare, restore (the keyring travels beside it)

if [ -n "$BACKUP" ]; then
	# shellcheck disable=SC2086
	# The keyring by absolute path: mariadb-backup copies the plugin's
	# settings from the running server into backup-my.cnf, and --prepare
	# runs elsewhere than the datadir.
	if must_start "start for the backup" $OPTS --hsmwrap-key-management-keyring="$KR"; then
		if $PRE_ENV "$BACKUP" --no-defaults --backup --target-dir="$W/bk" --datadir="$D" --socket="$D/sock" \
			-uroot >"$W/backup.log" 2>&1; then
			ok "mariadb-backup --backup (the plugin loaded with the server's settings)"
		else
			bad "mariadb-backup --backup: $(tail -n 5 "$W/backup.log")"
		fi
		check "backup-my.cnf names the plugin" grep -q hsmwrap_key_management "$W/bk/backup-my.cnf"
		stop_db
		if $PRE_ENV "$BACKUP" --defaults-file="$W/bk/backup-my.cnf" --prepare --target-dir="$W/bk" \
			--plugin-dir="$W/plugins" >"$W/prepare.log" 2>&1; then
			ok "mariadb-backup --prepare"
		else
			bad "mariadb-backup --prepare: $(tail -n 5 "$W/prepare.log")"
		fi
		R=$W/restored
		rm -rf "$R"
		if "$BACKUP" --no-defaults --copy-back --target-dir="$W/bk" --datadir="$R" \
			>"$W/copyback.log" 2>&1; then
			ok "mariadb-backup --copy-back"
		else
			bad "mariadb-backup --copy-back: $(tail -n 5 "$W/copyback.log")"
		fi
		check "the backup does not hold the keyring (it travels separately)" test ! -e "$R/hsmwrap-tde.keyring"
		cp "$KR" "$R/hsmwrap-tde.keyring"
		mkdir -p "$R/tmp"
		D=$R
		# shellcheck disable=SC2086
		if must_start "the restored datadir with the keyring beside it starts" $OPTS; then
			check "the restored server reads every row" [ "$(sql -e "SELECT COUNT(*) FROM d.t1 UNION ALL SELECT COUNT(*) FROM d.t3 UNION ALL SELECT COUNT(*) FROM d.ta" | tr '\n' ' ')" = "2 2 1 " ]
			stop_db
		fi
	fi
else
	echo "mariadb-backup not installed: backup checks skipped"
fi

check "no output held the PIN" sh -c "! grep -q -F '$PIN' '$ALL'"
echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
