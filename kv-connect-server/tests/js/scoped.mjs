// Scoped tokens and per-database URLs with a real client (Deno or @deno/kv on Node).
//
// Usage:
//   deno run --unstable-kv ... scoped.mjs <database url> <op>...
//   node scoped.mjs <database url> <op>...        (needs DENO_KV_NPM_ENTRY)
// The token comes from DENO_KV_ACCESS_TOKEN. Ops run in order on one open
// database and print one JSON line each, {"op", "ok": value} or
// {"op", "error": {name, message}}:
//   open               open the database (Deno.openKv / openKv), no request yet
//   read:K             kv.get(["scoped", K]) -> the value or null
//   write:K=V          kv.set(["scoped", K], V) -> "committed"
//   enqueue:V          kv.enqueue(V) -> "committed"
//   watch:K            first value of kv.watch([["scoped", K]])
//   revoke:ADMIN:WHICH DELETE /admin/tokens/WHICH with the admin token ADMIN
// An op that throws is printed and the run goes on; a failed `open` ends it.

const isDeno = !!globalThis.Deno;
const args = isDeno ? Deno.args : process.argv.slice(2);
const env = (name) => (isDeno ? Deno.env.get(name) : process.env[name]);
const [url, ...ops] = args;
const print = (obj) => console.log(JSON.stringify(obj));
const origin = new URL(url).origin;
// Error messages name the URL, which changes per run: replace it.
const clean = (s) => String(s).split(origin).join("<ORIGIN>");

let openKv;
if (isDeno) {
  openKv = (u) => Deno.openKv(u);
} else {
  const { pathToFileURL } = await import("node:url");
  const mod = await import(pathToFileURL(env("DENO_KV_NPM_ENTRY")).href);
  openKv = (u) => mod.openKv(u, { accessToken: env("DENO_KV_ACCESS_TOKEN") });
}

async function firstWatchValue(kv, key) {
  const stream = kv.watch([key]);
  const reader = stream.getReader();
  try {
    const { value } = await reader.read();
    return value[0].value;
  } finally {
    await reader.cancel().catch(() => {});
  }
}

let kv;
for (const op of ops) {
  const [name, ...restParts] = op.split(":");
  const rest = restParts.join(":");
  try {
    let result;
    switch (name) {
      case "open":
        kv = await openKv(url);
        result = "open";
        break;
      case "read":
        result = (await kv.get(["scoped", rest])).value;
        break;
      case "write": {
        const [k, v] = rest.split("=");
        const r = await kv.set(["scoped", k], v);
        result = r.ok ? "committed" : "failed";
        break;
      }
      case "enqueue": {
        const r = await kv.enqueue(rest);
        result = r.ok ? "committed" : "failed";
        break;
      }
      case "watch":
        result = await firstWatchValue(kv, ["scoped", rest]);
        break;
      case "revoke": {
        const [admin, which] = rest.split(":");
        const res = await fetch(`${origin}/admin/tokens/${which}`, {
          method: "DELETE",
          headers: { authorization: `Bearer ${admin}` },
        });
        result = res.status;
        await res.text();
        break;
      }
      default:
        throw new Error(`unknown op ${op}`);
    }
    print({ op, ok: result ?? null });
  } catch (e) {
    print({ op, error: { name: e?.name ?? "?", message: clean(e?.message ?? e) } });
    if (name === "open") break;
  }
}
kv?.close();
if (isDeno) Deno.exit(0);
else process.exit(0);
