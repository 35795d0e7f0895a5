/**
 * The online migration to instance keys (issue 12, item 1): a data folder written by the release before them
 * (test/fixtures/legacy-0004, made by its make.ts on that release: DEKs wrapped by the shared `local/default` root
 * key only, no instance keys in the keystore) is opened by this release. The schema migration adds the column,
 * the instance-key job gives every DEK of live and pending instances the instance layer, creating each
 * instance's key, without a restart and without changing what the certificates open to; after that a backup
 * taken before a permanent delete opens nothing of the deleted instance.
 *
 * The service runs on a clock set just after the fixture was written, so its pending reclamation has not
 * expired whatever today's date is. Instances pending reclamation are migrated once restored.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from "node:crypto";
import { chmodSync, cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { instanceKeyId } from "../../src/domain/rootkey-id.js";
import { localKeyAdmin, type KeyAdmin } from "../helpers/key-admin.js";
import { expectFailure, startTestService, TestClock, type TestService } from "../helpers/service.js";

const FIXTURE = path.join(import.meta.dirname, "../fixtures/legacy-0004");

describe("instance-key migration of a data folder from the release before (sqlite)", () => {
  let dir: string;
  let t: TestService;
  let local: KeyAdmin;
  let instances: { id: string; state: string; display_name: string }[];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "cm-legacy-"));
    cpSync(FIXTURE, dir, { recursive: true, filter: (src) => !src.endsWith(".ts") });
    // git keeps no file modes beyond the executable bit; the service refuses key files others may read.
    for (const f of readdirSync(dir)) chmodSync(path.join(dir, f), 0o600);
    const fixture = new Database(path.join(dir, "certmanager.sqlite"), { readonly: true });
    instances = fixture.prepare("SELECT id, state, display_name FROM instances ORDER BY display_name").all() as typeof instances;
    const written = (fixture.prepare("SELECT MAX(update_time) AS t FROM instances").get() as { t: number }).t;
    const before = fixture.prepare("SELECT COUNT(*) AS n FROM deks").get() as { n: number };
    fixture.close();
    expect(instances.map((i) => [i.display_name, i.state])).toEqual([
      ["legacy-a", "ACTIVE"],
      ["legacy-b", "ACTIVE"],
      ["legacy-pending", "PENDING_RECLAMATION"],
    ]);
    expect(before.n).toBe(3);
    t = await startTestService("sqlite", { CM_DATA_DIR: dir }, new TestClock(written + 60_000));
    local = await localKeyAdmin(t.config.localKeystorePath);
  }, 60_000);
  afterAll(async () => {
    await local?.close();
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Every certificate of an instance opens to a private key that belongs to its certificate. */
  async function opensConsistently(instanceId: string): Promise<string> {
    const list = await t.certificates.listCertificates({ parent: `instances/${instanceId}` });
    expect(list.certificates).toHaveLength(1);
    const m = await t.certificates.accessCertificate({ name: list.certificates[0]!.name });
    const spki = (k: ReturnType<typeof createPublicKey>) => k.export({ type: "spki", format: "der" }).toString("base64");
    expect(spki(createPublicKey(createPrivateKey(m.privateKey)))).toBe(spki(new X509Certificate(m.certificate).publicKey));
    return list.certificates[0]!.name;
  }

  it("gives every DEK of the ACTIVE instances the instance layer, online, creating their keys; a pending one once restored; nothing changes for readers", async () => {
    const k = t.raw();
    const live = instances.filter((i) => i.state === "ACTIVE");
    const pending = instances.find((i) => i.state === "PENDING_RECLAMATION")!;
    // Reads work whether or not the job has reached the instance yet (it starts with the server).
    for (const i of live) await opensConsistently(i.id);
    await t.service.migrateInstanceKeysNow();
    const layers = async () =>
      Object.fromEntries(((await k("deks").select("instance_id", "instance_key_version", "wrapped_key")) as { instance_id: string; instance_key_version: number | null; wrapped_key: string }[]).map((d) => [d.instance_id, d]));
    let deks = await layers();
    for (const i of live) {
      expect(deks[i.id]!.instance_key_version).toBe(1);
      const header = JSON.parse(Buffer.from(deks[i.id]!.wrapped_key.split(".")[0]!, "base64url").toString());
      expect([header.cm_layer, header.kid]).toEqual(["instance", `local/${instanceKeyId(i.id)}/1`]);
      expect(await local.holds(instanceKeyId(i.id))).toBe(true);
      await opensConsistently(i.id);
    }
    // A pending instance is left alone (its purge must not race a key being made)...
    expect(deks[pending.id]!.instance_key_version).toBeNull();
    expect(await local.holds(instanceKeyId(pending.id))).toBe(false);
    // ... until it is restored.
    const reclamation = (await t.instances.getInstance({ name: `instances/${pending.id}` })).instance!.reclamation;
    await t.reclamations.restoreReclamation({ name: reclamation });
    await t.service.migrateInstanceKeysNow();
    deks = await layers();
    expect(deks[pending.id]!.instance_key_version).toBe(1);
    expect(await local.holds(instanceKeyId(pending.id))).toBe(true);
    await opensConsistently(pending.id);
    expect(t.logs.filter((l) => l.job === "instance-keys" && l.msg === "job tick").map((l) => l.handled)).toEqual([2, 1]);
  });

  it("after the migration, a backup taken before a permanent delete opens nothing of the deleted instance", async () => {
    const [a, b] = instances.filter((i) => i.display_name !== "legacy-pending");
    const certA = await opensConsistently(a!.id);
    const backup = path.join(dir, "backup.sqlite");
    const k = t.raw();
    await k.raw(`VACUUM INTO '${backup}'`);
    await k.destroy();
    const rec = (await t.instances.deleteInstance({ name: `instances/${a!.id}` })).reclamation!;
    await t.reclamations.deleteReclamation({ name: rec.name });
    expect(await local.holds(instanceKeyId(a!.id))).toBe(false);
    await t.restart(async () => {
      const target = path.join(dir, "certmanager.sqlite");
      for (const suffix of ["-wal", "-shm"]) rmSync(target + suffix, { force: true });
      cpSync(backup, target);
    });
    const e = await expectFailure(t.certificates.accessCertificate({ name: certA }));
    expect([e.code, e.reason, e.metadata.root_key_state]).toEqual([status.FAILED_PRECONDITION, "ROOT_KEY_UNAVAILABLE", "DESTROYED"]);
    await opensConsistently(b!.id);
  });
});
