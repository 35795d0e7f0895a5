/**
 * Instance use cases (InstanceService): create with a fresh wrapped DEK, get, list, update.
 */
import type { Logger } from "pino";
import { v7 as uuidv7 } from "uuid";
import { EtagMismatchError, RootKeyError, UniqueConstraintError } from "../domain/errors.js";
import { instanceNotFound, requireActive } from "../domain/instance.js";
import { instanceName } from "../domain/names.js";
import type { Clock, InstanceRecord, ReclamationRecord, UnitOfWork } from "../domain/ports.js";
import { formatRootKeyRef, type RootKeyRef } from "../domain/rootkey-id.js";
import { checkEtag, retryUnconditional } from "./etag.js";
import type { DekRotation } from "./dek-rotation.js";
import type { Keyring } from "../crypto/keyring.js";
import type { RootKeyView } from "../domain/rootkey.js";
import { PageTokenCodec, pageSize } from "../domain/page-token.js";
import { createOnce } from "./request-id.js";

/** The root key choice of CreateInstance: the provider's key, or a customer-managed `<backend>/<key id>`. */
export type EncryptionChoice = { keyManagement: "PROVIDER" } | ({ keyManagement: "CUSTOMER" } & RootKeyRef);

/** Root key facts shown with an instance. */
export interface InstanceKeyView {
  rootKeyVersion: number;
  rootKeyState?: RootKeyView;
  rootKeyCurrentVersion: number;
}

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
    private readonly defaultRootKey: RootKeyRef,
    /** How long a deleted instance stays restorable, ms. */
    private readonly retentionMs: number,
    private readonly rotation: DekRotation,
    private readonly log?: Logger,
  ) {}

  /**
   * Creates an instance, its own key in the root key's backend and its first DEK (wrapped by the root key, then
   * by the instance key), the rows in one transaction.
   * A repeated `requestId` returns the first call's instance (AIP-155).
   * @throws RootKeyError when the root key cannot wrap (nothing is written).
   */
  async create(fields: InstanceFields, requestId: string, encryption: EncryptionChoice = { keyManagement: "PROVIDER" }): Promise<InstanceRecord> {
    const request = requestId ? { scope: REQUEST_SCOPE, requestId, fingerprint: "" } : undefined;
    return createOnce(this.uow, request, (id) => this.get(id), async (claim) => {
      const instance = this.newInstance(fields, encryption);
      // Prove the service may use the key before anything is written (a wrap and an unwrap).
      if (encryption.keyManagement === "CUSTOMER") await this.probe(instance);
      // Also creates the instance's own key in the root key's backend (destroyed again at reclamation).
      const dek = await this.keyring.newDek(this.uow.repos, instance, false);
      try {
        await this.uow.transaction(async (repos) => {
          await claim(repos, instance.id, instance.createTime);
          await repos.instances.insert(instance);
          await repos.deks.insert(dek);
        });
      } catch (err) {
        await this.dropUnusedInstanceKey(instance);
        throw err;
      }
      return instance;
    });
  }

  /**
   * After a failed create: destroys the new instance's key when the instance was certainly not stored (a commit
   * whose answer was lost may have stored it; then the key stays, and an unused one is harmless).
   */
  private async dropUnusedInstanceKey(instance: InstanceRecord): Promise<void> {
    try {
      if (await this.uow.repos.instances.get(instance.id)) return;
      await this.keyring.destroyInstanceKey(instance);
    } catch (err) {
      this.log?.warn({ instance: instanceName(instance.id), err: (err as Error).message }, "could not remove the key of an instance that was not created");
    }
  }

  /** A new ACTIVE instance record (not yet stored) with the chosen root key. */
  private newInstance(fields: InstanceFields, encryption: EncryptionChoice): InstanceRecord {
    const now = this.clock.now();
    return {
      id: uuidv7(),
      displayName: fields.displayName ?? "",
      description: fields.description ?? "",
      labels: fields.labels ?? {},
      state: "ACTIVE",
      rootKeyBackend: encryption.keyManagement === "CUSTOMER" ? encryption.backend : this.defaultRootKey.backend,
      rootKeyId: encryption.keyManagement === "CUSTOMER" ? encryption.keyId : this.defaultRootKey.keyId,
      keyManagement: encryption.keyManagement,
      revision: 1,
      createTime: now,
      updateTime: now,
    };
  }

  /** Wraps and unwraps with the chosen root key, turning a refusal into a message saying what to fix. */
  private async probe(instance: InstanceRecord): Promise<void> {
    const ref = formatRootKeyRef(instance.rootKeyBackend, instance.rootKeyId);
    try {
      await this.keyring.probe(instance);
    } catch (err) {
      if (!(err instanceof RootKeyError)) throw err;
      const fix: Record<string, string> = {
        ROOT_KEY_NOT_FOUND: `root key ${ref} does not exist in its backend: create it there (for SoftHSM2 or the local keystore: npm run keys), or correct instance.root_key`,
        ROOT_KEY_ACCESS_DENIED: `the service may not use root key ${ref}: grant the service's backend identity (for PKCS#11, the token user whose PIN the service holds) use of the key for wrap and unwrap`,
        ROOT_KEY_DISABLED: `root key ${ref} is disabled: enable it in its backend, then retry`,
        ROOT_KEY_DESTROYED: `root key ${ref} was destroyed: create a new key and name it in instance.root_key`,
        ROOT_KEY_BACKEND_UNAVAILABLE: `the backend of root key ${ref} cannot be reached: check that it runs and retry`,
      };
      throw new RootKeyError(err.reason as ConstructorParameters<typeof RootKeyError>[0], fix[err.reason] ?? err.message, { root_key: ref }, err);
    }
  }

  /**
   * Rewraps the instance's DEKs with the newest root key version (after a root key rotation).
   * @returns how many DEKs this call rewrapped and how many the instance has.
   * @throws NotFoundError, FailedPreconditionError (not ACTIVE), RootKeyError ROOT_KEY_UNAVAILABLE
   */
  async rewrapDataKeys(id: string): Promise<{ instance: InstanceRecord; rewrapped: number; total: number }> {
    const instance = await this.get(id);
    requireActive(instance);
    return { instance, ...(await this.keyring.rewrapAll(this.uow.repos, instance)) };
  }

  /**
   * Rotates the instance's DEK and re-encrypts its certificates (see DekRotation).
   * @throws NotFoundError, FailedPreconditionError (not ACTIVE), RootKeyError ROOT_KEY_UNAVAILABLE
   */
  async rotateDataKey(id: string): Promise<{ instance: InstanceRecord; reencrypted: number; retired: number }> {
    const instance = await this.get(id);
    const r = await this.rotation.rotate(instance);
    return { instance: await this.get(id), ...r };
  }

  /** Names of the root-key backends this server runs. */
  backendNames(): string[] {
    return this.keyring.backendNames();
  }

  /** @throws NotFoundError INSTANCE_NOT_FOUND */
  async get(id: string): Promise<InstanceRecord> {
    const instance = await this.uow.repos.instances.get(id);
    if (!instance) throw instanceNotFound(id);
    return instance;
  }

  /**
   * What GetInstance shows besides the row: the root key version that wrapped the active DEK (0 when none),
   * and the root key's state and newest version as its backend reports them (cached a few seconds). Tombstones
   * are not described: their keys are gone.
   */
  async keyView(instance: InstanceRecord): Promise<InstanceKeyView> {
    const rootKeyVersion = (await this.uow.repos.deks.getActive(instance.id))?.rootKeyVersion ?? 0;
    if (instance.state === "DELETED") return { rootKeyVersion, rootKeyCurrentVersion: 0 };
    const status = await this.keyring.status(instance);
    return { rootKeyVersion, rootKeyState: status.state, rootKeyCurrentVersion: status.currentVersion };
  }

  /**
   * Lists instances oldest first (keyset pagination on create_time, id).
   * @throws InvalidArgumentError INVALID_PAGE_TOKEN, INVALID_FIELD (page_size)
   */
  async list(
    requestedPageSize: number,
    pageToken: string,
    showDeleted: boolean,
    visibleTo?: readonly string[],
  ): Promise<{ instances: InstanceRecord[]; nextPageToken: string }> {
    const size = pageSize(requestedPageSize);
    const binding = PageTokenCodec.bind("instances", String(showDeleted));
    const after = pageToken ? this.pageTokens.decode(pageToken, binding) : undefined;
    const rows = await this.uow.repos.instances.list(size + 1, after, showDeleted, visibleTo);
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
    // In a transaction, so the call's audit event commits with the change, and a lost race (thrown inside) leaves
    // neither.
    await this.uow.transaction(async (repos) => {
      if (!(await repos.instances.update(updated, current.revision))) throw new EtagMismatchError(instanceName(id), etag !== "");
    });
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
