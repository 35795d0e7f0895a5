import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

import { describe, expect, it } from "vitest";

import { decryptDir, encryptDir, parseProtectedHeader, unwrapA256KW, wrapA256KW } from "../helpers/jose-reference.js";
import { gcmSeal } from "../../src/crypto/fastjwe.js";
import { b64Header, craftJwe, expectDecryptionError, tamperSegment } from "./crypto-helpers.js";

const A6 = Buffer.from("A6A6A6A6A6A6A6A6", "hex"); // RFC 3394 §2.2.3.1 default IV

function nodeKeyWrap(kek: Buffer, key: Buffer): Buffer {
  const c = createCipheriv("id-aes256-wrap", kek, A6);
  return Buffer.concat([c.update(key), c.final()]);
}
function nodeKeyUnwrap(kek: Buffer, wrapped: Buffer): Buffer {
  const d = createDecipheriv("id-aes256-wrap", kek, A6);
  return Buffer.concat([d.update(wrapped), d.final()]);
}

describe("helpers/jose-reference dir + A256GCM (node-jose)", () => {
  const key = randomBytes(32);
  const header = { kid: "dek-1", cm_instance: "instances/a" };

  it("round trips, protecting every header field", async () => {
    const pt = randomBytes(6144);
    const jwe = await encryptDir(key, pt, header);
    const seg = jwe.split(".");
    expect(seg).toHaveLength(5);
    expect(seg[1]).toBe(""); // dir: empty encrypted key (RFC 7518 §4.5)
    expect(Buffer.from(seg[2]!, "base64url")).toHaveLength(12);
    expect(Buffer.from(seg[4]!, "base64url")).toHaveLength(16);
    expect(JSON.parse(Buffer.from(seg[0]!, "base64url").toString())).toEqual({ alg: "dir", enc: "A256GCM", ...header });
    const out = await decryptDir(key, jwe);
    expect(out.plaintext).toEqual(pt);
    expect(out.header).toEqual({ alg: "dir", enc: "A256GCM", ...header });
  });

  it("round trips an empty plaintext", async () => {
    const jwe = await encryptDir(key, Buffer.alloc(0), header);
    expect((await decryptDir(key, jwe)).plaintext).toHaveLength(0);
  });

  it.each([0, 1, 2, 3, 4])("rejects tampering with segment %i", async (i) => {
    const jwe = await encryptDir(key, Buffer.from("secret"), header);
    await expectDecryptionError(decryptDir(key, tamperSegment(jwe, i)));
  });

  it("rejects a wrong key with the same error", async () => {
    const jwe = await encryptDir(key, Buffer.from("secret"), header);
    await expectDecryptionError(decryptDir(randomBytes(32), jwe));
  });

  it.each([
    ["alg none", { alg: "none", enc: "A256GCM", kid: "k" }],
    ["alg RSA-OAEP", { alg: "RSA-OAEP", enc: "A256GCM", kid: "k" }],
    ["alg A256KW on the dir path", { alg: "A256KW", enc: "A256GCM", kid: "k" }],
    ["enc A128GCM", { alg: "dir", enc: "A128GCM", kid: "k" }],
    ["enc A256CBC-HS512", { alg: "dir", enc: "A256CBC-HS512", kid: "k" }],
    ["missing enc", { alg: "dir", kid: "k" }],
    ["zip DEF", { alg: "dir", enc: "A256GCM", zip: "DEF", kid: "k" }],
    ["crit", { alg: "dir", enc: "A256GCM", crit: ["exp"], exp: 1, kid: "k" }],
  ])("rejects an authentic JWE with %s", async (_name, h) => {
    await expectDecryptionError(decryptDir(key, craftJwe(key, h, Buffer.from("x"))));
  });

  it("accepts the same crafted construction when the header is allowed (so the rejections above are the allow-list)", async () => {
    const jwe = craftJwe(key, { alg: "dir", enc: "A256GCM", kid: "k" }, Buffer.from("x"));
    expect((await decryptDir(key, jwe)).plaintext.toString()).toBe("x");
  });

  it("rejects a dir JWE carrying an encrypted key, a truncated tag or a non-96-bit IV", async () => {
    const h = { alg: "dir", enc: "A256GCM", kid: "k" };
    await expectDecryptionError(decryptDir(key, craftJwe(key, h, Buffer.from("x"), { encryptedKey: randomBytes(40) })));
    await expectDecryptionError(decryptDir(key, craftJwe(key, h, Buffer.from("x"), { tagLength: 12 })));
    await expectDecryptionError(decryptDir(key, craftJwe(key, h, Buffer.from("x"), { ivLength: 16 })));
  });

  it("rejects RFC 7516 Appendix A.1 (RSA-OAEP + A256GCM) before decrypting", async () => {
    const a1 = [
      "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ",
      randomBytes(256).toString("base64url"), // RSA-OAEP encrypted key (value irrelevant: refused by alg)
      "48V1_ALb6US04U3b",
      "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A",
      "XFBoMYUZodetZdvTiFvSkQ",
    ].join(".");
    await expectDecryptionError(decryptDir(key, a1));
    await expectDecryptionError(unwrapA256KW(key, a1));
  });

  it("refuses reserved or non-string header input and wrong key sizes (programming errors)", async () => {
    await expect(encryptDir(key, Buffer.from("x"), { kid: "k", alg: "none" })).rejects.toThrow(TypeError);
    await expect(encryptDir(key, Buffer.from("x"), { kid: "k", enc: "A128GCM" })).rejects.toThrow(TypeError);
    await expect(encryptDir(key, Buffer.from("x"), { kid: "k", zip: "DEF" })).rejects.toThrow(TypeError);
    await expect(encryptDir(key, Buffer.from("x"), { cm_instance: "instances/a" })).rejects.toThrow(/kid/);
    await expect(encryptDir(key, Buffer.from("x"), { kid: 5 as unknown as string })).rejects.toThrow(TypeError);
    await expect(encryptDir(randomBytes(16), Buffer.from("x"), { kid: "k" })).rejects.toThrow(TypeError);
    const jwe = await encryptDir(key, Buffer.from("x"), { kid: "k" });
    await expect(decryptDir(randomBytes(16), jwe)).rejects.toThrow(TypeError);
  });
});

