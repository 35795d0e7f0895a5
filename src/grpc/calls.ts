/**
 * What every call does whatever its use case: a `call_id` for the log, the gate (gate.ts: authentication, rate
 * limit, authorization, audit) before the use case runs, an AbortSignal that fires when the client cancels or its
 * deadline passes (so costly work such as PKCS#12 files or encrypted keys stops), one log line per call (never
 * payloads), and errors mapped in one place (status.ts). `Calls#unary`, `#serverStream` and `#bidiStream` wrap a
 * use case into a grpc-js handler of each call kind.
 */
import { randomUUID } from "node:crypto";
import type {
  handleBidiStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  ServerDuplexStream,
  ServerWritableStream,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ServerSurfaceCall } from "@grpc/grpc-js/build/src/server-call.js";
import type { Status } from "../../gen/ts/google/rpc/status.js";
import type { Caller } from "../auth/authenticate.js";
import { withCallDeadline } from "../domain/call-deadline.js";
import { callFacts, type Admitted, type Gate } from "./gate.js";
import { malformedRequest } from "./request-bytes.js";
import { toServiceError, toStatus } from "./status.js";

/** The call a use case runs in. */
export interface CallContext {
  /** Fires when the client cancels or the deadline passes. */
  signal: AbortSignal;
  /** Names the call in the log; an unexpected error carries it in ErrorInfo.metadata `call_id`. */
  callId: string;
  /** Who is calling. */
  caller: Caller;
  /** For lists: only instances bound to these members are visible (AIP-211); undefined: everything. */
  visibleTo?: readonly string[];
  /** The client connection, as grpc-js names its peer (`ipv4:10.0.0.7:53412`). */
  peer: string;
}

/** A call being served: its id, signal and when it started, before the gate let it in. */
interface Served {
  signal: AbortSignal;
  callId: string;
  started: bigint;
  peer: string;
}

/** Starts serving `call`: a new call id, and a signal tied to the call's `cancelled` event. */
function serve(call: { on(event: "cancelled", listener: () => void): unknown; getPeer(): string }): Served {
  const cancelled = new AbortController();
  call.on("cancelled", () => cancelled.abort());
  return { signal: cancelled.signal, callId: randomUUID(), started: process.hrtime.bigint(), peer: call.getPeer() };
}

const contextOf = (served: Served, admitted: Admitted): CallContext => ({
  signal: served.signal,
  callId: served.callId,
  caller: admitted.caller,
  visibleTo: admitted.visibleTo,
  peer: served.peer,
});

/** The call's deadline as epoch ms (Infinity when the client set none). */
function deadlineOf(call: { getDeadline(): Date | number }): number {
  const d = call.getDeadline();
  return d instanceof Date ? d.getTime() : d;
}

const elapsedMs = (served: Served): number => Number(process.hrtime.bigint() - served.started) / 1e6;

/** An error for the log: type, message cut to 2,000 characters (Knex puts whole statements in it), stack. */
function loggableError(err: unknown): object {
  const e = err as Error;
  return { type: e?.name, code: (e as { code?: string })?.code, message: String(e?.message ?? err).slice(0, 2000), stack: e?.stack?.split("\n").slice(1, 12).join("\n") };
}

/**
 * Maps a failed call's error and logs it: at info level when expected (a DomainError the client caused), at
 * error level with the stack otherwise.
 * @returns the ServiceError to send.
 */
function failed(log: Logger, method: string, served: Served, err: unknown, what: "call" | "stream", fields: object = {}) {
  const { error, expected } = toServiceError(err, served.callId);
  const entry = { method, call_id: served.callId, code: error.code, ms: elapsedMs(served), ...fields };
  if (expected) log.info({ ...entry, reason: (err as { reason?: string }).reason }, `${what} failed`);
  else log.error({ ...entry, err: loggableError(err) }, `${what} failed unexpectedly`);
  return error;
}

/** The call wrappers of one gRPC service, e.g. `certmanager.v1.InstanceService`. */
export class Calls {
  constructor(
    private readonly log: Logger,
    private readonly gate: Gate,
    private readonly service: string,
  ) {}

  private path(method: string): string {
    return `/${this.service}/${method}`;
  }

