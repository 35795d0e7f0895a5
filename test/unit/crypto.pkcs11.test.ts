// pkcs11 root-key backend against a real SoftHSM2 token (skipped when SoftHSM2 is not installed, unless
// CM_TEST_REQUIRE_SOFTHSM=1, which makes a missing SoftHSM2 an error).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";

import pkcs11js from "pkcs11js";
import type { Handle } from "pkcs11js";
import type { RootKeyBackend } from "../../src/domain/rootkey.js";
import { unwrapDek, wrapDek, type WrapContext } from "../../src/crypto/wrapped-dek.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import { parseProtectedHeader } from "../../src/crypto/compact.js";
import { unwrapA256KW, wrapA256KW } from "../helpers/jose-reference.js";
import { LocalRootKeyBackend } from "../../src/crypto/rootkeys/local.js";
import { Pkcs11RootKeyBackend, type Pkcs11OpenOptions } from "../../src/crypto/rootkeys/pkcs11.js";
import { acquireModule, releaseModule } from "../../src/crypto/rootkeys/pkcs11/module.js";
import { AlreadyExistsError, RootKeyError } from "../../src/domain/errors.js";
import { makeToken, openRawSession, softhsmAvailable, type RawSession, type TestToken } from "../helpers/softhsm.js";
import { b64Header, craftJwe, expectDecryptionError, tamperSegment } from "./crypto-helpers.js";

/** Wraps through the one wrapped-DEK framing, as the service does; returns the stored JWE. */
const wrap = async (b: RootKeyBackend, dek: Buffer, keyId: string, ctx: WrapContext): Promise<string> => (await wrapDek(b, keyId, dek, ctx)).jwe;
const unwrap = (b: RootKeyBackend, jwe: string, ctx: WrapContext): Promise<Buffer> => unwrapDek(b, jwe, ctx);
const X = { instance: "instances/0193e4a0-0000-7000-8000-00000000000a" };
const Y = { instance: "instances/0193e4a0-0000-7000-8000-00000000000b" };
const ck = pkcs11js;
const WRONG_PIN = `wrong-${randomBytes(6).toString("hex")}`;
const REPO = path.resolve(import.meta.dirname, "../..");

/** Every error and log record the suite sees; the last test checks none of them carries a PIN. */
const seen: unknown[] = [];
const logs: unknown[] = [];
const logger = { warn: (obj: unknown, msg?: string) => void logs.push({ obj, msg }) } as unknown as Pkcs11OpenOptions["logger"];

async function rejection(p: Promise<unknown>): Promise<unknown> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  seen.push(err);
  return err;
}

async function expectRootKeyError(p: Promise<unknown>, reason: string, meta: Record<string, string> = {}): Promise<RootKeyError> {
  const err = await rejection(p);
  expect(err, String(err)).toBeInstanceOf(RootKeyError);
  expect((err as RootKeyError).reason).toBe(reason);
  expect((err as RootKeyError).metadata).toMatchObject(meta);
  return err as RootKeyError;
}

/** Handles of the token objects labelled `label` (and with CKA_ID `id`). */
function findObjects(raw: RawSession, label: string, id?: string): Handle[] {
  const template: pkcs11js.Template = [{ type: ck.CKA_LABEL, value: label }];
  if (id !== undefined) template.push({ type: ck.CKA_ID, value: Buffer.from(id) });
  raw.pkcs11.C_FindObjectsInit(raw.session, template);
  const found = raw.pkcs11.C_FindObjects(raw.session, 100);
  raw.pkcs11.C_FindObjectsFinal(raw.session);
  return found;
}

function boolAttr(raw: RawSession, h: Handle, type: number): boolean {
  return raw.pkcs11.C_GetAttributeValue(raw.session, h, [{ type }])[0]!.value[0] === 1;
}

/** Error text an operator or log could see: message, stack, metadata and the whole cause chain. */
function visibleText(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    parts.push(String(e), (e as Error).stack ?? "", JSON.stringify((e as { metadata?: unknown }).metadata ?? {}), JSON.stringify(e));
  }
  return parts.join("\n");
}

