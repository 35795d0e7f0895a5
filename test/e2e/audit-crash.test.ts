/**
 * A change and its audit event commit together, even when the server is killed with SIGKILL in the middle of a
 * storm of imports, on SQLite and on MariaDB: after a restart every certificate row has exactly one
 * ImportCertificate event with code 0 on its instance's chain, no success event lacks its certificate, and every
 * chain verifies.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import knexFactory from "knex";
import { afterAll, describe, expect, it } from "vitest";
import { verifyChain } from "../../src/domain/audit.js";
import { KnexAuditRepository } from "../../src/storage/repositories/audit.js";
import { makeLeaf } from "../helpers/openssl.js";
import { startServerProcess } from "../helpers/process.js";
import { clientsFor, databases, MYSQL_URL } from "../helpers/service.js";

describe.each(await databases())("audit events survive SIGKILL with their changes (%s)", (db) => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "cm-audit-crash-"));
  const dbName = `cm_test_auditcrash_${process.pid}`;
  const url = db === "mysql" ? `${MYSQL_URL}/${dbName}` : `sqlite:${path.join(dataDir, "certmanager.sqlite")}`;
  afterAll(async () => {
    if (db === "mysql") {
      const admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/` } as never, pool: { min: 0, max: 1 } });
      await admin.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
      await admin.destroy();
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("leaves no certificate without its event and no success event without its certificate", async () => {
    if (db === "mysql") {
      const admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/` } as never, pool: { min: 0, max: 1 } });
      await admin.raw(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
      await admin.destroy();
    }
    const env = { CM_DATA_DIR: dataDir, CM_DATABASE_URL: url, CM_RATE_LIMIT_PER_SECOND: "0" };
    const leaves = Array.from({ length: 100 }, (_, i) => makeLeaf({ cn: `crash-${i}-${db}.example.test`, keySlot: `crash-${i % 4}` }));
    let p = await startServerProcess(env);
    const key = readFileSync(path.join(dataDir, "bootstrap-admin.key"), "utf8").trim();
    let c = clientsFor(`127.0.0.1:${p.port}`, key);
    const instance = (await c.instances.createInstance({ instance: {} })).instance!.name;
    // Eight writers import until the server dies under them.
    let next = 0;
    let acknowledged = 0;
    const writers = Array.from({ length: 8 }, async () => {
      while (next < leaves.length) {
        const leaf = leaves[next++];
        await c.certificates.importCertificate({ parent: instance, certificate: leaf.certPem, privateKey: leaf.keyPem }).then(
          () => acknowledged++,
          () => undefined,
        );
      }
    });
    // Killed once the storm is under way (however slow the machine), with most imports still to come.
    while (acknowledged < 10) await new Promise((r) => setTimeout(r, 10));
    p.child.kill("SIGKILL");
    await Promise.all(writers);
    await p.exited.catch(() => undefined);
    c.close();

    p = await startServerProcess(env);
    c = clientsFor(`127.0.0.1:${p.port}`, key);
    try {
      const k = knexFactory(db === "mysql" ? { client: "mysql2", connection: { uri: url } as never, pool: { min: 0, max: 1 } } : { client: "better-sqlite3", connection: { filename: url.slice(7) }, useNullAsDefault: true });
      try {
        const iid = instance.split("/")[1];
        const certs = ((await k("certificates").select("id").where({ instance_id: iid })) as { id: string }[]).length;
        const repo = new KnexAuditRepository(k);
        const events = await repo.list(instance, 0, 100_000);
        const imported = events.filter((e) => e.method.endsWith("/ImportCertificate") && e.code === 0);
        // The kill came in the middle of the storm: some imports committed, not all.
        expect(certs).toBeGreaterThan(0);
        expect(certs).toBeLessThan(leaves.length);
        expect(imported.length).toBe(certs);
        for (const chain of await repo.chains()) expect(verifyChain(chain, await repo.list(chain, 0, 100_000), await repo.head(chain))).toEqual([]);
      } finally {
        await k.destroy();
      }
    } finally {
      c.close();
      p.child.kill("SIGTERM");
      await p.exited;
    }
  });
});
