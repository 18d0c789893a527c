# tests/p11.sh - pkcs11-tool, the suites' independent reader of the token.
#
# p11_slot LABEL [MODULE]: the slot number of the token labelled exactly
# LABEL. Suites pass --slot, never --token-label: pkcs11-tool's label match
# is a prefix match, so `--token-label hsmwrap-test` also takes
# hsmwrap-test2, and which one comes first depends on the random names of
# SoftHSM's token directories (a login with the other token's PIN then
# fails about half the time).
p11_slot() {
	"$PKCS11_TOOL" --module "${2:-$SOFTHSM_MODULE}" -L 2>/dev/null | awk -v l="$1" '
		/^Slot / { s = $3; gsub(/[():]/, "", s) }
		$0 ~ "^ *token label *: " l "$" { print s }'
}
