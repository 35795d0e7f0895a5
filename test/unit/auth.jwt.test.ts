/**
 * JWT bearer tokens: real keys made with jose, a JWKS file in a temp directory and a real HTTP server for the URL
 * case. Every refusal is checked for its cause, so no test passes because something else went wrong.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

import { errors, exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from "jose";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import { JwtVerifier, type JwtSettings } from "../../src/auth/jwt.js";
import { UnauthenticatedError } from "../../src/domain/errors.js";
import { isMember } from "../../src/domain/iam.js";

const ISS = "https://issuer.example.com/";
const AUD = "certmanager";

interface TestKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function makeKey(kid: string, alg: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid } };
}

let rsa: TestKey;
let rsa2: TestKey;
let ec: TestKey;
let ed: TestKey;
let ps: TestKey;
let stranger: TestKey; // same kid as rsa, not in any key set
const dir = mkdtempSync(path.join(tmpdir(), "cm-jwt-"));
const logs: string[] = [];
const log = pino({ level: "debug" }, { write: (line: string) => void logs.push(line) });
/** Every token handed to a verifier, to prove none reaches a log line or an error message. */
const issued = new Set<string>();
const verifiers: JwtVerifier[] = [];

beforeAll(async () => {
  [rsa, rsa2, ec, ed, ps, stranger] = await Promise.all([
    makeKey("rsa-1", "RS256"),
    makeKey("rsa-2", "RS256"),
    makeKey("ec-1", "ES256"),
    makeKey("ed-1", "EdDSA"),
    makeKey("ps-1", "PS256"),
    makeKey("rsa-1", "RS256"),
  ]);
});

afterAll(() => {
  for (const v of verifiers) v.close();
  const all = logs.join("\n");
  for (const t of issued) expect(all).not.toContain(t);
});

const now = () => Math.floor(Date.now() / 1000);

/** A signed JWT: iss, aud, sub, iat and exp (5 min) by default; a claim set to undefined is left out. */
async function sign(claims: Record<string, unknown> = {}, key: TestKey = rsa, header: Record<string, unknown> = {}): Promise<string> {
  const payload: Record<string, unknown> = { iss: ISS, aud: AUD, sub: "alice", iat: now(), exp: now() + 300, ...claims };
  for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
  const t = await new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).sign(key.privateKey);
  issued.add(t);
  return t;
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

let fileCount = 0;
function jwksFile(keys: unknown[] | string): string {
  const file = path.join(dir, `jwks-${++fileCount}.json`);
  writeFileSync(file, typeof keys === "string" ? keys : JSON.stringify({ keys }));
  return file;
}

function settings(over: Partial<JwtSettings> = {}): JwtSettings {
  return {
    issuer: ISS,
    audience: AUD,
    algorithms: ["RS256", "PS256", "ES256", "EdDSA"],
    principalClaim: "sub",
    groupsClaim: "groups",
    clockSkewSeconds: 30,
    jwksCacheSeconds: 300,
    ...over,
  };
}

async function open(over: Partial<JwtSettings> = {}): Promise<JwtVerifier> {
  const v = await JwtVerifier.open(settings({ jwksFile: jwksFile([rsa.publicJwk, ec.publicJwk, ed.publicJwk]), ...over }), log);
  verifiers.push(v);
  return v;
}

/** Asserts `verify` refuses `token` with UnauthenticatedError whose cause is a `causeType`; returns the cause. */
async function refused<T extends Error>(v: JwtVerifier, token: string, causeType: abstract new (...a: never[]) => T): Promise<T> {
  if (token.length > 20) issued.add(token);
  try {
    await v.verify(token);
  } catch (err) {
    expect(err).toBeInstanceOf(UnauthenticatedError);
    const e = err as UnauthenticatedError;
    expect(e.kind).toBe("UNAUTHENTICATED");
    if (token.length > 20) expect(e.message).not.toContain(token);
    expect(e.cause).toBeInstanceOf(causeType);
    if (token.length > 20) expect((e.cause as Error).message).not.toContain(token);
    return e.cause as T;
  }
  return expect.unreachable("the token was accepted");
}

