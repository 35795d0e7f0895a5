/**
 * API keys issued by the service. A key is `cmk_{id}_{secret}`: a public id (16 characters of `[a-z0-9]`, 80
 * random bits, for the lookup and for IAM members `apiKey:{id}`) and a 256-bit secret from the CSPRNG
 * (43 base64url characters). Only HMAC-SHA-256(pepper, secret) is stored (RFC 2104): the secret is random, so a
 * slow password hash would buy nothing and cap the server at tens of calls a second; the pepper, kept out of the
 * database, makes a stolen table useless for guessing.
 */
import { createHmac, randomBytes, randomInt, timingSafeEqual } from "node:crypto";
import { LRUCache } from "lru-cache";
import { InvalidArgumentError, NotFoundError, UnauthenticatedError } from "../domain/errors.js";
import { API_KEY_ID } from "../domain/iam.js";
import { PageTokenCodec, pageSize } from "../domain/page-token.js";
import type { ApiKeyRecord, Clock, Repositories, UnitOfWork } from "../domain/ports.js";

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
const TOKEN = new RegExp(`^cmk_(${API_KEY_ID})_([A-Za-z0-9_-]{43})$`);

/** True when `token` has the shape of an API key (so a bearer token is not tried as a JWT). */
export function looksLikeApiKey(token: string): boolean {
  return token.startsWith("cmk_");
}

/** The member naming an API key in IAM policies. */
export const apiKeyMember = (id: string): string => `apiKey:${id}`;

