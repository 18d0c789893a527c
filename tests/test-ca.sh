#!/bin/sh
# test-ca.sh: the root-CA ceremony (`hsmwrap ca init|sign|crl`) on a real
# SoftHSM token, checked by independent tools: openssl x509/verify/crl,
# s_server and s_client over TLS 1.2 and 1.3, and pkcs11-tool for what is
# on the token. Failure paths must exit with the documented status, say
# why, and leave nothing behind (no output file, no key, no certificate).
# Runs under tests/with-token.sh. Prints "ok: ..."/"FAIL: ..." per check
# and finally "N passed, N failed".

set -u

for v in HSMWRAP HW_TEST_DIR HW_TEST_USER_PIN_FILE SOFTHSM_MODULE HSMWRAP_TOKEN \
	HSMWRAP_PIN_SOURCE; do
	eval "val=\${$v:-}"
	if [ -z "$val" ]; then
		echo "test-ca.sh: $v is not set; run me under tests/with-token.sh" >&2
		exit 99
	fi
done
[ -x "$HSMWRAP" ] || { echo "test-ca.sh: $HSMWRAP is not built" >&2; exit 99; }
OPENSSL=${OPENSSL_BIN:-$(command -v openssl 2>/dev/null || :)}
PKCS11_TOOL=${PKCS11_TOOL:-$(command -v pkcs11-tool 2>/dev/null || :)}
PYTHON=$(command -v python3 2>/dev/null || :)
if [ -z "$OPENSSL" ]; then
	echo "test-ca.sh: openssl is needed to check certificates; skipping" >&2
	exit 77
fi

umask 022
W=$HW_TEST_DIR/ca
mkdir "$W" || exit 99
. "$(dirname "$0")/p11.sh"
. "$(dirname "$0")/lib.sh"
cd "$W" || exit 99
PIN=$(cat "$HW_TEST_USER_PIN_FILE")
ALL=$W/all-output
: >"$ALL"
SERVER_PID=

# s_server stops at EOF on its stdin: it reads a FIFO we hold open (fd 3).
stop_server() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
	exec 3>&-
}
trap stop_server EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

ossl() {
	"$OPENSSL" "$@" 2>>"$W/openssl.log"
}

# field NAME: a transcript line's value from $W/out ("  Name:   value").
field() {
	sed -n "s/^  $1:  *//p" "$W/out" | head -n 1
}

# text CERT: openssl x509 -text, once per file.
text() {
	ossl x509 -in "$1" -noout -text >"$1.txt"
}
has() {
	grep -q -- "$2" "$1.txt"
}

serial_of() {
	ossl x509 -in "$1" -noout -serial | sed 's/^serial=//'
}
fp_of() {
	ossl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/^[^=]*=//'
}

P11_SLOT=
[ -z "$PKCS11_TOOL" ] || P11_SLOT=$(p11_slot hsmwrap-test)
p11() {
	HW_P11_PIN=$PIN "$PKCS11_TOOL" --module "$SOFTHSM_MODULE" \
		--slot "${P11_SLOT:-none}" --login --pin env:HW_P11_PIN "$@"
}
# One line per object: CLASS|LABEL|ID|USAGE|ACCESS.
p11_objects() {
	p11 --list-objects 2>/dev/null | awk '
		function flush() { if (cls != "") print cls "|" label "|" id "|" usage "|" access }
		/^[^ \t]/ { flush(); cls = $1; label = ""; id = ""; usage = ""; access = ""; next }
		/^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); label = $0 }
		/^[ \t]+ID:/ { sub(/^[ \t]+ID:[ \t]*/, ""); id = $0 }
		/^[ \t]+Usage:/ { sub(/^[ \t]+Usage:[ \t]*/, ""); usage = $0 }
		/^[ \t]+Access:/ { sub(/^[ \t]+Access:[ \t]*/, ""); access = $0 }
		END { flush() }' >"$W/objects"
}
# Objects labelled $1 on the token (any class).
p11_count() {
	p11_objects
	grep -c "^[^|]*|$1|" "$W/objects"
}

# ---------------------------------------------------------------------
# ca init: RSA-3072, P-384 and RSA-4096 roots.

