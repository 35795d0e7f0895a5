/**
 * readPkcs12 against PKCS#12 files made at test time by the openssl CLI (3.x) and, for structures openssl will not
 * write (two keys, separate MAC and encryption passwords, odd algorithms in one bag), by a small DER builder with
 * an independent RFC 7292 App. B key derivation. Expected values come from openssl itself: the certificate DER of
 * `openssl x509 -outform DER`, the key DER of `openssl pkey -outform DER`, and bag order as `openssl pkcs12`
 * prints it.
 */
import { execFileSync } from "node:child_process";
import { createHash, createHmac, createPrivateKey, createPublicKey, randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import forge from "node-forge";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import type { DomainError } from "../../src/domain/errors.js";
import { isolatedTaskStats as pkcs12WorkerStats, MAX_ISOLATED_TASKS as MAX_PKCS12_WORKERS, MAX_WAITING_TASKS } from "../../src/x509/isolate.js";
import { MAX_PKCS12_ITERATIONS, readPkcs12 } from "../../src/x509/pkcs12.js";
import { X509Reason } from "../../src/x509/reasons.js";
import { haveRealFixtures, REAL_FIXTURES } from "../helpers/fixtures.js";
import { makeChain, makeLeaf, type IssuedCert, type KeyType } from "../helpers/openssl.js";

// ---------------------------------------------------------------------------------------------------------------
// openssl with binary files

/** Runs openssl in a fresh temp dir holding `files`; returns the bytes of `out` (or stdout when out is absent). */
function opensslFiles(args: string[], files: Record<string, string | Buffer>, out?: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), "certmgr-p12-"));
  try {
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    let stdout: Buffer;
    try {
      stdout = execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      const e = err as { stderr?: Buffer; message: string };
      throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr?.toString() ?? e.message}`);
    }
    return out === undefined ? stdout : readFileSync(join(dir, out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `openssl pkcs12 -export` of a certificate, its key (unless `key: false`) and CA certificates, with extra options. */
function exportP12(opts: { cert: IssuedCert; key?: boolean; cas?: string[]; password?: string; args?: string[] }): Buffer {
  const args = ["pkcs12", "-export", "-in", "cert.pem", "-passout", `pass:${opts.password ?? "pw"}`, "-out", "out.p12"];
  const files: Record<string, string> = { "cert.pem": opts.cert.certPem, "key.pem": opts.cert.keyPem };
  if (opts.key !== false) args.push("-inkey", "key.pem");
  else args.push("-nokeys");
  if (opts.cas?.length) {
    files["ca.pem"] = opts.cas.join("");
    args.push("-certfile", "ca.pem");
  }
  return opensslFiles([...args, ...(opts.args ?? [])], files, "out.p12");
}

/** `openssl x509 -outform DER`. */
function certDer(pem: string): Buffer {
  return opensslFiles(["x509", "-in", "c.pem", "-outform", "DER", "-out", "c.der"], { "c.pem": pem }, "c.der");
}

/** `openssl pkcs8 -topk8 -nocrypt -outform DER`: unencrypted PKCS#8 (`pkey -outform DER` writes PKCS#1/SEC1). */
function keyDer(pem: string): Buffer {
  return opensslFiles(["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-outform", "DER", "-out", "k.der"], { "k.pem": pem }, "k.der");
}

/** A PKCS#8 key as node re-encodes it (OpenSSL drops redundant EC parameters when it prints keys). */
function canonicalKey(pkcs8: Buffer): Buffer {
  return createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" }).export({ format: "der", type: "pkcs8" });
}

/** PEM blocks of a label in openssl output, as DER. */
function pemBlocks(text: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`, "g");
  return [...text.matchAll(re)].map((m) => Buffer.from(m[1].replace(/\s+/g, ""), "base64"));
}

/** What openssl itself reads out of a PKCS#12 file: certificates in bag order and keys as PKCS#8 DER. */
function opensslReads(p12: Buffer, password: string): { certificates: Buffer[]; privateKeys: Buffer[] } {
  const run = (select: string[]) =>
    opensslFiles(["pkcs12", "-legacy", "-in", "in.p12", "-passin", `pass:${password}`, ...select], { "in.p12": p12 }).toString("latin1");
  return {
    certificates: pemBlocks(run(["-nokeys"]), "CERTIFICATE"),
    privateKeys: pemBlocks(run(["-nocerts", "-nodes"]), "PRIVATE KEY"),
  };
}

