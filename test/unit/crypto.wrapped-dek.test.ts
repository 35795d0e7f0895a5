import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";

import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { parseProtectedHeader } from "../../src/crypto/compact.js";
import { LocalRootKeyBackend, type LocalKeystoreDocument } from "../../src/crypto/rootkeys/local.js";
import { hasInstanceLayer, unwrapDek, unwrapInstanceLayer, unwrapStoredDek, wrapDek, wrapInstanceLayer } from "../../src/crypto/wrapped-dek.js";
import { instanceKeyId, parseRootKeyKid, rootKeyKid } from "../../src/domain/rootkey-id.js";
import { unwrapA256KW, wrapA256KW } from "../helpers/jose-reference.js";
import { b64Header, expectDecryptionError } from "./crypto-helpers.js";

const X = { instance: "instances/0193e4a0-0000-7000-8000-00000000000a" };
const Y = { instance: "instances/0193e4a0-0000-7000-8000-00000000000b" };

describe("crypto/wrapped-dek: one framing around every backend's key wrap", () => {
  let dir: string;
  let file: string;
  let backend: LocalRootKeyBackend;
  /** The KEK of local/default/<version>, read from the keystore file as node-jose would be given it. */
  const kekOf = async (version = 1): Promise<Buffer> => {
    const doc = JSON.parse(await fsp.readFile(file, "utf8")) as LocalKeystoreDocument;
    return Buffer.from(doc.keys.find((k) => k.keyId === "default")!.versions.find((v) => v.version === version)!.k!, "base64url");
  };

  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cm-wrapped-dek-"));
    file = path.join(dir, "keystore.json");
    backend = await LocalRootKeyBackend.open(file, { createIfMissing: true, defaultKeyId: "default" });
  });
  afterEach(async () => {
    await backend.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it("node-jose opens what wrapDek writes, with the documented header", async () => {
    const dek = randomBytes(32);
    const { jwe, version } = await wrapDek(backend, "default", dek, X);
    expect(version).toBe(1);
    const opened = await unwrapA256KW(await kekOf(), jwe);
    expect(opened.plaintext.toString("hex")).toBe(dek.toString("hex"));
    expect(opened.header).toEqual({ alg: "A256KW", enc: "A256GCM", kid: "local/default/1", cm_instance: X.instance });
    // Field order as node-jose writes it, so both produce the same header bytes for the same fields.
    expect(Object.keys(parseProtectedHeader(jwe))).toEqual(["alg", "enc", "kid", "cm_instance"]);
  });

  it("unwrapDek opens what node-jose writes with the same key material", async () => {
    const dek = randomBytes(32);
    const jwe = await wrapA256KW(await kekOf(), dek, { kid: "local/default/1", cm_instance: X.instance });
    expect((await unwrapDek(backend, jwe, X)).toString("hex")).toBe(dek.toString("hex"));
  });

  it("names the version that wrapped it, before and after a rotation", async () => {
    const first = await wrapDek(backend, "default", randomBytes(32), X);
    await backend.rotate("default");
    const dek = randomBytes(32);
    const second = await wrapDek(backend, "default", dek, X);
    expect([first.version, second.version]).toEqual([1, 2]);
    expect(parseProtectedHeader(second.jwe).kid).toBe(rootKeyKid("local", "default", 2));
    expect(parseRootKeyKid(parseProtectedHeader(second.jwe).kid)).toEqual({ backend: "local", keyId: "default", version: 2 });
    // node-jose with version 2's KEK opens the second, and not the first.
    expect((await unwrapA256KW(await kekOf(2), second.jwe)).plaintext.toString("hex")).toBe(dek.toString("hex"));
    await expectDecryptionError(unwrapA256KW(await kekOf(2), first.jwe));
  });

  it("refuses a DEK bound to another instance, naming another backend, or with an extra header field", async () => {
    const dek = randomBytes(32);
    const kek = await kekOf();
    const { jwe } = await wrapDek(backend, "default", dek, X);
    await expectDecryptionError(unwrapDek(backend, jwe, Y));
    await expectDecryptionError(unwrapDek(backend, await wrapA256KW(kek, dek, { kid: "pkcs11/default/1", cm_instance: X.instance }), X));
    await expectDecryptionError(unwrapDek(backend, await wrapA256KW(kek, dek, { kid: "local/default/1", cm_instance: X.instance, extra: "1" }), X));
    await expectDecryptionError(unwrapDek(backend, await wrapA256KW(kek, dek, { kid: "local/Default/1", cm_instance: X.instance }), X));
    // The header is the GCM AAD: rebinding it to Y in the clear does not open for Y.
    const seg = jwe.split(".");
    seg[0] = b64Header({ alg: "A256KW", enc: "A256GCM", kid: "local/default/1", cm_instance: Y.instance });
    await expectDecryptionError(unwrapDek(backend, seg.join("."), Y));
    await expectDecryptionError(unwrapDek(backend, "a.b.c.d.e", X));
  });

  it("refuses a DEK that is not 32 bytes and a context that is not an instance name", async () => {
    await expect(wrapDek(backend, "default", randomBytes(16), X)).rejects.toThrow(TypeError);
    await expect(wrapDek(backend, "default", randomBytes(32), { instance: "instances/x" })).rejects.toThrow(TypeError);
    await expect(unwrapDek(backend, "a.b.c.d.e", { instance: "" })).rejects.toThrow(TypeError);
  });

  it("destroyKey destroys every version, is idempotent, and what it wrapped stays unreadable", async () => {
    await backend.createKey("tenant-a");
    await backend.rotate("tenant-a");
    const { jwe } = await wrapDek(backend, "tenant-a", randomBytes(32), X);
    await backend.destroyKey("tenant-a");
    await backend.destroyKey("tenant-a");
    await backend.destroyKey("never-made");
    const info = (await backend.listKeys()).find((k) => k.keyId === "tenant-a")!;
    expect(info.versions.map((v) => v.state)).toEqual(["DESTROYED", "DESTROYED"]);
    await expect(unwrapDek(backend, jwe, X)).rejects.toMatchObject({ reason: "ROOT_KEY_DESTROYED" });
    const doc = JSON.parse(await fsp.readFile(file, "utf8")) as LocalKeystoreDocument;
    expect(doc.keys.find((k) => k.keyId === "tenant-a")!.versions.map((v) => v.k)).toEqual([undefined, undefined]);
  });

  it("refuses a DEK of another instance before its root key is used (a disabled key does not even get asked)", async () => {
    const { jwe } = await wrapDek(backend, "default", randomBytes(32), X);
    await backend.setEnabled("default", false);
    await expectDecryptionError(unwrapDek(backend, jwe, Y));
    await expect(unwrapDek(backend, jwe, X)).rejects.toMatchObject({ reason: "ROOT_KEY_DISABLED" });
  });

  describe("the instance layer", () => {
    const ikX = instanceKeyId(X.instance.slice("instances/".length));
    const ikY = instanceKeyId(Y.instance.slice("instances/".length));
    beforeEach(async () => {
      await backend.createKey(ikX);
      await backend.createKey(ikY);
    });
    const kekOfKey = async (keyId: string): Promise<Buffer> => {
      const doc = JSON.parse(await fsp.readFile(file, "utf8")) as LocalKeystoreDocument;
      return Buffer.from(doc.keys.find((k) => k.keyId === keyId)!.versions[0]!.k!, "base64url");
    };

    it("wraps the root-key JWE once more under the instance key; node-jose opens it with that key to the very JWE inside", async () => {
      const dek = randomBytes(32);
      const inner = await wrapDek(backend, "default", dek, X);
      const outer = await wrapInstanceLayer(backend, ikX, inner.jwe, X);
      expect(hasInstanceLayer(outer.jwe)).toBe(true);
      expect(hasInstanceLayer(inner.jwe)).toBe(false);
      const opened = await unwrapA256KW(await kekOfKey(ikX), outer.jwe);
      expect(opened.plaintext.toString("ascii")).toBe(inner.jwe);
      expect(opened.header).toEqual({ alg: "A256KW", cm_layer: "instance", enc: "A256GCM", kid: `local/${ikX}/1`, cm_instance: X.instance });
      expect((await unwrapStoredDek(backend, outer.jwe, X)).equals(dek)).toBe(true);
      // A DEK from before instance keys (root-key wrap only) still opens.
      expect((await unwrapStoredDek(backend, inner.jwe, X)).equals(dek)).toBe(true);
    });

    it("needs both keys: destroying the instance key shreds it, disabling the root key cuts access", async () => {
      const inner = await wrapDek(backend, "default", randomBytes(32), X);
      const outer = await wrapInstanceLayer(backend, ikX, inner.jwe, X);
      await backend.setEnabled("default", false);
      await expect(unwrapStoredDek(backend, outer.jwe, X)).rejects.toMatchObject({ reason: "ROOT_KEY_DISABLED" });
      await backend.setEnabled("default", true);
      await backend.destroyKey(ikX);
      await expect(unwrapStoredDek(backend, outer.jwe, X)).rejects.toMatchObject({ reason: "ROOT_KEY_DESTROYED" });
      // The keystore keeps only a tombstone of the instance key: no material is left to find.
      const doc = JSON.parse(await fsp.readFile(file, "utf8")) as LocalKeystoreDocument;
      expect(doc.keys.find((k) => k.keyId === ikX)!.versions.every((v) => v.k === undefined && v.state === "DESTROYED")).toBe(true);
    });

    it("refuses a layer moved to another instance, under another instance's key, tampered, or around another instance's DEK", async () => {
      const inner = await wrapDek(backend, "default", randomBytes(32), X);
      const outer = await wrapInstanceLayer(backend, ikX, inner.jwe, X);
      await expectDecryptionError(unwrapStoredDek(backend, outer.jwe, Y));
      await expectDecryptionError(unwrapInstanceLayer(backend, ikY, outer.jwe, X));
      const parts = outer.jwe.split(".");
      parts[3] = Buffer.from(Buffer.from(parts[3]!, "base64url").map((b, i) => (i === 0 ? b ^ 1 : b))).toString("base64url");
      await expectDecryptionError(unwrapStoredDek(backend, parts.join("."), X));
      await expectDecryptionError(wrapInstanceLayer(backend, ikY, inner.jwe, Y));
      // A layer inside a layer is not a root-key wrap.
      await expectDecryptionError(wrapInstanceLayer(backend, ikX, outer.jwe, X));
      // Nor is a DEK wrapped by the instance key alone: it would skip the root key (and its owner's control).
      await expectDecryptionError(unwrapStoredDek(backend, (await wrapDek(backend, ikX, randomBytes(32), X)).jwe, X));
    });
  });
});
