/**
 * Request bytes checked before they are decoded. grpc-js answers a `requestDeserialize` that throws with a bare
 * INTERNAL ("Error deserializing request", server-interceptors.js `decompressAndMaybePush`) and no trailers, and
 * the generated decoders replace invalid UTF-8 with U+FFFD instead of refusing it. So every method's
 * deserializer is wrapped where the services are registered (`guardRequests`): it walks the raw bytes against the
 * request's descriptor (gen/descriptor.binpb) and, for bytes that are not a valid request, returns a
 * `MalformedRequest` marker instead of throwing; the call wrappers (calls.ts) turn the marker into the
 * INVALID_ARGUMENT `MALFORMED_REQUEST` error, mapped like any other (status.ts), and a bidi stream answers that
 * item alone.
 *
 * The walk follows the protobuf binary wire format (https://protobuf.dev/programming-guides/encoding/): a
 * message is a sequence of records `tag = (field_number << 3) | wire_type` as a varint, then the value: VARINT
 * (0), I64 (1, 8 bytes), LEN (2, a varint length then that many bytes: strings, bytes, messages, map entries,
 * packed repeated scalars), SGROUP/EGROUP (3/4, the deprecated groups, allowed for unknown fields) and I32 (5, 4
 * bytes). It refuses: a record that runs past the end (truncated), a varint longer than 10 bytes, field number 0
 * or wire types 6 and 7, a known field sent with a wire type its type cannot have ("Parsing" in the encoding spec:
 * repeated scalars may come packed or not), a packed run that does not split into whole values, nesting deeper
 * than 100 (protobuf's default recursion limit), and a `string` field (including a map key or value, a repeated
 * element, a field of a nested message) that is not valid UTF-8 ("proto3 string fields must contain UTF-8",
 * language guide, Scalar Value Types). Unknown fields are skipped by wire type, as every protobuf parser does.
 *
 * One pass over the bytes, one cursor per request; a path is built only for a refusal. Strings are checked with
 * Node's `buffer.isUtf8` (SIMD), after an inline ASCII scan for short ones.
 */
import { isUtf8 } from "node:buffer";
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary, ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceDefinition } from "@grpc/grpc-js";
import { DomainError, InvalidArgumentError } from "../domain/errors.js";

/** ErrorInfo.reason of a request whose bytes are not a valid request message. */
export const MALFORMED_REQUEST = "MALFORMED_REQUEST";

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

/** protobuf's default recursion limit (C++ `io::CodedInputStream::kDefaultRecursionLimit`, Java, Go). */
const MAX_DEPTH = 100;

/** How one known field must be encoded. */
interface FieldPlan {
  name: string;
  /** The wire type of one value. */
  wire: number;
  /** A repeated scalar of a numeric type, which may also come packed (LEN). */
  packable: boolean;
  /** A `string`: must be valid UTF-8. */
  utf8: boolean;
  /** For a message, map entry or group: how its content is encoded (resolved lazily: types may recurse). */
  message?: MessagePlan;
}

/** How a message's known fields must be encoded; `mapEntry` for the synthetic key/value entry of a map. */
interface MessagePlan {
  typeName: string;
  mapEntry: boolean;
  fields: Map<number, FieldPlan>;
}

/** Why the bytes were refused: the path of field names from the request (innermost last), and what was wrong. */
interface Problem {
  path: string[];
  what: string;
}

function scalarWire(t: ScalarType): number {
  switch (t) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return I64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return I32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return LEN;
    default:
      return VARINT;
  }
}

/** Builds (once per type) the plans of `desc` and every message it reaches. */
function planOf(desc: DescMessage, cache: Map<string, MessagePlan>): MessagePlan {
  const cached = cache.get(desc.typeName);
  if (cached) return cached;
  const plan: MessagePlan = { typeName: desc.typeName, mapEntry: false, fields: new Map() };
  cache.set(desc.typeName, plan);
  for (const f of desc.fields) plan.fields.set(f.number, fieldPlan(f, cache));
  return plan;
}

