/**
 * The soak's traffic: workers that each run a random mix of every RPC against the server, and know what each
 * answer must be. A worker alone owns its certificates (bench/soak/certificates.ts) in one of the shared
 * instances, and alone owns the short-lived instances it creates, so it can check every answer exactly:
 * material equal to what it imported, listings and exports holding exactly its live certificates, NOT_FOUND after
 * its own delete. An answer other than the expected one, or a failed check, is an error; after one the worker
 * rebuilds its view of its certificates from the server (`resync`) so one error is not followed by a cascade.
 */
import { randomUUID, createPrivateKey } from "node:crypto";
import { credentials, status, type ServiceError } from "@grpc/grpc-js";
import * as apiKeyPb from "../../gen/ts/certmanager/v1/api_key.js";
import * as certificatePb from "../../gen/ts/certmanager/v1/certificate.js";
import * as instancePb from "../../gen/ts/certmanager/v1/instance.js";
import * as reclamationPb from "../../gen/ts/certmanager/v1/reclamation.js";
import * as healthPb from "../../gen/ts/grpc/health/v1/health.js";
import { bearer, clientsFor, promisify, type Clients, type Rpc } from "../../test/helpers/service.js";
import { squash, type PoolCertificate } from "./certificates.js";

/** Every call gets this deadline: a server that stops answering shows as DEADLINE_EXCEEDED errors, not a hang. */
const DEADLINE_MS = 30_000;

/** Clients of every service, each over a connection of its own, authenticated with one key. */
export interface Connection extends Clients {
  health: Rpc<typeof healthPb.HealthService>;
}

/**
 * Opens clients of every service to `address`, sending `apiKey` as a bearer token, with a deadline on every call.
 * grpc-js shares a connection between clients with the same target and options; a local subchannel pool gives
 * each client its own, so one set holds 7 connections, as separate client programs would.
 */
export function connect(address: string, apiKey: string): Connection {
  const channelOptions = { "grpc.use_local_subchannel_pool": 1 };
  const clients = clientsFor(address, apiKey, credentials.createInsecure(), { deadlineMs: DEADLINE_MS, channelOptions });
  const health = new healthPb.HealthClient(address, credentials.createInsecure(), { ...channelOptions, interceptors: [bearer(apiKey)] });
  return {
    ...clients,
    health: promisify(health, healthPb.HealthService, healthPb, { deadlineMs: DEADLINE_MS }),
    close: () => {
      clients.close();
      health.close();
    },
  };
}

/** Where workers report each call: its method, its latency (ms) and how it ended. */
export interface Recorder {
  /** `outcome`: `ok`, `expected` (the failure the worker expected, e.g. NOT_FOUND after its delete), or the error kind. */
  record(method: string, ms: number, outcome: string, detail?: string): void;
}

/** A counting semaphore: export streams are capped per caller (CM_EXPORT_STREAMS_PER_CALLER, 8), and every worker calls as the same administrator. */
export class Semaphore {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

/**
 * At most `maxRunning` runs at a time, and at least `minIntervalMs` between starts; a worker that finds it busy
 * does something else rather than wait (waiting workers would lower the concurrency the soak claims).
 */
export class Pacer {
  private running = 0;
  private lastStart = -Infinity;
  constructor(
    private readonly minIntervalMs: number,
    private readonly maxRunning = 1,
  ) {}
  /** Whether `run` would start now. */
  ready(): boolean {
    return this.running < this.maxRunning && performance.now() - this.lastStart >= this.minIntervalMs;
  }
  async run(fn: () => Promise<void>): Promise<void> {
    if (!this.ready()) return;
    this.running++;
    this.lastStart = performance.now();
    try {
      await fn();
    } finally {
      this.running--;
    }
  }
}

/** An unexpected answer or a failed check; already recorded when thrown. */
class Unexpected extends Error {}

const codeName = (code: number | undefined) => (code === undefined ? "NO_CODE" : (status[code] ?? `CODE_${code}`));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const chance = (p: number) => Math.random() < p;

/** What every worker shares. */
export interface WorkerContext {
  connection: Connection;
  recorder: Recorder;
  exports: Semaphore;
  /**
   * Instance lifecycles: up to 4 at a time, one started every 500 ms at most (far above any real onboarding
   * rate), so creates and reclaims meet in the keystore's group commits. (Before group commit, a keystore change
   * waited for every one queued before it within the keyring's 10 s backend timeout, and 64 unpaced workers made
   * most CreateInstance calls fail UNAVAILABLE.)
   */
  lifecycles: Pacer;
  /** The server's host:port, for the clients of the API keys lifecycles make. */
  address: string;
  /** True once the traffic must end: the worker finishes its current operation and returns. */
  stopping(): boolean;
}

/** One worker: its instance, its certificates, and what it knows the server holds of them. */
export class Worker {
  /** Pool index -> the certificate it is live as, with its etag as last answered. */
  private readonly live = new Map<number, { name: string; etag: string; version: number }>();
  private readonly byFingerprint: Map<string, PoolCertificate>;
  private readonly domain: string;
  private n = 0;

