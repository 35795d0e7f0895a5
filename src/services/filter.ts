/**
 * The certificate list filter and order (AIP-160 subset, AIP-132 `order_by`). Grammar:
 *
 *   filter      = comparison *( "AND" comparison )
 *   comparison  = ("not_after" | "not_before") ("<" | "<=" | ">" | ">=") quoted-rfc3339
 *               | "domain" "=" quoted-host
 *               | "key_algorithm" "=" ("RSA" | "EC" | "ED25519" | "ED448")
 */
import type { KeyAlgorithm } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import { instanceIdOf } from "../domain/names.js";
import type { CertificateFilter, CertificateOrderField, ReclamationFilter, ReclamationState } from "../domain/ports.js";

const TOKEN = /\s*(?:("(?:[^"\\]|\\.)*")|(<=|>=|<|>|=)|([A-Za-z_][A-Za-z0-9_.]*))/y;
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
const HOST = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const ALGORITHMS: KeyAlgorithm[] = ["RSA", "EC", "ED25519", "ED448"];

/** RFC 3339 §5.6 date-time whose calendar fields exist (Date.parse would roll 02-30 over to March). */
function isRfc3339(text: string): boolean {
  if (!RFC3339.test(text)) return false;
  const t = Date.parse(text);
  if (Number.isNaN(t)) return false;
  const [y, mo, d, h, mi, s] = text.match(/\d+/g)!.slice(0, 6).map(Number);
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0-99 as 1900-1999 (year 0 is a leap year, 1900 is not).
  const lastDay = new Date(0);
  lastDay.setUTCFullYear(y, mo, 0);
  const days = lastDay.getUTCDate();
  return mo >= 1 && mo <= 12 && d >= 1 && d <= days && h <= 23 && mi <= 59 && s <= 59;
}

function fail(message: string): never {
  throw new InvalidArgumentError("INVALID_FILTER", "filter", message);
}

function tokenize(text: string): { kind: "string" | "op" | "word"; text: string }[] {
  const out: { kind: "string" | "op" | "word"; text: string }[] = [];
  TOKEN.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break;
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(text);
    if (!m) fail(`filter has an unexpected character at position ${pos + 1}: ${JSON.stringify(text.slice(pos, pos + 20))}`);
    pos = TOKEN.lastIndex;
    if (m[1] !== undefined) {
      let value: string;
      try {
        value = JSON.parse(m[1]) as string;
      } catch {
        fail(`filter has a malformed string ${JSON.stringify(m[1].slice(0, 40))}: inside double quotes only \" and \\ escapes are allowed`);
      }
      out.push({ kind: "string", text: value });
    }
    else if (m[2] !== undefined) out.push({ kind: "op", text: m[2] });
    else out.push({ kind: "word", text: m[3] });
  }
  return out;
}

/**
 * Parses a ListCertificates filter.
 * @returns the filter; `{}` for an empty string.
 * @throws InvalidArgumentError INVALID_FILTER naming what is wrong and what is accepted.
 */
