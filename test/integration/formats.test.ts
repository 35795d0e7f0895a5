/**
 * "My certificate won't import" (issue 6 items 1-3), over real gRPC on SQLite and MariaDB: every container and
 * encoding users bring (PKCS#12 of each kind, DER, encrypted keys, PKCS#7, combined and mislabelled PEM), chain
 * repair with its report, and every key algorithm with its verdict. Fixtures are made by the openssl CLI; expected
 * values come from openssl or from the fixture itself, never from the code under test.
 */
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImportRepair_Kind, KeyAlgorithm, RootCertificatePolicy, type ImportRepair } from "../../gen/ts/certmanager/v1/certificate.js";
import { encryptKey, exportPkcs12, makeCa, makeChain, makeKey, makeLeaf, openssl, pkcs12ToText, type KeyType } from "../helpers/openssl.js";
import { databases, expectFailure, startTestService, type TestService } from "../helpers/service.js";

/** Runs openssl commands in a fresh directory holding `files`; returns the named output files. */
function inDir(files: Record<string, string | Buffer>, run: (dir: string) => void, outputs: string[]): Buffer[] {
  const dir = mkdtempSync(join(tmpdir(), "cm-formats-"));
  try {
    for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, name), data);
    run(dir);
    return outputs.map((o) => readFileSync(join(dir, o)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The canonical PEM of a certificate (what the service must store), computed by node from the fixture. */
const pem = (certPem: string) => new X509Certificate(certPem).toString();
/** DER of a PEM certificate, by openssl. */
const derOf = (certPem: string) => inDir({ "c.pem": certPem }, (d) => openssl(["x509", "-in", "c.pem", "-outform", "DER", "-out", "c.der"], { cwd: d }), ["c.der"])[0];
/** SPKI DER of any key or certificate PEM, to compare keys. */
const spki = (keyOrCert: string) => createPublicKey(keyOrCert).export({ type: "spki", format: "der" }).toString("hex");
const kinds = (repairs: ImportRepair[]) => repairs.map((r) => ImportRepair_Kind[r.kind]);

describe.each(await databases())("certificate formats on %s", (db) => {
  let t: TestService;
  let parent: string;
  const chain = makeChain({ name: `fmt-${db}`, depth: 2, cn: `fmt-${db}.example.test` });
  const [int1, int2] = chain.intermediatesPem;
  beforeAll(async () => {
    t = await startTestService(db);
    parent = (await t.instances.createInstance({ instance: {} })).instance!.name;
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** Registers the secrets a request carries (passphrase, private key, PKCS#12 file): stop() fails if a log shows one. */
  function plant(req: Record<string, unknown>) {
    for (const v of [req.passphrase, req.privateKey, req.privateKeyDer, req.pkcs12]) if ((typeof v === "string" || Buffer.isBuffer(v)) && Buffer.byteLength(v) >= 6) t.plantSecret(v);
  }

  /** Imports into a fresh instance and returns the certificate, the repairs and the decrypted material. */
  async function importFresh(req: Record<string, unknown>) {
    plant(req);
    const p = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const res = await t.certificates.importCertificate({ parent: p, ...req });
    const material = await t.certificates.accessCertificate({ name: res.certificate!.name });
    return { parent: p, certificate: res.certificate!, repairs: res.repairs, material };
  }

  async function count(p: string) {
    return (await t.certificates.listCertificates({ parent: p })).certificates.length;
  }

  /** Expects a refusal and that the instance holds nothing afterwards. */
  async function refused(req: Record<string, unknown>) {
    plant(req);
    const p = (await t.instances.createInstance({ instance: {} })).instance!.name;
    const e = await expectFailure(t.certificates.importCertificate({ parent: p, ...req }));
    expect(e.code).toBe(status.INVALID_ARGUMENT);
    expect(await count(p)).toBe(0);
    // Messages never carry PEM bodies (base64 DER starts "MII") or raw OpenSSL text.
    expect(e.message).not.toMatch(/MII[A-Za-z0-9+/]{16}|routines::|error:[0-9A-F]{8}/);
    return e;
  }

  describe("PKCS#12", () => {
    const variants: [string, string[]][] = [
      ["AES-256 (OpenSSL 3 default)", []],
      ["legacy RC2-40 + 3DES", ["-legacy"]],
      ["3DES with a SHA-1 MAC", ["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"]],
    ];
    it.each(variants)("reads %s with its chain", async (_name, flags) => {
      const [p12] = inDir(
        { "c.pem": chain.leafPem, "k.pem": chain.leafKeyPem, "ca.pem": int1 + int2 + chain.rootPem },
        (d) => openssl(["pkcs12", "-export", "-in", "c.pem", "-inkey", "k.pem", "-certfile", "ca.pem", "-passout", "pass:s3cret", "-out", "f.p12", ...flags], { cwd: d }),
        ["f.p12"],
      );
      const r = await importFresh({ pkcs12: p12, passphrase: "s3cret" });
      expect(r.material.certificate).toBe(pem(chain.leafPem));
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2) + pem(chain.rootPem));
      expect(r.material.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      expect(spki(r.material.privateKey)).toBe(spki(chain.leafPem));
      expect(r.certificate.intermediateCount).toBe(3);
      expect(kinds(r.repairs)[0]).toBe("KIND_PKCS12_UNPACKED");
    });

    it("tells a missing passphrase from a wrong one, and writes nothing", async () => {
      const p12 = exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, password: "right" });
      const missing = await refused({ pkcs12: p12 });
      expect([missing.reason, missing.fieldViolations[0].field]).toEqual(["PASSPHRASE_REQUIRED", "pkcs12"]);
      const wrong = await refused({ pkcs12: p12, passphrase: "wrong" });
      expect([wrong.reason, wrong.fieldViolations[0].field]).toEqual(["WRONG_PASSPHRASE", "passphrase"]);
      const garbage = await refused({ pkcs12: Buffer.from("not a pfx file at all") });
      expect(garbage.reason).toBe("INVALID_PKCS12");
    });

    it("reads a file with an empty password, and refuses the file combined with other forms", async () => {
      const p12 = exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, caPems: [int1, int2] });
      const r = await importFresh({ pkcs12: p12 });
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2));
      const both = await refused({ pkcs12: p12, certificate: chain.leafPem });
      expect([both.reason, both.metadata.conflictsWith]).toEqual(["CONFLICTING_FIELDS", "pkcs12"]);
      const big = await refused({ pkcs12: Buffer.alloc(256 * 1024 + 1, 1) });
      expect([big.reason, big.metadata.limitBytes]).toEqual(["FIELD_TOO_LARGE", String(256 * 1024)]);
    });

    it("imports the text `openssl pkcs12 -nodes` prints (Bag Attributes, subject= lines)", async () => {
      const p12 = exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, caPems: [int1, int2] });
      const leafText = pkcs12ToText(p12, "leaf");
      expect(leafText).toMatch(/Bag Attributes/);
      const r = await importFresh({ certificate: leafText, privateKey: pkcs12ToText(p12, "key"), intermediates: pkcs12ToText(p12, "cas") });
      expect(r.material.certificate).toBe(pem(chain.leafPem));
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2));
    });
  });

  describe("DER, encrypted keys, PKCS#7, combined and mislabelled PEM", () => {
    it("converts a DER certificate and DER keys (PKCS#8, PKCS#1, SEC1) to PEM", async () => {
      const rsa = makeLeaf({ cn: `der-rsa-${db}.example.test`, keyType: "rsa2048", keySlot: "der-rsa" });
      const [pkcs1Der, pkcs8Der] = inDir(
        { "k.pem": rsa.keyPem },
        (d) => {
          openssl(["pkey", "-in", "k.pem", "-traditional", "-outform", "DER", "-out", "k1.der"], { cwd: d });
          // `pkey -outform DER` writes the traditional form in OpenSSL 3.0; pkcs8 -topk8 writes PKCS#8.
          openssl(["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-outform", "DER", "-out", "k8.der"], { cwd: d });
        },
        ["k1.der", "k8.der"],
      );
      const a = await importFresh({ certificateDer: derOf(rsa.certPem), privateKeyDer: pkcs1Der });
      expect(a.material.certificate).toBe(pem(rsa.certPem));
      expect(spki(a.material.privateKey)).toBe(spki(rsa.certPem));
      expect(kinds(a.repairs)).toEqual(["KIND_DER_CONVERTED", "KIND_DER_CONVERTED", "KIND_PRIVATE_KEY_CONVERTED"]);
      const b = await importFresh({ certificateDer: derOf(rsa.certPem), privateKeyDer: pkcs8Der });
      expect(kinds(b.repairs)).toEqual(["KIND_DER_CONVERTED", "KIND_DER_CONVERTED"]);
      expect(b.material.privateKey).toBe(a.material.privateKey);
      const conflict = await refused({ certificateDer: derOf(rsa.certPem), certificate: rsa.certPem });
      expect([conflict.reason, conflict.fieldViolations[0].field]).toEqual(["CONFLICTING_FIELDS", "certificate"]);
      const p12 = exportPkcs12({ certPem: rsa.certPem, keyPem: rsa.keyPem, password: "x" });
      const wrongField = await refused({ certificateDer: p12 });
      expect(wrongField.reason).toBe("INVALID_CERTIFICATE");
      expect(wrongField.message).toContain("pkcs12 field");
    });

    it("decrypts encrypted PKCS#8 (PBES2) and legacy Proc-Type keys with the passphrase; missing and wrong told apart", async () => {
      const leaf = makeLeaf({ cn: `enc-${db}.example.test`, keyType: "rsa2048", keySlot: "enc" });
      for (const legacy of [false, true]) {
        const encrypted = encryptKey(leaf.key, { legacy, password: "pässwörd" });
        expect(encrypted).toMatch(legacy ? /Proc-Type: 4,ENCRYPTED/ : /BEGIN ENCRYPTED PRIVATE KEY/);
        const r = await importFresh({ certificate: leaf.certPem, privateKey: encrypted, passphrase: "pässwörd" });
        expect(spki(r.material.privateKey)).toBe(spki(leaf.certPem));
        expect(r.material.privateKey).not.toMatch(/ENCRYPTED/);
        expect(kinds(r.repairs)).toContain("KIND_PRIVATE_KEY_DECRYPTED");
        const missing = await refused({ certificate: leaf.certPem, privateKey: encrypted });
        expect([missing.reason, missing.fieldViolations[0].field]).toEqual(["ENCRYPTED_PRIVATE_KEY", "private_key"]);
        const wrong = await refused({ certificate: leaf.certPem, privateKey: encrypted, passphrase: "password" });
        expect([wrong.reason, wrong.fieldViolations[0].field]).toEqual(["WRONG_PASSPHRASE", "passphrase"]);
      }
      // The other kinds users meet: PKCS#12 PBE 3DES (`-v1`), PBES2 with a SHA-512 PRF, legacy 3DES, scrypt.
      const variants = [
        openssl(["pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-passout", "pass:pässwörd"], { input: leaf.keyPem }),
        openssl(["pkcs8", "-topk8", "-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA512", "-passout", "pass:pässwörd"], { input: leaf.keyPem }),
        openssl(["rsa", "-traditional", "-des3", "-passout", "pass:pässwörd"], { input: leaf.key.legacyPem }),
        openssl(["pkcs8", "-topk8", "-scrypt", "-passout", "pass:pässwörd"], { input: leaf.keyPem }),
      ];
      for (const encrypted of variants) {
        const r = await importFresh({ certificate: leaf.certPem, privateKey: encrypted, passphrase: "pässwörd" });
        expect(spki(r.material.privateKey)).toBe(spki(leaf.certPem));
        const wrong = await refused({ certificate: leaf.certPem, privateKey: encrypted, passphrase: "pässwort" });
        expect(wrong.reason).toBe("WRONG_PASSPHRASE");
      }
      // Single DES cannot be read by OpenSSL 3 without its legacy provider: said so, naming the cipher.
      const legacyDes = openssl(["rsa", "-provider", "legacy", "-provider", "default", "-traditional", "-des", "-passout", "pass:pw"], { input: leaf.key.legacyPem });
      expect(legacyDes).toMatch(/DEK-Info: DES-CBC,/);
      const pkcs8Des = openssl(["pkcs8", "-topk8", "-provider", "legacy", "-provider", "default", "-v2", "des-cbc", "-passout", "pass:pw"], { input: leaf.keyPem });
      for (const des of [legacyDes, pkcs8Des]) {
        const e = await refused({ certificate: leaf.certPem, privateKey: des, passphrase: "pw" });
        expect(e.reason).toBe("INVALID_PRIVATE_KEY");
        expect(e.message).toContain("DES-CBC");
        expect(e.message).toContain("-aes256");
      }
    });

    it("splits a combined PEM (certificate and key in one field) and reads an EC PARAMETERS block before a SEC1 key", async () => {
      const leaf = makeLeaf({ cn: `combined-${db}.example.test`, keyType: "ec384", keySlot: "combined" });
      const r = await importFresh({ certificate: leaf.certPem + leaf.keyPem });
      expect(r.certificate.hasPrivateKey).toBe(true);
      expect(kinds(r.repairs)).toEqual(["KIND_PRIVATE_KEY_MOVED"]);
      const params = openssl(["ecparam", "-name", "secp384r1"]);
      const s = await importFresh({ certificate: leaf.certPem, privateKey: params + leaf.legacyKeyPem });
      expect(spki(s.material.privateKey)).toBe(spki(leaf.certPem));
      expect(kinds(s.repairs)).toEqual(["KIND_PRIVATE_KEY_CONVERTED"]);
    });

    it("reads mislabelled blocks by their content and names the wrong kinds of block precisely", async () => {
      const leaf = makeLeaf({ cn: `label-${db}.example.test`, keyType: "rsa2048", keySlot: "label" });
      const pkcs8UnderRsaLabel = leaf.keyPem.replace(/PRIVATE KEY/g, "RSA PRIVATE KEY");
      const r = await importFresh({ certificate: leaf.certPem, privateKey: pkcs8UnderRsaLabel });
      expect(kinds(r.repairs)).toEqual(["KIND_PEM_LABEL_CORRECTED"]);
      expect(spki(r.material.privateKey)).toBe(spki(leaf.certPem));
      const trusted = openssl(["x509", "-trustout", "-addtrust", "serverAuth"], { input: leaf.certPem });
      expect(trusted).toMatch(/BEGIN TRUSTED CERTIFICATE/);
      const tr = await importFresh({ certificate: trusted });
      expect([tr.material.certificate, kinds(tr.repairs)]).toEqual([pem(leaf.certPem), ["KIND_PEM_LABEL_CORRECTED"]]);

      const csr = inDir({ "k.pem": leaf.keyPem }, (d) => openssl(["req", "-new", "-key", "k.pem", "-subj", "/CN=csr.example", "-out", "r.csr"], { cwd: d }), ["r.csr"])[0].toString();
      expect((await refused({ certificate: csr })).message).toContain("certificate signing request (CSR)");
      const pub = await refused({ certificate: leaf.certPem, privateKey: leaf.key.publicPem });
      expect([pub.reason, pub.message]).toEqual(["INVALID_PRIVATE_KEY", expect.stringContaining("public key")]);
      const keyOnly = await refused({ certificate: leaf.keyPem });
      expect(keyOnly.message).toContain("only a private key");
      const certAsKey = await refused({ certificate: leaf.certPem, privateKeyDer: derOf(leaf.certPem) });
      expect(certAsKey.message).toContain("holds a certificate, not a private key");
    });

    it("unpacks a PKCS#7 bundle (.p7b) in PEM and DER", async () => {
      const [p7pem, p7der] = inDir(
        { "l.pem": chain.leafPem, "i1.pem": int1, "i2.pem": int2 },
        (d) => {
          openssl(["crl2pkcs7", "-nocrl", "-certfile", "i2.pem", "-certfile", "l.pem", "-certfile", "i1.pem", "-out", "b.p7b"], { cwd: d });
          openssl(["crl2pkcs7", "-nocrl", "-certfile", "i2.pem", "-certfile", "l.pem", "-certfile", "i1.pem", "-outform", "DER", "-out", "b.der"], { cwd: d });
        },
        ["b.p7b", "b.der"],
      );
      for (const req of [{ certificate: p7pem.toString() }, { certificateDer: p7der }]) {
        const r = await importFresh({ ...req, privateKey: chain.leafKeyPem });
        expect(r.material.certificate).toBe(pem(chain.leafPem));
        expect(r.material.intermediates).toBe(pem(int1) + pem(int2));
        expect(kinds(r.repairs)).toEqual(["KIND_PKCS7_UNPACKED", "KIND_CHAIN_SPLIT", "KIND_INTERMEDIATES_REORDERED"]);
      }
    });
  });

  describe("limits before work", () => {
    it("refuses certificate_der, private_key_der and passphrase above their limits, naming each", async () => {
      const leaf = makeLeaf({ cn: `limits-${db}.example.test` });
      const cases: [Record<string, unknown>, string, number][] = [
        [{ certificateDer: Buffer.alloc(64 * 1024 + 1, 0x30) }, "certificate_der", 64 * 1024],
        [{ certificate: leaf.certPem, privateKeyDer: Buffer.alloc(64 * 1024 + 1, 0x30) }, "private_key_der", 64 * 1024],
        [{ certificate: leaf.certPem, passphrase: "p".repeat(1025) }, "passphrase", 1024],
      ];
      for (const [req, field, limit] of cases) {
        const e = await refused(req);
        expect([e.reason, e.fieldViolations[0].field, e.metadata.limitBytes]).toEqual(["FIELD_TOO_LARGE", field, String(limit)]);
      }
    });

    it("refuses key-derivation work above the caps: PKCS#12 iterations, PBKDF2 iterations and scrypt parameters of keys", async () => {
      const leaf = makeLeaf({ cn: `caps-${db}.example.test`, keySlot: "caps" });
      const [p12] = inDir(
        { "c.pem": leaf.certPem, "k.pem": leaf.keyPem },
        (d) => openssl(["pkcs12", "-export", "-in", "c.pem", "-inkey", "k.pem", "-iter", "1000001", "-passout", "pass:pw", "-out", "f.p12"], { cwd: d }),
        ["f.p12"],
      );
      const e = await refused({ pkcs12: p12, passphrase: "pw" });
      expect([e.reason, e.metadata.iterations, e.metadata.limit]).toEqual(["INVALID_PKCS12", "1000001", "1000000"]);
      const pbkdf2 = openssl(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-iter", "1000001", "-passout", "pass:pw"], { input: leaf.keyPem });
      const k = await refused({ certificate: leaf.certPem, privateKey: pbkdf2, passphrase: "pw" });
      expect([k.reason, k.metadata.iterations, k.metadata.limit]).toEqual(["INVALID_PRIVATE_KEY", "1000001", "1000000"]);
      const scrypt = openssl(["pkcs8", "-topk8", "-scrypt", "-scrypt_N", "16384", "-scrypt_r", "8", "-scrypt_p", "3", "-passout", "pass:pw"], { input: leaf.keyPem });
      const sc = await refused({ certificate: leaf.certPem, privateKey: scrypt, passphrase: "pw" });
      expect([sc.reason, sc.metadata.scryptN, sc.metadata.scryptP]).toEqual(["INVALID_PRIVATE_KEY", "16384", "3"]);
      // The defaults are well inside the caps.
      const ok = openssl(["pkcs8", "-topk8", "-scrypt", "-passout", "pass:pw"], { input: leaf.keyPem });
      expect((await importFresh({ certificate: leaf.certPem, privateKey: ok, passphrase: "pw" })).certificate.hasPrivateKey).toBe(true);
    });
  });

  describe("hostile keys and chains (found by adversarial testing)", () => {
    it("refuses DSA keys unread, wherever they are sent", async () => {
      const leaf = makeLeaf({ cn: `dsa-key-${db}.example.test` });
      const dsa = makeKey("dsa", "hostile");
      const e = await refused({ certificate: leaf.certPem, privateKey: dsa.pkcs8Pem });
      expect([e.reason, e.fieldViolations[0].field, e.metadata.keyAlgorithm]).toEqual(["UNSUPPORTED_KEY_ALGORITHM", "private_key", "DSA"]);
      const dsaDer = Buffer.from(dsa.pkcs8Pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
      const asCert = await refused({ certificateDer: dsaDer });
      expect(asCert.message).toContain("holds a private key, not a certificate");
      // Encrypted, its type is only known once decrypted: that happens in an isolated worker, which refuses it.
      const encrypted = encryptKey(dsa, { password: "pw" });
      const enc = await refused({ certificate: leaf.certPem, privateKey: encrypted, passphrase: "pw" });
      expect([enc.reason, enc.fieldViolations[0].field, enc.metadata.keyAlgorithm]).toEqual(["UNSUPPORTED_KEY_ALGORITHM", "private_key", "DSA"]);
    });

    it("refuses an encrypted key whose parameters are not DER (their cost could not be checked)", async () => {
      const leaf = makeLeaf({ cn: `nonminimal-${db}.example.test` });
      // PKCS#12-PBE 3DES asking for 2^31-1 iterations, its parameters' length written in a non-minimal form.
      const der = Buffer.from("3053301f060a2a864886f70d010c01033081100408010101010101010102047fffffff0430" + "03".repeat(48), "hex");
      const e = await refused({ certificate: leaf.certPem, privateKeyDer: der, passphrase: "x" });
      expect(e.reason).toBe("INVALID_PRIVATE_KEY");
      expect(e.message).toContain("encryption parameters are not valid DER");
    });

    it("refuses key files that pair the certificate's public key with another key's secret", async () => {
      for (const type of ["ec256", "rsa2048"] as const) {
        const leaf = makeLeaf({ cn: `tampered-${type}-${db}.example.test`, keyType: type, keySlot: `tampered-${type}` });
        const own = createPrivateKey(leaf.keyPem).export({ format: "jwk" });
        const other = createPrivateKey(makeKey(type, "tampered-other").pkcs8Pem).export({ format: "jwk" });
        const secret = type === "ec256" ? { d: other.d } : { d: other.d, p: other.p, q: other.q, dp: other.dp, dq: other.dq, qi: other.qi };
        const forged = createPrivateKey({ key: { ...own, ...secret }, format: "jwk" }).export({ type: "pkcs8", format: "pem" }).toString();
        const e = await refused({ certificate: leaf.certPem, privateKey: forged });
        expect([e.reason, e.fieldViolations[0].field]).toEqual(["PRIVATE_KEY_MISMATCH", "private_key"]);
        expect(e.message).toContain("secret part does not belong");
      }
    });

    it("reads a legacy-encrypted block by its decrypted content even when its label lies", async () => {
      const leaf = makeLeaf({ cn: `legacy-label-${db}.example.test`, keyType: "rsa2048", keySlot: "enc" });
      const legacy = encryptKey(leaf.key, { legacy: true, password: "pw" });
      expect(legacy).toMatch(/BEGIN RSA PRIVATE KEY/);
      const relabelled = legacy.replace(/RSA PRIVATE KEY/g, "EC PRIVATE KEY");
      const r = await importFresh({ certificate: leaf.certPem, privateKey: relabelled, passphrase: "pw" });
      expect(spki(r.material.privateKey)).toBe(spki(leaf.certPem));
      expect(kinds(r.repairs)).toEqual(["KIND_PRIVATE_KEY_DECRYPTED", "KIND_PRIVATE_KEY_CONVERTED"]);
    });

    it("names a missing or unreadable DEK-Info header instead of blaming the passphrase", async () => {
      const leaf = makeLeaf({ cn: `dekinfo-${db}.example.test`, keyType: "rsa2048", keySlot: "enc" });
      const legacy = encryptKey(leaf.key, { legacy: true, password: "pw" });
      const noInfo = legacy.replace(/DEK-Info:[^\n]*\n/, "");
      expect((await refused({ certificate: leaf.certPem, privateKey: noInfo, passphrase: "pw" })).message).toContain('"DEK-Info" header is missing or unreadable');
      const gcm = legacy.replace(/DEK-Info: [A-Z0-9-]+,/, "DEK-Info: AES-128-GCM,");
      const g = await refused({ certificate: leaf.certPem, privateKey: gcm, passphrase: "pw" });
      expect(g.message).toContain("encrypted with AES-128-GCM, which cannot be read; re-encrypt it with AES-256-CBC");
      const script = legacy.replace(/DEK-Info: [A-Z0-9-]+,/, "DEK-Info: <script>x</script>,");
      expect((await refused({ certificate: leaf.certPem, privateKey: script, passphrase: "pw" })).message).not.toContain("<SCRIPT>");
    });

    it("refuses a certificate whose EC key is the point at infinity, and EC private scalars out of range (they crashed Node)", async () => {
      const tlv = (tag: number, ...parts: Buffer[]) => {
        const body = Buffer.concat(parts);
        const len = body.length < 128 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
        return Buffer.concat([Buffer.from([tag]), len, body]);
      };
      const oid = (hex: string) => tlv(0x06, Buffer.from(hex, "hex"));
      const name = tlv(0x30, tlv(0x31, tlv(0x30, oid("550403"), tlv(0x0c, Buffer.from("inf.example")))));
      const ecdsa = tlv(0x30, oid("2a8648ce3d040302"));
      const spki = tlv(0x30, tlv(0x30, oid("2a8648ce3d0201"), oid("2a8648ce3d030107")), tlv(0x03, Buffer.from([0, 0])));
      const validity = tlv(0x30, tlv(0x17, Buffer.from("250101000000Z")), tlv(0x17, Buffer.from("300101000000Z")));
      const tbs = tlv(0x30, tlv(0xa0, tlv(0x02, Buffer.from([2]))), tlv(0x02, Buffer.from([1])), ecdsa, name, validity, name, spki);
      const infinity = tlv(0x30, tbs, ecdsa, tlv(0x03, Buffer.alloc(9)));
      const e = await refused({ certificateDer: infinity });
      expect([e.reason, e.message]).toEqual(["INVALID_CERTIFICATE", expect.stringContaining("not an encoded curve point")]);
      const leaf = makeLeaf({ cn: `scalar-${db}.example.test` });
      for (const scalar of [Buffer.alloc(32, 0xff), Buffer.alloc(32, 0)]) {
        const sec1 = tlv(0x30, tlv(0x02, Buffer.from([1])), tlv(0x04, scalar), tlv(0xa0, oid("2a8648ce3d030107")));
        const k = await refused({ certificate: leaf.certPem, privateKeyDer: sec1 });
        expect([k.reason, k.message]).toEqual(["INVALID_PRIVATE_KEY", "private_key_der: the EC private key is damaged: its private scalar is zero or not below the curve order; export it again from its source"]);
      }
    });

    it("refuses keys that slipped past the first fixes (third adversarial pass)", async () => {
      const leaf = makeLeaf({ cn: `third-${db}.example.test`, keyType: "rsa2048", keySlot: "third" });
      // PEM text after more than 64 bytes of whitespace in private_key_der: still found, still decrypted in the worker.
      const padded = Buffer.from(" ".repeat(70) + encryptKey(makeKey("dsa", "hostile"), { password: "pw" }));
      const dsa = await refused({ certificate: leaf.certPem, privateKeyDer: padded, passphrase: "pw" });
      expect([dsa.reason, dsa.fieldViolations[0].field, dsa.metadata.keyAlgorithm]).toEqual(["UNSUPPORTED_KEY_ALGORITHM", "private_key_der", "DSA"]);
      // scrypt with N = 0 (node would fall back to its own defaults, in native code that cannot be stopped).
      const der = Buffer.from(openssl(["pkcs8", "-topk8", "-scrypt", "-passout", "pass:pw"], { input: leaf.keyPem }).replace(/-----[^-]+-----|\s/g, ""), "base64");
      // scrypt-params as openssl writes them: N = 16384, r = 8, p = 1.
      const params = Buffer.from("02024000020108020101", "hex");
      const at = der.indexOf(params);
      expect(at).toBeGreaterThan(0);
      Buffer.from("0202000002010802", "hex").copy(der, at);
      const zero = await refused({ certificate: leaf.certPem, privateKeyDer: der, passphrase: "pw" });
      expect([zero.reason, zero.metadata.scryptN]).toEqual(["INVALID_PRIVATE_KEY", "0"]);
      // An RSA key with the right n, e, p, q but a huge d (OpenSSL's fault fallback would sign with it).
      const j = createPrivateKey(leaf.keyPem).export({ format: "jwk" });
      const big = (v: string) => BigInt(`0x${Buffer.from(v, "base64url").toString("hex")}`);
      const [n, e, p, q, qi] = [j.n!, j.e!, j.p!, j.q!, j.qi!].map(big);
      const d = big(j.d!) + (1n << 60_000n) * (p - 1n) * (q - 1n);
      const int = (x: bigint) => {
        let hex = x.toString(16);
        if (hex.length % 2) hex = `0${hex}`;
        if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`;
        return Buffer.from(hex, "hex");
      };
      const tlv = (tag: number, body: Buffer) => {
        const long = Buffer.from(body.length.toString(16).padStart(body.length.toString(16).length + (body.length.toString(16).length % 2), "0"), "hex");
        const len = body.length < 128 ? Buffer.from([body.length]) : Buffer.concat([Buffer.from([0x80 | long.length]), long]);
        return Buffer.concat([Buffer.from([tag]), len, body]);
      };
      const pkcs1 = tlv(0x30, Buffer.concat([0n, n, e, d, p, q, d % (p - 1n), d % (q - 1n), qi].map((x) => tlv(0x02, int(x)))));
      const hugeD = await refused({ certificate: leaf.certPem, privateKeyDer: pkcs1 });
      expect([hugeD.reason, hugeD.fieldViolations[0].field]).toEqual(["PRIVATE_KEY_MISMATCH", "private_key_der"]);
      // P-521: a scalar equal to the curve order.
      const n521 = Buffer.from("01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409", "hex");
      const sec1 = tlv(0x30, Buffer.concat([tlv(0x02, Buffer.from([1])), tlv(0x04, n521), tlv(0xa0, tlv(0x06, Buffer.from("2b81040023", "hex")))]));
      const p521 = makeLeaf({ cn: `p521-${db}.example.test`, keyType: "ec521", keySlot: "p521" });
      const order = await refused({ certificate: p521.certPem, privateKeyDer: sec1 });
      expect([order.reason, order.message]).toEqual(["INVALID_PRIVATE_KEY", expect.stringContaining("not below the curve order")]);
    });

    it("accepts multi-prime RSA keys, and never verifies with DSA issuers", async () => {
      const pkcs8Pem = openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt", "rsa_keygen_primes:3"]);
      expect(openssl(["pkey", "-noout", "-text"], { input: pkcs8Pem })).toContain("prime3:");
      const key = { type: "rsa2048" as const, pkcs8Pem, legacyPem: openssl(["pkey", "-traditional"], { input: pkcs8Pem }), publicPem: openssl(["pkey", "-pubout"], { input: pkcs8Pem }) };
      const leaf = makeLeaf({ cn: `3primes-${db}.example.test`, key });
      for (const privateKey of [key.pkcs8Pem, key.legacyPem]) {
        expect((await importFresh({ certificate: leaf.certPem, privateKey })).certificate.hasPrivateKey).toBe(true);
      }
      const dsaCa = makeCa({ subject: `/CN=DSA CA ${db}`, keyType: "dsa", keySlot: "dsa-ca" });
      const dsaLeaf = makeLeaf({ cn: `dsa-issued-${db}.example.test`, issuer: dsaCa });
      expect((await refused({ certificate: dsaLeaf.certPem, intermediates: dsaCa.certPem })).reason).toBe("INTERMEDIATE_NOT_IN_CHAIN");
    });

    it("decrypts a key found in PEM text sent as certificate_der in the isolated worker too", async () => {
      const leaf = makeLeaf({ cn: `certder-enc-${db}.example.test` });
      const dsa = encryptKey(makeKey("dsa", "hostile"), { password: "pw" });
      const e = await refused({ certificateDer: Buffer.from(leaf.certPem + dsa), passphrase: "pw" });
      expect([e.reason, e.fieldViolations[0].field, e.metadata.keyAlgorithm]).toEqual(["UNSUPPORTED_KEY_ALGORITHM", "certificate_der", "DSA"]);
      const ok = await importFresh({ certificateDer: Buffer.from(leaf.certPem + encryptKey(leaf.key, { password: "pw" })), passphrase: "pw" });
      expect(kinds(ok.repairs)).toEqual(["KIND_PRIVATE_KEY_MOVED", "KIND_PRIVATE_KEY_DECRYPTED"]);
    });

    it("does not verify signatures with RSA issuer keys no CA uses (public exponent above 2^32)", async () => {
      const pkcs8Pem = openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt", "rsa_keygen_pubexp:4294967311"]);
      expect(openssl(["pkey", "-noout", "-text"], { input: pkcs8Pem })).toContain("publicExponent: 4294967311");
      const key = { type: "rsa2048" as const, pkcs8Pem, legacyPem: pkcs8Pem, publicPem: openssl(["pkey", "-pubout"], { input: pkcs8Pem }) };
      const ca = makeCa({ subject: `/CN=Big Exponent CA ${db}`, key });
      const leaf = makeLeaf({ cn: `bige-${db}.example.test`, issuer: ca });
      const e = await refused({ certificate: leaf.certPem, intermediates: ca.certPem });
      expect(e.reason).toBe("INTERMEDIATE_NOT_IN_CHAIN");
    });
  });

  describe("chain repair", () => {
    it("splits a full chain pasted into certificate: the leaf is the one matching the key, the root is kept last", async () => {
      const full = chain.leafPem + int1 + int2 + chain.rootPem;
      const r = await importFresh({ certificate: full, privateKey: chain.leafKeyPem });
      expect(r.material.certificate).toBe(pem(chain.leafPem));
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2) + pem(chain.rootPem));
      expect(kinds(r.repairs)).toEqual(["KIND_CHAIN_SPLIT"]);
      expect(r.repairs[0].description).toContain(`"O=Test,CN=fmt-${db}.example.test"`);
    });

    it("without a key, takes the certificate that issued none of the others, and reorders a reversed chain", async () => {
      const reversed = chain.rootPem + int2 + int1 + chain.leafPem;
      const r = await importFresh({ certificate: reversed });
      expect(r.material.certificate).toBe(pem(chain.leafPem));
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2) + pem(chain.rootPem));
      expect(kinds(r.repairs)).toEqual(["KIND_CHAIN_SPLIT", "KIND_INTERMEDIATES_REORDERED"]);
      const other = makeLeaf({ cn: `other-${db}.example.test` });
      const two = await refused({ certificate: chain.leafPem + other.certPem });
      expect([two.reason, two.metadata.count]).toEqual(["MULTIPLE_CERTIFICATES", "2"]);
    });

    it("reports repeats inside a pasted chain as duplicates, and extra copies of the leaf as such", async () => {
      const r = await importFresh({ certificate: chain.leafPem + int1 + int1 + int2 + chain.leafPem, privateKey: chain.leafKeyPem });
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2));
      expect(kinds(r.repairs)).toEqual(["KIND_CHAIN_SPLIT", "KIND_LEAF_COPY_DROPPED", "KIND_DUPLICATE_INTERMEDIATES_DROPPED"]);
      expect(r.repairs[2].description).toMatch(/^1 duplicate/);
    });

    it("drops duplicate intermediates and copies of the leaf, and says so", async () => {
      const r = await importFresh({ certificate: chain.leafPem, intermediates: int2 + chain.leafPem + int1 + int2 + int1 });
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2));
      expect(kinds(r.repairs)).toEqual(["KIND_LEAF_COPY_DROPPED", "KIND_DUPLICATE_INTERMEDIATES_DROPPED", "KIND_INTERMEDIATES_REORDERED"]);
      expect(r.repairs[1].description).toContain("2 duplicate");
    });

    it("drops the root when asked, per request or by the server's default", async () => {
      const r = await importFresh({ certificate: chain.leafPem, intermediates: int1 + int2 + chain.rootPem, rootCertificate: RootCertificatePolicy.ROOT_CERTIFICATE_POLICY_DROP });
      expect(r.material.intermediates).toBe(pem(int1) + pem(int2));
      expect(kinds(r.repairs)).toEqual(["KIND_ROOT_DROPPED"]);
      expect(r.certificate.intermediateCount).toBe(2);
      const s = await startTestService(db, { CM_ROOT_CERTIFICATE: "drop" });
      try {
        const p = (await s.instances.createInstance({ instance: {} })).instance!.name;
        const byDefault = await s.certificates.importCertificate({ parent: p, certificate: chain.leafPem, intermediates: int1 + int2 + chain.rootPem });
        expect(byDefault.certificate!.intermediateCount).toBe(2);
        const kept = await s.certificates.importCertificate({
          parent: (await s.instances.createInstance({ instance: {} })).instance!.name,
          certificate: chain.leafPem,
          intermediates: int1 + int2 + chain.rootPem,
          rootCertificate: RootCertificatePolicy.ROOT_CERTIFICATE_POLICY_KEEP,
        });
        expect(kept.certificate!.intermediateCount).toBe(3);
      } finally {
        await s.stop();
      }
    });

    it("reports a gap by the missing issuer's name", async () => {
      const e = await refused({ certificate: chain.leafPem, intermediates: int2 + chain.rootPem });
      expect(e.reason).toBe("INTERMEDIATE_NOT_IN_CHAIN");
      expect(e.metadata.missingIssuer).toBe(`O=Test,CN=fmt-${db} Intermediate 1`);
      expect(e.message).toContain(`issuer "O=Test,CN=fmt-${db} Intermediate 1" is missing`);
    });
  });

  describe("key algorithms", () => {
    const accepted: [KeyType, KeyAlgorithm, number, string][] = [
      ["rsa2048", KeyAlgorithm.KEY_ALGORITHM_RSA, 2048, ""],
      ["rsa3072", KeyAlgorithm.KEY_ALGORITHM_RSA, 3072, ""],
      ["rsa4096", KeyAlgorithm.KEY_ALGORITHM_RSA, 4096, ""],
      ["rsa8192", KeyAlgorithm.KEY_ALGORITHM_RSA, 8192, ""],
      ["ec256", KeyAlgorithm.KEY_ALGORITHM_EC, 0, "P-256"],
      ["ec384", KeyAlgorithm.KEY_ALGORITHM_EC, 0, "P-384"],
      ["ec521", KeyAlgorithm.KEY_ALGORITHM_EC, 0, "P-521"],
      ["ed25519", KeyAlgorithm.KEY_ALGORITHM_ED25519, 0, ""],
      ["ed448", KeyAlgorithm.KEY_ALGORITHM_ED448, 0, ""],
    ];
    // RSA 8192 key generation alone can take tens of seconds.
    it.each(accepted)("accepts %s", { timeout: 120_000 }, async (type, algorithm, size, curve) => {
      const leaf = makeLeaf({ cn: `alg-${type}-${db}.example.test`, keyType: type, keySlot: `alg-${type}` });
      const r = await importFresh({ certificate: leaf.certPem, privateKey: leaf.keyPem });
      expect([r.certificate.keyAlgorithm, r.certificate.keySize, r.certificate.keyCurve]).toEqual([algorithm, size, curve]);
    });

    const refusedKeys: [KeyType, string, string][] = [
      ["rsa1024", "KEY_TOO_WEAK", "RSA"],
      ["dsa", "UNSUPPORTED_KEY_ALGORITHM", "DSA"],
      ["x25519", "UNSUPPORTED_KEY_ALGORITHM", "X25519"],
      ["x448", "UNSUPPORTED_KEY_ALGORITHM", "X448"],
    ];
    it.each(refusedKeys)("refuses %s with %s naming %s", async (type, reason, name) => {
      const ca = makeCa({ subject: "/CN=Alg CA", keySlot: "alg-ca" });
      const leaf = makeLeaf({ cn: `alg-${type}.example.test`, keyType: type, keySlot: `alg-${type}`, issuer: ca });
      const e = await refused({ certificate: leaf.certPem });
      expect([e.reason, e.metadata.keyAlgorithm]).toEqual([reason, name]);
      if (type === "rsa1024") expect(e.message).toContain("below the minimum of 2048 bits");
    });

    it("refuses a certificate on another curve as UNSUPPORTED_KEY_ALGORITHM even with its key, and names the field it came in", async () => {
      const leaf = makeLeaf({ cn: `k1-${db}.example.test`, keyType: "secp256k1", keySlot: "k1" });
      const e = await refused({ certificate: leaf.certPem, privateKey: leaf.keyPem });
      expect([e.reason, e.fieldViolations[0].field, e.metadata.keyAlgorithm]).toEqual(["UNSUPPORTED_KEY_ALGORITHM", "certificate", "EC curve secp256k1"]);
      const weak = makeLeaf({ cn: `weak-${db}.example.test`, keyType: "rsa1024", keySlot: "weak" });
      const p12 = exportPkcs12({ certPem: weak.certPem, keyPem: weak.keyPem, password: "pw" });
      const viaP12 = await refused({ pkcs12: p12, passphrase: "pw" });
      expect([viaP12.reason, viaP12.fieldViolations[0].field, viaP12.metadata.keySize]).toEqual(["KEY_TOO_WEAK", "pkcs12", "1024"]);
    });

    it.each([["prime256v1", "P-256"], ["secp384r1", "P-384"], ["secp521r1", "P-521"]])("accepts explicit-parameter %s certificates and matches their keys in either encoding", async (curve, nist) => {
      const [explicitKey, namedKey, cert, otherKey] = inDir(
        {},
        (d) => {
          openssl(["ecparam", "-name", curve, "-param_enc", "explicit", "-genkey", "-noout", "-out", "explicit.key"], { cwd: d });
          openssl(["ec", "-in", "explicit.key", "-param_enc", "named_curve", "-out", "named.key"], { cwd: d });
          openssl(["req", "-new", "-x509", "-key", "explicit.key", "-subj", `/CN=explicit-${curve}-${db}.example.test`, "-days", "5", "-out", "cert.pem"], { cwd: d });
          openssl(["ecparam", "-name", curve, "-param_enc", "explicit", "-genkey", "-noout", "-out", "other.key"], { cwd: d });
        },
        ["explicit.key", "named.key", "cert.pem", "other.key"],
      ).map((b) => b.toString());
      expect(openssl(["x509", "-noout", "-text"], { input: cert })).toMatch(/Field Type: prime-field/);
      const withExplicit = await importFresh({ certificate: cert, privateKey: explicitKey });
      expect([withExplicit.certificate.keyAlgorithm, withExplicit.certificate.keyCurve]).toEqual([KeyAlgorithm.KEY_ALGORITHM_EC, nist]);
      expect(kinds(withExplicit.repairs)).toEqual(["KIND_PRIVATE_KEY_CONVERTED"]);
      expect(withExplicit.repairs[0].description).toContain("explicit EC curve parameters");
      // Stored on its named curve: the same bytes openssl writes for the named-curve form.
      const namedPkcs8 = openssl(["pkcs8", "-topk8", "-nocrypt"], { input: namedKey });
      expect(withExplicit.material.privateKey).toBe(namedPkcs8);
      const withNamed = await importFresh({ certificate: cert, privateKey: namedKey });
      expect(withNamed.material.privateKey).toBe(namedPkcs8);
      const mismatch = await refused({ certificate: cert, privateKey: otherKey });
      expect(mismatch.reason).toBe("PRIVATE_KEY_MISMATCH");
    });
  });

  it("reimports from a PKCS#12 file, reporting what it repaired", async () => {
    const first = await importFresh({ certificate: chain.leafPem });
    const p12 = exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, caPems: [int2, int1], password: "pw" });
    const re = await t.certificates.reimportCertificate({ name: first.certificate.name, pkcs12: p12, passphrase: "pw" });
    expect(re.certificate!.version).toBe(2);
    expect(re.certificate!.hasPrivateKey).toBe(true);
    expect(kinds(re.repairs)[0]).toBe("KIND_PKCS12_UNPACKED");
    const m = await t.certificates.accessCertificate({ name: first.certificate.name });
    expect(m.intermediates).toBe(pem(int1) + pem(int2));
  });

  it("keeps nothing of a refused import in the instance it was sent to", async () => {
    const before = await count(parent);
    await expectFailure(t.certificates.importCertificate({ parent, certificate: chain.leafPem, privateKey: makeKey("ec256", "stranger").pkcs8Pem }));
    expect(await count(parent)).toBe(before);
  });
});
