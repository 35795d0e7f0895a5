/**
 * What the database drivers' errors mean. better-sqlite3 and mysql2 report failures by `code` and `errno`; this
 * module is the only place that knows those values, so the layers above see domain errors, never a driver's.
 */
import type { DatabaseConfig } from "./db.js";
import { AbortedError, UnavailableError } from "../domain/errors.js";
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
  return isMysqlConflict(err) || (err as DriverError)?.code === "SQLITE_BUSY";
}

/** A MySQL/MariaDB deadlock (1213, also a lost Galera certification) or lock wait timeout (1205). */
function isMysqlConflict(err: unknown): boolean {
  const e = err as DriverError;
  return e?.errno === 1213 || e?.errno === 1205 || e?.code === "ER_LOCK_DEADLOCK" || e?.code === "ER_LOCK_WAIT_TIMEOUT";
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
  // 1047 (ER_UNKNOWN_COM_ERROR) from a Galera node outside the Primary Component (partitioned, lost quorum, or still
  // joining by IST/SST), which answers every query so until it is Synced again. Elsewhere 1047 is an unknown
  // command, a bug of ours: only the wsrep message makes it "unavailable".
  if (e?.errno === 1047 && typeof e.message === "string" && e.message.includes("WSREP has not yet prepared node")) return true;
  if (e?.name === "KnexTimeoutError") return true;
  // mysql2 reports a query on a connection it already saw close with a bare Error and no code.
  return typeof e?.message === "string" && e.message.includes("connection is in closed state");
}

/**
 * `err` as the layers above should see it: UnavailableError DATABASE_UNAVAILABLE (retry with backoff) for a
 * database that cannot be reached now; AbortedError CONCURRENT_CONFLICT for a deadlock or lock wait timeout that
 * reaches here, i.e. one of a statement run outside `UnitOfWork.transaction` (which retries its own): on Galera a
 * certification conflict of an autocommit statement is 1213 once the server's own retry
 * (wsrep_retry_autocommit) lost too. The driver error is kept as the cause for the log; any other error as is.
 */
export function translateDriverError(err: unknown): unknown {
  if (isMysqlConflict(err)) return new AbortedError("CONCURRENT_CONFLICT", "the change conflicted with a concurrent change; retry it", {}, err);
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

/** The codes and messages of `err` and its causes, outermost first (driver errors may arrive wrapped). */
function errorChain(err: unknown): { code?: string; message: string }[] {
  const out: { code?: string; message: string }[] = [];
  for (let e = err as (Error & { code?: string; cause?: unknown }) | undefined, i = 0; e && i < 8; e = e.cause as typeof e, i++) {
    out.push({ code: typeof e.code === "string" ? e.code : undefined, message: String(e.message ?? e) });
  }
  return out;
}

/**
 * Why a MySQL/MariaDB database could not be opened at start, when the operator can fix it: the database does not
 * exist (with the statement that creates it), the server refuses the user, or cannot be reached. Names the host,
 * port, database and user from `cfg.url`, never its password.
 * @returns the variable to fix and the problem, or undefined (SQLite, or another failure).
 */
export function databaseStartProblem(err: unknown, cfg: DatabaseConfig): { variable: "CM_DATABASE_URL"; problem: string } | undefined {
  if (cfg.client !== "mysql") return undefined;
  const chain = errorChain(err);
  const has = (code: string) => chain.some((e) => e.code === code || e.message.includes(code));
  const url = new URL(cfg.url);
  const where = `${url.hostname}:${url.port || "3306"}`;
  const name = decodeURIComponent(url.pathname.replace(/^\//, ""));
  const problem = (text: string) => ({ variable: "CM_DATABASE_URL" as const, problem: text });
  if (has("ER_BAD_DB_ERROR")) {
    return problem(`names database ${JSON.stringify(name)} on ${where}, which does not exist: create it with CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  }
  if (chain.some((e) => /^ER_(DB)?ACCESS_DENIED/.test(e.code ?? ""))) {
    return problem(`names user ${JSON.stringify(decodeURIComponent(url.username))}, whom the database server at ${where} refused: check the user, its password and its grants on ${JSON.stringify(name)}`);
  }
  for (const code of ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]) {
    if (has(code)) return problem(`points at ${where}, which cannot be reached (${code}): start the database server, or fix the host and port`);
  }
  return undefined;
}
