/**
 * Bulk export (ExportCertificates): certificates of an instance in (create_time, id) order, read in
 * keyset-paginated batches, decrypted per batch, yielded one by one so the caller can write them with flow
 * control. Each item carries a resume token (a signed keyset cursor): a new export from it continues right
 * after that certificate, so rows imported or deleted meanwhile cause neither gaps nor duplicates.
 */
import { encryptToRecipient, parseRecipientKey, type RecipientKey } from "../crypto/recipient.js";
import { open, type SecretField } from "../crypto/envelope.js";
import { certificateName, instanceName } from "../domain/names.js";
import type { CertificateRecord, CertificateVersionRecord, InstanceRecord, UnitOfWork } from "../domain/ports.js";
import { parseCertificateFilter } from "./filter.js";
import { getActiveInstance } from "./instance-state.js";
import type { Keyring } from "./keyring.js";
import { PageTokenCodec } from "./page-token.js";
import { DecryptionError } from "../domain/errors.js";

/** What to export. */
export interface ExportRequest {
  instanceId: string;
  filter: string;
  includePrivateKeys: boolean;
  /** A public JWK (JSON) to encrypt private keys to; "" for none. */
  recipientPublicKey: string;
  resumeToken: string;
}

/** One exported certificate. */
export interface ExportedCertificate {
  certificate: CertificateRecord;
  certificatePem: string;
  /** In clear only when asked for without a recipient; else "". */
  privateKeyPem: string;
  /** Encrypted to the recipient; else "". */
  privateKeyJwe: string;
  intermediatesPem: string;
  resumeToken: string;
}

/** Export use case. */
export class ExportService {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly keyring: Keyring,
    private readonly pageTokens: PageTokenCodec,
    /** Certificates read and decrypted per batch. */
    private readonly batchSize = 250,
  ) {}

  /**
   * Validates the request; returns the item stream. Validation happens before the first item, so a bad request
   * fails the call with a clear status instead of ending the stream half-way.
   * @throws NotFoundError INSTANCE_NOT_FOUND, FailedPreconditionError (instance not ACTIVE), InvalidArgumentError
   *         INVALID_FILTER | INVALID_PAGE_TOKEN | INVALID_FIELD (recipient_public_key)
   */
  async start(req: ExportRequest, signal?: AbortSignal): Promise<AsyncGenerator<ExportedCertificate>> {
    const instance = await getActiveInstance(this.uow.repos, req.instanceId);
    const filter = parseCertificateFilter(req.filter);
    const recipient = req.recipientPublicKey ? parseRecipientKey(req.recipientPublicKey) : undefined;
    const withKeys = req.includePrivateKeys || recipient !== undefined;
    const binding = PageTokenCodec.bind("export", req.instanceId, req.filter, String(withKeys), req.recipientPublicKey);
    const after = req.resumeToken ? this.pageTokens.decode(req.resumeToken, binding, "resume_token") : undefined;
    return this.items(instance, filter, withKeys, recipient, binding, after, signal);
  }

  private async *items(
    instance: InstanceRecord,
    filter: ReturnType<typeof parseCertificateFilter>,
    withKeys: boolean,
    recipient: RecipientKey | undefined,
    binding: string,
    after: { value: number | string; id: string } | undefined,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<ExportedCertificate> {
    let cursor = after;
    for (;;) {
      const page = { instanceId: instance.id, filter, orderBy: "create_time" as const, descending: false, limit: this.batchSize, after: cursor };
      let batch = await this.uow.repos.certificates.listWithCurrentVersion(page);
      if (batch.length === 0) return;
      // A rotation may move a row to a new DEK and destroy the old one between our reads: re-read once.
      let out: ExportedCertificate[];
      try {
        out = await this.decryptBatch(instance, batch, withKeys, recipient, binding, signal);
      } catch (err) {
        if (!(err instanceof DecryptionError)) throw err;
        batch = await this.uow.repos.certificates.listWithCurrentVersion(page);
        out = await this.decryptBatch(instance, batch, withKeys, recipient, binding, signal);
      }
      if (signal?.aborted) return;
      // Yield after the batch is decrypted: reads stop as soon as the consumer stops pulling.
      yield* out;
      const last = batch[batch.length - 1].certificate;
      cursor = { value: last.createTime.getTime(), id: last.id };
      if (batch.length < this.batchSize) return;
    }
  }

  /** Decrypts a batch with one resolver (one DEK lookup per DEK). */
  private async decryptBatch(
    instance: InstanceRecord,
    batch: { certificate: CertificateRecord; version: CertificateVersionRecord }[],
    withKeys: boolean,
    recipient: RecipientKey | undefined,
    binding: string,
    signal: AbortSignal | undefined,
  ): Promise<ExportedCertificate[]> {
    const resolver = this.keyring.resolver(this.uow.repos, instance);
    const out: ExportedCertificate[] = [];
    try {
      for (const { certificate: cert, version: v } of batch) {
        // A cancelled call stops work mid-batch, not only between batches.
        if (signal?.aborted) break;
        const openField = async (jwe: string, field: SecretField): Promise<Buffer | undefined> =>
          jwe === "" ? undefined : open(jwe, resolver.resolve, { instance: instanceName(instance.id), certificate: certificateName(instance.id, cert.id), field });
        const text = async (jwe: string, field: SecretField) => {
          const b = await openField(jwe, field);
          if (!b) return "";
          try {
            return b.toString("utf8");
          } finally {
            b.fill(0);
          }
        };
        let privateKeyPem = "";
        let privateKeyJwe = "";
        if (withKeys && v.privateKeyJwe !== "") {
          const key = (await openField(v.privateKeyJwe, "private_key"))!;
          try {
            if (recipient) privateKeyJwe = await encryptToRecipient(recipient, key);
            else privateKeyPem = key.toString("utf8");
          } finally {
            key.fill(0);
          }
        }
        out.push({
          certificate: cert,
          certificatePem: await text(v.certificateJwe, "certificate"),
          privateKeyPem,
          privateKeyJwe,
          intermediatesPem: await text(v.intermediatesJwe, "intermediates"),
          resumeToken: this.pageTokens.encode(binding, { value: cert.createTime.getTime(), id: cert.id }),
        });
      }
    } finally {
      resolver.releaseAll();
    }
    return out;
  }
}
