/**
 * The audit trail's records and its hash chain. One chain per instance (`instances/{id}`) and one for
 * service-wide events (SERVICE_RESOURCE): a chain per instance keeps every append on one shard when the database
 * is sharded by instance. Each event's hash is SHA-256 over its fields and the previous event's hash, so an
 * edited, deleted or reordered row breaks the chain at that row; a checkpoint of the head (sequence and hash,
 * logged and returned by ListAuditEvents) finds a tail cut off behind it.
 */
import { createHash } from "node:crypto";
import { SERVICE_RESOURCE } from "./iam.js";
import { instanceIdOf, instanceName } from "./names.js";

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

/** One problem `verifyChain` found, naming the row. */
export interface ChainProblem {
  chain: string;
  /** The sequence number of the row at fault (or expected there). */
  seq: number;
  problem: "EDITED" | "MISSING" | "OUT_OF_ORDER" | "BROKEN_LINK" | "TRUNCATED" | "HEAD_MISMATCH";
  detail: string;
}
