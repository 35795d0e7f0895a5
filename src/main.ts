/**
 * Composition root: config -> storage -> root keys -> services -> gRPC; signals. `startService` is also what
 * the integration tests start, on an ephemeral port, so they exercise exactly what production runs.
 */
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import pino, { type Logger } from "pino";
import { type Config, ConfigError, loadConfig, unknownVariables } from "./config/index.js";
import { DekCache } from "./crypto/dekcache.js";
import { LocalRootKeyBackend } from "./crypto/rootkeys/local.js";
import { Pkcs11RootKeyBackend } from "./crypto/rootkeys/pkcs11.js";
import type { Clock } from "./domain/ports.js";
import type { RootKeyBackend } from "./domain/rootkey.js";
import { bind, buildHealthServer, buildServer, drain, routeGrpcLogs } from "./grpc/server.js";
import { ReloadingCertificateProvider, TlsFileError } from "./grpc/tls.js";
import { CertificateService } from "./services/certificates.js";
import { InstanceService } from "./services/instances.js";
import { CertificateEnvelope } from "./crypto/envelope.js";
import { checkRootKeysInUse, Keyring } from "./crypto/keyring.js";
import { ReclamationService } from "./services/reclamations.js";
import { ExportService } from "./services/export.js";
import { ExportBudget } from "./services/export-budget.js";
import { startPeriodicJob } from "./jobs/periodic.js";
import { startProcessStats } from "./jobs/process-stats.js";
import { InstanceKeyMigration } from "./services/instance-keys.js";
import { DekRotation } from "./services/dek-rotation.js";
import { PageTokenCodec } from "./domain/page-token.js";
import { createKnex, DatabaseInUseError, databaseStartProblem, KnexUnitOfWork, lockDatabase, migrateLatest } from "./storage/index.js";
import { ApiKeyService, ApiKeyVerifier } from "./auth/api-keys.js";
import { Authenticator } from "./auth/authenticate.js";
import { Authorizer } from "./auth/authorize.js";
import { bootstrapAdministrators } from "./auth/bootstrap.js";
import { JwtVerifier } from "./auth/jwt.js";
import { PolicyService } from "./auth/policies.js";
import { RateLimiter } from "./auth/rate-limit.js";
import { Gate } from "./grpc/gate.js";
import { AuditService } from "./services/audit.js";

/** A running service. */
export interface RunningService {
  /** The bound port. */
  port: number;
  /** The health listener's bound port (CM_HEALTH_LISTEN_ADDRESS), when there is one. */
  healthPort?: number;
  /** Runs one purge tick now (tests; production relies on the interval). */
  purgeNow(): Promise<void>;
  /** Runs one tick of the job that finishes data key rotations (tests). */
  finishRotationsNow(): Promise<void>;
  /** Runs one tick of the instance-key migration now (tests). */
  migrateInstanceKeysNow(): Promise<void>;
  /** Unwraps sent to root-key backends since start (benchmarks). */
  unwrapCount(): number;
  /** Re-reads the TLS files now (SIGHUP does it); resolves whether a new certificate was published. */
  reloadTls(reason?: string): Promise<boolean>;
  /** Re-reads the JWKS file now (SIGHUP does it); resolves whether the keys changed. */
  reloadJwks(): Promise<boolean>;
  /** Logs the audit chains' checkpoints now (tests; production does it every CM_AUDIT_CHECKPOINT_SECONDS). */
  auditCheckpointNow(): Promise<void>;
  /** Writes the batched API key last-use times now (tests; production flushes every minute). */
  flushApiKeyUses(): Promise<void>;
  /** Drains in-flight calls (up to the configured grace), then closes the pool and the backends. */
  stop(): Promise<void>;
}

const systemClock: Clock = { now: () => new Date() };

/**
 * Reads a 32-byte key file, creating it with mode 0600 from the CSPRNG when missing. Refuses a file that
 * group or others can read, as OpenSSH does for private keys.
 */
