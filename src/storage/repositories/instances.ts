/** Instance repository: table `instances`. */
import type { Knex } from "knex";
import { firstRow, isMysql, keysetAfter, optionalDate } from "../db.js";
import { visibleInstanceIds } from "./policies.js";
import type { InstanceRecord, InstanceRepository, KeysetCursor } from "../../domain/ports.js";

const TABLE = "instances";
const COLUMNS = [
  "id",
  "display_name",
  "description",
  "labels",
  "state",
  "root_key_backend",
  "root_key_id",
  "key_management",
  "revision",
  "create_time",
  "update_time",
  "reclamation_id",
  "expire_time",
  "delete_time",
] as const;

interface Row {
  id: string;
  display_name: string;
  description: string;
  labels: string;
  state: string;
  root_key_backend: string;
  root_key_id: string;
  key_management: string;
  revision: number;
  create_time: number | string;
  update_time: number | string;
  reclamation_id: string | null;
  expire_time: number | string | null;
  delete_time: number | string | null;
}

function rowToInstance(r: Row): InstanceRecord {
  return {
    id: r.id,
    displayName: r.display_name,
    description: r.description,
    labels: JSON.parse(r.labels) as Record<string, string>,
    state: r.state as InstanceRecord["state"],
    rootKeyBackend: r.root_key_backend,
    rootKeyId: r.root_key_id,
    keyManagement: r.key_management as InstanceRecord["keyManagement"],
    revision: Number(r.revision),
    createTime: new Date(Number(r.create_time)),
    updateTime: new Date(Number(r.update_time)),
    reclamationId: r.reclamation_id ?? undefined,
    expireTime: optionalDate(r.expire_time),
    deleteTime: optionalDate(r.delete_time),
  };
}

function instanceToRow(i: InstanceRecord): Row {
  return {
    id: i.id,
    display_name: i.displayName,
    description: i.description,
    labels: JSON.stringify(i.labels),
    state: i.state,
    root_key_backend: i.rootKeyBackend,
    root_key_id: i.rootKeyId,
    key_management: i.keyManagement,
    revision: i.revision,
    create_time: i.createTime.getTime(),
    update_time: i.updateTime.getTime(),
    reclamation_id: i.reclamationId ?? null,
    expire_time: i.expireTime?.getTime() ?? null,
    delete_time: i.deleteTime?.getTime() ?? null,
  };
}

/** Knex implementation of InstanceRepository over `db` (a Knex instance or a transaction). */
export class KnexInstanceRepository implements InstanceRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async insert(instance: InstanceRecord): Promise<void> {
    await this.db(TABLE).insert(instanceToRow(instance));
  }

  async get(id: string): Promise<InstanceRecord | undefined> {
    return firstRow(this.db(TABLE).select(COLUMNS).where({ id }), rowToInstance);
  }

  async getForShare(id: string): Promise<InstanceRecord | undefined> {
    const q = this.db(TABLE).select(COLUMNS).where({ id });
    if (isMysql(this.db as Knex)) q.forShare();
    return firstRow(q, rowToInstance);
  }

  async list(limit: number, after: KeysetCursor | undefined, showDeleted: boolean, visibleTo?: readonly string[]): Promise<InstanceRecord[]> {
    const q = this.db(TABLE).select(COLUMNS);
    if (visibleTo) q.whereIn("id", visibleInstanceIds(this.db, visibleTo));
    if (!showDeleted) q.where("state", "ACTIVE");
    if (after) keysetAfter(q, "create_time", "id", after.value, after.id, false);
    const rows = (await q.orderBy([{ column: "create_time" }, { column: "id" }]).limit(limit)) as Row[];
    return rows.map(rowToInstance);
  }

  async update(instance: InstanceRecord, expectedRevision: number): Promise<boolean> {
    const { id, create_time: _c, ...rest } = instanceToRow(instance);
    const n = await this.db(TABLE).where({ id, revision: expectedRevision }).update(rest);
    return n === 1;
  }
}
