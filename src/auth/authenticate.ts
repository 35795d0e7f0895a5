/**
 * Who is calling. In order of precedence: an `authorization: Bearer` credential (an API key issued by the service,
 * else a JWT from the identity provider), then a client certificate verified by mutual TLS. A call that sends a
 * bearer credential is judged on it alone: a bad token is never rescued by a client certificate.
 */
import { UnauthenticatedError } from "../domain/errors.js";
import { isMember } from "../domain/iam.js";
import { apiKeyMember, type ApiKeyVerifier, looksLikeApiKey } from "./api-keys.js";

/** The authenticated caller of one call. */
export interface Caller {
  /** The member that names the caller: `apiKey:{id}`, `user:{subject}`, `spiffe:{id}` or `dns:{host}`. */
  principal: string;
  /** Every member the caller matches in a policy: the principal, then its `group:` members. */
  members: readonly string[];
  /** How the caller proved who it is. */
  via: "apiKey" | "jwt" | "mtls";
}

/** What the JWT verifier (jwt.ts) offers, so this module does not depend on how tokens are checked. */
export interface BearerTokenVerifier {
  /** @throws UnauthenticatedError */
  verify(token: string): Promise<{ principal: string; groups: string[] }>;
}

/** The credentials a call presented, as the transport saw them. */
export interface Presented {
  /** The `authorization` metadata values (more than one is refused). */
  authorization: string[];
  /** Node's `subjectaltname` of a client certificate the TLS layer verified against the client CAs, if any. */
  verifiedClientSan?: string;
}

/** Longest `authorization` value read; JWTs of well-behaved identity providers are a few KiB. */
const MAX_AUTHORIZATION_LENGTH = 16 * 1024;

/**
 * The member a verified client certificate names (RFC 5280 §4.2.1.6): its first SPIFFE URI SAN
 * (`spiffe:spiffe://...`), else its first DNS SAN (`dns:{host}`, lowercased), else none.
 * @param san Node's `subjectaltname` string, e.g. `DNS:a.example, URI:spiffe://example.org/svc`; values holding
 *        separators arrive JSON-quoted.
 */
export function memberFromClientSan(san: string | undefined): string | undefined {
  if (!san) return undefined;
  const entries: [string, string][] = [];
  const re = /(DNS|URI|IP Address|email|othername:[^:]*|DirName):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g;
  for (let m = re.exec(san); m && m[0] !== ""; m = re.exec(san)) {
    let value = m[2];
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    entries.push([m[1], value]);
  }
  const uri = entries.find(([k, v]) => k === "URI" && v.startsWith("spiffe://"));
  if (uri && isMember(`spiffe:${uri[1]}`)) return `spiffe:${uri[1]}`;
  const dns = entries.find(([k]) => k === "DNS");
  if (dns && isMember(`dns:${dns[1].toLowerCase()}`)) return `dns:${dns[1].toLowerCase()}`;
  return undefined;
}

/** Authenticates calls; one per server. */
export class Authenticator {
  constructor(
    private readonly apiKeys: ApiKeyVerifier,
    private readonly jwt: BearerTokenVerifier | undefined,
  ) {}

  /**
   * @returns the caller.
   * @throws UnauthenticatedError when no credential was presented, or a bad one (the cause, for the log only,
   *         says which; never the credential).
   */
  async authenticate(p: Presented): Promise<Caller> {
    if (p.authorization.length > 1) throw new UnauthenticatedError(new Error("more than one authorization header"));
    if (p.authorization.length === 1) {
      const value = p.authorization[0];
      if (value.length > MAX_AUTHORIZATION_LENGTH) throw new UnauthenticatedError(new Error("authorization header too long"));
      const m = /^Bearer +(\S+)$/i.exec(value);
      if (!m) throw new UnauthenticatedError(new Error("authorization does not use the bearer scheme"));
      const token = m[1];
      if (looksLikeApiKey(token)) {
        const id = await this.apiKeys.verify(token);
        return { principal: apiKeyMember(id), members: [apiKeyMember(id)], via: "apiKey" };
      }
      if (!this.jwt) throw new UnauthenticatedError(new Error("a bearer token that is not an API key, and JWT authentication is not configured"));
      const { principal, groups } = await this.jwt.verify(token);
      return { principal, members: [principal, ...groups], via: "jwt" };
    }
    const member = memberFromClientSan(p.verifiedClientSan);
    if (member) return { principal: member, members: [member], via: "mtls" };
    throw new UnauthenticatedError(new Error(p.verifiedClientSan ? "client certificate names no SPIFFE ID or DNS name" : "no credential"));
  }
}
