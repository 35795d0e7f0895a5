/**
 * One X.509 certificate (RFC 5280) decoded twice: by node:crypto (OpenSSL: public key, signature checks, issuer
 * matching) and by @peculiar/x509 (structured names, SANs, serial bytes, dates). A certificate either library
 * refuses is refused; the metadata we keep in the clear comes from here.
 */
import "reflect-metadata";
import { X509Certificate as NodeCertificate, createHash, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import * as px509 from "@peculiar/x509";
import type { SubjectAltNames } from "../domain/certificate.js";
import { contentOf, decodeOid, derChildren, oidOf, type Tlv } from "./der.js";
import { decodeString, formatDn, formatDnDer } from "./dn.js";

/** @peculiar/x509 certificate that also exposes the raw serial INTEGER content bytes. */
class PeculiarCertificate extends px509.X509Certificate {
  /** RFC 5280 §4.1.2.7 subjectPublicKeyInfo as decoded ASN.1 (algorithm OID and the key's BIT STRING value). */
  get subjectPublicKeyInfo() {
    return this.asn.tbsCertificate.subjectPublicKeyInfo;
  }

  /** RFC 5280 §4.1.2.2 serial as DER INTEGER content bytes; the library's `serialNumber` drops a leading 0x00. */
  get serialContent(): Buffer {
    return Buffer.from(this.asn.tbsCertificate.serialNumber);
  }

  /**
   * True when the SPKI algorithm parameters are an OBJECT IDENTIFIER (tag 0x06): for EC keys that is the
   * namedCurve choice of RFC 5480 §2.1.1, as opposed to explicit parameters (SEQUENCE) or implicitCurve (NULL).
   */
  get spkiParametersAreOid(): boolean {
    const params = this.asn.tbsCertificate.subjectPublicKeyInfo.algorithm.parameters;
    return params != null && params.byteLength > 0 && new Uint8Array(params)[0] === 0x06;
  }
}

/**
 * A certificate defect worth telling the user about as such (the message is safe to show: no certificate
 * bytes). Other decoding failures get a generic message.
 */
export class CertificateDefect extends Error {}

/** A decoded certificate and the facts every caller needs; internal to src/x509. */
export interface ParsedCertificate {
  /** The DER exactly as supplied (also what node re-encodes; see parseCertificateDer). */
  der: Buffer;
  node: NodeCertificate;
  peculiar: PeculiarCertificate;
  /** SHA-256 of the DER, lowercase hex. */
  sha256: string;
  /** RFC 4514 subject and issuer. */
  subject: string;
  issuer: string;
  /** DER of the subject and issuer Names, for exact comparison. */
  subjectDer: Buffer;
  issuerDer: Buffer;
}

/**
 * Decodes a DER certificate (RFC 5280 §4.1).
 *
 * @returns the parsed certificate.
 * @throws Error, to be wrapped by the caller with its field (a CertificateDefect when the message is meant for
 *   users): when node:crypto or @peculiar/x509 cannot decode it; when the bytes carry trailing data or are not
 *   DER (node re-encodes a different byte string, and the SHA-256 fingerprint must be of the one canonical
 *   encoding, X.690 §10); when a required field is missing.
 */
export function parseCertificateDer(der: Buffer): ParsedCertificate {
  const node = new NodeCertificate(der);
  if (!node.raw.equals(der)) {
    throw new CertificateDefect("it has trailing data after the certificate or is not DER encoded (X.690 §10)");
  }
  const peculiar = new PeculiarCertificate(new Uint8Array(der));
  const parsed: ParsedCertificate = {
    der,
    node,
    peculiar,
    sha256: createHash("sha256").update(der).digest("hex"),
    subject: formatDn(peculiar.subjectName),
    issuer: formatDn(peculiar.issuerName),
    subjectDer: Buffer.from(peculiar.subjectName.toArrayBuffer()),
    issuerDer: Buffer.from(peculiar.issuerName.toArrayBuffer()),
  };
  // Touch the lazily decoded fields now so that a malformed certificate fails here, not half-way through import.
  void peculiar.notBefore;
  void peculiar.notAfter;
  const spki = peculiar.subjectPublicKeyInfo;
  if (spki.algorithm.algorithm === EC_PUBLIC_KEY_OID && !isEncodedPoint(new Uint8Array(spki.subjectPublicKey))) {
    throw new CertificateDefect("its EC public key is not an encoded curve point (RFC 5480 §2.2; the point at infinity is not a key)");
  }
  return parsed;
}

/** DER of OID 1.2.840.10045.2.1 (id-ecPublicKey, RFC 5480 §2.1.1). */
const EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1";

/**
 * True for an encoded EC curve point (SEC 1 §2.3.3: 0x04 and two equal halves uncompressed, 0x02/0x03 and one
 * coordinate compressed), never the point at infinity (a single 0x00): Node 20 aborts the whole process when
 * asked about such a key (asymmetricKeyDetails, JWK export), so certificate and private keys are checked first.
 */
export function isEncodedPoint(point: Uint8Array): boolean {
  return (point[0] === 0x04 && point.length >= 3 && point.length % 2 === 1) || ((point[0] === 0x02 || point[0] === 0x03) && point.length >= 2);
}

/** Subject CN (OID 2.5.4.3): the first one in certificate order, or "" when the subject has none. */
export function subjectCommonName(cert: ParsedCertificate): string {
  return cert.peculiar.subjectName.getField("CN")[0] ?? "";
}

/**
 * Serial as lowercase hex of the DER INTEGER content bytes (RFC 5280 §4.1.2.2), two's complement, so a positive
 * serial whose first byte is >= 0x80 keeps its 00 sign byte and a (non-conforming) negative serial stays as encoded.
 */
export function serialHex(cert: ParsedCertificate): string {
  return cert.peculiar.serialContent.toString("hex");
}

/** The DER elements of the TBSCertificate (RFC 5280 §4.1) that the metadata reads: validity and extensions. */
function tbsParts(cert: ParsedCertificate): { notBefore: Tlv; notAfter: Tlv; extensions: Tlv[] } {
  const der = cert.der;
  const [certificate] = derChildren(der);
  const [tbs] = derChildren(der, certificate);
  const fields = derChildren(der, tbs);
  // version [0] EXPLICIT is absent for v1 certificates; then serial, signature, issuer, validity.
  const validityAt = fields[0]?.tag === 0xa0 ? 4 : 3;
  const validitySeq = fields[validityAt];
  const times = validitySeq?.tag === 0x30 ? derChildren(der, validitySeq) : [];
  if (times.length !== 2) throw new CertificateDefect("its validity is not a SEQUENCE of two times (RFC 5280 §4.1.2.5)");
  const extField = fields.find((f) => f.tag === 0xa3);
  const [extSeq] = extField ? derChildren(der, extField) : [];
  return { notBefore: times[0], notAfter: times[1], extensions: extSeq ? derChildren(der, extSeq) : [] };
}

/**
 * One Time (RFC 5280 §4.1.2.5) as a Date, read from its DER. RFC 5280 asks for `YYMMDDHHMMSSZ` (UTCTime, years
 * 1950-2049) and `YYYYMMDDHHMMSSZ` (GeneralizedTime); we also accept the other X.680 forms whose instant is
 * unambiguous (seconds or GeneralizedTime minutes left out, a `+hh[mm]`/`-hh[mm]` offset, fractions of a second), and
 * refuse a GeneralizedTime without a zone: it is local time of an unknown place, and reading it in the server's
 * zone (as asn1js does) would make the stored instant depend on where the server runs.
 */
function readTime(der: Buffer, tlv: Tlv, field: "notBefore" | "notAfter"): Date {
  const text = contentOf(der, tlv).toString("latin1");
  const bad = (why: string) => new CertificateDefect(`its ${field} ${JSON.stringify(text)} ${why} (RFC 5280 §4.1.2.5)`);
  let m: RegExpExecArray | null;
  let year: number;
  let rest: string[];
  let fraction = "";
  let zone: string;
  if (tlv.tag === 0x17) {
    m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(Z|[+-]\d{4})$/.exec(text);
    if (!m) throw bad("is not a UTCTime of the form YYMMDDHHMMSSZ");
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy; // §4.1.2.5.1
    rest = [m[2], m[3], m[4], m[5], m[6] ?? "00"];
    zone = m[7];
  } else if (tlv.tag === 0x18) {
    m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})?(\d{2})?(?:[.,](\d+))?(Z|[+-]\d{2}(?:\d{2})?)?$/.exec(text);
    if (!m) throw bad("is not a GeneralizedTime of the form YYYYMMDDHHMMSSZ");
    if (m[8] === undefined) throw bad("has no time zone, so its instant is unknown; RFC 5280 requires Z");
    if (m[7] !== undefined && m[6] === undefined) throw bad("has a fraction of an hour or minute");
    year = Number(m[1]);
    rest = [m[2], m[3], m[4], m[5] ?? "00", m[6] ?? "00"];
    fraction = m[7] ?? "";
    zone = m[8].length === 3 ? `${m[8]}00` : m[8];
  } else {
    throw bad("is neither a UTCTime nor a GeneralizedTime");
  }
  const [month, day, hour, minute, second] = rest.map(Number);
  const [offH, offM] = zone === "Z" ? [0, 0] : [Number(zone.slice(1, 3)), Number(zone.slice(3, 5))];
  const offsetMinutes = (zone[0] === "-" ? -1 : 1) * (offH * 60 + offM);
  const ms = Number(`0.${fraction || "0"}`) * 1000;
  const d = new Date(0);
  d.setUTCFullYear(year, month - 1, day); // setUTCFullYear, not Date.UTC: Date.UTC maps years 0-99 to 1900-1999
  d.setUTCHours(hour, minute, second, Math.floor(ms));
  if (d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59 || offH > 23 || offM > 59) {
    throw bad("is not a valid calendar time");
  }
  return new Date(d.getTime() - offsetMinutes * 60_000);
}

