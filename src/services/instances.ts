/**
 * Instance use cases (InstanceService): create with a fresh wrapped DEK, get, list, update.
 */
import { v7 as uuidv7 } from "uuid";
import { NotFoundError, UniqueConstraintError } from "../domain/errors.js";
import { instanceName } from "../domain/names.js";
import type { Clock, InstanceRecord, ReclamationRecord, UnitOfWork } from "../domain/ports.js";
import { checkEtag, EtagMismatchError, retryUnconditional } from "./etag.js";
import { requireActive } from "./instance-state.js";
import type { Keyring } from "./keyring.js";
import { PageTokenCodec, pageSize } from "./page-token.js";

/** Fields a user may set on an instance. */
export interface InstanceFields {
  displayName?: string;
  description?: string;
  labels?: Record<string, string>;
}

const REQUEST_SCOPE = "instances";

/** Instance use cases. */
export class InstanceService {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly clock: Clock,
    private readonly pageTokens: PageTokenCodec,
    private readonly defaultRootKey: { backend: string; keyId: string },
    /** How long a deleted instance stays restorable, ms. */
    private readonly retentionMs: number,
  ) {}

  /**
   * Creates an instance and its first DEK, wrapped by the provider-managed root key, in one transaction.
   * A repeated `requestId` returns the first call's instance (AIP-155).
   * @throws RootKeyError when the root key cannot wrap (nothing is written).
   */
  async create(fields: InstanceFields, requestId: string): Promise<InstanceRecord> {
    if (requestId) {
      const earlier = await this.uow.repos.requestIds.find(REQUEST_SCOPE, requestId);
      if (earlier) return this.get(earlier.resourceId);
    }
    const now = this.clock.now();
    const instance: InstanceRecord = {
      id: uuidv7(),
      displayName: fields.displayName ?? "",
      description: fields.description ?? "",
      labels: fields.labels ?? {},
      state: "ACTIVE",
      rootKeyBackend: this.defaultRootKey.backend,
      rootKeyId: this.defaultRootKey.keyId,
      revision: 1,
      createTime: now,
      updateTime: now,
    };
    const dek = await this.keyring.newDek(instance);
    const replayOf = await this.uow.transaction(async (repos) => {
      if (requestId && !(await repos.requestIds.claim({ scope: REQUEST_SCOPE, requestId, resourceId: instance.id, fingerprint: "" }, now))) {
        return true;
      }
      await repos.instances.insert(instance);
      await repos.deks.insert(dek);
      return false;
    });
    if (replayOf) {
      const earlier = await this.uow.repos.requestIds.find(REQUEST_SCOPE, requestId);
      return this.get(earlier!.resourceId);
    }
    return instance;
  }

  /** @throws NotFoundError INSTANCE_NOT_FOUND */
  async get(id: string): Promise<InstanceRecord> {
    const instance = await this.uow.repos.instances.get(id);
    if (!instance) throw new NotFoundError("INSTANCE_NOT_FOUND", instanceName(id), `instance ${instanceName(id)} does not exist`);
    return instance;
  }

  /** The root key version that wrapped the instance's active DEK (0 when it has none). */
  async rootKeyVersion(id: string): Promise<number> {
    return (await this.uow.repos.deks.getActive(id))?.rootKeyVersion ?? 0;
  }

  /**
   * Lists instances oldest first (keyset pagination on create_time, id).
   * @throws InvalidArgumentError INVALID_PAGE_TOKEN, INVALID_FIELD (page_size)
   */
  async list(requestedPageSize: number, pageToken: string, showDeleted: boolean): Promise<{ instances: InstanceRecord[]; nextPageToken: string }> {
    const size = pageSize(requestedPageSize);
    const binding = PageTokenCodec.bind("instances", String(showDeleted));
    const after = pageToken ? this.pageTokens.decode(pageToken, binding) : undefined;
    const rows = await this.uow.repos.instances.list(size + 1, after, showDeleted);
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    const nextPageToken = rows.length > size ? this.pageTokens.encode(binding, { value: last.createTime.getTime(), id: last.id }) : "";
    return { instances: page, nextPageToken };
  }

  /**
   * Updates the given fields, conditional on `etag` when one is sent (AIP-134, AIP-154).
   * @throws NotFoundError, EtagMismatchError
   */
  async update(id: string, fields: InstanceFields, etag: string): Promise<InstanceRecord> {
    return retryUnconditional(etag, () => this.updateOnce(id, fields, etag));
  }

  private async updateOnce(id: string, fields: InstanceFields, etag: string): Promise<InstanceRecord> {
    const current = await this.get(id);
    requireActive(current);
    checkEtag(instanceName(id), current.revision, etag);
    const updated: InstanceRecord = {
      ...current,
      ...Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)),
      revision: current.revision + 1,
      updateTime: this.clock.now(),
    };
    if (!(await this.uow.repos.instances.update(updated, current.revision))) throw new EtagMismatchError(instanceName(id), etag !== "");
    return updated;
  }

  /**
   * Soft-deletes an instance (AIP-164): ACTIVE -> PENDING_RECLAMATION and a SCHEDULED reclamation expiring
   * after the retention period, in one transaction. The instance row's revision and the unique open
   * reclamation per instance make a second, concurrent delete lose.
   * @throws NotFoundError, EtagMismatchError, FailedPreconditionError INSTANCE_PENDING_RECLAMATION
   */
  async delete(id: string, etag: string): Promise<{ instance: InstanceRecord; reclamation: ReclamationRecord }> {
    const current = await this.get(id);
    requireActive(current);
    checkEtag(instanceName(id), current.revision, etag);
    const now = this.clock.now();
    const reclamation: ReclamationRecord = {
      id: uuidv7(),
      instanceId: id,
      state: "SCHEDULED",
      expireTime: new Date(now.getTime() + this.retentionMs),
      createTime: now,
      updateTime: now,
    };
    const pending: InstanceRecord = {
      ...current,
      state: "PENDING_RECLAMATION",
      reclamationId: reclamation.id,
      expireTime: reclamation.expireTime,
      revision: current.revision + 1,
      updateTime: now,
    };
    try {
      await this.uow.transaction(async (repos) => {
        if (!(await repos.instances.update(pending, current.revision))) throw new UniqueConstraintError("instances_revision");
        await repos.reclamations.insert(reclamation);
      });
    } catch (err) {
      if (!(err instanceof UniqueConstraintError)) throw err;
      // Lost a race: report what the winner left behind.
      const now2 = await this.get(id);
      requireActive(now2);
      throw new EtagMismatchError(instanceName(id));
    }
    return { instance: pending, reclamation };
  }
}
