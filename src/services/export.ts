/**
 * Bulk export (ExportCertificates): certificates of an instance in (create_time, id) order, read in
 * keyset-paginated batches and opened one at a time, right before each is handed to the caller, which writes it
 * with flow control and asks for the next only once the transport took it. Each item carries a resume token (a
 * signed keyset cursor): a new export from it continues right after that certificate, so rows imported or
 * deleted meanwhile cause neither gaps nor duplicates.
 *
 * Memory: a stream holds at most one batch of sealed rows (metadata and JWE strings) and the material of the
 * one item it is handing over, never a decrypted batch; what it holds is reserved in the shared ExportBudget
 * (./export-budget.ts) before it is read or opened, and given back as items are taken, and on every way out
 * (end, error, cancellation). A client that never reads holds one item's material and its batch's ciphertext.
 */
import { encryptToRecipient, parseRecipientKey, type RecipientKey } from "../crypto/recipient.js";
import type { CertificateEnvelope, OpenedMaterial } from "../crypto/envelope.js";
import { DecryptionError } from "../domain/errors.js";
import type { CertificateRecord, CertificateVersionRecord, InstanceRecord, UnitOfWork } from "../domain/ports.js";
import { parseCertificateFilter } from "./filter.js";
import { getActiveInstance } from "./instance-state.js";
import { PageTokenCodec } from "../domain/page-token.js";
import { ExportBudget, type ExportLease } from "./export-budget.js";

/** Bytes counted for a row's metadata (the record, its labels, the resume token, the proto message's copy). */
const ROW_OVERHEAD_BYTES = 2048;

/** What a read row holds until it is handed over: its sealed strings and metadata. */
function rowBytes(v: CertificateVersionRecord): number {
  return v.certificateJwe.length + v.privateKeyJwe.length + v.intermediatesJwe.length + ROW_OVERHEAD_BYTES;
}

/**
 * What handing one row over holds on top of the row: the opened PEM text (shorter than its base64url JWE), and
 * the serialized message the transport keeps until the client takes it (about as long again).
 */
