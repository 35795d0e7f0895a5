/**
 * DEK rotation: a new DEK becomes active, every certificate version sealed with the old one is re-encrypted in
 * batches, then the old DEK is deleted (destroyed). AES-GCM with random 96-bit IVs is safe for at most 2^32
 * encryptions per key (NIST SP 800-38D §8.3), so a DEK is also rotated automatically before it reaches the
 * configured share of that limit.
 *
 * Resumable and safe with several replicas without a lease: the old DEK stays RETIRING (and keeps opening
 * what it sealed) until nothing uses it; every re-encryption is a conditional UPDATE on the row's DEK id, so a
 * row re-encrypted by two replicas at once is written once; a crash leaves RETIRING DEKs that the next
 * RotateDataKey or the background job finishes.
 */
import type { Logger } from "pino";
import { open, seal, type SecretField } from "../crypto/envelope.js";
import { certificateName, instanceName } from "../domain/names.js";
import type { CertificateVersionRecord, Clock, DekRecord, InstanceRecord, UnitOfWork } from "../domain/ports.js";
import { requireActive } from "./instance-state.js";
import type { Keyring } from "./keyring.js";

/** Rotation tuning. */
export interface RotationOptions {
  /** Certificate versions re-encrypted per transaction. */
  batchSize: number;
  /** Encryptions after which a DEK is rotated before sealing more (a share of 2^32). */
  maxEncryptionsPerDek: number;
}

const FIELDS: { field: SecretField; key: "certificateJwe" | "privateKeyJwe" | "intermediatesJwe" }[] = [
  { field: "certificate", key: "certificateJwe" },
  { field: "private_key", key: "privateKeyJwe" },
  { field: "intermediates", key: "intermediatesJwe" },
];

/** DEK rotation use cases. */
export class DekRotation {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly opts: RotationOptions,
  ) {}

  /**
   * Makes a new DEK active and the current one RETIRING, in one transaction. The conditional ACTIVE -> RETIRING
   * update lets only one of several concurrent rotations win; the others use the winner's DEK.
   * @returns whether this call rotated.
   */
  async begin(instance: InstanceRecord): Promise<boolean> {
    const fresh = await this.keyring.newDek(instance);
    return this.uow.transaction(async (repos) => {
      const current = await repos.deks.getActive(instance.id);
      if (current && !(await repos.deks.retire(current.id))) return false;
      await repos.deks.insert(fresh);
      this.log.info({ instance: instanceName(instance.id), retiring: current?.id, active: fresh.id }, "data key rotated");
      return true;
    });
  }

  /**
   * Rotates the DEK before sealing `needed` more values if the active one would pass the limit.
   * Called on the write paths before their transaction.
   */
  async ensureFresh(instance: InstanceRecord, needed: number): Promise<void> {
    const active = await this.uow.repos.deks.getActive(instance.id);
    if (active && active.encryptionCount + needed > this.opts.maxEncryptionsPerDek) await this.begin(instance);
  }

  /**
   * Re-encrypts every version sealed with a RETIRING DEK of the instance, in batches, then deletes those DEKs.
   * @returns how many versions this call re-encrypted and how many DEKs it destroyed.
   */
  async finish(instance: InstanceRecord): Promise<{ reencrypted: number; retired: number }> {
    let reencrypted = 0;
    for (;;) {
      const retiring = (await this.uow.repos.deks.listForInstance(instance.id)).filter((d) => d.state === "RETIRING");
      if (retiring.length === 0) return { reencrypted, retired: 0 };
      const batch = await this.uow.repos.certificates.versionsSealedWith(
        retiring.map((d) => d.id),
        this.opts.batchSize,
      );
      if (batch.length === 0) return { reencrypted, retired: await this.destroy(instance, retiring) };
      reencrypted += await this.reencrypt(instance, batch);
    }
  }

  /** Rotates now and finishes the re-encryption (RotateDataKey). */
  async rotate(instance: InstanceRecord): Promise<{ reencrypted: number; retired: number }> {
    requireActive(instance);
    await this.begin(instance);
    return this.finish(instance);
  }

  /** The background job's tick: finishes rotations left half-way (crash, or automatic rotation). */
  async resumeAll(limit = 20): Promise<number> {
    let done = 0;
    for (const id of await this.uow.repos.deks.instancesWithRetiring(limit)) {
      const instance = await this.uow.repos.instances.get(id);
      if (!instance || instance.state !== "ACTIVE") continue;
      try {
        await this.finish(instance);
        done++;
      } catch (err) {
        // A disabled root key, for example: the rotation waits until the key is back.
        this.log.warn({ instance: instanceName(id), err: (err as Error).message }, "data key rotation not finished; retrying later");
      }
    }
    return done;
  }

  private async reencrypt(instance: InstanceRecord, batch: CertificateVersionRecord[]): Promise<number> {
    return this.uow.transaction(async (repos) => {
      const active = await this.keyring.activeDek(repos, instance);
      const resolver = this.keyring.resolver(repos, instance);
      let written = 0;
      let sealed = 0;
      try {
        for (const v of batch) {
          const ctx = (field: SecretField) => ({ instance: instanceName(instance.id), certificate: certificateName(instance.id, v.certificateId), field });
          const next: CertificateVersionRecord = { ...v, dekId: active.id };
          for (const { field, key } of FIELDS) {
            if (v[key] === "") continue;
            const plain = await open(v[key], resolver.resolve, ctx(field));
            try {
              next[key] = await seal({ id: active.id, key: active.key }, plain, ctx(field));
              sealed++;
            } finally {
              plain.fill(0);
            }
          }
          if (await repos.certificates.reseal(next, v.dekId)) written++;
        }
        await repos.deks.addEncryptions(active.id, sealed);
        return written;
      } finally {
        active.release();
        resolver.releaseAll();
      }
    });
  }

  private async destroy(instance: InstanceRecord, retiring: DekRecord[]): Promise<number> {
    const ids = await this.uow.transaction(async (repos) => {
      // Re-check inside the transaction: a version sealed with a retiring DEK keeps it alive.
      if ((await repos.certificates.versionsSealedWith(retiring.map((d) => d.id), 1)).length > 0) return [];
      for (const d of retiring) await repos.deks.deleteRetiring(d.id);
      return retiring.map((d) => d.id);
    });
    this.keyring.forget(ids);
    if (ids.length > 0) this.log.info({ instance: instanceName(instance.id), destroyed: ids.length }, "retired data keys destroyed");
    return ids.length;
  }
}
