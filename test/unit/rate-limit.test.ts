import { describe, expect, it } from "vitest";

import { RateLimiter } from "../../src/auth/rate-limit.js";
import { RateLimitedError } from "../../src/domain/errors.js";

/** A clock the test moves by hand, in ms. */
function manualClock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

describe("RateLimiter", () => {
  it("allows the burst back to back, then refuses with the wait until the next token", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 10, burst: 5, maxKeys: 10 }, clock.now);
    for (let i = 0; i < 5; i++) expect(rl.take("a")).toBe(0);
    expect(rl.take("a")).toBe(100);
    clock.advance(40);
    expect(rl.take("a")).toBe(60);
    clock.advance(59);
    expect(rl.take("a")).toBe(1);
    clock.advance(1);
    expect(rl.take("a")).toBe(0);
    expect(rl.take("a")).toBe(100);
  });

  it("refills at the rate: one call per interval passes for ever, never more", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 3, burst: 2, maxKeys: 10 }, clock.now);
    expect(rl.take("a")).toBe(0);
    expect(rl.take("a")).toBe(0);
    let allowed = 0;
    // 10 s in 1 ms steps, calling every ms: 3/s means 30 more calls, with fractional intervals (333.3 ms).
    for (let ms = 0; ms < 10_000; ms++) {
      clock.advance(1);
      if (rl.take("a") === 0) allowed++;
    }
    expect(allowed).toBe(30);
  });

  it("the wait it returns is exact: waiting that long lets the call through, with fractional intervals too", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 3, burst: 1, maxKeys: 10 }, clock.now);
    for (let i = 0; i < 50; i++) {
      expect(rl.take("a")).toBe(0);
      const wait = rl.take("a");
      expect(wait).toBeGreaterThanOrEqual(333);
      expect(wait).toBeLessThanOrEqual(334);
      clock.advance(wait);
    }
  });

  it("refills up to the burst only, however long the key was idle", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 100, burst: 3, maxKeys: 10 }, clock.now);
    clock.advance(3_600_000);
    for (let i = 0; i < 3; i++) expect(rl.take("a")).toBe(0);
    expect(rl.take("a")).toBe(10);
  });

  it("keeps keys independent", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 1, burst: 2, maxKeys: 10 }, clock.now);
    expect([rl.take("a"), rl.take("a"), rl.take("a")]).toEqual([0, 0, 1000]);
    expect([rl.take("b"), rl.take("b"), rl.take("b")]).toEqual([0, 0, 1000]);
    clock.advance(1000);
    expect([rl.take("a"), rl.take("a")]).toEqual([0, 1000]);
  });

  it("enforce throws RateLimitedError with the wait and the limit", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 2, burst: 1, maxKeys: 10 }, clock.now);
    rl.enforce("a");
    let err: unknown;
    try {
      rl.enforce("a");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAfterMs).toBe(500);
    expect((err as RateLimitedError).kind).toBe("RESOURCE_EXHAUSTED");
    expect((err as RateLimitedError).metadata).toEqual({ limit: "2 calls/s, burst 1" });
  });

  it("refuses settings out of range", () => {
    expect(() => new RateLimiter({ ratePerSecond: 0, burst: 1, maxKeys: 1 })).toThrow(RangeError);
    expect(() => new RateLimiter({ ratePerSecond: Number.NaN, burst: 1, maxKeys: 1 })).toThrow(RangeError);
    expect(() => new RateLimiter({ ratePerSecond: 1, burst: 0, maxKeys: 1 })).toThrow(RangeError);
    expect(() => new RateLimiter({ ratePerSecond: 1, burst: 1.5, maxKeys: 1 })).toThrow(RangeError);
    expect(() => new RateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 0 })).toThrow(RangeError);
  });

  it("uses performance.now by default", () => {
    const rl = new RateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 10 });
    expect(rl.take("a")).toBe(0);
    expect(rl.take("a")).toBeGreaterThan(900);
  });

  it("never tracks more than maxKeys under a million distinct keys", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 1, burst: 5, maxKeys: 1000 }, clock.now);
    let max = 0;
    for (let i = 0; i < 1_000_000; i++) {
      if (rl.take(`k${i}`) !== 0) throw new Error(`fresh key k${i} refused`);
      if (rl.size > max) max = rl.size;
      if (i % 100 === 0) clock.advance(1);
    }
    expect(max).toBe(1000);
  });

  it("drops full buckets lazily, so idle keys do not hold memory and are not counted as overflow", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 10, burst: 2, maxKeys: 1000 }, clock.now);
    for (let i = 0; i < 500; i++) rl.take(`k${i}`);
    expect(rl.size).toBe(500);
    clock.advance(1000); // every bucket full again
    for (let i = 0; i < 500; i++) rl.take(`n${i}`);
    // Each call drops the oldest full bucket: the old keys are gone, the new ones remain.
    expect(rl.size).toBe(500);
    expect(rl.overflowEvictions).toBe(0);
  });

  it("keeps a hammering key limited while a flood of new keys churns the map", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 10, burst: 5, maxKeys: 100 }, clock.now);
    let allowed = 0;
    let fresh = 0;
    // 10 s: every ms the flooder calls once and 50 new principals arrive (500k in all, 5,000 times maxKeys).
    for (let ms = 0; ms < 10_000; ms++) {
      if (rl.take("flooder") === 0) allowed++;
      for (let j = 0; j < 50; j++) rl.take(`new-${fresh++}`);
      if (rl.size > 100) throw new Error(`${rl.size} keys tracked`);
      clock.advance(1);
    }
    // The burst (t = 0..4 ms), then one every 100 ms from t = 100 to 9,900: a reset bucket would have let 5
    // more through at every eviction.
    expect(allowed).toBe(5 + 99);
    expect(rl.overflowEvictions).toBeGreaterThan(0);
  });

  it("a refused call still counts as use: a key refused over and over is not the one evicted", () => {
    const clock = manualClock();
    const rl = new RateLimiter({ ratePerSecond: 1, burst: 1, maxKeys: 3 }, clock.now);
    expect(rl.take("flooder")).toBe(0);
    // Between each of its refused calls two other keys arrive; with room for three, only the oldest goes.
    for (let i = 0; i < 100; i++) {
      clock.advance(1);
      expect(rl.take("flooder")).toBeGreaterThan(0);
      rl.take(`x${i}`);
      rl.take(`y${i}`);
    }
  });
});