for t in rsa3072 ec-p384 rsa4096; do
	start=$(date +%s)
	if ! expect "ca init --type $t" 0 ca init --key "root-$t" --type "$t" \
		--subject "/C=DE/O=Example \\/ Test/CN=Example Root CA $t" --days 3650 -o "root-$t.pem"; then
		continue
	fi
	echo "    (ca init --type $t took $(( $(date +%s) - start )) s)"
	cp "$W/out" "init-$t.out"
	r=root-$t.pem
	text "$r"
	check "$t: openssl x509 reads a v3 certificate" has "$r" "Version: 3 (0x2)"
	check "$t: basicConstraints critical" has "$r" "X509v3 Basic Constraints: critical"
	check "$t: CA:TRUE" has "$r" "CA:TRUE"
	check "$t: keyUsage critical" has "$r" "X509v3 Key Usage: critical"
	check "$t: keyCertSign and cRLSign only" grep -qx ' *Certificate Sign, CRL Sign' "$r.txt"
	check "$t: subject key identifier" has "$r" "X509v3 Subject Key Identifier"
	check "$t: authority key identifier" has "$r" "X509v3 Authority Key Identifier"
	ski=$(grep -A1 'Subject Key Identifier' "$r.txt" | tail -n 1 | tr -d ' ')
	aki=$(grep -A1 'Authority Key Identifier' "$r.txt" | tail -n 1 | tr -d ' ' | sed 's/^keyid://')
	check "$t: authority key id = subject key id (self-signed)" test -n "$ski" -a "$ski" = "$aki"
	check "$t: subject with an escaped '/'" has "$r" "O = Example / Test, CN = Example Root CA $t"
	check "$t: issuer = subject" sh -c \
		"[ \"\$('$OPENSSL' x509 -in '$r' -noout -subject | cut -d= -f2-)\" = \"\$('$OPENSSL' x509 -in '$r' -noout -issuer | cut -d= -f2-)\" ]"
	case $t in
	rsa*) check "$t: sha256WithRSAEncryption" has "$r" "Signature Algorithm: sha256WithRSAEncryption"
	      check "$t: ${t#rsa}-bit key" has "$r" "Public-Key: (${t#rsa} bit)" ;;
	ec-p384) check "$t: ecdsa-with-SHA384" has "$r" "Signature Algorithm: ecdsa-with-SHA384"
	      check "$t: P-384 key" has "$r" "NIST CURVE: P-384" ;;
	esac
	check "$t: openssl verify -CAfile root.pem root.pem" sh -c \
		"'$OPENSSL' verify -x509_strict -CAfile '$r' '$r' >/dev/null 2>&1"
	days=$(( ($(date -d "$(ossl x509 -in "$r" -noout -enddate | cut -d= -f2)" +%s) - $(date +%s)) / 86400 ))
	check "$t: valid for 3650 days ($days)" test "$days" -ge 3649 -a "$days" -le 3650
	s=$(serial_of "$r")
	check "$t: serial is 128 bits, positive ($s)" sh -c "echo '$s' | grep -qx '[4-7][0-9A-F]\{31\}'"
	check "$t: transcript serial = certificate serial" test "$(field Serial)" = "$s"
	check "$t: transcript SHA-256 = openssl's fingerprint" test "$(field 'Certificate SHA-256')" = "$(fp_of "$r")"
	spki=$(ossl x509 -in "$r" -noout -pubkey | ossl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
	check "$t: transcript public-key fingerprint = SHA-256 of the SPKI" \
		test "$(field 'Public key SHA-256')" = "$spki"
	check "$t: transcript has the key URI" sh -c \
		"sed -n 's/^  Key URI:  *//p' '$W/out' | grep -q '^pkcs11:.*object=root-$t'"
	check "$t: transcript has signature lines" grep -q 'Witness:' "$W/out"
	check "$t: certificate file is world-readable (0644), not secret" \
		test "$(stat -c %a "$r")" = 644
done
[ -f root-rsa3072.pem ] && [ -f root-ec-p384.pem ] || {
	echo "test-ca.sh: the roots are needed for everything else" >&2
	echo "$npass passed, $((nfail + 1)) failed"
	exit 1
}

# --json: one document with the transcript and the certificate.
if [ -n "$PYTHON" ]; then
	expect "ca init --json" 0 --json ca init --key root-json --type ec-p384 \
		--subject /CN=JSON -o root-json.pem
	check "--json: ok, transcript items and certificate" "$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
items = {i["field"]: i["value"] for i in d["transcript"]["items"]}
assert d["ok"] is True
assert d["transcript"]["ceremony"].startswith("ca init")
assert items["Key URI:"].startswith("pkcs11:")
assert items["Certificate SHA-256:"] == d["certificate"]["sha256"] == sys.argv[2]
assert d["certificate"]["serial"] == sys.argv[3]
assert d["key"]["sensitive"] is True and d["key"]["extractable"] is False
' "$W/out" "$(fp_of root-json.pem)" "$(serial_of root-json.pem)"
fi

# ---------------------------------------------------------------------
# The token, checked with pkcs11-tool.

if [ -n "$PKCS11_TOOL" ] && [ -n "$P11_SLOT" ]; then
	p11_objects
	for t in rsa3072 ec-p384; do
		line=$(grep "^Private|root-$t|" "$W/objects" | head -n 1)
		access=$(echo "$line" | cut -d'|' -f5)
		case $access in
		*sensitive*"never extractable"*) ok "pkcs11-tool: CA key root-$t: $access" ;;
		*) bad "pkcs11-tool: CA key root-$t access is '$access'" ;;
		esac
		case $access in
		*extractable*) case $access in *"never extractable"*) : ;; *) bad "root-$t extractable" ;; esac ;;
		esac
		check "pkcs11-tool: CA key root-$t usage is sign only" \
			test "$(echo "$line" | cut -d'|' -f4)" = "sign"
		kid=$(echo "$line" | cut -d'|' -f3)
		cline=$(grep "^Certificate|root-$t|" "$W/objects" | head -n 1)
		check "pkcs11-tool: certificate root-$t is on the token" test -n "$cline"
		check "pkcs11-tool: certificate has the key's CKA_ID ($kid)" \
			test -n "$kid" -a "$(echo "$cline" | cut -d'|' -f3)" = "$kid"
		p11 --read-object --type cert --label "root-$t" -o "tok-$t.der" >/dev/null 2>&1
		ossl x509 -in "root-$t.pem" -outform DER -out "root-$t.der"
		check "pkcs11-tool: the token's certificate is root-$t.pem" cmp -s "tok-$t.der" "root-$t.der"
	done
	# The CA key is not readable in any way.
	if p11 --read-object --type privkey --label root-ec-p384 -o leak.der >/dev/null 2>&1 &&
		[ -s leak.der ]; then
		bad "pkcs11-tool could read the CA private key"
	else
		ok "pkcs11-tool cannot read the CA private key"
	fi
