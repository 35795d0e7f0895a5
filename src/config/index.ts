/**
 * Configuration from environment variables, validated once at start into a frozen, typed object.
 * Every variable is documented in the README's table; an invalid value stops the process with a message
 * naming the variable. Secrets may come from `<NAME>_FILE` (the path of a file holding the value).
 */
import { readFileSync } from "node:fs";
import path from "node:path";

import { isMember } from "../domain/iam.js";
import { isInstanceKeyId, isRootKeyId, ROOT_KEY_ID } from "../domain/rootkey-id.js";
import type { DatabaseConfig } from "../storage/db.js";

export type { DatabaseConfig };

/** The service's whole configuration. */
export interface Config {
  /** host:port to listen on. */
  listenAddress: string;
  /**
   * CM_HEALTH_LISTEN_ADDRESS: a second, plaintext listener that serves grpc.health.v1 only, for probes that cannot
   * do TLS or present credentials (container HEALTHCHECKs, Kubernetes gRPC probes). Unset: none.
   */
  healthListenAddress?: string;
  /** TLS from files (CM_TLS_CERT_FILE and CM_TLS_KEY_FILE); unset: plaintext, allowed on loopback only. */
  tls?: {
    certFile: string;
    keyFile: string;
    /** Client CA bundle for mutual TLS (CM_TLS_CLIENT_CA_FILE). */
    clientCaFile?: string;
    clientAuth: "request" | "require";
    reloadIntervalMs: number;
  };
  /** Authentication and authorization settings. */
  auth: {
    /** File with the 32-byte pepper API key secrets are HMACed under (created with mode 0600 if missing). */
    apiKeyPepperPath: string;
    /** Where the first start writes the bootstrap administrator API key; undefined: no bootstrap key. */
    bootstrapKeyPath?: string;
    /** Members bound to roles/administrator in the service policy when it is first created. */
    adminMembers: string[];
    /** How long API keys and policies are cached, ms (a revocation on another replica holds within it). */
    cacheTtlMs: number;
    /** Calls per second per principal, and the burst; 0: no limit. */
    ratePerSecond: number;
    rateBurst: number;
    /** Health and reflection open to unauthenticated callers. */
    openHealth: boolean;
    openReflection: boolean;
  };
  /** How often the heads of audit chains that moved are logged as checkpoints, ms. */
  auditCheckpointIntervalMs: number;
  /** How often a `process stats` line (memory, handles, file descriptors, event-loop delay) is logged, ms; 0: never. */
  processStatsIntervalMs: number;
  /** Plaintext on a non-loopback address was explicitly accepted (CM_ALLOW_INSECURE_NON_LOOPBACK=true). */
  insecureNonLoopback: boolean;
  /** Directory for the embedded database, the local keystore and the page-token key. */
  dataDir: string;
  database: DatabaseConfig;
  /** Path of the local root-key keystore (JWKS-like JSON, mode 0600). */
  localKeystorePath: string;
  /**
   * The keystore is inside the data folder while the server listens on a non-loopback address: one backup of the
   * folder then holds the database and the keys that open it, deleted instances included (warned at start).
   */
  keystoreBesideData: boolean;
  /** Root key id (in the local backend) that wraps the DEKs of provider-managed instances. */
  defaultRootKeyId: string;
  /** Path of the file holding the 32-byte key that authenticates page tokens (created if missing). */
  pageTokenKeyPath: string;
  /** DEK cache bounds. */
  dekCacheMax: number;
  dekCacheTtlMs: number;
  /** Largest gRPC message accepted, bytes. */
  maxReceiveMessageBytes: number;
  /** How long a deleted instance stays restorable, ms (AIP-164 retention). */
  reclamationRetentionMs: number;
  /** How often the purge job looks for expired reclamations, ms. */
  purgeIntervalMs: number;
  /** Certificates deleted per transaction while reclaiming. */
  purgeBatchSize: number;
  /** How long a reclaim lease lasts without renewal, ms. */
  purgeLeaseMs: number;
  /** Encryptions after which a DEK is rotated (a share of AES-GCM's 2^32 limit, NIST SP 800-38D §8.3). */
  dekMaxEncryptions: number;
  /** Certificates ExportCertificates reads from the database per batch (each is decrypted only when sent). */
  exportBatchSize: number;
  /** Bytes all ExportCertificates streams together may hold (rows read, the item being sent), CM_EXPORT_MEMORY_BUDGET_MB. */
  exportMemoryBudgetBytes: number;
  /** ExportCertificates streams one principal may have open at once. */
  exportStreamsPerCaller: number;
  /** ExportCertificates streams one client connection may have open at once. */
  exportStreamsPerConnection: number;
  /** Certificate versions re-encrypted per transaction during a DEK rotation. */
  reencryptBatchSize: number;
  /** The PKCS#11 root-key backend, when CM_PKCS11_MODULE is set. */
  pkcs11?: { modulePath: string; tokenLabel: string; pin: string; sessionPoolSize: number; callTimeoutMs: number };
  /** How long SIGTERM waits for in-flight calls before forcing the shutdown, ms. */
  shutdownGraceMs: number;
  /** What imports do with a self-signed root among the intermediates when the request does not say. */
  rootCertificate: "keep" | "drop";
  /**
   * JWT bearer tokens, when CM_JWT_ISSUER is set. The same shape as `JwtSettings` in src/auth/jwt.ts (config may
   * not import auth; the types match structurally). Durations in seconds.
   */
  jwt?: {
    issuer: string;
    audience: string;
    /** Exactly one of jwksFile (absolute path) and jwksUrl (https://, or http:// on loopback). */
    jwksFile?: string;
    jwksUrl?: string;
    /** Asymmetric algorithms only (RFC 8725 §3.1): HS* and `none` are refused. */
    algorithms: string[];
    principalClaim: string;
    groupsClaim: string;
    clockSkewSeconds: number;
    jwksCacheSeconds: number;
  };
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
}

