/**
 * Resource names (AIP-122), the one grammar every layer checks them against: `instances/{instance}`,
 * `instances/{instance}/certificates/{certificate}` and `reclamations/{reclamation}`. IDs are server-assigned
 * lowercase UUIDs (RFC 9562), so a name of any other shape names nothing that can exist.
 */
import { InvalidArgumentError } from "./errors.js";

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const INSTANCE = new RegExp(`^instances/(${UUID})$`);
const CERTIFICATE = new RegExp(`^instances/(${UUID})/certificates/(${UUID})$`);
const RECLAMATION = new RegExp(`^reclamations/(${UUID})$`);

/** `instances/{id}` for an instance id. */
export const instanceName = (id: string): string => `instances/${id}`;

/** `instances/{instanceId}/certificates/{certificateId}`. */
export const certificateName = (instanceId: string, certificateId: string): string =>
  `instances/${instanceId}/certificates/${certificateId}`;

/** `reclamations/{id}` for a reclamation id. */
export const reclamationName = (id: string): string => `reclamations/${id}`;

/**
 * The id in an instance name, or undefined when `name` is not one; for callers that report a bad name in
 * their own words (a filter, a crypto context) rather than as a request field.
 * @example instanceIdOf("instances/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d") // "0190a3c4-…"
 */
export function instanceIdOf(name: string): string | undefined {
  return INSTANCE.exec(name)?.[1];
}

/** True when `name` is an instance name `instances/{instance}`. */
export function isInstanceName(name: unknown): name is string {
  return typeof name === "string" && INSTANCE.test(name);
}

/**
 * True when `name` is a certificate name whose parent is the instance name `instance`, so a context that binds
 * both (the secret-field envelope) cannot pair a certificate with another instance.
 */
export function isCertificateNameUnder(instance: string, name: unknown): name is string {
  return typeof name === "string" && isInstanceName(instance) && CERTIFICATE.test(name) && name.startsWith(`${instance}/certificates/`);
}

/** Matches `name` against `pattern`, or throws INVALID_FIELD naming the field and the expected form. */
function match(pattern: RegExp, name: string, field: string, kind: string, form: string): RegExpExecArray {
  const m = pattern.exec(name);
  if (m) return m;
  throw new InvalidArgumentError(
    "INVALID_FIELD",
    field,
    name === "" ? `${field} is required: send ${kind} name such as ${form}` : `${field} must be ${kind} name of the form ${form}, got ${JSON.stringify(name.slice(0, 200))}`,
  );
}

/**
 * Parses `instances/{instance}`.
 * @param field the request field the name came from, for the error's field violation.
 * @returns the instance id.
 * @throws InvalidArgumentError INVALID_FIELD when the name is malformed.
 */
export function parseInstanceName(name: string, field: string): string {
  return match(INSTANCE, name, field, "an instance", "instances/{uuid}")[1];
}

/**
 * Parses `instances/{instance}/certificates/{certificate}`.
 * @throws InvalidArgumentError INVALID_FIELD when the name is malformed.
 */
export function parseCertificateName(name: string, field: string): { instanceId: string; certificateId: string } {
  const m = match(CERTIFICATE, name, field, "a certificate", "instances/{uuid}/certificates/{uuid}");
  return { instanceId: m[1], certificateId: m[2] };
}

/**
 * Parses `reclamations/{reclamation}`.
 * @returns the reclamation id.
 * @throws InvalidArgumentError INVALID_FIELD when the name is malformed.
 */
export function parseReclamationName(name: string, field: string): string {
  return match(RECLAMATION, name, field, "a reclamation", "reclamations/{uuid}")[1];
}