function loadOrCreateKeyFile(file: string, variable: string): Buffer {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    const fd = openSync(file, "wx", 0o600);
    try {
      writeSync(fd, randomBytes(32).toString("base64url"));
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const fd = openSync(file, "r");
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) {
      throw new ConfigError(variable, `names ${file}, which group or others can read; run chmod 600 on it`);
    }
    const key = Buffer.from(readFileSync(fd, "utf8").trim(), "base64url");
    if (key.length < 32) throw new ConfigError(variable, `names ${file}, which does not hold a base64url key of at least 32 bytes`);
    return key;
  } finally {
    closeSync(fd);
  }
}

/**
 * One server per SQLite database: takes the data folder's lock (storage/database-lock.ts).
 * @throws ConfigError naming the folder (CM_DATA_DIR, or CM_DATABASE_URL for a SQLite file elsewhere) when another
 *         running server holds it.
 */
function lockDataFolder(config: Config): ReturnType<typeof lockDatabase> {
  try {
    return lockDatabase(config.database);
  } catch (err) {
    if (!(err instanceof DatabaseInUseError)) throw err;
    const folder = path.dirname(err.filename);
    const variable = folder === config.dataDir ? "CM_DATA_DIR" : "CM_DATABASE_URL";
    throw new ConfigError(
      variable,
      `names the data folder ${folder}, which another running Certificate Manager server uses (its SQLite database ${err.filename} is locked through ${err.lockFile}): give each server its own data folder, or stop the other server first`,
    );
  }
}

/**
 * Opens the local backend and checks that every root key the database's DEKs are wrapped under is here. A new
 * keystore (with the provider root key `CM_DEFAULT_ROOT_KEY_ID`) is made only for a database without DEKs: a
 * server with an empty data folder against a database others already use must get their keystore, not its own.
 * @throws ConfigError (CM_LOCAL_KEYSTORE, or CM_PKCS11_MODULE for an unconfigured HSM) naming the root keys that
 *         are missing and what to do; the keystore's or the HSM's own start error.
 */
async function openRootKeyBackends(
  config: Config,
  uow: KnexUnitOfWork,
  log: Logger,
  closers: (() => Promise<void>)[],
): Promise<{ local: LocalRootKeyBackend; backends: Map<string, RootKeyBackend> }> {
  const inUse = await uow.repos.deks.rootKeysInUse();
  const refs = (keys: readonly { backend: string; keyId: string }[]) => keys.map((k) => `${k.backend}/${k.keyId}`).join(", ");
  const share = "replicas of one database must share the local keystore (the same CM_LOCAL_KEYSTORE file) and HSM token";
  if (inUse.length > 0 && !existsSync(config.localKeystorePath)) {
    throw new ConfigError(
      "CM_LOCAL_KEYSTORE",
      `names ${config.localKeystorePath}, which does not exist, and the database already holds data keys wrapped by root keys ${refs(inUse)}: a new keystore is made only for an empty database. Point CM_LOCAL_KEYSTORE at the keystore the database was used with (${share}), or restore it from a backup`,
    );
  }
  const local = await LocalRootKeyBackend.open(config.localKeystorePath, { createIfMissing: inUse.length === 0, defaultKeyId: config.defaultRootKeyId });
  closers.push(() => local.close());
  const backends = new Map<string, RootKeyBackend>([[local.name, local]]);
  if (config.pkcs11) {
    const hsm = await Pkcs11RootKeyBackend.open({ ...config.pkcs11, logger: log.child({ component: "pkcs11" }) });
    closers.push(() => hsm.close());
    backends.set(hsm.name, hsm);
  }
  const { missing, unconfirmed } = await checkRootKeysInUse(backends, inUse, new Set([local.name]));
  if (missing.length > 0) {
    const list = missing
      .map((m) => (m.problem === "BACKEND_NOT_CONFIGURED" ? `${m.ref} (backend ${m.backend} is not configured${m.backend === "pkcs11" ? ": set CM_PKCS11_MODULE" : ""})` : `${m.ref} (not in ${m.backend === local.name ? `keystore ${local.path}` : `backend ${m.backend}`})`))
      .join(", ");
    const advice = `Without them those instances cannot be read, so the server does not start: ${share}; point CM_LOCAL_KEYSTORE at the keystore the database was used with, or configure the missing backend`;
    if (missing.every((m) => m.problem === "BACKEND_NOT_CONFIGURED" && m.backend === "pkcs11")) {
      throw new ConfigError("CM_PKCS11_MODULE", `is not set, and the database holds data keys wrapped by root keys of the HSM: ${list}. ${advice}`);
    }
    throw new ConfigError("CM_LOCAL_KEYSTORE", `names ${local.path}, and the database holds data keys wrapped by root keys this server does not have: ${list}. ${advice}`);
  }
  if (unconfirmed.length > 0) {
    // PKCS#11 deletes destroyed keys, so a key it does not know may have been crypto-shredded on purpose.
    log.warn({ rootKeys: unconfirmed.map((u) => ({ rootKey: u.ref, problem: u.problem, ...(u.detail ? { detail: u.detail } : {}) })) }, "root keys in use by the database could not be found or checked; instances under them answer ROOT_KEY_UNAVAILABLE until they are back (or were destroyed on purpose)");
  }
  return { local, backends };
}

