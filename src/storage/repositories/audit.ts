/**
 * The audit log: table `audit_events`, append-only, chained per chain through `chain_heads` (domain/audit.ts).
 * `appendToChain` is the general "next sequence number under the head's row lock, in the caller's transaction"
 * mechanism, so other append-only logs can share it with their own `log` name.
 */
import type { Knex } from "knex";
import { GENESIS_HASH, hashAuditEvent, type AuditEventInput, type AuditRecord, type ChainHead } from "../../domain/audit.js";
import type { AuditRepository } from "../../domain/ports.js";
import { isMysql } from "../db.js";
import { isUniqueViolation } from "../errors.js";

const TABLE = "audit_events";
const HEADS = "chain_heads";
const LOG = "audit";

interface Row {
  chain: string;
  seq: number | string;
  event_time: number | string;
  principal: string;
  method: string;
  resource: string;
  code: number;
  reason: string;
  request_id: string;
  call_id: string;
  peer: string;
  prev_hash: string;
  hash: string;
}

const rowToRecord = (r: Row): AuditRecord => ({
  chain: r.chain,
  seq: Number(r.seq),
  time: new Date(Number(r.event_time)),
  principal: r.principal,
  method: r.method,
  resource: r.resource,
  code: Number(r.code),
  reason: r.reason,
  requestId: r.request_id,
  callId: r.call_id,
  peer: r.peer,
  prevHash: r.prev_hash,
  hash: r.hash,
});

/**
 * Locks `chain`'s head in `log` (creating it at sequence 0 on first use), calls `write(seq, prevHash)` for the
 * next entry, and moves the head to it. Must run inside a transaction: the entry and the head commit together,
 * so sequence numbers have no gaps and concurrent appenders (any replica, any Galera node) queue on the row.
 * @returns what `write` returned.
 */
export async function appendToChain<T extends { hash: string }>(
  db: Knex.Transaction | Knex,
  log: string,
  chain: string,
  write: (seq: number, prevHash: string) => Promise<T>,
): Promise<T> {
  const read = () => {
    const q = db(HEADS).select("seq", "hash").where({ log, chain });
    if (isMysql(db as Knex)) q.forUpdate();
    return q.first() as Promise<{ seq: number | string; hash: string } | undefined>;
  };
  let head = await read();
  if (!head) {
    try {
      await db(HEADS).insert({ log, chain, seq: 0, hash: GENESIS_HASH });
    } catch (err) {
      // Another transaction created it first: its row is the one to queue on.
      if (!isUniqueViolation(err)) throw err;
    }
    head = await read();
    if (!head) throw new Error(`chain head ${log}/${chain} vanished`);
  }
  const seq = Number(head.seq) + 1;
  const entry = await write(seq, head.hash);
  await db(HEADS).where({ log, chain }).update({ seq, hash: entry.hash });
  return entry;
}

/** Knex implementation of AuditRepository. */
export class KnexAuditRepository implements AuditRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  append(chain: string, e: AuditEventInput): Promise<AuditRecord> {
    return appendToChain(this.db, LOG, chain, async (seq, prevHash) => {
      const record = { ...e, chain, seq, prevHash };
      const full: AuditRecord = { ...record, hash: hashAuditEvent(record) };
      await this.db(TABLE).insert({
        chain,
        seq,
        event_time: e.time.getTime(),
        principal: e.principal,
        method: e.method,
        resource: e.resource,
        code: e.code,
        reason: e.reason,
        request_id: e.requestId,
        call_id: e.callId,
        peer: e.peer,
        prev_hash: prevHash,
        hash: full.hash,
      });
      return full;
    });
  }

  async list(chain: string, afterSeq: number, limit: number): Promise<AuditRecord[]> {
    const rows = (await this.db(TABLE).select("*").where("chain", chain).andWhere("seq", ">", afterSeq).orderBy("seq").limit(limit)) as Row[];
    return rows.map(rowToRecord);
  }

  async head(chain: string): Promise<ChainHead> {
    const row = (await this.db(HEADS).select("seq", "hash").where({ log: LOG, chain }).first()) as { seq: number | string; hash: string } | undefined;
    return row ? { seq: Number(row.seq), hash: row.hash } : { seq: 0, hash: GENESIS_HASH };
  }

  async chains(): Promise<string[]> {
    return ((await this.db(HEADS).select("chain").where({ log: LOG }).orderBy("chain")) as { chain: string }[]).map((r) => r.chain);
  }

  /**
   * Every chain with a head or with events, in name order: what the verifier reads, so a chain whose head row
   * was deleted is still checked (it then shows rows past an empty head). Scans the events' primary key: for
   * operator tools, not for the request path.
   */
  async everyChain(): Promise<string[]> {
    const heads = await this.chains();
    const withEvents = ((await this.db(TABLE).distinct("chain")) as { chain: string }[]).map((r) => r.chain);
    return [...new Set([...heads, ...withEvents])].sort();
  }
}
