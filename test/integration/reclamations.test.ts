/**
 * Instance deletion with reclamation (AIP-164) over real gRPC on SQLite and MariaDB: pending state, restore,
 * permanent delete, the purge job, races decided in the database, and crypto-shredding. Time comes from an
 * injected clock, so nothing sleeps.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Instance_State } from "../../gen/ts/certmanager/v1/instance.js";
import { Reclamation_State } from "../../gen/ts/certmanager/v1/reclamation.js";
import { decryptDirFast } from "../../src/crypto/fastjwe.js";
import { LocalRootKeyBackend } from "../../src/crypto/rootkeys/local.js";
import { unwrapStoredDek } from "../../src/crypto/wrapped-dek.js";
import { makeChain, makeLeaf } from "../helpers/openssl.js";
import { databases, expectFailure, startTestService, TestClock, type TestService } from "../helpers/service.js";

const DAY = 86_400_000;

describe.each(await databases())("reclamations on %s", (db) => {
  let t: TestService;
  const clock = new TestClock();

  beforeAll(async () => {
    // A small batch size makes the reclaim of even a few certificates run several batches.
    t = await startTestService(db, { CM_PURGE_BATCH_SIZE: "3", CM_PURGE_INTERVAL_SECONDS: "86400" }, clock);
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** An instance with `n` certificates (with keys and a chain on the first); returns names and material. */
  async function populated(n: number, label: string) {
    const instance = (await t.instances.createInstance({ instance: { displayName: label } })).instance!;
    const certs: string[] = [];
    for (let i = 0; i < n; i++) {
      const chain = i === 0 ? makeChain({ name: `${label}-${db}`, cn: `${label}-0.example.test` }) : undefined;
      const leaf = chain ? undefined : makeLeaf({ cn: `${label}-${i}-${db}.example.test`, keySlot: `${label}-${i}-${db}` });
      const c = (
        await t.certificates.importCertificate({
          parent: instance.name,
          certificate: chain?.leafPem ?? leaf!.certPem,
          privateKey: chain?.leafKeyPem ?? leaf!.keyPem,
          intermediates: chain?.intermediatesPem.join("") ?? "",
          requestId: crypto.randomUUID(),
        })
      ).certificate!;
      certs.push(c.name);
    }
    const material = await Promise.all(certs.map((name) => t.certificates.accessCertificate({ name })));
    return { instance, certs, material };
  }

  const id = (name: string) => name.split("/").pop()!;

  async function rowCounts(instanceName: string): Promise<Record<string, number>> {
    const k = t.raw();
    const iid = id(instanceName);
    const certIds = (await k("certificates").select("id").where({ instance_id: iid })).map((r: { id: string }) => r.id);
    const count = async (q: ReturnType<typeof k>) => Number(((await q.count({ n: "*" })) as { n: number | string }[])[0].n);
    return {
      certificates: certIds.length,
      versions: certIds.length === 0 ? 0 : await count(k("certificate_versions").whereIn("certificate_id", certIds)),
      domains: await count(k("certificate_domains").where({ instance_id: iid })),
      deks: await count(k("deks").where({ instance_id: iid })),
      requestIds: await count(k("request_ids").where({ scope: `certificates:${iid}` })),
    };
  }

  it("deletes softly: pending state, hidden from lists, certificate RPCs refused, nothing changed", async () => {
    const { instance, certs } = await populated(2, "soft");
    const before = await rowCounts(instance.name);
    const stale = await expectFailure(t.instances.deleteInstance({ name: instance.name, etag: '"stale"' }));
    expect([stale.code, stale.reason]).toEqual([status.ABORTED, "ETAG_MISMATCH"]);
    const del = await t.instances.deleteInstance({ name: instance.name, etag: instance.etag });
    const rec = del.reclamation!;
    expect(rec.name).toMatch(/^reclamations\/[0-9a-f-]{36}$/);
    expect(rec.instance).toBe(instance.name);
    expect(rec.state).toBe(Reclamation_State.STATE_SCHEDULED);
    expect(rec.expireTime!.getTime()).toBe(clock.now().getTime() + 7 * DAY);
    expect(del.instance!.state).toBe(Instance_State.STATE_PENDING_RECLAMATION);

    const got = (await t.instances.getInstance({ name: instance.name })).instance!;
    expect(got.state).toBe(Instance_State.STATE_PENDING_RECLAMATION);
    expect(got.expireTime).toEqual(rec.expireTime);
    expect(got.reclamation).toBe(rec.name);

    const listed = (await t.instances.listInstances({ pageSize: 1000 })).instances.map((i) => i.name);
    expect(listed).not.toContain(instance.name);
    const withDeleted = (await t.instances.listInstances({ pageSize: 1000, showDeleted: true })).instances.map((i) => i.name);
    expect(withDeleted).toContain(instance.name);

    const leaf = makeLeaf({ cn: `soft-new-${db}.example.test` });
    const refusals = [
      () => t.certificates.getCertificate({ name: certs[0] }),
      () => t.certificates.accessCertificate({ name: certs[0] }),
      () => t.certificates.listCertificates({ parent: instance.name }),
      () => t.certificates.importCertificate({ parent: instance.name, certificate: leaf.certPem }),
      () => t.certificates.reimportCertificate({ name: certs[0], certificate: leaf.certPem }),
      () => t.certificates.updateCertificate({ certificate: { name: certs[0], displayName: "x" }, updateMask: ["display_name"] }),
      () => t.certificates.deleteCertificate({ name: certs[1] }),
      () => t.instances.updateInstance({ instance: { name: instance.name, displayName: "x" }, updateMask: ["display_name"] }),
      () => t.instances.deleteInstance({ name: instance.name }),
    ];
    for (const call of refusals) {
      const err = await expectFailure(call());
      expect(err.code).toBe(status.FAILED_PRECONDITION);
      expect(err.reason).toBe("INSTANCE_PENDING_RECLAMATION");
      expect(err.metadata.reclamation).toBe(rec.name);
      expect(err.message).toContain(rec.name);
    }
    expect(await rowCounts(instance.name)).toEqual(before);
  });

  it("lists and gets reclamations with filters and pagination", async () => {
    const a = (await t.instances.createInstance({ instance: {} })).instance!;
    const b = (await t.instances.createInstance({ instance: {} })).instance!;
    const ra = (await t.instances.deleteInstance({ name: a.name })).reclamation!;
    clock.advance(1000);
    const rb = (await t.instances.deleteInstance({ name: b.name })).reclamation!;
    expect((await t.reclamations.getReclamation({ name: ra.name })).reclamation).toEqual(ra);
    const byInstance = await t.reclamations.listReclamations({ filter: `instance = "${a.name}"` });
    expect(byInstance.reclamations).toEqual([ra]);
    const names: string[] = [];
    let pageToken = "";
    do {
      const page = await t.reclamations.listReclamations({ pageSize: 1, pageToken, filter: "state = SCHEDULED" });
      names.push(...page.reclamations.map((r) => r.name));
      pageToken = page.nextPageToken;
    } while (pageToken);
    // Newest first.
    expect(names.indexOf(rb.name)).toBeLessThan(names.indexOf(ra.name));
    await t.reclamations.restoreReclamation({ name: ra.name });
    expect((await t.reclamations.listReclamations({ filter: `instance = "${a.name}" AND state = RESTORED` })).reclamations.map((r) => r.name)).toEqual([ra.name]);
    for (const filter of ["state = GONE", `instance = "x"`, "colour = red", "state = SCHEDULED OR state = RESTORED"]) {
      expect((await expectFailure(t.reclamations.listReclamations({ filter }))).reason).toBe("INVALID_FILTER");
    }
    const missing = await expectFailure(t.reclamations.getReclamation({ name: `reclamations/${crypto.randomUUID()}` }));
    expect([missing.code, missing.reason]).toEqual([status.NOT_FOUND, "RECLAMATION_NOT_FOUND"]);
    expect((await expectFailure(t.reclamations.getReclamation({ name: "reclamations/1" }))).fieldViolations[0].field).toBe("name");
  });

  it("restores an instance with every certificate byte-identical", async () => {
    const { instance, certs, material } = await populated(3, "restore");
    const rec = (await t.instances.deleteInstance({ name: instance.name })).reclamation!;
    clock.advance(7 * DAY - 1);
    const restored = (await t.reclamations.restoreReclamation({ name: rec.name })).reclamation!;
    expect(restored.state).toBe(Reclamation_State.STATE_RESTORED);
    const inst = (await t.instances.getInstance({ name: instance.name })).instance!;
    expect(inst.state).toBe(Instance_State.STATE_ACTIVE);
    expect(inst.expireTime).toBeUndefined();
    expect(inst.reclamation).toBe("");
    const after = await Promise.all(certs.map((name) => t.certificates.accessCertificate({ name })));
    expect(after).toEqual(material);
    const again = await expectFailure(t.reclamations.restoreReclamation({ name: rec.name }));
    expect([again.code, again.reason]).toEqual([status.FAILED_PRECONDITION, "RECLAMATION_NOT_SCHEDULED"]);
    const noDelete = await expectFailure(t.reclamations.deleteReclamation({ name: rec.name }));
    expect(noDelete.reason).toBe("RECLAMATION_NOT_SCHEDULED");
    // The instance can be deleted again later: a new reclamation.
    const rec2 = (await t.instances.deleteInstance({ name: instance.name })).reclamation!;
    expect(rec2.name).not.toBe(rec.name);
  });

  it("refuses a restore after expire_time, and the purge job reclaims it", async () => {
    const { instance, certs } = await populated(7, "expire");
    const rec = (await t.instances.deleteInstance({ name: instance.name })).reclamation!;
    clock.advance(7 * DAY);
    const late = await expectFailure(t.reclamations.restoreReclamation({ name: rec.name }));
    expect([late.code, late.reason]).toEqual([status.FAILED_PRECONDITION, "RECLAMATION_EXPIRED"]);
    expect(late.metadata.expire_time).toBe(rec.expireTime!.toISOString());
    // A restore racing the purge at the same instant: the purge wins, the restore is told why.
    const [restore] = await Promise.allSettled([t.reclamations.restoreReclamation({ name: rec.name }), t.service.purgeNow()]);
    expect(restore.status).toBe("rejected");
    const done = (await t.reclamations.getReclamation({ name: rec.name })).reclamation!;
    expect(done.state).toBe(Reclamation_State.STATE_RECLAIMED);
    const tomb = (await t.instances.getInstance({ name: instance.name })).instance!;
    expect(tomb.state).toBe(Instance_State.STATE_DELETED);
    expect(tomb.deleteTime).toEqual(clock.now());
    expect(tomb.reclamation).toBe(rec.name);
    expect(await rowCounts(instance.name)).toEqual({ certificates: 0, versions: 0, domains: 0, deks: 0, requestIds: 0 });
    const gone = await expectFailure(t.certificates.getCertificate({ name: certs[0] }));
    expect([gone.code, gone.reason]).toEqual([status.NOT_FOUND, "INSTANCE_DELETED"]);
    expect((await expectFailure(t.instances.deleteInstance({ name: instance.name }))).reason).toBe("INSTANCE_DELETED");
  });

  it("deletes a reclamation permanently at once; repeating it is harmless; other instances carry on", async () => {
    const keep = await populated(2, "keep");
    const { instance } = await populated(8, "purge");
    const rec = (await t.instances.deleteInstance({ name: instance.name })).reclamation!;
    const r1 = (await t.reclamations.deleteReclamation({ name: rec.name })).reclamation!;
    expect(r1.state).toBe(Reclamation_State.STATE_RECLAIMED);
    const r2 = (await t.reclamations.deleteReclamation({ name: rec.name })).reclamation!;
    expect(r2).toEqual(r1);
    expect(await rowCounts(instance.name)).toEqual({ certificates: 0, versions: 0, domains: 0, deks: 0, requestIds: 0 });
    const restore = await expectFailure(t.reclamations.restoreReclamation({ name: rec.name }));
    expect(restore.reason).toBe("RECLAMATION_NOT_SCHEDULED");
    expect(await Promise.all(keep.certs.map((name) => t.certificates.accessCertificate({ name })))).toEqual(keep.material);
  });

  it("decides races in the database: exactly one winner each time", async () => {
    // Two deletes of one instance.
    const a = (await t.instances.createInstance({ instance: {} })).instance!;
    const dels = await Promise.allSettled([t.instances.deleteInstance({ name: a.name }), t.instances.deleteInstance({ name: a.name })]);
    expect(dels.filter((d) => d.status === "fulfilled")).toHaveLength(1);
    const loser = dels.find((d) => d.status === "rejected") as PromiseRejectedResult;
    expect([status.FAILED_PRECONDITION, status.ABORTED]).toContain((loser.reason as { code: number }).code);
    expect((await t.reclamations.listReclamations({ filter: `instance = "${a.name}"` })).reclamations).toHaveLength(1);

    // Two restores.
    const recA = (await t.reclamations.listReclamations({ filter: `instance = "${a.name}"` })).reclamations[0];
    const restores = await Promise.allSettled([t.reclamations.restoreReclamation({ name: recA.name }), t.reclamations.restoreReclamation({ name: recA.name })]);
    expect(restores.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect((await t.instances.getInstance({ name: a.name })).instance!.state).toBe(Instance_State.STATE_ACTIVE);

    // Restore racing DeleteReclamation, several times: the rows always agree with the single winner.
    for (let i = 0; i < 4; i++) {
      const { instance } = await populated(2, `race${i}`);
      const rec = (await t.instances.deleteInstance({ name: instance.name })).reclamation!;
      const calls = [t.reclamations.restoreReclamation({ name: rec.name }), t.reclamations.deleteReclamation({ name: rec.name })];
      const [restore, del] = await Promise.allSettled(i % 2 ? calls : calls.reverse());
      const outcomes = [restore, del].filter((r) => r.status === "fulfilled");
      expect(outcomes).toHaveLength(1);
      const final = (await t.reclamations.getReclamation({ name: rec.name })).reclamation!;
      const inst = (await t.instances.getInstance({ name: instance.name })).instance!;
      const rows = await rowCounts(instance.name);
      if (final.state === Reclamation_State.STATE_RESTORED) {
        expect(inst.state).toBe(Instance_State.STATE_ACTIVE);
        expect(rows.certificates).toBe(2);
        expect(rows.deks).toBe(1);
      } else {
        expect(final.state).toBe(Reclamation_State.STATE_RECLAIMED);
        expect(inst.state).toBe(Instance_State.STATE_DELETED);
        expect(rows).toEqual({ certificates: 0, versions: 0, domains: 0, deks: 0, requestIds: 0 });
      }
    }
  });

  it("crypto-shreds: copies of the rows made before a permanent delete decrypt with nothing left", async () => {
    const { instance, certs } = await populated(2, "shred");
    const k = t.raw();
    const ids = certs.map(id);
    const copies = (await k("certificate_versions").whereIn("certificate_id", ids)) as { certificate_jwe: string; private_key_jwe: string; dek_id: string }[];
    const dekBefore = await k("deks").where({ instance_id: id(instance.name) }).first();
    // Before the delete the copies do open with the instance's DEK (the check below can tell).
    const backend = await LocalRootKeyBackend.open(t.config.localKeystorePath, { createIfMissing: false, defaultKeyId: "default" });
    const dek = await unwrapStoredDek(backend, dekBefore.wrapped_key, { instance: instance.name });
    expect(decryptDirFast(dek, copies[0].certificate_jwe).plaintext.toString()).toContain("BEGIN CERTIFICATE");

    const rec = (await t.instances.deleteInstance({ name: instance.name })).reclamation!;
    await t.reclamations.deleteReclamation({ name: rec.name });

    // The copy of the instance's own DEK row no longer opens: its instance key is destroyed in the keystore.
    await expect(unwrapStoredDek(backend, dekBefore.wrapped_key, { instance: instance.name })).rejects.toMatchObject({ reason: "ROOT_KEY_DESTROYED" });
    // Every DEK the service still holds, unwrapped by the root-key backend, fails on every copy.
    const remaining = (await k("deks").select("id", "instance_id", "wrapped_key")) as { id: string; instance_id: string; wrapped_key: string }[];
    expect(remaining.map((d) => d.id)).not.toContain(copies[0].dek_id);
    for (const d of remaining) {
      const key = await unwrapStoredDek(backend, d.wrapped_key, { instance: `instances/${d.instance_id}` });
      for (const c of copies) for (const jwe of [c.certificate_jwe, c.private_key_jwe]) expect(() => decryptDirFast(key, jwe)).toThrow();
    }
    // Copies written back under a live certificate do not open through the service either.
    const live = await populated(1, "shred-live");
    await k("certificate_versions").where({ certificate_id: id(live.certs[0]) }).update({ certificate_jwe: copies[0].certificate_jwe });
    expect((await expectFailure(t.certificates.accessCertificate({ name: live.certs[0] }))).reason).toBe("DECRYPTION_FAILED");
    await backend.close();
  });
});