/**
 * notBefore / notAfter (RFC 5280 §4.1.2.5), truncated to whole seconds (§4.1.2.5.2 forbids fractions), read from
 * the DER with readTime (never in the server's time zone).
 * @throws CertificateDefect when a time is malformed or has no zone.
 */
export function validity(cert: ParsedCertificate): { notBefore: Date; notAfter: Date } {
  const second = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);
  let parts: ReturnType<typeof tbsParts>;
  try {
    parts = tbsParts(cert);
  } catch (err) {
    if (err instanceof CertificateDefect) throw err;
    throw new CertificateDefect("its TBSCertificate could not be read as DER (RFC 5280 §4.1)");
  }
  return { notBefore: second(readTime(cert.der, parts.notBefore, "notBefore")), notAfter: second(readTime(cert.der, parts.notAfter, "notAfter")) };
}

const SAN_OID = "2.5.29.17";
/** Universal tags of the otherName values shown as text (proto OtherName.value): UTF8, IA5, Printable, BMP. */
const OTHER_NAME_TEXT_TAGS = [0x0c, 0x16, 0x13, 0x1e] as const;

/**
 * Subject alternative names by type (RFC 5280 §4.2.1.6), in certificate order within each type:
 * - dNSName, rfc822Name, uniformResourceIdentifier: the IA5String text as @peculiar/x509 decodes it;
 * - iPAddress: normalised (see normalizeIp); values that are not 4 or 16 bytes are skipped;
 * - directoryName: RFC 4514 string (formatDnDer), one entry whatever its commas;
 * - registeredID: dotted OID;
 * - otherName: `{ typeId: dotted OID, value }`, the value as text when it is a UTF8String, IA5String,
 *   PrintableString or BMPString, else `#` and the lowercase hex of its DER. So a Microsoft UPN
 *   (1.3.6.1.4.1.311.20.2.3) is its text and a Microsoft GUID (1.3.6.1.4.1.311.25.1, an OCTET STRING) is
 *   `#0410` and its 16 bytes, whatever names @peculiar/x509 gives them (`upn`, `guid`);
 * - x400Address and ediPartyName: otherName entries with typeId `x400Address` / `ediPartyName` and as value `#`
 *   and the hex of the ORAddress / EDIPartyName SEQUENCE's DER (the [3]/[5] implicit tag read back as the
 *   universal SEQUENCE tag 30). @peculiar/x509 2.2 throws on both, so the extension is walked here.
 *
 * @throws CertificateDefect when the certificate carries more than one subjectAltName extension (RFC 5280 §4.2)
 *   or the extension is not a well-formed GeneralNames.
 */
