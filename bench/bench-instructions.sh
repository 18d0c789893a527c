#!/bin/sh
# bench-instructions.sh - the library's overhead in instructions, not seconds.
#
# Wall-clock ops/s on a shared 2-core machine swing by 10-20% between runs;
# instruction counts do not. This runs hsmwrap-bench (one thread, one round)
# under callgrind and prints, for each operation, the instructions per call
# of the library path and of the raw PKCS#11 path (both include SoftHSM's
# own work) and their ratio. Needs valgrind; run from `make bench-instructions`,
# which sets up the bench token and the environment.
set -eu

bench=${HSMWRAP_BENCH:-./hsmwrap-bench}
out=$(mktemp)
trap 'rm -f "$out" "$out.txt"' EXIT

# libtool wrapper scripts cannot be run under valgrind directly.
if [ -x "$(dirname "$bench")/.libs/$(basename "$bench")" ]; then
	LD_LIBRARY_PATH="$(dirname "$bench")/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	export LD_LIBRARY_PATH
	bench="$(dirname "$bench")/.libs/$(basename "$bench")"
fi
valgrind --tool=callgrind --callgrind-out-file="$out" \
	"$bench" --threads 1 --rounds 1 --seconds "${SECONDS_PER_OP:-2}" >/dev/null 2>&1
callgrind_annotate --inclusive=yes --tree=caller "$out" >"$out.txt" 2>/dev/null

# "  N (x%)  < ...:worker_main (Kx) [...]" then "  N (x%)  *  ...:lib_encrypt [...]"
awk '
/< .*:worker_main \(/ { n = $1; gsub(",", "", n); c = $0; sub(/.*worker_main \(/, "", c); sub(/x\).*/, "", c); gsub(",", "", c); next }
/\*  .*:(lib|raw)_(encrypt|dk_generate|dk_decrypt|unwrap) / {
	f = $0; sub(/.*:/, "", f); sub(/ .*/, "", f)
	if (c > 0) per[f] = n / c
	c = 0
}
END {
	printf "%-18s %14s %14s %9s\n", "operation", "library instr", "raw instr", "lib/raw"
	split("encrypt dk_generate dk_decrypt unwrap", ops, " ")
	for (i = 1; i <= 4; i++) {
		o = ops[i]
		if (per["lib_" o] && per["raw_" o])
			printf "%-18s %14.0f %14.0f %9.3f\n", o, per["lib_" o], per["raw_" o], per["lib_" o] / per["raw_" o]
	}
}' "$out.txt"
