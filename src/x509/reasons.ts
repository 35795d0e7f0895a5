/**
 * Stable UPPER_SNAKE reasons (AIP-193 ErrorInfo.reason) of every refusal raised by `src/x509`. The proto
 * ErrorReason enum should carry the same names; messages may change, these may not.
 */
export const X509Reason = {
  /** A field exceeds its size limit (see limits.ts). */
  FIELD_TOO_LARGE: "FIELD_TOO_LARGE",
  /**
   * `certificate` is empty, not PEM, holds a non-certificate block, or does not decode as X.509; also a bad block
   * in `intermediates` (then with field `intermediates`).
   */
  INVALID_CERTIFICATE: "INVALID_CERTIFICATE",
  /** `certificate` holds more than one CERTIFICATE block. */
  MULTIPLE_CERTIFICATES: "MULTIPLE_CERTIFICATES",
  /** The certificate's RSA key is shorter than 2048 bits. */
  KEY_TOO_WEAK: "KEY_TOO_WEAK",
  /** The certificate's public key is not RSA 2048–8192, EC P-256/P-384/P-521 (named curve), Ed25519 or Ed448. */
  UNSUPPORTED_KEY_ALGORITHM: "UNSUPPORTED_KEY_ALGORITHM",
  /** `private_key` is password-protected (PKCS#8 EncryptedPrivateKeyInfo or legacy `Proc-Type: 4,ENCRYPTED`) and no passphrase was given. */
  ENCRYPTED_PRIVATE_KEY: "ENCRYPTED_PRIVATE_KEY",
  /** `private_key` is not exactly one decodable PKCS#8 / PKCS#1 / SEC1 private key. */
  INVALID_PRIVATE_KEY: "INVALID_PRIVATE_KEY",
  /** `private_key` does not belong to the certificate's public key. */
  PRIVATE_KEY_MISMATCH: "PRIVATE_KEY_MISMATCH",
  /** An intermediate neither issued the certificate nor any other intermediate of its chain. */
  INTERMEDIATE_NOT_IN_CHAIN: "INTERMEDIATE_NOT_IN_CHAIN",
  /** A certificate sent has the name of another's issuer, but its key does not verify that certificate's signature. */
  SIGNATURE_INVALID: "SIGNATURE_INVALID",
  /** More than MAX_INTERMEDIATES distinct intermediates. */
  TOO_MANY_INTERMEDIATES: "TOO_MANY_INTERMEDIATES",
  /** `pkcs12` is password-protected and no passphrase was given. */
  PASSPHRASE_REQUIRED: "PASSPHRASE_REQUIRED",
  /** `passphrase` does not open `pkcs12` or the encrypted private key. */
  WRONG_PASSPHRASE: "WRONG_PASSPHRASE",
  /** `pkcs12` cannot be read (not PKCS#12, unreadable encryption, no certificate, several keys, too costly). */
  INVALID_PKCS12: "INVALID_PKCS12",
  /** The material was given in two forms at once (e.g. `certificate` and `pkcs12`). */
  CONFLICTING_FIELDS: "CONFLICTING_FIELDS",
} as const;

export type X509Reason = (typeof X509Reason)[keyof typeof X509Reason];
