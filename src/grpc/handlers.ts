/**
 * gRPC handlers typed by the generated *Server interfaces. Each handler validates the request's shape,
 * calls one service use case and maps the result; call ids, logging, cancellation and error mapping are the
 * call wrappers' (calls.ts).
 */
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
import type { Calls } from "./calls.js";
import type { CertificateRecord, InstanceRecord } from "../domain/ports.js";
import { checkEncryption, checkRequestId, checkUpdateMask, checkUserFields } from "./validate.js";

function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new InvalidArgumentError("INVALID_FIELD", field, `${field} is required`);
  return value;
}

/** InstanceService handlers. */
export function instanceHandlers(calls: Calls, instances: InstanceService): InstanceServiceServer {
  const view = async (i: InstanceRecord) => toInstance(i, await instances.keyView(i));
  return {
    createInstance: calls.unary("CreateInstance", async (req) => {
      const inst = required(req.instance, "instance");
      const created = await instances.create(checkUserFields("instance.", inst), checkRequestId(req.requestId), checkEncryption(inst, instances.backendNames()));
      return { instance: await view(created) };
    }),
    getInstance: calls.unary("GetInstance", async (req) => ({ instance: await view(await instances.get(parseInstanceName(req.name, "name"))) })),
    listInstances: calls.unary("ListInstances", async (req, { visibleTo }) => {
      const page = await instances.list(req.pageSize, req.pageToken, req.showDeleted, visibleTo);
      const out = [];
      for (const i of page.instances) out.push(await view(i));
      return { instances: out, nextPageToken: page.nextPageToken };
    }),
    updateInstance: calls.unary("UpdateInstance", async (req) => {
      const inst = required(req.instance, "instance");
      const id = parseInstanceName(inst.name, "instance.name");
      const fields = checkUserFields("instance.", inst, checkUpdateMask(req.updateMask, inst));
      return { instance: await view(await instances.update(id, fields, inst.etag)) };
    }),
    deleteInstance: calls.unary("DeleteInstance", async (req) => {
      const id = parseInstanceName(req.name, "name");
      const { instance, reclamation } = await instances.delete(id, req.etag);
      return { instance: await view(instance), reclamation: toReclamation(reclamation) };
    }),
    rewrapDataKeys: calls.unary("RewrapDataKeys", async (req) => {
      const r = await instances.rewrapDataKeys(parseInstanceName(req.name, "name"));
      return { instance: await view(r.instance), rewrappedCount: r.rewrapped, totalCount: r.total };
    }),
    rotateDataKey: calls.unary("RotateDataKey", async (req) => {
      const r = await instances.rotateDataKey(parseInstanceName(req.name, "name"));
      return { instance: await view(r.instance), reencryptedCount: r.reencrypted, retiredCount: r.retired };
    }),
  };
}

