/**
 * Seal+open throughput of a 6 KB secret: node-jose (the tests' reference, test/helpers/jose-reference.ts) vs the
 * node:crypto fast path (src/crypto/fastjwe.ts, used by src/crypto/sealed-field.ts). Also A256KW wrap/unwrap of a
 * DEK: node-jose against the service's framing (src/crypto/wrapped-dek.ts) over the local backend's key wrap.
 *
 *   npx tsx bench/envelope.ts [seconds-per-case, default 2]
 *
 * Sequential (concurrency 1), after a warm-up; numbers are for ratios on the machine you run it on.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { generateDek, newDekId } from "../src/crypto/dek.js";
import { open, seal, type SecretContext } from "../src/crypto/sealed-field.js";
import { decryptDirFast, encryptDirFast } from "../src/crypto/fastjwe.js";
import { LocalRootKeyBackend } from "../src/crypto/rootkeys/local.js";
import { unwrapDek, wrapDek } from "../src/crypto/wrapped-dek.js";
import { decryptDir, encryptDir, unwrapA256KW, wrapA256KW } from "../test/helpers/jose-reference.js";

const seconds = Number(process.argv[2] ?? 2);
const payload = randomBytes(6 * 1024);
const dek = { id: newDekId(), key: generateDek() };
const ctx: SecretContext = { instance: "instances/0193e4a0-0000-7000-8000-00000000000a", certificate: "instances/0193e4a0-0000-7000-8000-00000000000a/certificates/0193e4a0-0000-7000-8000-0000000000c1", field: "private_key" };
const header = { kid: dek.id, cm_instance: ctx.instance, cm_certificate: ctx.certificate, cm_field: ctx.field };
const kek = randomBytes(32);

async function measure(name: string, op: () => Promise<unknown> | unknown): Promise<void> {
  const warmEnd = performance.now() + 300;
  while (performance.now() < warmEnd) await op();
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    await op();
    n++;
  }
  const elapsed = (performance.now() - start) / 1000;
  const opsPerSec = n / elapsed;
  console.log(`${name.padEnd(44)} ${Math.round(opsPerSec).toString().padStart(8)} ops/s  ${(1e6 / opsPerSec).toFixed(1).padStart(8)} µs/op`);
}

console.log(`node ${process.version}, 6 KB payload, ${seconds} s per case, concurrency 1`);
await measure("node-jose   seal+open (encryptDir+decryptDir)", async () => decryptDir(dek.key, await encryptDir(dek.key, payload, header)));
await measure("fast path   seal+open (sealed-field)", async () => open(await seal(dek, payload, ctx), async () => dek.key, ctx));
await measure("fast path   encrypt+decrypt (fastjwe, sync)", () => decryptDirFast(dek.key, encryptDirFast(dek.key, payload, header)));

const sealedByJose = await encryptDir(dek.key, payload, header);
const sealedFast = encryptDirFast(dek.key, payload, header);
await measure("node-jose   open only", () => decryptDir(dek.key, sealedByJose));
await measure("fast path   open only", () => decryptDirFast(dek.key, sealedFast));
await measure("node-jose   seal only", () => encryptDir(dek.key, payload, header));
await measure("fast path   seal only", () => encryptDirFast(dek.key, payload, header));

const wrapped = await wrapA256KW(kek, dek.key, { kid: "local/default/1", cm_instance: ctx.instance });
await measure("node-jose   A256KW wrap DEK", () => wrapA256KW(kek, dek.key, { kid: "local/default/1", cm_instance: ctx.instance }));
await measure("node-jose   A256KW unwrap DEK", () => unwrapA256KW(kek, wrapped));

const dir = mkdtempSync(path.join(tmpdir(), "cm-bench-envelope-"));
const local = await LocalRootKeyBackend.open(path.join(dir, "root-keys.json"), { createIfMissing: true, defaultKeyId: "default" });
const framed = (await wrapDek(local, "default", dek.key, { instance: ctx.instance })).jwe;
await measure("service     A256KW wrap DEK (wrapDek, local)", () => wrapDek(local, "default", dek.key, { instance: ctx.instance }));
await measure("service     A256KW unwrap DEK (unwrapDek, local)", () => unwrapDek(local, framed, { instance: ctx.instance }));
await local.close();
rmSync(dir, { recursive: true, force: true });
