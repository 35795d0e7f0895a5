/**
 * Who may do what (IAM): the roles, the permissions each holds, the member grammar and the rules a policy must
 * follow. Roles per instance follow IBM Certificate Manager's Reader / Writer / Manager; the service-wide
 * Administrator is bound only in the service policy. Policies are shaped as google.iam.v1.Policy (bindings of a
 * role to members, an etag for read-modify-write, AIP-154).
 */
import { InvalidArgumentError } from "./errors.js";
import { isInstanceName } from "./names.js";

/** The resource name of the service-wide policy and audit chain. */
export const SERVICE_RESOURCE = "services/certmanager";

/** Every permission a method can need. Instance-scoped ones are checked on `instances/{instance}`. */
export const PERMISSIONS = [
  "certmanager.instances.get",
  "certmanager.instances.update",
  "certmanager.instances.delete",
  "certmanager.instances.rotateDataKey",
  "certmanager.instances.rewrapDataKeys",
  "certmanager.instances.getIamPolicy",
  "certmanager.instances.setIamPolicy",
  "certmanager.certificates.get",
  "certmanager.certificates.list",
  "certmanager.certificates.access",
  "certmanager.certificates.export",
  "certmanager.certificates.update",
  "certmanager.certificates.reimport",
  "certmanager.certificates.create",
  "certmanager.certificates.delete",
  "certmanager.reclamations.get",
  "certmanager.reclamations.restore",
  "certmanager.reclamations.delete",
  "certmanager.auditEvents.list",
  // Service-wide: held only through roles/administrator in the service policy.
  "certmanager.instances.create",
  "certmanager.instances.listAll",
  "certmanager.reclamations.listAll",
  "certmanager.apiKeys.create",
  "certmanager.apiKeys.get",
  "certmanager.apiKeys.list",
  "certmanager.apiKeys.revoke",
  "certmanager.services.getIamPolicy",
  "certmanager.services.setIamPolicy",
  "certmanager.services.listAuditEvents",
] as const;

/** A permission name, e.g. `certmanager.certificates.access`. */
export type Permission = (typeof PERMISSIONS)[number];

/** True when `p` names a permission of this service. */
export function isPermission(p: string): p is Permission {
  return (PERMISSIONS as readonly string[]).includes(p);
}

const READER: readonly Permission[] = ["certmanager.instances.get", "certmanager.certificates.get", "certmanager.certificates.list", "certmanager.reclamations.get"];
const WRITER: readonly Permission[] = [
  ...READER,
  "certmanager.certificates.access",
  "certmanager.certificates.export",
  "certmanager.certificates.update",
  "certmanager.certificates.reimport",
];
const MANAGER: readonly Permission[] = [
  ...WRITER,
  "certmanager.certificates.create",
  "certmanager.certificates.delete",
  "certmanager.instances.update",
  "certmanager.instances.delete",
  "certmanager.instances.rotateDataKey",
  "certmanager.instances.rewrapDataKeys",
  "certmanager.instances.getIamPolicy",
  "certmanager.instances.setIamPolicy",
  "certmanager.reclamations.restore",
  "certmanager.reclamations.delete",
  "certmanager.auditEvents.list",
];

/** The roles and what each holds. */
export const ROLES = {
  "roles/reader": READER,
  "roles/writer": WRITER,
  "roles/manager": MANAGER,
  "roles/administrator": PERMISSIONS,
} as const satisfies Record<string, readonly Permission[]>;

/** A role name. */
export type Role = keyof typeof ROLES;

/** The roles an instance policy may bind; the service policy may bind these and `roles/administrator`. */
export const INSTANCE_ROLES: readonly Role[] = ["roles/reader", "roles/writer", "roles/manager"];

/** A role bound to members. */
export interface Binding {
  role: Role;
  members: string[];
}

/** A stored policy: the bindings of one resource and its revision (the etag derives from it). */
export interface PolicyRecord {
  /** `instances/{instance}` or SERVICE_RESOURCE. */
  resource: string;
  bindings: Binding[];
  /** 0 for a policy never set; incremented by every SetIamPolicy. */
  revision: number;
  updateTime?: Date;
}

/** An API key's public id: 16 of `[a-z0-9]` (80 random bits), in its name, its member and its secret. */
export const API_KEY_ID = "[a-z0-9]{16}";

/** Longest member string accepted (the kind prefix included). */
export const MAX_MEMBER_LENGTH = 255;