else
	echo "SKIP: pkcs11-tool not available"
fi

# ---------------------------------------------------------------------
# ca sign: intermediate, TLS server and client certificates.

csr() { # csr NAME rsa|ec SUBJECT [openssl req args...]: NAME.key, NAME.csr
	n=$1 kalg=$2 subj=$3
	shift 3
	case $kalg in
	rsa) ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$n.key" ;;
	*) ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$n.key" ;;
	esac
	ossl req -new -key "$n.key" -subj "$subj" -out "$n.csr" "$@"
}

for t in rsa3072 ec-p384; do
	r=root-$t.pem
	case $t in rsa*) alg=rsa ;; *) alg=ec ;; esac
	csr "int-$t" $alg "/O=Example/CN=Issuing CA $t"
	expect "$t: ca sign --profile intermediate" 0 ca sign --key "root-$t" --ca-cert "$r" \
		--csr "int-$t.csr" --profile intermediate --days 1825 -o "int-$t.pem"
	text "int-$t.pem"
	check "$t intermediate: CA:TRUE, pathlen:0" has "int-$t.pem" "CA:TRUE, pathlen:0"
	check "$t intermediate: keyCertSign, cRLSign" grep -qx ' *Certificate Sign, CRL Sign' "int-$t.pem.txt"
	check "$t intermediate: openssl verify -CAfile root" sh -c \
		"'$OPENSSL' verify -x509_strict -CAfile '$r' 'int-$t.pem' >/dev/null 2>&1"
	check "$t intermediate: transcript serial = certificate serial" \
		test "$(field Serial)" = "$(serial_of "int-$t.pem")"

	# A leaf issued by the intermediate (a file key, with openssl): the
	# whole chain verifies back to the HSM root.
	csr "leaf2-$t" ec "/CN=leaf2.example"
	printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:leaf2.example\nextendedKeyUsage=serverAuth\n' >leaf2.ext
	ossl x509 -req -in "leaf2-$t.csr" -CA "int-$t.pem" -CAkey "int-$t.key" -CAcreateserial \
		-days 30 -extfile leaf2.ext -out "leaf2-$t.pem"
	check "$t: root -> intermediate -> leaf chain verifies" sh -c \
		"'$OPENSSL' verify -x509_strict -CAfile '$r' -untrusted 'int-$t.pem' 'leaf2-$t.pem' >/dev/null 2>&1"

	csr "srv-$t" $alg "/CN=localhost"
	expect "$t: ca sign tls-server" 0 ca sign --key "root-$t" --ca-cert "$r" --csr "srv-$t.csr" \
		--profile tls-server --san DNS:localhost,IP:127.0.0.1 --days 30 -o "srv-$t.pem"
	text "srv-$t.pem"
	check "$t server: CA:FALSE" has "srv-$t.pem" "CA:FALSE"
	check "$t server: serverAuth" has "srv-$t.pem" "TLS Web Server Authentication"
	check "$t server: SAN" has "srv-$t.pem" "DNS:localhost, IP Address:127.0.0.1"
	case $t in
	rsa*) check "$t server: RSA key: digitalSignature + keyEncipherment" \
		grep -qx ' *Digital Signature, Key Encipherment' "srv-$t.pem.txt" ;;
	*) check "$t server: EC key: digitalSignature only" \
		grep -qx ' *Digital Signature' "srv-$t.pem.txt" ;;
	esac
	check "$t server: openssl verify -purpose sslserver" sh -c \
		"'$OPENSSL' verify -x509_strict -purpose sslserver -CAfile '$r' 'srv-$t.pem' >/dev/null 2>&1"
	check "$t server: signed with the root's algorithm" \
		has "srv-$t.pem" "Signature Algorithm: $(case $t in rsa*) echo sha256WithRSAEncryption ;; *) echo ecdsa-with-SHA384 ;; esac)"

	csr "cli-$t" ec "/CN=client $t"
	# --ca-cert left out: the certificate stored on the token is used.
	expect "$t: ca sign tls-client (CA certificate from the token)" 0 ca sign --key "root-$t" \
		--csr "cli-$t.csr" --profile tls-client --days 30 -o "cli-$t.pem"
	text "cli-$t.pem"
	check "$t client: clientAuth" has "cli-$t.pem" "TLS Web Client Authentication"
	check "$t client: openssl verify -purpose sslclient" sh -c \
		"'$OPENSSL' verify -x509_strict -purpose sslclient -CAfile '$r' 'cli-$t.pem' >/dev/null 2>&1"
	check "$t client: not a server certificate" sh -c \
		"! '$OPENSSL' verify -purpose sslserver -CAfile '$r' 'cli-$t.pem' >/dev/null 2>&1"
