/**
 * The audit trail's operator tool, on the server's database (same configuration: CM_DATABASE_URL or
 * CM_DATA_DIR), as `npm run audit -- <command>`:
 *
 *   node dist/src/cli/audit.js verify [--chain <chain>]... [--checkpoint <chain>=<seq>:<hash>]... [--json]
 *       recomputes every chain (or the ones named), 1000 rows at a time, and names each problem:
 *       `PROBLEM <chain> <seq> <EDITED|MISSING|OUT_OF_ORDER|BROKEN_LINK|TRUNCATED|HEAD_MISMATCH> <detail>`,
 *       then one line per chain, `OK|FAILED <chain> <head seq> <head hash> <n> events`, and a total.
 *       A checkpoint (a head kept from earlier) also finds a tail cut off together with the head table.
 *   node dist/src/cli/audit.js head [--chain <chain>]... [--json]
 *       each chain's head, `<chain> <seq> <hash>`: the checkpoint to keep.
 *
 * A chain is `instances/{uuid}` or `services/certmanager`. --json prints one JSON object per line instead
 * (problems `{chain, seq, problem, detail}`, chains `{chain, ok, events, problems, head_sequence, head_hash}`).
 * Exit codes: 0 every chain verified, 1 a problem found, 2 usage, configuration or database error (message on
 * stderr; what was printed before it stands, but the verification is incomplete). Reads only, never locks:
 * the server may run meanwhile (rows it appends during the run are verified too).
 */
import { existsSync } from "node:fs";
import { loadConfig } from "../config/index.js";
import { ChainVerifier, parseAuditChain, type ChainHead, type ChainProblem } from "../domain/audit.js";
import { DomainError } from "../domain/errors.js";
import { createKnex } from "../storage/index.js";
import { KnexAuditRepository } from "../storage/repositories/audit.js";

const USAGE = `usage: audit.js verify [--chain <chain>]... [--checkpoint <chain>=<seq>:<hash>]... [--json]
       audit.js head [--chain <chain>]... [--json]
a chain is instances/{uuid} or services/certmanager`;

/** Rows read per query: bounded memory whatever the chain's length. */
const PAGE = 1000;

class UsageError extends Error {}

interface Args {
  command: "verify" | "head";
  chains: string[];
  checkpoints: Map<string, ChainHead>;
  json: boolean;
}

function chainArg(value: string | undefined, option: string): string {
  if (value === undefined) throw new UsageError(`${option} needs a value`);
  try {
    return parseAuditChain(value, option);
  } catch (err) {
    throw new UsageError(err instanceof DomainError ? err.message : String(err));
  }
}

/** `<chain>=<seq>:<hash>`, as `head` prints it (`<chain> <seq> <hash>`) joined by = and :. */
function checkpointArg(value: string | undefined): [string, ChainHead] {
  const m = value === undefined ? null : /^(.+)=([0-9]+):([0-9a-f]{64})$/.exec(value);
  if (!m) throw new UsageError(`--checkpoint must be <chain>=<seq>:<hash> (hash: 64 lowercase hex digits), got ${JSON.stringify(value ?? "")}`);
  const seq = Number(m[2]);
  if (!Number.isSafeInteger(seq) || seq < 1) throw new UsageError(`--checkpoint sequence must be a positive integer, got ${m[2]}`);
  return [chainArg(m[1], "--checkpoint"), { seq, hash: m[3] }];
}

function parseArgs(argv: string[]): Args {
  const [command, ...rest] = argv;
  if (command !== "verify" && command !== "head") throw new UsageError(command === undefined ? "a command is required" : `unknown command ${JSON.stringify(command)}`);
  const args: Args = { command, chains: [], checkpoints: new Map(), json: false };
  for (let i = 0; i < rest.length; i++) {
    const option = rest[i];
    if (option === "--json") args.json = true;
    else if (option === "--chain") args.chains.push(chainArg(rest[++i], option));
    else if (option === "--checkpoint" && command === "verify") {
      const [chain, head] = checkpointArg(rest[++i]);
      if (args.checkpoints.has(chain)) throw new UsageError(`two checkpoints for ${chain}`);
      args.checkpoints.set(chain, head);
    } else throw new UsageError(`unknown option ${JSON.stringify(option)}`);
  }
  return args;
}

