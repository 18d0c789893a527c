/*
 * commands.c - the one table of commands, and everything generated from
 * it: `hsmwrap help`, `hsmwrap help CMD`, `CMD --help` and the man page.
 * Text here is plain; the roff writer below does all escaping.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define KEY_HELP "The key: its label, id:HEX (its CKA_ID), or a pkcs11: URI."
#define CONTEXT_HELP "Encryption context pair, bound to the result as authenticated data; " \
	"give it once per pair. Decryption needs exactly the same pairs, in any order. " \
	"The context is not secret (it is meant to be logged)."

static const struct cli_opt_spec no_opts[] = { { 0 } };

static const struct cli_opt_spec token_init_opts[] = {
	{ "label", 0, "L", CLI_OPT_REQUIRED, "Label of the new token (at most 32 bytes)." },
	{ "so-pin-source", 0, "SRC", 0,
	  "Where the new Security Officer PIN comes from: file:PATH, env:NAME or prompt "
	  "(default: prompt). The user PIN comes from the global --pin-source." },
	{ 0 }
};

static const struct cli_opt_spec key_create_opts[] = {
	{ "label", 0, "L", CLI_OPT_REQUIRED, "Label of the new key; it must not exist on the token yet." },
	{ "type", 0, "TYPE", CLI_OPT_REQUIRED,
	  "One of aes256, rsa2048, rsa3072, rsa4096, ec-p256, ec-p384, ec-p521, ed25519, "
	  "ed448, or rsa-pss-2048/3072/4096 (an RSA key the token lets sign with PSS only)." },
	{ "purpose", 0, "P", 0,
	  "envelope (AES-GCM for data keys; aes256 only), keywrap (AES key wrap with padding; "
	  "aes256 only), sign (rsa, ec and ed only), decrypt (RSA-OAEP, e.g. the private half of "
	  "an escrow recipient; rsa only) or derive (ECDH, e.g. openssl pkeyutl -derive and CMS "
	  "for EC recipients; ec-p* only). Default: envelope for aes256, sign otherwise." },
	{ "allow-raw-rsa", 0, NULL, 0,
	  "Decrypt keys only: also allow raw RSA, so a token without RSA-OAEP over SHA-2 "
	  "(SoftHSMv2) can unwrap OAEP-SHA256 data keys (the host checks the padding). Whoever "
	  "holds the PIN can then compute raw RSA with the key: use it only where the token "
	  "needs it." },
	{ "backupable", 0, NULL, 0,
	  "Allow `backup create` to back the key up: it is made extractable, but only by a "
	  "wrapping key the security officer marked trusted (CKA_WRAP_WITH_TRUSTED), never in "
	  "clear. Without it the key can never leave the HSM, not even in a backup." },
	{ 0 }
};

static const struct cli_opt_spec key_destroy_opts[] = {
	{ "yes", 0, NULL, CLI_OPT_CONFIRM,
	  "Confirm the destruction. Without it nothing is destroyed." },
	{ 0 }
};

static const struct cli_opt_spec datakey_generate_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REQUIRED, KEY_HELP " It must be an envelope key." },
	{ "context", 0, "K=V", CLI_OPT_REPEAT, CONTEXT_HELP },
	{ "plaintext-out", 0, "FILE", CLI_OPT_REQUIRED,
	  "Where to write the plaintext data key: 32 raw bytes, mode 0600." },
	{ "output", 'o', "WRAPPED", CLI_OPT_REQUIRED, "Where to write the wrapped data key." },
	{ 0 }
};

static const struct cli_opt_spec datakey_decrypt_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REQUIRED, KEY_HELP " It must be the key that wrapped the data key." },
	{ "context", 0, "K=V", CLI_OPT_REPEAT, CONTEXT_HELP },
	{ "input", 'i', "WRAPPED", CLI_OPT_REQUIRED, "The wrapped data key." },
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED,
	  "Where to write the plaintext data key: 32 raw bytes, mode 0600." },
	{ 0 }
};

static const struct cli_opt_spec wrap_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REQUIRED, KEY_HELP " It must be a keywrap key." },
	{ "input", 'i', "KEYFILE", CLI_OPT_REQUIRED,
	  "The key material to wrap: raw bytes, at most 4096." },
	{ "output", 'o', "WRAPPED", CLI_OPT_REQUIRED, "Where to write the wrapped key." },
	{ 0 }
};

static const struct cli_opt_spec unwrap_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REQUIRED, KEY_HELP " It must be the keywrap key that wrapped it." },
	{ "input", 'i', "WRAPPED", CLI_OPT_REQUIRED, "The wrapped key." },
	{ "output", 'o', "KEYFILE", CLI_OPT_REQUIRED,
	  "Where to write the unwrapped key material, mode 0600." },
	{ 0 }
};

static const struct cli_opt_spec help_opts[] = {
	{ "man", 0, NULL, 0, "Print the manual page (roff) instead." },
	{ 0 }
};

static const char *const ex_token_list[] = {
	"hsmwrap token list",
	"hsmwrap --module /usr/lib/softhsm/libsofthsm2.so --json token list",
	NULL
};
static const char *const ex_token_init[] = {
	"hsmwrap --pin-source file:user.pin token init --label prod --so-pin-source file:so.pin",
	NULL
};
static const char *const ex_key_create[] = {
	"hsmwrap --token pkcs11:token=prod key create --label app-kek --type aes256",
	"hsmwrap key create --label backup-kek --type aes256 --purpose keywrap",
	"hsmwrap key create --label release-signing --type ec-p256",
	NULL
};
static const char *const ex_key_list[] = {
	"hsmwrap key list",
	"hsmwrap --json key list",
	NULL
};
static const char *const ex_key_show[] = {
	"hsmwrap key show app-kek",
	"hsmwrap key show id:4f1a9c0e2b7d3a5566778899aabbccdd",
	"hsmwrap key show 'pkcs11:token=prod;object=app-kek'",
	NULL
};
static const char *const ex_key_destroy[] = {
	"hsmwrap key destroy old-kek --yes",
	NULL
};
static const struct cli_opt_spec key_export_ref_opts[] = {
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED,
	  "Where to write the key-reference PEM file. It holds the key's pkcs11: URI only: "
	  "no key material and no PIN." },
	{ 0 }
};
static const char *const ex_key_export_ref[] = {
	"hsmwrap key export-ref web-tls -o /etc/nginx/web-tls.key.pem",
	"# then, with the hsmwrap provider in openssl.cnf: ssl_certificate_key /etc/nginx/web-tls.key.pem;",
	NULL
};
static const char *const ex_datakey_generate[] = {
	"hsmwrap datakey generate --key app-kek --context app=billing --context env=prod --plaintext-out dk.bin -o dk.wrapped",
	"# use dk.bin, then delete it and keep dk.wrapped next to the data",
	NULL
};
static const char *const ex_datakey_decrypt[] = {
	"hsmwrap datakey decrypt --key app-kek --context env=prod --context app=billing -i dk.wrapped -o dk.bin",
	NULL
};
static const char *const ex_wrap[] = {
	"hsmwrap wrap --key backup-kek -i db-master.key -o db-master.key.wrapped",
	NULL
};
static const char *const ex_unwrap[] = {
	"hsmwrap unwrap --key backup-kek -i db-master.key.wrapped -o db-master.key",
	NULL
};
static const char *const ex_help[] = {
	"hsmwrap help key create",
	"hsmwrap help --man > hsmwrap.1",
	NULL
};

/* Envelope encryption of files and streams (cmd-envelope.c). */
static const struct cli_opt_spec encrypt_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REPEAT,
	  KEY_HELP " It must be an envelope key. Give it once per key: the data key is wrapped "
	  "by each, and any one of them can decrypt (e.g. a second key kept for disaster "
	  "recovery). At least one --key, --rsa-key or --rsa-recipient is needed." },
	{ "rsa-key", 0, "KEY", CLI_OPT_REPEAT,
	  "An RSA key pair on the token (e.g. `key create --type rsa3072 --purpose decrypt`): "
	  "the data key is also encrypted on the host to its public half, and `hsmwrap "
	  "decrypt` unwraps it with the private half in the HSM. Stored as the SDKs' Raw RSA "
	  "keyring stores it: provider id = --namespace, key name = the key's label." },
	{ "rsa-recipient", 0, "NAME=PEM", CLI_OPT_REPEAT,
	  "Offline escrow: the data key is also encrypted to this RSA public key (a PEM public "
	  "key or certificate file, 2048 bits or more), which needs no token. NAME is the key "
	  "name stored in the message: the private key's holder decrypts with any SDK's Raw "
	  "RSA keyring of that name, --namespace and --rsa-padding, or with `hsmwrap decrypt` "
	  "once the private key is on a token under the label NAME." },
	{ "rsa-padding", 0, "PAD", 0,
	  "Padding for --rsa-key and --rsa-recipient: oaep-sha256 (the default; MGF1 with the "
	  "same hash), oaep-sha1, oaep-sha384, oaep-sha512, or pkcs1 (PKCS#1 v1.5, legacy)." },
	{ "context", 0, "K=V", CLI_OPT_REPEAT,
	  "Encryption context pair, stored in the message header and authenticated with it; give "
	  "it once per pair. Keys starting with aws-crypto- are reserved. The context is not "
	  "secret: `hsmwrap inspect` shows it without a key." },
	{ "suite", 0, "SUITE", 0,
	  "0x0578 (AES-256-GCM, HKDF-SHA512, key commitment, ECDSA P-384 signature; the "
	  "default) or 0x0478 (the same without the signature), or their SDK names "
	  "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384 and AES_256_GCM_HKDF_SHA512_COMMIT_KEY." },
	{ "frame-length", 0, "N", 0,
	  "Plaintext bytes per frame, 1 to 4294967295 (default 4096). Decryption holds one "
	  "frame in memory." },
	{ "namespace", 0, "NS", 0,
	  "Key namespace stored as the provider id of the wrapped data keys (default "
	  "hsmwrap). Other SDKs name the same key by this namespace and the key's label." },
	{ "threads", 0, "N", 0,
	  "Threads that encrypt and decrypt frames, 1 to 256 (default: one per CPU). The output "
	  "is the same bytes whatever the count." },
	{ "input", 'i', "FILE", 0, "The plaintext; - (the default) reads standard input." },
	{ "output", 'o', "FILE", 0,
	  "Where to write the message; - (the default) writes standard output, which must not be "
	  "a terminal. A file appears only when the whole message is written." },
	{ 0 }
};

