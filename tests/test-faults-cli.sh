#!/bin/sh
# test-faults-cli.sh: every `hsmwrap` command that writes files, run with a
# PKCS#11 fault (tests/faultmod) at its 1st, 2nd, ... call in turn, until a
# run sees no fault. After each run the output is either complete and
# correct (checked with a fault-free hsmwrap) or absent, and no temporary
# file is left. Run under tests/with-token.sh; needs FAULTMOD (the built
# tests/faultmod/.libs/libfaultmod.so) and HSMWRAP.
set -u

for v in HSMWRAP HW_TEST_DIR SOFTHSM_MODULE FAULTMOD; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-faults-cli.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 77
	fi
done
[ -x "$HSMWRAP" ] && [ -f "$FAULTMOD" ] || { echo "test-faults-cli.sh: not built" >&2; exit 77; }

W=$HW_TEST_DIR/faults-cli
mkdir "$W" && cd "$W" || exit 99
FAULTMOD_TARGET=$SOFTHSM_MODULE
FAULTMOD_STATS=$W/stats
export FAULTMOD_TARGET FAULTMOD_STATS

npass=0 nfail=0 runs=0 faults=0
ok() { npass=$((npass + 1)); }
bad() { nfail=$((nfail + 1)); echo "FAIL: $*"; }

hw() { "$HSMWRAP" "$@" 2>>"$W/stderr.log"; }

hw key create --label fenv --type aes256 >/dev/null || { echo "setup: key create" >&2; exit 99; }
hw key create --label fkw --type aes256 --purpose keywrap >/dev/null || exit 99
head -c 32 /dev/urandom >material
hw datakey generate --key fenv --context app=faults --plaintext-out dk0 -o dkw0 >/dev/null || exit 99
hw wrap --key fkw -i material -o wrapped0 >/dev/null || exit 99
# Envelope encryption: a multi-frame message (5 frames of 4096 bytes).
head -c 20000 /dev/urandom >plain
hw encrypt --key fenv --context app=faults -i plain -o enc0 >/dev/null || exit 99
# ... and one of 3 MB through two frame threads (issue 14): a dozen jobs of
# frames in flight when the run ends, whatever call failed.
head -c 3000000 /dev/urandom >bigplain
hw encrypt --threads 2 --key fenv --context app=faults -i bigplain -o bigenc0 >/dev/null ||
	exit 99

# injected: faults the last faulted run saw.
injected() {
	sed -n 's/^injected //p' "$FAULTMOD_STATS" 2>/dev/null || echo 0
}

# no_temp: hsmwrap's temporary files are .hsmwrap.XXXXXX in the output dir.
no_temp() {
	set -- .hsmwrap.*
	[ ! -e "$1" ]
}

# Each case: NAME, the outputs, the faulted command, the check of a success.
check_dk_generate() {
	hw datakey decrypt --key fenv --context app=faults -i out1 -o check.dk >/dev/null &&
		cmp -s check.dk out2
}
check_dk_decrypt() { cmp -s out1 dk0; }
check_wrap() {
	hw unwrap --key fkw -i out1 -o check.key >/dev/null && cmp -s check.key material
}
check_unwrap() { cmp -s out1 material; }
check_encrypt() {
	hw decrypt --context app=faults -i out1 -o check.pt >/dev/null && cmp -s check.pt plain
}
check_decrypt() { cmp -s out1 plain; }
check_encrypt_mt() {
	hw decrypt --threads 1 --context app=faults -i out1 -o check.pt >/dev/null &&
		cmp -s check.pt bigplain
}
check_decrypt_mt() { cmp -s out1 bigplain; }

run_case() {
	name=$1 rv=$2 outs=$3
	shift 3
	k=1
	while [ $k -le 80 ]; do
		rm -f out1 out2 check.dk check.key check.pt "$FAULTMOD_STATS"
		FAULTMOD_SPEC="*:nth=$k:rv=$rv" "$HSMWRAP" --module "$FAULTMOD" "$@" \
			>/dev/null 2>>"$W/stderr.log"
		st=$?
		n=$(injected)
		[ "${n:-0}" -eq 0 ] && break
		runs=$((runs + 1))
		faults=$((faults + n))
		if [ $st -eq 0 ]; then
			if "check_$name"; then ok; else bad "$name $rv call $k: exit 0 but wrong output"; fi
		else
			for o in $outs; do
				if [ -e "$o" ]; then bad "$name $rv call $k: exit $st but $o exists"; fi
			done
			ok
		fi
		if no_temp; then ok; else bad "$name $rv call $k: temporary file left"; rm -f .hsmwrap.*; fi
		k=$((k + 1))
	done
	[ $k -le 80 ] || bad "$name $rv: still faulting at call 80"
	echo "ok: $name with $rv at each of $((k - 1)) calls"
}

for rv in CKR_DEVICE_ERROR CKR_GENERAL_ERROR CKR_SESSION_HANDLE_INVALID; do
	run_case dk_generate $rv "out1 out2" \
		datakey generate --key fenv --context app=faults --plaintext-out out2 -o out1
	run_case dk_decrypt $rv "out1" datakey decrypt --key fenv --context app=faults -i dkw0 -o out1
	run_case wrap $rv "out1" wrap --key fkw -i material -o out1
	run_case unwrap $rv "out1" unwrap --key fkw -i wrapped0 -o out1
	run_case encrypt $rv "out1" encrypt --key fenv --context app=faults -i plain -o out1
	run_case decrypt $rv "out1" decrypt --context app=faults -i enc0 -o out1
	run_case encrypt_mt $rv "out1" encrypt --threads 2 --key fenv --context app=faults \
		-i bigplain -o out1
	run_case decrypt_mt $rv "out1" decrypt --threads 2 --context app=faults -i bigenc0 -o out1
done

echo "test-faults-cli: $runs faulted runs, $faults faults injected"
echo "$npass passed, $nfail failed"
[ $nfail -eq 0 ]
