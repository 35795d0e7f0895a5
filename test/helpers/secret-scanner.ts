/**
 * Finds secrets in log text (issue 11: no PEM body, key, token, API key or PIN in any log line or error). Two
 * kinds of evidence:
 *
 * - generic shapes: PEM blocks, private-key DER in base64 or hex, JWS/JWE compact forms, our API keys,
 *   `authorization`/`bearer` values, secret-named JSON fields, and long high-entropy base64 or hex runs. What the
 *   service logs on purpose is not flagged: UUIDs (call ids, resource names), 64- and 40-hex fingerprints,
 *   16-character etags, ISO times, method paths, stack frames.
 * - known secrets the tests planted (passphrases, PINs, keys, API key secrets): the value itself, JSON-escaped,
 *   and its bytes in base64, base64url and hex (lower and upper), at any byte alignment inside a longer
 *   encoding; for a PEM private key also its DER body. A long one is also found in part (any 64 characters of
 *   a form). They are also searched in the text with whitespace and JSON `\n` escapes removed, so a PEM body
 *   split over lines (or logged in a JSON string) is still found.
 *
 * Findings never carry a secret: an excerpt is the first 6 characters and an ellipsis.
 */

/** One suspected secret. */
export interface Finding {
  /** 1-based line number in the scanned text. */
  line: number;
  /** What was found, e.g. `pem`, `jwt`, `api-key`, `known-secret (hex)`. */
  kind: string;
  /** The first 6 characters of the match and "…": enough to find it, not enough to leak it. */
  excerpt: string;
}

/** Known secrets shorter than this are refused: they would match by chance. */
const MIN_KNOWN_SECRET = 6;

interface Pattern {
  kind: string;
  re: RegExp;
  /** Further check on the match; the match is a finding when it returns true. */
  accept?: (m: string) => boolean;
}

/** Generic shapes, most specific first: a later pattern's match inside an earlier finding is not reported again. */
const PATTERNS: Pattern[] = [
  // The whole block when its END is on the same line (JSON escapes the newlines), so its body is one finding.
  { kind: "pem", re: /-----BEGIN ([A-Z0-9 ]{1,60})-----(?:[^]*?-----END \1-----)?/g },
  { kind: "api-key", re: /cmk_[a-z0-9]{16}_[A-Za-z0-9_-]{8,}/g },
  // JWS (three parts) and JWE (five) compact forms: a base64url JSON header `{"...` is `eyJ`.
  { kind: "jwt", re: /eyJ[A-Za-z0-9_-]{6,}(?:\.[A-Za-z0-9_-]*){2}(?:(?:\.[A-Za-z0-9_-]*){2})?/g },
  // DER SEQUENCE with a long length form, base64: what a private key (PKCS#8, PKCS#1, SEC1) or certificate starts with.
  { kind: "der-base64", re: /MI[IHG][A-Za-z0-9+/]{60,}={0,2}/g },
  // DER in hex: a SEQUENCE then INTEGER 0 or 1, the version every private-key structure starts with.
  { kind: "der-hex", re: /(?<![0-9a-fA-F])30(?:8[12][0-9a-fA-F]{2,4}|[0-7][0-9a-fA-F])02010[01][0-9a-fA-F]{16,}/gi },
  { kind: "authorization", re: /\b(?:proxy-)?authorization\b["']?\s*[:=]\s*["']?(?:[A-Za-z]+ +)?[^\s"',}]{6,}/gi, accept: notPlaceholder },
  { kind: "bearer", re: /\bbearer\s+[A-Za-z0-9._~+/=-]{8,}/gi },
  {
    kind: "secret-field",
    re: /"(?:pass(?:word|phrase|wd)?|pin|user_?pin|so_?pin|secret|client_?secret|api_?key|private_?key|token|access_?token|refresh_?token|id_?token|cookie|credentials?)"\s*:\s*"[^"]+"/gi,
    accept: (m) => notPlaceholder(m.slice(m.indexOf(":") + 1)),
  },
  { kind: "high-entropy-hex", re: /(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])/g, accept: suspiciousHex },
  // Standard and URL-safe alphabets separately: a resource name mixes `/` and `-` and so splits into short runs.
  { kind: "high-entropy-base64", re: /(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}={0,2}/g, accept: suspiciousBase64 },
  { kind: "high-entropy-base64url", re: /(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}/g, accept: suspiciousBase64 },
];

