/**
 * Per-principal rate limiting: one token bucket per key, run as GCRA (the generic cell rate algorithm, ITU-T
 * I.371), which is a token bucket stored as a single number per key: the theoretical arrival time (TAT) at which
 * the bucket would be full again. A call at `now` is allowed when, after paying its token, the bucket's debt
 * (`TAT - now`) is at most `burst` tokens' worth of time; a refused call changes nothing. So `burst` calls pass
 * back to back, then one every `1000 / ratePerSecond` ms.
 *
 * O(1) per call, no timers, memory bounded by `maxKeys`. Keys live in a Map used as an LRU list (insertion
 * order; every call, allowed or refused, moves its key to the young end). A bucket whose TAT is not after
 * `now` is full and carries nothing worth keeping, so it is dropped whenever it is seen at the old end. When the
 * map is at `maxKeys` and the oldest bucket is not full, that bucket is still evicted: it is the principal idle
 * the longest, and since a bucket is full again `burst / ratePerSecond` s after its last allowed call, this only
 * happens when `maxKeys` principals all called within that window. A key that keeps calling is always young,
 * so it is never the one evicted: flooding with new keys cannot reset a hammering key's debt.
 */
import { RateLimitedError } from "../domain/errors.js";

/** How fast each key may call. */
export interface RateLimitSettings {
  /** Sustained rate per key, in calls per second (> 0). */
  ratePerSecond: number;
  /** Calls a key may make back to back after being idle (integer >= 1). */
  burst: number;
  /** Bound on tracked keys (principals), e.g. 100_000 (integer >= 1). */
  maxKeys: number;
}

/** Token buckets per key (GCRA); see the module comment for the eviction rule. */
export class RateLimiter {
  /** key -> theoretical arrival time in ms on `now`'s scale; Map order is least recently used first. */
  readonly #tat = new Map<string, number>();
  /** Emission interval: ms one token takes to come back. */
  readonly #interval: number;
  /** Largest debt allowed after a call: `burst` tokens' worth of ms. */
  readonly #tolerance: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  #overflowEvictions = 0;
  /** The limit as told to callers, e.g. "10 calls/s, burst 20". */
  readonly limit: string;

  /**
   * @param settings rate, burst and key bound; throws RangeError when out of range.
   * @param now monotonic clock in ms (default `performance.now`); injected by tests.
   */
  constructor(settings: RateLimitSettings, now: () => number = () => performance.now()) {
    const { ratePerSecond, burst, maxKeys } = settings;
    if (!(Number.isFinite(ratePerSecond) && ratePerSecond > 0)) throw new RangeError(`ratePerSecond must be a positive number, got ${ratePerSecond}`);
    if (!(Number.isSafeInteger(burst) && burst >= 1)) throw new RangeError(`burst must be an integer >= 1, got ${burst}`);
    if (!(Number.isSafeInteger(maxKeys) && maxKeys >= 1)) throw new RangeError(`maxKeys must be an integer >= 1, got ${maxKeys}`);
    this.#interval = 1000 / ratePerSecond;
    this.#tolerance = burst * this.#interval;
    this.#maxKeys = maxKeys;
    this.#now = now;
    this.limit = `${ratePerSecond} calls/s, burst ${burst}`;
  }

  /** Keys currently tracked (never above `maxKeys`). */
  get size(): number {
    return this.#tat.size;
  }

  /** Buckets evicted while not full because the map was at `maxKeys`: above 0, `maxKeys` is too low for the load. */
  get overflowEvictions(): number {
    return this.#overflowEvictions;
  }

  /**
   * Takes one token for `key`.
   * @returns 0 when allowed; otherwise the ms (an integer >= 1) to wait until a token is available.
   */
  take(key: string): number {
    const now = this.#now();
    const stored = this.#tat.get(key);
    if (stored !== undefined) this.#tat.delete(key); // re-inserted below: moves the key to the young end
    else this.#makeRoom(now);
    const tat = stored === undefined || stored < now ? now : stored;
    const next = tat + this.#interval;
    // A small epsilon: sums of fractional intervals must not refuse a call that is exactly on time.
    const wait = next - now - this.#tolerance;
    if (wait > 1e-6) {
      // Refused: the bucket is unchanged but still touched, so a hammering key stays young and is never evicted.
      this.#tat.set(key, tat);
      return Math.max(1, Math.ceil(wait));
    }
    this.#tat.set(key, next);
    this.#dropOldestIfFull(now);
    return 0;
  }

  /**
   * Takes one token for `key` or throws.
   * @throws RateLimitedError (RESOURCE_EXHAUSTED with the ms to wait) when `key` is over its limit.
   */
  enforce(key: string): void {
    const wait = this.take(key);
    if (wait > 0) throw new RateLimitedError(wait, this.limit);
  }

  /** Before adding a key: evicts the oldest bucket when at the bound (full or not; see the module comment). */
  #makeRoom(now: number): void {
    this.#dropOldestIfFull(now);
    if (this.#tat.size < this.#maxKeys) return;
    const oldest = this.#tat.keys().next();
    if (!oldest.done) {
      this.#tat.delete(oldest.value);
      this.#overflowEvictions++;
    }
  }

  /** Lazy expiry, one entry per call: the oldest bucket goes when it is full (its TAT is not after `now`). */
  #dropOldestIfFull(now: number): void {
    const oldest = this.#tat.entries().next();
    if (!oldest.done && oldest.value[1] <= now) this.#tat.delete(oldest.value[0]);
  }
}
