/**
 * Repository ports: what the services need from persistence. `src/storage` implements them with Knex; the
 * services never see SQL. Ciphertext fields are opaque strings (JWE compact) at this level.
 */
import type { AuditEventInput, AuditRecord, ChainHead } from "./audit.js";
import type { CertificateMetadata, KeyAlgorithm } from "./certificate.js";
import type { PolicyRecord } from "./iam.js";

/** Lifecycle state of an instance as stored (see Instance.State in the contract). */
export type InstanceState = "ACTIVE" | "PENDING_RECLAMATION" | "DELETED";

/** An instance row. Times are UTC `Date`s with millisecond precision. */
export interface InstanceRecord {
  id: string;
  displayName: string;
  description: string;
  labels: Record<string, string>;
  state: InstanceState;
  rootKeyBackend: string;
  rootKeyId: string;
  /** PROVIDER: the service's default root key; CUSTOMER: a root key the customer named and controls. */
  keyManagement: "PROVIDER" | "CUSTOMER";
  /** Incremented on every change; the etag is derived from it. */
  revision: number;
  createTime: Date;
  updateTime: Date;
  /** The open or last reclamation's id; set while PENDING_RECLAMATION and once DELETED. */
  reclamationId?: string;
  /** When a pending reclamation expires; set only while PENDING_RECLAMATION. */
  expireTime?: Date;
  /** When the data was permanently deleted; set only once DELETED. */
  deleteTime?: Date;
}

/** Lifecycle state of a reclamation (see Reclamation.State in the contract). */
export type ReclamationState = "SCHEDULED" | "RESTORED" | "RECLAIMING" | "RECLAIMED";

/** A reclamation row: the pending permanent deletion of an instance. */
export interface ReclamationRecord {
  id: string;
  instanceId: string;
  state: ReclamationState;
  expireTime: Date;
  createTime: Date;
  updateTime: Date;
  /** Which server process holds the reclaim lease, while RECLAIMING. */
  leaseOwner?: string;
  /** Until when that lease holds; another process may take over after it. */
  leaseUntil?: Date;
}

/** Reclamation list filter (AIP-160 subset). */
export interface ReclamationFilter {
  instanceId?: string;
  state?: ReclamationState;
  /** Only reclamations of instances these members are bound on (AIP-211); unset: every instance. */
  visibleTo?: readonly string[];
}

/** A wrapped DEK row. `wrappedKey` is a JWE (A256KW + A256GCM) made by the root-key backend. */
export interface DekRecord {
  id: string;
  instanceId: string;
  wrappedKey: string;
  rootKeyVersion: number;
  /** The version of the instance's own key whose layer wraps it; undefined for a DEK written before instance keys (migrated by the instance-key job). */
  instanceKeyVersion?: number;
  /**
   * ACTIVE: seals new material (one per instance). RETIRING: replaced by a newer DEK; still opens the material
   * it sealed until that is re-encrypted, then it is deleted (destroyed). INACTIVE: filled up while re-encrypting
   * (it reached its encryption limit); it opens what it sealed and seals nothing more; RotateDataKey retires it.
   */
  state: "ACTIVE" | "RETIRING" | "INACTIVE";
  /** AES-GCM encryptions made with this DEK (NIST SP 800-38D §8.3 bounds it). */
  encryptionCount: number;
  createTime: Date;
}

/** A certificate's current metadata row. */
export interface CertificateRecord {
  id: string;
  instanceId: string;
  displayName: string;
  description: string;
  labels: Record<string, string>;
  metadata: CertificateMetadata;
  hasPrivateKey: boolean;
  intermediateCount: number;
  currentVersion: number;
  revision: number;
  createTime: Date;
  updateTime: Date;
}

/** One version of a certificate's encrypted material. Every `*Jwe` is a JWE compact (dir + A256GCM). */
export interface CertificateVersionRecord {
  certificateId: string;
  version: number;
  dekId: string;
  certificateJwe: string;
  /** "" when the version has no private key. */
  privateKeyJwe: string;
  /** "" when the version has no intermediates. */
  intermediatesJwe: string;
  sha256Fingerprint: string;
  createTime: Date;
}

/** A filter on certificates, already parsed and validated (AIP-160 subset). */
export interface CertificateFilter {
  notAfter?: { op: "<" | "<=" | ">" | ">="; value: Date }[];
  notBefore?: { op: "<" | "<=" | ">" | ">="; value: Date }[];
  /** Lowercased host names; a certificate matches when it is valid for any form listed (exact or wildcard). */
  domainForms?: string[];
  keyAlgorithm?: KeyAlgorithm;
}

