/**
 * Reclamation use cases (ReclamationService) and the purge that reclaims expired ones. A reclaim deletes the
 * instance's certificates in bounded batches (one transaction each, so 100,000 certificates never make one
 * huge transaction), then destroys the instance's own key in its root-key backend (crypto/keyring.ts), then
 * deletes its wrapped DEKs and idempotency records and leaves a DELETED tombstone. A lease in
 * the reclamation row decides which replica reclaims; a replica that dies mid-way loses its lease and another
 * (or the restarted one) carries on from where it stopped, since every batch is idempotent.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { AbortedError, FailedPreconditionError, NotFoundError } from "../domain/errors.js";
import { instanceName, reclamationName } from "../domain/names.js";
import type { Clock, InstanceRecord, ReclamationRecord, UnitOfWork } from "../domain/ports.js";
import { parseReclamationFilter } from "./filter.js";
import { auditScope, systemScope } from "../domain/audit-scope.js";
import type { Keyring } from "../crypto/keyring.js";
import { PageTokenCodec, pageSize } from "../domain/page-token.js";
import { certificateRequestScope } from "./request-id.js";

/** Purge tuning. */
export interface PurgeOptions {
  /** Certificates deleted per transaction (≤ 500: SQLite's compound-select cap). */
  batchSize: number;
  /** How long a reclaim lease lasts without renewal, ms; renewed after every batch. */
  leaseMs: number;
}

