import { describe, expect, it } from "vitest";

import { DEK_BYTES, generateDek, newDekId, zero } from "../../src/crypto/dek.js";

describe("crypto/dek", () => {
  it("generates distinct 32-byte DEKs", () => {
    const a = generateDek();
    const b = generateDek();
    expect(a).toHaveLength(DEK_BYTES);
    expect(a.equals(b)).toBe(false);
    expect(a.equals(Buffer.alloc(32))).toBe(false);
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
    expect(k.equals(Buffer.alloc(32))).toBe(true);
    expect(() => zero(undefined)).not.toThrow();
  });
});