/** Thrown for an invalid environment; the message names the variable. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`configuration error: ${variable} ${problem}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

/**
 * Every environment variable the server reads: the one list. `loadConfig` reads the environment through a guard
 * that throws on any `CM_*` name missing here (so a new variable cannot be forgotten: the first test reaching it
 * fails), and `unknownVariables` warns about set names that are not in it. `*_FILE` forms are listed as such.
 */
export const CONFIG_VARIABLES: readonly string[] = Object.freeze([
  "CM_LISTEN_ADDRESS",
  "CM_HEALTH_LISTEN_ADDRESS",
  "CM_TLS_CERT_FILE",
  "CM_TLS_KEY_FILE",
  "CM_TLS_CLIENT_CA_FILE",
  "CM_TLS_CLIENT_AUTH",
  "CM_TLS_RELOAD_INTERVAL_SECONDS",
  "CM_ALLOW_INSECURE_NON_LOOPBACK",
  "CM_API_KEY_PEPPER_FILE",
  "CM_BOOTSTRAP_ADMIN_KEY",
  "CM_BOOTSTRAP_ADMIN_KEY_FILE",
  "CM_ADMIN_MEMBERS",
  "CM_AUTH_CACHE_SECONDS",
  "CM_RATE_LIMIT_PER_SECOND",
  "CM_RATE_LIMIT_BURST",
  "CM_OPEN_HEALTH",
  "CM_OPEN_REFLECTION",
  "CM_AUDIT_CHECKPOINT_SECONDS",
  "CM_JWT_ISSUER",
  "CM_JWT_AUDIENCE",
  "CM_JWT_JWKS_FILE",
  "CM_JWT_JWKS_URL",
  "CM_JWT_ALGORITHMS",
  "CM_JWT_PRINCIPAL_CLAIM",
  "CM_JWT_GROUPS_CLAIM",
  "CM_JWT_CLOCK_SKEW_SECONDS",
  "CM_JWT_JWKS_CACHE_SECONDS",
  "CM_DATA_DIR",
  "CM_DATABASE_URL",
  "CM_DATABASE_URL_FILE",
  "CM_DATABASE_POOL_MAX",
  "CM_DATABASE_CONNECT_TIMEOUT_SECONDS",
  "CM_DATABASE_ACQUIRE_TIMEOUT_SECONDS",
  "CM_DATABASE_OPERATION_TIMEOUT_SECONDS",
  "CM_LOCAL_KEYSTORE",
  "CM_DEFAULT_ROOT_KEY_ID",
  "CM_PAGE_TOKEN_KEY_FILE",
  "CM_DEK_CACHE_MAX",
  "CM_DEK_CACHE_TTL_SECONDS",
  "CM_MAX_MESSAGE_BYTES",
  "CM_SHUTDOWN_GRACE_SECONDS",
  "CM_RECLAMATION_RETENTION_SECONDS",
  "CM_PURGE_INTERVAL_SECONDS",
  "CM_PURGE_BATCH_SIZE",
  "CM_PURGE_LEASE_SECONDS",
  "CM_DEK_MAX_ENCRYPTIONS",
  "CM_REENCRYPT_BATCH_SIZE",
  "CM_EXPORT_BATCH_SIZE",
  "CM_EXPORT_MEMORY_BUDGET_MB",
  "CM_EXPORT_STREAMS_PER_CALLER",
  "CM_EXPORT_STREAMS_PER_CONNECTION",
  "CM_ROOT_CERTIFICATE",
  "CM_PKCS11_MODULE",
  "CM_PKCS11_TOKEN_LABEL",
  "CM_PKCS11_PIN",
  "CM_PKCS11_PIN_FILE",
  "CM_PKCS11_SESSIONS",
  "CM_PKCS11_CALL_TIMEOUT_SECONDS",
  "CM_LOG_LEVEL",
  "CM_PROCESS_STATS_INTERVAL_SECONDS",
]);

