/**
 * The audit trail's use cases: reading it (AuditService.ListAuditEvents) and appending the events that are not
 * part of a change's transaction (reads of material, denials), each in its own short transaction awaited before
 * the call is answered. A change's event is appended by the unit of work inside the change's own transaction
 * (domain/audit-scope.ts). A chain is read by sequence number, so a page token carries the last sequence
 * returned; it is bound to the chain, so a token of one chain cannot page through another.
 */
import { parseAuditChain, type AuditEventInput, type AuditRecord, type ChainHead } from "../domain/audit.js";
import type { UnitOfWork } from "../domain/ports.js";
import { PageTokenCodec, pageSize } from "../domain/page-token.js";

/** Page size of ListAuditEvents when the request leaves it 0. */
const DEFAULT_PAGE_SIZE = 100;

/** Audit trail use cases. */
export class AuditService {
  constructor(
    private readonly uow: UnitOfWork,
    private readonly pageTokens: PageTokenCodec,
  ) {}

  /** Appends `event` to `chain` (`instances/{id}` or `services/certmanager`) in its own transaction. */
  record(chain: string, event: AuditEventInput): Promise<AuditRecord> {
    return this.uow.transaction((repos) => repos.audit.append(chain, event));
  }

  /** Every chain's head, for the checkpoints the server logs. */
  async heads(): Promise<{ chain: string; head: ChainHead }[]> {
    const out = [];
    for (const chain of await this.uow.repos.audit.chains()) out.push({ chain, head: await this.uow.repos.audit.head(chain) });
    return out;
  }

  /**
   * One page of a chain's events, oldest first, with the chain's head read in the same transaction. No
   * existence check: an instance without events has an empty chain, and a deleted instance's events stay.
   * @param chain the request's `parent`: `instances/{uuid}` or `services/certmanager`.
   * @param requestedPageSize 0 for 100; larger than 1000 is lowered to 1000.
   * @param pageToken "" for the first page, else a `nextPageToken` of the same chain.
   * @returns the events, the token of the next page ("" on the last page), and the head (seq 0 and
   *          GENESIS_HASH for an empty chain).
   * @throws InvalidArgumentError INVALID_FIELD (`parent`, `page_size` negative), INVALID_PAGE_TOKEN.
   */
  async list(chain: string, requestedPageSize: number, pageToken: string): Promise<{ events: AuditRecord[]; nextPageToken: string; head: ChainHead }> {
    parseAuditChain(chain, "parent");
    const size = requestedPageSize === 0 ? DEFAULT_PAGE_SIZE : pageSize(requestedPageSize);
    const binding = PageTokenCodec.bind("auditEvents", chain);
    const afterSeq = pageToken ? Number(this.pageTokens.decode(pageToken, binding).value) : 0;
    // One transaction, so the head is the one of the snapshot the page comes from.
    const { head, rows } = await this.uow.transaction(async (repos) => {
      const h = await repos.audit.head(chain);
      return { head: h, rows: await repos.audit.list(chain, afterSeq, size + 1) };
    });
    const events = rows.slice(0, size);
    const nextPageToken = rows.length > size ? this.pageTokens.encode(binding, { value: events[events.length - 1].seq, id: "" }) : "";
    return { events, nextPageToken, head };
  }
}
