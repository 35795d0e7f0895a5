/** CertificateService over real gRPC on SQLite and MariaDB, with certificates made by openssl. */
import { randomUUID, X509Certificate } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyAlgorithm } from "../../gen/ts/certmanager/v1/certificate.js";
import { certFacts, makeCert, makeChain, makeLeaf, type KeyType } from "../helpers/openssl.js";
import { databases, expectFailure, startTestService, type TestService } from "../helpers/service.js";

const pemCount = (s: string) => (s.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;

describe.each(await databases())("CertificateService on %s", (db) => {
  let t: TestService;
  let parent: string;

  const newInstance = async () => (await t.instances.createInstance({ instance: { displayName: "t" } })).instance!.name;

  beforeAll(async () => {
    t = await startTestService(db);
    parent = await newInstance();
  });
  afterAll(async () => {
    await t?.stop();
  });

  const cases: { keyType: KeyType; alg: KeyAlgorithm; size: number; curve: string }[] = [
    { keyType: "rsa2048", alg: KeyAlgorithm.KEY_ALGORITHM_RSA, size: 2048, curve: "" },
    { keyType: "rsa4096", alg: KeyAlgorithm.KEY_ALGORITHM_RSA, size: 4096, curve: "" },
    { keyType: "ec256", alg: KeyAlgorithm.KEY_ALGORITHM_EC, size: 0, curve: "P-256" },
    { keyType: "ec384", alg: KeyAlgorithm.KEY_ALGORITHM_EC, size: 0, curve: "P-384" },
    { keyType: "ec521", alg: KeyAlgorithm.KEY_ALGORITHM_EC, size: 0, curve: "P-521" },
    { keyType: "ed25519", alg: KeyAlgorithm.KEY_ALGORITHM_ED25519, size: 0, curve: "" },
  ];

  it.each(cases)("imports a $keyType chain and returns metadata and material", async ({ keyType, alg, size, curve }) => {
    const chain = makeChain({
      keyType,
      depth: 2,
      name: `kt-${keyType}-${db}`,
      cn: `${keyType}.example.test`,
      sans: { dns: [`${keyType}.example.test`, `*.${keyType}.example.test`], ip: ["192.0.2.7", "2001:db8::1"], email: ["ops@example.test"], uri: ["spiffe://example.test/web"] },
    });
    // Intermediates sent root-side first: the service must store them in issuing order.
    const shuffled = [...chain.intermediatesPem].reverse().join("\n");
    const keyPem = keyType.startsWith("rsa") || keyType.startsWith("ec") ? chain.leafKeyPkcs1OrSec1Pem : chain.leafKeyPem;
    const res = await t.certificates.importCertificate({
      parent,
      certificate: chain.leafPem,
      privateKey: keyPem,
      intermediates: shuffled,
      displayName: `${keyType} leaf`,
      labels: { team: "edge" },
    });
    const c = res.certificate!;
    const facts = certFacts(chain.leafPem);
    const prefix = `${parent}/certificates/`;
    expect(c.name.slice(0, prefix.length)).toBe(prefix);
    expect(c.subjectCommonName).toBe(`${keyType}.example.test`);
    expect(c.sha256Fingerprint).toBe(facts.sha256Fingerprint);
    expect(c.serialNumber.replace(/^00/, "")).toBe(facts.serial);
    expect(c.notBefore!.getTime()).toBe(facts.notBefore.getTime());
    expect(c.notAfter!.getTime()).toBe(facts.notAfter.getTime());
    expect(c.keyAlgorithm).toBe(alg);
    expect(c.keySize).toBe(size);
    expect(c.keyCurve).toBe(curve);
    expect(c.subjectAltNames).toEqual({
      dnsNames: [`${keyType}.example.test`, `*.${keyType}.example.test`],
      ipAddresses: ["192.0.2.7", "2001:db8::1"],
      emailAddresses: ["ops@example.test"],
      uris: ["spiffe://example.test/web"],
      directoryNames: [],
      registeredIds: [],
      otherNames: [],
    });
    expect(c.selfSigned).toBe(false);
    expect(c.hasPrivateKey).toBe(true);
    expect(c.intermediateCount).toBe(2);
    expect(c.version).toBe(1);
    expect(c.labels).toEqual({ team: "edge" });

    const got = await t.certificates.getCertificate({ name: c.name });
    expect(got.certificate).toEqual(c);

    const m = await t.certificates.accessCertificate({ name: c.name });
    expect(m.version).toBe(1);
    expect(new X509Certificate(m.certificate).fingerprint256).toBe(new X509Certificate(chain.leafPem).fingerprint256);
    expect(m.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(new X509Certificate(chain.leafPem).checkPrivateKey((await import("node:crypto")).createPrivateKey(m.privateKey))).toBe(true);
    const returnedChain = m.intermediates.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!.map((p) => new X509Certificate(p).fingerprint256);
    expect(returnedChain).toEqual(chain.intermediatesPem.map((p) => new X509Certificate(p).fingerprint256));
  });

  it("tolerates CRLF line endings, whitespace and text outside PEM blocks; certificate-only import", async () => {
    const leaf = makeLeaf({ cn: `crlf-${db}.example.test` });
    const messy = `Bag Attributes\r\n    localKeyID: 01\r\nsubject=/CN=x\r\n\r\n  ${leaf.certPem.replace(/\n/g, "\r\n")}  \r\n`;
    const c = (await t.certificates.importCertificate({ parent, certificate: messy })).certificate!;
    expect(c.hasPrivateKey).toBe(false);
    expect(c.intermediateCount).toBe(0);
    expect(c.selfSigned).toBe(true);
    const m = await t.certificates.accessCertificate({ name: c.name });
    expect(m.certificate).toBe(new X509Certificate(leaf.certPem).toString());
    expect(m.privateKey).toBe("");
    expect(m.intermediates).toBe("");
  });

  async function countRows(): Promise<number[]> {
    const k = t.raw();
    const out = [];
    for (const table of ["certificates", "certificate_versions", "certificate_domains", "request_ids"]) {
      out.push(Number((await k(table).count({ n: "*" }))[0].n));
    }
    return out;
  }

  it("refuses bad input with the field named and writes nothing", async () => {
    const chain = makeChain({ name: `bad-${db}`, cn: "bad.example.test" });
    const other = makeLeaf({ cn: "other.example.test", keyType: "ec256" });
    const unrelated = makeChain({ name: `unrelated-${db}` });
    const before = await countRows();
    const cases: [object, string, string][] = [
      [{ certificate: "" }, "certificate", "INVALID_CERTIFICATE"],
      [{ certificate: "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n" }, "certificate", "INVALID_CERTIFICATE"],
      [{ certificate: chain.leafPem + other.certPem }, "certificate", "MULTIPLE_CERTIFICATES"],
      [{ certificate: chain.leafPem, privateKey: other.keyPem }, "private_key", "PRIVATE_KEY_MISMATCH"],
      [{ certificate: chain.leafPem, privateKey: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" }, "private_key", "INVALID_PRIVATE_KEY"],
      [{ certificate: chain.leafPem, intermediates: unrelated.intermediatesPem[0] }, "intermediates", "INTERMEDIATE_NOT_IN_CHAIN"],
      [{ certificate: chain.leafPem, intermediates: "garbage" }, "intermediates", "INVALID_CERTIFICATE"],
      [{ certificate: chain.leafPem, displayName: "x".repeat(300) }, "display_name", "INVALID_FIELD"],
      [{ certificate: chain.leafPem, labels: { "Bad Key": "v" } }, "labels", "INVALID_FIELD"],
      [{ certificate: chain.leafPem, requestId: "nope" }, "request_id", "INVALID_FIELD"],
      [{ certificate: "x".repeat(70 * 1024) }, "certificate", "FIELD_TOO_LARGE"],
    ];
    for (const [req, field, reason] of cases) {
      const err = await expectFailure(t.certificates.importCertificate({ parent, ...req }));
      expect(err.code, `${reason}: ${err.message}`).toBe(status.INVALID_ARGUMENT);
      expect(err.reason).toBe(reason);
      expect(err.fieldViolations.map((v) => v.field)).toEqual([field]);
      // Messages never echo material (a line of a PEM body would show it).
      for (const pem of [chain.leafPem, other.keyPem]) expect(err.message).not.toContain(pem.split("\n")[2]);
    }
    const unlinked = await expectFailure(t.certificates.importCertificate({ parent, certificate: chain.leafPem, intermediates: unrelated.intermediatesPem[0] }));
    expect(unlinked.message).toContain("CN=");
    const noParent = await expectFailure(t.certificates.importCertificate({ parent: `instances/${randomUUID()}`, certificate: chain.leafPem }));
    expect(noParent.code).toBe(status.NOT_FOUND);
    expect(noParent.reason).toBe("INSTANCE_NOT_FOUND");
    expect(await countRows()).toEqual(before);
  });

  it("answers ALREADY_EXISTS naming the holder of the same certificate", async () => {
    const leaf = makeLeaf({ cn: `dup-${db}.example.test` });
    const first = (await t.certificates.importCertificate({ parent, certificate: leaf.certPem })).certificate!;
    const err = await expectFailure(t.certificates.importCertificate({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem }));
    expect(err.code).toBe(status.ALREADY_EXISTS);
    expect(err.reason).toBe("CERTIFICATE_ALREADY_EXISTS");
    expect(err.metadata.resource).toBe(first.name);
    expect(err.message).toContain(first.name);
    // The same certificate in another instance is fine: instances are separate tenants.
    const other = await newInstance();
    await t.certificates.importCertificate({ parent: other, certificate: leaf.certPem });
  });

  it("gives one certificate for concurrent imports with the same request_id", async () => {
    const leaf = makeLeaf({ cn: `idem-${db}.example.test` });
    const requestId = randomUUID();
    const results = await Promise.all(
      Array.from({ length: 4 }, () => t.certificates.importCertificate({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem, requestId })),
    );
    expect(new Set(results.map((r) => r.certificate!.name)).size).toBe(1);
    const reused = await expectFailure(t.certificates.importCertificate({ parent, certificate: makeLeaf({ cn: `idem2-${db}.example.test` }).certPem, requestId }));
    expect(reused.reason).toBe("REQUEST_ID_REUSED");
    const list = await t.certificates.listCertificates({ parent, filter: `domain = "idem-${db}.example.test"` });
    expect(list.certificates.map((c) => c.name)).toEqual([results[0].certificate!.name]);
  });

  it("reimports a new version, keeps the old one readable, and honours the etag", async () => {
    const v1 = makeLeaf({ cn: `renew-${db}.example.test`, keySlot: `renew1-${db}`, days: 10 });
    const v2 = makeLeaf({ cn: `renew-${db}.example.test`, keySlot: `renew2-${db}`, days: 90 });
    const c1 = (await t.certificates.importCertificate({ parent, certificate: v1.certPem, privateKey: v1.keyPem })).certificate!;
    const stale = await expectFailure(t.certificates.reimportCertificate({ name: c1.name, certificate: v2.certPem, etag: '"nope"' }));
    expect(stale.code).toBe(status.ABORTED);
    const mismatch = await expectFailure(t.certificates.reimportCertificate({ name: c1.name, certificate: v2.certPem, privateKey: v1.keyPem }));
    expect(mismatch.reason).toBe("PRIVATE_KEY_MISMATCH");
    const c2 = (await t.certificates.reimportCertificate({ name: c1.name, certificate: v2.certPem, privateKey: v2.keyPem, etag: c1.etag })).certificate!;
    expect(c2.name).toBe(c1.name);
    expect(c2.version).toBe(2);
    expect(c2.sha256Fingerprint).toBe(certFacts(v2.certPem).sha256Fingerprint);
    expect(c2.notAfter!.getTime()).toBe(certFacts(v2.certPem).notAfter.getTime());
    expect(c2.etag).not.toBe(c1.etag);
    const now = await t.certificates.accessCertificate({ name: c1.name });
    expect(now.version).toBe(2);
    expect(new X509Certificate(now.certificate).fingerprint256).toBe(new X509Certificate(v2.certPem).fingerprint256);
    const old = await t.certificates.accessCertificate({ name: c1.name, version: 1 });
    expect(new X509Certificate(old.certificate).fingerprint256).toBe(new X509Certificate(v1.certPem).fingerprint256);
    expect(old.privateKey).not.toBe("");
    const none = await expectFailure(t.certificates.accessCertificate({ name: c1.name, version: 3 }));
    expect(none.code).toBe(status.NOT_FOUND);
    expect(none.reason).toBe("CERTIFICATE_VERSION_NOT_FOUND");
    // Reimporting a certificate another resource holds is refused.
    const otherLeaf = makeLeaf({ cn: `holder-${db}.example.test` });
    const holder = (await t.certificates.importCertificate({ parent, certificate: otherLeaf.certPem })).certificate!;
    const taken = await expectFailure(t.certificates.reimportCertificate({ name: c1.name, certificate: otherLeaf.certPem }));
    expect(taken.code).toBe(status.ALREADY_EXISTS);
    expect(taken.metadata.resource).toBe(holder.name);
  });

  it("updates metadata with update_mask and deletes with etag", async () => {
    const leaf = makeLeaf({ cn: `upd-${db}.example.test` });
    const c = (await t.certificates.importCertificate({ parent, certificate: leaf.certPem, displayName: "a", description: "d" })).certificate!;
    const u = (
      await t.certificates.updateCertificate({ certificate: { name: c.name, displayName: "b", description: "ignored", labels: { x: "y" } }, updateMask: ["display_name", "labels"] })
    ).certificate!;
    expect([u.displayName, u.description, u.labels]).toEqual(["b", "d", { x: "y" }]);
    expect(u.sha256Fingerprint).toBe(c.sha256Fingerprint);
    const badMask = await expectFailure(t.certificates.updateCertificate({ certificate: { name: c.name }, updateMask: ["sha256_fingerprint"] }));
    expect(badMask.reason).toBe("INVALID_UPDATE_MASK");
    const staleDelete = await expectFailure(t.certificates.deleteCertificate({ name: c.name, etag: c.etag }));
    expect(staleDelete.code).toBe(status.ABORTED);
    await t.certificates.deleteCertificate({ name: c.name, etag: u.etag });
    const gone = await expectFailure(t.certificates.getCertificate({ name: c.name }));
    expect(gone.code).toBe(status.NOT_FOUND);
    expect(gone.reason).toBe("CERTIFICATE_NOT_FOUND");
    expect((await expectFailure(t.certificates.accessCertificate({ name: c.name }))).code).toBe(status.NOT_FOUND);
    expect((await expectFailure(t.certificates.deleteCertificate({ name: c.name }))).code).toBe(status.NOT_FOUND);
    // The fingerprint is free again.
    await t.certificates.importCertificate({ parent, certificate: leaf.certPem });
  });

  describe("listing", () => {
    let inst: string;
    const made: { name: string; notAfter: number; display: string; alg: string }[] = [];

    beforeAll(async () => {
      inst = await newInstance();
      const specs: { cn: string; days: number; keyType: KeyType; dns?: string[] }[] = [
        { cn: "a.list.test", days: 5, keyType: "ec256", dns: ["a.list.test"] },
        { cn: "b.list.test", days: 400, keyType: "rsa2048", dns: ["*.shop.list.test"] },
        { cn: "c.list.test", days: 50, keyType: "ec384", dns: ["www.shop.list.test", "c.list.test"] },
        { cn: "d.list.test", days: 700, keyType: "ed25519" },
        { cn: "e.list.test", days: 20, keyType: "ec256", dns: ["deep.www.shop.list.test"] },
      ];
      for (const [i, s] of specs.entries()) {
        const leaf = makeCert({ cn: s.cn, days: s.days, keyType: s.keyType, keySlot: `list-${s.cn}`, sans: s.dns ? { dns: s.dns } : undefined });
        const c = (await t.certificates.importCertificate({ parent: inst, certificate: leaf.certPem, displayName: `n${(7 * i) % 5}` })).certificate!;
        made.push({ name: c.name, notAfter: c.notAfter!.getTime(), display: c.displayName, alg: s.keyType });
      }
    });

    const all = async (req: object) => {
      const names: string[] = [];
      let pageToken = "";
      do {
        const r = await t.certificates.listCertificates({ parent: inst, pageSize: 2, pageToken, ...req });
        names.push(...r.certificates.map((c) => c.name));
        pageToken = r.nextPageToken;
      } while (pageToken);
      return names;
    };

    it("orders by create_time, not_after and display_name, across pages", async () => {
      expect(await all({})).toEqual(made.map((m) => m.name));
      const byNotAfter = [...made].sort((a, b) => a.notAfter - b.notAfter);
      expect(await all({ orderBy: "not_after" })).toEqual(byNotAfter.map((m) => m.name));
      expect(await all({ orderBy: "not_after desc" })).toEqual(byNotAfter.reverse().map((m) => m.name));
      const byDisplay = [...made].sort((a, b) => (a.display < b.display ? -1 : a.display > b.display ? 1 : 0));
      expect(await all({ orderBy: "display_name" })).toEqual(byDisplay.map((m) => m.name));
    });

    it("filters on expiry, domain (wildcard-aware) and key algorithm", async () => {
      const cutoff = Date.now() + 60 * 86_400_000;
      const iso = new Date(cutoff).toISOString();
      expect(await all({ filter: `not_after < "${iso}"`, orderBy: "not_after" })).toEqual(
        made.filter((m) => m.notAfter < cutoff).sort((a, b) => a.notAfter - b.notAfter).map((m) => m.name),
      );
      // www.shop.list.test: exact SAN on c, wildcard *.shop.list.test on b; deep.www... is not covered by the wildcard.
      expect((await all({ filter: `domain = "WWW.shop.list.test"` })).sort()).toEqual([made[1].name, made[2].name].sort());
      expect(await all({ filter: `domain = "deep.www.shop.list.test"` })).toEqual([made[4].name]);
      // d has no DNS SAN: its common name counts.
      expect(await all({ filter: `domain = "d.list.test"` })).toEqual([made[3].name]);
      expect(await all({ filter: `key_algorithm = EC AND not_after > "${new Date(Date.now() + 10 * 86_400_000).toISOString()}"` })).toEqual([made[2].name, made[4].name]);
      expect(await all({ filter: `key_algorithm = ED25519` })).toEqual([made[3].name]);
    });

    it("keeps pages stable while certificates are added", async () => {
      const first = await t.certificates.listCertificates({ parent: inst, pageSize: 2, orderBy: "not_after" });
      // A certificate that sorts before the cursor must not shift later pages.
      const early = makeCert({ cn: "early.list.test", days: 1, keySlot: `early-${db}` });
      const e = (await t.certificates.importCertificate({ parent: inst, certificate: early.certPem })).certificate!;
      const rest: string[] = [];
      let pageToken = first.nextPageToken;
      while (pageToken) {
        const r = await t.certificates.listCertificates({ parent: inst, pageSize: 2, orderBy: "not_after", pageToken });
        rest.push(...r.certificates.map((c) => c.name));
        pageToken = r.nextPageToken;
      }
      const byNotAfter = [...made].sort((a, b) => a.notAfter - b.notAfter).map((m) => m.name);
      expect([...first.certificates.map((c) => c.name), ...rest]).toEqual(byNotAfter);
      await t.certificates.deleteCertificate({ name: e.name });
    });

    it("refuses bad filters, orders and tokens", async () => {
      const bad: [object, string][] = [
        [{ filter: `not_after < "yesterday"` }, "INVALID_FILTER"],
        [{ filter: `colour = "red"` }, "INVALID_FILTER"],
        [{ filter: `domain = "a" OR domain = "b"` }, "INVALID_FILTER"],
        [{ orderBy: "subject" }, "INVALID_ORDER_BY"],
        [{ pageToken: "abc.def" }, "INVALID_PAGE_TOKEN"],
        [{ pageSize: -1 }, "INVALID_FIELD"],
      ];
      for (const [req, reason] of bad) {
        const err = await expectFailure(t.certificates.listCertificates({ parent: inst, ...req }));
        expect(err.code).toBe(status.INVALID_ARGUMENT);
        expect(err.reason).toBe(reason);
      }
      // A token made for one order cannot be used with another.
      const p = await t.certificates.listCertificates({ parent: inst, pageSize: 1, orderBy: "not_after" });
      const err = await expectFailure(t.certificates.listCertificates({ parent: inst, pageSize: 1, orderBy: "display_name", pageToken: p.nextPageToken }));
      expect(err.reason).toBe("INVALID_PAGE_TOKEN");
    });
  });

  it("stores no secret material in clear in the database", async () => {
    const inst = await newInstance();
    const chain = makeChain({ keyType: "rsa2048", name: `clear-${db}`, cn: "clear.example.test" });
    await t.certificates.importCertificate({ parent: inst, certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") });
    const { createPrivateKey } = await import("node:crypto");
    const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
    const needles: Buffer[] = [];
    for (const pem of [chain.leafPem, chain.leafKeyPem, ...chain.intermediatesPem]) {
      const d = der(pem);
      // Any 32-byte window of the DER, raw or base64, would be a leak.
      needles.push(d.subarray(40, 72), Buffer.from(d.subarray(42, 90).toString("base64")));
    }
    const jwk = createPrivateKey(chain.leafKeyPem).export({ format: "jwk" }) as { d: string };
    needles.push(Buffer.from(jwk.d, "base64url").subarray(0, 32), Buffer.from(jwk.d.slice(0, 40)));
    needles.push(Buffer.from("-----BEGIN"), Buffer.from("PRIVATE KEY"));

    const haystacks: Buffer[] = [];
    if (db === "sqlite") {
      const { readFileSync, existsSync } = await import("node:fs");
      const file = (t.config.database as { filename: string }).filename;
      for (const f of [file, `${file}-wal`]) if (existsSync(f)) haystacks.push(readFileSync(f));
    } else {
      const k = t.raw();
      for (const table of ["instances", "deks", "certificates", "certificate_versions", "certificate_domains", "request_ids"]) {
        const rows = await k(table).select("*");
        haystacks.push(Buffer.from(JSON.stringify(rows)));
      }
    }
    expect(haystacks.length).toBeGreaterThan(0);
    // Listed rather than printed: a haystack is a whole database.
    const leaks = haystacks.flatMap((h, i) => needles.filter((n) => h.includes(n)).map((n) => `haystack ${i} holds ${n.toString("hex")} at byte ${h.indexOf(n)}`));
    expect(leaks).toEqual([]);
    // And the material really is in there, encrypted: the JWE header is present.
    expect(haystacks.map((h) => h.includes(Buffer.from("eyJ")))).toContain(true);
  });

  it("fails clearly when ciphertext or a wrapped DEK is moved to another place", async () => {
    const instA = await newInstance();
    const instB = await newInstance();
    const a = makeLeaf({ cn: `move-a-${db}.example.test` });
    const b = makeLeaf({ cn: `move-b-${db}.example.test` });
    const ca = (await t.certificates.importCertificate({ parent: instA, certificate: a.certPem, privateKey: a.keyPem })).certificate!;
    const cb = (await t.certificates.importCertificate({ parent: instA, certificate: b.certPem, privateKey: b.keyPem })).certificate!;
    const cOther = (await t.certificates.importCertificate({ parent: instB, certificate: a.certPem, privateKey: a.keyPem })).certificate!;
    const id = (name: string) => name.split("/").pop()!;
    const k = t.raw();

    // 1. Certificate A's sealed private key copied onto certificate B (same instance, same DEK).
    const rowA = await k("certificate_versions").where({ certificate_id: id(ca.name), version: 1 }).first();
    await k("certificate_versions").where({ certificate_id: id(cb.name), version: 1 }).update({ private_key_jwe: rowA.private_key_jwe });
    const moved = await expectFailure(t.certificates.accessCertificate({ name: cb.name }));
    expect(moved.code).toBe(status.INTERNAL);
    expect(moved.reason).toBe("DECRYPTION_FAILED");

    // 2. Instance A's wrapped DEK copied over instance B's: B's material no longer opens.
    const dekA = await k("deks").where({ instance_id: id(instA) }).first();
    await k("deks").where({ instance_id: id(instB) }).update({ wrapped_key: dekA.wrapped_key });
    await t.restart(); // empties the DEK cache, so the wrapped DEK is unwrapped again
    const wrapped = await expectFailure(t.certificates.accessCertificate({ name: cOther.name }));
    expect(wrapped.reason).toBe("DECRYPTION_FAILED");

    // 3. A row whose DEK id names another instance's DEK.
    await k("certificate_versions").where({ certificate_id: id(cOther.name) }).update({ dek_id: dekA.id });
    const foreign = await expectFailure(t.certificates.accessCertificate({ name: cOther.name }));
    expect(foreign.reason).toBe("DECRYPTION_FAILED");

    // The untouched certificate still reads.
    const ok = await t.certificates.accessCertificate({ name: ca.name });
    expect(ok.privateKey).toContain("PRIVATE KEY");
  });
});
