/**
 * The one authorization check. Given a method's rule (methods.ts), the request and the caller, it finds the
 * resource, the instance whose policy governs it and the permissions the caller holds there, and lets the call
 * through, hides the resource (NOT_FOUND, as if it did not exist: AIP-211) when the caller has no role on it, or
 * refuses it (PERMISSION_DENIED) when the caller may see it but lacks the permission.
 */
import { LRUCache } from "lru-cache";
import { InvalidArgumentError, NotFoundError, PermissionDeniedError } from "../domain/errors.js";
import { API_KEY_ID, heldPermissions, type Permission, type PolicyRecord, SERVICE_RESOURCE } from "../domain/iam.js";
import { instanceNotFound } from "../domain/instance.js";
import { instanceIdOf, instanceName, parseCertificateName, parseInstanceName, parseReclamationName, reclamationName } from "../domain/names.js";
import type { Caller } from "./authenticate.js";
import type { MethodRule } from "./methods.js";

/** An API key's resource name, recorded as the resource of ApiKeyService calls that name one. */
const API_KEY_NAME = new RegExp(`^apiKeys/${API_KEY_ID}$`);

/** What the authorizer reads from storage. */
export interface AuthorizationSources {
  /** The stored policy of `resource`, or undefined when never set. */
  policy(resource: string): Promise<PolicyRecord | undefined>;
  /** The instance id a reclamation reclaims, or undefined when there is no such reclamation. */
  reclamationInstance(id: string): Promise<string | undefined>;
}

/** What an admitted call acts on. */
export interface Admission {
  /** The resource the request named (for the audit trail): a resource name, or `services/certmanager`. */
  resource: string;
  /** The instance whose policy decided, `instances/{id}`, when one did (its audit chain). */
  instance?: string;
  /** For a list: only instances bound to these members are visible; undefined: everything. */
  visibleTo?: readonly string[];
}

/** Reads a dotted proto field path (`instance.name`) from a ts-proto message (camelCase properties). */
function fieldOf(request: unknown, path: string): string {
  let v: unknown = request;
  for (const part of path.split(".")) {
    const key = part.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    v = v !== null && typeof v === "object" ? (v as Record<string, unknown>)[key] : undefined;
  }
  return typeof v === "string" ? v : "";
}

/** Decides calls. Policies are cached for `cacheTtlMs`, so a change made on another replica holds within it. */
export class Authorizer {
  private readonly policies: LRUCache<string, { bindings: PolicyRecord["bindings"] }>;
  private readonly reclamations = new LRUCache<string, string>({ max: 10_000 });

  constructor(
    private readonly sources: AuthorizationSources,
    cacheTtlMs: number,
  ) {
    this.policies = new LRUCache({ max: 10_000, ttl: Math.max(1, cacheTtlMs) });
  }

  /** Bumped by every invalidation, so a read that started before it does not cache the old policy. */
  private generation = 0;

  /** Forgets a cached policy (after this server changed it). */
  invalidate(resource: string): void {
    this.generation++;
    this.policies.delete(resource);
  }

  /** The bindings of `resource`'s policy, through the cache. */
  private async bindings(resource: string): Promise<PolicyRecord["bindings"]> {
    const hit = this.policies.get(resource);
    if (hit) return hit.bindings;
    const generation = this.generation;
    const bindings = (await this.sources.policy(resource))?.bindings ?? [];
    if (generation === this.generation) this.policies.set(resource, { bindings });
    return bindings;
  }

  /**
   * The permissions `caller` holds on `resource` (`instances/{id}` or `services/certmanager`): roles bound in
   * the resource's policy and in the service policy (domain/iam.ts heldPermissions).
   */
  async held(caller: Caller, resource: string): Promise<Set<Permission>> {
    const service = await this.bindings(SERVICE_RESOURCE);
    const own = resource === SERVICE_RESOURCE ? [] : await this.bindings(resource);
    return heldPermissions(resource, caller.members, own, service);
  }

  /** True when `caller` has any role in the service policy (such a role holds on every instance). */
  private async boundServiceWide(caller: Caller): Promise<boolean> {
    return (await this.bindings(SERVICE_RESOURCE)).some((b) => b.members.some((m) => caller.members.includes(m)));
  }

  /**
   * Checks one call (or one streamed item) against its rule.
   * @param request the decoded request message (for `perItem` rules, one message of the stream).
   * @throws InvalidArgumentError for a malformed resource name (the same error the handler would give);
   *         NotFoundError (INSTANCE_NOT_FOUND, RECLAMATION_NOT_FOUND) when the caller has no role on the instance;
   *         PermissionDeniedError when it has one without the permission.
   */
  async admit(caller: Caller, rule: MethodRule, request: unknown): Promise<Admission> {
    const r = rule.resource;
    const field = r.kind === "service" ? "" : r.field;
    if (r.kind === "service") {
      const permission = rule.permission as Permission;
      const name = fieldOf(request, "name");
      const resource = API_KEY_NAME.test(name) ? name : SERVICE_RESOURCE;
      const held = (await this.held(caller, SERVICE_RESOURCE)).has(permission);
      if (rule.list) return held || (await this.boundServiceWide(caller)) ? { resource } : { resource, visibleTo: caller.members };
      if (!held) throw new PermissionDeniedError(permission, SERVICE_RESOURCE);
      return { resource };
    }
    const value = fieldOf(request, field);
    let instanceId: string;
    let resource: string;
    let hidden: () => Error;
    if (r.kind === "instanceOrService" && value === SERVICE_RESOURCE) {
      const permission = (rule.permission as { service: Permission }).service;
      if (rule.anyCaller) return { resource: SERVICE_RESOURCE };
      if (!(await this.held(caller, SERVICE_RESOURCE)).has(permission)) throw new PermissionDeniedError(permission, SERVICE_RESOURCE);
      return { resource: SERVICE_RESOURCE };
    }
    if (r.kind === "instanceOrService" && instanceIdOf(value) === undefined) {
      throw new InvalidArgumentError(
        "INVALID_FIELD",
        field,
        `${field} must be an instance name of the form instances/{uuid}, or ${SERVICE_RESOURCE}; got ${JSON.stringify(value.slice(0, 200))}`,
      );
    }
    if (r.kind === "instance" || r.kind === "instanceOrService") {
      instanceId = parseInstanceName(value, field);
      resource = instanceName(instanceId);
      hidden = () => instanceNotFound(instanceId);
    } else if (r.kind === "certificate") {
      instanceId = parseCertificateName(value, field).instanceId;
      resource = value;
      hidden = () => instanceNotFound(instanceId);
    } else {
      const id = parseReclamationName(value, field);
      resource = reclamationName(id);
      hidden = () => new NotFoundError("RECLAMATION_NOT_FOUND", resource, `reclamation ${resource} does not exist`);
      const found = this.reclamations.get(id) ?? (await this.sources.reclamationInstance(id));
      if (found === undefined) {
        // Nothing to check a role against: only a caller who sees every instance learns it does not exist.
        if ((await this.held(caller, SERVICE_RESOURCE)).has("certmanager.reclamations.listAll")) return { resource };
        throw hidden();
      }
      this.reclamations.set(id, found);
      instanceId = found;
    }
    const instance = instanceName(instanceId);
    if (rule.anyCaller) return { resource, instance };
    const permission = typeof rule.permission === "string" ? rule.permission : rule.permission.instance;
    const held = await this.held(caller, instance);
    if (held.has(permission)) return { resource, instance };
    if (held.size === 0) throw hidden();
    throw new PermissionDeniedError(permission, resource, instance);
  }
}
