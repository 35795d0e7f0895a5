/**
 * The instance-key migration: DEKs written before instance keys existed are wrapped only by their instance's root
 * key, so a copy of the database stays readable with that (shared) root key after the instance is reclaimed.
 * Each tick gives a bounded number of them the instance layer (crypto/keyring.ts `addInstanceLayer`), creating the
 * instance's key in its root key's backend on first use.
 *
 * Online and resumable: each DEK is one compare-and-set of its wrapped key. One replica at a time runs it (a lease
 * in `job_leases`: PKCS#11 cannot refuse a second object with one label, so two replicas must not create the same
 * key). A cursor walks the DEKs in (create_time, id) order and starts over at the end, so DEKs whose backend
 * refuses (a customer's HSM offline) do not hold up the rest. Only ACTIVE instances: a pending instance is
 * migrated if it is restored, and its purge must not race a key being created.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Keyring } from "../crypto/keyring.js";
import { instanceName } from "../domain/names.js";
import type { Clock, InstanceRecord, UnitOfWork } from "../domain/ports.js";

const LEASE = "instance-keys";

/** Moves DEKs without the instance layer to it, a batch per tick. */
export class InstanceKeyMigration {
  readonly #owner = `${process.pid}-${randomUUID().slice(0, 8)}`;
  #after: { createTime: Date; id: string } | undefined;
  #reportedDone = false;

  /** @param leaseMs how long a tick's lease lasts (longer than a tick; the next tick renews it). */
  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly leaseMs = 5 * 60_000,
  ) {}

  /**
   * One tick: when this replica holds the lease, up to `limit` DEKs get the instance layer.
   * @returns how many DEKs this tick moved.
   */
  async tick(limit = 100): Promise<number> {
    const now = this.clock.now();
    if (!(await this.uow.repos.jobLeases.claim(LEASE, this.#owner, now, new Date(now.getTime() + this.leaseMs)))) return 0;
    const deks = await this.uow.repos.deks.listWithoutInstanceLayer(limit, this.#after);
    if (deks.length === 0) {
      if (this.#after === undefined && !this.#reportedDone) {
        this.#reportedDone = true;
        this.log.info("every DEK of the ACTIVE instances has the instance layer");
      }
      this.#after = undefined; // start over: DEKs skipped for a failing backend are retried
      return 0;
    }
    this.#reportedDone = false;
    const failed = new Set<string>();
    let moved = 0;
    for (const dek of deks) {
      this.#after = { createTime: dek.createTime, id: dek.id };
      if (failed.has(dek.instanceId)) continue;
      // Read just before the step: the list may be a moment old.
      const instance = await this.uow.repos.instances.get(dek.instanceId);
      if (!instance || instance.state !== "ACTIVE") continue;
      try {
        if (await this.keyring.addInstanceLayer(this.uow.repos, instance, dek)) moved++;
        await this.undoIfDeleted(instance);
      } catch (err) {
        failed.add(dek.instanceId);
        this.log.warn({ instance: instanceName(instance.id), err: (err as Error).message }, "could not give a DEK the instance layer; retrying on a later pass");
      }
    }
    return moved;
  }

  /**
   * An instance deleted and reclaimed at once while its key was being made: the purge may have destroyed the key
   * before it was made. Destroy it (again): nothing of a reclaimed instance may stay openable.
   */
  private async undoIfDeleted(instance: InstanceRecord): Promise<void> {
    const now = await this.uow.repos.instances.get(instance.id);
    if (now && now.state === "ACTIVE") return;
    await this.keyring.destroyInstanceKey(instance);
  }

  /** Gives the lease up (at a clean stop), so another replica, or this one restarted, carries on at once. */
  async close(): Promise<void> {
    await this.uow.repos.jobLeases.release(LEASE, this.#owner);
  }
}
