/** Builds the service once before the suites, so process tests run exactly what `npm start` runs. */
import { execFileSync } from "node:child_process";
import path from "node:path";

export default function setup(): void {
  execFileSync("npm", ["run", "--silent", "build"], { cwd: path.resolve(import.meta.dirname, ".."), stdio: "inherit" });
}