/** The SPKI DER of a private key's public half and of a certificate's public key are the same. */
function expectKeyOfCert(pkcs8: Buffer, certPemOrDer: string | Buffer): void {
  const spki = createPublicKey(createPrivateKey({ key: pkcs8, format: "der", type: "pkcs8" })).export({ type: "spki", format: "der" });
  const certSpki = new X509Certificate(certPemOrDer).publicKey.export({ type: "spki", format: "der" });
  expect(spki).toEqual(certSpki);
}

// ---------------------------------------------------------------------------------------------------------------
// A DER builder for PFX files openssl does not write (RFC 7292 §4, X.690)

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag: number, ...parts: Buffer[]): Buffer => {
  const body = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
};
const seq = (...parts: Buffer[]) => tlv(0x30, ...parts);
const octets = (b: Buffer) => tlv(0x04, b);
const explicit0 = (...parts: Buffer[]) => tlv(0xa0, ...parts);
function integer(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (bytes.length === 0 || bytes[0] & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
}
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [40 * a + b];
  for (const arc of rest) {
    const groups: number[] = [];
    for (let v = arc; ; v = Math.floor(v / 128)) {
      groups.unshift(v % 128);
      if (v < 128) break;
    }
    out.push(...groups.map((g, i) => (i < groups.length - 1 ? g | 0x80 : g)));
  }
  return tlv(0x06, Buffer.from(out));
}

const OIDS = {
  data: "1.2.840.113549.1.7.1",
  keyBag: "1.2.840.113549.1.12.10.1.1",
  shroudedKeyBag: "1.2.840.113549.1.12.10.1.2",
  certBag: "1.2.840.113549.1.12.10.1.3",
  secretBag: "1.2.840.113549.1.12.10.1.5",
  x509Certificate: "1.2.840.113549.1.9.22.1",
  sha256: "2.16.840.1.101.3.4.2.1",
};

const keyBag = (pkcs8: Buffer) => seq(oid(OIDS.keyBag), explicit0(pkcs8));
const shroudedKeyBag = (encryptedPkcs8: Buffer) => seq(oid(OIDS.shroudedKeyBag), explicit0(encryptedPkcs8));
const certBag = (der: Buffer) => seq(oid(OIDS.certBag), explicit0(seq(oid(OIDS.x509Certificate), explicit0(octets(der)))));
const secretBag = () => seq(oid(OIDS.secretBag), explicit0(seq(oid(OIDS.data), explicit0(octets(Buffer.from("secret"))))));

