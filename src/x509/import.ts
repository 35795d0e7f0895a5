/**
 * The import use case's pure part: what the user sent (PEM text, DER bytes, a PKCS#12 file) in, clean material
 * and public metadata out, with the list of repairs made, or one InvalidArgumentError naming the proto field and
 * saying how to fix it. Sizes and field conflicts are checked before any decoding; then certificate, key and
 * chain are read in field order, so the first error a user sees is about the first field.
 */
import { createHash } from "node:crypto";
import type { CertificateMaterial, CertificateMetadata, ImportRepair, RootCertificatePolicy } from "../domain/certificate.js";
import { InvalidArgumentError } from "../domain/errors.js";
import {
  CertificateDefect,
  isSelfSigned,
  parseCertificateDer,
  publicKeyOf,
  serialHex,
  subjectAltNames,
  subjectCommonName,
  validity,
  type ParsedCertificate,
} from "./certificate.js";
import { orderIntermediates, selectLeaf, type NumberedCertificate } from "./chain.js";
import { describePublicKey } from "./key-algorithm.js";
import {
  MAX_CERTIFICATE_BYTES,
  MAX_INTERMEDIATES,
  MAX_INTERMEDIATES_BYTES,
  MAX_PASSPHRASE_BYTES,
  MAX_PKCS12_BYTES,
  MAX_PRIVATE_KEY_BYTES,
} from "./limits.js";
import { contentOf, sniffTlv, TAG } from "./der.js";
import { normalizePemText, pemEncode } from "./pem.js";
import { readPkcs12, type Pkcs12Contents } from "./pkcs12.js";
import { decryptIsolated, missingPassphrase, type EncryptedKey } from "./encrypted-key.js";
import {
  findEncryptedKey,
  keyMatches,
  keyPairWorks,
  parseContainedPrivateKey,
  parseDecryptedKey,
  parsePrivateKey,
  parsePrivateKeyBlocks,
  privateKeyToPkcs8Pem,
  sniffKeyShape,
  type ParsedPrivateKey,
} from "./private-key.js";
import { X509Reason } from "./reasons.js";
import { certificatesFromBytes, certificatesFromText, type CertificateItem, type FoundCertificates } from "./sources.js";

/** What the user sent (the proto fields of ImportCertificateRequest); "" / empty Buffer means absent. */
export interface ImportInput {
  /** PEM text: the certificate, or a whole chain, optionally with the key (a combined PEM). */
  certificate: string;
  /** PEM text of the private key (plain or encrypted). */
  privateKey: string;
  /** PEM text of the CA certificates, any order. */
  intermediates: string;
  /** Binary DER certificate or PKCS#7 bundle, instead of `certificate`. */
  certificateDer?: Buffer;
  /** Binary DER private key, instead of `privateKey`; zeroed once read. */
  privateKeyDer?: Buffer;
  /** A PKCS#12 file, instead of the certificate and key fields. */
  pkcs12?: Buffer;
  /** Password of `pkcs12` or of an encrypted key. */
  passphrase?: string;
  /** What to do with a self-signed root among the intermediates; default "keep". */
  rootCertificate?: RootCertificatePolicy;
}

/** Result of a successful import parse. */
export interface ParsedImport {
  metadata: CertificateMetadata;
  /** Clean PEM: one certificate block; PKCS#8 key or ""; intermediates in issuing order or "". All LF-ended. */
  material: CertificateMaterial;
  hasPrivateKey: boolean;
  /** Intermediates kept (after dropping duplicates, copies of the leaf and, if asked, the root). */
  intermediateCount: number;
  /** What was changed in the submitted material, in the order it happened. */
  repairs: ImportRepair[];
}

/** Metadata read from the leaf alone (everything but the key description). */
type LeafFacts = Omit<CertificateMetadata, "keyAlgorithm" | "keySize" | "keyCurve">;

const bytesOf = (b: Buffer | undefined) => b ?? Buffer.alloc(0);

/**
 * Validates and normalises an import request, first reading its PKCS#12 file or decrypting its encrypted private
 * key in a worker thread (pkcs12.ts, encrypted-key.ts): the only road by which a key is decrypted. Rules as in
 * {@link parseImport}, plus PASSPHRASE_REQUIRED, WRONG_PASSPHRASE and INVALID_PKCS12; DomainError
 * RESOURCE_EXHAUSTED SERVER_BUSY when the worker queue is full; CancelledError when `signal` aborts.
 */
