/**
 * Reads a PKCS#12 / PFX file (RFC 7292): the certificates of its certBags and the private keys of its keyBags and
 * pkcs8ShroudedKeyBags, as DER, in file order. Nothing is judged here (which certificate is the leaf, whether the
 * key matches): import.ts does that with the same rules as for PEM input.
 *
 * Decoding uses node-forge, which reads what users have: PBES2 with PBKDF2 and AES-CBC (RFC 8018 §6.2, the
 * OpenSSL 3 default), the PKCS#12 PBE schemes pbeWithSHAAnd3-KeyTripleDES-CBC and pbeWithSHAAnd40BitRC2-CBC
 * (RFC 7292 App. C, `openssl pkcs12 -legacy`, older Windows and Java), and HMAC-SHA-1/-256/-384/-512 MACs
 * (RFC 7292 §5.1, key derived as in App. B). Node cannot: no API of it returns a PFX's contents (tls `pfx` only
 * loads one into a context), and its OpenSSL 3 has RC2 and the PKCS#12 PBEs only in the legacy provider, which
 * Node does not load.
 *
 * A PFX is hostile input that sets its own work factor: each KDF runs as many iterations as the file asks, and
 * forge computes them in pure JavaScript. So:
 * - decoding runs in a worker thread (node:worker_threads, an inline CommonJS source) that never blocks the
 *   server's event loop, has its own heap limit, and is terminated after {@link PKCS12_TIMEOUT_MS};
 * - workers come from the bounded pool of isolate.ts (one per core, at most 4; a bounded queue);
 * - inside the worker, forge's PBKDF2 (RFC 8018 §5.2) and PKCS#12 KDF (RFC 7292 App. B) refuse iteration counts
 *   above {@link MAX_PKCS12_ITERATIONS} before doing any work. The worker has its own instance of forge, so
 *   patching it there touches nothing else in the process. PBKDF2 itself is computed by node:crypto (native),
 *   with the password as UTF-8 octets as OpenSSL does (forge would use the low byte of each UTF-16 code unit);
 *   the PKCS#12 KDF keeps forge's code, which encodes the password as BMPString (RFC 7292 App. B.1) correctly.
 *
 * The passphrase never appears in an error or a log. Key DER comes back from the worker as transferred
 * ArrayBuffers, which the caller owns and zeroes; forge's intermediate copies are JavaScript strings, which
 * cannot be zeroed, and die with the worker's heap when it is terminated right after.
 */
import { X509Certificate } from "node:crypto";
import { createRequire } from "node:module";
import { InvalidArgumentError } from "../domain/errors.js";
import { contentOf, describeOid, sniffChildren, sniffTlv, TAG, type SniffedTlv } from "./der.js";
import { isolatedTaskStats, runIsolated } from "./isolate.js";
import { X509Reason } from "./reasons.js";

/** What a PKCS#12 file holds. */
export interface Pkcs12Contents {
  /** DER of every certificate in the file's certBags (x509Certificate type), in file order. */
  certificates: Buffer[];
  /** DER PKCS#8 PrivateKeyInfo of every key (keyBag or decrypted pkcs8ShroudedKeyBag), in file order. Callers zero them after use. */
  privateKeys: Buffer[];
}

/** Options of {@link readPkcs12}; the defaults are what the service uses. */
export interface Pkcs12ReadOptions {
  /** Worker time limit in milliseconds (default {@link PKCS12_TIMEOUT_MS}); lowered by tests. */
  timeoutMs?: number;
  /** The caller's cancellation (see isolate.ts). */
  signal?: AbortSignal;
}

/**
 * Highest key-derivation iteration count accepted (MAC key, PBKDF2, PKCS#12 PBE). OpenSSL writes 2048, Windows
 * and Java 2000–10,000; NIST SP 800-132 §5.2 asks for at least 1000. At a million, an AES file reads in about
 * 2 s (PBKDF2 is native, the MAC key pure JS) and a legacy 3DES/RC2 file in about 9 s (all pure JS, the 3DES key
 * taking two passes), inside {@link PKCS12_TIMEOUT_MS}; a count of, say, 2^31 would keep a
 * worker busy for hours.
 */
export const MAX_PKCS12_ITERATIONS = 1_000_000;

