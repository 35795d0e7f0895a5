/**
 * Per-instance DEK management over the root-key backends (see ARCHITECTURE.md, "Envelope format"): creating and wrapping
 * DEKs, unwrapping them through the DEK cache to seal or open material, rewrapping them after a root key
 * rotation, and noticing disabled or destroyed root keys.
 *
 * Every DEK is stored wrapped twice (crypto/wrapped-dek.ts): under the instance's root key, then under the
 * instance's own key (`i-<uuid>`, in the same backend), which is created with the instance and destroyed when
 * it is reclaimed. DEKs written before instance keys existed have only the root-key wrap until
 * `addInstanceLayer` (the instance-key migration job) gives them the second.
 *
 * Key lifecycle (issue "customer-managed root keys"): plaintext DEKs stay cached at most the cache TTL, so a
 * root key disabled in its backend stops every secret-touching call within that TTL; as soon as any call sees
 * the key disabled or destroyed, every cached DEK under that root key is dropped at once.
 */
import { AbortedError, AlreadyExistsError, DecryptionError, RootKeyError } from "../domain/errors.js";
import { instanceName } from "../domain/names.js";
import type { Clock, DekRecord, InstanceRecord, Repositories } from "../domain/ports.js";
import type { RootKeyBackend, RootKeyView } from "../domain/rootkey.js";
import { formatRootKeyRef, instanceKeyId } from "../domain/rootkey-id.js";
import { generateDek, newDekId, zero } from "./dek.js";
import { DekCache } from "./dekcache.js";
import { hasInstanceLayer, unwrapDek, unwrapStoredDek, wrapDek, wrapInstanceLayer } from "./wrapped-dek.js";

/** A plaintext DEK lent to one operation; call `release()` when done so the copy is zeroed. */
export interface LentDek {
  id: string;
  key: Buffer;
  /** Encryptions the DEK had made when it was read (NIST SP 800-38D §8.3 bookkeeping). */
  encryptionCount: number;
  release(): void;
}

/** What GetInstance shows about an instance's root key. */
export interface RootKeyStatus {
  /** undefined when the backend could not be asked. */
  state?: RootKeyView;
  currentVersion: number;
}

type InstanceKey = Pick<InstanceRecord, "id" | "rootKeyBackend" | "rootKeyId">;

const rootKeyRef = (i: Pick<InstanceRecord, "rootKeyBackend" | "rootKeyId">) => formatRootKeyRef(i.rootKeyBackend, i.rootKeyId);

/** How long a root key's described state is reused, ms: GetInstance/ListInstances should not hit an HSM per row. */
const DESCRIBE_TTL_MS = 5_000;

/** DEKs of instances, wrapped by the instance's root key. */
export class Keyring {
  /** Root key -> ids of DEKs cached under it, to drop them all when the key is seen disabled. */
  private readonly cachedByRootKey = new Map<string, Set<string>>();
  private readonly described = new Map<string, { at: number; status: RootKeyStatus }>();
  /** Unwraps sent to root-key backends since start (the DEK cache bench reads it). */
  unwrapCount = 0;

  constructor(
    private readonly backends: ReadonlyMap<string, RootKeyBackend>,
    private readonly cache: DekCache,
    private readonly clock: Clock,
  ) {}

