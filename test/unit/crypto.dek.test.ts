import { describe, expect, it } from "vitest";

import { DEK_BYTES, generateDek, newDekId, zero } from "../../src/crypto/dek.js";

describe("crypto/dek", () => {
  it("generates distinct 32-byte DEKs", () => {
    const a = generateDek();
    const b = generateDek();
    expect(a).toHaveLength(DEK_BYTES);
    expect(a).not.toEqual(b);
    expect(a).not.toEqual(Buffer.alloc(32));
  });

  it("makes opaque URL-safe 128-bit ids", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newDekId()));
    expect(ids.size).toBe(1000);
    for (const id of ids) {
      expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(Buffer.from(id, "base64url")).toHaveLength(16);
    }
  });

  it("zeroes in place and ignores null", () => {
    const k = generateDek();
    zero(k);
    expect(k).toEqual(Buffer.alloc(32));
    expect(() => zero(undefined)).not.toThrow();
  });
});
