/**
 * parseImport against certificates and keys made by the openssl CLI; expected values come from openssl itself
 * (test/helpers/openssl.ts certFacts), not from constants.
 */
import { join } from "node:path";
import { haveRealFixtures, REAL_FIXTURES } from "../helpers/fixtures.js";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import {
  MAX_CERTIFICATE_BYTES,
  MAX_INTERMEDIATES,
  MAX_INTERMEDIATES_BYTES,
  MAX_PRIVATE_KEY_BYTES,
  parseImport,
  type ImportInput,
} from "../../src/x509/index.js";
import {
  certFacts,
  encryptKey,
  exportPkcs12,
  makeCa,
  makeChain,
  makeKey,
  makeLeaf,
  openssl,
  pkcs12ToText,
  type KeyType,
} from "../helpers/openssl.js";

const FIXTURES = join(REAL_FIXTURES, "pyca-cryptography-vectors/asymmetric");

function input(partial: Partial<ImportInput>): ImportInput {
  return { certificate: "", privateKey: "", intermediates: "", ...partial };
}

/** Runs parseImport, expects an InvalidArgumentError, checks it carries no PEM body of the input. */
function refusal(partial: Partial<ImportInput>): InvalidArgumentError {
  const inp = input(partial);
  try {
    parseImport(inp);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    const e = err as InvalidArgumentError;
    expect(e.fieldViolations).toHaveLength(1);
    expect(e.fieldViolations[0].field).toBe(e.metadata.field);
    expect(e.reason).toMatch(/^[A-Z][A-Z0-9_]+$/);
    // No base64 body line (nor a 16-character piece of one) of any input may appear in the message.
    const bodies = Object.values(inp)
      .join("\n")
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => /^[A-Za-z0-9+/=]{16,}$/.test(l));
    for (const line of bodies) expect(e.message).not.toContain(line.slice(0, 16));
    return e;
  }
  throw new Error("expected parseImport to refuse");
}

/** openssl -serial prints the magnitude; our serial is the DER content bytes, so a high first byte gets 00. */
function derSerial(opensslSerial: string): string {
  return parseInt(opensslSerial[0], 16) >= 8 ? `00${opensslSerial}` : opensslSerial;
}

const HAPPY: { keyType: KeyType; alg: string; size: number; curve: string }[] = [
  { keyType: "rsa2048", alg: "RSA", size: 2048, curve: "" },
  { keyType: "ec256", alg: "EC", size: 0, curve: "P-256" },
  { keyType: "ec384", alg: "EC", size: 0, curve: "P-384" },
  { keyType: "ec521", alg: "EC", size: 0, curve: "P-521" },
  { keyType: "ed25519", alg: "ED25519", size: 0, curve: "" },
  { keyType: "ed448", alg: "ED448", size: 0, curve: "" },
];

