/**
 * The one DER reader of src/x509 (X.690 §8.1, §10): strict for the structures we inspect ourselves (names, general
 * names, key and encrypted-key parameters), lenient for sniffing what a file is before a library reads it; and
 * names of the algorithm OIDs users meet in messages.
 */

/** Identifier octets (X.690 §8.1.2) of the universal types read here (X.680 §8.4), and of a constructed [0]. */
export const TAG = { INTEGER: 0x02, BIT_STRING: 0x03, OCTET_STRING: 0x04, OID: 0x06, SEQUENCE: 0x30, EXPLICIT_0: 0xa0 } as const;

/** One DER element: its identifier octet and where its contents lie in the buffer. */
export interface Tlv {
  /** The identifier octet (class, constructed bit and tag number 0-30). */
  tag: number;
  /** Offset of the identifier octet. */
  start: number;
  /** Offset of the first content octet. */
  contentStart: number;
  /** Offset just past the last content octet. */
  end: number;
}

/** An element read by {@link sniffTlv}: `end` is undefined for the indefinite form (X.690 §8.1.3.6). */
export type SniffedTlv = Omit<Tlv, "end"> & { end: number | undefined };

/** The identifier and length octets at `pos` (length undefined: indefinite form), or why they cannot be read. */
function readHeader(buf: Uint8Array, pos: number, limit: number): { tag: number; contentStart: number; length?: number; minimal: boolean } | string {
  if (pos + 2 > limit) return "truncated DER element";
  const tag = buf[pos];
  if ((tag & 0x1f) === 0x1f) return "multi-octet DER tags are not used here";
  const first = buf[pos + 1];
  if (first < 0x80) return { tag, contentStart: pos + 2, length: first, minimal: true };
  const n = first & 0x7f;
  if (n === 0) return { tag, contentStart: pos + 2, minimal: false };
  if (n > 4) return "indefinite or oversized DER length";
  if (pos + 2 + n > limit) return "truncated DER length";
  let length = 0;
  for (let i = 0; i < n; i += 1) length = length * 256 + buf[pos + 2 + i];
  return { tag, contentStart: pos + 2 + n, length, minimal: buf[pos + 2] !== 0 && length >= 0x80 };
}

/**
 * Reads the DER element at `pos` (definite length, minimal length octets, single-octet identifier).
 * @throws Error when the element is truncated, uses the indefinite form or a non-minimal length, or runs past `limit`.
 */
export function readTlv(buf: Uint8Array, pos: number, limit = buf.length): Tlv {
  const h = readHeader(buf, pos, limit);
  if (typeof h === "string") throw new Error(h);
  if (h.length === undefined) throw new Error("indefinite or oversized DER length");
  if (!h.minimal) throw new Error("non-minimal DER length");
  const end = h.contentStart + h.length;
  if (end > limit) throw new Error("DER element runs past its container");
  return { tag: h.tag, start: pos, contentStart: h.contentStart, end };
}

/**
 * Reads the element at `pos` as BER, to tell what a file is: the indefinite form (constructed elements only) and
 * non-minimal lengths pass, and contents running past `limit` are cut there, so a truncated file is still
 * recognised (its decoder then reports the damage). undefined when the identifier or length octets are unreadable.
 */
export function sniffTlv(buf: Uint8Array, pos: number, limit = buf.length): SniffedTlv | undefined {
  const h = readHeader(buf, pos, limit);
  if (typeof h === "string" || (h.length === undefined && !(h.tag & 0x20))) return undefined;
  return { tag: h.tag, start: pos, contentStart: h.contentStart, end: h.length === undefined ? undefined : Math.min(h.contentStart + h.length, limit) };
}

/** The elements directly inside a constructed element (or a whole buffer when `parent` is undefined). */
export function derChildren(buf: Uint8Array, parent?: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let pos = parent ? parent.contentStart : 0;
  const limit = parent ? parent.end : buf.length;
  while (pos < limit) {
    const tlv = readTlv(buf, pos, limit);
    out.push(tlv);
    pos = tlv.end;
  }
  return out;
}

