/**
 * The optional private key. Accepted as PKCS#8 (RFC 5958, label `PRIVATE KEY`), encrypted PKCS#8 (RFC 5958 §3
 * EncryptedPrivateKeyInfo with PBES2, RFC 8018 §6.2; label `ENCRYPTED PRIVATE KEY`), PKCS#1 (RFC 8017 A.1.2,
 * `RSA PRIVATE KEY`), SEC1 (RFC 5915, `EC PRIVATE KEY`, optionally after the `EC PARAMETERS` block that
 * `openssl ecparam -genkey` prints), OpenSSL's legacy encrypted PEM (`Proc-Type: 4,ENCRYPTED`, RFC 1421 §4.6),
 * or the same structures as binary DER. Blocks are read by their content, so a mislabelled block (PKCS#8 under
 * `RSA PRIVATE KEY`) still works and is reported. The key is stored as unencrypted PKCS#8 with EC keys on their
 * named curve (RFC 5480 §2.1.1), so every reader handles one format; the stored copy is encrypted anyway.
 */
import { createPrivateKey, createPublicKey, X509Certificate, type JsonWebKey, type KeyObject } from "node:crypto";
import type { ImportRepair } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { decodeOid, derChildren, describeOid, readTlv } from "./der.js";
import { pemEncode, splitPemBlocks, type PemBlock } from "./pem.js";
import { X509Reason } from "./reasons.js";

type KeyFormat = "pkcs8" | "pkcs1" | "sec1";

/** Key labels and the DER format each names. */
const KEY_LABELS: Record<string, KeyFormat> = {
  "PRIVATE KEY": "pkcs8",
  "ENCRYPTED PRIVATE KEY": "pkcs8",
  "RSA PRIVATE KEY": "pkcs1",
  "EC PRIVATE KEY": "sec1",
};

const FORMAT_NAMES: Record<KeyFormat, string> = { pkcs8: "PKCS#8", pkcs1: "PKCS#1 RSA", sec1: "SEC1 EC" };

/** Legacy PEM ciphers (DEK-Info, RFC 1421 §4.6.1.3) that OpenSSL 3's default provider can decrypt. */
const LEGACY_CIPHERS = new Set(["AES-128-CBC", "AES-192-CBC", "AES-256-CBC", "DES-EDE3-CBC"]);

/** True for labels that hold a private key (or the EC PARAMETERS block that may precede one). */
export function isPrivateKeyLabel(label: string): boolean {
  return label in KEY_LABELS || label === "EC PARAMETERS";
}

/** A decoded private key and what was changed to read it. */
export interface ParsedPrivateKey {
  key: KeyObject;
  repairs: ImportRepair[];
}

const REENCRYPT_HINT =
  "re-encrypt it with a current cipher, e.g. `openssl pkey -provider legacy -provider default -in old.key -aes256 -out new.key`, or send it decrypted";

function invalid(field: string, message: string, cause?: unknown): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_PRIVATE_KEY, field, `${field}: ${message}`, { cause });
}

