/**
 * Who may do what, over real gRPC on SQLite and MariaDB: every method of the contract (read from the shipped
 * descriptor set, so an RPC added later is covered or fails here) called by a caller with no role, and with each
 * role, on an instance of its own. What each call must give is derived from the role table (domain/iam.ts), not
 * written down: allowed calls are never denied, a caller without a role on the instance gets NOT_FOUND as if it
 * did not exist (AIP-211), one with a role lacking the permission gets PERMISSION_DENIED naming it.
 */
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as certificatePb from "../../gen/ts/certmanager/v1/certificate.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { METHOD_RULES } from "../../src/auth/methods.js";
import { type Permission, ROLES, type Role, SERVICE_RESOURCE } from "../../src/domain/iam.js";
import { contractMethods } from "../helpers/descriptor.js";
import { makeLeaf } from "../helpers/openssl.js";
import { type Clients, databases, expectFailure, richError, startTestService, type TestService } from "../helpers/service.js";

type Fixture = { instance: string; certificate: string; reclamation: string; leaf: { certPem: string; keyPem: string } };

/** A valid request for every method, on the fixture's resources; a method missing here fails the coverage test. */
const REQUESTS: Record<string, (f: Fixture) => object> = {
  "/certmanager.v1.InstanceService/CreateInstance": () => ({ instance: { displayName: "x" } }),
  "/certmanager.v1.InstanceService/GetInstance": (f) => ({ name: f.instance }),
  "/certmanager.v1.InstanceService/ListInstances": () => ({}),
  "/certmanager.v1.InstanceService/UpdateInstance": (f) => ({ instance: { name: f.instance, displayName: "renamed" }, updateMask: ["display_name"] }),
  "/certmanager.v1.InstanceService/RewrapDataKeys": (f) => ({ name: f.instance }),
  "/certmanager.v1.InstanceService/RotateDataKey": (f) => ({ name: f.instance }),
  "/certmanager.v1.InstanceService/DeleteInstance": (f) => ({ name: f.instance }),
  "/certmanager.v1.CertificateService/ImportCertificate": (f) => {
    const leaf = makeLeaf({ cn: `m-${crypto.randomUUID()}.example.test` });
    return { parent: f.instance, certificate: leaf.certPem, privateKey: leaf.keyPem };
  },
  "/certmanager.v1.CertificateService/ImportCertificates": (f) => ({ parent: f.instance }),
  "/certmanager.v1.CertificateService/ReimportCertificate": (f) => ({ name: f.certificate, certificate: f.leaf.certPem, privateKey: f.leaf.keyPem }),
  "/certmanager.v1.CertificateService/GetCertificate": (f) => ({ name: f.certificate }),
  "/certmanager.v1.CertificateService/AccessCertificate": (f) => ({ name: f.certificate }),
  "/certmanager.v1.CertificateService/ListCertificates": (f) => ({ parent: f.instance }),
  "/certmanager.v1.CertificateService/ExportCertificates": (f) => ({ parent: f.instance, includePrivateKeys: true }),
  "/certmanager.v1.CertificateService/UpdateCertificate": (f) => ({ certificate: { name: f.certificate, displayName: "x" }, updateMask: ["display_name"] }),
  "/certmanager.v1.CertificateService/DeleteCertificate": (f) => ({ name: f.certificate }),
  "/certmanager.v1.ReclamationService/ListReclamations": () => ({}),
  "/certmanager.v1.ReclamationService/GetReclamation": (f) => ({ name: f.reclamation }),
  "/certmanager.v1.ReclamationService/RestoreReclamation": (f) => ({ name: f.reclamation }),
  "/certmanager.v1.ReclamationService/DeleteReclamation": (f) => ({ name: f.reclamation }),
  "/certmanager.v1.IamService/GetIamPolicy": (f) => ({ resource: f.instance }),
  "/certmanager.v1.IamService/SetIamPolicy": (f) => ({ resource: f.instance, policy: { bindings: [] } }),
  "/certmanager.v1.IamService/TestIamPermissions": (f) => ({ resource: f.instance, permissions: ["certmanager.certificates.access"] }),
  "/certmanager.v1.ApiKeyService/CreateApiKey": () => ({ apiKey: { displayName: "k" } }),
  "/certmanager.v1.ApiKeyService/GetApiKey": () => ({ name: "apiKeys/aaaaaaaaaaaaaaaa" }),
  "/certmanager.v1.ApiKeyService/ListApiKeys": () => ({}),
  "/certmanager.v1.ApiKeyService/RevokeApiKey": () => ({ name: "apiKeys/aaaaaaaaaaaaaaaa" }),
  "/certmanager.v1.AuditService/ListAuditEvents": (f) => ({ parent: f.instance }),
};

