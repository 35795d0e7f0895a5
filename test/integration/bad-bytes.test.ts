/**
 * Bad bytes and wrong diagnoses (issue 12, item 5), over real gRPC on SQLite and MariaDB: request bytes that are
 * not a valid request message (garbage, truncated, a known field with the wrong wire type, invalid UTF-8 in a
 * top-level or nested string, a map value) are refused with INVALID_ARGUMENT MALFORMED_REQUEST naming the field,
 * unary and mid-stream on ImportCertificates, and nothing is stored; and a certificate whose issuer name matches a
 * CA that was sent but whose signature does not verify with it is reported as SIGNATURE_INVALID, not as a missing
 * issuer.
 *
 * The raw bytes are sent through a grpc-js Client with identity serializers; the valid parts are encoded by the
 * generated code, and the bad bytes are written into them by hand (same length, so every length prefix holds).
 */
import { Client, credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImportCertificateRequest, ImportCertificatesRequest, ImportCertificatesResponse, type DeepPartial } from "../../gen/ts/certmanager/v1/certificate.js";
import { CreateInstanceRequest } from "../../gen/ts/certmanager/v1/instance.js";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { certFacts, makeCa, makeLeaf } from "../helpers/openssl.js";
import { bearer, databases, expectFailure, richError, startTestService, type RichError, type TestService } from "../helpers/service.js";

const CREATE_INSTANCE = "/certmanager.v1.InstanceService/CreateInstance";
const IMPORT_CERTIFICATE = "/certmanager.v1.CertificateService/ImportCertificate";
const IMPORT_CERTIFICATES = "/certmanager.v1.CertificateService/ImportCertificates";

/** `bytes` with the ASCII `marker` (which must occur once) replaced by `bad`, of the same length. */
function replaceMarker(bytes: Uint8Array, marker: string, bad: number[]): Buffer {
  const buf = Buffer.from(bytes);
  const at = buf.indexOf(marker);
  if (at < 0 || buf.indexOf(marker, at + 1) >= 0 || bad.length !== marker.length) throw new Error("marker must occur once, bad bytes of its length");
  Buffer.from(bad).copy(buf, at);
  return buf;
}

/** A lone continuation byte, an overlong '/', and a truncated 3-byte sequence: each invalid UTF-8 (RFC 3629). */
const BAD_UTF8 = [0x41, 0x80, 0x42, 0xc0, 0xaf, 0xe2, 0x82, 0x41];
const MARKER = "@@BAD@@!";

