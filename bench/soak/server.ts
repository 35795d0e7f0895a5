/**
 * The server under soak: the built `dist/src/main.js` as a child process on a free loopback port, its JSON log
 * read line by line as it comes. Unlike test/helpers/process.ts it keeps no copy of the log (an hour of it would
 * grow this process, whose memory is not what is measured) and scans nothing at exit; each line goes to
 * `onLine` once.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";

export const ROOT = path.resolve(import.meta.dirname, "../..");

/** A started server. */
export interface SoakServer {
  child: ChildProcess;
  pid: number;
  port: number;
  /** Resolves with the exit code (or the signal's name) once the process has ended. */
  exited: Promise<number | string>;
  /** The last lines of stderr (at most 50), for a report when it dies. */
  stderrTail: string[];
  /**
   * SIGTERM, then waits up to `graceMs` for the exit, then SIGKILL.
   * @returns how it ended: `exit 0`, `exit 1`, `killed after <ms> ms`, ...
   */
  stop(graceMs: number): Promise<string>;
}

/** The server's resident set size from /proc/<pid>/status, bytes; undefined once it is gone or without /proc. */
export function procRssBytes(pid: number): number | undefined {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return kb ? Number(kb[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts the server with `env` (plus PATH, and 127.0.0.1:0 unless given) and resolves once it logs that it
 * serves. Every stdout line (parsed JSON, or `{ raw }` for anything else) goes to `onLine`.
 * @throws Error with the log's tail when it exits or does not serve within `timeoutMs`.
 */
export function startSoakServer(env: Record<string, string>, onLine: (line: Record<string, unknown>, text: string) => void, timeoutMs = 30_000): Promise<SoakServer> {
  const child = spawn(process.execPath, ["dist/src/main.js"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, CM_LISTEN_ADDRESS: "127.0.0.1:0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | string>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown")));
  const stderrTail: string[] = [];
  const startLines: string[] = [];
  let port = 0;
  let partial = "";
  let resolveServing: (p: number) => void;
  const serving = new Promise<number>((r) => (resolveServing = r));
  child.stdout!.on("data", (d: Buffer) => {
    const lines = (partial + d.toString("utf8")).split("\n");
    partial = lines.pop()!;
    for (const text of lines) {
      if (text === "") continue;
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        line = { raw: text };
      }
      if (port === 0) {
        if (startLines.length < 50) startLines.push(text);
        if (line.msg === "certificate manager serving") {
          port = Number(/:(\d+)$/.exec(String(line.address))![1]);
          resolveServing(port);
        }
      }
      onLine(line, text);
    }
  });
  child.stderr!.on("data", (d: Buffer) => {
    stderrTail.push(...d.toString("utf8").split("\n").filter(Boolean));
    stderrTail.splice(0, Math.max(0, stderrTail.length - 50));
  });
  const stop = async (graceMs: number): Promise<string> => {
    if (child.exitCode !== null || child.signalCode !== null) return `already ended (${await exited})`;
    const t0 = Date.now();
    child.kill("SIGTERM");
    let expire: (v: undefined) => void = () => undefined;
    const timer = setTimeout(() => expire(undefined), graceMs);
    const ended = await Promise.race([exited, new Promise<undefined>((r) => (expire = r))]);
    clearTimeout(timer);
    if (ended !== undefined) return typeof ended === "number" ? `exit ${ended} after ${Date.now() - t0} ms` : `ended by ${ended}`;
    child.kill("SIGKILL");
    await exited;
    return `did not exit within ${graceMs} ms of SIGTERM: killed`;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the server did not serve within ${timeoutMs} ms:\n${[...startLines, ...stderrTail].join("\n")}`));
    }, timeoutMs);
    void serving.then((p) => {
      clearTimeout(timer);
      resolve({ child, pid: child.pid!, port: p, exited, stderrTail, stop });
    });
    void exited.then((code) => {
      if (port !== 0) return;
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}) before serving:\n${[...startLines, ...stderrTail].join("\n")}`));
    });
  });
}
