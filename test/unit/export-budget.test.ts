/**
 * ExportBudget (src/services/export-budget.ts): the per-caller stream cap, admission against the memory budget,
 * FIFO waiting for room, cancellation while waiting, and every lease giving everything back on close.
 */
import { describe, expect, it } from "vitest";
import { CancelledError, ExportBudgetExhaustedError } from "../../src/domain/errors.js";
import { ExportBudget } from "../../src/services/export-budget.js";

describe("ExportBudget", () => {
  it("caps streams per caller, not across callers, and frees the slot on close (once)", () => {
    const b = new ExportBudget(1000, 2);
    const a1 = b.open("user:a");
    b.open("user:a");
    expect(() => b.open("user:a")).toThrow(ExportBudgetExhaustedError);
    try {
      b.open("user:a");
    } catch (e) {
      expect([(e as ExportBudgetExhaustedError).reason, (e as ExportBudgetExhaustedError).metadata.limit]).toEqual(["EXPORT_BUDGET_EXHAUSTED", "streams_per_caller"]);
      expect((e as ExportBudgetExhaustedError).retryAfterMs).toBeGreaterThan(0);
    }
    b.open("user:b");
    a1.close();
    a1.close();
    expect(b.openStreams).toBe(2);
    b.open("user:a");
    expect(() => b.open("user:a")).toThrow(ExportBudgetExhaustedError);
  });

  it("caps streams per connection, whoever calls on it, and frees the slot on close", () => {
    const b = new ExportBudget(1000, 10, 2);
    const c1 = b.open("user:a", "ipv4:10.0.0.7:5000");
    b.open("user:b", "ipv4:10.0.0.7:5000");
    try {
      b.open("user:c", "ipv4:10.0.0.7:5000");
      expect.unreachable();
    } catch (e) {
      expect([(e as ExportBudgetExhaustedError).metadata.limit, (e as ExportBudgetExhaustedError).metadata.value]).toEqual(["streams_per_connection", "2"]);
    }
    b.open("user:c", "ipv4:10.0.0.7:5001");
    c1.close();
    b.open("user:c", "ipv4:10.0.0.7:5000");
    expect(b.openStreams).toBe(3);
  });

  it("refuses new streams when the budget is full or streams wait, lets waiters in FIFO, and gives all back on close", async () => {
    const b = new ExportBudget(100, 10);
    const x = b.open("p");
    await x.reserve(80, undefined);
    const y = b.open("p");
    let yIn = false;
    const yWait = y.reserve(50, undefined).then(() => (yIn = true));
    await Promise.resolve();
    expect(yIn).toBe(false);
    // Someone waits: a new stream is refused even though 20 bytes are free.
    expect(() => b.open("q")).toThrow(/retry after/);
    x.release(40);
    await yWait;
    expect(b.usedBytes).toBe(90);
    x.resize(200); // a read that came out larger is counted in full
    expect(b.usedBytes).toBe(250);
    expect(() => b.open("q")).toThrow(ExportBudgetExhaustedError);
    x.close();
    y.close();
    expect([b.usedBytes, b.openStreams]).toEqual([0, 0]);
  });

  it("grants the first reservation whatever its size, and stops waiting when the call is cancelled", async () => {
    const b = new ExportBudget(100, 10);
    const big = b.open("p");
    const w = b.open("p");
    await big.reserve(500, undefined);
    expect(b.usedBytes).toBe(500);
    const ac = new AbortController();
    const waiting = w.reserve(10, ac.signal);
    ac.abort();
    await expect(waiting).rejects.toBeInstanceOf(CancelledError);
    w.close();
    big.close();
    expect(b.usedBytes).toBe(0);
    const again = b.open("p");
    await again.reserve(10, undefined);
    expect(b.usedBytes).toBe(10);
    again.close();
  });
});
