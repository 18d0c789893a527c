#!/bin/sh
# esdk-vectors.sh: decrypts the AWS Encryption SDK test vectors and runs the
# key-commitment known-answer tests (issue 3). Run under tests/with-token.sh.
#
# The vector zips (the SDK's .NET decrypt manifests) and
# commitment_known_answer_tests.json are read from $ESDK_VECTORS_DIR
# (default: ../shared/vectors/esdk next to the source tree). python3 turns
# the JSON manifests into a flat list that tests/esdk-vectors (C) runs:
# every Raw AES and Raw RSA vector is decrypted with its key imported into
# the test token (RSA: the private key, sensitive and non-extractable, once
# per EDK the vector holds, with the padding the manifest names), every
# vector of an invalid-* set must fail, and vectors for keyrings hsmwrap
# cannot have (AWS KMS) are counted as skipped.
#
# Exit: 0 pass, 1 fail, 77 skipped (no vectors or no python3), 99 setup error.

set -u

: "${srcdir:=$(dirname "$0")/..}"
vecdir=${ESDK_VECTORS_DIR:-$srcdir/../shared/vectors/esdk}
runner=${ESDK_VECTORS_RUNNER:-./tests/esdk-vectors}

if [ ! -d "$vecdir" ]; then
	echo "esdk-vectors.sh: no vectors in $vecdir (set ESDK_VECTORS_DIR); skipping" >&2
	exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
	echo "esdk-vectors.sh: python3 is needed to read the JSON manifests; skipping" >&2
	exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/esdk-vectors.XXXXXXXX") || exit 99
trap 'rm -rf "$work"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

python3 - "$vecdir" "$work" >"$work/list" <<'EOF' || exit 99
import base64, json, os, sys, zipfile

vecdir, work = sys.argv[1], sys.argv[2]

def hx(b):
    return b.hex() if b else "-"

def ec_field(ec):
    # k=v pairs, each side hex, comma-separated ("-" for none)
    if not ec:
        return "-"
    return ",".join(hx(k.encode()) + "=" + hx(v.encode()) for k, v in ec.items())

def path_of(root, uri):
    assert uri.startswith("file://")
    return os.path.join(root, uri[len("file://"):])

for z in sorted(os.listdir(vecdir)):
    if not z.endswith(".zip"):
        continue
    name = z[:-4]
    root = os.path.join(work, name)
    with zipfile.ZipFile(os.path.join(vecdir, z)) as f:
        f.extractall(root)
    # Some zips hold one top-level folder.
    if not os.path.exists(os.path.join(root, "manifest.json")):
        subs = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
        if len(subs) == 1:
            root = os.path.join(root, subs[0])
    man = json.load(open(os.path.join(root, "manifest.json")))
    keys = json.load(open(path_of(root, man["keys"])))["keys"]
    invalid_set = name.startswith("invalid")
    for tid in sorted(man["tests"]):
        t = man["tests"][tid]
        ok = "output" in t["result"] and not invalid_set
        pt = path_of(root, t["result"]["output"]["plaintext"]) if "output" in t["result"] else "-"
        ct = path_of(root, t["ciphertext"])
        # The first master key hsmwrap can use; else the reason for skipping.
        kind, pid, kname, kmat = None, "-", "-", "-"
        for mk in t["master-keys"]:
            k = keys.get(mk.get("key"), {})
            if mk["type"] == "raw" and mk.get("encryption-algorithm") == "aes":
                kind, pid, kname = "aes", mk["provider-id"], k["key-id"]
                kmat = base64.b64decode(k["material"]).hex()
                break
        if kind is None and t["master-keys"][0].get("encryption-algorithm") == "rsa":
            # One line per RSA master key: the first is decrypted by searching
            # the token, the others (e.g. a public key's EDK) with only that
            # key allowed, so each padding the manifest names is exercised.
            for n, mk in enumerate(t["master-keys"]):
                if mk["type"] != "raw" or mk.get("encryption-algorithm") != "rsa":
                    continue
                k = keys[mk["key"]]
                if k["type"] == "public":
                    # The vectors' public keys are halves of the same-named private key.
                    k = keys.get(mk["key"].replace("public", "private"))
                    if k is None or k["type"] != "private":
                        continue
                pad = mk["padding-algorithm"]
                if pad == "oaep-mgf1":
                    pad = "oaep-" + mk["padding-hash"]
                body = "".join(l for l in k["material"].splitlines() if l and not l.startswith("-----"))
                print("VEC", name + "/" + tid, "ok" if ok else "fail",
                      "rsa:%s:%s" % (pad, "first" if n == 0 else "extra"),
                      hx(mk["provider-id"].encode()), hx(mk["key"].encode()),
                      base64.b64decode(body).hex(), ct, pt,
                      ec_field(t.get("encryption-context")), sep="\t")
            continue
        if kind is None:
            mk = t["master-keys"][0]
            if mk["type"] == "raw" and mk.get("encryption-algorithm") == "rsa":
                kind = "rsa"
            elif mk["type"] == "aws-kms":
                kind = "kms"
            else:
                kind = "other"
        print("VEC", name + "/" + tid, "ok" if ok else "fail", kind, hx(pid.encode()) if pid != "-" else "-",
              hx(kname.encode()) if kname != "-" else "-", kmat, ct, pt,
              ec_field(t.get("encryption-context")), sep="\t")

kat = os.path.join(vecdir, "commitment_known_answer_tests.json")
if os.path.exists(kat):
    j = json.load(open(kat))
    for i, t in enumerate(j["tests"]):
        b = lambda s: base64.b64decode(s) if s else b""
        pt = "".join(t.get("plaintext-frames", [])).encode()
        print("KAT", "kat-%02d" % (i + 1), "ok" if t["status"] else "fail",
              hx(b(t["decrypted-dek"])), hx(b(t["message-id"])), hx(b(t.get("commitment"))),
              hx(b(t.get("content-encryption-key"))), hx(b(t["ciphertext"])), hx(pt) if t["status"] else "-",
              ec_field(t.get("encryption-context")), sep="\t")
EOF

"$runner" "$work/list"