function missingPassphrase(field: string, what: string): InvalidArgumentError {
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
function isUnsupported(err: unknown): boolean {
  const code = (err as { code?: string })?.code ?? "";
  return code === "ERR_OSSL_UNSUPPORTED" || code === "ERR_OSSL_EVP_UNSUPPORTED" || code.endsWith("_UNSUPPORTED_ALGORITHM");
}

/**
 * Decrypts with the user's passphrase. An empty passphrase is tried as a real (empty) password first, since
 * proto3 cannot tell "absent" from "empty"; failing that, it counts as missing.
 */
function decrypt(field: string, what: string, passphrase: string, attempt: (pass: string) => KeyObject): KeyObject {
  try {
    return attempt(passphrase);
  } catch (err) {
    if (isUnsupported(err)) {
      throw invalid(field, `the private key is encrypted (${what}) with an algorithm that can no longer be read (single DES, RC2 or RC4); ${REENCRYPT_HINT}`, err);
    }
    if (passphrase === "") throw missingPassphrase(field, what);
    throw wrongPassphrase(field);
  }
}

/**
 * Decodes one private key in DER, trying the format its label names first and then the others.
 *
 * @param der - key bytes (zeroed by the caller).
 * @param field - request field to name in errors.
 * @param passphrase - for encrypted PKCS#8; "" when none was given.
 * @param labelFormat - the format the PEM label claims, if any.
 * @returns the key and the format that decoded it, and whether it was encrypted.
 * @throws InvalidArgumentError ENCRYPTED_PRIVATE_KEY, WRONG_PASSPHRASE (field `passphrase`) or INVALID_PRIVATE_KEY
 *   naming what the bytes are when they are not a key (certificate, public key).
 */
function decodeKeyDer(
  der: Buffer,
  field: string,
  passphrase: string,
  labelFormat?: KeyFormat,
): { key: KeyObject; format: KeyFormat; encrypted: boolean } {
  // OpenSSL 3's decoders accept any of the structures whatever type is asked for, so the structure is read
  // from the DER itself; the label (or, failing that, every format) is only tried when that cannot be told.
  const sniffed = sniffKeyFormat(der);
  const order: KeyFormat[] = sniffed ? [sniffed] : labelFormat ? [labelFormat] : [];
  for (const f of ["pkcs8", "pkcs1", "sec1"] as const) if (!order.includes(f)) order.push(f);
  for (const format of order) {
    try {
      return { key: createPrivateKey({ key: der, format: "der", type: format }), format, encrypted: false };
    } catch (err) {
      if (format === "pkcs8" && (err as { code?: string }).code === "ERR_MISSING_PASSPHRASE") {
        const what = checkPkcs8Encryption(der, field);
        const key = decrypt(field, what, passphrase, (pass) => createPrivateKey({ key: der, format: "der", type: "pkcs8", passphrase: pass }));
        return { key, format, encrypted: true };
      }
    }
  }
  throw invalid(field, `${describeNonKey(der)}; send the certificate's private key (PKCS#8, PKCS#1 or SEC1, PEM or DER)`);
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

/** Ciphers a PBES2 key may use that OpenSSL 3's default provider decrypts. */
const READABLE_CIPHERS = new Set([
  "2.16.840.1.101.3.4.1.2", // AES-128-CBC
  "2.16.840.1.101.3.4.1.22", // AES-192-CBC
  "2.16.840.1.101.3.4.1.42", // AES-256-CBC
  "1.2.840.113549.3.7", // DES-EDE3-CBC
]);

/** Unsigned INTEGER contents as a number (Infinity beyond 2^53, which any cap refuses anyway). */
function integerValue(content: Uint8Array): number {
  let n = 0;
  for (const b of content) n = n * 256 + b;
  return Number.isSafeInteger(n) ? n : Infinity;
}

/**
 * Reads an EncryptedPrivateKeyInfo's algorithm (RFC 5958 §3; PBES2 per RFC 8018 §6.2 / A.4) before anything is
 * decrypted, so that a cost OpenSSL would spend on the event loop is bounded and an unreadable cipher is named.
 *
 * @returns a description for messages, e.g. "PKCS#8, PBES2 with AES-256-CBC".
 * @throws InvalidArgumentError INVALID_PRIVATE_KEY when PBKDF2 iterations exceed MAX_KEY_ITERATIONS, scrypt's work
 *   or memory exceeds MAX_SCRYPT_WORK / MAX_SCRYPT_MEMORY, or the cipher is one OpenSSL 3 cannot read (single DES, RC2, RC4), naming it.
 */
function checkPkcs8Encryption(der: Buffer, field: string): string {
  let algorithm = "";
  let cipher = "";
  let iterations = 0;
  let scrypt: { n: number; r: number; p: number } | undefined;
  try {
    const [algId] = derChildren(der, readTlv(der, 0));
    const [oid, params] = derChildren(der, algId);
    algorithm = decodeOid(der.subarray(oid.contentStart, oid.end));
    if (algorithm === OID_PBES2 && params) {
      const [kdf, scheme] = derChildren(der, params);
      const [kdfOid, kdfParams] = derChildren(der, kdf);
      const kdfName = decodeOid(der.subarray(kdfOid.contentStart, kdfOid.end));
      const kp = kdfParams ? derChildren(der, kdfParams) : [];
      if (kdfName === OID_PBKDF2 && kp[1]?.tag === 0x02) iterations = integerValue(der.subarray(kp[1].contentStart, kp[1].end));
      // scrypt-params (RFC 7914 §7.1): salt, costParameter N, blockSize r, parallelizationParameter p.
      if (kdfName === OID_SCRYPT) {
        const int = (i: number) => (kp[i]?.tag === 0x02 ? integerValue(der.subarray(kp[i].contentStart, kp[i].end)) : Infinity);
        scrypt = { n: int(1), r: int(2), p: int(3) };
      }
      const [schemeOid] = derChildren(der, scheme);
      cipher = decodeOid(der.subarray(schemeOid.contentStart, schemeOid.end));
    } else if (params) {
      // PBES1 and PKCS#12 PBE (RFC 8018 §6.1, RFC 7292 App. C): params are { salt, iterationCount }.
      const p = derChildren(der, params);
      if (p[1]?.tag === 0x02) iterations = integerValue(der.subarray(p[1].contentStart, p[1].end));
    }
  } catch {
    return "PKCS#8 EncryptedPrivateKeyInfo";
  }
  if (iterations > MAX_KEY_ITERATIONS) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_PRIVATE_KEY,
      field,
      `${field}: the encrypted key asks for ${iterations === Infinity ? "more than 2^53" : iterations} key-derivation iterations, more than the limit of ${MAX_KEY_ITERATIONS}; re-encrypt it with \`openssl pkcs8 -topk8 -v2 aes-256-cbc\` (2048 iterations) or send it decrypted`,
      { metadata: { iterations: String(iterations), limit: String(MAX_KEY_ITERATIONS) } },
    );
  }
  if (scrypt && (scrypt.n * scrypt.r * scrypt.p > MAX_SCRYPT_WORK || 128 * scrypt.n * scrypt.r > MAX_SCRYPT_MEMORY)) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_PRIVATE_KEY,
      field,
      `${field}: the encrypted key's scrypt parameters (N=${scrypt.n}, r=${scrypt.r}, p=${scrypt.p}) ask for more work than the limit (N·r·p at most ${MAX_SCRYPT_WORK}, 128·N·r at most ${MAX_SCRYPT_MEMORY} bytes); re-encrypt it with \`openssl pkcs8 -topk8 -v2 aes-256-cbc\` or send it decrypted`,
      { metadata: { scryptN: String(scrypt.n), scryptR: String(scrypt.r), scryptP: String(scrypt.p) } },
    );
  }
  const unreadable = algorithm === OID_PBES2 ? (cipher !== "" && !READABLE_CIPHERS.has(cipher) ? cipher : "") : algorithm === "1.2.840.113549.1.12.1.3" ? "" : algorithm;
  if (unreadable !== "") {
    throw invalid(field, `the private key is encrypted with ${describeOid(unreadable)}, which can no longer be read; ${REENCRYPT_HINT}`);
  }
  return algorithm === OID_PBES2 ? `PKCS#8, PBES2 with ${describeOid(cipher)}` : `PKCS#8, ${describeOid(algorithm)}`;
}

