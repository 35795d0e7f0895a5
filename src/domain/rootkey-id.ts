/**
 * Root-key ids and references, the one grammar for them: the API's `instance.root_key`, the default root key
 * in the configuration and the key ids the root-key backends accept. An id is short, lowercase and free of
 * `/`, so `<backend>/<key id>/<version>` (the wrapped DEK's `kid`) splits without ambiguity.
 */

/**
 * Root-key id pattern source, unanchored so it can be composed (for example into a `kid` pattern):
 * a lowercase letter, then up to 62 of a-z, 0-9 and `-`.
 * @example new RegExp(`^pkcs11/(${ROOT_KEY_ID})$`)
 */
export const ROOT_KEY_ID = "[a-z][a-z0-9-]{0,62}";

/** Backend names (`local`, `pkcs11`), pattern source, unanchored. */
const ROOT_KEY_BACKEND = "[a-z0-9]+";
/** Root key version numbers 1..999,999,999 in canonical decimal, pattern source, unanchored. */
const ROOT_KEY_VERSION = "[1-9][0-9]{0,8}";
const VERSION = new RegExp(`^${ROOT_KEY_VERSION}$`);
const KID = new RegExp(`^(${ROOT_KEY_BACKEND})/(${ROOT_KEY_ID})/(${ROOT_KEY_VERSION})$`);

/** One version of a root key: what a wrapped DEK's `kid` names. */
export interface RootKeyVersionRef {
  backend: string;
  keyId: string;
  version: number;
}

/** `<backend>/<key id>/<version>`: the `kid` of a wrapped DEK and the name of a root key version. */
export function rootKeyKid(backend: string, keyId: string, version: number): string {
  return `${backend}/${keyId}/${version}`;
}

/** Parses a `kid` made by {@link rootKeyKid}. @returns undefined when `kid` is not of that form. */
export function parseRootKeyKid(kid: unknown): RootKeyVersionRef | undefined {
  const m = typeof kid === "string" ? KID.exec(kid) : null;
  return m ? { backend: m[1]!, keyId: m[2]!, version: Number(m[3]) } : undefined;
}

/** What an operator reads when an id breaks the grammar (built from the pattern, so it cannot drift). */
export const ROOT_KEY_ID_RULE = `key ids match ${ROOT_KEY_ID}`;

/**
 * Refuses an id outside the grammar where one is being created (a caller's mistake, hence TypeError).
 * Lookups of such an id answer ROOT_KEY_NOT_FOUND instead: no key can have it.
 * @throws TypeError naming the rule.
 */
export function checkRootKeyId(keyId: unknown): asserts keyId is string {
  if (!isRootKeyId(keyId)) throw new TypeError(`root key id ${JSON.stringify(String(keyId).slice(0, 80))} is invalid: ${ROOT_KEY_ID_RULE}`);
}

const KEY_ID = new RegExp(`^${ROOT_KEY_ID}$`);
const REF = new RegExp(`^(${ROOT_KEY_BACKEND})/(${ROOT_KEY_ID})$`);

/** A root key named by its backend and its id inside that backend. */
export interface RootKeyRef {
  backend: string;
  keyId: string;
}

/** True when `keyId` is a root-key id (`ROOT_KEY_ID`). */
export function isRootKeyId(keyId: unknown): keyId is string {
  return typeof keyId === "string" && KEY_ID.test(keyId);
}

/** True when `v` is a root key version number (an integer 1..999,999,999). */
export function isRootKeyVersion(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && VERSION.test(String(v));
}

/** Parses a version number written in canonical decimal (`"7"`). @returns undefined for anything else. */
export function parseRootKeyVersion(text: string): number | undefined {
  return VERSION.test(text) ? Number(text) : undefined;
}

/**
 * Parses `<backend>/<key id>`, as the API's `instance.root_key` carries it.
 * @returns the reference, or undefined when `text` is not of that form (the caller names the field in its error).
 * @example parseRootKeyRef("pkcs11/payments-kek") // { backend: "pkcs11", keyId: "payments-kek" }
 */
export function parseRootKeyRef(text: string): RootKeyRef | undefined {
  const m = REF.exec(text);
  return m ? { backend: m[1], keyId: m[2] } : undefined;
}

/** `<backend>/<key id>`, the form `parseRootKeyRef` reads. */
export function formatRootKeyRef(backend: string, keyId: string): string {
  return `${backend}/${keyId}`;
}

/**
 * Instance keys: every instance has key material of its own in the backend of its root key, with this id
 * (`i-` and the instance's UUID, lowercase). It wraps the instance's DEKs once more, outside the root key's wrap,
 * and is destroyed when the instance is reclaimed (crypto-shredding that holds for copies of the database). The
 * form is reserved: no root key chosen for an instance may look like one.
 */
const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const INSTANCE_KEY_ID = new RegExp(`^i-${UUID}$`);

/** The id of instance `instanceId`'s own key, `i-<uuid>`. @throws TypeError when `instanceId` is not a UUID. */
export function instanceKeyId(instanceId: string): string {
  const id = `i-${instanceId.toLowerCase()}`;
  if (!INSTANCE_KEY_ID.test(id)) throw new TypeError("instance id must be a UUID");
  return id;
}

/** True when `keyId` has the form of an instance key (reserved: never a root key chosen by a customer). */
export function isInstanceKeyId(keyId: unknown): boolean {
  return typeof keyId === "string" && INSTANCE_KEY_ID.test(keyId);
}