done

# The request's own extensions are never copied.
csr evil ec "/CN=evil" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "subjectAltName=DNS:evil.example"
expect "ca sign of a CSR asking for CA:TRUE and its own SAN" 0 ca sign --key root-ec-p384 \
	--ca-cert root-ec-p384.pem --csr evil.csr --san DNS:good.example -o evil.pem
text evil.pem
check "requested CA:TRUE is not granted" sh -c "! grep -q 'CA:TRUE' evil.pem.txt"
check "requested SAN is not copied" sh -c "! grep -q 'evil.example' evil.pem.txt && grep -q 'DNS:good.example' evil.pem.txt"
check "the subject comes from the CSR" has evil.pem "Subject: CN = evil"
# An empty subject: the names are all in the SAN, which becomes critical.
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out empty.key
ossl req -new -key empty.key -subj / -out empty.csr
expect "ca sign of a CSR with an empty subject and --san" 0 ca sign --key root-ec-p384 \
	--csr empty.csr --san DNS:anon.example -o empty.pem
text empty.pem
check "empty subject: the SAN is critical" has empty.pem "X509v3 Subject Alternative Name: critical"
check "empty subject: openssl verify -x509_strict" sh -c \
	"'$OPENSSL' verify -x509_strict -CAfile root-ec-p384.pem empty.pem >/dev/null 2>&1"
