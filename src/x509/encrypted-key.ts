/**
 * Encrypted private keys: PKCS#8 EncryptedPrivateKeyInfo (RFC 5958 §3; PBES2 per RFC 8018 §6.2, or the older
 * PBES1 / PKCS#12 PBE schemes) and OpenSSL's legacy PEM encryption (`Proc-Type: 4,ENCRYPTED` with `DEK-Info`,
 * RFC 1421 §4.6). The parameters are checked before anything is decrypted, so that an unreadable cipher is named
 * and the key-derivation work is bounded; every decryption then runs in an isolated worker (encrypted-key.worker.ts
 * through isolate.ts), never on the calling thread, where OpenSSL would derive the key and decode the inner key,
 * and a hostile inner key (DSA or DH with huge parameters) would make it compute for minutes.
 */
import { InvalidArgumentError } from "../domain/errors.js";
import { contentOf, countOf, derChildren, describeOid, oidOf, readTlv, TAG, type Tlv } from "./der.js";
import type { DecryptOutcome, DecryptRecipe, DecryptWorkerInput } from "./encrypted-key.worker.js";
import { runIsolated } from "./isolate.js";
import { pemEncode, type PemBlock } from "./pem.js";
import { X509Reason } from "./reasons.js";

/** An encrypted key ready to be decrypted, its parameters checked. */
export interface EncryptedKey {
  /** The request field it came from. */
  field: string;
  /** For messages, e.g. "PKCS#8, PBES2 with AES-256-CBC (OID 2.16.840.1.101.3.4.1.42)". */
  what: string;
  /** The structure the decrypted key has: PKCS#8, or the PKCS#1 / SEC1 of a legacy PEM block. */
  format: "pkcs8" | "pkcs1" | "sec1";
  /** Legacy PEM: the block with its RFC 1421 headers (OpenSSL reads them itself). */
  pem?: string;
  /** PKCS#8: the EncryptedPrivateKeyInfo DER. */
  der?: Buffer;
  /**
   * How the isolated worker decrypts it without decoding the key (so that the key's algorithm is checked before
   * OpenSSL ever parses it): PBES2 and legacy PEM with node:crypto primitives; PBES1 / PKCS#12 PBE with forge.
   */
  recipe: DecryptRecipe;
}

/** Time one key decryption may take in its worker (the caps below keep honest keys well under 1 s). */
export const KEY_DECRYPT_TIMEOUT_MS = 5_000;

/** Legacy PEM ciphers (DEK-Info, RFC 1421 §4.6.1.3) that OpenSSL 3's default provider can decrypt. */
const LEGACY_CIPHERS = new Set(["AES-128-CBC", "AES-192-CBC", "AES-256-CBC", "DES-EDE3-CBC"]);

const REENCRYPT_HINT =
  "re-encrypt it with a current cipher, e.g. `openssl pkey -provider legacy -provider default -in old.key -aes256 -out new.key`, or send it decrypted";

function invalid(field: string, message: string, cause?: unknown): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_PRIVATE_KEY, field, `${field}: ${message}`, { cause });
}

/** ENCRYPTED_PRIVATE_KEY: an encrypted key and no passphrase. */
export function missingPassphrase(field: string, what: string): InvalidArgumentError {
  return new InvalidArgumentError(
    X509Reason.ENCRYPTED_PRIVATE_KEY,
    field,
    `${field}: the private key is encrypted (${what}) and no passphrase was given; send its password in the passphrase field, or decrypt it first with \`openssl pkey -in encrypted.key -out key.pem\``,
  );
}

function wrongPassphrase(field: string): InvalidArgumentError {
  return new InvalidArgumentError(
    X509Reason.WRONG_PASSPHRASE,
    "passphrase",
    `passphrase: it does not decrypt the private key in ${field}; check the password (a damaged key fails the same way — \`openssl pkey -in key.pem -noout\` tells them apart)`,
    { metadata: { decrypting: field } },
  );
}

