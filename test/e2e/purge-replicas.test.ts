/**
 * The purge job with real server processes on one MariaDB database: two replicas reclaim every expired
 * reclamation exactly once; a replica killed with SIGKILL mid-reclaim is taken over after its lease lapses,
 * leaving no orphan rows. (MariaDB only: that is where several replicas share a database.)
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import knexFactory, { type Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as instancePb from "../../gen/ts/certmanager/v1/instance.js";
import * as reclamationPb from "../../gen/ts/certmanager/v1/reclamation.js";
import { makeLeaf } from "../helpers/openssl.js";
import { startServerProcess, type ServerProcess } from "../helpers/process.js";
import { clientsFor, MYSQL_URL, mysqlAvailable } from "../helpers/service.js";

const haveMysql = await mysqlAvailable();

/** Clients of the replica on `port`, as the bootstrap administrator both replicas share through the data folder. */
function clients(port: number, dataDir: string) {
  return clientsFor(`127.0.0.1:${port}`, readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim());
}

async function until<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!haveMysql)("purge with several replicas on MariaDB", () => {
  const dbName = `cm_test_replicas_${process.pid}`;
  let admin: Knex;
  let db: Knex;
  let dataDir: string;
  const procs: ServerProcess[] = [];
  let env: Record<string, string>;

  beforeAll(async () => {
    admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/` } as never, pool: { min: 0, max: 1 } });
    await admin.raw(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    db = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/${dbName}` } as never, pool: { min: 0, max: 2 } });
    dataDir = mkdtempSync(path.join(tmpdir(), "cm-replicas-"));
    // Both replicas share the database, the local keystore and the page-token key, as in production.
    env = {
      CM_DATABASE_URL: `${MYSQL_URL}/${dbName}`,
      CM_DATA_DIR: dataDir,
      CM_RECLAMATION_RETENTION_SECONDS: "1",
      CM_PURGE_INTERVAL_SECONDS: "1",
      CM_PURGE_LEASE_SECONDS: "2",
      CM_PURGE_BATCH_SIZE: "25",
      CM_LOG_LEVEL: "debug",
    };
  });
  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill("SIGKILL");
    await db?.destroy();
    await admin?.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
    await admin?.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("two replicas reclaim each expired reclamation exactly once", async () => {
    const a = await startServerProcess(env);
    procs.push(a);
    const b = await startServerProcess(env);
    procs.push(b);
    const ca = clients(a.port, dataDir);
    const cb = clients(b.port, dataDir);
    const leaf = makeLeaf({ cn: "replica.example.test" });
    const recs: string[] = [];
    for (let i = 0; i < 8; i++) {
      const c = i % 2 ? ca : cb;
      const inst = (await c.instances.createInstance({ instance: { displayName: `r${i}` } })).instance!;
      await c.certificates.importCertificate({ parent: inst.name, certificate: leaf.certPem, privateKey: leaf.keyPem });
      recs.push((await c.instances.deleteInstance({ name: inst.name })).reclamation!.name);
    }
    for (const name of recs) {
      await until(async () => {
        const r = (await ca.reclamations.getReclamation({ name })).reclamation!;
        return r.state === reclamationPb.Reclamation_State.STATE_RECLAIMED ? r : undefined;
      }, 30_000);
    }
    // Each reclamation was reclaimed by exactly one of the two processes.
    const reclaimed = [...a.logs, ...b.logs].filter((l) => l.includes('"msg":"reclamation reclaimed"')).map((l) => JSON.parse(l).reclamation as string);
    for (const name of recs) expect(reclaimed.filter((r) => r === name), name).toHaveLength(1);
    expect(Number(((await db("certificates").count({ n: "*" })) as { n: number }[])[0].n)).toBe(0);
    a.child.kill("SIGTERM");
    b.child.kill("SIGTERM");
    expect(await a.exited).toBe(0);
    expect(await b.exited).toBe(0);
  });

  it("finishes a reclaim after the replica doing it is killed with SIGKILL", async () => {
    const a = await startServerProcess({ ...env, CM_RECLAMATION_RETENTION_SECONDS: "3600" });
    procs.push(a);
    const c = clients(a.port, dataDir);
    const inst = (await c.instances.createInstance({ instance: { displayName: "big" } })).instance!;
    const leaf = makeLeaf({ cn: "kill.example.test" });
    const first = (await c.certificates.importCertificate({ parent: inst.name, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!;
    // Clone the stored rows 3,000 times (distinct ids and fingerprints): enough batches to kill mid-way.
    const certRow = await db("certificates").where({ id: first.name.split("/").pop() }).first();
    const versionRow = await db("certificate_versions").where({ certificate_id: certRow.id }).first();
    for (let chunk = 0; chunk < 3000; chunk += 300) {
      const ids = Array.from({ length: 300 }, () => randomUUID());
      await db("certificates").insert(ids.map((id, i) => ({ ...certRow, id, sha256_fingerprint: (chunk + i).toString(16).padStart(64, "0") })));
      await db("certificate_versions").insert(ids.map((id) => ({ ...versionRow, certificate_id: id })));
      await db("certificate_domains").insert(ids.map((id) => ({ certificate_id: id, instance_id: certRow.instance_id, domain: "kill.example.test" })));
    }
    const rec = (await c.instances.deleteInstance({ name: inst.name })).reclamation!;
    // DeleteReclamation starts the reclaim; kill the server at its first batch.
    const pending = c.reclamations.deleteReclamation({ name: rec.name }).catch(() => undefined);
    await a.waitForLog(/"msg":"reclaim batch"/);
    a.child.kill("SIGKILL");
    await a.exited;
    await pending;
    const left = Number(((await db("certificates").where({ instance_id: certRow.instance_id }).count({ n: "*" })) as { n: number }[])[0].n);
    expect(left).toBeGreaterThan(0);
    expect((await db("reclamations").where({ id: rec.name.split("/").pop() }).first()).state).toBe("RECLAIMING");

    const b = await startServerProcess(env);
    procs.push(b);
    await b.waitForLog(/"msg":"reclamation reclaimed"/, 30_000);
    const cb = clients(b.port, dataDir);
    expect((await cb.reclamations.getReclamation({ name: rec.name })).reclamation!.state).toBe(reclamationPb.Reclamation_State.STATE_RECLAIMED);
    expect((await cb.instances.getInstance({ name: inst.name })).instance!.state).toBe(instancePb.Instance_State.STATE_DELETED);
    // No orphans anywhere: every version and domain row belongs to a certificate, no DEK of the instance is left.
    const orphanVersions = await db("certificate_versions").leftJoin("certificates", "certificates.id", "certificate_versions.certificate_id").whereNull("certificates.id").count({ n: "*" });
    const orphanDomains = await db("certificate_domains").leftJoin("certificates", "certificates.id", "certificate_domains.certificate_id").whereNull("certificates.id").count({ n: "*" });
    expect(Number((orphanVersions as { n: number }[])[0].n)).toBe(0);
    expect(Number((orphanDomains as { n: number }[])[0].n)).toBe(0);
    expect(await db("deks").where({ instance_id: certRow.instance_id })).toEqual([]);
    expect(await db("certificates").where({ instance_id: certRow.instance_id })).toEqual([]);
    b.child.kill("SIGTERM");
    expect(await b.exited).toBe(0);
  });
});
