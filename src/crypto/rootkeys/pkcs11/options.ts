/**
 * Options of the `pkcs11` root-key backend and their validation.
 *
 * @internal Used by src/crypto/rootkeys/pkcs11.ts only.
 */
import type { Logger } from "pino";

const DEFAULT_POOL_SIZE = 4;
const DEFAULT_CALL_TIMEOUT_MS = 5_000;

/** Options of {@link Pkcs11RootKeyBackend.open}. */
export interface Pkcs11OpenOptions {
  /** PKCS#11 module file, e.g. `/usr/lib/softhsm/libsofthsm2.so`. */
  modulePath: string;
  /** CKA token label (CK_TOKEN_INFO.label, at most 32 bytes); the slot is found by it on every (re)connect. */
  tokenLabel: string;
  /** User PIN (CKU_USER). Never logged nor put in messages. */
  pin: string;
  /** Logged-in sessions kept open, 1..64 (default 4); at most this many HSM calls run at once. */
  sessionPoolSize?: number;
  /** Bound on waiting for a session and on each wrap/unwrap/generate call in the HSM, ms (default 5000). */
  callTimeoutMs?: number;
  /** Receives warnings (reconnects, timeouts, slow blocking calls); never given the PIN or key bytes. */
  logger?: Pick<Logger, "warn">;
  /**
   * Accept root key objects that are extractable or not sensitive. Default false: such a key could leave the
   * HSM, which defeats the backend, so it is refused as ROOT_KEY_DISABLED. Only the interop test sets it.
   */
  allowExtractableRootKeys?: boolean;
}

/** Options with defaults applied. */
export type CheckedOptions = Required<Omit<Pkcs11OpenOptions, "logger" | "modulePath">> & Pick<Pkcs11OpenOptions, "logger">;

/**
 * Validates options and applies defaults (pool 4 sessions, call timeout 5000 ms).
 * @throws TypeError naming the bad option (never echoing the PIN).
 */
export function checkOpenOptions(opts: Pkcs11OpenOptions): CheckedOptions {
  if (!opts || typeof opts.modulePath !== "string" || opts.modulePath.length === 0) throw new TypeError("modulePath must be a non-empty string");
  if (typeof opts.tokenLabel !== "string" || opts.tokenLabel.length === 0 || Buffer.byteLength(opts.tokenLabel) > 32) {
    throw new TypeError("tokenLabel must be a non-empty string of at most 32 bytes");
  }
  // Never echo the PIN, not even its length.
  if (typeof opts.pin !== "string" || opts.pin.length === 0) throw new TypeError("pin must be a non-empty string");
  const sessionPoolSize = opts.sessionPoolSize ?? DEFAULT_POOL_SIZE;
  if (!Number.isInteger(sessionPoolSize) || sessionPoolSize < 1 || sessionPoolSize > 64) throw new TypeError("sessionPoolSize must be an integer 1..64");
  const callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  if (!Number.isInteger(callTimeoutMs) || callTimeoutMs < 1 || callTimeoutMs > 600_000) throw new TypeError("callTimeoutMs must be an integer 1..600000");
  return {
    tokenLabel: opts.tokenLabel,
    pin: opts.pin,
    sessionPoolSize,
    callTimeoutMs,
    logger: opts.logger,
    allowExtractableRootKeys: opts.allowExtractableRootKeys === true,
  };
}
