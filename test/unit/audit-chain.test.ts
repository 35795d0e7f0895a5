/**
 * The audit hash chain's verifier: every kind of tampering is named with its row's sequence number, and an
 * untouched chain gives no problem. Chains are built with hashAuditEvent exactly as the repository appends.
 */
import { describe, expect, it } from "vitest";
import {
  ChainVerifier,
  GENESIS_HASH,
  hashAuditEvent,
  parseAuditChain,
  verifyChain,
  type AuditRecord,
  type ChainHead,
  type ChainProblem,
} from "../../src/domain/audit.js";
import { InvalidArgumentError } from "../../src/domain/errors.js";

const CHAIN = "instances/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d";

function event(chain: string, seq: number, prevHash: string, principal = `user:u${seq}@example.com`): AuditRecord {
  const r = {
    chain,
    seq,
    time: new Date(1_700_000_000_000 + seq * 1000),
    principal,
    method: "/certmanager.v1.CertificateService/AccessCertificate",
    resource: `${chain}/certificates/0190a3c4-5e6f-7a8b-9c0d-${String(seq).padStart(12, "0")}`,
    code: seq % 3 === 0 ? 7 : 0,
    reason: seq % 3 === 0 ? "PERMISSION_DENIED" : "",
    requestId: `req-${seq}`,
    callId: `call-${seq}`,
    peer: "ipv4:127.0.0.1:5000",
    prevHash,
  };
  return { ...r, hash: hashAuditEvent(r) };
}

/** A sound chain of `n` events and its head. */
function chainOf(n: number, chain = CHAIN): { rows: AuditRecord[]; head: ChainHead } {
  const rows: AuditRecord[] = [];
  let prev = GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    rows.push(event(chain, seq, prev));
    prev = rows[rows.length - 1].hash;
  }
  return { rows, head: { seq: n, hash: prev } };
}

/** Problems as `seq PROBLEM`, to compare whole lists. */
const named = (ps: ChainProblem[]) => ps.map((p) => `${p.seq} ${p.problem}`);

