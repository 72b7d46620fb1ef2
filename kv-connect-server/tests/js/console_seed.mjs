// Seeds the data the web console's browser test browses (../console.rs), written by the real
// Deno client through KV Connect: nested objects, a Date, a Map, a BigInt, a KvU64 counter,
// raw bytes, keys of several part types and enough entries for two pages. (Deno cannot enqueue
// through KV Connect; the browser script enqueues with @deno/kv.)
//
// Usage: deno run --unstable-kv ... console_seed.mjs <url>   (token from DENO_KV_ACCESS_TOKEN)
// Prints one line: {"seeded": <number of entries>}.

const [url] = Deno.args;
const kv = await Deno.openKv(url);
const P = "console-demo";
let n = 0;
const set = async (key, value) => {
  const r = await kv.set(key, value);
  if (!r.ok) throw new Error(`set ${JSON.stringify(key)} failed`);
  n++;
};

await set([P, "users", "alice"], {
  name: "Alice",
  tags: ["admin", "ops"],
  address: { city: "Lisbon", zip: "1000-001", geo: { lat: 38.72, lon: -9.14 } },
  joined: new Date("2024-05-01T10:00:00.000Z"),
  visits: 42n,
  prefs: new Map([["theme", "dark"], ["lang", "pt"]]),
});
await set([P, "users", "bob"], { name: "Bob", tags: [], address: { city: "Porto" } });
await set([P, "counter"], new Deno.KvU64(7n));
await set([P, "avatar"], new Uint8Array([137, 80, 78, 71]));
await set([P, 2026n, true], "a key with bigint and boolean parts");
for (let i = 0; i < 30; i++) {
  await set([P, "items", i], { i, label: `item ${i}` });
}
kv.close();
console.log(JSON.stringify({ seeded: n }));
