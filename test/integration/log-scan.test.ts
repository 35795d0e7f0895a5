/**
 * The log secret scan of the test harnesses (issue 11 item 5) is wired: a secret planted on a service, and a
 * secret of its configuration, fail stop() when they show up in a log line, naming the line and never the secret.
 * What the service logs at info is real here: the address it logs on start is planted as a stand-in secret.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { startServerProcess } from "../helpers/process.js";
import { startTestService } from "../helpers/service.js";

describe("log secret scan in the harnesses", () => {
  it("startTestService: stop() fails on a planted secret found in a log line, with kind, line and a redacted excerpt", async () => {
    const t = await startTestService("sqlite");
    const secret = t.address; // logged by "certificate manager serving"
    t.plantSecret(secret);
    const err = await t.stop().then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/secrets in the logs of the test service on sqlite/);
    expect(err?.message).toMatch(/line \d+: known-secret \(127\.0\.…\)/);
    expect(err?.message).not.toContain(secret);
  });

  it("startTestService: a clean run stops without complaint, and refuses a canary too short to scan for", async () => {
    const t = await startTestService("sqlite");
    t.plantSecret("canary-pin-4711");
    expect(() => t.plantSecret("1234")).toThrow(/under 6 bytes/);
    await t.stop();
  });

  it("startServerProcess: `exited` rejects when the process's logs hold a planted secret", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "cm-logscan-"));
    try {
      const p = await startServerProcess({ CM_DATA_DIR: dataDir });
      p.plantSecret(`127.0.0.1:${p.port}`);
      p.child.kill("SIGTERM");
      await expect(p.exited).rejects.toThrow(/secrets in the logs of the server process \d+ .*:\n {2}line \d+: known-secret \(127\.0\.…\)/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
