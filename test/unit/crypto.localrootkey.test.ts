import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

import type { RootKeyBackend } from "../../src/domain/rootkey.js";
import { unwrapDek, wrapDek, type WrapContext } from "../../src/crypto/wrapped-dek.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { parseProtectedHeader } from "../../src/crypto/compact.js";
import { LOCAL_KEYSTORE_FORMAT, LocalRootKeyBackend, type LocalKeystoreDocument } from "../../src/crypto/rootkeys/local.js";
import { loadKeystore } from "../../src/crypto/rootkeys/local/files.js";
import { AlreadyExistsError, RootKeyError } from "../../src/domain/errors.js";
import { expectDecryptionError, tamperSegment } from "./crypto-helpers.js";

/** Wraps through the one wrapped-DEK framing, as the service does; returns the stored JWE. */
const wrap = async (b: RootKeyBackend, dek: Buffer, keyId: string, ctx: WrapContext): Promise<string> => (await wrapDek(b, keyId, dek, ctx)).jwe;
const unwrap = (b: RootKeyBackend, jwe: string, ctx: WrapContext): Promise<Buffer> => unwrapDek(b, jwe, ctx);
const X = { instance: "instances/0193e4a0-0000-7000-8000-00000000000a" };
const Y = { instance: "instances/0193e4a0-0000-7000-8000-00000000000b" };

async function expectRootKeyError(p: Promise<unknown>, reason: string): Promise<RootKeyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RootKeyError);
  expect((err as RootKeyError).reason).toBe(reason);
  return err as RootKeyError;
}

