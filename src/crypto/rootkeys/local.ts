/**
 * `local` root-key backend (DESIGN.md "Root-key backends"): root keys (KEKs) in a keystore file on local disk.
 * The embedded default and the provider-managed key; the KEK material is in this process's memory, so use the
 * `pkcs11` backend where a KEK must never leave an HSM.
 *
 * ## Keystore file (format `certificate-manager/local-keystore/v1`)
 * A JSON document, mode 0600, one entry per root key; each version is an RFC 7517 oct JWK with extra members:
 * ```json
 * {
 *   "format": "certificate-manager/local-keystore/v1",
 *   "keys": [
 *     {
 *       "keyId": "default",                       // [A-Za-z0-9][A-Za-z0-9_-]{0,62}
 *       "createTime": "2026-12-01T10:00:00.000Z",
 *       "currentVersion": 2,                      // the version wrap() uses; key state = its state
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
 * (terminal; `k` removed from the file). A wrapped DEK names its version in `kid` = `local/<keyId>/<version>`,
 * so rotation keeps older versions unwrapping.
 *
 * ## File handling
 * - Created on first start with `link(2)` from a fully written temp file: the same no-clobber semantics as
 *   `open(path, 'wx', 0o600)` but never a half-written keystore.
 * - Refused at start (and when re-read) if group or other have any permission bit (`mode & 0o077`).
 * - Every change: cross-process lock file `<path>.lock`, re-read, modify, write temp + fsync + rename + fsync(dir);
 *   the replaced file's bytes are then overwritten with zeros (best effort: SSDs and copy-on-write filesystems
 *   may keep old blocks, so a destroyed key is only as gone as the storage allows).
 * - Re-read automatically when the file changes (inode/size/mtime/ctime checked with one stat per call), so
 *   changes made by the keys CLI reach a running service. Key material is never logged.
 */
import { randomBytes } from "node:crypto";
import { constants as fsConstants, promises as fsp } from "node:fs";
import type { BigIntStats } from "node:fs";
import path from "node:path";

import { AlreadyExistsError, DecryptionError, RootKeyError } from "../../domain/errors.js";
import type { RootKeyBackend, RootKeyDescription, RootKeyState, WrapContext } from "../../domain/rootkey.js";
import { parseProtectedHeader, unwrapA256KW, wrapA256KW } from "../jwe.js";

/** The `format` member of a keystore file this code reads and writes. */
export const LOCAL_KEYSTORE_FORMAT = "certificate-manager/local-keystore/v1";

const BACKEND = "local";
const KEK_BYTES = 32;
const DEK_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const LOCAL_KID = /^local\/([A-Za-z0-9][A-Za-z0-9_-]{0,62})\/([1-9][0-9]{0,8})$/;
const INSTANCE_NAME = /^instances\/[A-Za-z0-9._~-]+$/;
const STATES: ReadonlySet<string> = new Set<RootKeyState>(["ENABLED", "DISABLED", "DESTROYED"]);
const LOCK_WAIT_MS = 5_000;
const LOCK_STALE_MS = 30_000;

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

/** What `listKeys` and the mutators report about a version (never key material). */
export interface LocalKeyVersionInfo {
  kid: string;
  version: number;
  state: RootKeyState;
  createTime: string;
  updateTime: string;
  destroyTime?: string;
}

/** What `listKeys` and the mutators report about a root key (never key material). */
export interface LocalKeyInfo extends RootKeyDescription {
  createTime: string;
  versions: LocalKeyVersionInfo[];
}

/** Options of {@link LocalRootKeyBackend.open}. */
export interface LocalOpenOptions {
  /** Create the keystore (and its directory, mode 0700) when the file does not exist; else fail. */
  createIfMissing: boolean;
  /** Root key created, as version 1, in a new keystore, e.g. `"default"`. */
  defaultKeyId: string;
}

interface MemVersion {
  version: number;
  state: RootKeyState;
  /** Our own copy (Buffer.alloc), zeroed when the keystore is reloaded or closed; absent when destroyed. */
  kek?: Buffer;
}

interface MemKey {
  keyId: string;
  currentVersion: number;
  versions: Map<number, MemVersion>;
}

interface Snapshot {
  doc: LocalKeystoreDocument;
  fingerprint: string;
}

/** Thrown for a keystore that cannot be used at all: bad mode, malformed, missing. */
class KeystoreFileError extends Error {}