/** The first `max` elements inside `parent`, read with {@link sniffTlv}; stops at an unreadable or indefinite one. */
export function sniffChildren(buf: Uint8Array, parent: SniffedTlv, max: number): SniffedTlv[] {
  const out: SniffedTlv[] = [];
  const limit = parent.end ?? buf.length;
  let pos: number | undefined = parent.contentStart;
  while (out.length < max && pos !== undefined && pos < limit) {
    const child = sniffTlv(buf, pos, limit);
    if (child === undefined) break;
    out.push(child);
    pos = child.end;
  }
  return out;
}

/** The content octets of an element, as a Buffer over the same memory. */
export function contentOf(buf: Uint8Array, tlv: { contentStart: number; end: number | undefined }): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset + tlv.contentStart, (tlv.end ?? buf.length) - tlv.contentStart);
}

/**
 * An unsigned INTEGER's content octets (X.690 §8.3) as a count: Infinity when negative (top bit set), empty or
 * above 2^53, so that every cap refuses it.
 */
export function countOf(content: Uint8Array): number {
  if (content.length === 0 || content[0] >= 0x80) return Infinity;
  let n = 0;
  for (const b of content) n = n * 256 + b;
  return Number.isSafeInteger(n) ? n : Infinity;
}

/** Big-endian unsigned octets (an INTEGER's contents, an EC scalar, a JWK member) as a BigInt; 0n when empty. */
export function unsignedOf(bytes: Uint8Array): bigint {
  return BigInt(`0x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex") || "0"}`);
}

/**
 * Dotted form of an OBJECT IDENTIFIER's content octets (X.690 §8.19). Arcs are read as BigInt: UUID-based OIDs
 * (`2.25.<128-bit>`) exceed 2^53.
 * @throws Error when the encoding is empty, truncated or not minimal.
 */
export function decodeOid(content: Uint8Array): string {
  if (content.length === 0) throw new Error("empty OBJECT IDENTIFIER");
  const arcs: bigint[] = [];
  let value = 0n;
  let start = true;
  for (const byte of content) {
    if (start && byte === 0x80) throw new Error("non-minimal OBJECT IDENTIFIER arc");
    value = (value << 7n) | BigInt(byte & 0x7f);
    start = (byte & 0x80) === 0;
    if (start) {
      arcs.push(value);
      value = 0n;
    }
  }
  if (!start) throw new Error("truncated OBJECT IDENTIFIER");
  const first = arcs[0] < 40n ? 0n : arcs[0] < 80n ? 1n : 2n;
  return [first, arcs[0] - first * 40n, ...arcs.slice(1)].join(".");
}

/** Dotted form of the OBJECT IDENTIFIER element `tlv` of `buf` (its tag is not checked). */
export function oidOf(buf: Uint8Array, tlv: Tlv): string {
  return decodeOid(contentOf(buf, tlv));
}

