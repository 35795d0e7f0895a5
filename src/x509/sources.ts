/**
 * Certificates out of whatever the user pasted or uploaded: PEM text with any mix of `CERTIFICATE` blocks
 * (RFC 7468 §5.1 and the legacy labels of §5.3), OpenSSL `TRUSTED CERTIFICATE` blocks, PKCS#7 bundles
 * (`.p7b`, RFC 2315 §9.1 degenerate SignedData) and binary DER. Blocks that are not certificates are named
 * precisely (a CSR, a public key, a CRL), and private keys found among them are handed back to the caller.
 * Nothing is decoded as X.509 here: that happens after de-duplication and size checks (see import.ts).
 */
import "reflect-metadata";
import { X509Certificates } from "@peculiar/x509";
import type { ImportRepair } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { readTlv } from "./der.js";
import { looksLikePemText, splitPemBlocks, type PemBlock } from "./pem.js";
import { isPrivateKeyLabel } from "./private-key.js";
import { X509Reason } from "./reasons.js";

/** One certificate's DER and where it came from, for error messages ("certificate 2 in intermediates"). */
export interface CertificateItem {
  der: Buffer;
  field: string;
  /** 1-based position among the certificates found in `field`. */
  position: number;
}

/** Certificates found in one field, plus private-key blocks met on the way and repairs made. */
export interface FoundCertificates {
  items: CertificateItem[];
  keyBlocks: PemBlock[];
  repairs: ImportRepair[];
}

/** Labels that hold one X.509 certificate: RFC 7468 §5.1 `CERTIFICATE` and the §5.3 legacy spellings. */
const CERTIFICATE_LABELS = new Set(["CERTIFICATE", "X509 CERTIFICATE", "X.509 CERTIFICATE"]);

/** PKCS#7 / CMS labels (RFC 7468 §8, §9). */
const PKCS7_LABELS = new Set(["PKCS7", "PKCS #7 SIGNED DATA", "CMS"]);

function invalid(field: string, message: string): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, field, `${field}: ${message}`);
}

/** What to say about a block that is not a certificate. */
function notACertificate(field: string, label: string, position: number): InvalidArgumentError {
  const what: Record<string, string> = {
    "CERTIFICATE REQUEST":
      "is a certificate signing request (CSR): it is what you send to a CA, not the certificate the CA returns; paste the issued certificate",
    "NEW CERTIFICATE REQUEST":
      "is a certificate signing request (CSR): it is what you send to a CA, not the certificate the CA returns; paste the issued certificate",
    "PUBLIC KEY": "is a public key, not a certificate; paste the certificate (-----BEGIN CERTIFICATE-----)",
    "RSA PUBLIC KEY": "is a public key, not a certificate; paste the certificate (-----BEGIN CERTIFICATE-----)",
    "X509 CRL": "is a certificate revocation list, not a certificate; remove it",
  };
  const hint = what[label] ?? `is not a certificate; only "CERTIFICATE" (or PKCS7) blocks are accepted here`;
  return invalid(field, `PEM block ${position} ("${label}") ${hint}`);
}

/**
 * The first DER element of `der` (X.690 §8.1): an OpenSSL TRUSTED CERTIFICATE is a certificate followed by
 * trust settings. undefined when `der` does not start with a well-formed SEQUENCE.
 */
