/**
 * Certificate entity and the metadata kept in the clear (DESIGN.md "Envelope format": metadata is stored
 * unencrypted so it can be listed and filtered; every PEM body is encrypted).
 */

/** Key algorithm family of the certificate's subject public key. */
export type KeyAlgorithm = "RSA" | "EC" | "ED25519" | "ED448";

/** Subject alternative names by type (RFC 5280 §4.2.1.6). */
export interface SubjectAltNames {
  dns: string[];
  /** IPv4 dotted or IPv6 in RFC 5952 form. */
  ip: string[];
  email: string[];
  uri: string[];
}

/** Metadata derived from an X.509 certificate (RFC 5280) and its key. All values are public. */
export interface CertificateMetadata {
  /** Subject CN, or "" when the subject has none. */
  subjectCommonName: string;
  /** Full subject DN in RFC 4514 string form. */
  subject: string;
  /** Full issuer DN in RFC 4514 string form. */
  issuer: string;
  /** Serial number as lowercase hex of its DER INTEGER content bytes (two's complement, no separators). */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  sans: SubjectAltNames;
  keyAlgorithm: KeyAlgorithm;
  /** RSA modulus size in bits; 0 for other algorithms. */
  keySize: number;
  /** EC curve as NIST name (`P-256`, `P-384`, `P-521`); "" for other algorithms. */
  keyCurve: string;
  /** SHA-256 of the certificate DER, lowercase hex. */
  sha256Fingerprint: string;
  /** True when subject equals issuer and the signature verifies with the certificate's own key. */
  selfSigned: boolean;
}

/** Lifecycle state of a stored certificate, derived from the clock. */
export type CertificateState = "ACTIVE";

/** A stored certificate version's secret material in the clear (only ever in memory). */
export interface CertificateMaterial {
  /** One PEM CERTIFICATE block, LF line endings. */
  certificatePem: string;
  /** PKCS#8 PEM (`PRIVATE KEY`), or "" when no key was imported. */
  privateKeyPem: string;
  /** Intermediates in issuing order (the leaf's issuer first), PEM blocks concatenated; "" when none. */
  intermediatesPem: string;
}

/** Validity of a certificate at an instant (RFC 5280 §4.1.2.5: notBefore and notAfter are inclusive). */
export type ValidityState = "VALID" | "EXPIRED" | "NOT_YET_VALID";

/** Where `now` falls in the certificate's validity period. */
export function validityAt(m: Pick<CertificateMetadata, "notBefore" | "notAfter">, now: Date): ValidityState {
  if (now.getTime() > m.notAfter.getTime()) return "EXPIRED";
  if (now.getTime() < m.notBefore.getTime()) return "NOT_YET_VALID";
  return "VALID";
}
