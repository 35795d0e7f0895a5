/**
 * The built server as an operator starts it: plaintext refused on a non-loopback address, accepted with the
 * explicit setting and a warning at every start, TLS files rotated on disk then picked up on SIGHUP, and the
 * plaintext health listener that lets a probe without credentials check a mutual-TLS server.
 */
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { credentials, status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, describe, expect, it } from "vitest";

import { InstanceServiceClient, ListInstancesRequest } from "../../gen/ts/certmanager/v1/instance.js";

import { makeCa, makeLeaf } from "../helpers/openssl.js";
import { ROOT, startServerProcess } from "../helpers/process.js";

const dir = mkdtempSync(path.join(tmpdir(), "cm-tls-e2e-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("TLS and the listen address, as a process", () => {
  it("refuses plaintext on 0.0.0.0 with exit 2 and the three ways out", async () => {
    const child = spawn(process.execPath, ["dist/src/main.js"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, CM_DATA_DIR: path.join(dir, "refused"), CM_LISTEN_ADDRESS: "0.0.0.0:0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += String(d)));
    expect(await new Promise((resolve) => child.on("exit", resolve))).toBe(2);
    expect(stderr).toContain("configuration error: CM_LISTEN_ADDRESS");
    expect(stderr).toContain("CM_TLS_CERT_FILE and CM_TLS_KEY_FILE, listen on 127.0.0.1, or set CM_ALLOW_INSECURE_NON_LOOPBACK=true");
  });

  it("with CM_ALLOW_INSECURE_NON_LOOPBACK=true it serves, and warns at every start", async () => {
    for (let start = 0; start < 2; start++) {
      const p = await startServerProcess({ CM_DATA_DIR: path.join(dir, "insecure"), CM_LISTEN_ADDRESS: "0.0.0.0:0", CM_ALLOW_INSECURE_NON_LOOPBACK: "true" });
      const warning = JSON.parse(await p.waitForLog(/serving plaintext gRPC on a non-loopback address/)) as Record<string, unknown>;
      expect(warning.level).toBe(40);
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    }
  });

  it("picks up rotated TLS files on SIGHUP and logs the new certificate", async () => {
    const ca = makeCa({ cn: "E2E TLS CA", keySlot: "e2e-tls-ca" });
    const [first, second] = ["e2e-tls-1", "e2e-tls-2"].map((slot) => makeLeaf({ cn: "localhost", keySlot: slot, issuer: ca, sans: { ip: ["127.0.0.1"] } }));
    const cert = path.join(dir, "tls.crt");
    const key = path.join(dir, "tls.key");
    writeFileSync(cert, first!.certPem);
    writeFileSync(key, first!.keyPem, { mode: 0o600 });
    const p = await startServerProcess({ CM_DATA_DIR: path.join(dir, "tls"), CM_TLS_CERT_FILE: cert, CM_TLS_KEY_FILE: key, CM_TLS_RELOAD_INTERVAL_SECONDS: "3600" });
    try {
      expect(JSON.parse(await p.waitForLog(/"msg":"TLS certificate loaded"/)).certificate).toBe(new X509Certificate(first!.certPem).fingerprint256);
      writeFileSync(cert, second!.certPem);
      writeFileSync(key, second!.keyPem);
      p.child.kill("SIGHUP");
      const reloaded = JSON.parse(await p.waitForLog(/"msg":"TLS certificate reloaded"/)) as Record<string, unknown>;
      expect([reloaded.reason, reloaded.certificate]).toEqual(["SIGHUP", new X509Certificate(second!.certPem).fingerprint256]);
      // No log line holds key material.
      expect(p.logs.join("\n")).not.toContain("PRIVATE KEY");
      // The health probe speaks TLS when given the CA; without it, a plaintext probe gets no answer.
      const caFile = path.join(dir, "ca.crt");
      writeFileSync(caFile, ca.certPem);
      const probe = (...args: string[]) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const c = spawn(process.execPath, ["dist/src/cli/health.js", `127.0.0.1:${p.port}`, ...args], { cwd: ROOT, env: { PATH: process.env.PATH }, stdio: ["ignore", "pipe", "ignore"] });
          let out = "";
          c.stdout.on("data", (d) => (out += String(d)));
          c.on("exit", (code) => resolve({ code, out }));
        });
      const tls = await probe("--ca", caFile);
      expect([tls.code, JSON.parse(tls.out).status]).toEqual([0, "SERVING"]);
      expect((await probe("--timeout", "1")).code).toBe(1);
    } finally {
      p.child.kill("SIGTERM");
      await p.exited;
    }
  });

  it("a mutual-TLS server with CM_HEALTH_LISTEN_ADDRESS answers a plaintext probe there, and only health", async () => {
    const ca = makeCa({ cn: "E2E mTLS CA", keySlot: "e2e-mtls-ca" });
    const leaf = makeLeaf({ cn: "localhost", keySlot: "e2e-mtls-server", issuer: ca, sans: { ip: ["127.0.0.1"] } });
    const cert = path.join(dir, "mtls.crt");
    const key = path.join(dir, "mtls.key");
    const clientCa = path.join(dir, "mtls-clients.crt");
    writeFileSync(cert, leaf.certPem);
    writeFileSync(key, leaf.keyPem, { mode: 0o600 });
    writeFileSync(clientCa, ca.certPem);
    const p = await startServerProcess({
      CM_DATA_DIR: path.join(dir, "mtls"),
      CM_TLS_CERT_FILE: cert,
      CM_TLS_KEY_FILE: key,
      CM_TLS_CLIENT_CA_FILE: clientCa,
      CM_HEALTH_LISTEN_ADDRESS: "127.0.0.1:0",
    });
    try {
      const serving = JSON.parse(await p.waitForLog(/"msg":"certificate manager serving"/)) as { health_address: string };
      const healthAddress = serving.health_address;
      expect(healthAddress).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(healthAddress).not.toBe(`127.0.0.1:${p.port}`);
      // With no arguments the probe reads CM_HEALTH_LISTEN_ADDRESS, as a container HEALTHCHECK in the server's
      // environment does; it has no client certificate, which the main port would demand.
      const probe = (env: Record<string, string>, ...args: string[]) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const c = spawn(process.execPath, ["dist/src/cli/health.js", ...args], { cwd: ROOT, env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "ignore"] });
          let out = "";
          c.stdout.on("data", (d) => (out += String(d)));
          c.on("exit", (code) => resolve({ code, out }));
        });
      const viaHealth = await probe({ CM_HEALTH_LISTEN_ADDRESS: healthAddress, CM_LISTEN_ADDRESS: `127.0.0.1:${p.port}` });
      expect([viaHealth.code, JSON.parse(viaHealth.out)]).toEqual([0, { address: healthAddress, status: "SERVING" }]);
      const caFile = path.join(dir, "mtls-ca.crt");
      writeFileSync(caFile, ca.certPem);
      expect((await probe({}, `127.0.0.1:${p.port}`, "--ca", caFile, "--timeout", "2")).code).toBe(1);
      // The health port serves nothing else: no certificate RPC is reachable without TLS and credentials.
      const client = new InstanceServiceClient(healthAddress, credentials.createInsecure());
      try {
        const err = await new Promise<ServiceError>((resolve, reject) =>
          client.listInstances(ListInstancesRequest.fromPartial({}), (e) => (e ? resolve(e) : reject(new Error("ListInstances answered on the health port")))),
        );
        expect(err.code).toBe(status.UNIMPLEMENTED);
      } finally {
        client.close();
      }
    } finally {
      p.child.kill("SIGTERM");
      expect(await p.exited).toBe(0);
    }
  });
});
