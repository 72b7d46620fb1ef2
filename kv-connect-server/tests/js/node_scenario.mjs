// End-to-end scenario for the `@deno/kv` npm client on Node.
//
// Usage: node node_scenario.mjs <database URL>
// Env:   DENO_KV_NPM_ENTRY  absolute path of @deno/kv's ESM entry (esm/npm.js)
//        DENO_KV_ACCESS_TOKEN  access token passed to openKv
// Prints the transcript (see common.mjs) on stdout, then exits.

import { pathToFileURL } from "node:url";
import { writeSync } from "node:fs";
import { run } from "./scenario.mjs";
import { desc, descError, Transcript } from "./common.mjs";

const url = process.argv[2] ?? process.env.KV_URL;
const entry = process.env.DENO_KV_NPM_ENTRY;
if (!url || !entry) {
  console.error("usage: DENO_KV_NPM_ENTRY=/path/@deno/kv/esm/npm.js node node_scenario.mjs <database URL>");
  process.exit(2);
}
const { openKv, KvU64 } = await import(pathToFileURL(entry).href);

function write(text) {
  const buf = Buffer.from(text, "utf8");
  let off = 0;
  while (off < buf.length) off += writeSync(1, buf, off);
}

const opts = /^https?:/.test(url) ? { accessToken: process.env.DENO_KV_ACCESS_TOKEN } : {};
const kv = await openKv(url, opts);
try {
  await run(kv, { client: "npm", KvU64, url, write });
  if (/^https?:/.test(url)) {
    // Metadata-exchange failures as the npm client shows them (kv-connect.md §2.5).
    const t = new Transcript(write, url);
    const openError = async (opts) => {
      try {
        const other = await openKv(url, opts);
        await other.get(["x"]);
        other.close();
        return { noError: true };
      } catch (e) {
        return descError(e, url);
      }
    };
    await t.step("auth.wrong_token", () => openError({ accessToken: "not-the-token", maxRetries: 0 }));
    // Older protocol versions (the server speaks 1, 2 and 3): a write, a read and a list.
    for (const v of [1, 2]) {
      await t.step(`protocol.v${v}_roundtrip`, async () => {
        const other = await openKv(url, { accessToken: process.env.DENO_KV_ACCESS_TOKEN, supportedVersions: [v], maxRetries: 0 });
        try {
          const r = await other.set(["proto", `v${v}`], { version: v });
          const e = await other.get(["proto", `v${v}`]);
          const keys = [];
          for await (const x of other.list({ prefix: ["proto"] })) keys.push(x.key[1]);
          return { ok: r.ok, value: desc(e.value), sameVersionstamp: e.versionstamp === r.versionstamp, keys };
        } finally {
          other.close();
        }
      });
    }
  }
} catch (e) {
  console.error("scenario aborted:", e);
  process.exit(1);
}
kv.close();
process.exit(0);