/**
 * Time a worker may take to read one file before it is terminated: a legacy file at the iteration cap reads in
 * about 6-9 s on an idle core, so this leaves room for a loaded machine.
 */
export const PKCS12_TIMEOUT_MS = 20_000;

/** Old-generation heap of a worker: forge and a 256 KiB file need a few MB. */
const WORKER_HEAP_MB = 64;

const FIELD = "pkcs12";

/** How to make a file that reads: OpenSSL 3's defaults (PBES2/PBKDF2/AES-256-CBC, HMAC-SHA-256 MAC, 2048 iterations). */
const REEXPORT_HINT =
  "export it again with OpenSSL 3's defaults (AES-256-CBC encryption, HMAC-SHA-256 integrity check), e.g. `openssl pkcs12 -export -in cert.pem -inkey key.pem -certfile chain.pem -out bundle.p12`";

function invalid(message: string, opts: { metadata?: Record<string, string>; cause?: unknown } = {}): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_PKCS12, FIELD, `${FIELD}: ${message}`, opts);
}

/**
 * Reads the certificates and private keys of a PKCS#12 file.
 *
 * @param der - the file's bytes (BER/DER PFX, RFC 7292 §4); not modified.
 * @param passphrase - its password; "" when none was given. A file made with an empty password opens with "";
 *   so does one whose MAC was computed with no password at all (as pyca/cryptography and Java write them; OpenSSL
 *   tries both too).
 * @param options - see {@link Pkcs12ReadOptions}.
 * @returns DER certificates and DER PKCS#8 keys in file order; at least one certificate, at most one key.
 * @throws InvalidArgumentError:
 *   - PASSPHRASE_REQUIRED (field `pkcs12`): the MAC (RFC 7292 §5.1) fails, or, without a MAC, decryption fails,
 *     and `passphrase` is "".
 *   - WRONG_PASSPHRASE (field `passphrase`): the same with a non-empty passphrase.
 *   - INVALID_PKCS12 (field `pkcs12`): not a PFX (saying what it is when it is PEM, base64, a DER certificate or
 *     key, a PKCS#7 bundle); an encryption, PRF or MAC algorithm forge cannot read (naming it, metadata
 *     `algorithm`); public-key integrity or privacy mode; an iteration count above MAX_PKCS12_ITERATIONS
 *     (metadata `iterations`, `limit`); no certificate; more than one private key (metadata `count`); reading
 *     takes longer than the time limit or more memory than the worker has; a damaged file.
 * @throws DomainError RESOURCE_EXHAUSTED SERVER_BUSY when the isolated-task queue is full (isolate.ts).
 */
export async function readPkcs12(der: Buffer, passphrase: string, options: Pkcs12ReadOptions = {}): Promise<Pkcs12Contents> {
  const notPfx = describeNonPfx(der);
  if (notPfx !== undefined) {
    throw invalid(`${notPfx}; send the .pfx/.p12 file itself, e.g. one made with \`openssl pkcs12 -export -in cert.pem -inkey key.pem -out bundle.p12\``);
  }
  const outcome = await runWorker(der, passphrase, options.timeoutMs ?? PKCS12_TIMEOUT_MS, options.signal);
  if (outcome.ok) {
    return {
      certificates: outcome.certificates.map((ab) => Buffer.from(ab)),
      privateKeys: outcome.privateKeys.map((ab) => Buffer.from(ab)),
    };
  }
  throw refusalError(outcome.refusal, passphrase, outcome.detail);
}

/** Current use of the worker pool (for tests and metrics). */
export const pkcs12WorkerStats = isolatedTaskStats;

// ---------------------------------------------------------------------------------------------------------------
// Refusals reported by the worker, and their user-facing errors.

/** Why the worker could not return the contents (the worker source below produces exactly these). */
type Refusal =
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

/** Worker reply. `detail` is the library's own message, kept for the error's cause (logs) only. */
type Outcome =
  | { ok: true; certificates: ArrayBuffer[]; privateKeys: ArrayBuffer[] }
  | { ok: false; refusal: Refusal; detail?: string };