static const struct cli_opt_spec decrypt_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REPEAT,
	  KEY_HELP " Only these keys may decrypt (repeatable). Default: the key the message "
	  "names, if it is on the token." },
	{ "context", 0, "K=V", CLI_OPT_REPEAT,
	  "A pair the message's encryption context must hold with this value (repeatable); "
	  "other pairs may be present too. Without it any context is accepted: check the one "
	  "printed." },
	{ "namespace", 0, "NS", 0, "Key namespace of the HSM's wrapped data keys (default hsmwrap)." },
	{ "rsa-padding", 0, "PAD", 0,
	  "Padding of Raw RSA data keys (they do not record it): oaep-sha256, oaep-sha1, "
	  "oaep-sha384, oaep-sha512 (OAEP with MGF1 of the same hash) or pkcs1 (PKCS#1 v1.5). "
	  "Default: each in that order until one unwraps the data key; a wrong one fails "
	  "before any plaintext exists. Name it to try only that one (and to keep PKCS#1 v1.5 "
	  "out of it)." },
	{ "allow-legacy", 0, NULL, 0,
	  "Also decrypt messages without key commitment (version 1, suites 0x0014 to 0x0378): "
	  "the commitment policy require-encrypt-allow-decrypt. Default: refused." },
	{ "max-edks", 0, "N", 0,
	  "Refuse messages with more than N wrapped data keys before unwrapping any (default "
	  "16; 0 means no limit)." },
	{ "threads", 0, "N", 0,
	  "Threads that encrypt and decrypt frames, 1 to 256 (default: one per CPU). The output "
	  "is the same bytes whatever the count." },
	{ "input", 'i', "FILE", 0, "The message; - (the default) reads standard input." },
	{ "output", 'o', "FILE", 0,
	  "Where to write the plaintext (mode 0600); - (the default) writes standard output. A "
	  "file appears only after the whole message authenticated, signature included." },
	{ 0 }
};

static const char *const ex_encrypt[] = {
	"hsmwrap encrypt --key app-kek --context app=billing -i report.pdf -o report.pdf.enc",
	"# two keys: either one decrypts; a smaller, unsigned message",
	"hsmwrap encrypt --key app-kek --key dr-kek --suite 0x0478 -i db.dump -o db.dump.enc",
	"tar c data/ | hsmwrap encrypt --key app-kek > data.tar.enc",
	"# also to an escrow officer's RSA public key, decryptable by any SDK's Raw RSA keyring",
	"hsmwrap encrypt --key app-kek --rsa-recipient escrow-2026=escrow.pem -i db.dump -o db.enc",
	"# only to an RSA key pair on the token",
	"hsmwrap encrypt --rsa-key archive-rsa -i db.dump -o db.enc",
	NULL
};
static const char *const ex_decrypt[] = {
	"hsmwrap decrypt --context app=billing -i report.pdf.enc -o report.pdf",
	"hsmwrap decrypt --key app-kek < data.tar.enc | tar x",
	"# a message of another SDK's Raw RSA keyring (key name rsa-archive) in namespace acme",
	"hsmwrap decrypt --namespace acme --rsa-padding oaep-sha512 -i msg.enc -o msg",
	NULL
};
static const char *const ex_inspect[] = {
	"hsmwrap inspect report.pdf.enc",
	"hsmwrap --json inspect - < data.tar.enc",
	NULL
};

static const struct cli_opt_spec ca_init_opts[] = {
	{ "key", 0, "L", CLI_OPT_REQUIRED,
	  "Label of the new CA key; it must not exist on the token yet." },
	{ "type", 0, "TYPE", CLI_OPT_REQUIRED,
	  "rsa3072, rsa4096 or ec-p384. RSA keys sign with PKCS#1 v1.5 and SHA-256, "
	  "P-384 keys with ECDSA and SHA-384." },
	{ "subject", 0, "DN", CLI_OPT_REQUIRED,
	  "Subject (and issuer) name as openssl -subj takes it, e.g. "
	  "\"/C=DE/O=Example/CN=Example Root CA\"; a backslash escapes the next character." },
	{ "days", 0, "N", 0, "Validity in days from now (default 3650)." },
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED, "Where to write the certificate (PEM)." },
	{ 0 }
};

static const struct cli_opt_spec ca_sign_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REQUIRED, KEY_HELP " It must be the CA's key." },
	{ "ca-cert", 0, "FILE", 0,
	  "The CA certificate (PEM or DER); it must hold the key's public half and allow "
	  "certificate signing. Default: the certificate stored on the token next to the key." },
	{ "csr", 0, "FILE", CLI_OPT_REQUIRED,
	  "The certificate request (PKCS#10, PEM or DER). Its signature is checked; only its "
	  "subject and public key are used, never the extensions it asks for." },
	{ "profile", 0, "P", 0,
	  "intermediate (CA:TRUE, pathlen:0, keyCertSign and cRLSign), tls-server "
	  "(serverAuth, needs --san) or tls-client (clientAuth). Default: tls-server." },
	{ "san", 0, "NAMES", CLI_OPT_REPEAT,
	  "Subject alternative names, comma-separated: DNS:NAME, IP:ADDRESS, email:ADDRESS, "
	  "URI:URI. At least one DNS: or IP: name for tls-server." },
	{ "days", 0, "N", 0,
	  "Validity in days from now (default 365); it may not end after the CA certificate." },
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED, "Where to write the certificate (PEM)." },
	{ 0 }
};

static const struct cli_opt_spec ca_crl_opts[] = {
	{ "key", 0, "KEY", CLI_OPT_REQUIRED, KEY_HELP " It must be the CA's key." },
	{ "ca-cert", 0, "FILE", 0,
	  "The CA certificate (PEM or DER); it must hold the key's public half and allow CRL "
	  "signing. Default: the certificate stored on the token next to the key." },
	{ "revoke", 0, "SERIAL", CLI_OPT_REPEAT,
	  "Serial number of a revoked certificate, in hex as openssl x509 -serial prints it. "
	  "Give it once per certificate. Each CRL lists every revoked certificate: repeat "
	  "earlier revocations too." },
	{ "days", 0, "N", 0, "Days until the next update (default 30)." },
	{ "crl-number", 0, "N", 0,
	  "The CRL number (default: the current UNIX time, so that later CRLs have larger "
	  "numbers without any state kept)." },
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED, "Where to write the CRL (PEM)." },
	{ 0 }
};

