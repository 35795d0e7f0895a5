/**
 * Soak: mixed traffic at concurrency 64 against the built server as a real process, for N minutes, judged on
 * errors, memory and handles. `npm run soak -- --minutes N` builds first, then runs this file.
 *
 *   tsx bench/soak.ts [--minutes 60] [--concurrency 64] [--database sqlite|mysql] [--mysql-url mysql://root@127.0.0.1:3306]
 *                     [--stats-interval 5]
 *
 * - Makes a pool of certificates with openssl (4 per worker, leaf + key + intermediate), starts
 *   `dist/src/main.js` on a free loopback port with a temporary CM_DATA_DIR (SQLite there, or a fresh MySQL/MariaDB
 *   database `cm_soak_<pid>` it creates and drops; the URL from `--mysql-url` or CM_SOAK_MYSQL_URL), logging
 *   `process stats` every `--stats-interval` seconds (CM_PROCESS_STATS_INTERVAL_SECONDS; 5 by default: the RSS of a
 *   busy server swings by tens of MiB between major GCs, and the verdict's medians need a dozen samples a minute
 *   to be steady).
 * - Authenticates with the bootstrap administrator key the server writes to its data folder (read, never
 *   printed), creates 4 shared instances and runs the workers (bench/soak/traffic.ts): every RPC of the
 *   contract, each answer checked. The rate limit is off (CM_RATE_LIMIT_PER_SECOND=0): every worker calls as
 *   the one administrator, and the limit, per caller, is not what is soaked.
 * - Prints one human line and one JSON line (`{"soak":"minute",...}`) per minute: calls by method, errors by
 *   kind, latency p50/p99, and the server's RSS (its own figure, and /proc/<pid>/status as a cross-check), heap,
 *   active handles, open file descriptors and event-loop delay from its `process stats` lines.
 * - Ends with the verdict (bench/soak/verdict.ts: zero errors; RSS, handles and descriptors flat after the
 *   warm-up) as text and as `{"soak":"verdict",...}`; exit 0 on PASS, 1 on FAIL, 130 when interrupted. The
 *   server is stopped with SIGTERM (SIGKILL after 20 s) and the temporary folder and database removed, also on
 *   Ctrl-C (a second Ctrl-C kills the server at once).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import knexFactory from "knex";
import { makePool } from "./soak/certificates.js";
import { procRssBytes, startSoakServer, type SoakServer } from "./soak/server.js";
import { connect, Pacer, Semaphore, Worker, type Connection, type Recorder } from "./soak/traffic.js";
import { judge, median, percentile, warmupSeconds, type Sample } from "./soak/verdict.js";

const USAGE = "usage: tsx bench/soak.ts [--minutes 60] [--concurrency 64] [--database sqlite|mysql] [--mysql-url URL] [--stats-interval 5]";
const { values: args } = parseArgs({
  options: {
    minutes: { type: "string", default: "60" },
    concurrency: { type: "string", default: "64" },
    database: { type: "string", default: "sqlite" },
    "mysql-url": { type: "string", default: process.env.CM_SOAK_MYSQL_URL ?? "mysql://root@127.0.0.1:3306" },
    "stats-interval": { type: "string", default: "5" },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const MINUTES = Number(args.minutes);
const CONCURRENCY = Number(args.concurrency);
const STATS_SECONDS = Number(args["stats-interval"]);
const DATABASE = args.database;
if (!(MINUTES > 0) || !Number.isInteger(CONCURRENCY) || CONCURRENCY < 1 || !Number.isInteger(STATS_SECONDS) || STATS_SECONDS < 1 || (DATABASE !== "sqlite" && DATABASE !== "mysql")) {
  console.error(USAGE);
  process.exit(2);
}
const DURATION_S = MINUTES * 60;
const SHARED_INSTANCES = 4;
/** Client sets; each client has its own connection (bench/soak/traffic.ts `connect`), so 28 connections. */
const CONNECTIONS = Math.min(4, CONCURRENCY);
const CERTS_PER_WORKER = 4;
/** Below CM_EXPORT_STREAMS_PER_CALLER (8): all workers are one caller, and a stream ends on the server a moment after the client has its last message. */
const EXPORT_STREAMS = 6;
const MiB = 1024 * 1024;

