/** AIP-155 idempotency records: table `request_ids`. */
import type { Knex } from "knex";
import type { RequestIdRecord, RequestIdRepository } from "../../domain/ports.js";
import { isUniqueViolation } from "../errors.js";

const TABLE = "request_ids";

/** Knex implementation of RequestIdRepository. */
export class KnexRequestIdRepository implements RequestIdRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async find(scope: string, requestId: string): Promise<RequestIdRecord | undefined> {
    const row = (await this.db(TABLE)
      .select("scope", "request_id", "resource_id", "fingerprint")
      .where({ scope, request_id: requestId })
      .first()) as { scope: string; request_id: string; resource_id: string; fingerprint: string } | undefined;
    return row && { scope: row.scope, requestId: row.request_id, resourceId: row.resource_id, fingerprint: row.fingerprint };
  }

  async claim(record: RequestIdRecord, now: Date): Promise<boolean> {
    try {
      await this.db(TABLE).insert({
        scope: record.scope,
        request_id: record.requestId,
        resource_id: record.resourceId,
        fingerprint: record.fingerprint,
        create_time: now.getTime(),
      });
      return true;
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  async deleteScope(scope: string): Promise<void> {
    await this.db(TABLE).where({ scope }).delete();
  }
}
