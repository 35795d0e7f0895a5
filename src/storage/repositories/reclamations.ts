/**
 * Reclamation repository: table `reclamations`. Every transition is one conditional UPDATE whose affected-row
 * count says who won, so races between replicas are decided by the database.
 */
import { visibleInstanceIds } from "./policies.js";
import type { Knex } from "knex";
import { UniqueConstraintError } from "../../domain/errors.js";
import type { KeysetCursor, ReclamationFilter, ReclamationRecord, ReclamationRepository } from "../../domain/ports.js";
import { firstRow, keysetAfter } from "../db.js";
import { isUniqueViolation } from "../errors.js";

const TABLE = "reclamations";
const COLUMNS = ["id", "instance_id", "state", "expire_time", "create_time", "update_time", "lease_owner", "lease_until"] as const;

interface Row {
  id: string;
  instance_id: string;
  state: string;
  open_instance_id?: string | null;
  expire_time: number | string;
  create_time: number | string;
  update_time: number | string;
  lease_owner: string | null;
  lease_until: number | string | null;
}

function rowToReclamation(r: Row): ReclamationRecord {
  return {
    id: r.id,
    instanceId: r.instance_id,
    state: r.state as ReclamationRecord["state"],
    expireTime: new Date(Number(r.expire_time)),
    createTime: new Date(Number(r.create_time)),
    updateTime: new Date(Number(r.update_time)),
    leaseOwner: r.lease_owner ?? undefined,
    leaseUntil: r.lease_until === null ? undefined : new Date(Number(r.lease_until)),
  };
}

function reclamationToRow(r: ReclamationRecord): Row {
  const open = r.state === "SCHEDULED" || r.state === "RECLAIMING";
  return {
    id: r.id,
    instance_id: r.instanceId,
    state: r.state,
    open_instance_id: open ? r.instanceId : null,
    expire_time: r.expireTime.getTime(),
    create_time: r.createTime.getTime(),
    update_time: r.updateTime.getTime(),
    lease_owner: r.leaseOwner ?? null,
    lease_until: r.leaseUntil?.getTime() ?? null,
  };
}

/** Knex implementation of ReclamationRepository. */
export class KnexReclamationRepository implements ReclamationRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async insert(reclamation: ReclamationRecord): Promise<void> {
    try {
      await this.db(TABLE).insert(reclamationToRow(reclamation));
    } catch (err) {
      if (isUniqueViolation(err)) throw new UniqueConstraintError("reclamations_open_instance", err);
      throw err;
    }
  }

  async get(id: string): Promise<ReclamationRecord | undefined> {
    return firstRow(this.db(TABLE).select(COLUMNS).where({ id }), rowToReclamation);
  }

  async list(filter: ReclamationFilter, limit: number, after?: KeysetCursor): Promise<ReclamationRecord[]> {
    const q = this.db(TABLE).select(COLUMNS);
    if (filter.instanceId) q.where("instance_id", filter.instanceId);
    if (filter.state) q.where("state", filter.state);
    if (filter.visibleTo) q.whereIn("instance_id", visibleInstanceIds(this.db, filter.visibleTo));
    if (after) keysetAfter(q, "create_time", "id", after.value, after.id, true);
    const rows = (await q.orderBy([{ column: "create_time", order: "desc" }, { column: "id", order: "desc" }]).limit(limit)) as Row[];
    return rows.map(rowToReclamation);
  }

  async restore(id: string, now: Date): Promise<boolean> {
    const n = await this.db(TABLE)
      .where({ id, state: "SCHEDULED" })
      .andWhere("expire_time", ">", now.getTime())
      .update({ state: "RESTORED", open_instance_id: null, update_time: now.getTime() });
    return n === 1;
  }

  async claim(id: string, owner: string, now: Date, leaseUntil: Date, expiredOnly: boolean): Promise<boolean> {
    const t = now.getTime();
    const n = await this.db(TABLE)
      .where({ id })
      .andWhere((w) =>
        w
          .where((s) => {
            s.where("state", "SCHEDULED");
            if (expiredOnly) s.andWhere("expire_time", "<=", t);
          })
          .orWhere((r) => r.where("state", "RECLAIMING").andWhere("lease_until", "<", t)),
      )
      .update({ state: "RECLAIMING", lease_owner: owner, lease_until: leaseUntil.getTime(), update_time: t });
    return n === 1;
  }

  async renewLease(id: string, owner: string, leaseUntil: Date): Promise<boolean> {
    const n = await this.db(TABLE).where({ id, state: "RECLAIMING", lease_owner: owner }).update({ lease_until: leaseUntil.getTime() });
    return n === 1;
  }

  async finish(id: string, owner: string, now: Date): Promise<boolean> {
    const n = await this.db(TABLE)
      .where({ id, state: "RECLAIMING", lease_owner: owner })
      .update({ state: "RECLAIMED", open_instance_id: null, lease_owner: null, lease_until: null, update_time: now.getTime() });
    return n === 1;
  }

  async due(now: Date, limit: number): Promise<string[]> {
    const t = now.getTime();
    const rows = (await this.db(TABLE)
      .select("id")
      .where((w) => w.where("state", "SCHEDULED").andWhere("expire_time", "<=", t))
      .orWhere((w) => w.where("state", "RECLAIMING").andWhere("lease_until", "<", t))
      .orderBy("expire_time")
      .limit(limit)) as { id: string }[];
    return rows.map((r) => r.id);
  }
}
