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
import { contentOf, sniffTlv, TAG } from "./der.js";
import { decryptIsolated, missingPassphrase, type EncryptedKey } from "./encrypted-key.js";
import { describePublicKey } from "./key-algorithm.js";
import { MAX_CERTIFICATE_BYTES, MAX_INTERMEDIATES, MAX_INTERMEDIATES_BYTES, MAX_PASSPHRASE_BYTES, MAX_PKCS12_BYTES, MAX_PRIVATE_KEY_BYTES } from "./limits.js";
import { normalizePemText, pemEncode } from "./pem.js";
import { readPkcs12, type Pkcs12Contents } from "./pkcs12.js";
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
 * Validates and normalises an import request whose PKCS#12 file or encrypted key (if any) readImport already read
 * or decrypted, in steps: leaf candidates, private key, intermediates, the leaf chosen, the chain ordered.
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
  const keyBuffers = [...(prepared.pkcs12?.privateKeys ?? []), ...[input.privateKeyDer, prepared.decryptedKey?.der].filter((b) => b !== undefined)];
  const state: ParseState = { input, prepared, repairs: [], seen: new Set(), keyBuffers };
  try {
    checkSizesAndConflicts(input);
    for (const [field, text] of [["certificate", input.certificate], ["private_key", input.privateKey], ["intermediates", input.intermediates]] as const) {
      if (text !== "" && normalizePemText(text) !== text) {
        state.repairs.push({ kind: "TEXT_NORMALIZED", description: `${field}: a byte-order mark or line breaks written as "\\n" were undone` });
      }
    }
    const candidates = readLeafCandidates(state);
    const { privateKey, keyField } = readPrivateKey(state, candidates);
    const intermediates = readIntermediates(state, candidates);
    const { leaf, metadata } = chooseLeaf(state, candidates, privateKey, keyField);
    const chain = orderChain(state, candidates, leaf, intermediates);
    const material: CertificateMaterial = {
      certificatePem: pemEncode("CERTIFICATE", leaf.cert.der),
      privateKeyPem: privateKey === undefined ? "" : privateKeyToPkcs8Pem(privateKey.key),
      intermediatesPem: chain.map((i) => pemEncode("CERTIFICATE", i.cert.der)).join(""),
    };
    return { metadata, material, hasPrivateKey: privateKey !== undefined, intermediateCount: chain.length, repairs: state.repairs };
  } finally {
    for (const b of keyBuffers) b.fill(0);
  }
}

/** What the steps of one parseImport share. */
interface ParseState {
  input: ImportInput;
  prepared: PreparedImport;
  /** The repairs made so far, in the order they happened. */
  repairs: ImportRepair[];
  /** SHA-256 of every certificate's bytes met so far: a repeat in a later field is dropped. */
  seen: Set<string>;
  /** Buffers that may hold private-key bytes, zeroed when the parse ends. */
  keyBuffers: Buffer[];
}

/** The certificates given for the leaf, in one field: all as found (repeats included), the new ones, decoded. */
interface LeafCandidates {
  /** `pkcs12`, `certificate_der` or `certificate`. */
  field: string;
  /** With the key blocks of a combined PEM. */
  found: FoundCertificates;
  /** Those not met before, in input order. */
  distinct: CertificateItem[];
  decoded: NumberedCertificate[];
}

/** The certificates of the intermediates field: as found, and those not met before (not decoded yet). */
interface IntermediateItems {
  raw: CertificateItem[];
  distinct: CertificateItem[];
}

/** The items not met before (by the SHA-256 of their bytes, recorded in `seen`), in order. */
function distinctItems(items: CertificateItem[], seen: Set<string>): CertificateItem[] {
  return items.filter((item) => {
    const digest = createHash("sha256").update(item.der).digest("hex");
    if (seen.has(digest)) return false;
    seen.add(digest);
    return true;
  });
}

/**
 * Step 1, the leaf: every certificate given for it (the PKCS#12 contents, certificate_der or certificate), with
 * the key blocks of a combined PEM (to be zeroed), de-duplicated on the bytes before decoding (a bundle of many
 * copies costs hashing only). A lone candidate's public key is checked now: field order puts a refused
 * certificate before anything about the private key.
 * @throws InvalidArgumentError INVALID_CERTIFICATE (none, or only a key), INVALID_PKCS12, TOO_MANY_INTERMEDIATES,
 *   KEY_TOO_WEAK, UNSUPPORTED_KEY_ALGORITHM.
 */
