/**
 * Handlers of the access-control services: IamService (policies), ApiKeyService, AuditService. Like handlers.ts, each one
 * shapes the request for one use case; the gate (calls.ts) has already decided whether the caller may call it.
 */
import { type ApiKey, ApiKey_State, type ApiKeyServiceServer } from "../../gen/ts/certmanager/v1/api_key.js";
import type { IamServiceServer } from "../../gen/ts/certmanager/v1/iam.js";
import type { Policy } from "../../gen/ts/google/iam/v1/policy.js";
import { apiKeyMember, apiKeyName, type ApiKeyService } from "../auth/api-keys.js";
import type { Authorizer } from "../auth/authorize.js";
import type { PolicyService, PolicyView } from "../auth/policies.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { isPermission, isPolicyResource } from "../domain/iam.js";
import type { ApiKeyRecord } from "../domain/ports.js";
import type { Calls } from "./calls.js";
import type { AuditEvent, AuditServiceServer } from "../../gen/ts/certmanager/v1/audit.js";
import type { AuditRecord } from "../domain/audit.js";
import type { AuditService } from "../services/audit.js";

const toPolicy = (p: PolicyView): Policy => ({ version: p.version, bindings: p.bindings.map((b) => ({ role: b.role, members: b.members })), auditConfigs: [], etag: p.etag });

/** The API key resource as answered; never its secret or HMAC. */
function toApiKey(k: ApiKeyRecord, now: Date): ApiKey {
  const state = k.revokeTime ? ApiKey_State.STATE_REVOKED : k.expireTime && k.expireTime <= now ? ApiKey_State.STATE_EXPIRED : ApiKey_State.STATE_ACTIVE;
  return {
    name: apiKeyName(k.id),
    displayName: k.displayName,
    member: apiKeyMember(k.id),
    state,
    expireTime: k.expireTime,
    createTime: k.createTime,
    creator: k.creator,
    revokeTime: k.revokeTime,
    lastUseTime: k.lastUseTime,
  };
}

/** IamService handlers. */
export function iamHandlers(calls: Calls, policies: PolicyService, authorizer: Authorizer): IamServiceServer {
  return {
    getIamPolicy: calls.unary("GetIamPolicy", async (req) => ({ policy: toPolicy(await policies.get(req.resource)) })),
    setIamPolicy: calls.unary("SetIamPolicy", async (req) => {
      if (!req.policy) throw new InvalidArgumentError("INVALID_FIELD", "policy", "policy is required: the whole new policy, with the etag read by GetIamPolicy");
      return { policy: toPolicy(await policies.set(req.resource, req.policy)) };
    }),
    testIamPermissions: calls.unary("TestIamPermissions", async (req, { caller }) => {
      if (!isPolicyResource(req.resource)) throw new InvalidArgumentError("INVALID_FIELD", "resource", "resource must be instances/{uuid} or services/certmanager");
      if (req.permissions.length > 100) throw new InvalidArgumentError("INVALID_FIELD", "permissions", "at most 100 permissions can be tested at once");
      req.permissions.forEach((p, i) => {
        if (!isPermission(p)) throw new InvalidArgumentError("INVALID_FIELD", `permissions[${i}]`, `permissions[${i}] ${JSON.stringify(p.slice(0, 100))} is not a permission of this service`);
      });
      const held = await authorizer.held(caller, req.resource);
      return { permissions: req.permissions.filter((p) => held.has(p as never)) };
    }),
  };
}

/** ApiKeyService handlers. */
export function apiKeyHandlers(calls: Calls, keys: ApiKeyService, now: () => Date): ApiKeyServiceServer {
  return {
    createApiKey: calls.unary("CreateApiKey", async (req, { caller }) => {
      const { key, secret } = await keys.create({ displayName: req.apiKey?.displayName ?? "", expireTime: req.apiKey?.expireTime }, caller.principal);
      return { apiKey: toApiKey(key, now()), secret };
    }),
    getApiKey: calls.unary("GetApiKey", async (req) => ({ apiKey: toApiKey(await keys.get(req.name), now()) })),
    listApiKeys: calls.unary("ListApiKeys", async (req) => {
      const page = await keys.list(req.pageSize, req.pageToken);
      const t = now();
      return { apiKeys: page.keys.map((k) => toApiKey(k, t)), nextPageToken: page.nextPageToken };
    }),
    revokeApiKey: calls.unary("RevokeApiKey", async (req) => ({ apiKey: toApiKey(await keys.revoke(req.name), now()) })),
  };
}

const toAuditEvent = (e: AuditRecord): AuditEvent => ({
  chain: e.chain,
  sequence: e.seq,
  eventTime: e.time,
  principal: e.principal,
  method: e.method,
  resource: e.resource,
  code: e.code,
  reason: e.reason,
  requestId: e.requestId,
  callId: e.callId,
  peer: e.peer,
  previousHash: e.prevHash,
  hash: e.hash,
});

/** AuditService handlers. */
export function auditHandlers(calls: Calls, audit: AuditService): AuditServiceServer {
  return {
    listAuditEvents: calls.unary("ListAuditEvents", async (req) => {
      const page = await audit.list(req.parent, req.pageSize, req.pageToken);
      return { auditEvents: page.events.map(toAuditEvent), nextPageToken: page.nextPageToken, headSequence: page.head.seq, headHash: page.head.hash };
    }),
  };
}