/** A new key: its public id, the secret to show once, and the HMAC to store. */
export function newApiKey(pepper: Buffer): { id: string; secret: string; secretHmac: string } {
  let id = "";
  for (let i = 0; i < 16; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  const random = randomBytes(32);
  const part = random.toString("base64url");
  random.fill(0);
  return { id, secret: `cmk_${id}_${part}`, secretHmac: hmacHex(pepper, part) };
}

function hmacHex(pepper: Buffer, secretPart: string): string {
  return createHmac("sha256", pepper).update(secretPart).digest("hex");
}

/** What the authenticator needs of storage: a key by id (cached by the caller). */
export type ApiKeyLookup = (id: string) => Promise<ApiKeyRecord | undefined>;

/**
 * Verifies API keys: parse, look the id up, compare HMACs in constant time, check revocation and expiry.
 * Records the last use in memory; `takeUses` hands the batch to a writer, so no call waits on a write.
 */
export class ApiKeyVerifier {
  private uses = new Map<string, Date>();

  constructor(
    private readonly pepper: Buffer,
    private readonly lookup: ApiKeyLookup,
    private readonly now: () => Date,
  ) {}

  /**
   * @returns the key's id when `token` is a valid, unrevoked, unexpired key.
   * @throws UnauthenticatedError (cause says why, for the log) for anything else.
   */
  async verify(token: string): Promise<string> {
    const m = TOKEN.exec(token);
    if (!m) throw new UnauthenticatedError(new Error("malformed API key"));
    const [, id, part] = m;
    const key = await this.lookup(id);
    // The HMAC is computed even for an unknown id, so timing does not tell which ids exist.
    const sent = Buffer.from(hmacHex(this.pepper, part), "hex");
    const stored = Buffer.from(key?.secretHmac ?? "00".repeat(32), "hex");
    if (!key || stored.length !== sent.length || !timingSafeEqual(sent, stored)) throw new UnauthenticatedError(new Error(`unknown API key or wrong secret (id ${id})`));
    const now = this.now();
    if (key.revokeTime) throw new UnauthenticatedError(new Error(`API key ${id} was revoked`));
    if (key.expireTime && key.expireTime.getTime() <= now.getTime()) throw new UnauthenticatedError(new Error(`API key ${id} expired`));
    this.uses.set(id, now);
    return id;
  }

  /** The last use of every key since the previous call, emptied. */
  takeUses(): Map<string, Date> {
    const out = this.uses;
    this.uses = new Map();
    return out;
  }
}

const NAME = new RegExp(`^apiKeys/(${API_KEY_ID})$`);

/** `apiKeys/{id}`. */
export const apiKeyName = (id: string): string => `apiKeys/${id}`;

/**
 * API key use cases (ApiKeyService) and the cached lookup authentication uses. A lookup (hit or miss) is
 * cached for `cacheTtlMs`, so a revocation made on another replica holds within it; on this one at once.
 */
export class ApiKeyService {
  private readonly cache: LRUCache<string, { key?: ApiKeyRecord }>;

  constructor(
    private readonly uow: UnitOfWork,
    private readonly clock: Clock,
    /** The server pepper secrets are HMACed under. */
    readonly pepper: Buffer,
    private readonly pageTokens: PageTokenCodec,
    cacheTtlMs: number,
  ) {
    this.cache = new LRUCache({ max: 10_000, ttl: Math.max(1, cacheTtlMs) });
  }

  /** Bumped by every change on this server, so a lookup that read before it does not cache what it read. */
  private generation = 0;

  /** Drops `id` from the cache, and keeps lookups already reading from putting it back. */
  private forget(id: string): void {
    this.generation++;
    this.cache.delete(id);
  }

  /** The key with public id `id`, through the cache (for ApiKeyVerifier). */
  readonly lookup = async (id: string): Promise<ApiKeyRecord | undefined> => {
    const hit = this.cache.get(id);
    if (hit) return hit.key;
    const generation = this.generation;
    const key = await this.uow.repos.apiKeys.get(id);
    if (generation === this.generation) this.cache.set(id, { key });
    return key;
  };

  /**
   * Creates a key, inside `repos` when given (the bootstrap creates it with the service policy).
   * @param expireTime must be in the future when set.
   * @returns the record and the secret, which exists nowhere else.
   * @throws InvalidArgumentError INVALID_FIELD for a display name over 256 characters or a past expiry.
   */
  async create(input: { displayName: string; expireTime?: Date }, creator: string, repos?: Repositories): Promise<{ key: ApiKeyRecord; secret: string }> {
    if (input.displayName.length > 256) throw new InvalidArgumentError("INVALID_FIELD", "api_key.display_name", "api_key.display_name must be at most 256 characters");
    const now = this.clock.now();
    if (input.expireTime && input.expireTime.getTime() <= now.getTime()) {
      throw new InvalidArgumentError("INVALID_FIELD", "api_key.expire_time", "api_key.expire_time must be in the future");
    }
    const { id, secret, secretHmac } = newApiKey(this.pepper);
    const key: ApiKeyRecord = { id, displayName: input.displayName, secretHmac, creator, createTime: now, expireTime: input.expireTime };
    if (repos) await repos.apiKeys.insert(key);
    else await this.uow.transaction((r) => r.apiKeys.insert(key));
    this.forget(id);
    return { key, secret };
  }

  /** @throws InvalidArgumentError for a malformed name; NotFoundError API_KEY_NOT_FOUND. */
  async get(name: string): Promise<ApiKeyRecord> {
    const id = parseApiKeyName(name);
    const key = await this.uow.repos.apiKeys.get(id);
    if (!key) throw new NotFoundError("API_KEY_NOT_FOUND", name, `API key ${name} does not exist`);
    return key;
  }

  /** Oldest first (AIP-158). @throws InvalidArgumentError INVALID_PAGE_TOKEN or a negative page size. */
  async list(requestedSize: number, pageToken: string): Promise<{ keys: ApiKeyRecord[]; nextPageToken: string }> {
    const size = pageSize(requestedSize);
    const binding = PageTokenCodec.bind("apiKeys");
    const after = pageToken ? this.pageTokens.decode(pageToken, binding) : undefined;
    const rows = await this.uow.repos.apiKeys.list(size + 1, after);
    const keys = rows.slice(0, size);
    const last = keys[keys.length - 1];
    return { keys, nextPageToken: rows.length > size ? this.pageTokens.encode(binding, { value: last.createTime.getTime(), id: last.id }) : "" };
  }

  /** Revokes a key (a revoked one is returned unchanged). @throws as `get`. */
  async revoke(name: string): Promise<ApiKeyRecord> {
    const id = parseApiKeyName(name);
    const key = await this.uow.transaction(async (repos) => {
      const found = await repos.apiKeys.get(id);
      if (!found) throw new NotFoundError("API_KEY_NOT_FOUND", name, `API key ${name} does not exist`);
      if (found.revokeTime) return found;
      const now = this.clock.now();
      await repos.apiKeys.revoke(id, now);
      return { ...found, revokeTime: now };
    });
    this.forget(id);
    return key;
  }

  /** Writes the batched last-use times (at most one write per key per flush). */
  async flushUses(uses: ReadonlyMap<string, Date>): Promise<void> {
    if (uses.size > 0) await this.uow.repos.apiKeys.recordUse(uses);
  }
}

/** @throws InvalidArgumentError INVALID_FIELD (field `name`) unless `name` is `apiKeys/{16 of [a-z0-9]}`. */
function parseApiKeyName(name: string): string {
  const m = NAME.exec(name);
  if (!m) throw new InvalidArgumentError("INVALID_FIELD", "name", `name must be an API key name of the form apiKeys/{16 lowercase letters and digits}, got ${JSON.stringify(name.slice(0, 100))}`);
  return m[1];
}
