/**
 * In-memory cache of plaintext DEKs: bounded, with a TTL, emptied for a root key seen disabled (see
 * ARCHITECTURE.md, "Envelope format"). Unwrapping costs a root-key backend round trip (an HSM call, or the local
 * keystore's key unwrap), so every read of a sealed value would otherwise pay it.
 *
 * Ownership: the cache owns the buffer each loader returns and zeroes it when the entry is evicted (LRU), expires
 * (TTL, purged by timer), is deleted or the cache is cleared. Callers always get a FRESH COPY they own, so an
 * eviction can never zero a key in the middle of someone's encryption; callers zero their copy when done.
 */
import { LRUCache } from "lru-cache";

/** Construction options. */
export interface DekCacheOptions {
  /** Most DEKs held at once (count, > 0). Memory is ~100 bytes per entry. */
  max: number;
  /**
   * Lifetime of an entry in milliseconds (> 0), counted from when it was loaded (reads do not extend it): bounds
   * how long a DEK outlives a root-key disable that the service has not been told about.
   */
  ttlMs: number;
  /** Clock in milliseconds for tests; defaults to `performance.now`. Must not return 0 (lru-cache reads 0 as "no TTL"). */
  now?: () => number;
}

interface Inflight {
  /** Resolves to one private copy per waiter. */
  promise: Promise<Buffer[]>;
  /** Callers waiting for `promise`. */
  waiters: number;
  /** Set by delete/clear while loading: the result is handed to waiters but not cached. */
  invalidated: boolean;
}

/**
 * Bounded, expiring map from DEK id to plaintext DEK, on lru-cache.
 *
 * @example
 * const cache = new DekCache({ max: 10_000, ttlMs: 5 * 60_000 });
 * const dek = await cache.getOrLoad(dekId, () => unwrapDek(backend, wrappedDek, { instance }));
 * try { ... } finally { zero(dek); }
 */
export class DekCache {
  readonly #lru: LRUCache<string, Buffer>;
  readonly #inflight = new Map<string, Inflight>();

  constructor(opts: DekCacheOptions) {
    if (!Number.isInteger(opts.max) || opts.max <= 0) throw new RangeError("DekCache max must be a positive integer");
    if (!Number.isFinite(opts.ttlMs) || opts.ttlMs <= 0) throw new RangeError("DekCache ttlMs must be a positive number of milliseconds");
    this.#lru = new LRUCache<string, Buffer>({
      max: opts.max,
      ttl: opts.ttlMs,
      // Expired keys are wiped by timer, not left in memory until the next lookup happens to touch them.
      ttlAutopurge: true,
      updateAgeOnGet: false,
      allowStale: false,
      // lru-cache otherwise memoizes the clock for 1 ms; exact expiry is cheap at our rates and testable.
      ttlResolution: 0,
      dispose: (value) => value.fill(0),
      ...(opts.now ? { perf: { now: opts.now } } : {}),
    });
  }

  /** Number of DEKs held now. */
  get size(): number {
    return this.#lru.size;
  }

  /**
   * Returns the DEK `dekId`, loading it with `loader` on a miss. Concurrent misses for the same id share ONE
   * loader call (one unwrap for N callers). A failed load is not cached and rejects every waiter with its error.
   *
   * @param loader produces the 32-byte DEK (e.g. `unwrapDek`). The cache takes ownership of the returned
   *        buffer: it is stored as is and zeroed on eviction, so the loader must not keep or reuse it.
   * @returns a fresh copy of the DEK that the caller owns and should zero after use.
   * @throws whatever `loader` throws (e.g. RootKeyError, DecryptionError).
   */
  async getOrLoad(dekId: string, loader: (dekId: string) => Promise<Buffer>): Promise<Buffer> {
    const hit = this.#lru.get(dekId);
    if (hit) return Buffer.from(hit);

    let flight = this.#inflight.get(dekId);
    if (!flight) {
      const f = { waiters: 0, invalidated: false } as Inflight;
      // Registered before the loader runs, so even a synchronous loader failure is cleaned up by #load.
      this.#inflight.set(dekId, f);
      f.promise = this.#load(dekId, loader, f);
      flight = f;
    }
    flight.waiters++;
    const copies = await flight.promise;
    return copies.pop()!;
  }

  async #load(dekId: string, loader: (dekId: string) => Promise<Buffer>, flight: Inflight): Promise<Buffer[]> {
    try {
      const loaded = await loader(dekId);
      if (!Buffer.isBuffer(loaded)) throw new TypeError("DEK loader must return a Buffer");
      // Every waiter's copy is made now, in the same synchronous step as the insert: a later eviction (which
      // zeroes `loaded`) can then never hand a waiter zeros.
      const copies = Array.from({ length: flight.waiters }, () => Buffer.from(loaded));
      if (flight.invalidated) loaded.fill(0);
      else this.#lru.set(dekId, loaded);
      return copies;
    } finally {
      // Removed before waiters resume, so later callers hit the LRU (or load afresh) instead of this flight.
      if (this.#inflight.get(dekId) === flight) this.#inflight.delete(dekId);
    }
  }

  /** Most DEKs held at once. */
  get max(): number {
    return this.#lru.max;
  }

  /** Whether `dekId` is cached and unexpired (no load, no LRU bump). */
  has(dekId: string): boolean {
    return this.#lru.has(dekId);
  }

  /** Drops (and zeroes) one DEK, e.g. after crypto-shredding an instance. @returns whether it was cached. */
  delete(dekId: string): boolean {
    const flight = this.#inflight.get(dekId);
    if (flight) flight.invalidated = true;
    return this.#lru.delete(dekId);
  }

  /** Drops and zeroes every DEK, and keeps loads in progress from being cached; call when a root key is disabled. */
  clear(): void {
    for (const flight of this.#inflight.values()) flight.invalidated = true;
    this.#lru.clear();
  }
}
