/**
 * What the database drivers' errors mean. better-sqlite3 and mysql2 report failures by `code` and `errno`; this
 * module is the only place that knows those values, so the layers above see domain errors, never a driver's.
 */
import { UnavailableError } from "../domain/errors.js";
import type { Repositories } from "../domain/ports.js";

/** A driver error's identifying fields, when it has them. */
type DriverError = { code?: string; errno?: number } | undefined;

/** True when `err` is a unique/primary key violation on either dialect. */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as DriverError;
  return (
    e?.code === "ER_DUP_ENTRY" ||
    e?.errno === 1062 ||
    e?.code === "SQLITE_CONSTRAINT_UNIQUE" ||
    e?.code === "SQLITE_CONSTRAINT_PRIMARYKEY"
  );
}

/** True for a MySQL deadlock (1213) or lock wait timeout (1205), or SQLite busy: the transaction may be retried. */
export function isRetryableConflict(err: unknown): boolean {
  const e = err as DriverError;
  return e?.errno === 1213 || e?.errno === 1205 || e?.code === "ER_LOCK_DEADLOCK" || e?.code === "ER_LOCK_WAIT_TIMEOUT" || e?.code === "SQLITE_BUSY";
}

/** Driver and socket codes that mean the database cannot serve now, whatever the statement. */
const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "ER_CON_COUNT_ERROR", // too many connections (1040)
  "ER_SERVER_SHUTDOWN", // shutting down (1053)
  "ER_OPTION_PREVENTS_STATEMENT", // --read-only, e.g. a replica or a Galera node that left the cluster (1290)
  "ER_READ_ONLY_MODE",
  "SQLITE_BUSY",
]);

/**
 * True when the database cannot be reached, dropped or closed the connection, refuses writes for now, has no
 * connection free in the pool within the acquire timeout (KnexTimeoutError), or (SQLite) stayed locked past
 * busy_timeout.
 */
function isUnreachable(err: unknown): boolean {
  const e = err as (DriverError & { name?: string; message?: string }) | undefined;
  if (e?.code !== undefined && UNREACHABLE_CODES.has(e.code)) return true;
  if (e?.name === "KnexTimeoutError") return true;
  // mysql2 reports a query on a connection it already saw close with a bare Error and no code.
  return typeof e?.message === "string" && e.message.includes("connection is in closed state");
}

/**
 * `err` as the layers above should see it: UnavailableError DATABASE_UNAVAILABLE (retry with backoff) for a
 * database that cannot be reached now, the driver error kept as its cause for the log; any other error as is.
 */
export function translateDriverError(err: unknown): unknown {
  if (!isUnreachable(err)) return err;
  return new UnavailableError("DATABASE_UNAVAILABLE", "the database is unavailable; retry with backoff", {}, err);
}

/** `repos` with every method's rejections passed through `translateDriverError`. */
export function translatingRepositories(repos: Repositories): Repositories {
  return {
    instances: translating(repos.instances),
    deks: translating(repos.deks),
    certificates: translating(repos.certificates),
    requestIds: translating(repos.requestIds),
    reclamations: translating(repos.reclamations),
    apiKeys: translating(repos.apiKeys),
    policies: translating(repos.policies),
    audit: translating(repos.audit),
    jobLeases: translating(repos.jobLeases),
  };
}

/** A view of `repo` whose methods translate driver errors; the methods still run on `repo` itself. */
function translating<T extends object>(repo: T): T {
  return new Proxy(repo, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        try {
          return await (value as (...a: unknown[]) => unknown).apply(target, args);
        } catch (err) {
          throw translateDriverError(err);
        }
      };
    },
  });
}