newout
refused "an intermediate with an empty subject" 5 ca sign --key root-ec-p384 --csr empty.csr \
	--profile intermediate -o "$O/c.pem"
refused "a client certificate with an empty subject and no --san" 5 ca sign --key root-ec-p384 \
	--csr empty.csr --profile tls-client -o "$O/c.pem"

s1=$(serial_of srv-ec-p384.pem)
s2=$(serial_of cli-ec-p384.pem)
check "serials differ between certificates" test -n "$s1" -a "$s1" != "$s2"

# ---------------------------------------------------------------------
# ca crl

for t in rsa3072 ec-p384; do
	r=root-$t.pem
	rev=$(serial_of "srv-$t.pem")
	expect "$t: ca crl --revoke" 0 ca crl --key "root-$t" --ca-cert "$r" --revoke "$rev" \
		--crl-number 7 -o "root-$t.crl"
	if "$OPENSSL" crl -in "root-$t.crl" -CAfile "$r" -noout >crl.out 2>&1 &&
		grep -q 'verify OK' crl.out; then
		ok "$t: openssl crl -CAfile root.pem: verify OK"
	else
		bad "$t: openssl crl -CAfile: $(cat crl.out)"
	fi
	ossl crl -in "root-$t.crl" -noout -text >crl.txt
	check "$t: CRL is version 2" grep -q 'Version 2' crl.txt
	check "$t: CRL number 7" sh -c "grep -A1 'CRL Number' crl.txt | tail -n 1 | grep -qx ' *7'"
	check "$t: CRL has the authority key identifier" grep -q 'Authority Key Identifier' crl.txt
	check "$t: CRL lists the revoked serial" grep -q "Serial Number: $rev" crl.txt
	check "$t: transcript names the revoked serial" test "$(field 'Revoked serial')" = "$rev"
	if "$OPENSSL" verify -crl_check -CAfile "$r" -CRLfile "root-$t.crl" "srv-$t.pem" >v.out 2>&1; then
		bad "$t: a revoked certificate passed verify -crl_check"
	elif grep -q 'certificate revoked' v.out; then
		ok "$t: revoked certificate fails verify -crl_check (certificate revoked)"
	else
		bad "$t: verify -crl_check failed for another reason: $(cat v.out)"
	fi
	check "$t: a certificate not revoked passes verify -crl_check" sh -c \
		"'$OPENSSL' verify -crl_check -CAfile '$r' -CRLfile 'root-$t.crl' 'cli-$t.pem' >/dev/null 2>&1"
done
# No revocations, CA certificate from the token, default CRL number (time).
expect "ca crl with nothing revoked" 0 ca crl --key root-ec-p384 -o empty.crl
check "empty CRL verifies" sh -c "'$OPENSSL' crl -in empty.crl -CAfile root-ec-p384.pem -noout 2>&1 | grep -q 'verify OK'"
check "empty CRL has no revoked list" sh -c "'$OPENSSL' crl -in empty.crl -noout -text | grep -q 'No Revoked Certificates'"
now=$(date +%s)
num=$(sed -n 's/^  CRL number:  *//p' "$W/out")
check "default CRL number is the time ($num)" test "$num" -ge $((now - 60)) -a "$num" -le "$now"
check "the leaf passes crl_check with the empty CRL" sh -c \
	"'$OPENSSL' verify -crl_check -CAfile root-ec-p384.pem -CRLfile empty.crl srv-ec-p384.pem >/dev/null 2>&1"

# ---------------------------------------------------------------------
# TLS: s_server with a root-issued leaf (file key), s_client verifying it
# back to the HSM root over TLS 1.2 and 1.3.

start_server() { # KEY CERT; sets PORT
	for try in 1 2 3 4 5; do
		PORT=$(( $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 20000 + 20000 ))
		: >server.log
		rm -f stdin
		mkfifo stdin || return 1
		"$OPENSSL" s_server -key "$1" -cert "$2" -accept "127.0.0.1:$PORT" -naccept 2 \
			>server.log 2>&1 <stdin &
		SERVER_PID=$!
		exec 3>stdin
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
			grep -q ACCEPT server.log && return 0
			kill -0 "$SERVER_PID" 2>/dev/null || break
			sleep 0.25
		done
		stop_server
	done
	return 1
}