static const char *const ex_ca_init[] = {
	"hsmwrap ca init --key root-ca --type ec-p384 --subject \"/O=Example/CN=Example Root CA\" "
	"--days 7300 -o root.pem",
	NULL
};
static const char *const ex_ca_sign[] = {
	"hsmwrap ca sign --key root-ca --ca-cert root.pem --csr sub.csr --profile intermediate "
	"--days 1825 -o sub.pem",
	"hsmwrap ca sign --key root-ca --csr www.csr --san DNS:www.example.com,DNS:example.com "
	"-o www.pem",
	NULL
};
static const char *const ex_ca_crl[] = {
	"hsmwrap ca crl --key root-ca --ca-cert root.pem --revoke 5A1B2C3D4E5F60718293A4B5C6D7E8F9 "
	"-o root.crl",
	NULL
};

static const struct cli_opt_spec audit_init_opts[] = {
	{ "key", 0, "L", CLI_OPT_REQUIRED,
	  "Label of the audit signing key to create in the token (EC, sign only, not "
	  "extractable)." },
	{ "curve", 0, "C", 0, "p256 (default) or p384." },
	{ "existing", 0, NULL, 0, "Use the existing sign key L instead of creating it." },
	{ "pubkey-out", 0, "PEM", 0,
	  "Also write the audit key's public key here, for auditors without HSM access." },
	{ 0 }
};
static const struct cli_opt_spec audit_verify_opts[] = {
	{ "key", 0, "L", 0,
	  "Audit key in the token whose public key checks the digests. Default: "
	  "--audit-key, else the key the log names." },
	{ "pubkey", 0, "PEM", 0,
	  "Check the digests with this public key file instead (no HSM needed)." },
	{ "strict", 0, NULL, 0,
	  "Fail (exit 5) when records follow the last signed digest." },
	{ 0 }
};
static const struct cli_opt_spec audit_show_opts[] = {
	{ "key", 0, "L", 0, "Only records about this key (label or id:HEX)." },
	{ "since", 0, "TIME", 0, "Only records at or after TIME (UTC, e.g. 2026-11-29 or "
	  "2026-11-29T22:00)." },
	{ "until", 0, "TIME", 0, "Only records up to TIME (UTC, inclusive as a prefix)." },
	{ "action", 0, "A", 0, "Only records of this action, e.g. \"key create\"." },
	{ 0 }
};
static const struct cli_opt_spec audit_digest_opts[] = {
	{ "key", 0, "L", 0, "Audit key. Default: --audit-key, else the key the log names." },
	{ 0 }
};
static const char *const ex_audit_init[] = {
	"hsmwrap audit init --key audit-2026 --pubkey-out audit-2026.pub.pem /var/log/hsmwrap/audit.jsonl",
	"# then in hsmwrap.conf: audit_log = /var/log/hsmwrap/audit.jsonl",
	NULL
};
static const char *const ex_audit_verify[] = {
	"hsmwrap audit verify /var/log/hsmwrap/audit.jsonl",
	"hsmwrap audit verify --pubkey audit-2026.pub.pem --strict audit.jsonl",
	NULL
};
static const char *const ex_audit_show[] = {
	"hsmwrap audit show --key app-kek --since 2026-11-01 audit.jsonl",
	"hsmwrap --json audit show --action \"key destroy\" audit.jsonl",
	NULL
};
static const char *const ex_audit_digest[] = {
	"hsmwrap audit digest /var/log/hsmwrap/audit.jsonl",
	NULL
};

#define KEYRING_HELP "The keyring file of table keys. Changes replace it atomically " \
	"(temporary file, fsync, rename), under a lock on KEYRING.lock."
static const struct cli_opt_spec tde_init_opts[] = {
	{ "label", 0, "L", CLI_OPT_REQUIRED,
	  "Label of the new master key (AES-256, envelope purpose, not extractable), e.g. "
	  "ORACLE.TDE.HSM.MK.1." },
	{ 0 }
};
static const struct cli_opt_spec tde_add_opts[] = {
	{ "keyring", 'f', "KEYRING", CLI_OPT_REQUIRED, KEYRING_HELP },
	{ "key", 0, "L", 0, "The master key. Needed to create a new keyring; for an existing "
	  "one it must be the keyring's master key." },
	{ "id", 0, "N", CLI_OPT_REQUIRED,
	  "Table key id (0 to 4294967295). A new id gets version 1; an existing one a new "
	  "version, and older versions stay readable." },
	{ 0 }
};
static const struct cli_opt_spec tde_list_opts[] = {
	{ "keyring", 'f', "KEYRING", CLI_OPT_REQUIRED, KEYRING_HELP },
	{ 0 }
};
static const struct cli_opt_spec tde_rekey_opts[] = {
	{ "keyring", 'f', "KEYRING", CLI_OPT_REQUIRED, KEYRING_HELP },
	{ "new-key", 0, "L", CLI_OPT_REQUIRED,
	  "The new master key (an AES-256 envelope key, e.g. made by `tde init`)." },
	{ 0 }
};
static const struct cli_opt_spec tde_get_opts[] = {
	{ "keyring", 'f', "KEYRING", CLI_OPT_REQUIRED, KEYRING_HELP },
	{ "id", 0, "N", CLI_OPT_REQUIRED, "Table key id." },
	{ "version", 0, "V", 0, "Version (default: the latest)." },
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED,
	  "Where to write the 32-byte table key in plaintext, mode 0600." },
	{ 0 }
};
static const char *const ex_tde_init[] = {
	"hsmwrap tde init --label ORACLE.TDE.HSM.MK.1",
	NULL
};
static const char *const ex_tde_add[] = {
	"hsmwrap tde keyring add -f /var/lib/db/tde.keyring --key ORACLE.TDE.HSM.MK.1 --id 1",
	"hsmwrap tde keyring add -f /var/lib/db/tde.keyring --id 1   # version 2 of table key 1",
	NULL
};
static const char *const ex_tde_list[] = {
	"hsmwrap tde keyring list -f /var/lib/db/tde.keyring",
	NULL
};
static const char *const ex_tde_rekey[] = {
	"hsmwrap tde init --label ORACLE.TDE.HSM.MK.2",
	"hsmwrap tde keyring rekey -f /var/lib/db/tde.keyring --new-key ORACLE.TDE.HSM.MK.2",
	NULL
};
static const char *const ex_tde_get[] = {
	"hsmwrap tde keyring get -f /var/lib/db/tde.keyring --id 1 -o table1.key",
	NULL
};

/* Key lifecycle (issue 5). */
static const struct cli_opt_spec key_list_opts[] = {
	{ "tag", 0, "K=V", CLI_OPT_REPEAT,
	  "Only keys with this tag (K=V), or with tag K whatever its value (K); give it once "
	  "per tag, all must match." },
	{ "state", 0, "STATE", 0, "Only keys in this state: enabled, disabled or pending-deletion." },
	{ "type", 0, "TYPE", 0, "Only keys of this type, e.g. aes256 or ec-p256." },
	{ 0 }
};
static const struct cli_opt_spec key_schedule_deletion_opts[] = {
	{ "days", 0, "N", 0, "Waiting period in days, 7 to 30 (default 30)." },
	{ 0 }
};
static const struct cli_opt_spec key_tag_opts[] = {
	{ "remove", 0, "K", CLI_OPT_REPEAT, "Remove tag K; give it once per tag." },
	{ 0 }
};
static const struct cli_opt_spec key_describe_opts[] = {
	{ "description", 0, "TEXT", CLI_OPT_REQUIRED,
	  "The key's description (at most 8192 bytes; \"\" clears it). Not secret: do not "
	  "put secrets in it." },
	{ 0 }
};
static const char *const ex_key_rotate[] = {
	"hsmwrap key rotate app-kek",
	"# new data is protected by version 2 (app-kek#2); data made with version 1 still decrypts",
	NULL
};
static const char *const ex_key_disable[] = { "hsmwrap key disable app-kek", NULL };
static const char *const ex_key_enable[] = { "hsmwrap key enable app-kek", NULL };
static const char *const ex_key_schedule_deletion[] = {
	"hsmwrap key schedule-deletion old-kek --days 7", NULL
};
static const char *const ex_key_cancel_deletion[] = {
	"hsmwrap key cancel-deletion old-kek", "hsmwrap key enable old-kek", NULL
};
static const char *const ex_key_purge[] = {
	"hsmwrap key purge", "hsmwrap key purge old-kek", NULL
};
static const char *const ex_key_tag[] = {
	"hsmwrap key tag app-kek env=prod owner=billing",
	"hsmwrap key tag app-kek --remove owner",
	"hsmwrap key list --tag env=prod --state enabled",
	NULL
};
static const char *const ex_key_describe[] = {
	"hsmwrap key describe app-kek --description 'KEK of the billing database'", NULL
};

