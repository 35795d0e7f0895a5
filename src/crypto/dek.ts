/**
 * Data encryption keys (DEKs): the per-instance AES-256 keys that seal secret material (see ARCHITECTURE.md,
 * "Envelope format"). A DEK exists in plaintext only in memory; at rest it is stored wrapped by a root key.
 */
import { randomBytes, randomFillSync } from "node:crypto";

/** DEK length in bytes: AES-256 (FIPS 197), as `enc` A256GCM requires (RFC 7518 §5.3). */
export const DEK_BYTES = 32;

/**
 * Generates a fresh 256-bit DEK from the operating system CSPRNG.
 *
 * The caller owns the buffer and should {@link zero} it once it has been wrapped and cached.
 * A single DEK may seal at most 2^32 values with random 96-bit IVs (NIST SP 800-38D §8.3); callers count
 * encryptions and rotate well before that.
 *
 * @returns 32 random bytes.
 * @example
 * const dek = generateDek();
 * try { const { jwe } = await wrapDek(backend, "default", dek, { instance }); } finally { zero(dek); }
 */
export function generateDek(): Buffer {
  // Buffer.alloc (not allocUnsafe) gives the key its own memory rather than a slice of Node's shared pool,
  // and filling in place avoids an intermediate copy that could not be zeroed.
  return randomFillSync(Buffer.alloc(DEK_BYTES));
}

/**
 * Makes a new DEK id: 16 random bytes (128 bits) as unpadded base64url (RFC 4648 §5), 22 characters.
 *
 * Random rather than sequential so ids reveal nothing about counts or order; URL-safe so it can sit in a JWE
 * `kid` and a database column unescaped.
 *
 * @returns an opaque id such as `"q3Vz8xYb0m0Wm6hUa1T4cA"` (matches `/^[A-Za-z0-9_-]{22}$/`).
 */
export function newDekId(): string {
  return randomBytes(16).toString("base64url");
}

/**
 * Overwrites a buffer with zeros so key material does not linger on the heap after use.
 *
 * Best effort: JavaScript strings and copies made by libraries cannot be wiped, so keep keys in Buffers and
 * zero them as soon as they are no longer needed. A `null`/`undefined` argument is ignored so it can be used in
 * `finally` blocks unconditionally.
 *
 * @param buf the buffer to wipe in place.
 */
export function zero(buf: Buffer | Uint8Array | null | undefined): void {
  if (buf) buf.fill(0);
}