/** Names of algorithm and structure OIDs met in PKCS#12 files and encrypted keys, for messages (others are shown as the bare OID). */
const OID_NAMES: Record<string, string> = {
  "1.2.392.200011.61.1.1.1.2": "Camellia-128-CBC",
  "1.2.392.200011.61.1.1.1.3": "Camellia-192-CBC",
  "1.2.392.200011.61.1.1.1.4": "Camellia-256-CBC",
  "1.2.410.200046.1.1.2": "ARIA-128-CBC",
  "1.2.410.200046.1.1.7": "ARIA-192-CBC",
  "1.2.410.200046.1.1.12": "ARIA-256-CBC",
  "1.2.156.10197.1.104.2": "SM4-CBC",
  "2.16.840.1.101.3.4.1.6": "AES-128-GCM",
  "2.16.840.1.101.3.4.1.26": "AES-192-GCM",
  "2.16.840.1.101.3.4.1.46": "AES-256-GCM",
  "1.2.840.113549.3.2": "RC2-CBC",
  "1.3.14.3.2.7": "DES-CBC",
  "1.2.840.113549.3.4": "RC4",
  "2.16.840.1.101.3.4.1.2": "AES-128-CBC",
  "2.16.840.1.101.3.4.1.22": "AES-192-CBC",
  "2.16.840.1.101.3.4.1.42": "AES-256-CBC",
  "1.2.840.113549.3.7": "DES-EDE3-CBC",
  "1.2.840.113549.2.7": "hmacWithSHA1",
  "1.2.840.113549.2.8": "hmacWithSHA224",
  "1.2.840.113549.2.9": "hmacWithSHA256",
  "1.2.840.113549.2.10": "hmacWithSHA384",
  "1.2.840.113549.2.11": "hmacWithSHA512",
  "1.2.840.113549.2.12": "hmacWithSHA512-224",
  "1.2.840.113549.2.13": "hmacWithSHA512-256",
  "2.16.840.1.101.3.4.2.13": "hmacWithSHA3-224",
  "2.16.840.1.101.3.4.2.14": "hmacWithSHA3-256",
  "2.16.840.1.101.3.4.2.15": "hmacWithSHA3-384",
  "2.16.840.1.101.3.4.2.16": "hmacWithSHA3-512",
  "2.16.840.1.101.3.4.2.4": "SHA-224",
  "2.16.840.1.101.3.4.2.5": "SHA-512/224",
  "2.16.840.1.101.3.4.2.6": "SHA-512/256",
  "2.16.840.1.101.3.4.2.7": "SHA3-224",
  "2.16.840.1.101.3.4.2.8": "SHA3-256",
  "2.16.840.1.101.3.4.2.9": "SHA3-384",
  "2.16.840.1.101.3.4.2.10": "SHA3-512",
  "1.2.156.10197.1.401": "SM3",
  "1.2.840.113549.1.5.12": "PBKDF2",
  "1.2.840.113549.1.5.13": "PBES2",
  "1.2.840.113549.1.5.14": "PBMAC1",
  "1.3.6.1.4.1.11591.4.11": "scrypt",
  "1.2.840.113549.1.5.1": "pbeWithMD2AndDES-CBC",
  "1.2.840.113549.1.5.3": "pbeWithMD5AndDES-CBC",
  "1.2.840.113549.1.5.4": "pbeWithMD2AndRC2-CBC",
  "1.2.840.113549.1.5.6": "pbeWithMD5AndRC2-CBC",
  "1.2.840.113549.1.5.10": "pbeWithSHA1AndDES-CBC",
  "1.2.840.113549.1.5.11": "pbeWithSHA1AndRC2-CBC",
  "1.2.840.113549.1.12.1.1": "pbeWithSHAAnd128BitRC4",
  "1.2.840.113549.1.12.1.2": "pbeWithSHAAnd40BitRC4",
  "1.2.840.113549.1.12.1.3": "pbeWithSHAAnd3-KeyTripleDES-CBC",
  "1.2.840.113549.1.12.1.4": "pbeWithSHAAnd2-KeyTripleDES-CBC",
  "1.2.840.113549.1.12.1.5": "pbeWithSHAAnd128BitRC2-CBC",
  "1.2.840.113549.1.12.1.6": "pbeWithSHAAnd40BitRC2-CBC",
  "1.2.840.113549.1.7.2": "signedData",
  "1.2.840.113549.1.7.3": "envelopedData",
  "1.2.840.113549.1.12.10.1.4": "crlBag",
  "1.2.840.113549.1.12.10.1.5": "secretBag",
  "1.2.840.113549.1.12.10.1.6": "safeContentsBag",
  "1.2.840.113549.1.9.22.2": "sdsiCertificate",
};

/**
 * A readable name for an algorithm OID in messages, e.g. `DES-CBC (OID 1.3.14.3.2.7)`; the bare OID when unknown.
 */
export function describeOid(oid: string | undefined): string {
  if (oid === undefined || oid === "") return "an algorithm";
  const name = OID_NAMES[oid];
  return name === undefined ? `OID ${oid}` : `${name} (OID ${oid})`;
}

