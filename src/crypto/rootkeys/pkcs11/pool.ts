/**
 * A small pool of logged-in read/write sessions on one token, for the `pkcs11` root-key backend.
 *
 * Why a pool: a PKCS#11 session runs one operation at a time (PKCS#11 v2.40 base, "Sessions"), and opening a
 * session plus C_Login per call would cost more than the wrap itself. Why generations: after the token or the
 * library went away (CKR_SESSION_HANDLE_INVALID, CKR_CRYPTOKI_NOT_INITIALIZED, ...) every handle we hold is
 * dead; {@link SessionPool.reset} bumps the generation so leases of the old one are dropped, not reused, and
 * the next acquire finds the slot by token label again (slot ids change) and logs in again.
 *
 * Login state is per application and token, not per session (v2.40 base, C_Login): the first session logs in,
 * the others get CKR_USER_ALREADY_LOGGED_IN, which is fine. The same rule means a second backend in this
 * process on an already logged-in token does not get its PIN checked by the token.
 *
 * @internal Used by src/crypto/rootkeys/pkcs11.ts only.
 */
import type { Handle } from "pkcs11js";

import { ck, ckrOf, initialize, type ModuleEntry } from "./module.js";

/** A borrowed session. Give it back with {@link SessionPool.release} exactly once. */
export interface Lease {
  readonly session: Handle;
  /** Pool generation the session was opened in. */
  readonly generation: number;
  /** Whether C_CloseSession may be called when this stale lease comes back (see {@link SessionPool.reset}). */
  closable: boolean;
}

/** No token with the configured label is present (or two are). */
export class TokenNotFoundError extends Error {}

/** Every session stayed busy for the whole wait. */
export class PoolTimeoutError extends Error {}

/** The pool (its backend) is closed. */
export class PoolClosedError extends Error {}

interface Waiter {
  resolve: (lease: Lease) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
}

/** Pool of at most `size` sessions on the token labelled `tokenLabel`. */
export class SessionPool {
  #generation = 0;
  #slot: Handle | undefined;
  #idle: Lease[] = [];
  /** Leases handed out and not yet released (including ones whose caller gave up after a timeout). */
  #lent = new Set<Lease>();
  #waiters: Waiter[] = [];
  #closed = false;
  #drained: (() => void) | undefined;
  readonly #pin: string;

  constructor(
    private readonly entry: ModuleEntry,
    readonly tokenLabel: string,
    pin: string,
    readonly size: number,
  ) {
    this.#pin = pin;
  }

  /** Current generation; a lease from an older one is stale. */
  get generation(): number {
    return this.#generation;
  }

  /** Sessions open now (idle + lent out). */
  get openCount(): number {
    return this.#idle.length + this.#lent.size;
  }

  /**
   * Borrows a session: an idle one, a new one (opened and logged in synchronously) while fewer than `size` are
   * open, or the next one released, waiting at most `waitMs`.
   *
   * @throws PoolClosedError | PoolTimeoutError | TokenNotFoundError | the pkcs11js error of C_OpenSession /
   *         C_Login / C_GetSlotList (e.g. CKR_PIN_INCORRECT, CKR_CRYPTOKI_NOT_INITIALIZED).
   */
  acquire(waitMs: number): Promise<Lease> {
    if (this.#closed) return Promise.reject(new PoolClosedError("PKCS#11 session pool is closed"));
    const idle = this.#idle.pop();
    if (idle) return Promise.resolve(this.#lend(idle));
    if (this.openCount < this.size) {
      try {
        return Promise.resolve(this.#lend(this.#open()));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          reject(new PoolTimeoutError(`all ${this.size} PKCS#11 sessions stayed busy for ${waitMs} ms`));
        }, waitMs),
      };
      this.#waiters.push(waiter);
    });
  }

