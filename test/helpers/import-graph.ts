/**
 * Reads the imports of a source tree and holds them against the import directions of ARCHITECTURE.md (the table
 * between the `import-directions` markers, and the one between the `package-homes` markers), so the map and the
 * code cannot drift apart.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

import ts from "typescript";

/** Which layers each layer may import, and which layers alone may import a package. */
export interface ImportRules {
  /** layer -> layers it may import ("*" = any). A layer is a folder under src/, `main` for src/main.ts, or `gen`. */
  layers: Map<string, Set<string>>;
  /** package -> the only layers that may import it (an empty set: none). Packages not listed are free. */
  packages: Map<string, Set<string>>;
}

/** The rows of the markdown table between `<!-- name:start -->` and `<!-- name:end -->`: first cell -> second. */
function tableRows(markdown: string, name: string): [string, string][] {
  const start = markdown.indexOf(`<!-- ${name}:start -->`);
  const end = markdown.indexOf(`<!-- ${name}:end -->`);
  if (start < 0 || end < start) throw new Error(`ARCHITECTURE.md has no ${name} table`);
  return markdown
    .slice(start, end)
    .split("\n")
    .filter((l) => l.startsWith("|") && !/^\|\s*-/.test(l))
    .slice(1) // header row
    .map((l) => l.split("|").map((c) => c.trim()))
    .map((cells) => [cells[1]!, cells[2]!]);
}

/** Names in backticks in a cell, e.g. "`gen`, `domain`" -> ["gen", "domain"]. */
const names = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

/** Parses the two tables of ARCHITECTURE.md. */
export function readRules(markdown: string): ImportRules {
  const layers = new Map<string, Set<string>>();
  for (const [from, to] of tableRows(markdown, "import-directions")) {
    const allowed = /every layer/.test(to) ? ["*"] : names(to);
    for (const layer of names(from)) layers.set(layer, new Set(allowed));
  }
  const packages = new Map<string, Set<string>>();
  for (const [pkgs, homes] of tableRows(markdown, "package-homes")) {
    for (const pkg of names(pkgs)) packages.set(pkg, new Set(names(homes)));
  }
  return { layers, packages };
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

/** The layer of a file under `root` (src/<layer>/..., src/main.ts -> main, gen/... -> gen), or undefined. */
function layerOf(root: string, file: string): string | undefined {
  const rel = path.relative(root, file).split(path.sep);
  if (rel[0] === "gen") return "gen";
  if (rel[0] !== "src" || rel.length < 2) return undefined;
  return rel.length === 2 ? rel[1]!.replace(/\.ts$/, "") : rel[1];
}

/** Every module specifier a file imports: static, dynamic, re-exports, and worker entry files (`new URL(...)`). */
export function importsOf(text: string): string[] {
  const info = ts.preProcessFile(text, true, true);
  const workers = [...text.matchAll(/new URL\(\s*["'](\.[^"']+)["']\s*,\s*import\.meta\.url\s*\)/g)].map((m) => m[1]!);
  return [...info.importedFiles.map((f) => f.fileName), ...workers];
}

/**
 * Every import under `root`/src that the rules do not allow, as "src/x/y.ts: <layer> -> <target> (<specifier>)".
 * A layer missing from the table is a violation too, so a new folder must be placed on the map.
 */
export function violations(root: string, rules: ImportRules): string[] {
  const out: string[] = [];
  for (const file of sourceFiles(path.join(root, "src"))) {
    const from = layerOf(root, file)!;
    const where = path.relative(root, file);
    const allowed = rules.layers.get(from);
    if (!allowed) {
      out.push(`${where}: layer ${from} is not in the import-directions table`);
      continue;
    }
    for (const spec of importsOf(readFileSync(file, "utf8"))) {
      if (spec.startsWith(".")) {
        const to = layerOf(root, path.resolve(path.dirname(file), spec));
        if (to === undefined) out.push(`${where}: ${from} -> outside src and gen (${spec})`);
        else if (to !== from && !allowed.has("*") && !allowed.has(to)) out.push(`${where}: ${from} -> ${to} (${spec})`);
        continue;
      }
      if (spec.startsWith("node:")) continue;
      const pkg = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
      const homes = rules.packages.get(pkg);
      if (homes && !homes.has(from)) out.push(`${where}: ${from} -> package ${pkg} (only ${[...homes].join(", ") || "tests"} may)`);
    }
  }
  return out.sort();
}
