// Shared helpers for the end-to-end scenarios (deno_scenario.ts, node_scenario.mjs).
//
// The scenarios print a transcript: one JSON object per line,
// `{"step":"<name>","result":<json>}`. Everything in a result must be
// deterministic for a given database behaviour: values are described with
// explicit type tags, and versionstamps (which differ between databases) are
// replaced by ordinal names ("vs1", "vs2", ... in order of first appearance)
// so two runs against different databases produce identical text when the
// databases behave the same.

/** Describes any JS value as plain JSON with explicit type tags. */
export function desc(v, seen = new Set()) {
  if (v === undefined) return { t: "undefined" };
  if (v === null) return { t: "null" };
  switch (typeof v) {
    case "boolean":
      return { t: "boolean", v };
    case "number":
      return { t: "number", v: Object.is(v, -0) ? "-0" : String(v) };
    case "bigint":
      return { t: "bigint", v: v.toString() };
    case "string":
      return { t: "string", v };
    case "symbol":
      return { t: "symbol", v: String(v) };
    case "function":
      return { t: "function" };
  }
  if (seen.has(v)) return { t: "cycle" };
  seen.add(v);
  try {
    const ctor = v.constructor ? v.constructor.name : "";
    // Deno.KvU64 and @deno/kv's KvU64 (class `_KvU64`) both expose `.value`.
    if ((ctor === "KvU64" || ctor === "_KvU64") && typeof v.value === "bigint") {
      return { t: "KvU64", v: v.value.toString() };
    }
    if (v instanceof Uint8Array) {
      return { t: "Uint8Array", v: Array.from(v) };
    }
    if (ArrayBuffer.isView(v)) {
      return { t: ctor, v: Array.from(v, (x) => String(x)) };
    }
    if (v instanceof ArrayBuffer) {
      return { t: "ArrayBuffer", v: Array.from(new Uint8Array(v)) };
    }
    if (v instanceof Date) {
      return { t: "Date", v: isNaN(v.getTime()) ? "Invalid" : v.toISOString() };
    }
    if (v instanceof RegExp) return { t: "RegExp", v: String(v) };
    if (v instanceof Map) {
      return { t: "Map", v: [...v].map(([k, x]) => [desc(k, seen), desc(x, seen)]) };
    }
    if (v instanceof Set) return { t: "Set", v: [...v].map((x) => desc(x, seen)) };
    if (v instanceof Error) return { t: "Error", name: v.name, message: v.message };
    if (Array.isArray(v)) {
      const items = [];
      for (let i = 0; i < v.length; i++) {
        items.push(i in v ? desc(v[i], seen) : { t: "hole" });
      }
      return { t: "Array", v: items };
    }
    if (v instanceof Boolean || v instanceof Number || v instanceof String) {
      return { t: "boxed", v: desc(v.valueOf(), seen) };
    }
    return {
      t: "Object",
      ctor,
      v: Object.keys(v).map((k) => [k, desc(v[k], seen)]),
    };
  } finally {
    seen.delete(v);
  }
}

/** Describes a key (array of parts). */
export function descKey(key) {
  return key.map((p) => desc(p));
}

/**
 * Maps versionstamps to stable ordinal names and checks ordering facts.
 * `commit(vs)` records a commit result of a sequential (awaited) write: it must
 * be strictly greater than every commit seen before and never seen before.
 */
export class Versionstamps {
  constructor() {
    this.names = new Map();
    this.lastCommit = null;
    this.violations = [];
    this.commits = 0;
  }
  name(vs) {
    if (vs === null || vs === undefined) return vs === null ? null : "undefined";
    if (typeof vs !== "string" || !/^[0-9a-f]{20}$/.test(vs)) {
      this.violations.push(`malformed versionstamp ${JSON.stringify(vs)}`);
      return `malformed:${vs}`;
    }
    let n = this.names.get(vs);
    if (n === undefined) {
      n = `vs${this.names.size + 1}`;
      this.names.set(vs, n);
    }
    return n;
  }
  /** A sequential commit result: strictly increasing, fresh. */
  commit(vs, what) {
    this.commits++;
    if (this.names.has(vs)) this.violations.push(`${what}: reused versionstamp`);
    if (this.lastCommit !== null && !(vs > this.lastCommit)) {
      this.violations.push(`${what}: ${vs} not greater than previous ${this.lastCommit}`);
    }
    this.lastCommit = vs;
    return this.name(vs);
  }
  /** A commit result from concurrent writers: only uniqueness is checked. */
  concurrentCommit(vs, what) {
    this.commits++;
    if (this.names.has(vs)) this.violations.push(`${what}: reused versionstamp`);
    if (this.lastCommit === null || vs > this.lastCommit) this.lastCommit = vs;
    return this.name(vs);
  }
}

