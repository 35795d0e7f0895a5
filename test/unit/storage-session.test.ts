/**
 * The session settings every pooled MySQL/MariaDB connection gets (storage/db.ts), read back from a real server:
 * strict mode, UTC, the server-side statement bound, and Galera's causal reads (wsrep_sync_wait), which the
 * Galera cluster test (test/cluster) relies on when one replica reads what another was told was committed.
 */
import { describe, expect, it } from "vitest";
import { createKnex } from "../../src/storage/db.js";
import { MYSQL_URL, mysqlAvailable } from "../helpers/service.js";

const haveMysql = await mysqlAvailable();

describe.skipIf(!haveMysql)("MySQL/MariaDB session settings", () => {
  it("sets strict mode, UTC, max_statement_time and wsrep_sync_wait on every pooled connection", async () => {
    const k = createKnex({ client: "mysql", url: `${MYSQL_URL}/`, poolMax: 2, timeouts: { connectMs: 2_000, acquireMs: 2_000, operationMs: 7_000 } });
    try {
      const [rows] = (await k.raw("SELECT @@session.sql_mode AS mode, @@session.time_zone AS tz, @@session.max_statement_time AS mst, @@session.wsrep_sync_wait AS sw")) as [
        { mode: string; tz: string; mst: number | string; sw: number | string }[],
      ];
      expect(rows[0].mode.split(",")).toContain("STRICT_ALL_TABLES");
      expect(rows[0].tz).toBe("+00:00");
      expect(Number(rows[0].mst)).toBe(7);
      // 1: SELECT, SHOW and BEGIN wait until the node has applied what the cluster committed before them.
      expect(Number(rows[0].sw)).toBe(3);
    } finally {
      await k.destroy();
    }
  });
});