  /** The backend named `name`. @throws RootKeyError ROOT_KEY_NOT_FOUND when no such backend is configured. */
  backend(name: string): RootKeyBackend {
    const b = this.backends.get(name);
    // A configuration problem of this replica, not a property of the key: retryable once it is fixed.
    if (!b) throw new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `root-key backend ${JSON.stringify(name)} is not configured on this server`, { root_key: name });
    return b;
  }

  /** Names of the configured backends. */
  backendNames(): string[] {
    return [...this.backends.keys()];
  }

  /**
   * Makes a new 256-bit DEK for an instance and wraps it with the instance's root key.
   * @param existing true for an instance that already exists (a rotation), false while creating one.
   * @returns the DEK row to insert (wrapped key only).
   * @throws RootKeyError ROOT_KEY_UNAVAILABLE (existing) or the backend's reason (new instance).
   */
  async newDek(repos: Repositories, instance: InstanceKey, existing: boolean): Promise<DekRecord> {
    const backend = this.backend(instance.rootKeyBackend);
    const dek = generateDek();
    try {
      const context = { instance: instanceName(instance.id) };
      const wrap = () => wrapDek(backend, instance.rootKeyId, dek, context);
      // For an existing instance a refused key is "your key is off" (ROOT_KEY_UNAVAILABLE); for a new one the
      // backend's own reason tells the operator what to fix.
      const wrapped = existing ? await this.translate(instance, wrap) : await withRetries(wrap);
      if (existing) await this.requireInstanceKey(repos, instance);
      else await this.createInstanceKey(instance);
      const layered = await this.onInstanceKey(instance, () => wrapInstanceLayer(backend, instanceKeyId(instance.id), wrapped.jwe, context)).catch(async (err: unknown) => {
        // A new instance's key that wraps nothing is removed again (best effort; it opens nothing either way).
        if (!existing) await this.destroyInstanceKey(instance).catch(() => undefined);
        throw err;
      });
      return {
        id: newDekId(),
        instanceId: instance.id,
        wrappedKey: layered.jwe,
        rootKeyVersion: wrapped.version,
        instanceKeyVersion: layered.version,
        state: "ACTIVE",
        encryptionCount: 0,
        createTime: this.clock.now(),
      };
    } finally {
      zero(dek);
    }
  }

  /** Instance keys seen present (so `requireInstanceKey` asks the backend once per instance and process). */
  private readonly instanceKeys = new Set<string>();

  /**
   * Creates the key of a new instance (CreateInstance: a fresh UUID, so nobody else creates it). Not retried
   * after a timeout: on PKCS#11 a second create could leave two objects with one label.
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE
   */
  private async createInstanceKey(instance: InstanceKey): Promise<void> {
    await withTimeout(this.backend(instance.rootKeyBackend).createKey(instanceKeyId(instance.id)));
    this.instanceKeys.add(this.instanceKeyRef(instance));
  }

  /**
   * Makes sure the instance key of an existing instance is there before something is wrapped under it. It is
   * created only for an instance none of whose DEKs has the instance layer yet (one from before instance keys):
   * a key that is missing while layered DEKs exist was destroyed (the instance was reclaimed, e.g. a restored
   * backup) or lives in another keystore or token, and making a new one would hide that (PKCS#11 deletes
   * destroyed keys, so "missing" cannot be told from "never made").
   * @throws RootKeyError ROOT_KEY_UNAVAILABLE (instance key destroyed, disabled or missing) | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE
   */
  async requireInstanceKey(repos: Repositories, instance: InstanceKey): Promise<void> {
    const ref = this.instanceKeyRef(instance);
    if (this.instanceKeys.has(ref)) return;
    const backend = this.backend(instance.rootKeyBackend);
    const keyId = instanceKeyId(instance.id);
    try {
      const d = await withRetries(() => backend.describe(keyId));
      if (d.state !== "ENABLED") throw new RootKeyError(d.state === "DISABLED" ? "ROOT_KEY_DISABLED" : "ROOT_KEY_DESTROYED", `instance key ${ref} is ${d.state}`, { root_key: ref });
    } catch (err) {
      const missing = err instanceof RootKeyError && err.reason === "ROOT_KEY_NOT_FOUND";
      if (!missing || (await repos.deks.getNewestInstanceKeyVersion(instance.id)) !== undefined) throw this.instanceKeyUnavailable(instance, err);
      await this.createInstanceKey(instance).catch((e: unknown) => {
        // Another replica made it meanwhile (the local keystore says so; see the migration's lease for PKCS#11).
        if (!(e instanceof AlreadyExistsError)) throw e;
      });
    }
    this.instanceKeys.add(ref);
  }

  /**
   * Destroys the instance's own key in its backend (crypto-shredding at reclamation): every wrapped DEK of the
   * instance, in this database or in any copy of it, can no longer be opened. Idempotent. The caller drops the
   * plaintext DEKs from the cache (`forget`).
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE (the caller retries later)
   */
  async destroyInstanceKey(instance: InstanceKey): Promise<void> {
    this.instanceKeys.delete(this.instanceKeyRef(instance));
    await withRetries(() => this.backend(instance.rootKeyBackend).destroyKey(instanceKeyId(instance.id)));
  }

  /**
   * Gives a DEK written before instance keys existed the instance layer (the migration's one step). Uses only the
   * instance key, not the root key, so it works while a customer's root key is disabled.
   * @returns false when the DEK had the layer already or changed meanwhile (compare-and-set on the wrapped key).
   * @throws RootKeyError ROOT_KEY_UNAVAILABLE when the instance key is gone (see `requireInstanceKey`)
   */
  async addInstanceLayer(repos: Repositories, instance: InstanceKey, record: DekRecord): Promise<boolean> {
    if (record.instanceId !== instance.id) throw new DecryptionError();
    if (hasInstanceLayer(record.wrappedKey)) return false;
    await this.requireInstanceKey(repos, instance);
    const backend = this.backend(instance.rootKeyBackend);
    const layered = await this.onInstanceKey(instance, () => wrapInstanceLayer(backend, instanceKeyId(instance.id), record.wrappedKey, { instance: instanceName(instance.id) }));
    return repos.deks.rewrap(record.id, record.wrappedKey, layered.jwe, record.rootKeyVersion, layered.version);
  }

  /** Runs a call that uses the instance key; a refused instance key becomes ROOT_KEY_UNAVAILABLE naming it. */
  private async onInstanceKey<T>(instance: InstanceKey, fn: () => Promise<T>): Promise<T> {
    try {
      return await withRetries(fn);
    } catch (err) {
      throw keyOff(err) ? this.instanceKeyUnavailable(instance, err) : err;
    }
  }

  /** ROOT_KEY_UNAVAILABLE for the instance key (DISABLED, DESTROYED or NOT_FOUND, from `cause`). */
  private instanceKeyUnavailable(instance: InstanceKey, cause: unknown): RootKeyError {
    const ref = this.instanceKeyRef(instance);
    this.instanceKeys.delete(ref);
    const state = keyOff(cause) ?? "NOT_FOUND";
    const name = instanceName(instance.id);
    return new RootKeyError(
      "ROOT_KEY_UNAVAILABLE",
      state === "DISABLED"
        ? `the instance key ${ref} of ${name} is disabled; enable it in its backend to restore access`
        : `the instance key ${ref} of ${name} is gone from its backend (${state}): the instance was reclaimed, or this server uses another keystore or token than the one holding it`,
      { root_key: ref, root_key_state: state, resource: name },
      cause,
    );
  }

  /** `<backend>/i-<uuid>`: where the instance's own key lives. */
  instanceKeyRef(instance: InstanceKey): string {
    return formatRootKeyRef(instance.rootKeyBackend, instanceKeyId(instance.id));
  }

  /**
   * Opens a stored wrapped DEK: the instance layer (when present) with the instance key, then the root-key wrap.
   * A missing, destroyed or disabled instance key is ROOT_KEY_UNAVAILABLE naming it.
   */
  private async openStored(instance: InstanceKey, wrappedKey: string): Promise<Buffer> {
    const context = { instance: instanceName(instance.id) };
    try {
      return await unwrapStoredDek(this.backend(instance.rootKeyBackend), wrappedKey, context);
    } catch (err) {
      const onInstanceKey = err instanceof RootKeyError && err.metadata.root_key === this.instanceKeyRef(instance);
      if (onInstanceKey && keyOff(err)) {
        throw this.instanceKeyUnavailable(instance, err);
      }
      throw err;
    }
  }



  /**
   * Proves the service may use a root key for an instance (CreateInstance with a customer-managed key): wraps
   * a throwaway DEK and unwraps it again.
   * @throws RootKeyError NOT_FOUND | DISABLED | DESTROYED | ACCESS_DENIED | BACKEND_UNAVAILABLE
   */
  async probe(instance: InstanceKey): Promise<void> {
    const backend = this.backend(instance.rootKeyBackend);
    const dek = generateDek();
    try {
      const context = { instance: instanceName(instance.id) };
      const wrapped = await withRetries(() => wrapDek(backend, instance.rootKeyId, dek, context));
      const back = await withRetries(() => unwrapDek(backend, wrapped.jwe, context));
      const same = back.equals(dek);
      zero(back);
      if (!same) throw new DecryptionError("the root key did not unwrap what it wrapped");
    } finally {
      zero(dek);
    }
  }

  /**
   * Lends the instance's active DEK for sealing new material.
   * @throws DecryptionError when the instance has no active DEK; RootKeyError ROOT_KEY_UNAVAILABLE when its
   *         root key is disabled or destroyed.
   */
  async activeDek(repos: Repositories, instance: InstanceRecord): Promise<LentDek> {
    // Locked for the caller's transaction (see DekRepository.getActive).
    const record = await repos.deks.getActive(instance.id, true);
    if (!record) throw new DecryptionError(`instance ${instanceName(instance.id)} has no active data encryption key`);
    return this.lend(record, instance);
  }

  /**
   * Returns a resolver from DEK id to a copy of the plaintext DEK, for opening material of `instance`.
   * Every copy handed out is zeroed by `releaseAll()`.
   */
  resolver(repos: Repositories, instance: InstanceRecord): { resolve: (dekId: string) => Promise<Buffer>; releaseAll: () => void } {
    // One lookup and one lent copy per DEK id for the resolver's lifetime: an export batch opens hundreds of
    // values sealed with the same DEK.
    const lent = new Map<string, Promise<LentDek>>();
    return {
      resolve: async (dekId: string) => {
        let dek = lent.get(dekId);
        if (!dek) {
          dek = (async () => {
            const record = await repos.deks.get(dekId);
            // A DEK of another instance must never open this instance's material.
            if (!record || record.instanceId !== instance.id) throw new DecryptionError();
            return this.lend(record, instance);
          })();
          lent.set(dekId, dek);
          // A failed lookup is not remembered: a caller may re-read its row and retry.
          dek.catch(() => lent.delete(dekId));
        }
        return (await dek).key;
      },
      releaseAll: () => {
        for (const d of lent.values()) void d.then((x) => x.release(), () => undefined);
      },
    };
  }

  /**
   * Rewraps one DEK with the newest version of the instance's root key, unless it already is (a no-op then,
   * as Vault's transit rewrap). Old versions keep unwrapping, so this can run online.
   * @returns REWRAPPED by this call, CURRENT (already at the newest version), or LOST (the row changed meanwhile).
   */
  private async rewrap(repos: Repositories, instance: InstanceRecord, record: DekRecord): Promise<"REWRAPPED" | "CURRENT" | "LOST"> {
    const backend = this.backend(instance.rootKeyBackend);
    const current = await this.translate(instance, () => backend.describe(instance.rootKeyId));
    if (record.rootKeyVersion >= current.currentVersion) return "CURRENT";
    const context = { instance: instanceName(instance.id) };
    const dek = await this.translate(instance, () => this.openStored(instance, record.wrappedKey));
    try {
      const wrapped = await this.translate(instance, () => wrapDek(backend, instance.rootKeyId, dek, context));
      await this.requireInstanceKey(repos, instance);
      const layered = await this.onInstanceKey(instance, () => wrapInstanceLayer(backend, instanceKeyId(instance.id), wrapped.jwe, context));
      return (await repos.deks.rewrap(record.id, record.wrappedKey, layered.jwe, wrapped.version, layered.version)) ? "REWRAPPED" : "LOST";
    } finally {
      zero(dek);
    }
  }

  /**
   * Rewraps every DEK of the instance with the newest root key version (RewrapDataKeys).
   * @returns how many DEKs this call rewrapped and how many the instance has.
   * @throws RootKeyError ROOT_KEY_UNAVAILABLE when the root key is off.
   */
  async rewrapAll(repos: Repositories, instance: InstanceRecord): Promise<{ rewrapped: number; total: number }> {
    const deks = await repos.deks.listForInstance(instance.id);
    let rewrapped = 0;
    for (let dek of deks) {
      // A lost compare-and-set means another writer changed the row meanwhile (another rewrap, or the
      // instance-key migration, which keeps the old root key version): read it again and go on until the row
      // is at the newest version, so "every DEK rewrapped" holds when this returns.
      for (let attempt = 0; ; attempt++) {
        const outcome = await this.rewrap(repos, instance, dek);
        if (outcome !== "LOST") {
          if (outcome === "REWRAPPED") rewrapped++;
          break;
        }
        const fresh = await repos.deks.get(dek.id);
        if (!fresh) break; // deleted meanwhile (rotation finished): nothing to rewrap
        if (attempt >= 5) throw new AbortedError("CONCURRENT_CONFLICT", "a data key kept changing while it was being rewrapped; retry RewrapDataKeys", { resource: instanceName(instance.id) });
        dek = fresh;
      }
    }
    return { rewrapped, total: deks.length };
  }

  /**
   * The root key's state and newest version, cached for a few seconds; undefined state when the backend
   * could not be asked. Seeing it disabled or destroyed drops the cached DEKs under it.
   */
  async status(instance: Pick<InstanceRecord, "rootKeyBackend" | "rootKeyId">): Promise<RootKeyStatus> {
    const ref = rootKeyRef(instance);
    const hit = this.described.get(ref);
    const now = this.clock.now().getTime();
    if (hit && now - hit.at < DESCRIBE_TTL_MS) return hit.status;
    let status: RootKeyStatus;
    try {
      const d = await this.backend(instance.rootKeyBackend).describe(instance.rootKeyId);
      status = { state: d.state, currentVersion: d.currentVersion };
    } catch (err) {
      status = { state: keyOff(err), currentVersion: 0 };
    }
    if (status.state !== undefined && status.state !== "ENABLED") this.dropRootKey(ref);
    this.described.set(ref, { at: now, status });
    return status;
  }

  private async lend(record: DekRecord, instance: InstanceRecord): Promise<LentDek> {
    const ref = rootKeyRef(instance);
    // The cache hands out a copy that this operation owns, so an eviction never zeroes a key in use.
    const key = await this.translate(instance, () =>
      this.cache.getOrLoad(record.id, () => {
        this.unwrapCount++;
        return this.openStored(instance, record.wrappedKey);
      }),
    );
    let ids = this.cachedByRootKey.get(ref);
    if (!ids) this.cachedByRootKey.set(ref, (ids = new Set()));
    ids.add(record.id);
    // Keep the index no larger than what the cache can hold: drop ids it has evicted.
    if (ids.size > 2 * this.cache.max) for (const id of ids) if (!this.cache.has(id)) ids.delete(id);
    return { id: record.id, key, encryptionCount: record.encryptionCount, release: () => zero(key) };
  }

  /**
   * Runs a backend call for an existing instance. A disabled or destroyed root key becomes the contract's
   * ROOT_KEY_UNAVAILABLE (FAILED_PRECONDITION) and drops every cached DEK under that key.
   */
  private async translate<T>(instance: InstanceKey, fn: () => Promise<T>): Promise<T> {
    try {
      return await withRetries(fn);
    } catch (err) {
      const state = keyOff(err);
      if (state) {
        const ref = rootKeyRef(instance);
        this.dropRootKey(ref);
        this.described.delete(ref);
        const name = instanceName(instance.id);
        const messages = {
          DISABLED: `the root key ${ref} of instance ${name} is disabled; enable it in its backend to restore access`,
          DESTROYED: `the root key ${ref} of instance ${name} (or the version that wrapped its keys) was destroyed; the instance's data cannot be recovered`,
          NOT_FOUND: `the root key ${ref} of instance ${name} cannot be found in its backend: it was destroyed (then the data cannot be recovered), or this server is connected to another token or keystore than the one holding it`,
        };
        throw new RootKeyError("ROOT_KEY_UNAVAILABLE", messages[state], { root_key: ref, root_key_state: state, resource: name }, err);
      }
      throw err;
    }
  }

  /** Drops (and zeroes) every cached DEK wrapped under root key `ref`. */
  private dropRootKey(ref: string): void {
    const ids = this.cachedByRootKey.get(ref);
    if (!ids) return;
    for (const id of ids) this.cache.delete(id);
    this.cachedByRootKey.delete(ref);
  }

  /** Drops DEKs from the cache (zeroing them), e.g. once they were destroyed by a reclamation or rotation. */
  forget(dekIds: string[]): void {
    for (const id of dekIds) {
      this.cache.delete(id);
      for (const ids of this.cachedByRootKey.values()) ids.delete(id);
    }
  }

  /** Empties the DEK cache (zeroing every key), e.g. at shutdown. */
  clear(): void {
    this.cache.clear();
    this.cachedByRootKey.clear();
  }
}

