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
import { constants as fsConstants } from "node:fs";
import { open } from "node:fs/promises";
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

/** Largest TLS file read, bytes: real ones are a few KB; a huge file would be re-read at every check. */
const MAX_TLS_FILE_BYTES = 1024 * 1024;
/** A read that has not finished by then (a hung network mount) is abandoned, so later reloads still run. */
const READ_TIMEOUT_MS = 10_000;
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The setting that names a TLS file, for a refusal that tells the operator what to fix. */
export type TlsFileVariable = "CM_TLS_CERT_FILE" | "CM_TLS_KEY_FILE" | "CM_TLS_CLIENT_CA_FILE";

/** TLS files that cannot serve: which setting names the culprit, and why (never the file's content). */
export class TlsFileError extends Error {
  constructor(
    readonly variable: TlsFileVariable,
    message: string,
  ) {
    super(message);
    this.name = "TlsFileError";
  }
}

/**
 * Reads one file, bounded in size and time. Opened non-blocking and checked on the open handle: a FIFO, a device
 * or a directory is refused before any read (a FIFO with no writer would hold a thread-pool thread forever, and
 * /dev/zero would never end), and at most MAX_TLS_FILE_BYTES + 1 bytes are read whatever the file claims.
 * @throws TlsFileError naming the file.
 */
async function readBounded(file: string, variable: TlsFileVariable): Promise<Buffer> {
  let timer: NodeJS.Timeout | undefined;
  const read = (async () => {
    const fh = await open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new TlsFileError(variable, `${file} is not a regular file`);
      const tooBig = (size: number) => new TlsFileError(variable, `${file} is ${size} bytes, more than a TLS file can need (${MAX_TLS_FILE_BYTES})`);
      if (st.size > MAX_TLS_FILE_BYTES) throw tooBig(st.size);
      // Sized by the bound, not by st.size: a file still being written may have grown since the fstat.
      const buf = Buffer.alloc(MAX_TLS_FILE_BYTES + 1);
      let length = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, length, buf.length - length, length);
        if (bytesRead === 0) break;
        length += bytesRead;
        if (length === buf.length) break;
      }
      if (length > MAX_TLS_FILE_BYTES) throw tooBig(length);
      return buf.subarray(0, length);
    } finally {
      await fh.close();
    }
  })();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TlsFileError(variable, `${file} could not be read within ${READ_TIMEOUT_MS} ms`)), READ_TIMEOUT_MS);
  });
  try {
    return await Promise.race([read, timeout]);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw code && !(err instanceof TlsFileError) ? new TlsFileError(variable, `${file} cannot be read (${code})`) : err;
  } finally {
    clearTimeout(timer);
  }
}

/** Every PEM certificate in `pem`, parsed. @throws TlsFileError naming `file` when there is none or one does not parse. */
function certificatesIn(pem: Buffer, file: string, variable: TlsFileVariable, what: string): X509Certificate[] {
  const blocks = pem.toString("latin1").match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TlsFileError(variable, `${file} does not hold ${what} in PEM`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch {
      throw new TlsFileError(variable, `${file}: certificate ${i + 1} of ${blocks.length} cannot be read`);
    }
  });
}

/**
 * Reads and checks the TLS files: the server chain in order (each certificate issued by the next) with the leaf
 * valid now and its private key, and a client CA bundle of CA certificates only (RFC 5280 §4.2.1.9) — anything
 * that would make handshakes fail later is refused now.
 * @throws TlsFileError naming the file and the problem (never its content) when the files cannot serve.
 */
async function readMaterial(s: TlsSettings, now = new Date()): Promise<Material> {
  const [certificate, privateKey, ca] = await Promise.all([
    readBounded(s.certFile, "CM_TLS_CERT_FILE"),
    readBounded(s.keyFile, "CM_TLS_KEY_FILE"),
    s.clientCaFile ? readBounded(s.clientCaFile, "CM_TLS_CLIENT_CA_FILE") : Promise.resolve(undefined),
  ]);
  const chain = certificatesIn(certificate, s.certFile, "CM_TLS_CERT_FILE", "a certificate");
  const leaf = chain[0]!;
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i]!.checkIssued(chain[i + 1]!)) {
      throw new TlsFileError("CM_TLS_CERT_FILE", `${s.certFile}: certificate ${i + 2} did not issue certificate ${i + 1}; put the leaf first, then each issuer in order`);
    }
  }
  if (now < new Date(leaf.validFrom) || now > new Date(leaf.validTo)) {
    throw new TlsFileError("CM_TLS_CERT_FILE", `${s.certFile}: the certificate is valid from ${new Date(leaf.validFrom).toISOString()} to ${new Date(leaf.validTo).toISOString()}, not now`);
  }
  try {
    if (!leaf.checkPrivateKey(createPrivateKey(privateKey))) throw new Error("mismatch");
  } catch {
    throw new TlsFileError("CM_TLS_KEY_FILE", `${s.keyFile} does not hold the private key of the certificate in ${s.certFile}`);
  }
  if (ca) {
    const cas = certificatesIn(ca, s.clientCaFile!, "CM_TLS_CLIENT_CA_FILE", "CA certificates");
    const notCa = cas.findIndex((c) => !c.ca);
    if (notCa >= 0) throw new TlsFileError("CM_TLS_CLIENT_CA_FILE", `${s.clientCaFile}: certificate ${notCa + 1} is not a CA certificate (basicConstraints CA:TRUE)`);
  }
  try {
    // What the server will do with it: a pair Node refuses here would otherwise drop connections later.
    createSecureContext({ cert: certificate, key: privateKey, ca });
  } catch (err) {
    throw new TlsFileError("CM_TLS_CERT_FILE", `the TLS files cannot be used together (${(err as Error).message})`);
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
  /** One more read queued behind the running one. */
  #again: Promise<boolean> | undefined;
  #lastProblem: string | undefined;

  private constructor(
    readonly settings: TlsSettings,
    material: Material,
    private readonly log: Pick<Logger, "info" | "warn">,
    private readonly now: () => Date,
  ) {
    this.#material = material;
  }

  /**
   * Loads the files (a bad pair stops the start) and starts watching them.
   * @param now the service's clock: the leaf must be valid at its time.
   * @throws Error naming the file to fix.
   */
  static async open(settings: TlsSettings, log: Pick<Logger, "info" | "warn">, now: () => Date = () => new Date()): Promise<ReloadingCertificateProvider> {
    const material = await readMaterial(settings, now());
    const provider = new ReloadingCertificateProvider(settings, material, log, now);
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
    if (this.#reloading) {
      // A read already under way may have started before the files were replaced: read once more after it.
      this.#again ??= this.#reloading.then(() => {
        this.#again = undefined;
        return this.reload(reason);
      });
      return this.#again;
    }
    this.#reloading = this.#reload(reason).finally(() => (this.#reloading = undefined));
    return this.#reloading;
  }

  async #reload(reason: string): Promise<boolean> {
    let next: Material;
    try {
      next = await readMaterial(this.settings, this.now());
    } catch (err) {
      const why = (err as Error).message;
      // Once per distinct problem, not at every check while it lasts.
      if (why !== this.#lastProblem) this.log.warn({ reason, err: why, certificate: this.#material.fingerprint }, "TLS files not reloaded: keeping the last good certificate");
      this.#lastProblem = why;
      return false;
    }
    this.#lastProblem = undefined;
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
