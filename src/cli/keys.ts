/**
 * Root-key management on the `local` backend's keystore file or the configured PKCS#11 token, through the one
 * root-key backend interface (see ARCHITECTURE.md, "Envelope format"), as `npm run keys -- <target> <command>`:
 *
 *   node dist/src/cli/keys.js <keystore-path | pkcs11> <command>
 *     init [default-key-id]       create the keystore (mode 0600) with one key, "default" unless given (local only:
 *                                 tokens are initialised with the HSM's own tools, e.g. softhsm2-util --init-token)
 *     list                        every key, its versions and states
 *     create <id>                 new key, version 1 ENABLED
 *     rotate <id>                 new ENABLED version, made current (older versions keep unwrapping)
 *     disable <id> [version]      one version, or every non-destroyed version of the key
 *     enable <id> [version]       one version, or every non-destroyed version of the key
 *     destroy <id> <version>      erase the version's key material: data wrapped under it is lost for good
 *
 * `pkcs11` uses the token the service is configured with (CM_PKCS11_MODULE, _TOKEN_LABEL, _PIN or _PIN_FILE).
 * Prints the result as JSON on stdout (never key material). Exit codes: 0 done, 1 refused or failed (JSON
 * `{"error":{"reason","message"}}` on stderr), 2 usage. A running service sees changes on its next key use;
 * after disabling, also restart it or otherwise empty its DEK cache for the change to bite at once.
 */
import { loadConfig } from "../config/index.js";
import { LocalRootKeyBackend } from "../crypto/rootkeys/local.js";
import { Pkcs11RootKeyBackend } from "../crypto/rootkeys/pkcs11.js";
import { DomainError } from "../domain/errors.js";
import type { RootKeyBackend } from "../domain/rootkey.js";
import { parseRootKeyVersion } from "../domain/rootkey-id.js";

const USAGE = `usage: keys.js <keystore-path | pkcs11> init [default-key-id] | list | create <id> | rotate <id> |
       disable <id> [version] | enable <id> [version] | destroy <id> <version>`;

class UsageError extends Error {}

/** Accepted argument counts per command. */
const ARITY: Record<string, [number, number]> = {
  init: [0, 1], list: [0, 0], create: [1, 1], rotate: [1, 1], disable: [1, 2], enable: [1, 2], destroy: [2, 2],
};

function parseVersion(s: string | undefined, required: boolean): number | undefined {
  if (s === undefined) {
    if (required) throw new UsageError("a version number is required");
    return undefined;
  }
  const version = parseRootKeyVersion(s);
  if (version === undefined) throw new UsageError(`version must be a positive integer, got ${JSON.stringify(s)}`);
  return version;
}

function need(s: string | undefined, what: string): string {
  if (!s) throw new UsageError(`${what} is required`);
  return s;
}

/** Opens the target: a keystore file, or the configured token. @returns the backend and where it is, for `list`. */
async function openTarget(target: string, command: string, a: string | undefined): Promise<{ backend: RootKeyBackend; where: Record<string, string> }> {
  if (target !== "pkcs11") {
    const local = await LocalRootKeyBackend.open(target, { createIfMissing: command === "init", defaultKeyId: command === "init" && a ? a : "default" });
    return { backend: local, where: { keystore: local.path } };
  }
  if (command === "init") throw new UsageError(`"init" does not apply to pkcs11 (initialise tokens with the HSM's own tools)`);
  const config = loadConfig();
  if (!config.pkcs11) throw new UsageError("set CM_PKCS11_MODULE, CM_PKCS11_TOKEN_LABEL and CM_PKCS11_PIN (or CM_PKCS11_PIN_FILE) first");
  return { backend: await Pkcs11RootKeyBackend.open(config.pkcs11), where: { token: config.pkcs11.tokenLabel } };
}

async function run(argv: string[]): Promise<unknown> {
  const [target, command, a, b, ...rest] = argv;
  if (!target || !command) throw new UsageError("keystore path (or pkcs11) and command are required");
  if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(" ")}`);
  const range = ARITY[command];
  if (!range) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const given = [a, b].filter((x) => x !== undefined).length;
  if (given < range[0] || given > range[1]) throw new UsageError(`wrong number of arguments for ${command}`);
  // Usage is checked before anything is opened, so a usage error never touches the keystore or token.
  const version = command === "destroy" ? parseVersion(b, true) : command === "enable" || command === "disable" ? parseVersion(b, false) : undefined;

  const { backend, where } = await openTarget(target, command, a);
  try {
    switch (command) {
      case "init":
      case "list":
        return { ...where, keys: await backend.listKeys() };
      case "create":
        return await backend.createKey(need(a, "key id"));
      case "rotate":
        return await backend.rotate(need(a, "key id"));
      case "disable":
      case "enable":
        return await backend.setEnabled(need(a, "key id"), command === "enable", version);
      default: // destroy
        return (await backend.destroyVersion(need(a, "key id"), version!)) ?? { destroyed: true };
    }
  } finally {
    await backend.close();
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