const KNOWN_VARIABLES = new Set(CONFIG_VARIABLES);

/** `env` behind a guard: reading a `CM_*` name that is not in CONFIG_VARIABLES is a programming error. */
function guarded(env: Env): Env {
  return new Proxy(env, {
    get(target, name, receiver) {
      if (typeof name === "string" && name.startsWith("CM_") && !KNOWN_VARIABLES.has(name)) {
        throw new Error(`src/config reads ${name}, which is missing from CONFIG_VARIABLES: add it there and to the README's table`);
      }
      return Reflect.get(target, name, receiver) as string | undefined;
    },
  });
}

/**
 * Names Kubernetes injects for every Service in the namespace (docker-link style): a Service named `cm` gives
 * `CM_SERVICE_HOST`, `CM_SERVICE_PORT`, `CM_SERVICE_PORT_<name>`, `CM_PORT`, `CM_PORT_50051_TCP`,
 * `CM_PORT_50051_TCP_PROTO`, `_PORT` and `_ADDR`. They are not settings and are never warned about.
 */
const SERVICE_LINK = [/_SERVICE_HOST$/, /_SERVICE_PORT(_[A-Z0-9_]+)?$/, /_PORT$/, /_PORT_\d+_(TCP|UDP|SCTP)(_[A-Z0-9_]+)?$/];

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** A `CM_*` variable that is set but not read by the server. */
export interface UnknownVariable {
  name: string;
  /** The known variable it is probably a misspelling of (edit distance at most 2), when there is one. */
  didYouMean?: string;
}

/**
 * The `CM_*` names set in `env` that the server does not read (typos, variables of removed features, the CLI's
 * `CM_TOKEN`), sorted, each with the closest known name when one is within edit distance 2 (case-insensitive).
 * Kubernetes service-link variables (`*_SERVICE_HOST`, `*_SERVICE_PORT*`, `*_PORT`, `*_PORT_<n>_<proto>*`) are
 * left out. Only names are returned, never values (they may be secrets). Never throws.
 */