/**
 * The private-key structure of `der`, read from its first elements: PKCS#8 PrivateKeyInfo (RFC 5958 §2: version
 * INTEGER, then an AlgorithmIdentifier SEQUENCE) or EncryptedPrivateKeyInfo (§3: starts with a SEQUENCE); PKCS#1
 * RSAPrivateKey (RFC 8017 A.1.2: version, then the modulus INTEGER); SEC1 ECPrivateKey (RFC 5915 §3: version 1,
 * then the key OCTET STRING). undefined when it is none of these shapes.
 */
function sniffKeyFormat(der: Buffer): KeyFormat | undefined {
  try {
    const outer = readTlv(der, 0);
    if (outer.tag !== 0x30 || outer.end !== der.length) return undefined;
    const [first, second] = derChildren(der, outer);
    if (first?.tag === 0x30) return "pkcs8";
    if (first?.tag !== 0x02 || second === undefined) return undefined;
    if (second.tag === 0x30) return "pkcs8";
    if (second.tag === 0x02) return "pkcs1";
    if (second.tag === 0x04) return "sec1";
    return undefined;
  } catch {
    return undefined;
  }
}

/** Says what DER that is not a private key looks like, without echoing it. */
function describeNonKey(der: Buffer): string {
  try {
    new X509Certificate(der);
    return "it holds a certificate, not a private key (certificates go in the certificate and intermediates fields)";
  } catch {
    // not a certificate
  }
  try {
    createPublicKey({ key: der, format: "der", type: "spki" });
    return "it holds a public key, not a private key (the private key is the file generated together with the certificate request)";
  } catch {
    return "it could not be decoded as a PKCS#8, PKCS#1 or SEC1 private key (export it again, e.g. with `openssl pkey -in key.pem`)";
  }
}

