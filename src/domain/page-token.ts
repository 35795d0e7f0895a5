/**
 * Opaque, tamper-checked page tokens (AIP-158). A token is `base64url(JSON payload) + "." + base64url(HMAC)`
 * with HMAC-SHA256 (RFC 2104) under a 32-byte service key, so a client can neither forge a cursor nor reuse
 * a token with other request parameters (the payload carries a hash of them).
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { InvalidArgumentError } from "./errors.js";
import type { KeysetCursor } from "./ports.js";

/** Signs and verifies page tokens with one key. */
export class PageTokenCodec {
  constructor(private readonly key: Buffer) {
    if (key.length < 32) throw new Error("page token key must be at least 32 bytes");
  }

  /** Hash of the request parameters a token is bound to (parent, filter, order_by, ...). */
  static bind(...params: string[]): string {
    return createHash("sha256").update(JSON.stringify(params)).digest("base64url").slice(0, 22);
  }

  /** Makes the token that continues after `cursor` for requests bound to `binding`. */
  encode(binding: string, cursor: KeysetCursor): string {
    const payload = Buffer.from(JSON.stringify({ b: binding, v: cursor.value, i: cursor.id })).toString("base64url");
    return `${payload}.${this.mac(payload)}`;
  }

  /**
   * Verifies and opens a token.
   * @throws InvalidArgumentError INVALID_PAGE_TOKEN when the token was altered, was not made by this service,
   *         or was made for a request with other parameters.
   */
  decode(token: string, binding: string, field: "page_token" | "resume_token" = "page_token"): KeysetCursor {
    const source = field === "page_token" ? "the next_page_token of the previous page" : "the resume_token of the last message received";
    const bad = (why: string) => new InvalidArgumentError("INVALID_PAGE_TOKEN", field, `${field} ${why}; send ${source} unchanged, or omit it to start over`);
    const dot = token.indexOf(".");
    if (dot <= 0 || token.length > 2048) throw bad("is malformed");
    const payload = token.slice(0, dot);
    const mac = Buffer.from(token.slice(dot + 1), "base64url");
    const expected = Buffer.from(this.mac(payload), "base64url");
    if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) throw bad("was altered or not issued by this service");
    let parsed: { b?: unknown; v?: unknown; i?: unknown };
    try {
      parsed = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    } catch {
      throw bad("is malformed");
    }
    if (parsed.b !== binding) throw bad("was issued for a request with other parameters (parent, filter or order_by)");
    if ((typeof parsed.v !== "number" && typeof parsed.v !== "string") || typeof parsed.i !== "string") throw bad("is malformed");
    return { value: parsed.v, id: parsed.i };
  }

  private mac(payload: string): string {
    return createHmac("sha256", this.key).update(payload).digest("base64url");
  }
}

/** AIP-158 page size: default 50, at most 1000 (larger values are lowered), negative is an error. */
export function pageSize(requested: number): number {
  if (requested < 0) throw new InvalidArgumentError("INVALID_FIELD", "page_size", `page_size must not be negative, got ${requested}`);
  if (requested === 0) return 50;
  return Math.min(requested, 1000);
}
