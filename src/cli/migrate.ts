/** `npm run migrate`: applies pending database migrations with the server's configuration, then exits. */
import { loadConfig } from "../config/index.js";
import { createKnex, migrateLatest } from "../storage/index.js";

const config = loadConfig();
const knex = createKnex(config.database);
try {
  const applied = await migrateLatest(knex);
  process.stdout.write(`${JSON.stringify({ database: config.database.client, applied })}\n`);
} finally {
  await knex.destroy();
}