/** One server sample with the /proc figure read when its line arrived. */
interface ServerSample extends Sample {
  procRssBytes?: number;
  heapUsedBytes: number;
  activeResources: Record<string, number>;
  eventLoopDelayMs: { p50: number; p99: number; max: number };
}

/** A minute's calls. */
class Bucket {
  calls = new Map<string, number>();
  errors = new Map<string, number>();
  expected = 0;
  latencies: number[] = [];
}

const totals = { calls: new Map<string, number>(), errors: new Map<string, number>(), expected: 0 };
/** Latencies by method over the whole run, ms (a few hundred thousand numbers for an hour: fine). */
const latencyByMethod = new Map<string, number[]>();
/** The first answer of each unexpected kind per method, for the report. */
const errorDetails = new Map<string, { count: number; first: string }>();
let bucket = new Bucket();
const add = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);
const recorder: Recorder = {
  record(method, ms, outcome, detail) {
    if (method !== "check" && method !== "worker") {
      add(bucket.calls, method);
      add(totals.calls, method);
      bucket.latencies.push(ms);
      let l = latencyByMethod.get(method);
      if (!l) latencyByMethod.set(method, (l = []));
      l.push(ms);
    }
    if (outcome === "ok") return;
    if (outcome === "expected") {
      bucket.expected++;
      totals.expected++;
      return;
    }
    add(bucket.errors, outcome);
    add(totals.errors, outcome);
    const key = `${outcome} in ${method}`;
    const seen = errorDetails.get(key);
    if (seen) seen.count++;
    else errorDetails.set(key, { count: 1, first: (detail ?? "").slice(0, 500) });
  },
};

const samples: ServerSample[] = [];
const serverProblems: string[] = [];
const serverErrorLines: string[] = [];
let serverErrorCount = 0;
const serverWarnings = new Map<string, number>();
let trafficStart = 0;
const requestsPerMinute: number[] = [];
let adminKey = "";
let secretInLog = 0;

function onServerLine(line: Record<string, unknown>, text: string): void {
  // The soak's own check that nothing secret reaches the log: the API key it uses, and any PEM private key.
  if ((adminKey !== "" && text.includes(adminKey)) || text.includes("PRIVATE KEY-----")) secretInLog++;
  const level = Number(line.level ?? 0);
  if (level >= 50) {
    serverErrorCount++;
    if (serverErrorLines.length < 5) serverErrorLines.push(text.slice(0, 1000));
  } else if (level === 40) {
    add(serverWarnings, String(line.msg).slice(0, 120));
  }
  if (line.msg === "process stats" && trafficStart > 0) {
    samples.push({
      t: (performance.now() - trafficStart) / 1000,
      rssBytes: Number(line.rssBytes),
      procRssBytes: server ? procRssBytes(server.pid) : undefined,
      heapUsedBytes: Number(line.heapUsedBytes),
      activeResources: (line.activeResources ?? {}) as Record<string, number>,
      activeHandles: Number(line.activeHandles),
      openFds: line.openFds === undefined ? undefined : Number(line.openFds),
      eventLoopDelayMs: line.eventLoopDelayMs as ServerSample["eventLoopDelayMs"],
    });
  }
}

const fmt = (n: number) => n.toLocaleString("en-US");
const mib = (b: number | undefined) => (b === undefined || Number.isNaN(b) ? "?" : (b / MiB).toFixed(1));