/**
 * Decodes a private key given as text (PEM blocks) or, when `text` is empty, as binary DER.
 *
 * @param text - the `private_key` field (or key blocks moved from another field, see parsePrivateKeyBlocks).
 * @param der - the `private_key_der` field; empty when absent. Zeroed here after decoding.
 * @param passphrase - the `passphrase` field; "" when absent.
 * @returns the key (named-curve form for EC) and the repairs made, or undefined when both are empty.
 * @throws InvalidArgumentError (field `private_key`/`private_key_der` unless said): ENCRYPTED_PRIVATE_KEY for an
 *   encrypted key without passphrase; WRONG_PASSPHRASE (field `passphrase`) when it does not decrypt the key;
 *   INVALID_PRIVATE_KEY when there is no key, more than one, a block of another kind, bytes that are not a key,
 *   or an encryption OpenSSL 3 cannot read (DES-CBC, RC2).
 */
export function parsePrivateKey(text: string, der: Buffer, passphrase: string): ParsedPrivateKey | undefined {
  if (text.trim() !== "") {
    const blocks = splitPemBlocks(text, { field: "private_key", reason: X509Reason.INVALID_PRIVATE_KEY });
    return parsePrivateKeyBlocks(blocks, "private_key", passphrase);
  }
  if (der.length === 0) return undefined;
  const field = "private_key_der";
  try {
    const asText = der.toString("latin1");
    if (/^\s*(\xEF\xBB\xBF)?-----BEGIN /.test(asText)) {
      // PEM text sent in the bytes field: read it as PEM.
      const blocks = splitPemBlocks(der.toString("utf8"), { field, reason: X509Reason.INVALID_PRIVATE_KEY });
      return parsePrivateKeyBlocks(blocks, field, passphrase);
    }
    const { key, format, encrypted } = decodeKeyDer(der, field, passphrase);
    const repairs: ImportRepair[] = [{ kind: "DER_CONVERTED", description: `${field}: the ${FORMAT_NAMES[format]} DER key was converted to PEM` }];
    if (encrypted) repairs.push({ kind: "PRIVATE_KEY_DECRYPTED", description: `${field}: the key was decrypted with the passphrase` });
    return toCanonicalKey(key, format, encrypted, repairs, field);
  } finally {
    der.fill(0);
  }
}

/**
 * Decodes the private key among PEM blocks (the `private_key` field, or key blocks found in `certificate`).
 *
 * @param blocks - decoded blocks; their DER is zeroed here.
 * @throws as parsePrivateKey.
 */
export function parsePrivateKeyBlocks(blocks: PemBlock[], field: string, passphrase: string): ParsedPrivateKey {
  try {
    const others = blocks.filter((b) => !isPrivateKeyLabel(b.label));
    if (others.length > 0) {
      const label = others[0].label;
      const where = /CERTIFICATE/.test(label) ? " (certificates go in the certificate and intermediates fields)" : "";
      const what = /PUBLIC KEY/.test(label) ? " (a public key; the private key is the file generated together with it)" : where;
      throw invalid(
        field,
        `found a "${label}" PEM block${what}; this field takes only the certificate's private key, e.g. "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY" or "EC PRIVATE KEY"`,
      );
    }
    const keys = blocks.filter((b) => b.label in KEY_LABELS);
    if (keys.length === 0) {
      throw invalid(field, 'no private key found; paste the key in PEM form, starting with "-----BEGIN PRIVATE KEY-----" (or RSA/EC/ENCRYPTED PRIVATE KEY)');
    }
    if (keys.length > 1) throw invalid(field, `found ${keys.length} private keys; paste only the private key of the certificate`);
    return parseKeyBlock(keys[0], field, passphrase);
  } finally {
    // createPrivateKey copied the key into OpenSSL; the decoded DER must not linger on the heap.
    for (const b of blocks) b.der.fill(0);
  }
}