const write = (line: string) => process.stdout.write(`${line}\n`);

/**
 * Verifies one chain page by page, printing its problems as found.
 * The head is read after the rows: appends commit the row and the head together, so a head beyond the rows
 * read is either rows appended since (read again) or a cut-off tail (nothing more to read).
 * @returns the chain's head, row count and problem count.
 */
async function verifyChain(repo: KnexAuditRepository, chain: string, checkpoint: ChainHead | undefined, emit: (p: ChainProblem) => void) {
  const verifier = new ChainVerifier(chain, checkpoint);
  let problems = 0;
  const report = (ps: ChainProblem[]) => {
    for (const p of ps) emit(p);
    problems += ps.length;
  };
  let after = 0;
  let head: ChainHead | undefined;
  for (;;) {
    const page = await repo.list(chain, after, PAGE);
    for (const r of page) {
      verifier.add(r);
      after = r.seq;
    }
    report(verifier.drain());
    if (page.length === PAGE) {
      head = undefined;
      continue;
    }
    // Nothing more after reading the head: the rows up to it are gone.
    if (head !== undefined && page.length === 0) break;
    head = await repo.head(chain);
    if (head.seq <= after) break;
  }
  report(verifier.finish(head));
  return { head, events: verifier.count, problems };
}

async function run(args: Args, repo: KnexAuditRepository): Promise<number> {
  const named = args.chains.length > 0 ? args.chains : await repo.everyChain();
  // A checkpoint's chain is verified even when its head and rows are all gone.
  const chains = [...new Set([...named, ...args.checkpoints.keys()])].sort();
  if (args.command === "head") {
    for (const chain of chains) {
      const h = await repo.head(chain);
      write(args.json ? JSON.stringify({ chain, head_sequence: h.seq, head_hash: h.hash }) : `${chain} ${h.seq} ${h.hash}`);
    }
    return 0;
  }
  let failed = 0;
  let total = 0;
  for (const chain of chains) {
    const r = await verifyChain(repo, chain, args.checkpoints.get(chain), (p) =>
      write(args.json ? JSON.stringify(p) : `PROBLEM ${p.chain} ${p.seq} ${p.problem} ${p.detail}`),
    );
    total += r.events;
    if (r.problems > 0) failed++;
    write(
      args.json
        ? JSON.stringify({ chain, ok: r.problems === 0, events: r.events, problems: r.problems, head_sequence: r.head.seq, head_hash: r.head.hash })
        : `${r.problems === 0 ? "OK" : "FAILED"} ${chain} ${r.head.seq} ${r.head.hash} ${r.events} events${r.problems === 0 ? "" : `, ${r.problems} problems`}`,
    );
  }
  if (!args.json) write(`${chains.length} chains, ${total} events: ${failed === 0 ? "all verified" : `${failed} with problems`}`);
  return failed === 0 ? 0 : 1;
}

async function main(): Promise<number> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    write(USAGE);
    return 0;
  }
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    return 2;
  }
  try {
    const config = loadConfig();
    // Opening a missing SQLite file would create an empty database and verify nothing.
    if (config.database.client === "sqlite" && !existsSync(config.database.filename)) {
      throw new Error(`no database at ${config.database.filename}: set CM_DATA_DIR or CM_DATABASE_URL as the server has them`);
    }
    const knex = createKnex(config.database);
    try {
      return await run(args, new KnexAuditRepository(knex));
    } finally {
      await knex.destroy();
    }
  } catch (err) {
    process.stderr.write(`audit: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
}

process.exitCode = await main();
