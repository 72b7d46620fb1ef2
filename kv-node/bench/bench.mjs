// Benchmark: our package vs @deno/kv 0.14.0, same machine, same run (not part of the tests).
//   in process: ours (SQLite file) vs @deno/kv's native SQLite (its own file)
//   remote:     ours vs @deno/kv's remote client, both against kv-connect-server (SQLite)
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

async function suite(kv, scale) {
  const r = {};
  const n = 2000 * scale;
  r["set (sequential)"] = await timed(n, async () => {
    for (let i = 0; i < n; i++) await kv.set(["s", i], { i, name: "value " + i });
  });
  r["set (100 concurrent)"] = await timed(n, async () => {
    for (let i = 0; i < n; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => kv.set(["c", i + j], i + j)));
    }
  });
  r["get"] = await timed(n, async () => {
    for (let i = 0; i < n; i++) await kv.get(["s", i % 2000]);
  });
  for (let i = 0; i < 10_000; i += 500) {
    let op = kv.atomic();
    for (let j = i; j < i + 500; j++) op = op.set(["l", j], j);
    await op.commit();
  }
  r["list 10k keys (keys/s)"] = await timed(30_000, async () => {
    for (let k = 0; k < 3; k++) {
      let c = 0;
      for await (const _ of kv.list({ prefix: ["l"] })) c++;
      if (c !== 10_000) throw new Error(`listed ${c}`);
    }
  });
  const m = 500 * scale;
  await kv.set(["cas"], 0);
  r["atomic CAS (get+check+set)"] = await timed(m, async () => {
    for (let i = 0; i < m; i++) {
      const e = await kv.get(["cas"]);
      const res = await kv.atomic().check(e).set(["cas"], e.value + 1).commit();
      if (!res.ok) throw new Error("CAS failed");
    }
  });
  return r;
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
  const a = await suite(o, 1);
  const b = await suite(t, 1);
  o.close();
  t.close();
  table("In process (SQLite file)", a, b);
}
{
  const s1 = await startServer(path.join(dir, "remote-ours.sqlite"));
  const s2 = await startServer(path.join(dir, "remote-theirs.sqlite"));
  const o = await ours.openKv(s1.url, { accessToken: TOKEN });
  const t = await theirs.openKv(s2.url, { accessToken: TOKEN });
  const a = await suite(o, 0.25);
  const b = await suite(t, 0.25);
  o.close();
  t.close();
  s1.stop();
  s2.stop();
  table(`Remote (kv-connect-server ${path.relative(repoRoot, serverBinary())}, SQLite)`, a, b);
}
rmSync(dir, { recursive: true, force: true });
process.exit(0);