function readLeafCandidates({ input, prepared: { pkcs12 }, repairs, seen, keyBuffers }: ParseState): LeafCandidates {
  const field = pkcs12 ? "pkcs12" : bytesOf(input.certificateDer).length > 0 ? "certificate_der" : "certificate";
  const refuse = (message: string) => new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, field, `${field}: ${message}`);
  let found: FoundCertificates;
  if (pkcs12) {
    if (pkcs12.certificates.length === 0) {
      throw new InvalidArgumentError(X509Reason.INVALID_PKCS12, "pkcs12", "pkcs12: the file holds no certificate; export it again with its certificate");
    }
    const keys = pkcs12.privateKeys.length > 0 ? " and the private key" : "";
    const description = `pkcs12: ${pkcs12.certificates.length} certificate(s)${keys} were taken out of the PKCS#12 file`;
    found = { items: pkcs12.certificates.map((der, i) => ({ der, field, position: i + 1 })), keyBlocks: [], repairs: [{ kind: "PKCS12_UNPACKED", description }] };
  } else if (field === "certificate_der") {
    found = certificatesFromBytes(bytesOf(input.certificateDer), field);
  } else {
    if (input.certificate.trim() === "") {
      throw refuse("the certificate is required; paste the PEM certificate (-----BEGIN CERTIFICATE-----), or send it as certificate_der (binary DER) or pkcs12 (a .pfx/.p12 file)");
    }
    found = certificatesFromText(input.certificate, field, true);
  }
  repairs.push(...found.repairs);
  keyBuffers.push(...found.keyBlocks.map((b) => b.der));
  if (found.items.length === 0 && found.keyBlocks.length > 0) {
    throw refuse("it holds only a private key and no certificate; put the key in private_key and the PEM certificate (-----BEGIN CERTIFICATE-----) here");
  }
  if (found.items.length === 0) {
    throw refuse('no PEM certificate found; paste the certificate in PEM form, from "-----BEGIN CERTIFICATE-----" to "-----END CERTIFICATE-----"');
  }
  const distinct = distinctItems(found.items, seen);
  if (distinct.length - 1 > MAX_INTERMEDIATES) throw tooMany(field, distinct.length - 1);
  const decoded = distinct.map(decode);
  if (decoded.length === 1) describePublicKey(decoded[0].cert, field);
  return { field, found, distinct, decoded };
}

/**
 * Step 2, the private key: the PKCS#12 file's, the one readImport decrypted, the private_key or private_key_der
 * field's, or a key block of a combined PEM (moved, with a PRIVATE_KEY_MOVED repair).
 * @returns the key (undefined when none was given) and the field it came from, for later errors.
 * @throws InvalidArgumentError as parsePrivateKey; INVALID_PKCS12 for several keys in the file; INVALID_CERTIFICATE
 *   for a key block in the leaf's field while a key field is also set.
 */
function readPrivateKey({ input, prepared, repairs }: ParseState, leaf: LeafCandidates): { privateKey?: ParsedPrivateKey; keyField: string } {
  const { pkcs12, decryptedKey } = prepared;
  const passphrase = input.passphrase ?? "";
  let keyField = bytesOf(input.privateKeyDer).length > 0 ? "private_key_der" : "private_key";
  let privateKey: ParsedPrivateKey | undefined;
  if (pkcs12) {
    keyField = "pkcs12";
    if (pkcs12.privateKeys.length > 1) {
      const message = `pkcs12: the file holds ${pkcs12.privateKeys.length} private keys; export only one certificate with its key`;
      throw new InvalidArgumentError(X509Reason.INVALID_PKCS12, "pkcs12", message);
    }
    if (pkcs12.privateKeys.length === 1) privateKey = parseContainedPrivateKey(pkcs12.privateKeys[0], "pkcs12");
  } else {
    const decrypted = (field: string) =>
      decryptedKey?.encrypted.field === field ? parseDecryptedKey(decryptedKey.encrypted, decryptedKey.der, passphrase) : undefined;
    privateKey = decrypted(keyField) ?? parsePrivateKey(input.privateKey, bytesOf(input.privateKeyDer), passphrase);
    if (leaf.found.keyBlocks.length > 0) {
      if (privateKey !== undefined) {
        const message = `${leaf.field}: it holds a private key block although ${keyField} is also set; remove the key from ${leaf.field}`;
        throw new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, leaf.field, message);
      }
      keyField = leaf.field;
      privateKey = decrypted(leaf.field) ?? parsePrivateKeyBlocks(leaf.found.keyBlocks, leaf.field, passphrase);
      repairs.push({ kind: "PRIVATE_KEY_MOVED", description: `${leaf.field}: it also held the private key (a combined PEM file); the key was used as the private key` });
    }
  }
  if (privateKey) repairs.push(...privateKey.repairs);
  return { privateKey, keyField };
}

/**
 * Step 3, the intermediates field: its certificates as found, and those met in neither field before.
 * @throws InvalidArgumentError INVALID_CERTIFICATE when it holds no certificate; TOO_MANY_INTERMEDIATES when the
 *   distinct CA certificates of both fields are more than MAX_INTERMEDIATES.
 */