function firstElement(der: Buffer): Buffer | undefined {
  try {
    const tlv = readTlv(der, 0);
    return tlv.tag === 0x30 ? der.subarray(0, tlv.end) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The certificates of a PKCS#7 SignedData (RFC 2315 §9.1), or undefined when `der` is not one.
 */
export function pkcs7Certificates(der: Buffer): Buffer[] | undefined {
  try {
    const set = new X509Certificates(new Uint8Array(der));
    return set.map((c) => Buffer.from(c.rawData));
  } catch {
    return undefined;
  }
}

/**
 * Certificates in a PEM text field.
 *
 * @param text - user text (BOM and escaped line breaks are undone by splitPemBlocks).
 * @param field - request field, for errors and positions.
 * @param allowKeys - collect private-key blocks instead of refusing them (the `certificate` field, where a
 *   combined PEM may carry the key).
 * @returns items in text order, key blocks, and repairs (PKCS#7 unpacked, TRUSTED CERTIFICATE read).
 * @throws InvalidArgumentError INVALID_CERTIFICATE for malformed PEM or a block that is not a certificate,
 *   naming what it is (CSR, public key, CRL, private key where keys are not allowed).
 */
export function certificatesFromText(text: string, field: string, allowKeys: boolean): FoundCertificates {
  const blocks = splitPemBlocks(text, { field, reason: X509Reason.INVALID_CERTIFICATE });
  const found: FoundCertificates = { items: [], keyBlocks: [], repairs: [] };
  const add = (der: Buffer) => found.items.push({ der, field, position: found.items.length + 1 });
  blocks.forEach((block, i) => {
    const position = i + 1;
    if (CERTIFICATE_LABELS.has(block.label)) {
      add(block.der);
    } else if (block.label === "TRUSTED CERTIFICATE") {
      const cert = firstElement(block.der);
      if (!cert) throw invalid(field, `PEM block ${position} ("TRUSTED CERTIFICATE") does not start with a certificate; export it again with \`openssl x509\``);
      add(cert);
      found.repairs.push({
        kind: "PEM_LABEL_CORRECTED",
        description: `${field}: the OpenSSL "TRUSTED CERTIFICATE" block ${position} was read as a plain certificate (its trust settings were dropped)`,
      });
    } else if (PKCS7_LABELS.has(block.label)) {
      const certs = pkcs7Certificates(block.der);
      if (!certs) {
        throw invalid(
          field,
          `PEM block ${position} ("${block.label}") could not be read as a PKCS#7 certificate bundle (damaged, or far more certificates than a chain has); export only the chain again, or paste its certificates as CERTIFICATE blocks`,
        );
      }
      if (certs.length === 0) {
        throw invalid(field, `PEM block ${position} ("${block.label}") holds no certificates; export the bundle again, or paste its certificates as CERTIFICATE blocks`);
      }
      certs.forEach(add);
      found.repairs.push({ kind: "PKCS7_UNPACKED", description: `${field}: ${certs.length} certificate(s) were taken out of the PKCS#7 bundle in block ${position}` });
    } else if (isPrivateKeyLabel(block.label)) {
      if (!allowKeys) {
        throw invalid(field, `PEM block ${position} is a "${block.label}" block; a private key belongs in the private_key field, not here`);
      }
      found.keyBlocks.push(block);
    } else {
      throw notACertificate(field, block.label, position);
    }
  });
  return found;
}

/**
 * Certificates in a binary field (`certificate_der`): one DER certificate, a DER PKCS#7 bundle, or PEM text
 * sent as bytes (read as PEM).
 *
 * @throws InvalidArgumentError INVALID_CERTIFICATE when the bytes are none of those (with a hint when they look
 *   like a PKCS#12 file).
 */
export function certificatesFromBytes(bytes: Buffer, field: string): FoundCertificates {
  if (looksLikePemText(bytes)) {
    return certificatesFromText(bytes.toString("utf8"), field, true);
  }
  const whole = firstElement(bytes);
  if (whole && whole.length === bytes.length) {
    const certs = pkcs7Certificates(bytes);
    if (certs && certs.length > 0) {
      return {
        items: certs.map((der, i) => ({ der, field, position: i + 1 })),
        keyBlocks: [],
        repairs: [{ kind: "PKCS7_UNPACKED", description: `${field}: ${certs.length} certificate(s) were taken out of the DER PKCS#7 bundle` }],
      };
    }
    return {
      items: [{ der: bytes, field, position: 1 }],
      keyBlocks: [],
      repairs: [{ kind: "DER_CONVERTED", description: `${field}: the DER certificate was converted to PEM` }],
    };
  }
  throw invalid(field, "the bytes are not one DER certificate (X.690 SEQUENCE with nothing after it), a PKCS#7 bundle or PEM text; for a .pfx/.p12 file use the pkcs12 field");
}
