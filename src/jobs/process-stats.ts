/**
 * Process statistics in the log: with CM_PROCESS_STATS_INTERVAL_SECONDS set, one `process stats` line per
 * interval with the memory, handles, file descriptors and event-loop delay of this process, so a leak or a
 * stalled loop shows in the logs an operator already ships (and `npm run soak` reads them from the server's
 * stdout). Reading them costs a `process.memoryUsage()`, a list of the active resources and one directory read:
 * nothing that needs the database or holds a lock.
 */
import { readdirSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "pino";

/** One sample: what a `process stats` log line carries. */
export interface ProcessStats {
  /** Resident set size, bytes (`process.memoryUsage().rss`). */
  rssBytes: number;
  /** V8 heap in use and reserved, bytes. */
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** Memory of C++ objects bound to JS objects (Buffers included), bytes. */
  externalBytes: number;
  /** ArrayBuffers and Buffers alone (part of `externalBytes`), bytes. */
  arrayBuffersBytes: number;
  /** Resources keeping the event loop alive (`process.getActiveResourcesInfo()`): sockets, servers, ref'd timers, pending requests. */
  activeHandles: number;
  /** The same, counted by type (`TCPSocketWrap`, `Timeout`, `FSReqCallback`, ...), to see which kind grows. */
  activeResources: Record<string, number>;
  /** Entries of /proc/self/fd; undefined where /proc is not mounted (not Linux). */
  openFds?: number;
  /**
   * Event-loop delay over the interval since the previous sample, ms (perf_hooks.monitorEventLoopDelay, 10 ms
   * resolution, so a loop that is never late reads about 10): median, 99th percentile and worst.
   */
  eventLoopDelayMs: { p50: number; p99: number; max: number };
}

/** Running statistics: `sample()` reads (and starts a new delay interval); `stop()` ends the timer and monitor. */
export interface ProcessStatsMonitor {
  sample(): ProcessStats;
  stop(): void;
}

/** The number of open file descriptors, or undefined without /proc. */
function openFds(): number | undefined {
  try {
    return readdirSync("/proc/self/fd").length;
  } catch {
    return undefined;
  }
}

const ms = (ns: number) => Math.round(ns / 1e4) / 100;

/**
 * Starts measuring. With `intervalMs` > 0, logs `sample()` at info as `process stats` every `intervalMs`; the
 * timer is unref'd, so it never keeps the process alive, and `stop()` clears it. With 0, nothing is logged and
 * the monitor only measures (callers may still `sample()`).
 */
export function startProcessStats(intervalMs: number, log: Logger): ProcessStatsMonitor {
  // 10 ms resolution: each check is one timer wake-up, cheap enough to leave on in production.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const sample = (): ProcessStats => {
    const mem = process.memoryUsage();
    const resources = process.getActiveResourcesInfo();
    const byType: Record<string, number> = {};
    for (const r of resources) byType[r] = (byType[r] ?? 0) + 1;
    // An interval without a single measurement (the loop blocked throughout) reads its max as 0: report what is known.
    const stats: ProcessStats = {
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      heapTotalBytes: mem.heapTotal,
      externalBytes: mem.external,
      arrayBuffersBytes: mem.arrayBuffers,
      activeHandles: resources.length,
      activeResources: byType,
      openFds: openFds(),
      eventLoopDelayMs: delay.count > 0 ? { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) } : { p50: 0, p99: 0, max: 0 },
    };
    delay.reset();
    return stats;
  };
  const timer = intervalMs > 0 ? setInterval(() => log.info(sample(), "process stats"), intervalMs) : undefined;
  timer?.unref();
  return {
    sample,
    stop() {
      clearInterval(timer);
      delay.disable();
    },
  };
}