function fieldPlan(f: DescField, cache: Map<string, MessagePlan>): FieldPlan {
  const name = f.name;
  switch (f.fieldKind) {
    case "scalar":
      return { name, wire: scalarWire(f.scalar), packable: false, utf8: f.scalar === ScalarType.STRING };
    case "enum":
      return { name, wire: VARINT, packable: false, utf8: false };
    case "message":
      return { name, wire: f.delimitedEncoding ? SGROUP : LEN, packable: false, utf8: false, message: planOf(f.message, cache) };
    case "list":
      if (f.listKind === "message") return { name, wire: f.delimitedEncoding ? SGROUP : LEN, packable: false, utf8: false, message: planOf(f.message, cache) };
      if (f.listKind === "enum") return { name, wire: VARINT, packable: true, utf8: false };
      return { name, wire: scalarWire(f.scalar), packable: scalarWire(f.scalar) !== LEN, utf8: f.scalar === ScalarType.STRING };
    case "map": {
      const entry: MessagePlan = { typeName: `${name} entry`, mapEntry: true, fields: new Map() };
      entry.fields.set(1, { name: "key", wire: scalarWire(f.mapKey), packable: false, utf8: f.mapKey === ScalarType.STRING });
      const value: FieldPlan =
        f.mapKind === "message"
          ? { name: "value", wire: LEN, packable: false, utf8: false, message: planOf(f.message, cache) }
          : f.mapKind === "enum"
            ? { name: "value", wire: VARINT, packable: false, utf8: false }
            : { name: "value", wire: scalarWire(f.scalar), packable: false, utf8: f.scalar === ScalarType.STRING };
      entry.fields.set(2, value);
      return { name, wire: LEN, packable: false, utf8: false, message: entry };
    }
  }
}

const WIRE_NAMES = ["VARINT", "I64", "LEN", "SGROUP", "EGROUP", "I32", "6", "7"];

/** The walk over one request's bytes. */
class Walk {
  pos = 0;
  constructor(private readonly b: Uint8Array) {}

  /** Reads a varint of at most 10 bytes as a number (exact up to 2^53); -1 when truncated or too long. */
  private varint(end: number): number {
    const b = this.b;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i += 1) {
      if (this.pos >= end) return -1;
      const byte = b[this.pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    return -1;
  }

  /** Skips one value of `wire` type; for a group, up to its end. */
  private skip(wire: number, fieldNo: number, end: number, depth: number): Problem | undefined {
    switch (wire) {
      case VARINT:
        return this.varint(end) < 0 ? { path: [], what: "a varint is truncated or longer than 10 bytes" } : undefined;
      case I64:
      case I32: {
        const n = wire === I64 ? 8 : 4;
        if (end - this.pos < n) return { path: [], what: `a ${n}-byte value is truncated` };
        this.pos += n;
        return undefined;
      }
      case LEN: {
        const len = this.varint(end);
        if (len < 0 || len > end - this.pos) return { path: [], what: "a length-delimited value runs past the end of the bytes" };
        this.pos += len;
        return undefined;
      }
      case SGROUP:
        return this.message(end, undefined, depth + 1, fieldNo);
      default:
        return { path: [], what: `wire type ${WIRE_NAMES[wire] ?? wire} is not valid here` };
    }
  }

  /** True when bytes [start, end) are UTF-8 (an inline scan settles short ASCII strings). */
  private utf8(start: number, end: number): boolean {
    const b = this.b;
    if (end - start <= 64) {
      let i = start;
      while (i < end && b[i] < 0x80) i += 1;
      if (i === end) return true;
    }
    return isUtf8(b.subarray(start, end));
  }

  /** A packed run of `wire` values in [pos, end). */
  private packed(wire: number, end: number): string | undefined {
    if (wire === VARINT) {
      while (this.pos < end) if (this.varint(end) < 0) return "a packed varint is truncated";
      return undefined;
    }
    const n = wire === I64 ? 8 : 4;
    if ((end - this.pos) % n !== 0) return `a packed run of ${n}-byte values has a length that is not a multiple of ${n}`;
    this.pos = end;
    return undefined;
  }

  /**
   * Walks a message's records in [pos, end), or, for a group (`group` > 0), up to its EGROUP.
   * @returns the problem found, with the path of known field names leading to it.
   */
  message(end: number, plan: MessagePlan | undefined, depth: number, group = 0): Problem | undefined {
    if (depth > MAX_DEPTH) return { path: [], what: `messages are nested more than ${MAX_DEPTH} deep` };
    while (this.pos < end) {
      const tag = this.varint(end);
      if (tag < 0) return { path: [], what: "a field tag is truncated or longer than 10 bytes" };
      const wire = tag % 8;
      const fieldNo = Math.floor(tag / 8);
      if (fieldNo === 0 || fieldNo > 0x1fffffff) return { path: [], what: `field number ${fieldNo} is not valid` };
      if (wire === EGROUP) {
        if (group === fieldNo) return undefined;
        return { path: [], what: `an end-group record for field ${fieldNo} has no matching start` };
      }
      const field = plan?.fields.get(fieldNo);
      if (!field) {
        const p = this.skip(wire, fieldNo, end, depth);
        if (p) return p;
        continue;
      }
      const p = this.known(field, wire, fieldNo, end, depth);
      if (p) {
        // A map entry's key and value are named by the map field: `labels`, not `labels.value`.
        if (plan?.mapEntry) p.what = `a map ${field.name}: ${p.what}`;
        else p.path.unshift(field.name);
        return p;
      }
    }
    if (group !== 0) return { path: [], what: `the group of field ${group} has no end` };
    return undefined;
  }

  private known(field: FieldPlan, wire: number, fieldNo: number, end: number, depth: number): Problem | undefined {
    if (wire !== field.wire && !(wire === LEN && field.packable)) {
      if (wire > I32) return { path: [], what: `wire type ${wire} does not exist` };
      return { path: [], what: `field ${fieldNo} was sent with wire type ${WIRE_NAMES[wire]}, but its type is encoded as ${WIRE_NAMES[field.wire]}` };
    }
    if (field.message && wire === SGROUP) return this.message(end, field.message, depth + 1, fieldNo);
    if (wire !== LEN) return this.skip(wire, fieldNo, end, depth);
    const len = this.varint(end);
    if (len < 0 || len > end - this.pos) return { path: [], what: "its length runs past the end of the bytes (truncated)" };
    const start = this.pos;
    const stop = start + len;
    if (field.message) {
      const p = this.message(stop, field.message, depth + 1);
      if (p) return p;
      this.pos = stop;
      return undefined;
    }
    if (field.utf8 && !this.utf8(start, stop)) return { path: [], what: "it is not valid UTF-8 (string fields must be UTF-8)" };
    if (field.packable) {
      const what = this.packed(field.wire, stop);
      if (what) return { path: [], what };
    }
    this.pos = stop;
    return undefined;
  }
}

/** The request-message plans of every method of the contract, by method path. */
export class RequestBytes {
  private readonly byPath = new Map<string, MessagePlan>();