/** node/OpenSSL error codes meaning "the algorithm is not available", as opposed to a failed decryption. */
function isUnsupported(code: string): boolean {
  return code === "ERR_OSSL_UNSUPPORTED" || code === "ERR_OSSL_EVP_UNSUPPORTED" || code.endsWith("_UNSUPPORTED_ALGORITHM");
}

/**
 * The error for a failed decryption. An empty passphrase was tried as a real (empty) password, since proto3
 * cannot tell "absent" from "empty"; when that fails, the passphrase counts as missing.
 */
function decryptionError(key: EncryptedKey, passphrase: string, code: string, cause?: unknown): InvalidArgumentError {
  if (isUnsupported(code)) {
    return invalid(key.field, `the private key is encrypted (${key.what}) with an algorithm that can no longer be read (single DES, RC2 or RC4); ${REENCRYPT_HINT}`, cause);
  }
  if (passphrase === "") return missingPassphrase(key.field, key.what);
  return wrongPassphrase(key.field);
}

/**
 * The refusal for an encrypted key met by a synchronous parse, which never decrypts: every decryption runs in the
 * worker ({@link decryptIsolated}, called by readImport before it parses).
 *
 * @returns InvalidArgumentError ENCRYPTED_PRIVATE_KEY when no passphrase was given.
 * @throws Error when a passphrase was given: the caller skipped the decryption (a bug, not the input).
 */
export function undecryptedKey(key: EncryptedKey, passphrase: string): InvalidArgumentError {
  if (passphrase === "") return missingPassphrase(key.field, key.what);
  throw new Error(`${key.field}: an encrypted key reached parseImport undecrypted; readImport decrypts it first`);
}

/**
 * Decrypts in an isolated worker (time limit KEY_DECRYPT_TIMEOUT_MS) and returns the plaintext key DER, not yet
 * decoded (the caller checks its algorithm before node:crypto parses it, then zeroes it).
 *
 * @throws InvalidArgumentError ENCRYPTED_PRIVATE_KEY (passphrase "" and it did not open), WRONG_PASSPHRASE
 *   (field `passphrase`), INVALID_PRIVATE_KEY when decryption takes longer than the limit. DomainError
 *   RESOURCE_EXHAUSTED SERVER_BUSY when the worker queue is full.
 */
export async function decryptIsolated(key: EncryptedKey, passphrase: string, signal?: AbortSignal): Promise<Buffer> {
  const workerData: DecryptWorkerInput = { recipe: key.recipe, passphrase };
  const outcome = await runIsolated<DecryptOutcome>({
    worker: "encrypted-key",
    workerData,
    timeoutMs: KEY_DECRYPT_TIMEOUT_MS,
    signal,
    heapMb: 64,
    onTimeout: () =>
      invalid(key.field, `decrypting the key took more than ${KEY_DECRYPT_TIMEOUT_MS / 1000} s (its parameters are far larger than any real key's); export the key again`),
    onOutOfMemory: (cause) => invalid(key.field, "decrypting the key needs too much memory; export the key again", cause),
  });
  if (outcome.ok) return Buffer.from(outcome.der);
  throw decryptionError(key, passphrase, outcome.code);
}

/**
 * The error for decrypted bytes that are not a key: with CBC, a wrong passphrase passes the padding check about
 * once in 256 tries and yields garbage, so this is (almost always) a wrong or missing passphrase.
 */
export function notAKeyAfterDecryption(key: EncryptedKey, passphrase: string): InvalidArgumentError {
  return decryptionError(key, passphrase, "ERR_OSSL_BAD_DECRYPT");
}

/**
 * A legacy encrypted PEM block (RFC 1421 §4.6: `Proc-Type: 4,ENCRYPTED`, `DEK-Info: <cipher>,<iv>`), checked.
 *
 * @param format - the structure its label names (PKCS#1 for `RSA PRIVATE KEY`, SEC1 for `EC PRIVATE KEY`).
 * @throws InvalidArgumentError INVALID_PRIVATE_KEY for a missing or unreadable DEK-Info header or a cipher OpenSSL 3
 *   cannot read (named; nothing but a cipher-like token of the header is ever echoed).
 */
