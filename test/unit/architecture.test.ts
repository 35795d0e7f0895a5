import { readFileSync } from "node:fs";
import path from "node:path";

import { describe, expect, it } from "vitest";

import { importsOf, readRules, violations } from "../helpers/import-graph.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const rules = readRules(readFileSync(path.join(ROOT, "ARCHITECTURE.md"), "utf8"));

describe("ARCHITECTURE.md import directions", () => {
  it("every import in src/ follows the table ARCHITECTURE.md shows", () => {
    expect(violations(ROOT, rules)).toEqual([]);
  });

  it("catches a planted upward import and a package outside its home", () => {
    expect(violations(path.join(ROOT, "test/fixtures/architecture"), rules)).toEqual([
      "src/domain/leaky.ts: domain -> package knex (only storage may)",
      "src/domain/leaky.ts: domain -> storage (../storage/db.js)",
    ]);
  });

  it("reads static, type-only, dynamic, re-exported and worker imports", () => {
    const text = [
      'import type { A } from "./a.js";',
      'export { B } from "../b.js";',
      'const c = await import("./c.js");',
      'new Worker(new URL("./d.worker.js", import.meta.url));',
      '// import { e } from "./not-an-import.js";',
    ].join("\n");
    expect(importsOf(text).sort()).toEqual(["../b.js", "./a.js", "./c.js", "./d.worker.js"]);
  });

  it("keeps authentication and authorization between the gRPC layer and the domain", () => {
    expect([...(rules.layers.get("auth") ?? [])].sort()).toEqual(["domain"]);
    expect([...(rules.layers.get("grpc") ?? [])]).toContain("auth");
  });
});