const methods = contractMethods();

describe("the permission table covers the contract", () => {
  it("gives every method of the descriptor set a rule and this test a request", () => {
    const paths = methods.map((m) => m.path).sort();
    expect(paths.length).toBeGreaterThan(20);
    expect(paths.filter((p) => !METHOD_RULES[p])).toEqual([]);
    expect(paths.filter((p) => !REQUESTS[p])).toEqual([]);
    // And nothing in the table names a method the contract does not have.
    expect(Object.keys(METHOD_RULES).filter((p) => !paths.includes(p))).toEqual([]);
  });
});

/** The permission the rule needs for a request on an instance. */
function neededOnInstance(path: string): Permission {
  const p = METHOD_RULES[path].permission;
  return typeof p === "string" ? p : p.instance;
}

describe.each(await databases())("authorization on %s", (db) => {
  let t: TestService;
  const callers = new Map<Role | "none", Clients>();
  const members = new Map<Role | "none", string>();

  beforeAll(async () => {
    t = await startTestService(db);
    for (const who of ["none", "roles/reader", "roles/writer", "roles/manager"] as const) {
      const { apiKey, secret } = await t.apiKeys.createApiKey({ apiKey: { displayName: who } });
      callers.set(who, t.as(secret));
      members.set(who, apiKey!.member);
    }
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** A fresh instance with one certificate and a reclamation of another instance, both bound to `who`. */
  async function fixture(who: Role | "none"): Promise<Fixture> {
    const bind = async (resource: string) => {
      if (who === "none") return;
      await t.iam.setIamPolicy({ resource, policy: { bindings: [{ role: who, members: [members.get(who)!] }] } });
    };
    const instance = (await t.instances.createInstance({ instance: { displayName: "matrix" } })).instance!.name;
    await bind(instance);
    const leaf = makeLeaf({ cn: `f-${crypto.randomUUID()}.example.test` });
    const certificate = (await t.certificates.importCertificate({ parent: instance, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!.name;
    const doomed = (await t.instances.createInstance({ instance: { displayName: "doomed" } })).instance!.name;
    await bind(doomed);
    const reclamation = (await t.instances.deleteInstance({ name: doomed })).reclamation!.name;
    return { instance, certificate, reclamation, leaf };
  }

  /** Calls `path` as `c` and returns the error, or undefined on success; streams are read to their end. */
  async function call(c: Clients, path: string, req: object): Promise<ServiceError | undefined> {
    const m = methods.find((x) => x.path === path)!;
    const name = path.split("/").pop()!;
    const key = name[0].toLowerCase() + name.slice(1);
    try {
      if (m.serverStreaming && !m.clientStreaming) {
        const s = c.certificateClient.exportCertificates(certificatePb.ExportCertificatesRequest.fromPartial(req));
        for await (const _ of s) void _;
      } else if (m.clientStreaming) {
        const leaf = makeLeaf({ cn: `s-${crypto.randomUUID()}.example.test` });
        const s = c.certificateClient.importCertificates();
        const out: certificatePb.ImportCertificatesResponse[] = [];
        s.on("data", (d: certificatePb.ImportCertificatesResponse) => out.push(d));
        const done = new Promise<void>((resolve, reject) => {
          s.on("end", resolve);
          s.on("error", reject);
        });
        s.write(certificatePb.ImportCertificatesRequest.fromPartial({ item: { parent: (req as { parent: string }).parent, certificate: leaf.certPem, privateKey: leaf.keyPem } }));
        s.end();
        await done;
        // A denied item is answered in its own result: surface it as the call's error for the matrix.
        const e = out[0]?.error;
        if (e && e.code !== 0) return Object.assign(new Error(e.message), { code: e.code, details: e.message, metadata: statusMetadata(e) }) as ServiceError;
      } else {
        const service = path.split("/")[1].split(".").pop()!;
        const rpc = {
          InstanceService: c.instances,
          CertificateService: c.certificates,
          ReclamationService: c.reclamations,
          IamService: c.iam,
          ApiKeyService: c.apiKeys,
          AuditService: c.audit,
        }[service] as Record<string, (r: object) => Promise<unknown>>;
        await rpc[key](req);
      }
      return undefined;
    } catch (err) {
      return err as ServiceError;
    }
  }

  for (const who of ["none", "roles/reader", "roles/writer", "roles/manager"] as const) {
    for (const { path } of methods) {
      it(`${who} calling ${path.split("/").slice(1).join("/")}`, async () => {
        const f = await fixture(who);
        const rule = METHOD_RULES[path];
        const err = await call(callers.get(who)!, path, REQUESTS[path](f));
        const held: readonly Permission[] = who === "none" ? [] : ROLES[who];
        const onService = rule.resource.kind === "service";
        if (rule.anyCaller || (rule.list && onService)) {
          // Everyone may call it; lists are narrowed instead (checked below).
          expect(err?.code, err?.message).not.toBe(status.PERMISSION_DENIED);
          expect(err?.code, err?.message).not.toBe(status.NOT_FOUND);
          return;
        }
        if (onService) {
          // Service-wide methods need roles/administrator, which no instance role gives.
          expect(err?.code, err?.message).toBe(status.PERMISSION_DENIED);
          expect(richError(err).metadata.resource).toBe(SERVICE_RESOURCE);
          return;
        }
        const permission = neededOnInstance(path);
        if (held.includes(permission)) {
          expect([status.PERMISSION_DENIED, status.NOT_FOUND, status.UNAUTHENTICATED], `${err?.code} ${err?.message}`).not.toContain(err?.code);
        } else if (held.length === 0) {
          expect(err?.code, err?.message).toBe(status.NOT_FOUND);
          expect(["INSTANCE_NOT_FOUND", "RECLAMATION_NOT_FOUND"]).toContain(richError(err).reason);
        } else {
          expect(err?.code, err?.message).toBe(status.PERMISSION_DENIED);
          expect(richError(err).metadata.permission).toBe(permission);
        }
      });
    }
  }

  it("lists only the instances and reclamations a caller has a role on", async () => {
    const mine = await fixture("roles/reader");
    await fixture("none");
    const reader = callers.get("roles/reader")!;
    const seen = (await reader.instances.listInstances({ pageSize: 1000 })).instances.map((i) => i.name);
    expect(seen).toContain(mine.instance);
    const all = (await t.instances.listInstances({ pageSize: 1000 })).instances.map((i) => i.name);
    expect(all.length).toBeGreaterThan(seen.length);
    const bound = await Promise.all(all.map(async (name) => (await t.iam.getIamPolicy({ resource: name })).policy!.bindings.some((b) => b.members.includes(members.get("roles/reader")!))));
    expect(seen.sort()).toEqual(all.filter((_, i) => bound[i]).sort());
    const recl = (await reader.reclamations.listReclamations({ pageSize: 1000 })).reclamations.map((r) => r.name);
    expect(recl).toContain(mine.reclamation);
    const nobody = callers.get("none")!;
    expect((await nobody.instances.listInstances({ pageSize: 1000 })).instances).toEqual([]);
    expect((await nobody.reclamations.listReclamations({ pageSize: 1000 })).reclamations).toEqual([]);
  });

  it("hides an instance the caller has no role on exactly as one that does not exist", async () => {
    const f = await fixture("none");
    const nobody = callers.get("none")!;
    const hidden = await expectFailure(nobody.instances.getInstance({ name: f.instance }));
    const missing = f.instance.replace(/[0-9a-f]{12}$/, "000000000000");
    const absent = await expectFailure(t.instances.getInstance({ name: missing }));
    expect(hidden.code).toBe(absent.code);
    expect(hidden.reason).toBe(absent.reason);
    expect(hidden.message.replace(f.instance, "X")).toBe(absent.message.replace(missing, "X"));
  });

  it("TestIamPermissions answers what the caller holds, from the role table", async () => {
    const f = await fixture("roles/writer");
    const all = Object.keys(METHOD_RULES).map(neededOnInstance);
    const asked = [...new Set(all)];
    const res = await callers.get("roles/writer")!.iam.testIamPermissions({ resource: f.instance, permissions: asked });
    expect(res.permissions.sort()).toEqual(asked.filter((p) => (ROLES["roles/writer"] as readonly string[]).includes(p)).sort());
    const none = await callers.get("none")!.iam.testIamPermissions({ resource: f.instance, permissions: asked });
    expect(none.permissions).toEqual([]);
  });
});

/** grpc-status-details-bin of an item's google.rpc.Status, so richError reads it as it reads a call's. */
function statusMetadata(s: Status): Metadata {
  const md = new Metadata();
  md.set("grpc-status-details-bin", Buffer.from(Status.encode(s).finish()));
  return md;
}
