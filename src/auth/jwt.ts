/**
 * JWT bearer tokens (RFC 7519) from an OpenID Connect / OAuth issuer: signature against the issuer's JSON Web Key
 * Set (a file re-read on SIGHUP, or an https URL fetched and cached), algorithm from an asymmetric allow-list only
 * (RFC 8725 §3.1; HS* and `none` never, §2.1), `iss`, `aud`, `exp`, `nbf` with a bounded clock skew; then the
 * caller's member names: `user:<principal claim>` and `group:<each group>` (the grammar of domain/iam.ts).
 * Tokens never appear in messages or logs; every refusal is the same UnauthenticatedError, the jose error (or a
 * jose error class built here for our own claim rules) kept as its `cause` for the log.
 */
import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";

import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  importJWK,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import type { Logger } from "pino";

import { UnauthenticatedError } from "../domain/errors.js";

/** How JWTs are checked; `config` builds it from CM_JWT_* (the same shape, declared there as `Config["jwt"]`). */
export interface JwtSettings {
  /** Required `iss` (RFC 7519 §4.1.1), compared exactly. */
  issuer: string;
  /** Required `aud` (RFC 7519 §4.1.3): the token's `aud` is this string or an array containing it. */
  audience: string;
  /** Path of a JWKS file (`{"keys":[...]}`, public keys only). Exactly one of jwksFile / jwksUrl. */
  jwksFile?: string;
  /** https:// URL of the issuer's JWKS (http:// only for a loopback host). Exactly one of jwksFile / jwksUrl. */
  jwksUrl?: string;
  /** Accepted `alg` values; asymmetric only (HS* and `none` are refused by config and by `open`). */
  algorithms: string[];
  /** Claim naming the caller (default `sub`); the member is `user:<value>`. */
  principalClaim: string;
  /** Claim listing the caller's groups (default `groups`); each becomes `group:<value>`. */
  groupsClaim: string;
  /** Tolerance for `exp`, `nbf` and `iat`, seconds (default 30). */
  clockSkewSeconds: number;
  /** URL only: how long fetched keys are trusted before they are fetched again, seconds (default 300). */
  jwksCacheSeconds: number;
}

/** Who a verified token says is calling. */
export interface JwtIdentity {
  /** `user:<principal claim>`. */
  principal: string;
  /** `group:<name>` for each group of the token, without duplicates; empty when the claim is absent. */
  groups: string[];
  /** The token's `exp`, when it has one. */
  expiresAt?: Date;
}

/** The algorithms a JWT may be signed with at all: asymmetric, so holding the keys never lets anyone sign. */
const ASYMMETRIC = new Set(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]);

/** Longest token looked at; a bearer token beyond this is refused before any parsing or hashing. */
const MAX_TOKEN_CHARS = 16 * 1024;
/** Longest principal and group values, so that `user:`/`group:` + value fits MAX_MEMBER_LENGTH (255). */
const PRINCIPAL = /^[\x21-\x7e]{1,249}$/;
const GROUP = /^[\x21-\x7e]{1,248}$/;
const MAX_GROUPS = 100;
/** Largest JWKS file read; a real key set is a few KiB. */
const MAX_JWKS_FILE_BYTES = 1024 * 1024;
/** Remote JWKS: an unknown `kid` triggers a refetch at most this often; a fetch gives up after FETCH_TIMEOUT_MS. */
const COOLDOWN_MS = 30_000;
const FETCH_TIMEOUT_MS = 5_000;
/** Verified-token cache: entries live at most this long (and never past the token's `exp`), at most this many. */
const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 1_000;

/** Whether a URL's hostname is this machine (the only place plain http is acceptable for a key set). */
function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The `alg` a key without an `alg` member would be imported for, given the allow-list; undefined if none fits. */
function algFor(jwk: JWK, allowed: readonly string[]): string | undefined {
  if (typeof jwk.alg === "string") return allowed.includes(jwk.alg) ? jwk.alg : undefined;
  const fits = (alg: string): boolean => {
    if (jwk.kty === "RSA") return /^(RS|PS)\d{3}$/.test(alg);
    if (jwk.kty === "EC") return { "P-256": "ES256", "P-384": "ES384", "P-521": "ES512" }[jwk.crv ?? ""] === alg;
    if (jwk.kty === "OKP") return jwk.crv === "Ed25519" && alg === "EdDSA";
    return false;
  };
  return allowed.find(fits);
}

/** A key's name for messages: its `kid`, or its position. Never any key material. */
const keyName = (jwk: unknown, i: number): string =>
  typeof (jwk as JWK | null)?.kid === "string" ? `kid ${JSON.stringify((jwk as JWK).kid!.slice(0, 100))}` : `key #${i}`;

