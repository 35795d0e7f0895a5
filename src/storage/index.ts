/**
 * The storage layer's entry point: a UnitOfWork over one Knex instance, binding every repository to the
 * same transaction, so a multi-row change is one transaction. Driver errors leave it as domain errors
 * (storage/errors.ts).
 */
import type { Knex } from "knex";
import type { AuditRecord } from "../domain/audit.js";
import { auditScope } from "../domain/audit-scope.js";
import { msUntilCallDeadline } from "../domain/call-deadline.js";
import { AbortedError, UnavailableError } from "../domain/errors.js";
import { DEFAULT_DATABASE_TIMEOUTS } from "./db.js";
import type { Repositories, UnitOfWork } from "../domain/ports.js";
import { isRetryableConflict, translateDriverError, translatingRepositories } from "./errors.js";
import { KnexCertificateRepository } from "./repositories/certificates.js";
import { KnexDekRepository } from "./repositories/deks.js";
import { KnexInstanceRepository } from "./repositories/instances.js";
import { KnexReclamationRepository } from "./repositories/reclamations.js";
import { KnexRequestIdRepository } from "./repositories/request-ids.js";
import { KnexApiKeyRepository } from "./repositories/api-keys.js";
import { KnexAuditRepository } from "./repositories/audit.js";
import { KnexPolicyRepository } from "./repositories/policies.js";
import { KnexJobLeaseRepository } from "./repositories/job-leases.js";

function bind(db: Knex | Knex.Transaction): Repositories {
  return {
    instances: new KnexInstanceRepository(db),
    deks: new KnexDekRepository(db),
    certificates: new KnexCertificateRepository(db),
    requestIds: new KnexRequestIdRepository(db),
    reclamations: new KnexReclamationRepository(db),
    apiKeys: new KnexApiKeyRepository(db),
    policies: new KnexPolicyRepository(db),
    audit: new KnexAuditRepository(db),
    jobLeases: new KnexJobLeaseRepository(db),
  };
}

/** Repository methods that only read; any other method is taken to write. */
const READS = /^(get|list|find|due|versionsSealedWith|instancesWithRetiring|rootKeysInUse|head|chains)/;

/** `repos` with a flag raised by the first call of a method that writes. */
function watchWrites(repos: Repositories): { repos: Repositories; wrote: () => boolean } {
  let wrote = false;
  const watch = <T extends object>(repo: T): T =>
    new Proxy(repo, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        // Own properties (the Knex handle a repository holds) are not methods.
        if (typeof value !== "function" || typeof property !== "string" || Object.hasOwn(target, property) || READS.test(property)) return value;
        return (...args: unknown[]) => {
          wrote = true;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  const watched = Object.fromEntries(Object.entries(repos).map(([k, r]) => [k, watch(r as object)])) as unknown as Repositories;
  return { repos: watched, wrote: () => wrote };
}

/** How long health checks wait for `ping`, ms: a hung database must turn the server NOT_SERVING quickly. */
const PING_TIMEOUT_MS = 2_000;

/**
 * Runs `work` but stops waiting for it after `limitMs` (the operation timeout, or less when the current call's
 * deadline comes first): a database that hangs (frozen server, lost packets) then fails the call with
 * UNAVAILABLE instead of holding it. `onAbandon` runs when the wait is given up; the work itself goes on until
 * the driver ends it, and its late outcome is dropped.
 * @throws UnavailableError DATABASE_UNAVAILABLE on timeout; whatever `work` throws.
 */
async function bounded<T>(work: () => Promise<T>, limitMs: number, onAbandon?: () => void): Promise<T> {
  const limit = Math.min(limitMs, msUntilCallDeadline());
  if (!Number.isFinite(limit)) return work();
  let timer: NodeJS.Timeout | undefined;
  const p = work();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => {
        onAbandon?.();
        p.catch(() => undefined);
        reject(new UnavailableError("DATABASE_UNAVAILABLE", `the database did not answer within ${Math.max(0, Math.round(limit))} ms; retry with backoff`, { timeout_ms: String(Math.max(0, Math.round(limit))) }));
      },
      Math.max(0, limit),
    );
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A transaction given up on: thrown at its end instead of committing, so it rolls back. */
class Abandoned extends Error {}

/** `repos` whose every method call is bounded like a transaction (reads and writes outside a transaction). */
function boundedRepositories(repos: Repositories, limitMs: number): Repositories {
  const wrap = <T extends object>(repo: T): T =>
    new Proxy(repo, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => bounded(() => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args), limitMs);
      },
    });
  return Object.fromEntries(Object.entries(repos).map(([k, r]) => [k, wrap(r as object)])) as unknown as Repositories;
}