for t in rsa3072 ec-p384; do
	if ! start_server "srv-$t.key" "srv-$t.pem"; then
		bad "$t: s_server did not start: $(head -c 300 server.log)"
		continue
	fi
	for v in tls1_2 tls1_3; do
		timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" -"$v" -verify_return_error \
			-verify_hostname localhost -CAfile "root-$t.pem" </dev/null >client.log 2>&1
		crc=$?
		if [ $crc -eq 0 ] && grep -q 'Verify return code: 0 (ok)' client.log; then
			ok "$t: s_client -$v verified the chain to the HSM root ($(grep -m1 -o 'Cipher is [^ ]*' client.log))"
		else
			bad "$t: s_client -$v exit $crc: $(grep -m3 -i 'error\|alert\|verify' client.log | tr '\n' ' ')"
		fi
	done
	stop_server
done
# A client that trusts another root must refuse the server.
if start_server srv-ec-p384.key srv-ec-p384.pem; then
	if timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$PORT" -tls1_3 -verify_return_error \
		-CAfile root-rsa3072.pem </dev/null >client.log 2>&1; then
		bad "s_client accepted a server certificate from another root"
	else
		ok "s_client refuses the server when it trusts another root"
	fi
	stop_server
fi

# ---------------------------------------------------------------------
# Failure paths: clear error, documented exit status, nothing left behind.

newout
refused "ca init with an existing label" 7 ca init --key root-ec-p384 --type ec-p384 \
	--subject /CN=again -o "$O/root.pem"
check "the existing CA key still has one certificate" test "$(p11_count root-ec-p384)" -eq 3

newout
refused "ca init --type rsa2048 (not a CA key type)" 2 ca init --key x --type rsa2048 \
	--subject /CN=x -o "$O/r.pem"
refused "ca init with a subject not starting with /" 2 ca init --key x --type ec-p384 \
	--subject CN=x -o "$O/r.pem"
refused "ca init with an unknown attribute type" 2 ca init --key x --type ec-p384 \
	--subject /XX=y -o "$O/r.pem"
refused "ca init with a 3-letter country" 2 ca init --key x --type ec-p384 \
	--subject /C=DEU/CN=x -o "$O/r.pem"
refused "ca init --days 0" 2 ca init --key x --type ec-p384 --subject /CN=x --days 0 -o "$O/r.pem"
check "no key 'x' was created by refused commands" test "$(p11_count x)" -eq 0

printf 'wrong-pin\n' >wrong.pin && chmod 600 wrong.pin
newout
refused "ca init with a wrong PIN" 3 --pin-source "file:$W/wrong.pin" ca init --key wp \
	--type ec-p384 --subject /CN=wp -o "$O/r.pem"
refused "ca sign with a wrong PIN" 3 --pin-source "file:$W/wrong.pin" ca sign --key root-ec-p384 \
	--csr srv-ec-p384.csr --san DNS:x -o "$O/c.pem"
check "nothing named 'wp' on the token" test "$(p11_count wp)" -eq 0

newout
refused "ca init into a directory that does not exist (checked first)" 1 ca init --key doomed \
	--type ec-p384 --subject /CN=doomed -o "$O/no/such/dir/root.pem"
check "the refused ceremony created nothing" test "$(p11_count doomed)" -eq 0
# A failure after the key was generated (the output name is taken by a
# directory, so the final rename fails) destroys the new key and
# certificate again.
newout
mkdir "$O/taken"
refused "ca init that cannot write its output" 1 ca init --key doomed --type ec-p384 \
	--subject /CN=doomed -o "$O/taken"
check "it failed after the key generation, at writing the certificate" \
	grep -q '^hsmwrap: writing the CA certificate' "$W/err"
check "the failed ceremony left no key and no certificate" test "$(p11_count doomed)" -eq 0
check "the label is free again" sh -c "'$HSMWRAP' ca init --key doomed --type ec-p384 --subject /CN=d -o '$W/doomed.pem' >/dev/null 2>&1"