/** The state a refused key is in, when `err` says it is off (disabled, destroyed or unknown); else undefined. */
function keyOff(err: unknown): "DISABLED" | "DESTROYED" | "NOT_FOUND" | undefined {
  if (!(err instanceof RootKeyError)) return undefined;
  return ({ ROOT_KEY_DISABLED: "DISABLED", ROOT_KEY_DESTROYED: "DESTROYED", ROOT_KEY_NOT_FOUND: "NOT_FOUND" } as const)[err.reason as "ROOT_KEY_DISABLED"];
}

/** Bounded retries of a backend call whose backend was unreachable: 3 attempts, 50 ms then 200 ms apart. */
const RETRY_DELAYS_MS = [50, 200];
/** A backend call that has not answered after this long is abandoned as unreachable. */
const CALL_TIMEOUT_MS = 10_000;

async function withRetries<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await withTimeout(fn());
    } catch (err) {
      const retryable = err instanceof RootKeyError && err.reason === "ROOT_KEY_BACKEND_UNAVAILABLE";
      if (!retryable || attempt >= RETRY_DELAYS_MS.length) throw err;
      await new Promise((r) => setTimeout(r, RETRY_DELAYS_MS[attempt]));
    }
  }
}

function withTimeout<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let timedOut = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `the root-key backend did not answer within ${CALL_TIMEOUT_MS} ms`));
    }, CALL_TIMEOUT_MS);
  });
  // A key that arrives after the caller gave up has no owner left to zero it: zero it here.
  p.then((late) => timedOut && Buffer.isBuffer(late) && late.fill(0), () => undefined);
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A root key the database's DEKs are wrapped under that this server could not find (see `checkRootKeysInUse`). */
export interface RootKeyProblem {
  backend: string;
  keyId: string;
  /** `<backend>/<keyId>`, as operators name it. */
  ref: string;
  /** Why: the backend is not configured here, or does not know the key, or could not be asked. */
  problem: "BACKEND_NOT_CONFIGURED" | "NOT_FOUND" | "UNCHECKED";
  /** The backend's message, for UNCHECKED. */
  detail?: string;
}

