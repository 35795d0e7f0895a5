/**
 * Certificate data at its edges, over real gRPC on SQLite and MariaDB (issue 6, items 4 and 5): subject
 * alternative names of every GeneralName type, subjects whose values look like separators, serial numbers at
 * the INTEGER sign boundaries, and validity times at the UTCTime/GeneralizedTime, 2^31 and 2^32 boundaries and
 * before 1970, in several server time zones.
 *
 * Every fixture is made by the openssl CLI here and now; every expected value is written out by hand from what
 * was given to openssl (or read back with `openssl x509`), never computed by the code under test.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ValidityState } from "../../gen/ts/certmanager/v1/certificate.js";
import { makeKey, openssl } from "../helpers/openssl.js";
import { databases, expectFailure, startTestService, TestClock, type TestService } from "../helpers/service.js";

function inTemp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "cm-data-edges-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ED = makeKey("ed25519", "data-edges");
const pemToDer = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ""), "base64");
const derToPem = (der: Buffer) => `-----BEGIN CERTIFICATE-----\n${der.toString("base64").replace(/.{1,64}/g, "$&\n")}-----END CERTIFICATE-----\n`;

/** Self-signed certificate from `openssl req -x509` with a config file written as given (Buffer = exact bytes). */
function reqCert(opts: { subject: string; config?: string | Buffer; extensions?: string; serial?: string; args?: string[] }): string {
  return inTemp((dir) => {
    writeFileSync(join(dir, "key.pem"), ED.pkcs8Pem);
    writeFileSync(join(dir, "req.cnf"), opts.config ?? "[req]\ndistinguished_name = dn\n[dn]\n");
    openssl(
      ["req", "-new", "-x509", "-batch", "-utf8", ...(opts.args ?? []), "-key", "key.pem", "-subj", opts.subject, "-days", "30",
        "-config", "req.cnf", ...(opts.extensions ? ["-extensions", opts.extensions] : []), ...(opts.serial ? ["-set_serial", opts.serial] : []), "-out", "c.pem"],
      { cwd: dir },
    );
    return readFileSync(join(dir, "c.pem"), "utf8");
  });
}

/** Self-signed certificate with exact validity dates (`openssl ca -selfsign -startdate -enddate`, YYYYMMDDHHMMSSZ). */
function caCert(subject: string, startdate: string, enddate: string): string {
  return inTemp((dir) => {
    writeFileSync(join(dir, "key.pem"), ED.pkcs8Pem);
    writeFileSync(join(dir, "index.txt"), "");
    writeFileSync(join(dir, "serial"), "01\n");
    writeFileSync(
      join(dir, "ca.cnf"),
      [
        "[ca]", "default_ca = d", "[d]", "dir = .", "database = ./index.txt", "new_certs_dir = .", "serial = ./serial", "default_md = default",
        "policy = p", "unique_subject = no", "preserve = yes", "[p]", "commonName = supplied", "[req]", "distinguished_name = dn", "[dn]", "",
      ].join("\n"),
    );
    openssl(["req", "-new", "-batch", "-key", "key.pem", "-subj", subject, "-config", "ca.cnf", "-out", "csr.pem"], { cwd: dir });
    openssl(
      ["ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "key.pem", "-in", "csr.pem", "-rand_serial", "-notext",
        "-startdate", startdate, "-enddate", enddate, "-out", "c.pem"],
      { cwd: dir },
    );
    return readFileSync(join(dir, "c.pem"), "utf8");
  });
}

/** Re-signs `pem` with the Ed25519 key (`openssl x509 -key`) under another serial, dates and names unchanged. */
function withSerial(pem: string, serial: string): string {
  return inTemp((dir) => {
    writeFileSync(join(dir, "key.pem"), ED.pkcs8Pem);
    writeFileSync(join(dir, "in.pem"), pem);
    openssl(["x509", "-in", "in.pem", "-key", "key.pem", "-set_serial", serial, "-preserve_dates", "-out", "c.pem"], { cwd: dir });
    return readFileSync(join(dir, "c.pem"), "utf8");
  });
}

