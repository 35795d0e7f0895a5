/**
 * The soak's verdict (bench/soak/verdict.ts) on made-up series: what a flat server passes with, and that a
 * growing RSS, growing handles or descriptors, any error, a stall or a server problem each fail it. The soak
 * itself only ever meets a healthy server; this is where its ability to fail is shown.
 */
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS, judge, median, percentile, warmupSeconds, type RunRecord, type Sample } from "../../bench/soak/verdict.js";

const MiB = 1024 * 1024;

/** Samples every `every` s for `minutes`, from `f(t)`; RSS swings ±45 MiB around the figure, as a busy server's does between major GCs. */
function series(minutes: number, rss: (t: number) => number, extra: (t: number) => Partial<Sample> = () => ({}), every = 5): Sample[] {
  const out: Sample[] = [];
  for (let t = every; t <= minutes * 60; t += every) {
    const swing = [0, 45, -30, 20, -45, 35, -10][(t / every) % 7]! * MiB;
    out.push({ t, rssBytes: rss(t) + swing, activeHandles: 36 + ((t / every) % 5), openFds: 54 + ((t / every) % 2), ...extra(t) });
  }
  return out;
}

function run(minutes: number, samples: Sample[], over: Partial<RunRecord> = {}): RunRecord {
  return { durationSeconds: minutes * 60, samples, errors: {}, requestsPerMinute: Array.from({ length: Math.ceil(minutes) }, () => 16_000), serverProblems: [], ...over };
}

describe("warm-up", () => {
  it("is the first minute, or half of a shorter run, or 10 % of a long one", () => {
    expect(warmupSeconds(120)).toBe(60);
    expect(warmupSeconds(60)).toBe(30);
    expect(warmupSeconds(30 * 60)).toBe(180);
    expect(warmupSeconds(60 * 60)).toBe(360);
  });
});