export function legacyEncryptedKey(block: PemBlock, field: string, format: EncryptedKey["format"]): EncryptedKey {
  const cipher = (block.headers["DEK-Info"] ?? "").split(",")[0].trim().toUpperCase();
  if (!/^[A-Z0-9-]{1,40}$/.test(cipher)) {
    throw invalid(field, `the encrypted key's "DEK-Info" header is missing or unreadable (RFC 1421 §4.6.1.3); export the key again, or send it decrypted`);
  }
  if (!LEGACY_CIPHERS.has(cipher)) {
    // Old ciphers OpenSSL 3 keeps in its legacy provider can be re-encrypted with it; others were never valid here.
    const hint = /^(DES-CBC|DES-EDE-CBC|DESX|RC2|RC4|BF|CAST|IDEA|SEED)/.test(cipher)
      ? REENCRYPT_HINT
      : "re-encrypt it with AES-256-CBC (`openssl pkey -in old.key -aes256 -out new.key`), or send it decrypted";
    throw invalid(field, `the private key is encrypted with ${cipher}, which cannot be read; ${hint}`);
  }
  const ivHex = (block.headers["DEK-Info"] ?? "").split(",")[1]?.trim() ?? "";
  const ivLength = cipher === "DES-EDE3-CBC" ? 8 : 16;
  if (!new RegExp(`^[0-9A-Fa-f]{${2 * ivLength}}$`).test(ivHex)) {
    throw invalid(field, `the encrypted key's "DEK-Info" header has no valid ${ivLength}-byte IV (RFC 1421 §4.6.1.3); export the key again, or send it decrypted`);
  }
  const headers = Object.entries(block.headers).map(([k, v]) => `${k}: ${v}\n`).join("");
  const pem = pemEncode(block.label, block.der).replace("-----\n", `-----\n${headers}\n`);
  const recipe: DecryptRecipe = { kind: "legacy", cipher: cipher.toLowerCase(), iv: Buffer.from(ivHex, "hex"), data: block.der };
  return { field, what: `legacy OpenSSL PEM encryption, ${cipher}`, format, pem, recipe };
}

/**
 * An EncryptedPrivateKeyInfo (RFC 5958 §3), its parameters checked.
 * @throws InvalidArgumentError INVALID_PRIVATE_KEY as checkPkcs8Encryption.
 */
export function pkcs8EncryptedKey(der: Buffer, field: string): EncryptedKey {
  const { what, recipe } = checkPkcs8Encryption(der, field);
  return { field, what, format: "pkcs8", der, recipe };
}

/** Most PBKDF2 iterations (RFC 8018 §5.2) accepted: OpenSSL derives the key on the calling thread. */
export const MAX_KEY_ITERATIONS = 1_000_000;
/**
 * Largest scrypt work accepted (RFC 7914 §2: time grows with N·r·p, memory with 128·N·r bytes): twice OpenSSL's
 * `-scrypt` default (N=16384, r=8, p=1), about 0.1 s, since OpenSSL derives the key on the calling thread.
 */
export const MAX_SCRYPT_WORK = 2 * 16384 * 8;
/** Largest scrypt memory accepted, bytes (OpenSSL's own default ceiling for scrypt, 32 MiB). */
export const MAX_SCRYPT_MEMORY = 32 * 1024 * 1024;

const OID_PBES2 = "1.2.840.113549.1.5.13";
const OID_PBKDF2 = "1.2.840.113549.1.5.12";
const OID_SCRYPT = "1.3.6.1.4.1.11591.4.11";

/** PBES2 encryption schemes we decrypt (RFC 8018 B.2), as node:crypto cipher names. */
const CIPHER_NAMES: Record<string, string> = {
  "2.16.840.1.101.3.4.1.2": "aes-128-cbc",
  "2.16.840.1.101.3.4.1.22": "aes-192-cbc",
  "2.16.840.1.101.3.4.1.42": "aes-256-cbc",
  "1.2.840.113549.3.7": "des-ede3-cbc",
};

