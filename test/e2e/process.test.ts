/**
 * The server as a separate process, as an operator runs it: reflection and health through `buf curl` (the
 * grpcurl stand-in: it ships in the @bufbuild/buf npm package), config errors naming the variable, SIGTERM draining and exiting 0.
 */
import { createServer } from "node:net";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeChain } from "../helpers/openssl.js";
import { ROOT, startServerProcess, type ServerProcess } from "../helpers/process.js";

const run = promisify(execFile);
const BUF = path.join(ROOT, "node_modules/.bin/buf");

async function bufCurl(port: number, args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args.slice(0, -1), `http://127.0.0.1:${port}${args[args.length - 1]}`], {
    cwd: ROOT,
  });
  return stdout;
}

describe("server process", () => {
  let dataDir: string;
  let p: ServerProcess;
  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), "cm-e2e-"));
    p = await startServerProcess({ CM_DATA_DIR: dataDir });
  });
  afterAll(async () => {
    if (p.child.exitCode === null) p.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("creates its data directory with private files", () => {
    expect(statSync(dataDir).isDirectory()).toBe(true);
    expect(statSync(path.join(dataDir, "root-keys.json")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dataDir, "page-token.key")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dataDir, "certmanager.sqlite")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dataDir, "api-key-pepper.key")).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dataDir, "bootstrap-admin.key")).mode & 0o777).toBe(0o600);
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    // The log names the bootstrap key's file, never its value.
    const key = readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim();
    expect(p.logs.join("\n")).toContain(path.join(dataDir, "bootstrap-admin.key"));
    expect(p.logs.join("\n")).not.toContain(key.slice(21));
  });

  it("lists and describes services through reflection, with no proto files", async () => {
    const services = (await bufCurl(p.port, ["--list-services", ""])).trim().split("\n").sort();
    expect(services).toEqual([
      "certmanager.v1.ApiKeyService",
      "certmanager.v1.AuditService",
      "certmanager.v1.CertificateService",
      "certmanager.v1.IamService",
      "certmanager.v1.InstanceService",
      "certmanager.v1.ReclamationService",
      "grpc.health.v1.Health",
    ]);
    const methods = await bufCurl(p.port, ["--list-methods", ""]);
    expect(methods).toContain("certmanager.v1.CertificateService/AccessCertificate");
    const v1alpha = await bufCurl(p.port, ["--reflect-protocol", "grpc-v1alpha", "--list-services", ""]);
    expect(v1alpha).toContain("certmanager.v1.InstanceService");
  });

  it("reports SERVING health and runs the README walk-through with JSON", async () => {
    expect(JSON.parse(await bufCurl(p.port, ["-d", "{}", "/grpc.health.v1.Health/Check"]))).toEqual({ status: "SERVING" });
    expect(JSON.parse(await bufCurl(p.port, ["-d", '{"service":"certmanager.v1.CertificateService"}', "/grpc.health.v1.Health/Check"]))).toEqual({
      status: "SERVING",
    });
    const admin = ["-H", `authorization: Bearer ${readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim()}`];
    const inst = JSON.parse(await bufCurl(p.port, [...admin, "-d", '{"instance":{"display_name":"e2e"}}', "/certmanager.v1.InstanceService/CreateInstance"]));
    const chain = makeChain({ name: "e2e", cn: "e2e.example.test", sans: { dns: ["e2e.example.test"] } });
    const body = JSON.stringify({ parent: inst.instance.name, certificate: chain.leafPem, private_key: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") });
    const imported = JSON.parse(await bufCurl(p.port, [...admin, "-d", body, "/certmanager.v1.CertificateService/ImportCertificate"]));
    expect(imported.certificate.subjectCommonName).toBe("e2e.example.test");
    const accessed = JSON.parse(await bufCurl(p.port, [...admin, "-d", JSON.stringify({ name: imported.certificate.name }), "/certmanager.v1.CertificateService/AccessCertificate"]));
    expect(accessed.certificate).toContain("BEGIN CERTIFICATE");
    expect(accessed.privateKey).toContain("BEGIN PRIVATE KEY");
    // Without a credential, and as a Reader, the private key stays out of reach.
    const access = ["-d", JSON.stringify({ name: imported.certificate.name }), "/certmanager.v1.CertificateService/AccessCertificate"];
    await expect(bufCurl(p.port, access)).rejects.toMatchObject({ stderr: expect.stringContaining("unauthenticated") });
    const reader = JSON.parse(await bufCurl(p.port, [...admin, "-d", '{"api_key":{"display_name":"reader"}}', "/certmanager.v1.ApiKeyService/CreateApiKey"]));
    await bufCurl(p.port, [
      ...admin,
      "-d",
      JSON.stringify({ resource: inst.instance.name, policy: { bindings: [{ role: "roles/reader", members: [reader.apiKey.member] }] } }),
      "/certmanager.v1.IamService/SetIamPolicy",
    ]);
    const asReader = ["-H", `authorization: Bearer ${reader.secret}`];
    expect(JSON.parse(await bufCurl(p.port, [...asReader, "-d", JSON.stringify({ name: imported.certificate.name }), "/certmanager.v1.CertificateService/GetCertificate"])).certificate.name).toBe(
      imported.certificate.name,
    );
    await expect(bufCurl(p.port, [...asReader, ...access])).rejects.toMatchObject({ stderr: expect.stringContaining("permission_denied") });
    const listed = JSON.parse(
      await bufCurl(p.port, [...admin, "-d", JSON.stringify({ parent: inst.instance.name, filter: 'domain = "e2e.example.test"' }), "/certmanager.v1.CertificateService/ListCertificates"]),
    );
    expect(listed.certificates.map((c: { name: string }) => c.name)).toEqual([imported.certificate.name]);
    // Logs never carry PEM bodies.
    const line = chain.leafKeyPem.split("\n")[2];
    expect(p.logs.join("\n")).not.toContain(line);
  });

  it("answers the health probe (`npm run health`): exit 0 and SERVING; 1 for nothing listening; 2 for a usage error", async () => {
    const probe = (...args: string[]) =>
      run(process.execPath, ["dist/src/cli/health.js", ...args], { cwd: ROOT, env: { PATH: process.env.PATH } }).then(
        (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
      );
    const ok = await probe(`127.0.0.1:${p.port}`);
    expect([ok.code, JSON.parse(ok.out)]).toEqual([0, { address: `127.0.0.1:${p.port}`, status: "SERVING" }]);
    // A wildcard address is probed on loopback (the probe reads CM_LISTEN_ADDRESS, as the server does).
    const wildcard = await run(process.execPath, ["dist/src/cli/health.js"], { cwd: ROOT, env: { PATH: process.env.PATH, CM_LISTEN_ADDRESS: `0.0.0.0:${p.port}` } });
    expect(JSON.parse(wildcard.stdout).status).toBe("SERVING");
    const free = createServer();
    await new Promise<void>((r) => free.listen(0, "127.0.0.1", () => r()));
    const port = (free.address() as { port: number }).port;
    await new Promise((r) => free.close(r));
    const down = await probe(`127.0.0.1:${port}`, "--timeout", "1");
    expect(down.code).toBe(1);
    expect(JSON.parse(down.out).status).toMatch(/^UNREACHABLE/);
    const usage = await probe("--bogus");
    expect([usage.code, usage.err]).toEqual([2, expect.stringContaining("unknown option --bogus")]);
  });

  it("exits 0 on SIGTERM after draining", async () => {
    p.child.kill("SIGTERM");
    expect(await p.exited).toBe(0);
    expect(p.logs.join("\n")).toContain('"msg":"stopped"');
  });
});

describe("configuration errors", () => {
  it("names the invalid variable and exits 2", async () => {
    for (const [env, variable] of [
      [{ CM_LISTEN_ADDRESS: "nowhere" }, "CM_LISTEN_ADDRESS"],
      [{ CM_DATABASE_URL: "postgres://x" }, "CM_DATABASE_URL"],
      [{ CM_DEK_CACHE_TTL_SECONDS: "-5" }, "CM_DEK_CACHE_TTL_SECONDS"],
      [{ CM_LOG_LEVEL: "loud" }, "CM_LOG_LEVEL"],
    ] as const) {
      const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d) => (stderr += String(d)));
      const code = await new Promise((resolve) => child.on("exit", resolve));
      expect(code).toBe(2);
      expect(stderr).toContain(`configuration error: ${variable}`);
    }
  });
});

