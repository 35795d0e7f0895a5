/**
 * Database faults (issue 12, item 4) against a MariaDB server of the test's own (its own port and data folder,
 * stopped by pid; the machine's shared MariaDB is never touched): frozen with SIGSTOP, killed with SIGKILL,
 * started again. Calls end within the configured bounds with UNAVAILABLE DATABASE_UNAVAILABLE (never INTERNAL,
 * never a hang), health turns NOT_SERVING and back, a transaction given up on never commits later, and nothing
 * acknowledged is lost.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImportCertificateRequest } from "../../gen/ts/certmanager/v1/certificate.js";
import { HealthClient, HealthCheckResponse_ServingStatus } from "../../gen/ts/grpc/health/v1/health.js";
import { makeLeaf } from "../helpers/openssl.js";
import { expectFailure, richError, startTestService, type TestService } from "../helpers/service.js";

const MARIADBD = "/usr/sbin/mariadbd";
const available = existsSync(MARIADBD) && existsSync("/usr/bin/mariadb-install-db");
// .ci/run installs mariadb-server: there, a missing server is a failure, not a skip.
if (!available && process.env.CM_TEST_REQUIRE_MYSQL) throw new Error("CM_TEST_REQUIRE_MYSQL is set but mariadbd or mariadb-install-db is missing");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A MariaDB server of this test only. */
class ThrowawayMariaDb {
  proc?: ChildProcess;
  constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  static async create(): Promise<ThrowawayMariaDb> {
    const dir = mkdtempSync(path.join(tmpdir(), "cm-mariadb-"));
    execFileSync("mariadb-install-db", ["--no-defaults", `--datadir=${dir}/data`, "--user=root", "--skip-test-db", "--auth-root-authentication-method=normal"], { stdio: "ignore" });
    const db = new ThrowawayMariaDb(dir, await freePort());
    await db.start();
    execFileSync("mariadb", ["--protocol=tcp", "-h", "127.0.0.1", "-P", String(db.port), "-uroot", "-e", "CREATE DATABASE cm CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"]);
    return db;
  }

  get url(): string {
    return `mysql://root@127.0.0.1:${this.port}/cm`;
  }

  async start(): Promise<void> {
    this.proc = spawn(
      MARIADBD,
      ["--no-defaults", `--datadir=${this.dir}/data`, `--port=${this.port}`, "--bind-address=127.0.0.1", `--socket=${this.dir}/sock`, `--pid-file=${this.dir}/pid`, "--user=root", "--innodb-buffer-pool-size=32M", "--skip-name-resolve"],
      { stdio: "ignore" },
    );
    for (let i = 0; i < 300; i++) {
      try {
        execFileSync("mariadb-admin", ["--protocol=tcp", "-h", "127.0.0.1", "-P", String(this.port), "-uroot", "ping"], { stdio: "ignore" });
        return;
      } catch {
        await sleep(100);
      }
    }
    throw new Error("throwaway mariadbd did not start within 30 s");
  }

