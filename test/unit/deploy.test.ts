/**
 * The image and compose files against the code they run: every CM_* name they set is one the server reads; the
 * image's environment alone refuses plaintext on 0.0.0.0 (as documented), and with compose's settings and the
 * secrets deploy/compose-secrets.sh writes it is a configuration the server accepts (MariaDB, TLS, the health
 * listener the HEALTHCHECK probes, the keystore outside the data folder); the files the image runs exist in a build.
 * The image itself cannot be built here (no container registry): its build and run steps are deploy/install.sh,
 * which CI runs outside Docker.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CONFIG_VARIABLES, loadConfig } from "../../src/config/index.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const dockerfile = readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
const compose = readFileSync(path.join(ROOT, "compose.yaml"), "utf8");
const dir = mkdtempSync(path.join(tmpdir(), "cm-deploy-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The Dockerfile's ENV instructions as a map (`ENV A=1 \` continuation lines included). */
function imageEnv(): Record<string, string> {
  const joined = dockerfile.replace(/\\\n/g, " ");
  const env: Record<string, string> = {};
  for (const line of joined.split("\n").filter((l) => l.startsWith("ENV "))) {
    for (const m of line.slice(4).matchAll(/([A-Z_][A-Z0-9_]*)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  return env;
}

/** compose.yaml's `certmanager` environment (uncommented `CM_*: value` lines), with secrets at `/run/secrets/<name>`. */
function composeEnv(): Record<string, string> {
  const service = compose.slice(compose.indexOf("\n  certmanager:"), compose.indexOf("\nsecrets:"));
  return Object.fromEntries([...service.matchAll(/^ {6}(CM_[A-Z0-9_]+): (.+)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^"|"$/g, "")]));
}

/** compose.yaml's file secrets: name -> path relative to the compose file. */
function composeSecrets(): Record<string, string> {
  const section = compose.slice(compose.indexOf("\nsecrets:"));
  return Object.fromEntries([...section.matchAll(/^ {2}([a-z_]+): \{ file: (\S+) \}$/gm)].map((m) => [m[1]!, m[2]!]));
}

describe("Dockerfile and compose.yaml", () => {
  it("set only variables the server reads", () => {
    const names = new Set([...`${dockerfile}\n${compose}`.matchAll(/\bCM_[A-Z0-9_]+\b/g)].map((m) => m[0]));
    expect(names.size).toBeGreaterThan(5);
    for (const name of names) expect(CONFIG_VARIABLES, name).toContain(name);
  });

  it("the image alone refuses plaintext on 0.0.0.0; with compose's settings and secrets it is a valid MariaDB + TLS configuration", () => {
    const image = imageEnv();
    expect(image).toMatchObject({ NODE_ENV: "production", CM_LISTEN_ADDRESS: "0.0.0.0:50051", CM_HEALTH_LISTEN_ADDRESS: "127.0.0.1:50052" });
    expect(() => loadConfig(image)).toThrow(/configuration error: CM_LISTEN_ADDRESS .* TLS is off/);

    const secrets = path.join(dir, "secrets");
    execFileSync("bash", [path.join(ROOT, "deploy/compose-secrets.sh"), secrets], { stdio: "pipe" });
    const files = composeSecrets();
    expect(Object.keys(files).sort()).toEqual(["database_url", "db_password", "tls_cert", "tls_key"]);
    const env: Record<string, string> = { ...image };
    for (const [name, value] of Object.entries(composeEnv())) {
      const secret = /^\/run\/secrets\/([a-z_]+)$/.exec(value)?.[1];
      env[name] = secret ? path.join(secrets, path.basename(files[secret]!)) : value;
    }
    const config = loadConfig(env);
    const password = readFileSync(path.join(secrets, "db_password"), "utf8");
    expect(config.database).toMatchObject({ client: "mysql" });
    const url = new URL((config.database as { url: string }).url);
    expect([url.hostname, url.port, url.username, url.password, url.pathname]).toEqual(["mariadb", "3306", "certmanager", password, "/certmanager"]);
    expect(config.tls?.certFile).toBe(path.join(secrets, "tls.crt"));
    expect(config.healthListenAddress).toBe("127.0.0.1:50052");
    expect(config.keystoreBesideData).toBe(false);
    expect(config.localKeystorePath).toBe("/var/lib/certmanager-keys/root-keys.json");
  });

  it("compose-secrets.sh writes a matching TLS pair for localhost and keeps what exists on a second run", () => {
    const secrets = path.join(dir, "again");
    execFileSync("bash", [path.join(ROOT, "deploy/compose-secrets.sh"), secrets], { stdio: "pipe" });
    const read = (f: string) => readFileSync(path.join(secrets, f), "utf8");
    const before = ["db_password", "database_url", "tls.crt", "tls.key"].map(read);
    const cert = new X509Certificate(before[2]!);
    expect(cert.checkPrivateKey(createPrivateKey(before[3]!))).toBe(true);
    expect(cert.subjectAltName).toBe("DNS:localhost, IP Address:127.0.0.1");
    expect(before[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
    execFileSync("bash", [path.join(ROOT, "deploy/compose-secrets.sh"), secrets], { stdio: "pipe" });
    expect(["db_password", "database_url", "tls.crt", "tls.key"].map(read)).toEqual(before);
  });

  it("npm start in a checkout without the dev dependencies runs what is built, or says how to build it (exit 2)", () => {
    // The case: NODE_ENV=production npm ci in a checkout leaves no tsc; `start` must not call it.
    const checkout = path.join(dir, "checkout");
    mkdirSync(path.join(checkout, "src"), { recursive: true });
    copyFileSync(path.join(ROOT, "package.json"), path.join(checkout, "package.json"));
    const ensure = () => spawnSync("npm", ["run", "--silent", "ensure-built"], { cwd: checkout, encoding: "utf8", env: { PATH: process.env.PATH, HOME: dir } });
    const missing = ensure();
    expect([missing.status, missing.stderr.trim()]).toEqual([2, "dist/ is missing: build it with npm ci && npm run build (dev dependencies), or install a release with deploy/install.sh"]);
    mkdirSync(path.join(checkout, "dist/src"), { recursive: true });
    writeFileSync(path.join(checkout, "dist/src/main.js"), "");
    expect(ensure().status).toBe(0);
  });

  it("runs files a build has: the server, and the HEALTHCHECK's probe", () => {
    const entry = /^ENTRYPOINT \["node", "([^"]+)"\]$/m.exec(dockerfile)?.[1];
    const probe = /^HEALTHCHECK .* CMD \["node", "([^"]+)"/m.exec(dockerfile)?.[1];
    expect([entry, probe]).toEqual(["dist/src/main.js", "dist/src/cli/health.js"]);
    for (const f of [entry!, probe!]) expect(existsSync(path.join(ROOT, f)), f).toBe(true);
    // The release archive deploy/install.sh packages holds what the image's stages call.
    expect(dockerfile).toMatch(/deploy\/install\.sh package \/release/);
    expect(dockerfile).toMatch(/deploy\/install\.sh check \/opt\/certmanager/);
  });
});
