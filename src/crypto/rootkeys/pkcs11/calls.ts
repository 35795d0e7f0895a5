/**
 * How the `pkcs11` backend calls the token: a pooled logged-in session per call, a bound on every wait, one
 * reconnect-and-retry when the token lost our sessions, and one mapping of whatever failed to the errors the
 * root-key port documents.
 *
 * - When a call fails with CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_TOKEN_NOT_PRESENT,
 *   CKR_DEVICE_REMOVED, CKR_CRYPTOKI_NOT_INITIALIZED or CKR_USER_NOT_LOGGED_IN, the pool is dropped, the slot is
 *   found again by token label (slot ids change), the library re-initialised if needed, the user logged in again,
 *   and the call retried ONCE; a second failure is ROOT_KEY_BACKEND_UNAVAILABLE (retryable by the caller).
 * - A call that outlives `callTimeoutMs` fails the caller with ROOT_KEY_BACKEND_UNAVAILABLE; its session stays
 *   out of the pool until the native call returns. Waiting for a free session is bounded the same way.
 *
 * @internal Used by src/crypto/rootkeys/pkcs11.ts only.
 */
import type { Logger } from "pino";

import { DomainError, RootKeyError } from "../../../domain/errors.js";
import { formatRootKeyRef, rootKeyKid } from "../../../domain/rootkey-id.js";
import { ck, ckrName, ckrOf, type ModuleEntry } from "./module.js";
import type { TokenSession } from "./objects.js";
import { PoolClosedError, PoolTimeoutError, SessionPool, TokenNotFoundError, type Lease } from "./pool.js";

/** Backend name, the first segment of `kid`. */
export const PKCS11_BACKEND = "pkcs11";

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
const RETRY_ONCE = new Set<number>([
  ck.CKR_OBJECT_HANDLE_INVALID,
  ck.CKR_KEY_HANDLE_INVALID,
  // The root key itself was destroyed between its lookup and C_WrapKey / C_UnwrapKey.
  ck.CKR_WRAPPING_KEY_HANDLE_INVALID,
  ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID,
]);
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
/** Which key (and version) a call is about, for lookups and error metadata. */
export interface KeyRef {
  keyId: string;
  /** Undefined = the current version. */
  version?: number;
}

/** An HSM call outlived `callTimeoutMs`. */
class CallTimeoutError extends Error {}

/** Runs calls on pooled sessions of one token; see the module comment. */
export class TokenCalls {
  readonly #pool: SessionPool;
  #closed = false;

  constructor(
    readonly entry: ModuleEntry,
    readonly tokenLabel: string,
    pin: string,
    sessionPoolSize: number,
    readonly callTimeoutMs: number,
    private readonly logger: Pick<Logger, "warn"> | undefined,
  ) {
    this.#pool = new SessionPool(entry, tokenLabel, pin, sessionPoolSize);
  }

  /**
   * Whether HSM calls may run on libuv worker threads. Only when this registry initialised the module with
   * CKF_OS_LOCKING_OK: a module initialised by someone else may run without locks (SoftHSM2 initialised with
   * NULL args does, and then fails with CKR_GENERAL_ERROR or crashes under concurrent calls), so then every
   * call stays on the JS thread, serialized, and only the pool wait is bounded by the timeout.
   */
  get threaded(): boolean {
    return this.entry.ownsInit;
  }

  /**
   * Borrows a session, runs `fn` under the call timeout, and on a session-loss error resets the pool and runs
   * it once more. Every error leaves as a DomainError (or the TypeError of a programming error).
   *
   * @param discard called with a result that arrives after the caller gave up (to zero key material).
   */
  async run<T>(op: string, ref: KeyRef | undefined, fn: (t: TokenSession) => Promise<T>, discard?: (late: T) => void): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      if (this.#closed) throw new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${PKCS11_BACKEND} root-key backend is closed`, this.meta(ref?.keyId, ref?.version));
      const observed = this.#pool.generation;
      let lease: Lease | undefined;
      try {
        lease = await this.#pool.acquire(this.callTimeoutMs);
        const session = lease.session;
        return await this.#guard(op, lease, () => fn({ entry: this.entry, session, threaded: this.threaded }), discard);
      } catch (err) {
        const code = ckrOf(err);
        if (attempt === 1 && code !== undefined && (RECONNECT.has(code) || RETRY_ONCE.has(code))) {
          if (RECONNECT.has(code)) {
            this.logger?.warn({ backend: PKCS11_BACKEND, token: this.tokenLabel, op, ckr: ckrName(code) }, "PKCS#11 session lost; reconnecting to the token and retrying once");
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

  /** Closes the pooled sessions, waiting up to `callTimeoutMs` for calls in flight. @returns whether all came back. */
  close(): Promise<boolean> {
    this.#closed = true;
    return this.#pool.close(this.callTimeoutMs);
  }

  /** Error metadata; `root_key` is the key the contract documents (error_reason.proto), the rest add detail. */
  meta(keyId: string | undefined, version?: number): Record<string, string> {
    const meta: Record<string, string> = { backend: PKCS11_BACKEND, token: this.tokenLabel };
    if (keyId !== undefined) Object.assign(meta, { root_key: formatRootKeyRef(PKCS11_BACKEND, keyId), keyId });
    if (version !== undefined) meta.version = String(version);
    return meta;
  }

  /** Runs `fn` on a leased session; rejects after `callTimeoutMs`, but returns the lease only when `fn` settles. */
  #guard<T>(op: string, lease: Lease, fn: () => Promise<T>, discard?: (late: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const started = performance.now();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        this.logger?.warn({ backend: PKCS11_BACKEND, token: this.tokenLabel, op, timeoutMs: this.callTimeoutMs }, "PKCS#11 call timed out; its session returns to the pool when the call ends");
        reject(new CallTimeoutError(`the HSM did not answer ${op} within ${this.callTimeoutMs} ms`));
      }, this.callTimeoutMs);
      const settle = (): void => {
        clearTimeout(timer);
        const ms = performance.now() - started;
        // Synchronous pkcs11js calls cannot be interrupted; the best we can do is say the loop was blocked.
        if (!timedOut && ms > this.callTimeoutMs) {
          this.logger?.warn({ backend: PKCS11_BACKEND, token: this.tokenLabel, op, ms: Math.round(ms) }, "slow PKCS#11 call blocked the event loop");
        }
      };
      fn().then(
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

  /** Maps anything a call threw to the error the port documents; the cause is kept for logs only. */
  #asDomainError(err: unknown, op: string, ref: KeyRef | undefined): Error {
    if (err instanceof DomainError || err instanceof TypeError) return err;
    const meta = this.meta(ref?.keyId, ref?.version);
    const token = `PKCS#11 token "${this.tokenLabel}"`;
    if (err instanceof CallTimeoutError || err instanceof PoolTimeoutError) {
      return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${token}: ${err.message}; the HSM is slow or unreachable, retry later`, meta, err);
    }
    if (err instanceof PoolClosedError) return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${PKCS11_BACKEND} root-key backend is closed`, meta, err);
    if (err instanceof TokenNotFoundError) {
      return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `${err.message}; check the configured token label and that the HSM is connected`, meta, err);
    }
    const code = ckrOf(err);
    const name = code === undefined ? "module error" : ckrName(code);
    if (code === ck.CKR_KEY_FUNCTION_NOT_PERMITTED) {
      const what = ref ? `root key ${ref.version === undefined ? `${PKCS11_BACKEND}/${ref.keyId}` : rootKeyKid(PKCS11_BACKEND, ref.keyId, ref.version)}` : "the root key";
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
