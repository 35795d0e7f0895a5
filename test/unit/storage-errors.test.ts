/**
 * Connection-level database failures, produced for real, become UNAVAILABLE DATABASE_UNAVAILABLE (retry with
 * backoff) instead of INTERNAL: a pool with no free connection within its acquire timeout, a refused connection,
 * and a query on a connection mysql2 already saw close.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
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

  it("maps a SQLite database locked by another connection (SQLITE_BUSY) to DATABASE_UNAVAILABLE, not a conflict", async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), "cm-busy-")), "db.sqlite");
    const holder = new Database(file);
    const other = new Database(file, { timeout: 0 });
    try {
      holder.exec("CREATE TABLE t (v INTEGER); BEGIN EXCLUSIVE");
      let err: unknown;
      try {
        other.exec("INSERT INTO t VALUES (1)");
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string }).code).toBe("SQLITE_BUSY");
      const mapped = translateDriverError(err);
      expect(mapped).toBeInstanceOf(UnavailableError);
      expect((mapped as UnavailableError).reason).toBe("DATABASE_UNAVAILABLE");
    } finally {
      holder.close();
      other.close();
      rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  it("treats 1047 as unavailable only with Galera's message; elsewhere it is an unknown command, left as it is", () => {
    // mysql2's error shape for a server error (errno, code, sqlMessage); the wsrep text is MariaDB's own.
    const serverError = (message: string) => Object.assign(new Error(message), { errno: 1047, code: "ER_UNKNOWN_COM_ERROR", sqlState: "08S01", sqlMessage: message });
    const galera = serverError("WSREP has not yet prepared node for application use");
    expect(translateDriverError(galera)).toBeInstanceOf(UnavailableError);
    const unknown = serverError("Unknown command");
    expect(translateDriverError(unknown)).toBe(unknown);
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
