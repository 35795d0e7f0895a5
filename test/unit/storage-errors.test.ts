/**
 * Connection-level database failures, produced for real, become UNAVAILABLE DATABASE_UNAVAILABLE (retry with
 * backoff) instead of INTERNAL: a pool with no free connection within its acquire timeout, a refused connection,
 * and a query on a connection mysql2 already saw close.
 */
import knexFactory from "knex";
import mysql from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { AbortedError, UnavailableError } from "../../src/domain/errors.js";
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

  it.skipIf(!haveMysql)("maps a lock conflict of a statement outside a transaction to ABORTED CONCURRENT_CONFLICT", async () => {
    // A real conflict on the test server: one connection holds a row lock, another's autocommit UPDATE of the row
    // gives up after a 1 s lock wait (1205), the same family as the 1213 a Galera certification conflict gives.
    const url = new URL(MYSQL_URL);
    const opts = { host: url.hostname, port: Number(url.port || 3306), user: url.username || "root" };
    const holder = await mysql.createConnection(opts);
    const waiter = await mysql.createConnection(opts);
    const table = `cm_test_conflicts_${process.pid}.t`;
    try {
      await holder.query(`CREATE DATABASE cm_test_conflicts_${process.pid}`);
      await holder.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, v INT) ENGINE=InnoDB`);
      await holder.query(`INSERT INTO ${table} VALUES (1, 0)`);
      await holder.query("START TRANSACTION");
      await holder.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`);
      await waiter.query("SET SESSION innodb_lock_wait_timeout = 1");
      const err = await failure(waiter.query(`UPDATE ${table} SET v = v + 2 WHERE id = 1`));
      expect((err as { errno?: number }).errno).toBe(1205);
      const mapped = translateDriverError(err);
      expect(mapped).toBeInstanceOf(AbortedError);
      expect((mapped as AbortedError).reason).toBe("CONCURRENT_CONFLICT");
    } finally {
      await holder.query("ROLLBACK").catch(() => undefined);
      await holder.query(`DROP DATABASE IF EXISTS cm_test_conflicts_${process.pid}`).catch(() => undefined);
      holder.destroy();
      waiter.destroy();
    }
  });
});
