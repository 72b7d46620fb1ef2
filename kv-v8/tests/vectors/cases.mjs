// The values of kv-v8's test vectors, and `describe`: an independent JavaScript
// implementation of kv-v8's display-tree contract (kv-v8/src/lib.rs), computed from the live
// value rather than from its bytes. Runs on Node and Deno.

/** A fixed stack, so that vectors do not depend on the checkout path. */
function withStack(e) {
  e.stack = `${e.name}: ${e.message}\n    at vector`;
  return e;
}

/**
 * The cases: name, a function building the value, and optionally `only` ("node" or "deno")
 * for values one runtime cannot write.
 */
export const cases = [
  ["undefined", () => undefined],
  ["null", () => null],
  ["true", () => true],
  ["false", () => false],
  ["zero", () => 0],
  ["negative zero", () => -0],
  ["small int", () => 42],
  ["negative int", () => -7],
  ["int32 max", () => 2147483647],
  ["int32 min", () => -2147483648],
  ["beyond int32", () => 2147483648],
  ["fraction", () => 1.5],
  ["NaN", () => NaN],
  ["Infinity", () => Infinity],
  ["-Infinity", () => -Infinity],
  ["huge double", () => 1e300],
  ["beyond 2^53", () => 2 ** 53 + 2],
  ["bigint zero", () => 0n],
  ["bigint one", () => 1n],
  ["bigint 2^64", () => 2n ** 64n],
  ["bigint -2^200", () => -(2n ** 200n)],
  ["empty string", () => ""],
  ["ascii string", () => "hello"],
  ["latin-1 string", () => "héllo wörld ÿ"],
  ["two-byte string", () => "日本語テキスト"],
  ["surrogate pairs", () => "emoji 🎉🚀 mixed"],
  ["long string", () => "a".repeat(300)],
  ["empty object", () => ({})],
  ["object", () => ({ a: 1, b: "x", c: null, d: undefined, e: true })],
  ["integer keys", () => ({ b: 1, 2: "two", 1: "one", a: 0 })],
  ["nested", () => ({ a: { b: { c: [1, 2, { d: "deep" }] } } })],
  ["two-byte key", () => ({ "ключ": "значение", k: "€" })],
  ["empty array", () => []],
  ["packed array", () => [1, "two", 3.5, null, true]],
  ["holey array", () => [1, , 3]], // eslint-disable-line no-sparse-arrays
  ["all holes", () => new Array(4)],
  ["sparse array", () => { const a = []; a[100] = "x"; a.foo = "bar"; return a; }],
  ["array with property", () => { const a = [1, 2]; a.extra = 3; return a; }],
  ["date epoch", () => new Date(0)],
  ["date", () => new Date(1700000000123)],
  ["date before epoch", () => new Date(-1e12)],
  ["invalid date", () => new Date(NaN)],
  ["date max", () => new Date(8.64e15)],
  ["regexp", () => /a+b/gi],
  ["regexp all flags", () => new RegExp("x.y", "dgimsuy")],
  ["regexp v flag", () => new RegExp("[a-z]", "v")],
  ["map", () => new Map([[1, "a"], ["k", { x: 1 }], [null, [true]]])],
  ["set", () => new Set([1, "a", null, 2n])],
  ["uint8array", () => new Uint8Array([1, 2, 3, 255])],
  ["empty uint8array", () => new Uint8Array(0)],
  ["int8array", () => new Int8Array([-1, 1])],
  ["uint8clampedarray", () => new Uint8ClampedArray([0, 255])],
  ["int16array", () => new Int16Array([-1, 2])],
  ["uint16array", () => new Uint16Array([65535])],
  ["int32array", () => new Int32Array([-5])],
  ["uint32array", () => new Uint32Array([4000000000])],
  ["float32array", () => new Float32Array([1.5])],
  ["float64array", () => new Float64Array([1.5, NaN])],
  ["bigint64array", () => new BigInt64Array([-1n])],
  ["biguint64array", () => new BigUint64Array([2n ** 63n])],
  ["dataview", () => new DataView(new Uint8Array([9, 8, 7]).buffer)],
  ["arraybuffer", () => new Uint8Array([1, 2, 3]).buffer],
  ["resizable arraybuffer", () => new ArrayBuffer(2, { maxByteLength: 8 })],
  ["subarray", () => new Uint8Array([1, 2, 3, 4, 5]).subarray(1, 3)],
  ["shared buffer", () => { const b = new ArrayBuffer(4); return [new Uint8Array(b), new Uint16Array(b)]; }],
  ["typed array in object", () => ({ data: new Uint8Array([9]), n: 1 })],
  ["node buffer", () => Buffer.from([1, 2, 3]), "node"],
  ["kv u64", () => new Deno.KvU64(5n), "deno"],
  ["self cycle", () => { const o = { a: 1 }; o.self = o; return o; }],
  ["array cycle", () => { const a = [1]; a.push(a); return a; }],
  ["map cycle", () => { const m = new Map(); m.set("me", m); return m; }],
  ["shared object", () => { const o = { x: 1 }; return { a: o, b: o, c: [o] }; }],
  ["deep cycle", () => { const o = { l1: { l2: {} } }; o.l1.l2.back = o.l1; return o; }],
  ["string object", () => new String("ab")],
  ["number object", () => new Number(1.5)],
  ["boolean object true", () => new Boolean(true)],
  ["boolean object false", () => new Boolean(false)],
  ["bigint object", () => Object(5n)],
  ["error", () => withStack(new Error("boom"))],
  ["type error with cause", () => withStack(new TypeError("bad", { cause: { code: 7 } }))],
  ["range error", () => withStack(new RangeError("range"))],
  ["everything", () => ({
    id: 1,
    name: "Ada",
    tags: new Set(["a", "b"]),
    created: new Date(1700000000000),
    balance: 12345678901234567890n,
    avatar: new Uint8Array([137, 80, 78, 71]),
    scores: new Map([["math", 99.5]]),
    nested: [{ deep: [null, undefined] }],
  })],
];

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function num(n) {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "Infinity";
  if (n === -Infinity) return "-Infinity";
  if (Object.is(n, -0)) return "-0";
  return n;
}