/** RFC 7292 App. B.2 key derivation with SHA-256 (u = 32, v = 64); `null` password = no bytes at all. */
function pkcs12Kdf(password: string | null, salt: Buffer, id: number, iterations: number, n: number): Buffer {
  const u = 32;
  const v = 64;
  const pw = password === null ? Buffer.alloc(0) : Buffer.concat([Buffer.from(password, "utf16le").swap16(), Buffer.alloc(2)]);
  const fill = (b: Buffer, len: number) => Buffer.from(Array.from({ length: len }, (_, i) => b[i % b.length]));
  const I = Buffer.concat([fill(salt, v * Math.ceil(salt.length / v)), fill(pw, v * Math.ceil(pw.length / v))]);
  const out: Buffer[] = [];
  for (let i = 0; i < Math.ceil(n / u); i += 1) {
    let a = createHash("sha256").update(Buffer.alloc(v, id)).update(I).digest();
    for (let r = 1; r < iterations; r += 1) a = createHash("sha256").update(a).digest();
    out.push(a);
    const b = fill(a, v);
    for (let j = 0; j < I.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k -= 1) {
        const sum = I[j + k] + b[k] + carry;
        I[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(out).subarray(0, n);
}

/**
 * A PFX (version 3) of one unencrypted SafeContents holding `bags`, with an HMAC-SHA-256 MAC keyed from
 * `mac.password` (RFC 7292 §5.1), or none.
 */
function buildPfx(bags: Buffer[], mac?: { password: string | null; iterations?: number }, version = 3): Buffer {
  const authSafe = seq(seq(oid(OIDS.data), explicit0(octets(seq(...bags)))));
  const parts = [integer(version), seq(oid(OIDS.data), explicit0(octets(authSafe)))];
  if (mac) {
    const iterations = mac.iterations ?? 2048;
    const salt = randomBytes(8);
    const digest = createHmac("sha256", pkcs12Kdf(mac.password, salt, 3, iterations, 32)).update(authSafe).digest();
    parts.push(seq(seq(seq(oid(OIDS.sha256), tlv(0x05)), octets(digest)), octets(salt), integer(iterations)));
  }
  return seq(...parts);
}

/** An encrypted PKCS#8 key (EncryptedPrivateKeyInfo DER) made by `openssl pkcs8 -topk8` with extra options. */
function encryptedPkcs8(keyPem: string, password: string, args: string[]): Buffer {
  return opensslFiles(
    ["pkcs8", "-topk8", "-in", "k.pem", "-passout", `pass:${password}`, "-outform", "DER", "-out", "k.der", ...args],
    { "k.pem": keyPem },
    "k.der",
  );
}

// ---------------------------------------------------------------------------------------------------------------

/** `s` as a regular expression matching it literally. */
const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Awaits a refusal, checks its shape and that no passphrase leaks into message or metadata. */
async function refusal(p12: Buffer, passphrase: string, opts?: { timeoutMs?: number }): Promise<InvalidArgumentError> {
  const err = await readPkcs12(p12, passphrase, opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(InvalidArgumentError);
  const e = err as InvalidArgumentError;
  expect(e.fieldViolations).toEqual([{ field: e.metadata.field, description: e.message }]);
  expect(e.message).toMatch(new RegExp(`^${escapeRegExp(String(e.metadata.field))}: `));
  if (passphrase.length >= 3) {
    expect(e.message).not.toContain(passphrase);
    expect(JSON.stringify(e.metadata)).not.toContain(passphrase);
  }
  return e;
}

function leafOf(keyType: KeyType): IssuedCert {
  return makeLeaf({ keyType, subject: `/CN=p12-${keyType}.example`, keySlot: `p12 ${keyType}` });
}

describe("readPkcs12: files that read", () => {
  it.each<KeyType>(["rsa2048", "ec256", "ed25519"])("reads an OpenSSL 3 default (AES-256, PBKDF2, HMAC-SHA-256) file with a %s key", async (keyType) => {
    const leaf = leafOf(keyType);
    const p12 = exportP12({ cert: leaf, password: "pw-default" });
    const t0 = performance.now();
    const got = await readPkcs12(p12, "pw-default");
    const ms = performance.now() - t0;
    expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
    expectKeyOfCert(got.privateKeys[0], leaf.certPem);
    console.info(`readPkcs12 default AES file (${keyType}): ${ms.toFixed(0)} ms`);
  });

  it.each<[string, string[]]>([
    ["-legacy (RC2-40 certificates, 3DES key, SHA-1 MAC)", ["-legacy"]],
    ["PBE-SHA1-3DES for both, SHA-1 MAC", ["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"]],
    ["AES-128-CBC", ["-certpbe", "aes-128-cbc", "-keypbe", "aes-128-cbc"]],
    ["HMAC-SHA-512 MAC", ["-macalg", "sha512"]],
    ["no encryption (-certpbe NONE -keypbe NONE: a plain keyBag)", ["-certpbe", "NONE", "-keypbe", "NONE"]],
    ["MAC and encryption with 1 iteration (-noiter -nomaciter)", ["-noiter", "-nomaciter"]],
  ])("reads %s", async (_name, args) => {
    const leaf = leafOf("rsa2048");
    const p12 = exportP12({ cert: leaf, password: "pw-kind", args });
    const t0 = performance.now();
    const got = await readPkcs12(p12, "pw-kind");
    const ms = performance.now() - t0;
    expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
    expectKeyOfCert(got.privateKeys[0], leaf.certPem);
    console.info(`readPkcs12 ${_name}: ${ms.toFixed(0)} ms`);
  });

  it("reads an EC key from a -legacy file", async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-legacy-ec", args: ["-legacy"] });
    const got = await readPkcs12(p12, "pw-legacy-ec");
    expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
  });

  it("returns every certificate of a -certfile chain, in the order openssl stores them", async () => {
    const chain = makeChain({ keyType: "ec256", depth: 2, name: "p12-chain" });
    const [leaf, ...cas] = chain.certs;
    const p12 = exportP12({ cert: leaf, cas: cas.map((c) => c.certPem), password: "pw-chain" });
    const got = await readPkcs12(p12, "pw-chain");
    const expected = opensslReads(p12, "pw-chain");
    expect(got.certificates).toEqual(expected.certificates);
    expect(got.privateKeys).toEqual(expected.privateKeys);
    // The same set as went in: the leaf and its two intermediates and root.
    expect(new Set(got.certificates.map((d) => d.toString("hex")))).toEqual(new Set(chain.certs.map((c) => certDer(c.certPem).toString("hex"))));
    expect(got.certificates).toHaveLength(4);
    expectKeyOfCert(got.privateKeys[0], leaf.certPem);
  });

  it("opens a file made with an empty password (-passout pass:) with passphrase \"\" and refuses another", async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "" });
    const got = await readPkcs12(p12, "");
    expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
    const e = await refusal(p12, "not-empty");
    expect(e.reason).toBe(X509Reason.WRONG_PASSPHRASE);
    expect(e.metadata.field).toBe("passphrase");
  });

  it("opens with \"\" a file whose MAC was keyed with no password at all (pyca/cryptography, Java, forge)", async () => {
    const leaf = leafOf("ec256");
    const p12 = buildPfx([certBag(certDer(leaf.certPem)), keyBag(keyDer(leaf.keyPem))], { password: null });
    const got = await readPkcs12(p12, "");
    expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
    // forge's own writer does the same with a null password.
    const rsa = leafOf("rsa2048");
    const forgeP12 = forge.pkcs12.toPkcs12Asn1(forge.pki.privateKeyFromPem(rsa.keyPem), forge.pki.certificateFromPem(rsa.certPem), null);
    const fromForge = await readPkcs12(Buffer.from(forge.asn1.toDer(forgeP12).getBytes(), "latin1"), "");
    expect(fromForge.certificates).toEqual([certDer(rsa.certPem)]);
    expectKeyOfCert(fromForge.privateKeys[0], rsa.certPem);
  });

  it("reads a -nomac file with the right password and tells a wrong or missing one", async () => {
    const leaf = leafOf("rsa2048");
    const p12 = exportP12({ cert: leaf, password: "pw-nomac", args: ["-nomac"] });
    const got = await readPkcs12(p12, "pw-nomac");
    expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
    const wrong = await refusal(p12, "pw-wrong");
    expect([wrong.reason, wrong.metadata.field]).toEqual([X509Reason.WRONG_PASSPHRASE, "passphrase"]);
    const missing = await refusal(p12, "");
    expect([missing.reason, missing.metadata.field]).toEqual([X509Reason.PASSPHRASE_REQUIRED, "pkcs12"]);
  });

  it("returns no key for a -nokeys file", async () => {
    const leaf = leafOf("ec256");
    const got = await readPkcs12(exportP12({ cert: leaf, key: false, password: "pw-nokeys" }), "pw-nokeys");
    expect(got).toEqual({ certificates: [certDer(leaf.certPem)], privateKeys: [] });
  });

  it("reads non-ASCII passwords: UTF-8 for PBKDF2 (AES files), BMPString for the PKCS#12 KDF (MAC, -legacy)", async () => {
    const leaf = leafOf("ec256");
    const password = "pässwörd-Ω-🔑";
    for (const args of [[], ["-legacy"]]) {
      const p12 = exportP12({ cert: leaf, password, args });
      const got = await readPkcs12(p12, password);
      expect(got.certificates).toEqual([certDer(leaf.certPem)]);
      expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
    }
  });

  it("reads a PBES2 key whose PRF is hmacWithSHA224 (forge alone would use SHA-512/224)", async () => {
    const leaf = leafOf("ec256");
    const key = encryptedPkcs8(leaf.keyPem, "pw-224", ["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA224"]);
    const p12 = buildPfx([certBag(certDer(leaf.certPem)), shroudedKeyBag(key)], { password: "pw-224" });
    const got = await readPkcs12(p12, "pw-224");
    expect(got.privateKeys).toEqual([keyDer(leaf.keyPem)]);
  });

  it("returns key buffers the caller owns and can zero", async () => {
    const leaf = leafOf("ec256");
    const got = await readPkcs12(exportP12({ cert: leaf, password: "pw-zero" }), "pw-zero");
    const key = got.privateKeys[0];
    expect(key.byteOffset).toBe(0);
    expect(key.buffer.byteLength).toBe(key.length); // its own ArrayBuffer, not a slice of a shared pool
    key.fill(0);
    expect(key).toEqual(Buffer.alloc(key.length));
  });
});