describe("parseImport happy paths", () => {
  it.each(HAPPY)("imports a $keyType leaf with its PKCS#8 key and intermediate", ({ keyType, alg, size, curve }) => {
    const chain = makeChain({ keyType, name: `happy-${keyType}`, cn: `${keyType}.example`, sans: { dns: [`${keyType}.example`] } });
    const result = parseImport(
      input({ certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") }),
    );
    const facts = certFacts(chain.leafPem);
    expect(result.metadata).toEqual({
      subjectCommonName: `${keyType}.example`,
      subject: facts.subject,
      issuer: facts.issuer,
      serialNumber: derSerial(facts.serial),
      notBefore: facts.notBefore,
      notAfter: facts.notAfter,
      sans: { dns: [`${keyType}.example`], ip: [], email: [], uri: [], directoryName: [], registeredId: [], otherName: [] },
      keyAlgorithm: alg,
      keySize: size,
      keyCurve: curve,
      sha256Fingerprint: facts.sha256Fingerprint,
      selfSigned: false,
    });
    expect(result.material).toEqual({
      certificatePem: chain.leafPem,
      privateKeyPem: chain.leafKeyPem,
      intermediatesPem: chain.intermediatesPem[0],
    });
    expect(result.hasPrivateKey).toBe(true);
    expect(result.intermediateCount).toBe(1);
  });

  it("imports a certificate alone (self-signed) and reports selfSigned", () => {
    const leaf = makeLeaf({ keyType: "ec256", subject: "/CN=self.example/O=Self", days: 400 });
    const result = parseImport(input({ certificate: leaf.certPem }));
    const facts = certFacts(leaf.certPem);
    expect(result.metadata.selfSigned).toBe(true);
    expect(result.metadata.subject).toBe(facts.subject);
    expect(result.metadata.issuer).toBe(facts.subject);
    expect(result.metadata.notAfter).toEqual(facts.notAfter);
    expect(result.metadata.notAfter.getTime() - result.metadata.notBefore.getTime()).toBe(400 * 86_400_000);
    expect(result.material).toEqual({ certificatePem: leaf.certPem, privateKeyPem: "", intermediatesPem: "" });
    expect(result.hasPrivateKey).toBe(false);
    expect(result.intermediateCount).toBe(0);
  });

  it("formats the DN as RFC 4514, escaping like openssl -nameopt RFC2253", () => {
    const leaf = makeLeaf({ subject: "/C=US/O=Example\\, Inc.; \"Q\"/OU=a\\+b <c>/CN=#hash test ", keyType: "ec256" });
    const meta = parseImport(input({ certificate: leaf.certPem })).metadata;
    expect(meta.subject).toBe(certFacts(leaf.certPem).subject);
    expect(meta.subject).toBe('CN=\\#hash test\\ ,OU=a\\+b \\<c\\>,O=Example\\, Inc.\\; \\"Q\\",C=US');
    expect(meta.subjectCommonName).toBe("#hash test ");
  });

  it("reports an empty subjectCommonName when the subject has no CN", () => {
    const leaf = makeLeaf({ subject: "/O=No CN Org", keyType: "ec256", sans: { dns: ["nocn.example"] } });
    const meta = parseImport(input({ certificate: leaf.certPem })).metadata;
    expect(meta.subjectCommonName).toBe("");
    expect(meta.subject).toBe("O=No CN Org");
  });

  it("splits SANs of all four types, IPv6 in RFC 5952 form", () => {
    const chain = makeChain({
      name: "sans",
      sans: {
        dns: ["a.example", "*.b.example"],
        ip: ["192.0.2.1", "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8:0:1:0:0:0:0", "::ffff:198.51.100.7"],
        email: ["ops@example.com"],
        uri: ["https://example.com/path?a=1,b=2", "spiffe://example.org/ns/default/sa/web"],
      },
    });
    const { sans } = parseImport(input({ certificate: chain.leafPem })).metadata;
    expect(sans).toEqual({
      dns: ["a.example", "*.b.example"],
      ip: ["192.0.2.1", "2001:db8::1", "2001:db8:0:1::", "::ffff:198.51.100.7"],
      email: ["ops@example.com"],
      uri: ["https://example.com/path?a=1,b=2", "spiffe://example.org/ns/default/sa/web"],
      directoryName: [],
      registeredId: [],
      otherName: [],
    });
  });

  it.each([
    ["PKCS#1", "rsa2048", /BEGIN RSA PRIVATE KEY/],
    ["SEC1", "ec256", /BEGIN EC PRIVATE KEY/],
  ] as const)("accepts a %s key and re-encodes it as PKCS#8", (_, keyType, label) => {
    const chain = makeChain({ keyType, name: `legacy-${keyType}` });
    expect(chain.leafKeyPkcs1OrSec1Pem).toMatch(label);
    const result = parseImport(input({ certificate: chain.leafPem, privateKey: chain.leafKeyPkcs1OrSec1Pem }));
    expect(result.material.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(result.material.privateKeyPem).toBe(chain.leafKeyPem);
  });

  it("accepts the EC PARAMETERS block that openssl ecparam -genkey prints before a SEC1 key", () => {
    const chain = makeChain({ keyType: "ec256", name: "ecparams" });
    const params = openssl(["ecparam", "-name", "prime256v1"]);
    expect(params).toMatch(/BEGIN EC PARAMETERS/);
    const result = parseImport(input({ certificate: chain.leafPem, privateKey: params + chain.leafKeyPkcs1OrSec1Pem }));
    expect(result.material.privateKeyPem).toBe(chain.leafKeyPem);
  });

  it("tolerates CRLF, indentation and the text openssl pkcs12 prints around blocks", () => {
    const chain = makeChain({ keyType: "rsa2048", depth: 2, name: "p12" });
    const p12 = exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, caPems: chain.intermediatesPem, password: "pw" });
    const [leafText, casText, keyText] = (["leaf", "cas", "key"] as const).map((part) => pkcs12ToText(p12, part, "pw"));
    expect(leafText).toMatch(/Bag Attributes[\s\S]*subject=/);
    expect(keyText).toMatch(/Key Attributes/);
    const crlf = (s: string) => `  \r\n${s.replace(/\n/g, "\r\n").replace(/^-----/gm, "   -----")}\r\n\r\n  `;
    const result = parseImport({ certificate: crlf(leafText), privateKey: crlf(keyText), intermediates: crlf(casText) });
    expect(result.material).toEqual({
      certificatePem: chain.leafPem,
      privateKeyPem: chain.leafKeyPem,
      intermediatesPem: chain.intermediatesPem.join(""),
    });
    expect(result.intermediateCount).toBe(2);
  });
});

describe("parseImport intermediates", () => {
  const chain = makeChain({ keyType: "ec256", depth: 3, name: "order" });
  const [int1, int2, int3] = chain.intermediatesPem;

  it("reorders shuffled intermediates into issuing order, root included", () => {
    const result = parseImport(
      input({ certificate: chain.leafPem, intermediates: [int3, chain.rootPem, int1, int2].join("\n\n") }),
    );
    expect(result.material.intermediatesPem).toBe([int1, int2, int3, chain.rootPem].join(""));
    expect(result.intermediateCount).toBe(4);
  });

  it("keeps an already ordered bundle as is", () => {
    const result = parseImport(input({ certificate: chain.leafPem, intermediates: [int1, int2, int3].join("") }));
    expect(result.material.intermediatesPem).toBe([int1, int2, int3].join(""));
  });

  it("drops duplicates (even re-wrapped with CRLF) and copies of the leaf silently", () => {
    const result = parseImport(
      input({
        certificate: chain.leafPem,
        intermediates: [int2, chain.leafPem, int1, int2.replace(/\n/g, "\r\n"), int1, int3].join(""),
      }),
    );
    expect(result.material.intermediatesPem).toBe([int1, int2, int3].join(""));
    expect(result.intermediateCount).toBe(3);
  });

  it("returns no intermediates when the bundle holds only the leaf", () => {
    const result = parseImport(input({ certificate: chain.leafPem, intermediates: chain.leafPem }));
    expect(result.material.intermediatesPem).toBe("");
    expect(result.intermediateCount).toBe(0);
  });

  it("names an unrelated intermediate by position and subject", () => {
    const other = makeCa({ subject: "/CN=Unrelated CA/O=Elsewhere" });
    const err = refusal({ certificate: chain.leafPem, intermediates: [int1, other.certPem, int2, int3].join("") });
    expect(err.reason).toBe("INTERMEDIATE_NOT_IN_CHAIN");
    expect(err.metadata.field).toBe("intermediates");
    expect(err.metadata.position).toBe("2");
    expect(err.message).toContain("certificate 2");
    expect(err.message).toContain(`"${certFacts(other.certPem).subject}"`);
  });

  it("refuses a chain with a gap, naming the intermediate that cannot be reached", () => {
    const err = refusal({ certificate: chain.leafPem, intermediates: [int1, int3].join("") });
    expect(err.reason).toBe("INTERMEDIATE_NOT_IN_CHAIN");
    expect(err.metadata.position).toBe("2");
    expect(err.message).toContain("CN=order Intermediate 3");
  });

  it("refuses an intermediate whose name matches but whose key did not sign (signature is checked)", () => {
    // Same subject as the leaf's issuer but a different key: the names link, the signature does not.
    const impostor = makeCa({ subject: "/CN=order Intermediate 1/O=Test", keySlot: "impostor", issuer: chain.certs[2] });
    expect(certFacts(impostor.certPem).subject).toBe(certFacts(chain.leafPem).issuer);
    const err = refusal({ certificate: chain.leafPem, intermediates: impostor.certPem });
    // Reported as what it is (issue 12): the issuer is not missing, its signature does not verify.
    expect(err.reason).toBe("SIGNATURE_INVALID");
    expect(err.metadata).toMatchObject({
      field: "intermediates",
      position: "1",
      sha256_fingerprint: certFacts(chain.leafPem).sha256Fingerprint,
      issuer_sha256_fingerprint: certFacts(impostor.certPem).sha256Fingerprint,
    });
    expect(err.message).not.toContain("missing");
  });

  it("reports a bad signature higher up the chain, naming the last certificate that links", () => {
    // leaf <- Intermediate 1 links; the impostor has Intermediate 2's name (Intermediate 1's issuer) but not its key.
    const impostor = makeCa({ subject: "/CN=order Intermediate 2/O=Test", keySlot: "impostor-2", issuer: chain.certs[3] });
    const err = refusal({ certificate: chain.leafPem, intermediates: int1 + impostor.certPem });
    expect(err.reason).toBe("SIGNATURE_INVALID");
    expect(err.metadata.subject).toBe(certFacts(int1).subject);
  });

  it("keeps both copies of a cross-signed root (same subject and key), backtracking if needed", () => {
    // The root re-issued by another CA: the cross-signed copy's key also verifies the self-signed root, so
    // int1 -> root -> cross-signed root uses every certificate; trying the cross-signed copy first dead-ends.
    const rootCert = chain.certs[chain.certs.length - 1];
    const otherRoot = makeCa({ subject: "/CN=Other Root/O=Test" });
    const cross = makeCa({ subject: "/CN=order Root CA/O=Test", key: rootCert.key, issuer: otherRoot });
    const result = parseImport(
      input({ certificate: chain.leafPem, intermediates: [int3, cross.certPem, int2, chain.rootPem, int1].join("") }),
    );
    expect(result.material.intermediatesPem).toBe([int1, int2, int3, chain.rootPem, cross.certPem].join(""));
  });

  it(`refuses more than ${MAX_INTERMEDIATES} distinct intermediates, but not many duplicates`, () => {
    const many = Array.from({ length: MAX_INTERMEDIATES + 1 }, (_, i) => makeCa({ subject: `/CN=Many ${i}` }).certPem);
    const err = refusal({ certificate: chain.leafPem, intermediates: many.join("") });
    expect(err.reason).toBe("TOO_MANY_INTERMEDIATES");
    expect(err.metadata.field).toBe("intermediates");
    const dup = parseImport(input({ certificate: chain.leafPem, intermediates: int1.repeat(50) }));
    expect(dup.intermediateCount).toBe(1);
  });

  it("refuses a block that is not a certificate, by position", () => {
    const err = refusal({ certificate: chain.leafPem, intermediates: int1 + chain.leafKeyPem });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.metadata.field).toBe("intermediates");
    expect(err.message).toContain("PEM block 2");
    expect(err.message).toContain("private_key");
  });

  it("refuses a certificate block that does not decode, by position", () => {
    const garbage = `-----BEGIN CERTIFICATE-----\n${Buffer.from("not a certificate at all").toString("base64")}\n-----END CERTIFICATE-----\n`;
    const err = refusal({ certificate: chain.leafPem, intermediates: int1 + garbage });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.metadata.field).toBe("intermediates");
    expect(err.message).toContain("certificate 2");
  });

  it("refuses text without any PEM block", () => {
    const err = refusal({ certificate: chain.leafPem, intermediates: "see attached" });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.metadata.field).toBe("intermediates");
  });
});

