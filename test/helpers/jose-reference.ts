/**
 * The reference implementation the tests hold our JWE formats against: thin functions over node-jose for the two
 * shapes we use (see ARCHITECTURE.md, "Envelope format"). The service writes and reads both formats with
 * node:crypto (src/crypto/fastjwe.ts, src/crypto/wrapped-dek.ts); tests prove node-jose reads what the service
 * writes and the service reads what node-jose writes.
 *
 * - `dir` + `A256GCM`: secret material sealed directly with a DEK (RFC 7518 §4.5, §5.3).
 * - `A256KW` + `A256GCM`: a DEK wrapped by a root key (RFC 7518 §4.4 = RFC 3394 key wrap of a random CEK;
 *   the DEK is the JWE plaintext).
 *
 * All header fields are integrity protected (compact serialization has only the protected header, and its
 * base64url form is the GCM AAD, RFC 7516 §5.1 step 14). Inputs are parsed strictly and algorithms are
 * allow-listed BEFORE node-jose sees them; every decryption failure is the same {@link DecryptionError}
 * (RFC 7516 §11.5).
 */
import jose from "node-jose";

import {
  ALG_A256KW,
  ALG_DIR,
  ENC_A256GCM,
  assertAlgorithms,
  checkHeaderInput,
  fail,
  splitCompact,
} from "../../src/crypto/compact.js";

export { parseProtectedHeader } from "../../src/crypto/compact.js";

/** A decrypted JWE: the plaintext and its (authenticated) protected header. */
export interface DecryptedJwe {
  /** Caller owns it; zero it if it is key material. */
  plaintext: Buffer;
  /** The protected header, e.g. `{ alg: "dir", enc: "A256GCM", kid: "...", cm_instance: "instances/a" }`. */
  header: Record<string, unknown>;
}

const KEY_BYTES = 32;

/**
 * Imports a raw 256-bit key as an oct JWK (RFC 7517 §6.4). Created WITHOUT `alg`: node-jose refuses an oct key
 * carrying `alg: "dir"` for dir + A256GCM.
 */
async function octKey(key: Buffer): Promise<jose.JWK.Key> {
  if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) throw new TypeError(`key must be a ${KEY_BYTES}-byte Buffer`);
  return jose.JWK.asKey({ kty: "oct", k: key.toString("base64url") });
}

/** node-jose's recipient form: explicit `alg`, and `reference: false` so it never adds a `kid` of its own. */
function recipient(key: jose.JWK.Key, alg: string): jose.JWK.Key {
  return { key, header: { alg }, reference: false } as unknown as jose.JWK.Key;
}

async function encrypt(key: Buffer, alg: string, plaintext: Buffer, protectedHeader: Record<string, string>): Promise<string> {
  checkHeaderInput(protectedHeader);
  if (!Buffer.isBuffer(plaintext)) throw new TypeError("plaintext must be a Buffer");
  const jwk = await octKey(key);
  const opts: jose.JWE.EncryptOptions = {
    format: "compact",
    contentAlg: ENC_A256GCM,
    // alg/enc first so the serialized header reads like RFC 7516 examples; compact format protects every field.
    fields: { alg, enc: ENC_A256GCM, ...protectedHeader },
  };
  return jose.JWE.createEncrypt(opts, recipient(jwk, alg)).update(plaintext).final();
}

async function decrypt(key: Buffer, alg: typeof ALG_DIR | typeof ALG_A256KW, jwe: string): Promise<DecryptedJwe> {
  const parts = splitCompact(jwe);
  assertAlgorithms(parts, alg);
  // A wrong-size key is a bug, not an attack: it surfaces as the TypeError it is.
  const jwk = await octKey(key);
  try {
    // node-jose's own allow-list as a second line of defence.
    const result = await jose.JWE.createDecrypt(jwk, { algorithms: [alg, ENC_A256GCM] }).decrypt(jwe);
    // node-jose's own view of the header, so tests compare our parser with an independent one.
    return { plaintext: result.plaintext, header: result.header as Record<string, unknown> };
  } catch (err) {
    return fail("node-jose decrypt failed", err);
  }
}