const ERROR_NAMES = ["EvalError", "RangeError", "ReferenceError", "SyntaxError", "TypeError", "URIError"];

function isIndex(k) {
  return /^(0|[1-9][0-9]*)$/.test(k) && Number(k) < 4294967295;
}

/**
 * The display tree of `value` as kv-v8 must produce it from the bytes V8 writes for it.
 * `views`: "native" (V8's own form: an ArrayBuffer, then a view over it; Deno) or "host"
 * (Node's `v8.serialize`: a host object with just the viewed bytes). The `sparse` flag of
 * arrays is left out (it depends on V8's internal elements kind, not on the value).
 */
export function describe(value, views) {
  const ids = new Map();
  let next = 0;
  const newId = (x) => {
    const id = next++;
    ids.set(x, id);
    return id;
  };
  const d = (x) => {
    switch (typeof x) {
      case "undefined": return { type: "undefined" };
      case "boolean": return { type: "boolean", value: x };
      case "number": return { type: "number", value: num(x) };
      case "bigint": return { type: "bigint", value: x.toString() };
      case "string": return { type: "string", value: x };
    }
    if (x === null) return { type: "null" };
    if (ids.has(x)) return { type: "ref", id: ids.get(x) };
    if (ArrayBuffer.isView(x)) {
      const kind = x instanceof DataView
        ? "DataView"
        : (views === "host" && typeof Buffer !== "undefined" && Buffer.isBuffer(x) ? "Buffer" : x[Symbol.toStringTag]);
      const bytes = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
      if (views === "host") {
        return { type: "view", kind, id: newId(x), byteOffset: 0, byteLength: x.byteLength, hex: hex(bytes) };
      }
      const inline = !ids.has(x.buffer);
      const buffer = d(x.buffer);
      const t = { type: "view", kind, id: newId(x), byteOffset: x.byteOffset, byteLength: x.byteLength };
      if (inline) t.hex = hex(bytes);
      t.buffer = buffer;
      return t;
    }
    const id = newId(x);
    const tag = Object.prototype.toString.call(x);
    if (x instanceof ArrayBuffer) {
      const t = { type: "arraybuffer", id, hex: hex(new Uint8Array(x)) };
      if (x.resizable) t.maxByteLength = x.maxByteLength;
      return t;
    }
    if (x instanceof Date) {
      const ms = x.getTime();
      return { type: "date", id, value: Number.isNaN(ms) ? null : x.toISOString(), ms: num(ms) };
    }
    if (x instanceof RegExp) return { type: "regexp", id, source: x.source, flags: x.flags };
    if (x instanceof Map) return { type: "map", id, entries: [...x].map(([k, v]) => [d(k), d(v)]) };
    if (x instanceof Set) return { type: "set", id, values: [...x].map(d) };
    if (x instanceof Error) {
      const t = { type: "error", id, name: ERROR_NAMES.includes(x.name) ? x.name : "Error" };
      if (Object.hasOwn(x, "message")) t.message = x.message;
      if (typeof x.stack === "string") t.stack = x.stack;
      if (Object.hasOwn(x, "cause")) t.cause = d(x.cause);
      return t;
    }
    if (["[object String]", "[object Number]", "[object Boolean]", "[object BigInt]"].includes(tag)) {
      return { type: "wrapper", id, value: d(x.valueOf()) };
    }
    if (Array.isArray(x)) {
      return {
        type: "array",
        id,
        length: x.length,
        entries: Object.keys(x).map((k) => [isIndex(k) ? Number(k) : k, d(x[k])]),
      };
    }
    return { type: "object", id, entries: Object.keys(x).map((k) => [k, d(x[k])]) };
  };
  return d(value);
}

export { hex };
