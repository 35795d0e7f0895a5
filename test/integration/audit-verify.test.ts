/**
 * The audit trail on SQLite and MariaDB: chains appended through the repository, tampered with directly in
 * SQL, and verified by the real operator CLI (`src/cli/audit.ts` run as a process through tsx), which must name
 * the chain, the row's sequence and the problem, and exit 1; an untouched trail exits 0. Also
 * AuditService.list paging over the same tables.
 */
import { execFile } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Knex } from "knex";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GENESIS_HASH, type AuditRecord } from "../../src/domain/audit.js";
import { DomainError } from "../../src/domain/errors.js";
import { SERVICE_RESOURCE } from "../../src/domain/iam.js";
import { AuditService } from "../../src/services/audit.js";
import { PageTokenCodec } from "../../src/domain/page-token.js";
import { KnexUnitOfWork } from "../../src/storage/index.js";
import { KnexAuditRepository } from "../../src/storage/repositories/audit.js";
import { ROOT } from "../helpers/process.js";
import { databases, startTestService, type TestService } from "../helpers/service.js";

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the audit CLI from source with `env` (and nothing else of this process's environment but PATH). */
function runCli(args: string[], env: Record<string, string>): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "src/cli/audit.ts", ...args], { cwd: ROOT, env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}

const newChain = () => `instances/${randomUUID()}`;

