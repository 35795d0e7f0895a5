/**
 * Root-key version objects in a PKCS#11 token and the HSM key wrap, for the `pkcs11` backend (../pkcs11.ts).
 *
 * Root key `keyId` version N is one secret-key token object (PKCS#11 v2.40 base, "Secret key objects"):
 * `CKA_CLASS=CKO_SECRET_KEY, CKA_KEY_TYPE=CKK_AES, CKA_VALUE_LEN=32, CKA_LABEL=<keyId>, CKA_ID=<N as ASCII
 * decimal, e.g. "1">, CKA_TOKEN=true, CKA_PRIVATE=true, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false,
 * CKA_WRAP=true, CKA_UNWRAP=true` (ENCRYPT/DECRYPT/SIGN/VERIFY/DERIVE false: key wrap is all it is for).
 * Objects with another key type or size, or a CKA_ID that is not a decimal version, are not root-key versions
 * and are ignored.
 *
 * Key wrap: the 32-byte CEK is imported as a session object (CKA_TOKEN=false, extractable, not sensitive),
 * wrapped with CKM_AES_KEY_WRAP (RFC 3394, default IV, 40 bytes out) under the root key, and destroyed. Unwrap is
 * the reverse: C_UnwrapKey into a session object, read CKA_VALUE, destroy it.
 *
 * @internal Used by src/crypto/rootkeys/pkcs11.ts only.
 */
import { endianness } from "node:os";

import type { Handle, Template } from "pkcs11js";

import { isRootKeyId, parseRootKeyVersion } from "../../../domain/rootkey-id.js";
import { WRAPPED_KEY_BYTES, WRAPPED_KEY_INPUT_BYTES } from "../../../domain/rootkey.js";
import { DecryptionError } from "../../../domain/errors.js";
import { ck, ckrOf, type ModuleEntry } from "./module.js";


/**
 * C_UnwrapKey results that mean "this ciphertext does not unwrap under this key". SoftHSM2 reports a failed
 * RFC 3394 integrity check as CKR_GENERAL_ERROR, so that one counts only while the session still answers.
 */
const UNWRAP_INTEGRITY = new Set<number>([
  ck.CKR_WRAPPED_KEY_INVALID,
  ck.CKR_WRAPPED_KEY_LEN_RANGE,
  ck.CKR_ENCRYPTED_DATA_INVALID,
  ck.CKR_ENCRYPTED_DATA_LEN_RANGE,
  ck.CKR_GENERAL_ERROR,
]);

/** One root-key version object read from the token. */
export interface VersionObject {
  handle: Handle;
  keyId: string;
  version: number;
  wrap: boolean;
  unwrap: boolean;
  extractable: boolean;
}

/** A session on a loaded module, and whether HSM crypto may run on libuv threads (see ../pkcs11.ts). */
export interface TokenSession {
  entry: ModuleEntry;
  session: Handle;
  threaded: boolean;
}

/** Usage attributes a transient CEK object must not have: it exists only to be wrapped or read once. */
const NO_USAGE: Template = [
  { type: ck.CKA_ENCRYPT, value: false },
  { type: ck.CKA_DECRYPT, value: false },
  { type: ck.CKA_WRAP, value: false },
  { type: ck.CKA_UNWRAP, value: false },
  { type: ck.CKA_SIGN, value: false },
  { type: ck.CKA_VERIFY, value: false },
  { type: ck.CKA_DERIVE, value: false },
];

/**
 * A transient CEK as a session object: created to be wrapped (C_WrapKey needs an extractable key, v2.40 base) or
 * unwrapped into and read once (CKA_VALUE), then destroyed; nothing else may use it.
 */