describe("verifyChain", () => {
  it("finds nothing wrong with an untouched chain, an empty one, or a checkpoint it has passed", () => {
    const { rows, head } = chainOf(20);
    expect(verifyChain(CHAIN, rows, head)).toEqual([]);
    expect(verifyChain(CHAIN, rows, head, { seq: 7, hash: rows[6].hash })).toEqual([]);
    expect(verifyChain(CHAIN, rows, head, head)).toEqual([]);
    expect(verifyChain(CHAIN, [], { seq: 0, hash: GENESIS_HASH })).toEqual([]);
  });

  it("names an edited field, an edited previous hash and an edited hash as EDITED at that row", () => {
    const { rows, head } = chainOf(6);
    const edited = rows.map((r) => (r.seq === 3 ? { ...r, principal: "user:mallory@example.com" } : r));
    expect(verifyChain(CHAIN, edited, head)).toEqual([
      { chain: CHAIN, seq: 3, problem: "EDITED", detail: expect.stringContaining("seq 3's fields do not match its hash") },
    ]);
    for (const change of [{ code: 13 }, { time: new Date(0) }, { prevHash: "1".repeat(64) }, { peer: "ipv4:10.0.0.1:1" }]) {
      expect(named(verifyChain(CHAIN, rows.map((r) => (r.seq === 2 ? { ...r, ...change } : r)), head))).toEqual(["2 EDITED"]);
    }
    // A changed stored hash of the last row also disagrees with the head table.
    expect(named(verifyChain(CHAIN, rows.map((r) => (r.seq === 6 ? { ...r, hash: "a".repeat(64) } : r)), head))).toEqual(["6 EDITED", "6 HEAD_MISMATCH"]);
    // A row copied in from another chain does not hash as a row of this one.
    const other = chainOf(6, "services/certmanager").rows;
    expect(named(verifyChain(CHAIN, rows.map((r) => (r.seq === 4 ? other[3] : r)), head))).toEqual(["4 EDITED"]);
  });

  it("names a deleted row as MISSING, one problem per gap at its first sequence", () => {
    const { rows, head } = chainOf(10);
    expect(verifyChain(CHAIN, rows.filter((r) => r.seq !== 4), head)).toEqual([
      { chain: CHAIN, seq: 4, problem: "MISSING", detail: "seq 4 is missing: the row was deleted" },
    ]);
    const ps = verifyChain(CHAIN, rows.filter((r) => r.seq < 3 || r.seq > 6 || r.seq === 5), head);
    expect(named(ps)).toEqual(["3 MISSING", "6 MISSING"]);
    expect(verifyChain(CHAIN, rows.filter((r) => r.seq < 2 || r.seq > 8), head)[0].detail).toBe("seq 2 to 8 are missing: 7 rows were deleted");
    expect(named(verifyChain(CHAIN, rows.slice(1), head))).toEqual(["1 MISSING"]);
  });

  it("names swapped rows as OUT_OF_ORDER at both sequences, and moved rows at theirs", () => {
    const { rows, head } = chainOf(8);
    // The sequence numbers stay where they are; the contents are exchanged.
    const swapped = rows.map((r) => (r.seq === 3 ? { ...rows[4], seq: 3 } : r.seq === 5 ? { ...rows[2], seq: 5 } : r));
    const ps = verifyChain(CHAIN, swapped, head);
    expect(named(ps)).toEqual(["3 OUT_OF_ORDER", "5 OUT_OF_ORDER"]);
    expect(ps[0].detail).toBe("seq 3 holds the event written as seq 5: rows were swapped or moved");
    // Rows read out of sequence order (or twice) are named too.
    expect(named(verifyChain(CHAIN, [rows[0], rows[2], rows[1], ...rows.slice(3)], head))).toContain("2 OUT_OF_ORDER");
    expect(named(verifyChain(CHAIN, [rows[0], rows[1], rows[1], ...rows.slice(2)], head))).toEqual(["2 OUT_OF_ORDER"]);
  });

  it("names the row after one rewritten with a recomputed hash as BROKEN_LINK", () => {
    const { rows, head } = chainOf(6);
    const forged = { ...rows[2], principal: "user:mallory@example.com" };
    const { hash: _, ...fields } = forged;
    forged.hash = hashAuditEvent(fields);
    const ps = verifyChain(CHAIN, rows.map((r) => (r.seq === 3 ? forged : r)), head);
    expect(named(ps)).toEqual(["4 BROKEN_LINK"]);
    expect(ps[0].detail).toContain("seq 3 was rewritten with a recomputed hash");
    // The first row must follow the genesis hash.
    const first = { ...rows[0], prevHash: "f".repeat(64) };
    first.hash = hashAuditEvent({ ...first, hash: undefined } as never);
    expect(named(verifyChain(CHAIN, [first, ...rows.slice(1)], head))).toEqual(["1 BROKEN_LINK", "2 BROKEN_LINK"]);
  });

  it("names a tail cut off behind the head table as TRUNCATED at the first missing sequence", () => {
    const { rows, head } = chainOf(9);
    expect(verifyChain(CHAIN, rows.slice(0, 6), head)).toEqual([
      { chain: CHAIN, seq: 7, problem: "TRUNCATED", detail: expect.stringContaining("rows 7 to 9 were deleted") },
    ]);
    expect(named(verifyChain(CHAIN, [], head))).toEqual(["1 TRUNCATED"]);
    // The checkpoint says the same thing: reported once.
    expect(named(verifyChain(CHAIN, rows.slice(0, 6), head, head))).toEqual(["7 TRUNCATED"]);
  });

  it("passes a tail cut off with the head table rolled back to match, unless a checkpoint is given", () => {
    const { rows } = chainOf(9);
    const rolledBack = { seq: 6, hash: rows[5].hash };
    expect(verifyChain(CHAIN, rows.slice(0, 6), rolledBack)).toEqual([]);
    expect(verifyChain(CHAIN, rows.slice(0, 6), rolledBack, { seq: 8, hash: rows[7].hash })).toEqual([
      { chain: CHAIN, seq: 7, problem: "TRUNCATED", detail: expect.stringContaining("the checkpoint has seq 8, but the chain ends at seq 6") },
    ]);
    // Everything deleted, head row too (the head then reads as genesis).
    expect(named(verifyChain(CHAIN, [], { seq: 0, hash: GENESIS_HASH }, { seq: 9, hash: rows[8].hash }))).toEqual(["1 TRUNCATED"]);
  });

  it("names a head table rolled back or edited as HEAD_MISMATCH", () => {
    const { rows, head } = chainOf(5);
    expect(named(verifyChain(CHAIN, rows, { seq: 3, hash: rows[2].hash }))).toEqual(["4 HEAD_MISMATCH"]);
    expect(named(verifyChain(CHAIN, rows, { seq: 5, hash: "b".repeat(64) }))).toEqual(["5 HEAD_MISMATCH"]);
    expect(named(verifyChain(CHAIN, rows, { seq: 0, hash: GENESIS_HASH }))).toEqual(["1 HEAD_MISMATCH"]);
    expect(verifyChain(CHAIN, rows, head)).toEqual([]);
  });

  it("names a tail rewritten consistently (hashes recomputed, head moved) only against a checkpoint, at its sequence", () => {
    const { rows } = chainOf(8);
    // From seq 5 on, different events, each correctly chained: sound by itself.
    const forged = rows.slice(0, 4);
    for (let seq = 5; seq <= 8; seq++) forged.push(event(CHAIN, seq, forged[forged.length - 1].hash, "user:mallory@example.com"));
    const forgedHead = { seq: 8, hash: forged[7].hash };
    expect(verifyChain(CHAIN, forged, forgedHead)).toEqual([]);
    expect(verifyChain(CHAIN, forged, forgedHead, { seq: 4, hash: rows[3].hash })).toEqual([]);
    expect(verifyChain(CHAIN, forged, forgedHead, { seq: 6, hash: rows[5].hash })).toEqual([
      { chain: CHAIN, seq: 6, problem: "HEAD_MISMATCH", detail: expect.stringContaining("the chain was rewritten at or before seq 6") },
    ]);
  });
});