export function subjectAltNames(cert: ParsedCertificate): SubjectAltNames {
  const sans: SubjectAltNames = { dns: [], ip: [], email: [], uri: [], directoryName: [], registeredId: [], otherName: [] };
  const der = cert.der;
  let values: Buffer[];
  try {
    values = tbsParts(cert).extensions.flatMap((ext) => {
      const parts = derChildren(der, ext);
      if (parts[0]?.tag !== 0x06 || oidOf(der, parts[0]) !== SAN_OID) return [];
      const octets = parts[parts.length - 1];
      if (octets.tag !== 0x04) throw new Error("extnValue is not an OCTET STRING");
      return [contentOf(der, octets)];
    });
  } catch (err) {
    throw new CertificateDefect(`its extensions could not be read as DER (RFC 5280 §4.1.2.9): ${(err as Error).message}`);
  }
  if (values.length > 1) throw new CertificateDefect("it has more than one subjectAltName extension (RFC 5280 §4.2 allows one)");
  if (values.length === 0) return sans;
  const value = values[0];
  try {
    const [seq, ...trailing] = derChildren(value);
    if (!seq || seq.tag !== 0x30 || trailing.length > 0) throw new Error("it is not one SEQUENCE");
    for (const gn of derChildren(value, seq)) addGeneralName(sans, value, gn);
  } catch (err) {
    if (err instanceof CertificateDefect) throw err;
    throw new CertificateDefect(`its subjectAltName extension is not a valid GeneralNames (RFC 5280 §4.2.1.6): ${(err as Error).message}`);
  }
  return sans;
}

