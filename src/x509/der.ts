/**
 * A small strict DER reader (X.690 §8.1, §10) for the structures we inspect ourselves (names, general names,
 * encrypted-key parameters, PEM sniffing), and names of the algorithm OIDs users meet in messages.
 */

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

/**
 * Reads the DER element at `pos` (definite length, minimal length octets, single-octet identifier).
 * @throws Error when the element is truncated, uses the indefinite form or a non-minimal length, or runs past `limit`.
 */
export function readTlv(buf: Uint8Array, pos: number, limit = buf.length): Tlv {
  if (pos + 2 > limit) throw new Error("truncated DER element");
  const tag = buf[pos];
  if ((tag & 0x1f) === 0x1f) throw new Error("multi-octet DER tags are not used here");
  let len = buf[pos + 1];
  let contentStart = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("indefinite or oversized DER length");
    if (contentStart + n > limit) throw new Error("truncated DER length");
    len = 0;
    for (let i = 0; i < n; i += 1) len = len * 256 + buf[contentStart + i];
    if (buf[contentStart] === 0 || len < 0x80) throw new Error("non-minimal DER length");
    contentStart += n;
  }
  const end = contentStart + len;
  if (end > limit) throw new Error("DER element runs past its container");
  return { tag, start: pos, contentStart, end };
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

