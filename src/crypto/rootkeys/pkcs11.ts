/**
 * `pkcs11` root-key backend: the root key (KEK) is a non-extractable AES-256 secret-key object inside a PKCS#11
 * token (SoftHSM2 in tests and CI, any PKCS#11 HSM in production) and the HSM performs the AES key wrap
 * (RFC 3394, CKM_AES_KEY_WRAP), so the KEK never enters this process. Token objects and the HSM key wrap are
 * ./pkcs11/objects.ts; sessions, timeouts, reconnects and error mapping ./pkcs11/calls.ts; the wrapped-DEK JWE
 * around the key wrap is ../wrapped-dek.ts. The current version of a key is the highest present.
 *
 * ## States (how disable and destroy are represented)
 * - ENABLED: CKA_WRAP and CKA_UNWRAP both true.
 * - DISABLED: CKA_WRAP and CKA_UNWRAP set to false with C_SetAttributeValue. Both are modifiable attributes
 *   (v2.40 base, "Common key attributes" footnote 8) and SoftHSM2 2.6 allows it AND enforces it inside the
 *   token (C_WrapKey/C_UnwrapKey then fail with CKR_KEY_FUNCTION_NOT_PERMITTED, checked by the tests), so a
 *   disable made with any tool (ours, pkcs11-tool, the HSM vendor's) is honoured even by a client that skips our
 *   own attribute check. A root key object that is extractable or not sensitive also reports DISABLED and is
 *   refused (unless `allowExtractableRootKeys`, for interop tests only).
 * - DESTROYED: the object is gone (C_DestroyObject). A version missing while other versions of the key exist
 *   is ROOT_KEY_DESTROYED; with no version left the key id cannot be told apart from one that never existed
 *   (PKCS#11 keeps no tombstones), so it is ROOT_KEY_NOT_FOUND.
 *
 * ## Threads and timeouts
 * pkcs11js calls are synchronous on the JS thread except the `...Async` variants, which run on the libuv thread
 * pool. The HSM crypto (C_WrapKey, C_UnwrapKey, C_GenerateKey) uses those, so a hung HSM call fails the caller
 * after `callTimeoutMs`; at most `sessionPoolSize` threads can be stuck (keep UV_THREADPOOL_SIZE above it). The
 * cheap calls (C_FindObjects, C_GetAttributeValue, C_CreateObject, C_Login...) cannot be interrupted: they
 * block the event loop while they run, and one slower than `callTimeoutMs` is logged. For network HSMs, also
 * set the vendor client's own timeouts. Measured on SoftHSM2 2.6.1 (2 cores): ~1,500 wraps or unwraps/s at
 * concurrency 1, ~2,200/s at 4-16.
 *
 * ## Secrets
 * The PIN is kept in memory only for logging in again after a reconnect; it is never logged nor put in an error
 * message. CEKs are zeroed after use; key bytes are never logged. Copies that pkcs11js and the module make in
 * native memory cannot be zeroed from here.
 */
import { AlreadyExistsError, DecryptionError, RootKeyError } from "../../domain/errors.js";
import { checkRootKeyId, isRootKeyId, isRootKeyVersion, ROOT_KEY_ID_RULE } from "../../domain/rootkey-id.js";
import {
  WRAPPED_KEY_BYTES,
  WRAPPED_KEY_INPUT_BYTES,
  type KeyWrapResult,
  type RootKeyBackend,
  type RootKeyDescription,
  type RootKeyInfo,
} from "../../domain/rootkey.js";
import { PKCS11_BACKEND, TokenCalls, type KeyRef } from "./pkcs11/calls.js";
import { acquireModule, ck, ckrName, ckrOf, releaseModule } from "./pkcs11/module.js";
import {
  collectVersions,
  findAll,
  generateKey,
  hsmUnwrap,
  hsmWrap,
  rootKeyTemplate,
  type TokenSession,
  type VersionObject,
} from "./pkcs11/objects.js";
import { checkOpenOptions, type Pkcs11OpenOptions } from "./pkcs11/options.js";
import { assertLoggedIn, TokenKeys } from "./pkcs11/versions.js";

