/**
 * gRPC handlers typed by the generated *Server interfaces. Each handler validates the request's shape,
 * calls one service use case and maps the result; errors go through `toServiceError` only.
 */
import { randomUUID } from "node:crypto";
import type { sendUnaryData, ServerDuplexStream, ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type {
  CertificateServiceServer,
  ImportCertificateRequest,
  ImportCertificatesRequest,
  ImportCertificatesResponse,
  ReimportCertificateRequest,
} from "../../gen/ts/certmanager/v1/certificate.js";
import type { ExportService } from "../services/export.js";
import type { InstanceServiceServer } from "../../gen/ts/certmanager/v1/instance.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { parseCertificateName, parseInstanceName, parseReclamationName } from "../domain/names.js";
import type { CertificateService, MaterialInput } from "../services/certificates.js";
import type { InstanceService } from "../services/instances.js";
import type { ReclamationServiceServer } from "../../gen/ts/certmanager/v1/reclamation.js";
import type { ReclamationService } from "../services/reclamations.js";
import { fromRootCertificate, toCertificate, toInstance, toReclamation, toRepairs } from "./mappers.js";
import { toServiceError, toStatus } from "./status.js";
import type { CertificateRecord, InstanceRecord } from "../domain/ports.js";
import { checkEncryption, checkRequestId, checkUpdateMask, checkUserFields } from "./validate.js";

/**
 * Wraps a unary use case: runs it, answers, maps any error in one place and logs the call (never payloads).
 * Each call gets a `call_id` in the log; an unexpected error carries it in ErrorInfo.metadata so an operator
 * can find the stack trace.
 */
function unary<Req, Res>(log: Logger, method: string, fn: (req: Req, signal: AbortSignal) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const started = process.hrtime.bigint();
    const callId = randomUUID();
    // Costly work (PKCS#12 files, encrypted keys) stops waiting or running when the client goes away.
    const cancelled = new AbortController();
    call.on("cancelled", () => cancelled.abort());
    fn(call.request, cancelled.signal).then(
      (res) => {
        log.debug({ method, call_id: callId, code: 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }, "call");
        callback(null, res);
      },
      (err: unknown) => {
        const { error, expected } = toServiceError(err, callId);
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        if (expected) log.info({ method, call_id: callId, code: error.code, reason: (err as { reason?: string }).reason, ms }, "call failed");
        else log.error({ method, call_id: callId, code: error.code, ms, err: loggableError(err) }, "call failed unexpectedly");
        callback(error);
      },
    );
  };
}

/** An error for the log: type, message cut to 2,000 characters (Knex puts whole statements in it), stack. */
function loggableError(err: unknown): object {
  const e = err as Error;
  return { type: e?.name, code: (e as { code?: string })?.code, message: String(e?.message ?? err).slice(0, 2000), stack: e?.stack?.split("\n").slice(1, 12).join("\n") };
}

function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new InvalidArgumentError("INVALID_FIELD", field, `${field} is required`);
  return value;
}

/** InstanceService handlers. */
export function instanceHandlers(log: Logger, instances: InstanceService): InstanceServiceServer {
  const view = async (i: InstanceRecord) => toInstance(i, await instances.keyView(i));
  return {
    createInstance: unary(log, "CreateInstance", async (req) => {
      const inst = required(req.instance, "instance");
      const created = await instances.create(checkUserFields("instance.", inst), checkRequestId(req.requestId), checkEncryption(inst, instances.backendNames()));
      return { instance: await view(created) };
    }),
    getInstance: unary(log, "GetInstance", async (req) => ({ instance: await view(await instances.get(parseInstanceName(req.name, "name"))) })),
    listInstances: unary(log, "ListInstances", async (req) => {
      const page = await instances.list(req.pageSize, req.pageToken, req.showDeleted);
      const out = [];
      for (const i of page.instances) out.push(await view(i));
      return { instances: out, nextPageToken: page.nextPageToken };
    }),
    updateInstance: unary(log, "UpdateInstance", async (req) => {
      const inst = required(req.instance, "instance");
      const id = parseInstanceName(inst.name, "instance.name");
      const fields = checkUserFields("instance.", inst, checkUpdateMask(req.updateMask, inst));
      return { instance: await view(await instances.update(id, fields, inst.etag)) };
    }),
    deleteInstance: unary(log, "DeleteInstance", async (req) => {
      const id = parseInstanceName(req.name, "name");
      const { instance, reclamation } = await instances.delete(id, req.etag);
      return { instance: await view(instance), reclamation: toReclamation(reclamation) };
    }),
    rewrapDataKeys: unary(log, "RewrapDataKeys", async (req) => {
      const r = await instances.rewrapDataKeys(parseInstanceName(req.name, "name"));
      return { instance: await view(r.instance), rewrappedCount: r.rewrapped, totalCount: r.total };
    }),
    rotateDataKey: unary(log, "RotateDataKey", async (req) => {
      const r = await instances.rotateDataKey(parseInstanceName(req.name, "name"));
      return { instance: await view(r.instance), reencryptedCount: r.reencrypted, retiredCount: r.retired };
    }),
  };
}