function readIntermediates({ input, repairs, seen }: ParseState, leaf: LeafCandidates): IntermediateItems {
  if (input.intermediates.trim() === "") return { raw: [], distinct: [] };
  const found = certificatesFromText(input.intermediates, "intermediates", false);
  if (found.items.length === 0) {
    const message = 'intermediates: no PEM certificate found; paste the CA certificates as "-----BEGIN CERTIFICATE-----" blocks';
    throw new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, "intermediates", message);
  }
  repairs.push(...found.repairs);
  const distinct = distinctItems(found.items, seen);
  const count = leaf.distinct.length - 1 + distinct.length;
  if (count > MAX_INTERMEDIATES) throw tooMany("intermediates", count);
  return { raw: found.items, distinct };
}

/**
 * Step 4: the leaf among its candidates (selectLeaf: the private key's certificate, else the one that issued
 * none of the others), its metadata, and proof that the private key's secret part belongs to it (keyPairWorks).
 * @throws InvalidArgumentError PRIVATE_KEY_MISMATCH, MULTIPLE_CERTIFICATES, INVALID_CERTIFICATE, KEY_TOO_WEAK,
 *   UNSUPPORTED_KEY_ALGORITHM.
 */
function chooseLeaf(
  { repairs }: ParseState,
  { field, decoded }: LeafCandidates,
  privateKey: ParsedPrivateKey | undefined,
  keyField: string,
): { leaf: NumberedCertificate; metadata: CertificateMetadata } {
  const keyOf = (c: ParsedCertificate) => {
    const publicKey = publicKeyOf(c);
    return privateKey !== undefined && publicKey !== undefined && keyMatches(privateKey.key, publicKey);
  };
  const leaf = decoded[selectLeaf(decoded, privateKey ? keyOf : undefined, field, keyField)];
  const metadata: CertificateMetadata = { ...leafFacts(leaf.cert, field), ...describePublicKey(leaf.cert, field) };
  const leafPublicKey = publicKeyOf(leaf.cert);
  if (privateKey && (leafPublicKey === undefined || !keyPairWorks(privateKey.key, leafPublicKey))) {
    throw new InvalidArgumentError(
      X509Reason.PRIVATE_KEY_MISMATCH,
      keyField,
      `${keyField}: the private key's secret part does not belong to the certificate's public key (a signature made with it does not verify), although the file claims that public key; the key file is damaged or assembled from two keys, export it again from its source`,
    );
  }
  if (decoded.length > 1 && field !== "pkcs12") {
    repairs.push({
      kind: "CHAIN_SPLIT",
      description: `${field}: it held ${decoded.length} certificates; "${leaf.cert.subject}" was kept as the certificate and the other ${decoded.length - 1} were used as intermediates`,
    });
  }
  return { leaf, metadata };
}

/**
 * Step 5, the chain: the leftover leaf candidates first (they came first), then the intermediates field's new
 * certificates; copies of the leaf and repeats dropped, a self-signed root too when `rootCertificate` is "drop",
 * the rest put in issuing order (RFC 8446 §4.4.2). Each change is a repair.
 * @throws InvalidArgumentError INVALID_CERTIFICATE for an intermediate that does not decode;
 *   INTERMEDIATE_NOT_IN_CHAIN (orderIntermediates).
 */
