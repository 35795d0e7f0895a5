/**
 * The grpc-js server: CertificateService, InstanceService, ReclamationService, IamService, ApiKeyService,
 * AuditService, grpc.health.v1.Health and server reflection (v1 and v1alpha, from the buf-built descriptor set
 * shipped in gen/, so grpcurl needs no proto files). Every contract method's request bytes are checked against that
 * descriptor set before decoding (request-bytes.ts). A server interceptor refuses any method that is neither in
 * the permission table (those pass through the gate in calls.ts) nor configured open (health, reflection).
 */
import { readFileSync } from "node:fs";
import { format } from "node:util";
import * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { ServingHealth } from "./health.js";
import type { Logger } from "pino";
import { PermissionDeniedError } from "../domain/errors.js";
import { CertificateServiceService } from "../../gen/ts/certmanager/v1/certificate.js";
import { InstanceServiceService } from "../../gen/ts/certmanager/v1/instance.js";
import type { CertificateService } from "../services/certificates.js";
import type { ExportService } from "../services/export.js";
import type { InstanceService } from "../services/instances.js";
import { ReclamationServiceService } from "../../gen/ts/certmanager/v1/reclamation.js";
import type { ReclamationService } from "../services/reclamations.js";
import { certificateHandlers, instanceHandlers, reclamationHandlers } from "./handlers.js";
import { ApiKeyServiceService } from "../../gen/ts/certmanager/v1/api_key.js";
import { IamServiceService } from "../../gen/ts/certmanager/v1/iam.js";
import type { ApiKeyService } from "../auth/api-keys.js";
import type { Authenticator } from "../auth/authenticate.js";
import type { Authorizer } from "../auth/authorize.js";
import { METHOD_RULES } from "../auth/methods.js";
import type { PolicyService } from "../auth/policies.js";
import { apiKeyHandlers, auditHandlers, iamHandlers } from "./access-handlers.js";
import { AuditServiceService } from "../../gen/ts/certmanager/v1/audit.js";
import type { AuditService } from "../services/audit.js";
import { Calls } from "./calls.js";
import { callFacts, type Gate } from "./gate.js";
import { guardRequests, malformedRequest, RequestBytes } from "./request-bytes.js";
import { toServiceError, toStatus } from "./status.js";

/** Fully qualified names of the services whose health is reported. */
const SERVICE_NAMES = [
  "certmanager.v1.InstanceService",
  "certmanager.v1.CertificateService",
  "certmanager.v1.ReclamationService",
  "certmanager.v1.IamService",
  "certmanager.v1.ApiKeyService",
  "certmanager.v1.AuditService",
] as const;

/** Method path prefixes of the health and reflection services. */
const HEALTH_PREFIX = "/grpc.health.v1.Health/";
const REFLECTION_PREFIXES = ["/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/**
 * Refuses, before any handler runs, a method that is not in the permission table and not open: health and
 * reflection need only an authenticated caller unless configured open; anything else is PERMISSION_DENIED.
 */
function accessInterceptor(authenticator: Authenticator, open: { health: boolean; reflection: boolean }): grpc.ServerInterceptor {
  return (method, call) => {
    const path = method.path;
    if (METHOD_RULES[path]) return new grpc.ServerInterceptingCall(call);
    const isHealth = path.startsWith(HEALTH_PREFIX);
    const isReflection = REFLECTION_PREFIXES.some((p) => path.startsWith(p));
    // Health and reflection are the libraries' handlers, not calls.ts: refuse bad request bytes here.
    const refuseMalformed = (message: unknown, msgNext: (m: unknown) => void) => {
      const bad = malformedRequest(message);
      if (!bad) return msgNext(message);
      const { error } = toServiceError(bad);
      call.sendStatus({ code: error.code, details: error.details, metadata: error.metadata });
    };
    if ((isHealth && open.health) || (isReflection && open.reflection)) {
      return new grpc.ServerInterceptingCall(call, {
        start(next) {
          next(new grpc.ServerListenerBuilder().withOnReceiveMessage(refuseMalformed).build());
        },
      });
    }
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next(
          new grpc.ServerListenerBuilder()
            .withOnReceiveMetadata((metadata, mdNext) => {
              const facts = callFacts({ metadata, getPeer: () => call.getPeer(), getAuthContext: () => call.getAuthContext() } as never, "");
              const refuse = (err: unknown) => {
                const { status } = toStatus(err);
                call.sendStatus({ code: status.code, details: status.message });
              };
              if (!isHealth && !isReflection) {
                refuse(new PermissionDeniedError("(none: the method has no rule)", path));
                return;
              }
              authenticator.authenticate(facts).then(() => mdNext(metadata), refuse);
            })
            .withOnReceiveMessage(refuseMalformed)
            .build(),
        );
      },
    });
  };
}

const DESCRIPTOR_SET = new URL("../../gen/descriptor.binpb", import.meta.url);

/** Splits a FileDescriptorSet (field 1 = repeated FileDescriptorProto) into its files, byte for byte. */
function fileDescriptorProtos(path: URL): Buffer[] {
  const bytes = readFileSync(path);
  const out: Buffer[] = [];
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [fieldNo, wireType] = reader.tag();
    if (fieldNo === 1) out.push(Buffer.from(reader.bytes()));
    else reader.skip(wireType);
  }
  return out;
}

