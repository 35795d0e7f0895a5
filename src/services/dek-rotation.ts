/**
 * DEK rotation: a new DEK becomes active, every certificate version sealed with the old one is re-encrypted in
 * batches, then the old DEK is deleted (destroyed). AES-GCM with random 96-bit IVs is safe for at most 2^32
 * encryptions per key (NIST SP 800-38D §8.3), so every writer checks the active DEK's count, under its row
 * lock, before sealing, and a DEK is rotated before it would pass the configured share of that limit.
 *
 * Concurrency: every transaction that seals takes the same locks in the same order (the instance row shared,
 * then the active DEK row exclusive), so imports, reimports, re-encryption and rotation serialize per instance
 * instead of deadlocking. Resumable without a lease: the old DEK stays RETIRING (and keeps opening what it
 * sealed) until nothing uses it; re-encryption locks the rows it rewrites and skips rows another writer moved
 * first; a crash leaves RETIRING DEKs that the next RotateDataKey or the background job finishes.
 */
import { auditScope, systemScope } from "../domain/audit-scope.js";
import type { Logger } from "pino";
import { NeedsRotation, type CertificateEnvelope } from "../crypto/envelope.js";
import type { Keyring } from "../crypto/keyring.js";
import { AbortedError } from "../domain/errors.js";
import { instanceName } from "../domain/names.js";
import type { DekRecord, InstanceRecord, UnitOfWork } from "../domain/ports.js";
import { requireActive } from "../domain/instance.js";
import { lockActiveInstance } from "./instance-state.js";

/** Rotation tuning. */
export interface RotationOptions {
  /** Certificate versions re-encrypted per transaction. */
  batchSize: number;
}

/** DEK rotation use cases. */
export class DekRotation {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly envelope: CertificateEnvelope,
    private readonly log: Logger,
    private readonly opts: RotationOptions,
  ) {}

  /**
   * Runs a sealing transaction, rotating the DEK first whenever the envelope reports NeedsRotation (bounded).
   * `fn` locks the instance and seals through the envelope, which checks the active DEK's room under its lock.
   * @param full the state a full DEK takes: RETIRING (re-encrypted later) or INACTIVE (during re-encryption).
   * @returns what `fn` returns.
   * @throws AbortedError CONCURRENT_CONFLICT when the DEK filled up again ten times in a row.
   */
  async withRoom<T>(instance: InstanceRecord, fn: () => Promise<T>, full: "RETIRING" | "INACTIVE" = "RETIRING"): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof NeedsRotation)) throw err;
        if (attempt >= 10) throw new AbortedError("CONCURRENT_CONFLICT", "the data key filled up repeatedly under concurrent writes; retry", {}, err);
        // Re-checked under the lock: when another writer rotated meanwhile, there is room again.
        await this.begin(instance, (active) => active === undefined || !this.envelope.hasRoom(active.encryptionCount, err.needed), full);
      }
    }
  }

  /**
   * Makes a new DEK active and the current one RETIRING, in one transaction that holds the same locks as the
   * sealing writers. `shouldRotate` is evaluated on the locked active DEK: returning false skips the rotation
   * (for automatic rotations, when another writer already rotated).
   * @returns whether this call rotated.
   */
  async begin(
    instance: InstanceRecord,
    shouldRotate: (active: DekRecord | undefined) => boolean = () => true,
    previous: "RETIRING" | "INACTIVE" = "RETIRING",
  ): Promise<boolean> {
    const fresh = await this.keyring.newDek(this.uow.repos, instance, true);
    return this.uow.transaction(async (repos) => {
      await lockActiveInstance(repos, instance.id);
      const active = await repos.deks.getActive(instance.id, true);
      if (!shouldRotate(active)) return false;
      if (active) await repos.deks.retire(active.id, previous);
      await repos.deks.insert(fresh);
      this.log.info({ instance: instanceName(instance.id), retiring: active?.id, active: fresh.id }, "data key rotated");
      return true;
    });
  }

  /**
   * Re-encrypts every version sealed with the instance's RETIRING DEKs (as they are when the call starts), in
   * batches, then deletes those DEKs. Should the new DEK fill up meanwhile, it becomes INACTIVE (not RETIRING),
   * so the work always ends even with a small encryption limit.
   * @returns how many versions this call re-encrypted and how many DEKs it destroyed.
   */
  async finish(instance: InstanceRecord): Promise<{ reencrypted: number; retired: number }> {
    const retiring = (await this.uow.repos.deks.listForInstance(instance.id)).filter((d) => d.state === "RETIRING");
    if (retiring.length === 0) return { reencrypted: 0, retired: 0 };
    const ids = retiring.map((d) => d.id);
    let reencrypted = 0;
    while ((await this.uow.repos.certificates.versionsSealedWith(ids, 1)).length > 0) {
      reencrypted += await this.withRoom(instance, () => this.reencryptBatch(instance, ids), "INACTIVE");
    }
    return { reencrypted, retired: await this.destroy(instance, retiring) };
  }

  /** Rotates now and re-encrypts everything sealed with older DEKs (RotateDataKey). */
  async rotate(instance: InstanceRecord): Promise<{ reencrypted: number; retired: number }> {
    requireActive(instance);
    await this.begin(instance);
    await this.uow.repos.deks.retireInactive(instance.id);
    return this.finish(instance);
  }

  /** The background job's tick: finishes rotations left half-way (crash, or automatic rotation). */
  async resumeAll(limit = 20): Promise<number> {
    let done = 0;
    for (const id of await this.uow.repos.deks.instancesWithRetiring(limit)) {
      const instance = await this.uow.repos.instances.get(id);
      if (!instance || instance.state !== "ACTIVE") continue;
      // A key that is off cannot re-encrypt; the rotation waits quietly until it is back.
      if ((await this.keyring.status(instance)).state !== "ENABLED") continue;
      try {
        await auditScope.run(systemScope("system:dek-rotation", "job:finish-dek-rotation", id, instanceName(id), { now: () => new Date() }), () => this.finish(instance));
        done++;
      } catch (err) {
        this.log.warn({ instance: instanceName(id), err: (err as Error).message }, "data key rotation not finished; retrying later");
      }
    }
    return done;
  }

  /** One transaction: locks as the sealing writers do, then re-encrypts a batch still sealed with `retiringIds`. */
  private async reencryptBatch(instance: InstanceRecord, retiringIds: string[]): Promise<number> {
    return this.uow.transaction(async (repos) => {
      // Lock order as the sealing writers: instance, active DEK (in the envelope), then the version rows.
      const current = await lockActiveInstance(repos, instance.id);
      return this.envelope.reseal(repos, current, retiringIds, this.opts.batchSize);
    });
  }

  private async destroy(instance: InstanceRecord, retiring: DekRecord[]): Promise<number> {
    const ids = await this.uow.transaction(async (repos) => {
      // Same locks as the writers, then re-check: a version sealed with a retiring DEK keeps it alive.
      await lockActiveInstance(repos, instance.id);
      await repos.deks.getActive(instance.id, true);
      if ((await repos.certificates.versionsSealedWith(retiring.map((d) => d.id), 1, true)).length > 0) return [];
      for (const d of retiring) await repos.deks.deleteRetiring(d.id);
      return retiring.map((d) => d.id);
    });
    this.keyring.forget(ids);
    if (ids.length > 0) this.log.info({ instance: instanceName(instance.id), destroyed: ids.length }, "retired data keys destroyed");
    return ids.length;
  }
}
