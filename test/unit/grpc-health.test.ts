/**
 * The health service over real gRPC on loopback: a Watch stream hears a status once and then only its changes, and
 * watching made-up service names and hanging up leaves nothing behind (an open health port must not let anyone
 * grow the server).
 */
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as Status, HealthClient, type HealthCheckResponse } from "../../gen/ts/grpc/health/v1/health.js";
import { ServingHealth } from "../../src/grpc/health.js";
import { bind } from "../../src/grpc/server.js";

describe("health service", () => {
  const health = new ServingHealth({ "": "NOT_SERVING" });
  const server = new grpc.Server();
  let client: HealthClient;

  beforeAll(async () => {
    health.addToServer(server);
    const port = await bind(server, "127.0.0.1:0");
    client = new HealthClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });
  afterAll(() => {
    client.close();
    server.forceShutdown();
  });

  it("Watch sends the current status, then only changes", async () => {
    const seen: Status[] = [];
    const call = client.watch({ service: "" });
    call.on("data", (r: HealthCheckResponse) => seen.push(r.status));
    call.on("error", () => {});
    const until = async (n: number) => {
      for (let i = 0; i < 200 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(1);
    for (const status of ["SERVING", "SERVING", "SERVING", "NOT_SERVING", "NOT_SERVING", "SERVING"] as const) health.setStatus("", status);
    await until(4);
    // A round trip after the last change: anything still in flight would have arrived by then.
    await new Promise<void>((resolve, reject) => client.check({ service: "" }, (err) => (err ? reject(err) : resolve())));
    call.cancel();
    expect(seen).toEqual([Status.NOT_SERVING, Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
  });

  it("forgets the service names of watchers that hung up", async () => {
    for (let i = 0; i < 300; i++) {
      const call = client.watch({ service: `made-up-${i}-${"x".repeat(200)}` });
      await new Promise<void>((resolve) => call.once("data", () => resolve()));
      call.on("error", () => {});
      call.cancel();
    }
    for (let i = 0; i < 200 && health.watchedNames() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(health.watchedNames()).toBe(0);
  });
});