/** ReclamationService handlers. */
export function reclamationHandlers(calls: Calls, reclamations: ReclamationService): ReclamationServiceServer {
  return {
    listReclamations: calls.unary("ListReclamations", async (req, { visibleTo }) => {
      const page = await reclamations.list(req, visibleTo);
      return { reclamations: page.reclamations.map(toReclamation), nextPageToken: page.nextPageToken };
    }),
    getReclamation: calls.unary("GetReclamation", async (req) => ({ reclamation: toReclamation(await reclamations.get(parseReclamationName(req.name, "name"))) })),
    restoreReclamation: calls.unary("RestoreReclamation", async (req) => ({
      reclamation: toReclamation(await reclamations.restore(parseReclamationName(req.name, "name"))),
    })),
    deleteReclamation: calls.unary("DeleteReclamation", async (req) => ({
      reclamation: toReclamation(await reclamations.reclaimNow(parseReclamationName(req.name, "name"))),
    })),
  };
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
export function certificateHandlers(calls: Calls, certificates: CertificateService, exporter: ExportService): CertificateServiceServer {
  // Validity (expired, not yet valid) is derived from the service's clock at answer time.
  const toProto = (c: CertificateRecord) => toCertificate(c, certificates.now());
  const importOne = async (req: ImportCertificateRequest, signal?: AbortSignal) => {
    const instanceId = parseInstanceName(req.parent, "parent");
    const fields = checkUserFields("", req);
    return certificates.import(instanceId, materialOf(req), fields, checkRequestId(req.requestId), signal);
  };
  return {
    importCertificate: calls.unary("ImportCertificate", async (req, { signal }) => {
      const { certificate, repairs } = await importOne(req, signal);
      return { certificate: toProto(certificate), repairs: toRepairs(repairs) };
    }),
    exportCertificates: calls.serverStream("ExportCertificates", async (req, { signal, caller, peer }) => {
      // Validation happens here, before the first message, so a bad request fails the call with a clear status.
      const items = await exporter.start(
        {
          instanceId: parseInstanceName(req.parent, "parent"),
          filter: req.filter,
          includePrivateKeys: req.includePrivateKeys,
          recipientPublicKey: req.recipientPublicKey,
          resumeToken: req.resumeToken,
        },
        caller.principal,
        signal,
        peer,
      );
      // Pulls one item per message asked for: Calls#serverStream asks for the next once this one is written.
      return (async function* () {
        for await (const item of items) {
          yield {
            certificate: toProto(item.certificate),
            certificatePem: item.certificatePem,
            privateKeyPem: item.privateKeyPem,
            privateKeyJwe: item.privateKeyJwe,
            intermediatesPem: item.intermediatesPem,
            resumeToken: item.resumeToken,
          };
        }
      })();
    }),
    importCertificates: calls.bidiStream<ImportCertificatesRequest, ImportCertificatesResponse>("ImportCertificates", {
      async each({ item }, index, { signal }) {
        if (!item) throw new InvalidArgumentError("INVALID_FIELD", "item", "item is required: each stream message carries one ImportCertificateRequest");
        const { certificate, repairs } = await importOne(item, signal);
        return { index, requestId: item.requestId, certificate: toProto(certificate), error: undefined, repairs: toRepairs(repairs) };
      },
      failed: ({ item }, index, status) => ({ index, requestId: item?.requestId ?? "", certificate: undefined, error: status, repairs: [] }),
    }),
    reimportCertificate: calls.unary("ReimportCertificate", async (req, { signal }) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      const { certificate, repairs } = await certificates.reimport(instanceId, certificateId, materialOf(req), req.etag, signal);
      return { certificate: toProto(certificate), repairs: toRepairs(repairs) };
    }),
    getCertificate: calls.unary("GetCertificate", async (req) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      return { certificate: toProto(await certificates.get(instanceId, certificateId)) };
    }),
    accessCertificate: calls.unary("AccessCertificate", async (req) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      const m = await certificates.access(instanceId, certificateId, req.version);
      return { name: req.name, version: m.version, certificate: m.certificatePem, privateKey: m.privateKeyPem, intermediates: m.intermediatesPem };
    }),
    listCertificates: calls.unary("ListCertificates", async (req) => {
      const instanceId = parseInstanceName(req.parent, "parent");
      const page = await certificates.list(instanceId, req);
      return { certificates: page.certificates.map(toProto), nextPageToken: page.nextPageToken };
    }),
    updateCertificate: calls.unary("UpdateCertificate", async (req) => {
      const cert = required(req.certificate, "certificate");
      const { instanceId, certificateId } = parseCertificateName(cert.name, "certificate.name");
      const fields = checkUserFields("certificate.", cert, checkUpdateMask(req.updateMask, cert));
      return { certificate: toProto(await certificates.update(instanceId, certificateId, fields, cert.etag)) };
    }),
    deleteCertificate: calls.unary("DeleteCertificate", async (req) => {
      const { instanceId, certificateId } = parseCertificateName(req.name, "name");
      await certificates.delete(instanceId, certificateId, req.etag);
      return {};
    }),
  };
}