  constructor(
    private readonly id: number,
    private readonly ctx: WorkerContext,
    private readonly parent: string,
    private readonly owned: readonly PoolCertificate[],
  ) {
    this.byFingerprint = new Map(owned.map((p) => [p.fingerprint, p]));
    this.domain = `w${id}.soak.test`;
  }

  private get c(): Connection {
    return this.ctx.connection;
  }

  private free(): PoolCertificate[] {
    return this.owned.filter((p) => !this.live.has(p.index));
  }

  private liveList(): [PoolCertificate, { name: string; etag: string; version: number }][] {
    return this.owned.filter((p) => this.live.has(p.index)).map((p) => [p, this.live.get(p.index)!]);
  }

  /** A call that must succeed. */
  private async ok<T>(method: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      const res = await fn();
      this.ctx.recorder.record(method, performance.now() - t0, "ok");
      return res;
    } catch (err) {
      const e = err as ServiceError;
      this.ctx.recorder.record(method, performance.now() - t0, codeName(e.code), `${method}: ${e.message}`);
      throw new Unexpected(method);
    }
  }

  /** A call that must fail with `code`. */
  private async fails(method: string, code: status, fn: () => Promise<unknown>): Promise<void> {
    const t0 = performance.now();
    try {
      await fn();
    } catch (err) {
      const e = err as ServiceError;
      if (e.code === code) {
        this.ctx.recorder.record(method, performance.now() - t0, "expected");
        return;
      }
      this.ctx.recorder.record(method, performance.now() - t0, codeName(e.code), `${method}: expected ${codeName(code)}, got ${e.message}`);
      throw new Unexpected(method);
    }
    this.ctx.recorder.record(method, performance.now() - t0, "UNEXPECTED_OK", `${method}: expected ${codeName(code)}, it succeeded`);
    throw new Unexpected(method);
  }

  /** A check on an answer: recorded as a `CHECK_<what>` error when false. */
  private check(ok: boolean, what: string, detail: string): void {
    if (ok) return;
    this.ctx.recorder.record("check", 0, `CHECK_${what}`, `worker ${this.id}: ${detail}`);
    throw new Unexpected(what);
  }

  /** Runs operations until the context says stop. */
  async run(): Promise<void> {
    // Empty at the start; an error here is recorded like any other, and the loop's resync tries again.
    await this.resync().catch(() => undefined);
    while (!this.ctx.stopping()) {
      try {
        await this.step();
      } catch (err) {
        if (!(err instanceof Unexpected)) {
          this.ctx.recorder.record("worker", 0, "CLIENT_EXCEPTION", `worker ${this.id}: ${(err as Error)?.stack ?? String(err)}`);
        }
        // The server's state may differ from the worker's view now: read it back before going on.
        await this.resync().catch(() => undefined);
      }
    }
  }