const MEMBER_RULES: { prefix: string; pattern: RegExp; form: string }[] = [
  { prefix: "user:", pattern: /^user:[\x21-\x7e]{1,249}$/, form: "user:{subject}" },
  { prefix: "group:", pattern: /^group:[\x21-\x7e]{1,248}$/, form: "group:{group}" },
  { prefix: "apiKey:", pattern: new RegExp(`^apiKey:${API_KEY_ID}$`), form: "apiKey:{16 lowercase letters and digits}" },
  {
    prefix: "spiffe:",
    pattern: /^spiffe:spiffe:\/\/[a-z0-9._-]{1,255}(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$/,
    form: "spiffe:spiffe://{trust domain}/{path}",
  },
  { prefix: "dns:", pattern: /^dns:(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, form: "dns:{lowercase host name}" },
];

/**
 * Whether `member` is well formed: `user:`, `group:` (printable ASCII, no spaces), `apiKey:{id}`,
 * `spiffe:spiffe://...` (SPIFFE ID, lowercase trust domain) or `dns:{host}`; at most 255 characters.
 */
export function isMember(member: string): boolean {
  if (member.length > MAX_MEMBER_LENGTH) return false;
  const rule = MEMBER_RULES.find((r) => member.startsWith(r.prefix));
  return rule !== undefined && rule.pattern.test(member);
}

/** True for the resources a policy can be set on: an instance, or the service. */
export function isPolicyResource(resource: string): boolean {
  return resource === SERVICE_RESOURCE || isInstanceName(resource);
}

/**
 * Checks a policy's bindings before it is stored and returns them normalized (each role once, members sorted
 * and unique, empty bindings dropped), so equal policies store equally.
 * @param field the request field the bindings came from (`policy.bindings`).
 * @throws InvalidArgumentError INVALID_FIELD for an unknown role, a role not bindable on `resource`
 *         (administrator outside the service policy), a malformed member, or more than 1,500 members in all
 *         (the limit Google IAM applies).
 */
export function normalizeBindings(resource: string, bindings: { role: string; members: string[] }[], field: string): Binding[] {
  const byRole = new Map<Role, Set<string>>();
  let total = 0;
  bindings.forEach((b, i) => {
    const at = `${field}[${i}]`;
    // Own keys only: `in` would also take inherited names such as "constructor" or "__proto__", which are no roles.
    if (!Object.hasOwn(ROLES, b.role)) {
      throw new InvalidArgumentError("INVALID_FIELD", `${at}.role`, `${at}.role ${JSON.stringify(b.role.slice(0, 100))} is not a role; use one of ${Object.keys(ROLES).join(", ")}`);
    }
    const role = b.role as Role;
    if (resource !== SERVICE_RESOURCE && !INSTANCE_ROLES.includes(role)) {
      throw new InvalidArgumentError("INVALID_FIELD", `${at}.role`, `${role} can be bound only in the service policy ${SERVICE_RESOURCE}; an instance policy binds ${INSTANCE_ROLES.join(", ")}`);
    }
    const set = byRole.get(role) ?? new Set<string>();
    b.members.forEach((m, j) => {
      if (!isMember(m)) {
        throw new InvalidArgumentError(
          "INVALID_FIELD",
          `${at}.members[${j}]`,
          `${at}.members[${j}] ${JSON.stringify(m.slice(0, 100))} is not a member; use ${MEMBER_RULES.map((r) => r.form).join(", ")} (at most ${MAX_MEMBER_LENGTH} characters)`,
        );
      }
      set.add(m);
    });
    byRole.set(role, set);
    total += b.members.length;
  });
  if (total > 1500) throw new InvalidArgumentError("INVALID_FIELD", field, `a policy holds at most 1,500 members in all; this one has ${total}`);
  return [...byRole.entries()]
    .filter(([, members]) => members.size > 0)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([role, members]) => ({ role, members: [...members].sort() }));
}

/**
 * The permissions `members` hold on `resource` given the resource's own policy and the service policy.
 * On the service resource only roles/administrator counts; on an instance, roles bound on the instance and any
 * role bound in the service policy (a service-wide reader reads every instance).
 */
export function heldPermissions(resource: string, members: readonly string[], own: Binding[], service: Binding[]): Set<Permission> {
  const held = new Set<Permission>();
  const has = (b: Binding) => b.members.some((m) => members.includes(m));
  const onService = resource === SERVICE_RESOURCE;
  // On an instance only instance permissions exist (an administrator holds the manager's there).
  const add = (role: Role) => {
    for (const p of ROLES[role]) if (onService || MANAGER.includes(p)) held.add(p);
  };
  for (const b of service) {
    if (!has(b)) continue;
    if (onService && b.role !== "roles/administrator") continue;
    add(b.role);
  }
  if (!onService) for (const b of own) if (has(b)) add(b.role);
  return held;
}
