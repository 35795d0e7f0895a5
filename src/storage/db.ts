/**
 * Knex client per dialect. SQLite (better-sqlite3) is the embedded default; MySQL/MariaDB (mysql2) is the
 * production database. Dialect differences are kept here and in migrations.ts.
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import knexFactory, { type Knex } from "knex";

/** Database settings: the embedded SQLite file, or a MySQL/MariaDB URL (may hold a password: never log it). */
export type DatabaseConfig =
  | { client: "sqlite"; filename: string }
  | { client: "mysql"; url: string; poolMax: number };

/** Creates a Knex instance for `cfg`. The SQLite file's directory is created with mode 0700. */
export function createKnex(cfg: DatabaseConfig): Knex {
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
    connection: {
      uri: cfg.url,
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
          (err) => done(err, conn),
        );
      },
    },
  });
}

/** True when `db` talks to MySQL/MariaDB. */
export function isMysql(db: Knex): boolean {
  return db.client.config.client === "mysql2";
}

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
