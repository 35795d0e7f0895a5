/**
 * What every RPC needs: the permission, where the request names its resource, and what the audit trail records.
 * The one table of it: the call wrappers (src/grpc/calls.ts) look a method up here before its handler runs, a
 * method missing from it is denied, and a test checks every method of the contract's descriptor set has a row.
 */
import type { Permission } from "../domain/iam.js";

/** Where a request names the resource a method acts on. `field` is the proto field path. */
export type ResourceRule =
  /** The service itself (`services/certmanager`). */
  | { kind: "service" }
  /** `instances/{instance}` in `field`. */
  | { kind: "instance"; field: string }
  /** `instances/{instance}/certificates/{certificate}` in `field`; checked on its instance. */
  | { kind: "certificate"; field: string }
  /** `reclamations/{reclamation}` in `field`; checked on the instance it reclaims. */
  | { kind: "reclamation"; field: string }
  /** `instances/{instance}` or `services/certmanager` in `field` (policies, audit chains). */
  | { kind: "instanceOrService"; field: string };

/** One method's rule. */
export interface MethodRule {
  /** The permission needed; for `instanceOrService`, one for each kind of resource. */
  permission: Permission | { instance: Permission; service: Permission };
  resource: ResourceRule;
  /**
   * A list: the caller is never denied, and sees only what it has a role on (AIP-211) unless it holds
   * `permission` service-wide.
   */
  list?: true;
  /** Each streamed request item is checked on its own, and a denied item is answered in its own result. */
  perItem?: true;
  /** Any authenticated caller may call it (TestIamPermissions answers for the caller itself). */
  anyCaller?: true;
  /**
   * What the audit trail records: `change` (every call, the event in the change's own transaction),
   * `material` (every call, before the answer leaves: reads of keys and certificates), `denied` (only denials).
   */
  audit: "change" | "material" | "denied";
}

const I = "/certmanager.v1.InstanceService/";
const C = "/certmanager.v1.CertificateService/";
const R = "/certmanager.v1.ReclamationService/";
const P = "/certmanager.v1.IamService/";
const K = "/certmanager.v1.ApiKeyService/";
const A = "/certmanager.v1.AuditService/";
const service = { kind: "service" } as const;
const instance = (field: string) => ({ kind: "instance", field }) as const;
const certificate = (field: string) => ({ kind: "certificate", field }) as const;
const reclamation = (field: string) => ({ kind: "reclamation", field }) as const;

/** Every method of the contract, by full gRPC path. */
export const METHOD_RULES: Readonly<Record<string, MethodRule>> = {
  [`${I}CreateInstance`]: { permission: "certmanager.instances.create", resource: service, audit: "change" },
  [`${I}GetInstance`]: { permission: "certmanager.instances.get", resource: instance("name"), audit: "denied" },
  [`${I}ListInstances`]: { permission: "certmanager.instances.listAll", resource: service, list: true, audit: "denied" },
  [`${I}UpdateInstance`]: { permission: "certmanager.instances.update", resource: instance("instance.name"), audit: "change" },
  [`${I}RewrapDataKeys`]: { permission: "certmanager.instances.rewrapDataKeys", resource: instance("name"), audit: "change" },
  [`${I}RotateDataKey`]: { permission: "certmanager.instances.rotateDataKey", resource: instance("name"), audit: "change" },
  [`${I}DeleteInstance`]: { permission: "certmanager.instances.delete", resource: instance("name"), audit: "change" },

  [`${C}ImportCertificate`]: { permission: "certmanager.certificates.create", resource: instance("parent"), audit: "change" },
  [`${C}ImportCertificates`]: { permission: "certmanager.certificates.create", resource: instance("item.parent"), perItem: true, audit: "change" },
  [`${C}ReimportCertificate`]: { permission: "certmanager.certificates.reimport", resource: certificate("name"), audit: "change" },
  [`${C}GetCertificate`]: { permission: "certmanager.certificates.get", resource: certificate("name"), audit: "denied" },
  [`${C}AccessCertificate`]: { permission: "certmanager.certificates.access", resource: certificate("name"), audit: "material" },
  [`${C}ListCertificates`]: { permission: "certmanager.certificates.list", resource: instance("parent"), audit: "denied" },
  [`${C}ExportCertificates`]: { permission: "certmanager.certificates.export", resource: instance("parent"), audit: "material" },
  [`${C}UpdateCertificate`]: { permission: "certmanager.certificates.update", resource: certificate("certificate.name"), audit: "change" },
  [`${C}DeleteCertificate`]: { permission: "certmanager.certificates.delete", resource: certificate("name"), audit: "change" },

  [`${R}ListReclamations`]: { permission: "certmanager.reclamations.listAll", resource: service, list: true, audit: "denied" },
  [`${R}GetReclamation`]: { permission: "certmanager.reclamations.get", resource: reclamation("name"), audit: "denied" },
  [`${R}RestoreReclamation`]: { permission: "certmanager.reclamations.restore", resource: reclamation("name"), audit: "change" },
  [`${R}DeleteReclamation`]: { permission: "certmanager.reclamations.delete", resource: reclamation("name"), audit: "change" },

  [`${P}GetIamPolicy`]: {
    permission: { instance: "certmanager.instances.getIamPolicy", service: "certmanager.services.getIamPolicy" },
    resource: { kind: "instanceOrService", field: "resource" },
    audit: "denied",
  },
  [`${P}SetIamPolicy`]: {
    permission: { instance: "certmanager.instances.setIamPolicy", service: "certmanager.services.setIamPolicy" },
    resource: { kind: "instanceOrService", field: "resource" },
    audit: "change",
  },
  [`${P}TestIamPermissions`]: {
    permission: { instance: "certmanager.instances.get", service: "certmanager.instances.get" },
    resource: { kind: "instanceOrService", field: "resource" },
    anyCaller: true,
    audit: "denied",
  },

  [`${K}CreateApiKey`]: { permission: "certmanager.apiKeys.create", resource: service, audit: "change" },
  [`${K}GetApiKey`]: { permission: "certmanager.apiKeys.get", resource: service, audit: "denied" },
  [`${K}ListApiKeys`]: { permission: "certmanager.apiKeys.list", resource: service, audit: "denied" },
  [`${K}RevokeApiKey`]: { permission: "certmanager.apiKeys.revoke", resource: service, audit: "change" },

  [`${A}ListAuditEvents`]: {
    permission: { instance: "certmanager.auditEvents.list", service: "certmanager.services.listAuditEvents" },
    resource: { kind: "instanceOrService", field: "parent" },
    audit: "denied",
  },
};
