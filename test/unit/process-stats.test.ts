/** src/jobs/process-stats.ts in this process: the sample's shape, one line per interval, and nothing after stop(). */
import pino from "pino";
import { describe, expect, it } from "vitest";
import { startProcessStats } from "../../src/jobs/process-stats.js";

describe("startProcessStats", () => {
  it("logs a sample per interval and stops logging when stopped", async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    const stats = startProcessStats(50, log);
    await new Promise((r) => setTimeout(r, 280));
    stats.stop();
    const n = lines.length;
    expect(n).toBeGreaterThanOrEqual(3);
    expect(lines[0]).toMatchObject({ msg: "process stats", rssBytes: expect.any(Number), activeHandles: expect.any(Number), openFds: expect.any(Number) });
    await new Promise((r) => setTimeout(r, 200));
    expect(lines.length).toBe(n);
  });

  it("measures event-loop delay since the previous sample: a 300 ms block shows once, then is gone", async () => {
    const log = pino({ level: "silent" });
    const stats = startProcessStats(0, log);
    try {
      await new Promise((r) => setTimeout(r, 100));
      const end = Date.now() + 300;
      while (Date.now() < end) {
        // Block the loop on purpose.
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(stats.sample().eventLoopDelayMs.max).toBeGreaterThanOrEqual(250);
      await new Promise((r) => setTimeout(r, 100));
      expect(stats.sample().eventLoopDelayMs.max).toBeLessThan(250);
    } finally {
      stats.stop();
    }
  });
});
