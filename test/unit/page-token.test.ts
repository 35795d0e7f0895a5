/** Page tokens: opaque, HMAC-authenticated, bound to the request's parameters (AIP-158). */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/domain/errors.js";
import { PageTokenCodec, pageSize } from "../../src/domain/page-token.js";

describe("PageTokenCodec", () => {
  const codec = new PageTokenCodec(randomBytes(32));
  const binding = PageTokenCodec.bind("certificates", "i1", 'domain = "a"', "not_after false");

  it("round-trips numeric and string cursors", () => {
    expect(codec.decode(codec.encode(binding, { value: 1_700_000_000_123, id: "a" }), binding)).toEqual({ value: 1_700_000_000_123, id: "a" });
    expect(codec.decode(codec.encode(binding, { value: "nåme, \"quoted\"", id: "b" }), binding)).toEqual({ value: "nåme, \"quoted\"", id: "b" });
  });

  it("refuses altered tokens, tokens of another key and tokens of other parameters", () => {
    const token = codec.encode(binding, { value: 5, id: "x" });
    const [payload, mac] = token.split(".");
    const forged = Buffer.from(JSON.stringify({ b: binding, v: 0, i: "x" })).toString("base64url");
    const bad = [
      `${forged}.${mac}`,
      `${payload}.${mac.slice(0, -2)}AA`,
      `${payload}`,
      "",
      new PageTokenCodec(randomBytes(32)).encode(binding, { value: 5, id: "x" }),
    ];
    for (const t of bad) expect(() => codec.decode(t, binding)).toThrow(InvalidArgumentError);
    expect(() => codec.decode(token, PageTokenCodec.bind("certificates", "i2", "", "create_time false"))).toThrow(/other parameters/);
  });

  it("applies the AIP-158 page size rules", () => {
    expect(pageSize(0)).toBe(50);
    expect(pageSize(7)).toBe(7);
    expect(pageSize(5000)).toBe(1000);
    expect(() => pageSize(-1)).toThrow(InvalidArgumentError);
  });
});