/** PBKDF2 PRFs (RFC 8018 B.1.2) as node:crypto digest names. */
const PRF_DIGESTS: Record<string, string> = {
  "1.2.840.113549.2.7": "sha1",
  "1.2.840.113549.2.8": "sha224",
  "1.2.840.113549.2.9": "sha256",
  "1.2.840.113549.2.10": "sha384",
  "1.2.840.113549.2.11": "sha512",
};

/** Older schemes decrypted by node-forge (RFC 7292 App. C PKCS#12 PBE with 3DES; RFC 8018 §6.1 PBES1 is not). */
const FORGE_SCHEMES: Record<string, string> = {
  "1.2.840.113549.1.12.1.3": "pbeWithSHAAnd3-KeyTripleDES-CBC",
};

/**
 * Reads an EncryptedPrivateKeyInfo's algorithm (RFC 5958 §3; PBES2 per RFC 8018 §6.2 / A.4) before anything is
 * decrypted, so that a cost OpenSSL would spend on the event loop is bounded and an unreadable cipher is named.
 *
 * @returns a description for messages, e.g. "PKCS#8, PBES2 with AES-256-CBC".
 * @throws InvalidArgumentError INVALID_PRIVATE_KEY when PBKDF2 iterations exceed MAX_KEY_ITERATIONS, scrypt's work
 *   or memory exceeds MAX_SCRYPT_WORK / MAX_SCRYPT_MEMORY, or the cipher is one OpenSSL 3 cannot read (single DES, RC2, RC4), naming it.
 */