/**
 * Starts the whole service from `config`: takes the SQLite data folder's lock, runs migrations, opens the root-key
 * backends (checking the database's root keys are all here), binds the server.
 * @throws ConfigError (another server on the data folder, root keys missing, unreadable key files), or the
 *         database/backend error that prevented the start.
 */
export async function startService(config: Config, opts: { log?: Logger; clock?: Clock } = {}): Promise<RunningService> {
  const log = opts.log ?? pino({ level: config.logLevel, base: { service: "certmanager" } });
  const clock = opts.clock ?? systemClock;

  const lock = lockDataFolder(config);
  const closers: (() => Promise<void>)[] = [async () => lock?.release()];
  try {
    // TLS files first: a server that cannot serve them must refuse before it changes the database.
    let tls: ReloadingCertificateProvider | undefined;
    if (config.tls) {
      tls = await ReloadingCertificateProvider.open(config.tls, log.child({ component: "tls" }), () => clock.now());
      closers.push(async () => tls!.close());
    }
    const knex = createKnex(config.database, log);
    closers.push(() => knex.destroy());
    const applied = await migrateLatest(knex);
    if (applied.length > 0) log.info({ migrations: applied }, "database migrated");
    const uow = new KnexUnitOfWork(knex, config.database.timeouts?.operationMs);

    const { local, backends } = await openRootKeyBackends(config, uow, log, closers);

    // An injected clock (tests) also ages cached DEKs; otherwise lru-cache's monotonic performance.now, which
    // a wall-clock step back cannot stretch.
    const cache = new DekCache({ max: config.dekCacheMax, ttlMs: config.dekCacheTtlMs, now: opts.clock && (() => clock.now().getTime()) });
    const keyring = new Keyring(backends, cache, clock);
    closers.push(async () => keyring.clear());
    const pageTokens = new PageTokenCodec(loadOrCreateKeyFile(config.pageTokenKeyPath, "CM_PAGE_TOKEN_KEY_FILE"));

    const envelope = new CertificateEnvelope(keyring, config.dekMaxEncryptions);
    const rotation = new DekRotation(uow, keyring, envelope, log.child({ component: "dek-rotation" }), { batchSize: config.reencryptBatchSize });
    const instances = new InstanceService(
      uow,
      keyring,
      clock,
      pageTokens,
      { backend: local.name, keyId: config.defaultRootKeyId },
      config.reclamationRetentionMs,
      rotation,
      log.child({ component: "instances" }),
    );
    const certificates = new CertificateService(uow, envelope, clock, pageTokens, rotation, config.rootCertificate);
    const reclamations = new ReclamationService(uow, keyring, clock, pageTokens, log.child({ component: "reclamations" }), {
      batchSize: config.purgeBatchSize,
      leaseMs: config.purgeLeaseMs,
    });
    const instanceKeys = new InstanceKeyMigration(uow, keyring, clock, log.child({ component: "instance-keys" }));
    const exporter = new ExportService(
      uow,
      envelope,
      pageTokens,
      config.exportBatchSize,
      new ExportBudget(config.exportMemoryBudgetBytes, config.exportStreamsPerCaller, config.exportStreamsPerConnection),
    );

    // Who is calling and what they may do (src/auth), and the audit trail of it.
    const now = () => clock.now();
    const apiKeys = new ApiKeyService(uow, clock, loadOrCreateKeyFile(config.auth.apiKeyPepperPath, "CM_API_KEY_PEPPER_FILE"), pageTokens, config.auth.cacheTtlMs);
    await bootstrapAdministrators(uow, apiKeys, clock, log.child({ component: "bootstrap" }), { keyPath: config.auth.bootstrapKeyPath, adminMembers: config.auth.adminMembers });
    const apiKeyVerifier = new ApiKeyVerifier(apiKeys.pepper, apiKeys.lookup, now);
    let jwt: JwtVerifier | undefined;
    if (config.jwt) {
      jwt = await JwtVerifier.open(config.jwt, log.child({ component: "jwt" }));
      closers.push(async () => jwt!.close());
    }
    const authenticator = new Authenticator(apiKeyVerifier, jwt);
    const authorizer = new Authorizer(
      {
        policy: (resource) => uow.repos.policies.get(resource),
        reclamationInstance: async (id) => (await uow.repos.reclamations.get(id))?.instanceId,
      },
      config.auth.cacheTtlMs,
    );
    const policies = new PolicyService(uow, clock, (resource) => authorizer.invalidate(resource));
    const { ratePerSecond, rateBurst } = config.auth;
    const audit = new AuditService(uow, pageTokens);
    const gate = new Gate({
      authenticator,
      authorizer,
      audit,
      callLimiter: ratePerSecond > 0 ? new RateLimiter({ ratePerSecond, burst: rateBurst, maxKeys: 100_000 }) : undefined,
      callLimit: `${ratePerSecond} calls/s per caller (burst ${rateBurst})`,
      unauthenticatedAuditLimiter: new RateLimiter({ ratePerSecond: 1, burst: 10, maxKeys: 10_000 }),
      now,
      log: log.child({ component: "gate" }),
    });
    const flushUses = async () => apiKeys.flushUses(apiKeyVerifier.takeUses());
    const grpcServer = buildServer(
      log,
      { instances, certificates, reclamations, exporter, policies, apiKeys, audit },
      { gate, authenticator, authorizer, now, open: { health: config.auth.openHealth, reflection: config.auth.openReflection } },
      { maxReceiveMessageBytes: config.maxReceiveMessageBytes },
    );
    if (!tls && config.insecureNonLoopback) {
      // Said at every start, as long as the setting stays: anyone on the network can read this traffic.
      log.warn({ address: config.listenAddress }, "serving plaintext gRPC on a non-loopback address (CM_ALLOW_INSECURE_NON_LOOPBACK=true): callers' traffic, private keys included, is readable on the network unless something else encrypts it");
    }
    if (config.keystoreBesideData) {
      log.warn(
        { keystore: config.localKeystorePath, data_dir: config.dataDir },
        "the local keystore is inside the data folder: a backup of the folder holds the keys that open the database, deleted instances included; set CM_LOCAL_KEYSTORE to a path outside it (README: Deleting and restoring an instance)",
      );
    }
    const port = await bind(grpcServer.server, config.listenAddress, tls?.credentials());
    let healthPort: number | undefined;
    if (config.healthListenAddress) {
      const healthServer = buildHealthServer(grpcServer.health);
      closers.push(async () => healthServer.forceShutdown());
      healthPort = await bind(healthServer, config.healthListenAddress).catch((err: unknown) => {
        throw bindProblem(err, "CM_HEALTH_LISTEN_ADDRESS", config.healthListenAddress!) ?? err;
      });
    }

    // Health reflects the database and every root-key backend, checked now and every 5 s.
    const checkHealth = async () => {
      try {
        await uow.ping();
        for (const b of backends.values()) await b.check();
        grpcServer.setServing(true);
      } catch (err) {
        log.warn({ err: (err as Error).message, cause: ((err as Error).cause as Error | undefined)?.message }, "health check failed");
        grpcServer.setServing(false);
      }
    };
    await checkHealth();
    const healthTimer = setInterval(() => void checkHealth(), 5000);
    healthTimer.unref();
    const purge = startPeriodicJob("purge", async () => (await reclamations.purgeDue()).length, config.purgeIntervalMs, log);
    const rekey = startPeriodicJob("finish-dek-rotations", () => rotation.resumeAll(), config.purgeIntervalMs, log);
    // DEKs from before instance keys get their layer in the background (online; any replica may do it).
    const layer = startPeriodicJob("instance-keys", () => instanceKeys.tick(), config.purgeIntervalMs, log);
    void layer.runOnce();
    // Checkpoints of the audit chains, in the log (ship it off the machine): `npm run audit -- verify --checkpoint`
    // holds a chain against them, so a tail cut off together with its head row is found.
    const logged = new Map<string, number>();
    const checkpoints = startPeriodicJob(
      "audit-checkpoint",
      async () => {
        let n = 0;
        for (const { chain, head } of await audit.heads()) {
          if (logged.get(chain) === head.seq) continue;
          logged.set(chain, head.seq);
          log.info({ chain, seq: head.seq, hash: head.hash, checkpoint: `${chain}=${head.seq}:${head.hash}` }, "audit checkpoint");
          n++;
        }
        return n;
      },
      config.auditCheckpointIntervalMs,
      log,
    );
    closers.push(() => checkpoints.stop());
    // Memory, handles and event-loop delay in the log, when asked for (CM_PROCESS_STATS_INTERVAL_SECONDS).
    if (config.processStatsIntervalMs > 0) {
      const stats = startProcessStats(config.processStatsIntervalMs, log.child({ component: "process-stats" }));
      closers.push(async () => stats.stop());
    }
    // Last-use times of API keys: one write per key per minute at most, never one per call.
    const uses = startPeriodicJob("api-key-last-use", async () => (await flushUses(), 0), 60_000, log);
    // Closers run in reverse: the jobs stop (and the last uses are written) before keys and pool close.
    closers.push(() => purge.stop(), () => rekey.stop(), async () => {
      await layer.stop();
      await instanceKeys.close().catch((err: unknown) => log.warn({ err: (err as Error).message }, "could not give up the instance-key migration lease; it lapses by itself"));
    }, async () => {
      await uses.stop();
      await flushUses().catch((err: unknown) => log.warn({ err: (err as Error).message }, "could not record API key last use at stop"));
    });

    log.info({ address: config.listenAddress.replace(/:\d+$/, `:${port}`), ...(healthPort !== undefined ? { health_address: config.healthListenAddress!.replace(/:\d+$/, `:${healthPort}`) } : {}), database: config.database.client, tls: tls ? (config.tls!.clientCaFile ? "mutual" : "server") : "off" }, "certificate manager serving");
    let stopped: Promise<void> | undefined;
    return {
      port,
      healthPort,
      purgeNow: () => purge.runOnce(),
      finishRotationsNow: () => rekey.runOnce(),
      migrateInstanceKeysNow: () => layer.runOnce(),
      unwrapCount: () => keyring.unwrapCount,
      reloadTls: (reason = "requested") => tls?.reload(reason) ?? Promise.resolve(false),
      reloadJwks: () => jwt?.reload() ?? Promise.resolve(false),
      flushApiKeyUses: flushUses,
      auditCheckpointNow: () => checkpoints.runOnce(),
      stop() {
        stopped ??= (async () => {
          clearInterval(healthTimer);
          grpcServer.setServing(false);
          await drain(grpcServer.server, config.shutdownGraceMs);
          for (const close of closers.reverse()) await close();
          log.info("stopped");
        })();
        return stopped;
      },
    };
  } catch (err) {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    throw err;
  }
}

