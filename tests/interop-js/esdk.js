#!/usr/bin/env node
// The AWS Encryption SDK for JavaScript as hsmwrap's interop and benchmark
// peer. It holds the same 32-byte AES key that the SoftHSM token holds as a
// non-extractable key, in a RawAesKeyringNode (namespace "hsmwrap", name =
// the HSM key's label, utf8Sorting so that both sides order the encryption
// context by UTF-8 bytes as the specification says).
//
//   node esdk.js encrypt --key-file F --key-name L [--namespace NS]
//        [--suite 0xNNNN] [--frame-length N] [--context k=v]... -i IN -o OUT
//   node esdk.js decrypt --key-file F --key-name L [--namespace NS]
//        [--context k=v]... -i IN -o OUT
//        (--context on decrypt: these pairs must be in the message's context)
//   node esdk.js bench --key-file F --key-name L --size BYTES --suite 0xNNNN
//        [--frame-length N] [--rounds R] [--context k=v]...
//        encrypts and decrypts BYTES from memory (streamed in 1 MiB pieces,
//        output discarded), R times, and prints one JSON line with the
//        median MB/s (10^6 bytes per CPU second, as openssl speed counts).
//
// Exit status: 0 ok, 1 the SDK refused (bad message, wrong key, ...), 2 usage.
'use strict'

const fs = require('fs')
const { Readable, Writable } = require('stream')
const { pipeline } = require('stream/promises')
const {
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  buildClient,
} = require('@aws-crypto/client-node')

function usage (msg) {
  process.stderr.write(`esdk.js: ${msg}\n`)
  process.exit(2)
}

function parseArgs (argv) {
  const o = { context: {}, namespace: 'hsmwrap', frameLength: 4096, rounds: 3 }
  o.cmd = argv.shift()
  while (argv.length) {
    const a = argv.shift()
    const v = () => {
      if (!argv.length) usage(`${a} needs a value`)
      return argv.shift()
    }
    switch (a) {
      case '--key-file': o.keyFile = v(); break
      case '--key-name': o.keyName = v(); break
      case '--namespace': o.namespace = v(); break
      case '--suite': o.suite = parseInt(v(), 16); break
      case '--frame-length': o.frameLength = Number(v()); break
      case '--size': o.size = Number(v()); break
      case '--rounds': o.rounds = Number(v()); break
      case '--context': {
        const kv = v()
        const eq = kv.indexOf('=')
        if (eq <= 0) usage(`--context wants k=v, not '${kv}'`)
        o.context[kv.slice(0, eq)] = kv.slice(eq + 1)
        break
      }
      case '-i': o.input = v(); break
      case '-o': o.output = v(); break
      default: usage(`unknown option '${a}'`)
    }
  }
  if (!['encrypt', 'decrypt', 'bench'].includes(o.cmd)) usage('encrypt, decrypt or bench')
  if (!o.keyFile || !o.keyName) usage('--key-file and --key-name are required')
  if (o.suite !== undefined && !AlgorithmSuiteIdentifier[o.suite]) {
    usage(`unknown suite 0x${o.suite.toString(16)}`)
  }
  return o
}

function keyring (o) {
  const material = fs.readFileSync(o.keyFile)
  if (material.length !== 32) usage(`${o.keyFile}: want 32 bytes, have ${material.length}`)
  return new RawAesKeyringNode({
    keyName: o.keyName,
    keyNamespace: o.namespace,
    unencryptedMasterKey: new Uint8Array(material),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
    utf8Sorting: true,
  })
}

// Committing suites need a committing policy to encrypt, the legacy ones
// the policy that forbids commitment; decryption accepts both kinds.
function client (suite) {
  const legacy = suite !== undefined && suite !== 0x0478 && suite !== 0x0578
  return buildClient(legacy ? CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
    : CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT)
}