export function unknownVariables(env: Env = process.env): UnknownVariable[] {
  const out: UnknownVariable[] = [];
  for (const name of Object.keys(env).sort()) {
    const upper = name.toUpperCase();
    if (!upper.startsWith("CM_") || KNOWN_VARIABLES.has(name) || SERVICE_LINK.some((re) => re.test(upper))) continue;
    let best: string | undefined;
    let bestDistance = 3;
    for (const known of CONFIG_VARIABLES) {
      const dist = editDistance(upper, known);
      if (dist < bestDistance) [best, bestDistance] = [known, dist];
    }
    out.push(best ? { name, didYouMean: best } : { name });
  }
  return out;
}

function str(env: Env, name: string, fallback: string): string {
  const v = env[name];
  return v === undefined || v === "" ? fallback : v;
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** Reads NAME, or the contents of the file named by NAME_FILE (trailing newline trimmed). */
function secret(env: Env, name: string): string | undefined {
  const file = env[`${name}_FILE`];
  if (file !== undefined && file !== "") {
    if (env[name] !== undefined && env[name] !== "") throw new ConfigError(name, `and ${name}_FILE are both set; set one`);
    try {
      return readFileSync(file, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw new ConfigError(`${name}_FILE`, `names a file that cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  const v = env[name];
  return v === undefined || v === "" ? undefined : v;
}

/** True for `true`, false for `false` or unset. @throws ConfigError otherwise. */
function bool(env: Env, name: string): boolean {
  return boolDefault(env, name, false);
}

/** True for `true`, false for `false`, `fallback` when unset. @throws ConfigError otherwise. */
function boolDefault(env: Env, name: string, fallback: boolean): boolean {
  const v = str(env, name, String(fallback));
  if (v !== "true" && v !== "false") throw new ConfigError(name, `must be true or false, got ${JSON.stringify(v)}`);
  return v === "true";
}

/**
 * Whether `host` (of a `host:port` listen address) only accepts connections from this machine: `localhost`,
 * `127.0.0.0/8` or `::1`. Anything else (`0.0.0.0`, `::`, a LAN address, a host name) is reachable from others.
 */
function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A `host:port` setting (IPv6 hosts in brackets, port 0-65535), or `fallback` when unset. @throws ConfigError. */
function hostPort(env: Env, name: string, fallback: string): string {
  const value = str(env, name, fallback);
  if (value === "" && fallback === "") return value;
  if (!/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(value) || Number(value.split(":").pop()) > 65535) {
    throw new ConfigError(name, `must be host:port (for example 127.0.0.1:50051), got ${JSON.stringify(value)}`);
  }
  return value;
}

/** TLS settings: both of CM_TLS_CERT_FILE and CM_TLS_KEY_FILE, or neither; the client CA only with them. */
function tlsConfig(env: Env): Config["tls"] {
  const certFile = str(env, "CM_TLS_CERT_FILE", "");
  const keyFile = str(env, "CM_TLS_KEY_FILE", "");
  const clientCaFile = str(env, "CM_TLS_CLIENT_CA_FILE", "");
  // A client-auth mode without client CAs would silently accept every client: refuse it.
  if (str(env, "CM_TLS_CLIENT_AUTH", "") !== "" && clientCaFile === "") {
    throw new ConfigError("CM_TLS_CLIENT_AUTH", "needs CM_TLS_CLIENT_CA_FILE: the CAs whose client certificates are accepted");
  }
  if (certFile === "" && keyFile === "") {
    if (clientCaFile !== "") throw new ConfigError("CM_TLS_CLIENT_CA_FILE", "needs CM_TLS_CERT_FILE and CM_TLS_KEY_FILE: mutual TLS is TLS first");
    return undefined;
  }
  if (certFile === "") throw new ConfigError("CM_TLS_CERT_FILE", "is required with CM_TLS_KEY_FILE: the server certificate (PEM, leaf first)");
  if (keyFile === "") throw new ConfigError("CM_TLS_KEY_FILE", "is required with CM_TLS_CERT_FILE: the server's private key (PEM)");
  const clientAuth = str(env, "CM_TLS_CLIENT_AUTH", "require");
  if (clientAuth !== "require" && clientAuth !== "request") {
    throw new ConfigError("CM_TLS_CLIENT_AUTH", `must be require or request, got ${JSON.stringify(clientAuth)}`);
  }
  return {
    certFile: path.resolve(certFile),
    keyFile: path.resolve(keyFile),
    ...(clientCaFile !== "" ? { clientCaFile: path.resolve(clientCaFile) } : {}),
    clientAuth,
    reloadIntervalMs: int(env, "CM_TLS_RELOAD_INTERVAL_SECONDS", 30, 1, 86_400) * 1000,
  };
}

/** PKCS#11 settings: all of CM_PKCS11_MODULE, CM_PKCS11_TOKEN_LABEL and CM_PKCS11_PIN(_FILE), or none. */
function pkcs11Config(env: Env): Config["pkcs11"] {
  const modulePath = env.CM_PKCS11_MODULE;
  if (modulePath === undefined || modulePath === "") {
    if (env.CM_PKCS11_TOKEN_LABEL || env.CM_PKCS11_PIN || env.CM_PKCS11_PIN_FILE) {
      throw new ConfigError("CM_PKCS11_MODULE", "is required when CM_PKCS11_TOKEN_LABEL or CM_PKCS11_PIN is set");
    }
    return undefined;
  }
  const tokenLabel = env.CM_PKCS11_TOKEN_LABEL;
  if (!tokenLabel) throw new ConfigError("CM_PKCS11_TOKEN_LABEL", "is required with CM_PKCS11_MODULE: the label of the token holding the root keys");
  const pin = secret(env, "CM_PKCS11_PIN");
  if (pin === undefined) throw new ConfigError("CM_PKCS11_PIN", "(or CM_PKCS11_PIN_FILE) is required with CM_PKCS11_MODULE: the token user's PIN");
  return {
    modulePath,
    tokenLabel,
    pin,
    sessionPoolSize: int(env, "CM_PKCS11_SESSIONS", 4, 1, 64),
    callTimeoutMs: int(env, "CM_PKCS11_CALL_TIMEOUT_SECONDS", 5, 1, 120) * 1000,
  };
}

/** The algorithms a JWT may be signed with: asymmetric only, so no holder of the public keys can sign one. */
const JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/** A claim name: printable ASCII without spaces (namespaced claims such as `https://example.com/groups` included). */
function claimName(env: Env, name: string, fallback: string): string {
  const v = str(env, name, fallback);
  if (!/^[\x21-\x7e]{1,256}$/.test(v)) throw new ConfigError(name, `must be a claim name (printable ASCII, no spaces), got ${JSON.stringify(v.slice(0, 100))}`);
  return v;
}

/**
 * JWT settings: enabled by CM_JWT_ISSUER, which then needs CM_JWT_AUDIENCE and exactly one of CM_JWT_JWKS_FILE
 * and CM_JWT_JWKS_URL; any other CM_JWT_* without the issuer is a mistake, refused.
 */
function jwtConfig(env: Env): Config["jwt"] {
  const issuer = str(env, "CM_JWT_ISSUER", "");
  if (issuer === "") {
    // Read past the guard: these names come from the environment itself and may be misspelt (CM_JWT_ISUER).
    const stray = Object.keys(env).filter((k) => k.startsWith("CM_JWT_") && ![undefined, ""].includes(Object.getOwnPropertyDescriptor(env, k)?.value as string | undefined)).sort();
    if (stray.length > 0) throw new ConfigError("CM_JWT_ISSUER", `is required when ${stray.join(", ")} ${stray.length > 1 ? "are" : "is"} set: JWTs are accepted from one issuer`);
    return undefined;
  }
  const audience = str(env, "CM_JWT_AUDIENCE", "");
  if (audience === "") throw new ConfigError("CM_JWT_AUDIENCE", "is required with CM_JWT_ISSUER: the `aud` tokens for this service carry");
  const file = str(env, "CM_JWT_JWKS_FILE", "");
  const url = str(env, "CM_JWT_JWKS_URL", "");
  if (file !== "" && url !== "") throw new ConfigError("CM_JWT_JWKS_FILE", "and CM_JWT_JWKS_URL are both set; set one");
  if (file === "" && url === "") throw new ConfigError("CM_JWT_JWKS_URL", "(or CM_JWT_JWKS_FILE) is required with CM_JWT_ISSUER: where the issuer's public keys are");
  if (url !== "") {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new ConfigError("CM_JWT_JWKS_URL", "is not a valid URL");
    }
    // Keys fetched in the clear could be swapped by anyone on the path, who could then sign any token.
    if (u.protocol === "http:" && !isLoopbackHost(u.hostname)) {
      throw new ConfigError("CM_JWT_JWKS_URL", `must be https:// (http:// only on 127.0.0.1, ::1 or localhost), got http://${u.host}`);
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new ConfigError("CM_JWT_JWKS_URL", `must be https://, got ${u.protocol}`);
  }
  if (file !== "" && str(env, "CM_JWT_JWKS_CACHE_SECONDS", "") !== "") {
    throw new ConfigError("CM_JWT_JWKS_CACHE_SECONDS", "applies to CM_JWT_JWKS_URL only; a JWKS file is re-read on SIGHUP");
  }
  const algorithms = [
    ...new Set(
      str(env, "CM_JWT_ALGORITHMS", "RS256,PS256,ES256,EdDSA")
        .split(",")
        .map((a) => a.trim())
        .filter((a) => a !== ""),
    ),
  ];
  for (const alg of algorithms) {
    if (!JWT_ALGORITHMS.includes(alg)) {
      throw new ConfigError("CM_JWT_ALGORITHMS", `names ${JSON.stringify(alg)}, which is not accepted: use ${JWT_ALGORITHMS.join(", ")} (asymmetric only; never HS* or none)`);
    }
  }
  if (algorithms.length === 0) throw new ConfigError("CM_JWT_ALGORITHMS", `must name at least one of ${JWT_ALGORITHMS.join(", ")}`);
  return {
    issuer,
    audience,
    ...(file !== "" ? { jwksFile: path.resolve(file) } : { jwksUrl: url }),
    algorithms,
    principalClaim: claimName(env, "CM_JWT_PRINCIPAL_CLAIM", "sub"),
    groupsClaim: claimName(env, "CM_JWT_GROUPS_CLAIM", "groups"),
    clockSkewSeconds: int(env, "CM_JWT_CLOCK_SKEW_SECONDS", 30, 0, 300),
    jwksCacheSeconds: int(env, "CM_JWT_JWKS_CACHE_SECONDS", 300, 10, 86_400),
  };
}

/**
 * Builds the configuration from `env` (unknown `CM_*` names are ignored here; see `unknownVariables`).
 * @throws ConfigError naming the first invalid variable.
 */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  env = guarded(env);
  const dataDir = path.resolve(str(env, "CM_DATA_DIR", "./data"));

  const listenAddress = hostPort(env, "CM_LISTEN_ADDRESS", "127.0.0.1:50051");
  const healthListenAddress = hostPort(env, "CM_HEALTH_LISTEN_ADDRESS", "") || undefined;
  if (healthListenAddress !== undefined && !boolDefault(env, "CM_OPEN_HEALTH", true)) {
    throw new ConfigError("CM_HEALTH_LISTEN_ADDRESS", "serves health to anyone who reaches it, and CM_OPEN_HEALTH=false asks for credentials on health: unset one of them");
  }
  if (healthListenAddress !== undefined && healthListenAddress === listenAddress && !listenAddress.endsWith(":0")) {
    throw new ConfigError("CM_HEALTH_LISTEN_ADDRESS", `is ${listenAddress}, the address of the service itself: give the health listener a port of its own`);
  }

  const tls = tlsConfig(env);
  const jwt = jwtConfig(env);
  const insecureNonLoopback = bool(env, "CM_ALLOW_INSECURE_NON_LOOPBACK");
  const localKeystorePath = path.resolve(str(env, "CM_LOCAL_KEYSTORE", path.join(dataDir, "root-keys.json")));
  const host = listenAddress.slice(0, listenAddress.lastIndexOf(":"));
  if (!tls && !isLoopbackHost(host) && !insecureNonLoopback) {
    throw new ConfigError(
      "CM_LISTEN_ADDRESS",
      `is ${JSON.stringify(listenAddress)}, reachable from other machines, and TLS is off: set CM_TLS_CERT_FILE and CM_TLS_KEY_FILE, listen on 127.0.0.1, or set CM_ALLOW_INSECURE_NON_LOOPBACK=true if something else encrypts the traffic`,
    );
  }

  const url = secret(env, "CM_DATABASE_URL");
  let database: DatabaseConfig;
  if (url === undefined) {
    database = { client: "sqlite", filename: path.join(dataDir, "certmanager.sqlite") };
  } else if (url.startsWith("sqlite:")) {
    const file = url.slice("sqlite:".length).replace(/^\/\//, "");
    if (file === "") throw new ConfigError("CM_DATABASE_URL", "sqlite: URL needs a file path, e.g. sqlite:///var/lib/cm/db.sqlite");
    database = { client: "sqlite", filename: path.resolve(file) };
  } else if (/^mysql:\/\//.test(url)) {
    try {
      new URL(url);
    } catch {
      throw new ConfigError("CM_DATABASE_URL", "is not a valid mysql:// URL");
    }
    database = { client: "mysql", url, poolMax: int(env, "CM_DATABASE_POOL_MAX", 10, 1, 1000) };
  } else {
    // Never echo the URL: it may hold a password.
    throw new ConfigError("CM_DATABASE_URL", "must start with mysql:// or sqlite:");
  }
  database = {
    ...database,
    timeouts: {
      connectMs: int(env, "CM_DATABASE_CONNECT_TIMEOUT_SECONDS", 5, 1, 600) * 1000,
      acquireMs: int(env, "CM_DATABASE_ACQUIRE_TIMEOUT_SECONDS", 10, 1, 600) * 1000,
      operationMs: int(env, "CM_DATABASE_OPERATION_TIMEOUT_SECONDS", 30, 1, 3600) * 1000,
    },
  };

  const logLevel = str(env, "CM_LOG_LEVEL", "info") as Config["logLevel"];
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(logLevel)) {
    throw new ConfigError("CM_LOG_LEVEL", `must be one of fatal, error, warn, info, debug, trace, silent`);
  }
  const defaultRootKeyId = str(env, "CM_DEFAULT_ROOT_KEY_ID", "default");
  if (!isRootKeyId(defaultRootKeyId)) {
    throw new ConfigError("CM_DEFAULT_ROOT_KEY_ID", `must match ${ROOT_KEY_ID}`);
  }
  if (isInstanceKeyId(defaultRootKeyId)) throw new ConfigError("CM_DEFAULT_ROOT_KEY_ID", "must not have the form i-<uuid>, reserved for instance keys");

  const rootCertificate = str(env, "CM_ROOT_CERTIFICATE", "keep");
  if (rootCertificate !== "keep" && rootCertificate !== "drop") {
    throw new ConfigError("CM_ROOT_CERTIFICATE", `must be keep or drop, got ${JSON.stringify(rootCertificate)}`);
  }

  const adminMembers = str(env, "CM_ADMIN_MEMBERS", "")
    .split(",")
    .map((m) => m.trim())
    .filter((m) => m !== "");
  for (const m of adminMembers) {
    if (!isMember(m)) throw new ConfigError("CM_ADMIN_MEMBERS", `holds ${JSON.stringify(m.slice(0, 100))}, which is not a member (user:, group:, apiKey:, spiffe:spiffe://..., dns:)`);
  }
  const bootstrapKey = boolDefault(env, "CM_BOOTSTRAP_ADMIN_KEY", true);
  if (!bootstrapKey && adminMembers.length === 0) {
    throw new ConfigError("CM_BOOTSTRAP_ADMIN_KEY", "is false and CM_ADMIN_MEMBERS is empty: nobody could administer a new service; name its administrators in CM_ADMIN_MEMBERS");
  }
  const ratePerSecond = int(env, "CM_RATE_LIMIT_PER_SECOND", 1000, 0, 1_000_000);
  const auth: Config["auth"] = {
    apiKeyPepperPath: path.resolve(str(env, "CM_API_KEY_PEPPER_FILE", path.join(dataDir, "api-key-pepper.key"))),
    ...(bootstrapKey ? { bootstrapKeyPath: path.resolve(str(env, "CM_BOOTSTRAP_ADMIN_KEY_FILE", path.join(dataDir, "bootstrap-admin.key"))) } : {}),
    adminMembers,
    cacheTtlMs: int(env, "CM_AUTH_CACHE_SECONDS", 5, 0, 300) * 1000,
    ratePerSecond,
    rateBurst: int(env, "CM_RATE_LIMIT_BURST", Math.max(1, ratePerSecond * 2), 1, 10_000_000),
    openHealth: boolDefault(env, "CM_OPEN_HEALTH", true),
    openReflection: boolDefault(env, "CM_OPEN_REFLECTION", true),
  };

  return Object.freeze({
    listenAddress,
    ...(healthListenAddress ? { healthListenAddress } : {}),
    auth,
    auditCheckpointIntervalMs: int(env, "CM_AUDIT_CHECKPOINT_SECONDS", 300, 1, 86_400) * 1000,
    processStatsIntervalMs: int(env, "CM_PROCESS_STATS_INTERVAL_SECONDS", 0, 0, 86_400) * 1000,
    ...(tls ? { tls } : {}),
    insecureNonLoopback: insecureNonLoopback && !tls && !isLoopbackHost(host),
    rootCertificate,
    dataDir,
    database,
    localKeystorePath,
    keystoreBesideData: !isLoopbackHost(host) && !path.relative(dataDir, localKeystorePath).startsWith(".."),
    defaultRootKeyId,
    pageTokenKeyPath: path.resolve(str(env, "CM_PAGE_TOKEN_KEY_FILE", path.join(dataDir, "page-token.key"))),
    dekCacheMax: int(env, "CM_DEK_CACHE_MAX", 1000, 1, 1_000_000),
    dekCacheTtlMs: int(env, "CM_DEK_CACHE_TTL_SECONDS", 300, 1, 86_400) * 1000,
    maxReceiveMessageBytes: int(env, "CM_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024 * 1024, 64 * 1024 * 1024),
    shutdownGraceMs: int(env, "CM_SHUTDOWN_GRACE_SECONDS", 10, 0, 600) * 1000,
    reclamationRetentionMs: int(env, "CM_RECLAMATION_RETENTION_SECONDS", 7 * 86_400, 1, 366 * 86_400) * 1000,
    purgeIntervalMs: int(env, "CM_PURGE_INTERVAL_SECONDS", 60, 1, 86_400) * 1000,
    purgeBatchSize: int(env, "CM_PURGE_BATCH_SIZE", 500, 1, 500),
    purgeLeaseMs: int(env, "CM_PURGE_LEASE_SECONDS", 60, 1, 3600) * 1000,
    // Default: half of 2^32, well before the point where random 96-bit IVs stop being safe.
    // At most 90 % of 2^32: the limit itself must never be reached.
    dekMaxEncryptions: int(env, "CM_DEK_MAX_ENCRYPTIONS", 2 ** 31, 3, Math.floor(0.9 * 2 ** 32)),
    reencryptBatchSize: int(env, "CM_REENCRYPT_BATCH_SIZE", 200, 1, 500),
    exportBatchSize: int(env, "CM_EXPORT_BATCH_SIZE", 250, 1, 1000),
    exportMemoryBudgetBytes: int(env, "CM_EXPORT_MEMORY_BUDGET_MB", 64, 1, 65_536) * 1024 * 1024,
    exportStreamsPerCaller: int(env, "CM_EXPORT_STREAMS_PER_CALLER", 8, 1, 10_000),
    exportStreamsPerConnection: int(env, "CM_EXPORT_STREAMS_PER_CONNECTION", 16, 1, 10_000),
    pkcs11: pkcs11Config(env),
    ...(jwt ? { jwt } : {}),
    logLevel,
  });
}