  /**
   * Wraps a unary use case: lets it through the gate, runs it, answers, maps any error in one place and logs.
   * @param fn the use case; it may watch `ctx.signal` to stop costly work for a client that went away.
   */
  unary<Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>): handleUnaryCall<Req, Res> {
    const { log, gate } = this;
    const path = this.path(method);
    return (call, callback) =>
      withCallDeadline(deadlineOf(call), () => {
        const served = serve(call);
        // Bytes that are not a valid request (request-bytes.ts) are refused before the gate: nothing to authorize.
        const malformed = malformedRequest(call.request);
        if (malformed) return callback(failed(log, method, served, malformed, "call"));
        gate
          .admit(path, callFacts(call as ServerSurfaceCall, served.callId), call.request)
          .then((admitted) => admitted.run(() => fn(call.request, contextOf(served, admitted))))
          .then(
            (res) => {
              log.debug({ method, call_id: served.callId, code: 0, ms: elapsedMs(served) }, "call");
              callback(null, res);
            },
            (err: unknown) => callback(failed(log, method, served, err, "call")),
          );
      });
  }

  /**
   * Wraps a server-streaming use case. `fn` validates the request and returns the responses; a failure before
   * the first response fails the call with a clear status. Responses are written with flow control (a slow
   * reader holds the producer back), and the producer stops when the client goes away.
   */
  serverStream<Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<AsyncIterable<Res>>): handleServerStreamingCall<Req, Res> {
    const { log, gate } = this;
    const path = this.path(method);
    return (call) =>
      withCallDeadline(deadlineOf(call), () => {
        const served = serve(call);
        stream(log, method, call, served, { sent: 0 }, async () => {
          const malformed = malformedRequest(call.request);
          if (malformed) throw malformed;
          const admitted = await gate.admit(path, callFacts(call as ServerSurfaceCall, served.callId), call.request);
          return admitted.run(() => fn(call.request, contextOf(served, admitted)));
        });
      });
  }

  /**
   * Wraps a bidirectional stream that answers each request message with one response, in order. The caller is
   * authenticated once, when the stream starts; each message is authorized on its own (`each` runs only for a
   * message the caller may send). A message whose check or use case fails is answered by
   * `failed(req, index, status)`, the error mapped as for a unary call, and the stream goes on; only a broken
   * stream fails the call. A message whose bytes are not a valid request is such an item (MALFORMED_REQUEST).
   */
  bidiStream<Req, Res>(
    method: string,
    handlers: {
      each: (req: Req, index: number, ctx: CallContext) => Promise<Res>;
      failed: (req: Req, index: number, status: Status) => Res;
    },
  ): handleBidiStreamingCall<Req, Res> {
    const { log, gate } = this;
    const path = this.path(method);
    return (call) =>
      withCallDeadline(deadlineOf(call), () => {
        const served = serve(call);
        const stats = { sent: 0, failed: 0 };
        // destroyOnReturn false: the default iterator destroys the whole duplex when the requests end, which would
        // drop the responses still being written.
        const requests = (call as unknown as { iterator(o: { destroyOnReturn: boolean }): AsyncIterable<Req> }).iterator({ destroyOnReturn: false });
        stream(log, method, call, served, stats, async () => {
          const admitted = await gate.admit(path, callFacts(call as unknown as ServerSurfaceCall, served.callId), undefined);
          const ctx = contextOf(served, admitted);
          return (async function* responses(): AsyncGenerator<Res> {
            let index = 0;
            for await (const req of requests) {
              let res: Res;
              try {
                // A message whose bytes are not a valid request (request-bytes.ts) is answered like a refused item.
                const malformed = malformedRequest(req);
                if (malformed) throw malformed;
                res = await admitted.runItem(req, () => handlers.each(req, index, ctx));
              } catch (err) {
                const { status, expected } = toStatus(err, served.callId);
                if (!expected) log.error({ method, call_id: served.callId, index, err: loggableError(err) }, "item failed unexpectedly");
                stats.failed++;
                res = handlers.failed(req, index, status);
              }
              index++;
              yield res;
            }
          })();
        });
      });
  }
}

/**
 * Writes the responses `produce` gives with flow control (one in the transport at a time), ends the stream and logs one "stream done" line with
 * `stats` (`sent` counts the responses written). A client that cancels, or whose deadline passes, ends the
 * stream early: that is logged as done and cancelled, not as a server failure.
 */
function stream<Res>(
  log: Logger,
  method: string,
  call: ServerWritableStream<unknown, Res> | ServerDuplexStream<unknown, Res>,
  served: Served,
  stats: { sent: number } & Record<string, number>,
  produce: () => Promise<AsyncIterable<Res>>,
): void {
  const done = () => {
    const mem = process.memoryUsage();
    log.info(
      {
        method,
        call_id: served.callId,
        ...stats,
        cancelled: call.cancelled,
        ms: elapsedMs(served),
        rss_mb: Math.round(mem.rss / 1e6),
        heap_mb: Math.round(mem.heapUsed / 1e6),
        external_mb: Math.round(mem.external / 1e6),
      },
      "stream done",
    );
  };
  (async () => {
    for await (const res of await produce()) {
      // Leaving the loop ends the producer's generator, so nothing more is read or computed.
      if (call.cancelled) break;
      stats.sent++;
      // One message in the transport at a time: the next is asked for only once this one went out (into the
      // HTTP/2 flow-control window), so a client that does not read holds the producer at one message, and the
      // producer's memory accounting (ExportCertificates) can release a message's bytes when the next is asked.
      await written(call, res);
      if (call.cancelled) break;
    }
    if (!call.cancelled) call.end();
    done();
  })().catch((err: unknown) => {
    if (call.cancelled) return done();
    call.emit("error", failed(log, method, served, err, "stream", stats));
  });
}

/**
 * Writes `res` and resolves once the transport took it (grpc-js calls back when HTTP/2 framed it, which needs
 * the client's flow-control window), or when the call is cancelled, its deadline passes, or the stream closes
 * or fails (grpc-js then never calls back).
 */
function written<Res>(call: ServerWritableStream<unknown, Res> | ServerDuplexStream<unknown, Res>, res: Res): Promise<void> {
  return new Promise((resolve) => {
    const events = ["cancelled", "close", "error"] as const;
    const done = () => {
      for (const e of events) call.off(e, done);
      resolve();
    };
    for (const e of events) call.on(e, done);
    call.write(res, () => done());
    if (call.cancelled) done();
  });
}
