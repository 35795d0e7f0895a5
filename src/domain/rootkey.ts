/**
 * Root-key backend port (see ARCHITECTURE.md, "Envelope format"). A root key (the KEK) never leaves its backend;
 * the backend only performs AES key wrap (RFC 3394) of 32-byte content keys under a version of a root key, and
 * manages root keys. The wrapped-DEK JWE around that key wrap is framed in one place (src/crypto/wrapped-dek.ts),
 * so a new backend that can AES-key-wrap a key it is given (any PKCS#11 HSM, including cloud HSMs that speak
 * PKCS#11, or a KMS with an RFC 3394 wrap operation) is one small file implementing this interface. A KMS that
 * only encrypts data with its own format (Vault Transit, most cloud KMS encrypt APIs) needs another `alg` in
 * the wrapped-DEK format first.
 */

/** Lifecycle of one root key version (mirrors Cloud KMS CryptoKeyVersionState, simplified). */
export type RootKeyState = "ENABLED" | "DISABLED" | "DESTROYED";

/** A root key's state as the service sees it: the backend's, or NOT_FOUND when the backend does not know it. */
export type RootKeyView = RootKeyState | "NOT_FOUND";

/** What `describe` reports about a root key. */
export interface RootKeyDescription {
  /** Backend name, e.g. `local`. */
  backend: string;
  /** The key id inside the backend. */
  keyId: string;
  /** The current version's state. */
  state: RootKeyState;
  /** Version that `wrapKey` uses now (1-based). */
  currentVersion: number;
}

/** One version of a root key, as the management calls report it (never key material). */
export interface RootKeyVersionInfo {
  /** `<backend>/<keyId>/<version>`, the `kid` of DEKs wrapped under it. */
  kid: string;
  version: number;
  state: RootKeyState;
  /** RFC 3339 times where the backend keeps them. */
  createTime?: string;
  updateTime?: string;
  destroyTime?: string;
  /** PKCS#11: the object's value could leave the token (CKA_EXTRACTABLE true or CKA_SENSITIVE false). */
  extractable?: boolean;
}

/** A root key with its versions, as the management calls report it; `state` is the current version's. */
export interface RootKeyInfo extends RootKeyDescription {
  createTime?: string;
  /** Versions, ascending (a backend without tombstones lists only those that still exist). */
  versions: RootKeyVersionInfo[];
}

/** Root keys and the keys they wrap are AES-256 keys: 32 bytes (FIPS 197). */
export const WRAPPED_KEY_INPUT_BYTES = 32;
/** RFC 3394 output for a 32-byte key: the key plus the 8-byte integrity block (RFC 3394 §2.2.1). */
export const WRAPPED_KEY_BYTES = 40;

/** The result of wrapping a content key under the current version of a root key. */
export interface KeyWrapResult {
  /** The root key version that wrapped it. */
  version: number;
  /** RFC 3394 output: 40 bytes for a 32-byte key. */
  wrapped: Buffer;
}

/** One root-key backend (local keystore, PKCS#11 HSM, ...). */
export interface RootKeyBackend {
  /** Backend name used as the first segment of `kid` and `root_key`, e.g. `local`. */
  readonly name: string;
  /**
   * AES key wrap (RFC 3394 §2.2.1, default IV) of a 32-byte key under the current version of root key `keyId`.
   * @returns the version used and the 40 wrapped bytes.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED | ROOT_KEY_ACCESS_DENIED |
   *         ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a key that is not 32 bytes.
   */
  wrapKey(keyId: string, key: Buffer): Promise<KeyWrapResult>;
  /**
   * AES key unwrap (RFC 3394 §2.2.2) of 40 bytes under version `version` of root key `keyId`.
   * @returns the 32-byte key; the caller zeroes it.
   * @throws DecryptionError when the integrity check fails (wrapped under another key, tampered);
   *         RootKeyError as `wrapKey` for the key version itself.
   */
  unwrapKey(keyId: string, version: number, wrapped: Buffer): Promise<Buffer>;
  /** @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE */
  describe(keyId: string): Promise<RootKeyDescription>;
  /**
   * Makes a new version of root key `keyId` the current one (older versions keep unwrapping).
   * @returns the key's description after the rotation.
   * @throws RootKeyError as `describe`, and ROOT_KEY_DISABLED when the key is disabled; RangeError when the key
   *         has used its last version number (999,999,999, the largest a `kid` names).
   */
  rotate(keyId: string): Promise<RootKeyDescription>;
  /** Every root key with its versions, sorted by key id. */
  listKeys(): Promise<RootKeyInfo[]>;
  /**
   * Creates root key `keyId` with version 1 ENABLED; also the home of per-instance key material.
   * @throws AlreadyExistsError ROOT_KEY_ALREADY_EXISTS; TypeError on a malformed id.
   */
  createKey(keyId: string): Promise<RootKeyInfo>;
  /**
   * Enables or disables one version, or with `version` undefined every version that still exists (so disabling
   * the key also stops DEKs wrapped under older versions from unwrapping).
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED (that version is destroyed).
   */
  setEnabled(keyId: string, enabled: boolean, version?: number): Promise<RootKeyInfo>;
  /**
   * Destroys one version for good: what it wrapped can never be unwrapped again (crypto-shredding).
   * A backend that keeps tombstones (local) treats destroying a destroyed version as a no-op; one that cannot
   * tell a destroyed version from a missing one (PKCS#11) reports ROOT_KEY_DESTROYED.
   * @returns the key after the change, or undefined when the backend keeps nothing of it any more.
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DESTROYED.
   */
  destroyVersion(keyId: string, version: number): Promise<RootKeyInfo | undefined>;
  /**
   * Destroys every version of root key `keyId` (per-instance key material at reclamation). Idempotent: a key
   * already destroyed, or never created, is not an error.
   * @throws RootKeyError ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE; TypeError on a malformed id.
   */
  destroyKey(keyId: string): Promise<void>;
  /** Resolves when the backend can serve requests (for health checks); rejects otherwise. */
  check(): Promise<void>;
  /** Releases resources (file handles, sessions, key material in memory). */
  close(): Promise<void>;
}