describe("judge", () => {
  it("passes a flat server: RSS swinging around 200 MiB, handles and descriptors steady, no errors", () => {
    for (const minutes of [2, 10, 60]) {
      const v = judge(run(minutes, series(minutes, () => 200 * MiB)));
      expect(v.reasons, `${minutes} min`).toEqual([]);
      expect(v.pass).toBe(true);
    }
  });

  it("passes a server that grows during the warm-up and is flat after it", () => {
    // 100 MiB at the start, 200 MiB from 40 s on: heaps and caches filling.
    const v = judge(run(2, series(2, (t) => (t < 40 ? 100 + 2.5 * t : 200) * MiB)));
    expect(v.reasons).toEqual([]);
  });

  it("fails an RSS that keeps growing after the warm-up, with the figures", () => {
    // 2 MiB every second after the first minute: +120 MiB by the end of a 2-minute run. (A 2-minute run sees
    // only fast leaks: its windows' middles are 35 s apart; an hour's are about 30 minutes apart.)
    const v = judge(run(2, series(2, (t) => (200 + 2 * Math.max(0, t - 60)) * MiB)));
    expect(v.pass).toBe(false);
    expect(v.reasons.join("\n")).toMatch(/^RSS grew: median .* MiB over the last 6 samples against .* MiB over the first 4 after warm-up/m);
    // An hour at 2 MiB/min: slow, but +100 MiB by the end.
    expect(judge(run(60, series(60, (t) => (200 + (2 * t) / 60) * MiB))).pass).toBe(false);
  });

  it("fails a sudden jump after the warm-up that the end window's median would hide", () => {
    const v = judge(run(2, series(2, (t) => (t === 75 ? 420 : 200) * MiB)));
    expect(v.reasons).toEqual([expect.stringMatching(/^RSS peaked at .* MiB after warm-up, above/)]);
  });

  it("fails handles or descriptors that grow after the warm-up, however flat the memory", () => {
    const handles = judge(run(2, series(2, () => 200 * MiB, (t) => ({ activeHandles: t <= 60 ? 40 : 40 + Math.floor((t - 60) / 5) * 3 }))));
    expect(handles.reasons).toEqual([
      "active handles grew: median 68.5 over the last 6 samples against 47.5 over the first 4 after warm-up (+14 allowed)",
      "active handles reached 76 after warm-up, above the warm-up's 40 + 32",
    ]);
    // On MySQL, with ~150 handles of which most are timers of database calls in flight, the allowance is 30 %.
    const mysql = judge(run(2, series(2, () => 200 * MiB, (t) => ({ activeHandles: t <= 60 ? 150 : 150 + Math.floor((t - 60) / 5) * 8 }))));
    expect(mysql.reasons).toEqual([
      "active handles grew: median 226 over the last 6 samples against 170 over the first 4 after warm-up (+51 allowed)",
      "active handles reached 246 after warm-up, above the warm-up's 150 + 75",
    ]);
    const fds = judge(run(2, series(2, () => 200 * MiB, (t) => ({ openFds: t <= 60 ? 55 : 55 + Math.floor((t - 60) / 5) }))));
    expect(fds.reasons).toEqual(["open file descriptors grew: median 64.5 over the last 6 samples against 57.5 over the first 4 after warm-up (+4 allowed)"]);
  });

  it("lets handles move with the calls in flight, but not jump far above the warm-up", () => {
    // Timers, immediates and file-system requests come and go with the load: 36 to 47, and once 17 above the
    // warm-up's largest (seen in a 10-minute run).
    expect(judge(run(2, series(2, () => 200 * MiB, (t) => ({ activeHandles: 36 + ((t / 5) % 12) })))).pass).toBe(true);
    expect(judge(run(2, series(2, () => 200 * MiB, (t) => ({ activeHandles: t === 90 ? 64 : 36 + ((t / 5) % 12) })))).pass).toBe(true);
    const jump = judge(run(2, series(2, () => 200 * MiB, (t) => ({ activeHandles: t === 90 ? 120 : 40 }))));
    expect(jump.reasons).toEqual(["active handles reached 120 after warm-up, above the warm-up's 40 + 32"]);
    // The MySQL run's figures (128 to 200 within a minute): within the allowance.
    const noisy = [200, 170, 186, 135, 154, 163, 128, 153, 131, 159, 167, 148];
    expect(judge(run(2, series(2, () => 200 * MiB, (t) => ({ activeHandles: noisy[(t / 5) % 12]! })))).reasons).toEqual([]);
  });

  it("fails on any error, however flat the server", () => {
    const v = judge(run(2, series(2, () => 200 * MiB), { errors: { UNAVAILABLE: 2, CHECK_AccessCertificate: 1, DEADLINE_EXCEEDED: 0 } }));
    expect(v.pass).toBe(false);
    expect(v.reasons).toEqual(["3 errors (UNAVAILABLE 2, CHECK_AccessCertificate 1)"]);
    expect(v.figures.errors).toBe(3);
  });

  it("fails a stall, a server problem, and a run too short to judge", () => {
    expect(judge(run(2, series(2, () => 200 * MiB), { requestsPerMinute: [16_000, 0] })).reasons).toEqual(["no request completed in minute 2"]);
    expect(judge(run(2, series(2, () => 200 * MiB), { serverProblems: ["the server exited (1) during the run"] })).reasons).toEqual(["the server exited (1) during the run"]);
    const short = judge(run(2, series(2, () => 200 * MiB).filter((s) => s.t < 65)));
    expect(short.pass).toBe(false);
    expect(short.reasons).toEqual([expect.stringMatching(/^only 0 server samples after the 60 s warm-up/)]);
  });

  it("ignores samples taken after the planned end (the server's last line while stopping)", () => {
    const samples = [...series(2, () => 200 * MiB), { t: 125, rssBytes: 900 * MiB, activeHandles: 500, openFds: 500 }];
    expect(judge(run(2, samples)).pass).toBe(true);
  });

  it("uses the documented bounds", () => {
    expect(DEFAULT_LIMITS).toMatchObject({ rssGrowthFraction: 0.25, rssGrowthBytes: 40 * MiB, handleTrendSlack: 8, handleTrendFraction: 0.3, handlePeakSlack: 32, handlePeakFraction: 0.5, fdTrendSlack: 4, fdPeakSlack: 16 });
  });
});

describe("median and percentile", () => {
  it("are the usual ones", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentile(Array.from({ length: 100 }, (_, i) => i + 1), 99)).toBe(99);
  });
});