function refusalError(r: Refusal, passphrase: string, detail: string | undefined): InvalidArgumentError {
  const cause = detail === undefined ? undefined : new Error(detail);
  const passwordProblem = r.kind === "mac" || (r.kind === "decrypt" && !r.macVerified);
  if (passwordProblem && passphrase === "") {
    return new InvalidArgumentError(
      X509Reason.PASSPHRASE_REQUIRED,
      FIELD,
      `${FIELD}: the PKCS#12 file is protected by a password; send it in passphrase`,
      { cause },
    );
  }
  switch (r.kind) {
    case "mac":
      return new InvalidArgumentError(
        X509Reason.WRONG_PASSPHRASE,
        "passphrase",
        "passphrase: it does not open the PKCS#12 file (the file's integrity check fails with it); send the password the file was exported with",
        { cause },
      );
    case "decrypt":
      if (!r.macVerified) {
        return new InvalidArgumentError(
          X509Reason.WRONG_PASSPHRASE,
          "passphrase",
          "passphrase: it does not decrypt the PKCS#12 file (which has no integrity check, so it may also be damaged); send the password the file was exported with",
          { cause },
        );
      }
      return invalid(
        "the passphrase passes the file's integrity check but does not decrypt its contents: the file was made with separate integrity and encryption passwords (`-twopass`) or is damaged; " +
          REEXPORT_HINT,
        { cause },
      );
    case "iterations":
      return invalid(
        `the file asks for ${r.iterations} key-derivation iterations, more than the limit of ${MAX_PKCS12_ITERATIONS}; ` +
          "export it again with fewer, e.g. with `openssl pkcs12 -export -iter 2048 ...`",
        { metadata: { iterations: String(r.iterations), limit: String(MAX_PKCS12_ITERATIONS) }, cause },
      );
    case "unsupported":
      return unsupportedError(r, cause);
    case "noCertificate":
      return invalid(
        "the file holds no certificate; export it again with the certificate (without `-nocerts`), e.g. `openssl pkcs12 -export -in cert.pem -inkey key.pem -out bundle.p12`",
        { cause },
      );
    case "tooManyKeys":
      return invalid(`the file holds ${r.count} private keys; export only one certificate's key`, {
        metadata: { count: String(r.count) },
        cause,
      });
    case "malformed":
      return invalid(`it is not a valid PKCS#12 (.pfx/.p12) file, or it is damaged or truncated; ${REEXPORT_HINT}`, { cause });
  }
}

