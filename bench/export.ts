/**
 * ExportCertificates of N certificates with private keys from MariaDB, against the server as a separate
 * process (the compiled build), read by a grpc-js client: certificates/s, MB/s and the server's peak RSS growth
 * (sampled from /proc every 20 ms), next to the rate at which the same rows are read by a plain
 * keyset-paginated Knex scan in the same run.
 *
 *   npx tsx bench/export.ts [N, default 100000]
 *
 * The rows are real: one chain is imported through the service, and N-1 copies of its material are sealed
 * with the instance's DEK under their own names, so every exported row is decrypted and authenticated.
 * MariaDB at CM_BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306).
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import knexFactory from "knex";
import * as certificatePb from "../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../gen/ts/certmanager/v1/instance.js";
import { seal } from "../src/crypto/sealed-field.js";
import { LocalRootKeyBackend } from "../src/crypto/rootkeys/local.js";
import { unwrapDek } from "../src/crypto/wrapped-dek.js";
import { makeChain } from "../test/helpers/openssl.js";
import { startServerProcess } from "../test/helpers/process.js";
import { bearer, promisify } from "../test/helpers/service.js";

const N = Number(process.argv[2] ?? 100_000);
const MYSQL = process.env.CM_BENCH_MYSQL_URL ?? "mysql://root@127.0.0.1:3306";
const ROOT = path.resolve(import.meta.dirname, "..");

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat (clock ticks of 1/100 s). */
const cpuSeconds = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};

execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
const dbName = `cm_bench_export_${process.pid}`;
const admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL}/` } as never, pool: { min: 0, max: 1 } });
await admin.raw(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
const db = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL}/${dbName}`, supportBigNumbers: true } as never, pool: { min: 0, max: 4 } });
const dataDir = mkdtempSync(path.join(tmpdir(), "cm-bench-export-"));
const server = await startServerProcess({ CM_DATABASE_URL: `${MYSQL}/${dbName}`, CM_DATA_DIR: dataDir, CM_LOG_LEVEL: "info", CM_RATE_LIMIT_PER_SECOND: "0", ...(process.env.CM_EXPORT_BATCH_SIZE ? { CM_EXPORT_BATCH_SIZE: process.env.CM_EXPORT_BATCH_SIZE } : {}), ...(process.env.CM_BENCH_NODE_OPTIONS ? { NODE_OPTIONS: process.env.CM_BENCH_NODE_OPTIONS } : {}) });
try {
  const address = `127.0.0.1:${server.port}`;
  const auth = { interceptors: [bearer(readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim())] };
  const instances = promisify(new instancePb.InstanceServiceClient(address, credentials.createInsecure(), auth), instancePb.InstanceServiceService, instancePb);
  const certClient = new certificatePb.CertificateServiceClient(address, credentials.createInsecure(), { "grpc.max_receive_message_length": 64 * 1024 * 1024, ...auth });
  const certificates = promisify(certClient, certificatePb.CertificateServiceService, certificatePb);

  const inst = (await instances.createInstance({ instance: { displayName: "bench" } })).instance!;
  const iid = inst.name.split("/")[1];
  const chain = makeChain({ keyType: "rsa2048", name: "bench-export", cn: "bench.example.test", sans: { dns: ["bench.example.test"] } });
  const first = (await certificates.importCertificate({ parent: inst.name, certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") })).certificate!;
  const material = await certificates.accessCertificate({ name: first.name });

  // Fill: seal the material under each new certificate's own name with the instance's DEK.
  const certRow = await db("certificates").where({ id: first.name.split("/").pop() }).first();
  const versionRow = await db("certificate_versions").where({ certificate_id: certRow.id }).first();
  const dekRow = await db("deks").where({ instance_id: iid }).first();
  const keystore = await LocalRootKeyBackend.open(path.join(dataDir, "root-keys.json"), { createIfMissing: false, defaultKeyId: "default" });
  const dek = { id: dekRow.id as string, key: await unwrapDek(keystore, dekRow.wrapped_key, { instance: inst.name }) };
  const fillStart = performance.now();
  for (let done = 1; done < N; ) {
    const n = Math.min(400, N - done);
    const ids = Array.from({ length: n }, () => randomUUID());
    const versions: Record<string, unknown>[] = [];
    for (const id of ids) {
      const ctx = (field: "certificate" | "private_key" | "intermediates") => ({ instance: inst.name, certificate: `${inst.name}/certificates/${id}`, field });
      versions.push({
        ...versionRow,
        certificate_id: id,
        certificate_jwe: await seal(dek, Buffer.from(material.certificate), ctx("certificate")),
        private_key_jwe: await seal(dek, Buffer.from(material.privateKey), ctx("private_key")),
        intermediates_jwe: await seal(dek, Buffer.from(material.intermediates), ctx("intermediates")),
      });
    }
    await db.transaction(async (trx) => {
      await trx("certificates").insert(ids.map((id, i) => ({ ...certRow, id, create_time: Number(certRow.create_time) + done + i, sha256_fingerprint: (done + i).toString(16).padStart(64, "0") })));
      await trx("certificate_versions").insert(versions);
    });
    done += n;
  }
  dek.key.fill(0);
  await keystore.close();
  const fillSeconds = (performance.now() - fillStart) / 1000;

  // Baseline: a plain keyset-paginated Knex scan of the same rows (certificates joined with their versions).
  const scanStart = performance.now();
  let scanned = 0;
  let after: { t: number; id: string } | undefined;
  for (;;) {
    const q = db("certificates as c")
      .join("certificate_versions as v", (j) => j.on("v.certificate_id", "=", "c.id").andOn("v.version", "=", "c.current_version"))
      .select("c.*", "v.certificate_jwe", "v.private_key_jwe", "v.intermediates_jwe")
      .where("c.instance_id", iid);
    if (after) {
      const a = after;
      q.andWhere((w) => w.where("c.create_time", ">", a.t).orWhere((w2) => w2.where("c.create_time", a.t).andWhere("c.id", ">", a.id)));
    }
    const rows = await q.orderBy([{ column: "c.create_time" }, { column: "c.id" }]).limit(500);
    if (rows.length === 0) break;
    scanned += rows.length;
    const last = rows[rows.length - 1];
    after = { t: Number(last.create_time), id: last.id };
  }
  const scanRate = scanned / ((performance.now() - scanStart) / 1000);

  // The export, with the server's RSS sampled throughout.
  const baseline = rssKb(server.child.pid!);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rssKb(server.child.pid!))), 20);
  let count = 0;
  let bytes = 0;
  const cpuBefore = cpuSeconds(server.child.pid!);
  const clientCpuBefore = process.cpuUsage();
  const start = performance.now();
  const call = certClient.exportCertificates(certificatePb.ExportCertificatesRequest.fromPartial({ parent: inst.name, includePrivateKeys: true }));
  for await (const m of call as AsyncIterable<certificatePb.ExportCertificatesResponse>) {
    count++;
    bytes += m.certificatePem.length + m.privateKeyPem.length + m.intermediatesPem.length;
  }
  const seconds = (performance.now() - start) / 1000;
  clearInterval(sampler);
  const serverCpu = (cpuSeconds(server.child.pid!) - cpuBefore) / seconds;
  const c = process.cpuUsage(clientCpuBefore);
  const clientCpu = (c.user + c.system) / 1e6 / seconds;
  if (count !== N) throw new Error(`exported ${count} of ${N}`);
  console.log(`node ${process.version}; export of ${N} certificates with private keys from MariaDB (fill took ${fillSeconds.toFixed(1)} s)`);
  console.log(`plain keyset Knex scan of the same rows: ${Math.round(scanRate)} rows/s`);
  console.log(
    `ExportCertificates: ${Math.round(count / seconds)} certificates/s, ${(bytes / 1e6 / seconds).toFixed(1)} MB/s of PEM, ` +
      `${seconds.toFixed(1)} s; server RSS ${Math.round(baseline / 1024)} MB -> peak ${Math.round(peak / 1024)} MB (growth ${((peak - baseline) / 1024).toFixed(1)} MB); ` +
      `export/scan = ${(count / seconds / scanRate).toFixed(2)}`,
  );
  await new Promise((r) => setTimeout(r, 200));
  console.log(`server: ${server.logs.filter((l) => l.includes('"stream done"')).at(-1)}`);
  console.log(`CPU during the export: server ${(100 * serverCpu).toFixed(0)} % of a core, client (this process) ${(100 * clientCpu).toFixed(0)} %`);
  certClient.close();
} finally {
  server.child.kill("SIGTERM");
  await server.exited;
  await db.destroy();
  await admin.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
  await admin.destroy();
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(0);
