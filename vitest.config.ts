import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The Galera cluster test starts three database servers of its own: `npm run test:cluster` runs it.
    exclude: ["**/node_modules/**", "test/cluster/**"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration suites share one MariaDB server; each uses its own database, but run files one at a time
    // to keep the 2-core machine's timing predictable.
    fileParallelism: false,
  },
});
