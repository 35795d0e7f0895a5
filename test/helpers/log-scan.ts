/**
 * What the test harnesses (service.ts, process.ts) do with the logs they collect: scan them for secrets at
 * stop and fail the test with the findings (never the secrets themselves). Also reads the secrets a service's
 * own configuration holds, so they are known without each test planting them.
 */
import { readFileSync, statSync } from "node:fs";
import type { Config } from "../../src/config/index.js";
import { scanForSecrets } from "./secret-scanner.js";

/**
 * Throws when `lines` hold a secret: generic shapes or any of `knownSecrets` (see secret-scanner.ts).
 * @param label names the service in the message, e.g. its data directory.
 * @throws Error listing each finding as kind, line number and a 6-character excerpt.
 */
export function assertNoSecretsLogged(label: string, lines: string[], knownSecrets: (string | Buffer)[]): void {
  const findings = scanForSecrets(lines.join("\n"), knownSecrets);
  if (findings.length === 0) return;
  const list = findings.map((f) => `  line ${f.line}: ${f.kind} (${f.excerpt})`).join("\n");
  throw new Error(`secrets in the logs of ${label} (${findings.length}; lines count from the service's first log line):\n${list}`);
}

/**
 * Secrets the service's configuration and data directory hold: the PKCS#11 PIN, the page-token key, every
 * local root-key version's KEK, the TLS private key. Read at stop, while the files still exist; unreadable or
 * absent files are skipped, as are values too short to scan for (under 6 bytes).
 */
export function configSecrets(config: Config): (string | Buffer)[] {
  const read = (file: string | undefined): string | undefined => {
    try {
      // Regular files only: a test may point a setting at a FIFO or /dev/zero to see the server refuse it.
      return file && statSync(file).isFile() ? readFileSync(file, "utf8") : undefined;
    } catch {
      return undefined;
    }
  };
  const out: (string | Buffer)[] = [];
  if (config.pkcs11?.pin) out.push(config.pkcs11.pin);
  const pageKey = read(config.pageTokenKeyPath)?.trim();
  if (pageKey) out.push(pageKey, Buffer.from(pageKey, "base64url"));
  for (const m of (read(config.localKeystorePath) ?? "").matchAll(/"k"\s*:\s*"([A-Za-z0-9_-]+)"/g)) out.push(m[1]!, Buffer.from(m[1]!, "base64url"));
  const tlsKey = read(config.tls?.keyFile);
  if (tlsKey) out.push(tlsKey);
  return out.filter((s) => Buffer.byteLength(s) >= 6);
}
