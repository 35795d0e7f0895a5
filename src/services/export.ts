/**
 * Bulk export (ExportCertificates): certificates of an instance in (create_time, id) order, read in
 * keyset-paginated batches, decrypted per batch, yielded one by one so the caller can write them with flow
 * control. Each item carries a resume token (a signed keyset cursor): a new export from it continues right
 * after that certificate, so rows imported or deleted meanwhile cause neither gaps nor duplicates.
 */
import { encryptToRecipient, parseRecipientKey, type RecipientKey } from "../crypto/recipient.js";
import type { CertificateEnvelope, OpenedMaterial } from "../crypto/envelope.js";
import type { CertificateRecord, InstanceRecord, UnitOfWork } from "../domain/ports.js";
import { parseCertificateFilter } from "./filter.js";
import { getActiveInstance } from "./instance-state.js";
import { PageTokenCodec } from "../domain/page-token.js";

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
    private readonly envelope: CertificateEnvelope,
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
      const { rows: batch, opened } = await this.envelope.openAll(
        this.uow.repos,
        instance,
        () => this.uow.repos.certificates.listWithCurrentVersion(page),
        (row) => row.version,
        { privateKeys: withKeys, signal },
      );
      if (batch.length === 0) return;
      const out = await this.encodeBatch(batch, opened, recipient, binding);
      if (signal?.aborted) return;
      // Yield after the batch is decrypted: reads stop as soon as the consumer stops pulling.
      yield* out;
      const last = batch[batch.length - 1].certificate;
      cursor = { value: last.createTime.getTime(), id: last.id };
      if (batch.length < this.batchSize) return;
    }
  }

  /** Builds the stream items of an opened batch: private keys in clear or encrypted to the recipient, then zeroed. */
  private async encodeBatch(
    batch: { certificate: CertificateRecord }[],
    opened: OpenedMaterial[],
    recipient: RecipientKey | undefined,
    binding: string,
  ): Promise<ExportedCertificate[]> {
    const out: ExportedCertificate[] = [];
    try {
      for (let i = 0; i < opened.length; i++) {
        const cert = batch[i]!.certificate;
        const m = opened[i]!;
        let privateKeyPem = "";
        let privateKeyJwe = "";
        if (m.privateKey) {
          if (recipient) privateKeyJwe = await encryptToRecipient(recipient, m.privateKey);
          else privateKeyPem = m.privateKey.toString("utf8");
        }
        out.push({
          certificate: cert,
          certificatePem: m.certificatePem,
          privateKeyPem,
          privateKeyJwe,
          intermediatesPem: m.intermediatesPem,
          resumeToken: this.pageTokens.encode(binding, { value: cert.createTime.getTime(), id: cert.id }),
        });
      }
    } finally {
      for (const m of opened) m.privateKey?.fill(0);
    }
    return out;
  }
}
