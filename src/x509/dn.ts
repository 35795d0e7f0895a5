/**
 * Distinguished names as RFC 4514 strings. @peculiar/x509 escapes attribute values as RFC 4514 §2.4 asks but
 * lists the RDNs in certificate (ASN.1) order joined by ", "; RFC 4514 §2.1 lists them last-to-first joined by
 * ",". We keep the library's escaping and only reverse the order, which is what `openssl x509 -nameopt RFC2253`,
 * Go's pkix.Name.String() and Java's X500Principal.getName() print, so users can compare.
 */
import "reflect-metadata";
import type { Name } from "@peculiar/x509";

/**
 * Formats a DN as an RFC 4514 §2 string, e.g. `CN=example.com,O=Example,C=US`.
 *
 * Multi-valued RDNs keep their `+` join (§2.2); values are escaped per §2.4 (by @peculiar/x509); types without a
 * well-known short name appear as dotted OIDs (§2.3), and values that are not strings as `#hex` (§2.4).
 *
 * @param name - a parsed @peculiar/x509 Name.
 * @returns the string; "" for an empty DN. Never throws for a Name the library could parse.
 */
export function formatDn(name: Name): string {
  return splitRdns(name.toString()).reverse().join(",");
}

/**
 * Splits the library's `A=1, B=2+C=3` output at the RDN separators. Inside values every `,` is escaped as `\,`
 * (RFC 4514 §2.4), so an unescaped comma can only be a separator; a backslash always escapes the next character.
 */
function splitRdns(text: string): string[] {
  if (text === "") return [];
  const rdns: string[] = [];
  let start = 0;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (c === "\\") {
      i += 1;
    } else if (c === ",") {
      rdns.push(text.slice(start, i));
      start = text[i + 1] === " " ? i + 2 : i + 1;
      i = start - 1;
    }
  }
  rdns.push(text.slice(start));
  return rdns;
}
