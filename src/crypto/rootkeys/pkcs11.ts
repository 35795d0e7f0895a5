/**
 * `pkcs11` root-key backend (DESIGN.md "Root-key backends"): the root key (KEK) is a non-extractable AES-256
 * secret-key object inside a PKCS#11 token (SoftHSM2 in tests and CI, any PKCS#11 HSM in production) and the
 * HSM performs the AES key wrap (RFC 3394), so the KEK never enters this process.
 *
 * ## Root key model (token objects)
 * Root key `keyId` (`[a-z][a-z0-9-]{0,62}`) version N is one secret-key token object (PKCS#11 v2.40 base,
 * "Secret key objects"):
 * `CKA_CLASS=CKO_SECRET_KEY, CKA_KEY_TYPE=CKK_AES, CKA_VALUE_LEN=32, CKA_LABEL=<keyId>, CKA_ID=<N as ASCII
 * decimal, e.g. "1">, CKA_TOKEN=true, CKA_PRIVATE=true, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false,
 * CKA_WRAP=true, CKA_UNWRAP=true` (ENCRYPT/DECRYPT/SIGN/VERIFY/DERIVE false: key wrap is all it is for).
 * The current version is the highest present; `kid` = `pkcs11/<keyId>/<N>`. Objects with another key type or
 * size, or a CKA_ID that is not a decimal version, are not root-key versions and are ignored.
 *
 * ## States (how disable and destroy are represented)
 * - ENABLED: CKA_WRAP and CKA_UNWRAP both true.
 * - DISABLED: CKA_WRAP and CKA_UNWRAP set to false with C_SetAttributeValue. Both are modifiable attributes
 *   (v2.40 base, "Common key attributes" footnote 8) and SoftHSM2 2.6 allows it AND enforces it inside the
 *   token (C_WrapKey/C_UnwrapKey then fail with CKR_KEY_FUNCTION_NOT_PERMITTED, checked by the tests), so a
 *   disable made with any tool (ours, pkcs11-tool, the HSM vendor's) is honoured even by a client that skips our
 *   own attribute check. Re-enabling sets them back. A root key object that is extractable or not sensitive
 *   also reports DISABLED and is refused (unless `allowExtractableRootKeys`, for interop tests only).
 * - DESTROYED: the object is gone (C_DestroyObject). A version missing while other versions of the key exist
 *   is ROOT_KEY_DESTROYED; with no version left the key id cannot be told apart from one that never existed
 *   (PKCS#11 keeps no tombstones), so it is ROOT_KEY_NOT_FOUND.
 *
 * ## Wrapped DEK (the same JWE as `local`, RFC 7516 compact, RFC 7518 §4.4 A256KW + §5.3 A256GCM)
 * Protected header `{"alg":"A256KW","enc":"A256GCM","kid":"pkcs11/<keyId>/<N>","cm_instance":"<instance>"}`
 * (field order as node-jose writes local's). A random 32-byte CEK is drawn in Node, imported as a session
 * object (CKA_TOKEN=false, extractable, not sensitive), wrapped in the HSM with CKM_AES_KEY_WRAP (RFC 3394,
 * default IV A6A6A6A6A6A6A6A6, 40 bytes out) under the root key, and destroyed; the DEK is the JWE plaintext,
 * encrypted in Node with AES-256-GCM under the CEK with AAD = ASCII(BASE64URL(protected header)). Unwrap is the
 * reverse: C_UnwrapKey into a session object, read CKA_VALUE, destroy it, GCM-open. node-jose opens what this
 * writes with the same key material, and vice versa (test/unit/crypto.pkcs11.test.ts).
 *
 * ## Sessions, reconnect, timeouts
 * - Cryptoki is initialised once per process per module file (ref-counted registry, ./pkcs11/module.ts) with
 *   CKF_OS_LOCKING_OK; C_Finalize when the last backend on that module closes.
 * - A pool of at most `sessionPoolSize` logged-in RW sessions (./pkcs11/pool.ts); each call borrows one.
 * - When a call fails with CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_TOKEN_NOT_PRESENT,
 *   CKR_DEVICE_REMOVED, CKR_CRYPTOKI_NOT_INITIALIZED or CKR_USER_NOT_LOGGED_IN, the pool is dropped, the slot is
 *   found again by token label (slot ids change), the library re-initialised if needed, the user logged in again,
 *   and the call retried ONCE; a second failure is ROOT_KEY_BACKEND_UNAVAILABLE (retryable by the caller).
 * - Timeouts: pkcs11js calls are synchronous on the JS thread except the `...Async` variants, which run on the
 *   libuv thread pool. The HSM crypto (C_WrapKey, C_UnwrapKey, C_GenerateKey) uses those, so a hung HSM call
 *   fails the caller after `callTimeoutMs` with ROOT_KEY_BACKEND_UNAVAILABLE; its session stays out of the pool
 *   until the native call returns (so at most `sessionPoolSize` threads can be stuck; keep UV_THREADPOOL_SIZE
 *   above it). Waiting for a free session is bounded by `callTimeoutMs` too. The cheap calls (C_FindObjects,
 *   C_GetAttributeValue, C_CreateObject, C_OpenSession, C_Login...) cannot be interrupted: they block the event
 *   loop while they run; an operation slower than `callTimeoutMs` is logged as a warning. For network HSMs, also
 *   set the vendor client's own timeouts. Running every call in a worker thread would bound those too; not done,
 *   because SoftHSM answers them in microseconds and the DEK cache keeps unwraps rare. If something else in the
 *   process initialised the module first (maybe without CKF_OS_LOCKING_OK, i.e. without locks), every call stays
 *   on the JS thread: correct, but then only the wait for a session is bounded.
 * - Measured on SoftHSM2 2.6.1 (2 cores): ~1,500 wraps or unwraps/s at concurrency 1, ~2,200/s at 4-16.
 *
 * ## Secrets
 * The PIN is kept in memory only for logging in again after a reconnect; it is never logged nor put in an error
 * message. CEKs are zeroed after use; key bytes are never logged. Copies that pkcs11js and the module make in
 * native memory cannot be zeroed from here.
 */
