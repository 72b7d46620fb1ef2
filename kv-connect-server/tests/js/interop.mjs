// Cross-client interoperability through a KV Connect server: data written by
// one client (Deno or @deno/kv on Node) read back by the other.
//
// Usage:
//   deno run --unstable-kv ... interop.mjs <url> write|read <prefix>
//   node interop.mjs <url> write|read <prefix>     (needs DENO_KV_NPM_ENTRY)
// The access token comes from DENO_KV_ACCESS_TOKEN.
//
// `write` stores the same keys and values from either client under [prefix];
// `read` prints one JSON line per entry under [prefix]: key, value (typed
// description) and the raw versionstamp, so two clients' views of the same
// data can be compared line by line.
//
// Deno 2.9.6 writes V8 values in serialization format 16 (`ff 10`); Node 20's
// v8.deserialize only reads up to 15 and @deno/kv 0.14.0's fallback decoder
// only 15 (semantics.md §2.1). So on Node, `read` uses a decoder that rewrites
// the version byte 16 -> 15 (sound for the values used here, which contain no
// ArrayBuffer views: the only format change in 16 is their length fields), and
// first records what the default decoder does.

import { desc, descError } from "./common.mjs";

const [url, mode, prefix] = (globalThis.Deno ? Deno.args : process.argv.slice(2));
const isDeno = !!globalThis.Deno;
const env = (name) => (isDeno ? Deno.env.get(name) : process.env[name]);
const print = (obj) => console.log(JSON.stringify(obj));

let openKv;
let KvU64;
let v8;
if (isDeno) {
  openKv = (u) => Deno.openKv(u);
  KvU64 = Deno.KvU64;
} else {
  const { pathToFileURL } = await import("node:url");
  const mod = await import(pathToFileURL(env("DENO_KV_NPM_ENTRY")).href);
  v8 = await import("node:v8");
  KvU64 = mod.KvU64;
  openKv = (u, opts = {}) => mod.openKv(u, { accessToken: env("DENO_KV_ACCESS_TOKEN"), ...opts });
}

// Key parts both clients encode identically (npm's float codec differs for -0
// and NaN, key-codec.md §4, so those are left out).
const keyParts = [
  new Uint8Array([0, 1, 255]),
  "",
  "é\u0000x",
  -(2n ** 70n),
  -1n,
  0n,
  2n ** 64n,
  -Infinity,
  -1.5,
  0,
  3,
  Infinity,
  false,
  true,
];
const values = () => [
  "text",
  1.25,
  -7,
  2n ** 80n,
  null,
  undefined,
  true,
  { a: [1, "b", { c: null }], d: new Date(Date.UTC(2020, 1, 2)) },
  new Map([["k", new Set([1, 2])]]),
  [1, , 3], // eslint-disable-line no-sparse-arrays
  new Uint8Array([5, 6, 7]),
  new KvU64(2n ** 64n - 2n),
  "é".repeat(100),
  -0,
];

async function list(kv) {
  const out = [];
  for await (const e of kv.list({ prefix: [prefix] })) {
    out.push({ key: e.key.map((p) => desc(p)), value: desc(e.value), versionstamp: e.versionstamp });
  }
  return out;
}

if (mode === "write") {
  const kv = await openKv(url);
  const vs = values();
  let op = kv.atomic();
  keyParts.forEach((p, i) => {
    op = op.set([prefix, p, i], vs[i % vs.length]);
  });
  const r = await op.commit();
  const r2 = await kv.set([prefix, "last"], vs[vs.length - 1]);
  print({ written: r.ok && r2.ok });
  kv.close();
} else if (mode === "read") {
  if (!isDeno) {
    const plain = await openKv(url);
    try {
      await list(plain);
      print({ defaultDecoder: "ok" });
    } catch (e) {
      print({ defaultDecoder: descError(e, url) });
    }
    plain.close();
  }
  const decodeV8 = (bytes) => {
    if (bytes[0] === 0xff && bytes[1] === 0x10) {
      const copy = Uint8Array.from(bytes);
      copy[1] = 0x0f;
      return v8.deserialize(copy);
    }
    return v8.deserialize(bytes);
  };
  const kv = isDeno ? await openKv(url) : await openKv(url, { encodeV8: v8.serialize, decodeV8 });
  for (const line of await list(kv)) print(line);
  kv.close();
} else {
  throw new Error(`unknown mode ${mode}`);
}
if (isDeno) Deno.exit(0);
else process.exit(0);
