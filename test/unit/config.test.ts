/** Configuration from the environment: defaults, validation naming the variable, *_FILE secrets. */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_VARIABLES, ConfigError, loadConfig, unknownVariables } from "../../src/config/index.js";

describe("loadConfig", () => {
  it("defaults to SQLite and the local keystore under the data directory", () => {
    const c = loadConfig({ CM_DATA_DIR: "/var/lib/cm" });
    expect(c.listenAddress).toBe("127.0.0.1:50051");
    expect(c.database).toEqual({ client: "sqlite", filename: "/var/lib/cm/certmanager.sqlite", timeouts: { connectMs: 5000, acquireMs: 10_000, operationMs: 30_000 } });
    expect(c.localKeystorePath).toBe("/var/lib/cm/root-keys.json");
    expect(c.dekCacheTtlMs).toBe(300_000);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("logs process stats only when CM_PROCESS_STATS_INTERVAL_SECONDS is above 0", () => {
    expect(loadConfig({}).processStatsIntervalMs).toBe(0);
    expect(loadConfig({ CM_PROCESS_STATS_INTERVAL_SECONDS: "" }).processStatsIntervalMs).toBe(0);
    expect(loadConfig({ CM_PROCESS_STATS_INTERVAL_SECONDS: "0" }).processStatsIntervalMs).toBe(0);
    expect(loadConfig({ CM_PROCESS_STATS_INTERVAL_SECONDS: "10" }).processStatsIntervalMs).toBe(10_000);
    expect(() => loadConfig({ CM_PROCESS_STATS_INTERVAL_SECONDS: "ten" })).toThrow(/CM_PROCESS_STATS_INTERVAL_SECONDS must be a whole number/);
  });

  it("flags a keystore inside the data folder on a network listener only", () => {
    const net = { CM_DATA_DIR: "/var/lib/cm", CM_LISTEN_ADDRESS: "0.0.0.0:50051", CM_ALLOW_INSECURE_NON_LOOPBACK: "true" };
    expect(loadConfig(net).keystoreBesideData).toBe(true);
    expect(loadConfig({ ...net, CM_LOCAL_KEYSTORE: "/var/lib/cm/keys/root-keys.json" }).keystoreBesideData).toBe(true);
    expect(loadConfig({ ...net, CM_LOCAL_KEYSTORE: "/etc/cm-keys/root-keys.json" }).keystoreBesideData).toBe(false);
    expect(loadConfig({ ...net, CM_LOCAL_KEYSTORE: "/var/lib/cm-keys/root-keys.json" }).keystoreBesideData).toBe(false);
    expect(loadConfig({ CM_DATA_DIR: "/var/lib/cm" }).keystoreBesideData).toBe(false);
  });

  it("reads the database URL from a file without echoing it in errors", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cm-config-"));
    const file = path.join(dir, "db-url");
    writeFileSync(file, "mysql://cm:s3cret@db.internal:3306/cm\n");
    const c = loadConfig({ CM_DATABASE_URL_FILE: file });
    expect(c.database).toMatchObject({ client: "mysql", url: "mysql://cm:s3cret@db.internal:3306/cm", poolMax: 10 });
    try {
      loadConfig({ CM_DATABASE_URL: "postgres://cm:s3cret@x/y" });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toContain("CM_DATABASE_URL");
      expect((err as Error).message).not.toContain("s3cret");
    }
    expect(() => loadConfig({ CM_DATABASE_URL_FILE: path.join(dir, "missing") })).toThrow(/CM_DATABASE_URL_FILE/);
    expect(() => loadConfig({ CM_DATABASE_URL_FILE: file, CM_DATABASE_URL: "mysql://x/y" })).toThrow(/both set/);
  });

  it("configures the pkcs11 backend all or nothing, the PIN from a file, never echoed", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cm-config-"));
    const pin = path.join(dir, "pin");
    writeFileSync(pin, "98765\n");
    const c = loadConfig({ CM_PKCS11_MODULE: "/usr/lib/softhsm/libsofthsm2.so", CM_PKCS11_TOKEN_LABEL: "cm", CM_PKCS11_PIN_FILE: pin });
    expect(c.pkcs11).toEqual({ modulePath: "/usr/lib/softhsm/libsofthsm2.so", tokenLabel: "cm", pin: "98765", sessionPoolSize: 4, callTimeoutMs: 5000 });
    expect(loadConfig({}).pkcs11).toBeUndefined();
    expect(() => loadConfig({ CM_PKCS11_TOKEN_LABEL: "cm" })).toThrow(/CM_PKCS11_MODULE/);
    expect(() => loadConfig({ CM_PKCS11_MODULE: "/x.so", CM_PKCS11_PIN: "98765" })).toThrow(/CM_PKCS11_TOKEN_LABEL/);
    try {
      loadConfig({ CM_PKCS11_MODULE: "/x.so", CM_PKCS11_TOKEN_LABEL: "cm", CM_PKCS11_PIN: "98765", CM_PKCS11_SESSIONS: "0" });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toContain("CM_PKCS11_SESSIONS");
      expect((err as Error).message).not.toContain("98765");
    }
  });

  it.each([
    ["CM_LISTEN_ADDRESS", "50051"],
    ["CM_LISTEN_ADDRESS", "127.0.0.1:70000"],
    ["CM_HEALTH_LISTEN_ADDRESS", "8080"],
    ["CM_HEALTH_LISTEN_ADDRESS", "127.0.0.1:50051"],
    ["CM_DEK_CACHE_MAX", "0"],
    ["CM_DEK_CACHE_TTL_SECONDS", "ten"],
    ["CM_MAX_MESSAGE_BYTES", "10"],
    ["CM_LOG_LEVEL", "verbose"],
    ["CM_DEFAULT_ROOT_KEY_ID", "Bad Id"],
    ["CM_DEK_MAX_ENCRYPTIONS", "2"],
    ["CM_DEK_MAX_ENCRYPTIONS", String(2 ** 32)],
    ["CM_RECLAMATION_RETENTION_SECONDS", "0"],
    ["CM_PURGE_BATCH_SIZE", "501"],
    ["CM_PROCESS_STATS_INTERVAL_SECONDS", "-1"],
    ["CM_PROCESS_STATS_INTERVAL_SECONDS", "1.5"],
    ["CM_PROCESS_STATS_INTERVAL_SECONDS", "86401"],
  ])("refuses %s=%s naming the variable", (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`configuration error: ${name} `));
  });

  it("refuses plaintext on a non-loopback address unless TLS is set or the risk is accepted explicitly", () => {
    for (const address of ["0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "certs.internal:50051"]) {
      expect(() => loadConfig({ CM_LISTEN_ADDRESS: address })).toThrow(
        /configuration error: CM_LISTEN_ADDRESS .* TLS is off: set CM_TLS_CERT_FILE and CM_TLS_KEY_FILE, listen on 127\.0\.0\.1, or set CM_ALLOW_INSECURE_NON_LOOPBACK=true/,
      );
      expect(loadConfig({ CM_LISTEN_ADDRESS: address, CM_ALLOW_INSECURE_NON_LOOPBACK: "true" }).insecureNonLoopback).toBe(true);
      const tls = loadConfig({ CM_LISTEN_ADDRESS: address, CM_TLS_CERT_FILE: "/etc/cm/tls.crt", CM_TLS_KEY_FILE: "/etc/cm/tls.key" });
      expect([tls.insecureNonLoopback, tls.tls?.certFile]).toEqual([false, "/etc/cm/tls.crt"]);
    }
    for (const address of ["127.0.0.1:1", "127.8.9.10:1", "localhost:1", "[::1]:1"]) {
      expect(loadConfig({ CM_LISTEN_ADDRESS: address }).insecureNonLoopback).toBe(false);
    }
    expect(() => loadConfig({ CM_ALLOW_INSECURE_NON_LOOPBACK: "yes" })).toThrow(/CM_ALLOW_INSECURE_NON_LOOPBACK must be true or false/);
  });

  it("reads the plaintext health listener: absent by default, any host:port but the service's own", () => {
    expect(loadConfig({}).healthListenAddress).toBeUndefined();
    expect(loadConfig({ CM_HEALTH_LISTEN_ADDRESS: "0.0.0.0:50052", CM_TLS_CERT_FILE: "t.crt", CM_TLS_KEY_FILE: "t.key" }).healthListenAddress).toBe("0.0.0.0:50052");
    expect(() => loadConfig({ CM_HEALTH_LISTEN_ADDRESS: "127.0.0.1:50052", CM_OPEN_HEALTH: "false" })).toThrow(/configuration error: CM_HEALTH_LISTEN_ADDRESS serves health to anyone/);
    // Port 0 on both (tests) is two listeners, each on a port of its own.
    expect(loadConfig({ CM_LISTEN_ADDRESS: "127.0.0.1:0", CM_HEALTH_LISTEN_ADDRESS: "127.0.0.1:0" }).healthListenAddress).toBe("127.0.0.1:0");
  });

  it("reads TLS settings: both files or neither, the client CA only with them, require by default", () => {
    const c = loadConfig({ CM_TLS_CERT_FILE: "tls.crt", CM_TLS_KEY_FILE: "tls.key", CM_TLS_CLIENT_CA_FILE: "clients.pem" });
    expect(c.tls).toEqual({
      certFile: path.resolve("tls.crt"),
      keyFile: path.resolve("tls.key"),
      clientCaFile: path.resolve("clients.pem"),
      clientAuth: "require",
      reloadIntervalMs: 30_000,
    });
    expect(loadConfig({}).tls).toBeUndefined();
    expect(() => loadConfig({ CM_TLS_CERT_FILE: "tls.crt" })).toThrow(/CM_TLS_KEY_FILE is required/);
    expect(() => loadConfig({ CM_TLS_KEY_FILE: "tls.key" })).toThrow(/CM_TLS_CERT_FILE is required/);
    expect(() => loadConfig({ CM_TLS_CLIENT_CA_FILE: "clients.pem" })).toThrow(/CM_TLS_CLIENT_CA_FILE needs CM_TLS_CERT_FILE/);
    expect(() => loadConfig({ CM_TLS_CERT_FILE: "a", CM_TLS_KEY_FILE: "b", CM_TLS_CLIENT_CA_FILE: "c", CM_TLS_CLIENT_AUTH: "optional" })).toThrow(/CM_TLS_CLIENT_AUTH must be require or request/);
    // Without client CAs a client-auth mode would accept anyone: refused, with or without TLS.
    for (const env of [{ CM_TLS_CERT_FILE: "a", CM_TLS_KEY_FILE: "b", CM_TLS_CLIENT_AUTH: "require" }, { CM_TLS_CLIENT_AUTH: "require" }]) {
      expect(() => loadConfig(env)).toThrow(/CM_TLS_CLIENT_AUTH needs CM_TLS_CLIENT_CA_FILE/);
    }
  });
  it("reads JWT settings when CM_JWT_ISSUER is set, with defaults", () => {
    const base = { CM_JWT_ISSUER: "https://idp.example.com/", CM_JWT_AUDIENCE: "certmanager" };
    expect(loadConfig({}).jwt).toBeUndefined();
    expect(loadConfig({ ...base, CM_JWT_JWKS_FILE: "jwks.json" }).jwt).toEqual({
      issuer: "https://idp.example.com/",
      audience: "certmanager",
      jwksFile: path.resolve("jwks.json"),
      algorithms: ["RS256", "PS256", "ES256", "EdDSA"],
      principalClaim: "sub",
      groupsClaim: "groups",
      clockSkewSeconds: 30,
      jwksCacheSeconds: 300,
    });
    const c = loadConfig({
      ...base,
      CM_JWT_JWKS_URL: "https://idp.example.com/.well-known/jwks.json",
      CM_JWT_ALGORITHMS: " ES384, EdDSA,ES384 ",
      CM_JWT_PRINCIPAL_CLAIM: "email",
      CM_JWT_GROUPS_CLAIM: "https://example.com/roles",
      CM_JWT_CLOCK_SKEW_SECONDS: "0",
      CM_JWT_JWKS_CACHE_SECONDS: "60",
    });
    expect(c.jwt).toEqual({
      issuer: "https://idp.example.com/",
      audience: "certmanager",
      jwksUrl: "https://idp.example.com/.well-known/jwks.json",
      algorithms: ["ES384", "EdDSA"],
      principalClaim: "email",
      groupsClaim: "https://example.com/roles",
      clockSkewSeconds: 0,
      jwksCacheSeconds: 60,
    });
    for (const host of ["127.0.0.1:8080", "localhost", "[::1]:9000"]) {
      expect(loadConfig({ ...base, CM_JWT_JWKS_URL: `http://${host}/jwks` }).jwt?.jwksUrl).toBe(`http://${host}/jwks`);
    }
  });

  it("refuses incomplete, contradictory or unsafe JWT settings, naming the variable", () => {
    const base = { CM_JWT_ISSUER: "https://idp.example.com/", CM_JWT_AUDIENCE: "certmanager", CM_JWT_JWKS_FILE: "/etc/cm/jwks.json" };
    const cases: [Record<string, string>, RegExp][] = [
      [{ CM_JWT_AUDIENCE: "certmanager" }, /configuration error: CM_JWT_ISSUER is required when CM_JWT_AUDIENCE is set/],
      [{ CM_JWT_JWKS_URL: "https://x/jwks", CM_JWT_ALGORITHMS: "RS256" }, /CM_JWT_ISSUER is required when CM_JWT_ALGORITHMS, CM_JWT_JWKS_URL are set/],
      [{ ...base, CM_JWT_AUDIENCE: "" }, /configuration error: CM_JWT_AUDIENCE is required with CM_JWT_ISSUER/],
      [{ ...base, CM_JWT_JWKS_FILE: "" }, /configuration error: CM_JWT_JWKS_URL \(or CM_JWT_JWKS_FILE\) is required/],
      [{ ...base, CM_JWT_JWKS_URL: "https://idp.example.com/jwks" }, /configuration error: CM_JWT_JWKS_FILE and CM_JWT_JWKS_URL are both set/],
      [{ ...base, CM_JWT_ALGORITHMS: "RS256,HS256" }, /configuration error: CM_JWT_ALGORITHMS names "HS256", which is not accepted/],
      [{ ...base, CM_JWT_ALGORITHMS: "none" }, /configuration error: CM_JWT_ALGORITHMS names "none", which is not accepted/],
      [{ ...base, CM_JWT_ALGORITHMS: "rs256" }, /CM_JWT_ALGORITHMS names "rs256"/],
      [{ ...base, CM_JWT_ALGORITHMS: " , " }, /configuration error: CM_JWT_ALGORITHMS must name at least one/],
      [{ ...base, CM_JWT_PRINCIPAL_CLAIM: "user id" }, /configuration error: CM_JWT_PRINCIPAL_CLAIM must be a claim name/],
      [{ ...base, CM_JWT_CLOCK_SKEW_SECONDS: "301" }, /configuration error: CM_JWT_CLOCK_SKEW_SECONDS must be between 0 and 300/],
      [{ ...base, CM_JWT_JWKS_CACHE_SECONDS: "60" }, /configuration error: CM_JWT_JWKS_CACHE_SECONDS applies to CM_JWT_JWKS_URL only/],
      [{ ...base, CM_JWT_JWKS_FILE: "", CM_JWT_JWKS_URL: "https://x/jwks", CM_JWT_JWKS_CACHE_SECONDS: "9" }, /CM_JWT_JWKS_CACHE_SECONDS must be between 10 and 86400/],
      [{ ...base, CM_JWT_JWKS_FILE: "", CM_JWT_JWKS_URL: "http://idp.example.com/jwks" }, /configuration error: CM_JWT_JWKS_URL must be https:\/\/ .*got http:\/\/idp\.example\.com/],
      [{ ...base, CM_JWT_JWKS_FILE: "", CM_JWT_JWKS_URL: "http://10.0.0.7:8080/jwks" }, /CM_JWT_JWKS_URL must be https:\/\//],
      [{ ...base, CM_JWT_JWKS_FILE: "", CM_JWT_JWKS_URL: "ftp://idp.example.com/jwks" }, /CM_JWT_JWKS_URL must be https:\/\/, got ftp:/],
      [{ ...base, CM_JWT_JWKS_FILE: "", CM_JWT_JWKS_URL: "not a url" }, /CM_JWT_JWKS_URL is not a valid URL/],
    ];
    for (const [env, problem] of cases) expect(() => loadConfig(env), JSON.stringify(env)).toThrow(problem);
  });

  it("reads the export memory budget and per-caller stream cap, within their ranges", () => {
    const base = { CM_DATA_DIR: "/tmp/cm-config-test" };
    expect(loadConfig(base)).toMatchObject({ exportMemoryBudgetBytes: 64 * 1024 * 1024, exportStreamsPerCaller: 8 });
    expect(loadConfig({ ...base, CM_EXPORT_MEMORY_BUDGET_MB: "16", CM_EXPORT_STREAMS_PER_CALLER: "100" })).toMatchObject({
      exportMemoryBudgetBytes: 16 * 1024 * 1024,
      exportStreamsPerCaller: 100,
    });
    expect(() => loadConfig({ ...base, CM_EXPORT_MEMORY_BUDGET_MB: "0" })).toThrow(/CM_EXPORT_MEMORY_BUDGET_MB must be between 1 and 65536/);
    expect(() => loadConfig({ ...base, CM_EXPORT_STREAMS_PER_CALLER: "0" })).toThrow(/CM_EXPORT_STREAMS_PER_CALLER must be between 1 and 10000/);
  });
});

