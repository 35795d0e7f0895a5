/**
 * Test fixtures made by the real `openssl` CLI (3.x), so tests check our parser against an independent tool.
 *
 * - Keys are cached per (type, slot) for the life of the test process: RSA generation dominates run time. Ask for
 *   another slot when you need a different key of the same type (e.g. a mismatch test).
 * - Every openssl run that needs files gets its own temp directory, removed right after.
 * - Everything returned is PEM text with LF line endings.
 *
 * Typical use:
 *   const chain = makeChain({ keyType: "ec256", depth: 2, sans: { dns: ["a.example"] } });
 *   parseImport({ certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") });
 *   const facts = certFacts(chain.leafPem); // fingerprint, serial, dates, DNs as openssl prints them
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export type KeyType =
  | "rsa1024"
  | "rsa2048"
  | "rsa3072"
  | "rsa4096"
  | "rsa8192"
  | "ec256"
  | "ec384"
  | "ec521"
  | "secp256k1"
  | "ed25519"
  | "ed448"
  | "x25519"
  | "x448"
  | "dsa"
  | "rsapss";

/** A generated key pair. */
export interface KeyPair {
  type: KeyType;
  /** Unencrypted PKCS#8 (`PRIVATE KEY`). */
  pkcs8Pem: string;
  /** PKCS#1 (`RSA PRIVATE KEY`) for RSA, SEC1 (`EC PRIVATE KEY`) for EC, `DSA PRIVATE KEY` for DSA; else PKCS#8. */
  legacyPem: string;
  /** SPKI (`PUBLIC KEY`). */
  publicPem: string;
}

/** Subject alternative names to put in a certificate (openssl syntax: IPv6 may be written in any form). */
export interface Sans {
  dns?: string[];
  ip?: string[];
  email?: string[];
  uri?: string[];
}

/** A certificate with its key. */
export interface IssuedCert {
  certPem: string;
  key: KeyPair;
  /** Same as key.pkcs8Pem. */
  keyPem: string;
}

export interface CertOptions {
  /** Key type of the new certificate (default ec256); ignored when `key` is given. */
  keyType?: KeyType;
  /** Use this key instead of a cached one. */
  key?: KeyPair;
  /** Cache slot for the key (default: the subject). Same (type, slot) = same key. */
  keySlot?: string;
  /** Subject in openssl `-subj` form, e.g. `/CN=a.example/O=Example`; default `/CN=<cn>`. */
  subject?: string;
  /** Common name used when `subject` is absent (default `test.example`). */
  cn?: string;
  sans?: Sans;
  /** Validity in days from now (default 30). */
  days?: number;
  /** Serial as hex digits without 0x (default: 16 random bytes). */
  serial?: string;
  /** Issuing CA; absent = self-signed (impossible for x25519/x448 keys, which cannot sign). */
  issuer?: IssuedCert;
  /** CA certificate (basicConstraints CA:TRUE, keyCertSign) or leaf (default false). */
  ca?: boolean;
}

export interface ChainOptions {
  /** Leaf key type (default ec256). */
  keyType?: KeyType;
  /** Number of intermediates between leaf and root (default 1). */
  depth?: number;
  /** Key type of the root and intermediates (default ec256: fast). */
  caKeyType?: KeyType;
  sans?: Sans;
  days?: number;
  /** Leaf CN (default `leaf.example`). */
  cn?: string;
  /** Distinguishes the keys and names of this chain from other chains (default `chain`). */
  name?: string;
}

export interface Chain {
  leafPem: string;
  /** PKCS#8. */
  leafKeyPem: string;
  /** PKCS#1 (RSA) or SEC1 (EC); PKCS#8 for other types. */
  leafKeyPkcs1OrSec1Pem: string;
  /** In issuing order: intermediatesPem[0] issued the leaf, the last was issued by the root. */
  intermediatesPem: string[];
  rootPem: string;
  rootKeyPem: string;
  /** The same certificates with their keys, leaf first, root last. */
  certs: IssuedCert[];
}

