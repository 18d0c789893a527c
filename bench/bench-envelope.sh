#!/bin/bash
# bench-envelope.sh - envelope encryption side by side with its peers, on
# the same data, in one run (`make bench-envelope` sets the environment):
#
#   hsmwrap     hsmwrap-bench envelope: streamed from memory, suites 0x0478
#               and 0x0578, 1 and N frame threads, with openssl speed
#               (sha384 and aes-256-gcm at 16 KiB, -aead at the frame
#               length) inside the same rounds
#   CLI         hsmwrap encrypt/decrypt of a large file in /dev/shm
#   age         Debian's age, X25519 recipient (age-keygen), whole file;
#               the files live in /dev/shm, so no disk is measured
#   JS SDK      the AWS Encryption SDK for JavaScript (tests/interop-js),
#               same suites and frame length, streamed from memory
#
# Single-thread rates are 10^6 bytes per CPU second, as openssl speed
# counts (its own figure is CPU time); multi-thread rates are per elapsed
# second, printed with the load average, since CPU time hides parallelism.
#
# Issue 14: hsmwrap-bench prints its own table first (every size, suite
# and thread count; the three ceilings measured in the same rounds), then
# the CLI's rates on a large file in /dev/shm per suite and thread count
# (elapsed time, with user and system time: the I/O path), then the peers.
#
# Options: --sizes "1M 1G"  --rounds N (default 3)
#          --threads "1 2" (default: 1 and the number of CPUs)
#          --cli-size 512M (0: no CLI run)  --peers yes|no
#          --small-seconds S (1 KiB messages with/without the data-key cache)
# A missing peer (no age, no node, no npm packages) shows as "n/a".
set -euo pipefail

BENCH=${HSMWRAP_BENCH:-./hsmwrap-bench}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl || echo openssl)}
JS_SRC=${HW_INTEROP_JS_SRC:-$(dirname "$0")/../tests/interop-js}
JS_DIR=${HW_INTEROP_JS_DIR:-$JS_SRC}
HSMWRAP=${HSMWRAP:-./hsmwrap}
sizes="1M 1G"
rounds=3
small=1
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
threads="1"
[ "$ncpu" -gt 1 ] && threads="1 $ncpu"
cli_size=512M
peers=yes
while [ $# -gt 0 ]; do
	case $1 in
	--sizes) sizes=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--cli-size) cli_size=$2; shift 2 ;;
	--peers) peers=$2; shift 2 ;;
	--small-seconds) small=$2; shift 2 ;;
	*) echo "usage: bench-envelope.sh [--sizes \"1M 1G\"] [--rounds N] [--threads \"1 2\"] [--cli-size 512M] [--peers yes|no] [--small-seconds S]" >&2; exit 2 ;;
	esac
done
command -v python3 >/dev/null || { echo "bench-envelope.sh: python3 is needed for the table" >&2; exit 1; }

bytes() {
	local n=${1%[KkMmGg]}
	case $1 in
	*[Kk]) echo $((n << 10)) ;;
	*[Mm]) echo $((n << 20)) ;;
	*[Gg]) echo $((n << 30)) ;;
	*) echo "$n" ;;
	esac
}

# Memory, not disk: tmpfs when there is one.
base=/dev/shm
[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
W=$(mktemp -d "$base/hsmwrap-bench-envelope.XXXXXXXX")
trap 'rm -rf "$W"' EXIT
RES=$W/results.jsonl
: >"$RES"

have_age=0
if command -v age >/dev/null && command -v age-keygen >/dev/null; then
	have_age=1
	age-keygen -o "$W/age.id" 2>/dev/null
	recipient=$(age-keygen -y "$W/age.id")
fi

have_js=0
if command -v node >/dev/null; then
	sdk_ok() { (cd "$1" && node -e "require('@aws-crypto/client-node')") >/dev/null 2>&1; }
	if sdk_ok "$JS_SRC"; then
		JS_DIR=$JS_SRC
	elif ! sdk_ok "$JS_DIR" && command -v npm >/dev/null; then
		mkdir -p "$JS_DIR"
		[ "$(cd "$JS_SRC" && pwd)" = "$(cd "$JS_DIR" && pwd)" ] ||
			cp "$JS_SRC/package.json" "$JS_SRC/package-lock.json" "$JS_DIR/"
		(cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 || true
	fi
	sdk_ok "$JS_DIR" && have_js=1
	head -c 32 /dev/urandom >"$W/js.key"
fi

# cpu_rate BYTES COMMAND...: 10^6 bytes per CPU second (user + system) of
# COMMAND and its children. Small inputs are processed several times over
# (at least 64 MiB in all): CPU time is accounted in clock ticks, too
# coarse for one run of a few milliseconds.
cpu_rate() {
	local n=$1 reps t k
	shift
	reps=$(( (64 << 20) / n ))
	[ "$reps" -ge 1 ] || reps=1
	t=$( { TIMEFORMAT='%U %S'; time for ((k = 0; k < reps; k++)); do
		"$@" >/dev/null 2>"$W/err" || exit 1; done; } 2>&1 ) ||
		{ cat "$W/err" >&2; return 1; }
	python3 -c "import sys; u, s = map(float, sys.argv[2].split()); print(int(sys.argv[1]) * int(sys.argv[3]) / max(u + s, 1e-6) / 1e6)" "$n" "$t" "$reps"
}

csv() { echo "$*" | tr ' ' ','; }
sizes_b=
for sz in $sizes; do sizes_b="$sizes_b $(bytes "$sz")"; done

echo "== hsmwrap-bench envelope: sizes $sizes, threads $threads, $rounds round(s)"
"$BENCH" envelope --sizes "$(csv $sizes_b)" --threads "$(csv $threads)" --rounds "$rounds" \
	--openssl "$OPENSSL" --small-seconds "$small"

# The CLI on a file in memory: elapsed-time rate, user and system seconds.
n=$(bytes "$cli_size")
if [ "$n" -gt 0 ] && [ -x "$HSMWRAP" ]; then
	echo
	echo "== hsmwrap encrypt/decrypt of a $cli_size file in $base, $rounds round(s), medians"
	head -c "$n" /dev/urandom >"$W/cli.pt"
	for ((i = 1; i <= rounds; i++)); do
		for suite in 0x0478 0x0578; do
			for t in $threads; do
				# New output files each time: replacing an existing file
				# would also charge the freeing of its pages to the run.
				rm -f "$W/cli.ct" "$W/cli.back"
				for op in encrypt decrypt; do
					if [ $op = encrypt ]; then
						args=(encrypt --threads "$t" --key bench-envelope --suite "$suite"
						      -i "$W/cli.pt" -o "$W/cli.ct")
					else
						args=(decrypt --threads "$t" -i "$W/cli.ct" -o "$W/cli.back")
					fi
					load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo -1)
					tm=$( { TIMEFORMAT='%R %U %S'; time "$HSMWRAP" "${args[@]}" >/dev/null 2>"$W/err"; } 2>&1 ) ||
						{ cat "$W/err" >&2; exit 1; }
					echo "{\"peer\": \"cli\", \"suite\": \"$suite\", \"threads\": $t, \"op\": \"$op\", \"size\": $n, \"times\": \"$tm\", \"load\": $load}" >>"$RES"
				done
				cmp -s "$W/cli.pt" "$W/cli.back" || { echo "CLI round trip differs" >&2; exit 1; }
			done
		done
	done
	rm -f "$W/cli.pt" "$W/cli.ct" "$W/cli.back"
	python3 - "$RES" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["peer"] == "cli"]
