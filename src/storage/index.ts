/**
 * The storage layer's entry point: a UnitOfWork over one Knex instance, binding every repository to the
 * same transaction, so a multi-row change is one transaction. Driver errors leave it as domain errors
 * (storage/errors.ts).
 */
import type { Knex } from "knex";
import type { AuditRecord } from "../domain/audit.js";
import { auditScope } from "../domain/audit-scope.js";
import { AbortedError } from "../domain/errors.js";
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

/** Knex-backed UnitOfWork. Throwing inside `transaction` rolls the whole transaction back. */
export class KnexUnitOfWork implements UnitOfWork {
  readonly repos: Repositories;

  constructor(private readonly knex: Knex) {
    this.repos = translatingRepositories(bind(knex));
  }

  /**
   * Runs `fn` in a transaction, retrying it from the start (up to 8 attempts, with jittered backoff growing to
   * ~1 s) when MySQL/MariaDB picks it as a deadlock victim or a lock wait times out: both roll the whole
   * transaction back and are safe to retry. Past that, the conflict is reported as ABORTED (retry later).
   * @throws AbortedError CONCURRENT_CONFLICT; UnavailableError DATABASE_UNAVAILABLE; whatever `fn` throws.
   */
  async transaction<T>(fn: (repos: Repositories) => Promise<T>): Promise<T> {
    const scope = auditScope.getStore();
    for (let attempt = 1; ; attempt++) {
      try {
        if (!scope || scope.appended) return await this.knex.transaction((trx) => fn(bind(trx)));
        let appended: AuditRecord | undefined;
        const result = await this.knex.transaction(async (trx) => {
          const watched = watchWrites(bind(trx));
          const out = await fn(watched.repos);
          // The call's event joins the first transaction that changes something, so both commit or neither.
          if (watched.wrote()) appended = await new KnexAuditRepository(trx).append(scope.chain, { ...scope.event, time: scope.now(), code: 0, reason: "" });
          return out;
        });
        if (appended) scope.appended = appended;
        return result;
      } catch (err) {
        if (!isRetryableConflict(err)) throw translateDriverError(err);
        if (attempt >= 8) throw new AbortedError("CONCURRENT_CONFLICT", "the change conflicted with concurrent changes several times; retry it", {}, err);
        await new Promise((r) => setTimeout(r, Math.min(1000, 10 * 2 ** attempt) * (0.5 + Math.random())));
      }
    }
  }

  /** @throws UnavailableError DATABASE_UNAVAILABLE when the database cannot be reached. */
  async ping(): Promise<void> {
    try {
      await this.knex.raw("select 1");
    } catch (err) {
      throw translateDriverError(err);
    }
  }
}

export { createKnex } from "./db.js";
export { DatabaseInUseError, lockDatabase, type DatabaseLock } from "./database-lock.js";
export { migrateLatest } from "./migrations.js";