/** What openssl itself says about a certificate, for use as expected values. */
export interface CertFacts {
  /** `openssl x509 -fingerprint -sha256`, lowercase, no colons. */
  sha256Fingerprint: string;
  /** `openssl x509 -serial`, lowercase: the magnitude, without a 00 sign byte. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** `-nameopt RFC2253`. */
  subject: string;
  issuer: string;
}

/** Runs openssl with arguments (no shell) and returns stdout; throws with stderr on failure. */
export function openssl(args: string[], opts: { cwd?: string; input?: string } = {}): string {
  try {
    return execFileSync("openssl", args, {
      cwd: opts.cwd,
      input: opts.input,
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr ?? e.message}`);
  }
}

/** Runs `fn` in a fresh temp directory and removes it afterwards. */
function inTemp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "certmgr-openssl-"));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const GENPKEY_ARGS: Record<KeyType, string[]> = {
  rsa1024: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
  rsa2048: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  rsa3072: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
  rsa4096: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
  rsa8192: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:8192"],
  ec256: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt", "ec_param_enc:named_curve"],
  ec384: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-pkeyopt", "ec_param_enc:named_curve"],
  ec521: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521", "-pkeyopt", "ec_param_enc:named_curve"],
  secp256k1: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1", "-pkeyopt", "ec_param_enc:named_curve"],
  ed25519: ["-algorithm", "ED25519"],
  ed448: ["-algorithm", "ED448"],
  x25519: ["-algorithm", "X25519"],
  x448: ["-algorithm", "X448"],
  dsa: [], // from cached parameters, see makeKey
  rsapss: ["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"],
};

const keyCache = new Map<string, KeyPair>();
let dsaParams: string | undefined;

/** A key of the given type; the same (type, slot) returns the same key within a process. */
export function makeKey(type: KeyType, slot = "default"): KeyPair {
  const cacheKey = `${type}\u0000${slot}`;
  const cached = keyCache.get(cacheKey);
  if (cached) return cached;
  const key = inTemp((dir) => {
    let args = GENPKEY_ARGS[type];
    if (type === "dsa") {
      dsaParams ??= openssl(["genpkey", "-genparam", "-algorithm", "DSA", "-pkeyopt", "pbits:2048", "-pkeyopt", "qbits:256"]);
      writeFileSync(join(dir, "dsaparams.pem"), dsaParams);
      args = ["-paramfile", "dsaparams.pem"];
    }
    const pkcs8Pem = openssl(["genpkey", ...args], { cwd: dir });
    // OpenSSL has a traditional (pre-PKCS#8) format only for RSA, EC and DSA.
    const legacyPem = /^(rsa\d|ec|secp|dsa)/.test(type) ? openssl(["pkey", "-traditional"], { input: pkcs8Pem }) : pkcs8Pem;
    const publicPem = openssl(["pkey", "-pubout"], { input: pkcs8Pem });
    return { type, pkcs8Pem, legacyPem, publicPem };
  });
  keyCache.set(cacheKey, key);
  return key;
}

/**
 * Password-protects a key: PKCS#8 `ENCRYPTED PRIVATE KEY` (default), or the legacy OpenSSL form with
 * `Proc-Type: 4,ENCRYPTED` headers (`legacy: true`, RSA/EC keys only).
 */
export function encryptKey(key: KeyPair, opts: { legacy?: boolean; password?: string } = {}): string {
  const pass = `pass:${opts.password ?? "test-password"}`;
  if (opts.legacy) {
    return openssl(["pkey", "-traditional", "-aes256", "-passout", pass], { input: key.pkcs8Pem });
  }
  return openssl(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", pass], { input: key.pkcs8Pem });
}

const NON_SIGNING: KeyType[] = ["x25519", "x448"];

function extensionConfig(ca: boolean, sans: Sans | undefined): string {
  const lines = [
    "[req]",
    "distinguished_name = dn",
    "[dn]",
    "[ext]",
    ca ? "basicConstraints = critical,CA:TRUE" : "basicConstraints = critical,CA:FALSE",
    ca ? "keyUsage = critical,keyCertSign,cRLSign" : "keyUsage = critical,digitalSignature",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid",
  ];
  if (!ca) lines.push("extendedKeyUsage = serverAuth,clientAuth");
  const alt: string[] = [];
  const add = (kind: string, values: string[] | undefined) => values?.forEach((v, i) => alt.push(`${kind}.${i + 1} = ${v}`));
  add("DNS", sans?.dns);
  add("IP", sans?.ip);
  add("email", sans?.email);
  add("URI", sans?.uri);
  if (alt.length > 0) lines.push("subjectAltName = @alt", "[alt]", ...alt);
  return `${lines.join("\n")}\n`;
}

/** A random positive serial, 16 bytes, first byte non-zero (half of them have the high bit set). */
function randomSerial(): string {
  const b = randomBytes(16);
  if (b[0] === 0) b[0] = 1;
  return b.toString("hex");
}

/** Creates a certificate (self-signed unless `issuer` is given). */
export function makeCert(opts: CertOptions = {}): IssuedCert {
  const subject = opts.subject ?? `/CN=${opts.cn ?? "test.example"}`;
  const key = opts.key ?? makeKey(opts.keyType ?? "ec256", opts.keySlot ?? subject);
  const days = String(opts.days ?? 30);
  const serial = `0x${opts.serial ?? randomSerial()}`;
  const certPem = inTemp((dir) => {
    writeFileSync(join(dir, "ext.cnf"), extensionConfig(opts.ca ?? false, opts.sans));
    writeFileSync(join(dir, "key.pem"), key.pkcs8Pem);
    if (!opts.issuer) {
      if (NON_SIGNING.includes(key.type)) throw new Error(`a ${key.type} key cannot self-sign; pass an issuer`);
      openssl(
        ["req", "-new", "-x509", "-batch", "-key", "key.pem", "-subj", subject, "-days", days, "-set_serial", serial,
          "-config", "ext.cnf", "-extensions", "ext", "-out", "cert.pem"],
        { cwd: dir },
      );
      return readFileSync(join(dir, "cert.pem"), "utf8");
    }
    writeFileSync(join(dir, "ca.pem"), opts.issuer.certPem);
    writeFileSync(join(dir, "ca.key"), opts.issuer.keyPem);
    // Keys that cannot sign (X25519/X448) cannot sign their CSR: sign it with the CA key, then force the real key in.
    const nonSigning = NON_SIGNING.includes(key.type);
    if (nonSigning) writeFileSync(join(dir, "pub.pem"), key.publicPem);
    openssl(
      ["req", "-new", "-batch", "-key", nonSigning ? "ca.key" : "key.pem", "-subj", subject, "-config", "ext.cnf", "-out", "csr.pem"],
      { cwd: dir },
    );
    openssl(
      ["x509", "-req", "-in", "csr.pem", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", serial, "-days", days,
        "-extfile", "ext.cnf", "-extensions", "ext", "-out", "cert.pem", ...(nonSigning ? ["-force_pubkey", "pub.pem"] : [])],
      { cwd: dir },
    );
    return readFileSync(join(dir, "cert.pem"), "utf8");
  });
  return { certPem, key, keyPem: key.pkcs8Pem };
}

/** A CA certificate (self-signed root unless `issuer` is given). */
export function makeCa(opts: Omit<CertOptions, "ca"> = {}): IssuedCert {
  return makeCert({ cn: "Test Root CA", ...opts, ca: true });
}

/** A leaf (end-entity) certificate; self-signed unless `issuer` is given. */
export function makeLeaf(opts: Omit<CertOptions, "ca"> = {}): IssuedCert & { legacyKeyPem: string } {
  const cert = makeCert({ ...opts, ca: false });
  return { ...cert, legacyKeyPem: cert.key.legacyPem };
}

/** Root -> `depth` intermediates -> leaf. */
export function makeChain(opts: ChainOptions = {}): Chain {
  const name = opts.name ?? "chain";
  const caKeyType = opts.caKeyType ?? "ec256";
  const depth = opts.depth ?? 1;
  const root = makeCa({ subject: `/CN=${name} Root CA/O=Test`, keyType: caKeyType, days: (opts.days ?? 30) + 10 });
  const cas: IssuedCert[] = [root];
  for (let i = 1; i <= depth; i += 1) {
    cas.push(
      makeCa({
        // Numbered from the leaf: "Intermediate 1" issues the leaf, "Intermediate <depth>" is issued by the root.
        subject: `/CN=${name} Intermediate ${depth + 1 - i}/O=Test`,
        keyType: caKeyType,
        issuer: cas[cas.length - 1],
        days: (opts.days ?? 30) + 10 - i,
      }),
    );
  }
  const leaf = makeLeaf({
    subject: `/CN=${opts.cn ?? "leaf.example"}/O=Test`,
    keyType: opts.keyType ?? "ec256",
    keySlot: `${name} leaf`,
    issuer: cas[cas.length - 1],
    sans: opts.sans,
    days: opts.days,
  });
  const intermediates = cas.slice(1).reverse();
  return {
    leafPem: leaf.certPem,
    leafKeyPem: leaf.keyPem,
    leafKeyPkcs1OrSec1Pem: leaf.legacyKeyPem,
    intermediatesPem: intermediates.map((c) => c.certPem),
    rootPem: root.certPem,
    rootKeyPem: root.keyPem,
    certs: [leaf, ...intermediates, root],
  };
}

/** Bundles a certificate, its key and CA certificates into a PKCS#12 file (`openssl pkcs12 -export`). */
export function exportPkcs12(opts: { certPem: string; keyPem: string; caPems?: string[]; password?: string }): Buffer {
  return inTemp((dir) => {
    writeFileSync(join(dir, "cert.pem"), opts.certPem);
    writeFileSync(join(dir, "key.pem"), opts.keyPem);
    const args = ["pkcs12", "-export", "-in", "cert.pem", "-inkey", "key.pem", "-passout", `pass:${opts.password ?? ""}`, "-out", "out.p12"];
    if (opts.caPems?.length) {
      writeFileSync(join(dir, "ca.pem"), opts.caPems.join(""));
      args.push("-certfile", "ca.pem");
    }
    openssl(args, { cwd: dir });
    return readFileSync(join(dir, "out.p12"));
  });
}

/**
 * What `openssl pkcs12 -in file.p12 -nodes` prints for one part of a PKCS#12 file: PEM blocks preceded by
 * `Bag Attributes`, `subject=`/`issuer=` and `Key Attributes` lines, the way users often paste them.
 */
export function pkcs12ToText(p12: Buffer, part: "leaf" | "cas" | "key", password = ""): string {
  return inTemp((dir) => {
    writeFileSync(join(dir, "in.p12"), p12);
    const select = { leaf: ["-clcerts", "-nokeys"], cas: ["-cacerts", "-nokeys"], key: ["-nocerts", "-nodes"] }[part];
    return openssl(["pkcs12", "-in", "in.p12", "-passin", `pass:${password}`, ...select], { cwd: dir });
  });
}

/** Reads fingerprint, serial, dates and DNs of a certificate with `openssl x509`. */
export function certFacts(certPem: string): CertFacts {
  const out = openssl(
    ["x509", "-noout", "-fingerprint", "-sha256", "-serial", "-startdate", "-enddate", "-dateopt", "iso_8601",
      "-subject", "-issuer", "-nameopt", "RFC2253"],
    { input: certPem },
  );
  const field = (re: RegExp): string => {
    const m = re.exec(out);
    if (!m) throw new Error(`unexpected openssl output: ${out}`);
    return m[1].trim();
  };
  const date = (s: string) => new Date(s.replace(" ", "T"));
  return {
    sha256Fingerprint: field(/Fingerprint=([0-9A-F:]+)/i).replace(/:/g, "").toLowerCase(),
    serial: field(/^serial=(.*)$/m).toLowerCase(),
    notBefore: date(field(/^notBefore=(.*)$/m)),
    notAfter: date(field(/^notAfter=(.*)$/m)),
    subject: field(/^subject=(.*)$/m),
    issuer: field(/^issuer=(.*)$/m),
  };
}
