/**
 * What a customer does to their root key in its backend, for tests: create, rotate, disable, enable, destroy.
 * One implementation over the root-key backend interface, so the same lifecycle tests run on `local` and
 * `pkcs11` (the keys CLI drives the same interface).
 */
import { LocalRootKeyBackend } from "../../src/crypto/rootkeys/local.js";
import type { RootKeyBackend } from "../../src/domain/rootkey.js";

/** Customer-side operations on root keys of one backend. */
export interface KeyAdmin {
  /** Backend name, the first segment of `root_key`. */
  backend: string;
  /** Environment the service needs to use this backend. */
  env: Record<string, string>;
  create(keyId: string): Promise<void>;
  rotate(keyId: string): Promise<void>;
  disable(keyId: string): Promise<void>;
  enable(keyId: string): Promise<void>;
  /** Destroys every version of the key. */
  destroy(keyId: string): Promise<void>;
  /** True while the backend holds usable material of the key (some version not destroyed). */
  holds(keyId: string): Promise<boolean>;
  close(): Promise<void>;
}

/** A KeyAdmin driving `backend`; `env` is what the service needs to reach the same keys. */
export function keyAdmin(backend: RootKeyBackend, env: Record<string, string>): KeyAdmin {
  return {
    backend: backend.name,
    env,
    create: async (id) => void (await backend.createKey(id)),
    rotate: async (id) => void (await backend.rotate(id)),
    disable: async (id) => void (await backend.setEnabled(id, false)),
    enable: async (id) => void (await backend.setEnabled(id, true)),
    destroy: (id) => backend.destroyKey(id),
    holds: async (id) => (await backend.listKeys()).some((k) => k.keyId === id && k.versions.some((v) => v.state !== "DESTROYED")),
    close: () => backend.close(),
  };
}

/** Admin of the `local` keystore the service created at `keystorePath` (the service re-reads it on change). */
export async function localKeyAdmin(keystorePath: string): Promise<KeyAdmin> {
  return keyAdmin(await LocalRootKeyBackend.open(keystorePath, { createIfMissing: false, defaultKeyId: "default" }), {});
}
