/**
 * Runs costly work on hostile input (reading a PKCS#12 file, decrypting a private key) in a worker thread, so
 * that a file that sets its own work factor can neither block the server's event loop nor run forever: each task
 * has a time limit after which its worker is terminated, and its own small heap. Workers come from a bounded
 * pool (at most one per core, four at most); callers beyond a bounded queue are refused with RESOURCE_EXHAUSTED
 * SERVER_BUSY rather than piling up. Each worker is a type-checked module of this folder, `<name>.worker.ts`.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { CancelledError, DomainError } from "../domain/errors.js";

/** Tasks run at the same time (at most one per core, so they do not starve each other). */
export const MAX_ISOLATED_TASKS = Math.max(1, Math.min(4, availableParallelism()));

/** Callers allowed to wait for a worker; more are refused with RESOURCE_EXHAUSTED SERVER_BUSY. */
export const MAX_WAITING_TASKS = 32;

/** One task: a worker module that posts exactly one message. */
export interface IsolatedTask {
  /** The worker module's name: `pkcs12` runs `pkcs12.worker.ts` (or `.js` when compiled). */
  worker: string;
  workerData: unknown;
  /** ArrayBuffers moved (not copied) into the worker. */
  transferList?: ArrayBuffer[];
  /** Wall-clock limit, ms. */
  timeoutMs: number;
  /** Old-generation heap of the worker, MB. */
  heapMb: number;
  /** The error to reject with when the time limit passes. */
  onTimeout: () => Error;
  /** The error to reject with when the worker runs out of heap. */
  onOutOfMemory: (cause: Error) => Error;
  /** Aborted when the caller's RPC is cancelled: the task leaves the queue, or its worker is terminated. */
  signal?: AbortSignal;
}

let active = 0;
const waiting: (() => void)[] = [];

/** Current use of the pool (for tests and metrics). */
export function isolatedTaskStats(): { active: number; waiting: number } {
  return { active, waiting: waiting.length };
}

/**
 * Runs one task in a fresh worker from the pool and resolves with the message it posts, once the worker has
 * stopped (so a slot is never handed on while a terminated worker still runs).
 *
 * @returns the worker's single message.
 * @throws CancelledError when `task.signal` aborts first. DomainError RESOURCE_EXHAUSTED SERVER_BUSY when
 *   MAX_WAITING_TASKS callers already wait; the task's onTimeout / onOutOfMemory errors; a plain Error when the
 *   worker fails otherwise (a bug, not the input).
 */
export async function runIsolated<T>(task: IsolatedTask): Promise<T> {
  if (task.signal?.aborted) throw new CancelledError();
  if (active < MAX_ISOLATED_TASKS) {
    active += 1;
  } else {
    if (waiting.length >= MAX_WAITING_TASKS) {
      throw new DomainError(
        "RESOURCE_EXHAUSTED",
        "SERVER_BUSY",
        `the server is already reading ${active} PKCS#12 files or encrypted keys with ${waiting.length} more waiting; retry with exponential backoff`,
        { metadata: { limit: String(MAX_WAITING_TASKS) } },
      );
    }
    // A cancelled caller leaves the queue at once instead of running for nobody.
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = waiting.indexOf(wake);
        if (i >= 0) waiting.splice(i, 1);
        reject(new CancelledError());
      };
      const wake = () => {
        task.signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      task.signal?.addEventListener("abort", onAbort, { once: true });
      waiting.push(wake);
    });
  }
  try {
    return await runWorker<T>(task);
  } finally {
    const next = waiting.shift();
    if (next) next();
    else active -= 1;
  }
}

/**
 * Worker `name`'s module, by this module's own extension: compiled, `<name>.worker.js` beside it; from the
 * TypeScript sources (vitest, tsx), `<name>.worker.ts` through tsx, a devDependency that dist/ never needs, whose
 * loader a one-line bootstrap registers first (Node 20 ignores `--import tsx` in a worker's execArgv).
 */
function workerEntry(name: string): [string | URL, { eval: boolean }] {
  if (import.meta.url.endsWith(".js")) return [new URL(`./${name}.worker.js`, import.meta.url), { eval: false }];
  const [tsx, entry] = [import.meta.resolve("tsx/esm/api"), new URL(`./${name}.worker.ts`, import.meta.url).href];
  return [`import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`, { eval: true }];
}

function runWorker<T>(task: IsolatedTask): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const [entry, { eval: isEval }] = workerEntry(task.worker);
    const worker = new Worker(entry, {
      eval: isEval,
      workerData: task.workerData,
      transferList: task.transferList,
      resourceLimits: { maxOldGenerationSizeMb: task.heapMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      execArgv: [],
    });
    let settled = false;
    const onAbort = () => finish(() => reject(new CancelledError()));
    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // A stream's one signal serves many tasks: leave no listener behind.
      task.signal?.removeEventListener("abort", onAbort);
      worker.terminate().then(settle, settle);
    };
    const timer = setTimeout(() => finish(() => reject(task.onTimeout())), task.timeoutMs);
    task.signal?.addEventListener("abort", onAbort, { once: true });
    worker.once("message", (message: T) => finish(() => resolve(message)));
    worker.once("error", (err: Error & { code?: string }) =>
      finish(() => reject(err.code === "ERR_WORKER_OUT_OF_MEMORY" ? task.onOutOfMemory(err) : new Error("an isolated worker failed", { cause: err }))),
    );
    worker.once("exit", (code) => finish(() => reject(new Error(`an isolated worker exited with code ${code} without a result`))));
  });
}
