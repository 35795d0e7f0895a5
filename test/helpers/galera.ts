/**
 * A MariaDB Galera cluster of the test's own on loopback: node N has its own folder under one temp folder, client
 * port 3400+N, gcomm 4700+N, IST 4710+N and rsync SST 4720+N (plus an offset). mariadbd runs as the `mysql` user
 * (an rsync daemon started by root for SST switches to nobody, who could not write a root-owned datadir); only the
 * first node of a new cluster starts with --wsrep-new-cluster; a node killed with SIGKILL rejoins by IST after
 * --wsrep-recover gives its position. Nodes are started, killed and stopped by the pid of the mariadbd this helper spawned (mariadbd
 * does not fork), never by name, and every wait is bounded. The machine's shared MariaDB is never touched.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import mysql from "mysql2/promise";

const run = promisify(execFile);

const MARIADBD = "/usr/sbin/mariadbd";
const INSTALL_DB = "/usr/bin/mariadb-install-db";
const PROVIDER = "/usr/lib/galera/libgalera_smm.so";

/** What a Galera cluster on this machine needs, and which of it is missing. */
export function galeraMissing(): string[] {
  const missing = [MARIADBD, INSTALL_DB, PROVIDER, "/usr/bin/rsync"].filter((f) => !existsSync(f));
  try {
    const uid = readFileSync("/etc/passwd", "utf8").split("\n").some((l) => l.startsWith("mysql:"));
    if (!uid) missing.push("the mysql user (rsync SST needs mariadbd to run as mysql, not root)");
  } catch {
    missing.push("/etc/passwd");
  }
  if (process.getuid?.() !== 0) missing.push("root (mariadbd must be started as root to drop to the mysql user)");
  return missing;
}

/** Ports of node `n` (1-based) for a cluster whose ports start at `base` (client base+3400+n, etc.). */
function portsOf(n: number, base: number) {
  return { client: base + 3400 + n, gcomm: base + 4700 + n, ist: base + 4710 + n, sst: base + 4720 + n };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Galera status variables of one node (`SHOW STATUS LIKE 'wsrep_%'`), by name. */
export type WsrepStatus = Record<string, string>;

/** Every mariadbd this module started and has not seen exit: killed when the test process exits, whatever happens. */
const live = new Set<ChildProcess>();
const killLive = () => {
  for (const p of live) p.kill("SIGKILL");
};
process.once("exit", killLive);
// A test process stopped by a signal (Ctrl-C, vitest ending a worker) runs no "exit" handlers: kill them here.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    killLive();
    process.exit(128 + (signal === "SIGHUP" ? 1 : signal === "SIGINT" ? 2 : 15));
  });
}

/** One node: its folder, ports and (while running) its mariadbd process. */
export class GaleraNode {
  proc?: ChildProcess;
  exited?: Promise<void>;
  constructor(
    readonly n: number,
    readonly dir: string,
    readonly ports: ReturnType<typeof portsOf>,
  ) {}

  get cnf(): string {
    return path.join(this.dir, "my.cnf");
  }

  get errorLog(): string {
    return path.join(this.dir, "error.log");
  }

  /** `mysql://root@127.0.0.1:<port>/<database>`: root has no password on 127.0.0.1 (install-db `normal` auth). */
  url(database: string): string {
    return `mysql://root@127.0.0.1:${this.ports.client}/${database}`;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }
}

/** Options of a cluster. */
export interface GaleraOptions {
  /** Added to every port of the recipe (3401.., 4701.., 4711.., 4721..); 0 by default. */
  portOffset?: number;
  /** Extra `[mysqld]` lines for every node. */
  extraConfig?: string[];
}

/** A Galera cluster of `size` nodes under one temp folder (mode 755, so the mysql user can reach its node folders). */
export class GaleraCluster {
  readonly nodes: GaleraNode[];
  private constructor(
    readonly root: string,
    size: number,
    private readonly opts: GaleraOptions,
  ) {
    this.nodes = Array.from({ length: size }, (_, i) => new GaleraNode(i + 1, path.join(root, `node${i + 1}`), portsOf(i + 1, opts.portOffset ?? 0)));
  }

