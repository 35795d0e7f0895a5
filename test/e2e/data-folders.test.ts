/**
 * What a server refuses at start, as processes (the built server): a second server on one SQLite data folder
 * (until the first is gone, even by SIGKILL), and a server whose keystore lacks the root keys a shared MariaDB
 * database's data keys are wrapped by (a replica started with its own empty data folder). Also the warning for
 * misspelt variables, which names the right one and leaves Kubernetes service links alone; and the start failures an
 * operator can fix (listen address in use, database missing, unreachable or refusing the user), each one JSON line.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import knexFactory, { type Knex } from "knex";
import { afterAll, describe, expect, it } from "vitest";
import { makeLeaf } from "../helpers/openssl.js";
import { startServerProcess, type ServerProcess } from "../helpers/process.js";
import { clientsFor, MYSQL_URL, mysqlAvailable } from "../helpers/service.js";

const haveMysql = await mysqlAvailable();
const procs: ServerProcess[] = [];
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), "cm-folders-"));
  dirs.push(d);
  return d;
}

async function start(env: Record<string, string>): Promise<ServerProcess> {
  const p = await startServerProcess(env);
  procs.push(p);
  return p;
}

/** The start's failure message (the process's output), or a test failure when it started. */
async function refused(env: Record<string, string>): Promise<string> {
  try {
    const p = await startServerProcess(env);
    procs.push(p);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("the server started");
}

afterAll(() => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("one server per SQLite data folder", () => {
  it("refuses a second server on the folder (exit 2, naming it) and takes over once the first is killed", async () => {
    const dataDir = tempDir();
    const env = { CM_DATA_DIR: dataDir, CM_LOG_LEVEL: "info" };
    const a = await start({ ...env, CM_LOG_LEVLE: "debug", CM_SERVICE_HOST: "10.0.0.1", CM_PORT_50051_TCP: "tcp://10.0.0.1:50051" });
    // The misspelt variable is warned about once, with the right name; the Kubernetes service links are not.
    const warnings = a.logs.filter((l) => l.includes("environment variables the server does not read"));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 40, variables: ["CM_LOG_LEVLE"], suggestions: { CM_LOG_LEVLE: "CM_LOG_LEVEL" } });
    expect(warnings[0]).not.toContain("CM_SERVICE_HOST");

    const message = await refused(env);
    expect(message).toMatch(/server exited with 2/);
    expect(message).toContain(`CM_DATA_DIR names the data folder ${dataDir}, which another running Certificate Manager server uses`);

    a.child.kill("SIGKILL");
    await a.exited;
    // The kernel dropped the dead process's lock: nothing stale to clean up.
    const c = await start(env);
    c.child.kill("SIGTERM");
    expect(await c.exited).toBe(0);
  });
});

