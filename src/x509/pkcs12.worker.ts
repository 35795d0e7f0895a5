/**
 * The PKCS#12 worker (run by isolate.ts, one file per worker): reads a PFX with this worker's own instance of
 * node-forge and posts one {@link Pkcs12Outcome}; key and certificate DER go as transferred ArrayBuffers.
 *
 * Wrapped forge functions (looked up as properties at call time by forge, so patching them here touches nothing
 * outside this worker):
 * - pkcs5.pbkdf2 (pbe.js getCipherForPBES2) and pbe.generatePkcs12Key / pkcs12.generateKey (pbe.js
 *   getCipherForPKCS12PBE, pkcs12.js MAC check): the iteration cap, checked before any work; PBKDF2 (RFC 8018
 *   §5.2) through node:crypto with the password as UTF-8 octets, as OpenSSL does (forge would take the low byte
 *   of each UTF-16 code unit); the PKCS#12 KDF keeps forge's code, which encodes the password as BMPString
 *   (RFC 7292 App. B.1) correctly.
 * - pbe.getCipher: marks that decryption started (a later failure means a wrong password when there is no
 *   MAC) and turns "unsupported algorithm" errors into a refusal naming the OID.
 * - pki.privateKeyFromAsn1 / pki.certificateFromAsn1: return the ASN.1 untouched, so every key and certificate
 *   (RSA included) comes back as the file's own DER instead of forge's re-encoding of its parsed objects.
 */
import { pbkdf2Sync } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import forge from "node-forge";
import { decodeOid } from "./der.js";

/** workerData of this worker. */
export interface Pkcs12WorkerInput {
  /** The PFX bytes (moved into the worker). */
  der: Uint8Array;
  /** "" when none was given. */
  passphrase: string;
  /** Highest key-derivation iteration count to run (MAX_PKCS12_ITERATIONS). */
  maxIterations: number;
}

/** Why the worker could not return the contents. */
export type Pkcs12Refusal =
  /** The MAC does not verify: wrong or missing password. */
  | { kind: "mac" }
  /** Decryption failed; `macVerified` tells whether the MAC had passed with the same password. */
  | { kind: "decrypt"; macVerified: boolean }
  | { kind: "iterations"; iterations: number }
  /** An algorithm or structure forge does not implement; `oid` when known. */
  | { kind: "unsupported"; what: "encryption" | "mac" | "integrity" | "privacy" | "bag" | "certType" | "version"; oid?: string }
  | { kind: "malformed" }
  | { kind: "noCertificate" }
  | { kind: "tooManyKeys"; count: number };

/** The worker's one message. `detail` is the library's own message, kept for the error's cause (logs) only. */
export type Pkcs12Outcome =
  | { ok: true; certificates: ArrayBuffer[]; privateKeys: ArrayBuffer[] }
  | { ok: false; refusal: Pkcs12Refusal; detail?: string };

type Pbkdf2 = (password: string | null, salt: string, count: number, dkLen: number, md?: string | { algorithm: string }) => string;
type Pkcs12Kdf = (password: string | null, salt: unknown, id: number, iter: number, n: number, md?: unknown) => unknown;
/** What forge errors carry besides their message. */
type ForgeError = Error & { oid?: unknown; algorithm?: unknown; contentType?: unknown };
/** A bag whose key or certificate is the raw ASN.1 (see the patched pki functions). */
type RawBag = { type: string; asn1?: forge.asn1.Asn1; key?: { rawAsn1: forge.asn1.Asn1 } | null; cert?: { rawAsn1: forge.asn1.Asn1 } | null };

/** The forge internals used here (not in @types/node-forge, or typed there for other uses). */
const internals = forge as unknown as {
  asn1: { fromDer(bytes: forge.util.ByteBuffer, options: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean }): forge.asn1.Asn1 };
  pbkdf2: Pbkdf2;
  pkcs5: { pbkdf2: Pbkdf2 };
  pbe: { generatePkcs12Key: Pkcs12Kdf; getCipher: (oid: unknown, params: unknown, password: string | null) => unknown };
  pkcs12: { generateKey: Pkcs12Kdf };
  pki: { privateKeyFromAsn1: (obj: forge.asn1.Asn1) => unknown; certificateFromAsn1: (obj: forge.asn1.Asn1) => unknown };
};

