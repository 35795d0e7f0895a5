import { randomBytes } from "node:crypto";

import { describe, expect, it, vi } from "vitest";

import { generateDek, newDekId } from "../../src/crypto/dek.js";
import { parseProtectedHeader } from "../../src/crypto/compact.js";
import { open, seal, type SecretContext } from "../../src/crypto/sealed-field.js";
import { decryptDir, encryptDir } from "../helpers/jose-reference.js";
import { RootKeyError } from "../../src/domain/errors.js";
import { craftJwe, expectDecryptionError, tamperSegment } from "./crypto-helpers.js";

const CTX: SecretContext = { instance: "instances/0193e4a0-0000-7000-8000-00000000000a", certificate: "instances/0193e4a0-0000-7000-8000-00000000000a/certificates/0193e4a0-0000-7000-8000-0000000000c1", field: "private_key" };

describe("crypto/envelope", () => {
  const dek = { id: newDekId(), key: generateDek() };
  const resolve = async (id: string): Promise<Buffer> => {
    if (id !== dek.id) throw new Error(`unknown DEK ${id}`);
    return dek.key;
  };

  it("seals and opens; header binds kid, instance, certificate and field", async () => {
    const pt = Buffer.from("-----BEGIN PRIVATE KEY-----\n...");
    const jwe = await seal(dek, pt, CTX);
    expect(JSON.parse(Buffer.from(jwe.split(".")[0]!, "base64url").toString())).toEqual({
      alg: "dir",
      enc: "A256GCM",
      kid: dek.id,
      cm_instance: "instances/0193e4a0-0000-7000-8000-00000000000a",
      cm_certificate: "instances/0193e4a0-0000-7000-8000-00000000000a/certificates/0193e4a0-0000-7000-8000-0000000000c1",
      cm_field: "private_key",
    });
    expect(await open(jwe, resolve, CTX)).toEqual(pt);
    expect(parseProtectedHeader(jwe).kid).toBe(dek.id);
  });

  it("is readable by node-jose, and opens what node-jose wrote with the same header (both paths interoperate)", async () => {
    const pt = randomBytes(6144);
    const sealed = await seal(dek, pt, CTX);
    expect((await decryptDir(dek.key, sealed)).plaintext).toEqual(pt);
    const byJose = await encryptDir(dek.key, pt, { kid: dek.id, cm_instance: CTX.instance, cm_certificate: CTX.certificate, cm_field: CTX.field });
    expect(await open(byJose, resolve, CTX)).toEqual(pt);
  });

  it.each([
    ["another certificate", { ...CTX, certificate: "instances/0193e4a0-0000-7000-8000-00000000000a/certificates/0193e4a0-0000-7000-8000-0000000000c2" }],
    ["another instance", { instance: "instances/0193e4a0-0000-7000-8000-00000000000b", certificate: "instances/0193e4a0-0000-7000-8000-00000000000b/certificates/0193e4a0-0000-7000-8000-0000000000c1", field: "private_key" }],
    ["another field", { ...CTX, field: "certificate" }],
  ] as [string, SecretContext][])("refuses a value opened as %s, without resolving the DEK", async (_name, other) => {
    const jwe = await seal(dek, Buffer.from("secret"), CTX);
    const spy = vi.fn(resolve);
    await expectDecryptionError(open(jwe, spy, other));
    expect(spy).not.toHaveBeenCalled();
  });

  it("refuses a header rewritten to claim another context (the AAD authenticates it)", async () => {
    // Re-encode the header for certificate B but keep A's IV/ciphertext/tag.
    const jwe = await seal(dek, Buffer.from("secret"), CTX);
    const seg = jwe.split(".");
    const moved = { ...CTX, certificate: "instances/0193e4a0-0000-7000-8000-00000000000a/certificates/0193e4a0-0000-7000-8000-0000000000c2" };
    seg[0] = Buffer.from(
      JSON.stringify({ alg: "dir", enc: "A256GCM", kid: dek.id, cm_instance: moved.instance, cm_certificate: moved.certificate, cm_field: moved.field }),
    ).toString("base64url");
    await expectDecryptionError(open(seg.join("."), resolve, moved));
  });

  it("refuses extra or missing header fields even when authentic", async () => {
    const base = { alg: "dir", enc: "A256GCM", kid: dek.id, cm_instance: CTX.instance, cm_certificate: CTX.certificate, cm_field: CTX.field };
    await expectDecryptionError(open(craftJwe(dek.key, { ...base, extra: "1" }, Buffer.from("x")), resolve, CTX));
    const { cm_field: _f, ...missing } = base;
    await expectDecryptionError(open(craftJwe(dek.key, missing, Buffer.from("x")), resolve, CTX));
    expect((await open(craftJwe(dek.key, base, Buffer.from("x")), resolve, CTX)).toString()).toBe("x");
  });

  it.each([0, 1, 2, 3, 4])("refuses tampering with segment %i", async (i) => {
    const jwe = await seal(dek, Buffer.from("secret"), CTX);
    await expectDecryptionError(open(tamperSegment(jwe, i), async () => dek.key, CTX));
  });

  it("refuses a value sealed under another DEK with the same id", async () => {
    const jwe = await seal({ id: dek.id, key: generateDek() }, Buffer.from("secret"), CTX);
    await expectDecryptionError(open(jwe, resolve, CTX));
  });

  it("lets resolver errors through unchanged (e.g. a disabled root key)", async () => {
    const jwe = await seal(dek, Buffer.from("secret"), CTX);
    const err = new RootKeyError("ROOT_KEY_DISABLED", "disabled");
    await expect(open(jwe, async () => Promise.reject(err), CTX)).rejects.toBe(err);
  });

  it("does not zero or keep the resolved key", async () => {
    const key = Buffer.from(dek.key);
    await open(await seal(dek, Buffer.from("x"), CTX), async () => key, CTX);
    expect(key).toEqual(dek.key);
  });

  it("rejects malformed contexts as programming errors", async () => {
    const bad: SecretContext[] = [
      { ...CTX, instance: "x" },
      { ...CTX, certificate: "instances/0193e4a0-0000-7000-8000-00000000000b/certificates/0193e4a0-0000-7000-8000-0000000000c1" }, // not under the instance
      { ...CTX, certificate: "instances/0193e4a0-0000-7000-8000-00000000000a/certificates/" },
      { ...CTX, field: "password" as SecretContext["field"] },
    ];
    for (const ctx of bad) {
      await expect(seal(dek, Buffer.from("x"), ctx)).rejects.toThrow(TypeError);
      await expect(open("a.b.c.d.e", resolve, ctx)).rejects.toThrow(TypeError);
    }
    await expect(seal({ id: "", key: dek.key }, Buffer.from("x"), CTX)).rejects.toThrow(TypeError);
  });
});