/** Prints the minute that just ended and starts the next. */
function closeMinute(minute: number, seconds: number): void {
  const b = bucket;
  bucket = new Bucket();
  const calls = [...b.calls.values()].reduce((a, c) => a + c, 0);
  const errors = [...b.errors.values()].reduce((a, c) => a + c, 0);
  requestsPerMinute.push(calls);
  const from = (minute - 1) * 60;
  const mine = samples.filter((s) => s.t > from && s.t <= from + 60);
  const last = mine.at(-1);
  const procNow = server ? procRssBytes(server.pid) : undefined;
  const loopP99 = mine.length ? Math.max(...mine.map((s) => s.eventLoopDelayMs.p99)) : NaN;
  const loopMax = mine.length ? Math.max(...mine.map((s) => s.eventLoopDelayMs.max)) : NaN;
  const p50 = percentile(b.latencies, 50);
  const p99 = percentile(b.latencies, 99);
  const errorText = errors === 0 ? "0 errors" : `${errors} errors (${[...b.errors].map(([k, n]) => `${k} ${n}`).join(", ")})`;
  console.log(
    `minute ${minute}/${Math.ceil(MINUTES)}: ${fmt(calls)} calls (${Math.round(calls / seconds)}/s), ${errorText}, ${fmt(b.expected)} expected refusals | ` +
      `latency p50 ${p50.toFixed(1)} ms p99 ${p99.toFixed(1)} ms | server RSS ${mib(last?.rssBytes)} MiB (/proc ${mib(last?.procRssBytes)}, now ${mib(procNow)}), ` +
      `heap ${mib(last?.heapUsedBytes)} MiB, handles ${last?.activeHandles ?? "?"}, fds ${last?.openFds ?? "?"}, event-loop delay p99 ${loopP99} ms max ${loopMax} ms (${mine.length} samples)`,
  );
  console.log(
    JSON.stringify({
      soak: "minute",
      minute,
      seconds,
      calls,
      callsByMethod: Object.fromEntries([...b.calls].sort()),
      errors: Object.fromEntries(b.errors),
      expectedRefusals: b.expected,
      latencyMs: { p50: Number(p50.toFixed(2)), p99: Number(p99.toFixed(2)) },
      server: {
        samples: mine.length,
        rssBytes: last?.rssBytes,
        procRssBytes: last?.procRssBytes,
        procRssBytesNow: procNow,
        heapUsedBytes: last?.heapUsedBytes,
        activeHandles: last?.activeHandles,
        activeResources: last?.activeResources,
        openFds: last?.openFds,
        eventLoopDelayMs: { p99: loopP99, max: loopMax },
      },
    }),
  );
}

let server: SoakServer | undefined;
let dataDir: string | undefined;
let dropDatabase: (() => Promise<void>) | undefined;
let stopping = false;
let interrupted = false;
let wake: () => void = () => undefined;