  /** Reads the descriptor set (gen/descriptor.binpb) and plans every service method's request message. */
  constructor(descriptorSet: Uint8Array) {
    const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, descriptorSet));
    const cache = new Map<string, MessagePlan>();
    for (const file of registry.files) {
      for (const service of file.services) {
        for (const method of service.methods) this.byPath.set(`/${service.typeName}/${method.name}`, planOf(method.input, cache));
      }
    }
  }

  static fromFile(path: URL): RequestBytes {
    return new RequestBytes(readFileSync(path));
  }

  /**
   * Checks one request's bytes.
   * @returns the refusal to send (INVALID_ARGUMENT MALFORMED_REQUEST, naming the field when one is at fault), or
   *   undefined when the bytes are a valid encoding of the method's request message.
   */
  check(path: string, bytes: Uint8Array): DomainError | undefined {
    const plan = this.byPath.get(path);
    if (!plan) return undefined;
    const p = new Walk(bytes).message(bytes.length, plan, 0);
    return p ? malformed(plan.typeName, p) : undefined;
  }

  /** The plan's request message name for `path`, if the method is known. */
  requestType(path: string): string | undefined {
    return this.byPath.get(path)?.typeName;
  }
}

function malformed(typeName: string, p: Problem): DomainError {
  const field = p.path.join(".");
  const head = `the request bytes are not a valid ${typeName}`;
  if (field) return new InvalidArgumentError(MALFORMED_REQUEST, field, `${head}: ${field}: ${p.what}`, { metadata: { message: typeName } });
  return new DomainError("INVALID_ARGUMENT", MALFORMED_REQUEST, `${head}: ${p.what}`, { metadata: { message: typeName } });
}

/** What a guarded deserializer returns for bytes that are not a valid request: the call wrapper refuses it. */
export class MalformedRequest {
  constructor(readonly error: DomainError) {}
}

/** The refusal a guarded deserializer put in place of `request`, if it did. */
export function malformedRequest(request: unknown): DomainError | undefined {
  return request instanceof MalformedRequest ? request.error : undefined;
}

/**
 * A copy of the service definition `def` whose `requestDeserialize` first checks the bytes (`checker`), then
 * decodes; bytes that fail either way become a `MalformedRequest` instead of an exception, because grpc-js turns
 * a throwing deserializer into a bare INTERNAL that the service cannot shape (calls.ts refuses the marker).
 */
export function guardRequests<S extends ServiceDefinition>(def: S, checker: RequestBytes): S {
  const guarded: Record<string, unknown> = {};
  for (const [key, method] of Object.entries(def)) {
    const decode = method.requestDeserialize;
    const typeName = checker.requestType(method.path) ?? "request";
    guarded[key] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        const refused = checker.check(method.path, bytes);
        if (refused) return new MalformedRequest(refused);
        try {
          return decode(bytes);
        } catch (err) {
          return new MalformedRequest(
            new DomainError("INVALID_ARGUMENT", MALFORMED_REQUEST, `the request bytes are not a valid ${typeName}: ${(err as Error)?.message ?? err}`, {
              metadata: { message: typeName },
            }),
          );
        }
      },
    };
  }
  return guarded as S;
}
