/**
 * Puts user-supplied intermediates in issuing order (RFC 5246 §7.4.2 / RFC 8446 §4.4.2: each certificate is
 * certified by the one that follows it), which is what TLS servers send. Users paste bundles in any order, so
 * we build the order ourselves, and refuse certificates that do not belong: a stray certificate would be sent
 * to every client.
 */
import { InvalidArgumentError } from "../domain/errors.js";
import { issuedBy, type ParsedCertificate } from "./certificate.js";
import { X509Reason } from "./reasons.js";

/** An intermediate and its 1-based position among the certificates of the `intermediates` field. */
export interface NumberedCertificate {
  cert: ParsedCertificate;
  position: number;
}

/**
 * Most search steps when several intermediates could have issued the same certificate (cross-signed CAs,
 * re-issued CAs). Real bundles need a handful; the cap bounds hostile input (20 mutually issuing certificates).
 */
const SEARCH_BUDGET = 10_000;

/**
 * Orders the intermediates so that the first issued the leaf and each next one issued the previous.
 *
 * Starting at the leaf, it repeatedly follows an intermediate that issued the current certificate (issuer name
 * and signature, RFC 5280 §6.1.3 (a)); where several qualify it tries them in input order and keeps the first
 * order that uses every intermediate (depth-first, bounded by SEARCH_BUDGET).
 *
 * @param leaf - the end-entity certificate.
 * @param intermediates - distinct certificates (no duplicates, no copy of the leaf), in input order.
 * @returns the same certificates in issuing order.
 * @throws InvalidArgumentError INTERMEDIATE_NOT_IN_CHAIN (field `intermediates`) naming, by subject and position,
 *   the first intermediate that no ordering can link to the leaf.
 */
export function orderIntermediates(leaf: ParsedCertificate, intermediates: NumberedCertificate[]): NumberedCertificate[] {
  const n = intermediates.length;
  if (n === 0) return [];
  // issuers[i]: indexes of intermediates that issued node i (node n is the leaf). Signature checks run once.
  const issuers: number[][] = [];
  for (let i = 0; i <= n; i += 1) {
    const child = i === n ? leaf : intermediates[i].cert;
    const found: number[] = [];
    for (let j = 0; j < n; j += 1) {
      if (j !== i && issuedBy(child, intermediates[j].cert)) found.push(j);
    }
    issuers.push(found);
  }

  let best: number[] = [];
  let steps = 0;
  const path: number[] = [];
  const used = new Array<boolean>(n).fill(false);
  const search = (current: number): boolean => {
    if (path.length > best.length) best = [...path];
    if (path.length === n) return true;
    for (const next of issuers[current]) {
      if (used[next]) continue;
      if (++steps > SEARCH_BUDGET) return false;
      used[next] = true;
      path.push(next);
      if (search(next)) return true;
      path.pop();
      used[next] = false;
    }
    return false;
  };
  search(n);

  if (best.length < n) {
    const inChain = new Set(best);
    const unlinked = intermediates.filter((_, i) => !inChain.has(i));
    const first = unlinked[0];
    const more = unlinked.length > 1 ? ` (${unlinked.length - 1} more intermediate(s) have the same problem)` : "";
    throw new InvalidArgumentError(
      X509Reason.INTERMEDIATE_NOT_IN_CHAIN,
      "intermediates",
      `intermediates: certificate ${first.position} (subject "${first.cert.subject}") is not part of the certificate's chain: ` +
        `it did not issue the certificate nor any other intermediate linked to it (issuer name and signature were checked)${more}; ` +
        "remove it, or add the missing intermediate that connects it",
      { metadata: { position: String(first.position), subject: first.cert.subject } },
    );
  }
  return best.map((i) => intermediates[i]);
}
