/**
 * Knex client per dialect. SQLite (better-sqlite3) is the embedded default; MySQL/MariaDB (mysql2) is the
 * production database. Dialect differences are kept here and in migrations.ts.
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import knexFactory, { type Knex } from "knex";
import type { Logger } from "pino";

/** Database settings: the embedded SQLite file, or a MySQL/MariaDB URL (may hold a password: never log it). */
export type DatabaseConfig = ({ client: "sqlite"; filename: string } | { client: "mysql"; url: string; poolMax: number }) & { timeouts?: DatabaseTimeouts };

/** How long the service waits for the database; every wait is bounded (a hung server must not hang calls). */
export interface DatabaseTimeouts {
  /** Opening a connection (TCP and handshake), ms. */
  connectMs: number;
  /** Waiting for a free connection of the pool, ms. */
  acquireMs: number;
  /**
   * One repository call or one whole transaction, ms; the call's deadline bounds it further
   * (storage/index.ts). MariaDB also stops a statement running longer (`max_statement_time`).
   */
  operationMs: number;
}

/** What the service uses when the configuration does not say (CM_DATABASE_*_TIMEOUT_SECONDS). */
export const DEFAULT_DATABASE_TIMEOUTS: DatabaseTimeouts = { connectMs: 5_000, acquireMs: 10_000, operationMs: 30_000 };

/**
 * What knex (and the driver warnings it relays) may say, shaped for the JSON log: a string is kept (cut at 2,000
 * characters), a query object is reduced to its SQL text and method. Bindings are never kept: they may hold
 * ciphertext, wrapped keys or API key hashes.
 */
function knexMessage(message: unknown): Record<string, unknown> {
  if (typeof message === "string") return { detail: message.slice(0, 2000) };
  if (message instanceof Error) return { detail: message.message.slice(0, 2000) };
  if (message && typeof message === "object") {
    const { sql, method } = message as { sql?: unknown; method?: unknown };
    return { ...(typeof sql === "string" ? { sql: sql.slice(0, 2000) } : {}), ...(typeof method === "string" ? { method } : {}) };
  }
  return { detail: String(message).slice(0, 2000) };
}

/**
 * Knex's `log` option routing its warnings, errors and deprecations to `log` (JSON, `component: "knex"`) instead
 * of the console. Debug output (queries, only with knex's `debug` on) goes at debug level, without bindings.
 */
function knexLog(log: Logger | undefined): Knex.Config["log"] {
  if (!log) return undefined;
  const l = log.child({ component: "knex" });
  return {
    warn: (m: unknown) => l.warn(knexMessage(m), "knex warning"),
    error: (m: unknown) => l.error(knexMessage(m), "knex error"),
    deprecate: (method: string, alternative: string) => l.warn({ method, alternative }, "knex deprecation"),
    debug: (m: unknown) => l.debug(knexMessage(m), "knex debug"),
  };
}

/**
 * Creates a Knex instance for `cfg`. The SQLite file's directory is created with mode 0700. With `log`, knex's
 * own messages go to it (see `knexLog`); without, knex writes them to the console.
 * @throws the file system's error when the SQLite file or its folder cannot be created.
 */