/** Root keys in a local keystore file; see the module comment for the file format. */
export class LocalRootKeyBackend implements RootKeyBackend {
  readonly name = BACKEND;
  /** Absolute path of the keystore file. */
  readonly path: string;

  #doc!: LocalKeystoreDocument;
  #keys = new Map<string, MemKey>();
  #fingerprint = "";
  #closed = false;
  /** Serializes this process's mutations (the lock file serializes processes). */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: string) {
    this.path = file;
  }

  /**
   * Opens (or on first start creates) a keystore file. A new keystore gets root key `defaultKeyId`, version 1,
   * ENABLED, with a fresh KEK from the CSPRNG.
   *
   * @param file keystore path; resolved to absolute.
   * @throws Error (startup-fatal, with the fix in the message) when the file is missing and `createIfMissing`
   *         is false, is readable or writable by group/other (`chmod 600` fixes it), is not a regular file, or is
   *         malformed.
   * @example
   * const backend = await LocalRootKeyBackend.open("/var/lib/certmanager/keystore.json",
   *   { createIfMissing: true, defaultKeyId: "default" });
   */
  static async open(file: string, opts: LocalOpenOptions): Promise<LocalRootKeyBackend> {
    checkKeyId(opts.defaultKeyId);
    const backend = new LocalRootKeyBackend(path.resolve(file));
    let exists = true;
    try {
      await fsp.lstat(backend.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      exists = false;
    }
    if (!exists) {
      if (!opts.createIfMissing) {
        throw new Error(`keystore ${backend.path} does not exist; fix the path, or create it (the service creates it on first start; the keys CLI with "init")`);
      }
      await fsp.mkdir(path.dirname(backend.path), { recursive: true, mode: 0o700 });
      const now = new Date().toISOString();
      const doc: LocalKeystoreDocument = { format: LOCAL_KEYSTORE_FORMAT, keys: [newKeyRecord(opts.defaultKeyId, now)] };
      try {
        await writeAtomic(backend.path, serialize(doc), "create");
      } catch (err) {
        // Another process created it first: use theirs (the 'wx' semantics).
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
    }
    try {
      await statChecked(backend.path);
      await backend.#refresh(true);
    } catch (err) {
      // At startup the plain file error (what is wrong, how to fix it) is the useful message.
      throw err instanceof RootKeyError && err.cause instanceof Error ? err.cause : err;
    }
    return backend;
  }

  /**
   * Wraps a DEK under the current version of root key `keyId`: JWE compact, A256KW + A256GCM, protected header
   * `{alg, enc, kid: "local/<keyId>/<version>", cm_instance}` (RFC 7516, RFC 7518 §4.4, RFC 3394).
   *
   * @param dek 32 bytes; not retained or zeroed.
   * @param context `instance` = `instances/{instance}`, bound into the header so the wrapped DEK only unwraps
   *        for that instance.
   * @returns the wrapped DEK.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED | ROOT_KEY_BACKEND_UNAVAILABLE
   *         (keystore unreadable); TypeError on a bad DEK size or context.
   * @example
   * const wrapped = await backend.wrap(dek, "default", { instance: "instances/a" });
   */
  async wrap(dek: Buffer, keyId: string, context: WrapContext): Promise<string> {
    if (!Buffer.isBuffer(dek) || dek.length !== DEK_BYTES) throw new TypeError(`dek must be a ${DEK_BYTES}-byte Buffer`);
    checkContext(context);
    await this.#refresh(false);
    const key = this.#key(keyId);
    const version = this.#usableVersion(key, key.currentVersion);
    // Copy synchronously after lookup: a concurrent reload zeroes the map's buffers, never ours.
    const kek = Buffer.from(version.kek!);
    try {
      return await wrapA256KW(kek, dek, { kid: kidOf(keyId, version.version), cm_instance: context.instance });
    } finally {
      kek.fill(0);
    }
  }

  /**
   * Unwraps a DEK made by {@link wrap}, with the root-key version named by its `kid`, and checks that
   * `cm_instance` in the authenticated header equals `context.instance`.
   *
   * @returns the 32-byte DEK; the caller zeroes it (DekCache does).
   * @throws DecryptionError when the JWE is malformed, not from this backend, tampered, or bound to another
   *         instance (one message for all, RFC 7516 §11.5); RootKeyError ROOT_KEY_NOT_FOUND |
   *         ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED | ROOT_KEY_BACKEND_UNAVAILABLE for the key version itself.
   * @example
   * const dek = await backend.unwrap(wrapped, { instance: "instances/a" });
   */
  async unwrap(jwe: string, context: WrapContext): Promise<Buffer> {
    checkContext(context);
    const claimed = parseProtectedHeader(jwe);
    const m = typeof claimed.kid === "string" ? LOCAL_KID.exec(claimed.kid) : null;
    if (!m) throw new DecryptionError(undefined, new Error("kid is not a local root key"));
    const keyId = m[1]!;
    const versionNo = Number(m[2]);
    await this.#refresh(false);
    const version = this.#usableVersion(this.#key(keyId), versionNo);
    if (claimed.cm_instance !== context.instance) throw new DecryptionError(undefined, new Error("wrapped DEK belongs to another instance"));
    const kek = Buffer.from(version.kek!);
    let dek: Buffer;
    let header: Record<string, unknown>;
    try {
      ({ plaintext: dek, header } = await unwrapA256KW(kek, jwe));
    } finally {
      kek.fill(0);
    }
    // Re-checked on the authenticated header; exact field set so nothing unexpected rides along.
    const names = Object.keys(header).sort().join(",");
    if (names !== "alg,cm_instance,enc,kid" || header.cm_instance !== context.instance || dek.length !== DEK_BYTES) {
      dek.fill(0);
      throw new DecryptionError(undefined, new Error("unexpected wrapped DEK header or size"));
    }
    return dek;
  }

  /**
   * Reports root key `keyId`: its current version and that version's state.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async describe(keyId: string): Promise<RootKeyDescription> {
    await this.#refresh(false);
    const key = this.#key(keyId);
    return { backend: BACKEND, keyId, state: key.versions.get(key.currentVersion)!.state, currentVersion: key.currentVersion };
  }

  /** Resolves when the keystore file is present, private and parseable. @throws RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE */
  async check(): Promise<void> {
    await this.#refresh(false);
  }

  /** Zeroes all KEKs held in memory; later calls fail with ROOT_KEY_BACKEND_UNAVAILABLE. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.catch(() => undefined);
    this.#zeroAll();
    this.#keys = new Map();
  }

  /** Every root key with its versions (no key material), sorted by key id. @throws RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE */
  async listKeys(): Promise<LocalKeyInfo[]> {
    await this.#refresh(false);
    return [...this.#doc.keys].sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : 0)).map(infoOf);
  }

  /**
   * Creates root key `keyId` with version 1 ENABLED (fresh 32-byte KEK from the CSPRNG).
   *
   * @throws AlreadyExistsError ROOT_KEY_ALREADY_EXISTS; TypeError on a malformed id; RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async createKey(keyId: string): Promise<LocalKeyInfo> {
    checkKeyId(keyId);
    return this.#mutate((doc, now) => {
      if (doc.keys.some((k) => k.keyId === keyId)) {
        throw new AlreadyExistsError("ROOT_KEY_ALREADY_EXISTS", `${BACKEND}/${keyId}`, `root key ${BACKEND}/${keyId} already exists; choose another key id`);
      }
      const record = newKeyRecord(keyId, now);
      doc.keys.push(record);
      return record;
    });
  }

  /**
   * Adds a new ENABLED version to `keyId` and makes it current: new wraps use it, DEKs wrapped under older
   * versions keep unwrapping while those versions are ENABLED (rewrap them to retire a version).
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async rotate(keyId: string): Promise<LocalKeyInfo> {
    return this.#mutate((doc, now) => {
      const record = findRecord(doc, keyId);
      const next = Math.max(...record.versions.map((v) => v.version)) + 1;
      record.versions.push(newVersionRecord(keyId, next, now));
      record.currentVersion = next;
      return record;
    });
  }

  /**
   * Changes the state of one version, or with `version` undefined of every not-yet-destroyed version of the key
   * (so "disable the key" also stops DEKs wrapped under older versions from unwrapping).
   *
   * Allowed: ENABLED <-> DISABLED; ENABLED/DISABLED -> DESTROYED, which erases `k` from the file and needs an
   * explicit version. DESTROYED is terminal. Setting the state a version already has is a no-op.
   * After disabling, callers must also empty their DEK caches (DekCache.clear) for the change to bite at once.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND (key or version) | ROOT_KEY_DESTROYED (version already destroyed) |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; TypeError for DESTROYED without a version or an unknown state.
   */
  async setState(keyId: string, version: number | undefined, state: RootKeyState): Promise<LocalKeyInfo> {
    if (!STATES.has(state)) throw new TypeError(`unknown root key state ${String(state)}`);
    if (state === "DESTROYED" && version === undefined) throw new TypeError("destroying a root key needs an explicit version");
    return this.#mutate((doc, now) => {
      const record = findRecord(doc, keyId);
      const targets =
        version === undefined ? record.versions.filter((v) => v.state !== "DESTROYED") : [findVersionRecord(record, version)];
      for (const v of targets) {
        if (v.state === state) continue;
        if (v.state === "DESTROYED") {
          throw new RootKeyError("ROOT_KEY_DESTROYED", `root key ${v.kid} is destroyed and cannot change state`, meta(keyId, v.version));
        }
        v.state = state;
        v.updateTime = now;
        if (state === "DESTROYED") {
          delete v.k;
          v.destroyTime = now;
        }
      }
      return record;
    });
  }

  /** Re-reads the keystore now (it is also re-read automatically when the file changes). */
  async reload(): Promise<void> {
    await this.#refresh(true);
  }

  // ---- internals ----

  #key(keyId: string): MemKey {
    const key = typeof keyId === "string" ? this.#keys.get(keyId) : undefined;
    if (!key) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${BACKEND}/${keyId} does not exist in the keystore; create it with the keys CLI or fix the key id`, meta(keyId));
    return key;
  }

  #usableVersion(key: MemKey, versionNo: number): MemVersion & { kek: Buffer } {
    const v = key.versions.get(versionNo);
    if (!v) {
      throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key version ${kidOf(key.keyId, versionNo)} does not exist in the keystore`, meta(key.keyId, versionNo));
    }
    if (v.state === "DISABLED") {
      throw new RootKeyError("ROOT_KEY_DISABLED", `root key version ${kidOf(key.keyId, versionNo)} is disabled; enable it to use it`, meta(key.keyId, versionNo));
    }
    if (v.state === "DESTROYED" || !v.kek) {
      throw new RootKeyError("ROOT_KEY_DESTROYED", `root key version ${kidOf(key.keyId, versionNo)} is destroyed; data wrapped under it cannot be recovered`, meta(key.keyId, versionNo));
    }
    return v as MemVersion & { kek: Buffer };
  }

  /** Loads the file if it changed since the last load (or always with `force`). */
  async #refresh(force: boolean): Promise<void> {
    if (this.#closed) throw new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", "local root-key backend is closed", { backend: BACKEND });
    try {
      if (!force) {
        const st = await statChecked(this.path);
        if (fingerprintOf(st) === this.#fingerprint) return;
      }
      this.#install(await readSnapshot(this.path));
    } catch (err) {
      throw unavailable(this.path, err);
    }
  }

  #install(snap: Snapshot): void {
    const keys = new Map<string, MemKey>();
    for (const record of snap.doc.keys) {
      const versions = new Map<number, MemVersion>();
      for (const v of record.versions) {
        versions.set(v.version, { version: v.version, state: v.state, kek: v.k === undefined ? undefined : decodeKek(v.k) });
      }
      keys.set(record.keyId, { keyId: record.keyId, currentVersion: record.currentVersion, versions });
    }
    this.#zeroAll();
    this.#keys = keys;
    this.#doc = stripKeyMaterial(snap.doc);
    this.#fingerprint = snap.fingerprint;
  }

  #zeroAll(): void {
    for (const key of this.#keys.values()) for (const v of key.versions.values()) v.kek?.fill(0);
  }

  /** Lock, re-read, apply `fn`, write atomically, reload; serialized within and across processes. */
  #mutate(fn: (doc: LocalKeystoreDocument, now: string) => LocalKeyRecord): Promise<LocalKeyInfo> {
    const run = async (): Promise<LocalKeyInfo> => {
      if (this.#closed) throw new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", "local root-key backend is closed", { backend: BACKEND });
      const release = await acquireLock(`${this.path}.lock`).catch((err) => {
        throw unavailable(this.path, err);
      });
      try {
        let snap: Snapshot;
        try {
          snap = await readSnapshot(this.path);
        } catch (err) {
          throw unavailable(this.path, err);
        }
        const record = fn(snap.doc, new Date().toISOString());
        const info = infoOf(record);
        try {
          await writeAtomic(this.path, serialize(snap.doc), "replace");
        } catch (err) {
          throw unavailable(this.path, err);
        }
        await this.#refresh(true);
        return info;
      } finally {
        await release();
      }
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

// ---- pure helpers ----

function checkKeyId(keyId: string): void {
  if (typeof keyId !== "string" || !KEY_ID.test(keyId)) {
    throw new TypeError("root key id must match [A-Za-z0-9][A-Za-z0-9_-]{0,62}");
  }
}

function checkContext(context: WrapContext): void {
  if (!context || typeof context.instance !== "string" || !INSTANCE_NAME.test(context.instance)) {
    throw new TypeError("WrapContext.instance must be a resource name instances/{instance}");
  }
}

function kidOf(keyId: string, version: number): string {
  return `${BACKEND}/${keyId}/${version}`;
}

function meta(keyId: string, version?: number): Record<string, string> {
  // `root_key` is the key the contract documents (error_reason.proto); the rest add detail.
  return version === undefined
    ? { root_key: `${BACKEND}/${keyId}`, backend: BACKEND, keyId }
    : { root_key: `${BACKEND}/${keyId}`, backend: BACKEND, keyId, version: String(version) };
}

function unavailable(file: string, err: unknown): RootKeyError {
  if (err instanceof RootKeyError) return err;
  const detail = err instanceof KeystoreFileError ? err.message : `keystore ${file} cannot be read or written (${(err as NodeJS.ErrnoException)?.code ?? "error"})`;
  return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `local root-key backend unavailable: ${detail}`, { backend: BACKEND }, err);
}

function newVersionRecord(keyId: string, version: number, now: string): LocalKeyVersionRecord {
  return {
    kty: "oct",
    alg: "A256KW",
    kid: kidOf(keyId, version),
    version,
    state: "ENABLED",
    k: randomBytes(KEK_BYTES).toString("base64url"),
    createTime: now,
    updateTime: now,
  };
}

function newKeyRecord(keyId: string, now: string): LocalKeyRecord {
  return { keyId, createTime: now, currentVersion: 1, versions: [newVersionRecord(keyId, 1, now)] };
}

function findRecord(doc: LocalKeystoreDocument, keyId: string): LocalKeyRecord {
  const record = doc.keys.find((k) => k.keyId === keyId);
  if (!record) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${BACKEND}/${keyId} does not exist in the keystore`, meta(keyId));
  return record;
}

function findVersionRecord(record: LocalKeyRecord, version: number): LocalKeyVersionRecord {
  const v = record.versions.find((x) => x.version === version);
  if (!v) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key version ${kidOf(record.keyId, version)} does not exist`, meta(record.keyId, version));
  return v;
}

