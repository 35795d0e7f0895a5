import { randomBytes } from "node:crypto";

import { describe, expect, it } from "vitest";

import { decryptDirFast, encryptDirFast, gcmOpen, gcmSeal } from "../../src/crypto/fastjwe.js";
import { decryptDir, encryptDir } from "../helpers/jose-reference.js";
import { craftJwe, expectDecryptionError, tamperSegment } from "./crypto-helpers.js";

// RFC 7516 Appendix A.1 (RSAES-OAEP + AES-256-GCM): the content-encryption part, A.1.4-A.1.6.
const A1 = {
  protectedB64: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ",
  plaintext: "The true sign of intelligence is not knowledge but imagination.",
  cek: Buffer.from([
    177, 161, 244, 128, 84, 143, 225, 115, 63, 180, 3, 255, 107, 154, 212, 246, 138, 7, 110, 91, 112, 46, 34, 105, 47, 130, 203, 46, 122, 234, 64, 252,
  ]),
  iv: Buffer.from([227, 197, 117, 252, 2, 219, 233, 68, 180, 225, 77, 219]),
  ciphertext: "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A",
  tag: "XFBoMYUZodetZdvTiFvSkQ",
};

describe("crypto/fastjwe", () => {
  const key = randomBytes(32);
  const header = { kid: "dek-1", cm_instance: "instances/a", cm_certificate: "instances/a/certificates/c", cm_field: "private_key" };

  it("RFC 7516 A.1 vector: AES-256-GCM with AAD = ASCII(BASE64URL(header)) gives the published ciphertext and tag", () => {
    const { ciphertext, tag } = gcmSeal(A1.cek, A1.protectedB64, A1.iv, Buffer.from(A1.plaintext));
    expect(ciphertext.toString("base64url")).toBe(A1.ciphertext);
    expect(tag.toString("base64url")).toBe(A1.tag);
    const pt = gcmOpen(A1.cek, A1.protectedB64, A1.iv, Buffer.from(A1.ciphertext, "base64url"), Buffer.from(A1.tag, "base64url"));
    expect(pt.toString()).toBe(A1.plaintext);
  });

  it("RFC 7516 A.1 vector: any change to the AAD fails", async () => {
    await expectDecryptionError(() =>
      gcmOpen(A1.cek, A1.protectedB64.replace("J", "K"), A1.iv, Buffer.from(A1.ciphertext, "base64url"), Buffer.from(A1.tag, "base64url")),
    );
  });

  it("round trips", () => {
    const pt = randomBytes(6144);
    const jwe = encryptDirFast(key, pt, header);
    const out = decryptDirFast(key, jwe);
    expect(out.plaintext).toEqual(pt);
    expect(out.header).toEqual({ alg: "dir", enc: "A256GCM", ...header });
  });

  it("interop: node-jose opens what fastjwe writes", async () => {
    for (const size of [0, 1, 15, 16, 17, 6144]) {
      const pt = randomBytes(size);
      const jwe = encryptDirFast(key, pt, header);
      const out = await decryptDir(key, jwe);
      expect(out.plaintext).toEqual(pt);
      expect(out.header).toEqual({ alg: "dir", enc: "A256GCM", ...header });
    }
  });

  it("interop: fastjwe opens what node-jose writes", async () => {
    for (const size of [0, 1, 15, 16, 17, 6144]) {
      const pt = randomBytes(size);
      const jwe = await encryptDir(key, pt, header);
      const out = decryptDirFast(key, jwe);
      expect(out.plaintext).toEqual(pt);
      expect(out.header).toEqual({ alg: "dir", enc: "A256GCM", ...header });
    }
  });

  it("writes the same header bytes as node-jose (same field order)", async () => {
    const a = encryptDirFast(key, Buffer.from("x"), header).split(".")[0];
    const b = (await encryptDir(key, Buffer.from("x"), header)).split(".")[0];
    expect(a).toBe(b);
  });

  it("uses a fresh IV per encryption", () => {
    const ivs = new Set(Array.from({ length: 200 }, () => encryptDirFast(key, Buffer.from("x"), header).split(".")[2]));
    expect(ivs.size).toBe(200);
  });

  it.each([0, 1, 2, 3, 4])("rejects tampering with segment %i (also node-jose written input)", async (i) => {
    await expectDecryptionError(() => decryptDirFast(key, tamperSegment(encryptDirFast(key, Buffer.from("secret"), header), i)));
    await expectDecryptionError(async () => decryptDirFast(key, tamperSegment(await encryptDir(key, Buffer.from("secret"), header), i)));
  });

  it("rejects a wrong key, other algorithms, zip, encrypted key, short tag", async () => {
    await expectDecryptionError(() => decryptDirFast(randomBytes(32), encryptDirFast(key, Buffer.from("x"), header)));
    for (const h of [
      { alg: "none", enc: "A256GCM", kid: "k" },
      { alg: "RSA-OAEP", enc: "A256GCM", kid: "k" },
      { alg: "dir", enc: "A128GCM", kid: "k" },
      { alg: "dir", enc: "A256GCM", zip: "DEF", kid: "k" },
      { alg: "dir", enc: "A256GCM", crit: ["b64"], kid: "k" },
    ]) {
      await expectDecryptionError(() => decryptDirFast(key, craftJwe(key, h, Buffer.from("x"))));
    }
    const ok = { alg: "dir", enc: "A256GCM", kid: "k" };
    await expectDecryptionError(() => decryptDirFast(key, craftJwe(key, ok, Buffer.from("x"), { encryptedKey: randomBytes(40) })));
    await expectDecryptionError(() => decryptDirFast(key, craftJwe(key, ok, Buffer.from("x"), { tagLength: 12 })));
    expect(decryptDirFast(key, craftJwe(key, ok, Buffer.from("x"))).plaintext.toString()).toBe("x");
  });

  it("refuses reserved header names and bad keys", () => {
    expect(() => encryptDirFast(key, Buffer.from("x"), { kid: "k", alg: "none" })).toThrow(TypeError);
    expect(() => encryptDirFast(key, Buffer.from("x"), { cm_instance: "instances/a" })).toThrow(TypeError);
    expect(() => encryptDirFast(randomBytes(31), Buffer.from("x"), { kid: "k" })).toThrow(TypeError);
    expect(() => decryptDirFast(randomBytes(31), "a.b.c.d.e")).toThrow(TypeError);
  });
});
