/**
 * One server per SQLite database. Two servers on one data folder would each keep their own caches, leases and
 * page-token keys over one file; the second one is refused at start.
 *
 * The lock is SQLite's own: a small side database `<database>.lock` opened in `locking_mode=EXCLUSIVE` with an
 * open `BEGIN EXCLUSIVE` transaction, so it is a POSIX advisory lock the kernel drops when the process dies
 * (SIGKILL, crash, power loss): there is no stale lock to take over and no pid to trust. The database itself is
 * not locked exclusively, so tools and tests can still read it. (Like every SQLite lock, it is only as good as the
 * file system's POSIX locks: keep the data folder on a local disk.)
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import type { DatabaseConfig } from "./db.js";

/** Another live process holds the lock of this SQLite database. */
export class DatabaseInUseError extends Error {
  constructor(
    /** The SQLite database file. */
    readonly filename: string,
    /** The lock file held by the other server. */
    readonly lockFile: string,
  ) {
    super(`the SQLite database ${filename} is in use by another running server (it holds ${lockFile})`);
    this.name = "DatabaseInUseError";
  }
}

/** A held lock; `release` is idempotent. */
export interface DatabaseLock {
  /** The lock file. */
  readonly file: string;
  release(): void;
}

/**
 * Takes the exclusive lock of `cfg`'s SQLite database for this process, without waiting. MySQL/MariaDB (shared by
 * replicas by design) and `:memory:` need none: undefined.
 * @returns the lock, held until `release()` or the process's end.
 * @throws DatabaseInUseError when another connection (another process, or another service in this one) holds it;
 *         the file system's error when the lock file cannot be created or opened.
 */
export function lockDatabase(cfg: DatabaseConfig): DatabaseLock | undefined {
  if (cfg.client !== "sqlite" || cfg.filename === ":memory:") return undefined;
  const file = `${cfg.filename}.lock`;
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  closeSync(openSync(file, "a", 0o600));
  // timeout 0: a held lock answers SQLITE_BUSY at once instead of after better-sqlite3's 5 s default.
  const db = new Database(file, { timeout: 0 });
  try {
    db.pragma("locking_mode = EXCLUSIVE");
    db.exec("BEGIN EXCLUSIVE");
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code?.startsWith("SQLITE_BUSY")) throw new DatabaseInUseError(cfg.filename, file);
    throw err;
  }
  return {
    file,
    release() {
      if (db.open) db.close();
    },
  };
}