describe("helpers/jose-reference parseProtectedHeader (re-exported from crypto/compact)", () => {
  it("returns the header of a well-formed JWE", async () => {
    const jwe = await encryptDir(randomBytes(32), Buffer.from("x"), { kid: "abc", cm_instance: "instances/a" });
    expect(parseProtectedHeader(jwe)).toEqual({ alg: "dir", enc: "A256GCM", kid: "abc", cm_instance: "instances/a" });
  });

  it.each([
    ["4 segments", `${b64Header({ alg: "dir" })}..AAAA.AAAA`],
    ["6 segments", `${b64Header({ alg: "dir" })}..AAAA.AAAA.AAAA.AAAA`],
    ["JWS-like 3 segments", `${b64Header({ alg: "none" })}.e30.`],
    ["padding", `${b64Header({ alg: "dir" })}=..AAAA.AAAA.AAAA`],
    ["standard base64 chars", `${b64Header({ alg: "dir" })}..AA+/.AAAA.AAAA`],
    ["non-canonical trailing bits", `${b64Header({ alg: "dir" })}..AB.AAAA.AAAA`],
    ["impossible length", `${b64Header({ alg: "dir" })}..AAAAA.AAAA.AAAA`],
    ["header is an array", `${Buffer.from("[1]").toString("base64url")}..AAAA.AAAA.AAAA`],
    ["header is null", `${Buffer.from("null").toString("base64url")}..AAAA.AAAA.AAAA`],
    ["header is not JSON", `${Buffer.from("{alg:dir}").toString("base64url")}..AAAA.AAAA.AAAA`],
    ["header is not UTF-8", `${Buffer.from([0x7b, 0xff, 0x7d]).toString("base64url")}..AAAA.AAAA.AAAA`],
    ["empty header", `..AAAA.AAAA.AAAA`],
    ["not a string", 42 as unknown as string],
  ])("rejects %s with DecryptionError", async (_name, jwe) => {
    await expectDecryptionError(() => parseProtectedHeader(jwe));
  });
});

