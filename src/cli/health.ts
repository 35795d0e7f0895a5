/**
 * `npm run health` (`node dist/src/cli/health.js`): asks a running server's gRPC health service (grpc.health.v1,
 * service "") whether it serves, for container HEALTHCHECKs and install checks. Needs no configuration beyond
 * where the server is; it reads no key, database or secret.
 *
 * Usage: `health [host:port] [--ca <pem file>] [--server-name <name>] [--timeout <seconds>]`
 * - address: default `CM_HEALTH_LISTEN_ADDRESS` (the plaintext health listener; not with `--ca`), else
 *   `CM_LISTEN_ADDRESS`, else 127.0.0.1:50051; a wildcard host (0.0.0.0, ::) is probed on loopback. So in the server's own environment (a
 *   container's HEALTHCHECK) it needs no arguments.
 * - `--ca`: probe over TLS, trusting that CA bundle (the server's TLS is on); without it, plaintext.
 * Prints one JSON line `{"address":…,"status":"SERVING"}`. Exit 0 when SERVING, 1 when not serving or
 * unreachable within the timeout (default 3 s), 2 on a usage error.
 */
import { readFileSync } from "node:fs";
import { credentials, Metadata, type ChannelCredentials, type ServiceError } from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus, HealthClient, type HealthCheckResponse } from "../../gen/ts/grpc/health/v1/health.js";

/** What the command line asks for. @throws Error with the usage problem. */
function parseArgs(argv: string[], env: NodeJS.ProcessEnv): { address: string; ca?: Buffer; serverName?: string; timeoutMs: number } {
  let address: string | undefined;
  let ca: Buffer | undefined;
  let serverName: string | undefined;
  let timeoutMs = 3000;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--ca") ca = readFileSync(value());
    else if (a === "--server-name") serverName = value();
    else if (a === "--timeout") {
      const s = Number(value());
      if (!Number.isFinite(s) || s <= 0 || s > 300) throw new Error("--timeout takes seconds, 0 < s <= 300");
      timeoutMs = s * 1000;
    } else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else address = a;
  }
  // The plaintext health listener unless TLS is asked for: that is the service's own port.
  address ??= (ca ? undefined : env.CM_HEALTH_LISTEN_ADDRESS) || env.CM_LISTEN_ADDRESS || "127.0.0.1:50051";
  if (!/^.+:\d+$/.test(address)) throw new Error(`address ${JSON.stringify(address)} is not host:port`);
  // A server bound to every interface answers on loopback.
  address = address.replace(/^(0\.0\.0\.0|\[::\]|::):/, "127.0.0.1:");
  return { address, ca, serverName, timeoutMs };
}

/** Asks the health service once. @returns the status name, or the error that prevented an answer. */
function check(address: string, creds: ChannelCredentials, serverName: string | undefined, timeoutMs: number): Promise<string> {
  const client = new HealthClient(address, creds, serverName ? { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName } : {});
  return new Promise<string>((resolve) =>
    client.check({ service: "" }, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res?: HealthCheckResponse) => {
      client.close();
      resolve(err ? `UNREACHABLE: ${err.details || err.message}` : HealthCheckResponse_ServingStatus[res!.status] ?? String(res!.status));
    }),
  );
}

let args: ReturnType<typeof parseArgs>;
try {
  args = parseArgs(process.argv.slice(2), process.env);
} catch (err) {
  process.stderr.write(`health: ${(err as Error).message}\nusage: health [host:port] [--ca <pem file>] [--server-name <name>] [--timeout <seconds>]\n`);
  process.exit(2);
}
const creds = args.ca ? credentials.createSsl(args.ca) : credentials.createInsecure();
const status = await check(args.address, creds, args.serverName, args.timeoutMs);
process.stdout.write(`${JSON.stringify({ address: args.address, status })}\n`);
process.exit(status === "SERVING" ? 0 : 1);