/** Adds one GeneralName (X.690 element `gn` of `buf`) to `sans`. @throws Error when it is malformed. */
function addGeneralName(sans: SubjectAltNames, buf: Buffer, gn: Tlv): void {
  const content = contentOf(buf, gn);
  const hexAsSequence = () => `#30${Buffer.from(buf.subarray(gn.start + 1, gn.end)).toString("hex")}`;
  switch (gn.tag) {
    case 0xa0: {
      // otherName: SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY } with the implicit [0] tag.
      const parts = derChildren(buf, gn);
      const inner = parts.length === 2 && parts[0].tag === 0x06 && parts[1].tag === 0xa0 ? derChildren(buf, parts[1]) : [];
      if (inner.length !== 1) throw new Error("an otherName must be { OID, [0] value }");
      const v = inner[0];
      const text = decodeString(v.tag, contentOf(buf, v), OTHER_NAME_TEXT_TAGS);
      sans.otherName.push({
        typeId: oidOf(buf, parts[0]),
        value: text ?? `#${buf.subarray(v.start, v.end).toString("hex")}`,
      });
      return;
    }
    case 0x81:
    case 0x82:
    case 0x86: {
      // IA5String types: decoded by @peculiar/x509 as before (one octet, one character).
      const { value } = new px509.GeneralName(new Uint8Array(buf.subarray(gn.start, gn.end)));
      (gn.tag === 0x81 ? sans.email : gn.tag === 0x82 ? sans.dns : sans.uri).push(value);
      return;
    }
    case 0x87: {
      // Only 4 or 16 octets are one address; other lengths (a CIDR block, garbage) are skipped.
      if (content.length !== 4 && content.length !== 16) return;
      const ip = normalizeIp(new px509.GeneralName(new Uint8Array(buf.subarray(gn.start, gn.end))).value);
      if (ip !== undefined) sans.ip.push(ip);
      return;
    }
    case 0x88:
      sans.registeredId.push(decodeOid(content));
      return;
    case 0xa3:
      derChildren(buf, gn); // well-formed contents
      sans.otherName.push({ typeId: "x400Address", value: hexAsSequence() });
      return;
    case 0xa4: {
      // directoryName [4] is EXPLICIT (a CHOICE): its contents are the Name.
      sans.directoryName.push(formatDnDer(content));
      return;
    }
    case 0xa5:
      derChildren(buf, gn);
      sans.otherName.push({ typeId: "ediPartyName", value: hexAsSequence() });
      return;
    default:
      throw new Error(`GeneralName tag 0x${gn.tag.toString(16)} is not one of RFC 5280's`);
  }
}

