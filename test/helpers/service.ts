/**
 * Starts the real service (src/main.ts startService) on an ephemeral loopback port against SQLite or
 * MariaDB, and makes generated grpc-js clients for it. Each started service gets its own data directory and,
 * on MariaDB, its own database, dropped at stop.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials, InterceptingCall, Metadata, type ChannelCredentials, type ChannelOptions, type Client, type Interceptor, type ServiceError } from "@grpc/grpc-js";
import knexFactory, { type Knex } from "knex";
import { createKnex } from "../../src/storage/index.js";
import pino from "pino";
import * as certificatePb from "../../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../../gen/ts/certmanager/v1/instance.js";
import * as reclamationPb from "../../gen/ts/certmanager/v1/reclamation.js";
import * as iamPb from "../../gen/ts/certmanager/v1/iam.js";
import * as apiKeyPb from "../../gen/ts/certmanager/v1/api_key.js";
import * as auditPb from "../../gen/ts/certmanager/v1/audit.js";
import { BadRequest, ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { loadConfig, type Config } from "../../src/config/index.js";
import type { Clock } from "../../src/domain/ports.js";
import { startService, type RunningService } from "../../src/main.js";
import { assertNoSecretsLogged, configSecrets } from "./log-scan.js";

/** Root URL of the test MariaDB server (no database part). */
export const MYSQL_URL = process.env.CM_TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306";

/** Whether MariaDB answers; when CM_TEST_REQUIRE_MYSQL=1 (set by .ci/run) an unreachable server is an error. */
export async function mysqlAvailable(): Promise<boolean> {
  const k = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/`, connectTimeout: 2000 } as never, pool: { min: 0, max: 1 } });
  try {
    await k.raw("select 1");
    return true;
  } catch (err) {
    if (process.env.CM_TEST_REQUIRE_MYSQL === "1") throw new Error(`MariaDB is required (CM_TEST_REQUIRE_MYSQL=1) but ${MYSQL_URL} does not answer: ${(err as Error).message}`);
    return false;
  } finally {
    await k.destroy();
  }
}

/** The databases to run integration suites on: SQLite always, MariaDB when it answers. */
export async function databases(): Promise<("sqlite" | "mysql")[]> {
  return (await mysqlAvailable()) ? ["sqlite", "mysql"] : ["sqlite"];
}

/** A movable clock for tests. */
export class TestClock implements Clock {
  constructor(private t = Date.now()) {}
  now(): Date {
    return new Date(this.t);
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A client interceptor that sends `authorization: Bearer <secret>` with every call. */
export function bearer(secret: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${secret}`);
        next(metadata, listener);
      },
    });
}

/** Clients of every service, authenticated as one caller. */
export interface Clients {
  instances: Rpc<typeof instancePb.InstanceServiceService>;
  certificates: Rpc<typeof certificatePb.CertificateServiceService>;
  reclamations: Rpc<typeof reclamationPb.ReclamationServiceService>;
  iam: Rpc<typeof iamPb.IamServiceService>;
  apiKeys: Rpc<typeof apiKeyPb.ApiKeyServiceService>;
  audit: Rpc<typeof auditPb.AuditServiceService>;
  /** The generated CertificateService client itself, for the streaming methods. */
  certificateClient: certificatePb.CertificateServiceClient;
  close(): void;
}

/**
 * Clients for `address` that authenticate with `secret` (an API key or a JWT), or send no credential when it is
 * undefined. `creds` defaults to plaintext; `opts.deadlineMs` bounds every unary call, `opts.channelOptions`
 * go to every client (e.g. `grpc.use_local_subchannel_pool` for a connection per client).
 */
