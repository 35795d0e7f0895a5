import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import { certificateDerFromPem, pemEncode, splitPemBlocks } from "../../src/x509/index.js";

function refusal(fn: () => unknown): InvalidArgumentError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    return err as InvalidArgumentError;
  }
  throw new Error("expected an InvalidArgumentError");
}

const der100 = Buffer.from(Array.from({ length: 100 }, (_, i) => i));

describe("pemEncode (RFC 7468 §2)", () => {
  it("wraps base64 at 64 columns with LF and a final LF", () => {
    const pem = pemEncode("CERTIFICATE", der100);
    const lines = pem.split("\n");
    expect(lines[0]).toBe("-----BEGIN CERTIFICATE-----");
    // 100 bytes -> 136 base64 characters -> 64 + 64 + 8.
    expect(lines.slice(1, 4).map((l) => l.length)).toEqual([64, 64, 8]);
    expect(lines[4]).toBe("-----END CERTIFICATE-----");
    expect(lines[5]).toBe("");
    expect(lines).toHaveLength(6);
    expect(Buffer.from(lines.slice(1, 4).join(""), "base64")).toEqual(der100);
  });
});

describe("splitPemBlocks (RFC 7468 §3 lax parsing)", () => {
  it("round-trips and ignores text, CRLF and indentation around and inside blocks", () => {
    const pem = pemEncode("CERTIFICATE", der100);
    const messy = `Bag Attributes\r\n    localKeyID: 01 02\r\nsubject=CN = x\r\n\r\n${pem
      .split("\n")
      .map((l) => `  ${l}  `)
      .join("\r\n")}\r\ntrailing junk`;
    const blocks = splitPemBlocks(messy);
    expect(blocks).toHaveLength(1);
    expect(blocks[0].label).toBe("CERTIFICATE");
    expect(blocks[0].der).toEqual(der100);
    expect(blocks[0].pem).toBe(pem);
    expect(blocks[0].headers).toEqual({});
  });

  it("accepts a block pasted on one line", () => {
    const b64 = der100.toString("base64");
    const blocks = splitPemBlocks(`-----BEGIN PRIVATE KEY----- ${b64} -----END PRIVATE KEY-----`);
    expect(blocks[0].der).toEqual(der100);
  });

  it("returns several blocks in order, and RFC 1421 headers", () => {
    const text = `${pemEncode("EC PARAMETERS", Buffer.from([6, 1, 0]))}-----BEGIN RSA PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF

${der100.toString("base64")}
-----END RSA PRIVATE KEY-----
`;
    const blocks = splitPemBlocks(text);
    expect(blocks.map((b) => b.label)).toEqual(["EC PARAMETERS", "RSA PRIVATE KEY"]);
    expect(blocks[1].headers).toEqual({ "Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF" });
    expect(blocks[1].der).toEqual(der100);
  });

  it("returns [] for text without blocks", () => {
    expect(splitPemBlocks("")).toEqual([]);
    expect(splitPemBlocks("hello\nworld")).toEqual([]);
  });

  it.each([
    ["a truncated block", "-----BEGIN CERTIFICATE-----\nAAAA\n", /truncated/],
    ["a BEGIN inside a block", "-----BEGIN CERTIFICATE-----\nAAAA\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", /truncated/],
    ["an END without BEGIN", "AAAA\n-----END CERTIFICATE-----\n", /without a matching BEGIN/],
    ["mismatched labels", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n", /must match/],
    ["invalid base64", "-----BEGIN CERTIFICATE-----\nAA*A\n-----END CERTIFICATE-----\n", /valid base64/],
    ["missing padding", "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n", /valid base64/],
    ["an empty body", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", /valid base64/],
  ])("refuses %s with the caller's field and reason", (_, text, message) => {
    const err = refusal(() => splitPemBlocks(text, { field: "intermediates", reason: "INVALID_CERTIFICATE" }));
    expect(err.reason).toBe("INVALID_CERTIFICATE");
    expect(err.fieldViolations[0].field).toBe("intermediates");
    expect(err.message).toMatch(message);
  });

  it("defaults to field pem and reason INVALID_PEM", () => {
    const err = refusal(() => splitPemBlocks("-----BEGIN X-----\n"));
    expect(err.reason).toBe("INVALID_PEM");
    expect(err.metadata.field).toBe("pem");
  });

  it("scans many unterminated BEGIN lines in linear time", () => {
    const text = "-----BEGIN CERTIFICATE-----\n".repeat(20_000);
    const t0 = performance.now();
    refusal(() => splitPemBlocks(text));
    expect(performance.now() - t0).toBeLessThan(500);
  });
});

describe("certificateDerFromPem", () => {
  it("returns the DER of the single certificate block", () => {
    expect(certificateDerFromPem(`junk\n${pemEncode("CERTIFICATE", der100)}`)).toEqual(der100);
  });

  it("refuses zero or several blocks", () => {
    expect(refusal(() => certificateDerFromPem("")).reason).toBe("INVALID_CERTIFICATE");
    const two = pemEncode("CERTIFICATE", der100).repeat(2);
    expect(refusal(() => certificateDerFromPem(two)).reason).toBe("MULTIPLE_CERTIFICATES");
    expect(refusal(() => certificateDerFromPem(pemEncode("PRIVATE KEY", der100))).reason).toBe("INVALID_CERTIFICATE");
  });
});
