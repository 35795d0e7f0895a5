/**
 * Size and count limits for imported material. They are checked before any parsing so that a hostile request
 * cannot make the parsers (base64, ASN.1, signature checks) do unbounded work.
 */

/** Largest accepted `certificate` field, in UTF-8 bytes. A real leaf is 1–8 KiB; 64 KiB leaves room for big SAN lists. */
export const MAX_CERTIFICATE_BYTES = 64 * 1024;

/** Largest accepted `private_key` field, in UTF-8 bytes. An RSA 8192 PKCS#1 PEM is about 6.3 KiB. */
export const MAX_PRIVATE_KEY_BYTES = 64 * 1024;

/** Largest accepted `intermediates` field, in UTF-8 bytes. */
export const MAX_INTERMEDIATES_BYTES = 512 * 1024;

/** Most distinct intermediate certificates kept (after dropping duplicates and copies of the leaf). */
export const MAX_INTERMEDIATES = 20;

/** Largest accepted `pkcs12` file, in bytes: a key, a leaf and a long chain fit in 32 KiB; 256 KiB is generous. */
export const MAX_PKCS12_BYTES = 256 * 1024;

/** Largest accepted `passphrase`, in UTF-8 bytes. */
export const MAX_PASSPHRASE_BYTES = 1024;
