/**
 * Certificate use cases (CertificateService): import, reimport, get, access (decrypt), list, update, delete.
 * Parsing and checks happen before any write; sealing happens before the transaction; every write of one
 * request is one transaction, so bad input changes nothing.
 */
import { v7 as uuidv7 } from "uuid";
import type { CertificateEnvelope, SealedMaterial } from "../crypto/envelope.js";
import type { CertificateMaterial, ImportRepair, RootCertificatePolicy } from "../domain/certificate.js";
import { AlreadyExistsError, EtagMismatchError, InvalidArgumentError, NotFoundError, UniqueConstraintError } from "../domain/errors.js";
import { certificateName } from "../domain/names.js";
import type {
  CertificateRecord,
  CertificateVersionRecord,
  Clock,
  InstanceRecord,
  Repositories,
  UnitOfWork,
} from "../domain/ports.js";
import { readImport, type ImportInput, type ParsedImport } from "../x509/index.js";
import { checkEtag, retryUnconditional } from "./etag.js";
import { getActiveInstance, lockActiveInstance } from "./instance-state.js";
import { parseCertificateFilter, parseCertificateOrderBy } from "./filter.js";
import type { DekRotation } from "./dek-rotation.js";
import { PageTokenCodec, pageSize } from "../domain/page-token.js";
import { certificateRequestScope, createOnce, earlierResource, type ClaimRequestId, type RequestKey } from "./request-id.js";

/** Raw material as the user sent it (PEM text, DER, PKCS#12); "" / empty means absent. */
export type MaterialInput = ImportInput;

/** A stored certificate and what the import changed in the submitted material to store it. */
export interface ImportResult {
  certificate: CertificateRecord;
  repairs: ImportRepair[];
}

/** User-settable certificate fields. */
export interface CertificateFields {
  displayName?: string;
  description?: string;
  labels?: Record<string, string>;
}

/** The decrypted material of one version. */
export interface AccessedMaterial extends CertificateMaterial {
  version: number;
}

