/**
 * TLS and mutual TLS over real gRPC: certificates made by the openssl CLI, files replaced on disk as an operator
 * (or cert-manager, or a sidecar) rotates them, a half-written file mid-rotation, clients from the right CA, from
 * another CA and with none.
 */
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { credentials, Metadata, status, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import * as instancePb from "../../gen/ts/certmanager/v1/instance.js";
import { makeCa, makeLeaf, type IssuedCert } from "../helpers/openssl.js";
import { databases, startTestService, TestClock, type TestService } from "../helpers/service.js";

const dbs = await databases();

/** A client on its own channel (its own connection), recording the certificates the server presents. */
function client(address: string, ca: IssuedCert, clientCert?: IssuedCert) {
  const seen: string[] = [];
  const creds: ChannelCredentials = credentials.createSsl(
    Buffer.from(ca.certPem),
    clientCert ? Buffer.from(clientCert.keyPem) : null,
    clientCert ? Buffer.from(clientCert.certPem) : null,
    {
      checkServerIdentity: (_host, cert) => {
        seen.push(cert.fingerprint256);
        return undefined;
      },
    },
  );
  const c = new instancePb.InstanceServiceClient(address, creds);
  // The call reached the server over TLS when it was answered, even with UNAUTHENTICATED (no credential sent
  // without a client certificate): these tests are about the transport.
  const list = () =>
    new Promise<instancePb.ListInstancesResponse | undefined>((resolve, reject) =>
      c.listInstances(instancePb.ListInstancesRequest.fromPartial({ pageSize: 1 }), new Metadata(), { deadline: Date.now() + 5000 }, (err, res) =>
        err ? (err.code === status.UNAUTHENTICATED ? resolve(undefined) : reject(err)) : resolve(res!),
      ),
    );
  return { seen, list, close: () => c.close() };
}

const failure = (p: Promise<unknown>): Promise<ServiceError> =>
  p.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: ServiceError) => e,
  );

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;

/** The fingerprints a new connection to `address` is shown, after one call over it. */
async function servedTo(address: string, ca: IssuedCert): Promise<string[]> {
  const c = client(address, ca);
  try {
    await c.list();
    return c.seen;
  } finally {
    c.close();
  }
}

