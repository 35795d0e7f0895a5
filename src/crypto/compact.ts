/**
 * Strict parsing of JWE Compact Serialization (RFC 7516 §7.1), shared by the sealed fields (fastjwe.ts,
 * sealed-field.ts), the wrapped DEKs (wrapped-dek.ts) and the tests' node-jose reference.
 *
 * Every failure throws the same {@link DecryptionError} (RFC 7516 §11.5: do not tell an attacker which check
 * failed); the internal cause is kept for logs only.
 */
import { DecryptionError } from "../domain/errors.js";
import { WRAPPED_KEY_BYTES } from "../domain/rootkey.js";

/** The only content encryption we accept: AES-256-GCM (RFC 7518 §5.3). */
export const ENC_A256GCM = "A256GCM";
/** Direct use of a shared symmetric key as the CEK (RFC 7518 §4.5). */
export const ALG_DIR = "dir";
/** AES-256 Key Wrap of the CEK (RFC 7518 §4.4, RFC 3394). */
export const ALG_A256KW = "A256KW";

/** GCM IV length for JWE: 96 bits (RFC 7518 §5.3, NIST SP 800-38D §5.2.1.1). */
export const GCM_IV_BYTES = 12;
/** GCM tag length for JWE: 128 bits (RFC 7518 §5.3). Shorter tags are refused (truncation attacks). */
export const GCM_TAG_BYTES = 16;
/** RFC 3394 output for a 256-bit CEK: 32 bytes + the 8-byte integrity block. */
const A256KW_ENCRYPTED_KEY_BYTES = WRAPPED_KEY_BYTES;

/** Header names a caller may not set: the algorithm fields are ours, and we support no zip or extensions. */
export const RESERVED_HEADER_NAMES: ReadonlySet<string> = new Set(["alg", "enc", "zip", "crit"]);

/** Longest protected header segment we parse, in characters (ours are ~200); bounds work on hostile input. */
const MAX_PROTECTED_B64_CHARS = 8192;