/**
 * At start: are the root keys the database's DEKs are wrapped under (`inUse`, from `DekRepository.rootKeysInUse`)
 * present in this server's backends? A replica started with its own keystore against a shared database would
 * otherwise serve, and fail every call that opens data.
 *
 * @param authoritative names of backends that keep destroyed keys as tombstones (`local`): there, NOT_FOUND means
 *        the key was never in this backend. A backend that deletes destroyed keys (PKCS#11) cannot tell a
 *        crypto-shredded key from a wrong token, so its NOT_FOUND is only `unconfirmed`.
 * @returns `missing`: keys this server certainly cannot use (backend not configured, or NOT_FOUND in an
 *          authoritative backend), which should stop the start; `unconfirmed`: the others that could not be found
 *          or asked, worth a warning. Never throws.
 */
export async function checkRootKeysInUse(
  backends: ReadonlyMap<string, RootKeyBackend>,
  inUse: readonly { backend: string; keyId: string }[],
  authoritative: ReadonlySet<string>,
): Promise<{ missing: RootKeyProblem[]; unconfirmed: RootKeyProblem[] }> {
  const missing: RootKeyProblem[] = [];
  const unconfirmed: RootKeyProblem[] = [];
  for (const { backend, keyId } of inUse) {
    const ref = `${backend}/${keyId}`;
    const b = backends.get(backend);
    if (!b) {
      missing.push({ backend, keyId, ref, problem: "BACKEND_NOT_CONFIGURED" });
      continue;
    }
    try {
      await b.describe(keyId);
    } catch (err) {
      const notFound = err instanceof RootKeyError && err.reason === "ROOT_KEY_NOT_FOUND";
      if (notFound && authoritative.has(backend)) missing.push({ backend, keyId, ref, problem: "NOT_FOUND" });
      else unconfirmed.push({ backend, keyId, ref, problem: notFound ? "NOT_FOUND" : "UNCHECKED", ...(notFound ? {} : { detail: (err as Error).message }) });
    }
  }
  return { missing, unconfirmed };
}
