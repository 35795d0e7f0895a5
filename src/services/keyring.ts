/**
 * Per-instance DEK management over the root-key backends: creating and wrapping an instance's DEK, and
 * unwrapping DEKs (through the DEK cache) to seal or open secret material (DESIGN.md "Envelope format").
 */
import { DekCache } from "../crypto/dekcache.js";
import { generateDek, newDekId, zero } from "../crypto/dek.js";
import { parseProtectedHeader } from "../crypto/compact.js";
import { DecryptionError, RootKeyError } from "../domain/errors.js";
import { instanceName } from "../domain/names.js";
import type { Clock, DekRecord, InstanceRecord, Repositories } from "../domain/ports.js";
import type { RootKeyBackend } from "../domain/rootkey.js";

/** A plaintext DEK lent to one operation; call `release()` when done so the copy is zeroed. */
export interface LentDek {
  id: string;
  key: Buffer;
  release(): void;
}

/** DEKs of instances, wrapped by the instance's root key. */
export class Keyring {
  constructor(
    private readonly backends: ReadonlyMap<string, RootKeyBackend>,
    private readonly cache: DekCache,
    private readonly clock: Clock,
  ) {}

  /** The backend named `name`. @throws RootKeyError ROOT_KEY_NOT_FOUND when no such backend is configured. */
  backend(name: string): RootKeyBackend {
    const b = this.backends.get(name);
    if (!b) throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root-key backend ${JSON.stringify(name)} is not configured on this server`, { root_key: name });
    return b;
  }

  /**
   * Makes a new 256-bit DEK for an instance and wraps it with the instance's root key.
   * @returns the DEK row to insert (wrapped key only) and the current root key version.
   * @throws RootKeyError when the root key cannot wrap.
   */
  async newDek(instance: Pick<InstanceRecord, "id" | "rootKeyBackend" | "rootKeyId">): Promise<DekRecord> {
    const backend = this.backend(instance.rootKeyBackend);
    const dek = generateDek();
    try {
      const wrappedKey = await backend.wrap(dek, instance.rootKeyId, { instance: instanceName(instance.id) });
      const kid = String(parseProtectedHeader(wrappedKey).kid);
      return {
        id: newDekId(),
        instanceId: instance.id,
        wrappedKey,
        rootKeyVersion: Number(kid.split("/").pop()),
        state: "ACTIVE",
        encryptionCount: 0,
        createTime: this.clock.now(),
      };
    } finally {
      zero(dek);
    }
  }

  /**
   * Lends the instance's active DEK for sealing new material.
   * @throws DecryptionError when the instance has no active DEK or it does not unwrap; RootKeyError.
   */
  async activeDek(repos: Repositories, instance: InstanceRecord): Promise<LentDek> {
    const record = await repos.deks.getActive(instance.id);
    if (!record) throw new DecryptionError(`instance ${instanceName(instance.id)} has no active data encryption key`);
    return this.lend(record, instance);
  }

  /**
   * Returns a resolver from DEK id to a copy of the plaintext DEK, for opening material of `instance`.
   * Every copy handed out is zeroed by `releaseAll()`.
   */
  resolver(repos: Repositories, instance: InstanceRecord): { resolve: (dekId: string) => Promise<Buffer>; releaseAll: () => void } {
    const lent: LentDek[] = [];
    return {
      resolve: async (dekId: string) => {
        const record = await repos.deks.get(dekId);
        // A DEK of another instance must never open this instance's material.
        if (!record || record.instanceId !== instance.id) throw new DecryptionError();
        const dek = await this.lend(record, instance);
        lent.push(dek);
        return dek.key;
      },
      releaseAll: () => lent.forEach((d) => d.release()),
    };
  }

  private async lend(record: DekRecord, instance: InstanceRecord): Promise<LentDek> {
    const backend = this.backend(instance.rootKeyBackend);
    // The cache hands out a copy that this operation owns, so an eviction never zeroes a key in use.
    const key = await this.cache.getOrLoad(record.id, () => backend.unwrap(record.wrappedKey, { instance: instanceName(instance.id) }));
    return { id: record.id, key, release: () => zero(key) };
  }

  /** Drops DEKs from the cache (zeroing them), e.g. once they were destroyed by a reclamation. */
  forget(dekIds: string[]): void {
    for (const id of dekIds) this.cache.delete(id);
  }

  /** Empties the DEK cache (zeroing every key), e.g. at shutdown. */
  clear(): void {
    this.cache.clear();
  }
}
