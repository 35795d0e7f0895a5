/**
 * Races and stalls around instance keys (found by trying to break them): RewrapDataKeys racing the instance-key
 * migration must still leave every DEK under the newest root key version, as RewrapDataKeysResponse promises; and
 * DEKs the migration cannot move (an instance key disabled, an HSM down) must not hold up the others.
 * "Legacy" DEKs, as the release before instance keys wrote them, are made by stripping the layer off.
 */
import type { Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalRootKeyBackend } from "../../src/crypto/rootkeys/local.js";
import { unwrapInstanceLayer } from "../../src/crypto/wrapped-dek.js";
import { instanceKeyId } from "../../src/domain/rootkey-id.js";
import { makeChain } from "../helpers/openssl.js";
import { startTestService, type TestService } from "../helpers/service.js";

interface DekRow {
  id: string;
  instance_id: string;
  wrapped_key: string;
  root_key_version: number;
  instance_key_version: number | null;
}

/** Turns every DEK of the instance into one as the previous release wrote it (root-key JWE only, NULL column). */
async function makeLegacy(k: Knex, backend: LocalRootKeyBackend, instanceId: string): Promise<void> {
  for (const r of (await k("deks").where({ instance_id: instanceId })) as DekRow[]) {
    if (r.instance_key_version === null) continue;
    const { inner } = await unwrapInstanceLayer(backend, instanceKeyId(instanceId), r.wrapped_key, { instance: `instances/${instanceId}` });
    await k("deks").where({ id: r.id }).update({ wrapped_key: inner, instance_key_version: null });
  }
}

describe("instance keys: races and stalls (sqlite)", () => {
  let t: TestService;
  let local: LocalRootKeyBackend;

  beforeAll(async () => {
    // The job runs only when the test says so.
    t = await startTestService("sqlite", { CM_PURGE_INTERVAL_SECONDS: "86400" });
    local = await LocalRootKeyBackend.open(t.config.localKeystorePath, { createIfMissing: false, defaultKeyId: "default" });
  }, 60_000);
  afterAll(async () => {
    await local?.close();
    await t?.stop();
  });

  it("RewrapDataKeys racing the migration leaves every DEK under the newest root key version; destroying the old one loses nothing", async () => {
    const keyId = `ck-${Math.random().toString(36).slice(2, 10)}`;
    await local.createKey(keyId);
    const chain = makeChain({ name: "race-rewrap", cn: "rewrap.example.test" });
    const made: { id: string; cert: string; material: unknown }[] = [];
    for (let i = 0; i < 24; i++) {
      const id = (await t.instances.createInstance({ instance: { displayName: `rw${i}`, keyManagement: 2, rootKey: `local/${keyId}` } })).instance!.name.split("/")[1]!;
      const cert = (await t.certificates.importCertificate({ parent: `instances/${id}`, certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") })).certificate!.name;
      made.push({ id, cert, material: await t.certificates.accessCertificate({ name: cert }) });
    }
    const k = t.raw();
    for (const m of made) await makeLegacy(k, local, m.id);
    await local.rotate(keyId);

    const [responses] = await Promise.all([Promise.all(made.map((m) => t.instances.rewrapDataKeys({ name: `instances/${m.id}` }))), t.service.migrateInstanceKeysNow()]);
    expect(responses.every((r) => r.totalCount === 1)).toBe(true);
    const rows = (await k("deks").whereIn("instance_id", made.map((m) => m.id))) as DekRow[];
    expect(rows.filter((r) => r.root_key_version !== 2).map((r) => r.instance_id)).toEqual([]);
    // What a customer does after a rewrap: retire the old version for good. Nothing may be lost by it.
    await local.destroyVersion(keyId, 1);
    await t.restart();
    for (const m of made) expect(await t.certificates.accessCertificate({ name: m.cert })).toEqual(m.material);
  }, 180_000);

  it("DEKs the migration cannot move do not hold up the others", async () => {
    const k = t.raw();
    const stuck: string[] = [];
    for (let i = 0; i < 120; i++) stuck.push((await t.instances.createInstance({ instance: { displayName: `stuck${i}` } })).instance!.name.split("/")[1]!);
    const victim = (await t.instances.createInstance({ instance: { displayName: "victim" } })).instance!.name.split("/")[1]!;
    for (const id of [...stuck, victim]) await makeLegacy(k, local, id);
    // Instance keys that cannot be used now (disabled by an operator; likewise an HSM that is down).
    for (const id of stuck) await local.setEnabled(instanceKeyId(id), false);
    for (let tick = 0; tick < 3; tick++) await t.service.migrateInstanceKeysNow();
    const row = (await k("deks").where({ instance_id: victim }).first()) as DekRow;
    expect(row.instance_key_version).toBe(1);
    const stuckRows = (await k("deks").whereIn("instance_id", stuck)) as DekRow[];
    expect(stuckRows.every((r) => r.instance_key_version === null)).toBe(true);
  }, 300_000);
});
