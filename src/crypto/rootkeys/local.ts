/**
 * `local` root-key backend: root keys (KEKs) in a keystore file on local disk (format in ./local/keystore.ts,
 * file handling in ./local/files.ts). The embedded default and the provider-managed key; the KEK material is in
 * this process's memory, so use the `pkcs11` backend where a KEK must never leave an HSM.
 *
 * Key wrap is RFC 3394 (AES Key Wrap, default IV A6A6A6A6A6A6A6A6) with node:crypto's `id-aes256-wrap`; the
 * wrapped-DEK JWE around it is ../wrapped-dek.ts. The keystore is re-read automatically when the file changes
 * (inode/size/mtime/ctime checked with one stat per call), so changes made by the keys CLI reach a running
 * service. Every change: cross-process lock file `<path>.lock`, re-read, modify, atomic replace. Key material is
 * never logged.
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import path from "node:path";

import { AlreadyExistsError, DecryptionError, RootKeyError } from "../../domain/errors.js";
import { checkRootKeyId, isRootKeyVersion } from "../../domain/rootkey-id.js";
import { WRAPPED_KEY_BYTES, WRAPPED_KEY_INPUT_BYTES, type KeyWrapResult, type RootKeyBackend, type RootKeyDescription, type RootKeyInfo } from "../../domain/rootkey.js";
import { acquireLock, ensureKeystore, fingerprintOf, keystoreUnavailable, loadKeystore, scrubLeftovers, statChecked, writeAtomic } from "./local/files.js";
import { KekTable } from "./local/kek-table.js";
import {
  LOCAL_KEYSTORE_FORMAT,
  LOCAL_BACKEND,
  destroyVersionRecord,
  findRecord,
  findVersionRecord,
  infoOf,
  meta,
  newKeyRecord,
  newVersionRecord,
  parseDocument,
  serialize,
  stripKeyMaterial,
  type LocalKeyRecord,
  type LocalKeystoreDocument,
} from "./local/keystore.js";

export { LOCAL_KEYSTORE_FORMAT, type LocalKeystoreDocument };

/** RFC 3394 §2.2.3.1 default initial value. */
const KW_IV = Buffer.from("A6A6A6A6A6A6A6A6", "hex");

/** Options of {@link LocalRootKeyBackend.open}. */
export interface LocalOpenOptions {
  /** Create the keystore (and its directory, mode 0700) when the file does not exist; else fail. */
  createIfMissing: boolean;
  /** Root key created, as version 1, in a new keystore, e.g. `"default"`. */
  defaultKeyId: string;
}

/** Root keys in a local keystore file; see the module comment for the file format. */
/** A keystore change waiting for the next write, and who waits for its answer. */
interface PendingChange {
  fn: (doc: LocalKeystoreDocument, now: string) => LocalKeyRecord;
  resolve: (info: RootKeyInfo) => void;
  reject: (err: unknown) => void;
}

export class LocalRootKeyBackend implements RootKeyBackend {
  readonly name = LOCAL_BACKEND;
  /** Absolute path of the keystore file. */
  readonly path: string;

  #doc!: LocalKeystoreDocument;
  #keys = new KekTable();
  #fingerprint = "";
  #closed = false;
  /** Serializes this process's keystore writes (the lock file serializes processes). */
  #queue: Promise<unknown> = Promise.resolve();
  /** Changes waiting for the next write. */
  #pending: PendingChange[] = [];

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
    checkRootKeyId(opts.defaultKeyId);
    const backend = new LocalRootKeyBackend(path.resolve(file));
    await ensureKeystore(backend.path, opts.createIfMissing, opts.defaultKeyId);
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
   * RFC 3394 key wrap (node:crypto `id-aes256-wrap`, default IV) of a 32-byte key under the current version of
   * root key `keyId`.
   *
   * @returns the version used and the 40 wrapped bytes.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED | ROOT_KEY_BACKEND_UNAVAILABLE
   *         (keystore unreadable); TypeError on a key that is not 32 bytes.
   * @example
   * const { version, wrapped } = await backend.wrapKey("default", cek);
   */
  async wrapKey(keyId: string, key: Buffer): Promise<KeyWrapResult> {
    if (!Buffer.isBuffer(key) || key.length !== WRAPPED_KEY_INPUT_BYTES) throw new TypeError(`key must be a ${WRAPPED_KEY_INPUT_BYTES}-byte Buffer`);
    await this.#refresh(false);
    const version = this.#keys.usable(keyId);
    // Used synchronously after the lookup: a reload zeroes the map's buffers only between calls.
    const cipher = createCipheriv("id-aes256-wrap", version.kek, KW_IV);
    return { version: version.version, wrapped: Buffer.concat([cipher.update(key), cipher.final()]) };
  }

