/**
 * Which root-key backends the lifecycle suites run on: `local` always, `pkcs11` when SoftHSM2 is installed
 * (CM_TEST_REQUIRE_SOFTHSM=1, set by .ci/run, makes its absence an error).
 */
import { Pkcs11RootKeyBackend } from "../../src/crypto/rootkeys/pkcs11.js";
import { keyAdmin, type KeyAdmin } from "./key-admin.js";
import { makeToken, softhsmAvailable, type TestToken } from "./softhsm.js";

/** The backends to test. */
export function backendsUnderTest(): ("local" | "pkcs11")[] {
  return softhsmAvailable() ? ["local", "pkcs11"] : ["local"];
}

let token: TestToken | undefined;

/**
 * A KeyAdmin on this process's SoftHSM2 token (made once: SoftHSM sees only tokens that exist when the module
 * is initialised), with the env the service needs to use it. Key ids are unique per test, so suites share it.
 */
export async function pkcs11Admin(): Promise<KeyAdmin> {
  token ??= makeToken();
  const hsm = await Pkcs11RootKeyBackend.open({ modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: token.pin });
  return keyAdmin(hsm, { ...token.env, CM_PKCS11_MODULE: token.modulePath, CM_PKCS11_TOKEN_LABEL: token.tokenLabel, CM_PKCS11_PIN: token.pin });
}
