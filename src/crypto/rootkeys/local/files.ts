/**
 * Files of the `local` keystore: atomic create and replace (temp file, fsync, link or rename, fsync of the
 * directory), scrubbing of the replaced file, permission checks, consistent reads, and the cross-process lock.
 *
 * - Created with `link(2)` from a fully written temp file: the same no-clobber semantics as
 *   `open(path, 'wx', 0o600)` but never a half-written keystore.
 * - Refused if group or other have any permission bit (`mode & 0o077`), or if it is a symbolic link.
 * - The replaced file's bytes are overwritten with zeros (best effort: SSDs and copy-on-write filesystems may
 *   keep old blocks, so a destroyed key is only as gone as the storage allows).
 */
import { randomBytes } from "node:crypto";
import { constants as fsConstants, promises as fsp } from "node:fs";
import type { BigIntStats } from "node:fs";
import { hostname } from "node:os";
import path from "node:path";

import { RootKeyError } from "../../../domain/errors.js";
import { KeystoreFileError, LOCAL_BACKEND, LOCAL_KEYSTORE_FORMAT, newKeyRecord, parseDocument, serialize, type LocalKeystoreDocument } from "./keystore.js";

const LOCK_WAIT_MS = 5_000;
const LOCK_STALE_MS = 30_000;

/** The file's text and the identity it had when read (to notice later changes with one stat). */
interface FileSnapshot {
  text: string;
  fingerprint: string;
}

/** Device, inode, size and times: changes whenever the keystore is replaced or written. */
export function fingerprintOf(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/**
 * stat + the checks every use repeats: a regular file, not a symbolic link, with no group/other permission bits.
 * @throws KeystoreFileError naming the fix; the fs error when it cannot be stat'ed.
 */
export async function statChecked(file: string): Promise<BigIntStats> {
  // lstat: the keystore is replaced by rename, which would replace a symlink rather than follow it.
  const st = await fsp.lstat(file, { bigint: true });
  if (st.isSymbolicLink()) throw new KeystoreFileError(`keystore ${file} is a symbolic link; configure the path of the real file`);
  checkStat(file, st);
  return st;
}

function checkStat(file: string, st: BigIntStats): void {
  if (!st.isFile()) throw new KeystoreFileError(`keystore ${file} is not a regular file`);
  const mode = Number(st.mode) & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeystoreFileError(
      `keystore ${file} has mode 0${mode.toString(8)} but holds root keys and must be accessible by its owner only; run: chmod 600 ${file}`,
    );
  }
}

/**
 * Reads the file through one descriptor and re-stats it after reading: if a writer replaced or scrubbed the inode
 * meanwhile (see writeAtomic) the fingerprints differ, or the path names another inode, and we read again from
 * the path, which by then names the new file.
 */
async function readSnapshot(file: string): Promise<FileSnapshot> {
  for (let attempt = 0; ; attempt++) {
    const fh = await fsp.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const before = await fh.stat({ bigint: true });
      checkStat(file, before);
      const text = await fh.readFile({ encoding: "utf8" });
      const after = await fh.stat({ bigint: true });
      // The path may name another file by now: a writer renamed the new keystore into place and is zeroing this
      // one, possibly between our two fstats (same fingerprint, zeros read). Read the file the path names.
      const current = await fsp.lstat(file, { bigint: true }).catch(() => undefined);
      const replaced = current === undefined || current.dev !== after.dev || current.ino !== after.ino;
      if ((replaced || fingerprintOf(before) !== fingerprintOf(after)) && attempt < 5) continue;
      return { text, fingerprint: fingerprintOf(after) };
    } finally {
      await fh.close();
    }
  }
}

/**
 * Writes `data` to `target` atomically: temp file in the same directory (mode 0600, O_EXCL), fsync, then
 * `link` (mode "create": fails with EEXIST if the target exists, never clobbers) or `rename` (mode "replace"),
 * then fsync of the directory so the new name survives a crash. On replace the old inode is zero-filled.
 */
