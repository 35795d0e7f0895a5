/**
 * Real-world certificates: every leaf of C2SP x509-limbo (many deliberately malformed) and every Mozilla root.
 * Each must either import with metadata that agrees with node:crypto, or be refused with an
 * InvalidArgumentError; any other exception is a bug.
 */
import { X509Certificate } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { haveRealFixtures, REAL_FIXTURES } from "../helpers/fixtures.js";
import { openssl } from "../helpers/openssl.js";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import { parseImport, splitPemBlocks, type ParsedImport } from "../../src/x509/index.js";

const REAL = REAL_FIXTURES;
const LIMBO = join(REAL, "x509-limbo");
const MOZILLA = join(REAL, "debian-ca-certificates-mozilla");

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** One certificate-only import per leaf-ish file; multi-certificate asset files contribute their first block. */
function leafCases(): { name: string; pem: string }[] {
  const files = [
    ...walk(LIMBO).filter((f) => basename(f) === "peer.pem" || (dirname(f).endsWith("assets") && f.endsWith(".pem"))),
    ...walk(MOZILLA).filter((f) => f.endsWith(".crt")),
  ].sort();
  return files.map((f) => {
    const text = readFileSync(f, "utf8");
    const first = splitPemBlocks(text).find((b) => b.label === "CERTIFICATE");
    return { name: f.slice(REAL.length + 1), pem: first?.pem ?? text };
  });
}

/** The signed integer a two's-complement hex string encodes. */
function signedValue(hex: string): bigint {
  const v = BigInt(`0x${hex}`);
  return parseInt(hex[0], 16) >= 8 ? v - (1n << BigInt(hex.length * 4)) : v;
}

/** Runs an import and sorts the outcome into ok / refused; anything else fails the test. */
function attempt(fn: () => ParsedImport): { ok: ParsedImport } | { refused: InvalidArgumentError } {
  try {
    return { ok: fn() };
  } catch (err) {
    if (err instanceof InvalidArgumentError) return { refused: err };
    throw err;
  }
}

const cases = haveRealFixtures ? leafCases() : [];