import { randomBytes } from "node:crypto";
import { endianness } from "node:os";

import type { Logger } from "pino";
import type { Handle, Template } from "pkcs11js";

import { AlreadyExistsError, DomainError, RootKeyError } from "../../domain/errors.js";
import type { RootKeyBackend, RootKeyDescription, RootKeyState, WrapContext } from "../../domain/rootkey.js";
import { ALG_A256KW, ENC_A256GCM, GCM_IV_BYTES, assertAlgorithms, fail, splitCompact } from "../compact.js";
import { gcmOpen, gcmSeal } from "../fastjwe.js";
import { acquireModule, ck, CKS_RW_USER_FUNCTIONS, ckrName, ckrOf, releaseModule, type ModuleEntry } from "./pkcs11/module.js";
import { PoolClosedError, PoolTimeoutError, SessionPool, TokenNotFoundError, type Lease } from "./pkcs11/pool.js";

const BACKEND = "pkcs11";
const KEY_BYTES = 32;
const DEK_BYTES = 32;
/** RFC 3394 output for a 256-bit key: 32 bytes + the 64-bit integrity block. */
const WRAPPED_CEK_BYTES = 40;
const KEY_ID = /^[a-z][a-z0-9-]{0,62}$/;
const VERSION = /^[1-9][0-9]{0,8}$/;
const PKCS11_KID = /^pkcs11\/([a-z][a-z0-9-]{0,62})\/([1-9][0-9]{0,8})$/;
const INSTANCE_NAME = /^instances\/[A-Za-z0-9._~-]+$/;
const DEFAULT_POOL_SIZE = 4;
const DEFAULT_CALL_TIMEOUT_MS = 5_000;

/** The token or library lost our sessions: reconnect (new slot lookup, login) and retry once. */
const RECONNECT = new Set<number>([
  ck.CKR_SESSION_HANDLE_INVALID,
  ck.CKR_SESSION_CLOSED,
  ck.CKR_TOKEN_NOT_PRESENT,
  ck.CKR_DEVICE_REMOVED,
  ck.CKR_CRYPTOKI_NOT_INITIALIZED,
  ck.CKR_USER_NOT_LOGGED_IN,
]);
/** Of those, the ones after which the session itself is dead (not returned to the pool). */
const SESSION_DEAD = new Set<number>([
  ck.CKR_SESSION_HANDLE_INVALID,
  ck.CKR_SESSION_CLOSED,
  ck.CKR_TOKEN_NOT_PRESENT,
  ck.CKR_DEVICE_REMOVED,
  ck.CKR_CRYPTOKI_NOT_INITIALIZED,
]);
/** An object vanished between lookup and use (destroyed concurrently): look it up again, once. */
const RETRY_ONCE = new Set<number>([ck.CKR_OBJECT_HANDLE_INVALID, ck.CKR_KEY_HANDLE_INVALID]);
/** The token refused our user: ROOT_KEY_ACCESS_DENIED. */
const ACCESS = new Set<number>([
  ck.CKR_PIN_INCORRECT,
  ck.CKR_PIN_LOCKED,
  ck.CKR_PIN_EXPIRED,
  ck.CKR_PIN_INVALID,
  ck.CKR_PIN_LEN_RANGE,
  ck.CKR_USER_PIN_NOT_INITIALIZED,
  ck.CKR_USER_NOT_LOGGED_IN,
]);
/**
 * C_UnwrapKey results that mean "this ciphertext does not unwrap under this key". SoftHSM2 reports a failed
 * RFC 3394 integrity check as CKR_GENERAL_ERROR, so that one counts only while the session still answers.
 */
const UNWRAP_INTEGRITY = new Set<number>([
  ck.CKR_WRAPPED_KEY_INVALID,
  ck.CKR_WRAPPED_KEY_LEN_RANGE,
  ck.CKR_ENCRYPTED_DATA_INVALID,
  ck.CKR_ENCRYPTED_DATA_LEN_RANGE,
  ck.CKR_GENERAL_ERROR,
]);

/** Options of {@link Pkcs11RootKeyBackend.open}. */
export interface Pkcs11OpenOptions {
  /** PKCS#11 module file, e.g. `/usr/lib/softhsm/libsofthsm2.so`. */
  modulePath: string;
  /** CKA token label (CK_TOKEN_INFO.label, at most 32 bytes); the slot is found by it on every (re)connect. */
  tokenLabel: string;
  /** User PIN (CKU_USER). Never logged nor put in messages. */
  pin: string;
  /** Logged-in sessions kept open, 1..64 (default 4); at most this many HSM calls run at once. */
  sessionPoolSize?: number;
  /** Bound on waiting for a session and on each wrap/unwrap/generate call in the HSM, ms (default 5000). */
  callTimeoutMs?: number;
  /** Receives warnings (reconnects, timeouts, slow blocking calls); never given the PIN or key bytes. */
  logger?: Pick<Logger, "warn">;
  /**
   * Accept root key objects that are extractable or not sensitive. Default false: such a key could leave the
   * HSM, which defeats the backend, so it is refused as ROOT_KEY_DISABLED. Only the interop test sets it.
   */
  allowExtractableRootKeys?: boolean;
}