  /**
   * RFC 3394 key unwrap of 40 bytes under version `version` of root key `keyId`.
   *
   * @returns the 32-byte key; the caller zeroes it.
   * @throws DecryptionError when the integrity check fails (another key, tampered bytes; RFC 3394 §2.2.3);
   *         RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async unwrapKey(keyId: string, version: number, wrapped: Buffer): Promise<Buffer> {
    await this.#refresh(false);
    const v = this.#keys.usable(keyId, version);
    if (!Buffer.isBuffer(wrapped) || wrapped.length !== WRAPPED_KEY_BYTES) throw new DecryptionError(undefined, new Error("wrapped key has the wrong size"));
    const decipher = createDecipheriv("id-aes256-wrap", v.kek, KW_IV);
    let parts: Buffer[];
    try {
      // OpenSSL checks the RFC 3394 integrity block in update() for the wrap modes; final() adds nothing.
      parts = [decipher.update(wrapped), decipher.final()];
    } catch (err) {
      throw new DecryptionError(undefined, new Error("RFC 3394 integrity check failed", { cause: err }));
    }
    const out = Buffer.alloc(WRAPPED_KEY_INPUT_BYTES);
    const n = parts[0]!.copy(out) + parts[1]!.copy(out, parts[0]!.length);
    for (const x of parts) x.fill(0);
    if (n !== WRAPPED_KEY_INPUT_BYTES) {
      out.fill(0);
      throw new DecryptionError(undefined, new Error("unwrapped key has the wrong size"));
    }
    return out;
  }

  /**
   * Reports root key `keyId`: its current version and that version's state.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async describe(keyId: string): Promise<RootKeyDescription> {
    await this.#refresh(false);
    const current = this.#keys.current(keyId);
    return { backend: LOCAL_BACKEND, keyId, state: current.state, currentVersion: current.version };
  }

  /** Resolves when the keystore file is present, private and parseable. @throws RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE */
  async check(): Promise<void> {
    await this.#refresh(false);
  }