describe.skipIf(!softhsmAvailable())("crypto/rootkeys/pkcs11 (SoftHSM2)", () => {
  let token: TestToken;
  /** A second token no backend logs in to before the wrong-PIN test (login state is per process and token). */
  let spare: TestToken;
  /** A token deleted while a backend uses it. */
  let doomed: TestToken;
  let hsm: Pkcs11RootKeyBackend;
  const opened: Pkcs11RootKeyBackend[] = [];
  const raws: RawSession[] = [];

  const open = async (t: TestToken, extra: Partial<Pkcs11OpenOptions> = {}): Promise<Pkcs11RootKeyBackend> => {
    const b = await Pkcs11RootKeyBackend.open({ modulePath: t.modulePath, tokenLabel: t.tokenLabel, pin: t.pin, logger, ...extra });
    opened.push(b);
    return b;
  };
  const raw = (t: TestToken = token): RawSession => {
    const r = openRawSession(t);
    raws.push(r);
    return r;
  };
  const dek = (): Buffer => randomBytes(32);

  beforeAll(async () => {
    // Every token first: SoftHSM only sees tokens that exist when the process initialises it.
    token = makeToken();
    spare = makeToken();
    doomed = makeToken();
    hsm = await open(token);
    await hsm.createKey("alpha");
    await hsm.createKey("beta");
  });

  afterAll(async () => {
    for (const r of raws.splice(0)) r.close();
    await Promise.all(opened.splice(0).map((b) => b.close()));
    for (const t of [token, spare, doomed]) t?.cleanup();
  });

  it("key wrap in the HSM: 40 bytes out, the same key back, and any other size refused as undecryptable", async () => {
    const cek = dek();
    const { version, wrapped } = await hsm.wrapKey("alpha", cek);
    expect([version, wrapped.length]).toEqual([1, 40]);
    expect((await hsm.unwrapKey("alpha", 1, wrapped)).toString("hex")).toBe(cek.toString("hex"));
    for (const size of [0, 39, 41]) await expectDecryptionError(hsm.unwrapKey("alpha", 1, randomBytes(size)));
  });

  it("destroyKey destroys every version, and is idempotent", async () => {
    await hsm.createKey("gone");
    await hsm.rotate("gone");
    await hsm.destroyKey("gone");
    await hsm.destroyKey("gone");
    expect((await hsm.listKeys()).map((k) => k.keyId)).not.toContain("gone");
    await expectRootKeyError(hsm.describe("gone"), "ROOT_KEY_NOT_FOUND");
  });

  it("opens by token label, creates, describes and lists root keys", async () => {
    expect(hsm.name).toBe("pkcs11");
    await hsm.check();
    const info = await hsm.createKey("first");
    expect(info).toEqual({
      backend: "pkcs11",
      keyId: "first",
      state: "ENABLED",
      currentVersion: 1,
      versions: [{ kid: "pkcs11/first/1", version: 1, state: "ENABLED", extractable: false }],
    });
    expect(await hsm.describe("first")).toEqual({ backend: "pkcs11", keyId: "first", state: "ENABLED", currentVersion: 1 });
    const err = await rejection(hsm.createKey("first"));
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect((err as AlreadyExistsError).reason).toBe("ROOT_KEY_ALREADY_EXISTS");
    await expect(hsm.createKey("Not_Valid")).rejects.toThrow(TypeError);
    const keys = await hsm.listKeys();
    expect(keys.map((k) => k.keyId)).toEqual(expect.arrayContaining(["alpha", "beta", "first"]));
  });

  it("wraps and unwraps a DEK; the JWE has local's exact header shape and A256KW/A256GCM sizes", async () => {
    const d = dek();
    const jwe = await wrap(hsm, d, "alpha", X);
    expect(await unwrap(hsm, jwe, X)).toEqual(d);
    expect(await wrap(hsm, d, "alpha", X)).not.toBe(jwe); // fresh CEK and IV every time

    const header = parseProtectedHeader(jwe);
    expect(header).toEqual({ alg: "A256KW", enc: "A256GCM", kid: "pkcs11/alpha/1", cm_instance: X.instance });
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cm-pkcs11-local-"));
    try {
      const local = await LocalRootKeyBackend.open(path.join(dir, "keystore.json"), { createIfMissing: true, defaultKeyId: "default" });
      const localJwe = await wrap(local, d, "default", X);
      await local.close();
      // Same fields in the same order (node-jose writes local's), so the two are indistinguishable but for kid.
      expect(Object.keys(header)).toEqual(Object.keys(parseProtectedHeader(localJwe)));
      const lens = (s: string) => s.split(".").map((x) => Buffer.from(x, "base64url").length);
      expect(lens(jwe).slice(1)).toEqual(lens(localJwe).slice(1));
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
    const [, ek, iv, ct, tag] = jwe.split(".").map((x) => Buffer.from(x, "base64url"));
    expect([ek!.length, iv!.length, ct!.length, tag!.length]).toEqual([40, 12, 32, 16]);
  });

  it("keeps the root key inside the token: non-extractable, sensitive, value unreadable, cannot be wrapped out", async () => {
    const r = raw();
    const [h] = findObjects(r, "alpha", "1");
    expect(h).toBeDefined();
    expect(boolAttr(r, h!, ck.CKA_EXTRACTABLE)).toBe(false);
    expect(boolAttr(r, h!, ck.CKA_SENSITIVE)).toBe(true);
    expect(boolAttr(r, h!, ck.CKA_NEVER_EXTRACTABLE)).toBe(true);
    expect(boolAttr(r, h!, ck.CKA_ALWAYS_SENSITIVE)).toBe(true);
    expect(boolAttr(r, h!, ck.CKA_TOKEN)).toBe(true);
    expect(boolAttr(r, h!, ck.CKA_PRIVATE)).toBe(true);
    expect(() => r.pkcs11.C_GetAttributeValue(r.session, h!, [{ type: ck.CKA_VALUE }])).toThrow(/CKR_ATTRIBUTE_SENSITIVE/);
    // Not even wrapped under another key (here: a fresh session key) can it leave.
    const other = r.pkcs11.C_GenerateKey(r.session, { mechanism: ck.CKM_AES_KEY_GEN }, [
      { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
      { type: ck.CKA_VALUE_LEN, value: 32 },
      { type: ck.CKA_TOKEN, value: false },
      { type: ck.CKA_WRAP, value: true },
    ]);
    expect(() => r.pkcs11.C_WrapKey(r.session, { mechanism: ck.CKM_AES_KEY_WRAP }, other, h!, Buffer.alloc(64))).toThrow(/CKR_KEY_UNEXTRACTABLE/);
    r.pkcs11.C_DestroyObject(r.session, other);
  });

  it("interoperates with node-jose both ways, using an extractable test-only key made for this test", async () => {
    const r = raw();
    // A test-only KEK that CAN leave the token, so node-jose can use the same key material.
    const kekHandle = r.pkcs11.C_GenerateKey(r.session, { mechanism: ck.CKM_AES_KEY_GEN }, [
      { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
      { type: ck.CKA_VALUE_LEN, value: 32 },
      { type: ck.CKA_LABEL, value: "interop-test" },
      { type: ck.CKA_ID, value: Buffer.from("1") },
      { type: ck.CKA_TOKEN, value: true },
      { type: ck.CKA_PRIVATE, value: true },
      { type: ck.CKA_SENSITIVE, value: false },
      { type: ck.CKA_EXTRACTABLE, value: true },
      { type: ck.CKA_WRAP, value: true },
      { type: ck.CKA_UNWRAP, value: true },
    ]);
    const kek = Buffer.from(r.pkcs11.C_GetAttributeValue(r.session, kekHandle, [{ type: ck.CKA_VALUE }])[0]!.value);
    expect(kek).toHaveLength(32);
    try {
      const hsmX = await open(token, { allowExtractableRootKeys: true });
      // HSM wraps (RFC 3394 in SoftHSM) -> node-jose opens.
      const d1 = dek();
      const jwe = await wrap(hsmX, d1, "interop-test", X);
      const opened1 = await unwrapA256KW(kek, jwe);
      expect(opened1.plaintext).toEqual(d1);
      expect(opened1.header).toEqual({ alg: "A256KW", enc: "A256GCM", kid: "pkcs11/interop-test/1", cm_instance: X.instance });
      // node-jose wraps -> HSM opens.
      const d2 = dek();
      const joseJwe = await wrapA256KW(kek, d2, { kid: "pkcs11/interop-test/1", cm_instance: X.instance });
      expect(await unwrap(hsmX, joseJwe, X)).toEqual(d2);

      // The default backend refuses a root key whose value could leave the HSM.
      await expectRootKeyError(wrap(hsm, d1, "interop-test", X), "ROOT_KEY_DISABLED", { root_key: "pkcs11/interop-test", version: "1" });
      await expectRootKeyError(unwrap(hsm, jwe, X), "ROOT_KEY_DISABLED");
      expect((await hsm.describe("interop-test")).state).toBe("DISABLED");
      expect((await hsm.listKeys()).find((k) => k.keyId === "interop-test")!.versions[0]!.extractable).toBe(true);
    } finally {
      kek.fill(0);
      r.pkcs11.C_DestroyObject(r.session, kekHandle);
    }
  });

  it("binds the wrapped DEK to its instance", async () => {
    const jwe = await wrap(hsm, dek(), "alpha", X);
    await expectDecryptionError(unwrap(hsm, jwe, Y));
    // Re-labelling the header for Y changes the GCM AAD: still refused even when the caller claims Y.
    const seg = jwe.split(".");
    seg[0] = b64Header({ alg: "A256KW", enc: "A256GCM", kid: "pkcs11/alpha/1", cm_instance: Y.instance });
    await expectDecryptionError(unwrap(hsm, seg.join("."), Y));
  });

  it("refuses every tampered segment, malformed input and foreign JWEs with the one DecryptionError", async () => {
    const jwe = await wrap(hsm, dek(), "alpha", X);
    for (let i = 0; i < 5; i++) await expectDecryptionError(unwrap(hsm, tamperSegment(jwe, i), X));
    // Every byte of the encrypted key matters (RFC 3394 integrity check inside the HSM).
    const seg = jwe.split(".");
    const ek = Buffer.from(seg[1]!, "base64url");
    for (const at of [0, 7, 8, 39]) {
      const bad = Buffer.from(ek);
      bad[at]! ^= 0x01;
      await expectDecryptionError(unwrap(hsm, [seg[0], bad.toString("base64url"), ...seg.slice(2)].join("."), X));
    }
    for (const bogus of ["", "a.b.c", `${jwe}.x`, jwe.replace(/\./g, "..")]) await expectDecryptionError(unwrap(hsm, bogus, X));
    // Extra header fields, other algorithms, kids of other backends.
    const cek = randomBytes(32);
    const ek40 = randomBytes(40);
    for (const header of [
      { alg: "A256KW", enc: "A256GCM", kid: "pkcs11/alpha/1", cm_instance: X.instance, extra: "1" },
      { alg: "dir", enc: "A256GCM", kid: "pkcs11/alpha/1", cm_instance: X.instance },
      { alg: "A256KW", enc: "A128GCM", kid: "pkcs11/alpha/1", cm_instance: X.instance },
      { alg: "A256KW", enc: "A256GCM", kid: "local/default/1", cm_instance: X.instance },
      { alg: "A256KW", enc: "A256GCM", kid: "pkcs11/alpha/0", cm_instance: X.instance },
      { alg: "A256KW", enc: "A256GCM", kid: "pkcs11/Alpha/1", cm_instance: X.instance },
    ]) {
      await expectDecryptionError(unwrap(hsm, craftJwe(cek, header, dek(), { encryptedKey: header.alg === "dir" ? Buffer.alloc(0) : ek40 }), X));
    }
  });

  it("rotates: new wraps use version 2, version 1 keeps unwrapping, a kid pointing at the wrong version fails", async () => {
    await hsm.createKey("rot");
    const d1 = dek();
    const jwe1 = await wrap(hsm, d1, "rot", X);
    expect(await hsm.rotate("rot")).toEqual({ backend: "pkcs11", keyId: "rot", state: "ENABLED", currentVersion: 2 });
    expect(await hsm.describe("rot")).toEqual({ backend: "pkcs11", keyId: "rot", state: "ENABLED", currentVersion: 2 });
    const d2 = dek();
    const jwe2 = await wrap(hsm, d2, "rot", X);
    expect(parseProtectedHeader(jwe2).kid).toBe("pkcs11/rot/2");
    expect(await unwrap(hsm, jwe1, X)).toEqual(d1);
    expect(await unwrap(hsm, jwe2, X)).toEqual(d2);
    const seg = jwe1.split(".");
    seg[0] = b64Header({ alg: "A256KW", enc: "A256GCM", kid: "pkcs11/rot/2", cm_instance: X.instance });
    await expectDecryptionError(unwrap(hsm, seg.join("."), X));
    const info = (await hsm.listKeys()).find((k) => k.keyId === "rot")!;
    expect(info.versions.map((v) => v.kid)).toEqual(["pkcs11/rot/1", "pkcs11/rot/2"]);
  });

  it("disabled -> ROOT_KEY_DISABLED on wrap, unwrap and rotate (enforced by the token itself); enabling restores", async () => {
    await hsm.createKey("dis");
    const d = dek();
    const jwe = await wrap(hsm, d, "dis", X);
    const off = await hsm.setEnabled("dis", false);
    expect(off.state).toBe("DISABLED");
    expect(off.versions.map((v) => v.state)).toEqual(off.versions.map(() => "DISABLED"));
    await expectRootKeyError(wrap(hsm, dek(), "dis", X), "ROOT_KEY_DISABLED", { root_key: "pkcs11/dis", version: "1" });
    await expectRootKeyError(unwrap(hsm, jwe, X), "ROOT_KEY_DISABLED", { root_key: "pkcs11/dis", version: "1" });
    await expectRootKeyError(hsm.rotate("dis"), "ROOT_KEY_DISABLED", { root_key: "pkcs11/dis" });
    expect(await hsm.describe("dis")).toEqual({ backend: "pkcs11", keyId: "dis", state: "DISABLED", currentVersion: 1 });

    // Not just our own check: the token refuses the disabled key (CKR_KEY_FUNCTION_NOT_PERMITTED).
    const r = raw();
    const [h] = findObjects(r, "dis", "1");
    const sessionKey = r.pkcs11.C_CreateObject(r.session, [
      { type: ck.CKA_CLASS, value: ck.CKO_SECRET_KEY },
      { type: ck.CKA_KEY_TYPE, value: ck.CKK_AES },
      { type: ck.CKA_TOKEN, value: false },
      { type: ck.CKA_VALUE, value: randomBytes(32) },
      { type: ck.CKA_EXTRACTABLE, value: true },
      { type: ck.CKA_SENSITIVE, value: false },
    ]);
    expect(() => r.pkcs11.C_WrapKey(r.session, { mechanism: ck.CKM_AES_KEY_WRAP }, h!, sessionKey, Buffer.alloc(64))).toThrow(/CKR_KEY_FUNCTION_NOT_PERMITTED/);
    r.pkcs11.C_DestroyObject(r.session, sessionKey);

    expect((await hsm.setEnabled("dis", true)).state).toBe("ENABLED");
    expect(await unwrap(hsm, jwe, X)).toEqual(d);
    expect(await unwrap(hsm, await wrap(hsm, d, "dis", X), X)).toEqual(d);

    // One version only: v1 disabled, v2 (current) still wraps.
    await hsm.rotate("dis");
    const perVersion = await hsm.setEnabled("dis", false, 1);
    expect(perVersion.versions.map((v) => v.state)).toEqual(["DISABLED", "ENABLED"]);
    expect(perVersion.state).toBe("ENABLED");
    await expectRootKeyError(unwrap(hsm, jwe, X), "ROOT_KEY_DISABLED", { version: "1" });
    expect(parseProtectedHeader(await wrap(hsm, d, "dis", X)).kid).toBe("pkcs11/dis/2");
  });

  it("sees a disable made by another process (an operator tool) on the next call", async () => {
    await hsm.createKey("ext");
    const d = dek();
    const jwe = await wrap(hsm, d, "ext", X);
    const setFromOtherProcess = (enabled: boolean): void => {
      const script = `
        const pk = require("pkcs11js");
        const p = new pk.PKCS11(); p.load(process.env.MODULE); p.C_Initialize();
        const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trimEnd() === process.env.LABEL);
        const s = p.C_OpenSession(slot, pk.CKF_RW_SESSION | pk.CKF_SERIAL_SESSION);
        p.C_Login(s, pk.CKU_USER, process.env.TOKEN_PIN);
        p.C_FindObjectsInit(s, [{ type: pk.CKA_LABEL, value: "ext" }]);
        for (const h of p.C_FindObjects(s, 10)) p.C_SetAttributeValue(s, h, [{ type: pk.CKA_WRAP, value: ${enabled} }, { type: pk.CKA_UNWRAP, value: ${enabled} }]);
        p.C_FindObjectsFinal(s); p.C_Finalize();`;
      execFileSync(process.execPath, ["-e", script], {
        cwd: REPO,
        env: { ...process.env, ...token.env, MODULE: token.modulePath, LABEL: token.tokenLabel, TOKEN_PIN: token.pin },
        stdio: "pipe",
      });
    };
    setFromOtherProcess(false);
    await expectRootKeyError(unwrap(hsm, jwe, X), "ROOT_KEY_DISABLED");
    await expectRootKeyError(wrap(hsm, d, "ext", X), "ROOT_KEY_DISABLED");
    setFromOtherProcess(true);
    expect(await unwrap(hsm, jwe, X)).toEqual(d);
  });

  it("destroyed version -> ROOT_KEY_DESTROYED; with no version left the key is ROOT_KEY_NOT_FOUND", async () => {
    await hsm.createKey("shred");
    const jwe1 = await wrap(hsm, dek(), "shred", X);
    await hsm.rotate("shred");
    const d2 = dek();
    const jwe2 = await wrap(hsm, d2, "shred", X);
    const after = await hsm.destroyVersion("shred", 1);
    expect(after!.versions.map((v) => v.version)).toEqual([2]);
    expect(findObjects(raw(), "shred", "1")).toEqual([]); // really gone from the token
    await expectRootKeyError(unwrap(hsm, jwe1, X), "ROOT_KEY_DESTROYED", { root_key: "pkcs11/shred", version: "1" });
    expect(await unwrap(hsm, jwe2, X)).toEqual(d2);
    await expectRootKeyError(hsm.destroyVersion("shred", 1), "ROOT_KEY_DESTROYED");
    await expectRootKeyError(hsm.setEnabled("shred", false, 1), "ROOT_KEY_DESTROYED");
    expect(await hsm.destroyVersion("shred", 2)).toBeUndefined();
    await expectRootKeyError(unwrap(hsm, jwe2, X), "ROOT_KEY_NOT_FOUND", { root_key: "pkcs11/shred" });
    await expectRootKeyError(hsm.describe("shred"), "ROOT_KEY_NOT_FOUND");
  });

  it("unknown or malformed key ids -> ROOT_KEY_NOT_FOUND", async () => {
    await expectRootKeyError(wrap(hsm, dek(), "nokey", X), "ROOT_KEY_NOT_FOUND", { root_key: "pkcs11/nokey", backend: "pkcs11" });
    await expectRootKeyError(hsm.describe("nokey"), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(hsm.rotate("nokey"), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(hsm.setEnabled("nokey", false), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(hsm.destroyVersion("nokey", 1), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(wrap(hsm, dek(), "Bad_Id", X), "ROOT_KEY_NOT_FOUND");
    const forged = craftJwe(randomBytes(32), { alg: "A256KW", enc: "A256GCM", kid: "pkcs11/nokey/1", cm_instance: X.instance }, dek(), { encryptedKey: randomBytes(40) });
    await expectRootKeyError(unwrap(hsm, forged, X), "ROOT_KEY_NOT_FOUND", { root_key: "pkcs11/nokey", version: "1" });
  });

  it("open: wrong PIN -> ROOT_KEY_ACCESS_DENIED; unknown token or module -> ROOT_KEY_BACKEND_UNAVAILABLE", async () => {
    const denied = await expectRootKeyError(
      Pkcs11RootKeyBackend.open({ modulePath: spare.modulePath, tokenLabel: spare.tokenLabel, pin: WRONG_PIN, logger }),
      "ROOT_KEY_ACCESS_DENIED",
      { backend: "pkcs11", token: spare.tokenLabel },
    );
    expect(denied.message).toMatch(/CKR_PIN_INCORRECT/);
    await expectRootKeyError(
      Pkcs11RootKeyBackend.open({ modulePath: token.modulePath, tokenLabel: "no-such-token", pin: token.pin, logger }),
      "ROOT_KEY_BACKEND_UNAVAILABLE",
    );
    await expectRootKeyError(
      Pkcs11RootKeyBackend.open({ modulePath: "/nonexistent/libpkcs11.so", tokenLabel: token.tokenLabel, pin: token.pin }),
      "ROOT_KEY_BACKEND_UNAVAILABLE",
    );
    await expect(Pkcs11RootKeyBackend.open({ modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: "" })).rejects.toThrow(TypeError);
    // The right PIN still works after a refused one.
    const ok = await open(spare);
    await ok.check();
    await ok.close();
  });

  it("survives the sessions being closed behind its back (C_CloseAllSessions from another handle)", async () => {
    const d = dek();
    const jwe = await wrap(hsm, d, "alpha", X);
    const r = raw();
    const warnings = logs.length;
    r.pkcs11.C_CloseAllSessions(r.slot);
    expect(await unwrap(hsm, jwe, X)).toEqual(d);
    expect(await unwrap(hsm, await wrap(hsm, d, "alpha", X), X)).toEqual(d);
    await hsm.check();
    expect(logs.length).toBeGreaterThan(warnings); // the reconnect was logged
  });

  it("survives the library being finalised (C_Finalize), and finalised + re-initialised, behind its back", async () => {
    const d = dek();
    const jwe = await wrap(hsm, d, "alpha", X);
    const r = raw();
    r.pkcs11.C_Finalize();
    expect(await unwrap(hsm, jwe, X)).toEqual(d); // CKR_CRYPTOKI_NOT_INITIALIZED -> C_Initialize, new slot lookup, login
    const r2 = raw();
    r2.pkcs11.C_Finalize();
    r2.pkcs11.C_Initialize({ flags: ck.CKF_OS_LOCKING_OK });
    expect(await hsm.describe("alpha")).toMatchObject({ currentVersion: 1 }); // CKR_SESSION_HANDLE_INVALID -> reconnect
    expect(await unwrap(hsm, jwe, X)).toEqual(d);
  });

  it("reconnects under load: 50 concurrent calls on a pool of 2 right after all its sessions were closed", async () => {
    const b = await open(token, { sessionPoolSize: 2 });
    const deks = Array.from({ length: 50 }, dek);
    const wrapped = await Promise.all(deks.map((d) => wrap(b, d, "alpha", X)));
    // Closed while idle, not mid-call: freeing a session while another thread is inside a call on it is a race
    // in the token library itself, not something a client can survive reliably.
    const r = raw();
    const warnings = logs.length;
    r.pkcs11.C_CloseAllSessions(r.slot);
    // Every caller (the ones holding dead sessions and the queued ones) retries at most once, and all succeed.
    expect(await Promise.all(wrapped.map((w) => unwrap(b, w, X)))).toEqual(deks);
    expect(logs.length).toBeGreaterThan(warnings);
  });

  it("does 50 parallel wrap+unwrap round trips with a pool of 2 sessions", async () => {
    const b = await open(token, { sessionPoolSize: 2 });
    const deks = Array.from({ length: 50 }, dek);
    const out = await Promise.all(deks.map(async (d, i) => unwrap(b, await wrap(b, d, i % 2 ? "alpha" : "beta", X), X)));
    expect(out).toEqual(deks);
    const wrapped = await Promise.all(deks.map((d) => wrap(b, d, "alpha", Y)));
    expect(new Set(wrapped.map((w) => w.split(".")[1])).size).toBe(50);
    expect(await Promise.all(wrapped.map((w) => unwrap(b, w, Y)))).toEqual(deks);
  });

  it("a token that stays gone after a reconnect -> ROOT_KEY_BACKEND_UNAVAILABLE (one retry), others carry on", async () => {
    const b = await open(doomed);
    await b.createKey("k");
    const jwe = await wrap(b, dek(), "k", X);
    const r = raw();
    r.pkcs11.C_Finalize(); // so the next C_Initialize rescans the token directory...
    doomed.cleanup(); // ...which no longer holds this token
    const err = await expectRootKeyError(unwrap(b, jwe, X), "ROOT_KEY_BACKEND_UNAVAILABLE", { root_key: "pkcs11/k", token: doomed.tokenLabel });
    expect(err.kind).toBe("UNAVAILABLE");
    await expectRootKeyError(b.check(), "ROOT_KEY_BACKEND_UNAVAILABLE");
    expect((await hsm.describe("alpha")).state).toBe("ENABLED");
  });

  it("times out a hung HSM call (ROOT_KEY_BACKEND_UNAVAILABLE), keeps its session out of the pool until it returns", async () => {
    const b = await open(token, { sessionPoolSize: 1, callTimeoutMs: 200 });
    const entry = acquireModule(token.modulePath);
    const original = entry.pkcs11.C_WrapKeyAsync.bind(entry.pkcs11);
    let finished = false;
    const spy = vi.spyOn(entry.pkcs11, "C_WrapKeyAsync").mockImplementation(async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, 600));
      try {
        return await original(...args);
      } finally {
        finished = true;
      }
    });
    try {
      const t0 = Date.now();
      const slow = await expectRootKeyError(wrap(b, dek(), "alpha", X), "ROOT_KEY_BACKEND_UNAVAILABLE");
      expect(Date.now() - t0).toBeLessThan(550);
      expect(slow.message).toMatch(/did not answer wrap within 200 ms/);
      // The only session is still inside the hung call: waiting for it is bounded as well.
      const busy = await expectRootKeyError(b.describe("alpha"), "ROOT_KEY_BACKEND_UNAVAILABLE");
      expect(busy.message).toMatch(/busy/);
      spy.mockRestore();
      await vi.waitFor(() => expect(finished).toBe(true), { timeout: 2000 });
      const d = dek();
      expect(await unwrap(b, await wrap(b, d, "alpha", X), X)).toEqual(d);
    } finally {
      spy.mockRestore();
      releaseModule(entry);
    }
  });

  it("close: later calls fail ROOT_KEY_BACKEND_UNAVAILABLE, close is idempotent, other backends on the module keep working", async () => {
    const b = await open(token);
    await b.close();
    await b.close();
    await expectRootKeyError(wrap(b, dek(), "alpha", X), "ROOT_KEY_BACKEND_UNAVAILABLE");
    await expectRootKeyError(b.check(), "ROOT_KEY_BACKEND_UNAVAILABLE");
    expect(await unwrap(hsm, await wrap(hsm, Buffer.alloc(32, 1), "alpha", X), X)).toEqual(Buffer.alloc(32, 1));
  });

  it("never puts a PIN in an error (message, stack, metadata, causes) or a log record", () => {
    expect(seen.length).toBeGreaterThan(20);
    const pins = [token.pin, spare.pin, doomed.pin, token.soPin, WRONG_PIN];
    for (const err of seen) {
      const text = visibleText(err);
      for (const pin of pins) expect(text).not.toContain(pin);
    }
    expect(logs.length).toBeGreaterThan(0);
    const logText = JSON.stringify(logs);
    for (const pin of pins) expect(logText).not.toContain(pin);
  });
});
