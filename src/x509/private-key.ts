/**
 * The optional private key. Accepted as PKCS#8 (RFC 5958, label `PRIVATE KEY`), encrypted PKCS#8 (RFC 5958 §3
 * EncryptedPrivateKeyInfo with PBES2, RFC 8018 §6.2; label `ENCRYPTED PRIVATE KEY`), PKCS#1 (RFC 8017 A.1.2,
 * `RSA PRIVATE KEY`), SEC1 (RFC 5915, `EC PRIVATE KEY`, optionally after the `EC PARAMETERS` block that
 * `openssl ecparam -genkey` prints), OpenSSL's legacy encrypted PEM (`Proc-Type: 4,ENCRYPTED`, RFC 1421 §4.6),
 * or the same structures as binary DER. Blocks are read by their content, so a mislabelled block (PKCS#8 under
 * `RSA PRIVATE KEY`) still works and is reported. The key is stored as unencrypted PKCS#8 with EC keys on their
 * named curve (RFC 5480 §2.1.1), so every reader handles one format; the stored copy is encrypted anyway.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, X509Certificate, type JsonWebKey, type KeyObject } from "node:crypto";
import type { ImportRepair } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { isEncodedPoint } from "./certificate.js";
import { contentOf, derChildren, describeOid, oidOf, readTlv, TAG, unsignedOf, type Tlv } from "./der.js";
import { legacyEncryptedKey, notAKeyAfterDecryption, pkcs8EncryptedKey, undecryptedKey, type EncryptedKey } from "./encrypted-key.js";
import { looksLikePemText, pemEncode, splitPemBlocks, type PemBlock } from "./pem.js";
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

/** True for labels that hold a private key (or the EC PARAMETERS block that may precede one). */
export function isPrivateKeyLabel(label: string): boolean {
  return label in KEY_LABELS || label === "EC PARAMETERS";
}

/** A decoded private key and what was changed to read it. */
export interface ParsedPrivateKey {
  key: KeyObject;
  repairs: ImportRepair[];
}

function invalid(field: string, message: string, cause?: unknown): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_PRIVATE_KEY, field, `${field}: ${message}`, { cause });
}

/**
 * Decodes one unencrypted private key in DER, by the structure the DER itself has.
 *
 * @param der - key bytes (zeroed by the caller).
 * @param field - request field to name in errors.
 * @param passphrase - "" when none was given (an encrypted key is refused, see undecryptedKey).
 * @returns the key and the format that decoded it.
 * @throws InvalidArgumentError ENCRYPTED_PRIVATE_KEY for an encrypted key; UNSUPPORTED_KEY_ALGORITHM; or
 *   INVALID_PRIVATE_KEY naming what the bytes are when they are not a key (certificate, public key).
 */
function decodeKeyDer(der: Buffer, field: string, passphrase: string): { key: KeyObject; format: KeyFormat } {
  // The structure is read from the DER itself (OpenSSL 3's decoders accept any structure whatever type is
  // asked for, so the label proves nothing), and nothing OpenSSL would have to compute on is decoded: a DSA or
  // DH PKCS#8 key makes it derive the public key from huge parameters on this thread.
  const shape = sniffKeyShape(der);
  if (shape === undefined) {
    throw invalid(field, `${describeNonKey(der)}; send the certificate's private key (PKCS#8, PKCS#1 or SEC1, PEM or DER)`);
  }
  if (shape.format === "encrypted") throw undecryptedKey(pkcs8EncryptedKey(der, field), passphrase);
  if (shape.format === "pkcs8") checkKeyAlgorithm(shape.algorithm, field);
  checkEcPrivateKey(der, shape, field);
  try {
    return { key: createPrivateKey({ key: der, format: "der", type: shape.format }), format: shape.format };
  } catch (err) {
    throw invalid(field, `it could not be decoded as a ${FORMAT_NAMES[shape.format]} private key; export the key again, e.g. with \`openssl pkey -in key.pem\``, err);
  }
}

