/** Domain records to generated proto messages. Pure functions; nothing secret passes through them. */
import {
  ImportRepair_Kind,
  KeyAlgorithm,
  RootCertificatePolicy as RootCertificatePolicyProto,
  ValidityState as CertificateValidityState,
  type Certificate,
  type ImportRepair as ImportRepairProto,
} from "../../gen/ts/certmanager/v1/certificate.js";
import { validityAt, type ImportRepair, type RepairKind, type RootCertificatePolicy, type ValidityState } from "../domain/certificate.js";
import { Instance_KeyManagement, Instance_RootKeyState, Instance_State, type Instance } from "../../gen/ts/certmanager/v1/instance.js";
import type { RootKeyView } from "../domain/rootkey.js";
import type { InstanceKeyView } from "../services/instances.js";
import { certificateName, instanceName, reclamationName } from "../domain/names.js";
import { Reclamation_State, type Reclamation } from "../../gen/ts/certmanager/v1/reclamation.js";
import type { CertificateRecord, InstanceRecord, ReclamationRecord } from "../domain/ports.js";
import { formatRootKeyRef } from "../domain/rootkey-id.js";
import { etagOf } from "../services/etag.js";

const KEY_ALGORITHMS: Record<string, KeyAlgorithm> = {
  RSA: KeyAlgorithm.KEY_ALGORITHM_RSA,
  EC: KeyAlgorithm.KEY_ALGORITHM_EC,
  ED25519: KeyAlgorithm.KEY_ALGORITHM_ED25519,
  ED448: KeyAlgorithm.KEY_ALGORITHM_ED448,
};

/** InstanceRecord -> certmanager.v1.Instance. */
export function toInstance(i: InstanceRecord, view: InstanceKeyView): Instance {
  const name = instanceName(i.id);
  const keyOff = view.rootKeyState !== undefined && view.rootKeyState !== "ENABLED";
  return {
    name,
    displayName: i.displayName,
    description: i.description,
    labels: i.labels,
    state: i.state === "ACTIVE" && keyOff ? Instance_State.STATE_KEY_UNAVAILABLE : INSTANCE_STATES[i.state],
    rootKey: formatRootKeyRef(i.rootKeyBackend, i.rootKeyId),
    rootKeyVersion: view.rootKeyVersion,
    keyManagement: i.keyManagement === "CUSTOMER" ? Instance_KeyManagement.KEY_MANAGEMENT_CUSTOMER : Instance_KeyManagement.KEY_MANAGEMENT_PROVIDER,
    rootKeyState: view.rootKeyState ? ROOT_KEY_STATES[view.rootKeyState] : Instance_RootKeyState.ROOT_KEY_STATE_UNSPECIFIED,
    rootKeyCurrentVersion: view.rootKeyCurrentVersion,
    createTime: i.createTime,
    updateTime: i.updateTime,
    etag: etagOf(name, i.revision),
    expireTime: i.state === "PENDING_RECLAMATION" ? i.expireTime : undefined,
    reclamation: i.reclamationId ? reclamationName(i.reclamationId) : "",
    deleteTime: i.state === "DELETED" ? i.deleteTime : undefined,
  };
}

const ROOT_KEY_STATES: Record<RootKeyView, Instance_RootKeyState> = {
  ENABLED: Instance_RootKeyState.ROOT_KEY_STATE_ENABLED,
  DISABLED: Instance_RootKeyState.ROOT_KEY_STATE_DISABLED,
  DESTROYED: Instance_RootKeyState.ROOT_KEY_STATE_DESTROYED,
  NOT_FOUND: Instance_RootKeyState.ROOT_KEY_STATE_NOT_FOUND,
};

const INSTANCE_STATES: Record<InstanceRecord["state"], Instance_State> = {
  ACTIVE: Instance_State.STATE_ACTIVE,
  PENDING_RECLAMATION: Instance_State.STATE_PENDING_RECLAMATION,
  DELETED: Instance_State.STATE_DELETED,
};

const RECLAMATION_STATES: Record<ReclamationRecord["state"], Reclamation_State> = {
  SCHEDULED: Reclamation_State.STATE_SCHEDULED,
  RESTORED: Reclamation_State.STATE_RESTORED,
  RECLAIMING: Reclamation_State.STATE_RECLAIMING,
  RECLAIMED: Reclamation_State.STATE_RECLAIMED,
};

