/**
 * The audit trail's records and its hash chain. One chain per instance (`instances/{id}`) and one for
 * service-wide events (SERVICE_RESOURCE): a chain per instance keeps every append on one shard when the database
 * is sharded by instance. Each event's hash is SHA-256 over its fields and the previous event's hash, so an
 * edited, deleted or reordered row breaks the chain at that row; a checkpoint of the head (sequence and hash,
 * logged and returned by ListAuditEvents) finds a tail cut off behind it.
 */
import { createHash } from "node:crypto";
import { InvalidArgumentError } from "./errors.js";
import { SERVICE_RESOURCE } from "./iam.js";
import { instanceIdOf, instanceName, parseInstanceName } from "./names.js";

/** The previous hash of a chain's first event. */
export const GENESIS_HASH = "0".repeat(64);

/** What a caller did, as recorded. Strings only, never a secret: names, ids, codes. */
export interface AuditEventInput {
  time: Date;
  /** A member (`user:...`, `apiKey:...`), `anonymous`, or `system:{job}`. */
  principal: string;
  /** Full gRPC method, `/package.Service/Method`, or `cli:{command}` for operator tools. */
  method: string;
  /** The resource named by the call. */
  resource: string;
  /** google.rpc.Code number; 0 for success. */
  code: number;
  /** ErrorInfo reason of a failure, "" on success. */
  reason: string;
  requestId: string;
  callId: string;
  peer: string;
}

/** A stored audit event. */
export interface AuditRecord extends AuditEventInput {
  /** `instances/{id}` or SERVICE_RESOURCE. */
  chain: string;
  /** 1, 2, 3... without gaps within a chain. */
  seq: number;
  prevHash: string;
  hash: string;
}

/** A chain's head: its last sequence number and that event's hash (seq 0 and GENESIS_HASH when empty). */
export interface ChainHead {
  seq: number;
  hash: string;
}

/** The chain an event about `resource` belongs to: its instance's, or the service's for anything else. */
export function auditChainOf(resource: string): string {
  const id = instanceIdOf(resource.split("/").slice(0, 2).join("/"));
  return id === undefined ? SERVICE_RESOURCE : instanceName(id);
}

/**
 * The hash of an event: SHA-256, lowercase hex, over a JSON array of every field in a fixed order (JSON
 * escapes every separator, so no two different events serialize alike).
 */
export function hashAuditEvent(e: Omit<AuditRecord, "hash">): string {
  const fields = [e.chain, e.seq, e.time.getTime(), e.principal, e.method, e.resource, e.code, e.reason, e.requestId, e.callId, e.peer, e.prevHash];
  return createHash("sha256").update(JSON.stringify(fields)).digest("hex");
}

/**
 * Checks a chain name: `instances/{uuid}` or SERVICE_RESOURCE.
 * @param field the request field (or CLI option) it came from, for the error.
 * @returns the name unchanged.
 * @throws InvalidArgumentError INVALID_FIELD naming `field` when it is neither.
 */
export function parseAuditChain(name: string, field: string): string {
  if (name === SERVICE_RESOURCE) return name;
  if (name.startsWith("instances/")) {
    parseInstanceName(name, field);
    return name;
  }
  throw new InvalidArgumentError(
    "INVALID_FIELD",
    field,
    name === ""
      ? `${field} is required: send instances/{uuid} or ${SERVICE_RESOURCE}`
      : `${field} must be an audit chain, instances/{uuid} or ${SERVICE_RESOURCE}, got ${JSON.stringify(name.slice(0, 200))}`,
  );
}

/** One problem `verifyChain` (or `ChainVerifier`) found, naming the row. */
export interface ChainProblem {
  chain: string;
  /** The sequence number of the row at fault (or expected there). */
  seq: number;
  problem: "EDITED" | "MISSING" | "OUT_OF_ORDER" | "BROKEN_LINK" | "TRUNCATED" | "HEAD_MISMATCH";
  detail: string;
}

/** Rows either side of a row whose hash does not recompute where it stands, tried as the position it was written at. */
const MOVED_WINDOW = 16;
/** Rows per chain given that trial; past it (a chain rewritten wholesale) a bad row is just EDITED. */
const MOVED_TRIALS = 10_000;

