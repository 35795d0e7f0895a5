/**
 * Which subject public keys we accept (an allow-list, so that a new algorithm is refused until someone decides):
 * RSA 2048–8192 bits, EC on P-256/P-384/P-521 (named, or explicit parameters equal to those curves'), Ed25519, Ed448. These are what TLS 1.2/1.3
 * stacks commonly use for certificates (RFC 8446 §4.2.3) and what the CA/Browser Forum Baseline Requirements
 * §6.1.5 allow, plus EdDSA (RFC 8410).
 *
 * RSA-PSS keys (id-RSASSA-PSS SPKI, RFC 4055 §1.2) are refused: most TLS libraries and load balancers cannot
 * use such a certificate, and storing it would fail later, far from the user. Plain rsaEncryption keys used with
 * PSS signatures are ordinary RSA and accepted.
 */
import type { KeyAlgorithm } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { publicKeyOf, type ParsedCertificate } from "./certificate.js";
import { X509Reason } from "./reasons.js";

/** Smallest RSA modulus accepted (NIST SP 800-131A Rev. 2: 1024-bit RSA is disallowed; BR §6.1.5: 2048). */
export const MIN_RSA_BITS = 2048;
/** Largest RSA modulus accepted: bigger keys make every handshake slow and are not supported by all clients. */
export const MAX_RSA_BITS = 8192;

/** OpenSSL curve names -> the NIST names we store (RFC 5480 §2.1.1.1 lists the OIDs). */
const CURVES: Record<string, string> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };

export interface KeyDescription {
  keyAlgorithm: KeyAlgorithm;
  /** RSA modulus bits; 0 otherwise. */
  keySize: number;
  /** `P-256` / `P-384` / `P-521` for EC; "" otherwise. */
  keyCurve: string;
}

/**
 * Describes and checks the certificate's subject public key (RFC 5280 §4.1.2.7).
 *
 * @param field - the request field the certificate came from (`certificate`, `certificate_der`, `pkcs12`).
 * @throws InvalidArgumentError KEY_TOO_WEAK (field `field`) for RSA below {@link MIN_RSA_BITS};
 *   UNSUPPORTED_KEY_ALGORITHM (field `field`) for anything else outside the allow-list, naming it.
 */
export function describePublicKey(cert: ParsedCertificate, field = "certificate"): KeyDescription {
  const key = publicKeyOf(cert);
  const type = key?.asymmetricKeyType;
  const details = key?.asymmetricKeyDetails ?? {};
  switch (type) {
    case "rsa": {
      const bits = details.modulusLength ?? 0;
      if (bits < MIN_RSA_BITS) {
        throw new InvalidArgumentError(
          X509Reason.KEY_TOO_WEAK,
          field,
          `${field}: the certificate's RSA key is ${bits} bits, below the minimum of ${MIN_RSA_BITS} bits; reissue the certificate with an RSA key of at least ${MIN_RSA_BITS} bits or an EC P-256 key`,
          { metadata: { keyAlgorithm: "RSA", keySize: String(bits) } },
        );
      }
      if (bits > MAX_RSA_BITS) {
        throw unsupported(field, `RSA ${bits}-bit`, `RSA keys are accepted from ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`);
      }
      return { keyAlgorithm: "RSA", keySize: bits, keyCurve: "" };
    }
    case "ec": {
      // Explicit curve parameters (RFC 3279 §2.3.5) are accepted when they are exactly a supported named
      // curve's: OpenSSL then reports that curve's name. Other explicit curves get no name.
      const curve = details.namedCurve ?? "";
      const nist = CURVES[curve];
      if (nist === undefined) {
        const what = cert.peculiar.spkiParametersAreOid ? `EC curve ${curve || "unknown"}` : "EC with explicit parameters of an unnamed curve";
        throw unsupported(field, what, "EC keys are accepted on P-256, P-384 and P-521");
      }
      return { keyAlgorithm: "EC", keySize: 0, keyCurve: nist };
    }
    case "ed25519":
      return { keyAlgorithm: "ED25519", keySize: 0, keyCurve: "" };
    case "ed448":
      return { keyAlgorithm: "ED448", keySize: 0, keyCurve: "" };
    case "rsa-pss":
      throw unsupported(
        field,
        "RSA-PSS (id-RSASSA-PSS key)",
        "most TLS software cannot use RSA-PSS-only keys; reissue with an ordinary RSA (rsaEncryption) key",
      );
    case undefined:
      throw unsupported(field, libraryAlgorithmName(cert), "the public key could not be loaded");
    default:
      throw unsupported(field, type.toUpperCase(), "it cannot be used for TLS server certificates here");
  }
}

function unsupported(field: string, name: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(
    X509Reason.UNSUPPORTED_KEY_ALGORITHM,
    field,
    `${field}: the certificate's public key algorithm ${name} is not supported (${why}); supported are RSA ${MIN_RSA_BITS}-${MAX_RSA_BITS} bits, EC P-256, P-384 and P-521, Ed25519 and Ed448`,
    { metadata: { keyAlgorithm: name } },
  );
}

function libraryAlgorithmName(cert: ParsedCertificate): string {
  try {
    return cert.peculiar.publicKey.algorithm.name;
  } catch {
    return "unknown";
  }
}