/* ---- key import (BYOK, custodian components), backup and restore ---- */
static const struct cli_opt_spec key_import_params_opts[] = {
	{ "label", 0, "L", CLI_OPT_REQUIRED, "Label of the new RSA-3072 import key pair." },
	{ "output", 'o', "PEM", 0,
	  "Where to write the import public key (PEM SubjectPublicKeyInfo) for the key owner. "
	  "Default: import-pub.pem." },
	{ 0 }
};
static const struct cli_opt_spec key_import_opts[] = {
	{ "label", 0, "L", CLI_OPT_REQUIRED, "Label of the imported key; it must not exist yet." },
	{ "import-key", 0, "KEY", CLI_OPT_REQUIRED,
	  "The import key made by `key import-params` (label, id:HEX or pkcs11: URI)." },
	{ "wrapped", 0, "FILE", CLI_OPT_REQUIRED, "The key material wrapped by the owner." },
	{ "type", 0, "TYPE", 0, "Type of the imported key: aes256 (the default and only one)." },
	{ "purpose", 0, "P", 0, "envelope (default) or keywrap." },
	{ "padding", 0, "PAD", 0,
	  "oaep-sha256 (default: RSA-OAEP with SHA-256 and MGF1-SHA-256), rsa-aes-kwp "
	  "(RSA-OAEP-SHA-256 of a temporary AES key followed by the key wrapped with it by "
	  "AES-KWP, RFC 5649), or oaep-sha1 / rsa-aes-kwp-sha1, the same with SHA-1 in OAEP, "
	  "for tokens that unwrap with no other OAEP hash (SoftHSMv2)." },
	{ 0 }
};
static const struct cli_opt_spec key_import_components_opts[] = {
	{ "label", 0, "L", CLI_OPT_REQUIRED, "Label of the imported key; it must not exist yet." },
	{ "count", 0, "N", CLI_OPT_REQUIRED, "Number of custodians (components), 2 to 16." },
	{ "component-file", 0, "FILE", CLI_OPT_REPEAT,
	  "A custodian's component, 64 hex digits (spaces allowed); once per custodian, in "
	  "order. Without it each custodian is asked on the terminal without echo and "
	  "confirms the component's KCV." },
	{ "type", 0, "TYPE", 0, "Type of the imported key: aes256 (the default and only one)." },
	{ "purpose", 0, "P", 0, "envelope (default) or keywrap." },
	{ 0 }
};
static const struct cli_opt_spec backup_create_opts[] = {
	{ "keys", 0, "L1,L2,...", CLI_OPT_REQUIRED,
	  "Labels of the keys to back up, comma-separated; each must have been created with "
	  "--backupable." },
	{ "custodians", 0, "N", CLI_OPT_REQUIRED, "Number of shares (custodians), 2 to 255." },
	{ "threshold", 0, "M", CLI_OPT_REQUIRED,
	  "Shares needed to restore, 2 to N. Fewer reveal nothing about the backup key." },
	{ "output", 'o', "FILE", CLI_OPT_REQUIRED, "Where to write the backup file." },
	{ "share-dir", 0, "DIR", CLI_OPT_REQUIRED,
	  "Directory for the share files share-1.txt ... share-N.txt (mode 0600), one to "
	  "hand to each custodian. Created with mode 0700 when missing (its parent must "
	  "exist)." },
	{ "so-pin-source", 0, "SRC", 0,
	  "Where the Security Officer PIN comes from (file:PATH, env:NAME or prompt; default "
	  "prompt): only the SO may mark the backup key CKA_TRUSTED." },
	{ 0 }
};
static const struct cli_opt_spec backup_restore_opts[] = {
	{ "input", 'i', "FILE", CLI_OPT_REQUIRED, "The backup file." },
	{ "share", 0, "FILE", CLI_OPT_REQUIRED | CLI_OPT_REPEAT,
	  "A custodian's share file; at least the backup's threshold of them." },
	{ "backupable", 0, NULL, 0,
	  "Keep the restored keys backup-able (extractable only by a trusted wrapping key). "
	  "Default: restored keys are not extractable at all." },
	{ 0 }
};
static const char *const ex_key_import_params[] = {
	"hsmwrap key import-params --label byok-import -o import-pub.pem",
	"# the key owner: openssl pkeyutl -encrypt -pubin -inkey import-pub.pem -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -in key.bin -out key.wrapped",
	NULL
};
static const char *const ex_key_import[] = {
	"hsmwrap key import --label app-kek --import-key byok-import --wrapped key.wrapped",
	NULL
};
static const char *const ex_key_import_components[] = {
	"hsmwrap key import-components --label zmk --count 3 --purpose keywrap",
	"hsmwrap key import-components --label zmk --count 2 --component-file c1.txt --component-file c2.txt",
	NULL
};
static const char *const ex_backup_create[] = {
	"hsmwrap backup create --keys app-kek,db-kek --custodians 5 --threshold 3 -o keys.hwb --share-dir shares --so-pin-source prompt",
	NULL
};
static const char *const ex_backup_restore[] = {
	"hsmwrap --token pkcs11:token=dr backup restore -i keys.hwb --share share-1.txt --share share-4.txt --share share-5.txt",
	NULL
};
static const char *const ex_backup_show[] = {
	"hsmwrap backup show keys.hwb",
	NULL
};

