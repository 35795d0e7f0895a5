/**
 * Request-shape validation at the edge: lengths, label syntax, request ids, update masks. Rules that need the
 * database or parsing of certificates live in the services and src/x509.
 */
import { Instance_KeyManagement } from "../../gen/ts/certmanager/v1/instance.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { isInstanceKeyId, parseRootKeyRef } from "../domain/rootkey-id.js";
import type { EncryptionChoice } from "../services/instances.js";

const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
const LABEL_VALUE = /^[a-z0-9_-]{0,63}$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** @throws InvalidArgumentError INVALID_FIELD when `value` is longer than `max` characters. */
function checkLength(field: string, value: string, max: number): string {
  if ([...value].length > max) throw new InvalidArgumentError("INVALID_FIELD", field, `${field} must be at most ${max} characters, got ${[...value].length}`);
  return value;
}

/** Label rules as in Google Cloud: at most 64; keys `[a-z][a-z0-9_-]{0,62}`; values `[a-z0-9_-]{0,63}`. */
function checkLabels(field: string, labels: Record<string, string>): Record<string, string> {
  const entries = Object.entries(labels);
  if (entries.length > 64) throw new InvalidArgumentError("INVALID_FIELD", field, `${field} may hold at most 64 labels, got ${entries.length}`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) {
      throw new InvalidArgumentError("INVALID_FIELD", field, `label key ${JSON.stringify(k.slice(0, 80))} must start with a lowercase letter and hold only a-z, 0-9, _ and -, at most 63 characters`);
    }
    if (!LABEL_VALUE.test(v)) {
      throw new InvalidArgumentError("INVALID_FIELD", `${field}.${k}`, `label value of ${JSON.stringify(k)} must hold only a-z, 0-9, _ and -, at most 63 characters`);
    }
  }
  return labels;
}

/** AIP-155: request_id is empty or a UUID. @throws InvalidArgumentError INVALID_FIELD */
export function checkRequestId(requestId: string): string {
  if (requestId !== "" && !UUID.test(requestId)) {
    throw new InvalidArgumentError("INVALID_FIELD", "request_id", "request_id must be a UUID such as 5f0c1a52-3d4e-4f6a-8b7c-9d0e1f2a3b4c, or empty");
  }
  return requestId.toLowerCase();
}

/** Resource fields a user may update (AIP-134). */
const UPDATABLE = ["display_name", "description", "labels"] as const;
export type UpdatableField = (typeof UPDATABLE)[number];

/**
 * Validates an update mask (AIP-134). `*` means every updatable field; an omitted mask means the fields the
 * request populates (non-empty display_name or description, any label).
 * @throws InvalidArgumentError INVALID_UPDATE_MASK when it names another field, or when omitted and nothing is
 *         populated.
 */
export function checkUpdateMask(
  paths: string[] | undefined,
  populated: { displayName: string; description: string; labels: Record<string, string> },
): Set<UpdatableField> {
  if (!paths || paths.length === 0) {
    const implied = new Set<UpdatableField>();
    if (populated.displayName !== "") implied.add("display_name");
    if (populated.description !== "") implied.add("description");
    if (Object.keys(populated.labels).length > 0) implied.add("labels");
    if (implied.size === 0) {
      throw new InvalidArgumentError("INVALID_UPDATE_MASK", "update_mask", `nothing to update: set update_mask to the fields to change (any of ${UPDATABLE.join(", ")}), or send new values`);
    }
    return implied;
  }
  const out = new Set<UpdatableField>();
  for (const p of paths) {
    if (p === "*") UPDATABLE.forEach((f) => out.add(f));
    else if ((UPDATABLE as readonly string[]).includes(p)) out.add(p as UpdatableField);
    else throw new InvalidArgumentError("INVALID_UPDATE_MASK", "update_mask", `update_mask names ${JSON.stringify(p.slice(0, 80))}, which cannot be updated; updatable fields are ${UPDATABLE.join(", ")}`);
  }
  return out;
}

/** The user-settable fields of a Create/Update request, checked. */
export function checkUserFields(
  prefix: string,
  src: { displayName: string; description: string; labels: Record<string, string> },
  mask?: Set<UpdatableField>,
): { displayName?: string; description?: string; labels?: Record<string, string> } {
  const want = (f: UpdatableField) => mask === undefined || mask.has(f);
  return {
    displayName: want("display_name") ? checkLength(`${prefix}display_name`, src.displayName, 256) : undefined,
    description: want("description") ? checkLength(`${prefix}description`, src.description, 2048) : undefined,
    labels: want("labels") ? checkLabels(`${prefix}labels`, src.labels) : undefined,
  };
}

/**
 * The root key choice of CreateInstance: provider-managed (root_key empty) or customer-managed with root_key
 * `<backend>/<key id>` naming a backend this server runs.
 * @throws InvalidArgumentError INVALID_ROOT_KEY (field instance.root_key)
 */
export function checkEncryption(
  inst: { keyManagement: Instance_KeyManagement; rootKey: string },
  backends: string[],
): EncryptionChoice {
  const field = "instance.root_key";
  if (inst.keyManagement !== Instance_KeyManagement.KEY_MANAGEMENT_CUSTOMER) {
    if (inst.rootKey !== "") {
      throw new InvalidArgumentError("INVALID_ROOT_KEY", field, "instance.root_key is set only with key_management KEY_MANAGEMENT_CUSTOMER; leave it empty for the provider's key");
    }
    return { keyManagement: "PROVIDER" };
  }
  const ref = parseRootKeyRef(inst.rootKey);
  if (!ref) {
    throw new InvalidArgumentError("INVALID_ROOT_KEY", field, `instance.root_key must be <backend>/<key id> such as pkcs11/payments-kek (key id: a lowercase letter, then a-z, 0-9 or -), got ${JSON.stringify(inst.rootKey.slice(0, 100))}`);
  }
  if (isInstanceKeyId(ref.keyId)) {
    // Another instance's own key: using it as a root key would let that instance's reclamation destroy this one.
    throw new InvalidArgumentError("INVALID_ROOT_KEY", field, `instance.root_key ${JSON.stringify(inst.rootKey)} names an instance key (i-<uuid> is reserved for them); name a root key of your own`);
  }
  if (!backends.includes(ref.backend)) {
    throw new InvalidArgumentError("INVALID_ROOT_KEY", field, `root-key backend ${JSON.stringify(ref.backend)} is not configured on this server; it runs ${backends.join(", ")}`);
  }
  return { keyManagement: "CUSTOMER", ...ref };
}
