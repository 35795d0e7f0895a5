/**
 * What stands between a call and its handler: who is calling (auth/authenticate.ts), whether it is over its rate
 * limit, whether it may do this (auth/authorize.ts, driven by the method table auth/methods.ts), and what the
 * audit trail records about it. The call wrappers (calls.ts) pass every call through here, so no handler checks
 * anything itself and a method without a rule is denied.
 */
import type { ServerSurfaceCall } from "@grpc/grpc-js/build/src/server-call.js";
import type { Logger } from "pino";
import type { Caller, Authenticator } from "../auth/authenticate.js";
import type { Admission, Authorizer } from "../auth/authorize.js";
import { METHOD_RULES, type MethodRule } from "../auth/methods.js";
import { auditChainOf, type AuditEventInput } from "../domain/audit.js";
import { auditScope, type AuditScope } from "../domain/audit-scope.js";
import { DomainError, NotFoundError, PermissionDeniedError, RateLimitedError, UnauthenticatedError } from "../domain/errors.js";
import { SERVICE_RESOURCE } from "../domain/iam.js";
import type { AuditService } from "../services/audit.js";
import { toStatus } from "./status.js";

/** A per-key rate limiter: `take` returns 0 when allowed, else the milliseconds to wait. */
export interface Limiter {
  take(key: string): number;
}

/** What the gate needs. */
export interface GateDeps {
  authenticator: Authenticator;
  authorizer: Authorizer;
  audit: Pick<AuditService, "record">;
  /** Per principal; undefined: no limit. */
  callLimiter?: Limiter;
  /** Describes the call limit for the error message, e.g. "100 calls/s (burst 200)". */
  callLimit?: string;
  /** Per peer address, for recording unauthenticated calls in the audit trail (a flood must not amplify writes). */
  unauthenticatedAuditLimiter: Limiter;
  now: () => Date;
  log: Logger;
}

/** The transport facts a call carries. */
export interface CallFacts {
  callId: string;
  peer: string;
  authorization: string[];
  verifiedClientSan?: string;
}

/** The facts of a grpc-js call: its metadata, peer and verified client certificate. */
export function callFacts(call: ServerSurfaceCall, callId: string): CallFacts {
  const authorization = call.metadata.get("authorization").map((v) => (typeof v === "string" ? v : v.toString("latin1")));
  const san = call.getAuthContext?.().sslPeerCertificate?.subjectaltname;
  return { callId, peer: call.getPeer().slice(0, 128), authorization, verifiedClientSan: san };
}

/** A call let in: who, what it may see, and how to run its use case with the audit trail around it. */
export interface Admitted {
  caller: Caller;
  /** For lists: only instances bound to these members; undefined: everything. */
  visibleTo?: readonly string[];
  /** Runs the use case; records the event the method's rule asks for (after it, or within its transaction). */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** For per-item methods: checks one item, then runs its use case as `run` does. */
  runItem<T>(item: unknown, fn: () => Promise<T>): Promise<T>;
}

/** An AIP-155 request id worth recording: the shape the service accepts, else nothing. */
function requestIdOf(request: unknown): string {
  const r = request as { requestId?: unknown; item?: { requestId?: unknown } } | undefined;
  const v = r?.requestId ?? r?.item?.requestId;
  return typeof v === "string" && /^[0-9A-Za-z-]{1,64}$/.test(v) ? v : "";
}

/** The gate; one per server. */
export class Gate {
  constructor(private readonly deps: GateDeps) {}

  /** Code and reason of a failure, as the audit trail records them. */
  private static outcome(err: unknown): { code: number; reason: string } {
    const { status } = toStatus(err);
    return { code: status.code, reason: err instanceof DomainError ? err.reason : "INTERNAL" };
  }

  private event(path: string, facts: CallFacts, principal: string, resource: string, requestId: string): Omit<AuditEventInput, "time" | "code" | "reason"> {
    return { principal, method: path, resource, requestId, callId: facts.callId, peer: facts.peer };
  }

  /** Appends an event in its own transaction; a failure to record is logged, and fails the call (fail closed). */
  private async record(chain: string, e: Omit<AuditEventInput, "time" | "code" | "reason">, outcome: { code: number; reason: string }): Promise<void> {
    await this.deps.audit.record(chain, { ...e, ...outcome, time: this.deps.now() });
  }

