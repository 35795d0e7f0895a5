/**
 * The soak's verdict, as a pure function of what a run recorded, so it can be tested on made-up series (a flat
 * one passes, a growing one fails) without running anything for an hour.
 *
 * Definitions (times are seconds since the traffic started):
 * - **Warm-up**: the first `warmupSeconds(run)` = max(60 s, 10 % of the run), but never more than half the run:
 *   60 s for a 2-minute run (its first half), 6 min for an hour. Heaps, caches (DEKs, policies, prepared
 *   statements) and connection pools fill during it; nothing is judged on it except as the baseline for handles.
 * - **Post-warm-up samples** `P`: the server's samples after the warm-up. The **reference window** is the first
 *   third of them (at least one sample), the **end window** the last half (at least one).
 * - **RSS trend**: median(end) ≤ median(reference) + max(25 %, 40 MiB). Medians, not single samples: a busy
 *   server's RSS follows its heap, which swings by 80 MiB and more between major GCs (measured: 143 to 235 MiB
 *   within 30 s at c=64), so one sample says little and the median of several is steady. The 40 MiB floor keeps
 *   the bound above that noise for a small server. What it catches, for a steady leak on a ~200 MiB server
 *   (test/unit/soak-verdict.test.ts): from about 1.8 MiB/min in an hour's run (the windows' middles are half an
 *   hour apart), 10 MiB/min in 10 minutes, 1.6 MiB/s in a 2-minute run (35 s apart: a smoke test, not a soak).
 * - **RSS peak**: every post-warm-up sample ≤ median(reference) + max(50 %, 96 MiB): a leak fast enough to
 *   matter in a short run, or one that the end window's median hides, still fails.
 * - **Handles**: median(end) ≤ median(reference) + max(8, 30 %), and every post-warm-up sample ≤ the warm-up's
 *   largest + max(32, 50 %). Connections and the listener are steady (28 client sockets at c=64: each generated
 *   client has its own; 10 more to MySQL), but calls in flight hold timers, immediates and file-system requests,
 *   so single samples move with the load: on SQLite 38 to 67 in 10 minutes, median 46; on MySQL, where every
 *   database call in flight holds a timer, 128 to 200 within a minute, 106 of 148 being timers. Medians hold
 *   still; a steady leak grows without bound and fails the trend in a long run (one handle per 1,000 calls at
 *   300 calls/s: +540 between the windows of an hour's run).
 * - **File descriptors**: median(end) ≤ median(reference) + 4, and every sample ≤ the warm-up's largest + 16
 *   (database files, sockets and pipes are opened once; a keystore change opens a few for a moment: measured 51
 *   to 58). A descriptor leaked per 1,000 calls fails at once.
 * - **Errors**: zero unexpected answers or failed checks of any kind, zero server problems (error-level log
 *   lines, an early exit, a secret in the log), and no minute without completed requests (a stall).
 */

/** One server sample, from a `process stats` log line. */
export interface Sample {
  /** Seconds since the traffic started. */
  t: number;
  rssBytes: number;
  activeHandles: number;
  /** Undefined where the server has no /proc. */
  openFds?: number;
}

/** What a run recorded. */
export interface RunRecord {
  /** The planned length of the traffic, seconds. */
  durationSeconds: number;
  samples: Sample[];
  /** Unexpected answers (by gRPC code name) and failed checks (by check name), counted. */
  errors: Record<string, number>;
  /** Requests completed in each minute of traffic (a last partial minute included). */
  requestsPerMinute: number[];
  /** What went wrong with the server itself, one sentence each (error-level log lines, an early exit, ...). */
  serverProblems: string[];
}

/** The bounds; the defaults are those documented above. */
export interface Limits {
  rssGrowthFraction: number;
  rssGrowthBytes: number;
  rssPeakFraction: number;
  rssPeakBytes: number;
  /** How far the end window's median may exceed the reference window's, and any sample the warm-up's largest. */
  handleTrendSlack: number;
  handleTrendFraction: number;
  handlePeakSlack: number;
  handlePeakFraction: number;
  fdTrendSlack: number;
  fdPeakSlack: number;
  /** Fewer post-warm-up samples than this cannot show a trend: the run fails as unjudgeable. */
  minPostWarmupSamples: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  rssGrowthFraction: 0.25,
  rssGrowthBytes: 40 * MiB,
  rssPeakFraction: 0.5,
  rssPeakBytes: 96 * MiB,
  handleTrendSlack: 8,
  handleTrendFraction: 0.3,
  handlePeakSlack: 32,
  handlePeakFraction: 0.5,
  fdTrendSlack: 4,
  fdPeakSlack: 16,
  minPostWarmupSamples: 3,
});

/** The figures the verdict was reached on (bytes, counts). */
export interface VerdictFigures {
  warmupSeconds: number;
  postWarmupSamples: number;
  rssReferenceMedian?: number;
  rssEndMedian?: number;
  rssTrendLimit?: number;
  rssPostMax?: number;
  rssPeakLimit?: number;
  handlesWarmupMax?: number;
  handlesPostMax?: number;
  handlesReferenceMedian?: number;
  handlesEndMedian?: number;
  fdsWarmupMax?: number;
  fdsPostMax?: number;
  fdsReferenceMedian?: number;
  fdsEndMedian?: number;
  errors: number;
}

/** PASS or FAIL with every reason it failed for. */
export interface Verdict {
  pass: boolean;
  reasons: string[];
  figures: VerdictFigures;
}