describe("the known variables", () => {
  const root = path.resolve(import.meta.dirname, "../..");

  it("are every CM_* name the config reader mentions, and each is in the README's table", () => {
    const source = readFileSync(path.join(root, "src/config/index.ts"), "utf8");
    // Names in the list itself are what is checked against; the rest of the file must only use listed ones.
    const body = source.replace(/export const CONFIG_VARIABLES[\s\S]*?\]\);/, "");
    const mentioned = new Set([...body.matchAll(/"(CM_[A-Z0-9_]*[A-Z0-9])"/g)].map((m) => m[1]!));
    for (const name of mentioned) expect(CONFIG_VARIABLES, name).toContain(name);
    const readme = readFileSync(path.join(root, "README.md"), "utf8");
    for (const name of CONFIG_VARIABLES) {
      const base = name.replace(/_FILE$/, "");
      expect(readme.includes(`\`${name}\``) || (name !== base && readme.includes(`\`${base}\` (or \`_FILE\`)`)), name).toBe(true);
    }
  });

  it("a misspelt CM_JWT_* without the issuer is the usual ConfigError, not the guard's", () => {
    expect(() => loadConfig({ CM_JWT_ISUER: "https://idp.example" })).toThrow(ConfigError);
    expect(() => loadConfig({ CM_JWT_ISUER: "https://idp.example" })).toThrow(/CM_JWT_ISSUER is required when CM_JWT_ISUER is set/);
    expect(() => loadConfig({ CM_LISTEN_ADRESS: "0.0.0.0:1" })).not.toThrow();
  });

  it("can all be read by the guarded reader (which throws on any CM_* name not listed)", () => {
    const env = Object.fromEntries(CONFIG_VARIABLES.map((n) => [n, ""]));
    expect(() => loadConfig(env)).not.toThrow();
  });
});