const SESSION_KEY_TEMPLATE: Template = [
  { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
  { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
  { type: ck.CKA_TOKEN, value: false },
  { type: ck.CKA_PRIVATE, value: true },
  { type: ck.CKA_EXTRACTABLE, value: true },
  { type: ck.CKA_SENSITIVE, value: false },
  ...NO_USAGE,
];

/** C_GenerateKey template of a root key version (see the module comment). */
export function rootKeyTemplate(keyId: string, version: number): Template {
  return [
    { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
    { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
    { type: ck.CKA_VALUE_LEN, value: WRAPPED_KEY_INPUT_BYTES },
    { type: ck.CKA_LABEL, value: keyId },
    { type: ck.CKA_ID, value: Buffer.from(String(version), "ascii") },
    { type: ck.CKA_TOKEN, value: true },
    { type: ck.CKA_PRIVATE, value: true },
    { type: ck.CKA_SENSITIVE, value: true },
    { type: ck.CKA_EXTRACTABLE, value: false },
    { type: ck.CKA_MODIFIABLE, value: true },
    { type: ck.CKA_WRAP, value: true },
    { type: ck.CKA_UNWRAP, value: true },
    { type: ck.CKA_ENCRYPT, value: false },
    { type: ck.CKA_DECRYPT, value: false },
    { type: ck.CKA_SIGN, value: false },
    { type: ck.CKA_VERIFY, value: false },
    { type: ck.CKA_DERIVE, value: false },
  ];
}

/** C_FindObjectsInit / C_FindObjects (batches) / C_FindObjectsFinal. */
export function findAll(entry: ModuleEntry, s: Handle, template: Template): Handle[] {
  const p = entry.pkcs11;
  p.C_FindObjectsInit(s, template);
  try {
    const out: Handle[] = [];
    for (;;) {
      const batch = p.C_FindObjects(s, 64);
      out.push(...batch);
      if (batch.length < 64) return out;
    }
  } finally {
    try {
      p.C_FindObjectsFinal(s);
    } catch {
      // The session is failing; the error that matters is the one already thrown (or the next call's).
    }
  }
}

function destroyQuietly(entry: ModuleEntry, s: Handle, obj: Handle): void {
  try {
    entry.pkcs11.C_DestroyObject(s, obj);
  } catch {
    // A session object dies with its session anyway.
  }
}

function readBool(b: Buffer): boolean {
  return b.length > 0 && b[0] !== 0;
}

/** CK_ULONG in host byte order (8 bytes on LP64, 4 on Windows). */
function readUlong(b: Buffer): number {
  const le = endianness() === "LE";
  if (b.length === 8) return Number(le ? b.readBigUInt64LE() : b.readBigUInt64BE());
  if (b.length === 4) return le ? b.readUInt32LE() : b.readUInt32BE();
  return -1;
}

/**
 * Root-key version objects in the token, of one key or of all (one find + one attribute read each).
 * Objects whose label is not a root key id, whose CKA_ID is not a version or whose size is not 256 bits are skipped.
 */
export function collectVersions(t: TokenSession, keyId: string | undefined): VersionObject[] {
  const p = t.entry.pkcs11;
  const template: Template = [
    { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
    { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
    { type: ck.CKA_TOKEN, value: true },
  ];
  if (keyId !== undefined) template.push({ type: ck.CKA_LABEL, value: keyId });
  const out: VersionObject[] = [];
  for (const handle of findAll(t.entry, t.session, template)) {
    const a = p.C_GetAttributeValue(t.session, handle, [
      { type: ck.CKA_LABEL },
      { type: ck.CKA_ID },
      { type: ck.CKA_VALUE_LEN },
      { type: ck.CKA_WRAP },
      { type: ck.CKA_UNWRAP },
      { type: ck.CKA_EXTRACTABLE },
      { type: ck.CKA_SENSITIVE },
    ]);
    const label = a[0]!.value.toString("utf8");
    const id = a[1]!.value.toString("latin1");
    const version = parseRootKeyVersion(id);
    if (!isRootKeyId(label) || version === undefined || readUlong(a[2]!.value) !== WRAPPED_KEY_INPUT_BYTES) continue;
    out.push({
      handle,
      keyId: label,
      version,
      wrap: readBool(a[3]!.value),
      unwrap: readBool(a[4]!.value),
      extractable: readBool(a[5]!.value) || !readBool(a[6]!.value),
    });
  }
  return out;
}

/** C_GenerateKey (CKM_AES_KEY_GEN) of a token object. */
export async function generateKey(t: TokenSession, template: Template): Promise<void> {
  const p = t.entry.pkcs11;
  const mech = { mechanism: ck.CKM_AES_KEY_GEN };
  if (t.threaded) await p.C_GenerateKeyAsync(t.session, mech, template);
  else p.C_GenerateKey(t.session, mech, template);
}

/** RFC 3394 wrap of `cek` under `kek` inside the HSM; the CEK exists there only as a session object. */
export async function hsmWrap(t: TokenSession, kek: Handle, cek: Buffer): Promise<Buffer> {
  const p = t.entry.pkcs11;
  const s = t.session;
  const obj = p.C_CreateObject(s, [...SESSION_KEY_TEMPLATE, { type: ck.CKA_VALUE, value: cek }]);
  try {
    const mech = { mechanism: ck.CKM_AES_KEY_WRAP };
    const buf = Buffer.alloc(WRAPPED_KEY_BYTES + 16);
    const out = t.threaded ? await p.C_WrapKeyAsync(s, mech, kek, obj, buf) : p.C_WrapKey(s, mech, kek, obj, buf);
    if (out.length !== WRAPPED_KEY_BYTES) throw new Error(`C_WrapKey returned ${out.length} bytes, expected ${WRAPPED_KEY_BYTES}`);
    return Buffer.from(out);
  } finally {
    destroyQuietly(t.entry, s, obj);
  }
}

/** RFC 3394 unwrap inside the HSM into a short-lived session object whose value is read and destroyed. */
export async function hsmUnwrap(t: TokenSession, kek: Handle, encryptedKey: Buffer): Promise<Buffer> {
  const p = t.entry.pkcs11;
  const s = t.session;
  let obj: Handle;
  try {
    const mech = { mechanism: ck.CKM_AES_KEY_WRAP };
    obj = t.threaded ? await p.C_UnwrapKeyAsync(s, mech, kek, encryptedKey, SESSION_KEY_TEMPLATE) : p.C_UnwrapKey(s, mech, kek, encryptedKey, SESSION_KEY_TEMPLATE);
  } catch (err) {
    const code = ckrOf(err);
    if (code !== undefined && UNWRAP_INTEGRITY.has(code)) {
      // A dead session also shows as CKR_GENERAL_ERROR on some tokens: this throws the real cause then.
      if (code === ck.CKR_GENERAL_ERROR) p.C_GetSessionInfo(s);
      throw new DecryptionError(undefined, new Error("RFC 3394 integrity check failed in the HSM", { cause: err }));
    }
    throw err;
  }
  try {
    const value = p.C_GetAttributeValue(s, obj, [{ type: ck.CKA_VALUE }])[0]!.value;
    try {
      if (value.length !== WRAPPED_KEY_INPUT_BYTES) throw new DecryptionError(undefined, new Error("unwrapped CEK has the wrong size"));
      // Our own allocation (not the shared pool slab) so zeroing it later zeroes the only JS copy.
      const cek = Buffer.alloc(WRAPPED_KEY_INPUT_BYTES);
      value.copy(cek);
      return cek;
    } finally {
      value.fill(0);
    }
  } finally {
    destroyQuietly(t.entry, s, obj);
  }
}