function unsupportedError(r: Extract<Refusal, { kind: "unsupported" }>, cause: Error | undefined): InvalidArgumentError {
  const metadata = r.oid ? { algorithm: r.oid } : undefined;
  const named = describeOid(r.oid);
  switch (r.what) {
    case "encryption":
      return invalid(`the file is encrypted with ${named}, which this service cannot read; ${REEXPORT_HINT}`, { metadata, cause });
    case "mac":
      return invalid(`the file's integrity check (MAC) uses ${named}, which this service cannot verify; ${REEXPORT_HINT}`, {
        metadata,
        cause,
      });
    case "integrity":
      return invalid(`the file is protected in public-key integrity mode (${named}) instead of with a password; ${REEXPORT_HINT}`, { metadata, cause });
    case "privacy":
      return invalid(`part of the file is encrypted to a public key (${named}) instead of with a password; ${REEXPORT_HINT}`, { metadata, cause });
    case "bag":
      return invalid(`the file holds a ${named} entry, which this service does not read; export only the certificate, its chain and its key: ${REEXPORT_HINT}`, {
        metadata,
        cause,
      });
    case "certType":
      return invalid(`the file holds a certificate of type ${named}; only X.509 certificates are read; ${REEXPORT_HINT}`, { metadata, cause });
    case "version":
      return invalid(`the file is not PKCS#12 version 3 (RFC 7292 §4); ${REEXPORT_HINT}`, { cause });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Telling a PFX from other things users send, before starting a worker.

/** DER of OID 1.2.840.113549.1.7.2 (PKCS#7 signedData, RFC 2315 §9.1): a .p7b certificate bundle. */
const SIGNED_DATA_OID = Buffer.from("2a864886f70d010702", "hex");

/**
 * Says what `der` is when it is clearly not a PFX (RFC 7292 §4: SEQUENCE { version INTEGER, authSafe
 * ContentInfo SEQUENCE { contentType OID, content [0] EXPLICIT }, macData OPTIONAL }), or undefined when it
 * looks like one and should be decoded.
 */
function describeNonPfx(der: Buffer): string | undefined {
  if (der.length === 0) return "the file is empty";
  const outer = sniffTlv(der, 0);
  if (outer?.tag === TAG.SEQUENCE) {
    const kids = sniffChildren(der, outer, 3);
    if (kids[0]?.tag === TAG.INTEGER && kids[1]?.tag === TAG.SEQUENCE) {
      const info = sniffChildren(der, kids[1], 2);
      if (info[0]?.tag === TAG.OID && info[1]?.tag === TAG.EXPLICIT_0) return undefined; // PFX-shaped: let the decoder judge
    }
    const what = describeDer(der, kids);
    if (what !== undefined) return what;
    return "it is DER, but not a PKCS#12 (.pfx/.p12) file";
  }
  return describeText(der) ?? "it is not a PKCS#12 (.pfx/.p12) file (not DER-encoded binary data)";
}

/** Names common DER structures by their top-level shape. */
function describeDer(der: Buffer, kids: SniffedTlv[]): string | undefined {
  const { SEQUENCE, INTEGER, OCTET_STRING, OID, BIT_STRING } = TAG;
  const tags = kids.map((k) => k.tag);
  if (tags[0] === SEQUENCE && tags[1] === SEQUENCE && tags[2] === BIT_STRING) {
    try {
      new X509Certificate(der);
      return "it is a single DER certificate, not a PKCS#12 file; send it in certificate_der (and its key in private_key_der)";
    } catch {
      return "it is a DER-signed object (a CSR or CRL?), not a PKCS#12 file";
    }
  }
  if (tags[0] === INTEGER && (tags[1] === SEQUENCE || tags[1] === INTEGER || tags[1] === OCTET_STRING)) {
    // PKCS#8 PrivateKeyInfo (RFC 5958), PKCS#1 RSAPrivateKey (RFC 8017 A.1.2), SEC1 ECPrivateKey (RFC 5915).
    return "it is a single DER private key, not a PKCS#12 file; send it in private_key_der with the certificate in certificate_der";
  }
  if (tags[0] === SEQUENCE && tags[1] === OCTET_STRING && tags.length === 2) {
    return "it is an encrypted DER private key (PKCS#8), not a PKCS#12 file; send it in private_key_der with its passphrase and the certificate in certificate_der";
  }
  if (tags[0] === OID && contentOf(der, kids[0]).equals(SIGNED_DATA_OID)) {
    return "it is a PKCS#7 certificate bundle (.p7b), which holds no private key; convert it with `openssl pkcs7 -inform DER -print_certs -in bundle.p7b` and paste the PEM in certificate and intermediates";
  }
  return undefined;
}

/** Names text input: PEM, or base64 of a binary file. */
function describeText(der: Buffer): string | undefined {
  const head = der.subarray(0, 64 * 1024).toString("latin1");
  const pem = /-----BEGIN ([A-Z0-9 ]{1,40})-----/.exec(head);
  if (pem) {
    return `it is PEM text (a "${pem[1]}" block), not a binary PKCS#12 file; put PEM in the certificate, private_key and intermediates fields`;
  }
  const text = der.toString("latin1").replace(/\s+/g, "");
  if (text.length >= 16 && /^[A-Za-z0-9+/]+={0,2}$/.test(text) && Buffer.from(text, "base64")[0] === TAG.SEQUENCE) {
    return "it is base64 text, not the binary file; decode it first (e.g. `base64 -d bundle.p12.b64 > bundle.p12`) and send the bytes";
  }
  return undefined;
}

let forgePath: string | undefined;

/**
 * Reads `der` in an isolated worker (isolate.ts). Rejects with INVALID_PKCS12 on time-out or heap exhaustion.
 */
function runWorker(der: Buffer, passphrase: string, timeoutMs: number, signal?: AbortSignal): Promise<Outcome> {
  // Resolved here, in the main thread, so that it works from the TS sources (vitest) and from dist/ alike.
  forgePath ??= createRequire(import.meta.url).resolve("node-forge");
  // A copy of exactly these bytes (a pooled Buffer's ArrayBuffer may hold other data), moved to the worker.
  const input = new Uint8Array(der);
  return runIsolated<Outcome>({
    source: WORKER_SOURCE,
    workerData: { forgePath, der: input, passphrase, maxIterations: MAX_PKCS12_ITERATIONS },
    transferList: [input.buffer],
    timeoutMs,
    signal,
    heapMb: WORKER_HEAP_MB,
    onTimeout: () =>
      invalid(`reading the file took too long (more than ${timeoutMs / 1000} s; its key derivation is too costly); ${REEXPORT_HINT}`, {
        metadata: { timeoutMs: String(timeoutMs) },
      }),
    onOutOfMemory: (cause) => invalid(`reading the file needs too much memory; ${REEXPORT_HINT}`, { cause }),
  });
}

/**
 * The worker (CommonJS, run with `eval: true`). workerData: forgePath, der (Uint8Array), passphrase,
 * maxIterations. It posts one Outcome; key and certificate DER go as transferred ArrayBuffers.
 *
 * Wrapped forge functions (this worker's own instance, looked up as properties at call time by forge):
 * - pkcs5.pbkdf2 (pbe.js getCipherForPBES2) and pbe.generatePkcs12Key / pkcs12.generateKey (pbe.js
 *   getCipherForPKCS12PBE, pkcs12.js MAC check): iteration cap; PBKDF2 through node:crypto with UTF-8 password.
 * - pbe.getCipher: marks that decryption started (a later failure means a wrong password when there is no
 *   MAC) and turns "unsupported algorithm" errors into a refusal naming the OID.
 * - pki.privateKeyFromAsn1 / pki.certificateFromAsn1: return the ASN.1 untouched, so every key and certificate
 *   (RSA included) comes back as the file's own DER instead of forge's re-encoding of its parsed objects.
 */
const WORKER_SOURCE = String.raw`
"use strict";
const { parentPort, workerData } = require("node:worker_threads");
const nodeCrypto = require("node:crypto");
const forge = require(workerData.forgePath);
const LIMIT = workerData.maxIterations;
const asn1 = forge.asn1;
const pki = forge.pki;

class Refusal extends Error {
  constructor(refusal, cause) {
    super(refusal.kind);
    this.refusal = refusal;
    this.detail = cause && cause.message ? String(cause.message) : undefined;
  }
}

const state = { decrypting: false, macKeyDerived: false };

function capIterations(count) {
  if (count > LIMIT) throw new Refusal({ kind: "iterations", iterations: count });
}

const NATIVE_DIGESTS = { sha1: "sha1", sha256: "sha256", sha384: "sha384", sha512: "sha512", "sha512/224": "sha224" };
const forgePbkdf2 = forge.pkcs5.pbkdf2;
function cappedPbkdf2(password, salt, count, dkLen, md) {
  capIterations(count);
  const pw = Buffer.from(password == null ? "" : String(password), "utf8");
  try {
    const digest = md == null ? "sha1" : typeof md === "object" ? NATIVE_DIGESTS[md.algorithm] : NATIVE_DIGESTS[md];
    if (digest !== undefined && Number.isSafeInteger(count) && count >= 1) {
      return nodeCrypto.pbkdf2Sync(pw, Buffer.from(salt, "latin1"), count, dkLen, digest).toString("latin1");
    }
    return forgePbkdf2(pw.toString("latin1"), salt, count, dkLen, md);
  } finally {
    pw.fill(0);
  }
}
forge.pkcs5.pbkdf2 = cappedPbkdf2;
forge.pbkdf2 = cappedPbkdf2;

const forgePkcs12Key = forge.pbe.generatePkcs12Key;
function cappedPkcs12Key(password, salt, id, iter, n, md) {
  capIterations(iter);
  if (id === 3) state.macKeyDerived = true;
  return forgePkcs12Key(password, salt, id, iter, n, md);
}
forge.pbe.generatePkcs12Key = cappedPkcs12Key;
forge.pkcs12.generateKey = cappedPkcs12Key;

function oidString(value) {
  if (typeof value !== "string" || value === "") return undefined;
  if (/^[0-9]+(\.[0-9]+)+$/.test(value)) return value;
  try { return asn1.derToOid(value); } catch (e) { return undefined; }
}

const forgeGetCipher = forge.pbe.getCipher;
forge.pbe.getCipher = function getCipher(oid, params, password) {
  let cipher;
  try {
    cipher = forgeGetCipher(oid, params, password);
  } catch (e) {
    if (e instanceof Refusal) throw e;
    if (e && (e.oid !== undefined || e.algorithm !== undefined || /unsupported|unknown/i.test(String(e.message)))) {
      throw new Refusal({ kind: "unsupported", what: "encryption", oid: oidString(e.oid) || oidString(oid) }, e);
    }
    throw new Refusal({ kind: "malformed" }, e);
  }
  state.decrypting = true;
  return cipher;
};

pki.privateKeyFromAsn1 = function (obj) { return { rawAsn1: obj }; };
pki.certificateFromAsn1 = function (obj) { return { rawAsn1: obj }; };

function classify(e, hasMac) {
  const msg = String(e && e.message);
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

function arrayBufferOf(asn1Object) {
  const bytes = asn1.toDer(asn1Object).getBytes();
  const ab = new ArrayBuffer(bytes.length);
  Buffer.from(ab).write(bytes, "latin1");
  return ab;
}

const input = Buffer.from(workerData.der.buffer, workerData.der.byteOffset, workerData.der.byteLength).toString("latin1");

function read(password) {
  state.decrypting = false;
  state.macKeyDerived = false;
  let pfxAsn1;
  try {
    pfxAsn1 = asn1.fromDer(forge.util.createBuffer(input), { strict: true, parseAllBytes: true, decodeBitStrings: false });
  } catch (e) {
    throw new Refusal({ kind: "malformed" }, e);
  }
  const hasMac = Array.isArray(pfxAsn1.value) && pfxAsn1.value.length > 2;
  let pfx;
  try {
    pfx = forge.pkcs12.pkcs12FromAsn1(pfxAsn1, false, password);
  } catch (e) {
    if (e instanceof Refusal) throw e;
    throw new Refusal(classify(e, hasMac), e);
  }
  const certs = [];
  const keys = [];
  for (const safe of pfx.safeContents) {
    for (const bag of safe.safeBags) {
      if (bag.type === pki.oids.certBag) {
        const raw = bag.asn1 || (bag.cert && bag.cert.rawAsn1) || (bag.cert && pki.certificateToAsn1(bag.cert));
        certs.push(raw);
      } else if (bag.type === pki.oids.keyBag || bag.type === pki.oids.pkcs8ShroudedKeyBag) {
        const raw = bag.asn1 || (bag.key && bag.key.rawAsn1) || (bag.key && pki.wrapRsaPrivateKey(pki.privateKeyToAsn1(bag.key)));
        keys.push(raw);
      }
    }
  }
  return { certs, keys };
}

function main() {
  const passphrase = workerData.passphrase;
  let contents;
  try {
    contents = read(passphrase);
  } catch (first) {
    const refusal = first.refusal;
    // An empty password has two encodings in the PKCS#12 KDF (RFC 7292 App. B.1): two zero bytes, or no bytes
    // at all (pyca/cryptography, Java). OpenSSL tries both; so do we.
    const retry = passphrase === "" && refusal && (refusal.kind === "mac" || refusal.kind === "decrypt");
    if (!retry) return { ok: false, refusal: refusal || { kind: "malformed" }, detail: refusal ? first.detail : String(first && first.message) };
    try {
      contents = read(null);
    } catch (second) {
      return { ok: false, refusal, detail: first.detail };
    }
  }
  if (contents.certs.length === 0) return { ok: false, refusal: { kind: "noCertificate" } };
  if (contents.keys.length > 1) return { ok: false, refusal: { kind: "tooManyKeys", count: contents.keys.length } };
  try {
    return { ok: true, certificates: contents.certs.map(arrayBufferOf), privateKeys: contents.keys.map(arrayBufferOf) };
  } catch (e) {
    return { ok: false, refusal: { kind: "malformed" }, detail: String(e && e.message) };
  }
}

const outcome = main();
const transfer = outcome.ok ? outcome.certificates.concat(outcome.privateKeys) : [];
parentPort.postMessage(outcome, transfer);
`;
