/**
 * The optional private key: accepted as PKCS#8 (RFC 5208 / RFC 5958, label `PRIVATE KEY`), PKCS#1 (RFC 8017
 * A.1.2, `RSA PRIVATE KEY`) or SEC1 (RFC 5915, `EC PRIVATE KEY`, optionally after the `EC PARAMETERS` block that
 * `openssl ecparam -genkey` prints); stored as unencrypted PKCS#8 (RFC 7468 §10) so every reader handles one format.
 * Password-protected keys are refused rather than asking for the password: the passphrase would be one more
 * secret crossing the wire, and the stored copy is encrypted anyway.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { InvalidArgumentError } from "../domain/errors.js";
import { pemEncode, splitPemBlocks } from "./pem.js";
import { X509Reason } from "./reasons.js";

const FIELD = "private_key";

/** Accepted key labels and how node:crypto calls their DER format. */
const KEY_FORMATS: Record<string, { type: "pkcs8" | "pkcs1" | "sec1"; name: string }> = {
  "PRIVATE KEY": { type: "pkcs8", name: "PKCS#8" },
  "RSA PRIVATE KEY": { type: "pkcs1", name: "PKCS#1 RSA" },
  "EC PRIVATE KEY": { type: "sec1", name: "SEC1 EC" },
};

const DECRYPT_HINT =
  "decrypt it first, e.g. `openssl pkey -in encrypted.key -out key.pem` (it asks for the password), and paste the unencrypted key";

function invalid(message: string, cause?: unknown): InvalidArgumentError {
  return new InvalidArgumentError(X509Reason.INVALID_PRIVATE_KEY, FIELD, `${FIELD}: ${message}`, { cause });
}

/**
 * Decodes the `private_key` field.
 *
 * @param text - raw user text; blank means "no key".
 * @returns the private KeyObject, or undefined when the field is blank.
 * @throws InvalidArgumentError (field `private_key`): ENCRYPTED_PRIVATE_KEY for an `ENCRYPTED PRIVATE KEY` block
 *   (RFC 5958 §3 EncryptedPrivateKeyInfo) or a legacy block with `Proc-Type: 4,ENCRYPTED` (RFC 1421 §4.6.1.1);
 *   INVALID_PRIVATE_KEY when there is no key block, more than one, a block of another kind (e.g. a certificate),
 *   or the DER does not decode in the format its label names.
 */
export function parsePrivateKey(text: string): KeyObject | undefined {
  if (text.trim() === "") return undefined;
  const blocks = splitPemBlocks(text, { field: FIELD, reason: X509Reason.INVALID_PRIVATE_KEY });
  try {
    return keyFromBlocks(blocks);
  } finally {
    // createPrivateKey copied the key into OpenSSL; the decoded DER must not linger on the heap.
    for (const b of blocks) b.der.fill(0);
  }
}

function keyFromBlocks(blocks: ReturnType<typeof splitPemBlocks>): KeyObject {
  for (const b of blocks) {
    if (b.label === "ENCRYPTED PRIVATE KEY" || /ENCRYPTED/i.test(b.headers["Proc-Type"] ?? "")) {
      throw new InvalidArgumentError(
        X509Reason.ENCRYPTED_PRIVATE_KEY,
        FIELD,
        `${FIELD}: the private key is password-protected; ${DECRYPT_HINT}`,
      );
    }
  }
  const keys = blocks.filter((b) => b.label in KEY_FORMATS);
  const others = blocks.filter((b) => !(b.label in KEY_FORMATS) && b.label !== "EC PARAMETERS");
  if (others.length > 0) {
    const label = others[0].label;
    const where = /CERTIFICATE/.test(label) ? " (certificates go in the certificate and intermediates fields)" : "";
    throw invalid(
      `found a "${label}" PEM block; this field takes only the certificate's private key as "PRIVATE KEY", "RSA PRIVATE KEY" or "EC PRIVATE KEY"${where}`,
    );
  }
  if (keys.length === 0) {
    throw invalid(
      'no private key found; paste the key in PEM form, starting with "-----BEGIN PRIVATE KEY-----" (or RSA/EC PRIVATE KEY)',
    );
  }
  if (keys.length > 1) {
    throw invalid(`found ${keys.length} private keys; paste only the private key of the certificate`);
  }
  const block = keys[0];
  const format = KEY_FORMATS[block.label];
  try {
    return createPrivateKey({ key: block.der, format: "der", type: format.type });
  } catch (err) {
    throw invalid(
      `the "${block.label}" block could not be decoded as a ${format.name} private key; export the key again, e.g. with \`openssl pkey -in key.pem\``,
      err,
    );
  }
}

/**
 * True when the private key belongs to the public key (RFC 5280 §4.1.2.7 subjectPublicKeyInfo): node derives the
 * public half of the private key, and both are exported as SPKI DER (RFC 5280 §4.1) and compared byte for byte;
 * node writes both in the same canonical form (named curve, uncompressed point).
 *
 * Not KeyObject.equals: on Node 20, comparing keys of different types leaves an OpenSSL error on the thread's
 * queue, and the next unrelated createPrivateKey() in the process fails with "different key types".
 */
export function keyMatches(privateKey: KeyObject, publicKey: KeyObject): boolean {
  try {
    const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
    return spki(createPublicKey(privateKey)).equals(spki(publicKey));
  } catch {
    return false;
  }
}

/** The key as unencrypted PKCS#8 PEM (RFC 5958 §2 OneAsymmetricKey, RFC 7468 §10 label `PRIVATE KEY`). */
export function privateKeyToPkcs8Pem(privateKey: KeyObject): string {
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  try {
    return pemEncode("PRIVATE KEY", der);
  } finally {
    der.fill(0);
  }
}
