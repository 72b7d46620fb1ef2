// Reads one key with each consistency level, and watches it, through a server with a read
// replica (`replica_reads.rs`): shows which endpoint each client sends what to.
//
// Usage:
//   deno run --unstable-kv ... consistency.mjs <url> <key>
//   node consistency.mjs <url> <key>     (needs DENO_KV_NPM_ENTRY)
// The access token comes from DENO_KV_ACCESS_TOKEN. The key is the one-part key [<key>]; its
// value, if any, is bytes holding UTF-8 text.
//
// Prints one JSON line: {"eventual": V, "strong": V, "watch": V}, where V is the text of the
// value or null: `kv.get(k, {consistency: "eventual"})`, `kv.get(k)`, and the value in the
// first snapshot of `kv.watch([k])` that holds one.

const [url, key] = globalThis.Deno ? Deno.args : process.argv.slice(2);
const isDeno = !!globalThis.Deno;

let kv;
if (isDeno) {
  kv = await Deno.openKv(url);
} else {
  const { pathToFileURL } = await import("node:url");
  const mod = await import(pathToFileURL(process.env.DENO_KV_NPM_ENTRY).href);
  kv = await mod.openKv(url, { accessToken: process.env.DENO_KV_ACCESS_TOKEN, maxRetries: 2 });
}

const text = (entry) => (entry.value === null ? null : new TextDecoder().decode(entry.value));

const eventual = text(await kv.get([key], { consistency: "eventual" }));
const strong = text(await kv.get([key]));
let watch = null;
const reader = kv.watch([[key]]).getReader();
for (;;) {
  const { value, done } = await reader.read();
  if (done) break;
  if (value[0].value !== null) {
    watch = text(value[0]);
    break;
  }
}
await reader.cancel();
console.log(JSON.stringify({ eventual, strong, watch }));
kv.close();
if (isDeno) Deno.exit(0);
else process.exit(0);