describe("JwtVerifier with a JWKS file: accepted tokens", () => {
  it("maps sub to user: and groups to group:, with exp, for RS256, ES256 and EdDSA keys", async () => {
    const v = await open();
    const exp = now() + 300;
    for (const key of [rsa, ec, ed]) {
      const id = await v.verify(await sign({ groups: ["ops", "pki-admins", "ops"], exp }, key));
      expect(id).toEqual({ principal: "user:alice", groups: ["group:ops", "group:pki-admins"], expiresAt: new Date(exp * 1000) });
    }
  });

  it("accepts an audience array holding ours, and no groups claim as no groups", async () => {
    const v = await open();
    expect(await v.verify(await sign({ aud: ["other", AUD] }))).toMatchObject({ principal: "user:alice", groups: [] });
  });

  it("reads the principal and groups from configured claims, including namespaced ones", async () => {
    const v = await open({ principalClaim: "email", groupsClaim: "https://example.com/roles" });
    const id = await v.verify(await sign({ email: "bob@example.com", "https://example.com/roles": ["writers"], groups: "ignored" }));
    expect(id).toMatchObject({ principal: "user:bob@example.com", groups: ["group:writers"] });
    // The configured claim is what counts: sub alone is not a principal then.
    const cause = await refused(v, await sign({}), errors.JWTClaimValidationFailed);
    expect(cause.claim).toBe("email");
  });

  it("accepts limits exactly: a 249-character principal, 100 groups, a 248-character group", async () => {
    const v = await open();
    const id = await v.verify(await sign({ sub: "a".repeat(249), groups: Array.from({ length: 100 }, (_, i) => `g${i}`) }));
    expect(id.principal).toHaveLength(254);
    expect(id.groups).toHaveLength(100);
    const long = await v.verify(await sign({ groups: ["g".repeat(248)] }));
    expect(long.groups[0]).toHaveLength(254);
    // What comes out is a member by the policy grammar, so it can be matched against bindings as is.
    for (const m of [id.principal, ...id.groups, ...long.groups]) expect(isMember(m)).toBe(true);
  });

  it("returns a copy: a caller changing the identity does not change the next answer", async () => {
    const v = await open();
    const t = await sign({ groups: ["ops"] });
    (await v.verify(t)).groups.push("group:admins");
    expect((await v.verify(t)).groups).toEqual(["group:ops"]);
  });
});