describe.each(dbs)("TLS transport (%s)", (db) => {
  let t: TestService;
  const dir = mkdtempSync(path.join(tmpdir(), "cm-tls-"));
  const files = { cert: path.join(dir, "tls.crt"), key: path.join(dir, "tls.key") };
  const serverCa = makeCa({ cn: "TLS Test Server CA", keySlot: "tls-server-ca" });
  const server1 = makeLeaf({ cn: "localhost", keySlot: "tls-server-1", issuer: serverCa, sans: { dns: ["localhost"], ip: ["127.0.0.1"] } });
  const server2 = makeLeaf({ cn: "localhost", keySlot: "tls-server-2", issuer: serverCa, sans: { dns: ["localhost"], ip: ["127.0.0.1"] } });

  beforeAll(async () => {
    writeFileSync(files.cert, server1.certPem);
    writeFileSync(files.key, server1.keyPem, { mode: 0o600 });
    t = await startTestService(db, { CM_TLS_CERT_FILE: files.cert, CM_TLS_KEY_FILE: files.key, CM_TLS_RELOAD_INTERVAL_SECONDS: "3600" });
  });
  afterAll(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves over TLS with the configured certificate; a plaintext client cannot call", async () => {
    const c = client(t.address, serverCa);
    await c.list();
    expect(c.seen).toEqual([fingerprint(server1.certPem)]);
    c.close();
    const plain = new instancePb.InstanceServiceClient(t.address, credentials.createInsecure());
    const err = await failure(
      new Promise((resolve, reject) =>
        plain.listInstances(instancePb.ListInstancesRequest.fromPartial({}), new Metadata(), { deadline: Date.now() + 3000 }, (e, r) => (e ? reject(e) : resolve(r))),
      ),
    );
    expect([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.INTERNAL]).toContain(err.code);
    plain.close();
    expect(t.logs.find((l) => l.msg === "certificate manager serving")).toMatchObject({ tls: "server" });
  });

  it("keeps the last good pair through a half-written file, then serves the new one to new connections only", async () => {
    const open = client(t.address, serverCa);
    await open.list();
    // Mid-rotation: the new certificate is in place, its key is not (yet).
    writeFileSync(files.cert, server2.certPem);
    writeFileSync(files.key, server2.keyPem.slice(0, 60));
    expect(await t.service.reloadTls()).toBe(false);
    expect(t.logs.filter((l) => l.msg === "TLS files not reloaded: keeping the last good certificate").map((l) => l.err)).toContain(
      `${files.key} does not hold the private key of the certificate in ${files.cert}`,
    );
    const during = client(t.address, serverCa);
    await during.list();
    expect(during.seen).toEqual([fingerprint(server1.certPem)]);

    writeFileSync(files.key, server2.keyPem);
    expect(await t.service.reloadTls()).toBe(true);
    const after = client(t.address, serverCa);
    await after.list();
    expect(after.seen).toEqual([fingerprint(server2.certPem)]);
    // The connection opened before the rotation is still up: no new handshake, same certificate.
    await open.list();
    expect(open.seen).toEqual([fingerprint(server1.certPem)]);
    // Unchanged files publish nothing.
    expect(await t.service.reloadTls()).toBe(false);
    for (const c of [open, during, after]) c.close();
  });

  it("mutual TLS: a client certificate from the configured CA is required; none, or another CA's, is refused", async () => {
    const clientCa = makeCa({ cn: "TLS Test Client CA", keySlot: "tls-client-ca" });
    const otherCa = makeCa({ cn: "Some Other CA", keySlot: "tls-other-ca" });
    const good = makeLeaf({ cn: "payments", keySlot: "tls-client-good", issuer: clientCa, sans: { uri: ["spiffe://example.org/payments"] } });
    const stranger = makeLeaf({ cn: "payments", keySlot: "tls-client-stranger", issuer: otherCa, sans: { uri: ["spiffe://example.org/payments"] } });
    const caFile = path.join(dir, "clients.pem");
    writeFileSync(caFile, clientCa.certPem);
    writeFileSync(files.cert, server1.certPem);
    writeFileSync(files.key, server1.keyPem);
    const m = await startTestService(db, { CM_TLS_CERT_FILE: files.cert, CM_TLS_KEY_FILE: files.key, CM_TLS_CLIENT_CA_FILE: caFile });
    try {
      const ok = client(m.address, serverCa, good);
      await ok.list();
      ok.close();
      for (const who of [undefined, stranger]) {
        const c = client(m.address, serverCa, who);
        expect(await failure(c.list())).toMatchObject({ code: status.UNAVAILABLE });
        c.close();
      }
      expect(m.logs.find((l) => l.msg === "certificate manager serving")).toMatchObject({ tls: "mutual" });
    } finally {
      await m.stop();
    }
  });

  it("notices changed files by itself at the configured interval", async () => {
    writeFileSync(files.cert, server1.certPem);
    writeFileSync(files.key, server1.keyPem);
    const w = await startTestService(db, { CM_TLS_CERT_FILE: files.cert, CM_TLS_KEY_FILE: files.key, CM_TLS_RELOAD_INTERVAL_SECONDS: "1" });
    try {
      writeFileSync(files.cert, server2.certPem);
      writeFileSync(files.key, server2.keyPem);
      await vi.waitFor(() => expect(w.logs.filter((l) => l.msg === "TLS certificate reloaded").map((l) => l.reason)).toEqual(["file check"]), { timeout: 5000, interval: 100 });
      expect(await servedTo(w.address, serverCa)).toEqual([fingerprint(server2.certPem)]);
    } finally {
      await w.stop();
    }
  });

  it("refuses files that would fail handshakes later: expired, out of order, a client CA that is no CA, DER, oversized", async () => {
    const start = (env: Record<string, string>, clock?: TestClock) =>
      startTestService(db, { CM_TLS_CERT_FILE: files.cert, CM_TLS_KEY_FILE: files.key, ...env }, clock).then((s) => s.stop());
    writeFileSync(files.cert, server1.certPem);
    writeFileSync(files.key, server1.keyPem);
    // The leaf is valid for 30 days from now: 60 days on, it has expired.
    await expect(start({}, new TestClock(Date.now() + 60 * 86_400_000))).rejects.toThrow(/tls\.crt: the certificate is valid from .* to .*, not now/);
    const stranger = makeCa({ cn: "Unrelated CA", keySlot: "tls-unrelated-ca" });
    writeFileSync(files.cert, server1.certPem + stranger.certPem);
    await expect(start({})).rejects.toThrow("certificate 2 did not issue certificate 1; put the leaf first, then each issuer in order");
    writeFileSync(files.cert, server1.certPem + serverCa.certPem);
    await start({});
    const caFile = path.join(dir, "bad-ca.pem");
    writeFileSync(caFile, serverCa.certPem + server2.certPem);
    await expect(start({ CM_TLS_CLIENT_CA_FILE: caFile })).rejects.toThrow("bad-ca.pem: certificate 2 is not a CA certificate");
    writeFileSync(caFile, new X509Certificate(serverCa.certPem).raw);
    await expect(start({ CM_TLS_CLIENT_CA_FILE: caFile })).rejects.toThrow("bad-ca.pem does not hold CA certificates in PEM");
    writeFileSync(files.cert, server1.certPem + "#".repeat(1024 * 1024));
    await expect(start({})).rejects.toThrow(/tls\.crt is \d+ bytes, more than a TLS file can need/);
    writeFileSync(files.cert, server1.certPem);
  });

  it("warns once per distinct problem, and a reload asked for during a read reads again after it", async () => {
    writeFileSync(files.cert, server1.certPem);
    writeFileSync(files.key, server1.keyPem);
    const w = await startTestService(db, { CM_TLS_CERT_FILE: files.cert, CM_TLS_KEY_FILE: files.key, CM_TLS_RELOAD_INTERVAL_SECONDS: "3600" });
    try {
      writeFileSync(files.key, "half");
      for (let i = 0; i < 3; i++) expect(await w.service.reloadTls()).toBe(false);
      expect(w.logs.filter((l) => l.msg === "TLS files not reloaded: keeping the last good certificate")).toHaveLength(1);
      // A reload asked for after the files were replaced serves them, even when another read was already running
      // (whether that one saw old or new files depends on timing; the one asked for later must see the new ones).
      writeFileSync(files.key, server1.keyPem);
      const first = w.service.reloadTls();
      writeFileSync(files.cert, server2.certPem);
      writeFileSync(files.key, server2.keyPem);
      const second = w.service.reloadTls();
      expect([await first, await second]).toContain(true);
      expect(await servedTo(w.address, serverCa)).toEqual([fingerprint(server2.certPem)]);
    } finally {
      await w.stop();
    }
  });

  it("refuses to start on files that cannot serve, naming the file", async () => {
    writeFileSync(files.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n");
    await expect(startTestService(db, { CM_TLS_CERT_FILE: files.cert, CM_TLS_KEY_FILE: files.key })).rejects.toThrow(
      `${files.key} does not hold the private key of the certificate in ${files.cert}`,
    );
    writeFileSync(files.key, server1.keyPem);
  });
});
