/**
 * The `local` keystore document (format `certificate-manager/local-keystore/v1`): its types, strict parsing,
 * serialization and the pure changes the backend makes to it. Files and locks are ./files.ts; the backend that
 * uses the keys is ../local.ts.
 *
 * A JSON document, mode 0600, one entry per root key; each version is an RFC 7517 oct JWK with extra members:
 * ```json
 * {
 *   "format": "certificate-manager/local-keystore/v1",
 *   "keys": [
 *     {
 *       "keyId": "default",                       // [a-z][a-z0-9-]{0,62}, as every root key id
 *       "createTime": "2026-12-01T10:00:00.000Z",
 *       "currentVersion": 2,                      // the version wrapKey() uses; key state = its state
 *       "versions": [
 *         { "kty": "oct", "alg": "A256KW", "kid": "local/default/1", "version": 1, "state": "DESTROYED",
 *           "createTime": "...", "updateTime": "...", "destroyTime": "..." },          // no "k": erased
 *         { "kty": "oct", "alg": "A256KW", "kid": "local/default/2", "version": 2, "state": "ENABLED",
 *           "k": "<base64url, 32 bytes>", "createTime": "...", "updateTime": "..." }
 *       ]
 *     }
 *   ]
 * }
 * ```
 * States per version: `ENABLED` (wraps if current, unwraps), `DISABLED` (neither; reversible), `DESTROYED`
 * (terminal; `k` removed from the file).
 */
import { randomBytes } from "node:crypto";

import { RootKeyError } from "../../../domain/errors.js";
import { isRootKeyId, ROOT_KEY_ID_RULE } from "../../../domain/rootkey-id.js";
import { WRAPPED_KEY_INPUT_BYTES, type RootKeyInfo, type RootKeyState } from "../../../domain/rootkey.js";
import { formatRootKeyRef, rootKeyKid } from "../../../domain/rootkey-id.js";

/** The `format` member of a keystore file this code reads and writes. */
export const LOCAL_KEYSTORE_FORMAT = "certificate-manager/local-keystore/v1";

/** Backend name, the first segment of `kid`. */
export const LOCAL_BACKEND = "local";
const STATES: ReadonlySet<string> = new Set<RootKeyState>(["ENABLED", "DISABLED", "DESTROYED"]);
/**
 * Key ids that keystores written before the one root-key id grammar may hold (the keys CLI once allowed upper
 * case and `_`). Such keys still load, list and change state, so an upgrade never locks an operator out; no
 * instance can name them, and no new key gets such an id.
 */
const LEGACY_KEY_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** One key version as stored (an oct JWK plus lifecycle members). */
export interface LocalKeyVersionRecord {
  kty: "oct";
  alg: "A256KW";
  /** `local/<keyId>/<version>`. */
  kid: string;
  version: number;
  state: RootKeyState;
  /** base64url of the 32-byte KEK; absent once DESTROYED. */
  k?: string;
  createTime: string;
  updateTime: string;
  destroyTime?: string;
}

/** One root key as stored. */
export interface LocalKeyRecord {
  keyId: string;
  createTime: string;
  currentVersion: number;
  versions: LocalKeyVersionRecord[];
}

/** The whole keystore document. */
export interface LocalKeystoreDocument {
  format: typeof LOCAL_KEYSTORE_FORMAT;
  keys: LocalKeyRecord[];
}

/** Thrown for a keystore that cannot be used at all: bad mode, malformed, missing, locked. */
export class KeystoreFileError extends Error {}

/** Error metadata naming a key (and version); `root_key` is the key the contract documents. */
export function meta(keyId: string, version?: number): Record<string, string> {
  return version === undefined
    ? { root_key: formatRootKeyRef(LOCAL_BACKEND, keyId), backend: LOCAL_BACKEND, keyId }
    : { root_key: formatRootKeyRef(LOCAL_BACKEND, keyId), backend: LOCAL_BACKEND, keyId, version: String(version) };
}

const kidOf = (keyId: string, version: number): string => rootKeyKid(LOCAL_BACKEND, keyId, version);

/** A new ENABLED version with a fresh 32-byte KEK from the CSPRNG; `now` is RFC 3339. */
export function newVersionRecord(keyId: string, version: number, now: string): LocalKeyVersionRecord {
  return {
    kty: "oct",
    alg: "A256KW",
    kid: kidOf(keyId, version),
    version,
    state: "ENABLED",
    k: randomBytes(WRAPPED_KEY_INPUT_BYTES).toString("base64url"),
    createTime: now,
    updateTime: now,
  };
}

/** A new root key with version 1 ENABLED. */
export function newKeyRecord(keyId: string, now: string): LocalKeyRecord {
  return { keyId, createTime: now, currentVersion: 1, versions: [newVersionRecord(keyId, 1, now)] };
}

/** The key `keyId` of `doc`. @throws RootKeyError ROOT_KEY_NOT_FOUND */
export function findRecord(doc: LocalKeystoreDocument, keyId: string): LocalKeyRecord {
  const record = doc.keys.find((k) => k.keyId === keyId);
  if (!record) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${LOCAL_BACKEND}/${keyId} does not exist in the keystore`, meta(keyId));
  return record;
}

/** Version `version` of `record`. @throws RootKeyError ROOT_KEY_NOT_FOUND */
export function findVersionRecord(record: LocalKeyRecord, version: number): LocalKeyVersionRecord {
  const v = record.versions.find((x) => x.version === version);
  if (!v) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key version ${kidOf(record.keyId, version)} does not exist`, meta(record.keyId, version));
  return v;
}

