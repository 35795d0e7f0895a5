/**
 * Encrypting exported private keys to a recipient's public key, as JWE compact serializations (RFC 7516) that
 * any JOSE library opens: `alg` RSA-OAEP-256 (RFC 7518 §4.3) or ECDH-ES+A256KW (RFC 7518 §4.6), `enc` A256GCM.
 *
 * Written with node:crypto rather than node-jose for the same reason as fastjwe.ts: node-jose re-validates the
 * recipient's EC point in JavaScript on every encryption (~14 ms), which would hold the event loop for minutes
 * during a large export. Tests prove node-jose opens what this writes.
 */
import {
  createCipheriv,
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
  constants,
  type KeyObject,
} from "node:crypto";
import { InvalidArgumentError } from "../domain/errors.js";
import { zero } from "./dek.js";

/** A validated recipient public key and the JWE `alg` it implies. */
export interface RecipientKey {
  key: KeyObject;
  alg: "RSA-OAEP-256" | "ECDH-ES+A256KW";
  /** EC curve name for the ephemeral key (`P-256`...), "" for RSA. */
  crv: string;
}

const CURVES: Record<string, string> = { "P-256": "prime256v1", "P-384": "secp384r1", "P-521": "secp521r1" };
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

/**
 * Parses and validates a recipient's public JWK (RFC 7517): RSA with 2048-8192 bits and an odd public exponent
 * of at least 65537, or EC on P-256/P-384/P-521 with a point on the curve. A JWK with private members, or
 * marked for signing only, is refused. The key is tried once, so a bad key fails here and not mid-stream.
 *
 * @param text the JWK as JSON.
 * @throws InvalidArgumentError INVALID_FIELD on field `recipient_public_key`, saying what is wrong.
 * @example
 * const recipient = parseRecipientKey('{"kty":"EC","crv":"P-256","x":"...","y":"..."}');
 */
export function parseRecipientKey(text: string): RecipientKey {
  const bad = (why: string): never => {
    throw new InvalidArgumentError("INVALID_FIELD", "recipient_public_key", `recipient_public_key ${why}`);
  };
  let jwk: Record<string, unknown>;
  try {
    jwk = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return bad('must be a public JWK as JSON, e.g. {"kty":"EC","crv":"P-256","x":"...","y":"..."}');
  }
  if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) return bad("must be a JSON object (a JWK)");
  if (PRIVATE_MEMBERS.some((f) => f in jwk)) bad("holds private key parameters; send only the public key");
  let alg: RecipientKey["alg"];
  if (jwk.kty === "RSA") alg = "RSA-OAEP-256";
  else if (jwk.kty === "EC" && typeof jwk.crv === "string" && jwk.crv in CURVES) alg = "ECDH-ES+A256KW";
  else return bad("must be an RSA key or an EC key on P-256, P-384 or P-521");
  if (jwk.alg !== undefined && jwk.alg !== alg) bad(`has alg ${JSON.stringify(jwk.alg)}; use ${alg} (or omit alg)`);
  if (jwk.use !== undefined && jwk.use !== "enc") bad(`has use ${JSON.stringify(jwk.use)}; a key for encryption has use "enc" (or none)`);
  if (jwk.key_ops !== undefined) {
    const ops = Array.isArray(jwk.key_ops) ? jwk.key_ops : [];
    const needed = alg === "RSA-OAEP-256" ? ["encrypt", "wrapKey"] : ["deriveKey", "deriveBits"];
    if (!ops.some((o) => needed.includes(String(o)))) bad(`has key_ops ${JSON.stringify(jwk.key_ops)}, which do not allow ${needed.join(" or ")}`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: jwk.kty, n: jwk.n, e: jwk.e, crv: jwk.crv, x: jwk.x, y: jwk.y } as never, format: "jwk" });
  } catch {
    return bad("is not a valid public key (check its base64url members, and that an EC point lies on its curve)");
  }
  if (alg === "RSA-OAEP-256") {
    const d = key.asymmetricKeyDetails ?? {};
    const bits = d.modulusLength ?? 0;
    const e = d.publicExponent ?? 0n;
    if (bits < 2048 || bits > 8192) bad(`is an RSA key of ${bits} bits; 2048 to 8192 are accepted`);
    if (e < 65537n || e % 2n === 0n) bad("has an RSA public exponent that is even or below 65537");
    const n = Buffer.from(String(jwk.n), "base64url");
    if (n.length === 0 || (n[n.length - 1] & 1) === 0) bad("has an even RSA modulus");
  }
  const recipient: RecipientKey = { key, alg, crv: alg === "ECDH-ES+A256KW" ? String(jwk.crv) : "" };
  try {
    encryptToRecipient(recipient, Buffer.from("probe"));
  } catch {
    bad("cannot be used to encrypt");
  }
  return recipient;
}

