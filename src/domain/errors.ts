/**
 * Domain errors. Each carries a stable UPPER_SNAKE `reason` (AIP-193 ErrorInfo.reason) and a `kind` that the
 * gRPC layer maps to a status code in exactly one place (src/grpc/status.ts). The `cause` is kept for logs and
 * never sent on the wire. Messages must say what was wrong and how to fix it, and never contain secrets.
 */

/** Status categories, named after google.rpc.Code so the mapping is obvious but without importing gRPC. */
export type ErrorKind =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "PERMISSION_DENIED"
  | "UNAUTHENTICATED"
  | "UNAVAILABLE"
  | "RESOURCE_EXHAUSTED"
  | "CANCELLED"
  | "INTERNAL";

/** A bad request field (google.rpc.BadRequest.FieldViolation): `field` is the proto field path. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** Base class of every error the service reports on purpose. */
export class DomainError extends Error {
  readonly kind: ErrorKind;
  /** Stable machine-readable reason, e.g. `PRIVATE_KEY_MISMATCH`. */
  readonly reason: string;
  /** ErrorInfo.metadata: small, non-secret facts such as the resource name. */
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];

  constructor(
    kind: ErrorKind,
    reason: string,
    message: string,
    opts: { metadata?: Record<string, string>; fieldViolations?: FieldViolation[]; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.kind = kind;
    this.reason = reason;
    this.metadata = opts.metadata ?? {};
    this.fieldViolations = opts.fieldViolations ?? [];
  }
}

/** A request field is malformed or violates a rule. Maps to INVALID_ARGUMENT with a BadRequest detail. */
export class InvalidArgumentError extends DomainError {
  constructor(reason: string, field: string, message: string, opts: { metadata?: Record<string, string>; cause?: unknown } = {}) {
    super("INVALID_ARGUMENT", reason, message, {
      ...opts,
      metadata: { field, ...(opts.metadata ?? {}) },
      fieldViolations: [{ field, description: message }],
    });
  }
}

/** The named resource does not exist (AIP-135/131). */
export class NotFoundError extends DomainError {
  constructor(reason: string, resourceName: string, message: string) {
    super("NOT_FOUND", reason, message, { metadata: { resource: resourceName } });
  }
}

/** The resource to create already exists (AIP-133). */
export class AlreadyExistsError extends DomainError {
  constructor(reason: string, resourceName: string, message: string, metadata: Record<string, string> = {}) {
    super("ALREADY_EXISTS", reason, message, { metadata: { resource: resourceName, ...metadata } });
  }
}

/** The system is not in a state the operation needs (e.g. an instance pending reclamation, a root key off). */
export class FailedPreconditionError extends DomainError {
  constructor(reason: string, message: string, metadata: Record<string, string> = {}, cause?: unknown) {
    super("FAILED_PRECONDITION", reason, message, { metadata, cause });
  }
}

/** A concurrency conflict the caller should retry (AIP-193 ABORTED). */
export class AbortedError extends DomainError {
  constructor(reason: string, message: string, metadata: Record<string, string> = {}, cause?: unknown) {
    super("ABORTED", reason, message, { metadata, cause });
  }
}

/**
 * The `etag` sent does not match the resource's current one, or (without an etag) concurrent writers kept
 * winning the race; the caller reads the resource again and retries (AIP-154).
 */
export class EtagMismatchError extends DomainError {
  /** @param etagSent false when the client sent no etag and only lost races to concurrent writers. */
  constructor(name: string, etagSent = true) {
    super(
      "ABORTED",
      "ETAG_MISMATCH",
      etagSent
        ? `the etag sent for ${name} does not match its current etag: it changed since you read it; read it again and retry`
        : `${name} was changed by concurrent requests while this one ran; retry`,
      { metadata: { resource: name } },
    );
  }
}

/** Something the service depends on (the database) cannot be reached now; retrying with backoff may succeed. */
export class UnavailableError extends DomainError {
  constructor(reason: string, message: string, metadata: Record<string, string> = {}, cause?: unknown) {
    super("UNAVAILABLE", reason, message, { metadata, cause });
  }
}

/**
 * Stored ciphertext failed to decrypt or authenticate (tampered, moved to another instance or certificate, or
 * encrypted under a key we no longer hold). Every such failure looks the same to the caller (RFC 7516 §11.5).
 */
export class DecryptionError extends DomainError {
  constructor(message = "stored ciphertext could not be decrypted or authenticated", cause?: unknown) {
    super("INTERNAL", "DECRYPTION_FAILED", message, { cause });
  }
}

/**
 * A root-key backend refused or could not serve a request, or (ROOT_KEY_UNAVAILABLE) an instance's data cannot
 * be used because its root key is disabled or destroyed. Backends throw NOT_FOUND, DISABLED, DESTROYED,
 * ACCESS_DENIED and BACKEND_UNAVAILABLE (retryable); the keyring (src/crypto/keyring.ts) turns DISABLED/DESTROYED
 * met while serving an existing instance into ROOT_KEY_UNAVAILABLE, the contract's reason for "your key is off".
 */
