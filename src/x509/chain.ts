/**
 * Puts user-supplied intermediates in issuing order (RFC 5246 §7.4.2 / RFC 8446 §4.4.2: each certificate is
 * certified by the one that follows it), which is what TLS servers send. Users paste bundles in any order, so
 * we build the order ourselves, and refuse certificates that do not belong: a stray certificate would be sent
 * to every client.
 */
import { InvalidArgumentError } from "../domain/errors.js";
import { issuedBy, namesIssuer, verifiesSignatures, type ParsedCertificate } from "./certificate.js";
import { X509Reason } from "./reasons.js";

/** An intermediate, the request field it came from, and its 1-based position among that field's certificates. */
export interface NumberedCertificate {
  cert: ParsedCertificate;
  field: string;
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
 * @throws InvalidArgumentError INTERMEDIATE_NOT_IN_CHAIN (the certificate's field) naming, by subject and position,
 *   the first intermediate that no ordering can link to the leaf, and the gap: the issuer name of the last
 *   certificate that does link (metadata `missingIssuer`), unless that one is a self-signed root;
 *   SIGNATURE_INVALID (the other certificate's field) when a certificate sent has that missing issuer's name but
 *   its key does not verify the signature, naming both certificates by subject and SHA-256 fingerprint.
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
    const more = unlinked.length > 1 ? ` (${unlinked.length - 1} more certificate(s) have the same problem)` : "";
    // Where the linked part of the chain stops: its last certificate's issuer is the gap, unless it is a root.
    const top = best.length === 0 ? leaf : intermediates[best[best.length - 1]].cert;
    const gap = top.issuer !== top.subject || !issuedBy(top, top);
    // A certificate that has the gap's name and a key we verify with, but that key does not verify the signature:
    // say that, not "missing". (With a key we never verify with, DSA or a huge RSA exponent, nothing was checked.)
    const impostor = gap ? unlinked.find((c) => namesIssuer(top, c.cert) && verifiesSignatures(c.cert)) : undefined;
    if (impostor) throw signatureInvalid(top, impostor);
    const where = `${first.field}: certificate ${first.position} (subject "${first.cert.subject}")`;
    const message = gap
      ? `${where} does not link to the certificate: the chain stops at "${top.subject}", whose issuer "${top.issuer}" is missing; ` +
        `add the certificate of "${top.issuer}"${more}, or remove the certificates that do not belong`
      : `${where} is not part of the certificate's chain: the chain already ends at the root "${top.subject}" and ` +
        `this certificate issued none of its certificates (issuer name and signature were checked)${more}; remove it`;
    throw new InvalidArgumentError(X509Reason.INTERMEDIATE_NOT_IN_CHAIN, first.field, message, {
      metadata: { position: String(first.position), subject: first.cert.subject, ...(gap ? { missingIssuer: top.issuer } : {}) },
    });
  }
  return best.map((i) => intermediates[i]);
}

/**
 * The refusal of a chain whose certificate `child` names `candidate` as its issuer (issuer name = subject name) but
 * whose signature does not verify with `candidate`'s public key: a CA of the same name with another key (re-keyed,
 * or a different CA altogether), which a "missing issuer" answer would misdiagnose.
 */
function signatureInvalid(child: ParsedCertificate, candidate: NumberedCertificate): InvalidArgumentError {
  const c = candidate.cert;
  return new InvalidArgumentError(
    X509Reason.SIGNATURE_INVALID,
    candidate.field,
    `${candidate.field}: certificate ${candidate.position} (subject "${c.subject}", SHA-256 ${c.sha256}) has the issuer name of ` +
      `"${child.subject}" (SHA-256 ${child.sha256}), but that certificate's signature does not verify with its public key: ` +
      "it is a different CA with the same name (for example re-keyed); send the CA certificate that signed it",
    {
      metadata: {
        position: String(candidate.position),
        subject: child.subject,
        sha256_fingerprint: child.sha256,
        issuer_subject: c.subject,
        issuer_sha256_fingerprint: c.sha256,
      },
    },
  );
}

/**
 * Picks the leaf among several certificates pasted together (a full chain in the `certificate` field, or the
 * contents of a PKCS#12 file): the one whose public key is the private key's when a key is given, else the only
 * one that issued none of the others (RFC 5280 §6.1: the end of the path).
 *
 * @param certs - distinct certificates (at least one).
 * @param matchesKey - tells whether a certificate belongs to the private key; undefined without a key.
 * @returns the index of the leaf in `certs`.
 * @throws InvalidArgumentError PRIVATE_KEY_MISMATCH (field `keyField`) when a key is given and no certificate
 *   matches it; MULTIPLE_CERTIFICATES (field `field`) when, without a key, zero or several certificates issued
 *   none of the others, naming them.
 */
export function selectLeaf(
  certs: NumberedCertificate[],
  matchesKey: ((c: ParsedCertificate) => boolean) | undefined,
  field: string,
  keyField: string,
): number {
  if (certs.length === 1 && matchesKey === undefined) return 0;
  if (matchesKey) {
    const i = certs.findIndex((c) => matchesKey(c.cert));
    if (i >= 0) return i;
    throw new InvalidArgumentError(
      X509Reason.PRIVATE_KEY_MISMATCH,
      keyField,
      `${keyField}: the private key belongs to none of the ${certs.length} certificate(s) in ${field}; supply the key the certificate was issued for ` +
        "(compare `openssl x509 -noout -pubkey -in cert.pem` with `openssl pkey -pubout -in key.pem`)",
    );
  }
  const issuedOthers = certs.map((c, i) => certs.some((o, j) => j !== i && issuedBy(o.cert, c.cert)));
  const ends = certs.filter((_, i) => !issuedOthers[i]);
  if (ends.length === 1) return certs.indexOf(ends[0]);
  const names = (ends.length > 0 ? ends : certs).map((c) => `"${c.cert.subject}"`).join(", ");
  throw new InvalidArgumentError(
    X509Reason.MULTIPLE_CERTIFICATES,
    field,
    `${field}: found ${certs.length} certificates and cannot tell which one is the server (leaf) certificate: ${ends.length} of them (${names}) issued none of the others; ` +
      "put only the leaf certificate here and its CA certificates in intermediates, or send the private key so the leaf can be recognised",
    { metadata: { count: String(certs.length) } },
  );
}
