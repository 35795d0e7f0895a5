/**
 * IAM policies: table `iam_policies` (the bindings as JSON, with a revision for the etag) and `iam_members`
 * (one row per role and member, so lists can keep to the instances a caller is bound on with an index).
 */
import type { Knex } from "knex";
import type { Binding, PolicyRecord } from "../../domain/iam.js";
import { instanceIdOf } from "../../domain/names.js";
import type { PolicyRepository } from "../../domain/ports.js";
import { firstRow } from "../db.js";
import { isUniqueViolation } from "../errors.js";

const TABLE = "iam_policies";
const MEMBERS = "iam_members";

interface Row {
  resource: string;
  bindings: string;
  revision: number;
  update_time: number | string;
}

const rowToPolicy = (r: Row): PolicyRecord => ({
  resource: r.resource,
  bindings: JSON.parse(r.bindings) as Binding[],
  revision: Number(r.revision),
  updateTime: new Date(Number(r.update_time)),
});

/** Knex implementation of PolicyRepository. */
export class KnexPolicyRepository implements PolicyRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async get(resource: string): Promise<PolicyRecord | undefined> {
    return firstRow(this.db(TABLE).select("resource", "bindings", "revision", "update_time").where({ resource }), rowToPolicy);
  }

  async put(policy: PolicyRecord, expectedRevision: number): Promise<boolean> {
    const row = { bindings: JSON.stringify(policy.bindings), revision: policy.revision, update_time: (policy.updateTime ?? new Date()).getTime() };
    if (expectedRevision === 0) {
      try {
        await this.db(TABLE).insert({ resource: policy.resource, ...row });
      } catch (err) {
        if (isUniqueViolation(err)) return false;
        throw err;
      }
    } else if ((await this.db(TABLE).where({ resource: policy.resource, revision: expectedRevision }).update(row)) !== 1) {
      return false;
    }
    await this.db(MEMBERS).where({ resource: policy.resource }).delete();
    const instanceId = instanceIdOf(policy.resource) ?? null;
    const rows = policy.bindings.flatMap((b) => b.members.map((member) => ({ resource: policy.resource, role: b.role, member, instance_id: instanceId })));
    for (let i = 0; i < rows.length; i += 200) await this.db(MEMBERS).insert(rows.slice(i, i + 200));
    return true;
  }
}

/**
 * A subquery of the instance ids whose policy binds any of `members` (AIP-211 visibility), for
 * `whereIn(column, visibleInstanceIds(db, members))`.
 */
export function visibleInstanceIds(db: Knex | Knex.Transaction, members: readonly string[]): Knex.QueryBuilder {
  return db(MEMBERS).distinct("instance_id").whereIn("member", [...members]).whereNotNull("instance_id");
}
