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

/** True when the database cannot be reached, dropped the connection, or (SQLite) stayed locked past busy_timeout. */
function isUnreachable(err: unknown): boolean {
  const code = (err as DriverError)?.code;
  return code === "ECONNREFUSED" || code === "PROTOCOL_CONNECTION_LOST" || code === "ETIMEDOUT" || code === "SQLITE_BUSY";
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