describe("helpers/jose-reference A256KW + A256GCM (node-jose)", () => {
  const kek = randomBytes(32);
  const header = { kid: "local/default/1", cm_instance: "instances/a" };

  it("wraps and unwraps a DEK (the DEK is the JWE plaintext)", async () => {
    const dek = randomBytes(32);
    const jwe = await wrapA256KW(kek, dek, header);
    const seg = jwe.split(".");
    expect(Buffer.from(seg[1]!, "base64url")).toHaveLength(40); // RFC 3394: 32-byte CEK + 8
    expect(Buffer.from(seg[3]!, "base64url")).toHaveLength(32);
    const out = await unwrapA256KW(kek, jwe);
    expect(out.plaintext).toEqual(dek);
    expect(out.header).toEqual({ alg: "A256KW", enc: "A256GCM", ...header });
  });

  it.each([0, 1, 2, 3, 4])("rejects tampering with segment %i", async (i) => {
    const jwe = await wrapA256KW(kek, randomBytes(32), header);
    await expectDecryptionError(unwrapA256KW(kek, tamperSegment(jwe, i)));
  });

  it("rejects another KEK, a dir JWE and other algorithms", async () => {
    const jwe = await wrapA256KW(kek, randomBytes(32), header);
    await expectDecryptionError(unwrapA256KW(randomBytes(32), jwe));
    await expectDecryptionError(unwrapA256KW(kek, await encryptDir(kek, randomBytes(32), { kid: "x" })));
    await expectDecryptionError(decryptDir(kek, jwe));
    const cek = randomBytes(32);
    const ek = nodeKeyWrap(kek, cek);
    for (const h of [
      { alg: "A128KW", enc: "A256GCM", kid: "k" },
      { alg: "A256GCMKW", enc: "A256GCM", kid: "k" },
      { alg: "A256KW", enc: "A256CBC-HS512", kid: "k" },
      { alg: "none", enc: "A256GCM", kid: "k" },
    ]) {
      await expectDecryptionError(unwrapA256KW(kek, craftJwe(cek, h, Buffer.from("x"), { encryptedKey: ek })));
    }
  });

  // RFC 3394 §4.6: "Wrap 256 bits of Key Data with a 256-bit KEK".
  const RFC3394_KEK = Buffer.from("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", "hex");
  const RFC3394_KEY = Buffer.from("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F", "hex");
  const RFC3394_WRAPPED = Buffer.from("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21", "hex");

  it("RFC 3394 §4.6 vector: node's id-aes256-wrap reproduces it", () => {
    expect(nodeKeyWrap(RFC3394_KEK, RFC3394_KEY)).toEqual(RFC3394_WRAPPED);
  });

  it("RFC 3394 §4.6 vector as a JWE encrypted key: node-jose unwraps the known CEK", async () => {
    // A JWE whose encrypted_key is the RFC ciphertext, so the CEK is the RFC "key data".
    const protectedB64 = b64Header({ alg: "A256KW", enc: "A256GCM", kid: "local/rfc/1" });
    const iv = randomBytes(12);
    const dek = randomBytes(32);
    const { ciphertext, tag } = gcmSeal(RFC3394_KEY, protectedB64, iv, dek);
    const jwe = [protectedB64, RFC3394_WRAPPED, iv, ciphertext, tag].map((p) => (typeof p === "string" ? p : p.toString("base64url"))).join(".");
    expect((await unwrapA256KW(RFC3394_KEK, jwe)).plaintext).toEqual(dek);
  });

  it("node-jose's encrypted_key is plain RFC 3394 (cross-checked with node's id-aes256-wrap) and its content is GCM with AAD = header", async () => {
    const dek = randomBytes(32);
    const jwe = await wrapA256KW(RFC3394_KEK, dek, header);
    const [p, ek, iv, ct, tag] = jwe.split(".") as [string, string, string, string, string];
    const encryptedKey = Buffer.from(ek, "base64url");
    const cek = nodeKeyUnwrap(RFC3394_KEK, encryptedKey); // throws if the RFC 3394 integrity check fails
    expect(cek).toHaveLength(32);
    expect(nodeKeyWrap(RFC3394_KEK, cek)).toEqual(encryptedKey); // deterministic: same bytes
    const d = createDecipheriv("aes-256-gcm", cek, Buffer.from(iv, "base64url"), { authTagLength: 16 });
    d.setAAD(Buffer.from(p, "ascii"));
    d.setAuthTag(Buffer.from(tag, "base64url"));
    expect(Buffer.concat([d.update(Buffer.from(ct, "base64url")), d.final()])).toEqual(dek);
  });
});