export async function readImport(input: ImportInput, signal?: AbortSignal): Promise<ParsedImport> {
  checkSizesAndConflicts(input);
  const pkcs12 = bytesOf(input.pkcs12);
  if (pkcs12.length > 0) return parseImport(input, { pkcs12: await readPkcs12(pkcs12, input.passphrase ?? "", { signal }) });
  const encrypted = findEncryptedKey(input);
  if (encrypted === undefined) return parseImport(input);
  const passphrase = input.passphrase ?? "";
  if (encrypted.pem !== undefined && passphrase === "") throw missingPassphrase(encrypted.field, encrypted.what);
  return parseImport(input, { decryptedKey: { encrypted, der: await decryptIsolated(encrypted, passphrase, signal) } });
}

/** Work done before parseImport, off the event loop (see readImport). */
export interface PreparedImport {
  /** The contents of `input.pkcs12`, read by readPkcs12 (required when `input.pkcs12` is set). */
  pkcs12?: Pkcs12Contents;
  /** The request's encrypted private key, decrypted to PKCS#8 DER by decryptIsolated. */
  decryptedKey?: { encrypted: EncryptedKey; der: Buffer };
}

/**
 * Validates and normalises an import request whose PKCS#12 file (if any) was already read.
 *
 * Rules, each refused with an InvalidArgumentError whose `field` is the proto field:
 * - Sizes (before any decoding): certificate, certificate_der, private_key, private_key_der ≤ 64 KiB,
 *   intermediates ≤ 512 KiB, pkcs12 ≤ 256 KiB, passphrase ≤ 1 KiB → FIELD_TOO_LARGE. Two forms of the same
 *   thing (certificate + certificate_der, pkcs12 + any certificate or key field, private_key + private_key_der)
 *   → CONFLICTING_FIELDS.
 * - The certificate: PEM (`CERTIFICATE`, legacy labels, `TRUSTED CERTIFICATE`, `PKCS7`), DER, or from the
 *   PKCS#12 file; none → INVALID_CERTIFICATE; a CSR, public key or CRL is named as such. Several certificates
 *   are split (see selectLeaf: MULTIPLE_CERTIFICATES when the leaf cannot be told). Its key must be RSA
 *   2048–8192 (else KEY_TOO_WEAK / UNSUPPORTED_KEY_ALGORITHM), EC P-256/P-384/P-521 (named or explicit
 *   parameters), Ed25519 or Ed448 (else UNSUPPORTED_KEY_ALGORITHM).
 * - The private key (optional; also a key block inside `certificate` when private_key is empty): see
 *   parsePrivateKey (ENCRYPTED_PRIVATE_KEY, WRONG_PASSPHRASE, INVALID_PRIVATE_KEY); it must be the certificate's
 *   key (RFC 5280 §4.1.2.7) → PRIVATE_KEY_MISMATCH.
 * - Intermediates: exact duplicates and copies of the leaf dropped; a self-signed root dropped when
 *   `rootCertificate` is "drop"; more than 20 left → TOO_MANY_INTERMEDIATES; put in issuing order (RFC 8446
 *   §4.4.2); one that does not link → INTERMEDIATE_NOT_IN_CHAIN naming the missing issuer.
 *
 * Expiry, key usage and path constraints are not judged: the service stores what the user holds.
 *
 * @param input - the request fields.
 * @param prepared - work readImport did off the event loop: the PKCS#12 contents (required when `input.pkcs12`
 *   is set) and the decrypted private key. This function never decrypts: without `decryptedKey`, an encrypted key
 *   is refused as ENCRYPTED_PRIVATE_KEY when no passphrase was given (an Error otherwise: call readImport).
 * @returns metadata of the leaf, the clean material and the repairs made.
 * @throws InvalidArgumentError as listed above; messages never contain key material or PEM bodies.
 */
export function parseImport(input: ImportInput, prepared: PreparedImport = {}): ParsedImport {
  // Every buffer that may hold private-key bytes is zeroed however parsing ends (createPrivateKey copied them).
  const keyBuffers: Buffer[] = [
    ...(prepared.pkcs12?.privateKeys ?? []),
    ...(input.privateKeyDer ? [input.privateKeyDer] : []),
    ...(prepared.decryptedKey ? [prepared.decryptedKey.der] : []),
  ];
  try {
    return parseImportInto(input, prepared, keyBuffers);
  } finally {
    for (const b of keyBuffers) b.fill(0);
  }
}