function itemBytes(v: CertificateVersionRecord): number {
  return 2 * (v.certificateJwe.length + v.privateKeyJwe.length + v.intermediatesJwe.length) + ROW_OVERHEAD_BYTES;
}

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
    /** Certificates read per database batch. */
    private readonly batchSize = 250,
    /** Memory budget and per-caller stream cap shared by every export stream. */
    private readonly budget = new ExportBudget(64 * 1024 * 1024, 8),
  ) {}

  /**
   * Validates the request; returns the item stream. Validation happens before the first item, so a bad request
   * fails the call with a clear status instead of ending the stream half-way. The stream is admitted to the
   * budget when it is first pulled (before any read), so a refusal also comes before the first item.
   *
   * The consumer pulls the next item only once it is done with the previous one (written to the transport):
   * pulling is what gives that item's bytes back. Returning (or throwing into) the generator ends it and gives
   * back everything it holds.
   * @param principal the caller, for the per-caller stream cap.
   * @param connection the client connection (peer address and port), for the per-connection stream cap.
   * @throws NotFoundError INSTANCE_NOT_FOUND, FailedPreconditionError (instance not ACTIVE), InvalidArgumentError
   *         INVALID_FILTER | INVALID_PAGE_TOKEN | INVALID_FIELD (recipient_public_key); from the stream:
   *         ExportBudgetExhaustedError (before the first item), CancelledError.
   */
  async start(req: ExportRequest, principal: string, signal?: AbortSignal, connection?: string): Promise<AsyncGenerator<ExportedCertificate>> {
    const instance = await getActiveInstance(this.uow.repos, req.instanceId);
    const filter = parseCertificateFilter(req.filter);
    const recipient = req.recipientPublicKey ? parseRecipientKey(req.recipientPublicKey) : undefined;
    const withKeys = req.includePrivateKeys || recipient !== undefined;
    const binding = PageTokenCodec.bind("export", req.instanceId, req.filter, String(withKeys), req.recipientPublicKey);
    const after = req.resumeToken ? this.pageTokens.decode(req.resumeToken, binding, "resume_token") : undefined;
    return this.items({ instance, filter, withKeys, recipient, binding, after, principal, connection, signal });
  }

  private async *items(o: {
    instance: InstanceRecord;
    filter: ReturnType<typeof parseCertificateFilter>;
    withKeys: boolean;
    recipient: RecipientKey | undefined;
    binding: string;
    after: { value: number | string; id: string } | undefined;
    principal: string;
    connection: string | undefined;
    signal: AbortSignal | undefined;
  }): AsyncGenerator<ExportedCertificate> {
    const { instance, signal } = o;
    // Opened inside the generator: its finally then runs on every way out once the stream was admitted.
    const lease = this.budget.open(o.principal, o.connection);
    try {
      let cursor = o.after;
      for (;;) {
        if (signal?.aborted) return;
        const page = (after: typeof cursor, limit: number) =>
          this.uow.repos.certificates.listWithCurrentVersion({ instanceId: instance.id, filter: o.filter, orderBy: "create_time", descending: false, limit, after });
        // Reserve a guess before reading (so concurrent readers are counted), then set it to what was read.
        await lease.reserve(Math.min(this.budget.limitBytes, this.batchSize * this.#rowGuess), signal);
        let batch = await page(cursor, this.batchSize);
        if (signal?.aborted) return;
        if (batch.length === 0) return;
        const full = batch.length === this.batchSize;
        this.#learn(batch.map((r) => r.version));
        let rowsHeld = batch.reduce((n, r) => n + rowBytes(r.version), 0);
        lease.resize(rowsHeld + Math.max(...batch.map((r) => itemBytes(r.version))));
        let retried: string | undefined;
        while (batch.length > 0) {
          if (signal?.aborted) return;
          const row = batch[0]!;
          let item: ExportedCertificate;
          try {
            item = await this.#item(instance, row, o.withKeys, o.recipient, o.binding);
          } catch (err) {
            // A rotation may have re-encrypted the rest of the batch and destroyed its old DEK since it was read
            // (a slow client makes that more likely): read the rest again, once per row, before giving up.
            if (!(err instanceof DecryptionError) || retried === row.certificate.id) throw err;
            retried = row.certificate.id;
            batch = await page(cursor, batch.length);
            rowsHeld = batch.reduce((n, r) => n + rowBytes(r.version), 0);
            lease.resize(rowsHeld + Math.max(0, ...batch.map((r) => itemBytes(r.version))));
            continue;
          }
          if (signal?.aborted) return;
          yield item;
          // The consumer asked for the next item: this one is written. Drop the row and give its bytes back.
          batch.shift();
          rowsHeld -= rowBytes(row.version);
          lease.resize(rowsHeld + Math.max(0, ...batch.map((r) => itemBytes(r.version))));
          cursor = { value: row.certificate.createTime.getTime(), id: row.certificate.id };
        }
        if (!full) return;
        // Between batches the stream holds nothing, so waiting for room there never blocks anyone holding bytes.
        lease.resize(0);
      }
    } finally {
      lease.close();
    }
  }

  /**
   * Bytes per row to reserve before reading a batch: the largest average seen so far, starting at 8 KiB (a leaf,
   * an RSA key and two intermediates, sealed). A batch that comes out larger is counted in full once read, so the
   * budget can be exceeded by that difference, once per stream reading at that moment.
   */
  #rowGuess = 8192;

  #learn(versions: CertificateVersionRecord[]): void {
    const avg = versions.reduce((n, v) => n + rowBytes(v), 0) / versions.length;
    this.#rowGuess = Math.max(this.#rowGuess, Math.ceil(avg));
  }

  /**
   * Opens one row and builds its item: the private key in clear or encrypted to the recipient, its bytes zeroed
   * once encoded. The PEM strings (certificate, intermediates, a private key sent in clear) are JavaScript
   * strings, which cannot be zeroed: they live until the garbage collector reclaims them after the item is
   * written, which is why one item at a time is opened.
   */
  async #item(
    instance: InstanceRecord,
    row: { certificate: CertificateRecord; version: CertificateVersionRecord },
    withKeys: boolean,
    recipient: RecipientKey | undefined,
    binding: string,
  ): Promise<ExportedCertificate> {
    const m: OpenedMaterial = await this.envelope.openVersion(this.uow.repos, instance, row.version, { privateKeys: withKeys });
    try {
      let privateKeyPem = "";
      let privateKeyJwe = "";
      if (m.privateKey) {
        if (recipient) privateKeyJwe = await encryptToRecipient(recipient, m.privateKey);
        else privateKeyPem = m.privateKey.toString("utf8");
      }
      const cert = row.certificate;
      return {
        certificate: cert,
        certificatePem: m.certificatePem,
        privateKeyPem,
        privateKeyJwe,
        intermediatesPem: m.intermediatesPem,
        resumeToken: this.pageTokens.encode(binding, { value: cert.createTime.getTime(), id: cert.id }),
      };
    } finally {
      m.privateKey?.fill(0);
    }
  }
}
