// Durability check across a server restart (used by real_clients.rs).
// Usage: deno run ... deno_persist.ts <database URL> write|read
// Prints plain lines (raw versionstamps: the test compares them across runs):
//   write: "commit <vs>" for each write, then "last <vs>" (an empty commit)
//   read:  "entry <key parts joined by /> <value> <vs>" for everything under
//          ["persist"], then "next <vs>" for one more write.

const [url, mode] = Deno.args;
const kv = await Deno.openKv(url);
const lines: string[] = [];
if (mode === "write") {
  lines.push(`commit ${(await kv.set(["persist", "string"], "hello")).versionstamp}`);
  lines.push(`commit ${(await kv.set(["persist", "bytes"], new Uint8Array([1, 2, 3]))).versionstamp}`);
  const r = await kv.atomic()
    .set(["persist", "u64"], new Deno.KvU64(41n))
    .sum(["persist", "u64"], 1n)
    .set(["persist", "object"], { a: [1, 2n, new Date(0)] })
    .set(["persist", "stamped", kv.commitVersionstamp()], "s")
    .set(["persist", "gone"], "deleted below")
    .commit();
  if (!r.ok) throw new Error("commit failed");
  lines.push(`commit ${r.versionstamp}`);
  await kv.delete(["persist", "gone"]);
  const last = await kv.atomic().commit();
  if (!last.ok) throw new Error("empty commit failed");
  lines.push(`last ${last.versionstamp}`);
} else {
  for await (const e of kv.list({ prefix: ["persist"] })) {
    const v = e.value;
    const value = v instanceof Deno.KvU64
      ? `KvU64(${v.value})`
      : v instanceof Uint8Array
      ? `bytes(${[...v].join(",")})`
      : JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : x));
    lines.push(`entry ${e.key.slice(1).join("/")} ${value} ${e.versionstamp}`);
  }
  lines.push(`next ${(await kv.set(["persist", "after_restart"], true)).versionstamp}`);
}
kv.close();
console.log(lines.join("\n"));
Deno.exit(0);