describe("JwtVerifier with a JWKS file: refused tokens", () => {
  it("refuses an expired token beyond the skew (RFC 7519 §4.1.4)", async () => {
    const v = await open();
    const cause = await refused(v, await sign({ iat: now() - 600, exp: now() - 60 }), errors.JWTExpired);
    expect(cause.claim).toBe("exp");
  });

  it("tolerates clockSkewSeconds: expired 10 s ago passes with 30 s, fails with 0", async () => {
    const t = await sign({ iat: now() - 600, exp: now() - 10 });
    await expect((await open({ clockSkewSeconds: 30 })).verify(t)).resolves.toMatchObject({ principal: "user:alice" });
    await refused(await open({ clockSkewSeconds: 0 }), t, errors.JWTExpired);
  });

  it("refuses a token not valid yet (nbf, RFC 7519 §4.1.5) beyond the skew", async () => {
    const v = await open();
    const cause = await refused(v, await sign({ nbf: now() + 120 }), errors.JWTClaimValidationFailed);
    expect(cause.claim).toBe("nbf");
    await expect(v.verify(await sign({ nbf: now() + 10 }))).resolves.toMatchObject({ principal: "user:alice" });
  });

  it("refuses a wrong or missing audience (RFC 7519 §4.1.3) and a wrong or missing issuer", async () => {
    const v = await open();
    for (const [claims, claim] of [
      [{ aud: "someone-else" }, "aud"],
      [{ aud: ["a", "b"] }, "aud"],
      [{ aud: undefined }, "aud"],
      [{ iss: "https://evil.example.com/" }, "iss"],
      [{ iss: undefined }, "iss"],
    ] as const) {
      const cause = await refused(v, await sign(claims), errors.JWTClaimValidationFailed);
      expect(cause.claim).toBe(claim);
    }
  });

  it("refuses alg none, crafted by hand with an empty signature (RFC 8725 §2.1)", async () => {
    const v = await open();
    const payload = { iss: ISS, aud: AUD, sub: "alice", iat: now(), exp: now() + 300 };
    for (const header of [{ alg: "none" }, { alg: "none", kid: "rsa-1" }, { alg: "None", typ: "JWT" }]) {
      await refused(v, `${b64(header)}.${b64(payload)}.`, errors.JOSEAlgNotAllowed);
    }
  });

  it("refuses HS256 signed with the RSA public key (PEM or JWK bytes) as the HMAC secret (RFC 8725 §3.1)", async () => {
    const v = await open();
    const publicKey = await importJWK(rsa.publicJwk, "RS256");
    const secrets = [new TextEncoder().encode(await exportSPKI(publicKey as CryptoKey)), new TextEncoder().encode(JSON.stringify(rsa.publicJwk))];
    for (const secret of secrets) {
      const t = await new SignJWT({ iss: ISS, aud: AUD, sub: "mallory", exp: now() + 300 }).setProtectedHeader({ alg: "HS256", kid: "rsa-1" }).sign(secret);
      await refused(v, t, errors.JOSEAlgNotAllowed);
    }
  });

  it("refuses an algorithm outside the allow-list even with a key it knows", async () => {
    const v = await JwtVerifier.open(settings({ algorithms: ["RS256"], jwksFile: jwksFile([rsa.publicJwk, { ...ec.publicJwk, alg: "ES256" }, ps.publicJwk]) }), log);
    verifiers.push(v);
    await refused(v, await sign({}, ec), errors.JOSEAlgNotAllowed);
    // PS256 with an RSA key of the set: same key type as the allowed RS256, algorithm not allowed.
    await refused(v, await sign({}, ps), errors.JOSEAlgNotAllowed);
    await expect(v.verify(await sign({}, rsa))).resolves.toMatchObject({ principal: "user:alice" });
  });

  it("refuses an unknown kid, and a known kid signed by another key", async () => {
    const v = await open();
    await refused(v, await sign({}, { ...rsa, kid: "nobody" }), errors.JWKSNoMatchingKey);
    await refused(v, await sign({}, stranger), errors.JWSSignatureVerificationFailed);
  });

  it("refuses a tampered payload", async () => {
    const v = await open();
    const [h, , s] = (await sign({ sub: "alice" })).split(".");
    const forged = `${h}.${b64({ iss: ISS, aud: AUD, sub: "admin", iat: now(), exp: now() + 300 })}.${s}`;
    await refused(v, forged, errors.JWSSignatureVerificationFailed);
  });

  it("refuses garbage", async () => {
    const v = await open();
    for (const t of ["", "garbage", "a.b.c", "a.b", "...", `${b64({ alg: "RS256", kid: "rsa-1" })}.not-json.sig`]) {
      await refused(v, t, errors.JOSEError);
    }
  });

  it("refuses a token over 16 KiB before parsing it, even a validly signed one", async () => {
    const v = await open();
    const big = await sign({ pad: "x".repeat(20 * 1024) });
    expect(big.length).toBeGreaterThan(20 * 1024);
    const cause = await refused(v, big, errors.JWTInvalid);
    expect(cause.message).toMatch(/longer than 16384/);
    const cause2 = await refused(v, "x".repeat(20 * 1024), errors.JWTInvalid);
    expect(cause2.message).toMatch(/longer than 16384/);
  });

  it.each([
    ["missing", { sub: undefined }],
    ["a number", { sub: 42 }],
    ["empty", { sub: "" }],
    ["with a space", { sub: "alice smith" }],
    ["with a non-ASCII character", { sub: "alicé" }],
    ["250 characters", { sub: "a".repeat(250) }],
  ])("refuses a principal claim %s", async (_, claims) => {
    const v = await open();
    const cause = await refused(v, await sign(claims), errors.JWTClaimValidationFailed);
    expect(cause.claim).toBe("sub");
  });

  it.each([
    ["a string", { groups: "admins" }],
    ["an object", { groups: { admins: true } }],
    ["holding a number", { groups: ["ops", 7] }],
    ["holding a name with a space", { groups: ["pki admins"] }],
    ["holding an empty name", { groups: [""] }],
    ["holding a 249-character name", { groups: ["g".repeat(249)] }],
    ["of 101 groups", { groups: Array.from({ length: 101 }, (_, i) => `g${i}`) }],
  ])("refuses a groups claim %s", async (_, claims) => {
    const v = await open();
    const cause = await refused(v, await sign(claims), errors.JWTClaimValidationFailed);
    expect(cause.claim).toBe("groups");
  });

  it("never keeps a verification past the token's exp", async () => {
    const v = await open({ clockSkewSeconds: 0 });
    const t = await sign({ exp: now() + 2 });
    await expect(v.verify(t)).resolves.toMatchObject({ principal: "user:alice" });
    await new Promise((r) => setTimeout(r, 2100));
    await refused(v, t, errors.JWTExpired);
  });

  it("refuses every token once closed", async () => {
    const v = await open();
    const t = await sign({});
    await v.verify(t);
    v.close();
    await refused(v, t, errors.JOSEError);
  });
});