print("%-7s %3s %-8s %7s %11s %7s %7s %5s" % ("suite", "thr", "op", "MB/s", "(spread)", "user s", "sys s", "load"))
keys = sorted({(r["suite"], r["threads"], r["op"]) for r in rows},
              key=lambda k: (k[0], k[1], k[2] != "encrypt"))
for k in keys:
    rs = [r for r in rows if (r["suite"], r["threads"], r["op"]) == k]
    t = [list(map(float, r["times"].split())) for r in rs]
    rate = [rs[0]["size"] / max(x[0], 1e-6) / 1e6 for x in t]
    print("%-7s %3d %-8s %7.0f %11s %7.2f %7.2f %5.1f" % (
        k[0], k[1], k[2], statistics.median(rate), "(%.0f-%.0f)" % (min(rate), max(rate)),
        statistics.median(x[1] for x in t), statistics.median(x[2] for x in t),
        statistics.median(r["load"] for r in rs)))
print("MB/s per elapsed second of the whole command: process start, token login, the")
print("HSM's wrap/unwrap, reading, writing, fsync and rename included.")
EOF
fi

[ "$peers" = yes ] || exit 0
for sz in $sizes; do
	n=$(bytes "$sz")
	r=$([ "$n" -lt $((64 << 20)) ] && echo 3 || echo 1)
	echo "== peers: $sz ($n bytes), $r round(s)" >&2
	head -c "$n" /dev/urandom >"$W/pt"
	for ((i = 1; i <= r; i++)); do
		if [ $have_age -eq 1 ]; then
			echo "   round $i: age" >&2
			e=$(cpu_rate "$n" age -r "$recipient" -o "$W/pt.age" "$W/pt")
			d=$(cpu_rate "$n" age -d -i "$W/age.id" -o "$W/pt.back" "$W/pt.age")
			cmp -s "$W/pt" "$W/pt.back" || { echo "age round trip differs" >&2; exit 1; }
			rm -f "$W/pt.back"
			echo "{\"peer\": \"age\", \"size\": $n, \"suite\": \"-\", \"encrypt_mbps\": $e, \"decrypt_mbps\": $d}" >>"$RES"
		fi
		if [ $have_js -eq 1 ]; then
			for suite in 0x0478 0x0578; do
				echo "   round $i: JavaScript SDK $suite" >&2
				NODE_PATH=$JS_DIR/node_modules node --max-old-space-size=4096 \
					"$JS_SRC/esdk.js" bench --key-file "$W/js.key" --key-name bench \
					--size "$n" --suite "$suite" --rounds "$r" >>"$RES"
			done
		fi
	done
	rm -f "$W/pt" "$W/pt.age"
done

echo
echo "== peers, MB/s per CPU second of the peer's process (medians)"
python3 - "$RES" "$have_age" "$have_js" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
have_age, have_js = sys.argv[2] == "1", sys.argv[3] == "1"
med = lambda v: statistics.median(v) if v else None
def get(peer, size, suite, key):
    return med([r[key] for r in rows if r["peer"] == peer and r["size"] == size and
                (suite is None or r.get("suite") == suite)])
f = lambda v: "n/a" if v is None else "%.0f" % v
hdr = "%-11s %-4s %-7s %9s %9s"
print(hdr % ("size", "op", "suite", "age", "JS SDK"))
sizes = sorted({r["size"] for r in rows if r["peer"] in ("age", "aws-encryption-sdk-javascript")})
for size in sizes:
    for op in ("encrypt", "decrypt"):
        for suite in ("0x0478", "0x0578"):
            age = get("age", size, None, op + "_mbps") if have_age else None
            js = get("aws-encryption-sdk-javascript", size, suite, op + "_mbps") if have_js else None
            print(hdr % (size, op[:3], suite, f(age), f(js)))
EOF