const B64URL = /^[A-Za-z0-9_-]*$/;
const B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** The five parts of a compact JWE, decoded. */
export interface CompactParts {
  /** Segment 1 exactly as received: its ASCII bytes are the GCM AAD (RFC 7516 §5.1 step 14). */
  protectedB64: string;
  /** Segment 1 decoded and parsed. */
  header: Record<string, unknown>;
  encryptedKey: Buffer;
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

/** Throws the one opaque decryption error; `why` goes to `cause` for logs. */
export function fail(why: string, cause?: unknown): never {
  throw new DecryptionError(undefined, cause === undefined ? new Error(why) : new Error(why, { cause }));
}

/**
 * Decodes unpadded base64url (RFC 4648 §5, RFC 7515 §2) strictly: only the URL-safe alphabet, no padding, and
 * the canonical encoding only (Node's decoder silently skips bad characters and ignores trailing bits, which
 * would let two different strings decode to the same bytes).
 *
 * @throws DecryptionError when `s` is not canonical base64url.
 */
export function b64uDecodeStrict(s: string): Buffer {
  const rem = s.length % 4;
  if (rem === 1 || !B64URL.test(s)) fail("invalid base64url");
  // Canonical form: the bits of the last character beyond the encoded bytes must be zero (RFC 4648 §3.5).
  // Checked on that one character rather than by re-encoding, which would cost as much as the decode.
  if (rem !== 0) {
    const last = B64URL_ALPHABET.indexOf(s[s.length - 1]!);
    if ((last & (rem === 2 ? 0x0f : 0x03)) !== 0) fail("non-canonical base64url");
  }
  return Buffer.from(s, "base64url");
}

/**
 * Splits and decodes a compact JWE: exactly 5 `.`-separated base64url segments, the first a JSON object
 * (RFC 7516 §7.1, §5.2 steps 1-4). Checks shapes only; algorithm checks are {@link assertAlgorithms}.
 *
 * @throws DecryptionError on any malformation.
 */
export function splitCompact(jwe: unknown): CompactParts {
  if (typeof jwe !== "string") fail("JWE is not a string");
  const seg = jwe.split(".");
  if (seg.length !== 5) fail("JWE compact serialization must have 5 segments");
  const [protectedB64, ek, iv, ct, tag] = seg as [string, string, string, string, string];
  return {
    protectedB64,
    header: decodeHeader(protectedB64),
    encryptedKey: b64uDecodeStrict(ek),
    iv: b64uDecodeStrict(iv),
    ciphertext: b64uDecodeStrict(ct),
    tag: b64uDecodeStrict(tag),
  };
}

function decodeHeader(protectedB64: string): Record<string, unknown> {
  if (protectedB64.length === 0 || protectedB64.length > MAX_PROTECTED_B64_CHARS) fail("bad protected header size");
  const raw = b64uDecodeStrict(protectedB64);
  let parsed: unknown;
  try {
    // fatal: a header that is not valid UTF-8 is refused rather than repaired with U+FFFD.
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
  } catch (err) {
    fail("protected header is not UTF-8 JSON", err);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) fail("protected header is not a JSON object");
  return parsed as Record<string, unknown>;
}

/**
 * Parses only the protected header of a compact JWE, for routing (e.g. by `kid`) before any key is fetched.
 * The result is NOT authenticated until the JWE decrypts: never act on it beyond choosing a key.
 *
 * Strict: exactly 5 segments, each canonical base64url, the first a JSON object (RFC 7516 §7.1).
 *
 * @returns the header object, e.g. `{ alg: "dir", enc: "A256GCM", kid: "q3Vz8xYb0m0Wm6hUa1T4cA", ... }`.
 * @throws DecryptionError when the JWE is malformed.
 * @example
 * const { kid } = parseProtectedHeader(jwe); // then fetch the key named by kid
 */
export function parseProtectedHeader(jwe: string): Record<string, unknown> {
  return splitCompact(jwe).header;
}

/**
 * Allow-lists the algorithms of a parsed JWE and the sizes they imply. Refuses `none`, RSA, other `enc`
 * values, `zip` (compression before encryption leaks length, and we never write it) and `crit` (we implement
 * no extensions, RFC 7516 §4.1.13).
 *
 * @param alg the one `alg` accepted: `dir` (empty encrypted key, RFC 7518 §4.5) or `A256KW` (40-byte
 *        encrypted key, RFC 3394 §2.2.1).
 * @throws DecryptionError when anything else is found.
 */
export function assertAlgorithms(parts: CompactParts, alg: typeof ALG_DIR | typeof ALG_A256KW): void {
  const h = parts.header;
  if (h.alg !== alg) fail("alg not allowed");
  if (h.enc !== ENC_A256GCM) fail("enc not allowed");
  if ("zip" in h) fail("zip not allowed");
  if ("crit" in h) fail("crit not supported");
  const expectedKeyLength = alg === ALG_DIR ? 0 : A256KW_ENCRYPTED_KEY_BYTES;
  if (parts.encryptedKey.length !== expectedKeyLength) fail("bad encrypted key length");
  if (parts.iv.length !== GCM_IV_BYTES) fail("bad IV length");
  if (parts.tag.length !== GCM_TAG_BYTES) fail("bad tag length");
}

/**
 * Checks header fields supplied by a caller for encryption: string values only, and none of the names we set
 * ourselves ({@link RESERVED_HEADER_NAMES}); `kid` is required so every ciphertext names its key.
 *
 * @throws TypeError on a programming error (these are never user input).
 */
export function checkHeaderInput(header: Record<string, string>): void {
  if (header === null || typeof header !== "object") throw new TypeError("protected header must be an object");
  for (const [name, value] of Object.entries(header)) {
    if (RESERVED_HEADER_NAMES.has(name)) throw new TypeError(`protected header field "${name}" is set by the crypto layer`);
    if (typeof value !== "string") throw new TypeError(`protected header field "${name}" must be a string`);
  }
  if (typeof header.kid !== "string" || header.kid.length === 0) throw new TypeError("protected header needs a non-empty kid");
}