describe.each(await databases())("bad bytes on %s", (db) => {
  let t: TestService;
  let raw: Client;
  let parent: string;

  beforeAll(async () => {
    t = await startTestService(db);
    raw = new Client(t.address, credentials.createInsecure(), { interceptors: [bearer(t.adminKey)] });
    parent = (await t.instances.createInstance({ instance: { displayName: "bad bytes" } })).instance!.name;
  });
  afterAll(async () => {
    raw?.close();
    await t?.stop();
  });

  /** Sends `bytes` as the request of the unary method `path`; resolves with the decoded rich error. */
  function sendRaw(path: string, bytes: Uint8Array): Promise<RichError> {
    return new Promise((resolve, reject) =>
      raw.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), new Metadata(), (err, res) => {
        if (!err) return reject(new Error(`expected a failure, got ${res?.length} bytes`));
        try {
          resolve(richError(err as ServiceError));
        } catch (e) {
          reject(e);
        }
      }),
    );
  }

  const instanceCount = async () => (await t.instances.listInstances({ pageSize: 1000 })).instances.length;
  const certificateCount = async () => (await t.certificates.listCertificates({ parent, pageSize: 1000 })).certificates.length;

  function expectMalformed(e: RichError, message: string, field?: string) {
    expect([e.code, e.reason, e.domain]).toEqual([status.INVALID_ARGUMENT, "MALFORMED_REQUEST", "certmanager"]);
    expect(e.metadata.message).toBe(message);
    expect(e.message).toMatch(new RegExp(`^the request bytes are not a valid ${message.replace(/\./g, "\\.")}`));
    if (field === undefined) {
      expect(e.metadata.field).toBeUndefined();
      expect(e.fieldViolations).toEqual([]);
    } else {
      expect(e.metadata.field).toBe(field);
      expect(e.fieldViolations.map((v) => v.field)).toEqual([field]);
    }
  }

  it("refuses garbage, truncated bytes and a known field with the wrong wire type, and creates nothing", async () => {
    const before = await instanceCount();
    // 0xff...: a tag varint that never ends (more than 10 bytes).
    expectMalformed(await sendRaw(CREATE_INSTANCE, Buffer.alloc(16, 0xff)), "certmanager.v1.CreateInstanceRequest");
    // Wire type 7 does not exist (on field 1, `instance`; on an unknown field 9).
    expectMalformed(await sendRaw(CREATE_INSTANCE, Buffer.from([0x0f, 0x01])), "certmanager.v1.CreateInstanceRequest", "instance");
    expectMalformed(await sendRaw(CREATE_INSTANCE, Buffer.from([0x4f, 0x01])), "certmanager.v1.CreateInstanceRequest");
    const valid = CreateInstanceRequest.encode(CreateInstanceRequest.fromPartial({ instance: { displayName: "truncated instance" } })).finish();
    // Cut inside `instance`: its length prefix promises more than there is.
    const truncated = await sendRaw(CREATE_INSTANCE, valid.subarray(0, valid.length - 3));
    expectMalformed(truncated, "certmanager.v1.CreateInstanceRequest", "instance");
    expect(truncated.message).toMatch(/truncated/);
    // `instance` (field 1, a message) sent as a varint: 0x08 0x01.
    const wrongWire = await sendRaw(CREATE_INSTANCE, Buffer.from([0x08, 0x01]));
    expectMalformed(wrongWire, "certmanager.v1.CreateInstanceRequest", "instance");
    expect(wrongWire.message).toMatch(/wire type VARINT/);
    // `instance.display_name` (field 2, a string) sent as a fixed32 inside a valid `instance`.
    const nestedWrong = await sendRaw(CREATE_INSTANCE, Buffer.from([0x0a, 0x05, 0x15, 0x01, 0x02, 0x03, 0x04]));
    expectMalformed(nestedWrong, "certmanager.v1.CreateInstanceRequest", "instance.display_name");
    expect(await instanceCount()).toBe(before);
  });

  it("refuses garbage sent to health and reflection (the libraries' services) the same way, not as INTERNAL", async () => {
    const health = await sendRaw("/grpc.health.v1.Health/Check", Buffer.alloc(16, 0xff));
    expect([health.code, health.reason]).toEqual([status.INVALID_ARGUMENT, "MALFORMED_REQUEST"]);
    // Reflection is a bidirectional stream: the bad message ends it with the same status.
    const reflection = await new Promise<RichError>((resolve, reject) => {
      const call = raw.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", (x: Buffer) => x, (x: Buffer) => x, new Metadata());
      call.on("data", () => undefined);
      call.on("error", (err: ServiceError) => resolve(richError(err)));
      call.on("end", () => reject(new Error("expected the stream to fail")));
      call.write(Buffer.alloc(16, 0xff));
      call.end();
    });
    expect([reflection.code, reflection.reason]).toEqual([status.INVALID_ARGUMENT, "MALFORMED_REQUEST"]);
    // A valid health check still answers.
    expect((await sendRawOk("/grpc.health.v1.Health/Check", Buffer.alloc(0))).length).toBeGreaterThan(0);
  });

  /** Sends `bytes` as the request of the unary method `path`; resolves with the raw response bytes. */
  function sendRawOk(path: string, bytes: Uint8Array): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      raw.makeUnaryRequest(path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), new Metadata(), (err, res) => (err ? reject(err) : resolve(res!))),
    );
  }

  it("refuses invalid UTF-8 in a nested string (instance.display_name) and in a top-level one (request_id)", async () => {
    const before = await instanceCount();
    const nested = CreateInstanceRequest.encode(CreateInstanceRequest.fromPartial({ instance: { displayName: MARKER } })).finish();
    const e = await sendRaw(CREATE_INSTANCE, replaceMarker(nested, MARKER, BAD_UTF8));
    expectMalformed(e, "certmanager.v1.CreateInstanceRequest", "instance.display_name");
    expect(e.message).toMatch(/UTF-8/);
    const top = CreateInstanceRequest.encode(CreateInstanceRequest.fromPartial({ instance: { displayName: "ok" }, requestId: MARKER })).finish();
    expectMalformed(await sendRaw(CREATE_INSTANCE, replaceMarker(top, MARKER, BAD_UTF8)), "certmanager.v1.CreateInstanceRequest", "request_id");
    // A nested map value: instance.labels.
    const label = CreateInstanceRequest.encode(CreateInstanceRequest.fromPartial({ instance: { labels: { team: MARKER } } })).finish();
    const l = await sendRaw(CREATE_INSTANCE, replaceMarker(label, MARKER, BAD_UTF8));
    expectMalformed(l, "certmanager.v1.CreateInstanceRequest", "instance.labels");
    expect(l.message).toMatch(/map value/);
    expect(await instanceCount()).toBe(before);
    // Valid multi-byte UTF-8 still goes through, unchanged.
    const fine = await t.instances.createInstance({ instance: { displayName: "größe 證書 🔐" } });
    expect(fine.instance!.displayName).toBe("größe 證書 🔐");
  });

  it("refuses invalid UTF-8 in ImportCertificateRequest: a top-level string and a labels map key and value", async () => {
    const before = await certificateCount();
    const leaf = makeLeaf({ cn: `utf8-${db}.example.test` });
    const enc = (p: DeepPartial<ImportCertificateRequest>) =>
      ImportCertificateRequest.encode(ImportCertificateRequest.fromPartial({ parent, certificate: leaf.certPem, ...p })).finish();
    const msg = "certmanager.v1.ImportCertificateRequest";
    expectMalformed(await sendRaw(IMPORT_CERTIFICATE, replaceMarker(enc({ displayName: MARKER }), MARKER, BAD_UTF8)), msg, "display_name");
    const value = await sendRaw(IMPORT_CERTIFICATE, replaceMarker(enc({ labels: { env: MARKER } }), MARKER, BAD_UTF8));
    expectMalformed(value, msg, "labels");
    expect(value.message).toMatch(/map value/);
    const key = await sendRaw(IMPORT_CERTIFICATE, replaceMarker(enc({ labels: { [MARKER]: "x" } }), MARKER, BAD_UTF8));
    expectMalformed(key, msg, "labels");
    expect(key.message).toMatch(/map key/);
    // The same request with valid bytes is stored: the refusals above were about the bytes only.
    expect(await certificateCount()).toBe(before);
    await t.certificates.importCertificate({ parent, certificate: leaf.certPem, labels: { env: "ok" } });
    expect(await certificateCount()).toBe(before + 1);
  });

  it("answers a bad message mid-stream on ImportCertificates with that item's error; the others are imported", async () => {
    const dest = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const a = makeLeaf({ cn: `stream-a-${db}.example.test` });
    const b = makeLeaf({ cn: `stream-b-${db}.example.test` });
    const item = (p: DeepPartial<ImportCertificatesRequest>) => Buffer.from(ImportCertificatesRequest.encode(ImportCertificatesRequest.fromPartial(p)).finish());
    const good1 = item({ item: { parent: dest, certificate: a.certPem } });
    const badUtf8 = replaceMarker(item({ item: { parent: dest, certificate: b.certPem, labels: { k: MARKER } } }), MARKER, BAD_UTF8);
    const garbage = Buffer.from([0xff, 0xff, 0xff]);
    const good2 = item({ item: { parent: dest, certificate: b.certPem } });
    const call = raw.makeBidiStreamRequest(IMPORT_CERTIFICATES, (x: Buffer) => x, (x: Buffer) => ImportCertificatesResponse.decode(x), new Metadata());
    const out: ImportCertificatesResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on("data", (m: ImportCertificatesResponse) => out.push(m));
      call.on("end", resolve);
      call.on("error", reject);
    });
    for (const m of [good1, badUtf8, garbage, good2]) call.write(m);
    call.end();
    await done;
    expect(out.map((r) => r.index)).toEqual([0, 1, 2, 3]);
    expect(out[0].certificate?.name).toMatch(new RegExp(`^${dest}/certificates/`));
    expect(out[3].certificate?.name).toMatch(new RegExp(`^${dest}/certificates/`));
    for (const [i, field] of [[1, "item.labels"], [2, undefined]] as const) {
      const err = out[i].error!;
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      const info = ErrorInfo.decode(err.details[0].value);
      expect([info.reason, info.metadata.message, info.metadata.field]).toEqual(["MALFORMED_REQUEST", "certmanager.v1.ImportCertificatesRequest", field]);
      expect(out[i].certificate).toBeUndefined();
    }
    const stored = (await t.certificates.listCertificates({ parent: dest, pageSize: 100 })).certificates.map((c) => c.name);
    expect(stored.sort()).toEqual([out[0].certificate!.name, out[3].certificate!.name].sort());
  });

  it("reports a leaf whose signature does not verify with the CA named as its issuer as SIGNATURE_INVALID, naming both", async () => {
    const subject = `/CN=Bad Bytes Issuing CA ${db}/O=Example`;
    const root = makeCa({ subject: `/CN=Bad Bytes Root ${db}`, keySlot: `bb-root-${db}` });
    const caA = makeCa({ subject, issuer: root, keySlot: `bb-ca-a-${db}` });
    // Same subject DN as A, another key: the leaf's issuer name matches B, its signature does not.
    const caB = makeCa({ subject, issuer: root, keySlot: `bb-ca-b-${db}` });
    expect(caB.key.pkcs8Pem).not.toBe(caA.key.pkcs8Pem);
    const leaf = makeLeaf({ cn: `sig-${db}.example.test`, issuer: caA, keySlot: `bb-leaf-${db}` });
    const before = await certificateCount();
    const e = await expectFailure(t.certificates.importCertificate({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem, intermediates: caB.certPem }));
    expect([e.code, e.reason]).toEqual([status.INVALID_ARGUMENT, "SIGNATURE_INVALID"]);
    const leafFacts = certFacts(leaf.certPem);
    const bFacts = certFacts(caB.certPem);
    expect(e.metadata).toMatchObject({
      field: "intermediates",
      position: "1",
      sha256_fingerprint: leafFacts.sha256Fingerprint,
      issuer_sha256_fingerprint: bFacts.sha256Fingerprint,
    });
    expect(e.message).toContain(bFacts.sha256Fingerprint);
    expect(e.message).toContain(leafFacts.sha256Fingerprint);
    expect(e.message).toContain("does not verify");
    expect(e.message).not.toMatch(/is missing|add the certificate/);
    expect(await certificateCount()).toBe(before);
    // With A instead, the same leaf imports.
    await t.certificates.importCertificate({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem, intermediates: caA.certPem });
    expect(await certificateCount()).toBe(before + 1);
  });
});