export type { Pkcs11OpenOptions };

/** Root keys in a PKCS#11 token; see the module comment for states, threads and timeouts. */
export class Pkcs11RootKeyBackend implements RootKeyBackend {
  readonly name = PKCS11_BACKEND;
  /** Label of the token the root keys live in. */
  readonly tokenLabel: string;

  readonly #calls: TokenCalls;
  readonly #keys: TokenKeys;
  #closed = false;
  /** Serializes this process's key-management calls (no lock exists across processes in PKCS#11). */
  #mutations: Promise<unknown> = Promise.resolve();

  private constructor(calls: TokenCalls, allowExtractable: boolean) {
    this.#calls = calls;
    this.tokenLabel = calls.tokenLabel;
    this.#keys = new TokenKeys(calls.tokenLabel, allowExtractable, (keyId, version) => calls.meta(keyId, version));
  }

  /**
   * Loads the module (C_Initialize once per process), finds the token by label, opens one session and logs in,
   * so a wrong PIN or a missing token fails here rather than on the first request.
   *
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED (PIN refused or locked) | ROOT_KEY_BACKEND_UNAVAILABLE (module
   *         cannot be loaded or initialised, no token with that label, HSM unreachable); TypeError on bad options.
   * @example
   * const hsm = await Pkcs11RootKeyBackend.open({
   *   modulePath: "/usr/lib/softhsm/libsofthsm2.so", tokenLabel: "certmanager", pin: await readPinFile() });
   */
  static async open(opts: Pkcs11OpenOptions): Promise<Pkcs11RootKeyBackend> {
    const o = checkOpenOptions(opts);
    let entry;
    try {
      entry = acquireModule(opts.modulePath);
    } catch (err) {
      const code = ckrOf(err);
      const detail = code !== undefined ? ckrName(code) : err instanceof Error ? err.message : "error";
      throw new RootKeyError(
        "ROOT_KEY_BACKEND_UNAVAILABLE",
        `cannot load or initialise the PKCS#11 module ${opts.modulePath} (${detail}); check the module path and its configuration (for SoftHSM2, SOFTHSM2_CONF)`,
        { backend: PKCS11_BACKEND, token: o.tokenLabel },
        err,
      );
    }
    const calls = new TokenCalls(entry, o.tokenLabel, o.pin, o.sessionPoolSize, o.callTimeoutMs, o.logger);
    const backend = new Pkcs11RootKeyBackend(calls, o.allowExtractableRootKeys);
    try {
      await backend.check();
    } catch (err) {
      await backend.close();
      throw err;
    }
    return backend;
  }