  signal(sig: NodeJS.Signals): void {
    this.proc!.kill(sig);
  }

  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGCONT");
    p.kill("SIGKILL");
    await exited;
  }

  async remove(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

describe.skipIf(!available)("database faults on a throwaway MariaDB", () => {
  let db: ThrowawayMariaDb;
  let t: TestService;
  let health: HealthClient;
  let parent: string;
  const acknowledged: string[] = [];

  beforeAll(async () => {
    db = await ThrowawayMariaDb.create();
    t = await startTestService("sqlite", {
      CM_DATABASE_URL: db.url,
      CM_DATABASE_OPERATION_TIMEOUT_SECONDS: "3",
      CM_DATABASE_ACQUIRE_TIMEOUT_SECONDS: "3",
      CM_DATABASE_CONNECT_TIMEOUT_SECONDS: "2",
      // Every call goes to the database: no cached API key or authorization decision hides a fault.
      CM_AUTH_CACHE_SECONDS: "0",
    });
    health = new HealthClient(t.address, credentials.createInsecure());
    parent = (await t.instances.createInstance({ instance: { displayName: "faults" } })).instance!.name;
    for (let i = 0; i < 5; i++) acknowledged.push(await importOne(`ack-${i}`));
  }, 120_000);
  afterAll(async () => {
    health?.close();
    if (db) db.signal("SIGCONT");
    await t?.stop().catch(() => undefined);
    await db?.remove();
  });

  async function importOne(label: string, deadlineMs = 20_000): Promise<string> {
    const leaf = makeLeaf({ cn: `${label}.example.test` });
    return new Promise((resolve, reject) =>
      t.certificateClient.importCertificate(
        ImportCertificateRequest.fromPartial({ parent, certificate: leaf.certPem, privateKey: leaf.keyPem }),
        new Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err: ServiceError | null, res?: { certificate?: { name: string } }) => (err ? reject(err) : resolve(res!.certificate!.name)),
      ),
    );
  }

  function servingStatus(): Promise<number> {
    return new Promise((resolve) =>
      health.check({ service: "" }, new Metadata(), { deadline: Date.now() + 3000 }, (e: ServiceError | null, r?: { status: number }) => resolve(e ? -1 : r!.status)),
    );
  }

  /** Waits (at most `ms`) for health to report `want`; returns how long it took. */
  async function healthBecomes(want: number, ms: number): Promise<number> {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if ((await servingStatus()) === want) return Date.now() - t0;
      await sleep(250);
    }
    throw new Error(`health did not become ${HealthCheckResponse_ServingStatus[want]} within ${ms} ms`);
  }

  async function names(): Promise<string[]> {
    return (await t.certificates.listCertificates({ parent, pageSize: 1000 })).certificates.map((c) => c.name).sort();
  }

  it("a frozen database (SIGSTOP): calls fail within the bound with UNAVAILABLE, health turns NOT_SERVING, a transaction given up on never commits, and all comes back", async () => {
    db.signal("SIGSTOP");
    // A read: bounded by the operation timeout (3 s), not the client's 20 s deadline.
    const t0 = Date.now();
    const e = await expectFailure(t.certificates.getCertificate({ name: acknowledged[0]! }));
    const ms = Date.now() - t0;
    expect([e.code, e.reason]).toEqual([status.UNAVAILABLE, "DATABASE_UNAVAILABLE"]);
    expect(ms).toBeLessThan(10_000);
    // An import whose caller gives up after 1.5 s: its transaction must not commit once the database is back.
    const late = await importOne("abandoned", 1500).then(
      () => undefined,
      (err: ServiceError) => err,
    );
    expect(late?.code).toBe(status.DEADLINE_EXCEEDED);
    await healthBecomes(HealthCheckResponse_ServingStatus.NOT_SERVING, 15_000);

    db.signal("SIGCONT");
    await healthBecomes(HealthCheckResponse_ServingStatus.SERVING, 15_000);
    // Give the abandoned transaction time to reach its end (it rolls back there).
    await sleep(1000);
    expect(await names()).toEqual([...acknowledged].sort());
    acknowledged.push(await importOne("after-freeze"));
    expect(await names()).toEqual([...acknowledged].sort());
  }, 90_000);

  it("a killed database (SIGKILL): UNAVAILABLE DATABASE_UNAVAILABLE, never INTERNAL; after a restart everything acknowledged is there", async () => {
    await db.kill();
    for (const call of [() => t.certificates.getCertificate({ name: acknowledged[1]! }), () => t.certificates.listCertificates({ parent })]) {
      const e = await expectFailure(call());
      expect([e.code, e.reason]).toEqual([status.UNAVAILABLE, "DATABASE_UNAVAILABLE"]);
    }
    const failedImport = await importOne("while-down").then(
      () => undefined,
      (err: ServiceError) => richError(err),
    );
    expect([failedImport?.code, failedImport?.reason]).toEqual([status.UNAVAILABLE, "DATABASE_UNAVAILABLE"]);
    await healthBecomes(HealthCheckResponse_ServingStatus.NOT_SERVING, 15_000);

    await db.start();
    await healthBecomes(HealthCheckResponse_ServingStatus.SERVING, 20_000);
    // The pool may still hold connections the kill closed: a call may meet one and answer UNAVAILABLE once.
    let list: string[] = [];
    for (let i = 0; i < 20; i++) {
      try {
        list = await names();
        break;
      } catch (err) {
        expect(richError(err).reason).toBe("DATABASE_UNAVAILABLE");
        await sleep(250);
      }
    }
    expect(list).toEqual([...acknowledged].sort());
    acknowledged.push(await importOne("after-restart"));
    expect(await names()).toEqual([...acknowledged].sort());
  }, 120_000);
});