# A CSR whose signature does not verify.
ossl req -in srv-ec-p384.csr -outform DER -out bad.der
len=$(wc -c <bad.der)
b=$(od -An -tu1 -j $((len - 2)) -N1 bad.der | tr -d ' ')
# shellcheck disable=SC2059
printf "\\$(printf %o $((b ^ 1)))" | dd of=bad.der bs=1 seek=$((len - 2)) conv=notrunc 2>/dev/null
newout
refused "ca sign of a CSR with a bad signature" 5 ca sign --key root-ec-p384 \
	--ca-cert root-ec-p384.pem --csr bad.der --san DNS:x -o "$O/c.pem"
check "the error says the signature does not verify" grep -q 'signature does not verify' "$W/err"
head -c 300 /dev/urandom >garbage.csr
refused "ca sign of garbage" 5 ca sign --key root-ec-p384 --csr garbage.csr --san DNS:x -o "$O/c.pem"
refused "ca sign with another CA's certificate" 5 ca sign --key root-ec-p384 \
	--ca-cert root-rsa3072.pem --csr srv-ec-p384.csr --san DNS:x -o "$O/c.pem"
check "the error says the key does not match" grep -q 'public key is not' "$W/err"
refused "ca crl with another CA's certificate" 5 ca crl --key root-rsa3072 \
	--ca-cert root-ec-p384.pem -o "$O/c.crl"
refused "ca sign tls-server without --san" 2 ca sign --key root-ec-p384 --csr srv-ec-p384.csr \
	-o "$O/c.pem"
refused "ca sign with a SAN of an unsupported kind" 2 ca sign --key root-ec-p384 \
	--csr srv-ec-p384.csr --san dirName:x -o "$O/c.pem"
refused "ca sign beyond the CA's validity" 2 ca sign --key root-ec-p384 --csr srv-ec-p384.csr \
	--san DNS:x --days 5000 -o "$O/c.pem"
refused "ca sign --profile root" 2 ca sign --key root-ec-p384 --csr srv-ec-p384.csr \
	--profile root -o "$O/c.pem"
refused "ca sign with a key that does not exist" 4 ca sign --key no-such-key \
	--csr srv-ec-p384.csr --san DNS:x -o "$O/c.pem"
"$HSMWRAP" key create --label plain-sign --type ec-p256 >/dev/null 2>&1
refused "ca sign with a key without a certificate on the token" 4 ca sign --key plain-sign \
	--csr srv-ec-p384.csr --san DNS:x -o "$O/c.pem"
refused "ca sign with a leaf as CA certificate (key mismatch)" 5 ca sign --key root-ec-p384 \
	--ca-cert srv-ec-p384.pem --csr srv-ec-p384.csr --san DNS:x -o "$O/c.pem"
refused "ca crl --revoke not-hex" 2 ca crl --key root-ec-p384 --revoke xyz -o "$O/c.crl"
refused "ca crl --revoke the same serial twice" 2 ca crl --key root-ec-p384 --revoke 0A \
	--revoke 0a -o "$O/c.crl"
refused "ca sign: --csr and -o the same file" 2 ca sign --key root-ec-p384 \
	--csr srv-ec-p384.csr --san DNS:x -o srv-ec-p384.csr
check "the CSR was not touched" sh -c "'$OPENSSL' req -in srv-ec-p384.csr -noout -verify >/dev/null 2>&1"

# ---------------------------------------------------------------------
# Faults: a PKCS#11 failure at each call of ca init in turn. Either the
# ceremony completes (and its certificate verifies) or no file, no key and
# no certificate remain.

