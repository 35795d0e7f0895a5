/**
 * Where the public certificate corpora are (../shared/fixtures/real beside the repository, as CI lays it out,
 * or CM_TEST_FIXTURES_DIR). Suites that need them skip when they are absent, except when
 * CM_TEST_REQUIRE_FIXTURES=1 (set by .ci/run), where their absence is an error.
 */
import { existsSync } from "node:fs";
import path from "node:path";

export const REAL_FIXTURES = process.env.CM_TEST_FIXTURES_DIR ?? path.resolve(import.meta.dirname, "../../../shared/fixtures/real");

/** Whether the corpora are present. @throws when required (CM_TEST_REQUIRE_FIXTURES=1) and missing. */
export const haveRealFixtures: boolean = (() => {
  const present = existsSync(REAL_FIXTURES);
  if (!present && process.env.CM_TEST_REQUIRE_FIXTURES === "1") {
    throw new Error(`the public certificate corpora are required (CM_TEST_REQUIRE_FIXTURES=1) but ${REAL_FIXTURES} does not exist`);
  }
  return present;
})();