describe.skipIf(!haveRealFixtures)("real certificates, certificate-only import", () => {
  it("finds the fixture sets", () => {
    expect(cases.length).toBeGreaterThan(250);
  });

  it("imports each one consistently with node:crypto or refuses it with InvalidArgumentError", () => {
    const outcomes: Record<string, number> = {};
    for (const { name, pem } of cases) {
      const result = attempt(() => parseImport({ certificate: pem, privateKey: "", intermediates: "" }));
      if ("refused" in result) {
        outcomes[result.refused.reason] = (outcomes[result.refused.reason] ?? 0) + 1;
        expect(result.refused.metadata.field, name).toBe("certificate");
        continue;
      }
      outcomes.OK = (outcomes.OK ?? 0) + 1;
      const node = new X509Certificate(pem);
      const meta = result.ok.metadata;
      expect(meta.sha256Fingerprint, name).toBe(node.fingerprint256.replace(/:/g, "").toLowerCase());
      const nodeSerial = node.serialNumber.startsWith("-") ? -BigInt(`0x${node.serialNumber.slice(1)}`) : BigInt(`0x${node.serialNumber}`);
      expect(signedValue(meta.serialNumber), name).toBe(nodeSerial);
      expect(meta.serialNumber, name).toMatch(/^([0-9a-f]{2})+$/);
      expect(meta.notAfter.getTime(), name).toBe(Date.parse(node.validTo));
      expect(meta.notBefore.getTime(), name).toBe(Date.parse(node.validFrom));
      expect(result.ok.material.certificatePem, name).toBe(pem);
      if (meta.keyAlgorithm === "RSA") expect(meta.keySize, name).toBe(node.publicKey.asymmetricKeyDetails?.modulusLength);
    }
    // Most are fine; the malformed limbo cases and sub-2048-bit roots are refused.
    expect(outcomes.OK).toBeGreaterThan(250);
  });

  it("keeps the two's-complement serial of a negative-serial certificate", () => {
    const pem = readFileSync(join(LIMBO, "assets/negative_serial.pem"), "utf8");
    const meta = parseImport({ certificate: pem, privateKey: "", intermediates: "" }).metadata;
    expect(new X509Certificate(pem).serialNumber.startsWith("-")).toBe(true);
    expect(signedValue(meta.serialNumber)).toBeLessThan(0n);
  });

  it("accepts an EC key with explicit curve parameters equal to P-256's (issue 6: explicit-parameter curves)", () => {
    const pem = readFileSync(join(LIMBO, "assets/explicit_curve_leaf.pem"), "utf8");
    // openssl prints the parameters themselves (no "NIST CURVE" line) for an explicit-parameter key.
    expect(openssl(["x509", "-noout", "-text"], { input: pem })).toMatch(/Field Type: prime-field/);
    const meta = parseImport({ certificate: pem, privateKey: "", intermediates: "" }).metadata;
    expect([meta.keyAlgorithm, meta.keyCurve]).toEqual(["EC", "P-256"]);
  });

  it("imports the cryptography.io bundle, and refuses its copy whose leaf signature algorithms disagree", () => {
    // Despite its name, the _mismatched file differs only in the leaf's outer signatureAlgorithm (sha512 vs the
    // TBS's sha256, RFC 5280 §4.1.1.2 requires them equal): the leaf's signature no longer verifies under R3.
    const split = (f: string) => splitPemBlocks(readFileSync(join(LIMBO, "assets", f), "utf8")).map((b) => b.pem);
    const [leaf, r3, root] = split("cryptography.io.pem");
    const ok = parseImport({ certificate: leaf, privateKey: "", intermediates: root + r3 });
    expect(ok.material.intermediatesPem).toBe(r3 + root);
    expect(ok.metadata.sans.dns).toContain("cryptography.io");
    const [badLeaf, badR3, badRoot] = split("cryptography.io_mismatched.pem");
    const bad = attempt(() => parseImport({ certificate: badLeaf, privateKey: "", intermediates: badR3 + badRoot }));
    // R3 is there under the leaf's issuer name; the signature is what fails, and that is what is reported (issue 12).
    expect("refused" in bad && bad.refused.reason).toBe("SIGNATURE_INVALID");
  });
});

describe.skipIf(!haveRealFixtures)("real chains from x509-limbo (leaf + untrusted intermediates)", () => {
  const dirs = (haveRealFixtures ? walk(LIMBO) : [])
    .filter((f) => basename(f) === "peer.pem")
    .map(dirname)
    .sort();

  it("imports every online chain, in issuing order", () => {
    const online = dirs.filter((d) => d.includes("online-2026"));
    expect(online.length).toBeGreaterThanOrEqual(10);
    for (const dir of online) {
      const intermediates = readFileSync(join(dir, "intermediates.pem"), "utf8");
      const result = parseImport({ certificate: readFileSync(join(dir, "peer.pem"), "utf8"), privateKey: "", intermediates });
      const blocks = splitPemBlocks(intermediates);
      expect(result.intermediateCount, dir).toBe(blocks.length);
      // The first stored intermediate issued the leaf.
      const leaf = new X509Certificate(result.material.certificatePem);
      const first = new X509Certificate(splitPemBlocks(result.material.intermediatesPem)[0].pem);
      expect(leaf.checkIssued(first) && leaf.verify(first.publicKey), dir).toBe(true);
    }
  });

  it("imports or refuses (InvalidArgumentError only) every test-case chain", () => {
    for (const dir of dirs) {
      const result = attempt(() =>
        parseImport({
          certificate: readFileSync(join(dir, "peer.pem"), "utf8"),
          privateKey: "",
          intermediates: readFileSync(join(dir, "intermediates.pem"), "utf8"),
        }),
      );
      if ("ok" in result) {
        expect(result.ok.material.intermediatesPem.match(/BEGIN CERTIFICATE/g)?.length ?? 0, dir).toBe(result.ok.intermediateCount);
      }
    }
  });
});