/** Certificate use cases. */
export class CertificateService {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly envelope: CertificateEnvelope,
    private readonly clock: Clock,
    private readonly pageTokens: PageTokenCodec,
    private readonly rotation: DekRotation,
    private readonly defaultRootCertificate: RootCertificatePolicy = "keep",
  ) {}

  /** Reads and checks the submitted material; the root policy defaults to the service's. */
  private parse(input: MaterialInput, signal?: AbortSignal): Promise<ParsedImport> {
    return readImport({ ...input, rootCertificate: input.rootCertificate ?? this.defaultRootCertificate }, signal);
  }

  /** The service's current time (validity states are derived from it). */
  now(): Date {
    return this.clock.now();
  }

  /**
   * Imports a certificate with optional private key and intermediates.
   * @throws InvalidArgumentError (x509 reasons, REQUEST_ID_REUSED), NotFoundError INSTANCE_NOT_FOUND,
   *         AlreadyExistsError CERTIFICATE_ALREADY_EXISTS, RootKeyError.
   */
  async import(instanceId: string, input: MaterialInput, fields: CertificateFields, requestId: string, signal?: AbortSignal): Promise<ImportResult> {
    const instance = await this.instance(instanceId);
    // Parse first: it validates every field before any work on keys or the database.
    const parsed = await this.parse(input, signal);
    const request = requestId ? { scope: certificateRequestScope(instanceId), requestId, fingerprint: parsed.metadata.sha256Fingerprint } : undefined;
    const certificate = await createOnce(this.uow, request, (id) => this.get(instanceId, id), (claim) => this.insertParsed(instance, parsed, fields, request, claim));
    return { certificate, repairs: parsed.repairs };
  }

  /** Stores a parsed import as a new certificate, claiming the request id in the same transaction. */
  private async insertParsed(
    instance: InstanceRecord,
    parsed: ParsedImport,
    fields: CertificateFields,
    request: RequestKey | undefined,
    claim: ClaimRequestId,
  ): Promise<CertificateRecord> {
    const instanceId = instance.id;
    const fingerprint = parsed.metadata.sha256Fingerprint;
    const replayedEarly = await this.refuseDuplicate(instanceId, fingerprint, request);
    if (replayedEarly) return replayedEarly;

    const now = this.clock.now();
    const id = uuidv7();
    const record: CertificateRecord = {
      id,
      instanceId,
      displayName: fields.displayName ?? "",
      description: fields.description ?? "",
      labels: fields.labels ?? {},
      metadata: parsed.metadata,
      hasPrivateKey: parsed.hasPrivateKey,
      intermediateCount: parsed.intermediateCount,
      currentVersion: 1,
      revision: 1,
      createTime: now,
      updateTime: now,
    };
    try {
      await this.sealing(instance, async (repos, locked) => {
        await claim(repos, id, now);
        const sealed = await this.envelope.seal(repos, locked, id, parsed.material);
        await repos.certificates.insert(record, versionRecord(record, 1, sealed, parsed, now));
      });
    } catch (err) {
      if (err instanceof UniqueConstraintError) {
        const replayed = await this.refuseDuplicate(instanceId, fingerprint, request);
        if (replayed) return replayed;
      }
      throw err;
    }
    return record;
  }

  /**
   * Adds a new version of a certificate's material and makes it current; earlier versions stay readable.
   * @throws as `import`, plus EtagMismatchError and NotFoundError CERTIFICATE_NOT_FOUND.
   */
  async reimport(instanceId: string, certificateId: string, input: MaterialInput, etag: string, signal?: AbortSignal): Promise<ImportResult> {
    // Cheap checks first: a missing certificate is reported before any parsing work.
    await this.get(instanceId, certificateId);
    const parsed = await this.parse(input, signal);
    const certificate = await retryUnconditional(etag, () => this.reimportParsed(instanceId, certificateId, parsed, etag));
    return { certificate, repairs: parsed.repairs };
  }

  private async reimportParsed(instanceId: string, certificateId: string, parsed: ParsedImport, etag: string): Promise<CertificateRecord> {
    const instance = await this.instance(instanceId);
    const current = await this.get(instanceId, certificateId);
    const name = certificateName(instanceId, certificateId);
    checkEtag(name, current.revision, etag);
    const fingerprint = parsed.metadata.sha256Fingerprint;
    const holder = await this.uow.repos.certificates.findByFingerprint(instanceId, fingerprint);
    if (holder && holder.id !== certificateId) this.throwDuplicate(holder);

    const now = this.clock.now();
    const versionNo = current.currentVersion + 1;
    const updated: CertificateRecord = {
      ...current,
      metadata: parsed.metadata,
      hasPrivateKey: parsed.hasPrivateKey,
      intermediateCount: parsed.intermediateCount,
      currentVersion: versionNo,
      revision: current.revision + 1,
      updateTime: now,
    };
    try {
      await this.sealing(instance, async (repos, locked) => {
        const sealed = await this.envelope.seal(repos, locked, certificateId, parsed.material);
        const version = versionRecord(updated, versionNo, sealed, parsed, now);
        if (!(await repos.certificates.addVersion(updated, version, current.revision))) throw new EtagMismatchError(name, etag !== "");
      });
    } catch (err) {
      if (err instanceof UniqueConstraintError) await this.refuseDuplicate(instanceId, fingerprint);
      throw err;
    }
    return updated;
  }

  /** @throws NotFoundError INSTANCE_NOT_FOUND | CERTIFICATE_NOT_FOUND */
  async get(instanceId: string, certificateId: string): Promise<CertificateRecord> {
    await this.instance(instanceId);
    const cert = await this.uow.repos.certificates.get(instanceId, certificateId);
    if (!cert) {
      const name = certificateName(instanceId, certificateId);
      throw new NotFoundError("CERTIFICATE_NOT_FOUND", name, `certificate ${name} does not exist`);
    }
    return cert;
  }

  /**
   * Decrypts a version's material (0 = current).
   * @throws NotFoundError CERTIFICATE_NOT_FOUND | CERTIFICATE_VERSION_NOT_FOUND, DecryptionError, RootKeyError.
   */
  async access(instanceId: string, certificateId: string, version: number): Promise<AccessedMaterial> {
    const instance = await this.instance(instanceId);
    const cert = await this.get(instanceId, certificateId);
    const name = certificateName(instanceId, certificateId);
    if (version < 0) throw new InvalidArgumentError("INVALID_FIELD", "version", `version must be 0 (current) or a positive version number, got ${version}`);
    const wanted = version === 0 ? cert.currentVersion : version;
    const material = await this.envelope.open(this.uow.repos, instance, async () => {
      const row = await this.uow.repos.certificates.getVersion(certificateId, wanted);
      if (!row) {
        throw new NotFoundError("CERTIFICATE_VERSION_NOT_FOUND", `${name}`, `certificate ${name} has no version ${wanted}; its current version is ${cert.currentVersion}`);
      }
      return row;
    });
    return { version: wanted, ...material };
  }

  /**
   * Lists certificates with filter and order, keyset-paginated so pages stay stable while rows are added.
   * @throws InvalidArgumentError INVALID_FILTER | INVALID_ORDER_BY | INVALID_PAGE_TOKEN | INVALID_FIELD
   */
  async list(
    instanceId: string,
    req: { pageSize: number; pageToken: string; filter: string; orderBy: string },
  ): Promise<{ certificates: CertificateRecord[]; nextPageToken: string }> {
    const size = pageSize(req.pageSize);
    const filter = parseCertificateFilter(req.filter);
    const order = parseCertificateOrderBy(req.orderBy);
    await this.instance(instanceId);
    const binding = PageTokenCodec.bind("certificates", instanceId, req.filter, `${order.field} ${order.descending}`);
    const after = req.pageToken ? this.pageTokens.decode(req.pageToken, binding) : undefined;
    const rows = await this.uow.repos.certificates.list({
      instanceId,
      filter,
      orderBy: order.field,
      descending: order.descending,
      limit: size + 1,
      after,
    });
    const page = rows.slice(0, size);
    let nextPageToken = "";
    if (rows.length > size) {
      const last = page[page.length - 1];
      const value =
        order.field === "display_name" ? last.displayName : order.field === "not_after" ? last.metadata.notAfter.getTime() : last.createTime.getTime();
      nextPageToken = this.pageTokens.encode(binding, { value, id: last.id });
    }
    return { certificates: page, nextPageToken };
  }

  /** Updates display name, description or labels, conditional on `etag`. @throws NotFoundError, EtagMismatchError */
  async update(instanceId: string, certificateId: string, fields: CertificateFields, etag: string): Promise<CertificateRecord> {
    return retryUnconditional(etag, () => this.updateOnce(instanceId, certificateId, fields, etag));
  }

  private async updateOnce(instanceId: string, certificateId: string, fields: CertificateFields, etag: string): Promise<CertificateRecord> {
    const current = await this.get(instanceId, certificateId);
    const name = certificateName(instanceId, certificateId);
    checkEtag(name, current.revision, etag);
    const updated: CertificateRecord = {
      ...current,
      ...Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)),
      revision: current.revision + 1,
      updateTime: this.clock.now(),
    };
    await this.uow.transaction(async (repos) => {
      await lockActiveInstance(repos, instanceId);
      if (!(await repos.certificates.update(updated, current.revision))) throw new EtagMismatchError(name, etag !== "");
    });
    return updated;
  }

  /** Deletes a certificate and all its versions in one transaction. @throws NotFoundError, EtagMismatchError */
  async delete(instanceId: string, certificateId: string, etag: string): Promise<void> {
    return retryUnconditional(etag, () => this.deleteOnce(instanceId, certificateId, etag));
  }

  private async deleteOnce(instanceId: string, certificateId: string, etag: string): Promise<void> {
    const current = await this.get(instanceId, certificateId);
    const name = certificateName(instanceId, certificateId);
    checkEtag(name, current.revision, etag);
    await this.uow.transaction(async (repos) => {
      await lockActiveInstance(repos, instanceId);
      // Throwing inside rolls back any partial delete.
      if (!(await repos.certificates.delete(instanceId, certificateId, current.revision))) throw new EtagMismatchError(name, etag !== "");
    });
  }

  /** The instance, which must be ACTIVE. @throws NotFoundError, FailedPreconditionError (requireActive) */
  private instance(instanceId: string): Promise<InstanceRecord> {
    return getActiveInstance(this.uow.repos, instanceId);
  }

  /**
   * Runs `write` in one transaction that has locked the instance (the envelope then locks the active DEK: one
   * lock order), rotating the DEK first whenever the envelope reports it has no room for a version.
   */
  private sealing(instance: InstanceRecord, write: (repos: Repositories, locked: InstanceRecord) => Promise<void>): Promise<void> {
    return this.rotation.withRoom(instance, () =>
      this.uow.transaction(async (repos) => write(repos, await lockActiveInstance(repos, instance.id))),
    );
  }

  /**
   * Refuses a certificate the instance already holds, unless the holder was made by this very request_id
   * (a retry that raced its own first attempt): then that certificate is the answer (AIP-155).
   */
  private async refuseDuplicate(instanceId: string, fingerprint: string, request?: RequestKey): Promise<CertificateRecord | undefined> {
    const holder = await this.uow.repos.certificates.findByFingerprint(instanceId, fingerprint);
    if (!holder) return undefined;
    const earlier = await earlierResource(this.uow.repos, request);
    if (earlier !== undefined) return this.get(instanceId, earlier);
    this.throwDuplicate(holder);
  }

  private throwDuplicate(holder: CertificateRecord): never {
    const name = certificateName(holder.instanceId, holder.id);
    throw new AlreadyExistsError(
      "CERTIFICATE_ALREADY_EXISTS",
      name,
      `this certificate (SHA-256 ${holder.metadata.sha256Fingerprint}) is already stored as ${name}; use ReimportCertificate to replace its material`,
      { sha256_fingerprint: holder.metadata.sha256Fingerprint },
    );
  }
}

/** The stored version row of freshly sealed material. */
function versionRecord(cert: CertificateRecord, version: number, sealed: SealedMaterial, parsed: ParsedImport, now: Date): CertificateVersionRecord {
  return { certificateId: cert.id, version, ...sealed, sha256Fingerprint: parsed.metadata.sha256Fingerprint, createTime: now };
}
