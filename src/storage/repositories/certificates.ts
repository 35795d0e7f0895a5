/**
 * Certificate repository: tables `certificates` (current metadata, in the clear), `certificate_versions`
 * (encrypted material, opaque JWE) and `certificate_domains` (host names for the `domain` filter).
 */
import type { Knex } from "knex";
import type { CertificateMetadata, KeyAlgorithm, SubjectAltNames } from "../../domain/certificate.js";
import { UniqueConstraintError } from "../../domain/errors.js";
import type {
  CertificateListQuery,
  CertificateRecord,
  CertificateRepository,
  CertificateVersionRecord,
} from "../../domain/ports.js";
import { firstRow, isMysql, keysetAfter } from "../db.js";
import { isUniqueViolation } from "../errors.js";

const TABLE = "certificates";
const VERSIONS = "certificate_versions";
const DOMAINS = "certificate_domains";

const COLUMNS = [
  "id",
  "instance_id",
  "display_name",
  "description",
  "labels",
  "subject_common_name",
  "subject",
  "issuer",
  "sans",
  "serial_number",
  "not_before",
  "not_after",
  "key_algorithm",
  "key_size",
  "key_curve",
  "sha256_fingerprint",
  "self_signed",
  "has_private_key",
  "intermediate_count",
  "current_version",
  "revision",
  "create_time",
  "update_time",
].map((c) => `${TABLE}.${c}`);

const VERSION_COLUMNS = [
  "certificate_id",
  "version",
  "dek_id",
  "certificate_jwe",
  "private_key_jwe",
  "intermediates_jwe",
  "sha256_fingerprint",
  "create_time",
] as const;

interface Row {
  id: string;
  instance_id: string;
  display_name: string;
  description: string;
  labels: string;
  subject_common_name: string;
  subject: string;
  issuer: string;
  sans: string;
  serial_number: string;
  not_before: number | string;
  not_after: number | string;
  key_algorithm: string;
  key_size: number;
  key_curve: string;
  sha256_fingerprint: string;
  self_signed: number | boolean;
  has_private_key: number | boolean;
  intermediate_count: number;
  current_version: number;
  revision: number;
  create_time: number | string;
  update_time: number | string;
}

interface VersionRow {
  certificate_id: string;
  version: number;
  dek_id: string;
  certificate_jwe: string;
  private_key_jwe: string;
  intermediates_jwe: string;
  sha256_fingerprint: string;
  create_time: number | string;
}

function rowToCertificate(r: Row): CertificateRecord {
  const metadata: CertificateMetadata = {
    subjectCommonName: r.subject_common_name,
    subject: r.subject,
    issuer: r.issuer,
    serialNumber: r.serial_number,
    notBefore: new Date(Number(r.not_before)),
    notAfter: new Date(Number(r.not_after)),
    sans: sansFromJson(r.sans),
    keyAlgorithm: r.key_algorithm as KeyAlgorithm,
    keySize: Number(r.key_size),
    keyCurve: r.key_curve,
    sha256Fingerprint: r.sha256_fingerprint,
    selfSigned: Boolean(r.self_signed),
  };
  return {
    id: r.id,
    instanceId: r.instance_id,
    displayName: r.display_name,
    description: r.description,
    labels: JSON.parse(r.labels) as Record<string, string>,
    metadata,
    hasPrivateKey: Boolean(r.has_private_key),
    intermediateCount: Number(r.intermediate_count),
    currentVersion: Number(r.current_version),
    revision: Number(r.revision),
    createTime: new Date(Number(r.create_time)),
    updateTime: new Date(Number(r.update_time)),
  };
}

/**
 * Reads the `sans` column. Its JSON object has one array per SubjectAltNames key; rows written before
 * `directoryName`, `registeredId` and `otherName` existed lack them, and get empty lists.
 */
function sansFromJson(text: string): SubjectAltNames {
  const s = JSON.parse(text) as Partial<SubjectAltNames>;
  return {
    dns: s.dns ?? [],
    ip: s.ip ?? [],
    email: s.email ?? [],
    uri: s.uri ?? [],
    directoryName: s.directoryName ?? [],
    registeredId: s.registeredId ?? [],
    otherName: s.otherName ?? [],
  };
}

function certificateToRow(c: CertificateRecord): Row {
  const m = c.metadata;
  return {
    id: c.id,
    instance_id: c.instanceId,
    display_name: c.displayName,
    description: c.description,
    labels: JSON.stringify(c.labels),
    subject_common_name: m.subjectCommonName,
    subject: m.subject,
    issuer: m.issuer,
    sans: JSON.stringify(m.sans),
    serial_number: m.serialNumber,
    not_before: m.notBefore.getTime(),
    not_after: m.notAfter.getTime(),
    key_algorithm: m.keyAlgorithm,
    key_size: m.keySize,
    key_curve: m.keyCurve,
    sha256_fingerprint: m.sha256Fingerprint,
    self_signed: m.selfSigned,
    has_private_key: c.hasPrivateKey,
    intermediate_count: c.intermediateCount,
    current_version: c.currentVersion,
    revision: c.revision,
    create_time: c.createTime.getTime(),
    update_time: c.updateTime.getTime(),
  };
}

