#!/bin/bash
# bench-envelope.sh - envelope encryption side by side with its peers, on
# the same data, in one run (`make bench-envelope` sets the environment):
#
#   hsmwrap     hsmwrap-bench envelope: streamed from memory, suites 0x0478
#               and 0x0578, with openssl speed -evp aes-256-gcm (16 KiB
#               blocks, and -aead at the frame length) inside the same run
#   age         Debian's age, X25519 recipient (age-keygen), whole file;
#               the files live in /dev/shm, so no disk is measured
#   JS SDK      the AWS Encryption SDK for JavaScript (tests/interop-js),
#               same suites and frame length, streamed from memory
#
# Rounds alternate the peers (hsmwrap, age, JS, hsmwrap, ...) so that the
# drift of a shared machine hits all alike; medians are printed with the
# ratios. Every rate is 10^6 bytes per CPU second of the peer's process,
# as openssl speed counts (its own figure is CPU time, not wall time).
#
# Options: --sizes "1M 1G"  --rounds N (default 3 below 64 MiB, 1 above)
#          --small-seconds S (1 KiB messages with/without the data-key cache)
# A missing peer (no age, no node, no npm packages) shows as "n/a".
set -euo pipefail

BENCH=${HSMWRAP_BENCH:-./hsmwrap-bench}
OPENSSL=${OPENSSL_BIN:-$(command -v openssl || echo openssl)}
JS_SRC=${HW_INTEROP_JS_SRC:-$(dirname "$0")/../tests/interop-js}
JS_DIR=${HW_INTEROP_JS_DIR:-$JS_SRC}
sizes="1M 1G"
rounds=
small=1
while [ $# -gt 0 ]; do
	case $1 in
	--sizes) sizes=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--small-seconds) small=$2; shift 2 ;;
	*) echo "usage: bench-envelope.sh [--sizes \"1M 1G\"] [--rounds N] [--small-seconds S]" >&2; exit 2 ;;
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

first=1
for sz in $sizes; do
	n=$(bytes "$sz")
	r=${rounds:-$([ "$n" -lt $((64 << 20)) ] && echo 3 || echo 1)}
	echo "== $sz ($n bytes), $r round(s)" >&2
	# The JS SDK's own median over 3 runs for small sizes, as noisy as they are.
	js_rounds=$([ "$n" -lt $((64 << 20)) ] && echo 3 || echo 1)
	# The same bytes for the file-based peers.
	head -c "$n" /dev/urandom >"$W/pt"
	for ((i = 1; i <= r; i++)); do
		s=0
		[ $first -eq 1 ] && s=$small
		first=0
		echo "   round $i: hsmwrap (and openssl speed)" >&2
		"$BENCH" envelope --sizes "$n" --rounds 1 --openssl "$OPENSSL" --small-seconds "$s" \
			--json | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(json.dumps({"peer": "openssl-speed", "size": 0, "mbps": d["openssl_speed_mbps"]}))
print(json.dumps({"peer": "openssl-speed-aead-frame", "size": 0, "mbps": d["openssl_speed_aead_frame_mbps"]}))
for t in d["throughput"]:
    print(json.dumps({"peer": "hsmwrap", "size": t["size"], "suite": t["suite"],
                      "encrypt_mbps": t["encrypt_mbps"], "decrypt_mbps": t["decrypt_mbps"]}))
for t in d["small"]:
    print(json.dumps(dict(t, peer="hsmwrap-small")))' >>"$RES"
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
					--size "$n" --suite "$suite" --rounds "$js_rounds" >>"$RES"
			done
		fi
	done
	rm -f "$W/pt" "$W/pt.age"
done

python3 - "$RES" "$have_age" "$have_js" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
have_age, have_js = sys.argv[2] == "1", sys.argv[3] == "1"
med = lambda v: statistics.median(v) if v else None
ossl = med([r["mbps"] for r in rows if r["peer"] == "openssl-speed" and r["mbps"] > 0])
aead = med([r["mbps"] for r in rows if r["peer"] == "openssl-speed-aead-frame" and r["mbps"] > 0])
def get(peer, size, suite, key):
    return med([r[key] for r in rows if r["peer"] == peer and r["size"] == size and
                (suite is None or r.get("suite") == suite)])
f = lambda v: "n/a" if v is None else "%.0f" % v
q = lambda a, b: "n/a" if a is None or not b else "%.2f" % (a / b)
print("MB/s = 10^6 bytes per CPU second; medians over the rounds")
print("openssl speed -evp aes-256-gcm -bytes 16384:           %s MB/s" % f(ossl))
print("openssl speed -aead ... at hsmwrap's frame length 4096: %s MB/s" % f(aead))
print()
hdr = "%-11s %-4s %-7s %9s %9s %9s %9s %9s %9s %9s"
print(hdr % ("size", "op", "suite", "hsmwrap", "/openssl", "/aead4K", "age", "JS SDK", "hw/age", "hw/JS"))
sizes = sorted({r["size"] for r in rows if r["peer"] == "hsmwrap"})
for size in sizes:
    for op in ("encrypt", "decrypt"):
        for suite in ("0x0478", "0x0578"):
            hw = get("hsmwrap", size, suite, op + "_mbps")
            age = get("age", size, None, op + "_mbps") if have_age else None
            js = get("aws-encryption-sdk-javascript", size, suite, op + "_mbps") if have_js else None
            print(hdr % (size, op[:3], suite, f(hw), q(hw, ossl), q(hw, aead), f(age), f(js),
                         q(hw, age), q(hw, js)))
small = [r for r in rows if r["peer"] == "hsmwrap-small"]
if small:
    print()
    print("1 KiB messages, one-shot, messages per CPU second:")
    for r in small:
        for op in ("encrypt", "decrypt"):
            a, b = r[op + "_per_s"], r[op + "_per_s_cached"]
            print("  suite %s %s: %.0f without the data-key cache, %.0f with it (%.1fx)" % (
                r["suite"], op, a, b, b / a if a else 0))
EOF
