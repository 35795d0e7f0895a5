/**
 * Reading root keys from the token's version objects (./objects.ts): which object a key and version name, the
 * state each is in, and what the management calls report. A version missing while others exist is DESTROYED;
 * with none left the key is NOT_FOUND (PKCS#11 keeps no tombstones).
 *
 * @internal Used by src/crypto/rootkeys/pkcs11.ts only.
 */
import { RootKeyError } from "../../../domain/errors.js";
import type { RootKeyInfo, RootKeyState } from "../../../domain/rootkey.js";
import { rootKeyKid } from "../../../domain/rootkey-id.js";
import { PKCS11_BACKEND, type KeyRef } from "./calls.js";
import { ck, CKS_RW_USER_FUNCTIONS } from "./module.js";
import { collectVersions, type TokenSession, type VersionObject } from "./objects.js";

const kidOf = (keyId: string, version: number): string => rootKeyKid(PKCS11_BACKEND, keyId, version);

/** The root keys of one token as version objects. */
export class TokenKeys {
  constructor(
    readonly tokenLabel: string,
    /** Accept extractable or non-sensitive root key objects (interop tests only). */
    readonly allowExtractable: boolean,
    private readonly meta: (keyId: string | undefined, version?: number) => Record<string, string>,
  ) {}

  /**
   * Finds the version `ref` names (or the current one) and checks it may be used for `purpose`.
   *
   * @throws RootKeyError NOT_FOUND (no version at all) | DESTROYED (that version is gone, others exist) |
   *         DISABLED (attribute off, or extractable) | UNAVAILABLE (two objects claim the version).
   */
  resolve(t: TokenSession, ref: KeyRef, purpose: "wrap" | "unwrap" | "describe"): VersionObject {
    const all = collectVersions(t, ref.keyId);
    if (all.length === 0) {
      assertLoggedIn(t);
      throw new RootKeyError(
        "ROOT_KEY_NOT_FOUND",
        `root key ${PKCS11_BACKEND}/${ref.keyId} does not exist in token "${this.tokenLabel}" (no AES-256 key labelled "${ref.keyId}"; all its versions may have been destroyed); create it or fix the key id`,
        this.meta(ref.keyId, ref.version),
      );
    }
    const version = ref.version ?? Math.max(...all.map((v) => v.version));
    const matches = all.filter((v) => v.version === version);
    if (matches.length === 0) {
      throw new RootKeyError("ROOT_KEY_DESTROYED", `root key version ${kidOf(ref.keyId, version)} is destroyed; data wrapped under it cannot be recovered`, this.meta(ref.keyId, version));
    }
    if (matches.length > 1) {
      throw new RootKeyError(
        "ROOT_KEY_BACKEND_UNAVAILABLE",
        `token "${this.tokenLabel}" holds ${matches.length} objects for root key version ${kidOf(ref.keyId, version)}; an operator must destroy the one that was never used`,
        this.meta(ref.keyId, version),
      );
    }
    const v = matches[0]!;
    if (purpose !== "describe") {
      if (v.extractable && !this.allowExtractable) {
        throw new RootKeyError(
          "ROOT_KEY_DISABLED",
          `root key version ${kidOf(ref.keyId, version)} is extractable or not sensitive, so its value could leave the HSM; it is refused. Create root keys with CKA_EXTRACTABLE=false and CKA_SENSITIVE=true`,
          this.meta(ref.keyId, version),
        );
      }
      if (!(purpose === "wrap" ? v.wrap : v.unwrap)) {
        throw new RootKeyError("ROOT_KEY_DISABLED", `root key version ${kidOf(ref.keyId, version)} is disabled (CKA_${purpose.toUpperCase()} is false); enable it to use it`, this.meta(ref.keyId, version));
      }
    }
    return v;
  }

  /** The versions `ref` names for a management call: all, or the one asked for. */
  targets(t: TokenSession, ref: KeyRef): VersionObject[] {
    const all = collectVersions(t, ref.keyId);
    if (all.length === 0) {
      assertLoggedIn(t);
      throw new RootKeyError("ROOT_KEY_NOT_FOUND", `root key ${PKCS11_BACKEND}/${ref.keyId} does not exist in token "${this.tokenLabel}"`, this.meta(ref.keyId, ref.version));
    }
    if (ref.version === undefined) return all;
    const matches = all.filter((v) => v.version === ref.version);
    if (matches.length === 0) {
      throw new RootKeyError("ROOT_KEY_DESTROYED", `root key version ${kidOf(ref.keyId, ref.version)} is destroyed`, this.meta(ref.keyId, ref.version));
    }
    return matches;
  }

  /** ENABLED when wrap and unwrap are allowed and the object cannot leave the token. */
  stateOf(v: VersionObject): RootKeyState {
    return v.wrap && v.unwrap && (!v.extractable || this.allowExtractable) ? "ENABLED" : "DISABLED";
  }

  /** The key as the management calls report it, or undefined when no version is left. */
  info(t: TokenSession, keyId: string): RootKeyInfo | undefined {
    const versions = collectVersions(t, keyId);
    return versions.length === 0 ? undefined : this.infoOf(keyId, versions);
  }

  /** The report of a key from its version objects. */
  infoOf(keyId: string, versions: VersionObject[]): RootKeyInfo {
    const list = versions
      .map((v) => ({ kid: kidOf(keyId, v.version), version: v.version, state: this.stateOf(v), extractable: v.extractable }))
      .sort((a, b) => a.version - b.version);
    const current = list[list.length - 1]!;
    return { backend: PKCS11_BACKEND, keyId, state: current.state, currentVersion: current.version, versions: list };
  }
}

/** Throws CKR_USER_NOT_LOGGED_IN (retried once after a new login) unless the session is logged in. */
export function assertLoggedIn(t: TokenSession): void {
  if (t.entry.pkcs11.C_GetSessionInfo(t.session).state !== CKS_RW_USER_FUNCTIONS) {
    throw new ck.Pkcs11Error("CKR_USER_NOT_LOGGED_IN", ck.CKR_USER_NOT_LOGGED_IN, "C_GetSessionInfo");
  }
}