function versionToRow(v: CertificateVersionRecord): VersionRow {
  return {
    certificate_id: v.certificateId,
    version: v.version,
    dek_id: v.dekId,
    certificate_jwe: v.certificateJwe,
    private_key_jwe: v.privateKeyJwe,
    intermediates_jwe: v.intermediatesJwe,
    sha256_fingerprint: v.sha256Fingerprint,
    create_time: v.createTime.getTime(),
  };
}

function rowToVersion(r: VersionRow): CertificateVersionRecord {
  return {
    certificateId: r.certificate_id,
    version: Number(r.version),
    dekId: r.dek_id,
    certificateJwe: r.certificate_jwe,
    privateKeyJwe: r.private_key_jwe,
    intermediatesJwe: r.intermediates_jwe,
    sha256Fingerprint: r.sha256_fingerprint,
    createTime: new Date(Number(r.create_time)),
  };
}

/**
 * The host names a certificate is valid for, lowercased: its DNS SANs or, when it has none, a common name
 * that looks like a host name (RFC 6125 §6.4.4 allows the CN only without DNS SANs).
 */
function domainsOf(m: CertificateMetadata): string[] {
  const names = m.sans.dns.length > 0 ? m.sans.dns : /^[*A-Za-z0-9._-]+$/.test(m.subjectCommonName) ? [m.subjectCommonName] : [];
  // Only host-name characters: the filter accepts nothing else, and MySQL's PAD SPACE collation would see
  // "a.test" and "a.test " as one key.
  return [...new Set(names.map((n) => n.toLowerCase()).filter((n) => n.length <= 253 && /^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/.test(n)))];
}

const SORT_COLUMN = { create_time: "create_time", not_after: "not_after", display_name: "display_name" } as const;

/** Knex implementation of CertificateRepository. */
export class KnexCertificateRepository implements CertificateRepository {
  constructor(private readonly db: Knex | Knex.Transaction) {}

  async insert(cert: CertificateRecord, version: CertificateVersionRecord): Promise<void> {
    try {
      await this.db(TABLE).insert(certificateToRow(cert));
    } catch (err) {
      if (isUniqueViolation(err)) throw new UniqueConstraintError("certificates_instance_fingerprint", err);
      throw err;
    }
    await this.db(VERSIONS).insert(versionToRow(version));
    await this.writeDomains(cert);
  }

  private async writeDomains(cert: CertificateRecord): Promise<void> {
    await this.db(DOMAINS).where({ certificate_id: cert.id }).delete();
    const rows = domainsOf(cert.metadata).map((domain) => ({ certificate_id: cert.id, instance_id: cert.instanceId, domain }));
    // SQLite caps a multi-row INSERT at 500 rows (SQLITE_MAX_COMPOUND_SELECT).
    for (let i = 0; i < rows.length; i += 400) await this.db(DOMAINS).insert(rows.slice(i, i + 400));
  }

  async get(instanceId: string, id: string): Promise<CertificateRecord | undefined> {
    return firstRow(this.db(TABLE).select(COLUMNS).where({ id, instance_id: instanceId }), rowToCertificate);
  }

  async findByFingerprint(instanceId: string, sha256Fingerprint: string): Promise<CertificateRecord | undefined> {
    return firstRow(this.db(TABLE).select(COLUMNS).where({ instance_id: instanceId, sha256_fingerprint: sha256Fingerprint }), rowToCertificate);
  }

  async getVersion(certificateId: string, version: number): Promise<CertificateVersionRecord | undefined> {
    return firstRow(this.db(VERSIONS).select(VERSION_COLUMNS).where({ certificate_id: certificateId, version }), rowToVersion);
  }

  async list(query: CertificateListQuery): Promise<CertificateRecord[]> {
    const rows = (await this.listQuery(query, COLUMNS)) as Row[];
    return rows.map(rowToCertificate);
  }

  async listWithCurrentVersion(query: CertificateListQuery): Promise<{ certificate: CertificateRecord; version: CertificateVersionRecord }[]> {
    // One round trip per page: the same keyset scan joined to the current version by primary key.
    const versionColumns = VERSION_COLUMNS.map((c) => `${VERSIONS}.${c} as v_${c}`);
    const rows = (await this.listQuery(query, [...COLUMNS, ...versionColumns], (q) =>
      q.join(VERSIONS, (j) => j.on(`${VERSIONS}.certificate_id`, "=", `${TABLE}.id`).andOn(`${VERSIONS}.version`, "=", `${TABLE}.current_version`)),
    )) as (Row & Record<string, unknown>)[];
    return rows.map((r) => ({
      certificate: rowToCertificate(r),
      version: rowToVersion(Object.fromEntries(VERSION_COLUMNS.map((c) => [c, r[`v_${c}`]])) as unknown as VersionRow),
    }));
  }

