/**
 * Guards on an instance's lifecycle state (Instance.State in the contract): only an ACTIVE instance may have
 * its data read or changed; a pending one names the reclamation that restores it (AIP-164).
 */
import { FailedPreconditionError, NotFoundError } from "../domain/errors.js";
import { instanceName } from "../domain/names.js";
import type { InstanceRecord, Repositories } from "../domain/ports.js";

/** `reclamations/{id}`. */
export const reclamationName = (id: string): string => `reclamations/${id}`;

/**
 * @throws FailedPreconditionError INSTANCE_PENDING_RECLAMATION while pending (naming the reclamation);
 *         NotFoundError INSTANCE_DELETED once reclaimed.
 */
export function requireActive(instance: InstanceRecord): void {
  const name = instanceName(instance.id);
  if (instance.state === "PENDING_RECLAMATION") {
    const reclamation = reclamationName(instance.reclamationId ?? "");
    throw new FailedPreconditionError(
      "INSTANCE_PENDING_RECLAMATION",
      `instance ${name} was deleted and is pending reclamation until ${instance.expireTime?.toISOString()}; restore it with RestoreReclamation on ${reclamation} to use it again`,
      { resource: name, reclamation, expire_time: instance.expireTime?.toISOString() ?? "" },
    );
  }
  if (instance.state === "DELETED") {
    const err = new NotFoundError("INSTANCE_DELETED", name, `instance ${name} was permanently deleted`);
    err.metadata.reclamation = reclamationName(instance.reclamationId ?? "");
    throw err;
  }
}

/** NOT_FOUND for an instance that does not exist. */
export function instanceNotFound(id: string): NotFoundError {
  return new NotFoundError("INSTANCE_NOT_FOUND", instanceName(id), `instance ${instanceName(id)} does not exist`);
}

/**
 * Inside a write transaction: re-reads the instance under a shared row lock and checks it is still ACTIVE, so a
 * concurrent DeleteInstance (which updates that row) either waits for this write or makes it fail; no write
 * lands in an instance pending reclamation.
 * @throws NotFoundError INSTANCE_NOT_FOUND, and as requireActive.
 */
export async function lockActiveInstance(repos: Repositories, id: string): Promise<InstanceRecord> {
  const instance = await repos.instances.getForShare(id);
  if (!instance) throw instanceNotFound(id);
  requireActive(instance);
  return instance;
}
