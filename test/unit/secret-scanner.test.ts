import { generateKeyPairSync, randomBytes, randomUUID, createHash } from "node:crypto";

import { describe, expect, it } from "vitest";

import { scanForSecrets } from "../helpers/secret-scanner.js";

const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const rsaPem = rsa.privateKey.export({ type: "pkcs8", format: "pem" }) as string;
const rsaPkcs1Pem = rsa.privateKey.export({ type: "pkcs1", format: "pem" }) as string;
const ecPem = ec.privateKey.export({ type: "sec1", format: "pem" }) as string;
const rsaDer = rsa.privateKey.export({ type: "pkcs8", format: "der" });
const ecDer = ec.privateKey.export({ type: "pkcs8", format: "der" });
const PIN = "canary-pin-4711";
const apiKey = `cmk_${"k3y1d0000000abcd"}_${randomBytes(32).toString("base64url")}`;
const b64url = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url({ sub: "alice@example.com", iat: 1_700_000_000 })}.${randomBytes(32).toString("base64url")}`;

/** A pino record as the service writes it: one JSON line. */
function line(fields: Record<string, unknown>, msg: string, level = 30): string {
  return JSON.stringify({ level, time: Date.now(), pid: 4242, hostname: "vm", ...fields, msg });
}

const name = () => `instances/${randomUUID()}/certificates/${randomUUID()}`;
const fingerprint = () => createHash("sha256").update(randomBytes(8)).digest("hex");

/** What the service logs at info and above, in the shapes src/ writes. */
function cleanLog(): string {
  const callId = () => randomUUID();
  return [
    line({ migrations: ["0001_initial", "0002_dek_rotation", "0011_iam_api_keys_audit"] }, "database migrated"),
    line({ address: "127.0.0.1:43117", database: "mysql2", tls: "mutual" }, "certificate manager serving"),
    line({ certificate: fingerprint(), notAfter: "2031-05-04T12:00:00.000Z", clientCa: true }, "TLS certificate loaded"),
    line({ reason: "SIGHUP", certificate: fingerprint(), notAfter: new Date().toISOString() }, "TLS certificate reloaded"),
    line({ rpc_service: "CertificateService", method: "CreateCertificate", call_id: callId(), code: 3, ms: 12.402311, reason: "PRIVATE_KEY_MISMATCH" }, "call failed"),
    line({ rpc_service: "CertificateService", method: "GetCertificate", call_id: callId(), code: 5, ms: 0.93, reason: "CERTIFICATE_NOT_FOUND" }, "call failed"),
    line({ rpc_service: "InstanceService", method: "UpdateInstance", call_id: callId(), code: 10, ms: 3.1, reason: "ETAG_MISMATCH" }, "call failed"),
    line(
      { rpc_service: "CertificateService", method: "ExportCertificates", call_id: callId(), sent: 1000, cancelled: false, ms: 5120.733, rss_mb: 185, heap_mb: 70, external_mb: 12 },
      "stream done",
    ),
    line({ instance: `instances/${randomUUID()}`, retiring: randomUUID(), active: randomUUID() }, "data key rotated"),
    line({ reclamation: `reclamations/${randomUUID()}`, instance: `instances/${randomUUID()}` }, "reclamation restored"),
    line({ certificates: 1200, deks: 2, ms: 840, owner: `vm:4242:${randomUUID()}` }, "reclamation reclaimed"),
    line({ job: "purge", handled: 3 }, "job tick"),
    line({ resource: name(), etag: `"${createHash("sha256").update("x").digest("base64url").slice(0, 16)}"`, sha1: createHash("sha1").update("y").digest("hex") }, "audit"),
    line({ key_id: "cmk_k3y1d0000000abcd", principal: "apiKey:cmk_k3y1d0000000abcd", kid: "local/root-key-1/3" }, "api key used"),
    line(
      {
        rpc_service: "CertificateService",
        method: "CreateCertificate",
        call_id: callId(),
        code: 13,
        err: {
          type: "TypeError",
          message: "Cannot read properties of undefined (reading 'toString')",
          stack:
            "    at CertificateUseCases.create (file:///work/wt-scan/src/services/certificates.ts:214:33)\n    at async Object.CreateCertificate (file:///work/wt-scan/node_modules/@grpc/grpc-js/build/src/server.js:1432:9)\n    at processTicksAndRejections (node:internal/process/task_queues:95:5)",
        },
      },
      "call failed unexpectedly",
      50,
    ),
    line({ err: "connect ECONNREFUSED 127.0.0.1:3306", cause: "getaddrinfo ENOTFOUND mariadb.internal.example" }, "health check failed", 40),
    line({ signal: "SIGTERM" }, "shutting down: draining in-flight calls"),
    line({}, "stopped"),
  ].join("\n");
}

/** `fields` logged inside a realistic record, so each canary sits among legitimate fields. */
const planted = (fields: Record<string, unknown>) =>
  line({ rpc_service: "CertificateService", method: "CreateCertificate", call_id: randomUUID(), resource: name(), ...fields }, "call failed");

describe("scanForSecrets", () => {
  it("finds nothing in what the service logs", () => {
    for (let i = 0; i < 50; i++) expect(scanForSecrets(cleanLog())).toEqual([]);
  });

  it("finds nothing in a clean log when known secrets are given", () => {
    expect(scanForSecrets(cleanLog(), [PIN, rsaPem, apiKey, randomBytes(32)])).toEqual([]);
  });

  const generic: [string, string, string][] = [
    ["an RSA PKCS#8 PEM in a JSON string", planted({ body: rsaPem }), "pem"],
    ["an RSA PKCS#1 PEM", planted({ err: { message: `bad key ${rsaPkcs1Pem}` } }), "pem"],
    ["an EC SEC1 PEM", planted({ body: ecPem }), "pem"],
    ["an RSA key's DER in base64", planted({ key: rsaDer.toString("base64") }), "der-base64"],
    ["an EC key's DER in base64", planted({ key: ecDer.toString("base64") }), "der-base64"],
    ["an RSA key's DER in hex", planted({ key: rsaDer.toString("hex") }), "der-hex"],
    ["an EC key's DER in HEX", planted({ key: ecDer.toString("hex").toUpperCase() }), "der-hex"],
    ["an API key", planted({ header: apiKey }), "api-key"],
    ["a JWT", planted({ token_hint: jwt }), "jwt"],
    ["a JWE", planted({ sealed: `${b64url({ alg: "dir", enc: "A256GCM" })}..${randomBytes(12).toString("base64url")}.${randomBytes(40).toString("base64url")}.${randomBytes(16).toString("base64url")}` }), "jwt"],
    ["an authorization header", planted({ metadata: { authorization: "Basic YWxpY2U6aHVudGVyMg" } }), "authorization"],
    ["a bearer token", `Error: upstream refused Bearer ${randomBytes(24).toString("base64url")}`, "bearer"],
    ["a passphrase field", planted({ passphrase: "correct horse battery staple" }), "secret-field"],
    ["a PIN field", planted({ pin: "9931" }), "secret-field"],
    ["a random 32-byte key in base64", planted({ dek: randomBytes(32).toString("base64") }), "high-entropy-base64"],
    ["a random 32-byte key in base64url", planted({ dek: randomBytes(32).toString("base64url") }), "high-entropy-base64"],
    ["a random 16-byte key in hex", planted({ dek: randomBytes(16).toString("hex") }), "high-entropy-hex"],
  ];
  it.each(generic)("finds %s", (_what, text, kind) => {
    const log = `${cleanLog()}\n${text}\n${cleanLog()}`;
    const findings = scanForSecrets(log);
    const at = cleanLog().split("\n").length + 1;
    expect(findings.map((f) => f.line)).toContain(at);
    expect(findings.find((f) => f.line === at)!.kind).toMatch(new RegExp(`^${kind}`)); // base64url without - or _ is base64
    expect(findings.every((f) => f.line === at)).toBe(true);
  });

  it("a PEM in a JSON line is one finding, not one per body line", () => {
    const findings = scanForSecrets(planted({ body: rsaPem }));
    expect(findings).toEqual([{ line: 1, kind: "pem", excerpt: "-----B…" }]);
  });

  // [what, value, whether the generic patterns alone catch it too]
  const known: [string, string, boolean][] = [
    ["the PIN", PIN, false],
    ["the PIN in base64", Buffer.from(PIN).toString("base64"), false],
    ["the PIN in base64url inside a longer string", Buffer.from(`user:${PIN}!`).toString("base64url"), false],
    ["the PIN in hex", Buffer.from(PIN).toString("hex"), false],
    ["the PIN in HEX", Buffer.from(PIN).toString("hex").toUpperCase(), false],
    ["the PIN in hex inside a longer string", `0a0b${Buffer.from(PIN).toString("hex")}ff`, true],
  ];
  it.each(known)("finds %s given as a known secret", (_what, value, generic) => {
    const log = [cleanLog(), planted({ detail: `C_Login failed with ${value}` }), cleanLog()].join("\n");
    expect(scanForSecrets(log).length).toBe(generic ? 1 : 0);
    const findings = scanForSecrets(log, [PIN]);
    expect(findings.length).toBe(generic ? 2 : 1);
    const hit = findings.find((f) => f.kind.startsWith("known-secret"))!;
    expect(hit.line).toBe(cleanLog().split("\n").length + 1);
    expect(hit.excerpt).toMatch(/^.{6}…$/u);
    expect(findings.every((f) => f.line === hit.line)).toBe(true);
  });

  it("finds a known secret at every byte alignment inside a longer base64 string", () => {
    for (let pad = 0; pad < 6; pad++) {
      const blob = Buffer.concat([randomBytes(pad), Buffer.from(PIN), randomBytes(pad)]);
      for (const enc of ["base64", "base64url"] as const) {
        expect(scanForSecrets(planted({ blob: blob.toString(enc) }), [PIN]).map((f) => f.kind)).toContainEqual(expect.stringMatching(/^known-secret/));
      }
    }
  });

  it("finds a known PEM key's DER, logged without the PEM framing, in base64 split over lines, and in hex", () => {
    const body = rsaPem.split("\n").filter((l) => !l.startsWith("-----")).join("\n");
    // Only the middle of the body: no DER header left for the generic der-base64 pattern.
    const middle = body.slice(200, 600);
    const hexMiddle = rsaDer.subarray(100, 300).toString("hex");
    expect(scanForSecrets(planted({ part: middle }), [rsaPem]).map((f) => f.kind)).toContain("known-secret DER (base64)");
    expect(scanForSecrets(planted({ part: hexMiddle }), [rsaPem]).map((f) => f.kind)).toContain("known-secret DER (hex)");
    expect(scanForSecrets(planted({ part: hexMiddle.toUpperCase() }), [rsaPem]).map((f) => f.kind)).toContain("known-secret DER (HEX)");
    // Raw text (a child process's stderr) with real newlines: found on the line it starts.
    const raw = `starting\nkey was:\n${body}\ndone`;
    expect(scanForSecrets(raw, [rsaPem]).map((f) => f.line)).toContain(3);
  });

  it("finds a known secret JSON-escaped and as bytes", () => {
    const pass = 'pa"ss\\word with\nnewline';
    expect(scanForSecrets(planted({ detail: `wrong passphrase ${pass}` }), [pass]).map((f) => f.kind)).toEqual(["known-secret (JSON-escaped)"]);
    const dek = randomBytes(32);
    expect(scanForSecrets(line({ k: dek.toString("hex") }, "x"), [dek]).map((f) => f.kind)).toEqual(["known-secret (hex)"]);
  });

  it("never puts a secret in a finding: the excerpt is 6 characters", () => {
    const log = [planted({ body: rsaPem }), planted({ k: apiKey }), planted({ t: jwt }), planted({ p: PIN })].join("\n");
    const findings = scanForSecrets(log, [PIN]);
    expect(findings.map((f) => f.kind)).toEqual(["pem", "api-key", "jwt", "known-secret"]);
    for (const f of findings) expect([...f.excerpt]).toHaveLength(7);
    expect(JSON.stringify(findings)).not.toContain(apiKey.slice(0, 30));
  });

  it("refuses a known secret too short to be told from chance", () => {
    expect(() => scanForSecrets("", ["1234"])).toThrow(/at least 6/);
  });
});
