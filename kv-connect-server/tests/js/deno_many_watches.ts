// Many concurrent watch() streams on one Deno.Kv (used by real_clients.rs).
// Usage: deno run ... deno_many_watches.ts <database URL> <watches> <changed every Nth key>
//
// Deno multiplexes every watch() of one Deno.Kv over one HTTP/2 connection, one stream each,
// so this checks that the server lets thousands of streams open at once.
//
// 1. Seeds keys ["many", i] = "v0-i" (i < watches), in atomic writes of 500.
// 2. Opens one watch([["many", i]]) per key and waits until every stream has delivered its
//    first value, which must be the seeded one.
// 3. Writes "v1-i" to every Nth key (one atomic write) and waits until each of those streams
//    delivers exactly "v1-i".
// 4. Checks that no stream of an unchanged key has delivered anything by then (a stream that
//    did would have been told about a change it never had).
// Prints one JSON line: {"watches":N,"initial":N,"changed":M,"notified":M,"spurious":0} and
// exits 0; anything unexpected throws (exit 1).

const [url, watchesArg, everyArg] = Deno.args;
const watches = Number(watchesArg);
const every = Number(everyArg);
if (!(watches > 0 && every > 0)) throw new Error("usage: <url> <watches> <every>");

const kv = await Deno.openKv(url);
const key = (i: number) => ["many", i];

for (let start = 0; start < watches; start += 500) {
  const op = kv.atomic();
  for (let i = start; i < Math.min(watches, start + 500); i++) op.set(key(i), `v0-${i}`);
  const r = await op.commit();
  if (!r.ok) throw new Error("seeding failed");
}

const readers = Array.from({ length: watches }, (_, i) => kv.watch([key(i)]).getReader());
const first = await Promise.all(readers.map((r) => r.read()));
first.forEach((res, i) => {
  const got = res.done ? "<stream ended>" : res.value[0].value;
  if (got !== `v0-${i}`) throw new Error(`watch ${i}: first value ${JSON.stringify(got)}, expected "v0-${i}"`);
});

// Every stream has a read pending from now on; remember which ones complete.
const pending = readers.map((r) => r.read());
const settled = new Array<boolean>(watches).fill(false);
pending.forEach((p, i) => p.then(() => (settled[i] = true), () => (settled[i] = true)));

const changed = Array.from({ length: watches }, (_, i) => i).filter((i) => i % every === 0);
const op = kv.atomic();
for (const i of changed) op.set(key(i), `v1-${i}`);
if (!(await op.commit()).ok) throw new Error("the change write failed");

let notified = 0;
for (const i of changed) {
  const res = await pending[i];
  const got = res.done ? "<stream ended>" : res.value[0].value;
  if (got !== `v1-${i}`) throw new Error(`watch ${i}: after the change ${JSON.stringify(got)}, expected "v1-${i}"`);
  notified++;
}
// Let any misrouted notification that arrived with the right ones be seen.
await new Promise((resolve) => setTimeout(resolve, 0));
const spurious = settled.filter((s, i) => s && i % every !== 0).length;
if (spurious !== 0) throw new Error(`${spurious} streams of unchanged keys delivered a value`);

console.log(JSON.stringify({ watches, initial: first.length, changed: changed.length, notified, spurious }));
for (const r of readers) r.cancel().catch(() => {});
kv.close();
Deno.exit(0);
