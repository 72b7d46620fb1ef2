// Bad input throws the error class Deno throws, with Deno's message, and writes nothing:
// every case of fixtures/error_cases.mjs runs through Deno 2.9.6 and through our package.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { openKv, KvU64 } from "../index.mjs";
import { run } from "./fixtures/error_cases.mjs";
import { fixtures, runDeno } from "./helpers.mjs";

test("bad input: same error class and message as Deno, nothing written", async () => {
  const deno = await runDeno(path.join(fixtures, "error_cases_deno.ts"));
  assert.equal(deno.code, 0, deno.stderr);
  const expected = deno.stdout.trim().split("\n").map((l) => JSON.parse(l));
  const ours = await run(openKv, KvU64);
  assert.equal(ours.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (expected[i].case === "state") continue;
    assert.deepEqual(ours[i], expected[i], `case ${expected[i].case}`);
  }
  // Nothing was written. (Deno's own database keeps the mutations before a failing `sum` of
  // an atomic write; ours applies all or nothing, see the README's differences.)
  const state = ours.find((l) => l.case === "state");
  assert.deepEqual(state.keys, []);
});