/** One version of a root key as `listKeys` reports it (no key material). */
export interface Pkcs11KeyVersionInfo {
  /** `pkcs11/<keyId>/<version>`. */
  kid: string;
  version: number;
  /** ENABLED or DISABLED (destroyed versions are gone from the token). */
  state: RootKeyState;
  /** True when the object's value could leave the token (CKA_EXTRACTABLE true or CKA_SENSITIVE false). */
  extractable: boolean;
}

/** A root key as `listKeys` and the management methods report it; `state` is the current version's. */
export interface Pkcs11KeyInfo extends RootKeyDescription {
  /** Versions present on the token, ascending. */
  versions: Pkcs11KeyVersionInfo[];
}

/** Which key (and version) a call is about, for lookups and error metadata. */
interface KeyRef {
  keyId: string;
  /** Undefined = the current version. */
  version?: number;
}

/** One root-key version object read from the token. */
interface VersionObject {
  handle: Handle;
  keyId: string;
  version: number;
  wrap: boolean;
  unwrap: boolean;
  extractable: boolean;
}

/** An HSM call outlived `callTimeoutMs`. */
class CallTimeoutError extends Error {}

/**
 * Root keys in a PKCS#11 token; see the module comment for the object model, states, JWE format, sessions,
 * reconnect and timeouts.
 */
export class Pkcs11RootKeyBackend implements RootKeyBackend {
  readonly name = BACKEND;
  /** Label of the token the root keys live in. */
  readonly tokenLabel: string;

  readonly #entry: ModuleEntry;
  readonly #pool: SessionPool;
  readonly #callTimeoutMs: number;
  readonly #logger: Pick<Logger, "warn"> | undefined;
  readonly #allowExtractable: boolean;
  #closed = false;
  /** Serializes this process's key-management calls (no lock exists across processes in PKCS#11). */
  #mutations: Promise<unknown> = Promise.resolve();

  private constructor(entry: ModuleEntry, opts: Required<Omit<Pkcs11OpenOptions, "logger" | "modulePath">> & Pick<Pkcs11OpenOptions, "logger">) {
    this.#entry = entry;
    this.tokenLabel = opts.tokenLabel;
    this.#pool = new SessionPool(entry, opts.tokenLabel, opts.pin, opts.sessionPoolSize);
    this.#callTimeoutMs = opts.callTimeoutMs;
    this.#logger = opts.logger;
    this.#allowExtractable = opts.allowExtractableRootKeys;
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
    let entry: ModuleEntry;
    try {
      entry = acquireModule(opts.modulePath);
    } catch (err) {
      const code = ckrOf(err);
      const detail = code !== undefined ? ckrName(code) : err instanceof Error ? err.message : "error";
      throw new RootKeyError(
        "ROOT_KEY_BACKEND_UNAVAILABLE",
        `cannot load or initialise the PKCS#11 module ${opts.modulePath} (${detail}); check the module path and its configuration (for SoftHSM2, SOFTHSM2_CONF)`,
        { backend: BACKEND, token: o.tokenLabel },
        err,
      );
    }
    const backend = new Pkcs11RootKeyBackend(entry, o);
    try {
      await backend.check();
    } catch (err) {
      await backend.close();
      throw err;
    }
    return backend;
  }