describe("parseImport refusals: certificate", () => {
  it.each(["", "  \r\n\t "])("requires a certificate (%j)", (certificate) => {
    const err = refusal({ certificate });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.metadata.field).toBe("certificate");
    expect(err.message).toMatch(/required/);
  });

  it("refuses text without a PEM block", () => {
    const err = refusal({ certificate: "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.message).toMatch(/BEGIN CERTIFICATE/);
  });

  it("refuses a truncated paste", () => {
    const leaf = makeLeaf({ cn: "trunc.example" });
    const err = refusal({ certificate: leaf.certPem.slice(0, leaf.certPem.length - 30) });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.message).toMatch(/truncated/);
  });

  it("refuses a block that is not an X.509 certificate", () => {
    const key = makeKey("ec256");
    const relabelled = key.pkcs8Pem.replace(/PRIVATE KEY/g, "CERTIFICATE");
    const err = refusal({ certificate: relabelled });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.message).toMatch(/not a valid X\.509 certificate/);
  });

  it("refuses DER with trailing bytes", () => {
    const leaf = makeLeaf({ cn: "trailing.example" });
    const der = Buffer.from(leaf.certPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const padded = Buffer.concat([der, Buffer.from([0, 0])]);
    const err = refusal({ certificate: `-----BEGIN CERTIFICATE-----\n${padded.toString("base64")}\n-----END CERTIFICATE-----\n` });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.message).toMatch(/trailing data/);
  });

  it("takes the key out of a combined PEM in certificate, and refuses a second key there when private_key is set", () => {
    const leaf = makeLeaf({ cn: "keyinside.example" });
    const moved = parseImport(input({ certificate: leaf.certPem + leaf.keyPem }));
    expect(moved.hasPrivateKey).toBe(true);
    expect(moved.repairs.map((r) => r.kind)).toEqual(["PRIVATE_KEY_MOVED"]);
    const err = refusal({ certificate: leaf.certPem + leaf.keyPem, privateKey: leaf.keyPem });
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.message).toMatch(/remove the key from certificate/);
  });

  it("splits a chain pasted into certificate, and refuses two certificates that issued nothing", () => {
    const chain = makeChain({ name: "multi" });
    const split = parseImport(input({ certificate: chain.leafPem + chain.intermediatesPem[0] }));
    expect(split.material.certificatePem).toBe(new X509Certificate(chain.leafPem).toString());
    expect(split.intermediateCount).toBe(1);
    const other = makeLeaf({ cn: "multi-other.example" });
    const err = refusal({ certificate: chain.leafPem + other.certPem });
    expect(err.reason).toBe("MULTIPLE_CERTIFICATES");
    expect(err.metadata.field).toBe("certificate");
    expect(err.message).toMatch(/intermediates/);
  });

  it("refuses RSA keys below 2048 bits as KEY_TOO_WEAK", () => {
    const leaf = makeLeaf({ keyType: "rsa1024", cn: "weak.example" });
    const err = refusal({ certificate: leaf.certPem, privateKey: leaf.keyPem });
    expect(err.reason).toBe("KEY_TOO_WEAK");
    expect(err.metadata.field).toBe("certificate");
    expect(err.message).toMatch(/1024 bits/);
  });

  it.each([
    ["dsa", /DSA/],
    ["x25519", /X25519/],
    ["x448", /X448/],
    ["secp256k1", /secp256k1/],
    ["rsapss", /RSA-PSS/],
  ] as const)("refuses a %s public key as UNSUPPORTED_KEY_ALGORITHM", (keyType, name) => {
    const ca = makeCa({ subject: "/CN=Unsupported Test CA" });
    const leaf = makeLeaf({ keyType, cn: `${keyType}.example`, issuer: ca });
    const err = refusal({ certificate: leaf.certPem });
    expect(err.reason).toBe("UNSUPPORTED_KEY_ALGORITHM");
    expect(err.metadata.field).toBe("certificate");
    expect(err.message).toMatch(name);
  });
});

