/**
 * The `local` backend's root keys in memory: the KEKs of the keystore last read, each in its own buffer, with
 * the state checks every use of a version makes. Replaced whole when the file changes; the old buffers are zeroed.
 *
 * @internal Used by src/crypto/rootkeys/local.ts only.
 */
import { RootKeyError } from "../../../domain/errors.js";
import type { RootKeyState } from "../../../domain/rootkey.js";
import { rootKeyKid } from "../../../domain/rootkey-id.js";
import { LOCAL_BACKEND, decodeKek, meta, type LocalKeystoreDocument } from "./keystore.js";

interface MemVersion {
  version: number;
  state: RootKeyState;
  /** Our own copy (Buffer.alloc), zeroed when the table is replaced or closed; absent when destroyed. */
  kek?: Buffer;
}

interface MemKey {
  keyId: string;
  currentVersion: number;
  versions: Map<number, MemVersion>;
}

const kidOf = (keyId: string, version: number): string => rootKeyKid(LOCAL_BACKEND, keyId, version);

/** KEKs by key id and version. */
export class KekTable {
  readonly #keys = new Map<string, MemKey>();

  /** Decodes every KEK of a validated document into buffers of its own. */
  constructor(doc?: LocalKeystoreDocument) {
    for (const record of doc?.keys ?? []) {
      const versions = new Map<number, MemVersion>();
      for (const v of record.versions) {
        versions.set(v.version, { version: v.version, state: v.state, kek: v.k === undefined ? undefined : decodeKek(v.k) });
      }
      this.#keys.set(record.keyId, { keyId: record.keyId, currentVersion: record.currentVersion, versions });
    }
  }

  /** The current version of `keyId` and its state. @throws RootKeyError ROOT_KEY_NOT_FOUND */
  current(keyId: string): { version: number; state: RootKeyState } {
    const key = this.#key(keyId);
    return { version: key.currentVersion, state: key.versions.get(key.currentVersion)!.state };
  }

  /**
   * The KEK of a version that may be used now (`version` undefined: the current one). Use it synchronously: the
   * buffer is zeroed when the table is replaced.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED
   */
  usable(keyId: string, version?: number): { version: number; kek: Buffer } {
    const key = this.#key(keyId);
    const versionNo = version ?? key.currentVersion;
    const v = key.versions.get(versionNo);
    const kid = kidOf(key.keyId, versionNo);
    if (!v) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key version ${kid} does not exist in the keystore`, meta(key.keyId, versionNo));
    if (v.state === "DISABLED") throw new RootKeyError("ROOT_KEY_DISABLED", `root key version ${kid} is disabled; enable it to use it`, meta(key.keyId, versionNo));
    if (v.state === "DESTROYED" || !v.kek) {
      throw new RootKeyError("ROOT_KEY_DESTROYED", `root key version ${kid} is destroyed; data wrapped under it cannot be recovered`, meta(key.keyId, versionNo));
    }
    return { version: versionNo, kek: v.kek };
  }

  /** Zeroes every KEK held. */
  zero(): void {
    for (const key of this.#keys.values()) for (const v of key.versions.values()) v.kek?.fill(0);
  }

  #key(keyId: string): MemKey {
    const key = typeof keyId === "string" ? this.#keys.get(keyId) : undefined;
    if (!key) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${LOCAL_BACKEND}/${keyId} does not exist in the keystore; create it with the keys CLI or fix the key id`, meta(keyId));
    return key;
  }
}