describe.each(await databases())("audit trail verification on %s", (db) => {
  let t: TestService;
  let k: Knex;
  let env: Record<string, string>;

  beforeAll(async () => {
    t = await startTestService(db);
    k = t.raw();
    env = { CM_DATA_DIR: t.dataDir, CM_DATABASE_URL: t.mysqlDatabaseUrl ?? `sqlite:${(t.config.database as { filename: string }).filename}` };
  });
  afterAll(async () => {
    await t?.stop();
  });

  /** Appends `n` events to `chain`, each in its own transaction as a call would. */
  async function append(chain: string, n: number, principal = (i: number) => `user:u${i}@example.com`): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    for (let i = 0; i < n; i++) {
      const e = {
        time: new Date(),
        principal: principal(i),
        method: "/certmanager.v1.CertificateService/AccessCertificate",
        resource: chain === SERVICE_RESOURCE ? SERVICE_RESOURCE : `${chain}/certificates/${randomUUID()}`,
        code: i % 4 === 3 ? 7 : 0,
        reason: i % 4 === 3 ? "PERMISSION_DENIED" : "",
        requestId: randomUUID(),
        callId: randomUUID().slice(0, 8),
        peer: "ipv4:127.0.0.1:40000",
      };
      out.push(await k.transaction((trx) => new KnexAuditRepository(trx).append(chain, e)));
    }
    return out;
  }

  const verify = (...args: string[]) => runCli(["verify", ...args], env);
  const problemLines = (stdout: string) => stdout.split("\n").filter((l) => l.startsWith("PROBLEM "));

  it("verifies an untouched trail (an instance chain and the service chain): exit 0, and prints each head", async () => {
    const chain = newChain();
    const events = await append(chain, 5);
    const service = await append(SERVICE_RESOURCE, 3);
    const r = await verify();
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(problemLines(r.stdout)).toEqual([]);
    expect(r.stdout).toContain(`OK ${chain} 5 ${events[4].hash} 5 events\n`);
    expect(r.stdout).toMatch(new RegExp(`OK ${SERVICE_RESOURCE} \\d+ [0-9a-f]{64} \\d+ events\n`));
    expect(r.stdout).toMatch(/all verified\n$/);

    const heads = await runCli(["head"], env);
    expect(heads.code).toBe(0);
    expect(heads.stdout).toContain(`${chain} 5 ${events[4].hash}\n`);
    expect(heads.stdout).toContain(`${SERVICE_RESOURCE} ${service[2].seq} ${service[2].hash}\n`);
    // The head printed is a checkpoint the next verify accepts.
    expect((await verify("--chain", chain, "--checkpoint", `${chain}=5:${events[4].hash}`)).code).toBe(0);
  });

  it("names an edited field as EDITED at its row", async () => {
    const chain = newChain();
    await append(chain, 5);
    await k("audit_events").where({ chain, seq: 3 }).update({ principal: "user:mallory@example.com" });
    const r = await verify("--chain", chain);
    expect(r.code).toBe(1);
    expect(problemLines(r.stdout)).toEqual([expect.stringMatching(new RegExp(`^PROBLEM ${chain} 3 EDITED seq 3's fields do not match its hash`))]);
    expect(r.stdout).toContain(`FAILED ${chain} 5 `);
  });

  it("names a deleted middle row as MISSING at its sequence", async () => {
    const chain = newChain();
    await append(chain, 5);
    await k("audit_events").where({ chain, seq: 3 }).del();
    const r = await verify("--chain", chain);
    expect(r.code).toBe(1);
    expect(problemLines(r.stdout)).toEqual([`PROBLEM ${chain} 3 MISSING seq 3 is missing: the row was deleted`]);
  });

  it("names two rows whose contents were swapped (sequence numbers kept) as OUT_OF_ORDER at both", async () => {
    const chain = newChain();
    await append(chain, 5);
    const columns = ["event_time", "principal", "method", "resource", "code", "reason", "request_id", "call_id", "peer", "prev_hash", "hash"];
    const [two, four] = await Promise.all([2, 4].map((seq) => k("audit_events").select(columns).where({ chain, seq }).first()));
    await k.transaction(async (trx) => {
      await trx("audit_events").where({ chain, seq: 2 }).update(four);
      await trx("audit_events").where({ chain, seq: 4 }).update(two);
    });
    const r = await verify("--chain", chain);
    expect(r.code).toBe(1);
    expect(problemLines(r.stdout)).toEqual([
      `PROBLEM ${chain} 2 OUT_OF_ORDER seq 2 holds the event written as seq 4: rows were swapped or moved`,
      `PROBLEM ${chain} 4 OUT_OF_ORDER seq 4 holds the event written as seq 2: rows were swapped or moved`,
    ]);
  });

  it("names a tail cut off behind the head table as TRUNCATED, without a checkpoint", async () => {
    const chain = newChain();
    await append(chain, 6);
    await k("audit_events").where({ chain }).andWhere("seq", ">", 4).del();
    const r = await verify("--chain", chain);
    expect(r.code).toBe(1);
    expect(problemLines(r.stdout)).toEqual([expect.stringMatching(new RegExp(`^PROBLEM ${chain} 5 TRUNCATED the head table says the chain reaches seq 6, but its last row is seq 4`))]);
  });

  it("passes a tail cut off with the head table rolled back to match, and names it TRUNCATED against a checkpoint", async () => {
    const chain = newChain();
    const events = await append(chain, 6);
    const checkpoint = `${chain}=6:${events[5].hash}`;
    await k.transaction(async (trx) => {
      await trx("audit_events").where({ chain }).andWhere("seq", ">", 4).del();
      await trx("chain_heads").where({ log: "audit", chain }).update({ seq: 4, hash: events[3].hash });
    });
    const blind = await verify("--chain", chain);
    expect(blind.code).toBe(0);
    expect(blind.stdout).toContain(`OK ${chain} 4 ${events[3].hash} 4 events`);
    const r = await verify("--chain", chain, "--checkpoint", checkpoint);
    expect(r.code).toBe(1);
    expect(problemLines(r.stdout)).toEqual([expect.stringMatching(new RegExp(`^PROBLEM ${chain} 5 TRUNCATED the checkpoint has seq 6, but the chain ends at seq 4`))]);
  });

  it("names a tail rewritten consistently (hashes recomputed, head moved) as HEAD_MISMATCH at the checkpoint", async () => {
    const chain = newChain();
    const events = await append(chain, 6);
    await k.transaction(async (trx) => {
      await trx("audit_events").where({ chain }).andWhere("seq", ">", 4).del();
      await trx("chain_heads").where({ log: "audit", chain }).update({ seq: 4, hash: events[3].hash });
    });
    await append(chain, 2, () => "user:mallory@example.com");
    expect((await verify("--chain", chain)).code).toBe(0);
    const r = await verify("--chain", chain, "--checkpoint", `${chain}=5:${events[4].hash}`);
    expect(r.code).toBe(1);
    expect(problemLines(r.stdout)).toEqual([expect.stringMatching(new RegExp(`^PROBLEM ${chain} 5 HEAD_MISMATCH .* the chain was rewritten at or before seq 5`))]);
  });

  it("verifies every chain at once, a head row deleted included, and reports as JSON lines", async () => {
    const deletedHead = newChain();
    await append(deletedHead, 2);
    await k("chain_heads").where({ log: "audit", chain: deletedHead }).del();
    const r = await verify("--json");
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    const problems = lines.filter((l) => "problem" in l);
    expect(problems.filter((p) => p.chain === deletedHead)).toEqual([
      { chain: deletedHead, seq: 1, problem: "HEAD_MISMATCH", detail: "rows run to seq 2, but the head table says the chain ends at seq 0: the head table was rolled back or edited" },
    ]);
    // Every chain tampered with above is named once, at its row; the rolled-back and rewritten ones pass without checkpoints.
    expect(problems.map((p) => `${p.seq} ${p.problem}`).sort()).toEqual(["1 HEAD_MISMATCH", "2 OUT_OF_ORDER", "3 EDITED", "3 MISSING", "4 OUT_OF_ORDER", "5 TRUNCATED"]);
    const summaries = lines.filter((l) => "ok" in l);
    expect(summaries.filter((s) => !s.ok)).toHaveLength(5);
    expect(summaries.find((s) => s.chain === deletedHead)).toEqual({ chain: deletedHead, ok: false, events: 2, problems: 1, head_sequence: 0, head_hash: GENESIS_HASH });
    expect(summaries.find((s) => s.chain === SERVICE_RESOURCE)).toMatchObject({ ok: true });
  });

  it("lists a chain page by page with AuditService: tokens bound to the chain, the head with every page", async () => {
    const service = new AuditService(new KnexUnitOfWork(k), new PageTokenCodec(randomBytes(32)));
    const chain = newChain();
    const events = await append(chain, 7);
    const head = { seq: 7, hash: events[6].hash };

    const seen: AuditRecord[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await service.list(chain, 3, token);
      expect(page.head).toEqual(head);
      seen.push(...page.events);
      token = page.nextPageToken;
      pages++;
    } while (token);
    expect(pages).toBe(3);
    expect(seen).toEqual(events);
    expect((await service.list(chain, 0, "")).events).toHaveLength(7);
    expect((await service.list(chain, 5000, "")).nextPageToken).toBe("");

    // An instance with no events (or one long deleted) has an empty chain, not NOT_FOUND.
    expect(await service.list(newChain(), 0, "")).toEqual({ events: [], nextPageToken: "", head: { seq: 0, hash: GENESIS_HASH } });
    expect((await service.list(SERVICE_RESOURCE, 1000, "")).events.length).toBeGreaterThan(0);

    const refusal = async (p: Promise<unknown>) => {
      const err = await p.then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(DomainError);
      const d = err as DomainError;
      return `${d.kind} ${d.reason} ${d.fieldViolations[0]?.field}`;
    };
    const first = await service.list(chain, 2, "");
    expect(await refusal(service.list(newChain(), 2, first.nextPageToken))).toBe("INVALID_ARGUMENT INVALID_PAGE_TOKEN page_token");
    expect(await refusal(service.list(chain, 2, `${first.nextPageToken}x`))).toBe("INVALID_ARGUMENT INVALID_PAGE_TOKEN page_token");
    expect(await refusal(service.list(chain, -1, ""))).toBe("INVALID_ARGUMENT INVALID_FIELD page_size");
    for (const parent of ["", "instances/nope", "services/other", `${chain}/certificates/${randomUUID()}`]) {
      expect(await refusal(service.list(parent, 0, ""))).toBe("INVALID_ARGUMENT INVALID_FIELD parent");
    }
  });
});