if [ -n "${FAULTMOD:-}" ] && [ -f "$FAULTMOD" ]; then
	runs=0
	for rv in CKR_DEVICE_ERROR CKR_SESSION_HANDLE_INVALID; do
		k=1
		fails=0
		while [ $k -le 160 ]; do
			l=f$k-${rv#CKR_}
			rm -f fault.pem fault.stats
			FAULTMOD_TARGET=$SOFTHSM_MODULE FAULTMOD_STATS=$W/fault.stats \
				FAULTMOD_SPEC="*:nth=$k:rv=$rv" "$HSMWRAP" --module "$FAULTMOD" ca init \
				--key "$l" --type ec-p384 --subject "/CN=$l" -o fault.pem >/dev/null 2>>faults.log
			st=$?
			n=$(sed -n 's/^injected //p' fault.stats 2>/dev/null)
			[ "${n:-0}" -eq 0 ] && break
			runs=$((runs + 1))
			cnt=$(p11_count "$l")
			if [ $st -eq 0 ]; then
				if ! "$OPENSSL" verify -CAfile fault.pem fault.pem >/dev/null 2>&1 || [ "$cnt" -ne 3 ]; then
					bad "ca init, $rv at call $k: exit 0 but certificate or objects wrong ($cnt objects)"
					fails=$((fails + 1))
				fi
			elif [ -e fault.pem ] || [ "$cnt" -ne 0 ] || ls .hsmwrap.* >/dev/null 2>&1; then
				bad "ca init, $rv at call $k: exit $st but left $cnt objects or a file"
				fails=$((fails + 1))
			fi
			k=$((k + 1))
		done
		[ $k -le 160 ] || bad "ca init, $rv: still faulting at call 160"
		[ $fails -eq 0 ] && ok "ca init with $rv at each of $((k - 1)) PKCS#11 calls: complete or nothing left"
	done
	echo "    ($runs faulted ca init runs)"

	# ca sign and ca crl: the output is complete and verifies, or absent.
	for cmd in sign crl; do
		for rv in CKR_DEVICE_ERROR CKR_SESSION_HANDLE_INVALID CKR_GENERAL_ERROR; do
			k=1
			fails=0
			while [ $k -le 160 ]; do
				rm -f fault.out fault.stats
				if [ $cmd = sign ]; then
					set -- ca sign --key root-ec-p384 --csr srv-ec-p384.csr --san DNS:f -o fault.out
				else
					set -- ca crl --key root-ec-p384 --revoke 0A -o fault.out
				fi
				FAULTMOD_TARGET=$SOFTHSM_MODULE FAULTMOD_STATS=$W/fault.stats \
					FAULTMOD_SPEC="*:nth=$k:rv=$rv" "$HSMWRAP" --module "$FAULTMOD" "$@" \
					>/dev/null 2>>faults.log
				st=$?
				n=$(sed -n 's/^injected //p' fault.stats 2>/dev/null)
				[ "${n:-0}" -eq 0 ] && break
				if [ $st -eq 0 ]; then
					if [ $cmd = sign ]; then
						"$OPENSSL" verify -CAfile root-ec-p384.pem fault.out >/dev/null 2>&1
					else
						"$OPENSSL" crl -in fault.out -CAfile root-ec-p384.pem -noout 2>&1 |
							grep -q 'verify OK'
					fi || { bad "ca $cmd, $rv at call $k: exit 0 but the output does not verify"; fails=$((fails + 1)); }
				elif [ -e fault.out ] || ls .hsmwrap.* >/dev/null 2>&1; then
					bad "ca $cmd, $rv at call $k: exit $st but a file was left"
					fails=$((fails + 1))
				fi
				k=$((k + 1))
			done
			[ $k -le 160 ] || bad "ca $cmd, $rv: still faulting at call 160"
			[ $fails -eq 0 ] && ok "ca $cmd with $rv at each of $((k - 1)) PKCS#11 calls: verified output or none"
		done
	done
else
	echo "SKIP: fault module not built"
fi

# ---------------------------------------------------------------------
# Destroying a CA key takes its certificate object with it: a certificate
# left on the token would name a key that is gone.

if expect "ca init of a key to destroy" 0 ca init --key gone-ca --type ec-p384 \
	--subject "/CN=Gone CA" -o "$W/gone.pem"; then
	[ "$(p11_count gone-ca)" -ge 3 ] && ok "key pair and certificate are on the token" ||
		bad "ca init left $(p11_count gone-ca) objects labelled gone-ca"
	expect "key destroy of the CA key" 0 key destroy gone-ca --yes
	[ "$(p11_count gone-ca)" -eq 0 ] && ok "key destroy removed the certificate too" ||
		bad "after key destroy, $(p11_count gone-ca) objects labelled gone-ca remain"
fi

# ---------------------------------------------------------------------

if grep -q 'Sanitizer\|runtime error' "$ALL" faults.log 2>/dev/null; then
	bad "sanitizer reports: $(grep -h -m3 'Sanitizer\|runtime error' "$ALL" faults.log 2>/dev/null)"
else
	ok "no sanitizer report in any run (faulted runs included)"
fi
if grep -q -- "$PIN" "$ALL"; then
	bad "the PIN appears in hsmwrap's output"
else
	ok "the PIN never appears in hsmwrap's output"
fi

echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
