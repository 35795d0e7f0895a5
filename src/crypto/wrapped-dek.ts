/**
 * The wrapped-DEK format, framed and opened here for every root-key backend: a backend only wraps and unwraps
 * key bytes (RFC 3394), whatever it is (a keystore file, an HSM's C_WrapKey, a cloud KMS).
 *
 * JWE compact serialization (RFC 7516 §7.1), `alg` A256KW (RFC 7518 §4.4), `enc` A256GCM (RFC 7518 §5.3):
 * ```
 * protected header  {"alg":"A256KW","enc":"A256GCM","kid":"<backend>/<root key id>/<version>","cm_instance":"instances/<id>"}
 * CEK               32 random bytes, drawn here
 * encrypted key     RFC 3394 wrap of the CEK by root key version <version> (the backend's wrapKey): 40 bytes
 * ciphertext, tag   AES-256-GCM of the DEK under the CEK, 96-bit random IV, AAD = ASCII(BASE64URL(header))
 * ```
 * The header is authenticated (it is the AAD), so a wrapped DEK moved to another instance fails to unwrap, and
 * `kid` says which backend, key and version can unwrap it. node-jose reads what this writes and this reads what
 * node-jose writes with the same key material (test/unit/crypto.wrapped-dek.test.ts).
 *
 * **Instance layer.** What is stored for a DEK is that JWE wrapped once more, the same way, under the instance's
 * own key (`i-<uuid>` in the same backend, see domain/rootkey-id.ts): the payload is the root-key JWE above
 * (ASCII), and the header gains `"cm_layer":"instance"`:
 * ```
 * protected header  {"alg":"A256KW","cm_layer":"instance","enc":"A256GCM","kid":"<backend>/i-<uuid>/<version>","cm_instance":"instances/<id>"}
 * ```
 * Opening needs both keys: the root key (the customer disables or destroys it to cut access) and the instance
 * key (destroyed when the instance is reclaimed, so a copy of the database taken before opens nothing). Adding
 * the layer needs only the instance key, so existing DEKs move to it without their root key being used.
 */
import { randomBytes, randomFillSync } from "node:crypto";

import { RootKeyError } from "../domain/errors.js";
import { isInstanceName } from "../domain/names.js";
import { WRAPPED_KEY_BYTES, type RootKeyBackend } from "../domain/rootkey.js";
import { instanceKeyId, isInstanceKeyId, isRootKeyId, isRootKeyVersion, parseRootKeyKid, ROOT_KEY_ID_RULE, rootKeyKid } from "../domain/rootkey-id.js";
import { ALG_A256KW, ENC_A256GCM, GCM_IV_BYTES, assertAlgorithms, fail, splitCompact } from "./compact.js";
import { DEK_BYTES, zero } from "./dek.js";
import { gcmOpen, gcmSeal } from "./fastjwe.js";

/** Authenticated context bound into every wrapped DEK. */
export interface WrapContext {
  /** Resource name of the owning instance, `instances/{instance}`. */
  instance: string;
}

/** A DEK wrapped by {@link wrapDek}. */
export interface WrappedDek {
  /** The JWE compact serialization that is stored. */
  jwe: string;
  /** The root key version that wrapped it (also in `kid`). */
  version: number;
}

/** The exact header field set of a wrapped DEK (sorted); anything more or less is refused. */
const HEADER_FIELDS = "alg,cm_instance,enc,kid";

function checkContext(context: WrapContext): void {
  if (!context || !isInstanceName(context.instance)) throw new TypeError("WrapContext.instance must be a resource name instances/{uuid}");
}

/** The exact header field set of the instance layer (sorted). */
const LAYER_HEADER_FIELDS = "alg,cm_instance,cm_layer,enc,kid";
const INSTANCE_LAYER = "instance";

