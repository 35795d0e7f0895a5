/**
 * Resource names (AIP-122): `instances/{instance}` and `instances/{instance}/certificates/{certificate}`.
 * IDs are server-assigned UUIDs (lowercase, RFC 9562), so a name that is not of that shape cannot exist.
 */
import { InvalidArgumentError } from "./errors.js";

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const INSTANCE = new RegExp(`^instances/(${UUID})$`);
const CERTIFICATE = new RegExp(`^instances/(${UUID})/certificates/(${UUID})$`);

/** `instances/{id}` for an instance id. */
export const instanceName = (id: string): string => `instances/${id}`;

/** `instances/{instanceId}/certificates/{certificateId}`. */
export const certificateName = (instanceId: string, certificateId: string): string =>
  `instances/${instanceId}/certificates/${certificateId}`;

/**
 * Parses `instances/{instance}`.
 * @param field the request field the name came from, for the error's field violation.
 * @throws InvalidArgumentError INVALID_FIELD when the name is malformed.
 */
export function parseInstanceName(name: string, field: string): string {
  const m = INSTANCE.exec(name);
  if (!m) {
    throw new InvalidArgumentError(
      "INVALID_FIELD",
      field,
      name === ""
        ? `${field} is required: send an instance name such as instances/0193e0a4-7c1e-7d2a-9f1b-2b3c4d5e6f70`
        : `${field} must be an instance name of the form instances/{uuid}, got ${JSON.stringify(name.slice(0, 200))}`,
    );
  }
  return m[1];
}

/**
 * Parses `instances/{instance}/certificates/{certificate}`.
 * @throws InvalidArgumentError INVALID_FIELD when the name is malformed.
 */
export function parseCertificateName(name: string, field: string): { instanceId: string; certificateId: string } {
  const m = CERTIFICATE.exec(name);
  if (!m) {
    throw new InvalidArgumentError(
      "INVALID_FIELD",
      field,
      name === ""
        ? `${field} is required: send a certificate name such as instances/{uuid}/certificates/{uuid}`
        : `${field} must be a certificate name of the form instances/{uuid}/certificates/{uuid}, got ${JSON.stringify(name.slice(0, 200))}`,
    );
  }
  return { instanceId: m[1], certificateId: m[2] };
}

const RECLAMATION = new RegExp(`^reclamations/(${UUID})$`);

/**
 * Parses `reclamations/{reclamation}`.
 * @throws InvalidArgumentError INVALID_FIELD when the name is malformed.
 */
export function parseReclamationName(name: string, field: string): string {
  const m = RECLAMATION.exec(name);
  if (!m) {
    throw new InvalidArgumentError(
      "INVALID_FIELD",
      field,
      name === "" ? `${field} is required: send a reclamation name such as reclamations/{uuid}` : `${field} must be a reclamation name of the form reclamations/{uuid}, got ${JSON.stringify(name.slice(0, 200))}`,
    );
  }
  return m[1];
}
