/**
 * The soak's certificates, made once with openssl before the traffic starts (never per request): one root and
 * one intermediate CA, and `perWorker` leaves for each worker, each with its private key and the intermediate
 * as its chain. A leaf carries the DNS names `c<index>.soak.test` and `w<worker>.soak.test`, so a worker lists
 * and exports exactly its own certificates with `domain = "w<worker>.soak.test"`, and no two workers ever import
 * the same certificate (a duplicate fingerprint in one instance is ALREADY_EXISTS).
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { makeCa, makeKey, makeLeaf, type KeyPair } from "../../test/helpers/openssl.js";

/** One certificate of the pool with what the service must answer for it. */
export interface PoolCertificate {
  index: number;
  /** The worker that alone imports, changes and deletes it. */
  owner: number;
  certificate: string;
  /** PKCS#8 PEM. */
  privateKey: string;
  intermediates: string;
  /** SHA-256 of the DER, lowercase hex without colons (the service's `sha256_fingerprint`). */
  fingerprint: string;
  /** The key's algorithm, as ListCertificates filters it. */
  keyAlgorithm: "EC" | "RSA";
  /** The key as PKCS#8 DER, to compare what AccessCertificate returns whatever its PEM layout. */
  privateKeyDer: Buffer;
}

/** Removes every blank, so PEM texts compare by content. */
export const squash = (pem: string) => pem.replace(/\s+/g, "");

/**
 * Makes `workers * perWorker` certificates; worker `w` owns indexes `w * perWorker` to `w * perWorker + perWorker - 1`.
 * Leaves share eight keys (six EC P-256, two RSA 2048: key generation dominates the time), which the service allows.
 */
export function makePool(workers: number, perWorker: number): PoolCertificate[] {
  const root = makeCa({ subject: "/CN=Soak Root CA/O=Test", days: 3650 });
  const intermediate = makeCa({ subject: "/CN=Soak Intermediate CA/O=Test", issuer: root, days: 3600 });
  const keys: KeyPair[] = [...Array.from({ length: 6 }, (_, i) => makeKey("ec256", `soak-${i}`)), makeKey("rsa2048", "soak-0"), makeKey("rsa2048", "soak-1")];
  const pool: PoolCertificate[] = [];
  for (let index = 0; index < workers * perWorker; index++) {
    const owner = Math.floor(index / perWorker);
    const key = keys[index % keys.length]!;
    const leaf = makeLeaf({ subject: `/CN=c${index}.soak.test/O=Test`, key, issuer: intermediate, sans: { dns: [`c${index}.soak.test`, `w${owner}.soak.test`] }, days: 90 });
    pool.push({
      index,
      owner,
      certificate: leaf.certPem,
      privateKey: key.pkcs8Pem,
      intermediates: intermediate.certPem,
      keyAlgorithm: key.type === "ec256" ? "EC" : "RSA",
      fingerprint: new X509Certificate(leaf.certPem).fingerprint256.replace(/:/g, "").toLowerCase(),
      privateKeyDer: createPrivateKey(key.pkcs8Pem).export({ format: "der", type: "pkcs8" }),
    });
  }
  return pool;
}