/** Refuses a key id no `kid` can carry: what is wrapped under it could never be unwrapped. */
function checkWrapKeyId(backend: RootKeyBackend, keyId: string): void {
  if (!isRootKeyId(keyId)) {
    const ref = `${backend.name}/${String(keyId).slice(0, 80)}`;
    throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${ref} cannot exist (${ROOT_KEY_ID_RULE}); fix the key id`, { root_key: ref });
  }
}

/** A256KW + A256GCM JWE of `payload` under the current version of `keyId`; `extra` joins the header. */
async function seal(backend: RootKeyBackend, keyId: string, payload: Buffer, context: WrapContext, extra: Record<string, string>): Promise<WrappedDek> {
  const cek = randomFillSync(Buffer.alloc(DEK_BYTES));
  try {
    const { version, wrapped } = await backend.wrapKey(keyId, cek);
    // Checked before anything is stored: a misbehaving backend must not leave DEKs that can never unwrap.
    if (!isRootKeyVersion(version) || !Buffer.isBuffer(wrapped) || wrapped.length !== WRAPPED_KEY_BYTES) {
      throw new TypeError(`root-key backend ${backend.name} returned a key wrap that is not RFC 3394 of 32 bytes under a valid version`);
    }
    const header = { alg: ALG_A256KW, ...extra, enc: ENC_A256GCM, kid: rootKeyKid(backend.name, keyId, version), cm_instance: context.instance };
    const protectedB64 = Buffer.from(JSON.stringify(header), "utf8").toString("base64url");
    const iv = randomBytes(GCM_IV_BYTES);
    const { ciphertext, tag } = gcmSeal(cek, protectedB64, iv, payload);
    const jwe = [protectedB64, wrapped.toString("base64url"), iv.toString("base64url"), ciphertext.toString("base64url"), tag.toString("base64url")].join(".");
    return { jwe, version };
  } finally {
    zero(cek);
  }
}

/**
 * Wraps a root-key JWE made by {@link wrapDek} under the current version of the instance's own key `keyId`
 * (the instance layer, see the module comment). No root key is used.
 *
 * @param inner the root-key JWE, bound to `context.instance`.
 * @returns the stored JWE and the instance key version used.
 * @throws RootKeyError from `backend.wrapKey` (ROOT_KEY_NOT_FOUND when the instance key does not exist);
 *         DecryptionError when `inner` is not a wrapped DEK of this instance; TypeError on a bad context.
 */
export async function wrapInstanceLayer(backend: RootKeyBackend, keyId: string, inner: string, context: WrapContext): Promise<WrappedDek> {
  checkContext(context);
  checkWrapKeyId(backend, keyId);
  const parts = splitCompact(inner);
  if (isLayered(parts.header) || parts.header.cm_instance !== context.instance) fail("not a root-key wrapped DEK of this instance");
  const payload = Buffer.from(inner, "ascii");
  try {
    return await seal(backend, keyId, payload, context, { cm_layer: INSTANCE_LAYER });
  } finally {
    payload.fill(0);
  }
}

/** True when `jwe` carries the instance layer. @throws DecryptionError when it is not a compact JWE. */
export function hasInstanceLayer(jwe: string): boolean {
  return isLayered(splitCompact(jwe).header);
}

function isLayered(header: Record<string, unknown>): boolean {
  return header.cm_layer === INSTANCE_LAYER;
}

/**
 * Opens the instance layer of a stored wrapped DEK: strict parsing as {@link unwrapDek}, the exact layer header,
 * a `kid` naming a version of the instance key `keyId` of this backend; then the backend unwraps and GCM
 * authenticates.
 *
 * @returns the root-key JWE inside, and the instance key version that wrapped it.
 * @throws DecryptionError when malformed, tampered, bound to another instance or under another key;
 *         RootKeyError from the backend (ROOT_KEY_DESTROYED or NOT_FOUND once the instance was reclaimed).
 */
export async function unwrapInstanceLayer(backend: RootKeyBackend, keyId: string, jwe: string, context: WrapContext): Promise<{ inner: string; version: number }> {
  checkContext(context);
  const parts = splitCompact(jwe);
  assertAlgorithms(parts, ALG_A256KW);
  const header = parts.header;
  if (Object.keys(header).sort().join(",") !== LAYER_HEADER_FIELDS || !isLayered(header)) fail("unexpected instance layer header");
  const ref = parseRootKeyKid(header.kid);
  if (!ref || ref.backend !== backend.name || ref.keyId !== keyId) fail("kid does not name this instance's key");
  if (header.cm_instance !== context.instance) fail("wrapped DEK belongs to another instance");
  const cek = await backend.unwrapKey(ref.keyId, ref.version, parts.encryptedKey);
  try {
    const payload = gcmOpen(cek, parts.protectedB64, parts.iv, parts.ciphertext, parts.tag);
    const inner = payload.toString("ascii");
    payload.fill(0);
    return { inner, version: ref.version };
  } finally {
    zero(cek);
  }
}

/**
 * Wraps a DEK under the current version of root key `keyId` of `backend`.
 *
 * @param dek 32 bytes; not retained or zeroed.
 * @param context `instance` = `instances/{uuid}`, bound into the authenticated header.
 * @returns the JWE and the root key version used.
 * @throws RootKeyError ROOT_KEY_NOT_FOUND for an id outside the grammar, else whatever `backend.wrapKey` throws;
 *         TypeError on a bad DEK size or context.
 * @example
 * const { jwe, version } = await wrapDek(backend, "default", dek, { instance: "instances/0193..." });
 */
export async function wrapDek(backend: RootKeyBackend, keyId: string, dek: Buffer, context: WrapContext): Promise<WrappedDek> {
  if (!Buffer.isBuffer(dek) || dek.length !== DEK_BYTES) throw new TypeError(`dek must be a ${DEK_BYTES}-byte Buffer`);
  checkContext(context);
  checkWrapKeyId(backend, keyId);
  return seal(backend, keyId, dek, context, {});
}

/**
 * Unwraps a DEK made by {@link wrapDek} (or by any RFC 7516 library with the same key material): strict compact
 * parsing, `alg`/`enc` allow-list, the exact header field set, a `kid` naming a version of a root key of this
 * backend, `cm_instance` equal to `context.instance`; then the backend unwraps the CEK (its errors say when the
 * key is disabled or destroyed) and AES-256-GCM authenticates header and DEK.
 *
 * @returns the 32-byte DEK; the caller zeroes it.
 * @throws DecryptionError when the JWE is malformed, names another backend, is tampered, bound to another
 *         instance or wrapped under another key (one message for all, RFC 7516 §11.5); RootKeyError from the
 *         backend for the key version itself; TypeError on a bad context.
 * @example
 * const dek = await unwrapDek(backend, record.wrappedKey, { instance: "instances/0193..." });
 */
export async function unwrapDek(backend: RootKeyBackend, jwe: string, context: WrapContext): Promise<Buffer> {
  checkContext(context);
  const parts = splitCompact(jwe);
  assertAlgorithms(parts, ALG_A256KW);
  const header = parts.header;
  if (Object.keys(header).sort().join(",") !== HEADER_FIELDS) fail("unexpected wrapped DEK header");
  const ref = parseRootKeyKid(header.kid);
  if (!ref || ref.backend !== backend.name) fail("kid does not name a root key of this backend");
  // An instance key only ever wraps the layer: a DEK wrapped by it alone would skip the root key's control.
  if (isInstanceKeyId(ref.keyId)) fail("kid names an instance key, not a root key");
  // Checked before the root key is used: a DEK replayed from another instance never costs (or shows in the
  // audit log of) another customer's key. GCM authenticates the header below, so the check cannot be forged.
  if (header.cm_instance !== context.instance) fail("wrapped DEK belongs to another instance");
  const cek = await backend.unwrapKey(ref.keyId, ref.version, parts.encryptedKey);
  try {
    const dek = gcmOpen(cek, parts.protectedB64, parts.iv, parts.ciphertext, parts.tag);
    if (dek.length !== DEK_BYTES) {
      zero(dek);
      fail("unexpected DEK size");
    }
    return dek;
  } finally {
    zero(cek);
  }
}

/**
 * Opens a DEK as stored: the instance layer when present (under the instance key of `context.instance`), then the
 * root-key wrap ({@link unwrapDek}). A DEK written before instance keys has only the root-key wrap.
 *
 * @returns the 32-byte DEK; the caller zeroes it.
 * @throws DecryptionError as {@link unwrapDek}; RootKeyError from the backend for either key (the instance key
 *         is ROOT_KEY_DESTROYED or NOT_FOUND once the instance was reclaimed).
 */
export async function unwrapStoredDek(backend: RootKeyBackend, jwe: string, context: WrapContext): Promise<Buffer> {
  checkContext(context);
  if (!hasInstanceLayer(jwe)) return unwrapDek(backend, jwe, context);
  const { inner } = await unwrapInstanceLayer(backend, instanceKeyId(context.instance.slice("instances/".length)), jwe, context);
  return unwrapDek(backend, inner, context);
}
