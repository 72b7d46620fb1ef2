#!/usr/bin/env node
// Builds the native addon from source with cargo and installs it as kv_node.node (the npm
// `install` script; also `npm run build`). No prebuilt binary is ever downloaded.
//
//   KV_NODE_PROFILE=release   build with `--release` (default: the debug profile, which shares
//                             the artifacts of `cargo test --workspace`)
//   CARGO_TARGET_DIR          where cargo builds (default: the workspace's target/)
//   CARGO                     the cargo binary (default: cargo on PATH)
"use strict";

const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const pkgDir = path.resolve(__dirname, "..");
const workspace = path.resolve(pkgDir, "..");
const profile = process.env.KV_NODE_PROFILE === "release" ? "release" : "debug";
const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(process.env.CARGO_TARGET_DIR)
  : path.join(workspace, "target");
const cargo = process.env.CARGO || "cargo";

const args = ["build", "-p", "kv-node"];
if (profile === "release") args.push("--release");
console.error(`kv-node: ${cargo} ${args.join(" ")} (CARGO_TARGET_DIR=${targetDir})`);
const r = spawnSync(cargo, args, {
  cwd: workspace,
  stdio: "inherit",
  env: { ...process.env, CARGO_TARGET_DIR: targetDir },
});
if (r.error) {
  console.error(`kv-node: cannot run ${cargo} (install Rust from https://rustup.rs): ${r.error.message}`);
  process.exit(1);
}
if (r.status !== 0) {
  console.error(`kv-node: cargo build failed (exit ${r.status})`);
  process.exit(r.status ?? 1);
}

const libName = {
  darwin: "libkv_node.dylib",
  win32: "kv_node.dll",
}[process.platform] ?? "libkv_node.so";
const built = path.join(targetDir, profile, libName);
const dest = path.join(pkgDir, "kv_node.node");
// Copy to a temporary name and rename: a running process keeps its mapped copy intact.
const tmp = `${dest}.${process.pid}.tmp`;
fs.copyFileSync(built, tmp);
fs.renameSync(tmp, dest);
console.error(`kv-node: installed ${path.relative(workspace, built)} as ${path.relative(workspace, dest)}`);
