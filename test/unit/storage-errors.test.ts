/**
 * Connection-level database failures, produced for real, become UNAVAILABLE DATABASE_UNAVAILABLE (retry with
 * backoff) instead of INTERNAL: a pool with no free connection within its acquire timeout, a refused connection,
 * and a query on a connection mysql2 already saw close.
 */
import knexFactory from "knex";
import mysql from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { UnavailableError } from "../../src/domain/errors.js";
import { translateDriverError } from "../../src/storage/errors.js";
import { MYSQL_URL, mysqlAvailable } from "../helpers/service.js";

const haveMysql = await mysqlAvailable();

/** The error `p` rejects with. */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}

describe("driver errors that mean the database cannot serve now", () => {
  it("maps a pool with no free connection (KnexTimeoutError) to DATABASE_UNAVAILABLE", async () => {
    const k = knexFactory({ client: "better-sqlite3", connection: { filename: ":memory:" }, useNullAsDefault: true, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 200 });
    try {
      let release!: () => void;
      const held = k.transaction(async () => new Promise<void>((r) => (release = r)));
      await new Promise((r) => setTimeout(r, 50));
      const err = await failure(k.raw("select 1"));
      release();
      await held;
      expect((err as Error).name).toBe("KnexTimeoutError");
      const mapped = translateDriverError(err);
      expect(mapped).toBeInstanceOf(UnavailableError);
      expect((mapped as UnavailableError).reason).toBe("DATABASE_UNAVAILABLE");
    } finally {
      await k.destroy();
    }
  });

  it("leaves a statement's own error (a syntax error) as it is", async () => {
    const k = knexFactory({ client: "better-sqlite3", connection: { filename: ":memory:" }, useNullAsDefault: true });
    try {
      const err = await failure(k.raw("selec 1"));
      expect(translateDriverError(err)).toBe(err);
    } finally {
      await k.destroy();
    }
  });

  it.skipIf(!haveMysql)("maps a refused connection and a query on a closed mysql2 connection to DATABASE_UNAVAILABLE", async () => {
    const refused = await failure(mysql.createConnection({ host: "127.0.0.1", port: 1, connectTimeout: 2000 }));
    expect(translateDriverError(refused)).toBeInstanceOf(UnavailableError);
    const url = new URL(MYSQL_URL);
    const conn = await mysql.createConnection({ host: url.hostname, port: Number(url.port || 3306), user: url.username || "root" });
    conn.destroy();
    const closed = await failure(conn.query("select 1"));
    expect((closed as Error).message).toContain("closed state");
    expect(translateDriverError(closed)).toBeInstanceOf(UnavailableError);
  });
});
