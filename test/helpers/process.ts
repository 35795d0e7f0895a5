/** Runs the compiled server (dist/, built by test/global-setup.ts) as a child process and reads its JSON logs. */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { loadConfig } from "../../src/config/index.js";
import { assertNoSecretsLogged, configSecrets } from "./log-scan.js";

export const ROOT = path.resolve(import.meta.dirname, "../..");

/** A server process. */
export interface ServerProcess {
  child: ChildProcess;
  port: number;
  /** Every log line so far (JSON objects from pino, or raw text). */
  logs: string[];
  /**
   * Resolves with the exit code once the process has exited and its logs were scanned for secrets (its
   * configuration's and those planted); rejects listing the findings (secret-scanner.ts) when there are any.
   */
  exited: Promise<number | null>;
  /** Registers a secret (at least 6 bytes) sent to this server: `exited` fails if its logs show it in any form. */
  plantSecret(secret: string | Buffer): void;
  /** Resolves with the first log line matching `re` (including ones already seen). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
}

/** Starts `node dist/src/main.js` on 127.0.0.1:0 with `env`; resolves once it serves. */
export function startServerProcess(env: Record<string, string>): Promise<ServerProcess> {
  const fullEnv = { PATH: process.env.PATH, CM_LISTEN_ADDRESS: "127.0.0.1:0", ...env };
  const child = spawn(process.execPath, ["dist/src/main.js"], { cwd: ROOT, env: fullEnv, stdio: ["ignore", "pipe", "pipe"] });
  const logs: string[] = [];
  const listeners = new Set<() => void>();
  const planted: (string | Buffer)[] = [];
  const exitCode = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const exited = exitCode.then((code) => {
    let known: (string | Buffer)[] = [];
    try {
      known = configSecrets(loadConfig(fullEnv));
    } catch {
      // A configuration the server refused: nothing of it to look for beyond the generic shapes.
    }
    assertNoSecretsLogged(`the server process ${child.pid}`, logs, [...planted, ...known]);
    return code;
  });
  // Failing is reported to whoever awaits `exited` (every test that stops a server does); not as unhandled too.
  exited.catch(() => {});
  const plantSecret = (secret: string | Buffer) => {
    if (Buffer.byteLength(secret) < 6) throw new Error("plantSecret: a secret under 6 bytes would match by chance; plant a longer canary");
    planted.push(secret);
  };
  let partial = "";
  child.stdout!.on("data", (d: Buffer) => {
    const lines = (partial + String(d)).split("\n");
    partial = lines.pop()!;
    logs.push(...lines.filter(Boolean));
    listeners.forEach((l) => l());
  });
  child.stderr!.on("data", (d) => logs.push(String(d)));
  const waitForLog = (re: RegExp, timeoutMs = 20_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = logs.find((l) => re.test(l));
        if (hit) {
          listeners.delete(check);
          clearTimeout(timer);
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`no log line matching ${re} within ${timeoutMs} ms:\n${logs.slice(-20).join("\n")}`));
      }, timeoutMs);
      listeners.add(check);
      check();
    });
  return new Promise((resolve, reject) => {
    waitForLog(/"msg":"certificate manager serving"/)
      .then((line) => resolve({ child, port: Number(/"address":"[^"]*:(\d+)"/.exec(line)![1]), logs, exited, plantSecret, waitForLog }))
      .catch(reject);
    void exitCode.then((code) => reject(new Error(`server exited with ${code}: ${logs.join("\n")}`)));
  });
}