/**
 * Encrypts `plaintext` directly with a 256-bit key: JWE compact, `alg` dir, `enc` A256GCM (RFC 7518 §4.5,
 * §5.3), random 96-bit IV, 128-bit tag, every header field protected (it is the AAD).
 *
 * @param key 32-byte content encryption key (a DEK). Not retained.
 * @param plaintext any bytes.
 * @param protectedHeader string fields, `kid` required, e.g. `{ kid: dekId, cm_instance: "instances/a" }`;
 *        `alg`, `enc`, `zip`, `crit` are refused (set here).
 * @returns `BASE64URL(header) + ".." + BASE64URL(iv) + "." + BASE64URL(ciphertext) + "." + BASE64URL(tag)`.
 * @throws TypeError on a wrong key size or bad header input.
 * @example
 * const jwe = await encryptDir(dek, Buffer.from(pem), { kid: dekId });
 */
export function encryptDir(key: Buffer, plaintext: Buffer, protectedHeader: Record<string, string>): Promise<string> {
  return encrypt(key, ALG_DIR, plaintext, protectedHeader);
}

/**
 * Decrypts a `dir` + `A256GCM` compact JWE made by {@link encryptDir} (or any RFC 7516 implementation).
 * Anything but exactly `alg: dir`, `enc: A256GCM`, an empty encrypted key, a 96-bit IV and a 128-bit tag is
 * refused before decryption.
 *
 * @param key 32-byte key. Not retained.
 * @returns plaintext and the authenticated protected header.
 * @throws DecryptionError (one message for every cause, RFC 7516 §11.5) when malformed, tampered, of another
 *         algorithm, or encrypted under another key; TypeError when `key` is not 32 bytes.
 * @example
 * const { plaintext, header } = await decryptDir(dek, jwe);
 */
export function decryptDir(key: Buffer, jwe: string): Promise<DecryptedJwe> {
  return decrypt(key, ALG_DIR, jwe);
}

/**
 * Wraps a DEK under a key encryption key: JWE compact, `alg` A256KW, `enc` A256GCM. node-jose draws a random
 * CEK, wraps it with AES Key Wrap (RFC 3394 §2.2.1 via RFC 7518 §4.4; encrypted key = 40 bytes) and encrypts the
 * DEK (the JWE plaintext) with the CEK under AES-256-GCM, header as AAD.
 *
 * @param kek 32-byte root key. Not retained.
 * @param dek the key to protect (normally 32 bytes).
 * @param protectedHeader string fields, `kid` required, e.g. `{ kid: "local/default/1", cm_instance: "instances/a" }`.
 * @returns the wrapped DEK as compact JWE.
 * @throws TypeError on a wrong KEK size or bad header input.
 * @example
 * const wrapped = await wrapA256KW(kek, dek, { kid: "local/default/1", cm_instance: "instances/a" });
 */
export function wrapA256KW(kek: Buffer, dek: Buffer, protectedHeader: Record<string, string>): Promise<string> {
  return encrypt(kek, ALG_A256KW, dek, protectedHeader);
}

/**
 * Unwraps a DEK made by {@link wrapA256KW}: exactly `alg` A256KW, `enc` A256GCM, 40-byte encrypted key
 * (RFC 3394 integrity check, then GCM authentication of header and DEK).
 *
 * @param kek 32-byte root key. Not retained.
 * @returns the DEK as `plaintext` (caller zeroes it) and the authenticated header (check `cm_instance`).
 * @throws DecryptionError (one message for every cause) when malformed, tampered, of another algorithm or
 *         wrapped under another KEK; TypeError when `kek` is not 32 bytes.
 * @example
 * const { plaintext: dek, header } = await unwrapA256KW(kek, wrapped);
 */
export function unwrapA256KW(kek: Buffer, jwe: string): Promise<DecryptedJwe> {
  return decrypt(kek, ALG_A256KW, jwe);
}

