/**
 * Certificate entity and the metadata kept in the clear: metadata is stored unencrypted so it can be listed and
 * filtered; every PEM body is encrypted.
 */

/** Key algorithm family of the certificate's subject public key. */
export type KeyAlgorithm = "RSA" | "EC" | "ED25519" | "ED448";

/**
 * A subject alternative name without a list of its own: an RFC 5280 `otherName` (typeId is its dotted type-id), or
 * an `x400Address` / `ediPartyName` (typeId is that word).
 */
export interface OtherName {
  typeId: string;
  /** The text of a UTF8String, IA5String, PrintableString or BMPString value; otherwise `#` + lowercase hex of its DER. */
  value: string;
}

/**
 * Subject alternative names by type (RFC 5280 §4.2.1.6), each list in certificate order. Stored as JSON: rows
 * written before directoryName, registeredId and otherName existed lack those keys, and read them as empty.
 */
export interface SubjectAltNames {
  dns: string[];
  /** IPv4 dotted or IPv6 in RFC 5952 form. */
  ip: string[];
  email: string[];
  uri: string[];
  /** RFC 4514 strings. */
  directoryName: string[];
  /** Dotted object identifiers. */
  registeredId: string[];
  otherName: OtherName[];
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

/**
 * Something the import changed in the submitted material to store it in clean form (proto ImportRepair.Kind
 * without its prefix).
 */
export type RepairKind =
  | "CHAIN_SPLIT"
  | "LEAF_COPY_DROPPED"
  | "DUPLICATE_INTERMEDIATES_DROPPED"
  | "INTERMEDIATES_REORDERED"
  | "ROOT_DROPPED"
  | "PKCS12_UNPACKED"
  | "DER_CONVERTED"
  | "PRIVATE_KEY_DECRYPTED"
  | "PRIVATE_KEY_CONVERTED"
  | "PEM_LABEL_CORRECTED"
  | "TEXT_NORMALIZED"
  | "PRIVATE_KEY_MOVED"
  | "PKCS7_UNPACKED";

/** One change made by the import, with a sentence for a person (never key material). */
export interface ImportRepair {
  kind: RepairKind;
  description: string;
}

/** What to do with a self-signed root among the intermediates: keep it last, or drop it (RFC 8446 §4.4.2). */
export type RootCertificatePolicy = "keep" | "drop";

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