const struct cli_cmd cli_commands[] = {
	{ "token list", NULL, 0, 0, 0,
	  "List modules, slots and tokens, and what each token can do",
	  "Lists every PKCS#11 module registered with p11-kit, or only the module named by "
	  "--module (or HSMWRAP_MODULE or the config file), with its slots and tokens. For each "
	  "token it shows whether hsmwrap can use it and which capabilities (mechanisms) are "
	  "missing. A module that cannot be loaded is reported and the listing goes on, unless "
	  "it was named explicitly. No login is needed.",
	  no_opts, ex_token_list, cmd_token_list },
	{ "token init", NULL, 0, 0, 0,
	  "Initialise a token and set its PINs",
	  "Initialises the first slot of the module that has no initialised token, gives the "
	  "token the label L and sets the Security Officer PIN and the user PIN. The SO PIN "
	  "comes from --so-pin-source, the user PIN from the global --pin-source; both default "
	  "to prompt, which asks twice. --token is not used. Initialising a token erases "
	  "whatever the slot held.",
	  token_init_opts, ex_token_init, cmd_token_init },
	{ "key create", NULL, 0, 0, 0,
	  "Generate a key (or key pair) inside the token",
	  "Generates a key inside the token: sensitive, not extractable, with a fresh random "
	  "CKA_ID and only the usage flags of its purpose. Prints a transcript for the key "
	  "ceremony records: date, module, token, label, type, purpose, ID, URI and the key check value (AES) or "
	  "the SHA-256 fingerprint of the public key (RSA, EC). A purpose that does not fit "
	  "the type is refused.",
	  key_create_opts, ex_key_create, cmd_key_create },
	{ "key list", NULL, 0, 0, 0,
	  "List the keys on the token",
	  "Lists the secret keys and key pairs on the token with type, purpose, ID and key "
	  "check value or fingerprint.",
	  key_list_opts, ex_key_list, cmd_key_list },
	{ "key show", "KEY", 1, 1, 0,
	  "Show all attributes of one key",
	  "Shows one key: label, ID, type, size, purpose, URI, the key check value with the "
	  "algorithm that produced it, and its PKCS#11 security and usage attributes as the "
	  "token reports them. " "KEY is a label, id:HEX or a pkcs11: URI.",
	  no_opts, ex_key_show, cmd_key_show },
	{ "key destroy", "KEY", 1, 1, 0,
	  "Destroy a key on the token (needs --yes)",
	  "Destroys the key (both halves of a key pair) on the token. Everything wrapped or "
	  "encrypted with it becomes unrecoverable unless a backup of the token exists, so the "
	  "command refuses to run without --yes. KEY is a label, id:HEX or a pkcs11: URI.",
	  key_destroy_opts, ex_key_destroy, cmd_key_destroy },
	{ "key export-ref", "KEY", 1, 1, 0,
	  "Write a key-reference file for the OpenSSL provider",
	  "Writes a PEM file (BEGIN HSMWRAP KEY REFERENCE) that names an RSA or EC key pair by "
	  "its pkcs11: URI, for software that reads a private-key file (nginx, openssl -key) "
	  "through the hsmwrap OpenSSL provider. The key stays in the HSM; the file holds no "
	  "key material and no PIN. KEY is a label, id:HEX or a pkcs11: URI.",
	  key_export_ref_opts, ex_key_export_ref, cmd_key_export_ref },
	{ "key rotate", "KEY", 1, 1, CLI_CMD_CEREMONY,
	  "Make a new version of a key, used from now on",
	  "Generates a new version of the key inside the token with the same type, purpose and "
	  "attributes (sensitive, not extractable), labelled LABEL#N with its own CKA_ID, and "
	  "makes it the current version: encryption, data keys, wrapping and signing use it "
	  "from now on. Older versions stay on the token and keep decrypting and unwrapping "
	  "what they protected (blobs and messages name the version they used). Prints a "
	  "transcript with the new version's URI and key check value. The key must be enabled.",
	  no_opts, ex_key_rotate, cmd_key_rotate },
	{ "key disable", "KEY", 1, 1, 0,
	  "Disable a key: every use fails until it is enabled",
	  "Marks the logical key (all its versions) disabled in its metadata on the token. Every "
	  "operation with it then fails with \"key disabled\" (exit status 7), in this tool and "
	  "in every application using libhsmwrap.",
	  no_opts, ex_key_disable, cmd_key_disable },
	{ "key enable", "KEY", 1, 1, 0,
	  "Enable a disabled key again",
	  "Marks a disabled key enabled. A key pending deletion must have its deletion "
	  "cancelled first.",
	  no_opts, ex_key_enable, cmd_key_enable },
	{ "key schedule-deletion", "KEY", 1, 1, 0,
	  "Schedule the destruction of a key after a waiting period",
	  "Puts the key in the pending-deletion state for --days days (7 to 30, default 30). "
	  "Every use fails meanwhile; `key cancel-deletion` keeps the key. After the period the "
	  "key (all its versions and its metadata) is destroyed by `key purge` or at its next "
	  "use.",
	  key_schedule_deletion_opts, ex_key_schedule_deletion, cmd_key_schedule_deletion },
	{ "key cancel-deletion", "KEY", 1, 1, 0,
	  "Cancel a scheduled deletion (the key stays disabled)",
	  "Takes a key out of the pending-deletion state. As in AWS KMS the key is then "
	  "disabled: enable it with `key enable` to use it again.",
	  no_opts, ex_key_cancel_deletion, cmd_key_cancel_deletion },
	{ "key purge", "[KEY]", 0, 1, 0,
	  "Destroy keys whose deletion date has passed",
	  "Destroys every key whose deletion waiting period is over, with all its versions and "
	  "its metadata, or only KEY (a label), which must be pending deletion with its period "
	  "over.",
	  no_opts, ex_key_purge, cmd_key_purge },
	{ "key tag", "KEY [K=V...]", 1, 51, 0,
	  "Set or remove tags of a key",
	  "Sets the tags K=V (replacing the value of a tag K already there) and removes the tags "
	  "named by --remove. A key has at most 50 tags; keys are 1 to 128 bytes without '=', "
	  "values at most 256 bytes. Tags are not secret.",
	  key_tag_opts, ex_key_tag, cmd_key_tag },
	{ "key describe", "KEY", 1, 1, 0,
	  "Set the description of a key",
	  "Stores a description of the key in its metadata on the token.",
	  key_describe_opts, ex_key_describe, cmd_key_describe },
	{ "datakey generate", NULL, 0, 0, 0,
	  "Create a data key, plaintext and wrapped by an envelope key",
	  "Creates a 256-bit data key from the token's random number generator and writes it "
	  "twice: in plaintext (for immediate use, mode 0600) and encrypted inside the token "
	  "with AES-256-GCM under an envelope key, with the encryption context as authenticated "
	  "data. Keep the wrapped copy with the data it protects; delete the plaintext copy "
	  "after use.",
	  datakey_generate_opts, ex_datakey_generate, cmd_datakey_generate },
	{ "datakey decrypt", NULL, 0, 0, 0,
	  "Recover a plaintext data key from its wrapped form",
	  "Decrypts a wrapped data key inside the token and writes the 32-byte plaintext key "
	  "with mode 0600. It fails when the input was altered, was wrapped by another key, or "
	  "the encryption context differs from the one given at generation.",
	  datakey_decrypt_opts, ex_datakey_decrypt, cmd_datakey_decrypt },
	{ "wrap", NULL, 0, 0, 0,
	  "Wrap key material with a keywrap key",
	  "Wraps a file of key material (raw bytes) inside the token with AES key wrap with "
	  "padding (RFC 5649) under a keywrap key, for backup or transport.",
	  wrap_opts, ex_wrap, cmd_wrap },
	{ "unwrap", NULL, 0, 0, 0,
	  "Recover key material wrapped by `wrap`",
	  "Unwraps key material wrapped by `hsmwrap wrap` and writes it with mode 0600. It "
	  "fails when the input was altered or wrapped by another key.",
	  unwrap_opts, ex_unwrap, cmd_unwrap },
	{ "encrypt", NULL, 0, 0, 0,
	  "Encrypt a file or stream for one or more HSM keys (AWS Encryption SDK format)",
	  "Encrypts a file or stream of any size, in bounded memory, into an AWS Encryption SDK "
	  "message (version 2, key commitment) that the SDK's Java, Python, JavaScript, C, .NET "
	  "and CLI implementations can also decrypt given the same key. A fresh data key is "
	  "drawn for each message and wrapped inside the HSM with AES-256-GCM by every --key, "
	  "and encrypted on the host to every --rsa-key and --rsa-recipient public key. "
	  "The output file is written to a temporary file in its directory and renamed into "
	  "place only when the message is complete; on any failure it is removed. Written to "
	  "standard output, the message streams out as it is made, and a failure leaves a "
	  "truncated message that decryption rejects.",
	  encrypt_opts, ex_encrypt, cmd_encrypt },
	{ "decrypt", NULL, 0, 0, 0,
	  "Decrypt an AWS Encryption SDK message with a key on the token",
	  "Decrypts a message made by `hsmwrap encrypt` or an AWS Encryption SDK with a Raw AES "
	  "keyring of the same key, or a Raw RSA keyring whose private key is on the token "
	  "(label = the keyring's key name; see --rsa-padding). The data key is unwrapped in "
	  "the HSM by the key the message names, which must be on the token (and among --key, if given). No plaintext "
	  "is released before it is authenticated: an output file is written under a temporary "
	  "name and renamed only after the whole message, footer signature included, verified; "
	  "on any failure nothing is left. On standard output, an unsigned message (0x0478) is "
	  "written frame by frame as each frame authenticates, so a message cut short gives a "
	  "failure after a correct prefix; a signed message (0x0578) is first spooled to an "
	  "unlinked mode-0600 file in $TMPDIR and written out only after its signature "
	  "verified. Exit 5 for a malformed, truncated or altered message, a wrong context, a "
	  "message for none of the --key keys, or more wrapped keys than --max-edks; exit 4 "
	  "when the message's keys are not on the token.",
	  decrypt_opts, ex_decrypt, cmd_decrypt },
	{ "inspect", "FILE", 1, 1, CLI_CMD_NO_SETTINGS,
	  "Show the header of an encrypted message without decrypting it",
	  "Prints the header of an AWS Encryption SDK message: format version, suite, key "
	  "commitment, signature, message ID, frame length, encryption context and the wrapped "
	  "data keys (provider id, key name, length). FILE - reads standard input. Nothing is "
	  "decrypted or authenticated, so no HSM and no PIN are needed: the header may have "
	  "been altered, and only decrypt can tell.",
	  no_opts, ex_inspect, cmd_inspect },
	{ "ca init", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Root-CA ceremony: CA key in the HSM and its self-signed certificate",
	  "Generates the CA key pair inside the token (sensitive, not extractable, sign only), "
	  "makes a self-signed X.509 v3 certificate for it (basicConstraints CA:TRUE and "
	  "keyUsage keyCertSign, cRLSign, both critical; subject and authority key identifiers; "
	  "a random 16-byte serial) signed inside the HSM, checks the signature, stores the "
	  "certificate on the token next to the key (same label and ID) and writes it as PEM. "
	  "Prints a transcript for the ceremony records: key URI and ID, public-key and "
	  "certificate SHA-256 fingerprints, subject, serial, validity. On any failure the new "
	  "key is destroyed again.",
	  ca_init_opts, ex_ca_init, cmd_ca_init },
	{ "ca sign", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Issue a certificate from a request with a CA key in the HSM",
	  "Checks the request's signature, then issues a certificate for its subject and public "
	  "key with the extensions of the profile (never those the request asks for), a random "
	  "16-byte serial and the CA's key identifier, signed inside the HSM. The CA certificate "
	  "must hold the key's public half. Prints a transcript.",
	  ca_sign_opts, ex_ca_sign, cmd_ca_sign },
	{ "ca crl", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Issue a certificate revocation list with a CA key in the HSM",
	  "Writes a version 2 CRL listing the given serials as revoked now, with a CRL number "
	  "and the CA's key identifier, signed inside the HSM. Prints a transcript.",
	  ca_crl_opts, ex_ca_crl, cmd_ca_crl },
	{ "key import-params", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Create an RSA-3072 import key for bring-your-own-key",
	  "Creates an RSA-3072 key pair in the token whose private half can only unwrap keys "
	  "(CKA_UNWRAP, not CKA_DECRYPT; sensitive, not extractable) and writes its public key "
	  "as PEM for the key owner, who wraps the key material with plain openssl pkeyutl "
	  "(RSA-OAEP with SHA-256). Prints a transcript.",
	  key_import_params_opts, ex_key_import_params, cmd_key_import_params },
	{ "key import", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Import key material wrapped to an import key",
	  "Unwraps key material wrapped by the owner to an import key, inside the token, into "
	  "a new sensitive, non-extractable key with the attributes of the purpose, and prints "
	  "a transcript with its KCV (AES-ECB of a zero block) for the owner to compare. A "
	  "blob that does not decrypt, or is not a 32-byte key, creates nothing.",
	  key_import_opts, ex_key_import, cmd_key_import },
	{ "key import-components", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Import a key from custodian components (XOR)",
	  "Reads one hex component per custodian (prompt without echo, or one file each), "
	  "shows each component's KCV for its custodian to confirm, XORs them in process "
	  "memory, imports the result as a sensitive, non-extractable key and shows its KCV. "
	  "Components of the wrong length, not hex, all zeros, duplicated, or combining to "
	  "zero are refused. Everything is wiped from memory afterwards.",
	  key_import_components_opts, ex_key_import_components, cmd_key_import_components },
	{ "backup create", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Back up keys under a backup key split among custodians (M of N)",
	  "Draws a 256-bit backup key, lets the security officer import it into the token as "
	  "a trusted wrap-only session object, wraps each listed backup-able key with it "
	  "inside the token (AES-KWP), destroys it, and splits it with Shamir's secret "
	  "sharing into N share files of which any M restore. The backup file records each "
	  "key's label, id, attributes, KCV and metadata and is authenticated.",
	  backup_create_opts, ex_backup_create, cmd_backup_create },
	{ "backup restore", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Restore the keys of a backup onto this token",
	  "Rebuilds the backup key from at least M shares, checks the backup file, and "
	  "unwraps every key into the token with its label, id, attributes and metadata, "
	  "comparing KCVs with the recorded ones. Fewer than M shares, a wrong share, shares of "
	  "another backup, a tampered file or a label that exists already: nothing is created.",
	  backup_restore_opts, ex_backup_restore, cmd_backup_restore },
	{ "backup show", "FILE", 1, 1, 0,
	  "List what a backup file holds (no shares needed)",
	  "Shows a backup file's id, threshold, custodians, date and keys (label, id, type, "
	  "KCV) without authenticating it: shares are needed for that.",
	  no_opts, ex_backup_show, cmd_backup_show },
	{ "help", "[COMMAND]", 0, 8, CLI_CMD_NO_SETTINGS,
	  "Show help for hsmwrap or one command",
	  "Shows the list of commands, or the options of one command. `hsmwrap COMMAND --help` "
	  "does the same.",
	  help_opts, ex_help, cmd_help },
	{ "audit init", "[LOG]", 0, 1, CLI_CMD_NO_AUDIT,
	  "Create the audit signing key and start an audit log",
	  "Generates an EC sign key in the token (not extractable) and starts a new audit "
	  "log at LOG (default: the configured --audit-log): a genesis record with a random "
	  "log id and the key's public key fingerprint, a record of this ceremony and a "
	  "signed digest. Prints a transcript. LOG must not exist yet.",
	  audit_init_opts, ex_audit_init, cmd_audit_init },
	{ "audit verify", "[LOG]", 0, 1, CLI_CMD_NO_AUDIT,
	  "Check an audit log's hash chain and digest signatures",
	  "Checks every record of the log: the genesis, the hash chain, the sequence numbers "
	  "and each signed digest. Edited, removed, reordered or inserted records are found "
	  "and the first bad record is named by line and seq (exit 5). Records after the last "
	  "signed digest are reported: they could have been cut or changed without trace "
	  "(--strict makes that an error). Keep the printed head hash elsewhere to detect a "
	  "log cut back later.",
	  audit_verify_opts, ex_audit_verify, cmd_audit_verify },
	{ "audit show", "[LOG]", 0, 1, CLI_CMD_NO_AUDIT,
	  "Show audit records, filtered by key, time or action",
	  "Prints the records of the log, one per line (or as JSON with --json), filtered by "
	  "key, time and action. It does not check integrity: use `audit verify` for that.",
	  audit_show_opts, ex_audit_show, cmd_audit_show },
	{ "audit digest", "[LOG]", 0, 1, CLI_CMD_NO_AUDIT,
	  "Append a signed digest to the audit log now",
	  "Signs the current chain hash with the audit key and appends it as a digest record, "
	  "so that every record so far is covered by a signature (e.g. before rotating or "
	  "archiving the log).",
	  audit_digest_opts, ex_audit_digest, cmd_audit_digest },
	{ "tde init", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Create a database (TDE) master key",
	  "Generates an AES-256 master key inside the token (sensitive, not extractable, "
	  "envelope purpose: it wraps table keys with AES-GCM in the HSM) and prints a "
	  "transcript with its ID, URI and key check value.",
	  tde_init_opts, ex_tde_init, cmd_tde_init },
	{ "tde keyring add", NULL, 0, 0, 0,
	  "Add a table key (or a new version of one) to a keyring",
	  "Creates a 32-byte table key from the token's random number generator, wraps it "
	  "inside the token under the keyring's master key with AES-256-GCM (the keyring id, "
	  "table key id and version are the authenticated data) and stores it in the keyring "
	  "file, which is created when it does not exist (then --key is needed).",
	  tde_add_opts, ex_tde_add, cmd_tde_keyring_add },
	{ "tde keyring list", NULL, 0, 0, 0,
	  "List the table keys of a keyring (no secrets)",
	  "Checks the keyring's integrity with its master key in the token and lists the "
	  "keyring id, the master key (label, ID, KCV) and every table key id and version.",
	  tde_list_opts, ex_tde_list, cmd_tde_keyring_list },
	{ "tde keyring rekey", NULL, 0, 0, CLI_CMD_CEREMONY,
	  "Re-wrap every table key under a new master key",
	  "Unwraps every table key in the token and wraps it again under the new master key; "
	  "the table keys themselves do not change, so no data needs re-encrypting. The file "
	  "is replaced atomically: a crash at any point leaves the old keyring (still usable "
	  "with the old master key) or the new one, never a broken one. Prints a transcript.",
	  tde_rekey_opts, ex_tde_rekey, cmd_tde_keyring_rekey },
	{ "tde keyring get", NULL, 0, 0, 0,
	  "Write one table key in plaintext (for the database)",
	  "Unwraps one table key in the token and writes the 32 plaintext bytes with mode "
	  "0600. A database plugin calls hw_tde_key_get() instead.",
	  tde_get_opts, ex_tde_get, cmd_tde_keyring_get },
};