  /** One operation, chosen at random among those the worker's state allows, by weight. */
  private async step(): Promise<void> {
    const live = this.live.size;
    const free = this.owned.length - live;
    const ops: [number, () => Promise<void>][] = [
      [live > 0 ? 20 : 0, () => this.getCertificate()],
      [live > 0 ? 15 : 0, () => this.accessCertificate()],
      [8, () => this.listMine()],
      [4, () => this.listShared()],
      [live > 0 ? 8 : 0, () => this.updateCertificate()],
      [free > 0 ? (live < 2 ? 16 : 6) : 0, () => this.importCertificate()],
      [live > 0 && free > 0 ? 6 : 0, () => this.reimportCertificate()],
      [live > 1 ? 6 : 0, () => this.deleteCertificate()],
      [3, () => this.exportCertificates()],
      [free >= 2 ? 2 : 0, () => this.importStream()],
      [this.ctx.lifecycles.ready() ? 4 : 0, () => this.ctx.lifecycles.run(() => this.instanceLifecycle())],
      [6, () => this.otherReads()],
    ];
    let r = Math.random() * ops.reduce((a, [w]) => a + w, 0);
    for (const [w, op] of ops) {
      if ((r -= w) < 0) return op();
    }
  }

  /** Rebuilds the worker's view from the server: its certificates are those the domain filter lists. */
  async resync(): Promise<void> {
    const names = await this.listAll({ parent: this.parent, filter: `domain = "${this.domain}"`, pageSize: 100 }, "ListCertificates(resync)");
    this.live.clear();
    for (const cert of names) {
      const p = this.byFingerprint.get(cert.sha256Fingerprint);
      this.check(p !== undefined, "RESYNC", `the instance lists ${cert.name} (${cert.sha256Fingerprint}) under ${this.domain}, none of this worker's certificates`);
      this.live.set(p!.index, { name: cert.name, etag: cert.etag, version: cert.version });
    }
  }

  private async listAll(req: certificatePb.ListCertificatesRequest | Partial<certificatePb.ListCertificatesRequest>, method: string): Promise<certificatePb.Certificate[]> {
    const out: certificatePb.Certificate[] = [];
    let pageToken = "";
    do {
      const res = await this.ok(method, () => this.c.certificates.listCertificates({ ...req, pageToken }));
      out.push(...res.certificates);
      pageToken = res.nextPageToken;
    } while (pageToken !== "");
    return out;
  }

  private checkMetadata(cert: certificatePb.Certificate | undefined, p: PoolCertificate, what: string): certificatePb.Certificate {
    this.check(cert !== undefined, what, `${what} answered no certificate`);
    this.check(cert!.sha256Fingerprint === p.fingerprint, what, `${what} ${cert!.name}: fingerprint ${cert!.sha256Fingerprint}, imported ${p.fingerprint}`);
    this.check(cert!.hasPrivateKey && cert!.intermediateCount === 1, what, `${what} ${cert!.name}: has_private_key ${cert!.hasPrivateKey}, intermediate_count ${cert!.intermediateCount}`);
    return cert!;
  }

  private checkMaterial(res: { certificate: string; privateKey: string; intermediates: string }, p: PoolCertificate, what: string): void {
    this.check(squash(res.certificate) === squash(p.certificate), what, `${what}: the certificate differs from the one imported`);
    this.check(squash(res.intermediates) === squash(p.intermediates), what, `${what}: the intermediates differ from those imported`);
    let same = false;
    try {
      same = createPrivateKey(res.privateKey).export({ format: "der", type: "pkcs8" }).equals(p.privateKeyDer);
    } catch {
      same = false;
    }
    // Never the key itself in the message.
    this.check(same, what, `${what}: the private key differs from the one imported`);
  }

  private async getCertificate(): Promise<void> {
    const [p, cur] = pick(this.liveList());
    const res = await this.ok("GetCertificate", () => this.c.certificates.getCertificate({ name: cur.name }));
    const cert = this.checkMetadata(res.certificate, p, "GetCertificate");
    this.check(cert.etag === cur.etag && cert.version === cur.version, "GetCertificate", `${cur.name}: etag ${cert.etag} version ${cert.version}, expected ${cur.etag} version ${cur.version}`);
  }

  private async accessCertificate(): Promise<void> {
    const [p, cur] = pick(this.liveList());
    const res = await this.ok("AccessCertificate", () => this.c.certificates.accessCertificate({ name: cur.name }));
    this.check(res.version === cur.version, "AccessCertificate", `${cur.name}: version ${res.version}, expected ${cur.version}`);
    this.checkMaterial(res, p, "AccessCertificate");
  }

