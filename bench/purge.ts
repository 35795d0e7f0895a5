/**
 * Permanent delete (DeleteReclamation) of an instance holding N certificates, over real gRPC, on MariaDB and
 * SQLite. The certificates' rows are real: one certificate with key and chain is imported through the
 * service, then its rows are cloned N-1 times with distinct ids and fingerprints (the reclaim does not read
 * the ciphertext, it deletes it).
 *
 *   npx tsx bench/purge.ts [N, default 100000] [batch size, default 500]
 *
 * MariaDB at CM_BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306); skipped when it does not answer.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import knexFactory, { type Knex } from "knex";
import pino from "pino";
import * as certificatePb from "../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../gen/ts/certmanager/v1/instance.js";
import * as reclamationPb from "../gen/ts/certmanager/v1/reclamation.js";
import { loadConfig } from "../src/config/index.js";
import { startService } from "../src/main.js";
import { createKnex } from "../src/storage/index.js";
import { makeChain } from "../test/helpers/openssl.js";
import { bearer, promisify } from "../test/helpers/service.js";

const N = Number(process.argv[2] ?? 100_000);
const BATCH = process.argv[3] ?? "500";
const MYSQL = process.env.CM_BENCH_MYSQL_URL ?? "mysql://root@127.0.0.1:3306";

async function run(dialect: "mysql" | "sqlite"): Promise<void> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "cm-bench-purge-"));
  const dbName = `cm_bench_purge_${process.pid}`;
  let admin: Knex | undefined;
  if (dialect === "mysql") {
    admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL}/` } as never, pool: { min: 0, max: 1 } });
    await admin.raw(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  }
  const config = loadConfig({
    CM_DATA_DIR: dataDir,
    CM_LISTEN_ADDRESS: "127.0.0.1:0",
    CM_LOG_LEVEL: "warn",
    CM_PURGE_BATCH_SIZE: BATCH,
    CM_PURGE_INTERVAL_SECONDS: "86400",
    CM_RATE_LIMIT_PER_SECOND: "0",
    ...(dialect === "mysql" ? { CM_DATABASE_URL: `${MYSQL}/${dbName}` } : {}),
  });
  const service = await startService(config, { log: pino({ level: "warn" }) });
  const address = `127.0.0.1:${service.port}`;
  const auth = { interceptors: [bearer(readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim())] };
  const instances = promisify(new instancePb.InstanceServiceClient(address, credentials.createInsecure(), auth), instancePb.InstanceServiceService, instancePb);
  const certificates = promisify(new certificatePb.CertificateServiceClient(address, credentials.createInsecure(), auth), certificatePb.CertificateServiceService, certificatePb);
  const reclamations = promisify(new reclamationPb.ReclamationServiceClient(address, credentials.createInsecure(), auth), reclamationPb.ReclamationServiceService, reclamationPb);
  const db = createKnex(config.database);
  try {
    const inst = (await instances.createInstance({ instance: { displayName: "bench" } })).instance!;
    const chain = makeChain({ keyType: "rsa2048", name: "bench-purge", cn: "bench.example.test", sans: { dns: ["bench.example.test", "www.bench.example.test"] } });
    const first = (await certificates.importCertificate({ parent: inst.name, certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") })).certificate!;
    const certRow = await db("certificates").where({ id: first.name.split("/").pop() }).first();
    const versionRow = await db("certificate_versions").where({ certificate_id: certRow.id }).first();
    const domainRows = await db("certificate_domains").where({ certificate_id: certRow.id });
    const fillStart = performance.now();
    for (let done = 1; done < N; ) {
      const n = Math.min(400, N - done);
      const ids = Array.from({ length: n }, () => randomUUID());
      await db.transaction(async (trx) => {
        await trx("certificates").insert(ids.map((id, i) => ({ ...certRow, id, sha256_fingerprint: (done + i).toString(16).padStart(64, "0") })));
        await trx("certificate_versions").insert(ids.map((id) => ({ ...versionRow, certificate_id: id })));
        for (const d of domainRows) await trx("certificate_domains").insert(ids.map((id) => ({ ...d, certificate_id: id })));
      });
      done += n;
    }
    const fillSeconds = (performance.now() - fillStart) / 1000;
    const bytes = (versionRow.certificate_jwe.length + versionRow.private_key_jwe.length + versionRow.intermediates_jwe.length) * N;
    const rec = (await instances.deleteInstance({ name: inst.name })).reclamation!;
    const start = performance.now();
    const done = (await reclamations.deleteReclamation({ name: rec.name })).reclamation!;
    const seconds = (performance.now() - start) / 1000;
    if (done.state !== reclamationPb.Reclamation_State.STATE_RECLAIMED) throw new Error(`reclamation ended in state ${done.state}`);
    const left = Number(((await db("certificates").where({ instance_id: certRow.instance_id }).count({ n: "*" })) as { n: number }[])[0].n);
    if (left !== 0) throw new Error(`${left} certificates left after reclaim`);
    console.log(
      `${dialect.padEnd(7)} reclaim of ${N} certificates (${(bytes / 1e6).toFixed(0)} MB of JWE, ${domainRows.length} domains each), batch ${BATCH}: ` +
        `${seconds.toFixed(2)} s, ${Math.round(N / seconds)} certificates/s (fill took ${fillSeconds.toFixed(1)} s)`,
    );
  } finally {
    await db.destroy();
    await service.stop();
    if (admin) {
      await admin.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
      await admin.destroy();
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

let mysqlUp = true;
try {
  const k = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL}/`, connectTimeout: 2000 } as never, pool: { min: 0, max: 1 } });
  await k.raw("select 1");
  await k.destroy();
} catch {
  mysqlUp = false;
}
console.log(`node ${process.version}; purge benchmark, N=${N}`);
if (mysqlUp) await run("mysql");
else console.log(`mysql   skipped: ${MYSQL} does not answer`);
await run("sqlite");
process.exit(0);