const short = (hash: string): string => `${hash.slice(0, 12)}…`;

/**
 * Verifies one chain as its rows are read, oldest first, without holding them: feed every row to `add` in
 * sequence order (page by page), then call `finish` with the head table's head. Each problem names the row:
 *
 * - EDITED: the row's fields do not recompute to its stored hash (a field, its previous hash or its hash changed).
 * - OUT_OF_ORDER: the row recomputes only at another sequence within 16 (rows swapped or moved), or rows were
 *   fed out of sequence order (a duplicate or a step back).
 * - MISSING: a gap in the sequence; one problem per gap, at its first sequence (the detail gives the range).
 * - BROKEN_LINK: the row is intact but its previous hash is not the stored hash of the row before it: that
 *   row was rewritten with a recomputed hash (or rows were replaced). Not checked after a gap or a row already
 *   at fault, whose hash proves nothing.
 * - TRUNCATED: the head table, or the checkpoint, reaches further than the last row (at the first sequence
 *   missing).
 * - HEAD_MISMATCH: the head table disagrees with the last row (rows past it: the head was rolled back; or
 *   another hash), or the row at the checkpoint's sequence has another hash than the checkpoint (the chain was
 *   rewritten at or before it).
 *
 * A tail cut off together with a matching roll-back of the head table is consistent: only a checkpoint taken
 * before finds it. Problems accumulate until `drain` or `finish` hands them out, so a caller printing them
 * page by page holds only one page's worth.
 */
export class ChainVerifier {
  private problems: ChainProblem[] = [];
  private last: ChainHead = { seq: 0, hash: GENESIS_HASH };
  /** False when the last row was at fault: its stored hash says nothing about the next row's link. */
  private lastSound = true;
  private rows = 0;
  private trials = 0;
  /** The stored hash of the row at the checkpoint's sequence, once read. */
  private checkpointRowHash?: string;

  /**
   * @param chain the chain's name; every row is hashed as a row of it.
   * @param checkpoint a head kept from earlier (ListAuditEvents' head, `npm run audit -- head`, the server log).
   */
  constructor(
    readonly chain: string,
    private readonly checkpoint?: ChainHead,
  ) {}

  /** Rows added so far (out-of-order ones excepted). */
  get count(): number {
    return this.rows;
  }

  /** Checks the next row; its problems wait for `drain` or `finish`. */
  add(r: AuditRecord): void {
    const prev = this.last;
    if (r.seq <= prev.seq) {
      this.report(r.seq, "OUT_OF_ORDER", `seq ${r.seq} was read after seq ${prev.seq}: rows are out of sequence order or repeated`);
      return;
    }
    this.rows++;
    const gap = r.seq > prev.seq + 1;
    if (gap) {
      const first = prev.seq + 1;
      const n = r.seq - first;
      this.report(first, "MISSING", n === 1 ? `seq ${first} is missing: the row was deleted` : `seq ${first} to ${r.seq - 1} are missing: ${n} rows were deleted`);
    }
    const fault = this.checkRow(r);
    if (fault) {
      this.problems.push(fault);
    } else if (!gap && this.lastSound && r.prevHash !== prev.hash) {
      this.report(
        r.seq,
        "BROKEN_LINK",
        prev.seq === 0
          ? `seq ${r.seq}'s previous_hash ${short(r.prevHash)} is not the genesis hash: rows before it were replaced`
          : `seq ${r.seq}'s previous_hash ${short(r.prevHash)} is not seq ${prev.seq}'s hash ${short(prev.hash)}: seq ${prev.seq} was rewritten with a recomputed hash, or rows were replaced`,
      );
    }
    if (this.checkpoint && r.seq === this.checkpoint.seq) this.checkpointRowHash = r.hash;
    this.last = { seq: r.seq, hash: r.hash };
    this.lastSound = fault === undefined;
  }

  /** Hands out (and forgets) the problems found so far by `add`. */
  drain(): ChainProblem[] {
    const out = this.problems;
    this.problems = [];
    return out;
  }