describe("readPkcs12: passwords", () => {
  it("PASSPHRASE_REQUIRED (field pkcs12) without a passphrase, WRONG_PASSPHRASE (field passphrase) with a wrong one", async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-right" });
    const missing = await refusal(p12, "");
    expect(missing.reason).toBe(X509Reason.PASSPHRASE_REQUIRED);
    expect(missing.metadata.field).toBe("pkcs12");
    expect(missing.message).toBe("pkcs12: the PKCS#12 file is protected by a password; send it in passphrase");
    const wrong = await refusal(p12, "pw-wrong");
    expect(wrong.reason).toBe(X509Reason.WRONG_PASSPHRASE);
    expect(wrong.metadata.field).toBe("passphrase");
    expect(wrong.message).toMatch(/^passphrase: it does not open the PKCS#12 file/);
    expect((wrong.cause as Error).message).toMatch(/MAC/);
  });

  it("with the MAC password but another encryption password (-twopass): INVALID_PKCS12, not a password error", async () => {
    const leaf = leafOf("ec256");
    const key = encryptedPkcs8(leaf.keyPem, "pw-encryption", ["-v2", "aes-256-cbc"]);
    const p12 = buildPfx([certBag(certDer(leaf.certPem)), shroudedKeyBag(key)], { password: "pw-mac" });
    const e = await refusal(p12, "pw-mac");
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.message).toMatch(/integrity check but does not decrypt.*-twopass/);
    const other = await refusal(p12, "pw-encryption");
    expect(other.reason).toBe(X509Reason.WRONG_PASSPHRASE);
  });
});