// The SDK returns the stored context plus aws-crypto-public-key for signed
// suites; every pair the caller named must be there with its value.
function checkContext (want, got) {
  for (const [k, v] of Object.entries(want)) {
    if (got[k] !== v) throw new Error(`encryption context: '${k}' is '${got[k]}', want '${v}'`)
  }
}

async function encryptFile (o) {
  const { encrypt } = client(o.suite)
  const pt = fs.readFileSync(o.input)
  const { result } = await encrypt(keyring(o), pt, {
    encryptionContext: o.context,
    suiteId: o.suite,
    frameLength: o.frameLength,
  })
  fs.writeFileSync(o.output, result)
}

async function decryptFile (o) {
  const { decrypt } = client(undefined)
  const ct = fs.readFileSync(o.input)
  const { plaintext, messageHeader } = await decrypt(keyring(o), ct)
  checkContext(o.context, messageHeader.encryptionContext)
  fs.writeFileSync(o.output, plaintext)
}

// size bytes in 1 MiB chunks, from memory.
function source (size, chunk) {
  let left = size
  return new Readable({
    read () {
      if (left === 0) return this.push(null)
      const n = Math.min(left, chunk.length)
      left -= n
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n))
    },
  })
}

function sink (keep) {
  const parts = []
  let n = 0
  const w = new Writable({
    write (c, _e, cb) {
      n += c.length
      if (keep) parts.push(c)
      cb()
    },
  })
  w.total = () => n
  w.joined = () => Buffer.concat(parts, n)
  return w
}

// CPU seconds of this process (user + system) since `from`.
function cpu (from) {
  const u = process.cpuUsage(from)
  return (u.user + u.system) / 1e6
}

function median (v) {
  const s = [...v].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

// The ciphertext in 1 MiB pieces, as a file would be read.
function pieces (buf) {
  const out = []
  for (let i = 0; i < buf.length; i += 1 << 20) out.push(buf.subarray(i, i + (1 << 20)))
  return out
}

async function bench (o) {
  const ring = keyring(o)
  const { encryptStream, decryptStream } = client(o.suite)
  const chunk = require('crypto').randomBytes(Math.min(o.size, 1 << 20))
  const opts = { encryptionContext: o.context, suiteId: o.suite, frameLength: o.frameLength }
  const enc = []
  const dec = []
  let ct = null
  // Untimed: lets the JIT compile the hot paths, as hsmwrap-bench warms up.
  const warm = sink(true)
  await pipeline(source(Math.min(o.size, 4 << 20), chunk), encryptStream(ring, opts), warm)
  await pipeline(Readable.from(pieces(warm.joined())), decryptStream(ring), sink(false))
  for (let r = 0; r < o.rounds; r++) {
    // The first round keeps the ciphertext for the decryption runs.
    const out = sink(r === 0)
    const t = process.cpuUsage()
    await pipeline(source(o.size, chunk), encryptStream(ring, opts), out)
    enc.push(o.size / cpu(t) / 1e6)
    if (r === 0) ct = out.joined()
    const pt = sink(false)
    const t2 = process.cpuUsage()
    await pipeline(Readable.from(pieces(ct)), decryptStream(ring), pt)
    dec.push(o.size / cpu(t2) / 1e6)
    if (pt.total() !== o.size) throw new Error(`decrypted ${pt.total()} bytes, want ${o.size}`)
  }
  process.stdout.write(JSON.stringify({ peer: 'aws-encryption-sdk-javascript', size: o.size,
    suite: '0x' + o.suite.toString(16).padStart(4, '0'), frame_length: o.frameLength,
    encrypt_mbps: median(enc), decrypt_mbps: median(dec) }) + '\n')
}

const o = parseArgs(process.argv.slice(2))
const run = { encrypt: encryptFile, decrypt: decryptFile, bench }[o.cmd]
run(o).catch((e) => {
  process.stderr.write(`esdk.js ${o.cmd}: ${e.message}\n`)
  process.exit(1)
})