/** A bind failure of `address` (set by `variable`) the operator can fix, as a ConfigError; else undefined. */
function bindProblem(err: unknown, variable: string, address: string): ConfigError | undefined {
  const message = String((err as Error)?.message ?? err);
  if (message.includes("EADDRINUSE")) return new ConfigError(variable, `is ${address}, where another process already listens: stop it, or choose another address or port`);
  if (message.includes("EADDRNOTAVAIL")) return new ConfigError(variable, `is ${address}, an address this machine does not have: use one of its addresses, 127.0.0.1, or 0.0.0.0 for all`);
  if (message.includes("EACCES") && /bind|No address added/.test(message)) {
    return new ConfigError(variable, `is ${address}, which this user may not listen on (ports below 1024 need privileges): choose a port above 1023`);
  }
  return undefined;
}

/**
 * A start failure the operator can fix, as a ConfigError naming the variable and the fix (never a password):
 * TLS files that cannot serve, the listen address in use or not allowed, or the database (see storage's
 * `databaseStartProblem`).
 * @returns undefined for any other failure.
 */
export function explainStartFailure(err: unknown, config: Config): ConfigError | undefined {
  if (err instanceof ConfigError) return err;
  if (err instanceof TlsFileError) return new ConfigError(err.variable, `cannot serve TLS: ${err.message}`);
  const listen = bindProblem(err, "CM_LISTEN_ADDRESS", config.listenAddress);
  if (listen) return listen;
  const problem = databaseStartProblem(err, config.database);
  return problem ? new ConfigError(problem.variable, problem.problem) : undefined;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      // The level may be what is wrong, so the refusal is logged at the default level.
      pino({ base: { service: "certmanager" } }).fatal({ reason: err.message }, "refusing to start");
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = pino({ level: config.logLevel, base: { service: "certmanager" } });
  routeGrpcLogs(log);
  // Names only, never values (a value may be a secret set under a misspelt name).
  const unknown = unknownVariables();
  if (unknown.length > 0) {
    log.warn(
      { variables: unknown.map((u) => u.name), suggestions: Object.fromEntries(unknown.filter((u) => u.didYouMean).map((u) => [u.name, u.didYouMean])) },
      `environment variables the server does not read are ignored: ${unknown.map((u) => (u.didYouMean ? `${u.name} (did you mean ${u.didYouMean}?)` : u.name)).join(", ")}`,
    );
  }
  let service: RunningService | undefined;
  let pendingSignal: string | undefined;
  const shutdown = (signal: string) => {
    // A signal that arrives while the service is still starting stops it as soon as it is up.
    if (!service) {
      pendingSignal ??= signal;
      return;
    }
    log.info({ signal }, "shutting down: draining in-flight calls");
    service.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  // Installed before the start, so no signal finds the process without its handlers.
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
  // SIGHUP re-reads the TLS files (as nginx and Envoy do); open connections keep their certificate.
  process.on("SIGHUP", () => {
    void service?.reloadTls("SIGHUP");
    void service?.reloadJwks();
  });
  try {
    service = await startService(config, { log });
  } catch (err) {
    // A refusal with the fix in its message (another server on the data folder, root keys missing): exit 2, as
    // for an invalid environment.
    const fixable = explainStartFailure(err, config);
    if (fixable) {
      log.fatal({ reason: fixable.message }, "refusing to start");
      process.stderr.write(`${fixable.message}\n`);
      process.exit(2);
    }
    log.fatal({ err }, "could not start");
    process.exit(1);
  }
  if (pendingSignal) shutdown(pendingSignal);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  void main();
}
