/**
 * The DEK cache under load: AccessCertificate calls spread over many instances (concurrency 16, over real
 * gRPC, SQLite), and how many unwraps per second reach the root-key backend, for a cache that holds the
 * whole working set and for one that holds a quarter of it.
 *
 *   npx tsx bench/dekcache.ts [instances, default 200] [seconds per case, default 5]
 */
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import pino from "pino";
import * as certificatePb from "../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../gen/ts/certmanager/v1/instance.js";
import { loadConfig } from "../src/config/index.js";
import { startService } from "../src/main.js";
import { makeLeaf } from "../test/helpers/openssl.js";
import { bearer, promisify } from "../test/helpers/service.js";

const INSTANCES = Number(process.argv[2] ?? 200);
const SECONDS = Number(process.argv[3] ?? 5);
const CONCURRENCY = 16;

async function run(cacheMax: number): Promise<void> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "cm-bench-dek-"));
  const config = loadConfig({ CM_DATA_DIR: dataDir, CM_LISTEN_ADDRESS: "127.0.0.1:0", CM_LOG_LEVEL: "warn", CM_DEK_CACHE_MAX: String(cacheMax), CM_RATE_LIMIT_PER_SECOND: "0" });
  const service = await startService(config, { log: pino({ level: "warn" }) });
  const address = `127.0.0.1:${service.port}`;
  const auth = { interceptors: [bearer(readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim())] };
  const instances = promisify(new instancePb.InstanceServiceClient(address, credentials.createInsecure(), auth), instancePb.InstanceServiceService, instancePb);
  const certificates = promisify(new certificatePb.CertificateServiceClient(address, credentials.createInsecure(), auth), certificatePb.CertificateServiceService, certificatePb);
  try {
    const leaf = makeLeaf({ cn: "dek-bench.example.test", keyType: "ec256" });
    const names: string[] = [];
    for (let i = 0; i < INSTANCES; i++) {
      const inst = (await instances.createInstance({ instance: {} })).instance!;
      names.push((await certificates.importCertificate({ parent: inst.name, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!.name);
    }
    // Warm up, then measure.
    await Promise.all(names.map((name) => certificates.accessCertificate({ name })));
    const unwrapsBefore = service.unwrapCount();
    let calls = 0;
    const end = performance.now() + SECONDS * 1000;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < end) {
          await certificates.accessCertificate({ name: names[Math.floor(Math.random() * names.length)] });
          calls++;
        }
      }),
    );
    const elapsed = (performance.now() - start) / 1000;
    const unwraps = service.unwrapCount() - unwrapsBefore;
    console.log(
      `cache ${String(cacheMax).padStart(5)} DEKs, ${INSTANCES} instances: ${Math.round(calls / elapsed)} AccessCertificate/s, ` +
        `${Math.round(unwraps / elapsed)} unwraps/s reach the root-key backend (${((100 * unwraps) / Math.max(calls, 1)).toFixed(1)} % of calls)`,
    );
  } finally {
    await service.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

console.log(`node ${process.version}; DEK cache under load, concurrency ${CONCURRENCY}, ${SECONDS} s per case`);
await run(INSTANCES * 2);
await run(Math.max(1, Math.floor(INSTANCES / 4)));
process.exit(0);
