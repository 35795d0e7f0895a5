/**
 * The service on a real 3-node MariaDB Galera cluster (issue 13, item 3): two server processes, each on its own
 * node, under mixed load from several clients (imports, reimports, reads, lists, exports, delete/restore of
 * instances, purge, DEK rotation), with deliberate same-row contention across the two replicas so certification
 * conflicts happen. Mid-load, the node of one replica is killed with SIGKILL and brought back (IST), and the other
 * replica is killed with SIGKILL and started again. Then: nothing acknowledged is lost, nothing is duplicated,
 * every reclamation that was not restored is purged exactly once, and no client ever saw INTERNAL or UNKNOWN
 * (ABORTED and UNAVAILABLE are transient answers a client retries).
 *
 * Skipped when Galera is not installed, unless CM_TEST_REQUIRE_GALERA=1 (then missing pieces fail the file).
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import knexFactory, { type Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExportCertificatesRequest } from "../../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../../gen/ts/certmanager/v1/instance.js";
import * as reclamationPb from "../../gen/ts/certmanager/v1/reclamation.js";
import { GaleraCluster, galeraMissing } from "../helpers/galera.js";
import { makeLeaf } from "../helpers/openssl.js";
import { startServerProcess, type ServerProcess } from "../helpers/process.js";
import { clientsFor, type Clients } from "../helpers/service.js";

const missing = galeraMissing();
if (missing.length > 0 && process.env.CM_TEST_REQUIRE_GALERA === "1") {
  throw new Error(`CM_TEST_REQUIRE_GALERA=1 but the Galera cluster cannot be made here; missing: ${missing.join(", ")}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DB = "cm";
/** Answers a client may get and retry; anything else unexpected is a failure (INTERNAL and UNKNOWN always). */
const TRANSIENT = new Set<number>([status.ABORTED, status.UNAVAILABLE, status.DEADLINE_EXCEEDED]);

/** One replica: a server process on one Galera node, and clients of it. */
interface Replica {
  label: string;
  node: number;
  proc: ServerProcess;
  clients: Clients;
}

/** What the clients saw: every answer's code per operation, and the answers that must never happen. */
class Answers {
  readonly codes = new Map<string, number>();
  readonly forbidden: string[] = [];
  /** The longest calls (retries included), for the report: `op ms`. */
  readonly slow: string[] = [];
  note(op: string, replica: string, code: number, message = ""): void {
    const key = `${op} ${status[code] ?? code}`;
    this.codes.set(key, (this.codes.get(key) ?? 0) + 1);
    if (code === status.INTERNAL || code === status.UNKNOWN) this.forbidden.push(`${op} on ${replica}: ${status[code]} ${message}`);
  }
  count(op: string, code: number): number {
    return this.codes.get(`${op} ${status[code]}`) ?? 0;
  }
  summary(): string {
    return [...this.codes.entries()]
      .sort()
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
  }
}

/** A certificate version a client got OK for: its name, version number and the fingerprint it was told. */
interface AckedVersion {
  name: string;
  version: number;
  fingerprint: string;
  pem: string;
}