function orderChain({ input, repairs }: ParseState, candidates: LeafCandidates, leaf: NumberedCertificate, intermediates: IntermediateItems): NumberedCertificate[] {
  const { field, found } = candidates;
  const copiesOfLeaf = (items: CertificateItem[]) => items.filter((item) => item.der.equals(leaf.cert.der)).length;
  // Exact repeats among the certificates given for the leaf: copies of the leaf, or of the CA certificates.
  const leafCopies = copiesOfLeaf(found.items) - 1;
  const leafCopiesInChain = copiesOfLeaf(intermediates.raw);
  const caRepeats = found.items.length - candidates.distinct.length - leafCopies;
  const droppedDuplicates = caRepeats + intermediates.raw.length - intermediates.distinct.length - leafCopiesInChain;
  if (leafCopies > 0) {
    repairs.push({ kind: "LEAF_COPY_DROPPED", description: `${field}: ${leafCopies} extra copy(ies) of the certificate were dropped` });
  }
  let chain = candidates.decoded.filter((c) => c !== leaf).concat(intermediates.distinct.map(decode));
  if (leafCopiesInChain > 0) {
    repairs.push({ kind: "LEAF_COPY_DROPPED", description: `intermediates: ${leafCopiesInChain} copy(ies) of the certificate itself were dropped` });
  }
  if (droppedDuplicates > 0) {
    repairs.push({ kind: "DUPLICATE_INTERMEDIATES_DROPPED", description: `${droppedDuplicates} duplicate CA certificate(s) were dropped` });
  }
  const roots = input.rootCertificate === "drop" ? chain.filter((c) => isSelfSigned(c.cert)) : [];
  if (roots.length > 0) {
    chain = chain.filter((c) => !roots.includes(c));
    const names = roots.map((r) => `"${r.cert.subject}"`).join(", ");
    repairs.push({ kind: "ROOT_DROPPED", description: `the self-signed root ${names} was dropped (root_certificate DROP)` });
  }
  const ordered = orderIntermediates(leaf.cert, chain);
  if (ordered.some((c, i) => c !== chain[i])) {
    const order = ordered.map((c) => `"${c.cert.subject}"`).join(" <- ");
    repairs.push({ kind: "INTERMEDIATES_REORDERED", description: `the intermediates were put in issuing order: ${order}` });
  }
  return ordered;
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
  const given: Record<string, boolean> = {
    certificate: input.certificate.trim() !== "",
    private_key: input.privateKey.trim() !== "",
    certificate_der: bytesOf(input.certificateDer).length > 0,
    private_key_der: bytesOf(input.privateKeyDer).length > 0,
    pkcs12: bytesOf(input.pkcs12).length > 0,
  };
  // Two forms of the same material: the first of each pair is named in the error of the second.
  const pairs = [["pkcs12", "certificate"], ["pkcs12", "certificate_der"], ["pkcs12", "private_key"], ["pkcs12", "private_key_der"], ["certificate_der", "certificate"], ["private_key_der", "private_key"]];
  for (const [a, b] of pairs) {
    if (given[a] && given[b]) {
      throw new InvalidArgumentError(
        X509Reason.CONFLICTING_FIELDS,
        b,
        `${b}: it cannot be combined with ${a}; send the material in one form only (${a === "pkcs12" ? "the PKCS#12 file holds the certificate and key" : `${a} or ${b}`})`,
        { metadata: { conflictsWith: a } },
      );
    }
  }
}

/**
 * INVALID_CERTIFICATE for a certificate that does not decode, saying what the bytes are when they are a well-known
 * other thing; library messages stay in the cause (logs only).
 */
function undecodable(field: string, what: string, der: Buffer, err: unknown): InvalidArgumentError {
  const defect =
    err instanceof CertificateDefect
      ? err.message
      : looksLikePkcs12(der)
        ? "it is a PKCS#12 (.pfx/.p12) file; send it in the pkcs12 field with its passphrase"
        : sniffKeyShape(der) !== undefined
          ? "it holds a private key, not a certificate; put the key in the private_key field"
          : "it could not be decoded as DER (RFC 5280 §4.1)";
  const message = `${field}: ${what} is not a valid X.509 certificate: ${defect}; export it again from its source or have it reissued`;
  return new InvalidArgumentError(X509Reason.INVALID_CERTIFICATE, field, message, { cause: err });
}

/** PFX (RFC 7292 §4): SEQUENCE { version INTEGER 3, authSafe ContentInfo, ... }. */
function looksLikePkcs12(der: Buffer): boolean {
  const outer = sniffTlv(der, 0);
  const version = outer?.tag === TAG.SEQUENCE ? sniffTlv(der, outer.contentStart) : undefined;
  return version?.tag === TAG.INTEGER && contentOf(der, version).equals(Buffer.from([3]));
}

/** Decodes one certificate, refusing it with its field and position. */
function decode(item: CertificateItem): NumberedCertificate {
  try {
    return { cert: parseCertificateDer(item.der), field: item.field, position: item.position };
  } catch (err) {
    const what = item.field === "intermediates" || item.position > 1 ? `certificate ${item.position}` : "the certificate";
    throw undecodable(item.field, what, item.der, err);
  }
}

/** The range a google.protobuf.Timestamp can carry (0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z). */
const TIMESTAMP_MIN_MS = Date.parse("0001-01-01T00:00:00Z");
const TIMESTAMP_MAX_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/**
 * The metadata that depends on the leaf alone.
 * @throws InvalidArgumentError INVALID_CERTIFICATE when a field of it cannot be read, or a validity time lies
 *   outside what a Timestamp carries.
 */
function leafFacts(leaf: ParsedCertificate, field: string): Omit<CertificateMetadata, "keyAlgorithm" | "keySize" | "keyCurve"> {
  const read = <T>(facts: () => T): T => {
    try {
      return facts();
    } catch (err) {
      throw undecodable(field, "the certificate", leaf.der, err);
    }
  };
  const dates = read(() => validity(leaf));
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
  return read(() => ({
    subjectCommonName: subjectCommonName(leaf),
    subject: leaf.subject,
    issuer: leaf.issuer,
    serialNumber: serialHex(leaf),
    ...dates,
    sans: subjectAltNames(leaf),
    sha256Fingerprint: leaf.sha256,
    selfSigned: isSelfSigned(leaf),
  }));
}
