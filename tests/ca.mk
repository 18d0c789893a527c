# Root-CA ceremony (issue 4): ca init/sign/crl against a real token, checked
# with openssl x509/verify/crl, s_server/s_client and pkcs11-tool.
EXTRA_DIST += tests/test-ca.sh
TESTS += tests/test-ca.sh
