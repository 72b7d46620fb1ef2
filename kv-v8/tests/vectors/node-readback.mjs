// Runs on Node: `node node-readback.mjs input.json`. input.json is [{name, hex}] of V8 bytes
// written by kv-v8; prints [{name, tree}] (or [{name, error}]) after `v8.deserialize`.
import { readFileSync } from "node:fs";
import v8 from "node:v8";
import { describe } from "./cases.mjs";

const items = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = items.map(({ name, hex }) => {
  try {
    return { name, tree: describe(v8.deserialize(Buffer.from(hex, "hex")), "native") };
  } catch (e) {
    return { name, error: String(e) };
  }
});
console.log(JSON.stringify(out));