async function cleanup(): Promise<void> {
  if (server) {
    const how = await server.stop(20_000);
    console.log(`server stopped: ${how}`);
    if (!/^exit 0 /.test(how) && !interrupted) serverProblems.push(`the server did not stop cleanly on SIGTERM: ${how}`);
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  await dropDatabase?.().catch((err: unknown) => console.error(`could not drop the soak database: ${(err as Error).message}`));
}

process.on("SIGINT", () => onSignal("SIGINT"));
process.on("SIGTERM", () => onSignal("SIGTERM"));
function onSignal(signal: string): void {
  if (interrupted) {
    // The second signal: no more waiting.
    console.error(`${signal} again: killing the server and removing ${dataDir ?? "nothing"}`);
    server?.child.kill("SIGKILL");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    process.exit(130);
  }
  interrupted = true;
  stopping = true;
  console.error(`${signal}: stopping the traffic and the server (again to kill at once)`);
  wake();
}

async function main(): Promise<number> {
  const poolStart = performance.now();
  const pool = makePool(CONCURRENCY, CERTS_PER_WORKER);
  console.log(`soak: ${MINUTES} min, concurrency ${CONCURRENCY}, ${DATABASE}, ${pool.length} certificates made with openssl in ${((performance.now() - poolStart) / 1000).toFixed(1)} s; warm-up ${warmupSeconds(DURATION_S)} s; process stats every ${STATS_SECONDS} s`);

  // openssl ran in the foreground: a Ctrl-C meanwhile is seen only now.
  if (interrupted) return 130;
  dataDir = mkdtempSync(path.join(tmpdir(), "cm-soak-"));
  const env: Record<string, string> = {
    CM_DATA_DIR: dataDir,
    CM_LOG_LEVEL: "info",
    CM_PROCESS_STATS_INTERVAL_SECONDS: String(STATS_SECONDS),
    CM_RATE_LIMIT_PER_SECOND: "0",
  };
  if (DATABASE === "mysql") {
    const root = args["mysql-url"]!.replace(/\/+$/, "");
    const name = `cm_soak_${process.pid}`;
    const admin = knexFactory({ client: "mysql2", connection: { uri: `${root}/` } as never, pool: { min: 0, max: 1 } });
    try {
      await admin.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    } finally {
      await admin.destroy();
    }
    dropDatabase = async () => {
      const a = knexFactory({ client: "mysql2", connection: { uri: `${root}/` } as never, pool: { min: 0, max: 1 } });
      try {
        await a.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await a.destroy();
      }
    };
    env.CM_DATABASE_URL = `${root}/${name}`;
  }
  server = await startSoakServer(env, onServerLine);
  void server.exited.then((code) => {
    if (stopping) return;
    serverProblems.push(`the server exited (${code}) during the run: ${server!.stderrTail.slice(-5).join(" | ")}`);
    stopping = true;
    wake();
  });
  if (interrupted) return 130;
  adminKey = readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim();
  const address = `127.0.0.1:${server.port}`;
  // The database's name, never its URL (it may hold a password).
  console.log(`server pid ${server.pid} on ${address}, data folder ${dataDir}${env.CM_DATABASE_URL ? `, database ${env.CM_DATABASE_URL.split("/").pop()}` : ""}`);

  const connections: Connection[] = Array.from({ length: CONNECTIONS }, () => connect(address, adminKey));
  const shared: string[] = [];
  for (let i = 0; i < SHARED_INSTANCES; i++) {
    shared.push((await connections[0]!.instances.createInstance({ instance: { displayName: `soak shared ${i}`, labels: { soak: "shared" } } })).instance!.name);
  }
  const exports = new Semaphore(EXPORT_STREAMS);
  const lifecycles = new Pacer(500, 4);
  const workers = Array.from(
    { length: CONCURRENCY },
    (_, w) =>
      new Worker(
        w,
        { connection: connections[w % CONNECTIONS]!, recorder, exports, lifecycles, address, stopping: () => stopping },
        shared[w % SHARED_INSTANCES]!,
        pool.slice(w * CERTS_PER_WORKER, (w + 1) * CERTS_PER_WORKER),
      ),
  );

  trafficStart = performance.now();
  const running = workers.map((w) => w.run());
  let minute = 0;
  while (!stopping && minute * 60 < DURATION_S) {
    const end = Math.min((minute + 1) * 60, DURATION_S);
    await new Promise<void>((resolve) => {
      wake = resolve;
      setTimeout(resolve, Math.max(0, trafficStart + end * 1000 - performance.now()));
    });
    if (stopping) break;
    minute++;
    closeMinute(minute, end - (minute - 1) * 60);
  }
  stopping = true;
  const drained = await Promise.race([Promise.all(running).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 40_000))]);
  if (!drained) serverProblems.push("workers were still waiting for answers 40 s after the traffic stopped");
  for (const c of connections) c.close();
  if (interrupted) return 130;

  // Cross-check: the server's own RSS against /proc, read as each line arrived (milliseconds apart).
  const deviations = samples.flatMap((s) => (s.procRssBytes ? [Math.abs(s.rssBytes - s.procRssBytes) / s.procRssBytes] : []));
  if (deviations.length > 0 && median(deviations) > 0.1) serverProblems.push(`the server's RSS differs from /proc/${server.pid}/status by ${(100 * median(deviations)).toFixed(0)} % (median)`);
  if (serverErrorCount > 0) serverProblems.push(`${serverErrorCount} error-level server log lines, first: ${serverErrorLines[0]}`);
  if (secretInLog > 0) serverProblems.push(`${secretInLog} server log lines held the API key or a PEM private key`);
  return 0;
}

