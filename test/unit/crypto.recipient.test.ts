/** Recipient encryption for exports: node-jose opens what node:crypto writes; bad keys are refused up front. */
import { generateKeyPairSync } from "node:crypto";
import jose from "node-jose";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import { encryptToRecipient, parseRecipientKey } from "../../src/crypto/recipient.js";

const pair = (type: "rsa" | "ec", opt: string | number) =>
  type === "rsa" ? generateKeyPairSync("rsa", { modulusLength: opt as number }) : generateKeyPairSync("ec", { namedCurve: opt as string });

describe("encryptToRecipient", () => {
  it.each([
    ["rsa", 2048, "RSA-OAEP-256"],
    ["ec", "P-256", "ECDH-ES+A256KW"],
    ["ec", "P-384", "ECDH-ES+A256KW"],
    ["ec", "P-521", "ECDH-ES+A256KW"],
  ] as const)("writes a %s %s JWE that node-jose opens", async (type, opt, alg) => {
    const { publicKey, privateKey } = pair(type, opt);
    const recipient = parseRecipientKey(JSON.stringify(publicKey.export({ format: "jwk" })));
    const secret = Buffer.from("-----BEGIN PRIVATE KEY-----\nexample\n-----END PRIVATE KEY-----\n");
    const jwe = encryptToRecipient(recipient, secret);
    const opened = await jose.JWE.createDecrypt(await jose.JWK.asKey(privateKey.export({ format: "jwk" }))).decrypt(jwe);
    expect(opened.header).toMatchObject({ alg, enc: "A256GCM" });
    expect(opened.plaintext).toEqual(secret);
    // Each call draws a fresh CEK (and ephemeral key): no two ciphertexts are alike.
    expect(encryptToRecipient(recipient, secret)).not.toBe(jwe);
  });
});

describe("parseRecipientKey", () => {
  const refused = (jwk: unknown) => {
    try {
      parseRecipientKey(typeof jwk === "string" ? jwk : JSON.stringify(jwk));
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidArgumentError);
      return (err as InvalidArgumentError).fieldViolations[0].field;
    }
    throw new Error("accepted");
  };
  const ec = pair("ec", "P-256").publicKey.export({ format: "jwk" });
  const rsa = pair("rsa", 2048).publicKey.export({ format: "jwk" });
  it.each([
    ["private members", pair("ec", "P-256").privateKey.export({ format: "jwk" })],
    ["not JSON", "{"],
    ["an oct key", { kty: "oct", k: "AAAA" }],
    ["a point off the curve", { ...ec, y: ec.x }],
    ["a short coordinate", { ...ec, x: "AAAA" }],
    ["a curve label that does not fit", { ...ec, crv: "P-384" }],
    ["RSA 1024", pair("rsa", 1024).publicKey.export({ format: "jwk" })],
    ["exponent 1", { ...rsa, e: "AQ" }],
    ["an even modulus", { ...rsa, n: Buffer.from(Buffer.from(rsa.n!, "base64url").map((b, i, a) => (i === a.length - 1 ? b & 0xfe : b))).toString("base64url") }],
    ["a signing key", { ...ec, use: "sig" }],
    ["signing key_ops", { ...ec, key_ops: ["sign"] }],
    ["another alg", { ...rsa, alg: "RSA1_5" }],
  ])("refuses %s with a field violation on recipient_public_key", (_, jwk) => {
    expect(refused(jwk)).toBe("recipient_public_key");
  });
});
