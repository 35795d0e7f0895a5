/**
 * TLS for the gRPC server from certificate and key files, reloaded without a restart: when the files change
 * (polled) or on demand (SIGHUP), new connections get the new certificate and open connections keep theirs.
 *
 * Why not grpc-js's `experimental.FileWatcherCertificateProvider` alone: when a read fails (a half-written file
 * in the middle of a rotation, a key that does not match the certificate yet) it publishes "no credentials" and
 * the server then drops every new connection until the next good read. This provider checks a new pair
 * completely (PEM parses, the key matches the certificate, Node builds a secure context from it) and keeps the
 * last good pair otherwise, so a rotation can never take the server off the air.
 */
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

/** Where the server's TLS material lives, and how clients are checked. */
export interface TlsSettings {
  /** PEM: the server certificate, then its intermediates. */
  certFile: string;
  /** PEM: the server's private key (PKCS#8, PKCS#1 or SEC1). */
  keyFile: string;
  /** PEM bundle of the CAs that issue client certificates; unset: no client certificates are asked for. */
  clientCaFile?: string;
  /** With a client CA: `require` refuses connections without a valid client certificate; `request` asks only. */
  clientAuth: "request" | "require";
  /** How often the files are checked for changes, ms. */
  reloadIntervalMs: number;
}

type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

interface Material {
  certificate: Buffer;
  privateKey: Buffer;
  ca?: Buffer;
  /** SHA-256 of all three, to skip republishing unchanged files. */
  digest: string;
  /** For the log: the leaf's SHA-256 fingerprint and expiry. */
  fingerprint: string;
  notAfter: string;
}

/**
 * Reads and checks the TLS files.
 * @throws Error naming the file and the problem (never its content) when the pair cannot serve.
 */
async function readMaterial(s: TlsSettings): Promise<Material> {
  const [certificate, privateKey, ca] = await Promise.all([
    readFile(s.certFile),
    readFile(s.keyFile),
    s.clientCaFile ? readFile(s.clientCaFile) : Promise.resolve(undefined),
  ]);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certificate);
  } catch {
    throw new Error(`${s.certFile} does not hold a PEM certificate`);
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(privateKey))) throw new Error("mismatch");
  } catch {
    throw new Error(`${s.keyFile} does not hold the private key of the certificate in ${s.certFile}`);
  }
  if (ca) {
    try {
      new X509Certificate(ca);
    } catch {
      throw new Error(`${s.clientCaFile} does not hold a PEM CA certificate`);
    }
  }
  try {
    // What the server will do with it: a pair Node refuses here would otherwise drop connections later.
    createSecureContext({ cert: certificate, key: privateKey, ca });
  } catch (err) {
    throw new Error(`the TLS files cannot be used together (${(err as Error).message})`);
  }
  const digest = createHash("sha256").update(certificate).update(privateKey).update(ca ?? Buffer.alloc(0)).digest("hex");
  return { certificate, privateKey, ca, digest, fingerprint: leaf.fingerprint256, notAfter: new Date(leaf.validTo).toISOString() };
}

/** Serves the last good certificate, key and client CA bundle to grpc-js, and re-reads them on change. */
export class ReloadingCertificateProvider implements grpc.experimental.CertificateProvider {
  #material: Material;
  readonly #identity = new Set<IdentityListener>();
  readonly #ca = new Set<CaListener>();
  #timer: NodeJS.Timeout | undefined;
  #reloading: Promise<boolean> | undefined;

  private constructor(
    readonly settings: TlsSettings,
    material: Material,
    private readonly log: Pick<Logger, "info" | "warn">,
  ) {
    this.#material = material;
  }

  /**
   * Loads the files (a bad pair stops the start) and starts watching them.
   * @throws Error naming the file to fix.
   */
  static async open(settings: TlsSettings, log: Pick<Logger, "info" | "warn">): Promise<ReloadingCertificateProvider> {
    const material = await readMaterial(settings);
    const provider = new ReloadingCertificateProvider(settings, material, log);
    log.info({ certificate: material.fingerprint, notAfter: material.notAfter, clientCa: settings.clientCaFile !== undefined }, "TLS certificate loaded");
    provider.#timer = setInterval(() => void provider.reload("file check"), settings.reloadIntervalMs);
    provider.#timer.unref();
    return provider;
  }

  /**
   * Reads the files again; publishes them to new connections when they changed and are a good pair, else keeps
   * the last good pair and logs why. Concurrent calls share one read.
   * @param reason for the log, e.g. `SIGHUP`.
   * @returns whether a new pair was published.
   */
  reload(reason: string): Promise<boolean> {
    this.#reloading ??= this.#reload(reason).finally(() => (this.#reloading = undefined));
    return this.#reloading;
  }

  async #reload(reason: string): Promise<boolean> {
    let next: Material;
    try {
      next = await readMaterial(this.settings);
    } catch (err) {
      this.log.warn({ reason, err: (err as Error).message, certificate: this.#material.fingerprint }, "TLS files not reloaded: keeping the last good certificate");
      return false;
    }
    if (next.digest === this.#material.digest) return false;
    this.#material = next;
    for (const l of this.#identity) l(this.#identityUpdate());
    for (const l of this.#ca) l(this.#caUpdate());
    this.log.info({ reason, certificate: next.fingerprint, notAfter: next.notAfter }, "TLS certificate reloaded");
    return true;
  }

  /** Stops watching the files. */
  close(): void {
    clearInterval(this.#timer);
  }

  /** Server credentials for grpc-js that follow this provider. */
  credentials(): grpc.ServerCredentials {
    const withCa = this.settings.clientCaFile !== undefined;
    // grpc-js 1.14 passes its first argument on as the identity provider and its second as the CA provider
    // (the .d.ts names them the other way round); this one object serves both, so the order cannot matter.
    return grpc.experimental.createCertificateProviderServerCredentials(this, withCa ? this : null, withCa && this.settings.clientAuth === "require");
  }

  #identityUpdate(): grpc.experimental.IdentityCertificateUpdate {
    return { certificate: this.#material.certificate, privateKey: this.#material.privateKey };
  }

  #caUpdate(): grpc.experimental.CaCertificateUpdate | null {
    return this.#material.ca ? { caCertificate: this.#material.ca } : null;
  }

  /**
   * grpc-js registers its own watcher only after adding these listeners, and reads the options it starts with
   * before that: a first update delivered synchronously would be lost and the server would drop every
   * connection. So the first update comes in a microtask, as grpc-js's own file watcher's does (after a read).
   */
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identity.add(listener);
    queueMicrotask(() => this.#identity.has(listener) && listener(this.#identityUpdate()));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identity.delete(listener);
  }

  /** As {@link addIdentityCertificateListener}: the first update comes in a microtask. */
  addCaCertificateListener(listener: CaListener): void {
    this.#ca.add(listener);
    queueMicrotask(() => this.#ca.has(listener) && listener(this.#caUpdate()));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#ca.delete(listener);
  }
}