const b64u = (b: Buffer | string) => Buffer.from(b).toString("base64url");

/** Concat KDF (NIST SP 800-56A §5.8.1, as RFC 7518 §4.6.2 profiles it) for a 256-bit key, empty PartyU/VInfo. */
function concatKdf(z: Buffer, algorithmId: string): Buffer {
  const lenPrefixed = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, 0].map((_, i) => (b.length >>> (24 - 8 * i)) & 0xff)), b]);
  const otherInfo = Buffer.concat([lenPrefixed(Buffer.from(algorithmId)), lenPrefixed(Buffer.alloc(0)), lenPrefixed(Buffer.alloc(0)), Buffer.from([0, 0, 1, 0])]);
  return createHash("sha256").update(Buffer.from([0, 0, 0, 1])).update(z).update(otherInfo).digest();
}

/**
 * Encrypts `plaintext` to the recipient: a random CEK encrypts it with AES-256-GCM (AAD = the protected header,
 * RFC 7516 §5.1), and the CEK is encrypted with RSA-OAEP-256, or wrapped (RFC 3394) under a key agreed by
 * ephemeral-static ECDH whose ephemeral public key travels as `epk`.
 * @returns the compact JWE.
 * @example
 * const jwe = encryptToRecipient(parseRecipientKey(jwkJson), Buffer.from(privateKeyPem));
 */
export function encryptToRecipient(recipient: RecipientKey, plaintext: Buffer): string {
  const cek = randomBytes(32);
  try {
    let header: Record<string, unknown>;
    let encryptedKey: Buffer;
    if (recipient.alg === "RSA-OAEP-256") {
      header = { alg: recipient.alg, enc: "A256GCM" };
      encryptedKey = publicEncrypt({ key: recipient.key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, cek);
    } else {
      const eph = generateKeyPairSync("ec", { namedCurve: CURVES[recipient.crv] });
      const z = diffieHellman({ privateKey: eph.privateKey, publicKey: recipient.key });
      const kek = concatKdf(z, recipient.alg);
      const epk = eph.publicKey.export({ format: "jwk" });
      header = { alg: recipient.alg, enc: "A256GCM", epk: { kty: "EC", crv: recipient.crv, x: epk.x, y: epk.y } };
      const wrap = createCipheriv("id-aes256-wrap", kek, Buffer.from("A6A6A6A6A6A6A6A6", "hex"));
      encryptedKey = Buffer.concat([wrap.update(cek), wrap.final()]);
      zero(z);
      zero(kek);
    }
    const protectedB64 = b64u(JSON.stringify(header));
    const iv = randomBytes(12);
    const gcm = createCipheriv("aes-256-gcm", cek, iv);
    gcm.setAAD(Buffer.from(protectedB64, "ascii"));
    const ciphertext = Buffer.concat([gcm.update(plaintext), gcm.final()]);
    return [protectedB64, b64u(encryptedKey), b64u(iv), b64u(ciphertext), b64u(gcm.getAuthTag())].join(".");
  } finally {
    zero(cek);
  }
}
