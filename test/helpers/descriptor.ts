/** The contract's methods as the shipped descriptor set (gen/descriptor.binpb) lists them. */
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

/** Full gRPC paths (`/certmanager.v1.Service/Method`) of every method of the `certmanager.*` packages. */
export function contractMethods(): { path: string; clientStreaming: boolean; serverStreaming: boolean }[] {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(new URL("../../gen/descriptor.binpb", import.meta.url)));
  const out: { path: string; clientStreaming: boolean; serverStreaming: boolean }[] = [];
  for (const file of set.file) {
    if (!file.package.startsWith("certmanager.")) continue;
    for (const svc of file.service) {
      for (const m of svc.method) out.push({ path: `/${file.package}.${svc.name}/${m.name}`, clientStreaming: m.clientStreaming, serverStreaming: m.serverStreaming });
    }
  }
  return out;
}
