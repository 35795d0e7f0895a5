/**
 * What a customer does to their root key in its backend, for tests: create, rotate, disable, enable, destroy.
 * One implementation per backend, so the same lifecycle tests run on `local` and `pkcs11`.
 */
import { LocalRootKeyBackend } from "../../src/crypto/rootkeys/local.js";

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
  close(): Promise<void>;
}

/** Admin of the `local` keystore the service created at `keystorePath` (the service re-reads it on change). */
export async function localKeyAdmin(keystorePath: string): Promise<KeyAdmin> {
  const ks = await LocalRootKeyBackend.open(keystorePath, { createIfMissing: false, defaultKeyId: "default" });
  return {
    backend: "local",
    env: {},
    create: async (id) => void (await ks.createKey(id)),
    rotate: async (id) => void (await ks.rotate(id)),
    disable: async (id) => void (await ks.setState(id, undefined, "DISABLED")),
    enable: async (id) => void (await ks.setState(id, undefined, "ENABLED")),
    destroy: async (id) => {
      const key = (await ks.listKeys()).find((k) => k.keyId === id)!;
      for (const v of key.versions) if (v.state !== "DESTROYED") await ks.setState(id, v.version, "DESTROYED");
    },
    close: () => ks.close(),
  };
}
