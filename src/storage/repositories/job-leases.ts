/** Job leases: table `job_leases`, one row per background job that one replica at a time should run. */
import type { Knex } from "knex";
import type { JobLeaseRepository } from "../../domain/ports.js";
import { isUniqueViolation } from "../errors.js";

const TABLE = "job_leases";

/** Knex implementation of JobLeaseRepository. */
export class KnexJobLeaseRepository implements JobLeaseRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async claim(name: string, owner: string, now: Date, until: Date): Promise<boolean> {
    // One conditional UPDATE decides between replicas; the INSERT only makes the row the first time.
    const n = await this.db(TABLE)
      .where({ name })
      .andWhere((q) => q.where("owner", owner).orWhere("lease_until", "<", now.getTime()))
      .update({ owner, lease_until: until.getTime() });
    if (n === 1) return true;
    try {
      await this.db(TABLE).insert({ name, owner, lease_until: until.getTime() });
      return true;
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  async release(name: string, owner: string): Promise<void> {
    await this.db(TABLE).where({ name, owner }).delete();
  }
}
