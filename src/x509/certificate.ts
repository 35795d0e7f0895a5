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
import { formatDn } from "./dn.js";

/** @peculiar/x509 certificate that also exposes the raw serial INTEGER content bytes. */
class PeculiarCertificate extends px509.X509Certificate {
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
  return parsed;
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

/** notBefore / notAfter (RFC 5280 §4.1.2.5), truncated to whole seconds (§4.1.2.5.2 forbids fractions). */
export function validity(cert: ParsedCertificate): { notBefore: Date; notAfter: Date } {
  const second = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);
  return { notBefore: second(cert.peculiar.notBefore), notAfter: second(cert.peculiar.notAfter) };
}

/**
 * Subject alternative names by type (RFC 5280 §4.2.1.6), in certificate order. Name types we do not keep
 * (directoryName, otherName, registeredID, …) are skipped, and so are iPAddress values that are not 4 or 16 bytes.
 *
 * @throws CertificateDefect when the certificate carries more than one subjectAltName extension (RFC 5280 §4.2).
 */
export function subjectAltNames(cert: ParsedCertificate): SubjectAltNames {
  const sans: SubjectAltNames = { dns: [], ip: [], email: [], uri: [] };
  const exts = cert.peculiar.getExtensions(px509.SubjectAlternativeNameExtension);
  if (exts.length > 1) throw new CertificateDefect("it has more than one subjectAltName extension (RFC 5280 §4.2 allows one)");
  for (const name of exts[0]?.names.items ?? []) {
    switch (name.type) {
      case "dns":
        sans.dns.push(name.value);
        break;
      case "email":
        sans.email.push(name.value);
        break;
      case "url":
        sans.uri.push(name.value);
        break;
      case "ip": {
        const ip = normalizeIp(name.value);
        if (ip !== undefined) sans.ip.push(ip);
        break;
      }
      default:
        break;
    }
  }
  return sans;
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
 * True when `issuer` issued `child` (RFC 5280 §6.1.3 (a)(1) and (a)(4)): the child's issuer name equals the
 * issuer's subject (byte-equal, or equal under OpenSSL's RFC 5280 §7.1 comparison via checkIssued) and the child's
 * signature verifies with the issuer's public key. Key usage, validity and constraints are not judged here:
 * we store the chain the user gave, we do not validate it.
 */
export function issuedBy(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  let namesMatch = child.issuerDer.equals(issuer.subjectDer);
  if (!namesMatch) {
    try {
      namesMatch = child.node.checkIssued(issuer.node);
    } catch {
      namesMatch = false;
    }
  }
  if (!namesMatch) return false;
  const key = publicKeyOf(issuer);
  return key !== undefined && signedBy(child, key);
}

/** True when the subject equals the issuer and the signature verifies with the certificate's own key. */
export function isSelfSigned(cert: ParsedCertificate): boolean {
  return issuedBy(cert, cert);
}