/**
 * Replaces the ASCII `from` in the TBSCertificate of an Ed25519 certificate by `to` (same length, so every DER
 * length stays valid) and signs the new TBS with `openssl pkeyutl -sign -rawin` (Ed25519 signatures are 64 bytes:
 * the signature BIT STRING keeps its length too).
 */
function patchTbs(pem: string, from: string, to: string): string {
  expect(to.length).toBe(from.length);
  const der = pemToDer(pem);
  const at = der.indexOf(Buffer.from(from, "latin1"));
  expect(at).toBeGreaterThan(0);
  der.write(to, at, "latin1");
  // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, ... } (X.690 §8.1.3 lengths: short, 81 xx or 82 xx xx).
  const header = (at: number) => (der[at + 1] < 0x80 ? { len: der[at + 1], size: 2 } : der[at + 1] === 0x81 ? { len: der[at + 2], size: 3 } : { len: der.readUInt16BE(at + 2), size: 4 });
  const tbsAt = header(0).size;
  expect([der[0], der[tbsAt]]).toEqual([0x30, 0x30]);
  const tbs = der.subarray(tbsAt, tbsAt + header(tbsAt).size + header(tbsAt).len);
  const sig = inTemp((dir) => {
    writeFileSync(join(dir, "key.pem"), ED.pkcs8Pem);
    writeFileSync(join(dir, "tbs.der"), tbs);
    execFileSync("openssl", ["pkeyutl", "-sign", "-rawin", "-inkey", "key.pem", "-in", "tbs.der", "-out", "sig.bin"], { cwd: dir });
    return readFileSync(join(dir, "sig.bin"));
  });
  expect(sig.length).toBe(64);
  sig.copy(der, der.length - 64);
  const out = derToPem(der);
  expect(new X509Certificate(out).checkIssued(new X509Certificate(out))).toBe(true);
  return out;
}

const iso = (s: string) => new Date(s).getTime();