describe("JwtVerifier.open", () => {
  it("refuses a JWKS file it cannot use, naming the file and quoting no key material", async () => {
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    const priv = { ...(await exportJWK(privateKey)), kid: "leaked" };
    // jose will not make a 1024-bit key; node:crypto will.
    const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
    const cases: [string, RegExp][] = [
      [path.join(dir, "missing.json"), /cannot be read \(ENOENT\)/],
      [jwksFile(`{"keys": [${JSON.stringify(rsa.publicJwk)}`), /is not valid JSON/],
      [jwksFile(JSON.stringify([rsa.publicJwk])), /is not a JSON Web Key Set/],
      [jwksFile([]), /has no key usable/],
      [jwksFile([priv]), /kid "leaked" holds private key material/],
      [jwksFile([{ kty: "oct", k: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", kid: "hmac" }]), /symmetric \(oct\) key/],
      [jwksFile([{ ...ec.publicJwk, x: "AAAA" }]), /has no key usable .*kid "ec-1": not a valid ES256 key/],
      [jwksFile([{ ...weak, kid: "weak" }]), /RSA key of 1024 bits/],
      [jwksFile([{ ...rsa.publicJwk, use: "enc" }]), /has no key usable/],
      [dir, /is not a regular file/],
    ];
    for (const [file, problem] of cases) {
      const err = await JwtVerifier.open(settings({ jwksFile: file }), log).then(
        () => expect.unreachable(`${file} was accepted`),
        (e: Error) => e,
      );
      expect(err.message).toContain(file);
      expect(err.message).toMatch(problem);
      expect(err.message).not.toContain(priv.d!);
      expect(err.message).not.toContain(rsa.publicJwk.n!);
    }
  });

  it("uses the usable keys of a file and reports the others by kid", async () => {
    logs.length = 0;
    const v = await open({ algorithms: ["ES256"] });
    await expect(v.verify(await sign({}, ec))).resolves.toMatchObject({ principal: "user:alice" });
    const warned = logs.map((l) => JSON.parse(l) as { msg: string; skipped?: string[] }).find((l) => l.msg === "JWKS file: some keys are not used");
    expect(warned?.skipped).toEqual(['kid "rsa-1": no allowed algorithm for it', 'kid "ed-1": no allowed algorithm for it']);
  });

  it("refuses HS*, none and an empty list in the algorithms, and both or neither of file and URL", async () => {
    const file = jwksFile([rsa.publicJwk]);
    for (const algorithms of [["RS256", "HS256"], ["none"], []]) {
      await expect(JwtVerifier.open(settings({ algorithms, jwksFile: file }), log)).rejects.toThrow(/JWT algorithms/);
    }
    await expect(JwtVerifier.open(settings({ jwksFile: file, jwksUrl: "https://idp.example.com/jwks" }), log)).rejects.toThrow(/exactly one/);
    await expect(JwtVerifier.open(settings({}), log)).rejects.toThrow(/exactly one/);
    await expect(JwtVerifier.open(settings({ jwksUrl: "http://idp.example.com/jwks" }), log)).rejects.toThrow(/must be https/);
    await expect(JwtVerifier.open(settings({ jwksUrl: "file:///etc/jwks.json" }), log)).rejects.toThrow(/must be https/);
  });
});

describe("JwtVerifier.reload", () => {
  it("takes a new file's keys, drops cached verifications under removed keys, and reports no change as false", async () => {
    const file = jwksFile([rsa.publicJwk]);
    const v = await open({ jwksFile: file });
    const old = await sign({}, rsa);
    await v.verify(old);
    await refused(v, await sign({}, rsa2), errors.JWKSNoMatchingKey);

    writeFileSync(file, JSON.stringify({ keys: [rsa2.publicJwk] }));
    expect(await v.reload()).toBe(true);
    await expect(v.verify(await sign({}, rsa2))).resolves.toMatchObject({ principal: "user:alice" });
    // The old token was verified (and cached) before: the key is gone, so it is refused at once.
    await refused(v, old, errors.JWKSNoMatchingKey);
    expect(await v.reload()).toBe(false);
  });

  it("keeps the old keys when the new file is bad, warning without key material", async () => {
    const file = jwksFile([rsa.publicJwk]);
    const v = await open({ jwksFile: file });
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    const priv = { ...(await exportJWK(privateKey)), kid: "rsa-1" };
    for (const bad of ["{not json", JSON.stringify({ keys: [] }), JSON.stringify({ keys: [priv] }), ""]) {
      logs.length = 0;
      writeFileSync(file, bad);
      expect(await v.reload()).toBe(false);
      await expect(v.verify(await sign({}, rsa))).resolves.toMatchObject({ principal: "user:alice" });
      const warned = logs.map((l) => JSON.parse(l) as { level: number; msg: string; file: string });
      expect(warned).toContainEqual(expect.objectContaining({ level: 40, msg: "JWKS file not reloaded: keeping the keys in use", file }));
      expect(logs.join("\n")).not.toContain(priv.d!);
      expect(logs.join("\n")).not.toContain(rsa.publicJwk.n!);
    }
  });

  it("is a no-op for a URL", async () => {
    const v = await JwtVerifier.open(settings({ jwksUrl: "https://idp.example.com/jwks" }), log);
    expect(await v.reload()).toBe(false);
    v.close();
  });
});

describe("JwtVerifier with a JWKS URL", () => {
  let server: Server;
  let url: string;
  let served: unknown = { keys: [] };
  let status = 200;
  let hits = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits++;
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(served));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));
  afterEach(() => {
    vi.useRealTimers();
    status = 200;
  });

  async function openUrl(over: Partial<JwtSettings> = {}): Promise<JwtVerifier> {
    const v = await JwtVerifier.open(settings({ jwksUrl: url, ...over }), log);
    verifiers.push(v);
    return v;
  }

  it("fetches on first use, not at open, then serves from the cache", async () => {
    served = { keys: [rsa.publicJwk, ec.publicJwk] };
    hits = 0;
    const v = await openUrl();
    expect(hits).toBe(0);
    await expect(v.verify(await sign({ groups: ["ops"] }))).resolves.toMatchObject({ principal: "user:alice", groups: ["group:ops"] });
    expect(hits).toBe(1);
    // Other tokens, other keys of the set: no new fetch.
    await v.verify(await sign({ sub: "bob" }));
    await v.verify(await sign({}, ec));
    expect(hits).toBe(1);
    // Refusals still apply to keys from a URL.
    await refused(v, await sign({ aud: "other" }), errors.JWTClaimValidationFailed);
    await refused(v, `${b64({ alg: "none" })}.${b64({ iss: ISS, aud: AUD, sub: "x" })}.`, errors.JOSEAlgNotAllowed);
    expect(hits).toBe(1);
  });

  it("picks up a rotated key after the cache age, not sooner for an unknown kid inside the cooldown", async () => {
    served = { keys: [rsa.publicJwk] };
    hits = 0;
    const v = await openUrl({ jwksCacheSeconds: 2 });
    await v.verify(await sign({}, rsa));
    expect(hits).toBe(1);
    served = { keys: [rsa2.publicJwk] };
    // Unknown kid within jose's 30 s cooldown: no refetch, so a flood of made-up kids cannot hammer the issuer.
    await refused(v, await sign({}, rsa2), errors.JWKSNoMatchingKey);
    expect(hits).toBe(1);
    await new Promise((r) => setTimeout(r, 2100));
    await expect(v.verify(await sign({}, rsa2))).resolves.toMatchObject({ principal: "user:alice" });
    expect(hits).toBe(2);
    await refused(v, await sign({ sub: "carol" }, rsa), errors.JWKSNoMatchingKey);
  });

  it("refetches for an unknown kid once the 30 s cooldown has passed", async () => {
    served = { keys: [rsa.publicJwk] };
    hits = 0;
    const v = await openUrl();
    await v.verify(await sign({}, rsa));
    served = { keys: [rsa.publicJwk, rsa2.publicJwk] };
    await refused(v, await sign({}, rsa2), errors.JWKSNoMatchingKey);
    expect(hits).toBe(1);
    // Only the wall clock moves (timers stay real, so the HTTP fetch runs as usual).
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() + 31_000);
    await expect(v.verify(await sign({ sub: "dave" }, rsa2))).resolves.toMatchObject({ principal: "user:dave" });
    expect(hits).toBe(2);
  });

  it("refuses tokens while the key set cannot be fetched, warning once", async () => {
    served = { keys: [rsa.publicJwk] };
    status = 500;
    hits = 0;
    logs.length = 0;
    const v = await openUrl();
    await refused(v, await sign({}), errors.JOSEError);
    await refused(v, await sign({ sub: "bob" }), errors.JOSEError);
    expect(hits).toBe(2);
    const warnings = logs.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40);
    expect(warnings).toEqual([expect.objectContaining({ msg: "JWKS could not be fetched: JWTs are refused until it can" })]);
    status = 200;
    await expect(v.verify(await sign({}))).resolves.toMatchObject({ principal: "user:alice" });
  });
});
