/**
 * Schema migrations, provided in code (no files to ship) and run by Knex's migrator, which takes a lock in
 * the database so several replicas starting together run each migration once. One set for SQLite and
 * MySQL/MariaDB: times are BIGINT epoch milliseconds (UTC, no time-zone conversion on either dialect, exact
 * from 1950 to 9999), secret material is opaque JWE text in MEDIUMTEXT (16 MiB on MySQL; TEXT is only 64 KiB).
 */
import type { Knex } from "knex";
import { isMysql } from "./db.js";

interface Migration {
  name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** MySQL only: UTF-8 for every character and binary collation, so ordering matches SQLite's memcmp. */
function utf8mb4(knex: Knex, t: Knex.CreateTableBuilder): void {
  if (!isMysql(knex)) return;
  t.charset("utf8mb4");
  t.collate("utf8mb4_bin");
}

const initial: Migration = {
  name: "0001_initial",
  async up(knex) {
    await knex.schema.createTable("instances", (t) => {
      utf8mb4(knex, t);
      t.string("id", 36).primary();
      t.string("display_name", 256).notNullable();
      t.text("description").notNullable();
      t.text("labels").notNullable();
      t.string("state", 32).notNullable();
      t.string("root_key_backend", 32).notNullable();
      t.string("root_key_id", 128).notNullable();
      t.integer("revision").notNullable();
      t.bigInteger("create_time").notNullable();
      t.bigInteger("update_time").notNullable();
      t.index(["create_time", "id"], "instances_create_time_id");
    });
    await knex.schema.createTable("deks", (t) => {
      utf8mb4(knex, t);
      t.string("id", 64).primary();
      t.string("instance_id", 36).notNullable().references("id").inTable("instances");
      t.text("wrapped_key").notNullable();
      t.integer("root_key_version").notNullable();
      t.string("state", 16).notNullable();
      t.bigInteger("encryption_count").notNullable();
      t.bigInteger("create_time").notNullable();
      t.index(["instance_id", "state"], "deks_instance_state");
    });
    await knex.schema.createTable("certificates", (t) => {
      utf8mb4(knex, t);
      t.string("id", 36).primary();
      t.string("instance_id", 36).notNullable().references("id").inTable("instances");
      t.string("display_name", 256).notNullable();
      t.text("description").notNullable();
      t.text("labels").notNullable();
      // MEDIUMTEXT: an RFC 4514 DN of a 64 KiB certificate can exceed TEXT's 64 KiB once escaped; serials may
      // exceed RFC 5280's 20 octets in the wild (§4.1.2.2 asks users to handle them).
      t.text("subject_common_name", "mediumtext").notNullable();
      t.text("subject", "mediumtext").notNullable();
      t.text("issuer", "mediumtext").notNullable();
      t.text("sans", "mediumtext").notNullable();
      t.text("serial_number").notNullable();
      t.bigInteger("not_before").notNullable();
      t.bigInteger("not_after").notNullable();
      t.string("key_algorithm", 16).notNullable();
      t.integer("key_size").notNullable();
      t.string("key_curve", 16).notNullable();
      t.string("sha256_fingerprint", 64).notNullable();
      t.boolean("self_signed").notNullable();
      t.boolean("has_private_key").notNullable();
      t.integer("intermediate_count").notNullable();
      t.integer("current_version").notNullable();
      t.integer("revision").notNullable();
      t.bigInteger("create_time").notNullable();
      t.bigInteger("update_time").notNullable();
      t.unique(["instance_id", "sha256_fingerprint"], { indexName: "certificates_instance_fingerprint" });
      t.index(["instance_id", "create_time", "id"], "certificates_instance_create_time");
      t.index(["instance_id", "not_after", "id"], "certificates_instance_not_after");
      t.index(["instance_id", "display_name", "id"], "certificates_instance_display_name");
    });
    await knex.schema.createTable("certificate_versions", (t) => {
      utf8mb4(knex, t);
      t.string("certificate_id", 36).notNullable().references("id").inTable("certificates");
      t.integer("version").notNullable();
      t.string("dek_id", 64).notNullable().references("id").inTable("deks");
      t.text("certificate_jwe", "mediumtext").notNullable();
      t.text("private_key_jwe", "mediumtext").notNullable();
      t.text("intermediates_jwe", "mediumtext").notNullable();
      t.string("sha256_fingerprint", 64).notNullable();
      t.bigInteger("create_time").notNullable();
      t.primary(["certificate_id", "version"]);
    });
    // One row per host name a certificate is valid for (DNS SANs, or the CN without them), lowercased, so
    // `domain = "..."` filters use an index instead of scanning JSON.
    await knex.schema.createTable("certificate_domains", (t) => {
      utf8mb4(knex, t);
      t.string("certificate_id", 36).notNullable().references("id").inTable("certificates");
      t.string("instance_id", 36).notNullable();
      t.string("domain", 253).notNullable();
      t.primary(["certificate_id", "domain"]);
      t.index(["instance_id", "domain"], "certificate_domains_instance_domain");
    });
    await knex.schema.createTable("request_ids", (t) => {
      utf8mb4(knex, t);
      t.string("scope", 64).notNullable();
      t.string("request_id", 64).notNullable();
      t.string("resource_id", 36).notNullable();
      t.string("fingerprint", 128).notNullable();
      t.bigInteger("create_time").notNullable();
      t.primary(["scope", "request_id"]);
    });
  },
  async down(knex) {
    for (const table of ["request_ids", "certificate_domains", "certificate_versions", "certificates", "deks", "instances"]) {
      await knex.schema.dropTableIfExists(table);
    }
  },
};

const reclamations: Migration = {
  name: "0002_reclamations",
  async up(knex) {
    await knex.schema.createTable("reclamations", (t) => {
      utf8mb4(knex, t);
      t.string("id", 36).primary();
      t.string("instance_id", 36).notNullable().references("id").inTable("instances");
      t.string("state", 16).notNullable();
      // Equals instance_id while SCHEDULED or RECLAIMING, NULL otherwise: a unique index on it allows one open
      // reclamation per instance on both dialects (NULLs never collide in a unique index).
      t.string("open_instance_id", 36).nullable().unique({ indexName: "reclamations_open_instance" });
      t.bigInteger("expire_time").notNullable();
      t.bigInteger("create_time").notNullable();
      t.bigInteger("update_time").notNullable();
      t.string("lease_owner", 64).nullable();
      t.bigInteger("lease_until").nullable();
      t.index(["state", "expire_time"], "reclamations_state_expire_time");
      t.index(["create_time", "id"], "reclamations_create_time_id");
      t.index(["instance_id"], "reclamations_instance");
    });
    await knex.schema.alterTable("instances", (t) => {
      t.string("reclamation_id", 36).nullable();
      t.bigInteger("expire_time").nullable();
      t.bigInteger("delete_time").nullable();
      t.index(["state", "create_time", "id"], "instances_state_create_time_id");
    });
  },
  async down(knex) {
    await knex.schema.alterTable("instances", (t) => {
      t.dropIndex(["state", "create_time", "id"], "instances_state_create_time_id");
      t.dropColumn("reclamation_id");
      t.dropColumn("expire_time");
      t.dropColumn("delete_time");
    });
    await knex.schema.dropTableIfExists("reclamations");
  },
};

const keyManagement: Migration = {
  name: "0003_key_management",
  async up(knex) {
    await knex.schema.alterTable("instances", (t) => {
      t.string("key_management", 16).notNullable().defaultTo("PROVIDER");
    });
    await knex.schema.alterTable("certificate_versions", (t) => {
      t.index(["dek_id"], "certificate_versions_dek");
    });
  },
  async down(knex) {
    await knex.schema.alterTable("certificate_versions", (t) => t.dropIndex(["dek_id"], "certificate_versions_dek"));
    await knex.schema.alterTable("instances", (t) => t.dropColumn("key_management"));
  },
};

const security: Migration = {
  name: "0004_security",
  async up(knex) {
    await knex.schema.createTable("api_keys", (t) => {
      utf8mb4(knex, t);
      t.string("id", 16).primary();
      t.string("display_name", 256).notNullable();
      t.string("secret_hmac", 64).notNullable();
      t.string("creator", 255).notNullable();
      t.bigInteger("create_time").notNullable();
      t.bigInteger("expire_time").nullable();
      t.bigInteger("revoke_time").nullable();
      t.bigInteger("last_use_time").nullable();
      t.index(["create_time", "id"], "api_keys_create_time_id");
    });
    await knex.schema.createTable("iam_policies", (t) => {
      utf8mb4(knex, t);
      t.string("resource", 64).primary();
      t.text("bindings", "mediumtext").notNullable();
      t.integer("revision").notNullable();
      t.bigInteger("update_time").notNullable();
    });
    // One row per (policy, role, member), so lists can keep to what a caller may see with an index (AIP-211).
    await knex.schema.createTable("iam_members", (t) => {
      utf8mb4(knex, t);
      t.string("resource", 64).notNullable();
      t.string("role", 32).notNullable();
      t.string("member", 255).notNullable();
      // The instance id of an instance policy; NULL for the service policy.
      t.string("instance_id", 36).nullable();
      t.primary(["resource", "role", "member"]);
      t.index(["member", "instance_id"], "iam_members_member_instance");
    });
    // Append-only; one hash chain per instance plus the service's (domain/audit.ts). No foreign key: events
    // outlive the instance's permanent deletion.
    await knex.schema.createTable("audit_events", (t) => {
      utf8mb4(knex, t);
      t.string("chain", 64).notNullable();
      t.bigInteger("seq").notNullable();
      t.bigInteger("event_time").notNullable();
      t.string("principal", 255).notNullable();
      t.string("method", 128).notNullable();
      t.string("resource", 255).notNullable();
      t.integer("code").notNullable();
      t.string("reason", 64).notNullable();
      t.string("request_id", 64).notNullable();
      t.string("call_id", 64).notNullable();
      t.string("peer", 128).notNullable();
      t.string("prev_hash", 64).notNullable();
      t.string("hash", 64).notNullable();
      t.primary(["chain", "seq"]);
    });
    // The head of every append-only chain, one row per (log, chain): appends lock it to take the next sequence
    // number (an AUTO_INCREMENT has gaps and interleaves across Galera nodes). `log` names the table using it.
    await knex.schema.createTable("chain_heads", (t) => {
      utf8mb4(knex, t);
      t.string("log", 32).notNullable();
      t.string("chain", 64).notNullable();
      t.bigInteger("seq").notNullable();
      t.string("hash", 64).notNullable();
      t.primary(["log", "chain"]);
    });
  },
  async down(knex) {
    for (const table of ["chain_heads", "audit_events", "iam_members", "iam_policies", "api_keys"]) await knex.schema.dropTableIfExists(table);
  },
};

const instanceKeys: Migration = {
  name: "0005_instance_keys",
  async up(knex) {
    // NULL: a DEK written before instance keys, wrapped only by the root key (the instance-key job adds the layer).
    await knex.schema.alterTable("deks", (t) => {
      t.integer("instance_key_version").nullable();
    });
    // One replica at a time runs the instance-key migration: PKCS#11 cannot refuse a second key with one label.
    await knex.schema.createTable("job_leases", (t) => {
      utf8mb4(knex, t);
      t.string("name", 64).primary();
      t.string("owner", 64).notNullable();
      t.bigInteger("lease_until").notNullable();
    });
  },
  async down(knex) {
    await knex.schema.dropTableIfExists("job_leases");
    await knex.schema.alterTable("deks", (t) => t.dropColumn("instance_key_version"));
  },
};

const MIGRATIONS: Migration[] = [initial, reclamations, keyManagement, security, instanceKeys];

/** Knex migration source serving MIGRATIONS in order. */
class CodeMigrationSource implements Knex.MigrationSource<Migration> {
  async getMigrations(): Promise<Migration[]> {
    return MIGRATIONS;
  }
  getMigrationName(m: Migration): string {
    return m.name;
  }
  async getMigration(m: Migration): Promise<Knex.Migration> {
    return { up: m.up, down: m.down };
  }
}

/** Applies every pending migration. Safe to call from several processes at once (Knex migration lock). */
export async function migrateLatest(knex: Knex): Promise<string[]> {
  const [, applied] = (await knex.migrate.latest({ migrationSource: new CodeMigrationSource() })) as [number, string[]];
  return applied;
}