/** Describes a KvEntry (or KvEntryMaybe). */
export function descEntry(vss, e) {
  return {
    key: descKey(e.key),
    value: desc(e.value),
    versionstamp: vss.name(e.versionstamp),
  };
}

/** Describes a commit result ({ok, versionstamp}) as a sequential commit. */
export function descCommit(vss, r, what) {
  if (r && r.ok === true) return { ok: true, versionstamp: vss.commit(r.versionstamp, what) };
  if (r && r.ok === false) return { ok: false, keys: Object.keys(r).sort() };
  return { unexpected: desc(r) };
}

/** Error description; the database URL is replaced by `<URL>`. */
export function descError(e, url) {
  const clean = (s) => {
    let out = String(s);
    if (url && /^https?:/.test(url)) {
      const origin = new URL(url).origin;
      out = out.split(origin).join("<URL>");
    }
    return out;
  };
  if (e instanceof Error) {
    const error = { name: e.name, class: e.constructor?.name ?? "", message: clean(e.message) };
    // Deno shows a 4xx from a KV Connect server as
    // "KV Connect failed to call '<url>' (status=<code> <reason>): <body>"
    // (kv-connect.md §3.2). Split that wrapper off so the body can be compared
    // with the message Deno's local database gives; `kvConnect` stays last.
    const m = /^KV Connect failed to call '([^']*)' \(status=(\d+)[^)]*\): ([\s\S]*)$/.exec(error.message);
    if (m) {
      error.message = m[3];
      error.kvConnect = { status: Number(m[2]), url: m[1] };
    }
    return { error };
  }
  return { error: { thrown: desc(e) } };
}

/** Sleeps `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Transcript writer. `step(name, fn)` runs `fn` with a per-step timeout and
 * prints one line. A timed-out step prints `{"timeout":...}` and the scenario
 * goes on (a server answering 5xx would make the Deno client retry forever).
 */
export class Transcript {
  constructor(write, url, stepTimeoutMs = 30000) {
    this.write = write;
    this.url = url;
    this.stepTimeoutMs = stepTimeoutMs;
    this.names = new Set();
  }
  async step(name, fn) {
    if (this.names.has(name)) throw new Error(`duplicate step name ${name}`);
    this.names.add(name);
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ timeout: `step did not finish within ${this.stepTimeoutMs} ms` }), this.stepTimeoutMs);
    });
    let result;
    try {
      result = await Promise.race([Promise.resolve().then(fn), timeout]);
    } catch (e) {
      result = descError(e, this.url);
    } finally {
      clearTimeout(timer);
    }
    if (result === undefined) result = null;
    this.write(JSON.stringify({ step: name, result }) + "\n");
    return result;
  }
}

/** Key parts of every type, deliberately not in key order. */
export function keyPartSamples() {
  return [
    true,
    "b",
    1n,
    1.5,
    new Uint8Array([1]),
    false,
    "",
    -1n,
    NaN,
    Infinity,
    new Uint8Array([]),
    "a\u0000b",
    0n,
    -0,
    0,
    -Infinity,
    "a",
    new Uint8Array([0, 1]),
    255n,
    256n,
    -256n,
    2n ** 64n - 1n,
    2n ** 64n,
    -(2n ** 64n),
    -1,
    1,
    5e-324,
    -1e308,
    "\u00e9",
    "\u{1F600}",
    "\uffff",
    "\u0000",
    new Uint8Array([255]),
    new Uint8Array([0]),
    2n ** 63n,
  ];
}
