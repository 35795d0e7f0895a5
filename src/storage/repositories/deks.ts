/** Wrapped DEK repository: table `deks`. Holds only wrapped keys (JWE); plaintext DEKs never reach it. */
import type { Knex } from "knex";
import type { DekRecord, DekRepository } from "../../domain/ports.js";
import { firstRow, isMysql } from "../db.js";

const TABLE = "deks";
const COLUMNS = ["id", "instance_id", "wrapped_key", "root_key_version", "instance_key_version", "state", "encryption_count", "create_time"] as const;

interface Row {
  id: string;
  instance_id: string;
  wrapped_key: string;
  root_key_version: number;
  instance_key_version: number | null;
  state: string;
  encryption_count: number | string;
  create_time: number | string;
}

function rowToDek(r: Row): DekRecord {
  return {
    id: r.id,
    instanceId: r.instance_id,
    wrappedKey: r.wrapped_key,
    rootKeyVersion: Number(r.root_key_version),
    ...(r.instance_key_version === null || r.instance_key_version === undefined ? {} : { instanceKeyVersion: Number(r.instance_key_version) }),
    state: r.state as DekRecord["state"],
    encryptionCount: Number(r.encryption_count),
    createTime: new Date(Number(r.create_time)),
  };
}

function dekToRow(d: DekRecord): Row {
  return {
    id: d.id,
    instance_id: d.instanceId,
    wrapped_key: d.wrappedKey,
    root_key_version: d.rootKeyVersion,
    instance_key_version: d.instanceKeyVersion ?? null,
    state: d.state,
    encryption_count: d.encryptionCount,
    create_time: d.createTime.getTime(),
  };
}

/** Knex implementation of DekRepository. */
export class KnexDekRepository implements DekRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async insert(dek: DekRecord): Promise<void> {
    await this.db(TABLE).insert(dekToRow(dek));
  }

  async get(id: string): Promise<DekRecord | undefined> {
    return firstRow(this.db(TABLE).select(COLUMNS).where({ id }), rowToDek);
  }

  async getActive(instanceId: string, forUpdate = false): Promise<DekRecord | undefined> {
    const q = this.db(TABLE).select(COLUMNS).where({ instance_id: instanceId, state: "ACTIVE" }).orderBy("create_time", "desc");
    if (forUpdate && isMysql(this.db as Knex)) q.forUpdate();
    return firstRow(q, rowToDek);
  }

  async addEncryptions(id: string, n: number): Promise<void> {
    await this.db(TABLE).where({ id }).increment("encryption_count", n);
  }

  async deleteForInstance(instanceId: string): Promise<string[]> {
    const ids = ((await this.db(TABLE).select("id").where({ instance_id: instanceId })) as { id: string }[]).map((r) => r.id);
    await this.db(TABLE).where({ instance_id: instanceId }).delete();
    return ids;
  }

  async listForInstance(instanceId: string): Promise<DekRecord[]> {
    const rows = (await this.db(TABLE).select(COLUMNS).where({ instance_id: instanceId }).orderBy("create_time", "desc")) as Row[];
    return rows.map(rowToDek);
  }

  async rootKeysInUse(): Promise<{ backend: string; keyId: string }[]> {
    const rows = (await this.db("instances as i")
      .distinct("i.root_key_backend", "i.root_key_id")
      .whereExists((q) => q.select(this.db.raw("1")).from(`${TABLE} as d`).whereRaw("d.instance_id = i.id"))
      .orderBy(["i.root_key_backend", "i.root_key_id"])) as { root_key_backend: string; root_key_id: string }[];
    return rows.map((r) => ({ backend: r.root_key_backend, keyId: r.root_key_id }));
  }

  async rewrap(id: string, expectedWrapped: string, wrappedKey: string, rootKeyVersion: number, instanceKeyVersion: number): Promise<boolean> {
    const n = await this.db(TABLE)
      .where({ id, wrapped_key: expectedWrapped })
      .update({ wrapped_key: wrappedKey, root_key_version: rootKeyVersion, instance_key_version: instanceKeyVersion });
    return n === 1;
  }

  async listWithoutInstanceLayer(limit: number, after?: { createTime: Date; id: string }): Promise<DekRecord[]> {
    const q = this.db(TABLE)
      .join("instances", "instances.id", `${TABLE}.instance_id`)
      .whereNull(`${TABLE}.instance_key_version`)
      .where("instances.state", "ACTIVE");
    if (after) {
      const t = after.createTime.getTime();
      q.where((w) => w.where(`${TABLE}.create_time`, ">", t).orWhere((x) => x.where(`${TABLE}.create_time`, t).andWhere(`${TABLE}.id`, ">", after.id)));
    }
    const rows = (await q
      .select(COLUMNS.map((c) => `${TABLE}.${c}`))
      .orderBy([`${TABLE}.create_time`, `${TABLE}.id`])
      .limit(limit)) as Row[];
    return rows.map(rowToDek);
  }

  async getNewestInstanceKeyVersion(instanceId: string): Promise<number | undefined> {
    const row = (await this.db(TABLE).where({ instance_id: instanceId }).max({ v: "instance_key_version" }).first()) as { v: number | string | null } | undefined;
    return row?.v === null || row?.v === undefined ? undefined : Number(row.v);
  }


  async retire(id: string, state: "RETIRING" | "INACTIVE" = "RETIRING"): Promise<boolean> {
    return (await this.db(TABLE).where({ id, state: "ACTIVE" }).update({ state })) === 1;
  }

  async retireInactive(instanceId: string): Promise<void> {
    await this.db(TABLE).where({ instance_id: instanceId, state: "INACTIVE" }).update({ state: "RETIRING" });
  }

  async deleteRetiring(id: string): Promise<void> {
    await this.db(TABLE).where({ id, state: "RETIRING" }).delete();
  }

  async instancesWithRetiring(limit: number): Promise<string[]> {
    // Only ACTIVE instances, oldest rotation first: pending or key-less instances must not starve the rest.
    const rows = (await this.db(TABLE)
      .join("instances", "instances.id", `${TABLE}.instance_id`)
      .where(`${TABLE}.state`, "RETIRING")
      .andWhere("instances.state", "ACTIVE")
      .groupBy(`${TABLE}.instance_id`)
      .select(`${TABLE}.instance_id`)
      .min({ oldest: `${TABLE}.create_time` })
      .orderBy("oldest")
      .limit(limit)) as { instance_id: string }[];
    return rows.map((r) => r.instance_id);
  }
}
