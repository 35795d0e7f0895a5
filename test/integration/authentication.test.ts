/**
 * Who is calling, over real gRPC on SQLite and MariaDB: API keys issued by the service (shown once, stored only
 * as an HMAC, revocable, expiring, last use recorded in batches), the bootstrap administrator key, JWT bearer
 * tokens against a JWKS file, client certificates over mutual TLS, the precedence between them, what stays open,
 * the per-caller rate limit, and the rules SetIamPolicy enforces. Every refusal is checked for its status and
 * for changing nothing.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { HealthClient } from "../../gen/ts/grpc/health/v1/health.js";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApiKey_State } from "../../gen/ts/certmanager/v1/api_key.js";
import { RetryInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { makeCa, makeLeaf } from "../helpers/openssl.js";
import { clientsFor, databases, expectFailure, startTestService, TestClock, type TestService } from "../helpers/service.js";

const HOUR = 3_600_000;

describe.each(await databases())("authentication on %s", (db) => {
  let t: TestService;
  const clock = new TestClock();
  const dir = mkdtempSync(path.join(tmpdir(), "cm-authn-"));
  let signingKey: CryptoKey;
  let publicJwk: Record<string, unknown>;

  beforeAll(async () => {
    const pair = await generateKeyPair("ES256", { extractable: true });
    signingKey = pair.privateKey;
    publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "idp-1", alg: "ES256", use: "sig" };
    writeFileSync(path.join(dir, "jwks.json"), JSON.stringify({ keys: [publicJwk] }));
    t = await startTestService(
      db,
      {
        CM_JWT_ISSUER: "https://idp.example.test",
        CM_JWT_AUDIENCE: "certmanager",
        CM_JWT_JWKS_FILE: path.join(dir, "jwks.json"),
        CM_JWT_ALGORITHMS: "ES256",
        CM_JWT_CLOCK_SKEW_SECONDS: "0",
      },
      clock,
    );
  });
  afterAll(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const token = (claims: Record<string, unknown>, opts: { exp?: number; aud?: string; iss?: string; nbf?: number } = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
      .setIssuer(opts.iss ?? "https://idp.example.test")
      .setAudience(opts.aud ?? "certmanager")
      .setIssuedAt(now - 5)
      .setNotBefore(opts.nbf ?? now - 5)
      .setExpirationTime(opts.exp ?? now + 300)
      .sign(signingKey);
  };

  async function instanceWith(bindings: { role: string; members: string[] }[]): Promise<string> {
    const name = (await t.instances.createInstance({ instance: { displayName: "authn" } })).instance!.name;
    await t.iam.setIamPolicy({ resource: name, policy: { bindings } });
    return name;
  }

  it("refuses a call without a credential, or with a bad one, with the same UNAUTHENTICATED", async () => {
    const { apiKey, secret } = await t.apiKeys.createApiKey({ apiKey: { displayName: "probe" } });
    const wrongSecret = secret.slice(0, -4) + (secret.endsWith("AAAA") ? "BBBB" : "AAAA");
    const unknownId = secret.replace(/^cmk_[a-z0-9]{16}/, "cmk_zzzzzzzzzzzzzzzz");
    const answers = [];
    for (const cred of [undefined, "", "cmk_short", wrongSecret, unknownId, "not-a-jwt.at.all", `${secret} extra`]) {
      const e = await expectFailure(t.as(cred).instances.listInstances({}));
      expect(e.code, String(cred)).toBe(status.UNAUTHENTICATED);
      expect(e.reason).toBe("UNAUTHENTICATED");
      answers.push(e.message);
    }
    // Nothing tells an unknown key from a wrong secret or a malformed one.
    expect(new Set(answers).size).toBe(1);
    expect(apiKey!.name).toMatch(/^apiKeys\/[a-z0-9]{16}$/);
  });

  it("issues API keys shown once and stored only as an HMAC; revoked and expired keys stop working", async () => {
    const created = await t.apiKeys.createApiKey({ apiKey: { displayName: "ci", expireTime: new Date(clock.now().getTime() + HOUR) } });
    const { apiKey, secret } = created;
    expect(secret).toMatch(/^cmk_[a-z0-9]{16}_[A-Za-z0-9_-]{43}$/);
    expect(apiKey!.state).toBe(ApiKey_State.STATE_ACTIVE);
    const read = await t.apiKeys.getApiKey({ name: apiKey!.name });
    expect(JSON.stringify(read)).not.toContain(secret.slice(21));
    const row = await t.raw()("api_keys").where({ id: apiKey!.name.split("/")[1] }).first();
    expect(JSON.stringify(row)).not.toContain(secret.slice(21));
    expect(row.secret_hmac).toMatch(/^[0-9a-f]{64}$/);

    const name = await instanceWith([{ role: "roles/reader", members: [apiKey!.member] }]);
    const c = t.as(secret);
    expect((await c.instances.getInstance({ name })).instance!.name).toBe(name);
    await t.service.flushApiKeyUses();
    expect((await t.apiKeys.getApiKey({ name: apiKey!.name })).apiKey!.lastUseTime).toBeDefined();

    clock.advance(2 * HOUR);
    expect((await expectFailure(c.instances.getInstance({ name }))).code).toBe(status.UNAUTHENTICATED);
    expect((await t.apiKeys.getApiKey({ name: apiKey!.name })).apiKey!.state).toBe(ApiKey_State.STATE_EXPIRED);

    const second = await t.apiKeys.createApiKey({ apiKey: { displayName: "revoked" } });
    await t.iam.setIamPolicy({ resource: name, policy: { bindings: [{ role: "roles/reader", members: [second.apiKey!.member] }] } });
    const c2 = t.as(second.secret);
    await c2.instances.getInstance({ name });
    const revoked = await t.apiKeys.revokeApiKey({ name: second.apiKey!.name });
    expect(revoked.apiKey!.state).toBe(ApiKey_State.STATE_REVOKED);
    expect((await expectFailure(c2.instances.getInstance({ name }))).code).toBe(status.UNAUTHENTICATED);
    // Revoking again returns it unchanged.
    expect((await t.apiKeys.revokeApiKey({ name: second.apiKey!.name })).apiKey!.revokeTime).toEqual(revoked.apiKey!.revokeTime);
    expect((await expectFailure(t.apiKeys.createApiKey({ apiKey: { expireTime: new Date(clock.now().getTime() - 1000) } }))).reason).toBe("INVALID_FIELD");
    expect((await expectFailure(t.apiKeys.getApiKey({ name: "apiKeys/zzzzzzzzzzzzzzzz" }))).reason).toBe("API_KEY_NOT_FOUND");
  });

  it("writes the bootstrap administrator key once, mode 0600, logging its path and never its value", async () => {
    const file = path.join(t.dataDir, "bootstrap-admin.key");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, "utf8").trim()).toBe(t.adminKey);
    const line = t.logs.find((l) => l.file === file);
    expect(line?.level).toBe(40);
    expect(JSON.stringify(t.logs)).not.toContain(t.adminKey.slice(21));
    const before = (await t.apiKeys.listApiKeys({ pageSize: 1000 })).apiKeys.length;
    await t.restart();
    expect(readFileSync(file, "utf8").trim()).toBe(t.adminKey);
    expect((await t.apiKeys.listApiKeys({ pageSize: 1000 })).apiKeys.length).toBe(before);
    const policy = (await t.iam.getIamPolicy({ resource: "services/certmanager" })).policy!;
    expect(policy.bindings).toEqual([{ role: "roles/administrator", members: [expect.stringMatching(/^apiKey:/)], condition: undefined }]);
  });

  it("authenticates JWTs: user and group members; expired, wrong audience or issuer, none and HS256 refused", async () => {
    const name = await instanceWith([
      { role: "roles/reader", members: ["user:alice@example.test"] },
      { role: "roles/writer", members: ["group:payments"] },
    ]);
    const alice = t.as(await token({ sub: "alice@example.test" }));
    await alice.instances.getInstance({ name });
    expect((await expectFailure(alice.certificates.listCertificates({ parent: name }).then(() => alice.certificates.accessCertificate({ name: `${name}/certificates/00000000-0000-0000-0000-000000000000` })))).code).toBe(status.PERMISSION_DENIED);
    const bob = t.as(await token({ sub: "bob", groups: ["payments"] }));
    expect((await expectFailure(bob.certificates.accessCertificate({ name: `${name}/certificates/00000000-0000-0000-0000-000000000000` }))).reason).toBe("CERTIFICATE_NOT_FOUND");

    const now = Math.floor(Date.now() / 1000);
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const claims = { sub: "alice@example.test", iss: "https://idp.example.test", aud: "certmanager", exp: now + 300 };
    const { createHmac } = await import("node:crypto");
    const hsInput = `${b64({ alg: "HS256", kid: "idp-1" })}.${b64(claims)}`;
    const bad = [
      await token({ sub: "alice@example.test" }, { exp: now - 60 }),
      await token({ sub: "alice@example.test" }, { nbf: now + 600 }),
      await token({ sub: "alice@example.test" }, { aud: "someone-else" }),
      await token({ sub: "alice@example.test" }, { iss: "https://evil.example.test" }),
      `${b64({ alg: "none" })}.${b64(claims)}.`,
      `${hsInput}.${createHmac("sha256", JSON.stringify(publicJwk)).update(hsInput).digest("base64url")}`,
    ];
    for (const jwt of bad) {
      const e = await expectFailure(t.as(jwt).instances.getInstance({ name }));
      expect(e.code).toBe(status.UNAUTHENTICATED);
    }
    expect(JSON.stringify(t.logs)).not.toContain(bad[0].split(".")[2]);
  });

  it("keeps health and reflection open by default, and the certificate API closed", async () => {
    const health = new HealthClient(t.address, credentials.createInsecure());
    const res = await new Promise<{ status: number }>((resolve, reject) => health.check({ service: "" }, (e: ServiceError | null, r: { status: number }) => (e ? reject(e) : resolve(r))));
    expect(res.status).toBe(1);
    health.close();
  });

  it("closes health when CM_OPEN_HEALTH=false, and answers a caller over its rate limit with RetryInfo", async () => {
    const s = await startTestService(db, { CM_OPEN_HEALTH: "false", CM_RATE_LIMIT_PER_SECOND: "1", CM_RATE_LIMIT_BURST: "3" });
    try {
      const check = (md: Metadata) =>
        new Promise<number>((resolve) => {
          const h = new HealthClient(s.address, credentials.createInsecure());
          h.check({ service: "" }, md, (e: ServiceError | null, r: { status: number }) => {
            h.close();
            resolve(e ? -e.code : r.status);
          });
        });
      expect(await check(new Metadata())).toBe(-status.UNAUTHENTICATED);
      const md = new Metadata();
      md.set("authorization", `Bearer ${s.adminKey}`);
      expect(await check(md)).toBe(1);
      // A burst of 3, then the limit (health is not rate-limited: orchestrators probe it).
      for (let i = 0; i < 3; i++) await s.instances.listInstances({});
      const err = (await s.instances.listInstances({}).then(
        () => undefined,
        (e: ServiceError) => e,
      ))!;
      expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
      const details = Status.decode(err.metadata.get("grpc-status-details-bin")[0] as Buffer).details;
      const retry = RetryInfo.decode(details.find((d) => d.typeUrl === "type.googleapis.com/google.rpc.RetryInfo")!.value);
      const ms = Number(retry.retryDelay!.seconds) * 1000 + retry.retryDelay!.nanos / 1e6;
      expect(ms).toBeGreaterThan(0);
      expect(ms).toBeLessThanOrEqual(1000);
    } finally {
      await s.stop();
    }
  });

  it("holds SetIamPolicy's rules: etag, roles, members, escalation; a refusal changes nothing", async () => {
    const writer = await t.apiKeys.createApiKey({ apiKey: { displayName: "w" } });
    const manager = await t.apiKeys.createApiKey({ apiKey: { displayName: "m" } });
    const name = await instanceWith([
      { role: "roles/writer", members: [writer.apiKey!.member] },
      { role: "roles/manager", members: [manager.apiKey!.member] },
    ]);
    const m = t.as(manager.secret);
    const read = (await m.iam.getIamPolicy({ resource: name })).policy!;
    const snapshot = JSON.stringify(read);
    const refusals: [() => Promise<unknown>, number, string][] = [
      [() => m.iam.setIamPolicy({ resource: name, policy: { ...read, etag: Buffer.from("stale-etag!!") } }), status.ABORTED, "POLICY_ETAG_MISMATCH"],
      [() => m.iam.setIamPolicy({ resource: name, policy: { bindings: [{ role: "roles/owner", members: ["user:x"] }] } }), status.INVALID_ARGUMENT, "INVALID_FIELD"],
      [() => m.iam.setIamPolicy({ resource: name, policy: { bindings: [{ role: "roles/reader", members: ["alice"] }] } }), status.INVALID_ARGUMENT, "INVALID_FIELD"],
      [() => m.iam.setIamPolicy({ resource: name, policy: { bindings: [{ role: "roles/administrator", members: [manager.apiKey!.member] }] } }), status.INVALID_ARGUMENT, "INVALID_FIELD"],
      [() => m.iam.setIamPolicy({ resource: "services/certmanager", policy: { bindings: [{ role: "roles/administrator", members: [manager.apiKey!.member] }] } }), status.PERMISSION_DENIED, "PERMISSION_DENIED"],
      [() => t.as(writer.secret).iam.setIamPolicy({ resource: name, policy: { bindings: [{ role: "roles/manager", members: [writer.apiKey!.member] }] } }), status.PERMISSION_DENIED, "PERMISSION_DENIED"],
      [() => t.iam.setIamPolicy({ resource: "services/certmanager", policy: { bindings: [{ role: "roles/reader", members: ["user:x"] }] } }), status.INVALID_ARGUMENT, "INVALID_FIELD"],
      [() => m.iam.setIamPolicy({ resource: name, policy: { bindings: [{ role: "roles/reader", members: ["user:x"], condition: { expression: "true", title: "", description: "", location: "" } }] } }), status.INVALID_ARGUMENT, "INVALID_FIELD"],
    ];
    for (const [p, code, reason] of refusals) {
      const e = await expectFailure(p());
      expect([e.code, e.reason], e.message).toEqual([code, reason]);
    }
    expect(JSON.stringify((await m.iam.getIamPolicy({ resource: name })).policy)).toBe(snapshot);
    // A resource that is neither kind is named as such, with both forms.
    const bad = await expectFailure(m.iam.getIamPolicy({ resource: "projects/x" }));
    expect([bad.code, bad.fieldViolations[0]?.field]).toEqual([status.INVALID_ARGUMENT, "resource"]);
    expect(bad.message).toContain("services/certmanager");
    // An administrator gets the truth about an instance that does not exist, and no policy is stored for it.
    const ghost = name.replace(/[0-9a-f]{12}$/, "000000000000");
    expect((await expectFailure(t.iam.setIamPolicy({ resource: ghost, policy: { bindings: [{ role: "roles/reader", members: ["user:x"] }] } }))).reason).toBe("INSTANCE_NOT_FOUND");
    expect(await t.raw()("iam_policies").where({ resource: ghost }).first()).toBeUndefined();
    // The read-modify-write that follows the rules goes through, and the old etag is then stale.
    const updated = await m.iam.setIamPolicy({ resource: name, policy: { ...read, bindings: [...read.bindings, { role: "roles/reader", members: ["group:auditors"] }] } });
    expect(updated.policy!.etag).not.toEqual(read.etag);
    expect((await expectFailure(m.iam.setIamPolicy({ resource: name, policy: read }))).reason).toBe("POLICY_ETAG_MISMATCH");
  });

  it("takes the principal of a verified client certificate (SPIFFE ID, else DNS name); a bearer token takes precedence", async () => {
    const serverCa = makeCa({ cn: "Authn Server CA", keySlot: "authn-server-ca" });
    const server = makeLeaf({ cn: "localhost", keySlot: "authn-server", issuer: serverCa, sans: { dns: ["localhost"], ip: ["127.0.0.1"] } });
    const clientCa = makeCa({ cn: "Authn Client CA", keySlot: "authn-client-ca" });
    const spiffe = makeLeaf({ cn: "payments", keySlot: "authn-spiffe", issuer: clientCa, sans: { uri: ["spiffe://example.org/ns/prod/sa/payments"], dns: ["payments.internal"] } });
    const dns = makeLeaf({ cn: "billing", keySlot: "authn-dns", issuer: clientCa, sans: { dns: ["Billing.Internal"] } });
    writeFileSync(path.join(dir, "s.crt"), server.certPem);
    writeFileSync(path.join(dir, "s.key"), server.keyPem, { mode: 0o600 });
    writeFileSync(path.join(dir, "ca.pem"), clientCa.certPem);
    const s = await startTestService(db, {
      CM_TLS_CERT_FILE: path.join(dir, "s.crt"),
      CM_TLS_KEY_FILE: path.join(dir, "s.key"),
      CM_TLS_CLIENT_CA_FILE: path.join(dir, "ca.pem"),
      CM_TLS_CLIENT_AUTH: "request",
    });
    const tls = (who?: { certPem: string; keyPem: string }) =>
      credentials.createSsl(Buffer.from(serverCa.certPem), who ? Buffer.from(who.keyPem) : null, who ? Buffer.from(who.certPem) : null);
    const admin = clientsFor(s.address, s.adminKey, tls());
    try {
      const name = (await admin.instances.createInstance({ instance: { displayName: "mtls" } })).instance!.name;
      await admin.iam.setIamPolicy({
        resource: name,
        policy: { bindings: [{ role: "roles/reader", members: ["spiffe:spiffe://example.org/ns/prod/sa/payments", "dns:billing.internal"] }] },
      });
      for (const who of [spiffe, dns]) {
        const c = clientsFor(s.address, undefined, tls(who));
        expect((await c.instances.getInstance({ name })).instance!.name).toBe(name);
        c.close();
      }
      // No certificate and no token: unauthenticated. A bad token with a good certificate: still refused.
      const anon = clientsFor(s.address, undefined, tls());
      expect((await expectFailure(anon.instances.getInstance({ name }))).code).toBe(status.UNAUTHENTICATED);
      anon.close();
      const mixed = clientsFor(s.address, "cmk_aaaaaaaaaaaaaaaa_" + "A".repeat(43), tls(spiffe));
      expect((await expectFailure(mixed.instances.getInstance({ name }))).code).toBe(status.UNAUTHENTICATED);
      mixed.close();
    } finally {
      admin.close();
      await s.stop();
    }
  });
});