/** PKCS#8 key algorithms we decode (RFC 8017, RFC 4055, RFC 5480, RFC 8410); anything else is refused unread. */
const KEY_ALGORITHMS: Record<string, string> = {
  "1.2.840.113549.1.1.1": "RSA",
  "1.2.840.113549.1.1.10": "RSA-PSS",
  "1.2.840.10045.2.1": "EC",
  "1.3.101.110": "X25519",
  "1.3.101.111": "X448",
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
};

/** Well-known key algorithms we refuse, named in the message. */
const REFUSED_KEY_ALGORITHMS: Record<string, string> = {
  "1.2.840.10040.4.1": "DSA",
  "1.2.840.113549.1.3.1": "DH (PKCS#3)",
  "1.2.840.10046.2.1": "DH (X9.42)",
};

function checkKeyAlgorithm(oid: string, field: string): void {
  if (oid in KEY_ALGORITHMS) return;
  const name = REFUSED_KEY_ALGORITHMS[oid] ?? `with OID ${oid}`;
  throw new InvalidArgumentError(
    X509Reason.UNSUPPORTED_KEY_ALGORITHM,
    field,
    `${field}: the private key is a ${name} key, which is not supported; supported are RSA, EC P-256/P-384/P-521, Ed25519 and Ed448 keys`,
    { metadata: { keyAlgorithm: name } },
  );
}

/** Orders of the supported named curves (FIPS 186-5 / SEC 2 §2.4.2, §2.5.1, §2.6.1), by curve OID. */
const CURVE_ORDERS: Record<string, bigint> = {
  "1.2.840.10045.3.1.7": 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  "1.3.132.0.34": 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  "1.3.132.0.35":
    0x01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
};

const EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1";

/**
 * Checks an EC private key's DER before node:crypto sees it (Node 20 aborts the process when exporting a key
 * whose scalar is out of range): the curve is a supported named curve or explicit parameters (whose order is
 * then read from them, RFC 3279 §2.3.5), the private scalar d is 0 < d < n (SEC 1 §3.2.1), and an included
 * public key is an encoded point (SEC 1 §2.3.3), never the point at infinity. Other keys pass untouched.
 *
 * @throws InvalidArgumentError UNSUPPORTED_KEY_ALGORITHM for another named curve; INVALID_PRIVATE_KEY otherwise.
 */
function checkEcPrivateKey(der: Buffer, shape: KeyShape, field: string): void {
  if (shape.format === "pkcs1" || shape.format === "encrypted" || (shape.format === "pkcs8" && shape.algorithm !== EC_PUBLIC_KEY_OID)) return;
  const damaged = (why: string) => invalid(field, `the EC private key is damaged: ${why}; export it again from its source`);
  let ecPrivateKey: Buffer;
  let params: { der: Buffer; tlv: Tlv } | undefined;
  try {
    const outer = readTlv(der, 0);
    const kids = derChildren(der, outer);
    if (shape.format === "pkcs8") {
      const [, algId, octets] = kids;
      const [, algParams] = derChildren(der, algId);
      if (algParams) params = { der, tlv: algParams };
      ecPrivateKey = contentOf(der, octets);
    } else {
      ecPrivateKey = der;
    }
    const inner = derChildren(ecPrivateKey, readTlv(ecPrivateKey, 0));
    const d = inner[1];
    if (d?.tag !== TAG.OCTET_STRING) throw damaged("it holds no private scalar");
    const scalar = unsignedOf(contentOf(ecPrivateKey, d));
    for (const opt of inner.slice(2)) {
      const [content] = derChildren(ecPrivateKey, opt);
      if (opt.tag === 0xa0 && !params) params = { der: ecPrivateKey, tlv: content };
      if (opt.tag === 0xa1) {
        // BIT STRING: unused-bits octet, then the point.
        if (!isEncodedPoint(contentOf(ecPrivateKey, content).subarray(1))) throw damaged("its public key is not an encoded curve point");
      }
    }
    if (!params) throw damaged("it names no curve");
    let order: bigint | undefined;
    if (params.tlv.tag === TAG.OID) {
      const oid = oidOf(params.der, params.tlv);
      order = CURVE_ORDERS[oid];
      if (order === undefined) {
        throw new InvalidArgumentError(
          X509Reason.UNSUPPORTED_KEY_ALGORITHM,
          field,
          `${field}: the private key is on the EC curve ${describeOid(oid)}, which is not supported; supported curves are P-256, P-384 and P-521`,
          { metadata: { keyAlgorithm: `EC curve ${oid}` } },
        );
      }
    } else if (params.tlv.tag === TAG.SEQUENCE) {
      // ECParameters: version, fieldID, curve, base, order, cofactor.
      const orderTlv = derChildren(params.der, params.tlv)[4];
      if (orderTlv?.tag !== TAG.INTEGER) throw damaged("its explicit curve parameters have no order");
      order = unsignedOf(contentOf(params.der, orderTlv));
    } else {
      throw damaged("its curve parameters are neither a named curve nor explicit parameters");
    }
    if (scalar <= 0n || scalar >= order) throw damaged("its private scalar is zero or not below the curve order");
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw damaged("its structure is not valid DER");
  }
}

