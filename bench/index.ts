/**
 * `npm run bench`: every benchmark, one after the other, each printing its figures. Arguments are passed on
 * to each (see the header of each file). Figures are for this machine; compare ratios, not absolutes.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";

const here = import.meta.dirname;
for (const bench of ["envelope.ts", "dekcache.ts", "auth.ts", "import.ts", "purge.ts", "export.ts"]) {
  console.log(`\n== bench/${bench}`);
  execFileSync(process.execPath, ["--import", "tsx", path.join(here, bench)], { stdio: "inherit" });
}
