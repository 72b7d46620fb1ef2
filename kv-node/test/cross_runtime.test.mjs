// Cross-runtime: a SQLite file written by our Node package, served by kv-connect-server, reads
// back in Deno 2.9.6; values Deno writes through the server (V8 format 16) read back in our
// package from the file, where @deno/kv 0.14.0 on Node 20 (through the server) cannot decode
// them.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { openKv, KvU64 } from "../index.mjs";
import { fixtures, runDeno, startServer, tempDir, testTools, TOKEN } from "./helpers.mjs";
import { OWN_VERSION } from "../lib/value.js";
import { encodeKey } from "../lib/key.js";
import { unpackEntries } from "../lib/kv.js";

const dir = tempDir();
const denoScript = path.join(fixtures, "cross_deno.ts");

test("a file written by our package is served by kv-connect-server and read by Deno", async () => {
  const file = path.join(dir, "from-node.sqlite");
  const kv = await openKv(file);
  await kv.set(["y", "str"], "from node ✓");
  await kv.set(["y", "obj"], { a: [1, 2n, null], d: new Date(1700000000000), m: new Map([["k", new Set([1])]]) });
  await kv.set(["y", "bytes"], new Uint8Array([0, 1, 255]));
  await kv.set(["y", "nested"], { b: new Uint8Array([7, 8]) });
  await kv.set(["y", "u64"], new KvU64(42n));
  await kv.set(["y", 3n, true, 1.5], "typed key");
  kv.close();
  const { url } = await startServer({ engine: "sqlite", path: file });
  const r = await runDeno(denoScript, ["read", url], { env: { DENO_KV_ACCESS_TOKEN: TOKEN } });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    '["y","3n",true,1.5]': '"typed key"',
    '["y","bytes"]': "Uint8Array(3) [ 0, 1, 255 ]",
    '["y","nested"]': "{ b: Uint8Array(2) [ 7, 8 ] }",
    '["y","obj"]': '{\n  a: [ 1, 2n, null ],\n  d: 2023-11-14T22:13:20.000Z,\n  m: Map(1) { "k" => Set(1) { 1 } }\n}',
    '["y","str"]': '"from node ✓"',
    '["y","u64"]': "[Deno.KvU64: 42n]",
  });
});

test("values Deno writes through kv-connect-server read back from the file in our package", async () => {
  const file = path.join(dir, "from-deno.sqlite");
  const server = await startServer({ engine: "sqlite", path: file });
  const r = await runDeno(denoScript, ["write", server.url], { env: { DENO_KV_ACCESS_TOKEN: TOKEN } });
  assert.equal(r.code, 0, r.stderr);
  await server.stop();
  const kv = await openKv(file);
  const get = async (k) => (await kv.get(["x", ...k])).value;
  assert.equal(await get(["str"]), "from deno ✓");
  assert.deepEqual(await get(["obj"]), { a: [1, 2n, null], d: new Date(1700000000000), m: new Map([["k", new Set([1])]]) });
  assert.deepEqual(await get(["bytes"]), new Uint8Array([0, 1, 255]));
  assert.deepEqual(await get(["nested"]), { b: new Uint8Array([7, 8]) });
  assert.equal((await get(["u64"])).value, 42n);
  assert.equal(await get([3n, true, 1.5]), "typed key");
  const v = async (k) => (await kv.get(["v", k])).value;
  assert.deepEqual(await v("regexp"), /ab+c/gi);
  assert.deepEqual(await v("set"), new Set(["x", 1]));
  assert.deepEqual(await v("sparse"), [1, , 3]); // eslint-disable-line no-sparse-arrays
  assert.deepEqual(await v("f64"), new Float64Array([1.5, -2]));
  assert.deepEqual(await v("i32"), new Int32Array([-1, 7]));
  assert.deepEqual(new Uint8Array(await v("arraybuffer")), new Uint8Array([9, 8]));
  assert.deepEqual(await v("boxed"), [new Number(5), new String("s"), new Boolean(true), Object(5n)]);
  const circular = await v("circular");
  assert.equal(circular.self, circular);
  assert.equal(circular.name, "loop");
  assert.deepEqual(await v("numbers"), [-0, NaN, Infinity, 2 ** 53, -1.25]);
  assert.deepEqual(await v("bigints"), [0n, -(2n ** 70n), 2n ** 64n]);
  const error = await v("error");
  assert.ok(error instanceof RangeError);
  assert.equal(error.message, "boom");
  assert.equal(await v("twobyte"), "héllo ✓ 😀");
  assert.equal(await v("undefined"), undefined);
  assert.equal(await v("null"), null);
  const dv = (await v("dataview")).v;
  assert.ok(dv instanceof DataView);
  assert.deepEqual([dv.byteOffset, dv.byteLength, dv.getUint8(0)], [1, 2, 2]);
  // The values above were written in V8 format 16 (Deno 2.9.6), read by this Node's V8.
  const key = encodeKey(["x", "str"]);
  const end = Buffer.concat([key, Buffer.of(0)]);
  const [packed] = await kv._native().snapshotRead([{ start: key, end, limit: 1, reverse: false }], false);
  const [raw] = unpackEntries(packed);
  assert.deepEqual([raw.encoding, raw.value[0], raw.value[1]], [1, 0xff, 16]);
  kv.close();

  // Deno 2.9 writes V8 format 16; this Node's V8 reads up to OWN_VERSION.
  if (OWN_VERSION < 16) {
    const { DENO_KV_NPM_ENTRY } = testTools();
    const theirs = await import(pathToFileURL(DENO_KV_NPM_ENTRY).href);
    const again = await startServer({ engine: "sqlite", path: file });
    const other = await theirs.openKv(again.url, { accessToken: TOKEN });
    await assert.rejects(other.get(["x", "str"]), /version/i);
    other.close();
  }
});