/** A server with its health service, so the composition root can report readiness. */
export interface GrpcServer {
  server: grpc.Server;
  health: ServingHealth;
  /** Sets every service's health status at once. */
  setServing(serving: boolean): void;
}

/** What the server serves. */
export interface ServedServices {
  instances: InstanceService;
  certificates: CertificateService;
  reclamations: ReclamationService;
  exporter: ExportService;
  policies: PolicyService;
  apiKeys: ApiKeyService;
  audit: AuditService;
}

/**
 * Sends grpc-js's own log lines (connection errors, and its tracers when GRPC_TRACE names some) to `log` as JSON,
 * `component: "grpc-js"`, instead of stderr. grpc-js logs through one process-wide logger: the last call wins.
 * Its verbosity follows the service's level: debug (and trace) -> DEBUG, info -> INFO, anything else -> ERROR.
 * Never throws.
 */
export function routeGrpcLogs(log: Logger): void {
  const l = log.child({ component: "grpc-js" });
  const line = (args: unknown[]) => format(...args).slice(0, 4000);
  grpc.setLogger({
    error: (...args: unknown[]) => l.error(line(args)),
    info: (...args: unknown[]) => l.info(line(args)),
    debug: (...args: unknown[]) => l.debug(line(args)),
  });
  const level = log.levelVal;
  grpc.setLogVerbosity(level <= 20 ? grpc.logVerbosity.DEBUG : level <= 30 ? grpc.logVerbosity.INFO : grpc.logVerbosity.ERROR);
}

/** Builds the server with every service registered; does not bind. */
export function buildServer(
  log: Logger,
  services: ServedServices,
  access: { gate: Gate; authenticator: Authenticator; authorizer: Authorizer; now: () => Date; open: { health: boolean; reflection: boolean } },
  opts: { maxReceiveMessageBytes: number },
): GrpcServer {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": opts.maxReceiveMessageBytes,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    interceptors: [accessInterceptor(access.authenticator, access.open)],
  });
  const calls = (service: string) => new Calls(log.child({ rpc_service: service }), access.gate, `certmanager.v1.${service}`);
  // Request bytes are checked and decoded by guarded deserializers (request-bytes.ts): bad bytes reach the call
  // wrappers as a MalformedRequest, which they refuse with INVALID_ARGUMENT MALFORMED_REQUEST.
  const requests = RequestBytes.fromFile(DESCRIPTOR_SET);
  const add = <S extends grpc.ServiceDefinition>(def: S, impl: grpc.UntypedServiceImplementation) => server.addService(guardRequests(def, requests), impl);
  add(InstanceServiceService, instanceHandlers(calls("InstanceService"), services.instances));
  add(CertificateServiceService, certificateHandlers(calls("CertificateService"), services.certificates, services.exporter));
  add(ReclamationServiceService, reclamationHandlers(calls("ReclamationService"), services.reclamations));
  add(IamServiceService, iamHandlers(calls("IamService"), services.policies, access.authorizer));
  add(ApiKeyServiceService, apiKeyHandlers(calls("ApiKeyService"), services.apiKeys, access.now));
  add(AuditServiceService, auditHandlers(calls("AuditService"), services.audit));
  const health = new ServingHealth(Object.fromEntries(["", ...SERVICE_NAMES].map((s) => [s, "NOT_SERVING" as const])));
  // The libraries register their services through this shim, so their request bytes are guarded like ours.
  const guarded = { addService: (def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) => add(def, impl) } as unknown as grpc.Server;
  health.addToServer(guarded);
  const files = fileDescriptorProtos(DESCRIPTOR_SET);
  new ReflectionService({ __buf_image__: { fileDescriptorProtos: files } } as unknown as protoLoader.PackageDefinition).addToServer(guarded);
  return {
    server,
    health,
    setServing(serving: boolean) {
      for (const s of ["", ...SERVICE_NAMES]) health.setStatus(s, serving ? "SERVING" : "NOT_SERVING");
    },
  };
}

/**
 * A server that serves only the health service `health` (grpc.health.v1 Check and Watch, the same statuses as the
 * main server's), for a plaintext probe port: it answers nothing but serving status, so it needs no credentials
 * and carries no secret. Requests are a service name: 1 KiB is plenty.
 */
export function buildHealthServer(health: ServingHealth): grpc.Server {
  // Anyone who reaches the port may connect: idle connections close after a minute and every connection after
  // ten, so Watch streams cannot pile up (a probe reconnects; a Watch client re-watches).
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 1024,
    "grpc.max_concurrent_streams": 16,
    "grpc.max_connection_idle_ms": 60_000,
    "grpc.max_connection_age_ms": 600_000,
    "grpc.max_connection_age_grace_ms": 5_000,
  });
  health.addToServer(server);
  return server;
}

/**
 * Binds `address` ("host:port", port 0 for any) with `credentials` (TLS, see tls.ts) or, without, in plaintext.
 * @returns the bound port.
 */
export function bind(server: grpc.Server, address: string, credentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port))));
}

/** Stops accepting calls and waits up to `graceMs` for in-flight calls, then forces the rest closed. */
export function drain(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