describe("readPkcs12: refusals", () => {
  it("refuses what is not a PFX, saying what it is", async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-x" });
    const cases: [string, Buffer, RegExp][] = [
      ["empty", Buffer.alloc(0), /the file is empty/],
      ["random bytes", Buffer.concat([Buffer.from([0x17]), randomBytes(300)]), /not a PKCS#12 \(\.pfx\/\.p12\) file \(not DER/],
      ["PEM text", Buffer.from(`${leaf.certPem}${leaf.keyPem}`), /it is PEM text \(a "CERTIFICATE" block\).*put PEM in the certificate, private_key and intermediates fields/],
      ["base64 of the file", Buffer.from(p12.toString("base64").replace(/.{64}/g, "$&\n")), /it is base64 text/],
      ["a DER certificate", certDer(leaf.certPem), /it is a single DER certificate.*send it in certificate_der/],
      ["a DER PKCS#8 key", keyDer(leaf.keyPem), /it is a single DER private key.*private_key_der/],
      ["an encrypted DER key", encryptedPkcs8(leaf.keyPem, "pw-x", ["-v2", "aes-256-cbc"]), /encrypted DER private key/],
      ["a DER PKCS#7 bundle", opensslFiles(["crl2pkcs7", "-nocrl", "-certfile", "c.pem", "-outform", "DER", "-out", "b.p7b"], { "c.pem": leaf.certPem }, "b.p7b"), /PKCS#7 certificate bundle/],
      ["a truncated file", p12.subarray(0, p12.length - 40), /not a valid PKCS#12 .*damaged or truncated/],
      ["trailing bytes", Buffer.concat([p12, Buffer.from("junk")]), /not a valid PKCS#12 .*damaged or truncated/],
    ];
    for (const [name, bytes, message] of cases) {
      const e = await refusal(bytes, "pw-x");
      expect([name, e.reason, e.metadata.field]).toEqual([name, X509Reason.INVALID_PKCS12, "pkcs12"]);
      expect(e.message, name).toMatch(message);
      expect(e.message, name).toMatch(/send the \.pfx\/\.p12 file itself|export it again/);
    }
  });

  it.each<[string, string[], string, boolean]>([
    ["the MAC (-iter 2000000)", ["-iter", "2000000"], "2000000", true],
    ["PBKDF2 (-iter 2000000 -nomaciter)", ["-iter", "2000000", "-nomaciter"], "2000000", false],
    ["the PKCS#12 PBE (-legacy -iter 1500000 -nomaciter)", ["-legacy", "-iter", "1500000", "-nomaciter"], "1500000", false],
  ])("refuses an iteration count above the cap in %s before doing the work", async (_name, args, count, inMac) => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-iter", args });
    const e = await refusal(p12, "pw-iter");
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.metadata).toEqual({ field: "pkcs12", iterations: count, limit: String(MAX_PKCS12_ITERATIONS) });
    expect(e.message).toContain(`${count} key-derivation iterations, more than the limit of ${MAX_PKCS12_ITERATIONS}`);
    // A wrong passphrase: a costly MAC is refused before it is computed; a cheap (1-iteration) MAC fails first.
    const wrong = await refusal(p12, "pw-wrong");
    expect(wrong.reason).toBe(inMac ? X509Reason.INVALID_PKCS12 : X509Reason.WRONG_PASSPHRASE);
  });

  it("refuses a file without a certificate (-nocerts)", async () => {
    const leaf = leafOf("ec256");
    const p12 = opensslFiles(
      ["pkcs12", "-export", "-nocerts", "-inkey", "key.pem", "-passout", "pass:pw-nocerts", "-out", "out.p12"],
      { "key.pem": leaf.keyPem },
      "out.p12",
    );
    const e = await refusal(p12, "pw-nocerts");
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.message).toMatch(/^pkcs12: the file holds no certificate/);
  });

  it("refuses a file with two private keys (built: openssl writes one key per file)", async () => {
    const a = leafOf("ec256");
    const b = leafOf("ed25519");
    const p12 = buildPfx([certBag(certDer(a.certPem)), keyBag(keyDer(a.keyPem)), keyBag(keyDer(b.keyPem))], { password: "pw-two" });
    const e = await refusal(p12, "pw-two");
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.message).toBe("pkcs12: the file holds 2 private keys; export only one certificate's key");
    expect(e.metadata.count).toBe("2");
  });

  it("refuses another PFX version and public-key integrity mode", async () => {
    const leaf = leafOf("ec256");
    const v2 = await refusal(buildPfx([certBag(certDer(leaf.certPem))], undefined, 2), "pw");
    expect([v2.reason, v2.message]).toEqual([X509Reason.INVALID_PKCS12, expect.stringMatching(/^pkcs12: the file is not PKCS#12 version 3/)]);
    // authSafe as PKCS#7 signedData (RFC 7292 §3.1 public-key integrity mode); the content does not matter.
    const signed = seq(integer(3), seq(oid("1.2.840.113549.1.7.2"), explicit0(seq(integer(1)))));
    const e = await refusal(signed, "pw");
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.message).toMatch(/public-key integrity mode \(signedData \(OID 1\.2\.840\.113549\.1\.7\.2\)\)/);
  });

  /** An EC leaf exported by openssl with extra options, or bundled by buildPfx with a key from `openssl pkcs8`. */
  const exported = (args: string[]) => () => exportP12({ cert: leafOf("ec256"), password: "pw-alg", args });
  const withKey = (pkcs8Args: string[]) => () => {
    const leaf = leafOf("ec256");
    const key = encryptedPkcs8(leaf.keyPem, "pw-alg", pkcs8Args);
    return buildPfx([certBag(certDer(leaf.certPem)), shroudedKeyBag(key)], { password: "pw-alg" });
  };
  it.each<[string, () => Buffer, string, RegExp]>([
    ["-keypbe camellia-256-cbc", exported(["-keypbe", "camellia-256-cbc"]), "1.2.392.200011.61.1.1.1.4", /encrypted with Camellia-256-CBC/],
    ["-certpbe aria-256-cbc", exported(["-certpbe", "aria-256-cbc"]), "1.2.410.200046.1.1.12", /encrypted with ARIA-256-CBC/],
    ["-legacy -keypbe PBE-SHA1-RC2-128", exported(["-legacy", "-keypbe", "PBE-SHA1-RC2-128"]), "1.2.840.113549.1.12.1.5", /encrypted with pbeWithSHAAnd128BitRC2-CBC/],
    ["-legacy -keypbe PBE-SHA1-RC4-128", exported(["-legacy", "-keypbe", "PBE-SHA1-RC4-128"]), "1.2.840.113549.1.12.1.1", /encrypted with pbeWithSHAAnd128BitRC4/],
    ["-macalg sha3-256", exported(["-macalg", "sha3-256"]), "2.16.840.1.101.3.4.2.8", /integrity check \(MAC\) uses SHA3-256/],
    ["a PBES2 key with PRF hmacWithSHA512-256", withKey(["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA512-256"]), "1.2.840.113549.2.13", /encrypted with hmacWithSHA512-256/],
    ["a key encrypted with scrypt", withKey(["-scrypt"]), "1.3.6.1.4.1.11591.4.11", /encrypted with scrypt/],
    ["a secretBag", () => buildPfx([certBag(certDer(leafOf("ec256").certPem)), secretBag()], { password: "pw-alg" }), OIDS.secretBag, /holds a secretBag \(OID/],
  ])("refuses %s, naming the algorithm and how to re-export", async (_name, make, algorithm, message) => {
    const e = await refusal(make(), "pw-alg");
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.metadata).toEqual({ field: "pkcs12", algorithm });
    expect(e.message).toMatch(message);
    expect(e.message).toContain(`(OID ${algorithm})`);
    expect(e.message).toContain("openssl pkcs12 -export");
  });
});

describe("readPkcs12: the worker", () => {
  it("keeps the event loop free while a costly file is read", async () => {
    const leaf = leafOf("ec256");
    // 300,000 iterations: the MAC key alone is 300,000 SHA-256 rounds in pure JavaScript.
    const p12 = exportP12({ cert: leaf, password: "pw-slow", args: ["-iter", "300000"] });
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 1);
    try {
      const reading = readPkcs12(p12, "pw-slow");
      // If decoding ran on this thread, the (synchronous) key derivation would finish before any tick.
      const first = await Promise.race([
        reading.then(() => "read"),
        new Promise<string>((resolve) => {
          const poll = setInterval(() => {
            if (ticks >= 20) {
              clearInterval(poll);
              resolve("ticks");
            }
          }, 1);
        }),
      ]);
      const t0 = performance.now();
      const got = await reading;
      console.info(`readPkcs12 300,000 iterations: done ${(performance.now() - t0).toFixed(0)} ms after 20 ticks; ${ticks} ticks in all`);
      expect(first).toBe("ticks");
      expect(ticks).toBeGreaterThan(20);
      expect(got.certificates).toEqual([certDer(leaf.certPem)]);
    } finally {
      clearInterval(timer);
    }
  });

  it(`runs at most ${MAX_PKCS12_WORKERS} workers at once; the others wait`, async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-pool" });
    expect(pkcs12WorkerStats()).toEqual({ active: 0, waiting: 0 });
    const reads = Array.from({ length: MAX_PKCS12_WORKERS + 2 }, () => readPkcs12(p12, "pw-pool"));
    expect(pkcs12WorkerStats()).toEqual({ active: MAX_PKCS12_WORKERS, waiting: 2 });
    const results = await Promise.all(reads);
    for (const r of results) expect(r.certificates).toEqual([certDer(leaf.certPem)]);
    expect(pkcs12WorkerStats()).toEqual({ active: 0, waiting: 0 });
  });

  it("refuses callers beyond the bounded queue with RESOURCE_EXHAUSTED SERVER_BUSY, and serves the others", async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-busy" });
    const reads = Array.from({ length: MAX_PKCS12_WORKERS + MAX_WAITING_TASKS }, () => readPkcs12(p12, "pw-busy"));
    expect(pkcs12WorkerStats()).toEqual({ active: MAX_PKCS12_WORKERS, waiting: MAX_WAITING_TASKS });
    const refused = await readPkcs12(p12, "pw-busy").then(
      () => undefined,
      (err: unknown) => err as DomainError,
    );
    expect([refused?.kind, refused?.reason, refused?.metadata.limit]).toEqual(["RESOURCE_EXHAUSTED", "SERVER_BUSY", String(MAX_WAITING_TASKS)]);
    for (const r of await Promise.all(reads)) expect(r.certificates).toEqual([certDer(leaf.certPem)]);
  });

  it("drops a cancelled caller from the queue at once, and stops a cancelled read that is running", async () => {
    const leaf = leafOf("ec256");
    const slow = exportP12({ cert: leaf, password: "pw-slow", args: ["-iter", "300000"] });
    const running = Array.from({ length: MAX_PKCS12_WORKERS }, () => new AbortController());
    const reads = running.map((c) => readPkcs12(slow, "pw-slow", { signal: c.signal }).then(() => "read", (e: DomainError) => e.reason));
    const queued = new AbortController();
    const waiting = readPkcs12(slow, "pw-slow", { signal: queued.signal }).then(() => "read", (e: DomainError) => e.reason);
    expect(pkcs12WorkerStats()).toEqual({ active: MAX_PKCS12_WORKERS, waiting: 1 });
    queued.abort();
    expect(await waiting).toBe("CANCELLED");
    expect(pkcs12WorkerStats().waiting).toBe(0);
    running[0].abort();
    expect(await reads[0]).toBe("CANCELLED");
    expect(await Promise.all(reads.slice(1))).toEqual(Array(MAX_PKCS12_WORKERS - 1).fill("read"));
    expect(pkcs12WorkerStats()).toEqual({ active: 0, waiting: 0 });
  });

  it("terminates a worker that takes too long and frees its slot", async () => {
    const leaf = leafOf("ec256");
    const p12 = exportP12({ cert: leaf, password: "pw-slow", args: ["-iter", "300000"] });
    const e = await refusal(p12, "pw-slow", { timeoutMs: 20 });
    expect(e.reason).toBe(X509Reason.INVALID_PKCS12);
    expect(e.message).toMatch(/^pkcs12: reading the file took too long/);
    expect(e.metadata.timeoutMs).toBe("20");
    expect(pkcs12WorkerStats()).toEqual({ active: 0, waiting: 0 });
  });
});

