// Issue 17: 199 watchers of one hot key on `conns` Deno.Kv instances (one HTTP/2 connection
// each); the writer is the first instance. Prints notification latency percentiles (ms, from
// the start of `set` to each watcher's new value).
// Usage (Deno 2.9.6 from scripts/install-test-clients.sh, server running):
//   DENO_KV_ACCESS_TOKEN=t deno run --unstable-kv -A benches/deno_hot_watch.ts http://127.0.0.1:4512 1 30
const [url, connsArg, rounds] = Deno.args;
const conns = Number(connsArg);
const kvs = [];
for (let i = 0; i < conns; i++) kvs.push(await Deno.openKv(url));
const key = ["hot"];
await kvs[0].set(key, 0);
const N = 199;
let sentAt = new Map<number, number>();
const lat: number[] = [];
const readers = [];
for (let w = 0; w < N; w++) readers.push(kvs[w % conns].watch([key]).getReader());
await Promise.all(readers.map((r) => r.read()));
let stop = false;
const loops = readers.map(async (r) => {
  let last = 0;
  while (!stop) {
    const { value, done } = await r.read();
    if (done) return;
    const seq = Number(value[0].value);
    const now = performance.now();
    if (seq > last && sentAt.has(seq)) lat.push(now - sentAt.get(seq)!);
    last = seq;
  }
});
for (let s = 1; s <= Number(rounds); s++) {
  sentAt.set(s, performance.now());
  await kvs[0].set(key, s);
  await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 300));
lat.sort((a, b) => a - b);
const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(1);
console.log(JSON.stringify({ conns, n: lat.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: lat[lat.length - 1].toFixed(1) }));
Deno.exit(0);
