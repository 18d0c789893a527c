#!/bin/sh
# test-cluster.sh - a cluster of two tokens, one behind p11-kit remoting,
# under load while the remote server is killed and started again (see
# tests/test-cluster.c). Runs under with-token.sh with HW_TEST_SECOND_TOKEN=1.
set -u

runner=${HW_CLUSTER_RUNNER:?}
p11kit=$(command -v p11-kit 2>/dev/null) || { echo "test-cluster.sh: p11-kit not found; skipping"; exit 77; }
client="${P11_MODULE_PATH:-}/p11-kit-client.so"
if [ ! -f "$client" ]; then
	echo "test-cluster.sh: $client not found; skipping"
	exit 77
fi
[ -n "${HW_TEST_TOKEN2:-}" ] || { echo "test-cluster.sh: needs HW_TEST_SECOND_TOKEN=1" >&2; exit 99; }

sock="$HW_TEST_DIR/p11-kit-server.sock"
# The test runs this in its own process group and kills the group.
HW_CL_SERVER_CMD="exec '$p11kit' server -f -n '$sock' --provider '$SOFTHSM_MODULE' \
'pkcs11:token=$HW_TEST_TOKEN2' >'$HW_TEST_DIR/p11-kit-server.log' 2>&1"
HW_CL_SOCKET=$sock
HW_CL_MODULE_A=$SOFTHSM_MODULE
HW_CL_TOKEN_A=$HSMWRAP_TOKEN
HW_CL_PIN_A=$HSMWRAP_PIN_SOURCE
HW_CL_MODULE_B=$client
HW_CL_TOKEN_B="pkcs11:token=$HW_TEST_TOKEN2"
HW_CL_PIN_B="file:$HW_TEST_USER_PIN_FILE2"
P11_KIT_SERVER_ADDRESS="unix:path=$sock"
export HW_CL_SERVER_CMD HW_CL_SOCKET HW_CL_MODULE_A HW_CL_TOKEN_A HW_CL_PIN_A \
	HW_CL_MODULE_B HW_CL_TOKEN_B HW_CL_PIN_B P11_KIT_SERVER_ADDRESS

"$runner"
rc=$?
if [ $rc -ne 0 ] && [ -f "$HW_TEST_DIR/p11-kit-server.log" ]; then
	echo "--- p11-kit server log"
	cat "$HW_TEST_DIR/p11-kit-server.log"
fi
exit $rc
