/**
 * Reading an instance that must be ACTIVE, applying the domain's lifecycle rule (`activeInstance`) to what the
 * repositories return.
 */
import { activeInstance } from "../domain/instance.js";
import type { InstanceRecord, Repositories } from "../domain/ports.js";

/**
 * The instance `id`, which must exist and be ACTIVE.
 * @throws NotFoundError INSTANCE_NOT_FOUND | INSTANCE_DELETED; FailedPreconditionError INSTANCE_PENDING_RECLAMATION.
 */
export async function getActiveInstance(repos: Repositories, id: string): Promise<InstanceRecord> {
  return activeInstance(id, await repos.instances.get(id));
}

/**
 * Inside a write transaction: re-reads the instance under a shared row lock and checks it is still ACTIVE, so a
 * concurrent DeleteInstance (which updates that row) either waits for this write or makes it fail; no write
 * lands in an instance pending reclamation.
 * @throws as `getActiveInstance`.
 */
export async function lockActiveInstance(repos: Repositories, id: string): Promise<InstanceRecord> {
  return activeInstance(id, await repos.instances.getForShare(id));
}