function report(): boolean {
  const calls = [...totals.calls.values()].reduce((a, b) => a + b, 0);
  console.log(`\ntotal: ${fmt(calls)} calls, ${fmt(totals.expected)} expected refusals; by method: ${[...totals.calls].sort((a, b) => b[1] - a[1]).map(([m, n]) => `${m} ${fmt(n)}`).join(", ")}`);
  const lat = [...latencyByMethod].sort((a, b) => b[1].length - a[1].length).map(([m, l]) => [m, { calls: l.length, p50: Number(percentile(l, 50).toFixed(1)), p99: Number(percentile(l, 99).toFixed(1)) }] as const);
  console.log(`latency by method (ms): ${lat.map(([m, l]) => `${m} p50 ${l.p50} p99 ${l.p99}`).join(", ")}`);
  console.log(`server samples (s since the traffic started: RSS MiB / heap MiB / handles / fds): ${samples.map((s) => `${Math.round(s.t)}: ${mib(s.rssBytes)}/${mib(s.heapUsedBytes)}/${s.activeHandles}/${s.openFds ?? "?"}`).join(", ")}`);
  if (serverWarnings.size > 0) console.log(`server warnings: ${[...serverWarnings].map(([m, n]) => `${n}x "${m}"`).join("; ")}`);
  for (const [key, { count, first }] of errorDetails) console.log(`error: ${count}x ${key}; first: ${first}`);
  const verdict = judge({
    durationSeconds: DURATION_S,
    samples,
    errors: Object.fromEntries(totals.errors),
    requestsPerMinute,
    serverProblems,
  });
  const f = verdict.figures;
  console.log(
    `memory after the ${f.warmupSeconds} s warm-up (${f.postWarmupSamples} samples): RSS median ${mib(f.rssReferenceMedian)} -> ${mib(f.rssEndMedian)} MiB (limit ${mib(f.rssTrendLimit)}), ` +
      `max ${mib(f.rssPostMax)} MiB (limit ${mib(f.rssPeakLimit)}); handles median ${f.handlesReferenceMedian} -> ${f.handlesEndMedian}, max ${f.handlesPostMax} (warm-up ${f.handlesWarmupMax}); ` +
      `fds median ${f.fdsReferenceMedian} -> ${f.fdsEndMedian}, max ${f.fdsPostMax} (warm-up ${f.fdsWarmupMax})`,
  );
  console.log(`verdict: ${verdict.pass ? "PASS" : "FAIL"}${verdict.reasons.map((r) => `\n  - ${r}`).join("")}`);
  console.log(JSON.stringify({ soak: "verdict", pass: verdict.pass, reasons: verdict.reasons, figures: verdict.figures, calls, errors: Object.fromEntries(totals.errors), latencyMsByMethod: Object.fromEntries(lat) }));
  return verdict.pass;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  stopping = true;
  // A Ctrl-C during openssl (run synchronously) kills it first: let the signal's handler run before deciding.
  await new Promise((r) => setTimeout(r, 50));
  if (interrupted) code = 130;
  else console.error(`soak could not run: ${(err as Error)?.stack ?? String(err)}`);
}
await cleanup();
if (code === 0) code = report() ? 0 : 1;
else if (code === 130) console.log("verdict: FAIL (interrupted)");
process.exit(code);
