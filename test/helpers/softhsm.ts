/**
 * SoftHSM2 tokens for tests (Debian package softhsm2; each test process gets its own token directory).
 *
 * SoftHSM reads SOFTHSM2_CONF from the process environment at C_Initialize, and scans its token directory only
 * then: a token created after this process initialised the module stays invisible until every handle on the
 * module is finalised. So:
 * - all tokens of one test process live in ONE temp token directory with one softhsm2.conf, created on the
 *   first {@link makeToken}, which also sets `process.env.SOFTHSM2_CONF` (before any C_Initialize, as long as
 *   makeToken runs before the first backend opens);
 * - create every token a test file needs up front (beforeAll), before opening backends;
 * - child processes (the service under test) need the returned `env`.
 * The directory is removed when the last token made in it is cleaned up (vitest may kill its workers, so an
 * exit hook alone is not enough; it stays as a fallback). A later makeToken then starts a new directory.
 *
 * Typical use:
 *   const token = makeToken();
 *   const hsm = await Pkcs11RootKeyBackend.open({ modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: token.pin });
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

import pkcs11js from "pkcs11js";
import type { Handle, PKCS11 } from "pkcs11js";

/** Where Debian's softhsm2 package puts the module (the first is a symlink to the second on amd64). */
export const SOFTHSM_MODULE_CANDIDATES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"];

/** A token made by {@link makeToken}. */
export interface TestToken {
  modulePath: string;
  tokenLabel: string;
  /** User PIN (random, distinctive, so tests can assert it never shows up in messages). */
  pin: string;
  soPin: string;
  /** The per-process softhsm2.conf. */
  conf: string;
  /** What a child process needs: `{ SOFTHSM2_CONF: conf }`. */
  env: Record<string, string>;
  /** Deletes this token (softhsm2-util --delete-token). Idempotent. Close backends on it first. */
  cleanup(): void;
}

let shared: { dir: string; conf: string; live: number } | undefined;

/** The SoftHSM2 module path, or undefined when the package is not installed. */
export function softhsmModulePath(): string | undefined {
  return SOFTHSM_MODULE_CANDIDATES.find((p) => existsSync(p));
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((d) => d !== "" && existsSync(join(d, cmd)));
}

/**
 * True when the SoftHSM2 module and `softhsm2-util` are installed. With `CM_TEST_REQUIRE_SOFTHSM=1` (CI) a
 * missing SoftHSM2 throws instead, so suites cannot silently skip.
 */
export function softhsmAvailable(): boolean {
  const ok = softhsmModulePath() !== undefined && onPath("softhsm2-util");
  if (!ok && process.env.CM_TEST_REQUIRE_SOFTHSM === "1") {
    throw new Error(
      "CM_TEST_REQUIRE_SOFTHSM=1 but SoftHSM2 is not available (need /usr/lib/softhsm/libsofthsm2.so and softhsm2-util on PATH): apt-get install -y softhsm2",
    );
  }
  return ok;
}

function sharedDir(): { dir: string; conf: string; live: number } {
  if (!shared) {
    const dir = mkdtempSync(join(tmpdir(), "cm-softhsm-"));
    mkdirSync(join(dir, "tokens"), { mode: 0o700 });
    const conf = join(dir, "softhsm2.conf");
    writeFileSync(conf, `directories.tokendir = ${join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`, { mode: 0o600 });
    process.env.SOFTHSM2_CONF = conf;
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
    shared = { dir, conf, live: 0 };
  }
  return shared;
}

/**
 * Creates a fresh SoftHSM2 token in this process's token directory:
 * `softhsm2-util --init-token --free --label <label> --pin <pin> --so-pin <soPin>` with SOFTHSM2_CONF set.
 *
 * @param label token label (at most 32 bytes); default `cm-test-<random>`.
 */
export function makeToken(label = `cm-test-${randomBytes(4).toString("hex")}`): TestToken {
  const modulePath = softhsmModulePath();
  if (!modulePath) throw new Error("SoftHSM2 is not installed (apt-get install -y softhsm2)");
  const home = sharedDir();
  const { conf } = home;
  const env = { SOFTHSM2_CONF: conf };
  const pin = `pin-${randomBytes(6).toString("hex")}`;
  const soPin = `so-${randomBytes(6).toString("hex")}`;
  execFileSync("softhsm2-util", ["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", soPin], {
    env: { ...process.env, ...env },
    stdio: "pipe",
  });
  home.live += 1;
  let done = false;
  return {
    modulePath,
    tokenLabel: label,
    pin,
    soPin,
    conf,
    env,
    cleanup() {
      if (done) return;
      done = true;
      try {
        execFileSync("softhsm2-util", ["--delete-token", "--token", label], { env: { ...process.env, ...env }, stdio: "pipe" });
      } catch {
        // Already gone.
      }
      home.live -= 1;
      if (home.live === 0) {
        rmSync(home.dir, { recursive: true, force: true });
        if (shared === home) shared = undefined;
      }
    },
  };
}

/** A raw PKCS#11 session on a test token, through a separate pkcs11js handle (an "operator tool"). */
export interface RawSession {
  pkcs11: PKCS11;
  slot: Handle;
  session: Handle;
  /** Closes this session only (never C_Finalize: backends in this process share the library state). */
  close(): void;
}

/**
 * Opens a logged-in RW session on `token` with its own pkcs11js handle, as an operator's tool would. In one
 * process both handles share the library's state: C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED and
 * C_Login CKR_USER_ALREADY_LOGGED_IN when a backend got there first (both fine), and C_CloseAllSessions or
 * C_Finalize here hit the backend's sessions too, which is how the reconnect tests pull the rug.
 */
export function openRawSession(token: TestToken): RawSession {
  const p = new pkcs11js.PKCS11();
  p.load(token.modulePath);
  try {
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (err) {
    if ((err as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err;
  }
  const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trimEnd() === token.tokenLabel);
  if (!slot) throw new Error(`token ${token.tokenLabel} not visible (created after this process initialised SoftHSM?)`);
  const session = p.C_OpenSession(slot, pkcs11js.CKF_RW_SESSION | pkcs11js.CKF_SERIAL_SESSION);
  try {
    p.C_Login(session, pkcs11js.CKU_USER, token.pin);
  } catch (err) {
    if ((err as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) throw err;
  }
  return {
    pkcs11: p,
    slot,
    session,
    close() {
      try {
        p.C_CloseSession(session);
      } catch {
        // Closed already (e.g. by C_CloseAllSessions in a test).
      }
    },
  };
}