function infoOf(record: LocalKeyRecord): LocalKeyInfo {
  const current = record.versions.find((v) => v.version === record.currentVersion)!;
  return {
    backend: BACKEND,
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
function stripKeyMaterial(doc: LocalKeystoreDocument): LocalKeystoreDocument {
  return {
    format: doc.format,
    keys: doc.keys.map((k) => ({ ...k, versions: k.versions.map(({ k: _secret, ...rest }) => rest) })),
  };
}

function decodeKek(k: string): Buffer {
  const raw = Buffer.from(k, "base64url");
  const kek = Buffer.alloc(KEK_BYTES);
  raw.copy(kek);
  raw.fill(0);
  return kek;
}

function serialize(doc: LocalKeystoreDocument): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

function fingerprintOf(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** stat + the checks every use repeats: a regular file with no group/other permission bits. */
async function statChecked(file: string): Promise<BigIntStats> {
  // lstat: the keystore is replaced by rename, which would replace a symlink rather than follow it.
  const st = await fsp.lstat(file, { bigint: true });
  if (st.isSymbolicLink()) throw new KeystoreFileError(`keystore ${file} is a symbolic link; configure the path of the real file`);
  checkStat(file, st);
  return st;
}

function checkStat(file: string, st: BigIntStats): void {
  if (!st.isFile()) throw new KeystoreFileError(`keystore ${file} is not a regular file`);
  const mode = Number(st.mode) & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeystoreFileError(
      `keystore ${file} has mode 0${mode.toString(8)} but holds root keys and must be accessible by its owner only; run: chmod 600 ${file}`,
    );
  }
}

/**
 * Reads the file through one descriptor and re-stats it after reading: if a writer scrubbed the inode meanwhile
 * (see writeAtomic) the fingerprints differ and we read again from the path, which by then names the new file.
 */
async function readSnapshot(file: string): Promise<Snapshot> {
  for (let attempt = 0; ; attempt++) {
    const fh = await fsp.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const before = await fh.stat({ bigint: true });
      checkStat(file, before);
      const text = await fh.readFile({ encoding: "utf8" });
      const after = await fh.stat({ bigint: true });
      if (fingerprintOf(before) !== fingerprintOf(after) && attempt < 5) continue;
      return { doc: parseDocument(file, text), fingerprint: fingerprintOf(after) };
    } finally {
      await fh.close();
    }
  }
}

/** Validates a keystore document completely; the error names the problem, never a key. */
function parseDocument(file: string, text: string): LocalKeystoreDocument {
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
    if (!k || typeof k.keyId !== "string" || !KEY_ID.test(k.keyId)) return bad(`keys[${i}].keyId is invalid`);
    const keyId = k.keyId;
    if (seen.has(keyId)) bad(`key ${keyId} appears twice`);
    seen.add(keyId);
    if (typeof k.createTime !== "string") bad(`key ${keyId}: createTime missing`);
    if (!Array.isArray(k.versions) || k.versions.length === 0) bad(`key ${keyId}: versions must be a non-empty array`);
    const numbers = new Set<number>();
    const versions = k.versions!.map((v: Partial<LocalKeyVersionRecord>) => {
      if (!v || !Number.isInteger(v.version) || v.version! < 1) return bad(`key ${keyId}: a version number is invalid`);
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
        bad(`${where}: k must be base64url of ${KEK_BYTES} bytes`);
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

/**
 * Writes `data` to `target` atomically: temp file in the same directory (mode 0600, O_EXCL), fsync, then
 * `link` (mode "create": fails with EEXIST if the target exists, never clobbers) or `rename` (mode "replace"),
 * then fsync of the directory so the new name survives a crash. On replace the old inode is zero-filled.
 */
async function writeAtomic(target: string, data: string, mode: "create" | "replace"): Promise<void> {
  const dir = path.dirname(target);
  const base = path.basename(target);
  const tag = `${process.pid}.${randomBytes(6).toString("hex")}`;
  const tmp = path.join(dir, `.${base}.${tag}.tmp`);
  const fh = await fsp.open(tmp, "wx", 0o600);
  try {
    await fh.chmod(0o600); // the umask may have removed bits, never added: make it exact anyway
    await fh.writeFile(data, "utf8");
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    if (mode === "create") {
      await fsp.link(tmp, target);
      await fsp.unlink(tmp);
    } else {
      const old = path.join(dir, `.${base}.${tag}.old`);
      let haveOld = false;
      try {
        await fsp.link(target, old);
        haveOld = true;
      } catch {
        // No hard links here: skip the scrub, the rename alone is still atomic.
      }
      try {
        await fsp.rename(tmp, target);
      } catch (err) {
        if (haveOld) await fsp.unlink(old).catch(() => undefined); // still the live file: just drop the extra name
        throw err;
      }
      if (haveOld) await scrub(old);
    }
    await fsyncDir(dir);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/** Overwrites a replaced keystore's bytes with zeros, then unlinks it (best effort; see the module comment). */
async function scrub(file: string): Promise<void> {
  try {
    const fh = await fsp.open(file, "r+");
    try {
      const { size } = await fh.stat();
      if (size > 0) await fh.write(Buffer.alloc(size), 0, size, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } finally {
    await fsp.rm(file, { force: true });
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Cross-process exclusive lock: `<keystore>.lock` created with O_EXCL, holding the owner's pid. A lock older than
 * 30 s is taken as left by a crashed process and removed.
 *
 * @returns a function that releases the lock.
 */
async function acquireLock(lockPath: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fh = await fsp.open(lockPath, "wx", 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return () => fsp.rm(lockPath, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const st = await fsp.stat(lockPath).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > LOCK_STALE_MS) {
      await fsp.rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new KeystoreFileError(`keystore lock ${lockPath} is held by another process; retry, or remove the file if no keys CLI or service is changing keys`);
    }
    await new Promise((r) => setTimeout(r, 25 + Math.floor(Math.random() * 25)));
  }
}