function parseImportInto(input: ImportInput, prepared: PreparedImport, keyBuffers: Buffer[]): ParsedImport {
  const { pkcs12, decryptedKey } = prepared;
  checkSizesAndConflicts(input);
  const repairs: ImportRepair[] = [];
  for (const [field, text] of [["certificate", input.certificate], ["private_key", input.privateKey], ["intermediates", input.intermediates]] as const) {
    if (text !== "" && normalizePemText(text) !== text) {
      repairs.push({ kind: "TEXT_NORMALIZED", description: `${field}: a byte-order mark or line breaks written as "\\n" were undone` });
    }
  }
  const passphrase = input.passphrase ?? "";

  // 1. Every certificate given for the leaf, and a key that may come with them.
  const leafField = pkcs12 ? "pkcs12" : bytesOf(input.certificateDer).length > 0 ? "certificate_der" : "certificate";
  let found: FoundCertificates;
  if (pkcs12) {
    if (pkcs12.certificates.length === 0) {
      throw new InvalidArgumentError(X509Reason.INVALID_PKCS12, "pkcs12", "pkcs12: the file holds no certificate; export it again with its certificate");
    }
    found = { items: pkcs12.certificates.map((der, i) => ({ der, field: "pkcs12", position: i + 1 })), keyBlocks: [], repairs: [] };
    const keys = pkcs12.privateKeys.length;
    repairs.push({
      kind: "PKCS12_UNPACKED",
      description: `pkcs12: ${pkcs12.certificates.length} certificate(s)${keys > 0 ? " and the private key" : ""} were taken out of the PKCS#12 file`,
    });
  } else if (leafField === "certificate_der") {
    found = certificatesFromBytes(bytesOf(input.certificateDer), leafField);
  } else {
    if (input.certificate.trim() === "") {
      throw new InvalidArgumentError(
        X509Reason.INVALID_CERTIFICATE,
        "certificate",
        "certificate: the certificate is required; paste the PEM certificate (-----BEGIN CERTIFICATE-----), or send it as certificate_der (binary DER) or pkcs12 (a .pfx/.p12 file)",
      );
    }
    found = certificatesFromText(input.certificate, leafField, true);
  }
  repairs.push(...found.repairs);
  keyBuffers.push(...found.keyBlocks.map((b) => b.der));
  if (found.items.length === 0 && found.keyBlocks.length > 0) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_CERTIFICATE,
      leafField,
      `${leafField}: it holds only a private key and no certificate; put the key in private_key and the PEM certificate (-----BEGIN CERTIFICATE-----) here`,
    );
  }
  if (found.items.length === 0) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_CERTIFICATE,
      leafField,
      `${leafField}: no PEM certificate found; paste the certificate in PEM form, from "-----BEGIN CERTIFICATE-----" to "-----END CERTIFICATE-----"`,
    );
  }

  // Leaf candidates: de-duplicated on the bytes before decoding (a bundle of many copies costs hashing only).
  const seen = new Set<string>();
  const distinct = (items: CertificateItem[]) =>
    items.filter((item) => {
      const digest = createHash("sha256").update(item.der).digest("hex");
      if (seen.has(digest)) return false;
      seen.add(digest);
      return true;
    });
  const leafCandidatesRaw = distinct(found.items);
  if (leafCandidatesRaw.length - 1 > MAX_INTERMEDIATES) throw tooMany(leafField, leafCandidatesRaw.length - 1);
  const leafCandidates = leafCandidatesRaw.map(decode);
  // Field order: a certificate whose key we refuse is reported before anything about the private key.
  if (leafCandidates.length === 1) describePublicKey(leafCandidates[0].cert, leafField);

  // 2. The private key.
  let privateKey: ParsedPrivateKey | undefined;
  let keyField = bytesOf(input.privateKeyDer).length > 0 ? "private_key_der" : "private_key";
  if (pkcs12) {
    keyField = "pkcs12";
    if (pkcs12.privateKeys.length > 1) {
      throw new InvalidArgumentError(
        X509Reason.INVALID_PKCS12,
        "pkcs12",
        `pkcs12: the file holds ${pkcs12.privateKeys.length} private keys; export only one certificate with its key`,
      );
    }
    if (pkcs12.privateKeys.length === 1) privateKey = parseContainedPrivateKey(pkcs12.privateKeys[0], "pkcs12");
  } else {
    privateKey =
      decryptedKey && decryptedKey.encrypted.field !== leafField
        ? parseDecryptedKey(decryptedKey.encrypted, decryptedKey.der, passphrase)
        : parsePrivateKey(input.privateKey, bytesOf(input.privateKeyDer), passphrase);
    if (found.keyBlocks.length > 0) {
      if (privateKey !== undefined) {
        throw new InvalidArgumentError(
          X509Reason.INVALID_CERTIFICATE,
          leafField,
          `${leafField}: it holds a private key block although ${keyField} is also set; remove the key from ${leafField}`,
        );
      }
      keyField = leafField;
      privateKey =
        decryptedKey?.encrypted.field === leafField
          ? parseDecryptedKey(decryptedKey.encrypted, decryptedKey.der, passphrase)
          : parsePrivateKeyBlocks(found.keyBlocks, leafField, passphrase);
      repairs.push({ kind: "PRIVATE_KEY_MOVED", description: `${leafField}: it also held the private key (a combined PEM file); the key was used as the private key` });
    }
  }
  if (privateKey) repairs.push(...privateKey.repairs);

  // 3. The intermediates field.
  const chainFound = input.intermediates.trim() === "" ? undefined : certificatesFromText(input.intermediates, "intermediates", false);
  if (chainFound && chainFound.items.length === 0) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_CERTIFICATE,
      "intermediates",
      'intermediates: no PEM certificate found; paste the CA certificates as "-----BEGIN CERTIFICATE-----" blocks',
    );
  }
  if (chainFound) repairs.push(...chainFound.repairs);
  const chainRaw = chainFound?.items ?? [];
  const chainDistinctRaw = distinct(chainRaw);
  if (leafCandidatesRaw.length - 1 + chainDistinctRaw.length > MAX_INTERMEDIATES) {
    throw tooMany("intermediates", leafCandidatesRaw.length - 1 + chainDistinctRaw.length);
  }

  // 4. Choose the leaf, check its key.
  const publicKeyMatches = privateKey ? (c: ParsedCertificate) => matches(privateKey!, c) : undefined;
  const leafIndex = selectLeaf(leafCandidates, publicKeyMatches, leafField, keyField);
  const leaf = leafCandidates[leafIndex].cert;
  const facts = leafFacts(leaf, leafField);
  const key = describePublicKey(leaf, leafField);
  const leafPublicKey = publicKeyOf(leaf);
  if (privateKey && (leafPublicKey === undefined || !keyPairWorks(privateKey.key, leafPublicKey))) {
    throw new InvalidArgumentError(
      X509Reason.PRIVATE_KEY_MISMATCH,
      keyField,
      `${keyField}: the private key's secret part does not belong to the certificate's public key (a signature made with it does not verify), although the file claims that public key; the key file is damaged or assembled from two keys, export it again from its source`,
    );
  }
  if (leafCandidates.length > 1 && !pkcs12) {
    repairs.push({
      kind: "CHAIN_SPLIT",
      description: `${leafField}: it held ${leafCandidates.length} certificates; "${leaf.subject}" was kept as the certificate and the other ${leafCandidates.length - 1} were used as intermediates`,
    });
  }
  // Exact repeats among the certificates given for the leaf: copies of the leaf, or of the CA certificates.
  const leafCopies = found.items.filter((item) => item.der.equals(leaf.der)).length - 1;
  const caRepeats = found.items.length - leafCandidatesRaw.length - leafCopies;
  if (leafCopies > 0) {
    repairs.push({ kind: "LEAF_COPY_DROPPED", description: `${leafField}: ${leafCopies} extra copy(ies) of the certificate were dropped` });
  }
  // 5. The chain: leftover leaf candidates first (they came first), then the intermediates field, whose
  // duplicates of anything seen before (the leaf included) were already left out.
  let chain: NumberedCertificate[] = leafCandidates.filter((_, i) => i !== leafIndex);
  const leafCopiesInChain = chainRaw.filter((item) => item.der.equals(leaf.der)).length;
  const droppedDuplicates = caRepeats + chainRaw.length - chainDistinctRaw.length - leafCopiesInChain;
  chain = chain.concat(chainDistinctRaw.map(decode));
  if (leafCopiesInChain > 0) {
    repairs.push({ kind: "LEAF_COPY_DROPPED", description: `intermediates: ${leafCopiesInChain} copy(ies) of the certificate itself were dropped` });
  }
  if (droppedDuplicates > 0) {
    repairs.push({ kind: "DUPLICATE_INTERMEDIATES_DROPPED", description: `${droppedDuplicates} duplicate CA certificate(s) were dropped` });
  }
  if (input.rootCertificate === "drop") {
    const roots = chain.filter((c) => isSelfSigned(c.cert));
    if (roots.length > 0) {
      chain = chain.filter((c) => !roots.includes(c));
      repairs.push({
        kind: "ROOT_DROPPED",
        description: `the self-signed root ${roots.map((r) => `"${r.cert.subject}"`).join(", ")} was dropped (root_certificate DROP)`,
      });
    }
  }
  const ordered = orderIntermediates(leaf, chain);
  if (ordered.some((c, i) => c !== chain[i])) {
    repairs.push({
      kind: "INTERMEDIATES_REORDERED",
      description: `the intermediates were put in issuing order: ${ordered.map((c) => `"${c.cert.subject}"`).join(" <- ")}`,
    });
  }

  const metadata: CertificateMetadata = { ...facts, ...key };
  return {
    metadata,
    material: {
      certificatePem: pemEncode("CERTIFICATE", leaf.der),
      privateKeyPem: privateKey === undefined ? "" : privateKeyToPkcs8Pem(privateKey.key),
      intermediatesPem: ordered.map((i) => pemEncode("CERTIFICATE", i.cert.der)).join(""),
    },
    hasPrivateKey: privateKey !== undefined,
    intermediateCount: ordered.length,
    repairs,
  };
}

