/**
 * Attacks on access control over real gRPC (SQLite and MariaDB): hostile metadata, AIP-211 leaks between an
 * instance the caller has no role on and one that does not exist, escalation through policies, malformed
 * access-control requests, audit amplification and races on the hash chain.
 */
import { credentials, Metadata, status, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as certificatePb from "../../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../../gen/ts/certmanager/v1/instance.js";
import { verifyChain } from "../../src/domain/audit.js";
import { KnexAuditRepository } from "../../src/storage/repositories/audit.js";
import { makeLeaf } from "../helpers/openssl.js";
import { type Clients, databases, expectFailure, promisify, richError, startTestService, type TestService } from "../helpers/service.js";

const GHOST = "instances/00000000-0000-4000-8000-000000000000";

type Item = { parent: string; certificate: string; privateKey: string; requestId?: string };

/** Sends `items` on one ImportCertificates stream of `c`, collecting the responses. */
async function importStream(c: Clients, items: Item[], between?: (i: number) => Promise<void>): Promise<certificatePb.ImportCertificatesResponse[]> {
  const call: ClientDuplexStream<certificatePb.ImportCertificatesRequest, certificatePb.ImportCertificatesResponse> = c.certificateClient.importCertificates();
  const out: certificatePb.ImportCertificatesResponse[] = [];
  const done = new Promise<void>((resolve, reject) => {
    call.on("data", (m: certificatePb.ImportCertificatesResponse) => out.push(m));
    call.on("end", resolve);
    call.on("error", reject);
  });
  for (let i = 0; i < items.length; i++) {
    call.write(certificatePb.ImportCertificatesRequest.fromPartial({ item: items[i] }));
    if (between) {
      // Waits for this item's answer before going on.
      while (out.length <= i) await new Promise((r) => setTimeout(r, 5));
      await between(i);
    }
  }
  call.end();
  await done;
  return out;
}

/** A unary GetInstance with raw metadata, no interceptor. */
function getInstanceWith(address: string, md: Metadata, name: string): Promise<unknown> {
  const client = new instancePb.InstanceServiceClient(address, credentials.createInsecure());
  const rpc = promisify(client, instancePb.InstanceServiceService, instancePb);
  return rpc.getInstance({ name }, md).finally(() => client.close());
}

const codeOf = async (p: Promise<unknown>): Promise<number> => {
  try {
    await p;
    return status.OK;
  } catch (err) {
    return (err as ServiceError).code;
  }
};

/** The observable answer of a failed call, without what legitimately differs (call ids). */
const shape = (e: { code: number; message: string; reason: string; domain: string; metadata: Record<string, string> }, swap: [string, string]) => {
  const s = (v: string) => v.split(swap[0]).join(swap[1]);
  return { code: e.code, reason: e.reason, domain: e.domain, message: s(e.message), metadata: Object.fromEntries(Object.entries(e.metadata).map(([k, v]) => [k, s(v)])) };
};

describe.each(await databases())("access-control attacks on %s", (db) => {
  let t: TestService;
  const who = new Map<string, { clients: Clients; member: string; secret: string; name: string }>();
  let instance: string;
  let other: string;
  let cert: string;

  beforeAll(async () => {
    t = await startTestService(db);
    for (const role of ["reader", "writer", "manager", "stranger", "otherManager"]) {
      const { apiKey, secret } = await t.apiKeys.createApiKey({ apiKey: { displayName: role } });
      t.plantSecret(secret);
      who.set(role, { clients: t.as(secret), member: apiKey!.member, secret, name: apiKey!.name });
    }
    instance = (await t.instances.createInstance({ instance: { displayName: "victim" } })).instance!.name;
    other = (await t.instances.createInstance({ instance: { displayName: "other" } })).instance!.name;
    await t.iam.setIamPolicy({
      resource: instance,
      policy: { bindings: ["reader", "writer", "manager"].map((r) => ({ role: `roles/${r}`, members: [who.get(r)!.member] })) },
    });
    await t.iam.setIamPolicy({ resource: other, policy: { bindings: [{ role: "roles/manager", members: [who.get("otherManager")!.member] }] } });
    const leaf = makeLeaf({ cn: `victim-${db}.example.test` });
    cert = (await t.certificates.importCertificate({ parent: instance, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!.name;
  });
  afterAll(async () => {
    await t?.stop();
  });

  describe("hostile metadata", () => {
    const md = (...pairs: [string, string | Buffer][]) => {
      const m = new Metadata();
      for (const [k, v] of pairs) m.add(k, v as never);
      return m;
    };

    it("accepts the scheme case-insensitively (RFC 7235) and a valid key with one or more spaces after it", async () => {
      const key = who.get("reader")!.secret;
      expect(await codeOf(getInstanceWith(t.address, md(["authorization", `bearer ${key}`]), instance))).toBe(status.OK);
      expect(await codeOf(getInstanceWith(t.address, md(["authorization", `BEARER   ${key}`]), instance))).toBe(status.OK);
    });

    it("refuses every malformed, duplicated, oversized, binary or altered credential with UNAUTHENTICATED", async () => {
      const key = who.get("reader")!.secret;
      const otherId = who.get("writer")!.name.split("/")[1];
      const [, , mac] = key.split("_");
      const cases: [string, Metadata][] = [
        ["two authorization headers (both valid)", md(["authorization", `Bearer ${key}`], ["authorization", `Bearer ${key}`])],
        ["trailing spaces", md(["authorization", `Bearer ${key}   `])],
        ["no scheme", md(["authorization", key])],
        ["Basic scheme", md(["authorization", `Basic ${Buffer.from(`x:${key}`).toString("base64")}`])],
        ["a valid secret under another key's id", md(["authorization", `Bearer cmk_${otherId}_${mac}`])],
        ["one character of the secret changed", md(["authorization", `Bearer ${key.slice(0, -1)}${key.endsWith("A") ? "B" : "A"}`])],
        ["uppercased id", md(["authorization", `Bearer ${key.replace(/^cmk_([a-z0-9]{16})/, (_, id: string) => `cmk_${id.toUpperCase()}`)}`])],
        ["binary authorization-bin only", md(["authorization-bin", Buffer.from(`Bearer ${key}`)])],
        ["a 20 KiB token", md(["authorization", `Bearer ${"a".repeat(20 * 1024)}`])],
        ["an empty value", md(["authorization", ""])],
        ["Bearer with nothing", md(["authorization", "Bearer "])],
      ];
      for (const [what, m] of cases) {
        const code = await codeOf(getInstanceWith(t.address, m, instance));
        // Node's http2 refuses to send two `authorization` values (a single-value header): INTERNAL on the client.
        expect({ what, code }).toEqual({ what, code: what.startsWith("two") ? status.INTERNAL : status.UNAUTHENTICATED });
      }
    });

    it("does not let a 100 KiB header through, and keeps serving afterwards", async () => {
      const key = who.get("reader")!.secret;
      const code = await codeOf(getInstanceWith(t.address, md(["authorization", `Bearer ${key}`], ["x-junk", "j".repeat(100 * 1024)]), instance));
      expect(code).not.toBe(status.OK);
      const big = await codeOf(getInstanceWith(t.address, md(["authorization", `Bearer ${"k".repeat(100 * 1024)}`]), instance));
      expect(big).not.toBe(status.OK);
      expect(await codeOf(who.get("reader")!.clients.instances.getInstance({ name: instance }))).toBe(status.OK);
    });

    it("refuses unicode in the header (grpc-js refuses to send it, or the server answers UNAUTHENTICATED)", async () => {
      const key = who.get("reader")!.secret;
      let code: number;
      try {
        code = await codeOf(getInstanceWith(t.address, md(["authorization", `Bearer ${key}é`]), instance));
      } catch {
        code = status.UNAUTHENTICATED;
      }
      expect(code).not.toBe(status.OK);
    });

    it("refuses a well-formed key made under another server's pepper", async () => {
      const t2 = await startTestService(db);
      try {
        const foreign = t2.adminKey;
        t.plantSecret(foreign);
        expect(await codeOf(t.as(foreign).instances.listInstances({}))).toBe(status.UNAUTHENTICATED);
        // Same id space, other pepper: even a key id the first server knows does not help.
        const ownId = t.adminKey.split("_")[1];
        const forged = `cmk_${ownId}_${foreign.split("_")[2]}`;
        expect(await codeOf(t.as(forged).instances.listInstances({}))).toBe(status.UNAUTHENTICATED);
      } finally {
        await t2.stop();
      }
    });
  });
  describe("AIP-211: an instance without a role looks exactly like one that does not exist", () => {
    it("answers a stranger alike for the victim and a ghost, for every kind of name", async () => {
      const s = who.get("stranger")!.clients;
      const id = instance.split("/")[1];
      const ghostId = GHOST.split("/")[1];
      const certId = cert.split("/")[3];
      const pairs: [string, (n: string) => Promise<unknown>][] = [
        ["GetInstance", (n) => s.instances.getInstance({ name: n })],
        ["UpdateInstance", (n) => s.instances.updateInstance({ instance: { name: n, displayName: "x" }, updateMask: ["display_name"] })],
        ["DeleteInstance", (n) => s.instances.deleteInstance({ name: n })],
        ["GetCertificate", (n) => s.certificates.getCertificate({ name: `${n}/certificates/${certId}` })],
        ["AccessCertificate", (n) => s.certificates.accessCertificate({ name: `${n}/certificates/${certId}` })],
        ["ListCertificates", (n) => s.certificates.listCertificates({ parent: n })],
        ["ImportCertificate", (n) => s.certificates.importCertificate({ parent: n, certificate: "x", privateKey: "y" })],
        ["GetIamPolicy", (n) => s.iam.getIamPolicy({ resource: n })],
        ["SetIamPolicy", (n) => s.iam.setIamPolicy({ resource: n, policy: { bindings: [{ role: "roles/manager", members: [who.get("stranger")!.member] }] } })],
        ["ListAuditEvents", (n) => s.audit.listAuditEvents({ parent: n })],
      ];
      for (const [what, call] of pairs) {
        const a = shape(await expectFailure(call(instance)), [id, "ID"]);
        const b = shape(await expectFailure(call(GHOST)), [ghostId, "ID"]);
        expect({ what, a }).toEqual({ what, a: b });
        expect({ what, code: a.code }).toEqual({ what, code: status.NOT_FOUND });
      }
      // TestIamPermissions answers for the caller: nothing held on either.
      expect((await s.iam.testIamPermissions({ resource: instance, permissions: ["certmanager.instances.get"] })).permissions).toEqual([]);
      expect((await s.iam.testIamPermissions({ resource: GHOST, permissions: ["certmanager.instances.get"] })).permissions).toEqual([]);
      // Streams: ExportCertificates and ImportCertificates items.
      const exp = async (n: string) => {
        const st = s.certificateClient.exportCertificates(certificatePb.ExportCertificatesRequest.fromPartial({ parent: n, includePrivateKeys: true }));
        try {
          for await (const _ of st) void _;
        } catch (err) {
          return richError(err);
        }
        throw new Error("export succeeded");
      };
      expect(shape(await exp(instance), [id, "ID"])).toEqual(shape(await exp(GHOST), [ghostId, "ID"]));
      const leaf = makeLeaf({ cn: `aip211-${db}.example.test` });
      const res = await importStream(s, [
        { parent: instance, certificate: leaf.certPem, privateKey: leaf.keyPem },
        { parent: GHOST, certificate: leaf.certPem, privateKey: leaf.keyPem },
      ]);
      expect(res.map((r) => r.error?.code)).toEqual([status.NOT_FOUND, status.NOT_FOUND]);
      expect(res[0].error!.message.split(id).join("ID")).toBe(res[1].error!.message.split(ghostId).join("ID"));
    });

    it("hides the victim's reclamation like a nonexistent one, and keeps it out of filtered lists", async () => {
      const s = who.get("stranger")!.clients;
      const doomed = (await t.instances.createInstance({ instance: { displayName: "doomed" } })).instance!.name;
      const { reclamation } = await t.instances.deleteInstance({ name: doomed });
      const rid = reclamation!.name.split("/")[1];
      const ghost = "reclamations/00000000-0000-4000-8000-000000000000";
      for (const call of [(n: string) => s.reclamations.getReclamation({ name: n }), (n: string) => s.reclamations.restoreReclamation({ name: n })]) {
        const a = shape(await expectFailure(call(reclamation!.name)), [rid, "ID"]);
        const b = shape(await expectFailure(call(ghost)), [ghost.split("/")[1], "ID"]);
        expect(a).toEqual(b);
      }
      const listed = await s.reclamations.listReclamations({ filter: `instance = "${doomed}"` });
      expect(listed.reclamations).toEqual([]);
      const ghostList = await s.reclamations.listReclamations({ filter: `instance = "${GHOST}"` });
      expect(ghostList).toEqual(listed);
      expect((await s.instances.listInstances({ showDeleted: true } as never)).instances).toEqual([]);
    });

    it("does not let a page token from an administrator's list show a stranger anything", async () => {
      for (let i = 0; i < 3; i++) await t.instances.createInstance({ instance: { displayName: `page-${i}` } });
      const page = await t.instances.listInstances({ pageSize: 1 });
      expect(page.nextPageToken).not.toBe("");
      const s = who.get("stranger")!.clients;
      const got = await s.instances.listInstances({ pageSize: 1, pageToken: page.nextPageToken }).catch((e: unknown) => richError(e));
      if ("instances" in got) expect(got.instances).toEqual([]);
      else expect(got.code).toBe(status.INVALID_ARGUMENT);
      // A certificates page token of the victim is refused on another instance.
      const leaf1 = makeLeaf({ cn: `pg1-${db}.example.test` });
      await t.certificates.importCertificate({ parent: instance, certificate: leaf1.certPem, privateKey: leaf1.keyPem });
      const cp = await t.certificates.listCertificates({ parent: instance, pageSize: 1 });
      expect(cp.nextPageToken).not.toBe("");
      const om = who.get("otherManager")!.clients;
      expect((await expectFailure(om.certificates.listCertificates({ parent: other, pageSize: 1, pageToken: cp.nextPageToken }))).code).toBe(status.INVALID_ARGUMENT);
      // One character in the middle changed: every bit there is significant (at the end, base64url padding bits
      // can make a changed character decode to the same bytes, so the tampering would change nothing).
      const mid = Math.floor(cp.nextPageToken.length / 2);
      const flipped = cp.nextPageToken.slice(0, mid) + (cp.nextPageToken[mid] === "A" ? "B" : "A") + cp.nextPageToken.slice(mid + 1);
      expect((await expectFailure(t.certificates.listCertificates({ parent: instance, pageSize: 1, pageToken: flipped }))).code).toBe(status.INVALID_ARGUMENT);
    });
  });

  describe("escalation", () => {
    it("lets a manager bind at most manager on its own instance, nothing on the service or another instance", async () => {
      const m = who.get("manager")!;
      const p = (await m.clients.iam.getIamPolicy({ resource: instance })).policy!;
      const withAdmin = { ...p, bindings: [...p.bindings, { role: "roles/administrator", members: [m.member] }] };
      expect((await expectFailure(m.clients.iam.setIamPolicy({ resource: instance, policy: withAdmin }))).code).toBe(status.INVALID_ARGUMENT);
      expect((await expectFailure(m.clients.iam.getIamPolicy({ resource: "services/certmanager" }))).code).toBe(status.PERMISSION_DENIED);
      expect(
        (await expectFailure(m.clients.iam.setIamPolicy({ resource: "services/certmanager", policy: { bindings: [{ role: "roles/administrator", members: [m.member] }] } }))).code,
      ).toBe(status.PERMISSION_DENIED);
      expect((await expectFailure(m.clients.iam.setIamPolicy({ resource: other, policy: { bindings: [{ role: "roles/manager", members: [m.member] }] } }))).code).toBe(
        status.NOT_FOUND,
      );
      expect((await m.clients.iam.testIamPermissions({ resource: "services/certmanager", permissions: ["certmanager.instances.create", "certmanager.apiKeys.create"] })).permissions).toEqual([]);
      expect((await expectFailure(m.clients.apiKeys.createApiKey({ apiKey: { displayName: "x" } }))).code).toBe(status.PERMISSION_DENIED);
      expect((await expectFailure(m.clients.instances.createInstance({ instance: {} }))).code).toBe(status.PERMISSION_DENIED);
      const w = who.get("writer")!;
      expect(
        (await expectFailure(w.clients.iam.setIamPolicy({ resource: instance, policy: { bindings: [{ role: "roles/manager", members: [w.member] }] } }))).code,
      ).toBe(status.PERMISSION_DENIED);
      // A reclamation of another instance: a manager of this one cannot restore or delete it.
      const doomed = (await t.instances.createInstance({ instance: {} })).instance!.name;
      const { reclamation } = await t.instances.deleteInstance({ name: doomed });
      expect((await expectFailure(m.clients.reclamations.deleteReclamation({ name: reclamation!.name }))).code).toBe(status.NOT_FOUND);
    });

    it("keeps a service-wide manager from administering the service", async () => {
      const { apiKey, secret } = await t.apiKeys.createApiKey({ apiKey: { displayName: "svc-manager" } });
      t.plantSecret(secret);
      const sp = (await t.iam.getIamPolicy({ resource: "services/certmanager" })).policy!;
      await t.iam.setIamPolicy({ resource: "services/certmanager", policy: { ...sp, bindings: [...sp.bindings, { role: "roles/manager", members: [apiKey!.member] }] } });
      const c = t.as(secret);
      expect(await codeOf(c.instances.getInstance({ name: other }))).toBe(status.OK);
      expect((await expectFailure(c.apiKeys.listApiKeys({}))).code).toBe(status.PERMISSION_DENIED);
      expect((await expectFailure(c.iam.getIamPolicy({ resource: "services/certmanager" }))).code).toBe(status.PERMISSION_DENIED);
      expect((await expectFailure(c.audit.listAuditEvents({ parent: "services/certmanager" }))).code).toBe(status.PERMISSION_DENIED);
      expect((await expectFailure(c.instances.createInstance({ instance: {} }))).code).toBe(status.PERMISSION_DENIED);
      expect(
        (await expectFailure(c.iam.setIamPolicy({ resource: other, policy: { bindings: [{ role: "roles/administrator", members: [apiKey!.member] }] } }))).code,
      ).toBe(status.INVALID_ARGUMENT);
    });
  });

  describe("malformed access-control requests", () => {
    it("refuses bad policies with INVALID_ARGUMENT and stores nothing", async () => {
      const before = (await t.iam.getIamPolicy({ resource: other })).policy!;
      const bad: [string, object][] = [
        ["missing policy", { resource: other }],
        ["10k members", { resource: other, policy: { bindings: [{ role: "roles/reader", members: Array.from({ length: 10_000 }, (_, i) => `user:u${i}`) }] } }],
        ["newline in member", { resource: other, policy: { bindings: [{ role: "roles/reader", members: ["user:a\nb"] }] } }],
        ["NUL in member", { resource: other, policy: { bindings: [{ role: "roles/reader", members: ["user:a\u0000"] }] } }],
        ["unicode member", { resource: other, policy: { bindings: [{ role: "roles/reader", members: ["user:é"] }] } }],
        ["unknown kind", { resource: other, policy: { bindings: [{ role: "roles/reader", members: ["allUsers"] }] } }],
        ["unknown role", { resource: other, policy: { bindings: [{ role: "roles/owner", members: ["user:a"] }] } }],
        ["version 2", { resource: other, policy: { version: 2, bindings: [] } }],
        ["condition", { resource: other, policy: { bindings: [{ role: "roles/reader", members: ["user:a"], condition: { expression: "true" } }] } }],
        ["bad resource", { resource: "instances/../services/certmanager", policy: { bindings: [] } }],
      ];
      for (const [what, req] of bad) {
        const e = await expectFailure(t.iam.setIamPolicy(req as never));
        expect({ what, code: e.code }).toEqual({ what, code: status.INVALID_ARGUMENT });
      }
      for (const etag of [Buffer.alloc(0, 0), Buffer.alloc(11, 1), Buffer.alloc(13, 1), Buffer.alloc(12, 0)].slice(1)) {
        expect((await expectFailure(t.iam.setIamPolicy({ resource: other, policy: { ...before, etag } }))).code).toBe(status.ABORTED);
      }
      expect((await t.iam.getIamPolicy({ resource: other })).policy).toEqual(before);
    });

    it("refuses bad pages and names on the key and audit services", async () => {
      expect((await expectFailure(t.apiKeys.listApiKeys({ pageSize: -1 }))).code).toBe(status.INVALID_ARGUMENT);
      expect((await expectFailure(t.audit.listAuditEvents({ parent: instance, pageSize: -5 }))).code).toBe(status.INVALID_ARGUMENT);
      const page = await t.audit.listAuditEvents({ parent: instance, pageSize: 1 });
      expect(page.nextPageToken).not.toBe("");
      const altered = Buffer.from(page.nextPageToken, "base64url");
      altered[altered.length - 1] ^= 1;
      expect((await expectFailure(t.audit.listAuditEvents({ parent: instance, pageSize: 1, pageToken: altered.toString("base64url") }))).code).toBe(status.INVALID_ARGUMENT);
      // Another chain's token.
      expect((await expectFailure(t.audit.listAuditEvents({ parent: "services/certmanager", pageSize: 1, pageToken: page.nextPageToken }))).code).toBe(status.INVALID_ARGUMENT);
      for (const name of ["apiKeys/", "apiKeys/AAAAAAAAAAAAAAAA", "apiKeys/aaaaaaaaaaaaaaaa/x", "apiKeys/../x"]) {
        const code = (await expectFailure(t.apiKeys.revokeApiKey({ name }))).code;
        expect([status.INVALID_ARGUMENT, status.NOT_FOUND]).toContain(code);
      }
    });

    it("records a hostile request id as nothing and keeps every audit field on one line", async () => {
      const m = who.get("manager")!;
      const requestId = "abc\n{\"principal\":\"apiKey:forged\"}";
      await expectFailure(m.clients.instances.updateInstance({ instance: { name: instance, displayName: "x" }, updateMask: ["bogus"], requestId } as never));
      await expectFailure(m.clients.certificates.importCertificate({ parent: instance, certificate: "x", privateKey: "y", requestId }));
      const events = (await t.audit.listAuditEvents({ parent: instance, pageSize: 1000 })).auditEvents;
      for (const e of events) {
        for (const v of [e.requestId, e.peer, e.principal, e.resource, e.method, e.reason]) expect(v).not.toMatch(/[\u0000-\u001f]/);
        expect(e.principal).not.toBe("apiKey:forged");
      }
    });
  });
  describe("audit under pressure", () => {
    it("appends concurrent changes to one chain without gaps, and exactly one SetIamPolicy wins an etag", async () => {
      const m = who.get("manager")!;
      const p = (await m.clients.iam.getIamPolicy({ resource: instance })).policy!;
      // Different contents, one etag: the losers of the race on the row must be recorded as ABORTED, not as
      // successes (before the fix, on MariaDB, a SetIamPolicy that lost at the conditional UPDATE committed its
      // audit event with code 0 and then answered ABORTED).
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => m.clients.iam.setIamPolicy({ resource: instance, policy: { ...p, bindings: [...p.bindings, { role: "roles/reader", members: [`user:race-${i}`] }] } })),
      );
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      for (const r of results) if (r.status === "rejected") expect((r.reason as ServiceError).code).toBe(status.ABORTED);
      await Promise.all(
        Array.from({ length: 12 }, (_, i) => {
          const leaf = makeLeaf({ cn: `conc-${i}-${db}.example.test` });
          return m.clients.certificates.importCertificate({ parent: instance, certificate: leaf.certPem, privateKey: leaf.keyPem });
        }),
      );
      const raw = t.raw();
      const repo = new KnexAuditRepository(raw);
      const rows = await repo.list(instance, 0, 100_000);
      expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => i + 1));
      expect(verifyChain(instance, rows, await repo.head(instance))).toEqual([]);
      const sets = rows.filter((r) => r.method.endsWith("/SetIamPolicy") && r.principal === m.member);
      expect(sets.filter((r) => r.code === 0)).toHaveLength(1);
      expect(sets.filter((r) => r.code === status.ABORTED)).toHaveLength(7);
    });

    it("stops a revoked key's open ImportCertificates stream at its next item", async () => {
      const { apiKey, secret } = await t.apiKeys.createApiKey({ apiKey: { displayName: "short-lived" } });
      t.plantSecret(secret);
      const p = (await t.iam.getIamPolicy({ resource: other })).policy!;
      await t.iam.setIamPolicy({ resource: other, policy: { ...p, bindings: [...p.bindings, { role: "roles/manager", members: [apiKey!.member] }] } });
      const c = t.as(secret);
      const leaves = Array.from({ length: 3 }, (_, i) => makeLeaf({ cn: `revoked-${i}-${db}.example.test` }));
      const res = await importStream(
        c,
        leaves.map((l) => ({ parent: other, certificate: l.certPem, privateKey: l.keyPem })),
        async (i) => {
          if (i === 0) await t.apiKeys.revokeApiKey({ name: apiKey!.name });
        },
      );
      // A new call is refused at once.
      expect(await codeOf(c.instances.getInstance({ name: other }))).toBe(status.UNAUTHENTICATED);
      // And the stream opened before the revocation stops at its next item: the credential is checked per item.
      expect(res.map((r) => r.error?.code ?? 0)).toEqual([0, status.UNAUTHENTICATED, status.UNAUTHENTICATED]);
    });

    it("bounds the denial events one ImportCertificates stream can write by the caller's rate limit", async () => {
      const rl = await startTestService(db, { CM_RATE_LIMIT_PER_SECOND: "1", CM_RATE_LIMIT_BURST: "3" });
      try {
        const victim = (await rl.instances.createInstance({ instance: { displayName: "victim" } })).instance!.name;
        const { apiKey, secret } = await rl.apiKeys.createApiKey({ apiKey: { displayName: "flooder" } });
        rl.plantSecret(secret);
        const c = rl.as(secret);
        const leaf = makeLeaf({ cn: `flood-${db}.example.test` });
        const res = await importStream(
          c,
          Array.from({ length: 60 }, () => ({ parent: victim, certificate: leaf.certPem, privateKey: leaf.keyPem })),
        );
        expect(res).toHaveLength(60);
        const rows = await new KnexAuditRepository(rl.raw()).list(victim, 0, 100_000);
        const denials = rows.filter((r) => r.principal === apiKey!.member);
        // A unary flood of the same calls writes at most burst + rate x seconds events; one stream must not write more.
        expect(denials.length).toBeLessThanOrEqual(10);
        expect(res.filter((r) => r.error?.code === status.RESOURCE_EXHAUSTED).length).toBeGreaterThan(0);
        for (const r of res) expect([status.NOT_FOUND, status.RESOURCE_EXHAUSTED]).toContain(r.error?.code);
      } finally {
        await rl.stop();
      }
    });

    it("bounds the events an unauthenticated flood writes", async () => {
      const anon = t.as(undefined);
      const before = (await t.audit.listAuditEvents({ parent: "services/certmanager", pageSize: 1 })).headSequence;
      await Promise.all(Array.from({ length: 300 }, () => codeOf(anon.certificates.accessCertificate({ name: cert }))));
      const after = (await t.audit.listAuditEvents({ parent: "services/certmanager", pageSize: 1 })).headSequence;
      expect(after - before).toBeLessThanOrEqual(12);
      expect((await new KnexAuditRepository(t.raw()).list(instance, 0, 100_000)).filter((r) => r.principal === "anonymous")).toEqual([]);
    });
  });
});
