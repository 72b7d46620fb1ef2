// The Deno.Kv surface over each embedded engine, from both entry points.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import * as esm from "../index.mjs";
import { tempDir } from "./helpers.mjs";

const cjs = createRequire(import.meta.url)("../index.js");
const dir = tempDir();
const { openKv, KvU64 } = esm;

const engines = {
  memory: () => openKv(),
  sqlite: () => openKv(path.join(dir, `db-${Math.random()}.sqlite`)),
  redb: () => openKv(path.join(dir, `db-${Math.random()}.redb`), { engine: "redb" }),
};

const keys = async (it) => {
  const out = [];
  for await (const e of it) out.push(e.key);
  return out;
};

test("ESM and CommonJS entry points export the same objects", () => {
  assert.equal(esm.openKv, cjs.openKv);
  assert.equal(esm.KvU64, cjs.KvU64);
  assert.equal(typeof esm.errors.BadResource, "function");
});

for (const [name, open] of Object.entries(engines)) {
  test(`${name}: get, set, getMany, delete, versionstamps`, async () => {
    const kv = await open();
    assert.deepEqual(await kv.get(["a"]), { key: ["a"], value: null, versionstamp: null });
    const r1 = await kv.set(["a"], { n: 1, d: new Date(5), m: new Map([[1, 2]]) });
    assert.equal(r1.ok, true);
    assert.match(r1.versionstamp, /^[0-9a-f]{20}$/);
    const e = await kv.get(["a"]);
    assert.deepEqual(e.value, { n: 1, d: new Date(5), m: new Map([[1, 2]]) });
    assert.equal(e.versionstamp, r1.versionstamp);
    const r2 = await kv.set(["b"], new Uint8Array([1, 2, 3]));
    assert.ok(r2.versionstamp > r1.versionstamp);
    await kv.set(["u"], new KvU64(7n));
    const many = await kv.getMany([["a"], ["b"], ["u"], ["zz"]]);
    assert.deepEqual(many.map((x) => x.value), [e.value, new Uint8Array([1, 2, 3]), new KvU64(7n), null]);
    assert.equal(await kv.delete(["a"]), undefined);
    assert.equal((await kv.get(["a"])).value, null);
    kv.close();
  });

  test(`${name}: list selectors, limit, reverse, cursor, batchSize`, async () => {
    const kv = await open();
    await kv.set(["p"], "the prefix key");
    for (let i = 0; i < 10; i++) await kv.set(["p", i], i);
    await kv.set(["q"], "after");
    const all = Array.from({ length: 10 }, (_, i) => ["p", i]);
    assert.deepEqual(await keys(kv.list({ prefix: ["p"] })), all);
    // The prefix key itself is never listed, also in reverse and with batchSize 1.
    assert.deepEqual(await keys(kv.list({ prefix: ["p"] }, { reverse: true })), all.slice().reverse());
    assert.deepEqual(await keys(kv.list({ prefix: ["p"] }, { batchSize: 1 })), all);
    assert.deepEqual(await keys(kv.list({ prefix: ["p"] }, { batchSize: 1, reverse: true })), all.slice().reverse());
    assert.deepEqual(await keys(kv.list({ start: ["p", 2], end: ["p", 5] })), all.slice(2, 5));
    assert.deepEqual(await keys(kv.list({ prefix: ["p"], start: ["p", 7] })), all.slice(7));
    assert.deepEqual(await keys(kv.list({ prefix: ["p"], end: ["p", 3] })), all.slice(0, 3));
    const it = kv.list({ prefix: ["p"] }, { limit: 4, batchSize: 3 });
    assert.throws(() => it.cursor, /Cannot get cursor before first iteration/);
    assert.deepEqual(await keys(it), all.slice(0, 4));
    const rest = kv.list({ prefix: ["p"] }, { cursor: it.cursor });
    assert.deepEqual(await keys(rest), all.slice(4));
    assert.equal(rest.cursor, "");
    const back = kv.list({ prefix: ["p"] }, { reverse: true, limit: 3 });
    assert.deepEqual(await keys(back), [all[9], all[8], all[7]]);
    assert.deepEqual(await keys(kv.list({ prefix: ["p"] }, { reverse: true, cursor: back.cursor })), all.slice(0, 7).reverse());
    assert.deepEqual(await keys(kv.list({ prefix: ["p"] }, { consistency: "eventual", limit: 1 })), [all[0]]);
    kv.close();
  });

  test(`${name}: atomic checks, sum/min/max, enqueue, expireIn`, async () => {
    const kv = await open();
    const first = await kv.atomic().check({ key: ["c"], versionstamp: null }).set(["c"], 1).commit();
    assert.equal(first.ok, true);
    assert.deepEqual(await kv.atomic().check({ key: ["c"], versionstamp: null }).set(["c"], 2).commit(), { ok: false });
    const second = await kv.atomic().check({ key: ["c"], versionstamp: first.versionstamp }).set(["c"], 3).commit();
    assert.equal(second.ok, true);
    assert.equal((await kv.get(["c"])).value, 3);
    await kv.atomic().sum(["n"], 5n).sum(["n"], 6n).min(["lo"], 9n).min(["lo"], 4n).max(["hi"], 2n).max(["hi"], 8n).commit();
    assert.equal((await kv.get(["n"])).value.value, 11n);
    assert.equal((await kv.get(["lo"])).value.value, 4n);
    assert.equal((await kv.get(["hi"])).value.value, 8n);
    await kv.atomic().sum(["n"], (1n << 64n) - 1n).commit(); // wraps
    assert.equal((await kv.get(["n"])).value.value, 10n);
    const q = await kv.enqueue({ job: 1 }, { delay: 60_000, keysIfUndelivered: [["dead"]], backoffSchedule: [10] });
    assert.equal(q.ok, true);
    await kv.set(["exp"], "soon", { expireIn: 100 });
    assert.equal((await kv.get(["exp"])).value, "soon");
    kv.close();
  });
}

test("several databases per process are independent", async () => {
  const a = await openKv();
  const b = await openKv(path.join(dir, "several.sqlite"));
  await a.set(["k"], "a");
  await b.set(["k"], "b");
  assert.equal((await a.get(["k"])).value, "a");
  assert.equal((await b.get(["k"])).value, "b");
  a.close();
  assert.equal((await b.get(["k"])).value, "b");
  b.close();
});

test("a file database keeps its data across opens", async () => {
  const file = path.join(dir, "reopen.sqlite");
  const kv = await openKv(file);
  await kv.set(["persist"], [1, "two", 3n]);
  kv.close();
  const again = await openKv(file);
  assert.deepEqual((await again.get(["persist"])).value, [1, "two", 3n]);
  again.close();
});

test("Symbol.asyncDispose closes the database", async () => {
  let kv;
  {
    kv = await openKv();
    await kv[Symbol.asyncDispose]();
  }
  await assert.rejects(kv.get(["a"]), { name: "BadResource" });
});

test("KvU64 validates like Deno.KvU64", () => {
  assert.equal(new KvU64(5n).value, 5n);
  assert.deepEqual(Object.keys(new KvU64(5n)), ["value"]);
  assert.throws(() => new KvU64(1), TypeError);
  assert.throws(() => new KvU64(-1n), RangeError);
  assert.throws(() => new KvU64(1n << 64n), RangeError);
});
