/**
 * Periodic background jobs: the purge of expired reclamations and the finishing of data key rotations. Safe
 * with several replicas: the work itself is claimed in the database (leases, conditional UPDATEs), never by an
 * in-process lock. Ticks of one job never overlap, and `stop()` waits for a running tick to end.
 */
import type { Logger } from "pino";

/** A running periodic job. */
export interface Job {
  /** Runs one tick now (also used by tests), or waits for the one running. */
  runOnce(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts a job that calls `tick` every `intervalMs`; `tick` returns how many items it handled (logged when > 0).
 * A failing tick is logged and retried at the next interval.
 */
export function startPeriodicJob(name: string, tick: () => Promise<number>, intervalMs: number, log: Logger): Job {
  let running: Promise<void> | undefined;
  let stopped = false;
  const run = (): Promise<void> => {
    if (running || stopped) return running ?? Promise.resolve();
    running = tick()
      .then(
        (n) => {
          if (n > 0) log.info({ job: name, handled: n }, "job tick");
        },
        (err: unknown) => log.error({ job: name, err: (err as Error)?.message }, "job tick failed; retrying next interval"),
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  return {
    runOnce: run,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
