/** The IAM rules of domain/iam.ts: which roles a policy may bind, and what members then hold. */
import { describe, expect, it } from "vitest";
import { heldPermissions, normalizeBindings, SERVICE_RESOURCE } from "../../src/domain/iam.js";

describe("normalizeBindings", () => {
  it.each(["constructor", "toString", "__proto__", "hasOwnProperty"])("refuses %s, a name every object inherits, as a role", (role) => {
    const bindings = [
      { role: "roles/administrator", members: ["user:admin"] },
      { role, members: ["user:someone"] },
    ];
    expect(() => normalizeBindings(SERVICE_RESOURCE, bindings, "policy.bindings")).toThrow(/policy\.bindings\[1\]\.role .* is not a role/);
  });

  it("keeps the roles of the table, so what members hold can always be computed", () => {
    const bindings = normalizeBindings(SERVICE_RESOURCE, [{ role: "roles/reader", members: ["user:b", "user:a"] }, { role: "roles/administrator", members: ["user:admin"] }], "policy.bindings");
    expect(bindings).toEqual([
      { role: "roles/administrator", members: ["user:admin"] },
      { role: "roles/reader", members: ["user:a", "user:b"] },
    ]);
    expect(heldPermissions("instances/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d", ["user:a"], [], bindings).has("certmanager.certificates.get")).toBe(true);
  });
});

describe("heldPermissions", () => {
  const instance = "instances/0190a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d";
  const service = [{ role: "roles/administrator" as const, members: ["user:admin"] }];
  it("gives an administrator every instance permission on an instance, and no service permission there", () => {
    const held = heldPermissions(instance, ["user:admin"], [], service);
    expect(held.has("certmanager.certificates.access")).toBe(true);
    expect(held.has("certmanager.instances.setIamPolicy")).toBe(true);
    expect(held.has("certmanager.apiKeys.create")).toBe(false);
    expect(held.has("certmanager.services.setIamPolicy")).toBe(false);
    expect(heldPermissions(SERVICE_RESOURCE, ["user:admin"], [], service).has("certmanager.apiKeys.create")).toBe(true);
  });
  it("gives a role bound on the service every instance, but nothing on the service itself", () => {
    const readerEverywhere = [...service, { role: "roles/reader" as const, members: ["group:auditors"] }];
    expect(heldPermissions(instance, ["group:auditors"], [], readerEverywhere).has("certmanager.certificates.get")).toBe(true);
    expect(heldPermissions(SERVICE_RESOURCE, ["group:auditors"], [], readerEverywhere).size).toBe(0);
  });
});