export function clientsFor(
  address: string,
  secret: string | undefined,
  creds: ChannelCredentials = credentials.createInsecure(),
  opts: { deadlineMs?: number; channelOptions?: ChannelOptions } = {},
): Clients {
  const options = { ...opts.channelOptions, ...(secret === undefined ? {} : { interceptors: [bearer(secret)] }) };
  const rpc = { deadlineMs: opts.deadlineMs };
  const instanceClient = new instancePb.InstanceServiceClient(address, creds, options);
  const certificateClient = new certificatePb.CertificateServiceClient(address, creds, options);
  const reclamationClient = new reclamationPb.ReclamationServiceClient(address, creds, options);
  const iamClient = new iamPb.IamServiceClient(address, creds, options);
  const apiKeyClient = new apiKeyPb.ApiKeyServiceClient(address, creds, options);
  const auditClient = new auditPb.AuditServiceClient(address, creds, options);
  return {
    instances: promisify(instanceClient, instancePb.InstanceServiceService, instancePb, rpc),
    certificates: promisify(certificateClient, certificatePb.CertificateServiceService, certificatePb, rpc),
    reclamations: promisify(reclamationClient, reclamationPb.ReclamationServiceService, reclamationPb, rpc),
    iam: promisify(iamClient, iamPb.IamServiceService, iamPb, rpc),
    apiKeys: promisify(apiKeyClient, apiKeyPb.ApiKeyServiceService, apiKeyPb, rpc),
    audit: promisify(auditClient, auditPb.AuditServiceService, auditPb, rpc),
    certificateClient,
    close() {
      for (const c of [instanceClient, certificateClient, reclamationClient, iamClient, apiKeyClient, auditClient]) c.close();
    },
  };
}

/** A started service with its clients. */
export interface TestService {
  service: RunningService;
  config: Config;
  dataDir: string;
  /** `mysql://.../<db>` of this service's own database, when on MariaDB. */
  mysqlDatabaseUrl?: string;
  /** Promise-returning InstanceService stub taking partial requests. */
  instances: Rpc<typeof instancePb.InstanceServiceService>;
  /** Promise-returning CertificateService stub taking partial requests. */
  certificates: Rpc<typeof certificatePb.CertificateServiceService>;
  /** Promise-returning ReclamationService stub taking partial requests. */
  reclamations: Rpc<typeof reclamationPb.ReclamationServiceService>;
  /** IamService, as the bootstrap administrator. */
  iam: Rpc<typeof iamPb.IamServiceService>;
  /** ApiKeyService, as the bootstrap administrator. */
  apiKeys: Rpc<typeof apiKeyPb.ApiKeyServiceService>;
  /** AuditService, as the bootstrap administrator. */
  audit: Rpc<typeof auditPb.AuditServiceService>;
  /** The generated CertificateService client itself, for the streaming methods. */
  certificateClient: certificatePb.CertificateServiceClient;
  /** The bootstrap administrator API key the service wrote at its first start; every client above sends it. */
  adminKey: string;
  /** Clients authenticated as `secret` (undefined: no credential), closed at stop. */
  as(secret: string | undefined): Clients;
  /** The service's log records (JSON objects), whatever CM_TEST_LOG_LEVEL prints. */
  logs: Record<string, unknown>[];
  address: string;
  /** A separate Knex connection to the service's database, for inspecting (or tampering with) raw rows. */
  raw(): Knex;
  /**
   * Stops the server and starts it again on the same data directory and database (new port, new clients);
   * `whileStopped` runs in between (e.g. to restore a backup of the database).
   */
  restart(whileStopped?: () => Promise<void>): Promise<void>;
  /**
   * Registers a secret this test sends or plants (a passphrase, an API key's secret, a private key PEM; at
   * least 6 bytes): stop() fails if it, its base64/base64url/hex forms, or a PEM key's DER show up in any log line.
   */
  plantSecret(secret: string | Buffer): void;
  /** Stops the service and cleans up; then fails if its logs hold a secret (secret-scanner.ts). */
  stop(): Promise<void>;
}