export class RootKeyError extends DomainError {
  constructor(
    reason:
      | "ROOT_KEY_NOT_FOUND"
      | "ROOT_KEY_DISABLED"
      | "ROOT_KEY_DESTROYED"
      | "ROOT_KEY_ACCESS_DENIED"
      | "ROOT_KEY_BACKEND_UNAVAILABLE"
      | "ROOT_KEY_UNAVAILABLE",
    message: string,
    metadata: Record<string, string> = {},
    cause?: unknown,
  ) {
    const kind: ErrorKind =
      reason === "ROOT_KEY_NOT_FOUND"
        ? "NOT_FOUND"
        : reason === "ROOT_KEY_ACCESS_DENIED"
          ? "PERMISSION_DENIED"
          : reason === "ROOT_KEY_BACKEND_UNAVAILABLE"
            ? "UNAVAILABLE"
            : "FAILED_PRECONDITION";
    super(kind, reason, message, { metadata, cause });
  }
}

/**
 * A write lost a race it must not win twice: storage throws it for a unique key (a second certificate with the
 * same fingerprint racing the first), services for a conditional update another writer won first. Services turn
 * it into the right answer after the transaction has rolled back.
 */
export class UniqueConstraintError extends Error {
  constructor(readonly constraint: string, cause?: unknown) {
    super(`unique constraint ${constraint} violated`, { cause });
    this.name = "UniqueConstraintError";
  }
}

/** The client cancelled the call (or its deadline passed) before costly work on it started or finished. */
export class CancelledError extends DomainError {
  constructor() {
    super("CANCELLED", "CANCELLED", "the call was cancelled by the client before the work was done");
  }
}

/**
 * The call carries no credential or a bad one. Every cause gets the same message, so a caller learns nothing
 * about which keys or tokens exist; the cause goes to the log only.
 */
export class UnauthenticatedError extends DomainError {
  constructor(cause?: unknown) {
    super("UNAUTHENTICATED", "UNAUTHENTICATED", "the call needs a valid credential: send `authorization: Bearer <API key or JWT>` or a client certificate over mutual TLS", {
      cause,
    });
  }
}

/**
 * The caller may see `resource` but its roles lack `permission` (AIP-193, AIP-211). `instance` names the instance
 * whose policy decided (metadata `instance`), when it is not `resource` itself.
 */
export class PermissionDeniedError extends DomainError {
  constructor(permission: string, resource: string, instance?: string) {
    super("PERMISSION_DENIED", "PERMISSION_DENIED", `the caller lacks ${permission} on ${resource}; ask a manager of it (or an administrator) for a role that holds it`, {
      metadata: { permission, resource, ...(instance && instance !== resource ? { instance } : {}) },
    });
  }
}

/**
 * RESOURCE_EXHAUSTED that a retry after `retryAfterMs` may get past; the ms become a google.rpc.RetryInfo detail
 * (src/grpc/status.ts).
 */
export class RetryLaterError extends DomainError {
  constructor(readonly retryAfterMs: number, reason: string, message: string, metadata: Record<string, string> = {}) {
    super("RESOURCE_EXHAUSTED", reason, message, { metadata });
  }
}

/** The caller went over its rate limit; `retryAfterMs` becomes a google.rpc.RetryInfo detail. */
export class RateLimitedError extends RetryLaterError {
  constructor(retryAfterMs: number, limit: string) {
    super(retryAfterMs, "RATE_LIMITED", `too many calls: the limit is ${limit}; retry after ${Math.ceil(retryAfterMs / 1000)} s`, { limit });
  }
}

/**
 * A new ExportCertificates stream would go over the caller's or the connection's number of concurrent export
 * streams, or over the
 * memory the service gives to exports in flight (src/services/export-budget.ts); `retryAfterMs` becomes a
 * google.rpc.RetryInfo detail. Metadata `limit` names the limit (`streams_per_caller`, `streams_per_connection`
 * or `memory_budget`),
 * `value` its setting.
 */
export class ExportBudgetExhaustedError extends RetryLaterError {
  constructor(retryAfterMs: number, limit: "streams_per_caller" | "streams_per_connection" | "memory_budget", value: string) {
    const wait = Math.ceil(retryAfterMs / 1000);
    super(
      retryAfterMs,
      "EXPORT_BUDGET_EXHAUSTED",
      limit === "memory_budget"
        ? `the service is holding as much export data as it allows (${value}) for streams whose clients have not read it yet; retry after ${wait} s`
        : `too many export streams open ${limit === "streams_per_caller" ? "for this caller" : "on this connection"} (the limit is ${value}): finish or cancel one, or retry after ${wait} s`,
      { limit, value },
    );
  }
}