/**
 * The DER of the single certificate in a PEM text (RFC 7468 §5.1), e.g. stored `certificatePem`.
 *
 * @throws InvalidArgumentError INVALID_CERTIFICATE (field `certificate`) when the text holds no certificate
 *   block, a block of another kind, or malformed PEM; MULTIPLE_CERTIFICATES when it holds several.
 *   The DER itself is not decoded.
 */
export function certificateDerFromPem(pem: string): Buffer {
  const found = certificatesFromText(pem, "certificate", false);
  if (found.items.length === 0) {
    throw new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, "certificate", "certificate: no PEM certificate found");
  }
  if (found.items.length > 1) {
    throw new InvalidArgumentError(X509Reason.MULTIPLE_CERTIFICATES, "certificate", `certificate: found ${found.items.length} certificates`);
  }
  return found.items[0].der;
}

function tooMany(field: string, count: number): InvalidArgumentError {
  return new InvalidArgumentError(
    X509Reason.TOO_MANY_INTERMEDIATES,
    field,
    `${field}: ${count} distinct CA certificates is more than the limit of ${MAX_INTERMEDIATES}; supply only the chain from the certificate's issuer up to (at most) the root`,
    { metadata: { limit: String(MAX_INTERMEDIATES) } },
  );
}

/** Byte limits of every material field (limits.ts), checked before anything is decoded. */
const SIZE_LIMITS: [keyof ImportInput, string, number][] = [
  ["certificate", "certificate", MAX_CERTIFICATE_BYTES],
  ["certificateDer", "certificate_der", MAX_CERTIFICATE_BYTES],
  ["privateKey", "private_key", MAX_PRIVATE_KEY_BYTES],
  ["privateKeyDer", "private_key_der", MAX_PRIVATE_KEY_BYTES],
  ["intermediates", "intermediates", MAX_INTERMEDIATES_BYTES],
  ["pkcs12", "pkcs12", MAX_PKCS12_BYTES],
  ["passphrase", "passphrase", MAX_PASSPHRASE_BYTES],
];

