// A process that opens a database, writes and ends without close() exits by itself (no ref'd
// handle keeps Node's event loop alive); so does one whose listenQueue and watch end with
// close(). A hang would be killed after 60 s and fail the test.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fixtures, run, startServer, tempDir, TOKEN } from "./helpers.mjs";

const dir = tempDir();
const script = path.join(fixtures, "exit_without_close.mjs");

async function exitsCleanly(target, mode) {
  const r = await run(process.execPath, [script, target, ...(mode ? [mode] : [])], {
    env: { DENO_KV_ACCESS_TOKEN: TOKEN },
  });
  assert.equal(r.signal, null, `the process hung and was killed\n${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '"v"');
}

test("memory: exits without close", () => exitsCleanly("memory"));
test("sqlite: exits without close", () => exitsCleanly(path.join(dir, "exit.sqlite")));
test("sqlite: a second process reopens the file the first left open", async () => {
  await exitsCleanly(path.join(dir, "twice.sqlite"));
  await exitsCleanly(path.join(dir, "twice.sqlite"));
});
test("remote: exits without close", async () => {
  const { url } = await startServer({ engine: "memory" });
  await exitsCleanly(url);
});
test("listenQueue and watch end with close, then the process exits", () =>
  exitsCleanly("memory", "listen-then-close"));
test("remote listenQueue and watch end with close, then the process exits", async () => {
  const { url } = await startServer({ engine: "memory" });
  await exitsCleanly(url, "listen-then-close");
});