class Refusal extends Error {
  readonly detail: string | undefined;
  constructor(
    readonly refusal: Pkcs12Refusal,
    cause?: unknown,
  ) {
    super(refusal.kind);
    this.detail = cause instanceof Error && cause.message ? cause.message : undefined;
  }
}

const { der, passphrase, maxIterations } = workerData as Pkcs12WorkerInput;
const state = { decrypting: false, macKeyDerived: false };

function capIterations(count: number): void {
  if (count > maxIterations) throw new Refusal({ kind: "iterations", iterations: count });
}

const NATIVE_DIGESTS: Record<string, string> = { sha1: "sha1", sha256: "sha256", sha384: "sha384", sha512: "sha512", "sha512/224": "sha224" };
const forgePbkdf2 = internals.pkcs5.pbkdf2;
const cappedPbkdf2: Pbkdf2 = (password, salt, count, dkLen, md) => {
  capIterations(count);
  const pw = Buffer.from(password ?? "", "utf8");
  try {
    const digest = md === undefined ? "sha1" : NATIVE_DIGESTS[typeof md === "object" ? md.algorithm : md];
    if (digest !== undefined && Number.isSafeInteger(count) && count >= 1) {
      return pbkdf2Sync(pw, Buffer.from(salt, "latin1"), count, dkLen, digest).toString("latin1");
    }
    return forgePbkdf2(pw.toString("latin1"), salt, count, dkLen, md);
  } finally {
    pw.fill(0);
  }
};
internals.pkcs5.pbkdf2 = cappedPbkdf2;
internals.pbkdf2 = cappedPbkdf2;

const forgePkcs12Key = internals.pbe.generatePkcs12Key;
const cappedPkcs12Key: Pkcs12Kdf = (password, salt, id, iter, n, md) => {
  capIterations(iter);
  if (id === 3) state.macKeyDerived = true;
  return forgePkcs12Key(password, salt, id, iter, n, md);
};
internals.pbe.generatePkcs12Key = cappedPkcs12Key;
internals.pkcs12.generateKey = cappedPkcs12Key;

/** Dotted OID of a forge value: dotted already, or DER content octets as a binary string. */
function oidString(value: unknown): string | undefined {
  if (typeof value !== "string" || value === "") return undefined;
  if (/^[0-9]+(\.[0-9]+)+$/.test(value)) return value;
  try {
    return decodeOid(Buffer.from(value, "latin1"));
  } catch {
    return undefined;
  }
}

const forgeGetCipher = internals.pbe.getCipher;
internals.pbe.getCipher = (oid, params, password) => {
  let cipher: unknown;
  try {
    cipher = forgeGetCipher(oid, params, password);
  } catch (e) {
    if (e instanceof Refusal) throw e;
    const err = e as ForgeError;
    if (err.oid !== undefined || err.algorithm !== undefined || /unsupported|unknown/i.test(String(err.message))) {
      throw new Refusal({ kind: "unsupported", what: "encryption", oid: oidString(err.oid) ?? oidString(oid) }, e);
    }
    throw new Refusal({ kind: "malformed" }, e);
  }
  state.decrypting = true;
  return cipher;
};

internals.pki.privateKeyFromAsn1 = (obj) => ({ rawAsn1: obj });
internals.pki.certificateFromAsn1 = (obj) => ({ rawAsn1: obj });

