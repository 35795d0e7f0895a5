/** grpc-js's own log lines go through the JSON logger (component grpc-js), at a verbosity following the level. */
import * as grpc from "@grpc/grpc-js";
// grpc-js's internal logging entry point, the one its transports call.
import { log as grpcLog } from "@grpc/grpc-js/build/src/logging.js";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { routeGrpcLogs } from "../../src/grpc/server.js";

describe("routeGrpcLogs", () => {
  afterAll(() => grpc.setLogger(console));

  it("writes grpc-js errors as JSON lines with component grpc-js; debug only when the level is debug", () => {
    const lines: Record<string, unknown>[] = [];
    const sink = { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) };
    routeGrpcLogs(pino({ level: "info" }, sink));
    grpcLog(grpc.logVerbosity.ERROR, "subchannel failed: %s", "ECONNREFUSED");
    grpcLog(grpc.logVerbosity.DEBUG, "not at info");
    expect(lines).toEqual([expect.objectContaining({ level: 50, component: "grpc-js", msg: "subchannel failed: ECONNREFUSED" })]);

    lines.length = 0;
    routeGrpcLogs(pino({ level: "debug" }, sink));
    grpcLog(grpc.logVerbosity.DEBUG, "now shown");
    expect(lines).toEqual([expect.objectContaining({ level: 20, component: "grpc-js", msg: "now shown" })]);
  });
});