/** Starts a service on `db` with a fresh data directory (and database). Extra env overrides the defaults. */
export async function startTestService(db: "sqlite" | "mysql", env: Record<string, string> = {}, clock?: Clock): Promise<TestService> {
  const dataDir = mkdtempSync(path.join(tmpdir(), "cm-test-"));
  let mysqlDatabaseUrl: string | undefined;
  let dropDb: (() => Promise<void>) | undefined;
  if (db === "mysql") {
    const name = `cm_test_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
    const admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/` } as never, pool: { min: 0, max: 1 } });
    await admin.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    await admin.destroy();
    mysqlDatabaseUrl = `${MYSQL_URL}/${name}`;
    dropDb = async () => {
      const a = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/` } as never, pool: { min: 0, max: 1 } });
      await a.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await a.destroy();
    };
  }
  const config = loadConfig({
    CM_DATA_DIR: dataDir,
    CM_LISTEN_ADDRESS: "127.0.0.1:0",
    CM_LOG_LEVEL: process.env.CM_TEST_LOG_LEVEL ?? "silent",
    CM_SHUTDOWN_GRACE_SECONDS: "2",
    // Suites send bursts far above a production limit; the rate-limit tests set their own.
    CM_RATE_LIMIT_PER_SECOND: "0",
    ...(mysqlDatabaseUrl ? { CM_DATABASE_URL: mysqlDatabaseUrl } : {}),
    ...env,
  });
  const raws: Knex[] = [];
  const logs: Record<string, unknown>[] = [];
  // Every raw line too: stop() scans them for secrets, as written (what production writes at info).
  const logLines: string[] = [];
  const planted: (string | Buffer)[] = [];
  // Records at info and above are kept for assertions; CM_TEST_LOG_LEVEL also prints them.
  const sink = {
    write(line: string) {
      logLines.push(line.replace(/\n$/, ""));
      logs.push(JSON.parse(line) as Record<string, unknown>);
      if (process.env.CM_TEST_LOG_LEVEL) process.stdout.write(line);
    },
  };
  const extra: Clients[] = [];
  const connect = async () => {
    const service = await startService(config, { log: pino({ level: "info" }, sink), clock });
    const address = `127.0.0.1:${service.port}`;
    const adminKey = readFileSync(config.auth.bootstrapKeyPath ?? path.join(dataDir, "bootstrap-admin.key"), "utf8").trim();
    const admin = clientsFor(address, adminKey);
    return {
      service,
      address,
      adminKey,
      instances: admin.instances,
      certificates: admin.certificates,
      reclamations: admin.reclamations,
      iam: admin.iam,
      apiKeys: admin.apiKeys,
      audit: admin.audit,
      certificateClient: admin.certificateClient,
      as(secret: string | undefined) {
        const c = clientsFor(address, secret);
        extra.push(c);
        return c;
      },
      async close() {
        admin.close();
        for (const c of extra.splice(0)) c.close();
        await service.stop();
      },
    };
  };
  let live = await connect();
  const t: TestService & { close(): Promise<void> } = {
    ...live,
    config,
    dataDir,
    mysqlDatabaseUrl,
    logs,
    raw() {
      const k = createKnex(config.database);
      raws.push(k);
      return k;
    },
    async restart(whileStopped?: () => Promise<void>) {
      await live.close();
      await whileStopped?.();
      live = await connect();
      Object.assign(t, live);
    },
    plantSecret(secret) {
      if (Buffer.byteLength(secret) < 6) throw new Error("plantSecret: a secret under 6 bytes would match by chance; plant a longer canary");
      planted.push(secret);
    },
    async stop() {
      for (const k of raws) await k.destroy();
      await live.close();
      await dropDb?.();
      const known = [...planted, ...configSecrets(config)];
      rmSync(dataDir, { recursive: true, force: true });
      assertNoSecretsLogged(`the test service on ${db} (${dataDir})`, logLines, known);
    },
  };
  return t;
}

type DeepPartial<T> = T extends Date | Buffer | Uint8Array
  ? T
  : T extends (infer U)[]
    ? DeepPartial<U>[]
    : T extends object
      ? { [K in keyof T]?: DeepPartial<T[K]> }
      : T;

/** Unary methods of a generated service definition as promise-returning functions taking partial requests. */
export type Rpc<S> = {
  [K in keyof S]: S[K] extends { requestSerialize(value: infer Req): Buffer; responseDeserialize(value: Buffer): infer Res; responseStream: false }
    ? (req: DeepPartial<Req>, metadata?: Metadata) => Promise<Res>
    : never;
};

interface MethodDef {
  path: string;
  responseStream: boolean;
  requestSerialize(value: unknown): Buffer;
  responseDeserialize(value: Buffer): unknown;
}

/**
 * Wraps a generated client: every unary method takes a partial request (filled by the generated
 * `<Rpc>Request.fromPartial`, buf STANDARD naming; grpc.health.v1, older, names it `<Service><Rpc>Request`) and
 * returns a promise. `deadlineMs` puts a deadline on every call (a server that stops answering shows as
 * DEADLINE_EXCEEDED, not a hang).
 */
export function promisify<S extends Record<string, MethodDef>>(client: Client, def: S, pb: object, opts: { deadlineMs?: number } = {}): Rpc<S> {
  const out: Record<string, unknown> = {};
  const types = pb as Record<string, { fromPartial(p: unknown): unknown }>;
  for (const [key, m] of Object.entries(def)) {
    if (m.responseStream) continue;
    const [service, method] = m.path.split("/").slice(1) as [string, string];
    const type = types[`${method}Request`] ?? types[`${service.split(".").pop()}${method}Request`]!;
    out[key] = (req: unknown, md = new Metadata()) =>
      new Promise((resolve, reject) =>
        client.makeUnaryRequest(
          m.path,
          (v: unknown) => m.requestSerialize(type.fromPartial(v)),
          m.responseDeserialize,
          req,
          md,
          opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs },
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      );
  }
  return out as Rpc<S>;
}

/** The decoded rich status of a failed call. */
export interface RichError {
  code: number;
  message: string;
  reason: string;
  domain: string;
  metadata: Record<string, string>;
  fieldViolations: { field: string; description: string }[];
}

/** Decodes `grpc-status-details-bin` of a ServiceError into its ErrorInfo and BadRequest. */
export function richError(err: unknown): RichError {
  const e = err as ServiceError;
  const bin = e.metadata?.get("grpc-status-details-bin")[0];
  if (!bin) throw new Error(`no grpc-status-details-bin on error ${e.code}: ${e.message}`);
  const status = Status.decode(bin as Buffer);
  const out: RichError = { code: status.code, message: status.message, reason: "", domain: "", metadata: {}, fieldViolations: [] };
  let infos = 0;
  for (const d of status.details) {
    if (d.typeUrl === "type.googleapis.com/google.rpc.ErrorInfo") {
      const info = ErrorInfo.decode(d.value);
      infos++;
      Object.assign(out, { reason: info.reason, domain: info.domain, metadata: info.metadata });
    } else if (d.typeUrl === "type.googleapis.com/google.rpc.BadRequest") {
      out.fieldViolations = BadRequest.decode(d.value).fieldViolations.map((v) => ({ field: v.field, description: v.description }));
    }
  }
  if (infos !== 1) throw new Error(`expected exactly one ErrorInfo, got ${infos}`);
  if (status.code !== e.code) throw new Error(`status code ${status.code} in details differs from the call's ${e.code}`);
  return out;
}

/** Awaits a call expected to fail and returns its decoded rich status. */
export async function expectFailure(p: Promise<unknown>): Promise<RichError> {
  try {
    await p;
  } catch (err) {
    return richError(err);
  }
  throw new Error("expected the call to fail, it succeeded");
}