/**
 * Reads and checks a JWKS file: at most 1 MiB of JSON `{"keys":[...]}`, public keys only (a private or symmetric
 * key there is a mistake worth stopping for), and at least one key usable with `algorithms`. Keys that are not
 * usable (another algorithm or curve, `use` other than `sig`, RSA under 2048 bits) are left out and reported.
 * @returns the usable keys, and what was left out.
 * @throws Error naming the file and the problem; never quoting key material.
 */
async function readJwksFile(file: string, algorithms: readonly string[]): Promise<{ jwks: JSONWebKeySet; skipped: string[] }> {
  const fail = (problem: string): never => {
    throw new Error(`JWKS file ${file}: ${problem}`);
  };
  let text: string;
  try {
    const st = await stat(file);
    if (!st.isFile()) fail("is not a regular file");
    if (st.size > MAX_JWKS_FILE_BYTES) fail(`is ${st.size} bytes; a key set is at most ${MAX_JWKS_FILE_BYTES}`);
    text = await readFile(file, "utf8");
  } catch (err) {
    if (err instanceof Error && err.message.startsWith("JWKS file ")) throw err;
    return fail(`cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // JSON.parse's message may quote the file's text, which could be key material: say only where.
    return fail("is not valid JSON");
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Array.isArray(keys)) {
    return fail('is not a JSON Web Key Set: expected {"keys": [...]}');
  }
  const usable: JWK[] = [];
  const skipped: string[] = [];
  for (const [i, jwk] of (keys as unknown[]).entries()) {
    const name = keyName(jwk, i);
    if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) fail(`${name} is not a JSON object`);
    const k = jwk as JWK;
    if (k.kty === "oct") fail(`${name} is a symmetric (oct) key; a JWKS for verification holds public keys only`);
    if (k.d !== undefined) fail(`${name} holds private key material; publish only the public key`);
    if (k.use !== undefined && k.use !== "sig") {
      skipped.push(`${name}: use ${JSON.stringify(k.use)}`);
      continue;
    }
    const alg = algFor(k, algorithms);
    if (alg === undefined) {
      skipped.push(`${name}: no allowed algorithm for it`);
      continue;
    }
    try {
      const key = await importJWK(k, alg);
      // jose refuses RSA keys under 2048 bits only at verification; say so now instead.
      const bits = (key as CryptoKey).algorithm as RsaHashedKeyAlgorithm;
      if (k.kty === "RSA" && bits.modulusLength < 2048) {
        skipped.push(`${name}: RSA key of ${bits.modulusLength} bits (at least 2048)`);
        continue;
      }
    } catch {
      skipped.push(`${name}: not a valid ${alg} key`);
      continue;
    }
    usable.push(k);
  }
  if (usable.length === 0) {
    fail(`has no key usable with ${algorithms.join(", ")}${skipped.length ? ` (${skipped.join("; ")})` : ""}`);
  }
  return { jwks: { keys: usable }, skipped };
}

/** A key set's identity, to tell whether a reload changed anything. */
const fingerprint = (jwks: JSONWebKeySet): string => createHash("sha256").update(JSON.stringify(jwks.keys)).digest("hex");

/** Why a token with good signature and standard claims is still refused: built as jose's class so causes are uniform. */
const claimError = (message: string, payload: JWTPayload, claim: string) => new errors.JWTClaimValidationFailed(message, payload, claim, "check_failed");

/**
 * Checks JWT bearer tokens against one issuer. Open it with `JwtVerifier.open`, call `verify` per call, `reload`
 * on SIGHUP, `close` at shutdown.
 */
export class JwtVerifier {
  private keys: JWTVerifyGetKey;
  private keysId: string;
  private readonly cache = new Map<string, { identity: JwtIdentity; until: number }>();
  private closed = false;
  /** A remote key set that cannot be fetched is warned once, until a fetch works again. */
  private fetchFailing = false;

  private constructor(
    private readonly settings: JwtSettings,
    private readonly log: Logger,
    keys: JWTVerifyGetKey,
    keysId: string,
  ) {
    this.keys = keys;
    this.keysId = keysId;
  }

  /**
   * Checks `settings` and prepares the key set. A file is read and checked now (so a bad one stops the start);
   * a URL is not fetched until the first token needs it.
   * @param settings as `Config["jwt"]`; durations in seconds.
   * @throws Error naming the file (unreadable, not JSON, not a key set, private/symmetric keys, no usable key) or
   *         the setting (both or neither of jwksFile/jwksUrl, a URL neither https nor loopback http, an
   *         algorithm outside the asymmetric list: RFC 8725 §3.1 and §2.1, so HS* and `none` never).
   */
  static async open(settings: JwtSettings, log: Logger): Promise<JwtVerifier> {
    if (settings.algorithms.length === 0) throw new Error("JWT algorithms: the allow-list is empty");
    for (const alg of settings.algorithms) {
      if (!ASYMMETRIC.has(alg)) throw new Error(`JWT algorithms: ${JSON.stringify(alg)} is not accepted; use ${[...ASYMMETRIC].join(", ")}`);
    }
    if ((settings.jwksFile === undefined) === (settings.jwksUrl === undefined)) {
      throw new Error("JWT settings need exactly one of jwksFile and jwksUrl");
    }
    const log2 = log.child({ component: "jwt" });
    if (settings.jwksFile !== undefined) {
      const { jwks, skipped } = await readJwksFile(settings.jwksFile, settings.algorithms);
      if (skipped.length) log2.warn({ file: settings.jwksFile, skipped }, "JWKS file: some keys are not used");
      return new JwtVerifier(settings, log2, createLocalJWKSet(jwks), fingerprint(jwks));
    }
    let url: URL;
    try {
      url = new URL(settings.jwksUrl!);
    } catch {
      throw new Error("JWT jwksUrl is not a valid URL");
    }
    if (!(url.protocol === "https:" || (url.protocol === "http:" && isLoopback(url.hostname)))) {
      throw new Error(`JWT jwksUrl must be https:// (http:// only on loopback), got ${url.protocol}//${url.host}`);
    }
    const remote = createRemoteJWKSet(url, {
      cacheMaxAge: settings.jwksCacheSeconds * 1000,
      cooldownDuration: COOLDOWN_MS,
      timeoutDuration: FETCH_TIMEOUT_MS,
    });
    return new JwtVerifier(settings, log2, remote, "");
  }

  /**
   * Verifies a compact JWS JWT and returns who it names. Checked, in order: length (at most 16 KiB, before any
   * parsing), a cached earlier verification of the very same token, then with jose: `alg` in the allow-list
   * (RFC 8725 §3.1; `none` never, §2.1), the signature with the key set (by `kid` when the header has one),
   * `iss`, `aud` (RFC 7519 §4.1.3; a string or an array holding ours), `exp` (§4.1.4) and `nbf` (§4.1.5) and
   * `iat` with `clockSkewSeconds` of tolerance; then the principal claim (a string of 1-249 printable ASCII
   * characters, no spaces) and the groups claim (absent, or an array of at most 100 such strings of 1-248).
   * @param token the bearer token, without the `Bearer ` prefix.
   * @returns principal `user:<claim>`, groups `group:<name>`, `expiresAt` from `exp` when present.
   * @throws UnauthenticatedError for every refusal, the reason as a jose error in `cause` (JWTExpired,
   *         JWTClaimValidationFailed with `claim`, JOSEAlgNotAllowed, JWSSignatureVerificationFailed,
   *         JWKSNoMatchingKey, JWSInvalid/JWTInvalid, JWKSTimeout...). Neither the message nor the log holds the token.
   */
  async verify(token: string): Promise<JwtIdentity> {
    if (this.closed) throw new UnauthenticatedError(new errors.JOSEError("the JWT verifier is closed"));
    if (typeof token !== "string") throw new UnauthenticatedError(new errors.JWTInvalid("JWT must be a string"));
    // Bounds the work an unauthenticated caller can cause (base64 decoding, JSON parsing, hashing).
    if (token.length > MAX_TOKEN_CHARS) throw new UnauthenticatedError(new errors.JWTInvalid(`JWT longer than ${MAX_TOKEN_CHARS} characters`));
    const cacheKey = createHash("sha256").update(token).digest("base64url");
    const now = Date.now();
    const hit = this.cache.get(cacheKey);
    if (hit !== undefined) {
      if (now < hit.until) return copy(hit.identity);
      this.cache.delete(cacheKey);
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        algorithms: this.settings.algorithms,
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        clockTolerance: this.settings.clockSkewSeconds,
      }));
      this.fetchFailing = false;
    } catch (err) {
      this.noteFetchProblem(err);
      this.log.debug({ reason: (err as { code?: string }).code ?? (err as Error).name }, "JWT refused");
      throw new UnauthenticatedError(err);
    }
    const identity = this.identityOf(payload);
    // Cached for at most a minute and never past `exp` itself (not exp + skew): a cache must not extend a token.
    const until = Math.min(now + CACHE_TTL_MS, typeof payload.exp === "number" ? payload.exp * 1000 : Infinity);
    if (until > now) this.remember(cacheKey, identity, until, now);
    return copy(identity);
  }

  /**
   * Re-reads the JWKS file (on SIGHUP). A file that cannot be used (unreadable, not JSON, no usable key...) leaves
   * the current keys in place and is logged as a warning naming the file, never quoting key material.
   * @returns true when the keys changed (cached verifications are then dropped), false when they did not, the
   *          new file was refused, or the keys come from a URL (jose refetches those by itself).
   */
  async reload(): Promise<boolean> {
    const file = this.settings.jwksFile;
    if (file === undefined || this.closed) return false;
    try {
      const { jwks, skipped } = await readJwksFile(file, this.settings.algorithms);
      const id = fingerprint(jwks);
      if (id === this.keysId) return false;
      if (skipped.length) this.log.warn({ file, skipped }, "JWKS file: some keys are not used");
      this.keys = createLocalJWKSet(jwks);
      this.keysId = id;
      // A key taken out must stop admitting tokens at once, not after the cache's minute.
      this.cache.clear();
      this.log.info({ file, keys: jwks.keys.length }, "JWKS file reloaded");
      return true;
    } catch (err) {
      this.log.warn({ file, problem: (err as Error).message }, "JWKS file not reloaded: keeping the keys in use");
      return false;
    }
  }

  /** Forgets cached verifications; later `verify` calls fail. Nothing else is held (no timers, no sockets). */
  close(): void {
    this.closed = true;
    this.cache.clear();
  }

  /** The caller's members from a verified payload. @throws UnauthenticatedError when the claims break our rules. */
  private identityOf(payload: JWTPayload): JwtIdentity {
    const { principalClaim, groupsClaim } = this.settings;
    const refuse = (message: string, claim: string): never => {
      const cause = claimError(message, payload, claim);
      this.log.debug({ reason: cause.code, claim }, "JWT refused");
      throw new UnauthenticatedError(cause);
    };
    const principal = Object.hasOwn(payload, principalClaim) ? payload[principalClaim] : undefined;
    if (typeof principal !== "string" || !PRINCIPAL.test(principal)) {
      refuse(`"${principalClaim}" claim must be a string of 1 to 249 printable ASCII characters without spaces`, principalClaim);
    }
    const raw = Object.hasOwn(payload, groupsClaim) ? payload[groupsClaim] : undefined;
    const groups = new Set<string>();
    if (raw !== undefined) {
      if (!Array.isArray(raw)) refuse(`"${groupsClaim}" claim must be an array of strings`, groupsClaim);
      const list = raw as unknown[];
      if (list.length > MAX_GROUPS) refuse(`"${groupsClaim}" claim holds more than ${MAX_GROUPS} groups`, groupsClaim);
      for (const g of list) {
        if (typeof g !== "string" || !GROUP.test(g)) {
          refuse(`"${groupsClaim}" claim entries must be strings of 1 to 248 printable ASCII characters without spaces`, groupsClaim);
        }
        groups.add(`group:${g as string}`);
      }
    }
    return {
      principal: `user:${principal as string}`,
      groups: [...groups],
      ...(typeof payload.exp === "number" ? { expiresAt: new Date(payload.exp * 1000) } : {}),
    };
  }

  /** Keeps a verification, making room by dropping expired entries, then the oldest. */
  private remember(key: string, identity: JwtIdentity, until: number, now: number): void {
    if (this.cache.size >= CACHE_MAX) {
      for (const [k, e] of this.cache) if (e.until <= now) this.cache.delete(k);
      while (this.cache.size >= CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
    }
    this.cache.set(key, { identity, until });
  }

  /** An unreachable key set is the operator's problem, not the caller's: warn once until it works again. */
  private noteFetchProblem(err: unknown): void {
    if (this.settings.jwksUrl === undefined) return;
    const fetchProblem =
      err instanceof errors.JWKSTimeout ||
      (err instanceof errors.JOSEError && /JSON Web Key Set HTTP response/.test(err.message)) ||
      !(err instanceof errors.JOSEError);
    if (!fetchProblem || this.fetchFailing) return;
    this.fetchFailing = true;
    const u = new URL(this.settings.jwksUrl);
    this.log.warn({ jwksUrl: `${u.origin}${u.pathname}`, problem: (err as Error).message }, "JWKS could not be fetched: JWTs are refused until it can");
  }
}

const copy = (id: JwtIdentity): JwtIdentity => ({ ...id, groups: [...id.groups], ...(id.expiresAt ? { expiresAt: new Date(id.expiresAt) } : {}) });
