/**
 * The purge job: every interval, reclaims the reclamations whose `expire_time` has passed. Safe with several
 * replicas: each reclamation is claimed by a conditional UPDATE in the database (see ReclamationService), not
 * by an in-process lock. Ticks never overlap, and `stop()` waits for a running tick to end.
 */
import type { Logger } from "pino";
import type { ReclamationService } from "../services/reclamations.js";

/** A running periodic job. */
export interface Job {
  /** Runs one tick now (also used by tests), unless one is running. */
  runOnce(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the purge job with `intervalMs` between ticks. */
export function startPurgeJob(reclamations: ReclamationService, intervalMs: number, log: Logger): Job {
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = (): Promise<void> => {
    if (running || stopped) return running ?? Promise.resolve();
    running = reclamations
      .purgeDue()
      .then(
        (ids) => {
          if (ids.length > 0) log.info({ reclaimed: ids.length }, "purge tick");
        },
        (err: unknown) => log.error({ err }, "purge tick failed; retrying next interval"),
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = setInterval(() => void tick(), intervalMs);
  timer.unref();
  return {
    runOnce: tick,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
