/** InstanceService over real gRPC on SQLite and MariaDB. */
import { randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Instance_State } from "../../gen/ts/certmanager/v1/instance.js";
import { databases, expectFailure, startTestService, type TestService } from "../helpers/service.js";

describe.each(await databases())("InstanceService on %s", (db) => {
  let t: TestService;
  beforeAll(async () => {
    t = await startTestService(db);
  });
  afterAll(async () => {
    await t?.stop();
  });

  const create = (instance: object, requestId = "") =>
    t.instances.createInstance({ instance, requestId });

  it("creates an instance with a wrapped DEK and gets it back", async () => {
    const { instance } = await create({ displayName: "Payments", description: "prod certs", labels: { env: "prod" } });
    expect(instance!.name).toMatch(/^instances\/[0-9a-f-]{36}$/);
    expect(instance!.state).toBe(Instance_State.STATE_ACTIVE);
    expect(instance!.rootKey).toBe("local/default");
    expect(instance!.rootKeyVersion).toBe(1);
    expect(instance!.etag).not.toBe("");
    const got = await t.instances.getInstance({ name: instance!.name });
    expect(got.instance).toEqual(instance);
  });

  it("returns the first instance for a repeated request_id", async () => {
    const requestId = randomUUID();
    const [a, b] = await Promise.all([create({ displayName: "idem" }, requestId), create({ displayName: "idem" }, requestId)]);
    const c = await create({ displayName: "idem" }, requestId);
    expect(b.instance!.name).toBe(a.instance!.name);
    expect(c.instance!.name).toBe(a.instance!.name);
  });

  it("lists instances in pages with a tamper-checked token", async () => {
    const names: string[] = [];
    for (let i = 0; i < 5; i++) names.push((await create({ displayName: `page-${i}` })).instance!.name);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const res = await t.instances.listInstances({ pageSize: 2, pageToken });
      expect(res.instances.length).toBeLessThanOrEqual(2);
      seen.push(...res.instances.map((i) => i.name));
      pageToken = res.nextPageToken;
    } while (pageToken);
    expect(new Set(seen).size).toBe(seen.length);
    for (const n of names) expect(seen).toContain(n);

    const first = await t.instances.listInstances({ pageSize: 1, pageToken: "" });
    const tampered = first.nextPageToken.replace(/^./, (ch) => (ch === "e" ? "f" : "e"));
    const err = await expectFailure(t.instances.listInstances({ pageSize: 1, pageToken: tampered }));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.reason).toBe("INVALID_PAGE_TOKEN");
    expect(err.fieldViolations[0].field).toBe("page_token");
  });

  it("updates with update_mask and honours the etag", async () => {
    const { instance } = await create({ displayName: "before", description: "keep" });
    const res = await t.instances.updateInstance(({
      instance: { ...instance!, displayName: "after", description: "ignored" },
      updateMask: ["display_name"],
    }));
    expect(res.instance!.displayName).toBe("after");
    expect(res.instance!.description).toBe("keep");
    expect(res.instance!.etag).not.toBe(instance!.etag);
    const stale = await expectFailure(
      t.instances.updateInstance({ instance: { ...instance!, displayName: "x" }, updateMask: ["display_name"] }),
    );
    expect(stale.code).toBe(status.ABORTED);
    expect(stale.reason).toBe("ETAG_MISMATCH");
    const got = await t.instances.getInstance({ name: instance!.name });
    expect(got.instance!.displayName).toBe("after");
  });

  it("treats an omitted update_mask as the populated fields (AIP-134)", async () => {
    const { instance } = await create({ displayName: "one", description: "stays", labels: { a: "b" } });
    const res = await t.instances.updateInstance({ instance: { name: instance!.name, displayName: "two" } });
    expect([res.instance!.displayName, res.instance!.description, res.instance!.labels]).toEqual(["two", "stays", { a: "b" }]);
    const nothing = await expectFailure(t.instances.updateInstance({ instance: { name: instance!.name } }));
    expect(nothing.reason).toBe("INVALID_UPDATE_MASK");
    const all = await t.instances.updateInstance({ instance: { name: instance!.name }, updateMask: ["*"] });
    expect([all.instance!.displayName, all.instance!.description, all.instance!.labels]).toEqual(["", "", {}]);
  });

  it("refuses bad input with field violations and writes nothing", async () => {
    const before = await t.instances.listInstances({ pageSize: 1000, pageToken: "" });
    const cases: [object, string, string][] = [
      [{ displayName: "x".repeat(257) }, "instance.display_name", "INVALID_FIELD"],
      [{ labels: { Env: "prod" } }, "instance.labels", "INVALID_FIELD"],
      [{ labels: { env: "Prod!" } }, "instance.labels.env", "INVALID_FIELD"],
    ];
    for (const [instance, field, reason] of cases) {
      const err = await expectFailure(create(instance));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.reason).toBe(reason);
      expect(err.domain).toBe("certmanager");
      expect(err.fieldViolations.map((v) => v.field)).toEqual([field]);
    }
    const badId = await expectFailure(create({}, "not-a-uuid"));
    expect(badId.fieldViolations[0].field).toBe("request_id");
    const noInstance = await expectFailure(t.instances.createInstance({}));
    expect(noInstance.fieldViolations[0].field).toBe("instance");
    const after = await t.instances.listInstances({ pageSize: 1000, pageToken: "" });
    expect(after.instances.length).toBe(before.instances.length);
  });

  it("answers NOT_FOUND and INVALID_ARGUMENT for names", async () => {
    const missing = await expectFailure(t.instances.getInstance({ name: `instances/${randomUUID()}` }));
    expect(missing.code).toBe(status.NOT_FOUND);
    expect(missing.reason).toBe("INSTANCE_NOT_FOUND");
    const malformed = await expectFailure(t.instances.getInstance({ name: "instances/../x" }));
    expect(malformed.code).toBe(status.INVALID_ARGUMENT);
    expect(malformed.fieldViolations[0].field).toBe("name");
    const mask = await expectFailure(
      t.instances.updateInstance(({ instance: { name: `instances/${randomUUID()}` }, updateMask: ["state"] })),
    );
    expect(mask.reason).toBe("INVALID_UPDATE_MASK");
  });
});