describe.each(await databases())("certificate data edges on %s", (db) => {
  describe("subject alternative names, subjects and serials", () => {
    let t: TestService;
    let parent: string;
    beforeAll(async () => {
      t = await startTestService(db);
      parent = (await t.instances.createInstance({ instance: {} })).instance!.name;
    });
    afterAll(async () => {
      await t?.stop();
    });
    const importPem = async (pem: string) => (await t.certificates.importCertificate({ parent, certificate: pem })).certificate!;

    it("reports SANs of every type, a URI with a comma and a UTF-8 directoryName with an escaped comma as one entry each", async () => {
      // openssl reads dirName and otherName values of a config file as Latin-1 (MBSTRING_ASC) and writes UTF8String:
      // the file is written in Latin-1 so that "ü" (U+00FC) becomes the UTF-8 bytes C3 BC in the certificate.
      const config = Buffer.from(
        [
          "[req]", "distinguished_name = dn", "[dn]", "[ext]", "subjectAltName = @alt_names", "[alt_names]",
          "DNS.1 = a.example",
          "IP.1 = 192.0.2.1",
          "IP.2 = 2001:0db8:0:0:0:0:0:1",
          "email.1 = user@example.com",
          "URI.1 = https://example.com/a,b",
          "dirName.1 = dir_sect",
          "RID.1 = 1.2.3.4",
          "otherName.1 = 1.3.6.1.4.1.311.20.2.3;UTF8:user@example.com",
          "otherName.2 = 1.2.3.5;INTEGER:42",
          "otherName.3 = 1.3.6.1.5.5.7.8.9;UTF8:ü@example.com",
          "otherName.4 = 1.3.6.1.4.1.311.25.1;FORMAT:HEX,OCTETSTRING:00112233445566778899aabbccddeeff",
          "otherName.5 = 1.2.3.6;IA5STRING:ia5 text",
          "otherName.6 = 1.2.3.7;PRINTABLESTRING:Printable",
          "otherName.7 = 1.2.3.8;BMPSTRING:bmp ü",
          "DNS.2 = second.example",
          "[dir_sect]",
          "C = DE",
          "O = Müller\\, Söhne & Co",
          "CN = Dir Name",
          "",
        ].join("\n"),
        "latin1",
      );
      const pem = reqCert({ subject: "/CN=sans.example", config, extensions: "ext" });
      // The fixture is what we meant: openssl shows the UTF-8 bytes and the two UPN-like names.
      const text = openssl(["x509", "-noout", "-ext", "subjectAltName"], { input: pem });
      expect(text).toContain("DirName:/C=DE/O=M\\xC3\\xBCller, S\\xC3\\xB6hne & Co/CN=Dir Name");
      expect(text).toContain("URI:https://example.com/a,b, DirName");
      expect(text).toContain("othername: UPN::user@example.com");
      const expected = {
        dnsNames: ["a.example", "second.example"],
        ipAddresses: ["192.0.2.1", "2001:db8::1"],
        emailAddresses: ["user@example.com"],
        uris: ["https://example.com/a,b"],
        directoryNames: ["CN=Dir Name,O=Müller\\, Söhne & Co,C=DE"],
        registeredIds: ["1.2.3.4"],
        otherNames: [
          { typeId: "1.3.6.1.4.1.311.20.2.3", value: "user@example.com" },
          // INTEGER 42 = 02 01 2a.
          { typeId: "1.2.3.5", value: "#02012a" },
          { typeId: "1.3.6.1.5.5.7.8.9", value: "ü@example.com" },
          // OCTET STRING of 16 bytes = 04 10 <bytes>.
          { typeId: "1.3.6.1.4.1.311.25.1", value: "#041000112233445566778899aabbccddeeff" },
          { typeId: "1.2.3.6", value: "ia5 text" },
          { typeId: "1.2.3.7", value: "Printable" },
          { typeId: "1.2.3.8", value: "bmp ü" },
        ],
      };
      const c = await importPem(pem);
      expect(c.subjectAltNames).toEqual(expected);
      expect((await t.certificates.getCertificate({ name: c.name })).certificate!.subjectAltNames).toEqual(expected);

      // The `sans` column keeps its JSON shape (the old four keys, three new ones): a row written before the new
      // keys existed reads them as empty lists.
      const k = t.raw();
      const id = c.name.split("/").pop()!;
      const row = (await k("certificates").select("sans").where({ id }).first()) as { sans: string };
      expect(JSON.parse(row.sans)).toEqual({
        dns: expected.dnsNames,
        ip: expected.ipAddresses,
        email: expected.emailAddresses,
        uri: expected.uris,
        directoryName: expected.directoryNames,
        registeredId: expected.registeredIds,
        otherName: expected.otherNames,
      });
      await k("certificates").where({ id }).update({ sans: JSON.stringify({ dns: ["a.example"], ip: ["192.0.2.1"], email: [], uri: [] }) });
      expect((await t.certificates.getCertificate({ name: c.name })).certificate!.subjectAltNames).toEqual({
        dnsNames: ["a.example"],
        ipAddresses: ["192.0.2.1"],
        emailAddresses: [],
        uris: [],
        directoryNames: [],
        registeredIds: [],
        otherNames: [],
      });

      const byDomain = await t.certificates.listCertificates({ parent, filter: `domain = "a.example"` });
      expect(byDomain.certificates.map((x) => x.name)).toEqual([c.name]);
    });

    it("reports x400Address and ediPartyName (which @peculiar/x509 cannot parse) and a directoryName with NUL, newline and an unknown attribute type", async () => {
      const config = [
        "[req]", "distinguished_name = dn", "[dn]", "[ext]", "subjectAltName = ASN1:SEQUENCE:san",
        "[san]",
        "dns = IMPLICIT:2,IA5STRING:b.example",
        "x400 = IMPLICIT:3,SEQUENCE:x400",
        "edi = IMPLICIT:5,SEQUENCE:edi",
        "dir = EXPLICIT:4,SEQUENCE:dir_name",
        // ORAddress { BuiltInStandardAttributes { country-name [APPLICATION 1] PrintableString "DE" } }
        "[x400]", "bdt = SEQUENCE:bdt",
        "[bdt]", "country = EXPLICIT:1A,PRINTABLESTRING:DE",
        // EDIPartyName { nameAssigner [0] "Assigner", partyName [1] "Party" } (DirectoryString is a CHOICE: explicit tags)
        "[edi]", "assigner = EXPLICIT:0,UTF8:Assigner", "party = EXPLICIT:1,UTF8:Party",
        // Name { SET { O=Org }, SET { CN="a\0b\nc", 1.2.3.4="x" } }
        "[dir_name]", "rdn1 = SET:rdn1", "rdn2 = SET:rdn2",
        "[rdn1]", "ava = SEQUENCE:ava_o",
        "[rdn2]", "ava1 = SEQUENCE:ava_cn", "ava2 = SEQUENCE:ava_unknown",
        "[ava_o]", "type = OID:organizationName", "value = UTF8:Org",
        // UTF8String "a\0b\nc": an OCTET STRING of those bytes given the universal tag 12 (a config value cannot hold NUL).
        "[ava_cn]", "type = OID:commonName", "value = IMPLICIT:12U,FORMAT:HEX,OCTETSTRING:6100620a63",
        "[ava_unknown]", "type = OID:1.2.3.4", "value = UTF8:x",
        "",
      ].join("\n");
      const pem = reqCert({ subject: "/CN=x400.example", config, extensions: "ext" });
      expect(openssl(["x509", "-noout", "-ext", "subjectAltName"], { input: pem })).toContain("X400Name:<unsupported>, EdiPartyName:<unsupported>");
      const c = await importPem(pem);
      expect(c.subjectAltNames).toEqual({
        dnsNames: ["b.example"],
        ipAddresses: [],
        emailAddresses: [],
        uris: [],
        // The SET is DER-sorted: 30 08 (1.2.3.4, UTF8 "x" = 0c 01 78) before 30 0c (CN); NUL and LF are \00 and \0A
        // (RFC 4514 §2.4) and a dotted type's value is #hex of its DER.
        directoryNames: ["1.2.3.4=#0c0178+CN=a\\00b\\0Ac,O=Org"],
        registeredIds: [],
        otherNames: [
          // 30 08 | 30 06 | 61 04 | 13 02 "DE"
          { typeId: "x400Address", value: "#30083006610413024445" },
          // 30 15 | a0 0a 0c 08 "Assigner" | a1 07 0c 05 "Party"
          { typeId: "ediPartyName", value: "#3015a00a0c0841737369676e6572a1070c055061727479" },
        ],
      });
      expect((await t.certificates.getCertificate({ name: c.name })).certificate!.subjectAltNames).toEqual(c.subjectAltNames);
    });

    it("refuses a subjectAltName with a GeneralName tag RFC 5280 does not define, naming the extension", async () => {
      const config = ["[req]", "distinguished_name = dn", "[dn]", "[ext]", "subjectAltName = ASN1:SEQUENCE:san", "[san]", "bad = IMPLICIT:9,IA5STRING:x", ""].join("\n");
      const pem = reqCert({ subject: "/CN=bad-san.example", config, extensions: "ext" });
      const err = await expectFailure(t.certificates.importCertificate({ parent, certificate: pem }));
      expect([err.code, err.reason, err.fieldViolations.map((v) => v.field)]).toEqual([status.INVALID_ARGUMENT, "INVALID_CERTIFICATE", ["certificate"]]);
      expect(err.message).toContain("subjectAltName extension is not a valid GeneralNames (RFC 5280 §4.2.1.6)");
    });

    it.each([
      {
        what: "values that look like separators",
        subject: "/CN=a\\,b/O=x=y/OU=a\\+b",
        expected: "OU=a\\+b,O=x=y,CN=a\\,b",
        cn: "a,b",
        openssl: "OU=a\\+b,O=x=y,CN=a\\,b",
      },
      {
        what: "UTF-8 values with an escaped comma",
        subject: "/C=DE/O=Müller\\, Söhne & Co/CN=Jürgen Müller",
        expected: "CN=Jürgen Müller,O=Müller\\, Söhne & Co,C=DE",
        cn: "Jürgen Müller",
        openssl: "CN=Jürgen Müller,O=Müller\\, Söhne & Co,C=DE",
      },
      {
        // The RDN {CN, UID} is DER-sorted (30 0b CN before 30 10 UID); openssl prints its pairs reversed.
        what: "a multi-valued RDN next to a value with a plus",
        subject: "/UID=42+CN=host/O=Org/OU=a\\+b",
        args: ["-multivalue-rdn"],
        expected: "OU=a\\+b,O=Org,CN=host+UID=42",
        cn: "host",
        openssl: "OU=a\\+b,O=Org,UID=42+CN=host",
      },
      {
        what: "a leading #, a trailing space, line breaks and an email address",
        subject: "/emailAddress=ops@example.com/CN=#one\ntwo\nthree /O=semi;colon",
        expected: "O=semi\\;colon,CN=\\#one\\0Atwo\\0Athree\\ ,emailAddress=ops@example.com",
        cn: "#one\ntwo\nthree ",
        openssl: "O=semi\\;colon,CN=\\#one\\0Atwo\\0Athree\\ ,emailAddress=ops@example.com",
      },
    ])("keeps $what as one attribute each", async ({ subject, args, expected, cn, openssl: opensslForm }) => {
      const pem = reqCert({ subject, args });
      const subj = openssl(["x509", "-noout", "-subject", "-nameopt", "RFC2253,-esc_msb"], { input: pem }).trim();
      expect(subj).toBe(`subject=${opensslForm}`);
      const c = await importPem(pem);
      expect([c.subject, c.issuer, c.subjectCommonName]).toEqual([expected, expected, cn]);
      const got = (await t.certificates.getCertificate({ name: c.name })).certificate!;
      expect([got.subject, got.issuer, got.subjectCommonName]).toEqual([expected, expected, cn]);
    });

    it("reports serial numbers as their DER INTEGER content octets, sign byte and negatives included", async () => {
      const base = caCert("/CN=serials.example", "20250101000000Z", "20350101000000Z");
      const top20 = `80${"00".repeat(18)}01`;
      const low20 = `7f${"ff".repeat(19)}`;
      const cases: [string, string][] = [
        ["0", "00"],
        ["1", "01"],
        ["127", "7f"],
        ["128", "0080"],
        ["255", "00ff"],
        [`0x${top20}`, `00${top20}`],
        [`0x${low20}`, low20],
        ["-1", "ff"],
        ["-128", "80"],
        ["-129", "ff7f"],
      ];
      // openssl itself prints the magnitude and a minus sign.
      const printed = (pem: string) => openssl(["x509", "-noout", "-serial"], { input: pem }).trim();
      const made = cases.map(([arg, hex]) => ({ arg, hex, pem: withSerial(base, arg) }));
      expect(made.map((m) => printed(m.pem))).toEqual([
        "serial=00", "serial=01", "serial=7F", "serial=80", "serial=FF", `serial=${top20.toUpperCase()}`, `serial=${low20.toUpperCase()}`,
        "serial=-01", "serial=-80", "serial=-81",
      ]);
      const names: string[] = [];
      for (const m of made) {
        const c = await importPem(m.pem);
        expect([m.arg, c.serialNumber]).toEqual([m.arg, m.hex]);
        expect((await t.certificates.getCertificate({ name: c.name })).certificate!.serialNumber).toBe(m.hex);
        names.push(c.name);
      }
      // 128 and -128 (and 1 and -1) differ only in the serial's sign: two certificates, two serials.
      const listed = await t.certificates.listCertificates({ parent, pageSize: 1000 });
      const bySerial = new Map(listed.certificates.filter((c) => names.includes(c.name)).map((c) => [c.serialNumber, c.name]));
      expect([...bySerial.keys()].sort()).toEqual(cases.map(([, hex]) => hex).sort());
      expect(bySerial.get("0080")).not.toBe(bySerial.get("80"));
    });
  });

  /**
   * One set of certificates at the validity edges, imported in each server time zone (process.env.TZ is honoured
   * at runtime; the service and the client run in this process), with the service's clock fixed at
   * 2038-01-19T03:14:07Z, the last second of signed 32-bit time.
   */
  describe("validity times", () => {
    const NOW = "2038-01-19T03:14:07Z";
    interface DateCase {
      key: string;
      notBefore: string;
      notAfter: string;
      state: ValidityState;
      pem?: string;
    }
    const cases: DateCase[] = [
      { key: "max", notBefore: "1950-01-01T00:00:00Z", notAfter: "9999-12-31T23:59:59Z", state: ValidityState.VALIDITY_STATE_VALID },
      { key: "utc-last", notBefore: "2000-01-01T00:00:00Z", notAfter: "2049-12-31T23:59:59Z", state: ValidityState.VALIDITY_STATE_VALID },
      { key: "gen-first", notBefore: "2049-12-31T23:59:59Z", notAfter: "2050-01-01T00:00:00Z", state: ValidityState.VALIDITY_STATE_NOT_YET_VALID },
      // notAfter is inclusive (RFC 5280 §4.1.2.5): valid at exactly its notAfter.
      { key: "y2038-last", notBefore: "2020-01-01T00:00:00Z", notAfter: "2038-01-19T03:14:07Z", state: ValidityState.VALIDITY_STATE_VALID },
      { key: "y2038-first", notBefore: "2038-01-19T03:14:08Z", notAfter: "2038-01-19T03:14:08Z", state: ValidityState.VALIDITY_STATE_NOT_YET_VALID },
      // notBefore is inclusive too.
      { key: "y2106-last", notBefore: "2038-01-19T03:14:07Z", notAfter: "2106-02-07T06:28:15Z", state: ValidityState.VALIDITY_STATE_VALID },
      { key: "y2106-first", notBefore: "2050-01-01T00:00:00Z", notAfter: "2106-02-07T06:28:16Z", state: ValidityState.VALIDITY_STATE_NOT_YET_VALID },
      { key: "epoch", notBefore: "1969-12-31T23:59:59Z", notAfter: "1970-01-01T00:00:00Z", state: ValidityState.VALIDITY_STATE_EXPIRED },
      { key: "apollo", notBefore: "1960-01-01T00:00:00Z", notAfter: "1969-07-20T20:17:40Z", state: ValidityState.VALIDITY_STATE_EXPIRED },
      // GeneralizedTime "205001010000+01" (no seconds, +01 offset: X.680 allows it, RFC 5280 does not) is 23:00Z.
      { key: "offset", notBefore: "2010-01-01T00:00:00Z", notAfter: "2049-12-31T23:00:00Z", state: ValidityState.VALIDITY_STATE_VALID },
    ];
    const openSslDate = (s: string) => s.replace(/[-:T]/g, "");
    let localTime: string;
    beforeAll(() => {
      for (const c of cases) {
        if (c.key === "offset") {
          const base = caCert("/CN=offset.example", "20100101000000Z", "20500101000000Z");
          c.pem = patchTbs(base, "20500101000000Z", "205001010000+01");
        } else {
          c.pem = caCert(`/CN=${c.key}.example`, openSslDate(c.notBefore), openSslDate(c.notAfter));
          // openssl agrees on what it wrote.
          const dates = openssl(["x509", "-noout", "-dates", "-dateopt", "iso_8601"], { input: c.pem });
          expect(dates).toBe(`notBefore=${c.notBefore.replace("T", " ")}\nnotAfter=${c.notAfter.replace("T", " ")}\n`);
        }
      }
      // The same trick with a GeneralizedTime without a zone: a local time of an unknown place.
      localTime = patchTbs(caCert("/CN=local.example", "20100101000000Z", "20500101000000Z"), "20500101000000Z", "205001010000.55");
    });
    const byKey = (...keys: string[]) => keys;
    const ascending = byKey("apollo", "epoch", "y2038-last", "y2038-first", "offset", "utc-last", "gen-first", "y2106-last", "y2106-first", "max");

    const ZONES: [string, number][] = [
      // zone, its UTC offset in minutes as Date#getTimezoneOffset reports it in January 2038
      ["UTC", 0],
      ["Pacific/Kiritimati", -840],
      ["Pacific/Pago_Pago", 660],
      ["Asia/Kathmandu", -345],
      ["America/St_Johns", 210],
    ];
    describe.each(ZONES)("with the server in time zone %s", (zone, offset) => {
      let t: TestService;
      let parent: string;
      let savedTz: string | undefined;
      const names = new Map<string, string>();
      beforeAll(async () => {
        savedTz = process.env.TZ;
        process.env.TZ = zone;
        expect(new Date(iso(NOW)).getTimezoneOffset()).toBe(offset);
        t = await startTestService(db, {}, new TestClock(iso(NOW)));
        parent = (await t.instances.createInstance({ instance: {} })).instance!.name;
      });
      afterAll(async () => {
        await t?.stop();
        if (savedTz === undefined) delete process.env.TZ;
        else process.env.TZ = savedTz;
      });

      it("stores each time exactly, as seconds since 1970 (negative before it) and flags validity by the clock", async () => {
        for (const c of cases) {
          const got = (await t.certificates.importCertificate({ parent, certificate: c.pem! })).certificate!;
          names.set(c.key, got.name);
          for (const x of [got, (await t.certificates.getCertificate({ name: got.name })).certificate!]) {
            expect([c.key, x.notBefore!.toISOString(), x.notAfter!.toISOString(), x.validityState]).toEqual([
              c.key,
              c.notBefore.replace("Z", ".000Z"),
              c.notAfter.replace("Z", ".000Z"),
              c.state,
            ]);
          }
        }
        // The wire Timestamps' seconds at the boundaries, written out.
        const seconds = async (key: string) => {
          const x = (await t.certificates.getCertificate({ name: names.get(key)! })).certificate!;
          return [x.notBefore!.getTime() / 1000, x.notAfter!.getTime() / 1000];
        };
        expect(await seconds("max")).toEqual([-631152000, 253402300799]);
        expect(await seconds("y2038-last")).toEqual([1577836800, 2147483647]);
        expect(await seconds("y2038-first")).toEqual([2147483648, 2147483648]);
        expect(await seconds("y2106-last")).toEqual([2147483647, 4294967295]);
        expect(await seconds("y2106-first")).toEqual([2524608000, 4294967296]);
        expect(await seconds("epoch")).toEqual([-1, 0]);
        expect(await seconds("apollo")).toEqual([-315619200, -14182940]);
        // The columns hold epoch milliseconds (BIGINT), whatever the zone of the server or the database session.
        const rows = (await t.raw()("certificates").select("id", "not_before", "not_after").where({ instance_id: parent.split("/")[1] })) as {
          id: string;
          not_before: number | string;
          not_after: number | string;
        }[];
        const stored = new Map(rows.map((r) => [r.id, [Number(r.not_before), Number(r.not_after)]]));
        for (const c of cases) expect([c.key, stored.get(names.get(c.key)!.split("/").pop()!)]).toEqual([c.key, [iso(c.notBefore), iso(c.notAfter)]]);
      });

      const list = async (orderBy: string, filter = "", pageSize = 3) => {
        const out: string[] = [];
        let pageToken = "";
        do {
          const r = await t.certificates.listCertificates({ parent, orderBy, filter, pageSize, pageToken });
          out.push(...r.certificates.map((c) => [...names].find(([, n]) => n === c.name)![0]));
          pageToken = r.nextPageToken;
        } while (pageToken);
        return out;
      };

      it("orders by not_after both ways across pages", async () => {
        expect(await list("not_after")).toEqual(ascending);
        expect(await list("not_after desc")).toEqual([...ascending].reverse());
      });

      it("filters on the 2038 and 2106 boundaries and before 1970, with Z or an offset", async () => {
        expect(await list("not_after", `not_after < "2038-01-19T03:14:08Z"`)).toEqual(["apollo", "epoch", "y2038-last"]);
        expect(await list("not_after", `not_after < "2038-01-19T17:14:08+14:00"`)).toEqual(["apollo", "epoch", "y2038-last"]);
        expect(await list("not_after", `not_after >= "2106-02-07T06:28:16Z"`)).toEqual(["y2106-first", "max"]);
        expect(await list("not_after", `not_after >= "2106-02-06T19:28:16-11:00"`)).toEqual(["y2106-first", "max"]);
        expect(await list("not_after", `not_before < "1970-01-01T00:00:00Z"`)).toEqual(["apollo", "epoch", "max"]);
        expect(await list("not_after", `not_before < "1969-12-31T20:30:00-03:30"`)).toEqual(["apollo", "epoch", "max"]);
        expect(await list("not_after", `not_before <= "1969-12-31T23:59:59Z" AND not_after >= "1970-01-01T00:00:00Z"`)).toEqual(["epoch", "max"]);
        expect(await list("not_after desc", `not_after > "2038-01-19T03:14:07Z" AND not_after <= "2106-02-07T06:28:15Z"`)).toEqual([
          "y2106-last", "gen-first", "utc-last", "offset", "y2038-first",
        ]);
      });

      it("refuses a filter time without an offset (its instant would depend on the server's zone) and a certificate time without a zone", async () => {
        const err = await expectFailure(t.certificates.listCertificates({ parent, filter: `not_after < "2038-01-19T03:14:08"` }));
        expect([err.code, err.reason, err.fieldViolations.map((v) => v.field)]).toEqual([status.INVALID_ARGUMENT, "INVALID_FILTER", ["filter"]]);
        expect(err.message).toContain(`not_after time "2038-01-19T03:14:08" has no time zone offset; add Z for UTC or an offset such as +02:00`);
        const bad = await expectFailure(t.certificates.importCertificate({ parent, certificate: localTime }));
        expect([bad.code, bad.reason]).toEqual([status.INVALID_ARGUMENT, "INVALID_CERTIFICATE"]);
        expect(bad.message).toContain(`its notAfter "205001010000.55" has no time zone, so its instant is unknown; RFC 5280 requires Z`);
      });

      it("refuses a time outside the years 0001-9999 that a Timestamp (and every client) can carry", async () => {
        const year0 = caCert("/CN=year zero", "00000101000000Z", "20300101000000Z");
        expect(openssl(["x509", "-noout", "-startdate"], { input: year0 })).toMatch(/0000 GMT|Jan  1 00:00:00 0 GMT/);
        const e = await expectFailure(t.certificates.importCertificate({ parent, certificate: year0 }));
        expect([e.reason, e.fieldViolations[0].field]).toEqual(["INVALID_CERTIFICATE", "certificate"]);
        expect(e.message).toContain("notBefore (0000-01-01T00:00:00.000Z) is outside the years 0001 to 9999");
      });
    });
  });
});
