/**
 * The audit event of the call being served, carried through async calls (AsyncLocalStorage) down to the unit
 * of work, so a change's event is appended in the same transaction as the change without every use case
 * passing it along: the first transaction of the call that writes appends it before committing (storage).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { AuditEventInput, AuditRecord } from "./audit.js";
import { instanceName } from "./names.js";

/** A call's pending audit event. */
export interface AuditScope {
  /** The chain it goes to (domain/audit.ts auditChainOf). */
  chain: string;
  /** The event, without its time and outcome (a committed change is recorded with code 0). */
  event: Omit<AuditEventInput, "time" | "code" | "reason">;
  /** The clock the event's time is read from. */
  now: () => Date;
  /** Set once the event was committed with a change. */
  appended?: AuditRecord;
}

/** The store the call wrappers fill and the unit of work reads. */
export const auditScope = new AsyncLocalStorage<AuditScope>();

/**
 * The scope of a background job's work on one instance: `principal` is `system:{job}`, `method` names the job
 * (`job:{name}`), the event goes to the instance's chain.
 */
export function systemScope(principal: string, method: string, instanceId: string, resource: string, clock: { now(): Date }): AuditScope {
  return { chain: instanceName(instanceId), event: { principal, method, resource, requestId: "", callId: "", peer: "" }, now: () => clock.now() };
}
