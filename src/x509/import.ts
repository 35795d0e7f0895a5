/**
 * The import use case's pure part: raw user text in, clean material and public metadata out, or one
 * InvalidArgumentError naming the proto field and saying how to fix it. Checks run in field order (certificate,
 * private_key, intermediates) so the first error a user sees is about the first field.
 */
import { createHash } from "node:crypto";
import type { CertificateMaterial, CertificateMetadata } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import {
  CertificateDefect,
  isSelfSigned,
  parseCertificateDer,
  publicKeyOf,
  serialHex,
  subjectAltNames,
  subjectCommonName,
  validity,
  type ParsedCertificate,
} from "./certificate.js";
import { orderIntermediates, type NumberedCertificate } from "./chain.js";
import { describePublicKey } from "./key-algorithm.js";
import { MAX_CERTIFICATE_BYTES, MAX_INTERMEDIATES, MAX_INTERMEDIATES_BYTES, MAX_PRIVATE_KEY_BYTES } from "./limits.js";
import { pemEncode, splitPemBlocks, type PemBlock } from "./pem.js";
import { keyMatches, parsePrivateKey, privateKeyToPkcs8Pem } from "./private-key.js";
import { X509Reason } from "./reasons.js";

/** Raw user text of an import request; "" means absent (certificate is required). */
export interface ImportInput {
  certificate: string;
  privateKey: string;
  intermediates: string;
}

/** Result of a successful {@link parseImport}. */
export interface ParsedImport {
  metadata: CertificateMetadata;
  /** Clean PEM: one certificate block; PKCS#8 key or ""; intermediates in issuing order or "". All LF-ended. */
  material: CertificateMaterial;
  hasPrivateKey: boolean;
  /** Distinct intermediates kept (after dropping duplicates and copies of the leaf). */
  intermediateCount: number;
}

/**
 * Labels that hold an X.509 certificate: `CERTIFICATE` (RFC 7468 §5.1) and the legacy `X509 CERTIFICATE` /
 * `X.509 CERTIFICATE` that RFC 7468 §5.3 says parsers may accept.
 */
/** Metadata read from the leaf alone (everything but the key description). */
type LeafFacts = Omit<CertificateMetadata, "keyAlgorithm" | "keySize" | "keyCurve">;

const CERTIFICATE_LABELS = new Set(["CERTIFICATE", "X509 CERTIFICATE", "X.509 CERTIFICATE"]);

/**
 * Validates and normalises an import request.
 *
 * Rules, each refused with an InvalidArgumentError whose `field` is the proto field:
 * - Sizes (checked first, before any decoding): certificate and private_key ≤ 64 KiB, intermediates ≤ 512 KiB
 *   → FIELD_TOO_LARGE.
 * - certificate: exactly one `CERTIFICATE` PEM block (RFC 7468 §5.1), surrounding text ignored; empty, no block,
 *   a block of another kind, or one that is not an RFC 5280 certificate → INVALID_CERTIFICATE; several →
 *   MULTIPLE_CERTIFICATES. Its key must be RSA 2048–8192 (else KEY_TOO_WEAK / UNSUPPORTED_KEY_ALGORITHM), EC
 *   P-256/P-384/P-521, Ed25519 or Ed448 (else UNSUPPORTED_KEY_ALGORITHM).
 * - private_key (optional): see parsePrivateKey (ENCRYPTED_PRIVATE_KEY, INVALID_PRIVATE_KEY); it must be the
 *   certificate's key (RFC 5280 §4.1.2.7) → PRIVATE_KEY_MISMATCH.
 * - intermediates (optional): `CERTIFICATE` blocks in any order; a bad block → INVALID_CERTIFICATE; exact
 *   duplicates and copies of the leaf are dropped; more than 20 left → TOO_MANY_INTERMEDIATES; reordered into
 *   issuing order (RFC 8446 §4.4.2), and one that does not link → INTERMEDIATE_NOT_IN_CHAIN.
 *
 * Expiry, key usage and path constraints are not judged: the service stores what the user holds.
 *
 * @returns metadata of the leaf (RFC 5280 fields, see CertificateMetadata) and the clean material.
 * @throws InvalidArgumentError as listed above; messages never contain key material or PEM bodies.
 */
export function parseImport(input: ImportInput): ParsedImport {
  checkSize("certificate", input.certificate, MAX_CERTIFICATE_BYTES);
  checkSize("private_key", input.privateKey, MAX_PRIVATE_KEY_BYTES);
  checkSize("intermediates", input.intermediates, MAX_INTERMEDIATES_BYTES);

  const { leaf, facts } = parseLeaf(input.certificate);
  const key = describePublicKey(leaf);

  const privateKey = parsePrivateKey(input.privateKey);
  if (privateKey !== undefined) {
    const publicKey = publicKeyOf(leaf);
    if (publicKey === undefined || !keyMatches(privateKey, publicKey)) {
      throw new InvalidArgumentError(
        X509Reason.PRIVATE_KEY_MISMATCH,
        "private_key",
        "private_key: the private key does not belong to the certificate (its public key differs from the certificate's); " +
          "supply the key the certificate was issued for (compare `openssl x509 -noout -pubkey -in cert.pem` with `openssl pkey -pubout -in key.pem`)",
      );
    }
  }

  const intermediates = orderIntermediates(leaf, parseIntermediates(input.intermediates, leaf));

  const metadata: CertificateMetadata = { ...facts, ...key };
  return {
    metadata,
    material: {
      certificatePem: pemEncode("CERTIFICATE", leaf.der),
      privateKeyPem: privateKey === undefined ? "" : privateKeyToPkcs8Pem(privateKey),
      intermediatesPem: intermediates.map((i) => pemEncode("CERTIFICATE", i.cert.der)).join(""),
    },
    hasPrivateKey: privateKey !== undefined,
    intermediateCount: intermediates.length,
  };
}

