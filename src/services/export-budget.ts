/**
 * How much ExportCertificates may hold in memory, across every stream, and how many export streams one caller
 * may have open. A client that opens streams and never reads them must not be able to grow the server's memory:
 * each stream reserves the bytes it is about to hold (sealed rows read from the database, then the one item it
 * opens and hands to the transport) before it reads or decrypts them, and gives them back once the transport
 * took the item, or when the stream ends, fails or is cancelled.
 *
 * - A new stream is refused (ExportBudgetExhaustedError: RESOURCE_EXHAUSTED with RetryInfo) when its caller
 *   already has `streamsPerCaller` open, or its connection `streamsPerConnection`, or when the budget is full (all of it reserved, or streams already
 *   waiting for room).
 * - A stream already running waits for room instead (FIFO) and stops waiting when its call is cancelled. A
 *   stream waits only between batches, when it holds nothing, so waiting never blocks those holding bytes.
 * - When nothing at all is reserved, one reservation is granted whatever its size, so an export always moves.
 *
 * The bytes are estimates of what the JavaScript heap holds (string lengths; see ExportService), not a
 * measurement of the heap.
 */
import { CancelledError, ExportBudgetExhaustedError } from "../domain/errors.js";

/** What to wait before retrying a refused export, ms (sent as RetryInfo). */
const RETRY_AFTER_MS = 1000;

interface Waiter {
  bytes: number;
  grant: () => void;
}

/** The export memory budget and the per-caller stream cap, shared by every export stream of the process. */
export class ExportBudget {
  #used = 0;
  readonly #open = new Map<string, number>();
  readonly #perConnection = new Map<string, number>();
  readonly #waiting: Waiter[] = [];

  /**
   * @param limitBytes bytes all export streams together may hold (CM_EXPORT_MEMORY_BUDGET_MB).
   * @param streamsPerCaller export streams one principal may have open at once (CM_EXPORT_STREAMS_PER_CALLER).
   * @param streamsPerConnection export streams one client connection may have open at once, whoever the callers
   *        on it (CM_EXPORT_STREAMS_PER_CONNECTION).
   */
  constructor(
    readonly limitBytes: number,
    readonly streamsPerCaller: number,
    readonly streamsPerConnection = Number.POSITIVE_INFINITY,
  ) {}

  /** Bytes reserved now, by every stream. */
  get usedBytes(): number {
    return this.#used;
  }

  /** Export streams open now, all callers. */
  get openStreams(): number {
    let n = 0;
    for (const c of this.#open.values()) n += c;
    return n;
  }

  /**
   * Admits a new export stream of `principal` on client connection `connection` (the peer address and port).
   * @returns its lease; the caller must `close()` it on every path (try/finally).
   * @throws ExportBudgetExhaustedError when the caller or the connection is at its cap, or the budget is full.
   */
  open(principal: string, connection?: string): ExportLease {
    const mine = this.#open.get(principal) ?? 0;
    if (mine >= this.streamsPerCaller) throw new ExportBudgetExhaustedError(RETRY_AFTER_MS, "streams_per_caller", String(this.streamsPerCaller));
    const onConnection = connection === undefined ? 0 : (this.#perConnection.get(connection) ?? 0);
    if (onConnection >= this.streamsPerConnection) throw new ExportBudgetExhaustedError(RETRY_AFTER_MS, "streams_per_connection", String(this.streamsPerConnection));
    if (this.#used >= this.limitBytes || this.#waiting.length > 0) {
      throw new ExportBudgetExhaustedError(RETRY_AFTER_MS, "memory_budget", this.limitBytes >= 1024 * 1024 ? `${Math.round(this.limitBytes / 1024 / 1024)} MiB` : `${this.limitBytes} bytes`);
    }
    count(this.#open, principal, +1);
    if (connection !== undefined) count(this.#perConnection, connection, +1);
    return new ExportLease(this, () => {
      count(this.#open, principal, -1);
      if (connection !== undefined) count(this.#perConnection, connection, -1);
    });
  }


  /** Whether `bytes` more fit now (or nothing is reserved at all: the first always fits). */
  #fits(bytes: number): boolean {
    return this.#used === 0 || this.#used + bytes <= this.limitBytes;
  }

  /** @internal Waits until `bytes` fit, then counts them. Rejects with CancelledError when `signal` aborts first. */
  async acquire(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) throw new CancelledError();
    if (this.#waiting.length === 0 && this.#fits(bytes)) {
      this.#used += bytes;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiting.indexOf(waiter);
        if (i >= 0) this.#waiting.splice(i, 1);
        reject(new CancelledError());
        // The head may have been the one blocking the others.
        this.#wake();
      };
      const waiter: Waiter = {
        bytes,
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.#waiting.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** @internal Counts `bytes` at once, over the limit if need be (a true-up after a read that came out larger). */
  take(bytes: number): void {
    this.#used += bytes;
  }

  /** @internal Gives `bytes` back and lets waiting streams in, in order. */
  give(bytes: number): void {
    this.#used = Math.max(0, this.#used - bytes);
    this.#wake();
  }

  #wake(): void {
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0]!.bytes)) {
      const w = this.#waiting.shift()!;
      this.#used += w.bytes;
      w.grant();
    }
  }
}

/** Adds `delta` to `key`'s count, dropping the entry at zero. */
function count(map: Map<string, number>, key: string, delta: number): void {
  const n = (map.get(key) ?? 0) + delta;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}

/** One export stream's share of the budget: what it holds now; `close()` gives all of it back (idempotent). */
export class ExportLease {
  #held = 0;
  #closed = false;

  constructor(
    private readonly budget: ExportBudget,
    private readonly onClose: () => void,
  ) {}

  /** Bytes this stream holds now. */
  get heldBytes(): number {
    return this.#held;
  }

  /** Waits for room for `bytes` more (see ExportBudget). @throws CancelledError when `signal` aborts first. */
  async reserve(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    if (this.#closed) throw new CancelledError();
    await this.budget.acquire(bytes, signal);
    if (this.#closed) {
      // Closed while waiting: nobody will release these.
      this.budget.give(bytes);
      throw new CancelledError();
    }
    this.#held += bytes;
  }

  /** Sets what this stream holds to `bytes` at once: gives back the difference, or takes it even over the limit. */
  resize(bytes: number): void {
    if (this.#closed) return;
    const delta = bytes - this.#held;
    this.#held = bytes;
    if (delta > 0) this.budget.take(delta);
    else if (delta < 0) this.budget.give(-delta);
  }

  /** Gives back `bytes` of what this stream holds. */
  release(bytes: number): void {
    this.resize(Math.max(0, this.#held - bytes));
  }

  /** Gives back everything and frees the caller's stream slot. Safe to call more than once. */
  close(): void {
    if (this.#closed) return;
    this.resize(0);
    this.#closed = true;
    this.onClose();
  }
}
