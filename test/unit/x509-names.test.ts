/**
 * RFC 4514 formatting of names built byte by byte, OBJECT IDENTIFIER decoding, the `sans` column of older rows,
 * and filter times: the corner cases the openssl-made fixtures of test/integration/data-edges.test.ts cannot
 * reach (openssl's -subj cannot write NUL, a lone space or a BMPString on demand).
 */
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import { parseCertificateFilter } from "../../src/services/filter.js";
import { createKnex, KnexUnitOfWork, migrateLatest } from "../../src/storage/index.js";
import { decodeOid } from "../../src/x509/der.js";
import { formatDnDer } from "../../src/x509/dn.js";

/** DER TLV with a short or one-octet long length. */
function tlv(tag: number, content: Buffer): Buffer {
  const len = content.length < 0x80 ? Buffer.from([content.length]) : Buffer.from([0x81, content.length]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}
const CN = Buffer.from("0603550403", "hex");
const O = Buffer.from("060355040a", "hex");
const UID = Buffer.from("060a0992268993f22c640101", "hex");
const OTHER = Buffer.from("06032a0304", "hex"); // 1.2.3.4
const ava = (type: Buffer, value: Buffer) => tlv(0x30, Buffer.concat([type, value]));
const rdn = (...avas: Buffer[]) => tlv(0x31, Buffer.concat(avas));
const name = (...rdns: Buffer[]) => tlv(0x30, Buffer.concat(rdns));
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));

describe("formatDnDer", () => {
  it.each([
    ["a lone space", [rdn(ava(CN, utf8(" ")))], "CN=\\ "],
    ["two spaces", [rdn(ava(CN, utf8("  ")))], "CN=\\ \\ "],
    ["NUL, every line break, tab and DEL", [rdn(ava(CN, utf8("a\0b\r\nc\n\td\x7f")))], "CN=a\\00b\\0D\\0Ac\\0A\\09d\\7F"],
    ["every special character", [rdn(ava(CN, utf8('#"+,;<>\\= x')))], 'CN=\\#\\"\\+\\,\\;\\<\\>\\\\= x'],
    ["a # after the start", [rdn(ava(CN, utf8("a#b")))], "CN=a#b"],
    ["an empty value", [rdn(ava(CN, utf8("")))], "CN="],
    ["UTF-8 kept as is", [rdn(ava(O, utf8("Ŝ Müller 😀")))], "O=Ŝ Müller 😀"],
    ["a BMPString", [rdn(ava(CN, tlv(0x1e, Buffer.from("00e9007a", "hex"))))], "CN=éz"],
    ["a UniversalString", [rdn(ava(CN, tlv(0x1c, Buffer.from("0001f600", "hex"))))], "CN=😀"],
    ["a PrintableString", [rdn(ava(CN, tlv(0x13, Buffer.from("Print"))))], "CN=Print"],
    ["invalid UTF-8 as #hex", [rdn(ava(CN, tlv(0x0c, Buffer.from("c3", "hex"))))], "CN=#0c01c3"],
    ["a non-string value as #hex", [rdn(ava(CN, tlv(0x02, Buffer.from([1]))))], "CN=#020101"],
    ["an unknown type: dotted OID and #hex even for a string", [rdn(ava(OTHER, utf8("x")))], "1.2.3.4=#0c0178"],
    ["UID by its RFC 4514 name, multi-valued RDN in DER order", [rdn(ava(CN, utf8("h")), ava(UID, utf8("42"))), rdn(ava(O, utf8("Org")))], "O=Org,CN=h+UID=42"],
    ["no RDNs", [], ""],
  ])("formats %s", (_, rdns, expected) => {
    expect(formatDnDer(name(...rdns))).toBe(expected);
  });

  it.each([
    ["trailing bytes", Buffer.concat([name(rdn(ava(CN, utf8("a")))), Buffer.from([0])])],
    ["an empty RDN", name(tlv(0x31, Buffer.alloc(0)))],
    ["a truncated element", name(rdn(ava(CN, utf8("a")))).subarray(0, 8)],
    ["an RDN that is not a SET", name(tlv(0x30, ava(CN, utf8("a"))))],
  ])("throws on %s", (_, der) => {
    expect(() => formatDnDer(der)).toThrow();
  });
});

