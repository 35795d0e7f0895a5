/**
 * CM_PROCESS_STATS_INTERVAL_SECONDS with the built server as a process: real `process stats` lines on its stdout,
 * each interval, with figures that agree with what /proc says about the process; none when the variable is unset.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { startServerProcess, type ServerProcess } from "../helpers/process.js";

const started: { p: ServerProcess; dir: string }[] = [];

async function start(env: Record<string, string>): Promise<ServerProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), "cm-e2e-stats-"));
  const p = await startServerProcess({ CM_DATA_DIR: dir, ...env });
  started.push({ p, dir });
  return p;
}

afterEach(async () => {
  for (const { p, dir } of started.splice(0)) {
    if (p.child.exitCode === null) p.child.kill("SIGTERM");
    expect(await p.exited).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  }
});

const statsLines = (p: ServerProcess) => p.logs.filter((l) => l.includes('"msg":"process stats"')).map((l) => JSON.parse(l) as Record<string, unknown>);

describe("process stats", () => {
  it("logs one line per interval with memory, handles, file descriptors and event-loop delay", async () => {
    const p = await start({ CM_PROCESS_STATS_INTERVAL_SECONDS: "1" });
    const t0 = Date.now();
    await p.waitForLog(/"msg":"process stats"/, 5000);
    while (statsLines(p).length < 3) await new Promise((r) => setTimeout(r, 100));
    // Three lines about a second apart (the first one interval after the start).
    expect(Date.now() - t0).toBeGreaterThan(1500);
    const vmRss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p.child.pid}/status`, "utf8"))![1]) * 1024;
    const fds = readdirSync(`/proc/${p.child.pid}/fd`).length;
    for (const line of statsLines(p)) {
      expect(line).toMatchObject({ level: 30, component: "process-stats" });
      for (const field of ["rssBytes", "heapUsedBytes", "heapTotalBytes", "externalBytes", "arrayBuffersBytes", "activeHandles", "openFds"]) {
        expect(Number.isInteger(line[field]), field).toBe(true);
        expect(line[field] as number, field).toBeGreaterThan(0);
      }
      expect(line.heapUsedBytes as number).toBeLessThan(line.rssBytes as number);
      // The listening socket keeps the loop alive, and the resources add up to the count.
      const resources = line.activeResources as Record<string, number>;
      expect(resources.TCPServerWrap).toBeGreaterThanOrEqual(1);
      expect(Object.values(resources).reduce((a, b) => a + b, 0)).toBe(line.activeHandles);
      const delay = line.eventLoopDelayMs as { p50: number; p99: number; max: number };
      // An idle loop is late by about its 10 ms resolution; never by seconds.
      expect(delay.p50).toBeGreaterThan(0);
      expect(delay.p50).toBeLessThanOrEqual(delay.p99);
      expect(delay.p99).toBeLessThanOrEqual(delay.max);
      expect(delay.max).toBeLessThan(1000);
    }
    const last = statsLines(p).at(-1)!;
    // The same process as /proc sees it, a moment apart: RSS within 25 %, descriptors within a few.
    expect(Math.abs((last.rssBytes as number) - vmRss)).toBeLessThan(0.25 * vmRss);
    expect(Math.abs((last.openFds as number) - fds)).toBeLessThanOrEqual(3);
  });

  it("logs nothing of the kind by default", async () => {
    const p = await start({});
    await new Promise((r) => setTimeout(r, 2500));
    expect(statsLines(p)).toEqual([]);
  });
});
