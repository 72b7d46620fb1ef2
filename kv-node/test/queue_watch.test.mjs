// listenQueue (local engines and a remote server, two listeners) and watch streams.
import { test } from "node:test";
import assert from "node:assert/strict";
import { openKv } from "../index.mjs";
import { startServer, TOKEN } from "./helpers.mjs";

function collector(n) {
  const seen = [];
  let done;
  const all = new Promise((r) => (done = r));
  return {
    seen,
    all,
    handler: (who) => (msg) => {
      seen.push({ who, msg });
      if (seen.length === n) done();
    },
  };
}

test("local listenQueue: delivery, retry of a failed handler, keysIfUndelivered", async () => {
  const kv = await openKv();
  const c = collector(3);
  let failures = 0;
  const listening = kv.listenQueue((msg) => {
    if (msg === "fail once" && failures++ === 0) throw new Error("first attempt fails");
    c.handler("only")(msg);
  });
  await kv.enqueue("one");
  await kv.atomic().enqueue({ two: 2 }).set(["side"], 1).commit();
  await kv.enqueue("fail once", { backoffSchedule: [10] });
  await c.all;
  assert.deepEqual(c.seen.map((s) => s.msg).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), ["fail once", "one", { two: 2 }].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))));
  assert.equal(failures, 2);
  kv.close();
  await listening; // resolves on close
});

test("undelivered messages land in keysIfUndelivered", async () => {
  const kv = await openKv();
  const listening = kv.listenQueue(() => {
    throw new Error("always fails");
  });
  await kv.enqueue("lost", { keysIfUndelivered: [["dead", 1]], backoffSchedule: [] });
  let e;
  const reader = kv.watch([["dead", 1]]).getReader();
  do e = (await reader.read()).value[0];
  while (e.value === null);
  assert.equal(e.value, "lost");
  await reader.cancel();
  kv.close();
  await listening;
});

test("remote listenQueue: two listeners share the messages, each delivered once", async () => {
  const { url } = await startServer({ engine: "memory" });
  const producer = await openKv(url, { accessToken: TOKEN });
  const a = await openKv(url, { accessToken: TOKEN });
  const b = await openKv(url, { accessToken: TOKEN });
  const n = 20;
  const c = collector(n);
  const la = a.listenQueue(c.handler("a"));
  const lb = b.listenQueue(c.handler("b"));
  for (let i = 0; i < n; i++) await producer.enqueue({ i });
  await c.all;
  assert.deepEqual(c.seen.map((s) => s.msg.i).sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i));
  a.close();
  b.close();
  await Promise.all([la, lb]);
  producer.close();
});

for (const where of ["memory", "remote"]) {
  test(`${where} watch: first snapshot, changes, delete, cancel`, async () => {
    const kv = where === "memory"
      ? await openKv()
      : await openKv((await startServer({ engine: "memory" })).url, { accessToken: TOKEN });
    await kv.set(["w", "a"], "a0");
    const reader = kv.watch([["w", "a"], ["w", "b"]]).getReader();
    const first = (await reader.read()).value;
    assert.deepEqual(first.map((e) => e.value), ["a0", null]);
    await kv.set(["w", "b"], "b1");
    let ev;
    do ev = (await reader.read()).value;
    while (ev[1].value !== "b1");
    assert.equal(ev[0].value, "a0");
    await kv.delete(["w", "a"]);
    do ev = (await reader.read()).value;
    while (ev[0].versionstamp !== null);
    assert.equal(ev[1].value, "b1");
    await reader.cancel();
    // Closing ends a running watch.
    const other = kv.watch([["w", "b"]]).getReader();
    await other.read();
    kv.close();
    assert.deepEqual(await other.read(), { done: true, value: undefined });
  });
}
