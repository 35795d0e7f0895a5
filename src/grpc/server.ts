/**
 * The grpc-js server: CertificateService, InstanceService, grpc.health.v1.Health and server reflection
 * (v1 and v1alpha, from the buf-built descriptor set shipped in gen/, so grpcurl needs no proto files).
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import { CertificateServiceService } from "../../gen/ts/certmanager/v1/certificate.js";
import { InstanceServiceService } from "../../gen/ts/certmanager/v1/instance.js";
import type { CertificateService } from "../services/certificates.js";
import type { ExportService } from "../services/export.js";
import type { InstanceService } from "../services/instances.js";
import { ReclamationServiceService } from "../../gen/ts/certmanager/v1/reclamation.js";
import type { ReclamationService } from "../services/reclamations.js";
import { certificateHandlers, instanceHandlers, reclamationHandlers } from "./handlers.js";

/** Fully qualified names of the services whose health is reported. */
const SERVICE_NAMES = ["certmanager.v1.InstanceService", "certmanager.v1.CertificateService", "certmanager.v1.ReclamationService"] as const;

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
  health: HealthImplementation;
  /** Sets every service's health status at once. */
  setServing(serving: boolean): void;
}

/** Builds the server with every service registered; does not bind. */
export function buildServer(
  log: Logger,
  services: { instances: InstanceService; certificates: CertificateService; reclamations: ReclamationService; exporter: ExportService },
  opts: { maxReceiveMessageBytes: number },
): GrpcServer {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": opts.maxReceiveMessageBytes,
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
  server.addService(InstanceServiceService, instanceHandlers(log.child({ rpc_service: "InstanceService" }), services.instances));
  server.addService(CertificateServiceService, certificateHandlers(log.child({ rpc_service: "CertificateService" }), services.certificates, services.exporter));
  server.addService(ReclamationServiceService, reclamationHandlers(log.child({ rpc_service: "ReclamationService" }), services.reclamations));
  const health = new HealthImplementation(Object.fromEntries(["", ...SERVICE_NAMES].map((s) => [s, "NOT_SERVING" as const])));
  health.addToServer(server);
  const files = fileDescriptorProtos(DESCRIPTOR_SET);
  new ReflectionService({ __buf_image__: { fileDescriptorProtos: files } } as unknown as protoLoader.PackageDefinition).addToServer(server);
  return {
    server,
    health,
    setServing(serving: boolean) {
      for (const s of ["", ...SERVICE_NAMES]) health.setStatus(s, serving ? "SERVING" : "NOT_SERVING");
    },
  };
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
