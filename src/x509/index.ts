/**
 * src/x509: pure parsing of user-supplied certificates, keys and chains (no I/O). See import.ts for the rules.
 */
export { parseImport, readImport, certificateDerFromPem, type ImportInput, type ParsedImport } from "./import.js";
export { pemEncode, splitPemBlocks, type PemBlock, type PemErrorContext } from "./pem.js";
export { MAX_CERTIFICATE_BYTES, MAX_PRIVATE_KEY_BYTES, MAX_INTERMEDIATES_BYTES, MAX_INTERMEDIATES, MAX_PKCS12_BYTES, MAX_PASSPHRASE_BYTES } from "./limits.js";
export { MIN_RSA_BITS, MAX_RSA_BITS } from "./key-algorithm.js";
export { X509Reason } from "./reasons.js";
