/**
 * ImportCertificate throughput by input form (over real gRPC, SQLite, concurrency 8): plain PEM, a full chain
 * pasted into `certificate` (chain repair), DER, an encrypted PKCS#8 key (decrypted in an isolated worker), and
 * PKCS#12 files (AES, legacy RC2/3DES; read in isolated workers). Also the event loop's worst stall while the
 * PKCS#12 imports run, measured by a timer in the server's process: the workers must keep it small.
 *
 *   npx tsx bench/import.ts [seconds per case, default 4]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { credentials } from "@grpc/grpc-js";
import pino from "pino";
import * as certificatePb from "../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../gen/ts/certmanager/v1/instance.js";
import { loadConfig } from "../src/config/index.js";
import { startService } from "../src/main.js";
import { encryptKey, exportPkcs12, makeChain, openssl } from "../test/helpers/openssl.js";
import { bearer, promisify } from "../test/helpers/service.js";

const SECONDS = Number(process.argv[2] ?? 4);
const CONCURRENCY = 8;

function legacyPkcs12(certPem: string, keyPem: string, caPems: string[]): Buffer {
  const dir = mkdtempSync(path.join(tmpdir(), "cm-bench-p12-"));
  try {
    writeFileSync(path.join(dir, "c.pem"), certPem);
    writeFileSync(path.join(dir, "k.pem"), keyPem);
    writeFileSync(path.join(dir, "ca.pem"), caPems.join(""));
    openssl(["pkcs12", "-export", "-legacy", "-in", "c.pem", "-inkey", "k.pem", "-certfile", "ca.pem", "-passout", "pass:pw", "-out", "f.p12"], { cwd: dir });
    return readFileSync(path.join(dir, "f.p12"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "cm-bench-import-"));
  const config = loadConfig({ CM_DATA_DIR: dataDir, CM_LISTEN_ADDRESS: "127.0.0.1:0", CM_LOG_LEVEL: "warn", CM_RATE_LIMIT_PER_SECOND: "0" });
  const service = await startService(config, { log: pino({ level: "warn" }) });
  const address = `127.0.0.1:${service.port}`;
  const auth = { interceptors: [bearer(readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim())] };
  const instances = promisify(new instancePb.InstanceServiceClient(address, credentials.createInsecure(), auth), instancePb.InstanceServiceService, instancePb);
  const certificates = promisify(new certificatePb.CertificateServiceClient(address, credentials.createInsecure(), auth), certificatePb.CertificateServiceService, certificatePb);
  try {
    const chain = makeChain({ name: "bench-import", depth: 2, keyType: "rsa2048", cn: "bench-import.example.test" });
    const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const cases: [string, Record<string, unknown>][] = [
      ["PEM (certificate, key, intermediates)", { certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") }],
      ["full chain in certificate (repair)", { certificate: chain.rootPem + chain.intermediatesPem.join("") + chain.leafPem, privateKey: chain.leafKeyPem }],
      ["DER certificate and key", { certificateDer: der(chain.leafPem), privateKeyDer: der(chain.leafKeyPem) }],
      ["encrypted PKCS#8 key (AES-256, 2048 iterations)", { certificate: chain.leafPem, privateKey: encryptKey({ type: "rsa2048", pkcs8Pem: chain.leafKeyPem, legacyPem: "", publicPem: "" }, { password: "pw" }), passphrase: "pw" }],
      ["PKCS#12 AES-256 (OpenSSL 3 default)", { pkcs12: exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, caPems: chain.intermediatesPem, password: "pw" }), passphrase: "pw" }],
      ["PKCS#12 legacy RC2-40/3DES", { pkcs12: legacyPkcs12(chain.leafPem, chain.leafKeyPem, chain.intermediatesPem), passphrase: "pw" }],
    ];
    for (const [name, material] of cases) {
      // Each import goes to its own instance: the same certificate twice in one instance is ALREADY_EXISTS.
      const parents = await Promise.all(Array.from({ length: 400 }, async () => (await instances.createInstance({ instance: {} })).instance!.name));
      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      let done = 0;
      const start = performance.now();
      const end = start + SECONDS * 1000;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (performance.now() < end && done < parents.length) {
            await certificates.importCertificate({ parent: parents[done++], ...material });
          }
        }),
      );
      const elapsed = (performance.now() - start) / 1000;
      delay.disable();
      console.log(
        `${name.padEnd(50)} ${String(Math.round(done / elapsed)).padStart(5)} imports/s, event-loop delay p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms, max ${(delay.max / 1e6).toFixed(0)} ms`,
      );
    }
  } finally {
    await service.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