/** Reclamation use cases. */
export class ReclamationService {
  /** Identifies this process as a lease owner. */
  readonly owner = `${process.pid}-${randomUUID().slice(0, 8)}`;

  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly clock: Clock,
    private readonly pageTokens: PageTokenCodec,
    private readonly log: Logger,
    private readonly opts: PurgeOptions,
  ) {}

  /** @throws NotFoundError RECLAMATION_NOT_FOUND */
  async get(id: string): Promise<ReclamationRecord> {
    const r = await this.uow.repos.reclamations.get(id);
    if (!r) throw new NotFoundError("RECLAMATION_NOT_FOUND", reclamationName(id), `reclamation ${reclamationName(id)} does not exist`);
    return r;
  }

  /**
   * Lists reclamations newest first. @throws InvalidArgumentError INVALID_FILTER | INVALID_PAGE_TOKEN
   */
  async list(req: { pageSize: number; pageToken: string; filter: string }, visibleTo?: readonly string[]): Promise<{ reclamations: ReclamationRecord[]; nextPageToken: string }> {
    const size = pageSize(req.pageSize);
    const filter = parseReclamationFilter(req.filter);
    const binding = PageTokenCodec.bind("reclamations", req.filter);
    const after = req.pageToken ? this.pageTokens.decode(req.pageToken, binding) : undefined;
    const rows = await this.uow.repos.reclamations.list({ ...filter, visibleTo }, size + 1, after);
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return {
      reclamations: page,
      nextPageToken: rows.length > size ? this.pageTokens.encode(binding, { value: last.createTime.getTime(), id: last.id }) : "",
    };
  }

  /**
   * Restores the instance: SCHEDULED -> RESTORED and PENDING_RECLAMATION -> ACTIVE in one transaction; the
   * conditional UPDATE on the reclamation decides any race with a reclaim or another restore.
   * @throws NotFoundError, FailedPreconditionError RECLAMATION_EXPIRED | RECLAMATION_NOT_SCHEDULED
   */
  async restore(id: string): Promise<ReclamationRecord> {
    const now = this.clock.now();
    // A restore that changes nothing rolls back (NotRestored) rather than committing: the call's audit event
    // joins the first transaction that calls a writing method (storage/index.ts), so a committed no-op would be
    // recorded as a successful restore and the refusal below not at all.
    const restored = await this.uow
      .transaction(async (repos) => {
        if (!(await repos.reclamations.restore(id, now))) throw new NotRestored();
        const r = (await repos.reclamations.get(id))!;
        const instance = (await repos.instances.get(r.instanceId))!;
        const active: InstanceRecord = { ...instance, state: "ACTIVE", reclamationId: undefined, expireTime: undefined, revision: instance.revision + 1, updateTime: now };
        if (!(await repos.instances.update(active, instance.revision))) throw new Error(`instance ${instance.id} changed while its reclamation was restored`);
        return true;
      })
      .catch((err: unknown) => {
        if (err instanceof NotRestored) return false;
        throw err;
      });
    const r = await this.get(id);
    if (restored) {
      this.log.info({ reclamation: reclamationName(id), instance: instanceName(r.instanceId) }, "reclamation restored");
      return r;
    }
    throw this.notRestorable(r, now);
  }

  /**
   * Reclaims now (DeleteReclamation). Repeating it on a RECLAIMED reclamation returns it unchanged.
   * @throws NotFoundError, FailedPreconditionError RECLAMATION_NOT_SCHEDULED (restored),
   *         AbortedError RECLAMATION_IN_PROGRESS (another replica holds the lease)
   */
  async reclaimNow(id: string): Promise<ReclamationRecord> {
    const r = await this.get(id);
    if (r.state === "RECLAIMED") return r;
    if (r.state === "RESTORED") throw this.notRestorable(r, this.clock.now(), "reclaimed");
    const now = this.clock.now();
    if (!(await this.uow.repos.reclamations.claim(id, this.owner, now, new Date(now.getTime() + this.opts.leaseMs), false))) {
      const again = await this.get(id);
      if (again.state === "RECLAIMED") return again;
      if (again.state === "RESTORED") throw this.notRestorable(again, now, "reclaimed");
      throw new AbortedError("RECLAMATION_IN_PROGRESS", `reclamation ${reclamationName(id)} is being reclaimed by another server; retry later`, {
        resource: reclamationName(id),
      });
    }
    await this.reclaimClaimed(r);
    return this.get(id);
  }

  /**
   * Reclaims every due reclamation this process can claim (the purge job's tick).
   * @returns the ids this process reclaimed.
   */
  async purgeDue(limit = 100): Promise<string[]> {
    const now = this.clock.now();
    const done: string[] = [];
    for (const id of await this.uow.repos.reclamations.due(now, limit)) {
      // One reclamation failing must not hold up the others; its lease lapses and it is retried later.
      try {
        const t = this.clock.now();
        if (!(await this.uow.repos.reclamations.claim(id, this.owner, t, new Date(t.getTime() + this.opts.leaseMs), true))) continue;
        const r = await this.get(id);
        // The job's work is audited like a call's: its event joins the first transaction that deletes something.
        const scope = systemScope("system:purge", "job:purge", r.instanceId, reclamationName(id), this.clock);
        if (await auditScope.run(scope, () => this.reclaimClaimed(r))) done.push(id);
      } catch (err) {
        this.log.error({ reclamation: reclamationName(id), err: (err as Error).message }, "reclaim failed; retrying after its lease lapses");
      }
    }
    return done;
  }

  /** Deletes the instance's data in batches while holding the lease. @returns false when the lease was lost. */
  private async reclaimClaimed(r: ReclamationRecord): Promise<boolean> {
    const started = Date.now();
    const log = this.log.child({ reclamation: reclamationName(r.id), instance: instanceName(r.instanceId) });
    let deleted = 0;
    for (;;) {
      const n = await this.uow.transaction((repos) => repos.certificates.deleteBatch(r.instanceId, this.opts.batchSize));
      deleted += n;
      if (n > 0) log.debug({ deleted }, "reclaim batch");
      const leaseUntil = new Date(this.clock.now().getTime() + this.opts.leaseMs);
      if (!(await this.uow.repos.reclamations.renewLease(r.id, this.owner, leaseUntil))) {
        log.warn({ deleted }, "reclaim lease lost; another server carries on");
        return false;
      }
      if (n < this.opts.batchSize) break;
    }
    // Crypto-shredding: destroy the instance's own key before the DEK rows go, so a copy of the database taken
    // at any earlier moment opens nothing of this instance. Idempotent; a failure leaves the reclamation to be
    // retried once its lease lapses. (Restore is impossible by now: the reclamation is RECLAIMING.)
    const instance = (await this.uow.repos.instances.get(r.instanceId))!;
    const withoutLayer = (await this.uow.repos.deks.listForInstance(r.instanceId)).filter((d) => d.instanceKeyVersion === undefined).length;
    await this.keyring.destroyInstanceKey(instance).catch(async (err: unknown) => {
      // A customer who destroyed their root key (or whose HSM no longer knows it) has shredded the data already:
      // the reclamation must not wait forever for a backend that will never answer for this instance again.
      const { state } = await this.keyring.status(instance);
      if (state !== "DESTROYED" && state !== "NOT_FOUND") throw err;
      log.warn({ root_key: `${instance.rootKeyBackend}/${instance.rootKeyId}`, root_key_state: state, err: (err as Error).message }, "could not destroy the instance key; its root key is gone, so nothing of the instance opens anyway");
    });
    if (withoutLayer > 0) {
      log.warn(
        { deks_without_instance_key: withoutLayer, root_key: `${instance.rootKeyBackend}/${instance.rootKeyId}` },
        "some DEKs of this instance predate instance keys and were not migrated yet: copies of the database taken before now still open them with the root key",
      );
    }
    const now = this.clock.now();
    const dekIds = await this.uow.transaction(async (repos) => {
      // Certificates imported between the last batch and now cannot exist: the instance is not ACTIVE.
      if ((await repos.certificates.deleteBatch(r.instanceId, this.opts.batchSize)) > 0) throw new Error("certificates appeared during reclaim");
      const ids = await repos.deks.deleteForInstance(r.instanceId);
      await repos.requestIds.deleteScope(certificateRequestScope(r.instanceId));
      const instance = (await repos.instances.get(r.instanceId))!;
      const tombstone: InstanceRecord = {
        ...instance,
        state: "DELETED",
        reclamationId: r.id,
        expireTime: undefined,
        deleteTime: now,
        revision: instance.revision + 1,
        updateTime: now,
      };
      if (!(await repos.instances.update(tombstone, instance.revision))) throw new Error(`instance ${instance.id} changed during reclaim`);
      if (!(await repos.reclamations.finish(r.id, this.owner, now))) throw new LeaseLost();
      return ids;
    }).catch((err: unknown) => {
      if (err instanceof LeaseLost) return undefined;
      throw err;
    });
    if (!dekIds) {
      log.warn("reclaim lease lost before the final step; another server carries on");
      return false;
    }
    // Crypto-shredding: the wrapped DEKs are gone from the database; drop the plaintext ones from memory too.
    this.keyring.forget(dekIds);
    log.info({ certificates: deleted, deks: dekIds.length, instance_key: this.keyring.instanceKeyRef(instance), ms: Date.now() - started, owner: this.owner }, "reclamation reclaimed");
    return true;
  }

  private notRestorable(r: ReclamationRecord, now: Date, verb = "restored"): FailedPreconditionError {
    const name = reclamationName(r.id);
    if (r.state === "SCHEDULED" && r.expireTime.getTime() <= now.getTime()) {
      return new FailedPreconditionError("RECLAMATION_EXPIRED", `reclamation ${name} expired at ${r.expireTime.toISOString()}; the instance can no longer be restored`, {
        resource: name,
        expire_time: r.expireTime.toISOString(),
      });
    }
    return new FailedPreconditionError("RECLAMATION_NOT_SCHEDULED", `reclamation ${name} is ${r.state}, so it cannot be ${verb}`, { resource: name, state: r.state });
  }
}

class LeaseLost extends Error {}

/** Thrown inside the restore transaction when the reclamation was not SCHEDULED, so nothing commits. */
class NotRestored extends Error {}
