/**
 * Idempotent creates with `request_id` (AIP-155): a retried request returns what its first attempt created
 * instead of creating it again. The claim of a request id is written in the transaction that writes the
 * resource and is unique per (scope, request id), so of two concurrent attempts the database lets exactly one
 * create; the other rolls back and answers with the winner's resource.
 */
import { InvalidArgumentError } from "../domain/errors.js";
import type { Repositories, UnitOfWork } from "../domain/ports.js";

/** A request id in its scope, with what identifies the request's payload. */
export interface RequestKey {
  /** Where request ids are unique: `instances`, or `certificateRequestScope(instance id)`. */
  scope: string;
  /** The client's request_id. */
  requestId: string;
  /** Identifies the payload (for example a certificate's SHA-256) so that reusing the id for another one is refused; "" when not checked. */
  fingerprint: string;
}

/** Claims the request id for `resourceId`; called inside the transaction that creates the resource. */
export type ClaimRequestId = (repos: Repositories, resourceId: string, now: Date) => Promise<void>;

/** Thrown by a claim that another attempt already holds, so the creating transaction rolls back. */
class AlreadyClaimed extends Error {}

/** The scope of the request ids of imports into one instance (deleted with the instance's data). */
export const certificateRequestScope = (instanceId: string): string => `certificates:${instanceId}`;

/**
 * The id of the resource that an earlier request with `key` created.
 * @returns undefined when no request_id was sent (`key` undefined) or none was seen.
 * @throws InvalidArgumentError REQUEST_ID_REUSED when the earlier request carried another payload.
 */
export async function earlierResource(repos: Repositories, key: RequestKey | undefined): Promise<string | undefined> {
  if (!key) return undefined;
  const earlier = await repos.requestIds.find(key.scope, key.requestId);
  if (!earlier) return undefined;
  if (earlier.fingerprint !== key.fingerprint) {
    throw new InvalidArgumentError(
      "REQUEST_ID_REUSED",
      "request_id",
      "request_id was already used for a request with other content (a different certificate); send a new request_id for a new request",
    );
  }
  return earlier.resourceId;
}

/**
 * Runs a create at most once per request id (AIP-155). Without a key (no request_id sent) it simply runs
 * `create`. With one, a request seen before answers `load(id of what it created)`; otherwise `create` runs and
 * calls `claim` inside the transaction that writes the resource. When a concurrent attempt claimed first, that
 * call throws, the transaction rolls back and the winner's resource is loaded instead.
 * @throws InvalidArgumentError REQUEST_ID_REUSED, and whatever `create` or `load` throws.
 * @example
 * return createOnce(uow, key, (id) => this.get(id), async (claim) =>
 *   uow.transaction(async (repos) => { await claim(repos, record.id, now); await repos.instances.insert(record); return record; }));
 */
export async function createOnce<T>(
  uow: UnitOfWork,
  key: RequestKey | undefined,
  load: (resourceId: string) => Promise<T>,
  create: (claim: ClaimRequestId) => Promise<T>,
): Promise<T> {
  const earlier = await earlierResource(uow.repos, key);
  if (earlier !== undefined) return load(earlier);
  const claim: ClaimRequestId = async (repos, resourceId, now) => {
    if (key && !(await repos.requestIds.claim({ ...key, resourceId }, now))) throw new AlreadyClaimed();
  };
  try {
    return await create(claim);
  } catch (err) {
    if (!(err instanceof AlreadyClaimed)) throw err;
    return load((await earlierResource(uow.repos, key))!);
  }
}
