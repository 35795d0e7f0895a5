/**
 * PEM text <-> DER (RFC 7468). Users paste whatever their tools printed: CRLF line endings, indentation,
 * `Bag Attributes` / `subject=` lines from `openssl pkcs12`, single-line pastes from web forms. We accept all
 * of that around and inside the blocks (RFC 7468 §3 "lax" parsing), and always write the strict form.
 */
import { InvalidArgumentError } from "../domain/errors.js";

/** One decoded PEM block. */
export interface PemBlock {
  /** The label between `BEGIN ` and the dashes, e.g. `CERTIFICATE`, `EC PRIVATE KEY`. */
  label: string;
  /** The decoded base64 body (RFC 7468 §2: the DER encoding of the labelled structure). */
  der: Buffer;
  /** The block re-encoded strictly (RFC 7468 §2 "stricttextualmsg"): 64-column base64, LF, no headers. */
  pem: string;
  /**
   * RFC 1421 encapsulated headers (`Proc-Type`, `DEK-Info`) found before the body. RFC 7468 forbids them,
   * but OpenSSL's legacy encrypted keys carry them, and that is how we recognise those keys. Usually empty.
   */
  headers: Record<string, string>;
}

/** Where to report a malformed PEM: the request field and the reason (defaults suit callers outside imports). */
export interface PemErrorContext {
  field: string;
  reason: string;
}

/** Default for {@link splitPemBlocks} callers that do not parse a request field. */
const DEFAULT_CONTEXT: PemErrorContext = { field: "pem", reason: "INVALID_PEM" };

/**
 * Encapsulation boundary (RFC 7468 §2): five dashes, BEGIN or END, a label of printable characters with
 * single inner spaces or hyphens, five dashes. Boundaries are found on their own (not a whole-block regex with
 * a lazy body and a back-reference) so that text with many BEGIN lines is scanned in linear time.
 */
const BOUNDARY = /-----(BEGIN|END) ([\x21-\x2C\x2E-\x7E]+(?:[ -][\x21-\x2C\x2E-\x7E]+)*)-----/g;

/** RFC 4648 §4 alphabet with padding; whitespace is removed before this check (RFC 7468 §3 allows it anywhere). */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** First line of an RFC 1421 header section: `Name: value`. Base64 never contains a colon, so this is unambiguous. */
const HEADER_LINE = /^([A-Za-z0-9-]+):\s*(.*)$/;

/**
 * Encodes DER as one strict PEM block (RFC 7468 §2): `-----BEGIN label-----`, base64 in lines of exactly 64
 * characters (the last may be shorter), `-----END label-----`, each line ended by LF, including the last.
 *
 * @param label - PEM label, e.g. `CERTIFICATE` or `PRIVATE KEY` (RFC 7468 §5, §10).
 * @param der - the bytes to encode.
 * @returns the PEM text; never throws.
 */