/** The structure of a private key's DER and, for PKCS#8, its algorithm OID. */
type KeyShape = { format: "pkcs8"; algorithm: string } | { format: "pkcs1" | "sec1" | "encrypted" };

/**
 * The private-key structure of `der`, read with the strict DER reader from its first elements, without decoding
 * the key: PKCS#8 PrivateKeyInfo (RFC 5958 §2: version INTEGER, AlgorithmIdentifier SEQUENCE, key OCTET STRING);
 * EncryptedPrivateKeyInfo (§3: exactly an AlgorithmIdentifier SEQUENCE and an OCTET STRING); PKCS#1
 * RSAPrivateKey (RFC 8017 A.1.2: nine or more INTEGERs); SEC1 ECPrivateKey (RFC 5915 §3: version INTEGER, then
 * the key OCTET STRING). undefined when it is none of these, or is not DER.
 */
export function sniffKeyShape(der: Buffer): KeyShape | undefined {
  const { INTEGER, OCTET_STRING, OID, SEQUENCE } = TAG;
  try {
    const outer = readTlv(der, 0);
    if (outer.tag !== SEQUENCE || outer.end !== der.length) return undefined;
    const kids = derChildren(der, outer);
    const tags = kids.map((k) => k.tag);
    if (kids.length === 2 && tags[0] === SEQUENCE && tags[1] === OCTET_STRING) return { format: "encrypted" };
    if (tags[0] !== INTEGER) return undefined;
    if (tags[1] === SEQUENCE && tags[2] === OCTET_STRING) {
      const [oid] = derChildren(der, kids[1]);
      return oid?.tag === OID ? { format: "pkcs8", algorithm: oidOf(der, oid) } : undefined;
    }
    // RSAPrivateKey: version and eight INTEGERs, then (version 1, multi-prime) an otherPrimeInfos SEQUENCE.
    if (kids.length >= 9 && tags.slice(0, 9).every((t) => t === INTEGER) && kids.length <= 10) return { format: "pkcs1" };
    if (tags[1] === OCTET_STRING) return { format: "sec1" };
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
 * @param passphrase - the `passphrase` field; "" when absent. Nothing is decrypted here: an encrypted key goes
 *   to the worker (findEncryptedKey, decryptIsolated) and comes back through parseDecryptedKey.
 * @returns the key (named-curve form for EC) and the repairs made, or undefined when both are empty.
 * @throws InvalidArgumentError (field `private_key`/`private_key_der`): ENCRYPTED_PRIVATE_KEY for an encrypted
 *   key without passphrase (undecryptedKey); INVALID_PRIVATE_KEY when there is no key, more than one, a block of
 *   another kind, bytes that are not a key, or an encryption OpenSSL 3 cannot read (DES-CBC, RC2).
 */
export function parsePrivateKey(text: string, der: Buffer, passphrase: string): ParsedPrivateKey | undefined {
  if (text.trim() !== "") {
    const blocks = splitPemBlocks(text, { field: "private_key", reason: X509Reason.INVALID_PRIVATE_KEY });
    return parsePrivateKeyBlocks(blocks, "private_key", passphrase);
  }
  if (der.length === 0) return undefined;
  const field = "private_key_der";
  try {
    if (looksLikePemText(der)) {
      // PEM text sent in the bytes field: read it as PEM.
      const blocks = splitPemBlocks(der.toString("utf8"), { field, reason: X509Reason.INVALID_PRIVATE_KEY });
      return parsePrivateKeyBlocks(blocks, field, passphrase);
    }
    const { key, format } = decodeKeyDer(der, field, passphrase);
    const repairs: ImportRepair[] = [{ kind: "DER_CONVERTED", description: `${field}: the ${FORMAT_NAMES[format]} DER key was converted to PEM` }];
    return toCanonicalKey(key, format, false, repairs, field);
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

/** One unencrypted key block, read by its content; a label that names another structure is corrected. */
function parseKeyBlock(block: PemBlock, field: string, passphrase: string): ParsedPrivateKey {
  if (/ENCRYPTED/i.test(block.headers["Proc-Type"] ?? "")) {
    throw undecryptedKey(legacyEncryptedKey(block, field, KEY_LABELS[block.label] ?? "pkcs8"), passphrase);
  }
  const repairs: ImportRepair[] = [];
  const { key, format } = decodeKeyDer(block.der, field, passphrase);
  const actual = format === "pkcs8" ? "PRIVATE KEY" : format === "pkcs1" ? "RSA PRIVATE KEY" : "EC PRIVATE KEY";
  if (actual !== block.label) {
    repairs.push({
      kind: "PEM_LABEL_CORRECTED",
      description: `${field}: the block labelled "${block.label}" holds a ${FORMAT_NAMES[format]} key ("${actual}"); it was read as such`,
    });
  }
  return toCanonicalKey(key, format, false, repairs, field);
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

/** base64url (RFC 4648 §5) big-endian unsigned integer of a JWK member (RFC 7518 §6.3) as a BigInt. */
function jwkInt(value: string | undefined): bigint {
  return unsignedOf(Buffer.from(value ?? "", "base64url"));
}

/**
 * True when the private key's secret part belongs to its public part: the public half embedded in a key file is
 * not proof, since a file can pair a certificate's public key with another key's secret. RSA: the CRT members
 * are consistent (n = p·q, dP = d mod (p−1), dQ = d mod (q−1), qInv·q ≡ 1 mod p; RFC 8017 §3.2), so a signature
 * can neither fail nor leak a factor through a faulty CRT step; every type: a signature over random bytes made
 * with the private key verifies with the certificate's public key (FIPS 186-5 §5.4's pairwise consistency test).
 *
 * @param privateKey - the imported key (RSA at most MAX_RSA_BITS, checked by the caller through the certificate).
 * @param publicKey - the certificate's public key.
 */
export function keyPairWorks(privateKey: KeyObject, publicKey: KeyObject): boolean {
  try {
    if (privateKey.asymmetricKeyType === "rsa") {
      const j = privateKey.export({ format: "jwk" });
      const [n, e, d, p, q, dp, dq, qi] = [j.n, j.e, j.d, j.p, j.q, j.dp, j.dq, j.qi].map(jwkInt);
      // d below n and an inverse of e modulo p−1 and q−1 (RFC 8017 §3.2), before any signature: OpenSSL's fault
      // fallback would otherwise exponentiate with a huge wrong d on this thread.
      if (d <= 0n || d >= n || (d * e) % (p - 1n) !== 1n % (p - 1n) || (d * e) % (q - 1n) !== 1n % (q - 1n)) return false;
      // Two-prime keys: n = p·q. Multi-prime keys (RFC 8017 §3.2 version 1) export only their first two primes
      // to JWK; for them p and q must at least divide n.
      const primesFit = p * q === n || (p > 1n && q > 1n && n % p === 0n && n % q === 0n && p * q < n);
      if (!primesFit || d % (p - 1n) !== dp || d % (q - 1n) !== dq || (qi * q) % p !== 1n) return false;
    }
    const eddsa = privateKey.asymmetricKeyType === "ed25519" || privateKey.asymmetricKeyType === "ed448";
    const data = randomBytes(32);
    const signature = sign(eddsa ? null : "sha256", data, privateKey);
    return verify(eddsa ? null : "sha256", data, publicKey, signature);
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
    const shape = sniffKeyShape(der);
    if (shape?.format !== "pkcs8") {
      throw new InvalidArgumentError(X509Reason.INVALID_PKCS12, field, `${field}: its private key is not a PKCS#8 PrivateKeyInfo; export the file again`);
    }
    checkKeyAlgorithm(shape.algorithm, field);
    checkEcPrivateKey(der, shape, field);
    const key = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    return toCanonicalKey(key, "pkcs8", false, [], field);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError(X509Reason.INVALID_PKCS12, field, `${field}: its private key could not be decoded as PKCS#8; export the file again`, { cause: err });
  } finally {
    der.fill(0);
  }
}

/**
 * The request's encrypted private key, its parameters checked, for decryption off the event loop
 * (encrypted-key.ts decryptIsolated), looked for wherever a key may be: its own fields, else a combined PEM in
 * `certificate` (or PEM text sent as `certificate_der`). undefined when that field holds no single encrypted key
 * (the synchronous parse then reports whatever is there).
 *
 * @param input - the ImportInput fields.
 * @throws InvalidArgumentError INVALID_PRIVATE_KEY as legacyEncryptedKey / pkcs8EncryptedKey.
 */
export function findEncryptedKey(input: {
  certificate: string;
  privateKey: string;
  certificateDer?: Buffer;
  privateKeyDer?: Buffer;
}): EncryptedKey | undefined {
  if (input.privateKey.trim() !== "") return encryptedKeyIn(input.privateKey, "private_key");
  if (input.privateKeyDer?.length) return encryptedKeyIn(input.privateKeyDer, "private_key_der");
  return input.certificateDer?.length ? encryptedKeyIn(input.certificateDer, "certificate_der") : encryptedKeyIn(input.certificate, "certificate");
}

/** The single encrypted key of one field: PEM text, or bytes (DER, or PEM text sent as bytes). */
function encryptedKeyIn(source: string | Buffer, field: string): EncryptedKey | undefined {
  if (typeof source !== "string" && !looksLikePemText(source)) {
    return sniffKeyShape(source)?.format === "encrypted" ? pkcs8EncryptedKey(source, field) : undefined;
  }
  let blocks: PemBlock[];
  try {
    blocks = splitPemBlocks(source.toString()).filter((b) => b.label in KEY_LABELS);
  } catch {
    return undefined;
  }
  if (blocks.length !== 1) return undefined;
  const [block] = blocks;
  if (/ENCRYPTED/i.test(block.headers["Proc-Type"] ?? "")) return legacyEncryptedKey(block, field, KEY_LABELS[block.label] ?? "pkcs8");
  return sniffKeyShape(block.der)?.format === "encrypted" ? pkcs8EncryptedKey(block.der, field) : undefined;
}

/**
 * A key decrypted by decryptIsolated, as stored: its structure and algorithm read from the DER before
 * node:crypto decodes it (as for an unencrypted key), EC keys on their named curve.
 *
 * @param encrypted - what was decrypted (its field names errors and repairs).
 * @param plain - the decrypted key DER (PKCS#8, or PKCS#1 / SEC1 from a legacy PEM block); zeroed here.
 * @param passphrase - to tell a wrong passphrase (garbage that passed the padding check) from a missing one.
 * @throws InvalidArgumentError UNSUPPORTED_KEY_ALGORITHM, INVALID_PRIVATE_KEY, WRONG_PASSPHRASE or
 *   ENCRYPTED_PRIVATE_KEY.
 */
export function parseDecryptedKey(encrypted: EncryptedKey, plain: Buffer, passphrase: string): ParsedPrivateKey {
  try {
    const shape = sniffKeyShape(plain);
    if (shape === undefined || shape.format === "encrypted") throw notAKeyAfterDecryption(encrypted, passphrase);
    const { key, format } = decodeKeyDer(plain, encrypted.field, "");
    const repairs: ImportRepair[] = [
      { kind: "PRIVATE_KEY_DECRYPTED", description: `${encrypted.field}: the key (${encrypted.what}) was decrypted with the passphrase` },
    ];
    return toCanonicalKey(key, format, true, repairs, encrypted.field);
  } finally {
    plain.fill(0);
  }
}