describe("start failures an operator can fix: exit 2, one JSON line saying what to do", () => {
  /** The `refusing to start` log record of a start that failed. */
  function refusal(message: string): { reason: string } {
    expect(message).toMatch(/server exited with 2/);
    const line = message.split("\n").find((l) => l.includes('"refusing to start"'));
    expect(line).toBeDefined();
    // The first log line follows the "server exited with 2: " prefix on the same line.
    return JSON.parse(line!.slice(line!.indexOf("{"))) as { reason: string };
  }

  it("names the listen address, or the health listener's, that another process holds", async () => {
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, "127.0.0.1", () => r()));
    const port = (holder.address() as { port: number }).port;
    try {
      const r = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_LISTEN_ADDRESS: `127.0.0.1:${port}` }));
      expect(r.reason).toBe(`configuration error: CM_LISTEN_ADDRESS is 127.0.0.1:${port}, where another process already listens: stop it, or choose another address or port`);
      const health = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_HEALTH_LISTEN_ADDRESS: `127.0.0.1:${port}` }));
      expect(health.reason).toBe(`configuration error: CM_HEALTH_LISTEN_ADDRESS is 127.0.0.1:${port}, where another process already listens: stop it, or choose another address or port`);
      // 192.0.2.1 is TEST-NET-1 (RFC 5737): no machine has it.
      const absent = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_HEALTH_LISTEN_ADDRESS: "192.0.2.1:50052" }));
      expect(absent.reason).toBe("configuration error: CM_HEALTH_LISTEN_ADDRESS is 192.0.2.1:50052, an address this machine does not have: use one of its addresses, 127.0.0.1, or 0.0.0.0 for all");
    } finally {
      holder.close();
    }
  });

  it("names a database server that cannot be reached", async () => {
    const free = createServer();
    await new Promise<void>((r) => free.listen(0, "127.0.0.1", () => r()));
    const port = (free.address() as { port: number }).port;
    await new Promise((r) => free.close(r));
    const r = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_DATABASE_URL: `mysql://cm:never-logged-pw@127.0.0.1:${port}/cm` }));
    expect(r.reason).toBe(`configuration error: CM_DATABASE_URL points at 127.0.0.1:${port}, which cannot be reached (ECONNREFUSED): start the database server, or fix the host and port`);
  });

  it("names a TLS file that cannot serve before touching the database, and a bad setting, each as one JSON line", async () => {
    const dir = tempDir();
    const leaf = makeLeaf({ cn: "localhost", keySlot: "tls-server" });
    const other = makeLeaf({ cn: "localhost", keySlot: "tls-other" });
    const certFile = path.join(dir, "server.pem");
    const keyFile = path.join(dir, "server.key");
    writeFileSync(certFile, leaf.certPem);
    writeFileSync(keyFile, other.keyPem, { mode: 0o600 });
    const tls = (dataDir: string) => ({ CM_DATA_DIR: dataDir, CM_TLS_CERT_FILE: certFile, CM_TLS_KEY_FILE: keyFile });

    const missing = refusal(await refused({ ...tls(tempDir()), CM_TLS_KEY_FILE: path.join(dir, "absent.key") }));
    expect(missing.reason).toBe(`configuration error: CM_TLS_KEY_FILE cannot serve TLS: ${path.join(dir, "absent.key")} cannot be read (ENOENT)`);

    const dataDir = tempDir();
    const mismatch = refusal(await refused(tls(dataDir)));
    expect(mismatch.reason).toBe(`configuration error: CM_TLS_KEY_FILE cannot serve TLS: ${keyFile} does not hold the private key of the certificate in ${certFile}`);
    // Refused before the database: nothing was created in the data folder but its lock.
    expect(existsSync(path.join(dataDir, "certmanager.sqlite"))).toBe(false);
    expect(existsSync(path.join(dataDir, "bootstrap-admin.key"))).toBe(false);

    writeFileSync(certFile, "not a certificate\n");
    const garbage = refusal(await refused(tls(tempDir())));
    expect(garbage.reason).toBe(`configuration error: CM_TLS_CERT_FILE cannot serve TLS: ${certFile} does not hold a certificate in PEM`);

    // Not regular files: refused at once, never read (a FIFO without a writer would block, /dev/zero never end).
    const fifo = path.join(dir, "fifo.pem");
    execFileSync("mkfifo", [fifo]);
    for (const [file, variable] of [[fifo, "CM_TLS_CERT_FILE"], ["/dev/zero", "CM_TLS_KEY_FILE"], [dir, "CM_TLS_CERT_FILE"]] as const) {
      const r = refusal(await refused({ ...tls(tempDir()), [variable]: file }));
      expect(r.reason).toBe(`configuration error: ${variable} cannot serve TLS: ${file} is not a regular file`);
    }

    const setting = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_LISTEN_ADDRESS: "nonsense" }));
    expect(setting.reason).toBe('configuration error: CM_LISTEN_ADDRESS must be host:port (for example 127.0.0.1:50051), got "nonsense"');
  });

  it.skipIf(!haveMysql)("names a database that does not exist, with the statement that creates it, and a user the server refuses", async () => {
    const base = new URL(MYSQL_URL);
    const missing = `cm_missing_${process.pid}`;
    const r = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_DATABASE_URL: `${MYSQL_URL}/${missing}` }));
    expect(r.reason).toBe(
      `configuration error: CM_DATABASE_URL names database "${missing}" on ${base.hostname}:${base.port || "3306"}, which does not exist: create it with CREATE DATABASE \`${missing}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`,
    );
    const denied = refusal(await refused({ CM_DATA_DIR: tempDir(), CM_DATABASE_URL: `mysql://cm_no_such_user:never-logged-pw@${base.host}/cm` }));
    expect(denied.reason).toMatch(/^configuration error: CM_DATABASE_URL names user "cm_no_such_user", whom the database server at .* refused: check the user, its password and its grants on "cm"$/);
    expect(denied.reason).not.toContain("never-logged-pw");
  });
});

describe.skipIf(!haveMysql)("replicas on one MariaDB database need its root keys", () => {
  const dbName = `cm_test_folders_${process.pid}`;
  let admin: Knex | undefined;

  afterAll(async () => {
    await admin?.raw(`DROP DATABASE IF EXISTS \`${dbName}\``);
    await admin?.destroy();
  });

  it("a replica with its own empty keystore exits 2 naming the root keys; with the shared keystore it serves", async () => {
    admin = knexFactory({ client: "mysql2", connection: { uri: `${MYSQL_URL}/` } as never, pool: { min: 0, max: 1 } });
    await admin.raw(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    const url = `${MYSQL_URL}/${dbName}`;
    const first = tempDir();
    const a = await start({ CM_DATABASE_URL: url, CM_DATA_DIR: first });
    const adminKey = readFileSync(path.join(first, "bootstrap-admin.key"), "utf8").trim();
    const ca = clientsFor(`127.0.0.1:${a.port}`, adminKey);
    const inst = (await ca.instances.createInstance({ instance: { displayName: "shared" } })).instance!;
    const leaf = makeLeaf({ cn: "replica.example.test" });
    const cert = (await ca.certificates.importCertificate({ parent: inst.name, certificate: leaf.certPem, privateKey: leaf.keyPem })).certificate!;
    ca.close();

    // Its own empty data folder: it would have made its own local/default and failed every read of the above.
    const second = tempDir();
    const message = await refused({ CM_DATABASE_URL: url, CM_DATA_DIR: second });
    expect(message).toMatch(/server exited with 2/);
    expect(message).toContain("local/default");
    expect(message).toContain("CM_LOCAL_KEYSTORE");
    expect(existsSync(path.join(second, "root-keys.json"))).toBe(false);

    // The same database with the shared keystore (and pepper, so the administrator's key works): it serves the data.
    const third = tempDir();
    const c = await start({
      CM_DATABASE_URL: url,
      CM_DATA_DIR: third,
      CM_LOCAL_KEYSTORE: path.join(first, "root-keys.json"),
      CM_API_KEY_PEPPER_FILE: path.join(first, "api-key-pepper.key"),
    });
    const cc = clientsFor(`127.0.0.1:${c.port}`, adminKey);
    expect((await cc.certificates.accessCertificate({ name: cert.name })).privateKey).toMatch(/BEGIN PRIVATE KEY/);
    cc.close();
    for (const p of [a, c]) p.child.kill("SIGTERM");
    expect(await a.exited).toBe(0);
    expect(await c.exited).toBe(0);
  });
});