export function createKnex(cfg: DatabaseConfig, log?: Logger): Knex {
  const logOption = knexLog(log);
  const timeouts = cfg.timeouts ?? DEFAULT_DATABASE_TIMEOUTS;
  if (cfg.client === "sqlite") {
    if (cfg.filename !== ":memory:") {
      mkdirSync(path.dirname(cfg.filename), { recursive: true, mode: 0o700 });
      // Create the file owner-only before SQLite does (its -wal and -shm files copy these permissions).
      closeSync(openSync(cfg.filename, "a", 0o600));
    }
    return knexFactory({
      client: "better-sqlite3",
      connection: { filename: cfg.filename },
      useNullAsDefault: true,
      acquireConnectionTimeout: timeouts.acquireMs,
      ...(logOption ? { log: logOption } : {}),
      pool: {
        min: 1,
        max: 1,
        // WAL + NORMAL: autocommit inserts about 10x faster than with the rollback journal;
        // busy_timeout lets a second process (npm run migrate) wait instead of failing.
        afterCreate(conn: { pragma(s: string): unknown }, done: (err: Error | null, conn: unknown) => void) {
          try {
            conn.pragma("journal_mode = WAL");
            conn.pragma("synchronous = NORMAL");
            conn.pragma("foreign_keys = ON");
            conn.pragma("busy_timeout = 5000");
            done(null, conn);
          } catch (err) {
            done(err as Error, conn);
          }
        },
      },
    });
  }
  return knexFactory({
    client: "mysql2",
    ...(logOption ? { log: logOption } : {}),
    acquireConnectionTimeout: timeouts.acquireMs,
    connection: {
      uri: cfg.url,
      connectTimeout: timeouts.connectMs,
      timezone: "Z",
      charset: "utf8mb4",
      supportBigNumbers: true,
      bigNumberStrings: false,
    } as Knex.MySql2ConnectionConfig & { uri: string },
    pool: {
      min: 0,
      max: cfg.poolMax,
      // Strict mode so MySQL never truncates silently; UTC so nothing depends on the server's zone.
      afterCreate(
        conn: { query(sql: string, cb: (err: Error | null) => void): void },
        done: (err: Error | null, conn: unknown) => void,
      ) {
        conn.query(
          "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'",
          (err) => {
            if (err) return done(err, conn);
            // MariaDB stops a statement that runs past the operation timeout on its side too (seconds); MySQL
            // has no such variable (ER_UNKNOWN_SYSTEM_VARIABLE), and the client-side bound still holds there.
            conn.query(`SET SESSION max_statement_time = ${Math.ceil(timeouts.operationMs / 1000)}`, (e) => {
              if (e && (e as { errno?: number }).errno !== ER_UNKNOWN_SYSTEM_VARIABLE) return done(e, conn);
              // On a Galera cluster, replicas on different nodes must read what another replica was just told
              // was committed (a created instance, an imported version): nodes apply others' write-sets
              // asynchronously, so reads, transaction starts and autocommit UPDATE/DELETE (lease claims, last-use
              // writes, outside any transaction) wait for the node to catch up with the cluster (wsrep_sync_wait
              // 3 = 1 SELECT, SHOW, BEGIN + 2 UPDATE, DELETE). A no-op without Galera; unknown to MySQL and to a
              // MariaDB built without wsrep (ER_UNKNOWN_SYSTEM_VARIABLE), which have no such lag to wait for.
              conn.query("SET SESSION wsrep_sync_wait = 3", (e2) => done(e2 && (e2 as { errno?: number }).errno !== ER_UNKNOWN_SYSTEM_VARIABLE ? e2 : null, conn));
            });
          },
        );
      },
    },
  });
}

const ER_UNKNOWN_SYSTEM_VARIABLE = 1193;

/** True when `db` talks to MySQL/MariaDB. */
export function isMysql(db: Knex): boolean {
  return db.client.config.client === "mysql2";
}

/** A nullable epoch-milliseconds column (BIGINT may arrive as a string) as a Date, or undefined for NULL. */
export const optionalDate = (v: number | string | null): Date | undefined => (v === null || v === undefined ? undefined : new Date(Number(v)));

/** The first row `query` returns, mapped by `map`; undefined when there is none. */
export async function firstRow<Row, T>(query: Knex.QueryBuilder, map: (row: Row) => T): Promise<T | undefined> {
  const row = (await query.first()) as Row | undefined;
  return row && map(row);
}

/**
 * Keyset pagination predicate "(col, id) after (value, afterId)" in the order given, written as
 * `col >= v AND (col > v OR id > afterId)` (or the mirror for descending): the leading range lets SQLite and
 * MySQL seek the (..., col, id) index instead of scanning from the first row on every page.
 */
export function keysetAfter(q: Knex.QueryBuilder, col: string, idCol: string, value: number | string, afterId: string, descending: boolean): void {
  const [inclusive, strict] = descending ? ["<=", "<"] : [">=", ">"];
  q.andWhere(col, inclusive, value).andWhere((w) => w.where(col, strict, value).orWhere(idCol, strict, afterId));
}