describe("audit CLI usage", () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "cm-audit-cli-"));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it("exits 2 with a message on stderr for usage and configuration errors, creating nothing", async () => {
    const env = { CM_DATA_DIR: dataDir };
    const cases: [string[], Record<string, string>, RegExp][] = [
      [[], env, /a command is required/],
      [["prune"], env, /unknown command "prune"/],
      [["verify", "--chain", "instances/nope"], env, /--chain must be an instance name/],
      [["verify", "--checkpoint", "services/certmanager=5:abc"], env, /--checkpoint must be <chain>=<seq>:<hash>/],
      [["verify", "--frobnicate"], env, /unknown option "--frobnicate"/],
      [["verify"], { ...env, CM_DATABASE_URL: "postgres://db/cm" }, /CM_DATABASE_URL must start with mysql:\/\/ or sqlite:/],
      [["verify"], env, /no database at .*certmanager\.sqlite/],
    ];
    const results = await Promise.all(cases.map(([args, e]) => runCli(args, e)));
    results.forEach((r, i) => {
      expect(r.code, cases[i][0].join(" ")).toBe(2);
      expect(r.stderr).toMatch(cases[i][2]);
      expect(r.stdout).toBe("");
    });
    expect((await import("node:fs")).readdirSync(dataDir)).toEqual([]);
  });
});