/** Sort key for certificate lists. Ties are broken by id. */
export type CertificateOrderField = "create_time" | "not_after" | "display_name";

/** Keyset cursor: the sort value and id of the last row of the previous page. */
export interface KeysetCursor {
  /** Sort value: epoch milliseconds for times, the string for display_name. */
  value: number | string;
  id: string;
}

/** Arguments of a keyset-paginated certificate listing. */
export interface CertificateListQuery {
  instanceId: string;
  filter: CertificateFilter;
  orderBy: CertificateOrderField;
  descending: boolean;
  limit: number;
  after?: KeysetCursor;
}

/** Instance persistence. */
export interface InstanceRepository {
  /** Inserts a new instance row. */
  insert(instance: InstanceRecord): Promise<void>;
  /** The instance with this id, in any state, or undefined. */
  get(id: string): Promise<InstanceRecord | undefined>;
  /** Reads under a shared row lock (MySQL `FOR SHARE`; SQLite transactions are serial anyway). */
  getForShare(id: string): Promise<InstanceRecord | undefined>;
  /**
   * Oldest first, keyset paginated on (create_time, id); only ACTIVE ones unless `showDeleted`; with `visibleTo`,
   * only instances whose policy binds one of those members (AIP-211).
   */
  list(limit: number, after: KeysetCursor | undefined, showDeleted: boolean, visibleTo?: readonly string[]): Promise<InstanceRecord[]>;
  /** Writes the new values when `revision` still equals `expectedRevision`; returns false otherwise. */
  update(instance: InstanceRecord, expectedRevision: number): Promise<boolean>;
}

/** Wrapped DEK persistence. */
export interface DekRepository {
  /** Inserts a wrapped DEK. */
  insert(dek: DekRecord): Promise<void>;
  /** The wrapped DEK with this id (of any instance: callers check the owner), or undefined. */
  get(id: string): Promise<DekRecord | undefined>;
  /**
   * The instance's newest ACTIVE DEK, which seals new material. With `forUpdate`, the row is locked for the
   * rest of the transaction (MySQL `FOR UPDATE`): every writer that seals with it takes this lock first, so
   * sealing, counting encryptions and rotating are serialized per instance in one lock order.
   */
  getActive(instanceId: string, forUpdate?: boolean): Promise<DekRecord | undefined>;
  /** Adds `n` to the DEK's encryption count (NIST SP 800-38D §8.3 bookkeeping). */
  addEncryptions(id: string, n: number): Promise<void>;
  /** Deletes every wrapped DEK of an instance (crypto-shredding). @returns the deleted DEK ids. */
  deleteForInstance(instanceId: string): Promise<string[]>;
  /** Every DEK of an instance, newest first. */
  listForInstance(instanceId: string): Promise<DekRecord[]>;
  /** Replaces a wrapped key if it is still `expectedWrapped` (rewrap, instance layer). @returns false when it changed. */
  rewrap(id: string, expectedWrapped: string, wrappedKey: string, rootKeyVersion: number, instanceKeyVersion: number): Promise<boolean>;
  /**
   * DEKs without the instance layer (written before instance keys) of ACTIVE instances, in (create_time, id)
   * order after `after`: what the instance-key migration has left to do.
   */
  listWithoutInstanceLayer(limit: number, after?: { createTime: Date; id: string }): Promise<DekRecord[]>;
  /** The newest instance key version any DEK of the instance is wrapped under; undefined when none has the layer. */
  getNewestInstanceKeyVersion(instanceId: string): Promise<number | undefined>;
  /** ACTIVE -> RETIRING (or INACTIVE) for the given DEK. @returns false when it was not ACTIVE any more. */
  retire(id: string, state?: "RETIRING" | "INACTIVE"): Promise<boolean>;
  /** INACTIVE -> RETIRING for every INACTIVE DEK of the instance (RotateDataKey re-encrypts them too). */
  retireInactive(instanceId: string): Promise<void>;
  /** Deletes a RETIRING DEK (destroying it). */
  deleteRetiring(id: string): Promise<void>;
  /** Ids of ACTIVE instances that have RETIRING DEKs (re-encryption left to do), oldest rotation first. */
  instancesWithRetiring(limit: number): Promise<string[]>;
  /**
   * The root keys (`backend`, `keyId`) of every instance that holds at least one DEK, in any state, distinct and
   * sorted: what this database cannot be read without. Empty for a database without DEKs.
   */
  rootKeysInUse(): Promise<{ backend: string; keyId: string }[]>;
}