  /** Its own certificates, one or two per page, in one of the orders: exactly the live ones, each once. */
  private async listMine(): Promise<void> {
    const orderBy = pick(["", "not_after", "display_name desc", "create_time desc"]);
    const certs = await this.listAll({ parent: this.parent, filter: `domain = "${this.domain}"`, orderBy, pageSize: pick([1, 2]) }, "ListCertificates");
    const got = certs.map((c) => c.name).sort();
    const want = [...this.live.values()].map((l) => l.name).sort();
    this.check(JSON.stringify(got) === JSON.stringify(want), "ListCertificates", `domain ${this.domain} ordered by "${orderBy}" listed ${got.length} (${got.join(" ")}), live ${want.length} (${want.join(" ")})`);
  }

  /** The whole shared instance, filtered: others change theirs meanwhile, but its own EC certificates must be there once each. */
  private async listShared(): Promise<void> {
    const certs = await this.listAll({ parent: this.parent, filter: `key_algorithm = EC AND not_after > "2020-01-01T00:00:00Z"`, orderBy: pick(["", "not_after desc"]), pageSize: 25 }, "ListCertificates");
    const names = certs.map((c) => c.name);
    for (const [p, cur] of this.liveList()) {
      if (p.keyAlgorithm !== "EC") continue;
      const seen = names.filter((n) => n === cur.name).length;
      this.check(seen === 1, "ListCertificates", `the shared listing held ${cur.name} ${seen} times`);
    }
  }

  private async updateCertificate(): Promise<void> {
    const [, cur] = pick(this.liveList());
    const n = ++this.n;
    const res = await this.ok("UpdateCertificate", () =>
      this.c.certificates.updateCertificate({
        certificate: { name: cur.name, etag: cur.etag, displayName: `w${this.id} #${n}`, labels: { worker: String(this.id), n: String(n) } },
        updateMask: ["display_name", "labels"],
      }),
    );
    this.check(res.certificate?.displayName === `w${this.id} #${n}` && res.certificate.etag !== cur.etag, "UpdateCertificate", `${cur.name}: display name ${res.certificate?.displayName}, etag ${res.certificate?.etag} (was ${cur.etag})`);
    cur.etag = res.certificate!.etag;
  }

  private async importCertificate(): Promise<void> {
    const p = pick(this.free());
    const requestId = chance(0.3) ? randomUUID() : "";
    const req = { parent: this.parent, certificate: p.certificate, privateKey: p.privateKey, intermediates: p.intermediates, displayName: `w${this.id} c${p.index}`, labels: { worker: String(this.id) }, requestId };
    const res = await this.ok("ImportCertificate", () => this.c.certificates.importCertificate(req));
    const cert = this.checkMetadata(res.certificate, p, "ImportCertificate");
    this.live.set(p.index, { name: cert.name, etag: cert.etag, version: cert.version });
    if (requestId !== "") {
      // AIP-155: the same request again answers the certificate the first one made.
      const again = await this.ok("ImportCertificate(replay)", () => this.c.certificates.importCertificate(req));
      this.check(again.certificate?.name === cert.name, "ImportCertificate", `a replay of request ${requestId} answered ${again.certificate?.name}, the first ${cert.name}`);
    }
  }

  /** Replaces a live certificate's material with one of its free ones; sometimes reads the previous version back. */
  private async reimportCertificate(): Promise<void> {
    const [old, cur] = pick(this.liveList());
    const p = pick(this.free());
    const res = await this.ok("ReimportCertificate", () =>
      this.c.certificates.reimportCertificate({ name: cur.name, certificate: p.certificate, privateKey: p.privateKey, intermediates: p.intermediates, etag: cur.etag }),
    );
    const cert = this.checkMetadata(res.certificate, p, "ReimportCertificate");
    this.check(cert.name === cur.name && cert.version === cur.version + 1, "ReimportCertificate", `${cur.name}: answered ${cert.name} version ${cert.version}, expected version ${cur.version + 1}`);
    this.live.delete(old.index);
    this.live.set(p.index, { name: cert.name, etag: cert.etag, version: cert.version });
    if (chance(0.3)) {
      const prev = await this.ok("AccessCertificate(version)", () => this.c.certificates.accessCertificate({ name: cert.name, version: cur.version }));
      this.checkMaterial(prev, old, "AccessCertificate(version)");
    }
  }

