/**
 * Crypto-shredding that holds for backups (issue 12, item 1): a copy of the database taken before an instance is
 * permanently deleted, restored afterwards next to everything the service and its root-key backends still hold,
 * opens nothing of that instance, while the other instances in the same copy still open. The copy is the SQLite
 * file (`VACUUM INTO`, what a backup tool copies) or a `mariadb-dump`. The instance's own key is gone from the
 * local keystore (only a tombstone without material is left) and, for a customer-managed instance, from the
 * SoftHSM2 token.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Instance_KeyManagement, Instance_State } from "../../gen/ts/certmanager/v1/instance.js";
import { instanceKeyId } from "../../src/domain/rootkey-id.js";
import { localKeyAdmin, type KeyAdmin } from "../helpers/key-admin.js";
import { makeChain } from "../helpers/openssl.js";
import { pkcs11Admin } from "../helpers/root-key-backends.js";
import { databases, expectFailure, startTestService, type TestService } from "../helpers/service.js";
import { softhsmAvailable } from "../helpers/softhsm.js";

const dbs = await databases();

describe.each(dbs)("crypto-shredding against a backup taken before the delete (%s)", (db) => {
  let t: TestService;
  let local: KeyAdmin;
  let hsm: KeyAdmin | undefined;
  const backupDir = () => t.dataDir;

  beforeAll(async () => {
    hsm = softhsmAvailable() ? await pkcs11Admin() : undefined;
    t = await startTestService(db, hsm?.env ?? {});
    local = await localKeyAdmin(t.config.localKeystorePath);
  }, 60_000);
  afterAll(async () => {
    await local?.close();
    await hsm?.close();
    await t?.stop();
  });

  /** A consistent copy of the whole database, as a backup would be. */
  async function backup(): Promise<string> {
    if (db === "sqlite") {
      const file = path.join(backupDir(), "backup.sqlite");
      const k = t.raw();
      await k.raw(`VACUUM INTO '${file}'`);
      // Closed now: a connection left open would hold the file while the copy is put back.
      await k.destroy();
      return file;
    }
    const url = new URL(t.mysqlDatabaseUrl!);
    const file = path.join(backupDir(), "backup.sql");
    const dump = execFileSync("mariadb-dump", [...mysqlArgs(url), "--single-transaction", url.pathname.slice(1)], { maxBuffer: 256 * 1024 * 1024 });
    writeFileSync(file, dump);
    return file;
  }

  /** Puts the copy back in place of the database (the service is stopped meanwhile). */
  async function restore(file: string): Promise<void> {
    if (db === "sqlite") {
      const target = (t.config.database as { filename: string }).filename;
      for (const suffix of ["-wal", "-shm"]) rmSync(target + suffix, { force: true });
      copyFileSync(file, target);
      return;
    }
    const url = new URL(t.mysqlDatabaseUrl!);
    execFileSync("mariadb", [...mysqlArgs(url), url.pathname.slice(1)], { input: readFileSync(file) });
  }

  async function instanceWithCertificate(label: string, rootKey?: string) {
    const instance = (
      await t.instances.createInstance({
        instance: rootKey ? { displayName: label, keyManagement: Instance_KeyManagement.KEY_MANAGEMENT_CUSTOMER, rootKey } : { displayName: label },
      })
    ).instance!;
    const chain = makeChain({ name: `shred-${label}-${db}`, cn: `${label}.example.test` });
    const cert = (
      await t.certificates.importCertificate({ parent: instance.name, certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") })
    ).certificate!;
    const material = await t.certificates.accessCertificate({ name: cert.name });
    expect(material.privateKey).toContain("PRIVATE KEY");
    return { instance, cert, material, keyId: instanceKeyId(instance.name.split("/")[1]!) };
  }

  it("a restored copy opens nothing of the reclaimed instances and everything of the others", async () => {
    const gone = await instanceWithCertificate("gone");
    const kept = await instanceWithCertificate("kept");
    const customerKey = `shred-${Math.random().toString(36).slice(2, 10)}`;
    let customerGone: Awaited<ReturnType<typeof instanceWithCertificate>> | undefined;
    if (hsm) {
      await hsm.create(customerKey);
      customerGone = await instanceWithCertificate("customer-gone", `pkcs11/${customerKey}`);
    }
    expect(await local.holds(gone.keyId)).toBe(true);
    if (hsm) expect(await hsm.holds(customerGone!.keyId)).toBe(true);

    const copy = await backup();

    for (const x of [gone, customerGone]) {
      if (!x) continue;
      const rec = (await t.instances.deleteInstance({ name: x.instance.name })).reclamation!;
      await t.reclamations.deleteReclamation({ name: rec.name });
    }
    // The instance keys are gone from the backends; the other instance's key and the customer's root key stay.
    expect(await local.holds(gone.keyId)).toBe(false);
    expect(await local.holds(kept.keyId)).toBe(true);
    if (hsm) {
      expect(await hsm.holds(customerGone!.keyId)).toBe(false);
      expect(await hsm.holds(customerKey)).toBe(true);
    }

    await t.restart(() => restore(copy));

    // The copy predates the delete: the instances are there, ACTIVE, with their rows...
    expect((await t.instances.getInstance({ name: gone.instance.name })).instance!.state).toBe(Instance_State.STATE_ACTIVE);
    // ... but nothing of them opens, in any way the service has.
    for (const x of [gone, customerGone]) {
      if (!x) continue;
      const e = await expectFailure(t.certificates.accessCertificate({ name: x.cert.name }));
      expect([e.code, e.reason, e.metadata.root_key]).toEqual([status.FAILED_PRECONDITION, "ROOT_KEY_UNAVAILABLE", `${x === gone ? "local" : "pkcs11"}/${x.keyId}`]);
      expect(["DESTROYED", "NOT_FOUND"]).toContain(e.metadata.root_key_state);
    }
    // A key gone is never made again behind the operator's back (PKCS#11 cannot tell destroyed from never made):
    // rotating the restored instance's data key fails the same way and leaves no new instance key.
    for (const x of [gone, customerGone]) {
      if (!x) continue;
      const e = await expectFailure(t.instances.rotateDataKey({ name: x.instance.name }));
      expect([e.code, e.reason]).toEqual([status.FAILED_PRECONDITION, "ROOT_KEY_UNAVAILABLE"]);
      expect(await (x === gone ? local : hsm!).holds(x.keyId)).toBe(false);
    }
    await t.service.migrateInstanceKeysNow();
    expect(await local.holds(gone.keyId)).toBe(false);
    if (hsm) expect(await hsm.holds(customerGone!.keyId)).toBe(false);
    // The other instance in the same copy opens, byte for byte.
    expect(await t.certificates.accessCertificate({ name: kept.cert.name })).toEqual(kept.material);
  }, 120_000);
});

function mysqlArgs(url: URL): string[] {
  return ["--protocol=tcp", "-h", url.hostname, "-P", url.port || "3306", "-u", decodeURIComponent(url.username || "root"), ...(url.password ? [`-p${decodeURIComponent(url.password)}`] : [])];
}
