/**
 * The audit trail written by real calls over gRPC on SQLite and MariaDB: a change's event in the change's own
 * transaction, reads of material before the answer leaves, denials of every kind, unauthenticated floods bounded
 * per peer, ListAuditEvents under IAM, checkpoints in the log, events that outlive the instance and hold no
 * secret, and chains that verify.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as certificatePb from "../../gen/ts/certmanager/v1/certificate.js";
import { verifyChain } from "../../src/domain/audit.js";
import { KnexAuditRepository } from "../../src/storage/repositories/audit.js";
import { makeLeaf } from "../helpers/openssl.js";
import { type Clients, databases, expectFailure, startTestService, TestClock, type TestService } from "../helpers/service.js";

const C = "/certmanager.v1.CertificateService/";

describe.each(await databases())("audit trail on %s", (db) => {
  let t: TestService;
  const clock = new TestClock();
  const who = new Map<string, { clients: Clients; member: string }>();

  beforeAll(async () => {
    t = await startTestService(db, { CM_PURGE_INTERVAL_SECONDS: "86400" }, clock);
    for (const role of ["reader", "writer", "manager", "stranger"]) {
      const { apiKey, secret } = await t.apiKeys.createApiKey({ apiKey: { displayName: role } });
      who.set(role, { clients: t.as(secret), member: apiKey!.member });
    }
  });
  afterAll(async () => {
    await t?.stop();
  });

  async function instance(): Promise<string> {
    const name = (await t.instances.createInstance({ instance: { displayName: "audited" } })).instance!.name;
    await t.iam.setIamPolicy({
      resource: name,
      policy: { bindings: ["reader", "writer", "manager"].map((r) => ({ role: `roles/${r}`, members: [who.get(r)!.member] })) },
    });
    return name;
  }

  const events = async (chain: string) => (await t.audit.listAuditEvents({ parent: chain, pageSize: 1000 })).auditEvents;

  it("records changes, reads of material and denials on the instance's chain, with who, what and the outcome", async () => {
    const name = await instance();
    const leaf = makeLeaf({ cn: `audit-${db}.example.test`, keySlot: `audit-${db}` });
    const requestId = crypto.randomUUID();
    const manager = who.get("manager")!;
    const cert = (await manager.clients.certificates.importCertificate({ parent: name, certificate: leaf.certPem, privateKey: leaf.keyPem, requestId })).certificate!;
    // The same certificate again: ALREADY_EXISTS, nothing changed, and the attempt recorded with its outcome.
    await expectFailure(manager.clients.certificates.importCertificate({ parent: name, certificate: leaf.certPem, privateKey: leaf.keyPem }));
    await who.get("writer")!.clients.certificates.accessCertificate({ name: cert.name });
    await who.get("writer")!.clients.certificates.getCertificate({ name: cert.name });
    expect((await expectFailure(who.get("reader")!.clients.certificates.accessCertificate({ name: cert.name }))).code).toBe(status.PERMISSION_DENIED);
    expect((await expectFailure(who.get("stranger")!.clients.certificates.accessCertificate({ name: cert.name }))).code).toBe(status.NOT_FOUND);
    const stream = who.get("writer")!.clients.certificateClient.exportCertificates(certificatePb.ExportCertificatesRequest.fromPartial({ parent: name, includePrivateKeys: true }));
    for await (const _ of stream) void _;

    const got = (await events(name)).filter((e) => e.method.startsWith(C));
    const row = (method: string) => got.filter((e) => e.method === `${C}${method}`).map((e) => ({ principal: e.principal, code: e.code, reason: e.reason, resource: e.resource }));
    expect(row("ImportCertificate")).toEqual([
      { principal: manager.member, code: 0, reason: "", resource: name },
      { principal: manager.member, code: status.ALREADY_EXISTS, reason: "CERTIFICATE_ALREADY_EXISTS", resource: name },
    ]);
    expect(got.find((e) => e.method === `${C}ImportCertificate`)!.requestId).toBe(requestId);
    expect(row("AccessCertificate")).toEqual([
      { principal: who.get("writer")!.member, code: 0, reason: "", resource: cert.name },
      { principal: who.get("reader")!.member, code: status.PERMISSION_DENIED, reason: "PERMISSION_DENIED", resource: cert.name },
    ]);
    // A hidden denial goes to the service chain: a made-up instance name must not open a chain.
    const hidden = (await events("services/certmanager")).filter((e) => e.method === `${C}AccessCertificate`);
    expect(hidden.map((e) => [e.principal, e.code, e.reason, e.resource])).toEqual([[who.get("stranger")!.member, status.NOT_FOUND, "INSTANCE_NOT_FOUND", name]]);
    expect(row("ExportCertificates")).toEqual([{ principal: who.get("writer")!.member, code: 0, reason: "", resource: name }]);
    // Reads of metadata that succeed are not recorded.
    expect(row("GetCertificate")).toEqual([]);
    // No secret reaches the trail.
    const all = JSON.stringify(await events(name));
    expect(all).not.toContain(leaf.keyPem.split("\n")[1]);
    expect(all).not.toContain(leaf.certPem.split("\n")[1]);
    for (const e of got) expect(e.peer).toMatch(/127\.0\.0\.1/);
  });

  it("appends a change's event in the change's transaction: one event per committed change, none for a rolled-back one", async () => {
    const name = await instance();
    const manager = who.get("manager")!;
    const before = (await events(name)).length;
    // Ten imports racing with one request_id: one certificate, and every call answered with it.
    const leaf = makeLeaf({ cn: `race-${db}.example.test`, keySlot: `race-${db}` });
    const requestId = crypto.randomUUID();
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => manager.clients.certificates.importCertificate({ parent: name, certificate: leaf.certPem, privateKey: leaf.keyPem, requestId })),
    );
    expect(new Set(answers.map((a) => a.certificate!.name)).size).toBe(1);
    const after = (await events(name)).slice(before).filter((e) => e.method === `${C}ImportCertificate`);
    expect(after).toHaveLength(10);
    expect(after.every((e) => e.code === 0)).toBe(true);
    // The certificate row and the events commit together: the number of certificates equals the number of
    // events that committed a write, which the chain proves by verifying.
    const raw = t.raw();
    const repo = new KnexAuditRepository(raw);
    const chain = await repo.list(name, 0, 10_000);
    expect(verifyChain(name, chain, await repo.head(name))).toEqual([]);
  });

  it("lets managers read their instance's chain and administrators the service's; others are refused", async () => {
    const name = await instance();
    expect((await who.get("manager")!.clients.audit.listAuditEvents({ parent: name })).headSequence).toBeGreaterThan(0);
    expect((await expectFailure(who.get("writer")!.clients.audit.listAuditEvents({ parent: name }))).code).toBe(status.PERMISSION_DENIED);
    expect((await expectFailure(who.get("stranger")!.clients.audit.listAuditEvents({ parent: name }))).code).toBe(status.NOT_FOUND);
    expect((await expectFailure(who.get("manager")!.clients.audit.listAuditEvents({ parent: "services/certmanager" }))).code).toBe(status.PERMISSION_DENIED);
    const service = await events("services/certmanager");
    expect(service.some((e) => e.method === "/certmanager.v1.InstanceService/CreateInstance" && e.code === 0)).toBe(true);
    expect(service.some((e) => e.method === "/certmanager.v1.ApiKeyService/CreateApiKey" && e.code === 0)).toBe(true);
  });

  it("bounds the events an unauthenticated flood writes, per peer", async () => {
    const before = (await t.audit.listAuditEvents({ parent: "services/certmanager", pageSize: 1000 })).headSequence;
    const anon = t.as(undefined);
    for (let i = 0; i < 40; i++) expect((await expectFailure(anon.instances.listInstances({}))).code).toBe(status.UNAUTHENTICATED);
    const added = (await events("services/certmanager")).filter((e) => e.sequence > before && e.principal === "anonymous");
    expect(added.length).toBeGreaterThan(0);
    expect(added.length).toBeLessThanOrEqual(12);
  });

  it("keeps an instance's events after its permanent deletion, and logs checkpoints the chain verifies against", async () => {
    const name = await instance();
    const { reclamation } = await t.instances.deleteInstance({ name });
    await t.reclamations.deleteReclamation({ name: reclamation!.name });
    const trail = await events(name);
    expect(trail.map((e) => e.method.split("/").pop())).toEqual(expect.arrayContaining(["SetIamPolicy", "DeleteInstance"]));
    const service = await events("services/certmanager");
    expect(service.some((e) => e.method.endsWith("/DeleteReclamation") && e.code === 0)).toBe(false);
    expect(trail.some((e) => e.method.endsWith("/DeleteReclamation") && e.code === 0)).toBe(true);
    await t.service.auditCheckpointNow();
    const res = await t.audit.listAuditEvents({ parent: name, pageSize: 1 });
    const line = t.logs.filter((l) => l.msg === "audit checkpoint" && l.chain === name).pop();
    expect(line).toMatchObject({ seq: res.headSequence, hash: res.headHash });
  });

  it("records a refused restore with its outcome, not as a success", async () => {
    const name = await instance();
    const { reclamation } = await t.instances.deleteInstance({ name });
    const manager = who.get("manager")!;
    await manager.clients.reclamations.restoreReclamation({ name: reclamation!.name });
    // Restored already: the conditional UPDATE matches no row, nothing changes, and the call is refused.
    const err = await expectFailure(manager.clients.reclamations.restoreReclamation({ name: reclamation!.name }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    const restores = (await events(name)).filter((e) => e.method.endsWith("/RestoreReclamation")).map((e) => [e.code, e.reason]);
    expect(restores).toEqual([
      [0, ""],
      [status.FAILED_PRECONDITION, "RECLAMATION_NOT_SCHEDULED"],
    ]);
  });

  it("records the purge job's reclaim of an expired instance as system:purge on the instance's chain", async () => {
    const name = await instance();
    const { reclamation } = await t.instances.deleteInstance({ name });
    clock.advance(8 * 86_400_000);
    await t.service.purgeNow();
    const purge = (await events(name)).filter((e) => e.principal === "system:purge");
    expect(purge.map((e) => [e.method, e.resource, e.code])).toEqual([["job:purge", reclamation!.name, 0]]);
  });
});