/** `[REDACTED]`, `***`, `<hidden>`, empty: what redaction leaves, not a secret. */
function notPlaceholder(value: string): boolean {
  const v = value.replace(/^[\s:="']+/, "").replace(/["'\s]+$/, "");
  return v.length > 0 && !/^(?:\[[a-z ]*\]|\*+|<[a-z ]*>|null|undefined|none|redacted)$/i.test(v);
}

/** Shannon entropy of `s` in bits per character, from its own character counts. */
function entropy(s: string): number {
  const counts = new Map<string, number>();
  for (const c of s) counts.set(c, (counts.get(c) ?? 0) + 1);
  let h = 0;
  for (const n of counts.values()) h -= (n / s.length) * Math.log2(n / s.length);
  return h;
}

/**
 * Hex that is not a fingerprint (64 or 40 digits, logged on purpose) and looks random, not `000…1` or
 * `deadbeef…` (random 32 digits score 2.85 at least over 100,000 tries; `deadbeef` repeated scores 2.4).
 */
function suspiciousHex(m: string): boolean {
  return m.length !== 64 && m.length !== 40 && entropy(m) >= 2.7;
}

/**
 * A base64 run that looks random: both letter cases present (paths, UUIDs, snake_case names lack one), and at
 * the entropy random base64 of its length has. Measured over 100,000 random strings each: 32 characters score
 * 3.89 at least (median 4.56), 43 score 4.20 at least, 64 score 4.65 at least; the threshold
 * `min(4.2, log2(length) - 1.3)` sits under those minimums (3.7 at 32, 4.13 at 43).
 */
function suspiciousBase64(m: string): boolean {
  const body = m.replace(/=+$/, "");
  if (!/[A-Z]/.test(body) || !/[a-z]/.test(body)) return false;
  return entropy(body) >= Math.min(4.2, Math.log2(body.length) - 1.3);
}

/** The encoded forms of a known secret, each a substring any encoding of a longer byte string containing it would hold. */
function knownForms(secret: string | Buffer): { kind: string; form: string }[] {
  const bytes = typeof secret === "string" ? Buffer.from(secret, "utf8") : secret;
  if (bytes.length < MIN_KNOWN_SECRET) throw new Error(`a known secret must be at least ${MIN_KNOWN_SECRET} bytes long: shorter ones match by chance`);
  const forms: { kind: string; form: string }[] = [];
  if (typeof secret === "string") {
    forms.push({ kind: "known-secret", form: secret });
    const escaped = JSON.stringify(secret).slice(1, -1);
    if (escaped !== secret) forms.push({ kind: "known-secret (JSON-escaped)", form: escaped });
  }
  const add = (kind: string, b: Buffer) => {
    for (const f of base64Cores(b)) {
      forms.push({ kind: `${kind} (base64)`, form: f });
      forms.push({ kind: `${kind} (base64url)`, form: f.replace(/\+/g, "-").replace(/\//g, "_") });
    }
    forms.push({ kind: `${kind} (hex)`, form: b.toString("hex") });
    forms.push({ kind: `${kind} (HEX)`, form: b.toString("hex").toUpperCase() });
  };
  add("known-secret", bytes);
  const der = pemPrivateKeyDer(bytes.toString("latin1"));
  if (der) add("known-secret DER", der);
  return forms;
}

/** Length of the pieces a long form is searched by. */
const WINDOW = 32;

/**
 * Forms ready to search: short ones as they are; a long one (a key, a PEM) as pieces of WINDOW characters at
 * multiples of WINDOW, so a part of it is found too (an error message cut at 2,000 characters, a truncated
 * dump): any 2 * WINDOW characters of the form hold one whole piece. Pieces go in a map, so a text is searched
 * in one pass whatever the number of keys planted.
 */
interface FormIndex {
  short: { kind: string; form: string }[];
  pieces: Map<string, string>;
}

function indexForms(forms: { kind: string; form: string }[]): FormIndex {
  const idx: FormIndex = { short: [], pieces: new Map() };
  for (const f of forms) {
    if (f.form.length < MIN_KNOWN_SECRET) continue;
    if (f.form.length <= 2 * WINDOW) idx.short.push(f);
    else for (let i = 0; i + WINDOW <= f.form.length; i += WINDOW) if (!idx.pieces.has(f.form.slice(i, i + WINDOW))) idx.pieces.set(f.form.slice(i, i + WINDOW), f.kind);
  }
  return idx;
}

/** Calls `hit` for every occurrence in `text` of a short form or a piece of a long one. */
function findForms(text: string, idx: FormIndex, hit: (at: number, match: string, kind: string) => void): void {
  for (const { kind, form } of idx.short) {
    for (let at = text.indexOf(form); at >= 0; at = text.indexOf(form, at + 1)) hit(at, form, kind);
  }
  if (idx.pieces.size === 0) return;
  for (let at = 0; at + WINDOW <= text.length; at++) {
    const piece = text.slice(at, at + WINDOW);
    const kind = idx.pieces.get(piece);
    if (kind !== undefined) hit(at, piece, kind);
  }
}

/**
 * The base64 text of `b` at each of the three byte alignments it can have inside a longer base64 string, with
 * the characters that would mix in neighbouring bytes cut off.
 */
function base64Cores(b: Buffer): string[] {
  const out: string[] = [];
  for (let a = 0; a < 3; a++) {
    const enc = Buffer.concat([Buffer.alloc(a), b]).toString("base64").replace(/=+$/, "");
    const head = [0, 2, 3][a]!; // characters holding bits of the `a` bytes before
    const tail = (a + b.length) % 3 === 0 ? 0 : 1; // a last character that also holds bits of the byte after
    const core = enc.slice(head, enc.length - tail);
    if (core.length >= 8) out.push(core);
  }
  return out;
}

/** The DER body of the first PEM private key block in `text` (any `... PRIVATE KEY` label), if any. */
function pemPrivateKeyDer(text: string): Buffer | undefined {
  const m = /-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----([\s\S]*?)-----END \1-----/.exec(text.replace(/\\n/g, "\n"));
  if (!m) return undefined;
  // An encrypted PEM (Proc-Type headers) has header lines before a blank line; its body is still the secret.
  const body = m[2]!.includes(":") ? m[2]!.split(/\r?\n\r?\n/).pop()! : m[2]!;
  const der = Buffer.from(body.replace(/\s+/g, ""), "base64");
  return der.length >= MIN_KNOWN_SECRET ? der : undefined;
}

/** `text` with whitespace and JSON `\n`, `\r`, `\t`, `\/` escapes removed, and the 1-based line each kept char came from. */
function squash(text: string): { squashed: string; lineAt: (i: number) => number } {
  const lines = text.split("\n").map((l) => l.replace(/\\[nrt]|\\(?=\/)|\s+/g, ""));
  const lineStarts: number[] = []; // squashed index at which each line starts
  let len = 0;
  for (const l of lines) {
    lineStarts.push(len);
    len += l.length;
  }
  const lineAt = (i: number): number => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid]! <= i) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  };
  return { squashed: lines.join(""), lineAt };
}

const excerptOf = (s: string): string => `${s.slice(0, 6)}…`;

/**
 * Scans log text for secrets: generic patterns plus the known secrets given, each also in base64, base64url and
 * hex (lower and upper) forms, and for a PEM private key its DER body in those forms.
 * @param text log text, one record per line (pino JSON lines, or raw stderr text).
 * @param knownSecrets values the tests planted or sent (strings as UTF-8, or bytes); each at least 6 bytes.
 * @returns the findings in line order; empty when the text is clean. Excerpts are redacted.
 */
export function scanForSecrets(text: string, knownSecrets: (string | Buffer)[] = []): Finding[] {
  const findings: Finding[] = [];
  const lines = text.split("\n");
  // Spans already reported per line, so one secret is one finding (a DER body also looks high-entropy).
  const spans = new Map<number, [number, number][]>();
  const covered = (line: number, start: number, end: number) => (spans.get(line) ?? []).some(([s, e]) => s <= start && end <= e);
  const report = (line: number, start: number, end: number, kind: string, match: string) => {
    if (covered(line, start, end)) return;
    spans.set(line, [...(spans.get(line) ?? []), [start, end]]);
    findings.push({ line, kind, excerpt: excerptOf(match) });
  };

  const forms = knownSecrets.flatMap(knownForms);
  const raw = indexForms(forms);
  lines.forEach((line, i) => findForms(line, raw, (at, match, kind) => report(i + 1, at, at + match.length, kind, match)));
  // Known secrets broken over lines or by JSON escapes: searched again with those removed.
  if (forms.length > 0) {
    const { squashed, lineAt } = squash(text);
    const seen = new Set(findings.map((f) => f.line));
    const squashedForms = indexForms(forms.map(({ kind, form }) => ({ kind, form: form.replace(/\s+/g, "") })));
    findForms(squashed, squashedForms, (at, match, kind) => {
      const line = lineAt(at);
      if (seen.has(line)) return;
      seen.add(line);
      findings.push({ line, kind, excerpt: excerptOf(match) });
    });
  }

  lines.forEach((text, i) => {
    for (const { kind, re, accept } of PATTERNS) {
      for (const m of text.matchAll(re)) {
        if (!accept || accept(m[0])) report(i + 1, m.index, m.index + m[0].length, kind, m[0]);
      }
    }
  });
  // One finding per kind and line is enough to act on (a PEM body split by JSON escapes is many runs).
  const once = new Set<string>();
  return findings
    .filter((f) => !once.has(`${f.line} ${f.kind}`) && once.add(`${f.line} ${f.kind}`))
    .sort((a, b) => a.line - b.line);
}