/** ReclamationRecord -> certmanager.v1.Reclamation. */
export function toReclamation(r: ReclamationRecord): Reclamation {
  return {
    name: reclamationName(r.id),
    instance: instanceName(r.instanceId),
    state: RECLAMATION_STATES[r.state],
    expireTime: r.expireTime,
    createTime: r.createTime,
    updateTime: r.updateTime,
  };
}

/** CertificateRecord -> certmanager.v1.Certificate (metadata only). */
export function toCertificate(c: CertificateRecord, now: Date): Certificate {
  const name = certificateName(c.instanceId, c.id);
  const m = c.metadata;
  return {
    name,
    displayName: c.displayName,
    description: c.description,
    labels: c.labels,
    subjectCommonName: m.subjectCommonName,
    subject: m.subject,
    issuer: m.issuer,
    subjectAltNames: {
      dnsNames: m.sans.dns,
      ipAddresses: m.sans.ip,
      emailAddresses: m.sans.email,
      uris: m.sans.uri,
      directoryNames: m.sans.directoryName,
      registeredIds: m.sans.registeredId,
      otherNames: m.sans.otherName.map((o) => ({ typeId: o.typeId, value: o.value })),
    },
    serialNumber: m.serialNumber,
    notBefore: m.notBefore,
    notAfter: m.notAfter,
    keyAlgorithm: KEY_ALGORITHMS[m.keyAlgorithm] ?? KeyAlgorithm.KEY_ALGORITHM_UNSPECIFIED,
    keySize: m.keySize,
    keyCurve: m.keyCurve,
    sha256Fingerprint: m.sha256Fingerprint,
    selfSigned: m.selfSigned,
    hasPrivateKey: c.hasPrivateKey,
    intermediateCount: c.intermediateCount,
    version: c.currentVersion,
    createTime: c.createTime,
    updateTime: c.updateTime,
    etag: etagOf(name, c.revision),
    validityState: VALIDITY[validityAt(m, now)],
  };
}

const VALIDITY: Record<ValidityState, CertificateValidityState> = {
  VALID: CertificateValidityState.VALIDITY_STATE_VALID,
  EXPIRED: CertificateValidityState.VALIDITY_STATE_EXPIRED,
  NOT_YET_VALID: CertificateValidityState.VALIDITY_STATE_NOT_YET_VALID,
};

const REPAIR_KINDS: Record<RepairKind, ImportRepair_Kind> = {
  CHAIN_SPLIT: ImportRepair_Kind.KIND_CHAIN_SPLIT,
  LEAF_COPY_DROPPED: ImportRepair_Kind.KIND_LEAF_COPY_DROPPED,
  DUPLICATE_INTERMEDIATES_DROPPED: ImportRepair_Kind.KIND_DUPLICATE_INTERMEDIATES_DROPPED,
  INTERMEDIATES_REORDERED: ImportRepair_Kind.KIND_INTERMEDIATES_REORDERED,
  ROOT_DROPPED: ImportRepair_Kind.KIND_ROOT_DROPPED,
  PKCS12_UNPACKED: ImportRepair_Kind.KIND_PKCS12_UNPACKED,
  DER_CONVERTED: ImportRepair_Kind.KIND_DER_CONVERTED,
  PRIVATE_KEY_DECRYPTED: ImportRepair_Kind.KIND_PRIVATE_KEY_DECRYPTED,
  PRIVATE_KEY_CONVERTED: ImportRepair_Kind.KIND_PRIVATE_KEY_CONVERTED,
  PEM_LABEL_CORRECTED: ImportRepair_Kind.KIND_PEM_LABEL_CORRECTED,
  TEXT_NORMALIZED: ImportRepair_Kind.KIND_TEXT_NORMALIZED,
  PRIVATE_KEY_MOVED: ImportRepair_Kind.KIND_PRIVATE_KEY_MOVED,
  PKCS7_UNPACKED: ImportRepair_Kind.KIND_PKCS7_UNPACKED,
};

/** Import repairs as the proto's ImportRepair messages. */
export function toRepairs(repairs: ImportRepair[]): ImportRepairProto[] {
  return repairs.map((r) => ({ kind: REPAIR_KINDS[r.kind], description: r.description }));
}

/** The request's root policy; undefined (server default) when unspecified. */
export function fromRootCertificate(value: RootCertificatePolicyProto): RootCertificatePolicy | undefined {
  switch (value) {
    case RootCertificatePolicyProto.ROOT_CERTIFICATE_POLICY_KEEP:
      return "keep";
    case RootCertificatePolicyProto.ROOT_CERTIFICATE_POLICY_DROP:
      return "drop";
    default:
      return undefined;
  }
}
