/**
 * The isolated workers (pkcs12.worker, encrypted-key.worker) on both roads: from the TypeScript sources, as
 * every test runs them (through tsx), and as production runs them: compiled to dist/ (the global setup runs
 * `npm run build`) and loaded without tsx, a devDependency. For that road a child `node` imports a copy of dist/src
 * whose node_modules holds every package but tsx. Both read PKCS#12 files and decrypt encrypted keys made by the
 * openssl CLI, one of each recipe, and what they return is held against what openssl itself reads.
 */
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DomainError } from "../../src/domain/errors.js";
import { readImport, type ImportInput } from "../../src/x509/index.js";
import { exportPkcs12, makeChain, openssl } from "../helpers/openssl.js";

const ROOT = resolve(import.meta.dirname, "../..");
const PASSWORD = "pw-dist";

/** The child: imports the compiled x509 module, runs readImport on each request, prints the outcomes as JSON. */
const CHILD = `
import { readFileSync } from "node:fs";
import { readImport } from "./dist/src/x509/index.js";
let tsx = true;
try { import.meta.resolve("tsx/esm/api"); } catch { tsx = false; }
const requests = JSON.parse(readFileSync("requests.json", "utf8"));
const outcomes = {};
for (const [name, r] of Object.entries(requests)) {
  const input = { certificate: r.certificate ?? "", privateKey: r.privateKey ?? "", intermediates: "", passphrase: r.passphrase };
  if (r.pkcs12) input.pkcs12 = Buffer.from(r.pkcs12, "base64");
  outcomes[name] = await readImport(input).then(
    (p) => ({ ...p.material, repairs: p.repairs.map((x) => x.kind) }),
    (e) => ({ reason: e.reason ?? String(e) }),
  );
}
console.log(JSON.stringify({ tsx, outcomes }));
`;

/** One readImport request, as JSON for the child (`pkcs12` in base64). */
interface Request {
  certificate?: string;
  privateKey?: string;
  passphrase: string;
  pkcs12?: string;
}
type Outcome = { certificatePem: string; privateKeyPem: string; intermediatesPem: string; repairs: string[] } | { reason: string };

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "certmgr-dist-"));
  cpSync(join(ROOT, "dist/src"), join(dir, "dist/src"), { recursive: true });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  // Every installed package but tsx: resolution from the copy then fails for tsx, as in a production install.
  mkdirSync(join(dir, "node_modules"));
  for (const name of readdirSync(join(ROOT, "node_modules"))) {
    if (name !== "tsx" && name !== ".bin") symlinkSync(join(ROOT, "node_modules", name), join(dir, "node_modules", name), "dir");
  }
  writeFileSync(join(dir, "child.mjs"), CHILD);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function runCompiled(requests: Record<string, Request>): { tsx: boolean; outcomes: Record<string, Outcome> } {
  writeFileSync(join(dir, "requests.json"), JSON.stringify(requests));
  const env = { ...process.env, NODE_OPTIONS: "" };
  const stdout = execFileSync(process.execPath, ["child.mjs"], { cwd: dir, encoding: "utf8", env, timeout: 60_000 });
  return JSON.parse(stdout);
}

/** openssl run in `dir` on files it is given; returns stdout. */
function opensslIn(args: string[], files: Record<string, string | Buffer>): string {
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return openssl(args, { cwd: dir });
}