  private async deleteCertificate(): Promise<void> {
    const [p, cur] = pick(this.liveList());
    await this.ok("DeleteCertificate", () => this.c.certificates.deleteCertificate({ name: cur.name, etag: cur.etag }));
    this.live.delete(p.index);
    await this.fails("GetCertificate(deleted)", status.NOT_FOUND, () => this.c.certificates.getCertificate({ name: cur.name }));
  }

  /** A short export: its own certificates exactly, or the whole shared instance holding its own once each. */
  private async exportCertificates(): Promise<void> {
    const mine = chance(0.7);
    await this.ctx.exports.run(async () => {
      const t0 = performance.now();
      const got: { name: string; ok: boolean }[] = [];
      try {
        const call = this.c.certificateClient.exportCertificates(
          certificatePb.ExportCertificatesRequest.fromPartial({ parent: this.parent, includePrivateKeys: true, filter: mine ? `domain = "${this.domain}"` : "" }),
          { deadline: Date.now() + DEADLINE_MS },
        );
        for await (const m of call as AsyncIterable<certificatePb.ExportCertificatesResponse>) {
          const p = this.byFingerprint.get(m.certificate?.sha256Fingerprint ?? "");
          got.push({ name: m.certificate?.name ?? "", ok: m.privateKeyPem !== "" && (!p || squash(m.certificatePem) === squash(p.certificate)) });
        }
      } catch (err) {
        const e = err as ServiceError;
        this.ctx.recorder.record("ExportCertificates", performance.now() - t0, codeName(e.code), `ExportCertificates: ${e.message}`);
        throw new Unexpected("ExportCertificates");
      }
      this.ctx.recorder.record("ExportCertificates", performance.now() - t0, "ok");
      this.check(got.every((g) => g.ok), "ExportCertificates", "an exported item lacked its private key or differed from the certificate imported");
      const want = [...this.live.values()].map((l) => l.name).sort();
      if (mine) {
        const names = got.map((g) => g.name).sort();
        this.check(JSON.stringify(names) === JSON.stringify(want), "ExportCertificates", `exported ${names.length} of ${this.domain}, live ${want.length}`);
      } else {
        for (const name of want) this.check(got.filter((g) => g.name === name).length === 1, "ExportCertificates", `the whole export held ${name} ${got.filter((g) => g.name === name).length} times`);
      }
    });
  }

