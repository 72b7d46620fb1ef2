// Benchmark: our package vs @deno/kv 0.14.0, same machine, same run (not part of the tests).
//   in process: ours (SQLite file) vs @deno/kv's native SQLite (its own file)
//   remote:     ours vs @deno/kv's remote client, both against kv-connect-server (SQLite)
// Each operation runs on both sides alternately, 3 rounds; the table shows each side's best
// round (the machine may be shared: best-of-rounds is the least noisy figure).
// Usage (from kv-node/): npm run bench   (release build of the addon, then this script)
// Env: KV_BENCH_SERVER  kv-connect-server binary (default target/release, else target/debug)
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as ours from "../index.mjs";

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = path.resolve(pkgDir, "..");
const tools = Object.fromEntries(
  execFileSync(path.join(repoRoot, "scripts", "install-test-clients.sh"), { encoding: "utf8" })
    .trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
);
const theirs = await import(pathToFileURL(tools.DENO_KV_NPM_ENTRY).href);
const dir = mkdtempSync(path.join(tmpdir(), "kv-node-bench-"));
const TOKEN = "bench-token";

async function timed(n, fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return n / s;
}

/** The operations: `prepare` once per database, then `run` (n operations) per round. */
function operations(scale) {
  const n = Math.round(2000 * scale);
  const m = Math.round(500 * scale);
  let round = 0;
  return [
    {
      name: "set (sequential)", n, run: async (kv) => {
        const r = round++;
        for (let i = 0; i < n; i++) await kv.set(["s", r, i], { i, name: "value " + i });
      },
    },
    {
      name: "set (100 concurrent)", n, run: async (kv) => {
        const r = round++;
        for (let i = 0; i < n; i += 100) {
          await Promise.all(Array.from({ length: 100 }, (_, j) => kv.set(["c", r, i + j], i + j)));
        }
      },
    },
    {
      name: "get", n,
      prepare: async (kv) => {
        for (let i = 0; i < 100; i++) await kv.set(["g", i], { i });
      },
      run: async (kv) => {
        for (let i = 0; i < n; i++) await kv.get(["g", i % 100]);
      },
    },
    {
      name: "list 10k keys (keys/s)", n: 10_000,
      prepare: async (kv) => {
        for (let i = 0; i < 10_000; i += 500) {
          let op = kv.atomic();
          for (let j = i; j < i + 500; j++) op = op.set(["l", j], j);
          await op.commit();
        }
      },
      run: async (kv) => {
        let c = 0;
        for await (const _ of kv.list({ prefix: ["l"] })) c++;
        if (c !== 10_000) throw new Error(`listed ${c}`);
      },
    },
    {
      name: "atomic CAS (get+check+set)", n: m,
      prepare: (kv) => kv.set(["cas"], 0),
      run: async (kv) => {
        for (let i = 0; i < m; i++) {
          const e = await kv.get(["cas"]);
          const res = await kv.atomic().check(e).set(["cas"], e.value + 1).commit();
          if (!res.ok) throw new Error("CAS failed");
        }
      },
    },
  ];
}

const ROUNDS = 3;

/** Runs every operation on both databases, alternating, ROUNDS times; best rate of each. */
async function compare(a, b, scale) {
  const ra = {};
  const rb = {};
  for (const op of operations(scale)) {
    await op.prepare?.(a);
    await op.prepare?.(b);
    ra[op.name] = 0;
    rb[op.name] = 0;
    for (let i = 0; i < ROUNDS; i++) {
      ra[op.name] = Math.max(ra[op.name], await timed(op.n, () => op.run(a)));
      rb[op.name] = Math.max(rb[op.name], await timed(op.n, () => op.run(b)));
    }
  }
  return [ra, rb];
}

function serverBinary() {
  if (process.env.KV_BENCH_SERVER) return process.env.KV_BENCH_SERVER;
  for (const p of ["release", "debug"]) {
    const bin = path.join(repoRoot, "target", p, "kv-connect-server");
    if (existsSync(bin)) return bin;
  }
  throw new Error("build kv-connect-server first (cargo build --release -p kv-connect-server)");
}

async function startServer(file) {
  const child = spawn(serverBinary(), ["--engine", "sqlite", "--path", file, "--addr", "127.0.0.1:0", "--access-token", TOKEN], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on("exit", (c) => reject(new Error(`server exited ${c}`)));
  });
  return { url, stop: () => child.kill("SIGTERM") };
}

function table(title, a, b) {
  console.log(`\n${title}\n\n| operation | ours (ops/s) | @deno/kv (ops/s) | ours / @deno/kv |\n|---|---:|---:|---:|`);
  for (const k of Object.keys(a)) {
    console.log(`| ${k} | ${a[k].toFixed(0)} | ${b[k].toFixed(0)} | ${(a[k] / b[k]).toFixed(2)}x |`);
  }
}

{
  const o = await ours.openKv(path.join(dir, "ours.sqlite"));
  const t = await theirs.openKv(path.join(dir, "theirs.sqlite"));
  const [a, b] = await compare(o, t, 1);
  o.close();
  t.close();
  table("In process (SQLite file)", a, b);
}
{
  const s1 = await startServer(path.join(dir, "remote-ours.sqlite"));
  const s2 = await startServer(path.join(dir, "remote-theirs.sqlite"));
  const o = await ours.openKv(s1.url, { accessToken: TOKEN });
  const t = await theirs.openKv(s2.url, { accessToken: TOKEN });
  const [a, b] = await compare(o, t, 0.25);
  o.close();
  t.close();
  s1.stop();
  s2.stop();
  table(`Remote (kv-connect-server ${path.relative(repoRoot, serverBinary())}, SQLite)`, a, b);
}
rmSync(dir, { recursive: true, force: true });
process.exit(0);