/** The warm-up of a run of `durationSeconds`, seconds: max(60, 10 %), at most half the run. */
export function warmupSeconds(durationSeconds: number): number {
  return Math.min(durationSeconds / 2, Math.max(60, durationSeconds / 10));
}

/** The median of `xs` (the mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The `p`-th percentile (0-100, nearest rank) of `xs`; NaN for none. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const mib = (b: number) => `${(b / MiB).toFixed(1)} MiB`;

/** Judges a run against `limits` (see the module's comment for the definitions). */
export function judge(run: RunRecord, limits: Limits = DEFAULT_LIMITS): Verdict {
  const reasons: string[] = [];
  const warmup = warmupSeconds(run.durationSeconds);
  const during = run.samples.filter((s) => s.t <= run.durationSeconds);
  const warm = during.filter((s) => s.t <= warmup);
  const post = during.filter((s) => s.t > warmup).sort((a, b) => a.t - b.t);
  const errorCount = Object.values(run.errors).reduce((a, b) => a + b, 0);
  const figures: VerdictFigures = { warmupSeconds: warmup, postWarmupSamples: post.length, errors: errorCount };

  if (errorCount > 0) {
    const list = Object.entries(run.errors)
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${n}`)
      .join(", ");
    reasons.push(`${errorCount} errors (${list})`);
  }
  reasons.push(...run.serverProblems);
  const stalled = run.requestsPerMinute.map((n, i) => (n === 0 ? i + 1 : 0)).filter((m) => m > 0);
  if (run.requestsPerMinute.length === 0) reasons.push("no requests completed");
  else if (stalled.length > 0) reasons.push(`no request completed in minute ${stalled.join(", ")}`);

  if (post.length < limits.minPostWarmupSamples) {
    reasons.push(`only ${post.length} server samples after the ${warmup} s warm-up (need ${limits.minPostWarmupSamples}): nothing to judge memory and handles on`);
    return { pass: false, reasons, figures };
  }

  const refCount = Math.max(1, Math.floor(post.length / 3));
  const endCount = Math.max(1, Math.ceil(post.length / 2));
  const ref = median(post.slice(0, refCount).map((s) => s.rssBytes));
  const end = median(post.slice(-endCount).map((s) => s.rssBytes));
  const trendLimit = ref + Math.max(limits.rssGrowthFraction * ref, limits.rssGrowthBytes);
  const postMax = Math.max(...post.map((s) => s.rssBytes));
  const peakLimit = ref + Math.max(limits.rssPeakFraction * ref, limits.rssPeakBytes);
  Object.assign(figures, { rssReferenceMedian: ref, rssEndMedian: end, rssTrendLimit: trendLimit, rssPostMax: postMax, rssPeakLimit: peakLimit });
  if (end > trendLimit) {
    reasons.push(`RSS grew: median ${mib(end)} over the last ${endCount} samples against ${mib(ref)} over the first ${refCount} after warm-up (limit ${mib(trendLimit)})`);
  }
  if (postMax > peakLimit) reasons.push(`RSS peaked at ${mib(postMax)} after warm-up, above ${mib(peakLimit)} (reference median ${mib(ref)})`);

  // Handles and descriptors: the same windows' medians for the trend, the warm-up's largest for the peak.
  const count = (what: string, of: (s: Sample) => number | undefined, slack: (reference: number, kind: "trend" | "peak") => number, names: [string, string, string, string]) => {
    const values = (xs: Sample[]) => xs.flatMap((s) => (of(s) === undefined ? [] : [of(s)!]));
    const warmValues = values(warm);
    const refValues = values(post.slice(0, refCount));
    const endValues = values(post.slice(-endCount));
    const postValues = values(post);
    if (refValues.length === 0 || endValues.length === 0) return;
    const [refMedian, endMedian, postMax] = [median(refValues), median(endValues), Math.max(...postValues)];
    Object.assign(figures, { [names[0]]: refMedian, [names[1]]: endMedian, [names[3]]: postMax });
    const trendSlack = slack(refMedian, "trend");
    if (endMedian > refMedian + trendSlack) reasons.push(`${what} grew: median ${endMedian} over the last ${endCount} samples against ${refMedian} over the first ${refCount} after warm-up (+${trendSlack} allowed)`);
    if (warmValues.length === 0) {
      reasons.push(`no server sample during the warm-up: no baseline for the ${what}' peak`);
      return;
    }
    const warmMax = Math.max(...warmValues);
    const peakSlack = slack(warmMax, "peak");
    Object.assign(figures, { [names[2]]: warmMax });
    if (postMax > warmMax + peakSlack) reasons.push(`${what} reached ${postMax} after warm-up, above the warm-up's ${warmMax} + ${peakSlack}`);
  };
  const handleSlack = (reference: number, kind: "trend" | "peak") =>
    kind === "trend" ? Math.max(limits.handleTrendSlack, Math.round(limits.handleTrendFraction * reference)) : Math.max(limits.handlePeakSlack, Math.round(limits.handlePeakFraction * reference));
  count("active handles", (s) => s.activeHandles, handleSlack, ["handlesReferenceMedian", "handlesEndMedian", "handlesWarmupMax", "handlesPostMax"]);
  count("open file descriptors", (s) => s.openFds, (_, kind) => (kind === "trend" ? limits.fdTrendSlack : limits.fdPeakSlack), ["fdsReferenceMedian", "fdsEndMedian", "fdsWarmupMax", "fdsPostMax"]);
  return { pass: reasons.length === 0, reasons, figures };
}