/** Knex-backed UnitOfWork. Throwing inside `transaction` rolls the whole transaction back. */
export class KnexUnitOfWork implements UnitOfWork {
  readonly repos: Repositories;

  /**
   * @param operationMs how long one repository call or one transaction may take before the call gets
   *        UNAVAILABLE DATABASE_UNAVAILABLE (the call's deadline bounds it further).
   */
  constructor(
    private readonly knex: Knex,
    private readonly operationMs: number = DEFAULT_DATABASE_TIMEOUTS.operationMs,
  ) {
    this.repos = boundedRepositories(translatingRepositories(bind(knex)), operationMs);
  }

  /**
   * Runs `fn` in a transaction, retrying it from the start (up to 8 attempts, with jittered backoff growing to
   * ~1 s) when MySQL/MariaDB picks it as a deadlock victim or a lock wait times out: both roll the whole
   * transaction back and are safe to retry. Past that, the conflict is reported as ABORTED (retry later).
   * The whole transaction is bounded by the operation timeout and the call's deadline; one given up on rolls back
   * when the database answers again instead of committing.
   * @throws AbortedError CONCURRENT_CONFLICT; UnavailableError DATABASE_UNAVAILABLE (also on timeout); whatever
   *         `fn` throws.
   */
  async transaction<T>(fn: (repos: Repositories) => Promise<T>): Promise<T> {
    const scope = auditScope.getStore();
    for (let attempt = 1; ; attempt++) {
      try {
        // A transaction given up on (timeout, deadline) must not commit later, when the database answers again.
        let abandoned = false;
        const abandon = () => {
          abandoned = true;
        };
        const notAbandoned = <R>(out: R): R => {
          if (abandoned) throw new Abandoned();
          return out;
        };
        if (!scope || scope.appended) return await bounded(() => this.knex.transaction(async (trx) => notAbandoned(await fn(bind(trx)))), this.operationMs, abandon);
        let appended: AuditRecord | undefined;
        const result = await bounded(
          () =>
            this.knex.transaction(async (trx) => {
              const watched = watchWrites(bind(trx));
              const out = await fn(watched.repos);
              // The call's event joins the first transaction that changes something, so both commit or neither.
              if (watched.wrote()) appended = await new KnexAuditRepository(trx).append(scope.chain, { ...scope.event, time: scope.now(), code: 0, reason: "" });
              return notAbandoned(out);
            }),
          this.operationMs,
          abandon,
        );
        if (appended) scope.appended = appended;
        return result;
      } catch (err) {
        if (!isRetryableConflict(err)) throw translateDriverError(err);
        if (attempt >= 8) throw new AbortedError("CONCURRENT_CONFLICT", "the change conflicted with concurrent changes several times; retry it", {}, err);
        await new Promise((r) => setTimeout(r, Math.min(1000, 10 * 2 ** attempt) * (0.5 + Math.random())));
      }
    }
  }

  /** @throws UnavailableError DATABASE_UNAVAILABLE when the database cannot be reached or does not answer within 2 s. */
  async ping(): Promise<void> {
    await bounded(async () => {
      try {
        await this.knex.raw("select 1");
      } catch (err) {
        throw translateDriverError(err);
      }
    }, PING_TIMEOUT_MS);
  }
}

export { createKnex } from "./db.js";
export { databaseStartProblem } from "./errors.js";
export { DatabaseInUseError, lockDatabase, type DatabaseLock } from "./database-lock.js";
export { migrateLatest } from "./migrations.js";