/** The refusal a forge error stands for (forge throws plain Errors; their messages are all there is). */
function classify(e: ForgeError, hasMac: boolean): Pkcs12Refusal {
  const msg = String(e?.message);
  if (/MAC could not be verified/.test(msg)) return { kind: "mac" };
  const mac = /unsupported MAC algorithm: *([0-9.]+)/i.exec(msg);
  if (mac) return { kind: "unsupported", what: "mac", oid: mac[1] };
  if (/password integrity mode/.test(msg)) return { kind: "unsupported", what: "integrity", oid: oidString(e.oid) };
  if (/Unsupported PKCS#12 contentType/.test(msg)) return { kind: "unsupported", what: "privacy", oid: oidString(e.contentType) };
  if (/Unsupported PKCS#12 SafeBag type/.test(msg)) return { kind: "unsupported", what: "bag", oid: oidString(e.oid) };
  if (/Unsupported certificate type/.test(msg)) return { kind: "unsupported", what: "certType", oid: oidString(e.oid) };
  if (/version other than 3/.test(msg)) return { kind: "unsupported", what: "version" };
  if (state.decrypting) return { kind: "decrypt", macVerified: hasMac && state.macKeyDerived };
  return { kind: "malformed" };
}

function arrayBufferOf(asn1Object: forge.asn1.Asn1 | undefined): ArrayBuffer {
  if (asn1Object === undefined) throw new Error("a bag without its ASN.1");
  const bytes = forge.asn1.toDer(asn1Object).getBytes();
  const ab = new ArrayBuffer(bytes.length);
  Buffer.from(ab).write(bytes, "latin1");
  return ab;
}

const input = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("latin1");

/** Reads the file with `password` (null: the no-bytes encoding of an empty password). @throws Refusal */
function read(password: string | null): { certs: (forge.asn1.Asn1 | undefined)[]; keys: (forge.asn1.Asn1 | undefined)[] } {
  state.decrypting = false;
  state.macKeyDerived = false;
  let pfxAsn1: forge.asn1.Asn1;
  try {
    pfxAsn1 = internals.asn1.fromDer(forge.util.createBuffer(input), { strict: true, parseAllBytes: true, decodeBitStrings: false });
  } catch (e) {
    throw new Refusal({ kind: "malformed" }, e);
  }
  const hasMac = Array.isArray(pfxAsn1.value) && pfxAsn1.value.length > 2;
  let pfx: forge.pkcs12.Pkcs12Pfx;
  try {
    pfx = forge.pkcs12.pkcs12FromAsn1(pfxAsn1, false, password as string);
  } catch (e) {
    if (e instanceof Refusal) throw e;
    throw new Refusal(classify(e as ForgeError, hasMac), e);
  }
  const certs: (forge.asn1.Asn1 | undefined)[] = [];
  const keys: (forge.asn1.Asn1 | undefined)[] = [];
  for (const safe of pfx.safeContents) {
    for (const bag of safe.safeBags as unknown as RawBag[]) {
      if (bag.type === forge.pki.oids.certBag) certs.push(bag.asn1 ?? bag.cert?.rawAsn1);
      else if (bag.type === forge.pki.oids.keyBag || bag.type === forge.pki.oids.pkcs8ShroudedKeyBag) keys.push(bag.asn1 ?? bag.key?.rawAsn1);
    }
  }
  return { certs, keys };
}

function main(): Pkcs12Outcome {
  let contents: ReturnType<typeof read>;
  try {
    contents = read(passphrase);
  } catch (first) {
    const refusal = first instanceof Refusal ? first.refusal : undefined;
    const detail = first instanceof Refusal ? first.detail : String((first as Error)?.message);
    // An empty password has two encodings in the PKCS#12 KDF (RFC 7292 App. B.1): two zero bytes, or no bytes
    // at all (pyca/cryptography, Java). OpenSSL tries both; so do we.
    const retry = passphrase === "" && (refusal?.kind === "mac" || refusal?.kind === "decrypt");
    if (!retry) return { ok: false, refusal: refusal ?? { kind: "malformed" }, detail };
    try {
      contents = read(null);
    } catch {
      return { ok: false, refusal, detail };
    }
  }
  if (contents.certs.length === 0) return { ok: false, refusal: { kind: "noCertificate" } };
  if (contents.keys.length > 1) return { ok: false, refusal: { kind: "tooManyKeys", count: contents.keys.length } };
  try {
    return { ok: true, certificates: contents.certs.map(arrayBufferOf), privateKeys: contents.keys.map(arrayBufferOf) };
  } catch (e) {
    return { ok: false, refusal: { kind: "malformed" }, detail: String((e as Error)?.message) };
  }
}

const outcome = main();
parentPort!.postMessage(outcome, outcome.ok ? [...outcome.certificates, ...outcome.privateKeys] : []);
