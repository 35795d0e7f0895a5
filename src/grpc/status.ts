/**
 * The one place where errors become gRPC statuses (AIP-193). A DomainError becomes its code with a
 * `google.rpc.Status` in `grpc-status-details-bin` holding exactly one ErrorInfo (plus a BadRequest for
 * field errors). Anything else becomes INTERNAL with a generic message; its details go to the log only. The
 * lower layers translate what they know (storage its driver errors), so only domain errors are mapped here.
 */
import { Metadata, status as Code, type ServiceError } from "@grpc/grpc-js";
import { ErrorReason, errorReasonFromJSON } from "../../gen/ts/certmanager/v1/error_reason.js";
import { BadRequest, ErrorInfo, RetryInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { DomainError, type ErrorKind, RetryLaterError } from "../domain/errors.js";

/** ErrorInfo.domain of every error this service returns. */
const ERROR_DOMAIN = "certmanager";

const CODES: Record<ErrorKind, Code> = {
  INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
  NOT_FOUND: Code.NOT_FOUND,
  ALREADY_EXISTS: Code.ALREADY_EXISTS,
  FAILED_PRECONDITION: Code.FAILED_PRECONDITION,
  ABORTED: Code.ABORTED,
  PERMISSION_DENIED: Code.PERMISSION_DENIED,
  UNAUTHENTICATED: Code.UNAUTHENTICATED,
  UNAVAILABLE: Code.UNAVAILABLE,
  RESOURCE_EXHAUSTED: Code.RESOURCE_EXHAUSTED,
  CANCELLED: Code.CANCELLED,
  INTERNAL: Code.INTERNAL,
};

/** True when `reason` is a value of the contract's ErrorReason enum (without its prefix). */
function isKnownReason(reason: string): boolean {
  return errorReasonFromJSON(`ERROR_REASON_${reason}`) !== ErrorReason.UNRECOGNIZED;
}

/**
 * Maps an error thrown by a handler to a grpc-js ServiceError.
 * @returns the error to pass to the callback or to `call.emit("error")`, and whether it was expected
 *          (an expected error is logged at info level, an unexpected one at error level with its stack).
 */
export function toServiceError(err: unknown, callId?: string): { error: ServiceError; expected: boolean } {
  const { status, expected } = toStatus(err, callId);
  const trailers = new Metadata();
  trailers.set("grpc-status-details-bin", Buffer.from(Status.encode(status).finish()));
  const error = Object.assign(new Error(status.message), { code: status.code, details: status.message, metadata: trailers }) as ServiceError;
  return { error, expected };
}

/**
 * Maps an error to a `google.rpc.Status` (code, message, ErrorInfo and BadRequest details), as sent in
 * `grpc-status-details-bin`, or per item in a streaming response.
 */
export function toStatus(err: unknown, callId?: string): { status: Status; expected: boolean } {
  let code: Code;
  let reason: string;
  let message: string;
  let metadata: Record<string, string> = {};
  let violations: { field: string; description: string }[] = [];
  let expected = true;
  if (err instanceof DomainError) {
    code = CODES[err.kind];
    reason = isKnownReason(err.reason) ? err.reason : "INTERNAL";
    message = err.message;
    metadata = err.metadata;
    violations = err.fieldViolations;
    expected = err.kind !== "INTERNAL";
  } else {
    code = Code.INTERNAL;
    reason = "INTERNAL";
    message = callId ? `internal error; the server log has the details under call_id ${callId}` : "internal error";
    expected = false;
  }
  if (!expected && callId) metadata = { ...metadata, call_id: callId };
  const details = [
    {
      typeUrl: "type.googleapis.com/google.rpc.ErrorInfo",
      value: Buffer.from(ErrorInfo.encode({ reason, domain: ERROR_DOMAIN, metadata }).finish()),
    },
  ];
  if (violations.length > 0) {
    details.push({
      typeUrl: "type.googleapis.com/google.rpc.BadRequest",
      value: Buffer.from(
        BadRequest.encode({
          fieldViolations: violations.map((v) => ({ field: v.field, description: v.description, reason: "", localizedMessage: undefined })),
        }).finish(),
      ),
    });
  }
  if (err instanceof RetryLaterError) {
    const ms = Math.max(0, Math.ceil(err.retryAfterMs));
    details.push({
      typeUrl: "type.googleapis.com/google.rpc.RetryInfo",
      value: Buffer.from(RetryInfo.encode({ retryDelay: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 } }).finish()),
    });
  }
  return { status: { code, message, details }, expected };
}
