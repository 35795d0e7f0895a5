/**
 * Regressions found by adversarial testing, on SQLite and MariaDB alike: unusual but valid certificates that
 * once overflowed MySQL columns, and concurrent writes that once left half-deleted rows, deadlocked into
 * INTERNAL, or reported ALREADY_EXISTS to a retry of the same request.
 */
import { randomUUID, X509Certificate } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certFacts, makeCa, makeCert, makeChain, makeLeaf } from "../helpers/openssl.js";
import { ValidityState } from "../../gen/ts/certmanager/v1/certificate.js";
import { databases, richError, startTestService, TestClock, type TestService } from "../helpers/service.js";

describe.each(await databases())("edge cases on %s", (db) => {
  let t: TestService;
  let parent: string;
  beforeAll(async () => {
    t = await startTestService(db);
    parent = (await t.instances.createInstance({ instance: {} })).instance!.name;
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("stores a 71-byte serial, a subject longer than 64 KiB once escaped, and SANs differing only in case", async () => {
    const ca = makeCa({ subject: "/CN=Edge CA", keySlot: "edge-ca" });
    // 600 OUs of 62 commas: each comma is escaped in RFC 4514 form, doubling the DN to ~75,000 characters.
    const ous = Array.from({ length: 600 }, () => `/OU=${",".repeat(62)}`).join("");
    const serial = `7f${"ab".repeat(70)}`;
    const cert = makeCert({ subject: `/CN=edge.example.test${ous}`, serial, issuer: ca, sans: { dns: ["a.example.test", "A.Example.TEST", "b.example.test"] }, keySlot: `edge-${db}` });
    expect(cert.certPem.length).toBeLessThan(64 * 1024);
    const c = (await t.certificates.importCertificate({ parent, certificate: cert.certPem, privateKey: cert.keyPem })).certificate!;
    expect(c.serialNumber).toBe(new X509Certificate(cert.certPem).serialNumber.toLowerCase());
    expect(c.subject.length).toBeGreaterThan(65_535);
    expect(c.subject).toBe(certFacts(cert.certPem).subject);
    expect(c.subjectAltNames!.dnsNames).toEqual(["a.example.test", "A.Example.TEST", "b.example.test"]);
    const got = (await t.certificates.getCertificate({ name: c.name })).certificate!;
    expect(got).toEqual(c);
    const byDomain = await t.certificates.listCertificates({ parent, filter: `domain = "A.EXAMPLE.TEST"` });
    expect(byDomain.certificates.map((x) => x.name)).toEqual([c.name]);
  });

  it("imports PEM with a byte-order mark, and PEM whose line breaks arrived as the two characters \\n", async () => {
    const leaf = makeLeaf({ cn: `bom-${db}.example.test` });
    const bom = await t.certificates.importCertificate({ parent, certificate: `\uFEFF${leaf.certPem}`, privateKey: `\uFEFF${leaf.keyPem}` });
    expect(bom.certificate!.hasPrivateKey).toBe(true);
    const other = makeLeaf({ cn: `escaped-${db}.example.test` });
    const flat = (pem: string) => pem.replace(/\n/g, "\\n");
    expect(flat(other.certPem)).not.toContain("\n");
    const escaped = await t.certificates.importCertificate({ parent, certificate: flat(other.certPem), privateKey: flat(other.keyPem) });
    const m = await t.certificates.accessCertificate({ name: escaped.certificate!.name });
    expect(m.certificate).toBe(new X509Certificate(other.certPem).toString());
    expect(m.privateKey.split("\n")[0]).toBe("-----BEGIN PRIVATE KEY-----");
  });

  it("stores expired and not-yet-valid certificates and flags them by the service's clock", async () => {
    const leaf = makeLeaf({ cn: `validity-${db}.example.test`, days: 10 });
    // A minute after the certificate was made: openssl sets notBefore to the moment it signs.
    const clock = new TestClock(Date.now() + 60_000);
    const s = await startTestService(db, {}, clock);
    try {
      const p = (await s.instances.createInstance({ instance: {} })).instance!.name;
      const c = (await s.certificates.importCertificate({ parent: p, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!;
      expect(c.validityState).toBe(ValidityState.VALIDITY_STATE_VALID);
      clock.advance(-2 * 86_400_000 - (clock.now().getTime() - c.notBefore!.getTime()));
      expect((await s.certificates.getCertificate({ name: c.name })).certificate!.validityState).toBe(ValidityState.VALIDITY_STATE_NOT_YET_VALID);
      clock.advance(20 * 86_400_000);
      expect((await s.certificates.getCertificate({ name: c.name })).certificate!.validityState).toBe(ValidityState.VALIDITY_STATE_EXPIRED);
      // An expired certificate is imported and served like any other, only flagged.
      const other = makeLeaf({ cn: `validity2-${db}.example.test`, days: 1, keySlot: `validity2-${db}` });
      const e = (await s.certificates.importCertificate({ parent: p, certificate: other.certPem })).certificate!;
      expect(e.validityState).toBe(ValidityState.VALIDITY_STATE_EXPIRED);
      expect((await s.certificates.accessCertificate({ name: e.name })).certificate).toContain("BEGIN CERTIFICATE");
      const listed = await s.certificates.listCertificates({ parent: p });
      expect(listed.certificates.map((x) => x.validityState)).toEqual([ValidityState.VALIDITY_STATE_EXPIRED, ValidityState.VALIDITY_STATE_EXPIRED]);
    } finally {
      await s.stop();
    }
  });

  it("answers RESOURCE_EXHAUSTED to a request over the message limit and keeps serving; refuses a 60-certificate chain by its limit", async () => {
    const big = await t.certificates.importCertificate({ parent, certificate: "x".repeat(5 * 1024 * 1024) }).then(
      () => undefined,
      (e: { code: number }) => e.code,
    );
    expect(big).toBe(status.RESOURCE_EXHAUSTED);
    expect((await t.instances.getInstance({ name: parent })).instance!.name).toBe(parent);
    const chain = makeChain({ name: `long-${db}`, cn: "long.example.test", depth: 60, days: 100 });
    expect(chain.intermediatesPem).toHaveLength(60);
    const err = richError(
      await t.certificates.importCertificate({ parent, certificate: chain.leafPem, intermediates: chain.intermediatesPem.join("") }).then(
        () => undefined,
        (e: unknown) => e,
      ),
    );
    expect([err.code, err.reason, err.fieldViolations[0].field]).toEqual([status.INVALID_ARGUMENT, "TOO_MANY_INTERMEDIATES", "intermediates"]);
    expect(err.message).toContain("20");
  });

  it("never leaves a certificate without its material when a delete races updates", async () => {
    for (let round = 0; round < 6; round++) {
      const leaf = makeLeaf({ cn: `race-${round}-${db}.example.test`, keySlot: `race-${round}-${db}` });
      const c = (await t.certificates.importCertificate({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!;
      const results = await Promise.allSettled([
        t.certificates.deleteCertificate({ name: c.name }),
        t.certificates.updateCertificate({ certificate: { name: c.name, displayName: "u" }, updateMask: ["display_name"] }),
        t.certificates.updateCertificate({ certificate: { name: c.name, description: "v" }, updateMask: ["description"] }),
      ]);
      // Without etags every call is unconditional: the delete always succeeds; an update may find it gone.
      expect(results[0].status).toBe("fulfilled");
      for (const r of results.slice(1)) if (r.status === "rejected") expect(richError(r.reason).code).toBe(status.NOT_FOUND);
      const k = t.raw();
      const id = c.name.split("/").pop();
      expect(await k("certificates").where({ id })).toEqual([]);
      expect(await k("certificate_versions").where({ certificate_id: id })).toEqual([]);
    }
  });

  it("answers concurrent imports of one certificate with one success and clear statuses, never INTERNAL", async () => {
    // Without request_id: exactly one import wins, the others are told the certificate exists.
    const plain = makeLeaf({ cn: `storm-${db}.example.test` });
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, () => t.certificates.importCertificate({ parent, certificate: plain.certPem, privateKey: plain.keyPem })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") expect(richError(r.reason).reason).toBe("CERTIFICATE_ALREADY_EXISTS");
    // With one request_id: every retry gets the one certificate the first attempt made (AIP-155).
    const leaf = makeLeaf({ cn: `storm-rid-${db}.example.test` });
    const requestId = randomUUID();
    const same = await Promise.all(
      Array.from({ length: 10 }, () => t.certificates.importCertificate({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem, requestId })),
    );
    expect(new Set(same.map((r) => r.certificate!.name)).size).toBe(1);
  });

  it("applies concurrent unconditional reimports and updates instead of reporting a phantom etag mismatch", async () => {
    const base = makeLeaf({ cn: `multi-${db}.example.test`, keySlot: `multi-0-${db}` });
    const c = (await t.certificates.importCertificate({ parent, certificate: base.certPem })).certificate!;
    const renewals = Array.from({ length: 4 }, (_, i) => makeLeaf({ cn: `multi-${db}.example.test`, keySlot: `multi-${i + 1}-${db}` }));
    const results = await Promise.allSettled(renewals.map((r) => t.certificates.reimportCertificate({ name: c.name, certificate: r.certPem })));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "fulfilled"]);
    expect((await t.certificates.getCertificate({ name: c.name })).certificate!.version).toBe(5);
    const updates = await Promise.allSettled(
      ["a", "b", "c", "d"].map((d) => t.instances.updateInstance({ instance: { name: parent, description: d }, updateMask: ["description"] })),
    );
    expect(updates.filter((u) => u.status !== "fulfilled").map((u) => (u as PromiseRejectedResult).reason)).toEqual([]);
  });
});
