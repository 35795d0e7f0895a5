/**
 * IAM policy use cases (GetIamPolicy, SetIamPolicy): read-modify-write guarded by an etag (AIP-154), bindings
 * checked and normalized by the domain rules (domain/iam.ts) before anything is stored.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { AbortedError, InvalidArgumentError } from "../domain/errors.js";
import { type Binding, isPolicyResource, normalizeBindings, SERVICE_RESOURCE } from "../domain/iam.js";
import { instanceNotFound } from "../domain/instance.js";
import { instanceIdOf } from "../domain/names.js";
import type { Clock, UnitOfWork } from "../domain/ports.js";

/** A policy as answered: bindings, version 1, and its etag (12 opaque bytes). */
export interface PolicyView {
  version: number;
  bindings: Binding[];
  etag: Buffer;
}

/** Another writer stored a revision first. */
class LostRace extends Error {}

/** The etag of a policy revision: changes with every write, never repeats across resources. */
function etagOf(resource: string, revision: number): Buffer {
  return createHash("sha256").update(`${resource}\n${revision}`).digest().subarray(0, 12);
}

/** The policy a caller sends (google.iam.v1.Policy, decoded). */
export interface PolicyInput {
  version: number;
  bindings: { role: string; members: string[]; condition?: unknown }[];
  auditConfigs: unknown[];
  etag: Buffer;
}

/** Policy use cases. */
export class PolicyService {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly clock: Clock,
    /** Called after a policy changed on this server, so its cached copy goes at once. */
    private readonly changed: (resource: string) => void,
  ) {}

  /**
   * @throws InvalidArgumentError INVALID_FIELD for a resource that cannot hold a policy; NotFoundError
   *         INSTANCE_NOT_FOUND for an instance that does not exist (a policy is never stored for one).
   */
  private async checkResource(resource: string): Promise<void> {
    if (!isPolicyResource(resource)) {
      throw new InvalidArgumentError("INVALID_FIELD", "resource", `resource must be instances/{uuid} or ${SERVICE_RESOURCE}, got ${JSON.stringify(resource.slice(0, 200))}`);
    }
    const id = instanceIdOf(resource);
    if (id !== undefined && !(await this.uow.repos.instances.get(id))) throw instanceNotFound(id);
  }

  /** The policy of `resource` (one without bindings when never set). */
  async get(resource: string): Promise<PolicyView> {
    await this.checkResource(resource);
    const p = await this.uow.repos.policies.get(resource);
    return { version: 1, bindings: p?.bindings ?? [], etag: etagOf(resource, p?.revision ?? 0) };
  }

  /**
   * Replaces the policy of `resource`.
   * @throws InvalidArgumentError for a condition, an audit config, an unknown version, a bad role or member
   *         (domain/iam.ts normalizeBindings), or a service policy left without an administrator;
   *         AbortedError POLICY_ETAG_MISMATCH when `policy.etag` is set and is not the current one.
   */
  async set(resource: string, policy: PolicyInput): Promise<PolicyView> {
    await this.checkResource(resource);
    if (![0, 1, 3].includes(policy.version)) throw new InvalidArgumentError("INVALID_FIELD", "policy.version", `policy.version must be 0, 1 or 3, got ${policy.version}`);
    if (policy.auditConfigs.length > 0) throw new InvalidArgumentError("INVALID_FIELD", "policy.audit_configs", "policy.audit_configs is not supported: every call is audited");
    policy.bindings.forEach((b, i) => {
      if (b.condition) throw new InvalidArgumentError("INVALID_FIELD", `policy.bindings[${i}].condition`, "conditional role bindings are not supported; leave condition unset");
    });
    const bindings = normalizeBindings(resource, policy.bindings, "policy.bindings");
    if (resource === SERVICE_RESOURCE && !bindings.some((b) => b.role === "roles/administrator")) {
      throw new InvalidArgumentError("INVALID_FIELD", "policy.bindings", "the service policy must keep at least one member in roles/administrator, or nobody could manage the service");
    }
    for (let attempt = 1; ; attempt++) {
      const stored = await this.uow.transaction(async (repos) => {
        const current = await repos.policies.get(resource);
        const revision = current?.revision ?? 0;
        if (policy.etag.length > 0) {
          const expected = etagOf(resource, revision);
          if (policy.etag.length !== expected.length || !timingSafeEqual(policy.etag, expected)) {
            throw new AbortedError("POLICY_ETAG_MISMATCH", `the policy of ${resource} changed since its etag was read; get it again, apply your change and set it again`, { resource });
          }
        }
        // A lost race is thrown inside, so the transaction (and the call's audit event with it) rolls back.
        if (!(await repos.policies.put({ resource, bindings, revision: revision + 1, updateTime: this.clock.now() }, revision))) throw new LostRace();
        return revision + 1;
      }).catch((err: unknown) => {
        if (err instanceof LostRace) return undefined;
        throw err;
      });
      if (stored !== undefined) {
        this.changed(resource);
        return { version: 1, bindings, etag: etagOf(resource, stored) };
      }
      // Lost a race: with an etag the caller's read is stale; without one, try again on the new policy.
      if (policy.etag.length > 0 || attempt >= 5) {
        throw new AbortedError("POLICY_ETAG_MISMATCH", `the policy of ${resource} was changed by another request at the same time; get it again and retry`, { resource });
      }
    }
  }
}
