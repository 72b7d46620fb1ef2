// Regenerates kv-v8's test vectors with the real runtimes: Node's `v8.serialize` (this
// process) and Deno KV (a `deno` subprocess running deno-store.mjs).
//
//   node generate.mjs --deno <path of deno> [--out <file>]
//
// (DENO_DIR is passed through.) The default output is vectors.json next to this script.
// kv-v8/tests/vectors/generate.sh installs the pinned runtimes and runs this.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import { cases, describe } from "./cases.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
};
const deno = arg("--deno");
if (!deno) throw new Error("usage: node generate.mjs --deno <deno> [--out <file>]");
const outFile = arg("--out") ?? join(here, "vectors.json");

const vectors = [];
for (const [name, make, only] of cases) {
  if (only && only !== "node") continue;
  const value = make();
  vectors.push({ runtime: "node", name, encoding: 1, hex: v8.serialize(value).toString("hex"), tree: describe(value, "host") });
}
const dumped = JSON.parse(
  execFileSync(deno, ["run", "-A", "--unstable-kv", join(here, "deno-store.mjs"), "dump"], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  }),
);
for (const v of dumped) vectors.push({ runtime: "deno", ...v });

const denoVersion = execFileSync(deno, ["--version"], { encoding: "utf8" }).split("\n")[0];
const lines = vectors.map((v) => "  " + JSON.stringify(v));
writeFileSync(
  outFile,
  `{"generated_by": ${JSON.stringify({ node: process.version, deno: denoVersion })},\n"vectors": [\n${lines.join(",\n")}\n]}\n`,
);