/** ReclamationService handlers. */
export function reclamationHandlers(log: Logger, reclamations: ReclamationService): ReclamationServiceServer {
  return {
    listReclamations: unary(log, "ListReclamations", async (req) => {
      const page = await reclamations.list(req);
      return { reclamations: page.reclamations.map(toReclamation), nextPageToken: page.nextPageToken };
    }),
    getReclamation: unary(log, "GetReclamation", async (req) => ({ reclamation: toReclamation(await reclamations.get(parseReclamationName(req.name, "name"))) })),
    restoreReclamation: unary(log, "RestoreReclamation", async (req) => ({
      reclamation: toReclamation(await reclamations.restore(parseReclamationName(req.name, "name"))),
    })),
    deleteReclamation: unary(log, "DeleteReclamation", async (req) => ({
      reclamation: toReclamation(await reclamations.reclaimNow(parseReclamationName(req.name, "name"))),
    })),
  };
}

/** Resolves when the stream can take more data, or when the call is cancelled or its deadline passes. */
function drained(call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("cancelled", done);
      resolve();
    };
    call.on("drain", done);
    call.on("cancelled", done);
    if (call.cancelled) done();
  });
}

/** The material fields shared by ImportCertificate and ReimportCertificate. */
function materialOf(req: ImportCertificateRequest | ReimportCertificateRequest): MaterialInput {
  return {
    certificate: req.certificate,
    privateKey: req.privateKey,
    intermediates: req.intermediates,
    certificateDer: req.certificateDer,
    privateKeyDer: req.privateKeyDer,
    pkcs12: req.pkcs12,
    passphrase: req.passphrase,
    rootCertificate: fromRootCertificate(req.rootCertificate),
  };
}