export async function writeAtomic(target: string, data: string, mode: "create" | "replace"): Promise<void> {
  const dir = path.dirname(target);
  const base = path.basename(target);
  const tag = `${process.pid}.${randomBytes(6).toString("hex")}`;
  const tmp = path.join(dir, `.${base}.${tag}.tmp`);
  const fh = await fsp.open(tmp, "wx", 0o600);
  try {
    await fh.chmod(0o600); // the umask may have removed bits, never added: make it exact anyway
    await fh.writeFile(data, "utf8");
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    if (mode === "create") {
      await fsp.link(tmp, target);
      await fsp.unlink(tmp);
    } else {
      const old = path.join(dir, `.${base}.${tag}.old`);
      let haveOld = false;
      try {
        await fsp.link(target, old);
        haveOld = true;
      } catch {
        // No hard links here: skip the scrub, the rename alone is still atomic.
      }
      try {
        await fsp.rename(tmp, target);
      } catch (err) {
        if (haveOld) await fsp.unlink(old).catch(() => undefined); // still the live file: just drop the extra name
        throw err;
      }
      if (haveOld) await scrub(old, target);
    }
    await fsyncDir(dir);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Overwrites a replaced keystore's bytes with zeros, then unlinks it (best effort; see the module comment). A file
 * that is still the live keystore `target` (a writer killed between linking the old name and the rename leaves the
 * `.old` name on the live file) is only unlinked: zeroing it would wipe every key.
 */
async function scrub(file: string, target: string): Promise<void> {
  try {
    // O_NOFOLLOW: never write zeros through a link planted in place of our own temp file.
    const fh = await fsp.open(file, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
    try {
      const st = await fh.stat();
      const live = await fsp.lstat(target).catch(() => undefined);
      if (live !== undefined && live.dev === st.dev && live.ino === st.ino) return;
      if (st.size > 0) await fh.write(Buffer.alloc(st.size), 0, st.size, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } finally {
    await fsp.rm(file, { force: true });
  }
}

/**
 * Scrubs and removes the temp files of a writer that was killed mid-change (`.<keystore>.<pid>.<tag>.tmp` or
 * `.old`): they hold key material, a destroyed key's included. Call while holding the lock, when no other writer
 * can have one open.
 * @returns how many were removed.
 */
export async function scrubLeftovers(target: string): Promise<number> {
  const dir = path.dirname(target);
  const escaped = path.basename(target).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const leftover = new RegExp(`^\\.${escaped}\\.[0-9]+\\.[0-9a-f]{12}\\.(tmp|old)$`);
  let removed = 0;
  for (const name of await fsp.readdir(dir)) {
    if (!leftover.test(name)) continue;
    await scrub(path.join(dir, name), target).catch(() => fsp.rm(path.join(dir, name), { force: true }));
    removed++;
  }
  return removed;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Where this process runs, as far as its pids mean anything: the host name, the boot (a pid of an earlier boot
 * is not a process now) and the pid namespace (containers on one host with one name still have their own pids).
 * Undefined where /proc does not say (then only a lock's age can show it abandoned).
 */
async function pidScope(): Promise<string | undefined> {
  try {
    const [boot, ns] = await Promise.all([fsp.readFile("/proc/sys/kernel/random/boot_id", "utf8"), fsp.readlink("/proc/self/ns/pid")]);
    return `${hostname()}/${boot.trim()}/${ns}`;
  } catch {
    return undefined;
  }
}

/**
 * When process `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat, proc(5)): "gone" when there is
 * no such process here, "unknown" when /proc could not be read for another reason (then it may well be alive). A
 * pid is reused; a pid with its start time is not (within one boot and pid namespace).
 */
async function processStart(pid: number): Promise<string | "gone" | "unknown"> {
  let stat: string;
  try {
    stat = await fsp.readFile(`/proc/${pid}/stat`, "utf8");
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "gone" : "unknown";
  }
  // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
  const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  return start !== undefined && /^\d+$/.test(start) ? start : "unknown";
}

/**
 * Whether the lock whose content is `held` (`<pid> <start> <scope> <nonce>`) is abandoned: older than
 * LOCK_STALE_MS (far longer than any keystore change holds it), or its owner ran where our pids mean the same,
 * wrote its start time, and that process (pid and start time) is gone. A lock without a start time (its owner
 * could not read it) is judged by age only.
 */
async function abandoned(held: string, mtimeMs: number, scope: string | undefined): Promise<boolean> {
  if (Date.now() - mtimeMs > LOCK_STALE_MS) return true;
  const [pid, start, ownerScope] = held.trim().split(" ");
  if (scope === undefined || ownerScope !== scope || !/^\d+$/.test(pid ?? "") || !/^\d+$/.test(start ?? "")) return false;
  const now = await processStart(Number(pid));
  return now === "gone" || (now !== "unknown" && now !== start);
}

/**
 * Creates `file` holding `content`, or returns false when it exists. Written to a temporary name first and then
 * linked into place (link(2) fails on an existing name, like O_EXCL), so the file never exists without its content:
 * a process killed mid-way leaves at worst a temporary file, never an empty lock only age could clear.
 */
async function createExclusive(file: string, content: string): Promise<boolean> {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  await fsp.writeFile(temp, content, { mode: 0o600, flag: "wx" });
  try {
    await fsp.link(temp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    await fsp.rm(temp, { force: true });
  }
}

/** The most of a lock file read: ours are under 200 bytes; anything longer is judged by its start and age. */
const LOCK_READ_BYTES = 4096;

/**
 * A lock file's content (its first LOCK_READ_BYTES) and age; "gone" when it does not exist; "unreadable" when it
 * cannot be read or is not a regular file (opened non-blocking, so a FIFO in its place cannot hang us).
 */
async function readLock(file: string): Promise<{ content: string; mtimeMs: number } | "gone" | "unreadable"> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    const st = await fh.stat();
    if (!st.isFile()) return "unreadable";
    const buf = Buffer.alloc(LOCK_READ_BYTES);
    const { bytesRead } = await fh.read(buf, 0, LOCK_READ_BYTES, 0);
    return { content: buf.subarray(0, bytesRead).toString("utf8"), mtimeMs: st.mtimeMs };
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "gone" : "unreadable";
  } finally {
    await fh?.close();
  }
}

/** Removes `file` if it still holds `content` (a lock someone else has since taken is left alone). */
async function removeIfHolds(file: string, content: string): Promise<void> {
  const now = await readLock(file);
  if (typeof now === "object" && now.content === content) await fsp.rm(file, { force: true });
}

let ownIdentity: Promise<{ scope: string | undefined; start: string | undefined }> | undefined;

/**
 * Cross-process exclusive lock: `<keystore>.lock`, created with O_EXCL and holding `<pid> <start> <scope> <nonce>`.
 * A lock whose owner is gone (same host, boot and pid namespace, and that pid with that start time no longer runs: a
 * replica or CLI killed while changing keys) is taken over at once; any lock older than 30 s too. Waiters take over
 * one at a time, under `<keystore>.lock.takeover` (O_EXCL as well, abandoned only by age), and remove the lock only
 * if it still holds what they judged, so two waiters never both take over one dead lock.
 *
 * @returns a function that releases the lock (removing it only while it is still ours).
 * @throws KeystoreFileError when another live process holds it for longer than 5 s; the file system's error.
 */
export async function acquireLock(lockPath: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  // This process's identity does not change: read it once (every keystore change takes the lock).
  // A failed read is not kept: the next lock tries again (meanwhile "-" makes others judge our lock by age only).
  ownIdentity ??= Promise.all([pidScope(), processStart(process.pid)]).then(([scope, start]) => ({ scope, start: /^\d+$/.test(start) ? start : undefined }));
  const { scope, start } = await ownIdentity;
  if (scope === undefined || start === undefined) ownIdentity = undefined;
  const mine = `${process.pid} ${start ?? "-"} ${scope ?? "-"} ${randomBytes(8).toString("hex")}\n`;
  const guard = `${lockPath}.takeover`;
  for (;;) {
    if (await createExclusive(lockPath, mine)) return () => removeIfHolds(lockPath, mine);
    const seen = await readLock(lockPath);
    // Released meanwhile: try again at once. A lock that cannot be read counts as held (the deadline decides).
    if (seen === "gone") continue;
    if (seen !== "unreadable" && (await abandoned(seen.content, seen.mtimeMs, scope))) {
      if (await createExclusive(guard, mine)) {
        try {
          await removeIfHolds(lockPath, seen.content);
        } finally {
          await removeIfHolds(guard, mine);
        }
        continue;
      }
      // The guard is judged like a lock: its owner may have been killed while taking over.
      const g = await readLock(guard);
      if (typeof g === "object" && (await abandoned(g.content, g.mtimeMs, scope))) await removeIfHolds(guard, g.content);
    }
    if (Date.now() > deadline) {
      throw new KeystoreFileError(`keystore lock ${lockPath} is held by another process; retry, or remove the file if no keys CLI or service is changing keys`);
    }
    await new Promise((r) => setTimeout(r, 25 + Math.floor(Math.random() * 25)));
  }
}

/** Reads and validates the keystore, with the file identity it had. */
export async function loadKeystore(file: string): Promise<{ doc: LocalKeystoreDocument; fingerprint: string }> {
  const { text, fingerprint } = await readSnapshot(file);
  return { doc: parseDocument(file, text), fingerprint };
}

/** Any failure to use the keystore file as the port reports it: ROOT_KEY_BACKEND_UNAVAILABLE with the fix, if known. */
export function keystoreUnavailable(file: string, err: unknown): RootKeyError {
  if (err instanceof RootKeyError) return err;
  const detail = err instanceof KeystoreFileError ? err.message : `keystore ${file} cannot be read or written (${(err as NodeJS.ErrnoException)?.code ?? "error"})`;
  return new RootKeyError("ROOT_KEY_BACKEND_UNAVAILABLE", `local root-key backend unavailable: ${detail}`, { backend: LOCAL_BACKEND }, err);
}

/**
 * Makes sure the keystore exists: creates it (directory mode 0700, file 0600) with root key `defaultKeyId`
 * version 1 when it is missing and `createIfMissing`; another process creating it first wins ('wx' semantics).
 * @throws Error naming the fix when it is missing and may not be created; the fs error otherwise.
 */
export async function ensureKeystore(file: string, createIfMissing: boolean, defaultKeyId: string): Promise<void> {
  try {
    await fsp.lstat(file);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (!createIfMissing) {
    throw new Error(`keystore ${file} does not exist; fix the path, or create it (the service creates it on first start; the keys CLI with "init")`);
  }
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const doc: LocalKeystoreDocument = { format: LOCAL_KEYSTORE_FORMAT, keys: [newKeyRecord(defaultKeyId, new Date().toISOString())] };
  try {
    await writeAtomic(file, serialize(doc), "create");
  } catch (err) {
    // Another process created it first: use theirs (the 'wx' semantics).
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
}
