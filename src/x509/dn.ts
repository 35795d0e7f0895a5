/**
 * Distinguished names as RFC 4514 strings, and the string decoding that names and general names share. We read the Name's DER ourselves rather than print @peculiar/x509's `Name.toString()`:
 * the library names attribute types with letters that are not registered LDAP descriptors (`E`, `G`, `T`),
 * prints UID as a dotted OID, escapes only the first control character and never NUL.
 *
 * Output: RDNs last-to-first joined by "," (RFC 4514 §2.1), which is what `openssl x509 -nameopt RFC2253`, Go's
 * pkix.Name.String(), Java's X500Principal.getName() and Python's Name.rfc4514_string() print, so users can
 * compare. Two known differences with openssl: the attribute-value pairs of a multi-valued RDN keep their
 * certificate (DER SET) order here, as Go, Java and Python keep them, where openssl prints them reversed
 * (§2.2 allows any order); and non-ASCII characters stay UTF-8 here (openssl escapes them as `\XX` unless
 * given `-nameopt RFC2253,-esc_msb`).
 */
import "reflect-metadata";
import type { Name } from "@peculiar/x509";
import { contentOf, derChildren, oidOf } from "./der.js";

const latin1 = (b: Uint8Array) => Buffer.from(b).toString("latin1");

/**
 * Text of an ASN.1 character string by its universal tag, or undefined when the tag is not one of `tags` or the
 * octets are not valid for it. UTF8String must be valid UTF-8, BMPString valid UCS-2/UTF-16BE, UniversalString
 * valid UTF-32BE; the single-byte types (PrintableString, IA5String, TeletexString, NumericString, VisibleString)
 * map each octet to the character of that code point, as @peculiar/x509 (asn1js) and openssl print them.
 */
export function decodeString(tag: number, content: Uint8Array, tags: readonly number[] = DN_STRING_TAGS): string | undefined {
  if (!tags.includes(tag)) return undefined;
  try {
    switch (tag) {
      case 0x0c:
        return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(content);
      case 0x1e: {
        if (content.length % 2 !== 0) return undefined;
        const swapped = Buffer.from(content);
        swapped.swap16();
        return new TextDecoder("utf-16le", { fatal: true, ignoreBOM: true }).decode(swapped);
      }
      case 0x1c: {
        if (content.length % 4 !== 0) return undefined;
        const points: number[] = [];
        for (let i = 0; i < content.length; i += 4) {
          const cp = ((content[i] << 24) | (content[i + 1] << 16) | (content[i + 2] << 8) | content[i + 3]) >>> 0;
          if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return undefined;
          points.push(cp);
        }
        return String.fromCodePoint(...points);
      }
      default:
        return latin1(content);
    }
  } catch {
    return undefined;
  }
}

/** UTF8String, PrintableString, TeletexString, IA5String, NumericString, VisibleString, BMPString, UniversalString. */
const DN_STRING_TAGS = [0x0c, 0x13, 0x14, 0x16, 0x12, 0x1a, 0x1e, 0x1c] as const;

/**
 * Attribute type names: RFC 4514 §3's table, and for other types the short names openssl prints (its
 * `-nameopt RFC2253` output; they are the LDAP descriptors of RFC 4519 and RFC 2985 but for `GN`). Any other
 * type is written as a dotted OID with a `#hex` value (§2.3, §2.4).
 */
const TYPE_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.6": "C",
  "2.5.4.9": "STREET",
  "0.9.2342.19200300.100.1.25": "DC",
  "0.9.2342.19200300.100.1.1": "UID",
  "2.5.4.4": "SN",
  "2.5.4.5": "serialNumber",
  "2.5.4.12": "title",
  "2.5.4.13": "description",
  "2.5.4.15": "businessCategory",
  "2.5.4.17": "postalCode",
  "2.5.4.18": "postOfficeBox",
  "2.5.4.20": "telephoneNumber",
  "2.5.4.41": "name",
  "2.5.4.42": "GN",
  "2.5.4.43": "initials",
  "2.5.4.44": "generationQualifier",
  "2.5.4.46": "dnQualifier",
  "2.5.4.65": "pseudonym",
  "2.5.4.97": "organizationIdentifier",
  "1.2.840.113549.1.9.1": "emailAddress",
  "1.2.840.113549.1.9.2": "unstructuredName",
  "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
  "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
  "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
};

/**
 * Escapes an attribute value per RFC 4514 §2.4: `"+,;<>\` with a backslash, a leading space or `#` and a
 * trailing space likewise, and control characters (U+0000-U+001F, U+007F; NUL is required) as `\XX`.
 */
function escapeValue(value: string): string {
  let out = "";
  const chars = [...value];
  chars.forEach((c, i) => {
    const code = c.codePointAt(0)!;
    if (code < 0x20 || code === 0x7f) out += `\\${code.toString(16).toUpperCase().padStart(2, "0")}`;
    else if ('"+,;<>\\'.includes(c) || (i === 0 && (c === " " || c === "#")) || (i === chars.length - 1 && c === " ")) out += `\\${c}`;
    else out += c;
  });
  return out;
}

/**
 * Formats a DN given as its DER (an RDNSequence) as an RFC 4514 §2 string, e.g. `CN=example.com,O=Example,C=US`.
 *
 * Multi-valued RDNs keep their `+` join (§2.2) in certificate order; values of a known type that are character
 * strings appear as escaped text (§2.4), other values, and every value of a type shown as a dotted OID, as `#`
 * followed by the lowercase hex of the value's DER.
 *
 * @returns the string; "" for an empty DN.
 * @throws Error when the DER is not a Name.
 */
export function formatDnDer(der: Uint8Array): string {
  const [seq, ...rest] = derChildren(der);
  if (!seq || seq.tag !== 0x30 || rest.length > 0) throw new Error("a Name must be one SEQUENCE");
  const rdns = derChildren(der, seq).map((set) => {
    if (set.tag !== 0x31) throw new Error("an RDN must be a SET");
    const avas = derChildren(der, set).map((ava) => {
      const parts = ava.tag === 0x30 ? derChildren(der, ava) : [];
      if (parts.length !== 2 || parts[0].tag !== 0x06) throw new Error("an attribute must be SEQUENCE { OID, value }");
      const [oidTlv, valueTlv] = parts;
      const oid = oidOf(der, oidTlv);
      const name = TYPE_NAMES[oid];
      const text = name === undefined ? undefined : decodeString(valueTlv.tag, contentOf(der, valueTlv));
      const value = text === undefined ? `#${Buffer.from(der.subarray(valueTlv.start, valueTlv.end)).toString("hex")}` : escapeValue(text);
      return `${name ?? oid}=${value}`;
    });
    if (avas.length === 0) throw new Error("an RDN must not be empty");
    return avas.join("+");
  });
  return rdns.reverse().join(",");
}

/**
 * Formats a parsed @peculiar/x509 Name as an RFC 4514 §2 string (see formatDnDer).
 * @throws Error when the library accepted a Name that is not well-formed DER.
 */
export function formatDn(name: Name): string {
  return formatDnDer(new Uint8Array(name.toArrayBuffer()));
}