  /**
   * Makes a new cluster and starts it: node 1 is initialized and bootstraps the cluster, the others join it at
   * once with empty data folders (full rsync SST each); resolves when every node is Synced in a cluster of `size`.
   * On failure everything started is killed and the folder removed.
   * @throws when a port is taken, a node dies or does not sync within `timeoutMs`.
   */
  static async start(size = 3, opts: GaleraOptions = {}, timeoutMs = 90_000): Promise<GaleraCluster> {
    const root = mkdtempSync(path.join(tmpdir(), "cm-galera-"));
    chmodSync(root, 0o755);
    const c = new GaleraCluster(root, size, opts);
    try {
      for (const node of c.nodes) {
        for (const port of [node.ports.client, node.ports.gcomm, node.ports.ist, node.ports.sst]) {
          if (await listening(port)) throw new Error(`port ${port} of Galera node ${node.n} is in use; set another port offset`);
        }
        c.writeConfig(node);
      }
      const first = c.nodes[0];
      await run(INSTALL_DB, [`--defaults-file=${first.cnf}`, "--user=mysql", "--skip-test-db", "--auth-root-authentication-method=normal"], { timeout: 60_000 });
      c.spawn(first, ["--wsrep-new-cluster"]);
      await c.waitSynced(1, 1, timeoutMs);
      for (const node of c.nodes.slice(1)) c.spawn(node, []);
      for (const node of c.nodes.slice(1)) await c.waitSynced(node.n, size, timeoutMs);
      return c;
    } catch (err) {
      await c.remove();
      throw err;
    }
  }

  private writeConfig(node: GaleraNode): void {
    const { client, gcomm, ist, sst } = node.ports;
    const addresses = this.nodes.map((x) => `127.0.0.1:${x.ports.gcomm}`).join(",");
    const lines = [
      "[mysqld]",
      // Not root: the joiner's rsync daemon runs as nobody under root and cannot write a root-owned datadir.
      "user=mysql",
      `datadir=${node.dir}/data`,
      `socket=${node.dir}/mysqld.sock`,
      `pid-file=${node.dir}/mysqld.pid`,
      `log-error=${node.errorLog}`,
      `port=${client}`,
      "bind-address=127.0.0.1",
      "skip-name-resolve",
      "character-set-server=utf8mb4",
      "collation-server=utf8mb4_bin",
      "binlog_format=ROW",
      "default_storage_engine=InnoDB",
      "innodb_autoinc_lock_mode=2",
      "innodb_buffer_pool_size=64M",
      "innodb_log_file_size=48M",
      "innodb_flush_log_at_trx_commit=2",
      "performance_schema=OFF",
      "wsrep_on=ON",
      `wsrep_provider=${PROVIDER}`,
      "wsrep_cluster_name=cm-test",
      `wsrep_cluster_address=gcomm://${addresses}`,
      `wsrep_node_name=node${node.n}`,
      `wsrep_node_address=127.0.0.1:${gcomm}`,
      `wsrep_node_incoming_address=127.0.0.1:${client}`,
      "wsrep_sst_method=rsync",
      `wsrep_sst_receive_address=127.0.0.1:${sst}`,
      // A killed node is noticed in ~2 s instead of ~6 (evs.suspect_timeout PT5S): the test waits less.
      `wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:${gcomm};ist.recv_addr=127.0.0.1:${ist};gcache.size=32M;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S;evs.keepalive_period=PT0.5S;evs.inactive_check_period=PT0.5S"`,
      ...(this.opts.extraConfig ?? []),
      "",
    ];
    mkdirSync(path.join(node.dir, "data"), { recursive: true });
    writeFileSync(node.cnf, lines.join("\n"));
    chownTree(node.dir);
  }

  private spawn(node: GaleraNode, args: string[]): void {
    const out = openSync(path.join(node.dir, "stdout.log"), "a");
    const proc = spawn(MARIADBD, [`--defaults-file=${node.cnf}`, ...args], { stdio: ["ignore", out, out] });
    closeSync(out);
    live.add(proc);
    node.proc = proc;
    node.exited = new Promise((resolve) =>
      proc.once("exit", () => {
        live.delete(proc);
        resolve();
      }),
    );
  }