describe("decodeOid", () => {
  it.each([
    ["2a03", "1.2.3"],
    ["0992268993f22c640101", "0.9.2342.19200300.100.1.1"],
    ["2b0601040182371402 03".replace(" ", ""), "1.3.6.1.4.1.311.20.2.3"],
    ["8837", "2.999"],
    // 2.25.<2^128 - 1>: a UUID OID arc beyond 2^53.
    ["6983ffffffffffffffffffffffffffffffffff7f", "2.25.340282366920938463463374607431768211455"],
  ])("decodes %s as %s", (hex, dotted) => {
    expect(decodeOid(Buffer.from(hex, "hex"))).toBe(dotted);
  });

  it.each(["", "2a83", "2a8001"])("refuses %j", (hex) => {
    expect(() => decodeOid(Buffer.from(hex, "hex"))).toThrow();
  });
});

/** The `sans` column as a certificate repository reads it back, after a row was stored with `text` in it. */
async function sansFromJson(text: string): Promise<unknown> {
  const knex = createKnex({ client: "sqlite", filename: ":memory:" });
  try {
    await migrateLatest(knex);
    const { repos } = new KnexUnitOfWork(knex);
    const [instanceId, certificateId, t] = ["0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d", "0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6e", new Date(0)];
    await repos.instances.insert({ id: instanceId, displayName: "", description: "", labels: {}, state: "ACTIVE", rootKeyBackend: "local", rootKeyId: "default", keyManagement: "PROVIDER", revision: 1, createTime: t, updateTime: t });
    await repos.deks.insert({ id: "dek", instanceId, wrappedKey: "w", rootKeyVersion: 1, state: "ACTIVE", encryptionCount: 0, createTime: t });
    const sans = { dns: [], ip: [], email: [], uri: [], directoryName: [], registeredId: [], otherName: [] };
    const metadata = { subjectCommonName: "", subject: "", issuer: "", serialNumber: "01", notBefore: t, notAfter: t, sans, keyAlgorithm: "EC" as const, keySize: 0, keyCurve: "P-256", sha256Fingerprint: "f", selfSigned: false };
    await repos.certificates.insert(
      { id: certificateId, instanceId, displayName: "", description: "", labels: {}, metadata, hasPrivateKey: false, intermediateCount: 0, currentVersion: 1, revision: 1, createTime: t, updateTime: t },
      { certificateId, version: 1, dekId: "dek", certificateJwe: "c", privateKeyJwe: "", intermediatesJwe: "", sha256Fingerprint: "f", createTime: t },
    );
    await knex("certificates").where({ id: certificateId }).update({ sans: text });
    return (await repos.certificates.get(instanceId, certificateId))!.metadata.sans;
  } finally {
    await knex.destroy();
  }
}

describe("sans column", () => {
  it("reads a row written before directoryName, registeredId and otherName existed", async () => {
    expect(await sansFromJson('{"dns":["a.example"],"ip":["192.0.2.1"],"email":["a@example.com"],"uri":["https://a.example/"]}')).toEqual({
      dns: ["a.example"],
      ip: ["192.0.2.1"],
      email: ["a@example.com"],
      uri: ["https://a.example/"],
      directoryName: [],
      registeredId: [],
      otherName: [],
    });
  });
});

describe("filter times", () => {
  const reason = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return err instanceof InvalidArgumentError ? `${err.reason}:${err.metadata.field}:${err.message}` : String(err);
    }
    return "no error";
  };

  it("refuses a time without an offset, saying so, whatever the process time zone", () => {
    const saved = process.env.TZ;
    try {
      for (const zone of ["UTC", "Pacific/Kiritimati", "America/St_Johns"]) {
        process.env.TZ = zone;
        expect(reason(() => parseCertificateFilter(`not_before >= "2038-01-19T03:14:08.5"`))).toBe(
          `INVALID_FILTER:filter:not_before time "2038-01-19T03:14:08.5" has no time zone offset; add Z for UTC or an offset such as +02:00, e.g. "2038-01-19T03:14:08.5Z"`,
        );
        expect(parseCertificateFilter(`not_after < "2038-01-19T17:14:08+14:00"`).notAfter![0].value.toISOString()).toBe("2038-01-19T03:14:08.000Z");
      }
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });

  it("accepts 29 February of year 0 (a leap year; Date.UTC would read it as 1900, which is not)", () => {
    expect(parseCertificateFilter(`not_before > "0000-02-29T00:00:00Z"`).notBefore![0].value.getTime()).toBe(-62162121600000);
    expect(reason(() => parseCertificateFilter(`not_before > "1900-02-29T00:00:00Z"`))).toMatch(/^INVALID_FILTER:filter:/);
  });
});