/** Certificate persistence. */
export interface CertificateRepository {
  /** Inserts a certificate with its first version. @throws UniqueConstraintError on a duplicate fingerprint. */
  insert(cert: CertificateRecord, version: CertificateVersionRecord): Promise<void>;
  /** The certificate `id` of instance `instanceId`, or undefined. */
  get(instanceId: string, id: string): Promise<CertificateRecord | undefined>;
  /** The instance's certificate whose current version has this SHA-256 fingerprint, or undefined. */
  findByFingerprint(instanceId: string, sha256Fingerprint: string): Promise<CertificateRecord | undefined>;
  /** One version's encrypted material, or undefined. */
  getVersion(certificateId: string, version: number): Promise<CertificateVersionRecord | undefined>;
  /** A keyset-paginated page of certificates matching the query. */
  list(query: CertificateListQuery): Promise<CertificateRecord[]>;
  /** As `list`, each certificate with its current version's sealed material, in one query (export). */
  listWithCurrentVersion(query: CertificateListQuery): Promise<{ certificate: CertificateRecord; version: CertificateVersionRecord }[]>;
  /** Metadata-only update guarded by revision; false when the revision moved. */
  update(cert: CertificateRecord, expectedRevision: number): Promise<boolean>;
  /** Adds a version and makes it current, guarded by revision; false when the revision moved. */
  addVersion(cert: CertificateRecord, version: CertificateVersionRecord, expectedRevision: number): Promise<boolean>;
  /** Deletes the certificate and all its versions, guarded by revision; false when the revision moved. */
  delete(instanceId: string, id: string, expectedRevision: number): Promise<boolean>;
  /** Deletes up to `limit` certificates of an instance with all their versions. @returns how many. */
  deleteBatch(instanceId: string, limit: number): Promise<number>;
  /** Up to `limit` versions sealed with any of `dekIds`; with `forUpdate`, locked for the transaction. */
  versionsSealedWith(dekIds: string[], limit: number, forUpdate?: boolean): Promise<CertificateVersionRecord[]>;
  /**
   * Replaces a version's sealed material if it is still sealed with `expectedDekId` (re-encryption).
   * @returns false when another writer re-encrypted it first.
   */
  reseal(version: CertificateVersionRecord, expectedDekId: string): Promise<boolean>;
}

/** Reclamation persistence. Every state change is a conditional UPDATE, so races have one winner. */
export interface ReclamationRepository {
  /** @throws UniqueConstraintError when the instance already has an open reclamation. */
  insert(reclamation: ReclamationRecord): Promise<void>;
  /** The reclamation with this id, or undefined. */
  get(id: string): Promise<ReclamationRecord | undefined>;
  /** Newest first, keyset paginated on (create_time, id) descending. */
  list(filter: ReclamationFilter, limit: number, after?: KeysetCursor): Promise<ReclamationRecord[]>;
  /** SCHEDULED -> RESTORED when `expire_time > now`. @returns false when another change won. */
  restore(id: string, now: Date): Promise<boolean>;
  /**
   * Takes the reclaim lease: SCHEDULED -> RECLAIMING (when expired, or at once if `expiredOnly` is false),
   * or RECLAIMING whose lease ran out -> RECLAIMING with this owner. @returns false when another won.
   */
  claim(id: string, owner: string, now: Date, leaseUntil: Date, expiredOnly: boolean): Promise<boolean>;
  /** Extends the lease while `owner` still holds it. @returns false when the lease was lost. */
  renewLease(id: string, owner: string, leaseUntil: Date): Promise<boolean>;
  /** RECLAIMING -> RECLAIMED while `owner` holds the lease. @returns false when the lease was lost. */
  finish(id: string, owner: string, now: Date): Promise<boolean>;
  /** Ids of reclamations due: SCHEDULED and expired, or RECLAIMING with a lapsed lease. */
  due(now: Date, limit: number): Promise<string[]>;
}

/** Idempotency records for AIP-155 `request_id`. */
export interface RequestIdRecord {
  scope: string;
  requestId: string;
  resourceId: string;
  /** What identifies the request's payload (for example the certificate fingerprint), to detect reuse. */
  fingerprint: string;
}