/**
 * The DER of the single certificate in a PEM text (RFC 7468 §5.1), e.g. stored `certificatePem`.
 *
 * @throws InvalidArgumentError INVALID_CERTIFICATE (field `certificate`) when the text holds no certificate
 *   block, a block of another kind, or malformed PEM; MULTIPLE_CERTIFICATES when it holds several.
 *   The DER itself is not decoded.
 */
export function certificateDerFromPem(pem: string): Buffer {
  return singleCertificateBlock(pem).der;
}

function checkSize(field: string, text: string, limit: number): void {
  const size = Buffer.byteLength(text, "utf8");
  if (size > limit) {
    throw new InvalidArgumentError(
      X509Reason.FIELD_TOO_LARGE,
      field,
      `${field}: ${size} bytes is larger than the limit of ${limit} bytes (${limit / 1024} KiB); remove anything that is not PEM data`,
      { metadata: { limitBytes: String(limit) } },
    );
  }
}

/** The user-facing part of a decoding failure; library messages stay in the cause (logs only). */
function defect(err: unknown): string {
  return err instanceof CertificateDefect ? err.message : "it could not be decoded as DER (RFC 5280 §4.1)";
}

function invalidCertificate(field: string, message: string, cause?: unknown): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, field, `${field}: ${message}`, { cause });
}

/** What to say about a non-certificate block where certificates are expected. */
function wrongBlock(field: string, block: PemBlock, position: number): InvalidArgumentError {
  const hint = /PRIVATE KEY/.test(block.label)
    ? "a private key belongs in the private_key field, not here"
    : 'only "CERTIFICATE" blocks are accepted here';
  return invalidCertificate(field, `PEM block ${position} is a "${block.label}" block; ${hint}`);
}

function singleCertificateBlock(text: string): PemBlock {
  if (text.trim() === "") {
    throw invalidCertificate("certificate", "the certificate is required; paste the PEM certificate (-----BEGIN CERTIFICATE-----)");
  }
  const blocks = splitPemBlocks(text, { field: "certificate", reason: X509Reason.INVALID_CERTIFICATE });
  blocks.forEach((b, i) => {
    if (!CERTIFICATE_LABELS.has(b.label)) throw wrongBlock("certificate", b, i + 1);
  });
  if (blocks.length === 0) {
    throw invalidCertificate(
      "certificate",
      'no PEM certificate found; paste the certificate in PEM form, from "-----BEGIN CERTIFICATE-----" to "-----END CERTIFICATE-----"',
    );
  }
  if (blocks.length > 1) {
    throw new InvalidArgumentError(
      X509Reason.MULTIPLE_CERTIFICATES,
      "certificate",
      `certificate: found ${blocks.length} certificates; put only the server (leaf) certificate here and the CA certificates that issued it in intermediates`,
      { metadata: { count: String(blocks.length) } },
    );
  }
  return blocks[0];
}

/** Decodes the leaf and reads the metadata that depends on it alone (sizes are checked by the caller). */
function parseLeaf(text: string): { leaf: ParsedCertificate; facts: LeafFacts } {
  const block = singleCertificateBlock(text);
  try {
    const leaf = parseCertificateDer(block.der);
    const facts: LeafFacts = {
      subjectCommonName: subjectCommonName(leaf),
      subject: leaf.subject,
      issuer: leaf.issuer,
      serialNumber: serialHex(leaf),
      ...validity(leaf),
      sans: subjectAltNames(leaf),
      sha256Fingerprint: leaf.sha256,
      selfSigned: isSelfSigned(leaf),
    };
    return { leaf, facts };
  } catch (err) {
    const message = `the PEM block is not a valid X.509 certificate: ${defect(err)}; export it again from its source or have it reissued`;
    throw invalidCertificate("certificate", message, err);
  }
}

/** Decodes the intermediates, drops exact duplicates and copies of the leaf, enforces the count limit. */
function parseIntermediates(text: string, leaf: ParsedCertificate): NumberedCertificate[] {
  if (text.trim() === "") return [];
  const field = "intermediates";
  const blocks = splitPemBlocks(text, { field, reason: X509Reason.INVALID_CERTIFICATE });
  if (blocks.length === 0) {
    throw invalidCertificate(field, 'no PEM certificate found; paste the CA certificates as "-----BEGIN CERTIFICATE-----" blocks');
  }
  const seen = new Set<string>([leaf.sha256]);
  const distinct: { block: PemBlock; position: number }[] = [];
  blocks.forEach((block, i) => {
    if (!CERTIFICATE_LABELS.has(block.label)) throw wrongBlock(field, block, i + 1);
    // Dedup on the bytes before decoding, so that a bundle of many copies costs hashing only.
    const digest = createHash("sha256").update(block.der).digest("hex");
    if (seen.has(digest)) return;
    seen.add(digest);
    distinct.push({ block, position: i + 1 });
  });
  if (distinct.length > MAX_INTERMEDIATES) {
    throw new InvalidArgumentError(
      X509Reason.TOO_MANY_INTERMEDIATES,
      field,
      `${field}: ${distinct.length} distinct certificates is more than the limit of ${MAX_INTERMEDIATES}; supply only the chain from the certificate's issuer up to (at most) the root`,
      { metadata: { limit: String(MAX_INTERMEDIATES) } },
    );
  }
  return distinct.map(({ block, position }) => {
    try {
      return { cert: parseCertificateDer(block.der), position };
    } catch (err) {
      throw invalidCertificate(field, `certificate ${position} is not a valid X.509 certificate: ${defect(err)}`, err);
    }
  });
}