/**
 * The library prints 4-byte addresses dotted and 16-byte ones in RFC 5952 §4 form (lowercase, no leading zeros,
 * longest zero run of two or more groups as `::`). We add RFC 5952 §5 (IPv4-mapped as `::ffff:a.b.c.d`) and drop
 * anything that is not a single address (other lengths come out as CIDR or hex).
 */
function normalizeIp(value: string): string | undefined {
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(value);
  if (mapped) {
    const hi = parseInt(mapped[1], 16);
    const lo = parseInt(mapped[2], 16);
    return `::ffff:${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return isIP(value) === 0 ? undefined : value;
}

/** Verifies `cert`'s signature with `key`; any library failure (unsupported algorithm, bad key) counts as "no". */
export function signedBy(cert: ParsedCertificate, key: KeyObject): boolean {
  try {
    return cert.node.verify(key);
  } catch {
    return false;
  }
}

/** The certificate's public key as a node KeyObject, or undefined when OpenSSL cannot load it. */
export function publicKeyOf(cert: ParsedCertificate): KeyObject | undefined {
  try {
    return cert.node.publicKey;
  } catch {
    return undefined;
  }
}

/**
 * True when `child`'s issuer name is `issuer`'s subject name (byte for byte, else as RFC 5280 §7.1 compares
 * names): the name half of "issued by", without the signature.
 */
export function namesIssuer(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  if (child.issuerDer.equals(issuer.subjectDer)) return true;
  try {
    return child.node.checkIssued(issuer.node);
  } catch {
    return false;
  }
}

/**
 * True when `issuer` issued `child` (RFC 5280 §6.1.3 (a)(1) and (a)(4)): the child's issuer name equals the
 * issuer's subject (byte-equal, or equal under OpenSSL's RFC 5280 §7.1 comparison via checkIssued) and the child's
 * signature verifies with the issuer's public key. Key usage, validity and constraints are not judged here:
 * we store the chain the user gave, we do not validate it.
 */
export function issuedBy(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  if (!namesIssuer(child, issuer)) return false;
  const key = publicKeyOf(issuer);
  return key !== undefined && affordable(key) && signedBy(child, key);
}

/** True when `issuer`'s public key is one signatures are verified with (see `affordable`), so a failed check means a bad signature. */
export function verifiesSignatures(issuer: ParsedCertificate): boolean {
  const key = publicKeyOf(issuer);
  return key !== undefined && affordable(key);
}

/**
 * True for the issuer keys we verify with: EC, EdDSA, and RSA up to 16384 bits with a public exponent up to
 * 2^32 (CA/B Forum BR §6.1.6 asks for 2^16+1..2^256−1; real CAs use 65537). Other keys (DSA, huge RSA) make each
 * verification costly, and a chain of look-alike issuers would cost hundreds of them on the event loop.
 */
function affordable(key: KeyObject): boolean {
  switch (key.asymmetricKeyType) {
    case "ec":
    case "ed25519":
    case "ed448":
      return true;
    case "rsa":
    case "rsa-pss": {
      const d = key.asymmetricKeyDetails;
      return (d?.modulusLength ?? 0) <= 16384 && (d?.publicExponent ?? 0n) <= 2n ** 32n;
    }
    default:
      // DSA (up to 10,000-bit p, 13 ms a verification) and anything else no CA of ours would use.
      return false;
  }
}

/** True when the subject equals the issuer and the signature verifies with the certificate's own key. */
export function isSelfSigned(cert: ParsedCertificate): boolean {
  return issuedBy(cert, cert);
}
