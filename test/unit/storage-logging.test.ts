/** knex's own messages go through the JSON logger with a component field, and never carry bindings. */
import pino from "pino";
import { describe, expect, it } from "vitest";
import { createKnex } from "../../src/storage/db.js";

describe("createKnex with a logger", () => {
  it("routes knex warnings to the JSON log (component knex), not the console", async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: "debug" }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    // Compiling needs no connection; MySQL has no RETURNING, which knex warns about.
    const knex = createKnex({ client: "mysql", url: "mysql://nobody@127.0.0.1:9/none", poolMax: 1 }, log);
    try {
      knex("t").insert({ wrapped_key: "eyJhbGciOiJBMjU2S1ciCANARY" }).returning("id").toSQL();
    } finally {
      await knex.destroy();
    }
    const warning = lines.find((l) => l.component === "knex");
    expect(warning).toMatchObject({ level: 40, msg: "knex warning" });
    expect(String(warning!.detail)).toMatch(/returning/);
    expect(JSON.stringify(lines)).not.toContain("CANARY");
  });
});