function parseKeyBlock(block: PemBlock, field: string, passphrase: string): ParsedPrivateKey {
  const repairs: ImportRepair[] = [];
  const procType = block.headers["Proc-Type"] ?? "";
  if (/ENCRYPTED/i.test(procType)) {
    const cipher = (block.headers["DEK-Info"] ?? "").split(",")[0].trim().toUpperCase();
    const what = `legacy OpenSSL PEM encryption${cipher ? `, ${cipher}` : ""}`;
    if (cipher !== "" && !LEGACY_CIPHERS.has(cipher)) {
      throw invalid(field, `the private key is encrypted with ${cipher}, which can no longer be read; ${REENCRYPT_HINT}`);
    }
    if (passphrase === "") throw missingPassphrase(field, what);
    // OpenSSL reads the RFC 1421 headers itself: hand it the block as written, headers included.
    const headers = Object.entries(block.headers).map(([k, v]) => `${k}: ${v}\n`).join("");
    const pem = pemEncode(block.label, block.der).replace("-----\n", `-----\n${headers}\n`);
    const key = decrypt(field, what, passphrase, (pass) => createPrivateKey({ key: pem, format: "pem", passphrase: pass }));
    repairs.push({ kind: "PRIVATE_KEY_DECRYPTED", description: `${field}: the key (${what}) was decrypted with the passphrase` });
    const format: KeyFormat = KEY_LABELS[block.label] ?? "pkcs8";
    return toCanonicalKey(key, format, true, repairs, field);
  }
  const claimed = KEY_LABELS[block.label];
  const { key, format, encrypted } = decodeKeyDer(block.der, field, passphrase, claimed);
  const actual = encrypted ? "ENCRYPTED PRIVATE KEY" : format === "pkcs8" ? "PRIVATE KEY" : format === "pkcs1" ? "RSA PRIVATE KEY" : "EC PRIVATE KEY";
  if (actual !== block.label) {
    repairs.push({
      kind: "PEM_LABEL_CORRECTED",
      description: `${field}: the block labelled "${block.label}" holds a ${encrypted ? "encrypted PKCS#8" : FORMAT_NAMES[format]} key ("${actual}"); it was read as such`,
    });
  }
  if (encrypted) repairs.push({ kind: "PRIVATE_KEY_DECRYPTED", description: `${field}: the encrypted PKCS#8 key was decrypted with the passphrase` });
  return toCanonicalKey(key, format, encrypted, repairs, field);
}

/**
 * The key in the form we store: EC keys on their named curve (RFC 5480 §2.1.1), recording a conversion from
 * PKCS#1, SEC1 or explicit curve parameters.
 *
 * @throws InvalidArgumentError UNSUPPORTED_KEY_ALGORITHM (field `field`) for an EC key on a curve other than
 *   P-256, P-384 and P-521, naming the curve.
 */
function toCanonicalKey(key: KeyObject, format: KeyFormat, encrypted: boolean, repairs: ImportRepair[], field: string): ParsedPrivateKey {
  let result = key;
  let explicitCurve = false;
  if (key.asymmetricKeyType === "ec") {
    const named = namedCurveKey(key);
    if (named === undefined) {
      const curve = key.asymmetricKeyDetails?.namedCurve ?? "with unnamed explicit parameters";
      throw new InvalidArgumentError(
        X509Reason.UNSUPPORTED_KEY_ALGORITHM,
        field,
        `${field}: the private key is on the EC curve ${curve}, which is not supported; supported curves are P-256, P-384 and P-521`,
        { metadata: { keyAlgorithm: `EC ${curve}` } },
      );
    }
    // Only the public half is needed to see how the curve was encoded.
    explicitCurve = createPublicKey(key).export({ format: "der", type: "spki" }).includes(PRIME_FIELD_OID);
    result = named;
  }
  if (format !== "pkcs8" || explicitCurve) {
    const from = explicitCurve ? "explicit EC curve parameters (replaced by the named curve)" : FORMAT_NAMES[format];
    repairs.push({ kind: "PRIVATE_KEY_CONVERTED", description: `${field}: the key was converted from ${from} to PKCS#8${encrypted ? " (unencrypted)" : ""}` });
  }
  return { key: result, repairs };
}

