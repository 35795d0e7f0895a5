import { defineConfig } from "vitest/config";

/**
 * The cluster tests (`npm run test:cluster`): the service on a 3-node MariaDB Galera cluster of the test's own
 * (test/helpers/galera.ts). Kept out of `vitest run` because they start their own database servers; one file at
 * a time, with timeouts that cover starting and restarting nodes.
 */
export default defineConfig({
  test: {
    include: ["test/cluster/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    fileParallelism: false,
  },
});