  /**
   * Ends the chain: compares the last row with the head table's head and with the checkpoint.
   * @param head the chain's head from the head table (seq 0 and GENESIS_HASH when it has none), read after the
   *        last row, so that rows appended meanwhile are not mistaken for rows past the head.
   * @returns every problem not yet drained, in the order found; [] for a sound chain.
   */
  finish(head: ChainHead): ChainProblem[] {
    const last = this.last;
    let truncatedAt: number | undefined;
    if (head.seq > last.seq) {
      truncatedAt = last.seq + 1;
      this.report(truncatedAt, "TRUNCATED", `the head table says the chain reaches seq ${head.seq}, but its last row is seq ${last.seq}: rows ${truncatedAt} to ${head.seq} were deleted`);
    } else if (head.seq < last.seq) {
      this.report(head.seq + 1, "HEAD_MISMATCH", `rows run to seq ${last.seq}, but the head table says the chain ends at seq ${head.seq}: the head table was rolled back or edited`);
    } else if (head.hash !== last.hash) {
      this.report(head.seq, "HEAD_MISMATCH", `the head table's hash ${short(head.hash)} for seq ${head.seq} is not the row's hash ${short(last.hash)}: the head table or the row was edited`);
    }
    const cp = this.checkpoint;
    if (cp && cp.seq > 0) {
      if (cp.seq > last.seq) {
        if (truncatedAt !== last.seq + 1) {
          this.report(last.seq + 1, "TRUNCATED", `the checkpoint has seq ${cp.seq}, but the chain ends at seq ${last.seq}: rows after it were deleted and the head table rolled back to match`);
        }
      } else if (this.checkpointRowHash !== undefined && this.checkpointRowHash !== cp.hash) {
        this.report(cp.seq, "HEAD_MISMATCH", `seq ${cp.seq}'s hash ${short(this.checkpointRowHash)} is not the checkpoint's ${short(cp.hash)}: the chain was rewritten at or before seq ${cp.seq}`);
      }
      // A checkpoint row inside a gap is already reported MISSING.
    }
    return this.drain();
  }

  private report(seq: number, problem: ChainProblem["problem"], detail: string): void {
    this.problems.push({ chain: this.chain, seq, problem, detail });
  }

  /** EDITED or OUT_OF_ORDER when the row's fields do not recompute to its hash at its place; else undefined. */
  private checkRow(r: AuditRecord): ChainProblem | undefined {
    // Hashed as a row of this chain, so a row moved in from another chain does not pass.
    const fields = { ...r, chain: this.chain } as Omit<AuditRecord, "hash"> & { hash?: string };
    delete fields.hash;
    if (hashAuditEvent(fields) === r.hash) return undefined;
    if (this.trials++ < MOVED_TRIALS) {
      for (let d = 1; d <= MOVED_WINDOW; d++) {
        for (const seq of [r.seq - d, r.seq + d]) {
          if (seq >= 1 && hashAuditEvent({ ...fields, seq }) === r.hash) {
            return { chain: this.chain, seq: r.seq, problem: "OUT_OF_ORDER", detail: `seq ${r.seq} holds the event written as seq ${seq}: rows were swapped or moved` };
          }
        }
      }
    }
    const elsewhere = r.chain !== this.chain ? ` (it names chain ${r.chain})` : "";
    return { chain: this.chain, seq: r.seq, problem: "EDITED", detail: `seq ${r.seq}'s fields do not match its hash${elsewhere}: the row was edited after it was written` };
  }
}

/**
 * Verifies a whole chain held in memory; `ChainVerifier` does the same page by page.
 * @param records the chain's rows as read, in sequence order.
 * @param head the chain's head from the head table.
 * @param checkpoint a head kept from earlier, to find a tail cut off together with the head table.
 * @returns the problems, each naming the row's sequence; [] for a sound chain.
 */
export function verifyChain(chain: string, records: AuditRecord[], head: ChainHead, checkpoint?: ChainHead): ChainProblem[] {
  const v = new ChainVerifier(chain, checkpoint);
  for (const r of records) v.add(r);
  return v.finish(head);
}
