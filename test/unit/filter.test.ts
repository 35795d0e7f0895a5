/** The ListCertificates filter and order_by grammar (AIP-160 subset, AIP-132). */
import { describe, expect, it } from "vitest";
import { DomainError } from "../../src/domain/errors.js";
import { parseCertificateFilter, parseCertificateOrderBy } from "../../src/services/filter.js";

const reasonOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    if (err instanceof DomainError) return `${err.reason}:${err.fieldViolations[0]?.field}`;
    throw err;
  }
  throw new Error("expected a refusal");
};

describe("parseCertificateFilter", () => {
  it("parses every supported comparison joined by AND", () => {
    const f = parseCertificateFilter(`not_after < "2027-01-01T00:00:00Z" AND not_after >= "2026-01-01T00:00:00+02:00" AND not_before > "2020-05-05T10:00:00.5Z" AND domain = "WWW.Example.com." AND key_algorithm = EC`);
    expect(f.notAfter).toEqual([
      { op: "<", value: new Date(Date.UTC(2027, 0, 1)) },
      { op: ">=", value: new Date(Date.UTC(2025, 11, 31, 22)) },
    ]);
    expect(f.notBefore).toEqual([{ op: ">", value: new Date(Date.UTC(2020, 4, 5, 10, 0, 0, 500)) }]);
    expect(f.domainForms).toEqual(["www.example.com", "*.example.com"]);
    expect(f.keyAlgorithm).toBe("EC");
  });

  it("matches a wildcard only exactly when the filter itself is a wildcard", () => {
    expect(parseCertificateFilter(`domain = "*.example.com"`).domainForms).toEqual(["*.example.com"]);
    expect(parseCertificateFilter(`domain = "localhost"`).domainForms).toEqual(["localhost"]);
  });

  it("accepts the proto enum spelling of key algorithms and an empty filter", () => {
    expect(parseCertificateFilter(`key_algorithm = KEY_ALGORITHM_ED25519`).keyAlgorithm).toBe("ED25519");
    expect(parseCertificateFilter("")).toEqual({});
    expect(parseCertificateFilter("   ")).toEqual({});
  });

  it.each([
    [`not_after = "2027-01-01T00:00:00Z"`],
    [`not_after < "2027-01-01"`],
    [`not_after < 2027`],
    [`domain < "a.example"`],
    [`domain = "bad host!"`],
    [`key_algorithm = DSA`],
    [`subject = "x"`],
    [`domain = "a.example" OR key_algorithm = EC`],
    [`domain = "a.example" AND`],
    [`domain = "a.example" domain = "b.example"`],
    [`domain = "a.example" AND domain = "b.example"`],
    [`not_after < "2027-01-01T00:00:00Z`],
    [`not_after < "2027-02-30T00:00:00Z"`],
    [`not_after < "2027-13-01T00:00:00Z"`],
    [`not_after < "2027-01-01T24:00:00Z"`],
    [`domain = "\\q"`],
    [`domain = "\\u12"`],
    [`domain = "a	b"`],
    [`x`.repeat(1025)],
  ])("refuses %s with INVALID_FILTER on field filter", (text) => {
    expect(reasonOf(() => parseCertificateFilter(text))).toBe("INVALID_FILTER:filter");
  });
});

describe("parseCertificateOrderBy", () => {
  it("parses fields and directions", () => {
    expect(parseCertificateOrderBy("")).toEqual({ field: "create_time", descending: false });
    expect(parseCertificateOrderBy("not_after desc")).toEqual({ field: "not_after", descending: true });
    expect(parseCertificateOrderBy(" display_name  asc ")).toEqual({ field: "display_name", descending: false });
  });
  it.each([["subject"], ["not_after down"], ["not_after desc, display_name"]])("refuses %s", (text) => {
    expect(reasonOf(() => parseCertificateOrderBy(text))).toBe("INVALID_ORDER_BY:order_by");
  });
});