export function parseCertificateFilter(text: string): CertificateFilter {
  if (text.length > 1024) fail("filter is longer than 1024 characters");
  const tokens = tokenize(text);
  const filter: CertificateFilter = {};
  let i = 0;
  while (i < tokens.length) {
    const [field, op, value] = [tokens[i], tokens[i + 1], tokens[i + 2]];
    if (!field || field.kind !== "word" || !op || op.kind !== "op" || !value) {
      fail(`filter must be comparisons such as not_after < "2027-01-01T00:00:00Z" joined by AND`);
    }
    switch (field.text) {
      case "not_after":
      case "not_before": {
        if (op.text === "=") fail(`${field.text} takes <, <=, > or >=, not =`);
        if (value.kind === "string" && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?$/.test(value.text)) {
          // RFC 3339 §5.6 requires an offset: without one the instant would depend on the server's time zone.
          fail(`${field.text} time ${JSON.stringify(value.text)} has no time zone offset; add Z for UTC or an offset such as +02:00, e.g. "${value.text}Z"`);
        }
        if (value.kind !== "string" || !isRfc3339(value.text)) {
          fail(`${field.text} must be compared with an RFC 3339 time in double quotes, such as "2027-01-01T00:00:00Z"`);
        }
        const key = field.text === "not_after" ? "notAfter" : "notBefore";
        (filter[key] ??= []).push({ op: op.text as "<" | "<=" | ">" | ">=", value: new Date(value.text) });
        break;
      }
      case "domain": {
        if (op.text !== "=") fail(`domain takes =, not ${op.text}`);
        const host = value.text.toLowerCase().replace(/\.$/, "");
        if (value.kind !== "string" || host.length > 253 || !HOST.test(host)) {
          fail(`domain must be a host name in double quotes, such as "www.example.com"`);
        }
        if (filter.domainForms) fail("domain may appear only once");
        // A host matches its exact name and a wildcard one label up (RFC 6125 §6.4.3: `*` covers one label).
        const forms = [host];
        if (!host.startsWith("*.") && host.includes(".")) forms.push(`*.${host.slice(host.indexOf(".") + 1)}`);
        filter.domainForms = forms;
        break;
      }
      case "key_algorithm": {
        if (op.text !== "=") fail(`key_algorithm takes =, not ${op.text}`);
        const alg = value.text.toUpperCase().replace(/^KEY_ALGORITHM_/, "") as KeyAlgorithm;
        if (!ALGORITHMS.includes(alg)) fail(`key_algorithm must be one of ${ALGORITHMS.join(", ")}`);
        if (filter.keyAlgorithm) fail("key_algorithm may appear only once");
        filter.keyAlgorithm = alg;
        break;
      }
      default:
        fail(`filter field ${JSON.stringify(field.text)} is unknown; use not_after, not_before, domain or key_algorithm`);
    }
    i += 3;
    if (i < tokens.length) {
      if (tokens[i].kind !== "word" || tokens[i].text !== "AND") fail(`comparisons must be joined by AND (OR and NOT are not supported)`);
      i += 1;
      if (i >= tokens.length) fail("filter ends with AND");
    }
  }
  return filter;
}

/**
 * Parses `order_by`: `create_time` (default), `not_after` or `display_name`, optionally followed by `desc`.
 * @throws InvalidArgumentError INVALID_ORDER_BY.
 */
export function parseCertificateOrderBy(text: string): { field: CertificateOrderField; descending: boolean } {
  const parts = text.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return { field: "create_time", descending: false };
  const [field, dir] = parts;
  if (parts.length > 2 || !["create_time", "not_after", "display_name"].includes(field) || (dir !== undefined && !["asc", "desc"].includes(dir))) {
    throw new InvalidArgumentError(
      "INVALID_ORDER_BY",
      "order_by",
      `order_by must be create_time, not_after or display_name, optionally followed by desc; got ${JSON.stringify(text.slice(0, 100))}`,
    );
  }
  return { field: field as CertificateOrderField, descending: dir === "desc" };
}

const RECLAMATION_STATES: ReclamationState[] = ["SCHEDULED", "RESTORED", "RECLAIMING", "RECLAIMED"];

/**
 * Parses a ListReclamations filter: `instance = "instances/{uuid}"` and/or `state = SCHEDULED` (or RESTORED,
 * RECLAIMING, RECLAIMED; the proto spelling `STATE_SCHEDULED` is accepted too), joined by AND.
 * @throws InvalidArgumentError INVALID_FILTER
 */
export function parseReclamationFilter(text: string): ReclamationFilter {
  if (text.length > 1024) fail("filter is longer than 1024 characters");
  const tokens = tokenize(text);
  const filter: ReclamationFilter = {};
  for (let i = 0; i < tokens.length; i += 4) {
    const [field, op, value, and] = [tokens[i], tokens[i + 1], tokens[i + 2], tokens[i + 3]];
    if (!field || field.kind !== "word" || !op || op.text !== "=" || !value) fail(`filter must be comparisons such as state = SCHEDULED joined by AND`);
    if (field.text === "instance") {
      const instanceId = instanceIdOf(value.text);
      if (value.kind !== "string" || !instanceId || filter.instanceId) fail(`instance must be compared once with an instance name in double quotes, such as "instances/{uuid}"`);
      filter.instanceId = instanceId;
    } else if (field.text === "state") {
      const state = value.text.toUpperCase().replace(/^STATE_/, "") as ReclamationState;
      if (!RECLAMATION_STATES.includes(state) || filter.state) fail(`state must be compared once with one of ${RECLAMATION_STATES.join(", ")}`);
      filter.state = state;
    } else {
      fail(`filter field ${JSON.stringify(field.text)} is unknown; use instance or state`);
    }
    if (and && (and.kind !== "word" || and.text !== "AND" || i + 4 >= tokens.length)) fail("comparisons must be joined by AND");
  }
  return filter;
}
