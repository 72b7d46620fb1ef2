// @denokv-rs/node: the Deno.Kv API for Node.js over the denokv-rs engines (memory, SQLite,
// redb) and KV Connect servers, with a native addon built from source (see README.md).
"use strict";

const path = require("node:path");
const { Kv, AtomicOperation, KvListIterator } = require("./lib/kv.js");
const { KvU64 } = require("./lib/kv_u64.js");
const { BadResource, errors, call } = require("./lib/errors.js");

function loadNative() {
  const file = path.join(__dirname, "kv_node.node");
  try {
    return require(file);
  } catch (e) {
    throw new Error(
      `the native addon ${file} is missing or cannot be loaded; build it with ` +
        "`npm run build` (needs cargo): " + e.message,
      { cause: e },
    );
  }
}

let native;

/**
 * Opens a database: no argument, "" or ":memory:" -> an in-memory database; an http(s) URL ->
 * a KV Connect server (token from `accessToken` or DENO_KV_ACCESS_TOKEN); any other string -> a
 * file (SQLite, or redb with `{ engine: "redb" }`).
 */
async function openKv(pathOrUrl, options = {}) {
  native ??= loadNative();
  if (pathOrUrl !== undefined && typeof pathOrUrl !== "string") {
    throw new TypeError("path must be a string");
  }
  options ??= {};
  if (typeof options !== "object") throw new TypeError("options must be an object");
  let open;
  if (pathOrUrl === undefined || pathOrUrl === "" || pathOrUrl === ":memory:") {
    open = { engine: "memory" };
  } else if (/^https?:\/\//i.test(pathOrUrl)) {
    const accessToken = options.accessToken ?? process.env.DENO_KV_ACCESS_TOKEN;
    if (typeof accessToken !== "string" || accessToken === "") {
      throw new TypeError(
        "Missing access token: pass { accessToken } or set DENO_KV_ACCESS_TOKEN",
      );
    }
    open = { engine: "remote", url: pathOrUrl, accessToken };
    if (options.maxRetries !== undefined) open.maxRetries = options.maxRetries;
  } else {
    const engine = options.engine ?? "sqlite";
    if (engine !== "sqlite" && engine !== "redb") {
      throw new TypeError(`Unknown engine ${JSON.stringify(engine)} (expected "sqlite" or "redb")`);
    }
    open = { engine, path: path.resolve(pathOrUrl) };
  }
  return new Kv(await call(native.open(open)));
}

module.exports = { openKv, Kv, AtomicOperation, KvListIterator, KvU64, BadResource, errors };
