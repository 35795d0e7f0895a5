/**
 * One sealed secret field (see ARCHITECTURE.md, "Envelope format"): each secret value is a JWE
 * compact serialization, `alg` dir, `enc` A256GCM (RFC 7518 §4.5, §5.3), with protected header
 *
 * ```json
 * {"alg":"dir","enc":"A256GCM","kid":"<dek id>","cm_instance":"instances/a",
 *  "cm_certificate":"instances/a/certificates/c","cm_field":"private_key"}
 * ```
 *
 * The protected header is the GCM AAD (RFC 7516 §5.1 step 14), so the names are authenticated: a value copied
 * to another certificate, instance or field fails to open even though the DEK is the same. (Names are public,
 * so they are compared with plain equality.)
 *
 * Implementation: the node:crypto fast path (fastjwe.ts). The interop tests prove node-jose opens what it writes
 * and it opens what node-jose writes, so either can read data written by the other. Services do not call this
 * module: they hand whole certificate versions to ./envelope.ts.
 */
import { isCertificateNameUnder, isInstanceName } from "../domain/names.js";
import { ALG_DIR, ENC_A256GCM, assertAlgorithms, fail, splitCompact } from "./compact.js";
import { encryptDirFast, openParts } from "./fastjwe.js";

/** Which secret part of a certificate a sealed value holds. */
export type SecretField = "certificate" | "private_key" | "intermediates";

const SECRET_FIELDS: ReadonlySet<string> = new Set<SecretField>(["certificate", "private_key", "intermediates"]);

/** Where a sealed value belongs; bound into the JWE so it cannot be moved. */
export interface SecretContext {
  /** Resource name `instances/{instance}`. */
  instance: string;
  /** Resource name `instances/{instance}/certificates/{certificate}`, under `instance`. */
  certificate: string;
  field: SecretField;
}

/** A plaintext DEK with its id (the JWE `kid`). */
export interface Dek {
  /** Opaque id, see `newDekId` in dek.ts. */
  id: string;
  /** 32 bytes. */
  key: Buffer;
}

/** The exact set of header fields a sealed value has; anything more or less is refused on open. */
const HEADER_FIELDS = ["alg", "enc", "kid", "cm_instance", "cm_certificate", "cm_field"] as const;

/** Rejects contexts that are not well-formed names (a programming error, so TypeError, not DecryptionError). */
function checkContext(ctx: SecretContext): void {
  if (!ctx || !isInstanceName(ctx.instance)) throw new TypeError("SecretContext.instance must be a resource name instances/{uuid}");
  if (!isCertificateNameUnder(ctx.instance, ctx.certificate)) {
    throw new TypeError("SecretContext.certificate must be instances/{uuid}/certificates/{uuid} under SecretContext.instance");
  }
  if (!SECRET_FIELDS.has(ctx.field)) throw new TypeError("SecretContext.field must be certificate, private_key or intermediates");
}

function headerFor(dekId: string, ctx: SecretContext): Record<string, string> {
  return { kid: dekId, cm_instance: ctx.instance, cm_certificate: ctx.certificate, cm_field: ctx.field };
}

/**
 * Encrypts one secret field under a DEK (JWE compact, dir + A256GCM, names in the protected header).
 *
 * Each call uses a fresh random 96-bit IV; a DEK may seal at most 2^32 values (NIST SP 800-38D §8.3), so callers
 * count seals per DEK and rotate well before that.
 *
 * @param dek the instance's active DEK (`key` 32 bytes; not retained or zeroed).
 * @param plaintext the secret bytes (e.g. a PEM body).
 * @param ctx where the value is stored.
 * @returns the compact JWE (ASCII, ~1.34x plaintext + ~260 chars).
 * @throws TypeError on a malformed context or key.
 * @example
 * const jwe = await seal({ id: dekId, key: dek }, Buffer.from(pem), {
 *   instance: "instances/a", certificate: "instances/a/certificates/c", field: "private_key" });
 */
export async function seal(dek: Dek, plaintext: Buffer, ctx: SecretContext): Promise<string> {
  checkContext(ctx);
  if (typeof dek?.id !== "string" || dek.id.length === 0) throw new TypeError("Dek.id must be a non-empty string");
  return encryptDirFast(dek.key, plaintext, headerFor(dek.id, ctx));
}

/**
 * Decrypts one secret field sealed by {@link seal}, after checking that its protected header names exactly
 * `ctx` (and has no other fields). The header is authenticated by GCM, so the check cannot be forged.
 *
 * The DEK is looked up by the JWE's `kid` only after the header matches, so a misplaced value costs no unwrap.
 *
 * @param jwe the stored value.
 * @param resolveDek returns the 32-byte DEK for an id (e.g. `DekCache.getOrLoad`). `open` neither keeps nor
 *        zeroes the returned buffer; errors it throws (e.g. RootKeyError for a disabled root key) propagate as is.
 * @param ctx where the caller expects the value to belong.
 * @returns the plaintext; the caller owns (and may zero) it.
 * @throws DecryptionError when the JWE is malformed, tampered, of another algorithm, bound to another
 *         instance/certificate/field, or sealed under a different DEK (one message for all, RFC 7516 §11.5);
 *         TypeError on a malformed `ctx`.
 * @example
 * const pem = await open(jwe, (id) => dekCache.getOrLoad(id, loadDek), ctx);
 */
export async function open(jwe: string, resolveDek: (dekId: string) => Promise<Buffer>, ctx: SecretContext): Promise<Buffer> {
  checkContext(ctx);
  const parts = splitCompact(jwe);
  assertAlgorithms(parts, ALG_DIR);
  const header = parts.header;
  if (typeof header.kid !== "string" || header.kid.length === 0) fail("missing kid");
  const expected: Record<string, string> = { alg: ALG_DIR, enc: ENC_A256GCM, ...headerFor(header.kid, ctx) };
  if (Object.keys(header).length !== HEADER_FIELDS.length || HEADER_FIELDS.some((n) => header[n] !== expected[n])) {
    fail("protected header does not match the secret context");
  }
  const key = await resolveDek(header.kid);
  // GCM authenticates exactly the header segment checked above (it is the AAD), so the check cannot be forged.
  return openParts(key, parts);
}