/** What the management calls report about a key: no key material. */
export function infoOf(record: LocalKeyRecord): RootKeyInfo {
  const current = record.versions.find((v) => v.version === record.currentVersion)!;
  return {
    backend: LOCAL_BACKEND,
    keyId: record.keyId,
    state: current.state,
    currentVersion: record.currentVersion,
    createTime: record.createTime,
    versions: record.versions
      .map((v) => ({
        kid: v.kid,
        version: v.version,
        state: v.state,
        createTime: v.createTime,
        updateTime: v.updateTime,
        ...(v.destroyTime ? { destroyTime: v.destroyTime } : {}),
      }))
      .sort((a, b) => a.version - b.version),
  };
}

/** The document without `k`, for listing: the in-memory KEKs are the Buffers in #keys only. */
export function stripKeyMaterial(doc: LocalKeystoreDocument): LocalKeystoreDocument {
  return {
    format: doc.format,
    keys: doc.keys.map((k) => ({ ...k, versions: k.versions.map(({ k: _secret, ...rest }) => rest) })),
  };
}

/** The KEK of a validated `k` member, in its own zeroable buffer (the decoded copy is wiped). */
export function decodeKek(k: string): Buffer {
  const raw = Buffer.from(k, "base64url");
  const kek = Buffer.alloc(WRAPPED_KEY_INPUT_BYTES);
  raw.copy(kek);
  raw.fill(0);
  return kek;
}

/** The file text of a document (pretty JSON, trailing newline). */
export function serialize(doc: LocalKeystoreDocument): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Validates a keystore document completely; the error names the problem, never a key. */
export function parseDocument(file: string, text: string): LocalKeystoreDocument {
  const bad = (why: string): never => {
    throw new KeystoreFileError(`keystore ${file} is malformed: ${why}`);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return bad("not JSON");
  }
  const obj = raw as Partial<LocalKeystoreDocument> | null;
  if (!obj || typeof obj !== "object" || obj.format !== LOCAL_KEYSTORE_FORMAT) bad(`format must be "${LOCAL_KEYSTORE_FORMAT}"`);
  if (!Array.isArray(obj!.keys)) bad("keys must be an array");
  const seen = new Set<string>();
  const keys: LocalKeyRecord[] = obj!.keys!.map((k: Partial<LocalKeyRecord>, i: number) => {
    if (!k || typeof k.keyId !== "string" || !(isRootKeyId(k.keyId) || LEGACY_KEY_ID.test(k.keyId))) {
      const shown = typeof k?.keyId === "string" ? ` ${JSON.stringify(k.keyId.slice(0, 80))}` : "";
      return bad(`keys[${i}].keyId${shown} is invalid (${ROOT_KEY_ID_RULE}); fix or remove that key`);
    }
    const keyId = k.keyId;
    if (seen.has(keyId)) bad(`key ${keyId} appears twice`);
    seen.add(keyId);
    if (typeof k.createTime !== "string") bad(`key ${keyId}: createTime missing`);
    if (!Array.isArray(k.versions) || k.versions.length === 0) bad(`key ${keyId}: versions must be a non-empty array`);
    const numbers = new Set<number>();
    const versions = k.versions!.map((v: Partial<LocalKeyVersionRecord>) => {
      // Any positive integer reads (older files); rotate refuses to go past the largest version a kid can name.
      if (!v || !Number.isSafeInteger(v.version) || v.version! < 1) return bad(`key ${keyId}: a version number is invalid`);
      const n = v.version!;
      const where = `key ${keyId} version ${n}`;
      if (numbers.has(n)) bad(`${where} appears twice`);
      numbers.add(n);
      if (v.kty !== "oct" || v.alg !== "A256KW") bad(`${where}: kty must be "oct" and alg "A256KW"`);
      if (v.kid !== kidOf(keyId, n)) bad(`${where}: kid must be "${kidOf(keyId, n)}"`);
      if (typeof v.state !== "string" || !STATES.has(v.state)) bad(`${where}: state must be ENABLED, DISABLED or DESTROYED`);
      if (typeof v.createTime !== "string" || typeof v.updateTime !== "string") bad(`${where}: createTime/updateTime missing`);
      if (v.state === "DESTROYED") {
        if (v.k !== undefined) bad(`${where}: a DESTROYED version must not have k`);
      } else if (typeof v.k !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(v.k) || Buffer.from(v.k, "base64url").toString("base64url") !== v.k) {
        bad(`${where}: k must be base64url of ${WRAPPED_KEY_INPUT_BYTES} bytes`);
      }
      const out: LocalKeyVersionRecord = {
        kty: "oct",
        alg: "A256KW",
        kid: v.kid!,
        version: n,
        state: v.state as RootKeyState,
        ...(v.k !== undefined ? { k: v.k } : {}),
        createTime: v.createTime!,
        updateTime: v.updateTime!,
        ...(typeof v.destroyTime === "string" ? { destroyTime: v.destroyTime } : {}),
      };
      return out;
    });
    if (!Number.isInteger(k.currentVersion) || !numbers.has(k.currentVersion!)) bad(`key ${keyId}: currentVersion must name one of its versions`);
    return { keyId, createTime: k.createTime!, currentVersion: k.currentVersion!, versions };
  });
  return { format: LOCAL_KEYSTORE_FORMAT, keys };
}

/** Marks a version DESTROYED and erases its key material from the document; `now` is RFC 3339. */
export function destroyVersionRecord(v: LocalKeyVersionRecord, now: string): void {
  v.state = "DESTROYED";
  v.updateTime = now;
  v.destroyTime = now;
  delete v.k;
}
