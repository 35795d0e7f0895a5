/**
 * ExportCertificates (server streaming) and ImportCertificates (bidirectional) over real gRPC on SQLite and
 * MariaDB: material identical to AccessCertificate, resume without gaps or duplicates under concurrent
 * changes, recipient-encrypted private keys, cancellation, per-item results, and export -> import round trips.
 */
import { generateKeyPairSync } from "node:crypto";
import { Metadata, status, type ClientDuplexStream } from "@grpc/grpc-js";
import jose from "node-jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ExportCertificatesRequest,
  ImportCertificatesRequest,
  ImportRepair_Kind,
  type ExportCertificatesResponse,
  type DeepPartial,
  type ImportCertificatesResponse,
} from "../../gen/ts/certmanager/v1/certificate.js";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { exportPkcs12, makeCert, makeChain, makeLeaf } from "../helpers/openssl.js";
import { databases, richError, startTestService, type TestService } from "../helpers/service.js";

describe.each(await databases())("streaming on %s", (db) => {
  let t: TestService;
  let parent: string;
  let names: string[];

  beforeAll(async () => {
    t = await startTestService(db);
    parent = (await t.instances.createInstance({ instance: { displayName: "export" } })).instance!.name;
    names = [];
    for (let i = 0; i < 7; i++) {
      const chain = makeChain({ name: `exp-${i}-${db}`, cn: `exp-${i}.example.test`, keyType: i % 2 ? "rsa2048" : "ec256", sans: { dns: [`exp-${i}.example.test`] } });
      const c = await t.certificates.importCertificate({
        parent,
        certificate: chain.leafPem,
        privateKey: i === 3 ? "" : chain.leafKeyPem,
        intermediates: chain.intermediatesPem.join(""),
        displayName: `exp ${i}`,
        labels: { n: String(i) },
      });
      names.push(c.certificate!.name);
    }
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** Reads an export to the end (or `stopAfter` messages, then cancels). */
  async function exportAll(req: Partial<ExportCertificatesRequest>, stopAfter = Infinity): Promise<ExportCertificatesResponse[]> {
    const call = t.certificateClient.exportCertificates(ExportCertificatesRequest.fromPartial({ parent, ...req }));
    const out: ExportCertificatesResponse[] = [];
    try {
      for await (const msg of call) {
        out.push(msg as ExportCertificatesResponse);
        if (out.length >= stopAfter) {
          call.cancel();
          break;
        }
      }
    } catch (err) {
      if ((err as { code?: number }).code !== status.CANCELLED) throw err;
    }
    return out;
  }

  it("exports every certificate with the material AccessCertificate returns", async () => {
    const out = await exportAll({ includePrivateKeys: true });
    expect(out.map((m) => m.certificate!.name)).toEqual(names);
    for (const m of out) {
      const a = await t.certificates.accessCertificate({ name: m.certificate!.name });
      expect([m.certificatePem, m.privateKeyPem, m.intermediatesPem]).toEqual([a.certificate, a.privateKey, a.intermediates]);
      expect(m.privateKeyJwe).toBe("");
      expect(m.certificate).toEqual((await t.certificates.getCertificate({ name: m.certificate!.name })).certificate);
    }
    const noKeys = await exportAll({});
    for (const m of noKeys) {
      expect(m.privateKeyPem).toBe("");
      expect(m.certificatePem).toContain("BEGIN CERTIFICATE");
    }
    const filtered = await exportAll({ filter: `domain = "exp-2.example.test"` });
    expect(filtered.map((m) => m.certificate!.name)).toEqual([names[2]]);
  });

  it("resumes after a resume token with no gaps and no duplicates while certificates come and go", async () => {
    const extra = await t.instances.createInstance({ instance: {} });
    const p2 = extra.instance!.name;
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) {
      const leaf = makeLeaf({ cn: `res-${i}-${db}.example.test`, keySlot: `res-${i}-${db}` });
      mine.push((await t.certificates.importCertificate({ parent: p2, certificate: leaf.certPem })).certificate!.name);
    }
    const call = (req: Partial<ExportCertificatesRequest>, stop?: number) => exportAll({ parent: p2, ...req }, stop);
    const first = await call({}, 2);
    expect(first.map((m) => m.certificate!.name)).toEqual(mine.slice(0, 2));
    // Meanwhile: one not yet exported is deleted, one already exported is deleted, a new one is imported.
    await t.certificates.deleteCertificate({ name: mine[3] });
    await t.certificates.deleteCertificate({ name: mine[0] });
    const late = makeLeaf({ cn: `res-late-${db}.example.test` });
    const lateName = (await t.certificates.importCertificate({ parent: p2, certificate: late.certPem })).certificate!.name;
    const rest = await call({ resumeToken: first[1].resumeToken });
    expect(rest.map((m) => m.certificate!.name)).toEqual([mine[2], mine[4], lateName]);
    // A token is bound to its request: another filter or key option cannot reuse it.
    const err = await (async () => {
      try {
        await call({ resumeToken: first[1].resumeToken, includePrivateKeys: true });
      } catch (e) {
        return richError(e);
      }
      throw new Error("expected a refusal");
    })();
    expect([err.code, err.reason]).toEqual([status.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"]);
  });

  it("encrypts private keys to a recipient's RSA or EC public key, never sending them in clear", async () => {
    for (const [type, opts] of [["rsa", { modulusLength: 2048 }], ["ec", { namedCurve: "P-256" }]] as const) {
      const pair = generateKeyPairSync(type as "rsa", opts as { modulusLength: number });
      const publicJwk = pair.publicKey.export({ format: "jwk" });
      const out = await exportAll({ recipientPublicKey: JSON.stringify(publicJwk) });
      const privateJwk = await jose.JWK.asKey(pair.privateKey.export({ format: "jwk" }));
      for (const m of out) {
        expect(m.privateKeyPem).toBe("");
        const a = await t.certificates.accessCertificate({ name: m.certificate!.name });
        if (a.privateKey === "") {
          expect(m.privateKeyJwe).toBe("");
          continue;
        }
        const opened = await jose.JWE.createDecrypt(privateJwk).decrypt(m.privateKeyJwe);
        expect(opened.header).toMatchObject({ alg: type === "rsa" ? "RSA-OAEP-256" : "ECDH-ES+A256KW", enc: "A256GCM" });
        expect(opened.plaintext.toString()).toBe(a.privateKey);
      }
    }
    const priv = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
    for (const bad of [JSON.stringify(priv), "not json", JSON.stringify({ kty: "oct", k: "AAAA" }), JSON.stringify(generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" }))]) {
      try {
        await exportAll({ recipientPublicKey: bad });
        throw new Error("expected a refusal");
      } catch (e) {
        const r = richError(e);
        expect([r.code, r.reason, r.fieldViolations[0]?.field]).toEqual([status.INVALID_ARGUMENT, "INVALID_FIELD", "recipient_public_key"]);
        expect(r.message).not.toContain((priv as { d: string }).d);
      }
    }
  });

  it("stops reading when the client cancels or its deadline passes", async () => {
    // More certificates than HTTP/2 flow control and the stream's buffer hold, so a stalled reader stalls the server.
    const big = (await t.instances.createInstance({ instance: {} })).instance!.name;
    for (let i = 0; i < 150; i++) {
      const leaf = makeCert({ cn: `cancel-${i}-${db}.example.test`, keySlot: `cancel-${db}` });
      await t.certificates.importCertificate({ parent: big, certificate: leaf.certPem, privateKey: leaf.keyPem });
    }
    const lastDone = () => t.logs.filter((l) => l.msg === "stream done" && l.method === "ExportCertificates").at(-1);

    // A client that reads one message, stalls, then cancels.
    const call = t.certificateClient.exportCertificates(ExportCertificatesRequest.fromPartial({ parent: big, includePrivateKeys: true }));
    await new Promise<void>((resolve) => call.once("data", () => resolve()));
    call.pause();
    await new Promise((r) => setTimeout(r, 300));
    const before = lastDone();
    call.cancel();
    call.on("error", () => undefined);
    for (let i = 0; i < 50 && lastDone() === before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(lastDone()).toMatchObject({ cancelled: true });
    expect(Number(lastDone()!.sent)).toBeLessThan(150);

    // A client whose deadline passes while it does not read.
    const slow = t.certificateClient.exportCertificates(ExportCertificatesRequest.fromPartial({ parent: big, includePrivateKeys: true }), new Metadata(), {
      deadline: Date.now() + 300,
    });
    const code = await new Promise<number>((resolve) => {
      slow.once("data", () => slow.pause());
      slow.on("error", (e: { code: number }) => resolve(e.code));
      slow.on("end", () => resolve(0));
    });
    expect(code).toBe(status.DEADLINE_EXCEEDED);
    for (let i = 0; i < 50 && !(lastDone() as { cancelled?: boolean } | undefined)?.cancelled; i++) await new Promise((r) => setTimeout(r, 20));
    const after = lastDone()!;
    expect(after).toMatchObject({ cancelled: true });
    expect(Number(after.sent)).toBeLessThan(150);
  });

  /** Sends `items` on one ImportCertificates stream and collects the responses. */
  async function importStream(items: DeepPartial<ImportCertificatesRequest>[]): Promise<ImportCertificatesResponse[]> {
    const call: ClientDuplexStream<ImportCertificatesRequest, ImportCertificatesResponse> = t.certificateClient.importCertificates();
    const out: ImportCertificatesResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on("data", (m: ImportCertificatesResponse) => out.push(m));
      call.on("end", resolve);
      call.on("error", reject);
    });
    for (const item of items) call.write(ImportCertificatesRequest.fromPartial(item));
    call.end();
    await done;
    return out;
  }

  it("streams PKCS#12 items with their passphrases and answers each with its repairs", async () => {
    const dest = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const a = makeChain({ name: `imp-p12-${db}`, cn: "imp-p12.example.test" });
    const p12 = exportPkcs12({ certPem: a.leafPem, keyPem: a.leafKeyPem, caPems: a.intermediatesPem, password: "pw" });
    const res = await importStream([
      { item: { parent: dest, pkcs12: p12, passphrase: "pw" } },
      { item: { parent: dest, pkcs12: p12, passphrase: "nope" } },
    ]);
    expect(res[0].repairs.map((r) => ImportRepair_Kind[r.kind])).toEqual(["KIND_PKCS12_UNPACKED"]);
    expect(res[0].certificate!.intermediateCount).toBe(1);
    expect(res[1].error!.message).toMatch(/^passphrase: /);
    expect(res[1].repairs).toEqual([]);
  });

  it("imports a stream item by item: good items stored, bad ones answered with their status, in order", async () => {
    const dest = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const good = makeChain({ name: `imp-good-${db}`, cn: "imp-good.example.test" });
    const other = makeLeaf({ cn: "imp-other.example.test" });
    const requestId = crypto.randomUUID();
    const res = await importStream([
      { item: { parent: dest, certificate: good.leafPem, privateKey: good.leafKeyPem, intermediates: good.intermediatesPem.join(""), requestId } },
      { item: { parent: dest, certificate: good.leafPem, privateKey: other.keyPem } },
      { item: { parent: `instances/${crypto.randomUUID()}`, certificate: other.certPem } },
      {},
      { item: { parent: dest, certificate: "garbage" } },
      { item: { parent: dest, certificate: other.certPem, labels: { src: "stream" } } },
      { item: { parent: dest, certificate: good.leafPem, privateKey: good.leafKeyPem, intermediates: good.intermediatesPem.join(""), requestId } },
    ]);
    expect(res.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const reason = (r: ImportCertificatesResponse) => ErrorInfo.decode(r.error!.details[0].value).reason;
    const prefix = `${dest}/certificates/`;
    expect(res[0].certificate!.name.slice(0, prefix.length)).toBe(prefix);
    expect([res[1].error!.code, reason(res[1])]).toEqual([status.INVALID_ARGUMENT, "PRIVATE_KEY_MISMATCH"]);
    expect([res[2].error!.code, reason(res[2])]).toEqual([status.NOT_FOUND, "INSTANCE_NOT_FOUND"]);
    expect([res[3].error!.code, reason(res[3])]).toEqual([status.INVALID_ARGUMENT, "INVALID_FIELD"]);
    expect([res[4].error!.code, reason(res[4])]).toEqual([status.INVALID_ARGUMENT, "INVALID_CERTIFICATE"]);
    expect(res[5].certificate!.labels).toEqual({ src: "stream" });
    // The retried item (same request_id) answers with the first one's certificate.
    expect([res[6].certificate!.name, res[6].requestId]).toEqual([res[0].certificate!.name, requestId]);
    const listed = await t.certificates.listCertificates({ parent: dest });
    expect(listed.certificates.map((c) => c.name).sort()).toEqual([res[0].certificate!.name, res[5].certificate!.name].sort());
  });

  it("reproduces an instance byte for byte by feeding its export into an import elsewhere", async () => {
    const dest = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const exported = await exportAll({ includePrivateKeys: true });
    const res = await importStream(
      exported.map((m) => ({
        item: {
          parent: dest,
          certificate: m.certificatePem,
          privateKey: m.privateKeyPem,
          intermediates: m.intermediatesPem,
          displayName: m.certificate!.displayName,
          description: m.certificate!.description,
          labels: m.certificate!.labels,
        },
      })),
    );
    expect(res.filter((r) => r.error !== undefined)).toEqual([]);
    const copy = await exportAll({ parent: dest, includePrivateKeys: true });
    const strip = (m: ExportCertificatesResponse) => ({
      pem: [m.certificatePem, m.privateKeyPem, m.intermediatesPem],
      meta: { ...m.certificate!, name: "", createTime: undefined, updateTime: undefined, etag: "" },
    });
    expect(copy.map(strip)).toEqual(exported.map(strip));
  });

  it("fails an oversized stream message with RESOURCE_EXHAUSTED and keeps serving", async () => {
    const huge = "x".repeat(5 * 1024 * 1024);
    const err = await importStream([{ item: { parent, certificate: huge } }]).then(
      () => undefined,
      (e: { code: number }) => e,
    );
    expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect((await t.certificates.getCertificate({ name: names[0] })).certificate!.name).toBe(names[0]);
  });

  it("loses nothing acknowledged when the server stops mid-stream", async () => {
    const dest = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const call = t.certificateClient.importCertificates();
    const acked: string[] = [];
    const ended = new Promise<void>((resolve) => {
      call.on("data", (m: ImportCertificatesResponse) => m.certificate && acked.push(m.certificate.name));
      call.on("error", () => resolve());
      call.on("end", () => resolve());
    });
    for (let i = 0; i < 6; i++) {
      const leaf = makeLeaf({ cn: `crash-${i}-${db}.example.test`, keySlot: `crash-${i}-${db}` });
      call.write(ImportCertificatesRequest.fromPartial({ item: { parent: dest, certificate: leaf.certPem, privateKey: leaf.keyPem } }));
    }
    while (acked.length < 2) await new Promise((r) => setTimeout(r, 10));
    await t.restart(); // the stream is cut, the clients are new
    await ended;
    expect(acked.length).toBeGreaterThanOrEqual(2);
    for (const name of acked) expect((await t.certificates.accessCertificate({ name })).privateKey).toContain("PRIVATE KEY");
  });
});