  /** Opens a connection to node `n` (no database), runs `fn`, closes it. */
  async withConnection<T>(n: number, fn: (c: mysql.Connection) => Promise<T>, connectTimeout = 2_000): Promise<T> {
    const c = await mysql.createConnection({ host: "127.0.0.1", port: this.nodes[n - 1].ports.client, user: "root", connectTimeout });
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => c.destroy());
    }
  }

  /** The `wsrep_%` status variables of node `n`. */
  status(n: number): Promise<WsrepStatus> {
    return this.withConnection(n, async (c) => {
      const [rows] = await c.query("SHOW GLOBAL STATUS LIKE 'wsrep_%'");
      return Object.fromEntries((rows as { Variable_name: string; Value: string }[]).map((r) => [r.Variable_name, r.Value]));
    });
  }

  /** Why node `n` will never sync (its process is gone, or its SST failed), or undefined while it may. */
  private deadReason(node: GaleraNode): string | undefined {
    if (!node.running) return `mariadbd of node ${node.n} exited`;
    const log = existsSync(node.errorLog) ? readFileSync(node.errorLog, "utf8") : "";
    if (log.includes("WSREP_SST: [ERROR]") || log.includes("Will never receive state")) return `node ${node.n}'s state transfer failed`;
    return undefined;
  }

  /**
   * Waits until node `n` is Primary, Synced and ready in a cluster of `size`.
   * @throws when the node dies, its state transfer fails, or `timeoutMs` passes (with the tail of its error log).
   */
  async waitSynced(n: number, size: number, timeoutMs = 60_000): Promise<void> {
    const node = this.nodes[n - 1];
    const end = Date.now() + timeoutMs;
    let last = "no answer";
    for (;;) {
      const dead = this.deadReason(node);
      if (dead) throw new Error(`${dead}:\n${this.logTail(n)}`);
      try {
        const s = await this.status(n);
        last = `size ${s.wsrep_cluster_size}, ${s.wsrep_local_state_comment}, ${s.wsrep_cluster_status}, ready ${s.wsrep_ready}`;
        if (Number(s.wsrep_cluster_size) === size && s.wsrep_local_state_comment === "Synced" && s.wsrep_cluster_status === "Primary" && s.wsrep_ready === "ON") return;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > end) throw new Error(`node ${n} not Synced in a cluster of ${size} within ${timeoutMs} ms (last: ${last}):\n${this.logTail(n)}`);
      await sleep(200);
    }
  }

  /** The last lines of node `n`'s error log, for failure messages. */
  logTail(n: number, lines = 25): string {
    const f = this.nodes[n - 1].errorLog;
    return existsSync(f) ? readFileSync(f, "utf8").trimEnd().split("\n").slice(-lines).join("\n") : "(no error log)";
  }

  /** SIGKILLs node `n`'s mariadbd and waits for it to exit. */
  async kill(n: number): Promise<void> {
    const node = this.nodes[n - 1];
    if (!node.running) return;
    node.proc!.kill("SIGKILL");
    await node.exited;
  }

  /**
   * Starts node `n` again after a kill, by IST: `--wsrep-recover` reads the last committed position from InnoDB
   * (grastate.dat says seqno -1 after a kill, which would ask for a full SST), then mariadbd starts from it.
   * Resolves once the node is Synced in a cluster of `size`.
   * @returns how the node caught up: "IST" or "SST" (read from its error log).
   */
  async restart(n: number, size: number, timeoutMs = 60_000): Promise<"IST" | "SST"> {
    const node = this.nodes[n - 1];
    if (node.running) throw new Error(`node ${n} is running`);
    const recoverLog = path.join(node.dir, "recover.log");
    rmSync(recoverLog, { force: true });
    await run(MARIADBD, [`--defaults-file=${node.cnf}`, "--wsrep-recover", `--log-error=${recoverLog}`], { timeout: 60_000 });
    const pos = /Recovered position: (\S+)/.exec(readFileSync(recoverLog, "utf8"))?.[1];
    const logBefore = existsSync(node.errorLog) ? readFileSync(node.errorLog, "utf8").length : 0;
    this.spawn(node, pos ? [`--wsrep-start-position=${pos}`] : []);
    await this.waitSynced(n, size, timeoutMs);
    const since = readFileSync(node.errorLog, "utf8").slice(logBefore);
    return /IST received|Receiving IST/.test(since) ? "IST" : "SST";
  }

  /** Stops node `n` with SIGTERM (SIGKILL after `graceMs`) and waits for it to exit. */
  async stop(n: number, graceMs = 20_000): Promise<void> {
    const node = this.nodes[n - 1];
    if (!node.running) return;
    node.proc!.kill("SIGTERM");
    const timer = setTimeout(() => node.proc!.kill("SIGKILL"), graceMs);
    await node.exited;
    clearTimeout(timer);
  }

  /** Stops every node (last first), then removes the cluster's folder. Safe to call more than once. */
  async remove(): Promise<void> {
    for (const node of [...this.nodes].reverse()) await this.stop(node.n).catch(() => undefined);
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** chown -R mysql:mysql `dir` (mariadbd drops to the mysql user; install-db and SST write as it). */
function chownTree(dir: string): void {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("mysql:"));
  if (!line) throw new Error("no mysql user");
  const [, , uid, gid] = line.split(":").map(Number);
  const walk = (p: string) => {
    chownSync(p, uid, gid);
    for (const e of readdirSync(p, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(p, e.name));
      else chownSync(path.join(p, e.name), uid, gid);
    }
  };
  walk(dir);
}