  /**
   * RFC 3394 wrap of a 32-byte key in the HSM (C_WrapKey, CKM_AES_KEY_WRAP) under the current version of root
   * key `keyId`.
   *
   * @returns the version used and the 40 wrapped bytes.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a key that is not 32 bytes.
   * @example
   * const { version, wrapped } = await hsm.wrapKey("tenant-a", cek);
   */
  async wrapKey(keyId: string, key: Buffer): Promise<KeyWrapResult> {
    if (!Buffer.isBuffer(key) || key.length !== WRAPPED_KEY_INPUT_BYTES) throw new TypeError(`key must be a ${WRAPPED_KEY_INPUT_BYTES}-byte Buffer`);
    const ref = this.#ref(keyId);
    return this.#calls.run("wrap", ref, async (t) => {
      const v = this.#keys.resolve(t, ref, "wrap");
      return { version: v.version, wrapped: await hsmWrap(t, v.handle, key) };
    });
  }

  /**
   * RFC 3394 unwrap in the HSM (C_UnwrapKey into a short-lived session object whose value is read and destroyed).
   *
   * @returns the 32-byte key; the caller zeroes it.
   * @throws DecryptionError when the integrity check fails; RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED |
   *         ROOT_KEY_DISABLED | ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE for the key version itself.
   */
  async unwrapKey(keyId: string, version: number, wrapped: Buffer): Promise<Buffer> {
    const ref = this.#ref(keyId, version);
    if (!Buffer.isBuffer(wrapped) || wrapped.length !== WRAPPED_KEY_BYTES) throw new DecryptionError(undefined, new Error("wrapped key has the wrong size"));
    return this.#calls.run(
      "unwrap",
      ref,
      async (t) => hsmUnwrap(t, this.#keys.resolve(t, ref, "unwrap").handle, wrapped),
      (late) => late.fill(0),
    );
  }

  /**
   * Reports root key `keyId`: its current (highest) version and that version's state.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async describe(keyId: string): Promise<RootKeyDescription> {
    const ref = this.#ref(keyId);
    return this.#calls.run("describe", ref, async (t) => {
      const v = this.#keys.resolve(t, ref, "describe");
      return { backend: PKCS11_BACKEND, keyId, state: this.#keys.stateOf(v), currentVersion: v.version };
    });
  }

  /**
   * Generates version current+1 in the token (C_GenerateKey, CKM_AES_KEY_GEN, the template in
   * ./pkcs11/objects.ts) and makes it current; older versions keep unwrapping.
   *
   * Serialized within this process; two processes rotating the same key at once can create two objects with
   * the same version, which every call then refuses (ROOT_KEY_BACKEND_UNAVAILABLE naming the duplicate) until an
   * operator destroys one, so nothing is ever wrapped under an ambiguous version.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED (current version disabled) |
   *         ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async rotate(keyId: string): Promise<RootKeyDescription> {
    const ref = this.#ref(keyId);
    return this.#mutate("rotate", ref, async (t) => {
      const current = this.#keys.resolve(t, ref, "describe");
      if (this.#keys.stateOf(current) !== "ENABLED") {
        throw new RootKeyError("ROOT_KEY_DISABLED", `root key ${PKCS11_BACKEND}/${keyId} is disabled (version ${current.version}); enable it before rotating`, this.#calls.meta(keyId, current.version));
      }
      const next = current.version + 1;
      if (!isRootKeyVersion(next)) throw new RangeError(`root key ${PKCS11_BACKEND}/${keyId} has used its last version number; create a new key`);
      await generateKey(t, rootKeyTemplate(keyId, next));
      return { backend: PKCS11_BACKEND, keyId, state: "ENABLED" as const, currentVersion: next };
    });
  }

  /**
   * Cheap round trip for health checks: C_GetSessionInfo on a pooled session, which must be logged in
   * (CKS_RW_USER_FUNCTIONS). Reconnects once like every call.
   *
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async check(): Promise<void> {
    await this.#calls.run("check", undefined, async (t) => assertLoggedIn(t));
  }

  /**
   * Closes the pooled sessions (waiting up to `callTimeoutMs` for calls in flight) and releases the module
   * (C_Finalize when this was its last backend). Later calls fail with ROOT_KEY_BACKEND_UNAVAILABLE. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#mutations;
    const drained = await this.#calls.close();
    // A call still running in the module (timed out) makes C_Finalize unsafe: leave the module loaded then.
    releaseModule(this.#calls.entry, drained);
  }

  // ---- management (operator CLI and tests; with a real HSM the vendor's tools do the same) ----

  /**
   * Creates root key `keyId` as version 1 (C_GenerateKey in the token, non-extractable, sensitive).
   *
   * @throws AlreadyExistsError ROOT_KEY_ALREADY_EXISTS when any token object already has that label;
   *         TypeError on a malformed key id; RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async createKey(keyId: string): Promise<RootKeyInfo> {
    checkRootKeyId(keyId);
    return this.#mutate("createKey", { keyId }, async (t) => {
      // Private objects are invisible to a session that is not logged in: never conclude "absent" from that.
      assertLoggedIn(t);
      if (findAll(t.entry, t.session, [{ type: ck.CKA_LABEL, value: keyId }]).length > 0) {
        throw new AlreadyExistsError("ROOT_KEY_ALREADY_EXISTS", `${PKCS11_BACKEND}/${keyId}`, `root key ${PKCS11_BACKEND}/${keyId} already exists in token "${this.tokenLabel}" (an object with that label exists); choose another key id`);
      }
      await generateKey(t, rootKeyTemplate(keyId, 1));
      return this.#keys.info(t, keyId)!;
    });
  }

  /**
   * Enables or disables one version (`version`) or every version of root key `keyId` by setting CKA_WRAP and
   * CKA_UNWRAP (C_SetAttributeValue). Disabling every version also stops DEKs wrapped under older versions
   * from unwrapping. Callers must also empty their DEK caches for a disable to bite at once.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED (that version is gone) |
   *         ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE (e.g. CKR_ATTRIBUTE_READ_ONLY from the token).
   */
  async setEnabled(keyId: string, enabled: boolean, version?: number): Promise<RootKeyInfo> {
    if (typeof enabled !== "boolean") throw new TypeError("enabled must be a boolean");
    const ref = this.#ref(keyId, version);
    return this.#mutate("setEnabled", ref, async (t) => {
      for (const v of this.#keys.targets(t, ref)) {
        t.entry.pkcs11.C_SetAttributeValue(t.session, v.handle, [
          { type: ck.CKA_WRAP, value: enabled },
          { type: ck.CKA_UNWRAP, value: enabled },
        ]);
      }
      return this.#keys.info(t, keyId)!;
    });
  }

  /**
   * Destroys one version of root key `keyId` in the token (C_DestroyObject): terminal, DEKs wrapped under it can
   * never be unwrapped again (crypto-shredding). Destroying the last version removes the key id altogether.
   *
   * @returns the key after the change, or undefined when no version is left.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED (already destroyed) | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a bad version number.
   */
  async destroyVersion(keyId: string, version: number): Promise<RootKeyInfo | undefined> {
    if (!isRootKeyVersion(version)) throw new TypeError("version must be an integer >= 1");
    const ref = this.#ref(keyId, version);
    return this.#mutate("destroyVersion", ref, async (t) => {
      for (const v of this.#keys.targets(t, ref)) t.entry.pkcs11.C_DestroyObject(t.session, v.handle);
      return this.#keys.info(t, keyId);
    });
  }

  /**
   * Destroys every version of root key `keyId` (C_DestroyObject on each object). A key with no version in the
   * token (never created, or destroyed already) is left as it is.
   *
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a malformed id.
   */
  async destroyKey(keyId: string): Promise<void> {
    checkRootKeyId(keyId);
    await this.#mutate("destroyKey", { keyId }, async (t) => {
      // Logged in, or private objects would look absent and the key would survive.
      assertLoggedIn(t);
      for (const v of collectVersions(t, keyId)) t.entry.pkcs11.C_DestroyObject(t.session, v.handle);
    });
  }

  /**
   * Every root key in the token (AES-256 secret-key token objects whose label is a valid key id and whose
   * CKA_ID is a version number), sorted by key id. No key material.
   *
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async listKeys(): Promise<RootKeyInfo[]> {
    return this.#calls.run("listKeys", undefined, async (t) => {
      assertLoggedIn(t);
      const byKey = new Map<string, VersionObject[]>();
      for (const v of collectVersions(t, undefined)) byKey.set(v.keyId, [...(byKey.get(v.keyId) ?? []), v]);
      return [...byKey.keys()].sort().map((keyId) => this.#keys.infoOf(keyId, byKey.get(keyId)!));
    });
  }

  // ---- internals ----

  /** Runs a key-management call, serialized with the others of this process. */
  #mutate<T>(op: string, ref: KeyRef, fn: (t: TokenSession) => Promise<T>): Promise<T> {
    const run = () => this.#calls.run(op, ref, fn);
    const result = this.#mutations.then(run, run);
    this.#mutations = result.catch(() => undefined);
    return result;
  }

  /** Validates a key id from a caller; a malformed one cannot exist in the token. */
  #ref(keyId: string, version?: number): KeyRef {
    if (!isRootKeyId(keyId)) {
      const shown = String(keyId).slice(0, 80);
      throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key id "${shown}" is not a valid ${PKCS11_BACKEND} key id (${ROOT_KEY_ID_RULE}); fix the key id`, this.#calls.meta(shown));
    }
    if (version !== undefined && !isRootKeyVersion(version)) throw new TypeError("version must be an integer >= 1");
    return version === undefined ? { keyId } : { keyId, version };
  }
}
