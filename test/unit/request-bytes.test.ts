/**
 * The request-bytes walker (src/grpc/request-bytes.ts) on its own: the shipped descriptor set's requests, and a
 * small hand-made schema for what the contract's requests do not have (packed repeated scalars, groups in
 * unknown fields, recursion), held against the protobuf encoding spec. Bytes are written out by hand.
 */
import { readFileSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { ImportCertificateRequest } from "../../gen/ts/certmanager/v1/certificate.js";
import { RequestBytes } from "../../src/grpc/request-bytes.js";

const shipped = new RequestBytes(readFileSync(new URL("../../gen/descriptor.binpb", import.meta.url)));
const IMPORT = "/certmanager.v1.CertificateService/ImportCertificate";

/** test.v1.T { string s = 1; repeated int32 nums = 2; repeated fixed32 f = 3; T child = 4; repeated string tags = 5; } */
const testSet = toBinary(
  FileDescriptorSetSchema,
  create(FileDescriptorSetSchema, {
    file: [
      {
        name: "t.proto",
        package: "test.v1",
        syntax: "proto3",
        messageType: [
          {
            name: "T",
            field: [
              { name: "s", number: 1, type: Type.STRING, label: Label.OPTIONAL, jsonName: "s" },
              { name: "nums", number: 2, type: Type.INT32, label: Label.REPEATED, jsonName: "nums" },
              { name: "f", number: 3, type: Type.FIXED32, label: Label.REPEATED, jsonName: "f" },
              { name: "child", number: 4, type: Type.MESSAGE, typeName: ".test.v1.T", label: Label.OPTIONAL, jsonName: "child" },
              { name: "tags", number: 5, type: Type.STRING, label: Label.REPEATED, jsonName: "tags" },
            ],
          },
        ],
        service: [{ name: "S", method: [{ name: "M", inputType: ".test.v1.T", outputType: ".test.v1.T" }] }],
      },
    ],
  }),
);
const custom = new RequestBytes(testSet);
const check = (bytes: number[] | Uint8Array) => custom.check("/test.v1.S/M", Uint8Array.from(bytes));

describe("request bytes", () => {
  it("accepts every valid encoding: empty, unknown fields of every wire type, groups, packed and unpacked", () => {
    expect(check([])).toBeUndefined();
    // unknown 9: varint, I64, LEN, I32, and a group holding a varint: tag 9<<3|3 = 0x4b ... 0x4c.
    expect(check([0x48, 0x96, 0x01, 0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x4a, 0x02, 0xff, 0xfe, 0x4d, 1, 2, 3, 4, 0x4b, 0x08, 0x01, 0x4c])).toBeUndefined();
    // nums unpacked (0x10) and packed (0x12 len 3: 1, 150); f packed (8 bytes) and unpacked (0x1d).
    expect(check([0x10, 0x01, 0x12, 0x03, 0x01, 0x96, 0x01, 0x1a, 0x08, 1, 0, 0, 0, 2, 0, 0, 0, 0x1d, 1, 0, 0, 0])).toBeUndefined();
    // Bytes in an unknown LEN field are not UTF-8 checked; valid multi-byte UTF-8 in s passes.
    expect(check([0x0a, 0x04, 0xf0, 0x9f, 0x94, 0x90])).toBeUndefined();
    const valid = ImportCertificateRequest.encode(ImportCertificateRequest.fromPartial({ parent: "instances/x", labels: { a: "é" }, pkcs12: Buffer.from([0xff, 0x80]) })).finish();
    expect(shipped.check(IMPORT, valid)).toBeUndefined();
  });

  it("refuses broken structure: truncation, long varints, field 0, wire types 6 and 7, unmatched groups", () => {
    const what = (b: number[]) => check(b)?.message;
    expect(what([0x0a, 0x05, 0x61])).toMatch(/^the request bytes are not a valid test\.v1\.T: s: .*truncated/);
    expect(what([0x08 | 0x40, 0x80])).toMatch(/varint is truncated/);
    expect(what(Array(11).fill(0x80).concat([0x01]))).toMatch(/tag is truncated or longer than 10 bytes/);
    expect(what([0x00, 0x01])).toMatch(/field number 0/);
    expect(what([0x4e, 0x01])).toMatch(/wire type 6/);
    expect(what([0x4c])).toMatch(/end-group record for field 9 has no matching start/);
    expect(what([0x4b, 0x08, 0x01])).toMatch(/group of field 9 has no end/);
    expect(what([0x49, 1, 2, 3])).toMatch(/8-byte value is truncated/);
  });

  it("refuses a known field with a wire type its type cannot have, and broken packed runs", () => {
    expect(check([0x0d, 1, 2, 3, 4])?.metadata).toEqual({ field: "s", message: "test.v1.T" });
    expect(check([0x20, 0x01])?.message).toMatch(/child: field 4 was sent with wire type VARINT, but its type is encoded as LEN/);
    expect(check([0x2d, 1, 2, 3, 4])?.metadata.field).toBe("tags");
    expect(check([0x1a, 0x03, 1, 2, 3])?.message).toMatch(/f: a packed run of 4-byte values/);
    expect(check([0x12, 0x02, 0x01, 0x80])?.message).toMatch(/nums: a packed varint is truncated/);
  });

  it("refuses invalid UTF-8 in strings at any depth and in repeated strings, naming the proto path", () => {
    const e = check([0x22, 0x06, 0x22, 0x04, 0x0a, 0x02, 0xc3, 0x28]);
    expect([e?.kind, e?.reason, e?.metadata.field]).toEqual(["INVALID_ARGUMENT", "MALFORMED_REQUEST", "child.child.s"]);
    expect(e?.fieldViolations.map((v) => v.field)).toEqual(["child.child.s"]);
    expect(check([0x2a, 0x01, 0x61, 0x2a, 0x01, 0xff])?.metadata.field).toBe("tags");
    // Surrogates encoded in UTF-8 (CESU) and overlong forms are not UTF-8.
    expect(check([0x0a, 0x03, 0xed, 0xa0, 0x80])?.metadata.field).toBe("s");
    expect(check([0x0a, 0x02, 0xc0, 0x80])?.metadata.field).toBe("s");
    // A long string goes through the native check.
    const long = Buffer.concat([Buffer.alloc(200, 0x61), Buffer.from([0xff])]);
    expect(check([0x0a, 0xc9, 0x01, ...long])?.metadata.field).toBe("s");
    expect(check([0x0a, 0xc8, 0x01, ...long.subarray(0, 200)])).toBeUndefined();
  });

  it("refuses nesting deeper than 100", () => {
    let msg: number[] = [];
    for (let i = 0; i < 101; i += 1) msg = [0x22, ...varint(msg.length), ...msg];
    expect(check(msg)?.message).toMatch(/nested more than 100 deep/);
    let ok: number[] = [];
    for (let i = 0; i < 100; i += 1) ok = [0x22, ...varint(ok.length), ...ok];
    expect(check(ok)).toBeUndefined();
  });

  it("walks a 1 MB request quickly", () => {
    const big = ImportCertificateRequest.encode(
      ImportCertificateRequest.fromPartial({ parent: "instances/x", certificate: "é".repeat(500_000), labels: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, `v${i}`])) }),
    ).finish();
    const start = performance.now();
    for (let i = 0; i < 100; i += 1) expect(shipped.check(IMPORT, big)).toBeUndefined();
    // 100 MB of strings: the native UTF-8 check runs at GB/s; the bound is loose for a shared machine.
    expect(performance.now() - start).toBeLessThan(2000);
  });
});

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}