const size_t cli_ncommands = sizeof(cli_commands) / sizeof(cli_commands[0]);

/* ------------------------------------------------------------------ */
/* Lookup                                                              */

/* How many leading words of argv spell `name` (all of it), else 0. */
static int name_words(const char *name, int argc, const char *const *argv)
{
	const char *p = name;

	for (int k = 0; k < argc; k++) {
		size_t l = strlen(argv[k]);

		if (l == 0 || strncmp(p, argv[k], l) != 0 || (p[l] != ' ' && p[l] != '\0'))
			return 0;
		if (p[l] == '\0')
			return k + 1;
		p += l + 1;
	}
	return 0;
}

/* The longest name wins, so "tde keyring add" is never a shorter command. */
const struct cli_cmd *cli_find_command(int argc, const char *const *argv, int *words)
{
	const struct cli_cmd *best = NULL;

	*words = 0;
	for (size_t i = 0; i < cli_ncommands; i++) {
		int n = name_words(cli_commands[i].name, argc, argv);

		if (n > *words) {
			*words = n;
			best = &cli_commands[i];
		}
	}
	return best;
}

int cli_is_family(const char *w)
{
	size_t l = strlen(w);

	for (size_t i = 0; i < cli_ncommands; i++)
		if (strncmp(cli_commands[i].name, w, l) == 0 && cli_commands[i].name[l] == ' ')
			return 1;
	return 0;
}

