/** API keys: table `api_keys`. Only the secret's HMAC is stored (ApiKeyRecord). */
import type { Knex } from "knex";
import { firstRow, keysetAfter, optionalDate } from "../db.js";
import type { ApiKeyRecord, ApiKeyRepository, KeysetCursor } from "../../domain/ports.js";

const TABLE = "api_keys";
const COLUMNS = ["id", "display_name", "secret_hmac", "creator", "create_time", "expire_time", "revoke_time", "last_use_time"] as const;

interface Row {
  id: string;
  display_name: string;
  secret_hmac: string;
  creator: string;
  create_time: number | string;
  expire_time: number | string | null;
  revoke_time: number | string | null;
  last_use_time: number | string | null;
}

function rowToApiKey(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    displayName: r.display_name,
    secretHmac: r.secret_hmac,
    creator: r.creator,
    createTime: new Date(Number(r.create_time)),
    expireTime: optionalDate(r.expire_time),
    revokeTime: optionalDate(r.revoke_time),
    lastUseTime: optionalDate(r.last_use_time),
  };
}

/** Knex implementation of ApiKeyRepository. */
export class KnexApiKeyRepository implements ApiKeyRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async insert(k: ApiKeyRecord): Promise<void> {
    await this.db(TABLE).insert({
      id: k.id,
      display_name: k.displayName,
      secret_hmac: k.secretHmac,
      creator: k.creator,
      create_time: k.createTime.getTime(),
      expire_time: k.expireTime?.getTime() ?? null,
      revoke_time: k.revokeTime?.getTime() ?? null,
      last_use_time: k.lastUseTime?.getTime() ?? null,
    });
  }

  async get(id: string): Promise<ApiKeyRecord | undefined> {
    return firstRow(this.db(TABLE).select(COLUMNS).where({ id }), rowToApiKey);
  }

  async list(limit: number, after?: KeysetCursor): Promise<ApiKeyRecord[]> {
    const q = this.db(TABLE).select(COLUMNS);
    if (after) keysetAfter(q, "create_time", "id", after.value, after.id, false);
    const rows = (await q.orderBy([{ column: "create_time" }, { column: "id" }]).limit(limit)) as Row[];
    return rows.map(rowToApiKey);
  }

  async revoke(id: string, now: Date): Promise<boolean> {
    return (await this.db(TABLE).where({ id }).whereNull("revoke_time").update({ revoke_time: now.getTime() })) === 1;
  }

  async recordUse(lastUse: ReadonlyMap<string, Date>): Promise<void> {
    for (const [id, at] of lastUse) {
      const t = at.getTime();
      await this.db(TABLE)
        .where({ id })
        .andWhere((w) => w.whereNull("last_use_time").orWhere("last_use_time", "<", t))
        .update({ last_use_time: t });
    }
  }
}
