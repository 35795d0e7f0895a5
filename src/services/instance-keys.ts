/**
 * The instance-key migration: DEKs written before instance keys existed are wrapped only by their instance's root
 * key, so a copy of the database stays readable with that (shared) root key after the instance is reclaimed.
 * Each tick gives a bounded number of them the instance layer (crypto/keyring.ts `addInstanceLayer`), creating the
 * instance's key in its root key's backend on first use. Online and resumable: each DEK is one compare-and-set of
 * its wrapped key, any number of replicas may run it, and a DEK that appears later without the layer (written by
 * a replica still on the previous release) is found by a later tick.
 *
 * Instances whose reclamation expires within the margin are left alone: the purge may be destroying their key.
 */
import type { Logger } from "pino";
import type { Keyring } from "../crypto/keyring.js";
import { instanceName } from "../domain/names.js";
import type { Clock, InstanceRecord, UnitOfWork } from "../domain/ports.js";

/** A pending reclamation expiring sooner than this is not migrated (its purge may be under way), ms. */
const RECLAIM_MARGIN_MS = 10 * 60_000;

/** Moves DEKs without the instance layer to it, a batch per tick. */
export class InstanceKeyMigration {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /**
   * One tick: up to `limit` DEKs get the instance layer. A DEK whose instance's backend refuses (a customer's HSM
   * offline) is skipped and retried next tick; others go on.
   * @returns how many DEKs this tick moved.
   */
  async tick(limit = 100): Promise<number> {
    const soon = this.clock.now().getTime() + RECLAIM_MARGIN_MS;
    const deks = await this.uow.repos.deks.listWithoutInstanceLayer(limit, new Date(soon));
    const instances = new Map<string, InstanceRecord | undefined>();
    let moved = 0;
    for (const dek of deks) {
      if (!instances.has(dek.instanceId)) instances.set(dek.instanceId, await this.uow.repos.instances.get(dek.instanceId));
      const instance = instances.get(dek.instanceId);
      // Re-checked on the row just read: the list may be a moment old.
      if (!instance || instance.state === "DELETED") continue;
      if (instance.state === "PENDING_RECLAMATION" && (instance.expireTime?.getTime() ?? 0) < soon) continue;
      try {
        if (await this.keyring.addInstanceLayer(this.uow.repos, instance, dek)) moved++;
      } catch (err) {
        instances.set(dek.instanceId, undefined);
        this.log.warn({ instance: instanceName(instance.id), err: (err as Error).message }, "could not give DEKs the instance layer; retrying next tick");
      }
    }
    return moved;
  }

  /** Runs ticks until a tick moves nothing (tests). @returns DEKs moved. */
  async runToEnd(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.tick();
      total += n;
      if (n === 0) return total;
    }
  }
}
