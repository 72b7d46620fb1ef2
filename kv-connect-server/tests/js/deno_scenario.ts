// End-to-end scenario for the Deno runtime.
//
// Usage: deno run --unstable-kv --no-remote --no-npm --no-config --allow-net --allow-env \
//          deno_scenario.ts <database URL or ":memory:">
// The access token for a KV Connect URL comes from DENO_KV_ACCESS_TOKEN.
// Prints the transcript (see common.mjs) on stdout, then exits.

// @ts-ignore: plain JS module shared with the Node scenario
import { run } from "./scenario.mjs";

const url = Deno.args[0] ?? Deno.env.get("KV_URL");
if (!url) {
  console.error("usage: deno_scenario.ts <database URL>");
  Deno.exit(2);
}

const encoder = new TextEncoder();
function write(text: string) {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

const kv = await Deno.openKv(url);
try {
  await run(kv, {
    client: "deno",
    KvU64: Deno.KvU64,
    url,
    write,
    commitVersionstamp: () => kv.commitVersionstamp(),
  });
} catch (e) {
  console.error("scenario aborted:", e);
  Deno.exit(1);
}
kv.close();
// Pending watch streams or retries must not keep the process alive.
Deno.exit(0);
