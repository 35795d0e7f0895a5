/**
 * Etags (AIP-154): a short hash of a resource's id and revision, so it changes on every write and a client
 * can make an update conditional on what it read.
 */
import { createHash } from "node:crypto";
import { EtagMismatchError } from "../domain/errors.js";

/** The etag of revision `revision` of resource `name`: 16 base64url characters in double quotes. */
export function etagOf(name: string, revision: number): string {
  return `"${createHash("sha256").update(`${name}\n${revision}`).digest("base64url").slice(0, 16)}"`;
}

/**
 * Runs a read-modify-write. When the client sent no etag it asked for an unconditional change, so losing a
 * race to another writer is retried (up to 5 attempts) instead of reported; with an etag it is reported.
 */
export async function retryUnconditional<T>(etag: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (etag !== "" || !(err instanceof EtagMismatchError) || attempt >= 5) throw err;
    }
  }
}

/** @throws EtagMismatchError when `sent` is non-empty and differs from the current etag. */
export function checkEtag(name: string, revision: number, sent: string | undefined): void {
  if (sent && sent !== etagOf(name, revision)) throw new EtagMismatchError(name);
}