describe("transfer CLI (export to a file, import elsewhere, with the generated client)", () => {
  it("moves every certificate byte for byte and a re-run imports nothing twice", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "cm-transfer-"));
    const p = await startServerProcess({ CM_DATA_DIR: dataDir });
    try {
      const addr = `127.0.0.1:${p.port}`;
      const keyFile = path.join(dataDir, "bootstrap-admin.key");
      const admin = ["-H", `authorization: Bearer ${readFileSync(keyFile, "utf8").trim()}`];
      const curl = (body: object, method: string) => bufCurl(p.port, [...admin, "-d", JSON.stringify(body), method]).then((o) => JSON.parse(o));
      const src = (await curl({ instance: {} }, "/certmanager.v1.InstanceService/CreateInstance")).instance.name;
      const dst = (await curl({ instance: {} }, "/certmanager.v1.InstanceService/CreateInstance")).instance.name;
      for (let i = 0; i < 3; i++) {
        const chain = makeChain({ name: `transfer-${i}`, cn: `transfer-${i}.example.test` });
        await curl({ parent: src, certificate: chain.leafPem, private_key: chain.leafKeyPem, intermediates: chain.intermediatesPem.join(""), labels: { i: String(i) } }, "/certmanager.v1.CertificateService/ImportCertificate");
      }
      const file = path.join(dataDir, "export.ndjson");
      const cli = (...args: string[]) => run(process.execPath, ["dist/src/cli/transfer.js", ...args, addr], { cwd: ROOT, env: { ...process.env, CM_TOKEN_FILE: keyFile } }).then((r) => JSON.parse(r.stdout));
      expect(await cli("export", src, file)).toEqual({ exported: 3, file });
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(await cli("import", dst, file)).toEqual({ sent: 3, imported: 3, failed: [] });
      expect(await cli("import", dst, file)).toEqual({ sent: 3, imported: 3, failed: [] });
      const list = async (parent: string) => (await curl({ parent }, "/certmanager.v1.CertificateService/ListCertificates")).certificates as { name: string; sha256Fingerprint: string; labels: object }[];
      const [a, b] = [await list(src), await list(dst)];
      expect(b).toHaveLength(3);
      expect(b.map((c) => [c.sha256Fingerprint, c.labels])).toEqual(a.map((c) => [c.sha256Fingerprint, c.labels]));
      for (let i = 0; i < 3; i++) {
        const ma = await curl({ name: a[i].name }, "/certmanager.v1.CertificateService/AccessCertificate");
        const mb = await curl({ name: b[i].name }, "/certmanager.v1.CertificateService/AccessCertificate");
        expect([mb.certificate, mb.privateKey, mb.intermediates]).toEqual([ma.certificate, ma.privateKey, ma.intermediates]);
      }
    } finally {
      p.child.kill("SIGTERM");
      await p.exited;
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