  /**
   * Authenticates, rate-limits and authorizes a call to `path` with `request` (undefined for a client stream,
   * whose items are checked by `runItem`).
   * @throws UnauthenticatedError, RateLimitedError, NotFoundError (hidden), PermissionDeniedError,
   *         InvalidArgumentError (a malformed resource name): each already recorded when the rule asks.
   */
  async admit(path: string, facts: CallFacts, request: unknown): Promise<Admitted> {
    const rule: MethodRule | undefined = METHOD_RULES[path];
    let caller: Caller;
    try {
      caller = await this.deps.authenticator.authenticate(facts);
    } catch (err) {
      if (err instanceof UnauthenticatedError) {
        this.deps.log.info({ method: path, call_id: facts.callId, peer: facts.peer, why: (err.cause as Error | undefined)?.message }, "unauthenticated call");
        const host = facts.peer.replace(/:\d+$/, "");
        if (this.deps.unauthenticatedAuditLimiter.take(host) === 0) {
          await this.record(SERVICE_RESOURCE, this.event(path, facts, "anonymous", "", ""), Gate.outcome(err));
        }
      }
      throw err;
    }
    // Rate-limited calls are not recorded: a flood must not turn into writes. Streamed items count one each.
    const limit = () => {
      const wait = this.deps.callLimiter?.take(caller.principal) ?? 0;
      if (wait > 0) throw new RateLimitedError(wait, this.deps.callLimit ?? "");
    };
    limit();
    const requestId = requestIdOf(request);
    if (!rule) {
      const err = new PermissionDeniedError("(none: the method has no rule)", path);
      await this.record(SERVICE_RESOURCE, this.event(path, facts, caller.principal, "", requestId), Gate.outcome(err));
      throw err;
    }
    const check = async (req: unknown, item = false) => {
      try {
        return await this.deps.authorizer.admit(caller, rule, req);
      } catch (err) {
        if (err instanceof NotFoundError || err instanceof PermissionDeniedError) {
          const resource = (err.metadata.resource ?? "").slice(0, 255);
          // A denial the caller may see goes to its instance's chain. A hidden one (NOT_FOUND: no role, or no such
          // instance) goes to the service's: any made-up name must not open a chain of its own.
          const chain = err instanceof PermissionDeniedError ? (err.metadata.instance ?? auditChainOf(resource)) : SERVICE_RESOURCE;
          await this.record(chain, this.event(path, facts, caller.principal, resource, requestIdOf(req)), Gate.outcome(err));
        }
        throw err;
      }
    };
    const audited = async <T>(a: Admission | undefined, reqId: string, fn: () => Promise<T>): Promise<T> => {
      const resource = a?.resource ?? "";
      const e = this.event(path, facts, caller.principal, resource, reqId);
      const chain = a?.instance ?? auditChainOf(resource);
      if (rule.audit === "denied") return fn();
      if (rule.audit === "material") {
        let out: T;
        try {
          out = await fn();
        } catch (err) {
          await this.record(chain, e, Gate.outcome(err));
          throw err;
        }
        // Before the answer (or the first streamed message) leaves.
        await this.record(chain, e, { code: 0, reason: "" });
        return out;
      }
      const scope: AuditScope = { chain, event: e, now: this.deps.now };
      try {
        const out = await auditScope.run(scope, fn);
        if (!scope.appended) await this.record(chain, e, { code: 0, reason: "" });
        return out;
      } catch (err) {
        // A change that failed before committing anything is still recorded, with its outcome.
        if (!scope.appended) await this.record(chain, e, Gate.outcome(err));
        throw err;
      }
    };
    const admission = rule.perItem ? undefined : await check(request);
    return {
      caller,
      visibleTo: admission?.visibleTo,
      run: (fn) => audited(admission, requestId, fn),
      runItem: async (item, fn) => {
        // The credential is checked again for every item, so a key revoked (or a token expired) while the stream
        // is open stops it at the next item.
        await this.deps.authenticator.authenticate(facts);
        limit();
        const a = await check(item);
        return audited(a, requestIdOf(item), fn);
      },
    };
  }
}