/** OID 1.2.840.10045.1.1 (prime-field), present only in explicit EC parameters (RFC 3279 §2.3.5). */
const PRIME_FIELD_OID = Buffer.from("06072a8648ce3d0101", "hex");

/**
 * The same EC key on its named curve: OpenSSL recognises explicit parameters equal to a named curve's and
 * exports a JWK naming it (RFC 7518 §6.2.1.1); rebuilding from the JWK gives the named-curve encoding. undefined
 * for curves other than P-256/P-384/P-521. The JWK holds the private scalar `d` as a JavaScript string for a
 * moment (strings cannot be zeroed); the user's PEM text was one already.
 */
function namedCurveKey(key: KeyObject): KeyObject | undefined {
  let jwk: JsonWebKey;
  try {
    jwk = key.export({ format: "jwk" });
  } catch {
    return undefined;
  }
  if (!["P-256", "P-384", "P-521"].includes(String(jwk.crv))) return undefined;
  return createPrivateKey({ key: jwk, format: "jwk" });
}

/** The EC public point as `crv:x:y` (RFC 7518 §6.2.1), independent of how the curve parameters are encoded. */
function ecPoint(key: KeyObject): string | undefined {
  try {
    const jwk = key.export({ format: "jwk" });
    return `${jwk.crv}:${jwk.x}:${jwk.y}`;
  } catch {
    return undefined;
  }
}

/**
 * True when the private key belongs to the public key (RFC 5280 §4.1.2.7 subjectPublicKeyInfo). EC keys are
 * compared by curve and point, so a certificate with explicit curve parameters matches its named-curve key;
 * other keys by their SPKI DER (RFC 5280 §4.1), which node writes canonically.
 *
 * Not KeyObject.equals: on Node 20, comparing keys of different types leaves an OpenSSL error on the thread's
 * queue, and the next unrelated createPrivateKey() in the process fails with "different key types".
 */
export function keyMatches(privateKey: KeyObject, publicKey: KeyObject): boolean {
  try {
    const derived = createPublicKey(privateKey);
    if (derived.asymmetricKeyType !== publicKey.asymmetricKeyType) return false;
    if (derived.asymmetricKeyType === "ec") {
      const a = ecPoint(derived);
      return a !== undefined && a === ecPoint(publicKey);
    }
    const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
    return spki(derived).equals(spki(publicKey));
  } catch {
    return false;
  }
}

/** The key as unencrypted PKCS#8 PEM (RFC 5958 §2 OneAsymmetricKey, RFC 7468 §10 label `PRIVATE KEY`). */
export function privateKeyToPkcs8Pem(privateKey: KeyObject): string {
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  try {
    return pemEncode("PRIVATE KEY", der);
  } finally {
    der.fill(0);
  }
}

/**
 * A PKCS#8 PrivateKeyInfo taken out of a container (PKCS#12 key bag), already decrypted.
 *
 * @param der - PKCS#8 DER; zeroed here.
 * @throws InvalidArgumentError INVALID_PKCS12 (field `field`) when it does not decode, or its curve is unsupported.
 */
export function parseContainedPrivateKey(der: Buffer, field: string): ParsedPrivateKey {
  try {
    const key = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    return toCanonicalKey(key, "pkcs8", false, [], field);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError(X509Reason.INVALID_PKCS12, field, `${field}: its private key could not be decoded as PKCS#8; export the file again`, { cause: err });
  } finally {
    der.fill(0);
  }
}