export function pemEncode(label: string, der: Buffer): string {
  const b64 = der.toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join("\n")}${lines.length > 0 ? "\n" : ""}-----END ${label}-----\n`;
}

/**
 * True when bytes sent in a binary field are PEM text (optionally after whitespace and a UTF-8 byte-order mark),
 * to be read as PEM. The one test every binary field uses, so no field can be read one way and checked another.
 */
export function looksLikePemText(bytes: Buffer): boolean {
  return /^\s*(\xEF\xBB\xBF)?-----BEGIN /.test(bytes.toString("latin1"));
}

/**
 * Undoes two common copy-paste accidents before parsing: a UTF-8 byte-order mark at the start (Windows
 * editors), and line breaks written as the two characters backslash-n (PEM stored in JSON or environment
 * variables and pasted unescaped). Only applied when the text has no real line break, so a real PEM with a
 * literal "\n" in a comment line is left alone.
 */
export function normalizePemText(text: string): string {
  let t = text.replace(/^\uFEFF/, "");
  if (!/[\r\n]/.test(t) && t.includes("\\n")) t = t.replace(/\\r\\n|\\n/g, "\n");
  return t;
}

/**
 * Finds every PEM block in free text, in order, and decodes it (RFC 7468 §2–§3).
 *
 * Text outside blocks is ignored (RFC 7468 §2 "explanatory text"), line endings may be LF, CRLF or CR, and
 * whitespace inside the base64 is ignored (RFC 7468 §3 lax parsing). RFC 1421 headers are returned in
 * `headers`, not decoded.
 *
 * @param input - user-supplied text; "" gives []. A leading byte-order mark and "\\n" written as two
 *   characters are undone first (normalizePemText).
 * @param context - request field and reason to report errors under (default field `pem`, reason `INVALID_PEM`).
 * @returns the blocks in input order; `pem` is each block in strict form.
 * @throws InvalidArgumentError(context.reason, context.field) when a BEGIN line has no matching END line (a
 *   truncated paste), an END line has no BEGIN, the END label differs from the BEGIN label (RFC 7468 §2 requires
 *   them equal), or a body is not valid padded base64 (RFC 4648 §4) or is empty.
 */
export function splitPemBlocks(input: string, context: PemErrorContext = DEFAULT_CONTEXT): PemBlock[] {
  const text = normalizePemText(input);
  const fail = (message: string) => new InvalidArgumentError(context.reason, context.field, `${context.field}: ${message}`);
  const blocks: PemBlock[] = [];
  let open: { label: string; bodyStart: number } | undefined;
  let index = 0;
  for (const m of text.matchAll(BOUNDARY)) {
    const [whole, kind, label] = m;
    if (kind === "BEGIN") {
      if (open) {
        throw fail(
          `the "${open.label}" PEM block has no "-----END ${open.label}-----" line before the next BEGIN line; the text looks truncated, paste the whole block`,
        );
      }
      open = { label, bodyStart: m.index + whole.length };
      continue;
    }
    if (!open) {
      throw fail(`found "-----END ${label}-----" without a matching BEGIN line; paste the whole PEM block`);
    }
    if (label !== open.label) {
      throw fail(
        `a PEM block starts with "BEGIN ${open.label}" but ends with "END ${label}"; the labels must match, paste the block unchanged`,
      );
    }
    index += 1;
    blocks.push(decodeBody(open.label, text.slice(open.bodyStart, m.index), index, fail));
    open = undefined;
  }
  if (open) {
    throw fail(
      `the "${open.label}" PEM block has no "-----END ${open.label}-----" line; the text looks truncated, paste the whole block`,
    );
  }
  return blocks;
}

/** Splits optional RFC 1421 headers from the base64 body and decodes it. */
function decodeBody(label: string, body: string, position: number, fail: (m: string) => InvalidArgumentError): PemBlock {
  const lines = body.split(/\r\n|\r|\n/);
  const headers: Record<string, string> = {};
  let start = 0;
  while (start < lines.length && lines[start].trim() === "") start += 1;
  if (start < lines.length && HEADER_LINE.test(lines[start].trim())) {
    // RFC 1421 §4.4: headers, possibly folded onto lines starting with whitespace, end at an empty line.
    let last: string | undefined;
    for (; start < lines.length && lines[start].trim() !== ""; start += 1) {
      const line = lines[start];
      const h = HEADER_LINE.exec(line.trim());
      if (h && !/^\s/.test(line)) {
        last = h[1];
        headers[last] = h[2].trim();
      } else if (last !== undefined) {
        headers[last] = `${headers[last]} ${line.trim()}`;
      }
    }
  }
  const b64 = lines.slice(start).join("").replace(/\s+/g, "");
  if (b64 === "" || !BASE64.test(b64)) {
    throw fail(
      `PEM block ${position} ("${label}") does not contain valid base64 data; paste the block exactly as your tool wrote it`,
    );
  }
  const der = Buffer.from(b64, "base64");
  return { label, der, pem: pemEncode(label, der), headers };
}
