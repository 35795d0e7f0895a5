import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration suites share one MariaDB server; each uses its own database, but run files one at a time
    // to keep the 2-core machine's timing predictable.
    fileParallelism: false,
  },
});