/** CertificateService handlers. */
export function certificateHandlers(log: Logger, certificates: CertificateService, exporter: ExportService): CertificateServiceServer {
  // Validity (expired, not yet valid) is derived from the service's clock at answer time.
  const toProto = (c: CertificateRecord) => toCertificate(c, certificates.now());
  const importOne = async (req: ImportCertificateRequest, signal?: AbortSignal) => {
    const instanceId = parseInstanceName(req.parent, "parent");
    const fields = checkUserFields("", req);
    return certificates.import(instanceId, materialOf(req), fields, checkRequestId(req.requestId), signal);
  };
  return {
    importCertificate: unary(log, "ImportCertificate", async (req, signal) => {
      const { certificate, repairs } = await importOne(req, signal);
      return { certificate: toProto(certificate), repairs: toRepairs(repairs) };
    }),
    exportCertificates: (call) => {
      const callId = randomUUID();
      const started = process.hrtime.bigint();
      let sent = 0;
      const abort = new AbortController();
      call.on("cancelled", () => abort.abort());
      (async () => {
        const req = call.request;
        const items = await exporter.start({
          instanceId: parseInstanceName(req.parent, "parent"),
          filter: req.filter,
          includePrivateKeys: req.includePrivateKeys,
          recipientPublicKey: req.recipientPublicKey,
          resumeToken: req.resumeToken,
        }, abort.signal);
        for await (const item of items) {
          // Leaving the loop ends the generator, so no further batch is read.
          if (call.cancelled) break;
          const ok = call.write({
            certificate: toProto(item.certificate),
            certificatePem: item.certificatePem,
            privateKeyPem: item.privateKeyPem,
            privateKeyJwe: item.privateKeyJwe,
            intermediatesPem: item.intermediatesPem,
            resumeToken: item.resumeToken,
          });
          sent++;
          if (!ok) await drained(call);
        }
        if (!call.cancelled) call.end();
        const mem = process.memoryUsage();
        log.info(
          {
            method: "ExportCertificates",
            call_id: callId,
            sent,
            cancelled: call.cancelled,
            ms: Number(process.hrtime.bigint() - started) / 1e6,
            rss_mb: Math.round(mem.rss / 1e6),
            heap_mb: Math.round(mem.heapUsed / 1e6),
            external_mb: Math.round(mem.external / 1e6),
          },
          "stream done",
        );
      })().catch((err: unknown) => {
        const { error, expected } = toServiceError(err, callId);
        if (expected) log.info({ method: "ExportCertificates", call_id: callId, code: error.code, sent }, "stream failed");
        else log.error({ method: "ExportCertificates", call_id: callId, code: error.code, sent, err: loggableError(err) }, "stream failed unexpectedly");
        call.emit("error", error);
      });
    },
    importCertificates: (call) => {
      const callId = randomUUID();
      let index = 0;
      let failed = 0;
      const cancelled = new AbortController();
      call.on("cancelled", () => cancelled.abort());
      (async () => {
        // destroyOnReturn false: the default iterator destroys the whole duplex when the requests end, which
        // would drop the responses still being written.
        const requests = (call as unknown as { iterator(o: { destroyOnReturn: boolean }): AsyncIterable<ImportCertificatesRequest> }).iterator({
          destroyOnReturn: false,
        });
        for await (const msg of requests) {
          const item = msg.item;
          let response: ImportCertificatesResponse;
          try {
            if (!item) throw new InvalidArgumentError("INVALID_FIELD", "item", "item is required: each stream message carries one ImportCertificateRequest");
            const { certificate, repairs } = await importOne(item, cancelled.signal);
            response = { index, requestId: item.requestId, certificate: toProto(certificate), error: undefined, repairs: toRepairs(repairs) };
          } catch (err) {
            const { status, expected } = toStatus(err, callId);
            if (!expected) log.error({ method: "ImportCertificates", call_id: callId, index, err: loggableError(err) }, "item failed unexpectedly");
            failed++;
            response = { index, requestId: item?.requestId ?? "", certificate: undefined, error: status, repairs: [] };
          }
          index++;
          if (call.cancelled) break;
          if (!call.write(response)) await drained(call);
        }
        if (!call.cancelled) call.end();
        log.info({ method: "ImportCertificates", call_id: callId, items: index, failed, cancelled: call.cancelled }, "stream done");
      })().catch((err: unknown) => {
        // A client that cancels (or whose deadline passes) ends its request stream early: not a server failure.
        if (call.cancelled) {
          log.info({ method: "ImportCertificates", call_id: callId, items: index, failed, cancelled: true }, "stream done");
          return;
        }
        const { error } = toServiceError(err, callId);
        log.error({ method: "ImportCertificates", call_id: callId, items: index, err: loggableError(err) }, "stream failed");
        call.emit("error", error);
      });
    },
    reimportCertificate: unary(log, "ReimportCertificate", async (req, signal) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      const { certificate, repairs } = await certificates.reimport(instanceId, certificateId, materialOf(req), req.etag, signal);
      return { certificate: toProto(certificate), repairs: toRepairs(repairs) };
    }),
    getCertificate: unary(log, "GetCertificate", async (req) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      return { certificate: toProto(await certificates.get(instanceId, certificateId)) };
    }),
    accessCertificate: unary(log, "AccessCertificate", async (req) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      const m = await certificates.access(instanceId, certificateId, req.version);
      return { name: req.name, version: m.version, certificate: m.certificatePem, privateKey: m.privateKeyPem, intermediates: m.intermediatesPem };
    }),
    listCertificates: unary(log, "ListCertificates", async (req) => {
      const instanceId = parseInstanceName(req.parent, "parent");
      const page = await certificates.list(instanceId, req);
      return { certificates: page.certificates.map(toProto), nextPageToken: page.nextPageToken };
    }),
    updateCertificate: unary(log, "UpdateCertificate", async (req) => {
      const cert = required(req.certificate, "certificate");
      const { instanceId, certificateId } = parseCertificateName(cert.name, "certificate.name");
      const fields = checkUserFields("certificate.", cert, checkUpdateMask(req.updateMask, cert));
      return { certificate: toProto(await certificates.update(instanceId, certificateId, fields, cert.etag)) };
    }),
    deleteCertificate: unary(log, "DeleteCertificate", async (req) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      await certificates.delete(instanceId, certificateId, req.etag);
      return {};
    }),
  };
}
