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
 * - decoding runs in a worker thread (pkcs12.worker.ts) that never blocks the server's event loop, has its own
 *   heap limit, and is terminated after {@link PKCS12_TIMEOUT_MS};
 * - workers come from the bounded pool of isolate.ts (one per core, at most 4; a bounded queue);
 * - inside the worker, forge's PBKDF2 (RFC 8018 §5.2) and PKCS#12 KDF (RFC 7292 App. B) refuse iteration counts
 *   above {@link MAX_PKCS12_ITERATIONS} before doing any work (PBKDF2 itself runs natively, in node:crypto).
 *
 * The passphrase never appears in an error or a log. Key DER comes back from the worker as transferred
 * ArrayBuffers, which the caller owns and zeroes; forge's intermediate copies are JavaScript strings, which
 * cannot be zeroed, and die with the worker's heap when it is terminated right after.
 */
import { X509Certificate } from "node:crypto";
import { InvalidArgumentError } from "../domain/errors.js";
import { contentOf, describeOid, sniffChildren, sniffTlv, TAG, type SniffedTlv } from "./der.js";
import { runIsolated } from "./isolate.js";
import type { Pkcs12Outcome, Pkcs12Refusal as Refusal, Pkcs12WorkerInput } from "./pkcs12.worker.js";
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

// ---------------------------------------------------------------------------------------------------------------
// Refusals reported by the worker (pkcs12.worker.ts), and their user-facing errors.

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

/**
 * Reads `der` in an isolated worker (isolate.ts). Rejects with INVALID_PKCS12 on time-out or heap exhaustion.
 */
function runWorker(der: Buffer, passphrase: string, timeoutMs: number, signal?: AbortSignal): Promise<Pkcs12Outcome> {
  // A copy of exactly these bytes (a pooled Buffer's ArrayBuffer may hold other data), moved to the worker.
  const input = new Uint8Array(der);
  const workerData: Pkcs12WorkerInput = { der: input, passphrase, maxIterations: MAX_PKCS12_ITERATIONS };
  return runIsolated<Pkcs12Outcome>({
    worker: "pkcs12",
    workerData,
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
