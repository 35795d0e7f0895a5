// Test helpers for the crypto suites (not a test file itself).
import { createCipheriv, randomBytes } from "node:crypto";

import { DecryptionError } from "../../src/domain/errors.js";

/** b64url of a JSON header. */
export function b64Header(header: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(header), "utf8").toString("base64url");
}

/**
 * Builds an AUTHENTIC compact JWE with any header (so a rejection proves the allow-list, not a tag failure):
 * AES-256-GCM under `cek` with AAD = ASCII(b64 header).
 */
export function craftJwe(
  cek: Buffer,
  header: Record<string, unknown>,
  plaintext: Buffer,
  opts: { encryptedKey?: Buffer; tagLength?: number; ivLength?: number } = {},
): string {
  const protectedB64 = b64Header(header);
  const iv = randomBytes(opts.ivLength ?? 12);
  const cipher = createCipheriv("aes-256-gcm", cek, iv, { authTagLength: opts.tagLength ?? 16 });
  cipher.setAAD(Buffer.from(protectedB64, "ascii"));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return [protectedB64, (opts.encryptedKey ?? Buffer.alloc(0)).toString("base64url"), iv.toString("base64url"), ct.toString("base64url"), cipher.getAuthTag().toString("base64url")].join(".");
}

/** Changes segment `i` of a compact JWE so it decodes to different bytes (or is no longer valid). */
export function tamperSegment(jwe: string, i: number): string {
  const seg = jwe.split(".");
  const s = seg[i]!;
  if (s.length === 0) {
    seg[i] = "AAAAAAAAAAAAAAAAAAAAAA"; // non-empty where empty was required
  } else {
    const at = Math.floor(s.length / 2);
    const c = s[at]!;
    seg[i] = s.slice(0, at) + (c === "A" ? "B" : "A") + s.slice(at + 1);
  }
  return seg.join(".");
}

/** Asserts the promise rejects with the one opaque DecryptionError. */
export async function expectDecryptionError(p: Promise<unknown> | (() => unknown)): Promise<void> {
  let err: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof DecryptionError)) throw new Error(`expected DecryptionError, got ${String(err)}`, { cause: err });
  if (err.message !== new DecryptionError().message || err.reason !== "DECRYPTION_FAILED") throw new Error("DecryptionError message/reason differ");
}
