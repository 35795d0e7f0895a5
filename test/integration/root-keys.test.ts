/**
 * Customer-managed root keys over real gRPC: creation that proves the key, root key rotation and rewrap, DEK
 * rotation (on demand, automatic and resumed), and the key lifecycle (disable, enable, destroy), on every
 * backend this machine has (local always; pkcs11 with SoftHSM2) and on SQLite and MariaDB.
 */
import { randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Instance_KeyManagement, Instance_RootKeyState, Instance_State } from "../../gen/ts/certmanager/v1/instance.js";
import { localKeyAdmin, type KeyAdmin } from "../helpers/key-admin.js";
import { makeChain, makeLeaf } from "../helpers/openssl.js";
import { backendsUnderTest, pkcs11Admin } from "../helpers/root-key-backends.js";
import { databases, expectFailure, startTestService, TestClock, type TestService } from "../helpers/service.js";

const cases = (await databases()).flatMap((db) => backendsUnderTest().map((backend) => [db, backend] as const));

describe.each(cases)("root keys on %s with the %s backend", (db, backend) => {
  let t: TestService;
  let admin: KeyAdmin;
  const clock = new TestClock();
  // The DEK cache ages on `clock`. Its TTL is longer than the 10 s steps that outdate the cached key description
  // (5 s), so those steps leave cached DEKs in place and only the TTL steps below expire them.
  const DEK_CACHE_TTL_MS = 30_000;
  const CUSTOMER = Instance_KeyManagement.KEY_MANAGEMENT_CUSTOMER;

  beforeAll(async () => {
    const extra = backend === "pkcs11" ? await pkcs11Admin() : undefined;
    // A tiny DEK limit makes automatic rotation happen after two imports with keys.
    t = await startTestService(db, { CM_DEK_MAX_ENCRYPTIONS: "7", CM_REENCRYPT_BATCH_SIZE: "2", CM_DEK_CACHE_TTL_SECONDS: String(DEK_CACHE_TTL_MS / 1000), ...(extra?.env ?? {}) }, clock);
    admin = extra ?? (await localKeyAdmin(t.config.localKeystorePath));
  });
  afterAll(async () => {
    await t?.stop();
    await admin?.close();
  });

  const keyId = () => `cust-${randomUUID().slice(0, 8)}`;

  async function customerInstance(id: string) {
    return (await t.instances.createInstance({ instance: { displayName: id, keyManagement: CUSTOMER, rootKey: `${backend}/${id}` } })).instance!;
  }

  async function withCerts(parent: string, n: number, tag: string) {
    const names: string[] = [];
    for (let i = 0; i < n; i++) {
      const chain = makeChain({ name: `${tag}-${i}-${db}`, cn: `${tag}-${i}.example.test` });
      names.push(
        (await t.certificates.importCertificate({ parent, certificate: chain.leafPem, privateKey: chain.leafKeyPem, intermediates: chain.intermediatesPem.join("") }))
          .certificate!.name,
      );
    }
    return { names, material: await Promise.all(names.map((name) => t.certificates.accessCertificate({ name }))) };
  }

  const countInstances = async () => (await t.instances.listInstances({ pageSize: 1000, showDeleted: true })).instances.length;

  it("creates a customer-managed instance only after proving the key, and shows the key", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    expect(inst.keyManagement).toBe(CUSTOMER);
    expect(inst.rootKey).toBe(`${backend}/${id}`);
    expect(inst.rootKeyVersion).toBe(1);
    expect(inst.rootKeyCurrentVersion).toBe(1);
    expect(inst.rootKeyState).toBe(Instance_RootKeyState.ROOT_KEY_STATE_ENABLED);
    expect(inst.state).toBe(Instance_State.STATE_ACTIVE);

    const before = await countInstances();
    const missing = await expectFailure(customerInstance(`nope-${id}`));
    expect([missing.code, missing.reason, missing.metadata.root_key]).toEqual([status.NOT_FOUND, "ROOT_KEY_NOT_FOUND", `${backend}/nope-${id}`]);
    expect(missing.message).toContain("create it");
    const off = keyId();
    await admin.create(off);
    await admin.disable(off);
    const disabled = await expectFailure(customerInstance(off));
    expect([disabled.code, disabled.reason]).toEqual([status.FAILED_PRECONDITION, "ROOT_KEY_DISABLED"]);
    expect(disabled.message).toContain("enable it");
    for (const instance of [
      { keyManagement: CUSTOMER, rootKey: "pkcs11" },
      { keyManagement: CUSTOMER, rootKey: `vault/${id}` },
      { keyManagement: CUSTOMER, rootKey: "" },
      { rootKey: `${backend}/${id}` },
    ]) {
      const bad = await expectFailure(t.instances.createInstance({ instance }));
      expect([bad.code, bad.reason, bad.fieldViolations[0]?.field]).toEqual([status.INVALID_ARGUMENT, "INVALID_ROOT_KEY", "instance.root_key"]);
    }
    expect(await countInstances()).toBe(before);
  });

  it("rewraps data keys to the newest root key version after a rotation, online and idempotently", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    const { names, material } = await withCerts(inst.name, 2, `rewrap-${id}`);
    await admin.rotate(id);
    clock.advance(10_000); // past the cached key description
    const seen = (await t.instances.getInstance({ name: inst.name })).instance!;
    expect([seen.rootKeyVersion, seen.rootKeyCurrentVersion]).toEqual([1, 2]);
    // Reads keep working with the old version before the rewrap...
    expect(await Promise.all(names.map((name) => t.certificates.accessCertificate({ name })))).toEqual(material);
    const r = await t.instances.rewrapDataKeys({ name: inst.name });
    expect([r.rewrappedCount, r.totalCount, r.instance!.rootKeyVersion]).toEqual([1, 1, 2]);
    expect((await t.instances.rewrapDataKeys({ name: inst.name })).rewrappedCount).toBe(0);
    const k = t.raw();
    const dek = await k("deks").where({ instance_id: inst.name.split("/")[1] }).first();
    // The stored JWE is the instance layer (kid: the instance key); the root-key wrap inside it is version 2.
    expect(JSON.parse(Buffer.from(dek.wrapped_key.split(".")[0], "base64url").toString()).kid).toBe(`${backend}/i-${inst.name.split("/")[1]}/1`);
    expect([dek.root_key_version, dek.instance_key_version]).toEqual([2, 1]);
    // ... and after it, also once the cache is gone.
    await t.restart();
    expect(await Promise.all(names.map((name) => t.certificates.accessCertificate({ name })))).toEqual(material);
  });

  it("rotates the data key on demand: every version re-encrypted, the old key destroyed", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    const { names, material } = await withCerts(inst.name, 1, `rot-${id}`);
    // A second version of the same certificate, sealed with the same DEK.
    const renewed = makeLeaf({ cn: `rot2-${id}.example.test` });
    await t.certificates.reimportCertificate({ name: names[0], certificate: renewed.certPem, privateKey: renewed.keyPem });
    const k = t.raw();
    const iid = inst.name.split("/")[1];
    const oldDek = (await k("deks").where({ instance_id: iid }).first()).id;
    const r = await t.instances.rotateDataKey({ name: inst.name });
    expect([r.reencryptedCount, r.retiredCount]).toEqual([2, 1]);
    const deks = await k("deks").where({ instance_id: iid });
    expect(deks).toHaveLength(1);
    expect(deks[0].id).not.toBe(oldDek);
    const versions = await k("certificate_versions").where({ certificate_id: names[0].split("/").pop() });
    expect(versions.map((v: { dek_id: string }) => v.dek_id)).toEqual([deks[0].id, deks[0].id]);
    expect((await t.certificates.accessCertificate({ name: names[0], version: 1 })).certificate).toBe(material[0].certificate);
    expect((await t.certificates.accessCertificate({ name: names[0], version: 2 })).privateKey).toContain("PRIVATE KEY");
  });

  it("rotates automatically before a data key passes its encryption limit, and finishes after a restart", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    const iid = inst.name.split("/")[1];
    // Each import with a key and a chain seals 3 values; the limit is 7, so the third import rotates first.
    const { names } = await withCerts(inst.name, 3, `auto-${id}`);
    const k = t.raw();
    const states = (await k("deks").where({ instance_id: iid })).map((d: { state: string }) => d.state).sort();
    expect(states).toEqual(["ACTIVE", "RETIRING"]);
    await t.restart(); // a crash between rotation and re-encryption loses nothing
    await t.service.finishRotationsNow();
    // Nothing is left to re-encrypt. With this tiny limit the re-encryption itself filled a DEK, which stays
    // INACTIVE: it opens what it sealed and seals nothing more.
    const after = (await k("deks").where({ instance_id: iid })).map((d: { state: string; encryption_count: number }) => [d.state, Number(d.encryption_count)]);
    expect(after.filter(([s]) => s === "RETIRING")).toEqual([]);
    expect(after.filter(([s]) => s === "ACTIVE")).toHaveLength(1);
    for (const [, count] of after) expect(count).toBeLessThanOrEqual(7);
    for (const name of names) expect((await t.certificates.accessCertificate({ name })).privateKey).toContain("PRIVATE KEY");
  });

  it.runIf(backend === "local")("serializes rotations with concurrent imports and reads: no INTERNAL, nothing unreadable", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    const { names } = await withCerts(inst.name, 4, `conc-${id}`);
    const leaves = Array.from({ length: 8 }, (_, i) => makeLeaf({ cn: `conc-new-${i}-${id}.example.test`, keySlot: `conc-${i}-${db}` }));
    const results = await Promise.allSettled([
      t.instances.rotateDataKey({ name: inst.name }),
      t.instances.rotateDataKey({ name: inst.name }),
      ...leaves.map((l) => t.certificates.importCertificate({ parent: inst.name, certificate: l.certPem, privateKey: l.keyPem })),
      ...names.flatMap((name) => [t.certificates.accessCertificate({ name }), t.certificates.accessCertificate({ name })]),
    ]);
    // With this suite's tiny DEK limit a write may be told to retry (ABORTED); anything else is a bug.
    const failures = results
      .filter((r) => r.status === "rejected" && (r as PromiseRejectedResult).reason.code !== status.ABORTED)
      .map((r) => (r as PromiseRejectedResult).reason.details);
    expect(failures).toEqual([]);
    await t.service.finishRotationsNow();
    const all = await t.certificates.listCertificates({ parent: inst.name, pageSize: 100 });
    const imported = results.slice(2, 10).filter((r) => r.status === "fulfilled").length;
    expect(all.certificates).toHaveLength(4 + imported);
    for (const c of all.certificates) expect((await t.certificates.accessCertificate({ name: c.name })).certificate).toContain("BEGIN CERTIFICATE");
  });

  it.runIf(backend === "local")("answers UNAVAILABLE when the backend cannot be used, after bounded retries, and recovers", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    const { names, material } = await withCerts(inst.name, 1, `unav-${id}`);
    await t.restart(); // empty DEK cache
    const { chmodSync } = await import("node:fs");
    chmodSync(t.config.localKeystorePath, 0o644); // the local backend refuses a keystore others can read
    try {
      const err = await expectFailure(t.certificates.accessCertificate({ name: names[0] }));
      expect([err.code, err.reason]).toEqual([status.UNAVAILABLE, "ROOT_KEY_BACKEND_UNAVAILABLE"]);
    } finally {
      chmodSync(t.config.localKeystorePath, 0o600);
    }
    expect(await t.certificates.accessCertificate({ name: names[0] })).toEqual(material[0]);
  });

  it("follows the key lifecycle: disabled stops secret RPCs, enabled restores them, destroyed loses only that instance", async () => {
    const id = keyId();
    await admin.create(id);
    const inst = await customerInstance(id);
    const { names, material } = await withCerts(inst.name, 1, `life-${id}`);
    const bystander = (await t.instances.createInstance({ instance: { displayName: "provider" } })).instance!;
    const other = await withCerts(bystander.name, 1, `by-${id}`);

    await admin.disable(id);
    // Within the DEK cache TTL the cached key expires; nothing else is needed for the refusal.
    clock.advance(DEK_CACHE_TTL_MS + 1);
    const refused = await expectFailure(t.certificates.accessCertificate({ name: names[0] }));
    expect([refused.code, refused.reason, refused.metadata.root_key_state]).toEqual([status.FAILED_PRECONDITION, "ROOT_KEY_UNAVAILABLE", "DISABLED"]);
    const leaf = makeLeaf({ cn: `life-new-${id}.example.test` });
    expect((await expectFailure(t.certificates.importCertificate({ parent: inst.name, certificate: leaf.certPem }))).reason).toBe("ROOT_KEY_UNAVAILABLE");
    clock.advance(10_000);
    const off = (await t.instances.getInstance({ name: inst.name })).instance!;
    expect([off.state, off.rootKeyState]).toEqual([Instance_State.STATE_KEY_UNAVAILABLE, Instance_RootKeyState.ROOT_KEY_STATE_DISABLED]);
    // Metadata stays readable; other instances carry on.
    expect((await t.certificates.getCertificate({ name: names[0] })).certificate!.name).toBe(names[0]);
    expect(await t.certificates.accessCertificate({ name: other.names[0] })).toEqual(other.material[0]);

    await admin.enable(id);
    clock.advance(10_000);
    expect((await t.instances.getInstance({ name: inst.name })).instance!.state).toBe(Instance_State.STATE_ACTIVE);
    expect(await t.certificates.accessCertificate({ name: names[0] })).toEqual(material[0]);

    // GetInstance seeing the key disabled drops its cached DEKs at once, without waiting for the TTL.
    await admin.disable(id);
    clock.advance(10_000);
    expect((await t.instances.getInstance({ name: inst.name })).instance!.state).toBe(Instance_State.STATE_KEY_UNAVAILABLE);
    expect((await expectFailure(t.certificates.accessCertificate({ name: names[0] }))).reason).toBe("ROOT_KEY_UNAVAILABLE");
    await admin.enable(id);

    await admin.destroy(id);
    clock.advance(10_000);
    clock.advance(DEK_CACHE_TTL_MS + 1);
    // The local keystore remembers destroyed versions; a PKCS#11 token keeps no trace of destroyed objects, so
    // there the key is reported as not found (destroyed, or a wrong token).
    const lostState = backend === "local" ? "DESTROYED" : "NOT_FOUND";
    const lost = await expectFailure(t.certificates.accessCertificate({ name: names[0] }));
    expect([lost.reason, lost.metadata.root_key_state]).toEqual(["ROOT_KEY_UNAVAILABLE", lostState]);
    expect(lost.message).toContain("cannot be recovered");
    const gone = (await t.instances.getInstance({ name: inst.name })).instance!;
    expect([gone.state, gone.rootKeyState]).toEqual([
      Instance_State.STATE_KEY_UNAVAILABLE,
      backend === "local" ? Instance_RootKeyState.ROOT_KEY_STATE_DESTROYED : Instance_RootKeyState.ROOT_KEY_STATE_NOT_FOUND,
    ]);
    expect(await t.certificates.accessCertificate({ name: other.names[0] })).toEqual(other.material[0]);
  });
});