/** Requests for every worker recipe, made by openssl, and the outcome openssl's own reading of each implies. */
function cases(): { requests: Record<string, Request>; expected: Record<string, Outcome> } {
  const chain = makeChain({ keyType: "ec256", name: "dist" });
  const rsaChain = makeChain({ keyType: "rsa2048", name: "dist rsa" });
  const pass = `pass:${PASSWORD}`;
  const p12 = exportPkcs12({ certPem: chain.leafPem, keyPem: chain.leafKeyPem, caPems: chain.intermediatesPem, password: PASSWORD });
  // `-legacy`: RC2-40 for the certificates and PKCS#12-PBE 3DES for the key (RFC 7292 App. C).
  opensslIn(["pkcs12", "-export", "-legacy", "-in", "c.pem", "-inkey", "k.pem", "-passout", pass, "-out", "legacy.p12"], {
    "c.pem": rsaChain.leafPem,
    "k.pem": rsaChain.leafKeyPem,
  });
  const legacyP12 = readFileSync(join(dir, "legacy.p12"));
  const topk8 = (args: string[], input: string) => openssl(["pkcs8", "-topk8", "-passout", pass, ...args], { input });
  const requests: Record<string, Request> = {
    pkcs12: { pkcs12: p12.toString("base64"), passphrase: PASSWORD },
    pkcs12WrongPassphrase: { pkcs12: p12.toString("base64"), passphrase: "not it" },
    legacyPkcs12: { pkcs12: legacyP12.toString("base64"), passphrase: PASSWORD },
    pbes2: { certificate: chain.leafPem, privateKey: topk8(["-v2", "aes-256-cbc"], chain.leafKeyPem), passphrase: PASSWORD },
    scrypt: { certificate: chain.leafPem, privateKey: topk8(["-scrypt"], chain.leafKeyPem), passphrase: PASSWORD },
    pkcs12Pbe: { certificate: rsaChain.leafPem, privateKey: topk8(["-v1", "PBE-SHA1-3DES"], rsaChain.leafKeyPem), passphrase: PASSWORD },
    legacyPem: {
      certificate: rsaChain.leafPem,
      privateKey: openssl(["pkey", "-traditional", "-aes256", "-passout", pass], { input: rsaChain.leafKeyPem }),
      passphrase: PASSWORD,
    },
  };
  // What openssl reads: the certificates of each file, and each key decrypted and printed as PKCS#8.
  const expected: Record<string, Outcome> = { pkcs12WrongPassphrase: { reason: "WRONG_PASSPHRASE" } };
  const pem = (text: string): string[] => text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g) ?? [];
  for (const [name, file] of [["pkcs12", p12], ["legacyPkcs12", legacyP12]] as const) {
    const read = (args: string[]) => opensslIn(["pkcs12", "-legacy", "-in", "in.p12", "-passin", pass, ...args], { "in.p12": file });
    const certs = pem(read(["-nokeys"]));
    const privateKeyPem = openssl(["pkey"], { input: read(["-nocerts", "-nodes"]) });
    expected[name] = { certificatePem: certs[0], privateKeyPem, intermediatesPem: certs.slice(1).join(""), repairs: ["PKCS12_UNPACKED"] };
  }
  for (const name of ["pbes2", "scrypt", "pkcs12Pbe", "legacyPem"]) {
    expected[name] = {
      certificatePem: requests[name].certificate!,
      privateKeyPem: openssl(["pkey", "-passin", pass], { input: requests[name].privateKey }),
      intermediatesPem: "",
      // A legacy PEM block holds PKCS#1, stored as PKCS#8.
      repairs: name === "legacyPem" ? ["PRIVATE_KEY_DECRYPTED", "PRIVATE_KEY_CONVERTED"] : ["PRIVATE_KEY_DECRYPTED"],
    };
  }
  expect((expected.pkcs12 as { certificatePem: string }).certificatePem).toBe(chain.leafPem);
  return { requests, expected };
}

describe("x509 workers read PKCS#12 files and decrypt every kind of encrypted key as openssl does", () => {
  it("from the TypeScript sources, through tsx", async () => {
    const { requests, expected } = cases();
    const outcomes: Record<string, Outcome> = {};
    for (const [name, r] of Object.entries(requests)) {
      const input: ImportInput = { certificate: r.certificate ?? "", privateKey: r.privateKey ?? "", intermediates: "", passphrase: r.passphrase };
      if (r.pkcs12) input.pkcs12 = Buffer.from(r.pkcs12, "base64");
      outcomes[name] = await readImport(input).then(
        (p) => ({ ...p.material, repairs: p.repairs.map((x) => x.kind) }),
        (e: DomainError) => ({ reason: e.reason }),
      );
    }
    expect(outcomes).toEqual(expected);
  });

  it("compiled to dist/, without tsx installed", () => {
    const { requests, expected } = cases();
    const { tsx, outcomes } = runCompiled(requests);
    expect(tsx).toBe(false);
    expect(outcomes).toEqual(expected);
  });
});
