/**
 * Envelope encryption of certificate material, in one place (the shape of Tink's KMS envelope AEAD): services
 * hand a certificate version's material in clear and get sealed fields back, and the reverse. They never see a
 * field list, a JWE, a retry or a DEK lookup. See ARCHITECTURE.md, "Envelope format".
 *
 * - Sealing uses the instance's ACTIVE DEK, locked for the caller's transaction (the caller has locked the
 *   instance row first: one lock order for every sealing writer), and counts the encryptions against the DEK's
 *   limit (NIST SP 800-38D §8.3); a DEK without room throws {@link NeedsRotation}.
 * - Each field is its own JWE (./sealed-field.ts) bound to instance, certificate and field.
 * - Opening resolves each DEK once per call through the keyring (cache, then root-key unwrap). A rotation may
 *   re-encrypt a row and destroy its old DEK between reading the row and opening it, so a failed open re-reads
 *   the rows once before calling the ciphertext broken.
 */
import type { CertificateMaterial } from "../domain/certificate.js";
import { DecryptionError } from "../domain/errors.js";
import { certificateName, instanceName } from "../domain/names.js";
import type { CertificateVersionRecord, InstanceRecord, Repositories } from "../domain/ports.js";
import type { Keyring } from "./keyring.js";
import { open as openField, seal as sealField, type SecretField } from "./sealed-field.js";

/** The sealed fields of one certificate version, as stored; "" for an absent field. */
export type SealedMaterial = Pick<CertificateVersionRecord, "dekId" | "certificateJwe" | "privateKeyJwe" | "intermediatesJwe">;

/** Opened material of one version: PEM text, and the private key as bytes the caller zeroes (only when asked). */
export interface OpenedMaterial {
  certificatePem: string;
  intermediatesPem: string;
  /** PKCS#8 PEM bytes; undefined when the version has none or it was not asked for. */
  privateKey?: Buffer;
}

/** Thrown inside a sealing transaction when the active DEK has no room left: roll back, rotate, retry. */
export class NeedsRotation extends Error {
  /** Encryptions the failed call needed. */
  constructor(readonly needed: number) {
    super("the active data encryption key has no room for more encryptions");
  }
}

/** One secret field: its name in the JWE header, its stored column, its member in the clear. */
interface Field {
  field: SecretField;
  column: "certificateJwe" | "privateKeyJwe" | "intermediatesJwe";
  plain: keyof CertificateMaterial;
}
const CERTIFICATE: Field = { field: "certificate", column: "certificateJwe", plain: "certificatePem" };
const PRIVATE_KEY: Field = { field: "private_key", column: "privateKeyJwe", plain: "privateKeyPem" };
const INTERMEDIATES: Field = { field: "intermediates", column: "intermediatesJwe", plain: "intermediatesPem" };
const FIELDS: readonly Field[] = [CERTIFICATE, PRIVATE_KEY, INTERMEDIATES];

/** Most encryptions one certificate version needs. */
const MAX_FIELDS_PER_VERSION = FIELDS.length;

/** Envelope encryption of certificate versions for every instance. */
export class CertificateEnvelope {
  /**
   * @param maxEncryptionsPerDek encryptions after which a DEK takes no more (a share of 2^32, NIST SP 800-38D §8.3).
   */
  constructor(
    private readonly keyring: Keyring,
    private readonly maxEncryptionsPerDek: number,
  ) {}

  /** Whether a DEK that has made `encryptionCount` encryptions may make `needed` more. */
  hasRoom(encryptionCount: number, needed = MAX_FIELDS_PER_VERSION): boolean {
    return encryptionCount + needed <= this.maxEncryptionsPerDek;
  }

  /**
   * Seals one version's material with the instance's active DEK, inside the caller's transaction (which has
   * locked the instance row), and counts the encryptions.
   *
   * @param material PEM text; "" fields stay "" (absent).
   * @returns the sealed fields and the DEK id, to store with the version.
   * @throws NeedsRotation when the DEK has no room; RootKeyError ROOT_KEY_UNAVAILABLE when the root key is off.
   * @example
   * const sealed = await envelope.seal(repos, instance, certificateId, parsed.material);
   */
  async seal(repos: Repositories, instance: InstanceRecord, certificateId: string, material: CertificateMaterial): Promise<SealedMaterial> {
    const present = FIELDS.filter((f) => material[f.plain] !== "");
    const dek = await this.keyring.activeDek(repos, instance);
    try {
      // Room for a whole version, whatever this one holds: rotation points do not depend on the material.
      if (!this.hasRoom(dek.encryptionCount)) throw new NeedsRotation(MAX_FIELDS_PER_VERSION);
      const out: SealedMaterial = { dekId: dek.id, certificateJwe: "", privateKeyJwe: "", intermediatesJwe: "" };
      for (const f of present) {
        const plain = Buffer.from(material[f.plain], "utf8");
        try {
          out[f.column] = await sealField(dek, plain, contextOf(instance.id, certificateId, f.field));
        } finally {
          plain.fill(0);
        }
      }
      await repos.deks.addEncryptions(dek.id, present.length);
      return out;
    } finally {
      dek.release();
    }
  }

