/**
 * Process-wide registry of loaded PKCS#11 modules, shared by every `pkcs11` backend of the process.
 *
 * Why: Cryptoki is initialised once per process (PKCS#11 v2.40 base §5.4 C_Initialize: a second call returns
 * CKR_CRYPTOKI_ALREADY_INITIALIZED) and C_Finalize ends it for every user in the process, so backends on the
 * same module file share one loaded module, ref-counted; the last one to close finalises it (only if this
 * registry initialised it: another component may have done so first and still be using it).
 *
 * @internal Used by src/crypto/rootkeys/pkcs11.ts and its tests only.
 */
import { realpathSync } from "node:fs";

import pkcs11js from "pkcs11js";
import type { PKCS11 } from "pkcs11js";

/** The pkcs11js namespace: constants (`CKA_*`, `CKR_*`, ...) and classes. */
export const ck = pkcs11js;

/** CK_STATE of a logged-in read/write session (PKCS#11 v2.40 base §5.6 Table 9); pkcs11js does not export it. */
export const CKS_RW_USER_FUNCTIONS = 3;

/** One loaded module. */
export interface ModuleEntry {
  /** Real path of the module file (the registry key, so a symlinked path shares the entry). */
  readonly path: string;
  readonly pkcs11: PKCS11;
  /** Backends holding this entry. */
  refs: number;
  /** True when our C_Initialize succeeded, so C_Finalize at the last release is ours to call. */
  ownsInit: boolean;
}

const registry = new Map<string, ModuleEntry>();

/** `CKR_*` code -> name, built from the pkcs11js constants (for messages and logs). */
const CKR_NAMES = new Map<number, string>(
  Object.entries(pkcs11js)
    .filter(([name, value]) => name.startsWith("CKR_") && typeof value === "number")
    .map(([name, value]) => [value as number, name]),
);

/**
 * The CKR code of a pkcs11js error (`Pkcs11Error.code`), or undefined for anything else (a NativeError from
 * the binding, e.g. a module that cannot be loaded, or a JS error).
 */
export function ckrOf(err: unknown): number | undefined {
  return err instanceof pkcs11js.Pkcs11Error && typeof err.code === "number" ? err.code : undefined;
}

/** `CKR_PIN_INCORRECT` for 0xa0, `CKR_0x...` for codes pkcs11js does not name. */
export function ckrName(code: number): string {
  return CKR_NAMES.get(code) ?? `CKR_0x${code.toString(16)}`;
}

/**
 * C_Initialize with CKF_OS_LOCKING_OK (v2.40 base §5.4, CK_C_INITIALIZE_ARGS): the library must lock for us,
 * because the wrap/unwrap/generate calls run on libuv worker threads (pkcs11js `...Async`) while other sessions
 * are used from the main thread.
 */
export function initialize(entry: ModuleEntry): void {
  try {
    entry.pkcs11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    entry.ownsInit = true;
  } catch (err) {
    // Someone else in the process initialised it (a second handle on the same module, another library).
    if (ckrOf(err) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err;
  }
}

/**
 * Loads (once) and initialises (once) the module at `modulePath`, and takes a reference to it.
 *
 * @throws the pkcs11js NativeError/Pkcs11Error when the file cannot be loaded or C_Initialize fails.
 */
export function acquireModule(modulePath: string): ModuleEntry {
  const real = realpathSync(modulePath);
  let entry = registry.get(real);
  if (!entry) {
    const pkcs11 = new pkcs11js.PKCS11();
    pkcs11.load(real);
    entry = { path: real, pkcs11, refs: 0, ownsInit: false };
    try {
      initialize(entry);
    } catch (err) {
      safely(() => pkcs11.close());
      throw err;
    }
    registry.set(real, entry);
  }
  entry.refs += 1;
  return entry;
}

/**
 * Drops a reference; the last one finalises the module (if we initialised it) and unloads it.
 *
 * @param finalize false when a call may still be running inside the module (a timed-out call on a worker
 *        thread): C_Finalize under a running call is undefined behaviour, so the module is left loaded.
 */
export function releaseModule(entry: ModuleEntry, finalize = true): void {
  entry.refs -= 1;
  if (entry.refs > 0 || registry.get(entry.path) !== entry) return;
  registry.delete(entry.path);
  if (!finalize) return;
  if (entry.ownsInit) safely(() => entry.pkcs11.C_Finalize());
  safely(() => entry.pkcs11.close());
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Best effort on shutdown paths: nothing useful to do with the error.
  }
}
