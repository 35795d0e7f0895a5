/**
 * Bounded streaming (issue 12, item 3): many ExportCertificates streams whose client never reads must not grow
 * the server's memory past CM_EXPORT_MEMORY_BUDGET_MB, must not stop it answering, and new ones past the budget
 * or past CM_EXPORT_STREAMS_PER_CALLER are refused with RESOURCE_EXHAUSTED EXPORT_BUDGET_EXHAUSTED and a
 * RetryInfo; once the clients cancel, the budget is free again. SQLite only: the subject is memory and the
 * transport, not the database.
 *
 * The server runs in this process, so this process's RSS is the server's (plus the clients', which hold at most
 * their HTTP/2 windows).
 */
import { credentials, Metadata, status, type ClientReadableStream, type ServiceError } from "@grpc/grpc-js";
import v8 from "node:v8";
import vm from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CertificateServiceClient,
  ExportCertificatesRequest,
  ImportCertificatesRequest,
  type ExportCertificatesResponse,
  type ImportCertificatesResponse,
} from "../../gen/ts/certmanager/v1/certificate.js";
import { RetryInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { makeCert } from "../helpers/openssl.js";
import { bearer, richError, startTestService, type TestService } from "../helpers/service.js";

const MiB = 1024 * 1024;
/** A full garbage collection, so RSS counts what is held rather than garbage not yet collected. */
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const BUDGET_MB = 16;
const CERTS = 300;
const STREAMS = 1000;

/**
 * An unread export: paused at once; `outcome` settles with its error (or "end"), `cancel` ends it.
 * `read(0)` starts the client reading into its stream buffer (16 messages), as an application that read and then
 * stopped would. Without it grpc-js never asks for a message and queues every one that arrives in an unbounded
 * list of its own, still consuming the HTTP/2 window: the server would then rightly send the whole export.
 */
interface Unread {
  call: ClientReadableStream<ExportCertificatesResponse>;
  outcome: Promise<ServiceError | "end">;
  settled: () => ServiceError | "end" | undefined;
}

function openUnread(t: TestService, parent: string): Unread {
  const call = t.certificateClient.exportCertificates(ExportCertificatesRequest.fromPartial({ parent, includePrivateKeys: true }));
  call.pause();
  call.read(0);
  let result: ServiceError | "end" | undefined;
  const outcome = new Promise<ServiceError | "end">((resolve) => {
    call.on("error", (e: ServiceError) => resolve((result = e)));
    call.on("end", () => resolve((result = "end")));
  });
  return { call, outcome, settled: () => result };
}

/** The RetryInfo delay of a refusal, ms; undefined when there is none. */
function retryDelayMs(err: ServiceError): number | undefined {
  const bin = err.metadata?.get("grpc-status-details-bin")[0];
  if (!bin) return undefined;
  const d = Status.decode(bin as Buffer).details.find((x) => x.typeUrl === "type.googleapis.com/google.rpc.RetryInfo");
  if (!d) return undefined;
  const r = RetryInfo.decode(d.value).retryDelay!;
  return Number(r.seconds) * 1000 + r.nanos / 1e6;
}

/** Reads a whole export; returns how many items came. */
async function readAll(t: TestService, parent: string): Promise<number> {
  let n = 0;
  for await (const _ of t.certificateClient.exportCertificates(ExportCertificatesRequest.fromPartial({ parent, includePrivateKeys: true }))) n++;
  return n;
}

/** Reads a whole export once one is admitted again: the server may take a moment to see cancellations (bounded, 5 s). */
async function readAllOnceAdmitted(t: TestService, parent: string): Promise<number> {
  for (let i = 0; ; i++) {
    try {
      return await readAll(t, parent);
    } catch (err) {
      if (richError(err).reason !== "EXPORT_BUDGET_EXHAUSTED" || i >= 50) throw err;
      await sleep(100);
    }
  }
}

const made: { certPem: string; keyPem: string }[] = [];
/** `count` self-signed RSA leaves with four keys between them (so openssl is quick), made once for both services. */
function leaves(count: number): { certPem: string; keyPem: string }[] {
  while (made.length < count) made.push(makeCert({ cn: `b-${made.length}.example.test`, keyType: "rsa2048", keySlot: `budget-${made.length % 4}` }));
  return made.slice(0, count);
}

/** Imports `count` self-signed RSA leaves (four keys between them, so openssl is quick) on one ImportCertificates stream. */
async function importLeaves(t: TestService, parent: string, count: number): Promise<string[]> {
  const call = t.certificateClient.importCertificates();
  const names: string[] = [];
  const done = new Promise<void>((resolve, reject) => {
    call.on("data", (m: ImportCertificatesResponse) => {
      if (m.error) reject(new Error(`import ${m.index} failed: ${m.error.message}`));
      else names.push(m.certificate!.name);
    });
    call.on("end", resolve);
    call.on("error", reject);
  });
  for (const leaf of leaves(count)) {
    call.write(ImportCertificatesRequest.fromPartial({ item: { parent, certificate: leaf.certPem, privateKey: leaf.keyPem } }));
  }
  call.end();
  await done;
  expect(names.length).toBe(count);
  return names;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("export memory budget (sqlite)", () => {
  let t: TestService;
  let parent: string;
  let names: string[];

  beforeAll(async () => {
    t = await startTestService("sqlite", { CM_EXPORT_MEMORY_BUDGET_MB: String(BUDGET_MB), CM_EXPORT_STREAMS_PER_CALLER: "10000", CM_EXPORT_STREAMS_PER_CONNECTION: "10000" });
    parent = (await t.instances.createInstance({ instance: { displayName: "budget" } })).instance!.name;
    names = await importLeaves(t, parent, CERTS);
  }, 120_000);
  afterAll(async () => {
    await t?.stop();
  });

  it("holds unread streams within the budget, refuses the rest with RetryInfo, keeps answering, and frees the budget on cancel", async () => {
    // Warm up every code path once (a full export, and one round of as many unread streams, cancelled), so the
    // baseline is not mostly lazy initialisation and heap growth of the process (server and clients).
    expect(await readAll(t, parent)).toBe(CERTS);
    const warm = Array.from({ length: STREAMS }, () => openUnread(t, parent));
    await sleep(2000);
    for (const s of warm) s.call.cancel();
    await Promise.all(warm.map((s) => s.outcome));
    expect(await readAllOnceAdmitted(t, parent)).toBe(CERTS);
    gc();
    const before = process.memoryUsage().rss;

    const logsBefore = t.logs.length;
    const streams = Array.from({ length: STREAMS }, () => openUnread(t, parent));
    // Let every stream be admitted or refused and the admitted ones fill their flow-control windows.
    await sleep(3000);
    gc();
    const peak = process.memoryUsage().rss;
    const growthMiB = (peak - before) / MiB;

    const refused = streams.map((s) => s.settled()).filter((r): r is ServiceError => r !== undefined && r !== "end");
    const open = streams.filter((s) => s.settled() === undefined);
    // A GetCertificate meanwhile answers within 5 s.
    const t0 = performance.now();
    const got = await new Promise<unknown>((resolve, reject) =>
      t.certificateClient.getCertificate({ name: names[7]! }, new Metadata(), { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res))),
    );
    const getMs = performance.now() - t0;
    console.log(
      `export budget: ${STREAMS} unread streams of ${CERTS} certificates, budget ${BUDGET_MB} MiB: ${open.length} admitted, ${refused.length} refused; ` +
        `RSS ${Math.round(before / MiB)} -> ${Math.round(peak / MiB)} MiB (+${growthMiB.toFixed(1)} MiB); GetCertificate ${getMs.toFixed(0)} ms`,
    );
    expect(got).toBeTruthy();
    expect(getMs).toBeLessThan(5000);
    expect(growthMiB).toBeLessThan(BUDGET_MB + 64);
    expect(open.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    expect(open.length + refused.length).toBe(STREAMS);
    for (const e of refused) {
      const r = richError(e);
      expect([r.code, r.reason, r.metadata.limit]).toEqual([status.RESOURCE_EXHAUSTED, "EXPORT_BUDGET_EXHAUSTED", "memory_budget"]);
      expect(retryDelayMs(e)).toBeGreaterThan(0);
    }

    // The clients cancel: every stream ends and gives its bytes back, so a new export is admitted and completes.
    for (const s of open) s.call.cancel();
    const ends = await Promise.all(open.map((s) => s.outcome));
    expect(ends.every((e) => e !== "end" && e.code === status.CANCELLED)).toBe(true);
    expect(await readAllOnceAdmitted(t, parent)).toBe(CERTS);
    // Each admitted stream logs its end once the server has seen the cancellation, which may come a moment after
    // the budget was given back; wait for the lines (bounded).
    const ended = () => t.logs.filter((l, i) => i >= logsBefore && l.msg === "stream done" && l.method === "ExportCertificates" && Number(l.sent) < CERTS);
    for (let i = 0; i < 100 && ended().length < open.length; i++) await sleep(100);
    const done = ended();
    expect(done.length).toBeGreaterThanOrEqual(open.length);
    // No stream went further than HTTP/2 flow control lets an unread client take.
    for (const l of done) expect(Number(l.sent)).toBeLessThan(CERTS);
  }, 60_000);
});

describe("export streams per caller (sqlite)", () => {
  let t: TestService;
  let parent: string;

  beforeAll(async () => {
    t = await startTestService("sqlite", { CM_EXPORT_STREAMS_PER_CALLER: "3" });
    parent = (await t.instances.createInstance({ instance: { displayName: "cap" } })).instance!.name;
    // More than an unread client buffers (HTTP/2 windows and grpc-js's own buffer), so no export ends by itself.
    await importLeaves(t, parent, CERTS);
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  });

  it("refuses a caller's stream past its cap with RetryInfo, and admits it again once they end", async () => {
    // Four at once: the fourth is admitted while the other three are open and unread.
    const four = Array.from({ length: 4 }, () => openUnread(t, parent));
    const outcomes = await Promise.race([Promise.any(four.map((s) => s.outcome)), sleep(10_000).then(() => undefined)]);
    expect(outcomes).toBeDefined();
    const refused = four.filter((s) => s.settled() !== undefined);
    expect(refused).toHaveLength(1);
    const e = refused[0]!.settled()!;
    expect(e).not.toBe("end");
    const r = richError(e);
    expect([r.code, r.reason, r.metadata.limit, r.metadata.value]).toEqual([status.RESOURCE_EXHAUSTED, "EXPORT_BUDGET_EXHAUSTED", "streams_per_caller", "3"]);
    expect(retryDelayMs(e as ServiceError)).toBeGreaterThan(0);

    const open = four.filter((s) => s !== refused[0]);
    for (const s of open) s.call.cancel();
    await Promise.all(open.map((s) => s.outcome));
    expect(await readAllOnceAdmitted(t, parent)).toBe(CERTS);
  }, 30_000);
});

describe("export streams per connection (sqlite)", () => {
  let t: TestService;
  let parent: string;

  beforeAll(async () => {
    t = await startTestService("sqlite", { CM_EXPORT_STREAMS_PER_CONNECTION: "3", CM_EXPORT_STREAMS_PER_CALLER: "100" });
    parent = (await t.instances.createInstance({ instance: { displayName: "per-connection" } })).instance!.name;
    await importLeaves(t, parent, CERTS);
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  });

  it("refuses a connection's stream past its cap with RetryInfo, while another connection of the same caller is admitted", async () => {
    const four = Array.from({ length: 4 }, () => openUnread(t, parent));
    await Promise.race([Promise.any(four.map((s) => s.outcome)), sleep(10_000)]);
    const refused = four.filter((s) => s.settled() !== undefined);
    expect(refused).toHaveLength(1);
    const e = refused[0]!.settled() as ServiceError;
    const r = richError(e);
    expect([r.code, r.reason, r.metadata.limit, r.metadata.value]).toEqual([status.RESOURCE_EXHAUSTED, "EXPORT_BUDGET_EXHAUSTED", "streams_per_connection", "3"]);
    expect(retryDelayMs(e)).toBeGreaterThan(0);
    // The same caller on a connection of its own (a new channel) is not held to the first connection's count.
    // (grpc-js shares connections between clients of one address unless told to keep a pool of its own.)
    const other = new CertificateServiceClient(t.address, credentials.createInsecure(), { interceptors: [bearer(t.adminKey)], "grpc.use_local_subchannel_pool": 1 });
    let n = 0;
    for await (const _ of other.exportCertificates(ExportCertificatesRequest.fromPartial({ parent, includePrivateKeys: true }))) n++;
    other.close();
    expect(n).toBe(CERTS);
    for (const s of four) if (s !== refused[0]) s.call.cancel();
  }, 30_000);
});
