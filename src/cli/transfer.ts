/**
 * Moves an instance's certificates through a file with the generated TypeScript client:
 *
 *   npm run transfer -- export <instance> <file> [address]   ExportCertificates (with private keys) -> NDJSON
 *   npm run transfer -- import <instance> <file> [address]   NDJSON -> ImportCertificates into <instance>
 *
 * One JSON line per certificate (the ExportCertificatesResponse in proto3 JSON). The file holds private keys in
 * clear, so it is created with mode 0600; prefer `recipient_public_key` for transfers between parties.
 * Import sends every line as one item of one stream, with a request_id derived from the instance and the
 * certificate's fingerprint, so running the import again after an interruption imports nothing twice.
 * Prints a JSON summary; exit code 1 when any item failed. `address` defaults to 127.0.0.1:50051. The caller's
 * credential (an API key or a JWT, sent as `authorization: Bearer`) is read from the file named by
 * `CM_TOKEN_FILE`, or from `CM_TOKEN`.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { credentials, InterceptingCall, type Interceptor } from "@grpc/grpc-js";
import {
  CertificateServiceClient,
  ExportCertificatesRequest,
  ExportCertificatesResponse,
  ImportCertificatesRequest,
  type ImportCertificatesResponse,
} from "../../gen/ts/certmanager/v1/certificate.js";

const [command, instance, file, address = "127.0.0.1:50051"] = process.argv.slice(2);
if (!["export", "import"].includes(command ?? "") || !instance || !file) {
  process.stderr.write("usage: transfer export|import <instances/...> <file> [host:port]\n");
  process.exit(2);
}
const token = process.env.CM_TOKEN_FILE ? readFileSync(process.env.CM_TOKEN_FILE, "utf8").trim() : process.env.CM_TOKEN;
if (!token) {
  process.stderr.write("transfer needs a credential: set CM_TOKEN_FILE to a file holding an API key or JWT (or CM_TOKEN)\n");
  process.exit(2);
}
/** Sends the credential with every call. */
const bearer: Interceptor = (options, next) =>
  new InterceptingCall(next(options), {
    start(metadata, listener, go) {
      metadata.set("authorization", `Bearer ${token}`);
      go(metadata, listener);
    },
  });
const client = new CertificateServiceClient(address, credentials.createInsecure(), { "grpc.max_receive_message_length": 64 * 1024 * 1024, interceptors: [bearer] });

/** Export: stream to the file, honouring the file's backpressure. */
async function exportTo(): Promise<object> {
  const out = createWriteStream(file, { mode: 0o600, flags: "wx" });
  let count = 0;
  const call = client.exportCertificates(ExportCertificatesRequest.fromPartial({ parent: instance, includePrivateKeys: true }));
  for await (const msg of call as AsyncIterable<ExportCertificatesResponse>) {
    if (!out.write(`${JSON.stringify(ExportCertificatesResponse.toJSON(msg))}\n`)) await once(out, "drain");
    count++;
  }
  out.end();
  await once(out, "finish");
  return { exported: count, file };
}

/** Import: one stream, one item per line; waits for every result. */
async function importFrom(): Promise<object> {
  const call = client.importCertificates();
  const results: ImportCertificatesResponse[] = [];
  const done = new Promise<void>((resolve, reject) => {
    call.on("data", (r: ImportCertificatesResponse) => results.push(r));
    call.on("end", resolve);
    call.on("error", reject);
  });
  let sent = 0;
  for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
    if (line.trim() === "") continue;
    const m = ExportCertificatesResponse.fromJSON(JSON.parse(line));
    const fingerprint = m.certificate?.sha256Fingerprint ?? "";
    // A stable UUID-shaped request_id per (instance, certificate): a re-run replays instead of duplicating.
    const h = createHash("sha256").update(`${instance}\n${fingerprint}`).digest("hex");
    const requestId = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
    const item = ImportCertificatesRequest.fromPartial({
      item: {
        parent: instance,
        certificate: m.certificatePem,
        privateKey: m.privateKeyPem,
        intermediates: m.intermediatesPem,
        displayName: m.certificate?.displayName,
        description: m.certificate?.description,
        labels: m.certificate?.labels,
        requestId,
      },
    });
    if (!call.write(item)) await once(call, "drain");
    sent++;
  }
  call.end();
  await done;
  const failed = results.filter((r) => r.error);
  if (failed.length > 0) process.exitCode = 1;
  return { sent, imported: results.length - failed.length, failed: failed.map((r) => ({ index: r.index, code: r.error!.code, message: r.error!.message })) };
}

try {
  const summary = command === "export" ? await exportTo() : await importFrom();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} catch (err) {
  process.stderr.write(`${JSON.stringify({ error: { code: (err as { code?: number }).code, message: (err as Error).message } })}\n`);
  process.exitCode = 1;
} finally {
  client.close();
}