describe("ChainVerifier", () => {
  it("verifies page by page, handing out problems as it goes, the same as verifyChain", () => {
    const { rows, head } = chainOf(5000);
    const tampered = rows
      .filter((r) => r.seq !== 1234)
      .map((r) => (r.seq === 42 ? { ...r, reason: "X" } : r.seq === 4000 ? { ...rows[4001], seq: 4000 } : r.seq === 4001 ? { ...rows[3999], seq: 4001 } : r));
    const v = new ChainVerifier(CHAIN);
    const seen: ChainProblem[] = [];
    for (let i = 0; i < tampered.length; i += 1000) {
      for (const r of tampered.slice(i, i + 1000)) v.add(r);
      seen.push(...v.drain());
    }
    seen.push(...v.finish(head));
    expect(named(seen)).toEqual(["42 EDITED", "1234 MISSING", "4000 OUT_OF_ORDER", "4001 OUT_OF_ORDER"]);
    expect(seen).toEqual(verifyChain(CHAIN, tampered, head));
    expect(v.count).toBe(4999);
  });
});

describe("parseAuditChain", () => {
  it("accepts an instance or the service chain, and names the field otherwise", () => {
    expect(parseAuditChain(CHAIN, "parent")).toBe(CHAIN);
    expect(parseAuditChain("services/certmanager", "parent")).toBe("services/certmanager");
    for (const bad of ["", "instances/nope", "services/other", `${CHAIN}/certificates/x`, "reclamations/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d"]) {
      try {
        parseAuditChain(bad, "parent");
        throw new Error(`accepted ${bad}`);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidArgumentError);
        expect((err as InvalidArgumentError).fieldViolations[0].field).toBe("parent");
      }
    }
  });
});
