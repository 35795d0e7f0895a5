/**
 * Rules of an instance's lifecycle (Instance.State in the contract): ACTIVE -> PENDING_RECLAMATION ->
 * (restored) ACTIVE | (reclaimed) DELETED. Only an ACTIVE instance may have its data read or changed; a
 * pending one names the reclamation that restores it (AIP-164), a deleted one stays a tombstone.
 */
import { FailedPreconditionError, NotFoundError } from "./errors.js";
import { instanceName, reclamationName } from "./names.js";
import type { InstanceRecord } from "./ports.js";

/**
 * Checks that the instance may be used.
 * @throws FailedPreconditionError INSTANCE_PENDING_RECLAMATION while pending (metadata: `resource`,
 *         `reclamation`, `expire_time`); NotFoundError INSTANCE_DELETED once reclaimed (metadata: `resource`,
 *         `reclamation`).
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

/** The NOT_FOUND (INSTANCE_NOT_FOUND, metadata `resource`) for an instance id that does not exist. */
export function instanceNotFound(id: string): NotFoundError {
  return new NotFoundError("INSTANCE_NOT_FOUND", instanceName(id), `instance ${instanceName(id)} does not exist`);
}

/**
 * The instance if it exists and is ACTIVE.
 * @param instance the instance with id `id` as read, or undefined when there is none.
 * @throws NotFoundError INSTANCE_NOT_FOUND, and as `requireActive`.
 */
export function activeInstance(id: string, instance: InstanceRecord | undefined): InstanceRecord {
  if (!instance) throw instanceNotFound(id);
  requireActive(instance);
  return instance;
}
