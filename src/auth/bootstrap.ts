/**
 * The first start of a new service: the service policy does not exist yet, so it is created binding
 * roles/administrator to the configured administrators and, unless disabled, to a bootstrap API key whose secret
 * is written to a file (mode 0600) and whose path, never value, is logged, as `vault server -dev` does with its
 * root token. With several replicas starting together, one wins the insert; the others leave no key behind.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { API_KEY_ID, SERVICE_RESOURCE } from "../domain/iam.js";
import type { Clock, UnitOfWork } from "../domain/ports.js";
import { apiKeyMember, type ApiKeyService } from "./api-keys.js";

/** Thrown inside the bootstrap transaction when another replica created the service policy first. */
class LostRace extends Error {}

/**
 * Creates the service policy if there is none.
 * @param keyPath where to write the bootstrap key; undefined: create no key (then `adminMembers` must not be empty).
 * @returns the key file's path when this call created one.
 */
export async function bootstrapAdministrators(
  uow: UnitOfWork,
  apiKeys: ApiKeyService,
  clock: Clock,
  log: Logger,
  opts: { keyPath?: string; adminMembers: string[] },
): Promise<string | undefined> {
  const tmp = opts.keyPath && `${opts.keyPath}.tmp`;
  if (tmp && opts.keyPath && existsSync(tmp)) {
    // A start that died between its commit and the rename: keep the key if it was committed.
    const id = new RegExp(`^cmk_(${API_KEY_ID})_`).exec(readFileSync(tmp, "utf8"))?.[1];
    if (id && !existsSync(opts.keyPath) && (await uow.repos.apiKeys.get(id))) renameSync(tmp, opts.keyPath);
    else rmSync(tmp, { force: true });
  }
  if (await uow.repos.policies.get(SERVICE_RESOURCE)) return undefined;
  try {
    await uow.transaction(async (repos) => {
      const members = [...opts.adminMembers];
      if (tmp) {
        const { key, secret } = await apiKeys.create({ displayName: "bootstrap administrator" }, "system:bootstrap", repos);
        members.push(apiKeyMember(key.id));
        mkdirSync(path.dirname(tmp), { recursive: true, mode: 0o700 });
        const fd = openSync(tmp, "w", 0o600);
        try {
          writeSync(fd, `${secret}\n`);
        } finally {
          closeSync(fd);
        }
      }
      await repos.audit.append(SERVICE_RESOURCE, {
        time: clock.now(),
        principal: "system:bootstrap",
        method: "job:bootstrap",
        resource: SERVICE_RESOURCE,
        code: 0,
        reason: "",
        requestId: "",
        callId: "",
        peer: "",
      });
      const ok = await repos.policies.put({ resource: SERVICE_RESOURCE, bindings: [{ role: "roles/administrator", members: [...new Set(members)].sort() }], revision: 1, updateTime: clock.now() }, 0);
      if (!ok) throw new LostRace();
    });
  } catch (err) {
    if (tmp) rmSync(tmp, { force: true });
    if (err instanceof LostRace) return undefined;
    throw err;
  }
  if (tmp && opts.keyPath) {
    renameSync(tmp, opts.keyPath);
    log.warn(
      { file: opts.keyPath, administrators: opts.adminMembers },
      "created the service policy with a bootstrap administrator API key in this file (mode 0600): use it to create your own keys and policies, then revoke it with RevokeApiKey",
    );
    return opts.keyPath;
  }
  log.info({ administrators: opts.adminMembers }, "created the service policy");
  return undefined;
}