  /**
   * Opens the versions `read` returns, re-reading once if one of them fails to open (a rotation moved it).
   *
   * @param read loads the rows; called again for the retry. May throw (e.g. NotFoundError), which propagates.
   * @param versionOf the sealed version inside each row.
   * @param opts `privateKeys`: open private keys too (else `privateKey` stays undefined); `signal`: stop early
   *        when aborted (the rows not opened yet are left out).
   * @returns the rows read last and their opened material, index for index.
   * @throws DecryptionError when a value still does not open; RootKeyError when the root key is off.
   */
  async openAll<T>(
    repos: Repositories,
    instance: InstanceRecord,
    read: () => Promise<T[]>,
    versionOf: (row: T) => CertificateVersionRecord,
    opts: { privateKeys: boolean; signal?: AbortSignal },
  ): Promise<{ rows: T[]; opened: OpenedMaterial[] }> {
    for (let attempt = 0; ; attempt++) {
      const rows = await read();
      try {
        return { rows, opened: await this.#openRows(repos, instance, rows.map(versionOf), opts) };
      } catch (err) {
        if (!(err instanceof DecryptionError) || attempt >= 1) throw err;
      }
    }
  }

  /**
   * Opens one version already read, with its own DEK lookup, without the re-read {@link openAll} does: for a
   * caller that opens rows one at a time, long after reading them (ExportCertificates opens each row right
   * before handing it to a client), and re-reads on a DecryptionError itself. No DEK is held once it returns.
   *
   * @returns the material; the caller zeroes `privateKey`.
   * @throws DecryptionError, RootKeyError.
   */
  async openVersion(repos: Repositories, instance: InstanceRecord, version: CertificateVersionRecord, opts: { privateKeys: boolean }): Promise<OpenedMaterial> {
    return (await this.#openRows(repos, instance, [version], opts))[0]!;
  }

  /**
   * Opens one version (AccessCertificate): {@link openAll} of the single row `read` returns.
   * @returns the version's material as PEM text.
   */
  async open(repos: Repositories, instance: InstanceRecord, read: () => Promise<CertificateVersionRecord>): Promise<CertificateMaterial> {
    const { opened } = await this.openAll(repos, instance, async () => [await read()], (v) => v, { privateKeys: true });
    const m = opened[0]!;
    const privateKeyPem = m.privateKey ? m.privateKey.toString("utf8") : "";
    m.privateKey?.fill(0);
    return { certificatePem: m.certificatePem, privateKeyPem, intermediatesPem: m.intermediatesPem };
  }

  /**
   * Re-encrypts up to `limit` versions still sealed with any of `dekIds` under the active DEK, inside the
   * caller's transaction (instance row locked first). Rows are locked; each is rewritten only if it is still
   * sealed with the DEK it was read with.
   *
   * @returns how many versions were re-encrypted (0 when none is left).
   * @throws NeedsRotation when the active DEK has no room for even one version.
   */
  async reseal(repos: Repositories, instance: InstanceRecord, dekIds: string[], limit: number): Promise<number> {
    const dek = await this.keyring.activeDek(repos, instance);
    const resolver = this.keyring.resolver(repos, instance);
    try {
      if (!this.hasRoom(dek.encryptionCount)) throw new NeedsRotation(MAX_FIELDS_PER_VERSION);
      const fit = Math.max(1, Math.min(limit, Math.floor((this.maxEncryptionsPerDek - dek.encryptionCount) / MAX_FIELDS_PER_VERSION)));
      const batch = await repos.certificates.versionsSealedWith(dekIds, fit, true);
      let sealed = 0;
      for (const v of batch) {
        const next: CertificateVersionRecord = { ...v, dekId: dek.id };
        for (const f of FIELDS) {
          if (v[f.column] === "") continue;
          const ctx = contextOf(instance.id, v.certificateId, f.field);
          const plain = await openField(v[f.column], resolver.resolve, ctx);
          try {
            next[f.column] = await sealField(dek, plain, ctx);
            sealed++;
          } finally {
            plain.fill(0);
          }
        }
        await repos.certificates.reseal(next, v.dekId);
      }
      await repos.deks.addEncryptions(dek.id, sealed);
      return batch.length;
    } finally {
      dek.release();
      resolver.releaseAll();
    }
  }

  /** Opens rows with one resolver (one DEK lookup per DEK id). */
  async #openRows(
    repos: Repositories,
    instance: InstanceRecord,
    versions: CertificateVersionRecord[],
    opts: { privateKeys: boolean; signal?: AbortSignal },
  ): Promise<OpenedMaterial[]> {
    const resolver = this.keyring.resolver(repos, instance);
    const out: OpenedMaterial[] = [];
    try {
      for (const v of versions) {
        // A cancelled call stops work mid-batch, not only between batches.
        if (opts.signal?.aborted) break;
        const bytes = (f: Field): Promise<Buffer> | undefined =>
          v[f.column] === "" ? undefined : openField(v[f.column], resolver.resolve, contextOf(instance.id, v.certificateId, f.field));
        const text = async (f: Field): Promise<string> => {
          const b = await bytes(f);
          if (!b) return "";
          try {
            return b.toString("utf8");
          } finally {
            b.fill(0);
          }
        };
        const certificatePem = await text(CERTIFICATE);
        const intermediatesPem = await text(INTERMEDIATES);
        out.push({ certificatePem, intermediatesPem, privateKey: opts.privateKeys ? await bytes(PRIVATE_KEY) : undefined });
      }
    } catch (err) {
      for (const m of out) m.privateKey?.fill(0);
      throw err;
    } finally {
      resolver.releaseAll();
    }
    return out;
  }
}

/** The authenticated context of one sealed field: a ciphertext copied to any other place fails to open. */
function contextOf(instanceId: string, certificateId: string, field: SecretField) {
  return { instance: instanceName(instanceId), certificate: certificateName(instanceId, certificateId), field };
}
