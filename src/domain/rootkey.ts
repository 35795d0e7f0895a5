/**
 * Root-key backend port (DESIGN.md "Root-key backends"). A root key (the KEK) never leaves its backend; the
 * backend wraps and unwraps 32-byte DEKs into JWE compact serializations (RFC 7516) with `alg` A256KW
 * (RFC 3394) and `enc` A256GCM, protected header `kid` = `<backend>/<root key id>/<version>` and the
 * instance name bound in the protected header as `cm_instance`, so a wrapped DEK moved to another instance
 * fails to unwrap.
 */

/** Lifecycle of one root key (mirrors Cloud KMS CryptoKeyVersionState, simplified). */
export type RootKeyState = "ENABLED" | "DISABLED" | "DESTROYED";

/** What `describe` reports about a root key. */
export interface RootKeyDescription {
  /** Backend name, e.g. `local`. */
  backend: string;
  /** The key id inside the backend. */
  keyId: string;
  state: RootKeyState;
  /** Version that `wrap` uses now (1-based). */
  currentVersion: number;
}

/** Authenticated context bound into every wrapped DEK. */
export interface WrapContext {
  /** Resource name of the owning instance, `instances/{instance}`. */
  instance: string;
}

/** One root-key backend (local keystore, PKCS#11 HSM, ...). */
export interface RootKeyBackend {
  /** Backend name used as the first segment of `kid`, e.g. `local`. */
  readonly name: string;
  /**
   * Wraps a 32-byte DEK under the current version of root key `keyId`.
   * @returns JWE compact serialization (A256KW + A256GCM).
   * @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_DISABLED | ROOT_KEY_DESTROYED | ROOT_KEY_BACKEND_UNAVAILABLE
   */
  wrap(dek: Buffer, keyId: string, context: WrapContext): Promise<string>;
  /**
   * Unwraps a DEK made by `wrap`; the key id and version come from the JWE's `kid`.
   * @returns the 32-byte DEK; the caller zeroes it when done.
   * @throws DecryptionError when the JWE is malformed, tampered or bound to another instance;
   *         RootKeyError when the root key is missing, disabled or destroyed.
   */
  unwrap(jwe: string, context: WrapContext): Promise<Buffer>;
  /** @throws RootKeyError ROOT_KEY_NOT_FOUND | ROOT_KEY_ACCESS_DENIED | ROOT_KEY_BACKEND_UNAVAILABLE */
  describe(keyId: string): Promise<RootKeyDescription>;
  /**
   * Makes a new version of root key `keyId` the current one (older versions keep unwrapping).
   * @returns the description after rotation.
   * @throws RootKeyError as `describe`, and ROOT_KEY_DISABLED when the key is disabled.
   */
  rotate(keyId: string): Promise<RootKeyDescription>;
  /** Resolves when the backend can serve requests (for health checks); rejects otherwise. */
  check(): Promise<void>;
  /** Releases resources (file handles, sessions). */
  close(): Promise<void>;
}