function checkSizesAndConflicts(input: ImportInput): void {
  for (const [key, field, limit] of SIZE_LIMITS) {
    const value = input[key];
    const size = typeof value === "string" ? Buffer.byteLength(value, "utf8") : Buffer.isBuffer(value) ? value.length : 0;
    if (size > limit) {
      throw new InvalidArgumentError(
        X509Reason.FIELD_TOO_LARGE,
        field,
        `${field}: ${size} bytes is larger than the limit of ${limit} bytes (${limit / 1024} KiB)${field === "passphrase" ? "" : "; remove anything that is not the certificate material"}`,
        { metadata: { limitBytes: String(limit), sizeBytes: String(size) } },
      );
    }
  }
  const given = (field: string): boolean => {
    switch (field) {
      case "certificate":
        return input.certificate.trim() !== "";
      case "private_key":
        return input.privateKey.trim() !== "";
      case "certificate_der":
        return bytesOf(input.certificateDer).length > 0;
      case "private_key_der":
        return bytesOf(input.privateKeyDer).length > 0;
      default:
        return bytesOf(input.pkcs12).length > 0;
    }
  };
  const pairs: [string, string][] = [
    ["pkcs12", "certificate"],
    ["pkcs12", "certificate_der"],
    ["pkcs12", "private_key"],
    ["pkcs12", "private_key_der"],
    ["certificate_der", "certificate"],
    ["private_key_der", "private_key"],
  ];
  for (const [a, b] of pairs) {
    if (given(a) && given(b)) {
      throw new InvalidArgumentError(
        X509Reason.CONFLICTING_FIELDS,
        b,
        `${b}: it cannot be combined with ${a}; send the material in one form only (${a === "pkcs12" ? "the PKCS#12 file holds the certificate and key" : `${a} or ${b}`})`,
        { metadata: { conflictsWith: a } },
      );
    }
  }
}