describe("parseImport refusals: private_key", () => {
  const chain = makeChain({ keyType: "ec256", name: "keys" });

  it("refuses a key of another certificate (same type)", () => {
    const other = makeKey("ec256", "someone else");
    const err = refusal({ certificate: chain.leafPem, privateKey: other.pkcs8Pem });
    expect(err.reason).toBe("PRIVATE_KEY_MISMATCH");
    expect(err.metadata.field).toBe("private_key");
  });

  it("refuses a key of another type, leaving OpenSSL's error queue clean for the next caller", () => {
    const err = refusal({ certificate: chain.leafPem, privateKey: makeKey("rsa2048", "someone else").legacyPem });
    expect(err.reason).toBe("PRIVATE_KEY_MISMATCH");
    // Node 20's KeyObject.equals on different key types leaves an error that breaks the next createPrivateKey.
    expect(createPrivateKey(makeKey("ed25519").pkcs8Pem).asymmetricKeyType).toBe("ed25519");
  });

  it.skipIf(!haveRealFixtures)("refuses an X25519 key (pyca vector) as a mismatch", () => {
    const pem = readFileSync(`${FIXTURES}/X25519/x25519-pkcs8.pem`, "utf8");
    expect(createPrivateKey(pem).asymmetricKeyType).toBe("x25519");
    expect(refusal({ certificate: chain.leafPem, privateKey: pem }).reason).toBe("PRIVATE_KEY_MISMATCH");
  });

  it.each([
    ["PKCS#8 ENCRYPTED PRIVATE KEY", false],
    ["legacy Proc-Type: 4,ENCRYPTED", true],
  ])("refuses an encrypted key (%s) and says how to decrypt it", (_, legacy) => {
    const encrypted = encryptKey(makeKey("ec256", "keys leaf"), { legacy });
    expect(encrypted).toMatch(legacy ? /Proc-Type: 4,ENCRYPTED/ : /BEGIN ENCRYPTED PRIVATE KEY/);
    const err = refusal({ certificate: chain.leafPem, privateKey: encrypted });
    expect(err.reason).toBe("ENCRYPTED_PRIVATE_KEY");
    expect(err.metadata.field).toBe("private_key");
    expect(err.message).toMatch(/openssl pkey/);
  });

  it.each([
    ["PKCS#8 ENCRYPTED PRIVATE KEY", false],
    ["legacy Proc-Type: 4,ENCRYPTED", true],
  ])("never decrypts a key (%s) itself, even with its passphrase: readImport does, in the worker", (_, legacy) => {
    const encrypted = encryptKey(makeKey("ec256", "keys leaf"), { legacy, password: "pw-one-road" });
    let thrown: unknown;
    try {
      parseImport(input({ certificate: chain.leafPem, privateKey: encrypted, passphrase: "pw-one-road" }));
    } catch (err) {
      thrown = err;
    }
    // A caller's bug, not the user's input: a plain Error (INTERNAL), not an InvalidArgumentError.
    expect(thrown).toBeInstanceOf(Error);
    expect(thrown).not.toBeInstanceOf(InvalidArgumentError);
    expect((thrown as Error).message).toBe("private_key: an encrypted key reached parseImport undecrypted; readImport decrypts it first");
  });

  it.each([
    ["text without a block", "my key is secret", /no private key found/],
    ["a certificate", "CERT", /certificate and intermediates fields/],
    ["two keys", "TWO", /2 private keys/],
    ["a certificate under a key label", "BAD", /holds a certificate, not a private key/],
  ])("refuses %s as INVALID_PRIVATE_KEY", (_, what, message) => {
    const privateKey =
      what === "CERT"
        ? chain.leafPem
        : what === "TWO"
          ? chain.leafKeyPem + chain.leafKeyPkcs1OrSec1Pem
          : what === "BAD"
            ? chain.leafPem.replace(/CERTIFICATE/g, "PRIVATE KEY")
            : what;
    const err = refusal({ certificate: chain.leafPem, privateKey });
    expect(err.reason).toBe("INVALID_PRIVATE_KEY");
    expect(err.metadata.field).toBe("private_key");
    expect(err.message).toMatch(message);
  });
});

