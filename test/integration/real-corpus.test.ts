/**
 * Imports every certificate of the public corpora in ../shared/fixtures/real (see its SOURCES.md) over real
 * gRPC: each is either stored with metadata that matches node's own X509Certificate, or refused with
 * INVALID_ARGUMENT, a known reason and the field named; never an internal error. Real site chains
 * (x509-limbo online_*) are imported with their intermediates, which must link up.
 */
import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorReason, errorReasonFromJSON } from "../../gen/ts/certmanager/v1/error_reason.js";
import { haveRealFixtures, REAL_FIXTURES } from "../helpers/fixtures.js";
import { databases, richError, startTestService, type TestService } from "../helpers/service.js";

const REAL = REAL_FIXTURES;

/** True when `reason` is a value of the contract's ErrorReason enum (without its prefix). */
const isKnownReason = (reason: string): boolean => errorReasonFromJSON(`ERROR_REASON_${reason}`) !== ErrorReason.UNRECOGNIZED;

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** Every single certificate in the corpora, as PEM, with where it came from. */
function corpus(): { file: string; pem: string }[] {
  const out: { file: string; pem: string }[] = [];
  for (const file of walk(REAL)) {
    if (/\.(pem|crt|cer)$/.test(file)) {
      const text = readFileSync(file, "latin1");
      for (const block of text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []) out.push({ file, pem: `${block}\n` });
    } else if (file.endsWith(".der")) {
      try {
        out.push({ file, pem: new X509Certificate(readFileSync(file)).toString() });
      } catch {
        // DER files that are not certificates (or that node cannot parse) are not usable inputs here.
      }
    }
  }
  return out;
}

describe.skipIf(!haveRealFixtures).each(await databases())("real certificate corpora on %s", (db) => {
  let t: TestService;
  let parent: string;
  beforeAll(async () => {
    t = await startTestService(db);
    parent = (await t.instances.createInstance({ instance: { displayName: "corpus" } })).instance!.name;
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("imports every usable certificate, certificate only, or refuses it clearly", async () => {
    const certs = corpus();
    expect(certs.length).toBeGreaterThan(500);
    const reasons = new Map<string, number>();
    let stored = 0;
    let duplicates = 0;
    for (const { file, pem } of certs) {
      try {
        const c = (await t.certificates.importCertificate({ parent, certificate: pem })).certificate!;
        const x = new X509Certificate(pem);
        expect(c.sha256Fingerprint, file).toBe(x.fingerprint256.replace(/:/g, "").toLowerCase());
        expect(c.notAfter!.getTime(), file).toBe(new Date(x.validTo).getTime());
        stored++;
      } catch (err) {
        const e = richError(err);
        if (e.code === status.ALREADY_EXISTS) {
          duplicates++;
          continue;
        }
        expect(e.code, `${file}: ${e.reason} ${e.message}`).toBe(status.INVALID_ARGUMENT);
        expect(isKnownReason(e.reason), e.reason).toBe(true);
        expect(e.fieldViolations[0]?.field, file).toBe("certificate");
        reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
      }
    }
    process.stdout.write(`corpus on ${db}: ${certs.length} certificates, ${stored} stored, ${duplicates} duplicates, refused ${JSON.stringify(Object.fromEntries(reasons))}\n`);
    expect(stored).toBeGreaterThan(certs.length / 2);
  });

  it("imports real site chains with their intermediates in issuing order", async () => {
    const dir = path.join(REAL, "x509-limbo/online-2026");
    const sites = readdirSync(dir).filter((d) => existsSync(path.join(dir, d, "peer.pem")));
    expect(sites.length).toBeGreaterThan(5);
    const inst = (await t.instances.createInstance({ instance: { displayName: "sites" } })).instance!.name;
    for (const site of sites) {
      const peer = readFileSync(path.join(dir, site, "peer.pem"), "utf8");
      const intermediates = readFileSync(path.join(dir, site, "intermediates.pem"), "utf8");
      const c = (await t.certificates.importCertificate({ parent: inst, certificate: peer, intermediates: [...intermediates.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)].map((m) => m[0]).reverse().join("") })).certificate!;
      const m = await t.certificates.accessCertificate({ name: c.name });
      // Each stored intermediate issued the certificate before it.
      const chain = [m.certificate, ...(m.intermediates.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [])].map((p) => new X509Certificate(p));
      expect(chain.length, site).toBe(1 + c.intermediateCount);
      for (let i = 1; i < chain.length; i++) expect(chain[i - 1].checkIssued(chain[i]), `${site} link ${i}: issuer ${chain[i - 1].issuer}, next subject ${chain[i].subject}`).toBe(true);
    }
  });
});
