import { randomBytes } from "node:crypto";

import { afterEach, describe, expect, it, vi } from "vitest";

import { DekCache } from "../../src/crypto/dekcache.js";

const ZERO = Buffer.alloc(32);

/** A loader that hands out fresh DEKs and remembers each buffer it gave the cache. */
function trackingLoader() {
  const given = new Map<string, Buffer[]>();
  const loader = vi.fn(async (id: string) => {
    const b = randomBytes(32);
    given.set(id, [...(given.get(id) ?? []), b]);
    return b;
  });
  return { loader, given };
}

/** Resolves when `n` promise ticks have passed (lets concurrent callers queue up). */
const ticks = async (n = 5) => {
  for (let i = 0; i < n; i++) await Promise.resolve();
};

describe("crypto/dekcache", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("loads once, then serves copies the caller owns", async () => {
    const cache = new DekCache({ max: 10, ttlMs: 60_000 });
    const { loader } = trackingLoader();
    const a = await cache.getOrLoad("d1", loader);
    const b = await cache.getOrLoad("d1", loader);
    expect(loader).toHaveBeenCalledTimes(1);
    expect(a).toEqual(b);
    expect(a).not.toBe(b);
    a.fill(0); // a caller zeroing its copy does not affect the cache
    expect(await cache.getOrLoad("d1", loader)).toEqual(b);
  });

  it("concurrent getOrLoad for one id calls the loader once (one unwrap for N callers)", async () => {
    const cache = new DekCache({ max: 10, ttlMs: 60_000 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const dek = randomBytes(32);
    const original = Buffer.from(dek);
    const loader = vi.fn(async () => {
      await gate;
      return dek;
    });
    const pending = Array.from({ length: 20 }, () => cache.getOrLoad("d1", loader));
    await ticks();
    release();
    const results = await Promise.all(pending);
    expect(loader).toHaveBeenCalledTimes(1);
    for (const r of results) expect(r).toEqual(original);
    expect(new Set(results).size).toBe(20); // every caller its own copy
    for (const r of results) expect(r).not.toBe(dek);
    cache.clear();
    expect(dek).toEqual(ZERO); // the loader's buffer was the cached one
    for (const r of results) expect(r).toEqual(original); // callers' copies are untouched
  });

  it("a failed load rejects every waiter, is not cached, and the next call retries", async () => {
    const cache = new DekCache({ max: 10, ttlMs: 60_000 });
    const boom = new Error("backend down");
    const failing = vi.fn(async () => {
      await ticks(2);
      throw boom;
    });
    const results = await Promise.allSettled([cache.getOrLoad("d1", failing), cache.getOrLoad("d1", failing)]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(failing).toHaveBeenCalledTimes(1);
    expect(cache.has("d1")).toBe(false);
    const syncThrow = vi.fn((): Promise<Buffer> => {
      throw boom;
    });
    await expect(cache.getOrLoad("d1", syncThrow)).rejects.toBe(boom);
    const { loader } = trackingLoader();
    await cache.getOrLoad("d1", loader);
    expect(loader).toHaveBeenCalledTimes(1);
  });

  it("is bounded by count: the least recently used DEK is evicted and zeroed", async () => {
    const cache = new DekCache({ max: 3, ttlMs: 60_000 });
    const { loader, given } = trackingLoader();
    for (const id of ["a", "b", "c"]) await cache.getOrLoad(id, loader);
    await cache.getOrLoad("a", loader); // a is now the most recently used
    await cache.getOrLoad("d", loader); // evicts b
    expect(cache.size).toBe(3);
    expect(cache.has("b")).toBe(false);
    expect(["a", "c", "d"].filter((id) => cache.has(id))).toEqual(["a", "c", "d"]);
    expect(given.get("b")![0]!).toEqual(ZERO); // dispose wiped it
    for (const id of ["a", "c", "d"]) expect(given.get(id)![0]!, `DEK ${id}`).not.toEqual(ZERO);
    expect(loader).toHaveBeenCalledTimes(4);
  });

  it("dispose zeroes the stored DEK on delete and clear", async () => {
    const cache = new DekCache({ max: 10, ttlMs: 60_000 });
    const { loader, given } = trackingLoader();
    await cache.getOrLoad("a", loader);
    await cache.getOrLoad("b", loader);
    expect(cache.delete("a")).toBe(true);
    expect(given.get("a")![0]!).toEqual(ZERO);
    expect(given.get("b")![0]!).not.toEqual(ZERO);
    cache.clear();
    expect(given.get("b")![0]!).toEqual(ZERO);
    expect(cache.size).toBe(0);
  });

  it("an eviction racing with waiters never hands a waiter zeros", async () => {
    const cache = new DekCache({ max: 1, ttlMs: 60_000 });
    const gates: Record<string, () => void> = {};
    const originals: Record<string, Buffer> = {};
    const loader = (id: string) =>
      new Promise<Buffer>((resolve) => {
        gates[id] = () => {
          const b = randomBytes(32);
          originals[id] = Buffer.from(b);
          resolve(b);
        };
      });
    const a = Array.from({ length: 3 }, () => cache.getOrLoad("a", loader));
    const b = Array.from({ length: 3 }, () => cache.getOrLoad("b", loader));
    await ticks();
    gates.a!();
    gates.b!(); // inserting b evicts (and zeroes) a, possibly before a's waiters resume
    for (const r of await Promise.all(a)) expect(r).toEqual(originals.a!);
    for (const r of await Promise.all(b)) expect(r).toEqual(originals.b!);
  });

  it("expires by TTL from load time (injected clock), and reads do not extend it", async () => {
    let now = 1_000;
    const cache = new DekCache({ max: 10, ttlMs: 500, now: () => now });
    const { loader } = trackingLoader();
    await cache.getOrLoad("d1", loader);
    now += 400;
    await cache.getOrLoad("d1", loader);
    expect(loader).toHaveBeenCalledTimes(1);
    now += 101; // 501 ms after load
    expect(cache.has("d1")).toBe(false);
    await cache.getOrLoad("d1", loader);
    expect(loader).toHaveBeenCalledTimes(2);
  });

  it("purges and zeroes expired DEKs by timer, without any lookup (fake timers)", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const cache = new DekCache({ max: 10, ttlMs: 1_000, now: () => Date.now() });
    const { loader, given } = trackingLoader();
    await cache.getOrLoad("d1", loader);
    const stored = given.get("d1")![0]!;
    vi.advanceTimersByTime(999);
    expect(stored).not.toEqual(ZERO);
    vi.advanceTimersByTime(10);
    expect(stored).toEqual(ZERO);
    expect(cache.size).toBe(0);
  });

  it("clear() during a load keeps that load out of the cache (root key disabled meanwhile)", async () => {
    const cache = new DekCache({ max: 10, ttlMs: 60_000 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const p = cache.getOrLoad("d1", async () => {
      await gate;
      return randomBytes(32);
    });
    await ticks();
    cache.clear();
    release();
    expect(await p).toHaveLength(32); // the caller that asked still gets it
    expect(cache.has("d1")).toBe(false);
  });

  it("validates options", () => {
    expect(() => new DekCache({ max: 0, ttlMs: 1 })).toThrow(RangeError);
    expect(() => new DekCache({ max: 1, ttlMs: 0 })).toThrow(RangeError);
    expect(() => new DekCache({ max: 1.5, ttlMs: 1 })).toThrow(RangeError);
  });
});