/* The first n words joined by spaces; 0, or -1 when they do not fit. */
static int join_words(int n, const char *const *argv, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int k = 0; k < n; k++) {
		int w = snprintf(buf + len, size - len, "%s%s", k ? " " : "", argv[k]);

		if (w < 0 || (size_t)w >= size - len)
			return -1;
		len += (size_t)w;
	}
	return 0;
}

int cli_find_family(int argc, const char *const *argv, char *buf, size_t size)
{
	int found = 0;

	for (int k = 1; k <= argc; k++) {
		if (join_words(k, argv, buf, size) != 0 || !cli_is_family(buf))
			break;
		found = k;
	}
	if (join_words(found, argv, buf, size) != 0)
		buf[0] = '\0';
	return found;
}

/* ------------------------------------------------------------------ */
/* Plain-text help                                                     */

static void option_name(char *buf, size_t n, const char *lname, int sname, const char *metavar)
{
	if (sname)
		snprintf(buf, n, "-%c, --%s%s%s", sname, lname, metavar ? " " : "",
		         metavar ? metavar : "");
	else
		snprintf(buf, n, "    --%s%s%s", lname, metavar ? " " : "", metavar ? metavar : "");
}

static void option_line(FILE *f, const char *name, const char *help)
{
	int col = fprintf(f, "  %s", name);

	if (col > 28) {
		fputc('\n', f);
		col = 0;
	}
	util_wrap(f, help, 30, (unsigned)col, 79);
}

void cli_help_overview(FILE *f)
{
	char name[96];

	fprintf(f, "Usage: %s [GLOBAL OPTIONS] COMMAND [OPTIONS]\n\n", PROG);
	util_wrap(f, "Keeps keys in a PKCS#11 hardware security module and uses them for "
	          "envelope encryption and key wrapping.", 0, 0, 79);
	fputs("\nGlobal options (before the command):\n", f);
	for (const struct cli_global_opt *g = cli_global_opts; g->name; g++) {
		option_name(name, sizeof(name), g->name, 0, g->metavar);
		option_line(f, name, g->help);
	}
	fputs("\nCommands:\n", f);
	for (size_t i = 0; i < cli_ncommands; i++) {
		const struct cli_cmd *c = &cli_commands[i];
		int col = fprintf(f, "  %s", c->name);

		util_wrap(f, c->summary, 22, (unsigned)(col > 20 ? 79 : col), 79);
	}
	fprintf(f, "\nRun '%s help COMMAND' for the options of a command.\n", PROG);
	fprintf(f, "Exit status: 0 ok, 1 failure, 2 usage, 3 authentication, 4 not found,\n"
	        "5 integrity, 6 HSM, 7 refused by policy (see '%s help --man').\n", PROG);
}

void cli_help_family(FILE *f, const char *family)
{
	size_t l = strlen(family);

	fprintf(f, "Commands of '%s':\n", family);
	for (size_t i = 0; i < cli_ncommands; i++) {
		const struct cli_cmd *c = &cli_commands[i];

		if (strncmp(c->name, family, l) != 0 || c->name[l] != ' ')
			continue;
		fputs("  ", f);
		cli_synopsis(f, c);
		fputc('\n', f);
		util_wrap(f, c->summary, 6, 0, 79);
	}
	fprintf(f, "Run '%s help %s SUBCOMMAND' for details.\n", PROG, family);
}

void cli_help_command(FILE *f, const struct cli_cmd *c)
{
	char name[96];

	fputs("Usage: ", f);
	cli_synopsis(f, c);
	fputs("\n\n", f);
	util_wrap(f, c->description, 0, 0, 79);
	if (c->opts[0].name) {
		fputs("\nOptions:\n", f);
		for (const struct cli_opt_spec *o = c->opts; o->name; o++) {
			option_name(name, sizeof(name), o->name, o->short_name, o->metavar);
			option_line(f, name, o->help);
		}
	}
	if (c->examples && c->examples[0]) {
		fputs("\nExamples:\n", f);
		for (const char *const *e = c->examples; *e; e++)
			fprintf(f, "  %s\n", *e);
	}
	fprintf(f, "\nGlobal options go before the command; see '%s help'.\n", PROG);
}

/* ------------------------------------------------------------------ */
/* Man page                                                            */

/* Plain text to roff: backslashes, hyphens, and control characters at line start. */
static void roff(FILE *f, const char *s)
{
	int bol = 1;

	for (; *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", f);
		bol = 0;
		switch (*s) {
		case '\\': fputs("\\e", f); break;
		case '-': fputs("\\-", f); break;
		case '\n': fputc('\n', f); bol = 1; break;
		default: fputc(*s, f);
		}
	}
}

static void roff_line(FILE *f, const char *macro, const char *text)
{
	fputs(macro, f);
	fputc(' ', f);
	roff(f, text);
	fputc('\n', f);
}

static void man_opt(FILE *f, const char *lname, int sname, const char *metavar, unsigned flags)
{
	fputs(".TP\n", f);
	if (sname)
		fprintf(f, "\\fB\\-%c\\fR, ", sname);
	fputs("\\fB\\-\\-", f);
	roff(f, lname);
	fputs("\\fR", f);
	if (metavar) {
		fputs(" \\fI", f);
		roff(f, metavar);
		fputs("\\fR", f);
	}
	if (flags & CLI_OPT_REPEAT)
		fputs(" ...", f);
	fputc('\n', f);
}

static void man_synopsis(FILE *f, const struct cli_cmd *c)
{
	fputs(".B hsmwrap\n.RI [ \"GLOBAL OPTIONS\" ]\n", f);
	fputs(".B ", f);
	roff(f, c->name);
	fputc('\n', f);
	if (c->args)
		roff_line(f, ".I", c->args);
	for (const struct cli_opt_spec *o = c->opts; o->name; o++) {
		int shown = (o->flags & (CLI_OPT_REQUIRED | CLI_OPT_CONFIRM)) != 0;

		fprintf(f, "%s\\fB", shown ? "" : "[");
		if (o->short_name)
			fprintf(f, "\\-%c", o->short_name);
		else {
			fputs("\\-\\-", f);
			roff(f, o->name);
		}
		fputs("\\fR", f);
		if (o->metavar) {
			fputs(" \\fI", f);
			roff(f, o->metavar);
			fputs("\\fR", f);
		}
		fprintf(f, "%s%s\n", shown ? "" : "]", (o->flags & CLI_OPT_REPEAT) ? "..." : "");
	}
}

static void man_command(FILE *f, const struct cli_cmd *c)
{
	roff_line(f, ".SS", c->name);
	fputs(".nh\n", f);
	man_synopsis(f, c);
	fputs(".hy\n.PP\n", f);
	roff(f, c->description);
	fputc('\n', f);
	for (const struct cli_opt_spec *o = c->opts; o->name; o++) {
		man_opt(f, o->name, o->short_name, o->metavar, o->flags);
		roff(f, o->help);
		fputc('\n', f);
	}
	if (c->examples && c->examples[0]) {
		fputs(".PP\nExamples:\n.RS\n.nf\n", f);
		for (const char *const *e = c->examples; *e; e++) {
			roff(f, *e);
			fputc('\n', f);
		}
		fputs(".fi\n.RE\n", f);
	}
}