function checkPkcs8Encryption(der: Buffer, field: string): { what: string; recipe: DecryptRecipe } {
  let algorithm = "";
  let cipher = "";
  let iterations = 0;
  let scrypt: { n: number; r: number; p: number } | undefined;
  let recipe: DecryptRecipe = { kind: "forge", der };
  let prf = "1.2.840.113549.2.7"; // hmacWithSHA1, the PBKDF2 default (RFC 8018 A.2)
  try {
    const [algId, encryptedData] = derChildren(der, readTlv(der, 0));
    const bytes = (t: Tlv) => contentOf(der, t);
    const [oid, params] = derChildren(der, algId);
    algorithm = oidOf(der, oid);
    if (algorithm === OID_PBES2 && params) {
      const [kdf, scheme] = derChildren(der, params);
      const [kdfOid, kdfParams] = derChildren(der, kdf);
      const kdfName = oidOf(der, kdfOid);
      const kp = kdfParams ? derChildren(der, kdfParams) : [];
      const int = (i: number) => (kp[i]?.tag === TAG.INTEGER ? countOf(bytes(kp[i])) : Infinity);
      const [schemeOid, iv] = derChildren(der, scheme);
      cipher = oidOf(der, schemeOid);
      if ([kp[0], iv, encryptedData].some((t) => t?.tag !== TAG.OCTET_STRING)) throw new Error("PBES2 parameters without salt, IV or data");
      if (kdfName === OID_PBKDF2) {
        // PBKDF2-params (RFC 8018 A.2): salt, iterationCount, keyLength OPTIONAL, prf DEFAULT hmacWithSHA1.
        iterations = int(1);
        const prfAlg = kp.find((t, i) => i >= 2 && t.tag === TAG.SEQUENCE);
        if (prfAlg) prf = oidOf(der, derChildren(der, prfAlg)[0]);
        recipe = { kind: "pbes2", kdf: { name: "pbkdf2", salt: bytes(kp[0]), iterations, prf: PRF_DIGESTS[prf] ?? "" }, cipher: CIPHER_NAMES[cipher] ?? "", iv: bytes(iv), data: bytes(encryptedData) };
      } else if (kdfName === OID_SCRYPT) {
        // scrypt-params (RFC 7914 §7.1): salt, costParameter N, blockSize r, parallelizationParameter p.
        scrypt = { n: int(1), r: int(2), p: int(3) };
        recipe = { kind: "pbes2", kdf: { name: "scrypt", salt: bytes(kp[0]), ...scrypt }, cipher: CIPHER_NAMES[cipher] ?? "", iv: bytes(iv), data: bytes(encryptedData) };
      }
    } else if (params) {
      // PBES1 and PKCS#12 PBE (RFC 8018 §6.1, RFC 7292 App. C): params are { salt, iterationCount }.
      const p = derChildren(der, params);
      if (p[1]?.tag === TAG.INTEGER) iterations = countOf(bytes(p[1]));
    }
  } catch (err) {
    // OpenSSL would accept some encodings our strict reader refuses (non-minimal lengths), and then run a key
    // derivation whose cost we could not check: refuse what we cannot read.
    throw invalid(field, "the encrypted key's encryption parameters are not valid DER, so their cost cannot be checked; re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc` or send it decrypted", err);
  }
  if (recipe.kind === "pbes2" && recipe.kdf.name === "pbkdf2" && iterations < 1) {
    throw invalid(field, "the encrypted key's PBKDF2 iteration count is zero (RFC 8018 §5.2 requires a positive count); export the key again");
  }
  if (iterations > MAX_KEY_ITERATIONS) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_PRIVATE_KEY,
      field,
      `${field}: the encrypted key asks for ${iterations === Infinity ? "more than 2^53" : iterations} key-derivation iterations, more than the limit of ${MAX_KEY_ITERATIONS}; re-encrypt it with \`openssl pkcs8 -topk8 -v2 aes-256-cbc\` (2048 iterations) or send it decrypted`,
      { metadata: { iterations: String(iterations), limit: String(MAX_KEY_ITERATIONS) } },
    );
  }
  // Each parameter in its range (RFC 7914 §2: N a power of two above 1, r and p at least 1), then their cost:
  // a zero would pass a product cap and make node fall back to its own defaults.
  const scryptValid = (x: { n: number; r: number; p: number }) =>
    x.n >= 2 && (x.n & (x.n - 1)) === 0 && x.r >= 1 && x.p >= 1 && x.n * x.r * x.p <= MAX_SCRYPT_WORK && 128 * x.n * x.r <= MAX_SCRYPT_MEMORY;
  if (scrypt && !scryptValid(scrypt)) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_PRIVATE_KEY,
      field,
      `${field}: the encrypted key's scrypt parameters (N=${scrypt.n}, r=${scrypt.r}, p=${scrypt.p}) are out of range or ask for more work than the limit (N a power of two from 2, r and p from 1; N·r·p at most ${MAX_SCRYPT_WORK}, 128·N·r at most ${MAX_SCRYPT_MEMORY} bytes); re-encrypt it with \`openssl pkcs8 -topk8 -v2 aes-256-cbc\` or send it decrypted`,
      { metadata: { scryptN: String(scrypt.n), scryptR: String(scrypt.r), scryptP: String(scrypt.p) } },
    );
  }
  const unreadable =
    algorithm === OID_PBES2
      ? !(cipher in CIPHER_NAMES)
        ? cipher
        : recipe.kind !== "pbes2"
          ? "the key derivation function"
          : recipe.kdf.name === "pbkdf2" && recipe.kdf.prf === ""
            ? prf
            : ""
      : algorithm in FORGE_SCHEMES
        ? ""
        : algorithm;
  if (unreadable !== "") {
    const name = /^[0-9.]+$/.test(unreadable) ? describeOid(unreadable) : unreadable;
    throw invalid(field, `the private key is encrypted with ${name}, which cannot be read; ${REENCRYPT_HINT}`);
  }
  const what = algorithm === OID_PBES2 ? `PKCS#8, PBES2 with ${describeOid(cipher)}` : `PKCS#8, ${describeOid(algorithm)}`;
  return { what, recipe };
}