  private listQuery(query: CertificateListQuery, columns: string[], extend?: (q: Knex.QueryBuilder) => void): Knex.QueryBuilder {
    const { filter } = query;
    const col = `${TABLE}.${SORT_COLUMN[query.orderBy]}`;
    const idCol = `${TABLE}.id`;
    const q = this.db(TABLE).select(columns).where(`${TABLE}.instance_id`, query.instanceId);
    extend?.(q);
    for (const c of filter.notAfter ?? []) q.andWhere(`${TABLE}.not_after`, c.op, c.value.getTime());
    for (const c of filter.notBefore ?? []) q.andWhere(`${TABLE}.not_before`, c.op, c.value.getTime());
    if (filter.keyAlgorithm) q.andWhere(`${TABLE}.key_algorithm`, filter.keyAlgorithm);
    if (filter.domainForms) {
      const forms = filter.domainForms;
      const db = this.db;
      q.whereExists(
        db(DOMAINS)
          .select(db.raw("1"))
          .whereRaw(`${DOMAINS}.certificate_id = ${TABLE}.id`)
          .andWhere(`${DOMAINS}.instance_id`, query.instanceId)
          .whereIn(`${DOMAINS}.domain`, forms),
      );
    }
    if (query.after) keysetAfter(q, col, idCol, query.after.value, query.after.id, query.descending);
    const dir = query.descending ? "desc" : "asc";
    return q.orderBy([{ column: col, order: dir }, { column: idCol, order: dir }]).limit(query.limit);
  }

  async update(cert: CertificateRecord, expectedRevision: number): Promise<boolean> {
    const { id, instance_id, create_time: _c, ...rest } = certificateToRow(cert);
    const n = await this.db(TABLE).where({ id, instance_id, revision: expectedRevision }).update(rest);
    return n === 1;
  }

  async addVersion(cert: CertificateRecord, version: CertificateVersionRecord, expectedRevision: number): Promise<boolean> {
    let updated: boolean;
    try {
      updated = await this.update(cert, expectedRevision);
    } catch (err) {
      if (isUniqueViolation(err)) throw new UniqueConstraintError("certificates_instance_fingerprint", err);
      throw err;
    }
    if (!updated) return false;
    await this.db(VERSIONS).insert(versionToRow(version));
    await this.writeDomains(cert);
    return true;
  }

  async delete(instanceId: string, id: string, expectedRevision: number): Promise<boolean> {
    // Lock the row first: a concurrent update must wait, or this would delete the versions of a row whose
    // revision then moved (the caller rolls back on false, but nothing should be attempted).
    const q = this.db(TABLE).select("revision").where({ id, instance_id: instanceId });
    if (isMysql(this.db as Knex)) q.forUpdate();
    const current = (await q.first()) as { revision: number } | undefined;
    if (!current || Number(current.revision) !== expectedRevision) return false;
    await this.db(DOMAINS).where({ certificate_id: id }).delete();
    await this.db(VERSIONS).where({ certificate_id: id }).delete();
    const n = await this.db(TABLE).where({ id, instance_id: instanceId, revision: expectedRevision }).delete();
    return n === 1;
  }

  async deleteBatch(instanceId: string, limit: number): Promise<number> {
    const ids = ((await this.db(TABLE).select("id").where({ instance_id: instanceId }).orderBy("id").limit(limit)) as { id: string }[]).map(
      (r) => r.id,
    );
    if (ids.length === 0) return 0;
    await this.db(DOMAINS).whereIn("certificate_id", ids).delete();
    await this.db(VERSIONS).whereIn("certificate_id", ids).delete();
    await this.db(TABLE).whereIn("id", ids).delete();
    return ids.length;
  }

  async versionsSealedWith(dekIds: string[], limit: number, forUpdate = false): Promise<CertificateVersionRecord[]> {
    if (dekIds.length === 0) return [];
    const q = this.db(VERSIONS).select(VERSION_COLUMNS).whereIn("dek_id", dekIds).limit(limit);
    if (forUpdate && isMysql(this.db as Knex)) q.forUpdate();
    const rows = (await q) as VersionRow[];
    return rows.map(rowToVersion);
  }

  async reseal(version: CertificateVersionRecord, expectedDekId: string): Promise<boolean> {
    const n = await this.db(VERSIONS)
      .where({ certificate_id: version.certificateId, version: version.version, dek_id: expectedDekId })
      .update({
        dek_id: version.dekId,
        certificate_jwe: version.certificateJwe,
        private_key_jwe: version.privateKeyJwe,
        intermediates_jwe: version.intermediatesJwe,
      });
    return n === 1;
  }
}
