#!/bin/sh
# How log-v1.jsonl and log-v1.pub.pem were made: with hsmwrap at commit
# cc16f7c (the hand-written JSON writer of src/lib/lifecycle/audit.c,
# before jansson), under tests/with-token.sh:
#   HSMWRAP=$PWD/hsmwrap sh tests/with-token.sh sh tests/audit-fixture/make-log.sh OUTDIR
# Records with escapes (quotes, backslashes, control characters, DEL),
# non-ASCII text, a byte that is not UTF-8 (written as U+FFFD), failed
# commands, periodic and manual digests, and a last record no digest
# covers. tests/test-audit.sh checks that `audit verify` still accepts it.
set -eu
H=$HSMWRAP
O=$1
rm -rf "$O"; mkdir -p "$O"
cd "$O"
export HSMWRAP_AUDIT_DIGEST_EVERY=5
"$H" audit init --key audit-key --pubkey-out audit.pub.pem audit.jsonl
export HSMWRAP_AUDIT_LOG=$O/audit.jsonl
"$H" key create --label app-kek --type aes256
"$H" key create --label 'kéy "quoted" \back' --type aes256
"$H" datakey generate --key app-kek --context app=billing --context 'naïve=€ 😀 "q" \b' \
	--context "$(printf 'ctl=a\tb\001c\177d')" \
	--plaintext-out dk.pt -o dk.wrapped
"$H" key create --label "$(printf 'bad\377\376x')" --type aes256 || true
"$H" datakey decrypt --key app-kek --context app=other -i dk.wrapped -o dk2.pt || true
"$H" key show no-such-key || true
"$H" key list >/dev/null
"$H" audit digest
"$H" key show app-kek >/dev/null
"$H" audit verify --pubkey audit.pub.pem audit.jsonl
