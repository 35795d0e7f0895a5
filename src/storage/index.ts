/**
 * The storage layer's entry point: a UnitOfWork over one Knex instance, binding every repository to the
 * same transaction (so a multi-row change is one transaction, DESIGN.md "Persistence").
 */
import type { Knex } from "knex";
import type { Repositories, UnitOfWork } from "../domain/ports.js";
import { KnexCertificateRepository } from "./repositories/certificates.js";
import { KnexDekRepository } from "./repositories/deks.js";
import { KnexInstanceRepository } from "./repositories/instances.js";
import { KnexReclamationRepository } from "./repositories/reclamations.js";
import { KnexRequestIdRepository } from "./repositories/request-ids.js";

function bind(db: Knex | Knex.Transaction): Repositories {
  return {
    instances: new KnexInstanceRepository(db),
    deks: new KnexDekRepository(db),
    certificates: new KnexCertificateRepository(db),
    requestIds: new KnexRequestIdRepository(db),
    reclamations: new KnexReclamationRepository(db),
  };
}

/** Knex-backed UnitOfWork. Throwing inside `transaction` rolls the whole transaction back. */
export class KnexUnitOfWork implements UnitOfWork {
  readonly repos: Repositories;

  constructor(private readonly knex: Knex) {
    this.repos = bind(knex);
  }

  transaction<T>(fn: (repos: Repositories) => Promise<T>): Promise<T> {
    return this.knex.transaction((trx) => fn(bind(trx)));
  }

  async ping(): Promise<void> {
    await this.knex.raw("select 1");
  }
}

export { createKnex, isMysql } from "./db.js";
export { migrateLatest } from "./migrations.js";