  /** ImportCertificates: two of its free certificates over one bidirectional stream, each answered in order. */
  private async importStream(): Promise<void> {
    const items = this.free().slice(0, 2);
    const t0 = performance.now();
    const answers: certificatePb.ImportCertificatesResponse[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        const call = this.c.certificateClient.importCertificates({ deadline: Date.now() + DEADLINE_MS });
        call.on("data", (r: certificatePb.ImportCertificatesResponse) => answers.push(r));
        call.on("error", reject);
        call.on("end", resolve);
        for (const p of items) {
          call.write(
            certificatePb.ImportCertificatesRequest.fromPartial({
              item: { parent: this.parent, certificate: p.certificate, privateKey: p.privateKey, intermediates: p.intermediates, requestId: randomUUID(), displayName: `w${this.id} c${p.index}` },
            }),
          );
        }
        call.end();
      });
    } catch (err) {
      const e = err as ServiceError;
      this.ctx.recorder.record("ImportCertificates", performance.now() - t0, codeName(e.code), `ImportCertificates: ${e.message}`);
      throw new Unexpected("ImportCertificates");
    }
    this.ctx.recorder.record("ImportCertificates", performance.now() - t0, "ok");
    this.check(answers.length === items.length, "ImportCertificates", `${answers.length} answers to ${items.length} items`);
    answers.forEach((a, i) => {
      this.check(a.index === i && !a.error, "ImportCertificates", `item ${i}: index ${a.index}, error ${a.error?.message ?? "none"}`);
      const cert = this.checkMetadata(a.certificate, items[i]!, "ImportCertificates");
      this.live.set(items[i]!.index, { name: cert.name, etag: cert.etag, version: cert.version });
    });
  }

  /**
   * An instance's whole life, on an instance of its own: create (and replay the create), import, an API key
   * with a role on it (`accessControl`), update, rotate
   * the data key, rewrap, soft-delete (certificate calls then FAILED_PRECONDITION), restore (material back),
   * delete again and reclaim now (DELETED tombstone).
   */
  private async instanceLifecycle(): Promise<void> {
    const requestId = randomUUID();
    const create = { instance: { displayName: `soak w${this.id}`, labels: { soak: "ephemeral" } }, requestId };
    const made = (await this.ok("CreateInstance", () => this.c.instances.createInstance(create))).instance!;
    const again = (await this.ok("CreateInstance(replay)", () => this.c.instances.createInstance(create))).instance!;
    this.check(again.name === made.name, "CreateInstance", `a replay of request ${requestId} answered ${again.name}, the first ${made.name}`);
    const p = this.owned[0]!;
    const cert = this.checkMetadata(
      (await this.ok("ImportCertificate", () => this.c.certificates.importCertificate({ parent: made.name, certificate: p.certificate, privateKey: p.privateKey, intermediates: p.intermediates }))).certificate,
      p,
      "ImportCertificate",
    );
    await this.accessControl(made.name, cert.name);
    const got = (await this.ok("GetInstance", () => this.c.instances.getInstance({ name: made.name }))).instance!;
    const updated = (await this.ok("UpdateInstance", () => this.c.instances.updateInstance({ instance: { name: made.name, etag: got.etag, labels: { soak: "ephemeral", step: "updated" } }, updateMask: ["labels"] }))).instance!;
    this.check(updated.labels.step === "updated", "UpdateInstance", `${made.name}: labels ${JSON.stringify(updated.labels)}`);
    const rotated = await this.ok("RotateDataKey", () => this.c.instances.rotateDataKey({ name: made.name }));
    this.check(rotated.reencryptedCount === 1, "RotateDataKey", `${made.name}: re-encrypted ${rotated.reencryptedCount} versions, expected 1`);
    await this.ok("RewrapDataKeys", () => this.c.instances.rewrapDataKeys({ name: made.name }));
    this.checkMaterial(await this.ok("AccessCertificate", () => this.c.certificates.accessCertificate({ name: cert.name })), p, "AccessCertificate(rotated)");

    const current = (await this.ok("GetInstance", () => this.c.instances.getInstance({ name: made.name }))).instance!;
    const deleted = await this.ok("DeleteInstance", () => this.c.instances.deleteInstance({ name: made.name, etag: current.etag }));
    this.check(deleted.instance?.state === instancePb.Instance_State.STATE_PENDING_RECLAMATION, "DeleteInstance", `${made.name}: state ${deleted.instance?.state}`);
    await this.fails("GetCertificate(pending)", status.FAILED_PRECONDITION, () => this.c.certificates.getCertificate({ name: cert.name }));
    const recl = deleted.reclamation!.name;
    const scheduled = (await this.ok("GetReclamation", () => this.c.reclamations.getReclamation({ name: recl }))).reclamation!;
    this.check(scheduled.state === reclamationPb.Reclamation_State.STATE_SCHEDULED, "GetReclamation", `${recl}: state ${scheduled.state}`);
    await this.ok("RestoreReclamation", () => this.c.reclamations.restoreReclamation({ name: recl }));
    this.checkMaterial(await this.ok("AccessCertificate", () => this.c.certificates.accessCertificate({ name: cert.name })), p, "AccessCertificate(restored)");

    const second = await this.ok("DeleteInstance", () => this.c.instances.deleteInstance({ name: made.name }));
    const reclaimed = (await this.ok("DeleteReclamation", () => this.c.reclamations.deleteReclamation({ name: second.reclamation!.name }))).reclamation!;
    this.check(reclaimed.state === reclamationPb.Reclamation_State.STATE_RECLAIMED, "DeleteReclamation", `${second.reclamation!.name}: state ${reclaimed.state}`);
    const tomb = (await this.ok("GetInstance", () => this.c.instances.getInstance({ name: made.name }))).instance!;
    this.check(tomb.state === instancePb.Instance_State.STATE_DELETED, "GetInstance", `${made.name}: state ${tomb.state} after the reclamation`);
  }

  /**
   * An API key of its own for the instance: created, bound as a reader in the instance's policy (SetIamPolicy
   * with the policy's etag), used over connections of its own (opened and closed here, so connection churn is
   * soaked too) to read the instance and the certificate, then revoked. The secret is never printed.
   */
  private async accessControl(instance: string, certificate: string): Promise<void> {
    const made = await this.ok("CreateApiKey", () => this.c.apiKeys.createApiKey({ apiKey: { displayName: `soak w${this.id}` } }));
    const key = made.apiKey!;
    const policy = (await this.ok("GetIamPolicy", () => this.c.iam.getIamPolicy({ resource: instance }))).policy!;
    const set = await this.ok("SetIamPolicy", () =>
      this.c.iam.setIamPolicy({ resource: instance, policy: { bindings: [...policy.bindings, { role: "roles/reader", members: [key.member] }], etag: policy.etag } }),
    );
    this.check(set.policy?.bindings.some((b) => b.role === "roles/reader" && b.members.includes(key.member)) === true, "SetIamPolicy", `${instance}: the reader binding of ${key.member} is missing from the answer`);
    const reader = connect(this.ctx.address, made.secret);
    try {
      await this.ok("GetInstance(as reader)", () => reader.instances.getInstance({ name: instance }));
      await this.ok("GetCertificate(as reader)", () => reader.certificates.getCertificate({ name: certificate }));
    } finally {
      reader.close();
    }
    const revoked = (await this.ok("RevokeApiKey", () => this.c.apiKeys.revokeApiKey({ name: key.name }))).apiKey!;
    this.check(revoked.state === apiKeyPb.ApiKey_State.STATE_REVOKED, "RevokeApiKey", `${key.name}: state ${revoked.state}`);
    const again = (await this.ok("GetApiKey", () => this.c.apiKeys.getApiKey({ name: key.name }))).apiKey!;
    this.check(again.state === apiKeyPb.ApiKey_State.STATE_REVOKED, "GetApiKey", `${key.name}: state ${again.state} after the revocation`);
  }

  /** The remaining reads: instances, reclamations, IAM, API keys, the audit trail, health. */
  private async otherReads(): Promise<void> {
    switch (Math.floor(Math.random() * 7)) {
      case 0: {
        const inst = (await this.ok("GetInstance", () => this.c.instances.getInstance({ name: this.parent }))).instance;
        this.check(inst?.state === instancePb.Instance_State.STATE_ACTIVE, "GetInstance", `${this.parent}: state ${inst?.state}`);
        return;
      }
      case 1: {
        const showDeleted = chance(0.5);
        const first = await this.ok("ListInstances", () => this.c.instances.listInstances({ pageSize: 20, showDeleted }));
        if (first.nextPageToken) await this.ok("ListInstances", () => this.c.instances.listInstances({ pageSize: 20, pageToken: first.nextPageToken, showDeleted }));
        return;
      }
      case 2:
        await this.ok("ListReclamations", () => this.c.reclamations.listReclamations({ pageSize: 10, filter: pick(["state = SCHEDULED", "state = RECLAIMED", ""]) }));
        return;
      case 3:
        await this.ok("GetIamPolicy", () => this.c.iam.getIamPolicy({ resource: this.parent }));
        return;
      case 4: {
        const wanted = ["certmanager.certificates.get", "certmanager.certificates.access", "certmanager.instances.delete"];
        const res = await this.ok("TestIamPermissions", () => this.c.iam.testIamPermissions({ resource: this.parent, permissions: wanted }));
        // The bootstrap administrator holds every permission.
        this.check(res.permissions.length === wanted.length, "TestIamPermissions", `granted ${res.permissions.join(", ")} of ${wanted.join(", ")}`);
        return;
      }
      case 5:
        if (chance(0.5)) await this.ok("ListApiKeys", () => this.c.apiKeys.listApiKeys({ pageSize: 10 }));
        else await this.ok("ListAuditEvents", () => this.c.audit.listAuditEvents({ parent: this.parent, pageSize: 20 }));
        return;
      default: {
        const res = await this.ok("Health/Check", () => this.c.health.check({ service: "" }));
        this.check(res.status === healthPb.HealthCheckResponse_ServingStatus.SERVING, "Health", `status ${res.status}`);
      }
    }
  }
}
