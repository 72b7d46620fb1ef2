// One transcript, four clients: the shared end-to-end scenario
// (kv-connect-server/tests/js/scenario.mjs) through @deno/kv 0.14.0 (its native SQLite, and its
// remote client against kv-connect-server) and through ours (SQLite file, and remote against
// kv-connect-server). Where ours and theirs differ, ours must give what Deno 2.9.6 gives on
// the same scenario (versionstamp ordinals aside: Deno runs extra Deno-only commits), except
// for the documented guarantees of this project that Deno's own database lacks (all-or-nothing
// atomic writes, prompt expiry). Then the @deno/kv bug points (fixtures/bug_points.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fixtures, repoRoot, run, runDeno, startServer, tempDir, testTools, TOKEN } from "./helpers.mjs";

const dir = tempDir();
const runner = path.join(fixtures, "scenario_runner.mjs");

/** Steps where ours is right by this project's documented semantics, not Deno's database's. */
const PROJECT_GUARANTEES = new Set([
  "atomic.all_or_nothing.state", // a failing mutation applies nothing (Deno keeps earlier ones)
  "expiry.gone.after_expiry", // expired keys disappear within seconds
  "expiry.gone.listed",
  "expiry.gone.check_absent",
]);

/** Counts every commit of the run, so it follows any earlier step where a client failed. */
const COMMIT_COUNT = "versionstamps.facts";

function transcript(stdout) {
  const map = new Map();
  for (const line of stdout.trim().split("\n")) {
    const { step, result } = JSON.parse(line);
    map.set(step, JSON.stringify(result));
  }
  return map;
}

const noOrdinals = (s) => s.replace(/"vs\d+"/g, '"vs"');

async function scenario(impl, target) {
  const { DENO_KV_NPM_ENTRY } = testTools();
  const r = await run(process.execPath, [runner, impl, target], {
    env: { DENO_KV_NPM_ENTRY, DENO_KV_ACCESS_TOKEN: TOKEN },
    timeoutMs: 240_000,
  });
  assert.equal(r.code, 0, `${impl} ${target}: ${r.stderr}`);
  return transcript(r.stdout);
}

function compare(ours, theirs, deno, label) {
  assert.deepEqual([...ours.keys()], [...theirs.keys()], `${label}: step lists differ`);
  const differing = [];
  const problems = [];
  for (const [step, result] of ours) {
    if (step === COMMIT_COUNT) {
      assert.deepEqual(JSON.parse(result).violations, [], `${label}: versionstamp violations`);
      continue;
    }
    // Versionstamps are compared as ordinals, renumbered once a client's commit failed.
    if (noOrdinals(result) === noOrdinals(theirs.get(step))) continue;
    differing.push(step);
    if (PROJECT_GUARANTEES.has(step)) continue;
    const reference = deno.get(step);
    if (reference === undefined) {
      problems.push(`${step}: differs from @deno/kv and Deno has no such step\n  ours:   ${result.slice(0, 400)}\n  theirs: ${theirs.get(step)?.slice(0, 400)}`);
    } else if (noOrdinals(reference) !== noOrdinals(result)) {
      problems.push(`${step}: differs from @deno/kv and from Deno\n  ours: ${result.slice(0, 400)}\n  deno: ${reference.slice(0, 400)}`);
    }
  }
  assert.deepEqual(problems, [], `${label}:\n${problems.join("\n")}`);
  return differing;
}

test("scenario transcript: ours vs @deno/kv (SQLite and remote), differences are Deno's answers", async () => {
  const scenarioDir = path.join(repoRoot, "kv-connect-server", "tests", "js");
  const theirsServer = await startServer({ engine: "sqlite", path: path.join(dir, "theirs-remote.sqlite") });
  const oursServer = await startServer({ engine: "sqlite", path: path.join(dir, "ours-remote.sqlite") });
  const [deno, theirsFile, oursFile, theirsRemote, oursRemote] = await Promise.all([
    runDeno(path.join(scenarioDir, "deno_scenario.ts"), [":memory:"], { timeoutMs: 240_000 }).then((r) => {
      assert.equal(r.code, 0, r.stderr);
      return transcript(r.stdout);
    }),
    scenario("theirs", path.join(dir, "theirs.sqlite")),
    scenario("ours", path.join(dir, "ours.sqlite")),
    scenario("theirs", theirsServer.url),
    scenario("ours", oursServer.url),
  ]);
  const fileDiff = compare(oursFile, theirsFile, deno, "SQLite file");
  const remoteDiff = compare(oursRemote, theirsRemote, deno, "remote");
  // Ours gives the same transcript embedded and remote.
  assert.deepEqual([...oursRemote.entries()], [...oursFile.entries()]);
  // The bugs of @deno/kv the scenario reaches (the transcript would be identical without them).
  for (const step of ["keys.list_prefix_reverse", "list.prefix_reverse", "list.cursor_pages"]) {
    assert.ok(fileDiff.includes(step), `expected @deno/kv's SQLite to differ on ${step}`);
    assert.ok(remoteDiff.includes(step), `expected @deno/kv's remote client to differ on ${step}`);
  }
});

test("the @deno/kv bug points: ours lists and listens correctly", async () => {
  const { DENO_KV_NPM_ENTRY } = testTools();
  const server = await startServer({ engine: "memory" });
  const points = async (impl, target) => {
    const r = await run(process.execPath, [path.join(fixtures, "bug_points.mjs"), impl, target], {
      env: { DENO_KV_NPM_ENTRY, DENO_KV_ACCESS_TOKEN: TOKEN },
    });
    assert.equal(r.code, 0, r.stderr);
    return Object.fromEntries(r.stdout.trim().split("\n").map((l) => JSON.parse(l)).map((l) => [l.step, l.result]));
  };
  const [oursFile, oursRemote, theirsFile, theirsRemote] = await Promise.all([
    points("ours", path.join(dir, "bp-ours.sqlite")),
    points("ours", server.url),
    points("theirs", path.join(dir, "bp-theirs.sqlite")),
    points("theirs", server.url),
  ]);
  for (const ours of [oursFile, oursRemote]) {
    assert.deepEqual(ours["list.batch1_prefix_key_exists"], ["bp/a", "bp/b"]);
    assert.deepEqual(ours["list.reverse_prefix_key_exists"], ["bp/b", "bp/a"]);
    assert.deepEqual(ours["list.reverse_batch1_prefix_key_exists"], ["bp/b", "bp/a"]);
    assert.deepEqual(ours["queue.listen"], { hello: "queue" });
  }
  for (const theirs of [theirsFile, theirsRemote]) {
    // batchSize 1 with the prefix key present: @deno/kv loops without end.
    assert.deepEqual(theirs["list.batch1_prefix_key_exists"], { noEndWithin: "5s" });
    // Reverse prefix lists include the prefix key itself.
    assert.deepEqual(theirs["list.reverse_prefix_key_exists"], ["bp/b", "bp/a", "bp"]);
  }
  // @deno/kv's remote client cannot listen to a queue.
  assert.notDeepEqual(theirsRemote["queue.listen"], { hello: "queue" });
  assert.deepEqual(theirsFile["queue.listen"], { hello: "queue" });
});