  /** Zeroes all KEKs held in memory; later calls fail with ROOT_KEY_BACKEND_UNAVAILABLE. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.catch(() => undefined);
    this.#keys.zero();
    this.#keys = new KekTable();
  }

  /** Every root key with its versions (no key material), sorted by key id. @throws RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE */
  async listKeys(): Promise<RootKeyInfo[]> {
    await this.#refresh(false);
    return [...this.#doc.keys].sort((a, b) => (a.keyId < b.keyId ? -1 : a.keyId > b.keyId ? 1 : 0)).map(infoOf);
  }

  /**
   * Creates root key `keyId` with version 1 ENABLED (fresh 32-byte KEK from the CSPRNG).
   *
   * @throws AlreadyExistsError ROOT_KEY_ALREADY_EXISTS; TypeError on a malformed id; RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async createKey(keyId: string): Promise<RootKeyInfo> {
    checkRootKeyId(keyId);
    return this.#mutate((doc, now) => {
      if (doc.keys.some((k) => k.keyId === keyId)) {
        throw new AlreadyExistsError("ROOT_KEY_ALREADY_EXISTS", `${LOCAL_BACKEND}/${keyId}`, `root key ${LOCAL_BACKEND}/${keyId} already exists; choose another key id`);
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
   * A key whose current version is destroyed gets fresh material for new wraps; nothing it wrapped before
   * becomes readable again.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED (the current version) |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; RangeError past version 999,999,999.
   */
  async rotate(keyId: string): Promise<RootKeyInfo> {
    return this.#mutate((doc, now) => {
      const record = findRecord(doc, keyId);
      const current = findVersionRecord(record, record.currentVersion);
      // As the port says (and pkcs11 does): a key that is off is turned on by enabling it, not by a new version.
      if (current.state === "DISABLED") {
        throw new RootKeyError("ROOT_KEY_DISABLED", `root key ${current.kid} is disabled; enable it before rotating`, meta(keyId, current.version));
      }
      const next = Math.max(...record.versions.map((v) => v.version)) + 1;
      if (!isRootKeyVersion(next)) throw new RangeError(`root key ${LOCAL_BACKEND}/${keyId} has used its last version number; create a new key`);
      record.versions.push(newVersionRecord(keyId, next, now));
      record.currentVersion = next;
      return record;
    });
  }

  /**
   * Enables or disables one version, or with `version` undefined every not-yet-destroyed version of the key (so
   * "disable the key" also stops DEKs wrapped under older versions from unwrapping). Setting the state a version
   * already has is a no-op. After disabling, callers must also empty their DEK caches for the change to bite at
   * once (the keyring does when it sees the key disabled).
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND (key or version) | ROOT_KEY_DESTROYED (version destroyed) |
   *         ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async setEnabled(keyId: string, enabled: boolean, version?: number): Promise<RootKeyInfo> {
    if (typeof enabled !== "boolean") throw new TypeError("enabled must be a boolean");
    const state = enabled ? "ENABLED" : "DISABLED";
    return this.#mutate((doc, now) => {
      const record = findRecord(doc, keyId);
      const targets = version === undefined ? record.versions.filter((v) => v.state !== "DESTROYED") : [findVersionRecord(record, version)];
      for (const v of targets) {
        if (v.state === state) continue;
        if (v.state === "DESTROYED") {
          throw new RootKeyError("ROOT_KEY_DESTROYED", `root key ${v.kid} is destroyed and cannot change state`, meta(keyId, v.version));
        }
        v.state = state;
        v.updateTime = now;
      }
      return record;
    });
  }

  /**
   * Destroys one version: erases its `k` from the file (the replaced file is scrubbed) and keeps a DESTROYED
   * tombstone, so DEKs wrapped under it report ROOT_KEY_DESTROYED. Terminal; destroying it again is a no-op.
   *
   * @returns the key after the change.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_BACKEND_UNAVAILABLE;
   *         TypeError on a bad version number.
   */
  async destroyVersion(keyId: string, version: number): Promise<RootKeyInfo> {
    if (!isRootKeyVersion(version)) throw new TypeError("version must be an integer >= 1");
    return this.#mutate((doc, now) => {
      const record = findRecord(doc, keyId);
      const v = findVersionRecord(record, version);
      // Idempotent: the tombstone says it is gone already.
      if (v.state !== "DESTROYED") destroyVersionRecord(v, now);
      return record;
    });
  }

  /**
   * Destroys every version of root key `keyId` that is not destroyed yet, in one keystore change. A key that
   * does not exist, or is destroyed already, is left as it is.
   *
   * @throws RootKeyError ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a malformed id.
   */
  async destroyKey(keyId: string): Promise<void> {
    checkRootKeyId(keyId);
    if (!(await this.listKeys()).some((k) => k.keyId === keyId && k.versions.some((v) => v.state !== "DESTROYED"))) return;
    await this.#mutate((doc, now) => {
      const record = findRecord(doc, keyId);
      for (const v of record.versions) if (v.state !== "DESTROYED") destroyVersionRecord(v, now);
      return record;
    });
  }

  /** Re-reads the keystore now (it is also re-read automatically when the file changes). */
  async reload(): Promise<void> {
    await this.#refresh(true);
  }

  // ---- internals ----

  /** Loads the file if it changed since the last load (or always with `force`). */
  async #refresh(force: boolean): Promise<void> {
    if (this.#closed) throw new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", "local root-key backend is closed", { backend: LOCAL_BACKEND });
    try {
      if (!force) {
        const st = await statChecked(this.path);
        if (fingerprintOf(st) === this.#fingerprint) return;
      }
      const snap = await loadKeystore(this.path);
      const keys = new KekTable(snap.doc);
      this.#keys.zero();
      this.#keys = keys;
      this.#doc = stripKeyMaterial(snap.doc);
      this.#fingerprint = snap.fingerprint;
    } catch (err) {
      throw keystoreUnavailable(this.path, err);
    }
  }

  /**
   * Lock, re-read, apply `fn`, write atomically, reload; serialized within and across processes. Changes that
   * queue up while one is being written are applied together in the next write (group commit): a keystore write
   * is a lock, a read, a temp file, two fsyncs and a rename, so a burst of CreateInstance calls (one instance key
   * each) costs a few writes instead of one each, and no call waits behind a long queue of them.
   */
  #mutate(fn: (doc: LocalKeystoreDocument, now: string) => LocalKeyRecord): Promise<RootKeyInfo> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ fn, resolve, reject });
      // #commit answers every change itself; the catch only keeps one failed write from stopping the queue.
      if (this.#pending.length === 1) this.#queue = this.#queue.then(() => this.#commit()).catch(() => undefined);
    });
  }

  /** Applies every pending change in one keystore write; each change answers for itself, once the lock is free. */
  async #commit(): Promise<void> {
    const batch = this.#pending.splice(0);
    if (batch.length === 0) return;
    const answers: (() => void)[] = [];
    const failAll = (changes: PendingChange[], err: unknown) => changes.forEach((c) => answers.push(() => c.reject(err)));
    try {
      if (this.#closed) return failAll(batch, new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", "local root-key backend is closed", { backend: LOCAL_BACKEND }));
      let release: () => Promise<void>;
      try {
        release = await acquireLock(`${this.path}.lock`);
      } catch (err) {
        return failAll(batch, keystoreUnavailable(this.path, err));
      }
      try {
        await this.#apply(batch, answers, failAll);
      } finally {
        // A lock we could not remove is left for its age or our pid to free; the changes' answers stand.
        await release().catch(() => undefined);
      }
    } finally {
      // Answered once the lock is released: a caller's next step (another process's change) need not wait for it.
      for (const answer of answers) answer();
    }
  }

  /** Re-reads the keystore, applies `batch` in order, writes once; queues each change's answer in `answers`. */
  async #apply(batch: PendingChange[], answers: (() => void)[], failAll: (changes: PendingChange[], err: unknown) => void): Promise<void> {
    let doc: LocalKeystoreDocument;
    try {
      await scrubLeftovers(this.path);
      doc = (await loadKeystore(this.path)).doc;
    } catch (err) {
      return failAll(batch, keystoreUnavailable(this.path, err));
    }
    // Each change runs on the document the ones before it made. One that throws (a duplicate id, a key that is not
    // there) may have changed the document halfway: then the others are applied again to a fresh copy.
    const original = serialize(doc);
    const now = new Date().toISOString();
    let live = batch;
    let applied: { change: PendingChange; info: RootKeyInfo }[];
    for (;;) {
      applied = [];
      const failed: PendingChange[] = [];
      for (const change of live) {
        try {
          applied.push({ change, info: infoOf(change.fn(doc, now)) });
        } catch (err) {
          answers.push(() => change.reject(err));
          failed.push(change);
        }
      }
      if (failed.length === 0) break;
      live = live.filter((c) => !failed.includes(c));
      doc = parseDocument(this.path, original);
    }
    if (applied.length === 0) return;
    try {
      await writeAtomic(this.path, serialize(doc), "replace");
      await this.#refresh(true);
    } catch (err) {
      return failAll(
        applied.map((a) => a.change),
        err instanceof RootKeyError ? err : keystoreUnavailable(this.path, err),
      );
    }
    for (const { change, info } of applied) answers.push(() => change.resolve(info));
  }
}