/** The user-facing part of a decoding failure; library messages stay in the cause (logs only). */
function defect(err: unknown, der: Buffer): string {
  if (err instanceof CertificateDefect) return err.message;
  // Say what the bytes are when they are a well-known other thing.
  if (looksLikePkcs12(der)) return "it is a PKCS#12 (.pfx/.p12) file; send it in the pkcs12 field with its passphrase";
  if (sniffKeyShape(der) !== undefined) return "it holds a private key, not a certificate; put the key in the private_key field";
  return "it could not be decoded as DER (RFC 5280 §4.1)";
}

/** PFX (RFC 7292 §4): SEQUENCE { version INTEGER 3, authSafe ContentInfo, ... }. */
function looksLikePkcs12(der: Buffer): boolean {
  const outer = sniffTlv(der, 0);
  const version = outer?.tag === TAG.SEQUENCE ? sniffTlv(der, outer.contentStart) : undefined;
  return version?.tag === TAG.INTEGER && contentOf(der, version).equals(Buffer.from([3]));
}

function decode(item: CertificateItem): NumberedCertificate {
  try {
    return { cert: parseCertificateDer(item.der), field: item.field, position: item.position };
  } catch (err) {
    const what = item.field === "intermediates" || item.position > 1 ? `certificate ${item.position}` : "the certificate";
    throw new InvalidArgumentError(
      X509Reason.INVALID_CERTIFICATE,
      item.field,
      `${item.field}: ${what} is not a valid X.509 certificate: ${defect(err, item.der)}; export it again from its source or have it reissued`,
      { cause: err },
    );
  }
}

function matches(privateKey: ParsedPrivateKey, cert: ParsedCertificate): boolean {
  const publicKey = publicKeyOf(cert);
  return publicKey !== undefined && keyMatches(privateKey.key, publicKey);
}

/** Reads the metadata that depends on the leaf alone. */
/** The range a google.protobuf.Timestamp can carry (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z). */
const TIMESTAMP_MIN_MS = Date.parse("0001-01-01T00:00:00Z");
const TIMESTAMP_MAX_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

function leafFacts(leaf: ParsedCertificate, field: string): LeafFacts {
  let dates: { notBefore: Date; notAfter: Date };
  try {
    dates = validity(leaf);
  } catch (err) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_CERTIFICATE,
      field,
      `${field}: the certificate is not a valid X.509 certificate: ${defect(err, leaf.der)}; export it again from its source or have it reissued`,
      { cause: err },
    );
  }
  for (const [name, date] of [["notBefore", dates.notBefore], ["notAfter", dates.notAfter]] as const) {
    const t = date.getTime();
    if (!(t >= TIMESTAMP_MIN_MS && t <= TIMESTAMP_MAX_MS)) {
      throw new InvalidArgumentError(
        X509Reason.INVALID_CERTIFICATE,
        field,
        `${field}: the certificate's ${name} (${Number.isFinite(t) ? date.toISOString() : "unreadable"}) is outside the years 0001 to 9999 that RFC 5280 times and clients can represent; have the certificate reissued`,
      );
    }
  }
  try {
    return {
      subjectCommonName: subjectCommonName(leaf),
      subject: leaf.subject,
      issuer: leaf.issuer,
      serialNumber: serialHex(leaf),
      ...dates,
      sans: subjectAltNames(leaf),
      sha256Fingerprint: leaf.sha256,
      selfSigned: isSelfSigned(leaf),
    };
  } catch (err) {
    throw new InvalidArgumentError(
      X509Reason.INVALID_CERTIFICATE,
      field,
      `${field}: the certificate is not a valid X.509 certificate: ${defect(err, leaf.der)}; export it again from its source or have it reissued`,
      { cause: err },
    );
  }
}