describe.skipIf(missing.length > 0)("the service on a 3-node Galera cluster", () => {
  let cluster: GaleraCluster | undefined;
  let dataDir: string;
  const replicas: Replica[] = [];
  /** Every server process started, including killed ones: their logs count for exactly-once checks. */
  const allProcs: ServerProcess[] = [];
  const direct: Knex[] = [];
  let leaves: { certPem: string; keyPem: string }[] = [];
  let nextLeaf = 0;

  const env = (node: number): Record<string, string> => ({
    CM_DATABASE_URL: cluster!.nodes[node - 1].url(DB),
    CM_DATA_DIR: dataDir,
    CM_LOG_LEVEL: "info",
    CM_RATE_LIMIT_PER_SECOND: "0",
    CM_SHUTDOWN_GRACE_SECONDS: "2",
    // A dead node must turn into UNAVAILABLE within seconds, not the 30 s default.
    CM_DATABASE_OPERATION_TIMEOUT_SECONDS: "6",
    CM_DATABASE_ACQUIRE_TIMEOUT_SECONDS: "4",
    CM_DATABASE_CONNECT_TIMEOUT_SECONDS: "2",
    // Purge within the test: reclamations expire after 2 s and the purge job runs every second.
    CM_RECLAMATION_RETENTION_SECONDS: "2",
    CM_PURGE_INTERVAL_SECONDS: "1",
    CM_PURGE_LEASE_SECONDS: "3",
    // DEKs fill up after 60 encryptions: imports rotate them automatically, concurrently with RotateDataKey calls.
    CM_DEK_MAX_ENCRYPTIONS: "60",
  });

  async function startReplica(label: string, node: number): Promise<Replica> {
    const proc = await startServerProcess(env(node));
    allProcs.push(proc);
    const key = readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim();
    return { label, node, proc, clients: clientsFor(`127.0.0.1:${proc.port}`, key) };
  }

  /** The next unused prepared certificate; undefined once all are used (writers then idle: see the report line). */
  function leaf(): { certPem: string; keyPem: string } | undefined {
    return leaves[nextLeaf++];
  }

  beforeAll(async () => {
    // Certificates up front (openssl per request would dominate the load): distinct serials, one shared EC key.
    leaves = Array.from({ length: 1000 }, (_, i) => makeLeaf({ cn: `g${i}.galera.test`, keySlot: "galera-shared" }));
    dataDir = mkdtempSync(path.join(tmpdir(), "cm-galera-data-"));
    // A random offset (0..900, in hundreds) so two runs on one machine do not collide on ports.
    cluster = await GaleraCluster.start(3, { portOffset: 100 * Math.floor(Math.random() * 10) });
    await cluster.withConnection(1, (c) => c.query(`CREATE DATABASE ${DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`));
    // The first replica migrates the schema; the second starts on a migrated database (through another node).
    replicas.push(await startReplica("A", 1));
    replicas.push(await startReplica("B", 2));
  }, 150_000);

  afterAll(async () => {
    for (const r of replicas) r.clients.close();
    for (const p of allProcs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    for (const k of direct) await k.destroy().catch(() => undefined);
    await cluster?.remove();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  /** A Knex connection straight to Galera node `n`, for checking rows. */
  function rows(n: number): Knex {
    const k = knexFactory({ client: "mysql2", connection: { uri: cluster!.nodes[n - 1].url(DB) } as never, pool: { min: 0, max: 2 } });
    direct.push(k);
    return k;
  }

  /** Sum over nodes of the certification failures and brute-force aborts (counters restart with a node). */
  async function conflictCounters(): Promise<Record<number, number>> {
    const out: Record<number, number> = {};
    for (const node of cluster!.nodes) {
      if (!node.running) continue;
      const s = await cluster!.status(node.n).catch(() => undefined);
      if (s) out[node.n] = Number(s.wsrep_local_cert_failures) + Number(s.wsrep_local_bf_aborts);
    }
    return out;
  }

  it("keeps every acknowledged write through conflicts, a killed node and a killed replica", async () => {
    const answers = new Answers();
    const acked: AckedVersion[] = [];
    /** Reclamations acknowledged by DeleteInstance, with the certificate the instance held. */
    const reclamations = new Map<string, { instance: string; restored: boolean; cert: AckedVersion }>();
    const startedAt = Date.now();
    let stopLoad = false;

    /**
     * Runs `fn` on a replica (starting with `prefer`), retrying transient answers until it gets one that is not:
     * UNAVAILABLE and DEADLINE_EXCEEDED move to the other replica (as a load balancer would), ABORTED retries
     * after a short pause. Codes in `accept` end the call (returned); any other failure is recorded and thrown.
     */
    async function call<T>(op: string, prefer: number, fn: (c: Clients) => Promise<T>, accept: number[] = [], maxMs = 60_000): Promise<{ ok: T } | { code: number }> {
      let i = prefer;
      const t0 = Date.now();
      const end = t0 + maxMs;
      const slow = () => Date.now() - t0 > 3_000 && answers.slow.push(`${op} ${Date.now() - t0}ms at t=${t0 - startedAt}`);
      for (let attempt = 0; ; attempt++) {
        const r = replicas[i % replicas.length];
        try {
          const out = await fn(r.clients);
          answers.note(op, r.label, status.OK);
          slow();
          return { ok: out };
        } catch (err) {
          const e = err as ServiceError;
          const code = typeof e.code === "number" ? e.code : status.UNKNOWN;
          answers.note(op, r.label, code, e.details ?? e.message);
          if (accept.includes(code)) {
            slow();
            return { code };
          }
          if (!TRANSIENT.has(code) || Date.now() > end) throw new Error(`${op} on replica ${r.label}: ${status[code]} ${e.details ?? e.message}`);
          if (code !== status.ABORTED) i++;
          await sleep(Math.min(500, 20 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random()));
        }
      }
    }

    const instanceOf = (certName: string) => certName.split("/certificates/")[0];
    const ackVersion = (c: { name: string; version: number; sha256Fingerprint: string }, pem: string) => {
      const v = { name: c.name, version: c.version, fingerprint: c.sha256Fingerprint, pem };
      acked.push(v);
      return v;
    };

    // Two hot instances every worker writes to, made through different replicas.
    const hot: string[] = [];
    for (const [i, label] of ["hot-a", "hot-b"].entries()) {
      const r = await call("CreateInstance", i, (c) => c.instances.createInstance({ instance: { displayName: label }, requestId: randomUUID() }));
      hot.push("ok" in r ? r.ok.instance!.name : "");
    }

    const before = await conflictCounters();

    /** Imports a fresh certificate; retries reuse the request id, so an ambiguous first attempt makes no second copy. */
    async function importOne(parent: string, prefer: number): Promise<AckedVersion | undefined> {
      const l = leaf();
      if (!l) return sleep(100).then(() => undefined);
      const requestId = randomUUID();
      const r = await call("ImportCertificate", prefer, (c) => c.certificates.importCertificate({ parent, certificate: l.certPem, privateKey: l.keyPem, requestId }));
      if (!("ok" in r)) throw new Error("unreachable");
      return ackVersion(r.ok.certificate!, l.certPem);
    }

    const workers: Promise<void>[] = [];
    const failures: string[] = [];
    const loop = (name: string, body: (i: number) => Promise<unknown>) =>
      workers.push(
        (async () => {
          for (let i = 0; !stopLoad; i++) await body(i);
        })().catch((err: unknown) => {
          stopLoad = true;
          failures.push(`worker ${name}: ${(err as Error).message}`);
        }),
      );

    // Importers: spread over both replicas and both hot instances.
    for (let w = 0; w < 3; w++) loop(`import-${w}`, (i) => importOne(hot[(i + w) % 2], i + w).then(() => undefined));

    // Same certificate, same request id, through both replicas at once: one certificate, both answers name it.
    const sameRequest: { names: string[] }[] = [];
    loop("same-request", async () => {
      const l = leaf();
      if (!l) return sleep(100);
      const requestId = randomUUID();
      const both = await Promise.all(
        [0, 1].map((p) => call("ImportCertificate(same request)", p, (c) => c.certificates.importCertificate({ parent: hot[0], certificate: l.certPem, privateKey: l.keyPem, requestId }))),
      );
      const certs = both.map((r) => ("ok" in r ? r.ok.certificate! : undefined));
      sameRequest.push({ names: certs.map((c) => c!.name) });
      ackVersion(certs[0]!, l.certPem);
    });

    // Same certificate, different request ids, through both replicas: exactly one is made, the other is refused.
    const sameCert: { oks: number }[] = [];
    loop("same-cert", async () => {
      const l = leaf();
      if (!l) return sleep(100);
      const both = await Promise.all(
        [0, 1].map((p) =>
          call("ImportCertificate(same cert)", p, (c) => c.certificates.importCertificate({ parent: hot[1], certificate: l.certPem, privateKey: l.keyPem, requestId: randomUUID() }), [status.ALREADY_EXISTS]),
        ),
      );
      const oks = both.filter((r) => "ok" in r);
      sameCert.push({ oks: oks.length });
      for (const r of oks) if ("ok" in r) ackVersion(r.ok.certificate!, l.certPem);
    });

    // Reimports of the same certificate through both replicas at once (no etag: both must land, as two versions).
    loop("reimport", async (i) => {
      const target = acked.filter((a) => hot.includes(instanceOf(a.name)))[i % Math.max(1, acked.length)];
      const ls = [leaf(), leaf()];
      if (!target || !ls[0] || !ls[1]) return sleep(100);
      const both = await Promise.all(
        [0, 1].map((p) => {
          const l = ls[p]!;
          return call("ReimportCertificate", p, (c) => c.certificates.reimportCertificate({ name: target.name, certificate: l.certPem, privateKey: l.keyPem })).then((r) =>
            "ok" in r ? ackVersion(r.ok.certificate!, l.certPem) : undefined,
          );
        }),
      );
      expect(both[0]!.version, `two reimports of ${target.name} acknowledged as the same version`).not.toBe(both[1]!.version);
    });

    // Readers: an acknowledged version read back through the other replica, lists, and export streams.
    const staleReads: string[] = [];
    loop("read", async (i) => {
      // Certificates of the hot instances only: a churn instance's certificates go when it is reclaimed.
      const readable = acked.filter((x) => hot.includes(instanceOf(x.name)));
      const a = readable[Math.floor(Math.random() * readable.length)];
      if (!a) return sleep(50);
      const r = await call("AccessCertificate", i, (c) => c.certificates.accessCertificate({ name: a.name, version: a.version }), [status.NOT_FOUND]);
      if ("code" in r) staleReads.push(`${a.name} v${a.version}`);
      else expect(r.ok.certificate.trim(), `${a.name} v${a.version}`).toBe(a.pem.trim());
      await call("GetCertificate", i + 1, (c) => c.certificates.getCertificate({ name: a.name }));
      if (i % 5 === 0) await call("ListCertificates", i, (c) => c.certificates.listCertificates({ parent: hot[i % 2], pageSize: 50 }));
    });
    loop("export", async (i) => {
      await call("ExportCertificates", i, (c) => exportAll(c, hot[i % 2]));
      await sleep(300);
    });

    // DEK rotation, sometimes of the same instance through both replicas at once.
    loop("rotate", async (i) => {
      const parent = hot[i % 2];
      const accept = [status.FAILED_PRECONDITION];
      if (i % 3 === 0) await Promise.all([0, 1].map((p) => call("RotateDataKey", p, (c) => c.instances.rotateDataKey({ name: parent }), accept)));
      else await call("RotateDataKey", i, (c) => c.instances.rotateDataKey({ name: parent }), accept);
      await sleep(700);
    });

    // Reclamations: an instance with one certificate, deleted through both replicas at once; then restored, reclaimed
    // through both replicas at once, or left to the purge job.
    loop("reclaim", async (i) => {
      const made = await call("CreateInstance", i, (c) => c.instances.createInstance({ instance: { displayName: `churn-${i}` }, requestId: randomUUID() }));
      if (!("ok" in made)) return;
      const instance = made.ok.instance!.name;
      const cert = await importOne(instance, i + 1);
      if (!cert) return;
      const deletes = await Promise.all(
        [0, 1].map((p) => call("DeleteInstance", p, (c) => c.instances.deleteInstance({ name: instance }), [status.FAILED_PRECONDITION])),
      );
      const oks = deletes.filter((d) => "ok" in d).length;
      expect(oks, `deletes of ${instance} acknowledged`).toBeLessThanOrEqual(1);
      const got = await call("GetInstance", i, (c) => c.instances.getInstance({ name: instance }));
      const reclamation = "ok" in got ? got.ok.instance!.reclamation : "";
      expect(reclamation, `${instance} has a reclamation after its delete`).not.toBe("");
      const entry = { instance, restored: false, cert };
      reclamations.set(reclamation, entry);
      if (i % 3 === 0) {
        const r = await call("RestoreReclamation", i + 1, (c) => c.reclamations.restoreReclamation({ name: reclamation }), [status.FAILED_PRECONDITION]);
        if ("ok" in r) entry.restored = true;
      } else if (i % 3 === 1) {
        await Promise.all([0, 1].map((p) => call("DeleteReclamation", p, (c) => c.reclamations.deleteReclamation({ name: reclamation }))));
      }
    });

    // Faults, while the load runs.
    const faults: string[] = [];
    const B = () => replicas[1];
    await sleep(6_000);
    const midCounters = await conflictCounters();
    faults.push(`t=${Date.now() - startedAt} kill -9 node 2 (replica B's)`);
    await cluster!.kill(2);
    // Replica B answers UNAVAILABLE (never INTERNAL) while its node is dead.
    const probe = async () => {
      try {
        await B().clients.instances.getInstance({ name: hot[0] });
        return status.OK;
      } catch (err) {
        return (err as ServiceError).code;
      }
    };
    const probeCodes: number[] = [];
    for (let k = 0; k < 20 && !probeCodes.includes(status.UNAVAILABLE); k++) {
      probeCodes.push(await probe());
      await sleep(250);
    }
    expect(probeCodes, "replica B's answers while its node is dead").toContain(status.UNAVAILABLE);
    // The other replica's node is in the surviving Primary Component: it serves.
    await expect(replicas[0].clients.instances.getInstance({ name: hot[1] })).resolves.toBeDefined();
    // Keep probing B through the node's restart: the joining node must not make it answer INTERNAL either.
    let probing = true;
    const probing$ = (async () => {
      while (probing) {
        const code = await probe();
        probeCodes.push(code);
        answers.note("probe B", "B", code);
        await sleep(100);
      }
    })();
    await cluster!.waitSynced(1, 2, 20_000);
    faults.push(`t=${Date.now() - startedAt} node 1 sees a cluster of 2`);
    const how = await cluster!.restart(2, 3, 60_000);
    faults.push(`t=${Date.now() - startedAt} node 2 back by ${how}, Synced, size 3`);
    // B recovers on its own once its node is back.
    const recoverEnd = Date.now() + 20_000;
    while ((await probe()) !== status.OK) {
      if (Date.now() > recoverEnd) throw new Error("replica B did not recover within 20 s of its node's return");
      await sleep(200);
    }
    probing = false;
    await probing$;
    faults.push(`t=${Date.now() - startedAt} replica B serves again`);

    // Kill replica A mid-load and start it again, on node 3 this time.
    const a = replicas[0];
    a.proc.child.kill("SIGKILL");
    await a.proc.exited.catch(() => undefined);
    faults.push(`t=${Date.now() - startedAt} kill -9 replica A`);
    await sleep(1_000);
    const a2 = await startReplica("A'", 3);
    replicas[0] = a2;
    a.clients.close();
    faults.push(`t=${Date.now() - startedAt} replica A' serves (node 3)`);

    // Load again on the healed cluster, then stop and verify.
    await sleep(6_000);
    stopLoad = true;
    await Promise.all(workers);
    const after = await conflictCounters();
    faults.push(`t=${Date.now() - startedAt} load stopped`);
    console.log(`faults:\n  ${faults.join("\n  ")}\nanswers: ${answers.summary()}\ncalls over 3 s: ${answers.slow.join(", ")}`);
    if (failures.length > 0 || answers.forbidden.length > 0) {
      // What the servers logged at error level (INTERNAL answers log their cause under the call id).
      console.log(allProcs.flatMap((p) => p.logs.filter((l) => l.includes('"level":50'))).join("\n"));
    }
    expect(failures).toEqual([]);
    expect(answers.forbidden, "answers that must never happen").toEqual([]);
    // Node 2 restarted, so its counters restarted: count its delta before the kill and everything after.
    const conflicts = (after[1] - before[1]) + (midCounters[2] - before[2]) + after[2] + (after[3] - before[3]);
    console.log(`certification failures + BF aborts: ${conflicts} (before ${JSON.stringify(before)}, at the kill ${JSON.stringify(midCounters)}, after ${JSON.stringify(after)})`);
    expect(conflicts, "Galera certification conflicts happened").toBeGreaterThan(0);
    expect(staleReads, "acknowledged versions not found when read back").toEqual([]);

    // Same request id through both replicas: one certificate. Same certificate, two request ids: exactly one made.
    expect(sameRequest.length).toBeGreaterThan(0);
    for (const s of sameRequest) expect(s.names[0]).toBe(s.names[1]);
    expect(sameCert.length).toBeGreaterThan(0);
    for (const s of sameCert) expect(s.oks).toBe(1);

    // Every reclamation not restored ends RECLAIMED (the purge job gets the rest), each reclaimed exactly once.
    const c = replicas[0].clients;
    const pendingEnd = Date.now() + 30_000;
    for (const [name, r] of reclamations) {
      const want = r.restored ? reclamationPb.Reclamation_State.STATE_RESTORED : reclamationPb.Reclamation_State.STATE_RECLAIMED;
      for (;;) {
        const got = (await c.reclamations.getReclamation({ name })).reclamation!;
        if (got.state === want) break;
        if (Date.now() > pendingEnd) throw new Error(`${name} is ${reclamationPb.Reclamation_State[got.state]}, expected ${reclamationPb.Reclamation_State[want]}`);
        await sleep(250);
      }
    }
    const reclaimedLines = allProcs.flatMap((p) => p.logs).filter((l) => l.includes('"msg":"reclamation reclaimed"')).map((l) => JSON.parse(l).reclamation as string);
    const db = rows(3);
    for (const [name, r] of reclamations) {
      const instance = (await c.instances.getInstance({ name: r.instance })).instance!;
      const instanceId = r.instance.split("/")[1];
      if (r.restored) {
        expect(instance.state, r.instance).toBe(instancePb.Instance_State.STATE_ACTIVE);
        expect((await c.certificates.accessCertificate({ name: r.cert.name, version: r.cert.version })).certificate.trim()).toBe(r.cert.pem.trim());
        expect(reclaimedLines.filter((x) => x === name), name).toHaveLength(0);
      } else {
        expect(instance.state, r.instance).toBe(instancePb.Instance_State.STATE_DELETED);
        // Never twice (the log); and done (the rows below). A replica killed between the final commit and its log
        // line would leave none, so the log alone cannot show "at least once".
        expect(reclaimedLines.filter((x) => x === name).length, `"reclamation reclaimed" lines of ${name}`).toBeLessThanOrEqual(1);
        expect((await db("reclamations").where({ id: name.split("/")[1] }).first())?.state, name).toBe("RECLAIMED");
        expect(await db("certificates").where({ instance_id: instanceId }), `certificates left of ${r.instance}`).toEqual([]);
        expect(await db("deks").where({ instance_id: instanceId }), `DEKs left of ${r.instance}`).toEqual([]);
      }
    }
    expect(reclamations.size).toBeGreaterThan(3);
    expect([...reclamations.values()].some((r) => r.restored)).toBe(true);
    expect([...reclamations.values()].some((r) => !r.restored)).toBe(true);

    // Every acknowledged version is there with its content, through the service and in every node's rows.
    for (const a of acked.filter((x) => hot.includes(instanceOf(x.name)))) {
      const got = await call("AccessCertificate(verify)", 0, (cl) => cl.certificates.accessCertificate({ name: a.name, version: a.version }));
      if ("ok" in got) expect(got.ok.certificate.trim(), `${a.name} v${a.version}`).toBe(a.pem.trim());
    }
    const hotIds = hot.map((h) => h.split("/")[1]);
    const ackedNames = new Set(acked.filter((a) => hot.includes(instanceOf(a.name))).map((a) => a.name));
    for (const n of [1, 2, 3]) {
      const k = n === 3 ? db : rows(n);
      const versions = (await k("certificate_versions").join("certificates", "certificates.id", "certificate_versions.certificate_id").whereIn("certificates.instance_id", hotIds).select("certificates.instance_id", "certificate_id", "version", "certificate_versions.sha256_fingerprint as fp")) as {
        instance_id: string;
        certificate_id: string;
        version: number;
        fp: string;
      }[];
      const byKey = new Map(versions.map((v) => [`instances/${v.instance_id}/certificates/${v.certificate_id}#${v.version}`, v.fp]));
      for (const a of acked.filter((x) => hot.includes(instanceOf(x.name)))) expect(byKey.get(`${a.name}#${a.version}`), `node ${n}: ${a.name} v${a.version}`).toBe(a.fingerprint);
      // No certificate nobody was told about: every import was retried with its request id until acknowledged.
      const certs = (await k("certificates").whereIn("instance_id", hotIds).select("id", "instance_id")) as { id: string; instance_id: string }[];
      expect(new Set(certs.map((x) => `instances/${x.instance_id}/certificates/${x.id}`)), `node ${n}: certificates of the hot instances`).toEqual(ackedNames);
      const dups = await k("certificates").select("instance_id", "sha256_fingerprint").count({ n: "*" }).groupBy("instance_id", "sha256_fingerprint").having(k.raw("count(*) > 1"));
      expect(dups, `node ${n}: duplicate certificates`).toEqual([]);
    }
    console.log(`prepared certificates used: ${Math.min(nextLeaf, leaves.length)} of ${leaves.length}${nextLeaf > leaves.length ? " (ran out: writers idled at the end)" : ""}`);
    console.log(`acknowledged versions ${acked.length}, certificates ${ackedNames.size}, reclamations ${reclamations.size} (${[...reclamations.values()].filter((r) => r.restored).length} restored), ${Date.now() - startedAt} ms`);
  });
});

/** Reads a whole export stream of `parent` (private keys included) and resolves with the number of items. */
function exportAll(c: Clients, parent: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const stream = c.certificateClient.exportCertificates(ExportCertificatesRequest.fromPartial({ parent, includePrivateKeys: true }), new Metadata());
    stream.on("data", () => n++);
    stream.on("error", reject);
    stream.on("end", () => resolve(n));
  });
}