const PYCA = join(REAL_FIXTURES, "pyca-cryptography-vectors/pkcs12");

describe.skipIf(!haveRealFixtures)("readPkcs12: pyca/cryptography vectors", () => {
  /** Passwords of the vectors (pyca tests/hazmat/primitives/test_pkcs12.py). */
  const passwordOf = (name: string) => (/no-pwd|no-password/.test(name) ? "" : /^(cert-|no-cert-key-)/.test(name) ? "cryptography" : "password");
  const files = haveRealFixtures ? readdirSync(PYCA).filter((f) => f.endsWith(".p12")).sort() : [];

  it.each(files)("%s reads as openssl reads it", async (name) => {
    const p12 = readFileSync(join(PYCA, name));
    const password = passwordOf(name);
    const expected = opensslReads(p12, password);
    if (expected.certificates.length === 0) {
      const e = await refusal(p12, password);
      expect([e.reason, e.message]).toEqual([X509Reason.INVALID_PKCS12, expect.stringMatching(/holds no certificate/)]);
      return;
    }
    const got = await readPkcs12(p12, password);
    expect(got.certificates).toEqual(expected.certificates);
    expect(got.privateKeys.map(canonicalKey)).toEqual(expected.privateKeys.map(canonicalKey));
    for (const k of got.privateKeys) {
      const spki = createPublicKey(createPrivateKey({ key: k, format: "der", type: "pkcs8" })).export({ type: "spki", format: "der" });
      expect(got.certificates.map((c) => new X509Certificate(c).publicKey.export({ type: "spki", format: "der" }).toString("hex"))).toContain(spki.toString("hex"));
    }
  });
});