describe("parseImport size limits", () => {
  const chain = makeChain({ name: "sizes" });
  const pad = (pem: string, size: number) => pem + " ".repeat(size - Buffer.byteLength(pem));

  it.each([
    ["certificate", "certificate", MAX_CERTIFICATE_BYTES],
    ["privateKey", "private_key", MAX_PRIVATE_KEY_BYTES],
    ["intermediates", "intermediates", MAX_INTERMEDIATES_BYTES],
  ] as const)("refuses %s above its limit and accepts it at the limit", (key, field, limit) => {
    const value = { certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem[0] }[key];
    const ok = parseImport(input({ certificate: chain.leafPem, [key]: pad(value, limit) }));
    expect(ok.metadata.sha256Fingerprint).toBe(certFacts(chain.leafPem).sha256Fingerprint);
    const err = refusal({ certificate: chain.leafPem, [key]: pad(value, limit + 1) });
    expect(err.reason).toBe("FIELD_TOO_LARGE");
    expect(err.metadata.field).toBe(field);
    expect(err.message).toContain(String(limit));
  });

  it("counts UTF-8 bytes, not characters", () => {
    const err = refusal({ certificate: chain.leafPem + "é".repeat(MAX_CERTIFICATE_BYTES / 2) });
    expect(err.reason).toBe("FIELD_TOO_LARGE");
  });
});