static void man_para(FILE *f, const char *text)
{
	fputs(".PP\n", f);
	roff(f, text);
	fputc('\n', f);
}

static void man_header(FILE *f)
{
	fputs(".\\\" Generated by `hsmwrap help --man` from tools/commands.c; do not edit.\n", f);
	fprintf(f, ".TH HSMWRAP 1 \"\" \"hsmwrap %s\" \"User Commands\"\n", PACKAGE_VERSION);
	fputs(".SH NAME\nhsmwrap \\- keep keys in a PKCS#11 HSM and use them for envelope "
	      "encryption and key wrapping\n", f);
	fputs(".SH SYNOPSIS\n.B hsmwrap\n.RI [ \"GLOBAL OPTIONS\" ]\n.I COMMAND\n"
	      ".RI [ OPTIONS ]\n", f);
	fputs(".SH DESCRIPTION\n", f);
	roff(f, "hsmwrap keeps keys inside a PKCS#11 token (a hardware security module, or "
	     "SoftHSM for tests) and uses them there: it creates keys that never leave the token, "
	     "generates and unwraps data keys for envelope encryption (like a cloud KMS's "
	     "GenerateDataKey), and wraps key material for backup. Global options come before "
	     "the command, command options after it.");
	fputc('\n', f);
	man_para(f, "The module, token and PIN source are taken, in this order of precedence, "
	         "from the command-line option, the environment, the configuration file, and "
	         "the built-in default.");
	man_para(f, "Output files are written atomically: to a temporary file in the same "
	         "directory, flushed to disk and renamed into place. On any failure no output "
	         "file and no temporary file remains. An output may not be the input file.");
	man_para(f, "With --json every command prints exactly one JSON document on standard "
	         "output: {\"ok\":true,...} on success, and on failure "
	         "{\"ok\":false,\"error\":\"HW_ERR_...\",\"message\":\"...\",\"ckrv\":\"0x...\"}. "
	         "Errors are also written to standard error as "
	         "\"hsmwrap: WHAT FAILED: REASON (DETAIL)\".");
}

static void man_globals(FILE *f)
{
	fputs(".SH GLOBAL OPTIONS\n", f);
	for (const struct cli_global_opt *g = cli_global_opts; g->name; g++) {
		man_opt(f, g->name, 0, g->metavar, 0);
		roff(f, g->help);
		if (g->env) {
			fputs(" Environment: \\fB", f);
			roff(f, g->env);
			fputs("\\fR.", f);
		}
		fputc('\n', f);
	}
}

static void man_environment(FILE *f)
{
	fputs(".SH ENVIRONMENT\n", f);
	for (const struct cli_global_opt *g = cli_global_opts; g->name; g++) {
		if (!g->env)
			continue;
		fputs(".TP\n.B ", f);
		roff(f, g->env);
		fputs("\nDefault for \\fB\\-\\-", f);
		roff(f, g->name);
		fputs("\\fR when that option is not given. An empty value counts as unset.\n", f);
	}
	fputs(".TP\n.B SOFTHSM2_CONF\n", f);
	roff(f, "Configuration of the SoftHSM module, when that module is used; tests and demos "
	     "point it at a throw-away token directory.");
	fputc('\n', f);
}

static void man_files(FILE *f)
{
	fputs(".SH FILES\n.TP\n.I ", f);
	roff(f, SYSCONFDIR "/hsmwrap.conf");
	fputc('\n', f);
	roff(f, "Configuration: lines \"name = value\" with the names module, token and "
	     "pin-source; lines starting with # are comments. An unknown name is an error. "
	     "The file is optional; the installed example is hsmwrap.conf.example.");
	fputs("\n.TP\n.I /etc/pkcs11/modules/\n", f);
	roff(f, "p11-kit module registrations: the names --module accepts and the modules "
	     "\"token list\" shows.");
	fputc('\n', f);
}

static void man_exit_status(FILE *f)
{
	/* Long error names leave wide gaps in justified text. */
	fputs(".SH EXIT STATUS\n.ad l\n", f);
	for (const struct cli_exit_class *x = cli_exit_classes; x->meaning; x++) {
		fprintf(f, ".TP\n.B %d\n", x->code);
		roff(f, x->meaning);
		if (x->errs[0] != HW_OK) {
			fputs(" Errors: ", f);
			for (const hw_err *e = x->errs; *e != HW_OK; e++) {
				if (e != x->errs)
					fputs(", ", f);
				/* \% keeps groff from hyphenating the names. */
				fputs("\\%", f);
				roff(f, hw_errname(*e));
			}
			fputc('.', f);
		}
		fputc('\n', f);
	}
	fputs(".ad\n", f);
}

static void man_security(FILE *f)
{
	static const char *const paras[] = {
		"PINs are never accepted on the command line, where other users could read "
		"them in the process list. Use a file readable only by the key's user "
		"(file:PATH; hsmwrap warns when the file is readable by others), an environment "
		"variable (env:NAME; visible to processes of the same user), or the prompt, "
		"which reads from /dev/tty with echo off and fails when there is no terminal. "
		"\"token init\" asks for each new PIN twice.",
		"Keys created by hsmwrap are generated inside the token as sensitive and not "
		"extractable; only their usage flags differ by purpose, and a key is refused "
		"for operations of another purpose.",
		"The plaintext data key and unwrapped key material are secrets: they are written "
		"with mode 0600 and wiped from memory after use. Delete plaintext data keys as "
		"soon as they are no longer needed. The encryption context is not secret; it "
		"is meant to be logged.",
		"SoftHSM keeps keys in ordinary files and is meant for tests and demos only, "
		"not for production keys.",
		NULL
	};

	fputs(".SH SECURITY\n", f);
	for (const char *const *p = paras; *p; p++)
		man_para(f, *p);
}

void cli_man_page(FILE *f)
{
	man_header(f);
	man_globals(f);
	fputs(".SH COMMANDS\n", f);
	for (size_t i = 0; i < cli_ncommands; i++)
		man_command(f, &cli_commands[i]);
	man_environment(f);
	man_files(f);
	man_exit_status(f);
	man_security(f);
	fputs(".SH SEE ALSO\n.BR p11\\-kit (8),\n.BR pkcs11\\-tool (1),\n"
	      ".BR softhsm2\\-util (1)\n", f);
}

/* ------------------------------------------------------------------ */
/* `help` (also as JSON)                                              */

static int print_text(struct cli *cli, void (*fn)(FILE *, const void *), const void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	if (!cli->json) {
		fn(stdout, arg);
		return 0;
	}
	f = open_memstream(&text, &len);
	if (!f)
		return cli_failf(cli, HW_ERR_NOMEM, "help", "out of memory");
	fn(f, arg);
	fclose(f);
	cj_str(cli->out, "text", text);
	free(text);
	return 0;
}

static void text_overview(FILE *f, const void *arg)
{
	(void)arg;
	cli_help_overview(f);
}

static void text_command(FILE *f, const void *arg)
{
	cli_help_command(f, arg);
}

static void text_family(FILE *f, const void *arg)
{
	cli_help_family(f, arg);
}

static void text_man(FILE *f, const void *arg)
{
	(void)arg;
	cli_man_page(f);
}

int cmd_help(struct cli *cli, const struct cli_args *a)
{
	const struct cli_cmd *c;
	char name[256];
	int words = 0, n = (int)a->npos;

	if (cli_flag(a, "man"))
		return print_text(cli, text_man, NULL);
	if (n == 0)
		return print_text(cli, text_overview, NULL);
	/* Any number of words: "help key show", "help tde keyring add". */
	c = cli_find_command(n, a->pos, &words);
	if (c && words == n)
		return print_text(cli, text_command, c);
	if (cli_find_family(n, a->pos, name, sizeof(name)) == n)
		return print_text(cli, text_family, name);
	if (join_words(n, a->pos, name, sizeof(name)) != 0)
		snprintf(name, sizeof(name), "%s ...", a->pos[0]);
	return cli_usage(cli, a->cmd, "unknown command '%s'", name);
}

int cli_show_overview(struct cli *cli)
{
	return print_text(cli, text_overview, NULL);
}

int cli_show_family(struct cli *cli, const char *family)
{
	return print_text(cli, text_family, family);
}

int cli_show_command(struct cli *cli, const struct cli_cmd *c)
{
	return print_text(cli, text_command, c);
}