describe("unknownVariables", () => {
  it("names set CM_* variables the server does not read, with the nearest known one", () => {
    expect(
      unknownVariables({
        CM_LISTEN_ADRESS: "0.0.0.0:50051",
        CM_LOG_LEVLE: "debug",
        CM_DATABSE_URL: "mysql://u:secret@h/db",
        cm_data_dir: "/x",
        CM_WHATEVER: "1",
        CM_LOG_LEVEL: "info",
        PATH: "/bin",
        HOME: "/root",
      }),
    ).toEqual([
      { name: "CM_DATABSE_URL", didYouMean: "CM_DATABASE_URL" },
      { name: "CM_LISTEN_ADRESS", didYouMean: "CM_LISTEN_ADDRESS" },
      { name: "CM_LOG_LEVLE", didYouMean: "CM_LOG_LEVEL" },
      { name: "CM_WHATEVER" },
      { name: "cm_data_dir", didYouMean: "CM_DATA_DIR" },
    ]);
  });

  it("leaves out Kubernetes service-link variables (a Service named cm or cm-db)", () => {
    expect(
      unknownVariables({
        CM_SERVICE_HOST: "10.0.0.1",
        CM_SERVICE_PORT: "50051",
        CM_SERVICE_PORT_GRPC: "50051",
        CM_PORT: "tcp://10.0.0.1:50051",
        CM_PORT_50051_TCP: "tcp://10.0.0.1:50051",
        CM_PORT_50051_TCP_PROTO: "tcp",
        CM_PORT_50051_TCP_PORT: "50051",
        CM_PORT_50051_TCP_ADDR: "10.0.0.1",
        CM_DB_SERVICE_HOST: "10.0.0.2",
        CM_DB_PORT_3306_TCP_ADDR: "10.0.0.2",
      }),
    ).toEqual([]);
  });

  it("is empty for an environment of known variables and never returns values", () => {
    expect(unknownVariables(Object.fromEntries(CONFIG_VARIABLES.map((n) => [n, "x"])))).toEqual([]);
    expect(JSON.stringify(unknownVariables({ CM_DATABSE_URL: "mysql://u:s3cret@h/db" }))).not.toContain("s3cret");
  });
});