/** Idempotency record persistence. */
export interface RequestIdRepository {
  /** The claim of `(scope, requestId)`, or undefined. */
  find(scope: string, requestId: string): Promise<RequestIdRecord | undefined>;
  /**
   * Claims `(scope, requestId)`. Returns false when another request already holds it (unique key), so the
   * caller rolls back and answers with the earlier result.
   */
  claim(record: RequestIdRecord, now: Date): Promise<boolean>;
  /** Deletes every record of a scope (when the scope's owner is reclaimed). */
  deleteScope(scope: string): Promise<void>;
}

/** An API key as stored: never its secret, only the secret's HMAC-SHA-256 under the server pepper. */
export interface ApiKeyRecord {
  /** The public id, 16 characters of `[a-z0-9]`. */
  id: string;
  displayName: string;
  /** HMAC-SHA-256(pepper, secret), lowercase hex. */
  secretHmac: string;
  /** The member who created it, or `system:bootstrap`. */
  creator: string;
  createTime: Date;
  expireTime?: Date;
  revokeTime?: Date;
  /** Last authenticated call, written in batches (at most once a minute per key). */
  lastUseTime?: Date;
}

/** API key persistence. */
export interface ApiKeyRepository {
  insert(key: ApiKeyRecord): Promise<void>;
  get(id: string): Promise<ApiKeyRecord | undefined>;
  /** Oldest first, keyset paginated on (create_time, id). */
  list(limit: number, after?: KeysetCursor): Promise<ApiKeyRecord[]>;
  /** Sets `revoke_time` if not yet revoked. @returns false when it was already revoked (or does not exist). */
  revoke(id: string, now: Date): Promise<boolean>;
  /** Raises each key's `last_use_time` to the time given (never lowers it). */
  recordUse(lastUse: ReadonlyMap<string, Date>): Promise<void>;
}

/** IAM policy persistence; each policy's members are also indexed for the visibility of lists. */
export interface PolicyRepository {
  /** The stored policy of `resource`, or undefined when never set. */
  get(resource: string): Promise<PolicyRecord | undefined>;
  /**
   * Stores `policy` (its revision already incremented) if the stored revision is still `expectedRevision`
   * (0: none stored), and rewrites its member index. @returns false when another writer won.
   */
  put(policy: PolicyRecord, expectedRevision: number): Promise<boolean>;
}

/** The append-only audit log. */
export interface AuditRepository {
  /**
   * Appends an event to `chain` under the chain head's row lock (sequence = head + 1, previous hash = head's
   * hash), inside the caller's transaction so it commits or rolls back with the change it records.
   */
  append(chain: string, event: AuditEventInput): Promise<AuditRecord>;
  /** Events of `chain` with `seq > afterSeq`, in sequence order, at most `limit`. */
  list(chain: string, afterSeq: number, limit: number): Promise<AuditRecord[]>;
  /** The chain's head as recorded in the head table (seq 0 and GENESIS_HASH for an empty chain). */
  head(chain: string): Promise<ChainHead>;
  /** Every chain that has a head, in name order. */
  chains(): Promise<string[]>;
}

/** The repositories bound to one transaction. */
export interface Repositories {
  instances: InstanceRepository;
  deks: DekRepository;
  certificates: CertificateRepository;
  requestIds: RequestIdRepository;
  reclamations: ReclamationRepository;
  apiKeys: ApiKeyRepository;
  policies: PolicyRepository;
  audit: AuditRepository;
  jobLeases: JobLeaseRepository;
}

/** Leases that let one replica at a time run a background job (the instance-key migration). */
export interface JobLeaseRepository {
  /**
   * Takes or renews the lease of job `name` for `owner` until `until`, when it is free, expired (before `now`) or
   * already `owner`'s. @returns whether `owner` holds it now.
   */
  claim(name: string, owner: string, now: Date, until: Date): Promise<boolean>;
  /** Gives the lease of job `name` up if `owner` holds it (at a clean stop, so another replica need not wait). */
  release(name: string, owner: string): Promise<void>;
}

/** Runs work in one database transaction; throwing inside rolls everything back. */
export interface UnitOfWork {
  /** Repositories outside any transaction (single statements). */
  readonly repos: Repositories;
  /** Runs `fn` in one transaction (retried from the start on a deadlock); throwing rolls back. */
  transaction<T>(fn: (repos: Repositories) => Promise<T>): Promise<T>;
  /** Resolves when the database answers (health). */
  ping(): Promise<void>;
}

/** Source of the current time, injectable so tests can move it. */
export interface Clock {
  /** The current time (UTC instant). */
  now(): Date;
}
