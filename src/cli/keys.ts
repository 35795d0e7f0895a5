/**
 * Root-key management for the `local` backend's keystore file and the configured PKCS#11 token (DESIGN.md
 * "Root-key backends"), as `npm run keys -- <keystore-path | pkcs11> <command>`:
 *
 *   node --import tsx src/cli/keys.ts <keystore-path | pkcs11> <command>
 *     init [default-key-id]       create the keystore (mode 0600) with one key, "default" unless given
 *     list                        every key, its versions and states
 *     create <id>                 new key, version 1 ENABLED
 *     rotate <id>                 new ENABLED version, made current (older versions keep unwrapping)
 *     disable <id> [version]      one version, or every non-destroyed version of the key
 *     enable <id> [version]       one version, or every non-destroyed version of the key
 *     destroy <id> <version>      erase the version's key material: data wrapped under it is lost for good
 *
 * Prints the result as JSON on stdout (never key material). Exit codes: 0 done, 1 refused or failed (JSON
 * `{"error":{"reason","message"}}` on stderr), 2 usage. A running service sees changes on its next key use;
 * after disabling, also restart it or otherwise empty its DEK cache for the change to bite at once.
 */
import { loadConfig } from "../config/index.js";
import { LocalRootKeyBackend } from "../crypto/rootkeys/local.js";
import { Pkcs11RootKeyBackend } from "../crypto/rootkeys/pkcs11.js";
import { DomainError } from "../domain/errors.js";

const USAGE = `usage: keys.ts <keystore-path | pkcs11> init [default-key-id] | list | create <id> | rotate <id> |
       disable <id> [version] | enable <id> [version] | destroy <id> <version>`;

class UsageError extends Error {}

function parseVersion(s: string | undefined, required: boolean): number | undefined {
  if (s === undefined) {
    if (required) throw new UsageError("a version number is required");
    return undefined;
  }
  if (!/^[1-9][0-9]{0,8}$/.test(s)) throw new UsageError(`version must be a positive integer, got ${JSON.stringify(s)}`);
  return Number(s);
}

function need(s: string | undefined, what: string): string {
  if (!s) throw new UsageError(`${what} is required`);
  return s;
}

async function run(argv: string[]): Promise<unknown> {
  const [file, command, a, b, ...rest] = argv;
  if (!file || !command) throw new UsageError("keystore path and command are required");
  if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(" ")}`);
  const arity: Record<string, [number, number]> = {
    init: [0, 1], list: [0, 0], create: [1, 1], rotate: [1, 1], disable: [1, 2], enable: [1, 2], destroy: [2, 2],
  };
  const range = arity[command];
  if (!range) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const given = [a, b].filter((x) => x !== undefined).length;
  if (given < range[0] || given > range[1]) throw new UsageError(`wrong number of arguments for ${command}`);

  if (file === "pkcs11") return runPkcs11(command, a, b);
  const backend = await LocalRootKeyBackend.open(file, {
    createIfMissing: command === "init",
    defaultKeyId: command === "init" && a ? a : "default",
  });
  try {
    switch (command) {
      case "init":
      case "list":
        return { keystore: backend.path, keys: await backend.listKeys() };
      case "create":
        return await backend.createKey(need(a, "key id"));
      case "rotate":
        return await backend.rotate(need(a, "key id"));
      case "disable":
        return await backend.setState(need(a, "key id"), parseVersion(b, false), "DISABLED");
      case "enable":
        return await backend.setState(need(a, "key id"), parseVersion(b, false), "ENABLED");
      case "destroy":
        return await backend.setState(need(a, "key id"), parseVersion(b, true), "DESTROYED");
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } finally {
    await backend.close();
  }
}

/**
 * The same commands on the PKCS#11 token the service is configured with (CM_PKCS11_MODULE, _TOKEN_LABEL,
 * _PIN or _PIN_FILE), as an HSM vendor's tool would run them. `init` does not apply: tokens are initialised
 * with the HSM's own tools (softhsm2-util --init-token for SoftHSM2).
 */
async function runPkcs11(command: string, a: string | undefined, b: string | undefined): Promise<unknown> {
  const config = loadConfig();
  if (!config.pkcs11) throw new UsageError("set CM_PKCS11_MODULE, CM_PKCS11_TOKEN_LABEL and CM_PKCS11_PIN (or CM_PKCS11_PIN_FILE) first");
  const hsm = await Pkcs11RootKeyBackend.open(config.pkcs11);
  try {
    switch (command) {
      case "list":
        return { token: config.pkcs11.tokenLabel, keys: await hsm.listKeys() };
      case "create":
        return await hsm.createKey(need(a, "key id"));
      case "rotate":
        return await hsm.rotate(need(a, "key id"));
      case "disable":
        return await hsm.setEnabled(need(a, "key id"), false, parseVersion(b, false));
      case "enable":
        return await hsm.setEnabled(need(a, "key id"), true, parseVersion(b, false));
      case "destroy":
        return (await hsm.destroyVersion(need(a, "key id"), parseVersion(b, true)!)) ?? { destroyed: true };
      default:
        throw new UsageError(`${JSON.stringify(command)} does not apply to pkcs11 (initialise tokens with the HSM's own tools)`);
    }
  } finally {
    await hsm.close();
  }
}

try {
  const result = await run(process.argv.slice(2));
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} catch (err) {
  if (err instanceof UsageError) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    process.exitCode = 2;
  } else {
    const reason = err instanceof DomainError ? err.reason : err instanceof TypeError ? "INVALID_ARGUMENT" : "FAILED";
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${JSON.stringify({ error: { reason, message } })}\n`);
    process.exitCode = 1;
  }
}
