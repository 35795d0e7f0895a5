/**
 * The key-decryption worker (run by isolate.ts): decrypts one encrypted private key by its recipe and posts the
 * plaintext DER without decoding it, so that the key's algorithm is checked before OpenSSL ever parses it.
 * Key derivation: PBKDF2 / scrypt (RFC 8018 §5.2, RFC 7914) with the passphrase as UTF-8, or OpenSSL's
 * EVP_BytesToKey (MD5, one round, salt = the first 8 IV bytes) for legacy PEM; then CBC decryption, whose padding
 * check fails for a wrong passphrase. The older PKCS#12 PBE schemes go through node-forge.
 */
import { createDecipheriv, createHash, pbkdf2Sync, scryptSync } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";

/** The primitives that decrypt one key (RFC 8018 §6.2 PBES2, RFC 1421 / OpenSSL EVP_BytesToKey, forge). */
export type DecryptRecipe =
  | {
      kind: "pbes2";
      kdf: { name: "pbkdf2"; salt: Uint8Array; iterations: number; prf: string } | { name: "scrypt"; salt: Uint8Array; n: number; r: number; p: number };
      cipher: string;
      iv: Uint8Array;
      data: Uint8Array;
    }
  | { kind: "legacy"; cipher: string; iv: Uint8Array; data: Uint8Array }
  | { kind: "forge"; der: Uint8Array };

/** workerData of this worker. */
export interface DecryptWorkerInput {
  recipe: DecryptRecipe;
  passphrase: string;
}

/** The worker's one message: the decrypted key's DER (not decoded), or the error code of a failed decryption. */
export type DecryptOutcome = { ok: true; der: ArrayBuffer } | { ok: false; code: string };

/** Key lengths of the CBC ciphers a recipe names (node:crypto names), bytes. */
const KEY_LENGTHS: Record<string, number> = { "aes-128-cbc": 16, "aes-192-cbc": 24, "aes-256-cbc": 32, "des-ede3-cbc": 24 };

function decipher(name: string, key: Uint8Array, iv: Uint8Array, data: Uint8Array): Buffer {
  const d = createDecipheriv(name, key, iv);
  return Buffer.concat([d.update(data), d.final()]);
}

/** OpenSSL's EVP_BytesToKey with MD5 and one round (the legacy PEM key derivation). */
function bytesToKey(pass: Buffer, salt: Uint8Array, len: number): Buffer {
  let key = Buffer.alloc(0);
  let block = Buffer.alloc(0);
  while (key.length < len) {
    block = createHash("md5").update(Buffer.concat([block, pass, salt])).digest();
    key = Buffer.concat([key, block]);
  }
  return key.subarray(0, len);
}

async function decrypt({ recipe: r, passphrase }: DecryptWorkerInput): Promise<Buffer> {
  const pass = Buffer.from(passphrase, "utf8");
  if (r.kind === "pbes2") {
    const len = KEY_LENGTHS[r.cipher];
    const key =
      r.kdf.name === "pbkdf2"
        ? pbkdf2Sync(pass, r.kdf.salt, r.kdf.iterations, len, r.kdf.prf)
        : scryptSync(pass, r.kdf.salt, len, { N: r.kdf.n, r: r.kdf.r, p: r.kdf.p, maxmem: 64 * 1024 * 1024 });
    return decipher(r.cipher, key, r.iv, r.data);
  }
  if (r.kind === "legacy") return decipher(r.cipher, bytesToKey(pass, r.iv.subarray(0, 8), KEY_LENGTHS[r.cipher]), r.iv, r.data);
  // Loaded only for this rare scheme: forge costs a worker tens of milliseconds to load.
  const { default: forge } = await import("node-forge");
  const asn1 = forge.asn1.fromDer(forge.util.createBuffer(Buffer.from(r.der).toString("binary")));
  const info = forge.pki.decryptPrivateKeyInfo(asn1, passphrase);
  if (!info) throw Object.assign(new Error("bad decrypt"), { code: "ERR_OSSL_BAD_DECRYPT" });
  return Buffer.from(forge.asn1.toDer(info).getBytes(), "binary");
}

let outcome: DecryptOutcome;
try {
  const plain = await decrypt(workerData as DecryptWorkerInput);
  const copy = new Uint8Array(plain).buffer;
  plain.fill(0);
  outcome = { ok: true, der: copy };
} catch (err) {
  outcome = { ok: false, code: String((err as { code?: string })?.code || "ERR_OSSL_BAD_DECRYPT") };
}
parentPort!.postMessage(outcome, outcome.ok ? [outcome.der] : []);