  /**
   * Gives a lease back. A current-generation lease goes to the next waiter or the idle list; a stale one (or
   * `broken`, i.e. its call failed with a session-loss error) is dropped, which frees room for a new session.
   */
  release(lease: Lease, broken = false): void {
    if (!this.#lent.delete(lease)) return;
    if (broken || this.#closed || lease.generation !== this.#generation) {
      if (lease.closable && !broken) this.#closeQuietly(lease.session);
      this.#serveWaiters();
    } else {
      const waiter = this.#waiters.shift();
      if (waiter) {
        clearTimeout(waiter.timer);
        waiter.resolve(this.#lend(lease));
      } else {
        this.#idle.push(lease);
      }
    }
    if (this.#lent.size === 0) this.#drained?.();
  }

  /**
   * Drops every session of generation `observed` (a no-op when another caller already reset past it), forgets
   * the slot, and with `reinitialize` calls C_Initialize again (after CKR_CRYPTOKI_NOT_INITIALIZED).
   *
   * Stale sessions are closed only when the library was not re-initialised and the token was not removed:
   * after those, every old handle is already gone and its number may have been given to a new session.
   *
   * @throws the pkcs11js error of C_Initialize.
   */
  reset(observed: number, cause: number | undefined): void {
    if (observed !== this.#generation || this.#closed) return;
    this.#generation += 1;
    this.#slot = undefined;
    const closable = cause !== ck.CKR_CRYPTOKI_NOT_INITIALIZED && cause !== ck.CKR_TOKEN_NOT_PRESENT && cause !== ck.CKR_DEVICE_REMOVED;
    for (const lease of this.#idle.splice(0)) if (closable) this.#closeQuietly(lease.session);
    for (const lease of this.#lent) lease.closable = closable;
    if (cause === ck.CKR_CRYPTOKI_NOT_INITIALIZED) initialize(this.entry);
    this.#serveWaiters();
  }

  /**
   * Refuses new work, fails the waiters, closes idle sessions and waits up to `waitMs` for lent ones.
   *
   * @returns true when no session is still in use (so the module may be finalised).
   */
  async close(waitMs: number): Promise<boolean> {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new PoolClosedError("PKCS#11 session pool is closed"));
    }
    for (const lease of this.#idle.splice(0)) this.#closeQuietly(lease.session);
    if (this.#lent.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        this.#drained = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.#lent.size === 0;
  }

  #lend(lease: Lease): Lease {
    this.#lent.add(lease);
    return lease;
  }

  /** Opens and logs in one session; the caller has checked there is room. */
  #open(): Lease {
    const p = this.entry.pkcs11;
    this.#slot ??= this.#findSlot();
    const session = p.C_OpenSession(this.#slot, ck.CKF_RW_SESSION | ck.CKF_SERIAL_SESSION);
    try {
      p.C_Login(session, ck.CKU_USER, this.#pin);
    } catch (err) {
      if (ckrOf(err) !== ck.CKR_USER_ALREADY_LOGGED_IN) {
        this.#closeQuietly(session);
        throw err;
      }
    }
    return { session, generation: this.#generation, closable: true };
  }

  /** Slot ids are not stable (SoftHSM assigns them at token init), so the token is found by its label. */
  #findSlot(): Handle {
    const p = this.entry.pkcs11;
    const found: Handle[] = [];
    for (const slot of p.C_GetSlotList(true)) {
      let label: string;
      try {
        label = p.C_GetTokenInfo(slot).label;
      } catch {
        continue; // a slot whose token cannot be read now is not ours
      }
      // CK_TOKEN_INFO.label is blank-padded to 32 bytes.
      if (label.replace(/[ \0]+$/, "") === this.tokenLabel) found.push(slot);
    }
    if (found.length !== 1) {
      throw new TokenNotFoundError(
        found.length === 0
          ? `no PKCS#11 token labelled "${this.tokenLabel}" is present`
          : `${found.length} PKCS#11 tokens are labelled "${this.tokenLabel}"; labels must be unique`,
      );
    }
    return found[0]!;
  }

  /** Fills free room with new sessions for the waiters; an open failure fails that waiter (it may retry). */
  #serveWaiters(): void {
    while (!this.#closed && this.#waiters.length > 0 && this.openCount < this.size) {
      const waiter = this.#waiters.shift()!;
      clearTimeout(waiter.timer);
      try {
        waiter.resolve(this.#lend(this.#open()));
      } catch (err) {
        waiter.reject(err);
      }
    }
  }

  #closeQuietly(session: Handle): void {
    try {
      this.entry.pkcs11.C_CloseSession(session);
    } catch {
      // Already gone (closed behind our back, token removed): nothing to release.
    }
  }
}
