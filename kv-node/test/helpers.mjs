// Shared helpers of the kv-node tests: the test clients (Deno, @deno/kv), a kv-connect-server
// child process, child Node processes, temporary folders.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after } from "node:test";

export const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const repoRoot = path.resolve(pkgDir, "..");
export const fixtures = path.join(pkgDir, "test", "fixtures");

let tools;
/** DENO, DENO_KV_NPM_ENTRY, DENO_DIR from scripts/install-test-clients.sh (installs once). */
export function testTools() {
  if (tools) return tools;
  const out = execFileSync(path.join(repoRoot, "scripts", "install-test-clients.sh"), {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  tools = Object.fromEntries(
    out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
  return tools;
}

/** A temporary folder removed after the test file. */
export function tempDir() {
  const dir = mkdtempSync(path.join(tmpdir(), "kv-node-test-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function serverBinary() {
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(process.env.CARGO_TARGET_DIR)
    : path.join(repoRoot, "target");
  const bin = path.join(targetDir, "debug", "kv-connect-server");
  if (!existsSync(bin)) {
    const r = spawnSync("cargo", ["build", "-p", "kv-connect-server"], {
      cwd: repoRoot,
      stdio: "inherit",
      env: { ...process.env, CARGO_TARGET_DIR: targetDir },
    });
    if (r.status !== 0) throw new Error("cargo build -p kv-connect-server failed");
  }
  return bin;
}

export const TOKEN = "kv-node-test-token";

/** Starts kv-connect-server on a free port: `{ url, stop() }` (stopped after the file). */
export async function startServer({ engine = "sqlite", path: dbPath } = {}) {
  const args = ["--engine", engine, "--addr", "127.0.0.1:0", "--access-token", TOKEN];
  if (dbPath) args.push("--path", dbPath);
  const child = spawn(serverBinary(), args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  const url = await new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`kv-connect-server exited (${code}): ${stderr}`)));
  });
  const exited = new Promise((r) => child.once("exit", r));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await exited;
    }
  };
  after(stop);
  return { url, stop };
}

/**
 * Runs a command to completion: `{ code, signal, stdout, stderr }`. A command still running
 * after `timeoutMs` is killed (signal SIGKILL): callers assert it was not.
 */
export function run(cmd, args, { env = {}, timeoutMs = 60_000, cwd = pkgDir } = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs a Deno script (the pinned Deno of the test tools) with every permission. */
export function runDeno(script, args = [], opts = {}) {
  const { DENO, DENO_DIR } = testTools();
  return run(
    DENO,
    ["run", "--unstable-kv", "--no-remote", "--no-npm", "--no-config", "--no-lock", "-A", script, ...args],
    { ...opts, env: { DENO_DIR, DENO_NO_UPDATE_CHECK: "1", ...opts.env } },
  );
}