  /**
   * Wraps a DEK under the current version of root key `keyId`: JWE compact, A256KW + A256GCM, protected header
   * `{alg, enc, kid: "pkcs11/<keyId>/<version>", cm_instance}`; the RFC 3394 wrap of the random CEK happens in
   * the HSM (C_WrapKey, CKM_AES_KEY_WRAP).
   *
   * @param dek 32 bytes; not retained or zeroed.
   * @param context `instance` = `instances/{instance}`, bound into the authenticated header.
   * @returns the wrapped DEK.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a bad DEK size or context.
   * @example
   * const wrapped = await hsm.wrap(dek, "tenant-a", { instance: "instances/a" });
   */
  async wrap(dek: Buffer, keyId: string, context: WrapContext): Promise<string> {
    if (!Buffer.isBuffer(dek) || dek.length !== DEK_BYTES) throw new TypeError(`dek must be a ${DEK_BYTES}-byte Buffer`);
    checkContext(context);
    const ref = this.#ref(keyId);
    const cek = randomBytes(KEY_BYTES);
    try {
      const { version, encryptedKey } = await this.#run("wrap", ref, async (s) => {
        const v = this.#resolve(s, ref, "wrap");
        return { version: v.version, encryptedKey: await this.#hsmWrap(s, v.handle, cek) };
      });
      const header = { alg: ALG_A256KW, enc: ENC_A256GCM, kid: kidOf(keyId, version), cm_instance: context.instance };
      const protectedB64 = Buffer.from(JSON.stringify(header), "utf8").toString("base64url");
      const iv = randomBytes(GCM_IV_BYTES);
      const { ciphertext, tag } = gcmSeal(cek, protectedB64, iv, dek);
      return [protectedB64, encryptedKey, iv, ciphertext, tag].map((x) => (typeof x === "string" ? x : x.toString("base64url"))).join(".");
    } finally {
      cek.fill(0);
    }
  }

  /**
   * Unwraps a DEK made by {@link wrap} (or by any RFC 7516 library with the same key material): strict compact
   * parsing, `alg`/`enc` allow-list, exact header field set, `kid` names the root key and version,
   * `cm_instance` must equal `context.instance`; C_UnwrapKey (CKM_AES_KEY_WRAP) in the HSM, then AES-256-GCM.
   *
   * @returns the 32-byte DEK; the caller zeroes it.
   * @throws DecryptionError when the JWE is malformed, not from this backend, tampered, bound to another
   *         instance or wrapped under another key (one message for all, RFC 7516 §11.5); RootKeyError
   *         ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED | ROOT_KEY_DISABLED | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE for the key version itself.
   * @example
   * const dek = await hsm.unwrap(wrapped, { instance: "instances/a" });
   */
  async unwrap(jwe: string, context: WrapContext): Promise<Buffer> {
    checkContext(context);
    const parts = splitCompact(jwe);
    assertAlgorithms(parts, ALG_A256KW);
    const header = parts.header;
    // Exact field set, as local checks: nothing unexpected rides along in an authenticated header.
    if (Object.keys(header).sort().join(",") !== "alg,cm_instance,enc,kid") fail("unexpected wrapped DEK header");
    const m = typeof header.kid === "string" ? PKCS11_KID.exec(header.kid) : null;
    if (!m) fail("kid is not a pkcs11 root key");
    const ref: KeyRef = { keyId: m[1]!, version: Number(m[2]) };
    const cek = await this.#run(
      "unwrap",
      ref,
      async (s) => {
        const v = this.#resolve(s, ref, "unwrap");
        // Same order as local: key state first, then the binding. The header is authenticated by GCM below.
        if (header.cm_instance !== context.instance) fail("wrapped DEK belongs to another instance");
        return this.#hsmUnwrap(s, v.handle, parts.encryptedKey);
      },
      (late) => late.fill(0),
    );
    try {
      const dek = gcmOpen(cek, parts.protectedB64, parts.iv, parts.ciphertext, parts.tag);
      if (dek.length !== DEK_BYTES) {
        dek.fill(0);
        fail("unexpected DEK size");
      }
      return dek;
    } finally {
      cek.fill(0);
    }
  }

  /**
   * Reports root key `keyId`: its current (highest) version and that version's state.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async describe(keyId: string): Promise<RootKeyDescription> {
    const ref = this.#ref(keyId);
    return this.#run("describe", ref, async (s) => {
      const v = this.#resolve(s, ref, "describe");
      return { backend: BACKEND, keyId, state: this.#stateOf(v), currentVersion: v.version };
    });
  }

  /**
   * Generates version current+1 in the token (C_GenerateKey, CKM_AES_KEY_GEN, the template in the module
   * comment) and makes it current; older versions keep unwrapping.
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
    return this.#mutate(() =>
      this.#run("rotate", ref, async (s) => {
        const current = this.#resolve(s, ref, "describe");
        if (this.#stateOf(current) !== "ENABLED") {
          throw new RootKeyError("ROOT_KEY_DISABLED", `root key ${BACKEND}/${keyId} is disabled (version ${current.version}); enable it before rotating`, this.#meta(keyId, current.version));
        }
        const next = current.version + 1;
        await this.#generate(s, rootKeyTemplate(keyId, next));
        return { backend: BACKEND, keyId, state: "ENABLED" as const, currentVersion: next };
      }),
    );
  }

  /**
   * Cheap round trip for health checks: C_GetSessionInfo on a pooled session, which must be logged in
   * (CKS_RW_USER_FUNCTIONS). Reconnects once like every call.
   *
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async check(): Promise<void> {
    await this.#run("check", undefined, async (s) => {
      this.#assertLoggedIn(s);
    });
  }

  /**
   * Closes the pooled sessions (waiting up to `callTimeoutMs` for calls in flight) and releases the module
   * (C_Finalize when this was its last backend). Later calls fail with ROOT_KEY_BACKEND_UNAVAILABLE. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#mutations;
    const drained = await this.#pool.close(this.#callTimeoutMs);
    // A call still running in the module (timed out) makes C_Finalize unsafe: leave the module loaded then.
    releaseModule(this.#entry, drained);
  }

  // ---- management (operator CLI and tests; with a real HSM the vendor's tools do the same) ----

  /**
   * Creates root key `keyId` as version 1 (C_GenerateKey in the token, non-extractable, sensitive).
   *
   * @throws AlreadyExistsError ROOT_KEY_ALREADY_EXISTS when any token object already has that label;
   *         TypeError on a malformed key id; RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async createKey(keyId: string): Promise<Pkcs11KeyInfo> {
    if (typeof keyId !== "string" || !KEY_ID.test(keyId)) throw new TypeError("root key id must match [a-z][a-z0-9-]{0,62}");
    const ref: KeyRef = { keyId };
    return this.#mutate(() =>
      this.#run("createKey", ref, async (s) => {
        // Private objects are invisible to a session that is not logged in: never conclude "absent" from that.
        this.#assertLoggedIn(s);
        if (findAll(this.#entry, s, [{ type: ck.CKA_LABEL, value: keyId }]).length > 0) {
          throw new AlreadyExistsError("ROOT_KEY_ALREADY_EXISTS", `${BACKEND}/${keyId}`, `root key ${BACKEND}/${keyId} already exists in token "${this.tokenLabel}" (an object with that label exists); choose another key id`);
        }
        await this.#generate(s, rootKeyTemplate(keyId, 1));
        return this.#info(s, keyId)!;
      }),
    );
  }

  /**
   * Enables or disables one version (`version`) or every version of root key `keyId` by setting CKA_WRAP and
   * CKA_UNWRAP (C_SetAttributeValue). Disabling every version also stops DEKs wrapped under older versions
   * from unwrapping. Callers must also empty their DEK caches for a disable to bite at once.
   *
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED (that version is gone) |
   *         ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE (e.g. CKR_ATTRIBUTE_READ_ONLY from the token).
   */
  async setEnabled(keyId: string, enabled: boolean, version?: number): Promise<Pkcs11KeyInfo> {
    if (typeof enabled !== "boolean") throw new TypeError("enabled must be a boolean");
    const ref = this.#ref(keyId, version);
    return this.#mutate(() =>
      this.#run("setEnabled", ref, async (s) => {
        for (const v of this.#targets(s, ref)) {
          this.#entry.pkcs11.C_SetAttributeValue(s, v.handle, [
            { type: ck.CKA_WRAP, value: enabled },
            { type: ck.CKA_UNWRAP, value: enabled },
          ]);
        }
        return this.#info(s, keyId)!;
      }),
    );
  }

  /**
   * Destroys one version of root key `keyId` in the token (C_DestroyObject): terminal, DEKs wrapped under it can
   * never be unwrapped again (crypto-shredding). Destroying the last version removes the key id altogether.
   *
   * @returns the key after the change, or undefined when no version is left.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED (already destroyed) | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a bad version number.
   */
  async destroyVersion(keyId: string, version: number): Promise<Pkcs11KeyInfo | undefined> {
    if (!Number.isSafeInteger(version) || !VERSION.test(String(version))) throw new TypeError("version must be an integer >= 1");
    const ref = this.#ref(keyId, version);
    return this.#mutate(() =>
      this.#run("destroyVersion", ref, async (s) => {
        for (const v of this.#targets(s, ref)) this.#entry.pkcs11.C_DestroyObject(s, v.handle);
        return this.#info(s, keyId);
      }),
    );
  }

  /**
   * Every root key in the token (AES-256 secret-key token objects whose label is a valid key id and whose
   * CKA_ID is a version number), sorted by key id. No key material.
   *
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE.
   */
  async listKeys(): Promise<Pkcs11KeyInfo[]> {
    return this.#run("listKeys", undefined, async (s) => {
      this.#assertLoggedIn(s);
      const byKey = new Map<string, VersionObject[]>();
      for (const v of this.#collect(s, undefined)) {
        const list = byKey.get(v.keyId) ?? [];
        list.push(v);
        byKey.set(v.keyId, list);
      }
      return [...byKey.keys()].sort().map((keyId) => this.#infoOf(keyId, byKey.get(keyId)!));
    });
  }

  // ---- internals ----

  /**
   * Borrows a session, runs `fn` under the call timeout, and on a session-loss error resets the pool and runs
   * it once more. Every error leaves as a DomainError (or the TypeError of a programming error).
   *
   * @param discard called with a result that arrives after the caller gave up (to zero key material).
   */
  async #run<T>(op: string, ref: KeyRef | undefined, fn: (session: Handle) => Promise<T>, discard?: (late: T) => void): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      if (this.#closed) throw new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${BACKEND} root-key backend is closed`, this.#meta(ref?.keyId, ref?.version));
      const observed = this.#pool.generation;
      let lease: Lease | undefined;
      try {
        lease = await this.#pool.acquire(this.#callTimeoutMs);
        return await this.#guard(op, lease, fn, discard);
      } catch (err) {
        const code = ckrOf(err);
        if (attempt === 1 && code !== undefined && (RECONNECT.has(code) || RETRY_ONCE.has(code))) {
          if (RECONNECT.has(code)) {
            this.#logger?.warn({ backend: BACKEND, token: this.tokenLabel, op, ckr: ckrName(code) }, "PKCS#11 session lost; reconnecting to the token and retrying once");
            try {
              this.#pool.reset(lease?.generation ?? observed, code);
            } catch (resetErr) {
              throw this.#asDomainError(resetErr, op, ref);
            }
          }
          continue;
        }
        throw this.#asDomainError(err, op, ref);
      }
    }
  }

  /** Runs `fn` on a leased session; rejects after `callTimeoutMs`, but returns the lease only when `fn` settles. */
  #guard<T>(op: string, lease: Lease, fn: (session: Handle) => Promise<T>, discard?: (late: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const started = performance.now();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        this.#logger?.warn({ backend: BACKEND, token: this.tokenLabel, op, timeoutMs: this.#callTimeoutMs }, "PKCS#11 call timed out; its session returns to the pool when the call ends");
        reject(new CallTimeoutError(`the HSM did not answer ${op} within ${this.#callTimeoutMs} ms`));
      }, this.#callTimeoutMs);
      const settle = (): void => {
        clearTimeout(timer);
        const ms = performance.now() - started;
        // Synchronous pkcs11js calls cannot be interrupted; the best we can do is say the loop was blocked.
        if (!timedOut && ms > this.#callTimeoutMs) {
          this.#logger?.warn({ backend: BACKEND, token: this.tokenLabel, op, ms: Math.round(ms) }, "slow PKCS#11 call blocked the event loop");
        }
      };
      fn(lease.session).then(
        (value) => {
          settle();
          this.#pool.release(lease);
          if (timedOut) discard?.(value);
          else resolve(value);
        },
        (err: unknown) => {
          settle();
          const code = ckrOf(err);
          this.#pool.release(lease, code !== undefined && SESSION_DEAD.has(code));
          if (!timedOut) reject(err);
        },
      );
    });
  }

  #mutate<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#mutations.then(fn, fn);
    this.#mutations = result.catch(() => undefined);
    return result;
  }

  /** Validates a key id from a caller; a malformed one cannot exist in the token. */
  #ref(keyId: string, version?: number): KeyRef {
    if (typeof keyId !== "string" || !KEY_ID.test(keyId)) {
      const shown = typeof keyId === "string" ? keyId.slice(0, 80) : String(keyId);
      throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key id "${shown}" is not a valid ${BACKEND} key id ([a-z][a-z0-9-]{0,62}); fix the key id`, this.#meta(shown));
    }
    if (version !== undefined && (!Number.isSafeInteger(version) || !VERSION.test(String(version)))) {
      throw new TypeError("version must be an integer >= 1");
    }
    return version === undefined ? { keyId } : { keyId, version };
  }

  /**
   * Finds the version `ref` names (or the current one) and checks it may be used for `purpose`.
   *
   * @throws RootKeyError NOT_FOUND (no version at all) | DESTROYED (that version is gone, others exist) |
   *         DISABLED (attribute off, or extractable) | UNAVAILABLE (two objects claim the version).
   */
  #resolve(s: Handle, ref: KeyRef, purpose: "wrap" | "unwrap" | "describe"): VersionObject {
    const all = this.#collect(s, ref.keyId);
    if (all.length === 0) {
      this.#assertLoggedIn(s);
      throw new RootKeyError(
        "ROOT_KEY_NOT_FOUND",
        `root key ${BACKEND}/${ref.keyId} does not exist in token "${this.tokenLabel}" (no AES-256 key labelled "${ref.keyId}"; all its versions may have been destroyed); create it or fix the key id`,
        this.#meta(ref.keyId, ref.version),
      );
    }
    const version = ref.version ?? Math.max(...all.map((v) => v.version));
    const matches = all.filter((v) => v.version === version);
    if (matches.length === 0) {
      throw new RootKeyError("ROOT_KEY_DESTROYED", `root key version ${kidOf(ref.keyId, version)} is destroyed; data wrapped under it cannot be recovered`, this.#meta(ref.keyId, version));
    }
    if (matches.length > 1) {
      throw new RootKeyError(
        "ROOT_KEY_BACKEND_UNAVAILABLE",
        `token "${this.tokenLabel}" holds ${matches.length} objects for root key version ${kidOf(ref.keyId, version)}; an operator must destroy the one that was never used`,
        this.#meta(ref.keyId, version),
      );
    }
    const v = matches[0]!;
    if (purpose !== "describe") {
      if (v.extractable && !this.#allowExtractable) {
        throw new RootKeyError(
          "ROOT_KEY_DISABLED",
          `root key version ${kidOf(ref.keyId, version)} is extractable or not sensitive, so its value could leave the HSM; it is refused. Create root keys with CKA_EXTRACTABLE=false and CKA_SENSITIVE=true`,
          this.#meta(ref.keyId, version),
        );
      }
      if (!(purpose === "wrap" ? v.wrap : v.unwrap)) {
        throw new RootKeyError("ROOT_KEY_DISABLED", `root key version ${kidOf(ref.keyId, version)} is disabled (CKA_${purpose.toUpperCase()} is false); enable it to use it`, this.#meta(ref.keyId, version));
      }
    }
    return v;
  }

  /** The versions `ref` names for a management call: all, or the one asked for. */
  #targets(s: Handle, ref: KeyRef): VersionObject[] {
    const all = this.#collect(s, ref.keyId);
    if (all.length === 0) {
      this.#assertLoggedIn(s);
      throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${BACKEND}/${ref.keyId} does not exist in token "${this.tokenLabel}"`, this.#meta(ref.keyId, ref.version));
    }
    if (ref.version === undefined) return all;
    const matches = all.filter((v) => v.version === ref.version);
    if (matches.length === 0) {
      throw new RootKeyError("ROOT_KEY_DESTROYED", `root key version ${kidOf(ref.keyId, ref.version)} is destroyed`, this.#meta(ref.keyId, ref.version));
    }
    return matches;
  }

  /** Root-key version objects in the token, of one key or of all (one find + one attribute read each). */
  #collect(s: Handle, keyId: string | undefined): VersionObject[] {
    const p = this.#entry.pkcs11;
    const template: Template = [
      { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
      { type: ck.CKA_TOKEN, value: true },
    ];
    if (keyId !== undefined) template.push({ type: ck.CKA_LABEL, value: keyId });
    const out: VersionObject[] = [];
    for (const handle of findAll(this.#entry, s, template)) {
      const a = p.C_GetAttributeValue(s, handle, [
        { type: ck.CKA_LABEL },
        { type: ck.CKA_ID },
        { type: ck.CKA_VALUE_LEN },
        { type: ck.CKA_WRAP },
        { type: ck.CKA_UNWRAP },
        { type: ck.CKA_EXTRACTABLE },
        { type: ck.CKA_SENSITIVE },
      ]);
      const label = a[0]!.value.toString("utf8");
      const id = a[1]!.value.toString("latin1");
      if (!KEY_ID.test(label) || !VERSION.test(id) || readUlong(a[2]!.value) !== KEY_BYTES) continue;
      out.push({
        handle,
        keyId: label,
        version: Number(id),
        wrap: readBool(a[3]!.value),
        unwrap: readBool(a[4]!.value),
        extractable: readBool(a[5]!.value) || !readBool(a[6]!.value),
      });
    }
    return out;
  }

  #stateOf(v: VersionObject): RootKeyState {
    return v.wrap && v.unwrap && (!v.extractable || this.#allowExtractable) ? "ENABLED" : "DISABLED";
  }

  #info(s: Handle, keyId: string): Pkcs11KeyInfo | undefined {
    const versions = this.#collect(s, keyId);
    return versions.length === 0 ? undefined : this.#infoOf(keyId, versions);
  }

  #infoOf(keyId: string, versions: VersionObject[]): Pkcs11KeyInfo {
    const list = versions
      .map((v) => ({ kid: kidOf(keyId, v.version), version: v.version, state: this.#stateOf(v), extractable: v.extractable }))
      .sort((a, b) => a.version - b.version);
    const current = list[list.length - 1]!;
    return { backend: BACKEND, keyId, state: current.state, currentVersion: current.version, versions: list };
  }

  /** Throws CKR_USER_NOT_LOGGED_IN (retried once after a new login) unless the session is logged in. */
  #assertLoggedIn(s: Handle): void {
    if (this.#entry.pkcs11.C_GetSessionInfo(s).state !== CKS_RW_USER_FUNCTIONS) {
      throw new ck.Pkcs11Error("CKR_USER_NOT_LOGGED_IN", ck.CKR_USER_NOT_LOGGED_IN, "C_GetSessionInfo");
    }
  }

  /**
   * Whether HSM calls may run on libuv worker threads. Only when this registry initialised the module with
   * CKF_OS_LOCKING_OK: a module initialised by someone else may run without locks (SoftHSM2 initialised with
   * NULL args does, and then fails with CKR_GENERAL_ERROR or crashes under concurrent calls), so then every
   * call stays on the JS thread, serialized, and only the pool wait is bounded by the timeout.
   */
  get #threaded(): boolean {
    return this.#entry.ownsInit;
  }

  /** C_GenerateKey (CKM_AES_KEY_GEN) of a token object. */
  async #generate(s: Handle, template: Template): Promise<void> {
    const p = this.#entry.pkcs11;
    const mech = { mechanism: ck.CKM_AES_KEY_GEN };
    if (this.#threaded) await p.C_GenerateKeyAsync(s, mech, template);
    else p.C_GenerateKey(s, mech, template);
  }

  /** RFC 3394 wrap of `cek` under `kek` inside the HSM; the CEK exists there only as a session object. */
  async #hsmWrap(s: Handle, kek: Handle, cek: Buffer): Promise<Buffer> {
    const p = this.#entry.pkcs11;
    const obj = p.C_CreateObject(s, [
      { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
      { type: ck.CKA_TOKEN, value: false },
      { type: ck.CKA_PRIVATE, value: true },
      { type: ck.CKA_VALUE, value: cek },
      // C_WrapKey needs an extractable key (v2.40 base, C_WrapKey); nothing else may use this object.
      { type: ck.CKA_EXTRACTABLE, value: true },
      { type: ck.CKA_SENSITIVE, value: false },
      ...NO_USAGE,
    ]);
    try {
      const mech = { mechanism: ck.CKM_AES_KEY_WRAP };
      const buf = Buffer.alloc(WRAPPED_CEK_BYTES + 16);
      const out = this.#threaded ? await p.C_WrapKeyAsync(s, mech, kek, obj, buf) : p.C_WrapKey(s, mech, kek, obj, buf);
      if (out.length !== WRAPPED_CEK_BYTES) throw new Error(`C_WrapKey returned ${out.length} bytes, expected ${WRAPPED_CEK_BYTES}`);
      return Buffer.from(out);
    } finally {
      destroyQuietly(this.#entry, s, obj);
    }
  }

  /** RFC 3394 unwrap inside the HSM into a short-lived session object whose value is read and destroyed. */
  async #hsmUnwrap(s: Handle, kek: Handle, encryptedKey: Buffer): Promise<Buffer> {
    const p = this.#entry.pkcs11;
    let obj: Handle;
    try {
      const mech = { mechanism: ck.CKM_AES_KEY_WRAP };
      obj = this.#threaded ? await p.C_UnwrapKeyAsync(s, mech, kek, encryptedKey, UNWRAP_TEMPLATE) : p.C_UnwrapKey(s, mech, kek, encryptedKey, UNWRAP_TEMPLATE);
    } catch (err) {
      const code = ckrOf(err);
      if (code !== undefined && UNWRAP_INTEGRITY.has(code)) {
        // A dead session also shows as CKR_GENERAL_ERROR on some tokens: this throws the real cause then.
        if (code === ck.CKR_GENERAL_ERROR) p.C_GetSessionInfo(s);
        fail("RFC 3394 integrity check failed in the HSM", err);
      }
      throw err;
    }
    try {
      const value = p.C_GetAttributeValue(s, obj, [{ type: ck.CKA_VALUE }])[0]!.value;
      try {
        if (value.length !== KEY_BYTES) fail("unwrapped CEK has the wrong size");
        // Our own allocation (not the shared pool slab) so zeroing it later zeroes the only JS copy.
        const cek = Buffer.alloc(KEY_BYTES);
        value.copy(cek);
        return cek;
      } finally {
        value.fill(0);
      }
    } finally {
      destroyQuietly(this.#entry, s, obj);
    }
  }

  #meta(keyId: string | undefined, version?: number): Record<string, string> {
    // `root_key` is the key the contract documents (error_reason.proto); the rest add detail.
    const meta: Record<string, string> = { backend: BACKEND, token: this.tokenLabel };
    if (keyId !== undefined) Object.assign(meta, { root_key: `${BACKEND}/${keyId}`, keyId });
    if (version !== undefined) meta.version = String(version);
    return meta;
  }

  /** Maps anything a call threw to the error the port documents; the cause is kept for logs only. */
  #asDomainError(err: unknown, op: string, ref: KeyRef | undefined): Error {
    if (err instanceof DomainError || err instanceof TypeError) return err;
    const meta = this.#meta(ref?.keyId, ref?.version);
    const token = `PKCS#11 token "${this.tokenLabel}"`;
    if (err instanceof CallTimeoutError || err instanceof PoolTimeoutError) {
      return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${token}: ${err.message}; the HSM is slow or unreachable, retry later`, meta, err);
    }
    if (err instanceof PoolClosedError) return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${BACKEND} root-key backend is closed`, meta, err);
    if (err instanceof TokenNotFoundError) {
      return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${err.message}; check the configured token label and that the HSM is connected`, meta, err);
    }
    const code = ckrOf(err);
    const name = code === undefined ? "module error" : ckrName(code);
    if (code === ck.CKR_KEY_FUNCTION_NOT_PERMITTED) {
      const what = ref ? `root key ${ref.version === undefined ? `${BACKEND}/${ref.keyId}` : kidOf(ref.keyId, ref.version)}` : "the root key";
      return new RootKeyError("ROOT_KEY_DISABLED", `the HSM refused to ${op} with ${what} (${name}): it is disabled; enable it (CKA_WRAP/CKA_UNWRAP) to use it`, meta, err);
    }
    if (code !== undefined && ACCESS.has(code)) {
      const fix =
        code === ck.CKR_PIN_LOCKED
          ? "the token's security officer must unlock or reset the user PIN"
          : code === ck.CKR_USER_PIN_NOT_INITIALIZED
            ? "the token's security officer must set the user PIN"
            : "fix the configured PIN";
      return new RootKeyError("ROOT_KEY_ACCESS_DENIED", `${token} refused the service's login (${name}); ${fix}`, meta, err);
    }
    return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${token} could not ${op} (${name}); retry later, and check the HSM if it persists`, meta, err);
  }
}

// ---- pure helpers ----

/** Usage attributes a transient CEK object must not have: it exists only to be wrapped or read once. */
const NO_USAGE: Template = [
  { type: ck.CKA_ENCRYPT, value: false },
  { type: ck.CKA_DECRYPT, value: false },
  { type: ck.CKA_WRAP, value: false },
  { type: ck.CKA_UNWRAP, value: false },
  { type: ck.CKA_SIGN, value: false },
  { type: ck.CKA_VERIFY, value: false },
  { type: ck.CKA_DERIVE, value: false },
];

/** C_UnwrapKey template: a session object we may read once (CKA_VALUE) and then destroy. */
const UNWRAP_TEMPLATE: Template = [
  { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
  { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
  { type: ck.CKA_TOKEN, value: false },
  { type: ck.CKA_PRIVATE, value: true },
  { type: ck.CKA_EXTRACTABLE, value: true },
  { type: ck.CKA_SENSITIVE, value: false },
  ...NO_USAGE,
];

/** C_GenerateKey template of a root key version (see the module comment). */
function rootKeyTemplate(keyId: string, version: number): Template {
  return [
    { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
    { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
    { type: ck.CKA_VALUE_LEN, value: KEY_BYTES },
    { type: ck.CKA_LABEL, value: keyId },
    { type: ck.CKA_ID, value: Buffer.from(String(version), "ascii") },
    { type: ck.CKA_TOKEN, value: true },
    { type: ck.CKA_PRIVATE, value: true },
    { type: ck.CKA_SENSITIVE, value: true },
    { type: ck.CKA_EXTRACTABLE, value: false },
    { type: ck.CKA_MODIFIABLE, value: true },
    { type: ck.CKA_WRAP, value: true },
    { type: ck.CKA_UNWRAP, value: true },
    { type: ck.CKA_ENCRYPT, value: false },
    { type: ck.CKA_DECRYPT, value: false },
    { type: ck.CKA_SIGN, value: false },
    { type: ck.CKA_VERIFY, value: false },
    { type: ck.CKA_DERIVE, value: false },
  ];
}

/** C_FindObjectsInit / C_FindObjects (batches) / C_FindObjectsFinal. */
function findAll(entry: ModuleEntry, s: Handle, template: Template): Handle[] {
  const p = entry.pkcs11;
  p.C_FindObjectsInit(s, template);
  try {
    const out: Handle[] = [];
    for (;;) {
      const batch = p.C_FindObjects(s, 64);
      out.push(...batch);
      if (batch.length < 64) return out;
    }
  } finally {
    try {
      p.C_FindObjectsFinal(s);
    } catch {
      // The session is failing; the error that matters is the one already thrown (or the next call's).
    }
  }
}

function destroyQuietly(entry: ModuleEntry, s: Handle, obj: Handle): void {
  try {
    entry.pkcs11.C_DestroyObject(s, obj);
  } catch {
    // A session object dies with its session anyway.
  }
}

function readBool(b: Buffer): boolean {
  return b.length > 0 && b[0] !== 0;
}

/** CK_ULONG in host byte order (8 bytes on LP64, 4 on Windows). */
function readUlong(b: Buffer): number {
  const le = endianness() === "LE";
  if (b.length === 8) return Number(le ? b.readBigUInt64LE() : b.readBigUInt64BE());
  if (b.length === 4) return le ? b.readUInt32LE() : b.readUInt32BE();
  return -1;
}

function kidOf(keyId: string, version: number): string {
  return `${BACKEND}/${keyId}/${version}`;
}

function checkContext(context: WrapContext): void {
  if (!context || typeof context.instance !== "string" || !INSTANCE_NAME.test(context.instance)) {
    throw new TypeError("WrapContext.instance must be a resource name instances/{instance}");
  }
}

function checkOpenOptions(opts: Pkcs11OpenOptions): Required<Omit<Pkcs11OpenOptions, "logger" | "modulePath">> & Pick<Pkcs11OpenOptions, "logger"> {
  if (!opts || typeof opts.modulePath !== "string" || opts.modulePath.length === 0) throw new TypeError("modulePath must be a non-empty string");
  if (typeof opts.tokenLabel !== "string" || opts.tokenLabel.length === 0 || Buffer.byteLength(opts.tokenLabel) > 32) {
    throw new TypeError("tokenLabel must be a non-empty string of at most 32 bytes");
  }
  // Never echo the PIN, not even its length.
  if (typeof opts.pin !== "string" || opts.pin.length === 0) throw new TypeError("pin must be a non-empty string");
  const sessionPoolSize = opts.sessionPoolSize ?? DEFAULT_POOL_SIZE;
  if (!Number.isInteger(sessionPoolSize) || sessionPoolSize < 1 || sessionPoolSize > 64) throw new TypeError("sessionPoolSize must be an integer 1..64");
  const callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  if (!Number.isInteger(callTimeoutMs) || callTimeoutMs < 1 || callTimeoutMs > 600_000) throw new TypeError("callTimeoutMs must be an integer 1..600000");
  return {
    tokenLabel: opts.tokenLabel,
    pin: opts.pin,
    sessionPoolSize,
    callTimeoutMs,
    logger: opts.logger,
    allowExtractableRootKeys: opts.allowExtractableRootKeys === true,
  };
}
