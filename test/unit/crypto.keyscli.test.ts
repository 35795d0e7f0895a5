import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeToken, softhsmAvailable } from "../helpers/softhsm.js";

const run = promisify(execFile);
const CLI = path.resolve("src/cli/keys.ts");

/** Runs the keys CLI; resolves with exit code and parsed stdout/stderr. */
async function keys(...args: string[]): Promise<{ code: number; out: any; err: string }> {
  return keysWithEnv({}, ...args);
}

async function keysWithEnv(env: Record<string, string>, ...args: string[]): Promise<{ code: number; out: any; err: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ["--import", "tsx", CLI, ...args], { encoding: "utf8", env: { ...process.env, ...env } });
    return { code: 0, out: JSON.parse(stdout), err: stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

describe("src/cli/keys.ts (local keystore CLI)", () => {
  let dir: string;
  let file: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cm-keys-cli-"));
    file = path.join(dir, "keystore.json");
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it("init, create, rotate, disable, enable, destroy and list, printing JSON without key material", async () => {
    expect((await keys(file, "list")).code).toBe(1); // no keystore yet
    const init = await keys(file, "init");
    expect(init.code).toBe(0);
    expect(init.out.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["default"]);
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
    expect((await keys(file, "create", "byok")).out).toMatchObject({ keyId: "byok", currentVersion: 1, state: "ENABLED" });
    expect((await keys(file, "rotate", "byok")).out).toMatchObject({ currentVersion: 2 });
    expect((await keys(file, "disable", "byok", "1")).out.versions.map((v: { state: string }) => v.state)).toEqual(["DISABLED", "ENABLED"]);
    expect((await keys(file, "enable", "byok")).out.versions.map((v: { state: string }) => v.state)).toEqual(["ENABLED", "ENABLED"]);
    expect((await keys(file, "destroy", "byok", "1")).out.versions[0].state).toBe("DESTROYED");
    const refused = await keys(file, "enable", "byok", "1");
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.err).error.reason).toBe("ROOT_KEY_DESTROYED");
    const list = await keys(file, "list");
    expect(list.out.keys.map((k: { keyId: string }) => k.keyId)).toEqual(["byok", "default"]);
    expect(JSON.stringify(list.out)).not.toMatch(/"k"/);
  });

  it("exits 2 on usage errors", async () => {
    expect((await keys(file, "destroy", "byok")).code).toBe(2); // version required
    expect((await keys(file, "frob")).code).toBe(2);
    expect((await keys(file, "disable", "byok", "x")).code).toBe(2);
  });
});

describe.skipIf(!softhsmAvailable())("src/cli/keys.ts pkcs11 (SoftHSM2 token)", () => {
  it("creates, rotates, disables, enables, lists and destroys root keys in the token, never printing the PIN", async () => {
    const token = makeToken();
    const env = { ...token.env, CM_PKCS11_MODULE: token.modulePath, CM_PKCS11_TOKEN_LABEL: token.tokenLabel, CM_PKCS11_PIN: token.pin };
    expect((await keysWithEnv(env, "pkcs11", "create", "hsm-key")).out).toMatchObject({ keyId: "hsm-key", currentVersion: 1, state: "ENABLED" });
    expect((await keysWithEnv(env, "pkcs11", "rotate", "hsm-key")).out).toMatchObject({ currentVersion: 2 });
    expect((await keysWithEnv(env, "pkcs11", "disable", "hsm-key")).out).toMatchObject({ state: "DISABLED" });
    expect((await keysWithEnv(env, "pkcs11", "enable", "hsm-key")).out).toMatchObject({ state: "ENABLED" });
    const list = await keysWithEnv(env, "pkcs11", "list");
    expect(list.out.keys.map((k: { keyId: string; versions: unknown[] }) => [k.keyId, k.versions.length])).toEqual([["hsm-key", 2]]);
    expect((await keysWithEnv(env, "pkcs11", "destroy", "hsm-key", "1")).code).toBe(0);
    const wrongPin = await keysWithEnv({ ...env, CM_PKCS11_PIN: "000000" }, "pkcs11", "list");
    expect(wrongPin.code).toBe(1);
    expect(JSON.parse(wrongPin.err).error.reason).toBe("ROOT_KEY_ACCESS_DENIED");
    for (const r of [list, wrongPin]) expect(`${JSON.stringify(r.out)}${r.err}`).not.toContain(token.pin);
    expect((await keysWithEnv(env, "pkcs11", "init")).code).toBe(2);
  });
});