describe("crypto/rootkeys/local", () => {
  let dir: string;
  let file: string;
  const opened: LocalRootKeyBackend[] = [];
  const openBackend = async (p = file, createIfMissing = true): Promise<LocalRootKeyBackend> => {
    const b = await LocalRootKeyBackend.open(p, { createIfMissing, defaultKeyId: "default" });
    opened.push(b);
    return b;
  };
  const readDoc = async (): Promise<LocalKeystoreDocument> => JSON.parse(await fsp.readFile(file, "utf8")) as LocalKeystoreDocument;

  beforeEach(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cm-keystore-"));
    file = path.join(dir, "keystore.json");
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((b) => b.close()));
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it("creates the keystore on first start, mode 0600, with root key default version 1", async () => {
    const b = await openBackend();
    const st = await fsp.stat(file);
    expect(st.mode & 0o777).toBe(0o600);
    const doc = await readDoc();
    expect(doc.format).toBe(LOCAL_KEYSTORE_FORMAT);
    expect(doc.keys).toHaveLength(1);
    expect(doc.keys[0]).toMatchObject({ keyId: "default", currentVersion: 1 });
    expect(doc.keys[0]!.versions[0]).toMatchObject({ kty: "oct", alg: "A256KW", kid: "local/default/1", version: 1, state: "ENABLED" });
    expect(Buffer.from(doc.keys[0]!.versions[0]!.k!, "base64url")).toHaveLength(32);
    expect(await b.describe("default")).toEqual({ backend: "local", keyId: "default", state: "ENABLED", currentVersion: 1 });
    expect(b.name).toBe("local");
  });

  it("creates the keystore 0600 even under a permissive umask", async () => {
    const old = process.umask(0o000);
    try {
      await openBackend();
    } finally {
      process.umask(old);
    }
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
  });

  it("reopens an existing keystore with the same keys", async () => {
    const a = await openBackend();
    const wrapped = await wrap(a, randomBytes(32), "default", X);
    await a.close();
    const b = await openBackend();
    expect(await unwrap(b, wrapped, X)).toHaveLength(32);
  });

  it("two processes creating at once end up with one keystore (no clobbering)", async () => {
    const [a, b] = await Promise.all([openBackend(), openBackend()]);
    const dek = randomBytes(32);
    expect(await unwrap(b, await wrap(a, dek, "default", X), X)).toEqual(dek);
  });

  it("fails when missing and createIfMissing is false", async () => {
    await expect(openBackend(file, false)).rejects.toThrow(/does not exist/);
  });

  it.each([0o644, 0o640, 0o604, 0o660, 0o602])("refuses to start when the keystore has mode %o", async (mode) => {
    const b = await openBackend();
    await b.close();
    await fsp.chmod(file, mode);
    await expect(openBackend()).rejects.toThrow(/chmod 600/);
  });

  it("refuses a symlinked keystore and a malformed one", async () => {
    await (await openBackend()).close();
    const link = path.join(dir, "link.json");
    await fsp.symlink(file, link);
    await expect(openBackend(link)).rejects.toThrow(/symbolic link/);
    const bad = path.join(dir, "bad.json");
    await fsp.writeFile(bad, JSON.stringify({ format: LOCAL_KEYSTORE_FORMAT, keys: [{ keyId: "k", versions: [] }] }), { mode: 0o600 });
    await expect(openBackend(bad)).rejects.toThrow(/malformed/);
    await fsp.writeFile(bad, "{", { mode: 0o600 });
    await expect(openBackend(bad)).rejects.toThrow(/malformed: not JSON/);
  });

  it("stops serving when the keystore becomes group/world readable at runtime", async () => {
    const b = await openBackend();
    await fsp.chmod(file, 0o644);
    const err = await expectRootKeyError(wrap(b, randomBytes(32), "default", X), "ROOT_KEY_BACKEND_UNAVAILABLE");
    expect(err.message).toMatch(/chmod 600/);
    await expect(b.check()).rejects.toBeInstanceOf(RootKeyError);
  });

  it("wraps with kid local/<key>/<version> and the instance in the protected header, and unwraps", async () => {
    const b = await openBackend();
    const dek = randomBytes(32);
    const wrapped = await wrap(b, dek, "default", X);
    expect(parseProtectedHeader(wrapped)).toEqual({ alg: "A256KW", enc: "A256GCM", kid: "local/default/1", cm_instance: X.instance });
    expect(await unwrap(b, wrapped, X)).toEqual(dek);
  });

  it("a wrapped DEK of instance X does not unwrap for instance Y", async () => {
    const b = await openBackend();
    const wrapped = await wrap(b, randomBytes(32), "default", X);
    await expectDecryptionError(unwrap(b, wrapped, Y));
  });

  it("a header rewritten to name instance Y fails authentication", async () => {
    const b = await openBackend();
    const seg = (await wrap(b, randomBytes(32), "default", X)).split(".");
    seg[0] = Buffer.from(JSON.stringify({ alg: "A256KW", enc: "A256GCM", kid: "local/default/1", cm_instance: Y.instance })).toString("base64url");
    await expectDecryptionError(unwrap(b, seg.join("."), Y));
  });

  it.each([0, 1, 2, 3, 4])("rejects tampering with segment %i of a wrapped DEK", async (i) => {
    const b = await openBackend();
    const wrapped = await wrap(b, randomBytes(32), "default", X);
    await expectDecryptionError(unwrap(b, tamperSegment(wrapped, i), X));
  });

  it("rejects a kid of another backend or a malformed kid as DecryptionError", async () => {
    const b = await openBackend();
    const seg = (await wrap(b, randomBytes(32), "default", X)).split(".");
    for (const kid of ["pkcs11/default/1", "local/default", "local/default/0", "local/default/1/2", "local/../1"]) {
      seg[0] = Buffer.from(JSON.stringify({ alg: "A256KW", enc: "A256GCM", kid, cm_instance: X.instance })).toString("base64url");
      await expectDecryptionError(unwrap(b, seg.join("."), X));
    }
  });

  it("routes by kid: rotation makes a new current version and old versions keep unwrapping", async () => {
    const b = await openBackend();
    const dek1 = randomBytes(32);
    const w1 = await wrap(b, dek1, "default", X);
    const info = await b.rotate("default");
    expect(info).toMatchObject({ keyId: "default", currentVersion: 2, state: "ENABLED" });
    expect(info.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(JSON.stringify(info)).not.toMatch(/"k"/); // no key material in reports
    const dek2 = randomBytes(32);
    const w2 = await wrap(b, dek2, "default", X);
    expect(parseProtectedHeader(w2).kid).toBe("local/default/2");
    expect(await unwrap(b, w1, X)).toEqual(dek1);
    expect(await unwrap(b, w2, X)).toEqual(dek2);
    expect(await b.describe("default")).toEqual({ backend: "local", keyId: "default", state: "ENABLED", currentVersion: 2 });
    // A v1 JWE relabelled as v2 is decrypted with v2's KEK and fails.
    const seg = w1.split(".");
    seg[0] = Buffer.from(JSON.stringify({ alg: "A256KW", enc: "A256GCM", kid: "local/default/2", cm_instance: X.instance })).toString("base64url");
    await expectDecryptionError(unwrap(b, seg.join("."), X));
  });

  it("unknown key or version -> ROOT_KEY_NOT_FOUND", async () => {
    const b = await openBackend();
    await expectRootKeyError(wrap(b, randomBytes(32), "nope", X), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(b.describe("nope"), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(b.rotate("nope"), "ROOT_KEY_NOT_FOUND");
    await expectRootKeyError(b.setEnabled("default", false, 9), "ROOT_KEY_NOT_FOUND");
    const seg = (await wrap(b, randomBytes(32), "default", X)).split(".");
    seg[0] = Buffer.from(JSON.stringify({ alg: "A256KW", enc: "A256GCM", kid: "local/default/7", cm_instance: X.instance })).toString("base64url");
    await expectRootKeyError(unwrap(b, seg.join("."), X), "ROOT_KEY_NOT_FOUND");
  });

  it("disabled -> ROOT_KEY_DISABLED for wrap and unwrap; enabling restores both", async () => {
    const b = await openBackend();
    const dek = randomBytes(32);
    const wrapped = await wrap(b, dek, "default", X);
    const info = await b.setEnabled("default", false, 1);
    expect(info.state).toBe("DISABLED");
    expect((await b.describe("default")).state).toBe("DISABLED");
    await expectRootKeyError(wrap(b, randomBytes(32), "default", X), "ROOT_KEY_DISABLED");
    await expectRootKeyError(unwrap(b, wrapped, X), "ROOT_KEY_DISABLED");
    await b.setEnabled("default", true, 1);
    expect(await unwrap(b, wrapped, X)).toEqual(dek);
  });

  it("disabling a key without a version disables every version", async () => {
    const b = await openBackend();
    const w1 = await wrap(b, randomBytes(32), "default", X);
    await b.rotate("default");
    const w2 = await wrap(b, randomBytes(32), "default", X);
    const info = await b.setEnabled("default", false, undefined);
    expect(info.versions.map((v) => v.state)).toEqual(["DISABLED", "DISABLED"]);
    await expectRootKeyError(unwrap(b, w1, X), "ROOT_KEY_DISABLED");
    await expectRootKeyError(unwrap(b, w2, X), "ROOT_KEY_DISABLED");
    await b.setEnabled("default", true, undefined);
    expect(await unwrap(b, w1, X)).toHaveLength(32);
  });

  it("destroyed -> ROOT_KEY_DESTROYED; k is erased from the file; destroy is terminal", async () => {
    const b = await openBackend();
    const wrapped = await wrap(b, randomBytes(32), "default", X);
    const k = (await readDoc()).keys[0]!.versions[0]!.k!;
    await expect(b.destroyVersion("default", undefined as unknown as number)).rejects.toThrow(TypeError); // needs a version
    const info = await b.destroyVersion("default", 1);
    expect(info.versions[0]).toMatchObject({ state: "DESTROYED" });
    expect(info.versions[0]!.destroyTime).toBeTypeOf("string");
    await expectRootKeyError(unwrap(b, wrapped, X), "ROOT_KEY_DESTROYED");
    await expectRootKeyError(wrap(b, randomBytes(32), "default", X), "ROOT_KEY_DESTROYED");
    expect((await b.describe("default")).state).toBe("DESTROYED");
    const text = await fsp.readFile(file, "utf8");
    expect(text).not.toContain(k);
    expect(JSON.parse(text).keys[0].versions[0]).not.toHaveProperty("k");
    await expectRootKeyError(b.setEnabled("default", true, 1), "ROOT_KEY_DESTROYED");
    await b.destroyVersion("default", 1); // idempotent
    // A new version brings the key back for new wraps.
    await b.rotate("default");
    expect(await unwrap(b, await wrap(b, randomBytes(32), "default", X), X)).toHaveLength(32);
  });

  it("createKey / listKeys; duplicate ids and malformed ids are refused", async () => {
    const b = await openBackend();
    const created = await b.createKey("byok-1");
    expect(created).toMatchObject({ backend: "local", keyId: "byok-1", currentVersion: 1, state: "ENABLED" });
    await expect(b.createKey("byok-1")).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(b.createKey("a/b")).rejects.toThrow(TypeError);
    await expect(b.createKey("")).rejects.toThrow(TypeError);
    const list = await b.listKeys();
    expect(list.map((k) => k.keyId)).toEqual(["byok-1", "default"]);
    expect(JSON.stringify(list)).not.toMatch(/"k"/);
    const dek = randomBytes(32);
    const w = await wrap(b, dek, "byok-1", X);
    expect(parseProtectedHeader(w).kid).toBe("local/byok-1/1");
    expect(await unwrap(b, w, X)).toEqual(dek);
  });

  it("sees changes made by another process (e.g. the keys CLI) without a restart", async () => {
    const service = await openBackend();
    const cli = await openBackend();
    const wrapped = await wrap(service, randomBytes(32), "default", X);
    await cli.setEnabled("default", false, 1);
    await expectRootKeyError(unwrap(service, wrapped, X), "ROOT_KEY_DISABLED");
    await cli.setEnabled("default", true, 1);
    await cli.rotate("default");
    expect((await service.describe("default")).currentVersion).toBe(2);
  });

  it("serializes concurrent changes across two handles (lock file): no lost updates", async () => {
    const a = await openBackend();
    const b = await openBackend();
    await Promise.all([a.createKey("k1"), b.createKey("k2"), a.createKey("k3"), b.createKey("k4"), a.rotate("default"), b.rotate("default")]);
    const list = await a.listKeys();
    expect(list.map((k) => k.keyId)).toEqual(["default", "k1", "k2", "k3", "k4"]);
    expect(list.find((k) => k.keyId === "default")!.currentVersion).toBe(3);
  });

  it("applies a burst of changes together: each answers for itself, a failing one leaves the others in", async () => {
    const b = await openBackend();
    await b.createKey("dup");
    const creates = Array.from({ length: 40 }, (_, i) => b.createKey(`burst-${i}`));
    const duplicate = b.createKey("dup");
    const missing = b.rotate("no-such-key");
    // A change queued after the create of its key, in the same burst, sees it.
    const rotated = b.rotate("burst-7");
    const infos = await Promise.all(creates);
    expect(infos.map((i) => i.keyId)).toEqual(Array.from({ length: 40 }, (_, i) => `burst-${i}`));
    await expect(duplicate).rejects.toBeInstanceOf(AlreadyExistsError);
    await expectRootKeyError(missing, "ROOT_KEY_NOT_FOUND");
    expect((await rotated).currentVersion).toBe(2);
    // What the file holds, read by another handle: every successful change, and nothing of the failed ones.
    const other = await openBackend();
    const keys = await other.listKeys();
    expect(keys.map((k) => k.keyId).sort()).toEqual(["default", "dup", ...Array.from({ length: 40 }, (_, i) => `burst-${i}`)].sort());
    expect(keys.find((k) => k.keyId === "burst-7")!.currentVersion).toBe(2);
    expect(keys.find((k) => k.keyId === "dup")!.currentVersion).toBe(1);
  });

  it("writes atomically: mode stays 0600 and no temp, old or lock files are left behind", async () => {
    const b = await openBackend();
    await b.rotate("default");
    await b.destroyVersion("default", 1);
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
    expect(await fsp.readdir(dir)).toEqual(["keystore.json"]);
  });

  it("rejects bad inputs as programming errors", async () => {
    const b = await openBackend();
    await expect(wrap(b, randomBytes(16), "default", X)).rejects.toThrow(TypeError);
    await expect(wrap(b, randomBytes(32), "default", { instance: "x" })).rejects.toThrow(TypeError);
    await expect(unwrap(b, "a.b.c.d.e", { instance: "" })).rejects.toThrow(TypeError);
  });

  it("after close, calls fail with ROOT_KEY_BACKEND_UNAVAILABLE", async () => {
    const b = await openBackend();
    await b.close();
    await expectRootKeyError(wrap(b, randomBytes(32), "default", X), "ROOT_KEY_BACKEND_UNAVAILABLE");
    await expectRootKeyError(b.check(), "ROOT_KEY_BACKEND_UNAVAILABLE");
  });

  it("check() passes on a healthy keystore and fails when the file is gone", async () => {
    const b = await openBackend();
    await b.check();
    await fsp.rm(file);
    await expectRootKeyError(b.check(), "ROOT_KEY_BACKEND_UNAVAILABLE");
  });

  it("still loads a keystore holding key ids the old CLI allowed, and names an invalid one with the rule", async () => {
    const b = await openBackend();
    const doc = await readDoc();
    const legacy = { ...doc.keys[0]!, keyId: "Backup_2024", versions: doc.keys[0]!.versions.map((v) => ({ ...v, kid: `local/Backup_2024/${v.version}` })) };
    await fsp.writeFile(file, JSON.stringify({ ...doc, keys: [...doc.keys, legacy] }), { mode: 0o600 });
    await b.reload();
    expect((await b.listKeys()).map((k) => k.keyId)).toEqual(["Backup_2024", "default"]);
    expect((await b.setEnabled("Backup_2024", false)).state).toBe("DISABLED");
    // No DEK can be wrapped under an id a kid cannot carry: it could never be unwrapped.
    await expectRootKeyError(wrap(b, randomBytes(32), "Backup_2024", X), "ROOT_KEY_NOT_FOUND");
    await expect(b.createKey("New_Key")).rejects.toThrow(TypeError);
    await fsp.writeFile(file, JSON.stringify({ ...doc, keys: [...doc.keys, { ...legacy, keyId: "bad id!" }] }), { mode: 0o600 });
    const err = await expectRootKeyError(b.reload(), "ROOT_KEY_BACKEND_UNAVAILABLE");
    expect(err.message).toContain(`keys[1].keyId "bad id!" is invalid (key ids match [a-z][a-z0-9-]{0,62})`);
  });

  it("rotate refuses a disabled current version (as pkcs11 does) and the last version number", async () => {
    const b = await openBackend();
    await b.setEnabled("default", false);
    await expectRootKeyError(b.rotate("default"), "ROOT_KEY_DISABLED");
    expect((await b.describe("default")).currentVersion).toBe(1);
    await b.createKey("last");
    const doc = await readDoc();
    const last = doc.keys.find((k) => k.keyId === "last")!;
    Object.assign(last.versions[0]!, { version: 999_999_999, kid: "local/last/999999999" });
    last.currentVersion = 999_999_999;
    await fsp.writeFile(file, JSON.stringify(doc), { mode: 0o600 });
    const before = await fsp.readFile(file, "utf8");
    await expect(b.rotate("last")).rejects.toThrow(RangeError);
    expect(await fsp.readFile(file, "utf8")).toBe(before);
    expect((await b.describe("last")).currentVersion).toBe(999_999_999);
  });

  it("takes over at once a lock whose holder was killed; a live holder's lock, and a fresh one from elsewhere, wait", async () => {
    const b = await openBackend();
    const lock = `${file}.lock`;
    // Another process takes the lock through the built module, as a replica or the keys CLI would, then hangs.
    const files = pathToFileURL(path.resolve(import.meta.dirname, "../../dist/src/crypto/rootkeys/local/files.js")).href;
    const holder = spawn(process.execPath, ["--input-type=module", "-e", `const m = await import(${JSON.stringify(files)}); await m.acquireLock(${JSON.stringify(lock)}); console.log("held"); setInterval(() => {}, 1e6);`], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on("data", (d) => String(d).includes("held") && resolve());
        holder.on("exit", (code) => reject(new Error(`lock holder exited ${code}`)));
      });
      expect((await fsp.readFile(lock, "utf8")).split(" ")[0]).toBe(String(holder.pid));
      await expectRootKeyError(b.createKey("while-held"), "ROOT_KEY_BACKEND_UNAVAILABLE");
    } finally {
      holder.kill("SIGKILL");
    }
    await new Promise((r) => holder.once("exit", r));
    // Its lock file is still there, seconds old: the dead pid, not the age, frees it.
    expect(await fsp.readFile(lock, "utf8")).toMatch(/^\d+ /);
    await b.createKey("after-kill");
    expect((await b.listKeys()).map((k) => k.keyId)).toContain("after-kill");

    // A lock written where our pids mean something else (another host or container) with a pid that is dead
    // here must not be taken for abandoned until it is old.
    await fsp.writeFile(lock, `${holder.pid} 12345 elsewhere/boot/pid:[1] 00ff00ff00ff00ff\n`, { mode: 0o600 });
    await expectRootKeyError(b.createKey("foreign-fresh"), "ROOT_KEY_BACKEND_UNAVAILABLE");
    const old = new Date(Date.now() - 31_000);
    await fsp.utimes(lock, old, old);
    await b.createKey("foreign-old");

    // A pid that runs again, as another process (a restarted container's pid 1): the start time tells them apart.
    const scope = `${os.hostname()}/${(await fsp.readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim()}/${await fsp.readlink("/proc/self/ns/pid")}`;
    await fsp.writeFile(lock, `${process.pid} 1 ${scope} 00ff00ff00ff00ff\n`, { mode: 0o600 });
    await b.createKey("pid-reused");

    // A lock whose owner could not read its own start time ("-") is judged by age only, even with a dead pid.
    await fsp.writeFile(lock, `${holder.pid} - ${scope} 3333\n`, { mode: 0o600 });
    await expectRootKeyError(b.createKey("no-start-time"), "ROOT_KEY_BACKEND_UNAVAILABLE");
    await fsp.rm(lock);

    // A waiter killed while taking over leaves its guard: judged like a lock, so it does not stall everyone.
    await fsp.writeFile(lock, `${process.pid} 1 ${scope} 1111\n`, { mode: 0o600 });
    await fsp.writeFile(`${lock}.takeover`, `${process.pid} 2 ${scope} 2222\n`, { mode: 0o600 });
    await b.createKey("guard-of-the-dead");
    expect(await fsp.readdir(dir)).toEqual(["keystore.json"]);

    // Something that is no lock file in its place (a directory) is never removed and never spun on: the change
    // fails within the wait bound.
    await fsp.mkdir(lock);
    await expectRootKeyError(b.createKey("blocked"), "ROOT_KEY_BACKEND_UNAVAILABLE");
    await fsp.rmdir(lock);
  });

  it("reads never see a replaced keystore being zeroed: another process rotating in a loop, no read fails", async () => {
    await openBackend();
    const local = pathToFileURL(path.resolve(import.meta.dirname, "../../dist/src/crypto/rootkeys/local.js")).href;
    const writer = spawn(
      process.execPath,
      ["--input-type=module", "-e", `const { LocalRootKeyBackend } = await import(${JSON.stringify(local)}); const b = await LocalRootKeyBackend.open(${JSON.stringify(file)}, { createIfMissing: false, defaultKeyId: "default" }); for (let i = 0; i < 150; i++) await b.rotate("default"); await b.close();`],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    const done = new Promise<number | null>((r) => writer.once("exit", r));
    let running = true;
    void done.then(() => (running = false));
    let reads = 0;
    const failures: string[] = [];
    while (running) {
      try {
        await loadKeystore(file);
      } catch (err) {
        failures.push((err as Error).message);
      }
      reads++;
    }
    expect(await done).toBe(0);
    expect(reads).toBeGreaterThan(50);
    expect(failures).toEqual([]);
  });

  it("lets one waiter at a time take over a dead lock: concurrent changes from many handles all land", async () => {
    const handles = await Promise.all(Array.from({ length: 6 }, () => openBackend()));
    const lock = `${file}.lock`;
    for (let round = 0; round < 3; round++) {
      // A lock of a process that is gone, then every handle at once.
      await fsp.writeFile(lock, `${process.pid} 1 dead-${round} 00\n`, { mode: 0o600 });
      const old = new Date(Date.now() - 31_000);
      await fsp.utimes(lock, old, old);
      await Promise.all(handles.map((h, i) => h.createKey(`r${round}-h${i}`)));
    }
    const ids = (await handles[0]!.listKeys()).map((k) => k.keyId);
    for (let round = 0; round < 3; round++) for (let i = 0; i < 6; i++) expect(ids).toContain(`r${round}-h${i}`);
    expect(await fsp.readdir(dir)).toEqual(["keystore.json"]);
  });

  it("scrubs the temp files of a writer killed mid-change at the next change", async () => {
    const b = await openBackend();
    const leftovers = [".keystore.json.4242.0123456789ab.tmp", ".keystore.json.4242.0123456789ab.old"];
    for (const name of leftovers) await fsp.writeFile(path.join(dir, name), await fsp.readFile(file), { mode: 0o600 });
    // A writer killed between naming the live keystore `.old` and its rename leaves that name on the live file:
    // it must be unlinked, never zeroed (that would wipe every key).
    await fsp.link(file, path.join(dir, ".keystore.json.4243.0123456789ab.old"));
    await fsp.writeFile(path.join(dir, "unrelated.tmp"), "keep");
    await b.createKey("after-crash");
    expect((await fsp.readdir(dir)).sort()).toEqual(["keystore.json", "unrelated.tmp"]);
    const reopened = await openBackend();
    expect((await reopened.listKeys()).map((k) => k.keyId)).toEqual(["after-crash", "default"]);
  });
});
