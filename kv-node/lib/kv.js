// The Deno.Kv API over one native database (see ../src/lib.rs for the native half).
//
// Contract: Deno's semantics and error classes (checked against Deno 2.9.6 by the tests):
// - Keys are validated and encoded here (TypeError for a bad part, "key cannot be empty" for
//   an empty key written, Deno's size limits and messages); values are encoded by value.js.
//   Anything rejected here or by the native database writes nothing.
// - After close() every method throws (or rejects with) BadResource "Bad resource ID".
// - list(): prefix selectors read [P‖00, P‖ff), so the prefix key itself is never listed, in
//   either direction and whatever the batch size; cursors are base64url of the last key
//   without the selector's common prefix (Deno's, interchangeable with Deno).
// - listenQueue() delivers messages to the handler concurrently (like Deno), finishing each
//   with success unless the handler threw; it resolves when the database is closed. watch()
//   returns a ReadableStream of entry arrays, emitted when a versionstamp changed.
// - A pending listenQueue or watch is what keeps the process alive; nothing else does.
"use strict";

const { encodeKey, decodeKey } = require("./key.js");
const { encodeValue, decodeValue, deserializeV8, serializeV8 } = require("./value.js");
const { KvU64 } = require("./kv_u64.js");
const { BadResource, call } = require("./errors.js");

const MAX_WRITE_KEY = 2048;
const MAX_READ_KEY = 2049;
const MAX_VALUE = 65536;
const MAX_READ_RANGES = 10;
const MAX_READ_ENTRIES = 1000;
const MAX_WATCHED_KEYS = 10;
const MAX_CHECKS = 100;
const MAX_MUTATIONS = 1000;
const MAX_TOTAL_MUTATION_SIZE = 800 * 1024;
const MAX_TOTAL_KEY_SIZE = 80 * 1024;
const DEQUEUE_WAIT_MS = 30_000;

function readKey(key) {
  const k = encodeKey(key);
  if (k.length > MAX_READ_KEY) {
    throw new TypeError(`Key too large for read (max ${MAX_READ_KEY} bytes)`);
  }
  return k;
}

function writeKey(key) {
  const k = encodeKey(key);
  if (k.length === 0) throw new TypeError("key cannot be empty");
  if (k.length > MAX_WRITE_KEY) {
    throw new TypeError(`Key too large for write (max ${MAX_WRITE_KEY} bytes)`);
  }
  return k;
}

function checkValueSize(data) {
  if (data.length > MAX_VALUE) {
    throw new TypeError(`Value too large (max ${MAX_VALUE} bytes)`);
  }
}

function checkConsistency(consistency) {
  if (consistency !== undefined && consistency !== "strong" && consistency !== "eventual") {
    throw new TypeError(`Invalid consistency: ${consistency}`);
  }
  return consistency === "eventual";
}

/** Reads the packed entries of one range (see `pack_entries` in ../src/convert.rs). */
function unpackEntries(buf) {
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    const keyLen = buf.readUInt32LE(pos);
    pos += 4;
    const key = buf.subarray(pos, pos + keyLen);
    pos += keyLen;
    const encoding = buf[pos++];
    const valueLen = buf.readUInt32LE(pos);
    pos += 4;
    const value = buf.subarray(pos, pos + valueLen);
    pos += valueLen;
    const versionstamp = buf.toString("hex", pos, pos + 10);
    pos += 10;
    out.push({ key, encoding, value, versionstamp });
  }
  return out;
}

function entryOf(key, e) {
  return { key, value: decodeValue(e.encoding, e.value), versionstamp: e.versionstamp };
}

function absent(key) {
  return { key, value: null, versionstamp: null };
}

function base64url(bytes) {
  return Buffer.from(bytes).toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
}

function fromBase64url(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]*={0,2}$/.test(s)) {
    throw new TypeError("invalid cursor");
  }
  return Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64");
}

function checkExpireIn(expireIn) {
  if (expireIn !== undefined && !(Number.isSafeInteger(expireIn) && expireIn >= 0)) {
    throw new TypeError(`expireIn must be a non-negative integer: received ${expireIn}`);
  }
}

function encodeEnqueue(value, options = {}) {
  const { delay = 0, keysIfUndelivered = [], backoffSchedule } = options ?? {};
  if (typeof delay !== "number" || !(delay >= 0)) {
    throw new TypeError(`Delay must be >= 0: received ${delay}`);
  }
  if (!Array.isArray(keysIfUndelivered)) {
    throw new TypeError("keysIfUndelivered must be an array of keys");
  }
  if (
    backoffSchedule !== undefined &&
    !(Array.isArray(backoffSchedule) &&
      backoffSchedule.every((n) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff))
  ) {
    throw new TypeError("backoffSchedule must be an array of non-negative integers");
  }
  const payload = serializeV8(value);
  checkValueSize(payload);
  return {
    payload,
    deadlineMs: Date.now() + delay,
    keysIfUndelivered: keysIfUndelivered.map(writeKey),
    backoffSchedule,
  };
}

/** Deno.AtomicOperation. Values are encoded at once (a value that cannot be cloned throws
 * here, like Deno); keys at commit (a bad key rejects the commit, like Deno). */
class AtomicOperation {
  #kv;
  #checks = [];
  #mutations = [];
  #enqueues = [];

  constructor(kv) {
    this.#kv = kv;
  }

  check(...checks) {
    for (const c of checks) {
      const { key, versionstamp = null } = c ?? {};
      if (versionstamp !== null && !(typeof versionstamp === "string" && /^[0-9a-f]{20}$/.test(versionstamp))) {
        this.#checks.push({ key, invalid: true });
      } else {
        this.#checks.push({ key, versionstamp });
      }
    }
    return this;
  }

  mutate(...mutations) {
    for (const m of mutations) {
      const { key, type } = m ?? {};
      switch (type) {
        case "set":
          checkExpireIn(m.expireIn);
          this.#mutations.push({ key, kind: "set", value: encodeValue(m.value), expireIn: m.expireIn });
          break;
        case "delete":
          this.#mutations.push({ key, kind: "delete" });
          break;
        case "sum":
        case "min":
        case "max":
          // A KvU64 operand, or (sum) a V8 number or bigint: the database checks the types.
          this.#mutations.push({ key, kind: type, value: encodeValue(m.value) });
          break;
        default:
          throw new TypeError("Invalid mutation type");
      }
    }
    return this;
  }

  set(key, value, options) {
    return this.mutate({ type: "set", key, value, expireIn: options?.expireIn });
  }

  delete(key) {
    return this.mutate({ type: "delete", key });
  }

  sum(key, n) {
    return this.mutate({ type: "sum", key, value: new KvU64(n) });
  }

  min(key, n) {
    return this.mutate({ type: "min", key, value: new KvU64(n) });
  }

  max(key, n) {
    return this.mutate({ type: "max", key, value: new KvU64(n) });
  }

  enqueue(value, options) {
    this.#enqueues.push(encodeEnqueue(value, options));
    return this;
  }

  async commit() {
    const native = this.#kv._native("commit");
    if (this.#checks.length > MAX_CHECKS) {
      throw new TypeError(`Too many checks (max ${MAX_CHECKS})`);
    }
    if (this.#mutations.length + this.#enqueues.length > MAX_MUTATIONS) {
      throw new TypeError(`Too many mutations (max ${MAX_MUTATIONS})`);
    }
    let totalKeys = 0;
    let total = 0;
    const checks = this.#checks.map((c) => {
      const key = readKey(c.key);
      if (c.invalid) throw new TypeError("Invalid check");
      totalKeys += key.length;
      return { key, versionstamp: c.versionstamp ?? undefined };
    });
    const now = Date.now();
    const mutations = this.#mutations.map((m) => {
      const key = writeKey(m.key);
      totalKeys += key.length;
      total += key.length;
      const out = { key, kind: m.kind };
      if (m.value) {
        checkValueSize(m.value.data);
        total += m.value.data.length;
        out.value = m.value.data;
        out.encoding = m.value.encoding;
      }
      if (m.expireIn !== undefined) out.expireAtMs = now + m.expireIn;
      return out;
    });
    for (const e of this.#enqueues) {
      total += e.payload.length;
      for (const k of e.keysIfUndelivered) total += k.length;
    }
    if (totalKeys > MAX_TOTAL_KEY_SIZE) {
      throw new TypeError(`Total key size too large (max ${MAX_TOTAL_KEY_SIZE} bytes)`);
    }
    if (total > MAX_TOTAL_MUTATION_SIZE) {
      throw new TypeError(`Total mutation size too large (max ${MAX_TOTAL_MUTATION_SIZE} bytes)`);
    }
    const r = await call(native.atomicWrite({ checks, mutations, enqueues: this.#enqueues }));
    return r.ok ? { ok: true, versionstamp: r.versionstamp } : { ok: false };
  }
}

/** The selector's read bounds and cursor prefix (Deno's rules, see the module contract). */
function compileSelector(selector) {
  if (selector === null || typeof selector !== "object") {
    throw new TypeError("Selector must specify either 'prefix' or both 'start' and 'end' key");
  }
  const { prefix, start, end } = selector;
  if (prefix !== undefined) {
    if (start !== undefined && end !== undefined) {
      throw new TypeError("Selector must specify either 'prefix' or both 'start' and 'end' key");
    }
    const p = readKey(prefix);
    const lowest = start !== undefined ? readKey(start) : Buffer.concat([p, Buffer.of(0)]);
    const highest = end !== undefined ? readKey(end) : Buffer.concat([p, Buffer.of(0xff)]);
    const inside = (k) => k.length > p.length && k.subarray(0, p.length).equals(p);
    if ((start !== undefined && !inside(lowest)) || (end !== undefined && !inside(highest))) {
      throw new TypeError(`${start !== undefined ? "Start" : "End"} key is not in the keyspace defined by prefix`);
    }
    return { start: lowest, end: highest, common: p, lower: start !== undefined ? lowest : p };
  }
  if (start === undefined || end === undefined) {
    throw new TypeError("Selector must specify either 'prefix' or both 'start' and 'end' key");
  }
  const s = readKey(start);
  const e = readKey(end);
  if (Buffer.compare(s, e) > 0) throw new TypeError("Start key is greater than end key");
  let n = 0;
  while (n < s.length && n < e.length && s[n] === e[n]) n++;
  return { start: s, end: e, common: s.subarray(0, n), lower: s };
}

/** Deno.KvListIterator: an async iterator over a list, fetched in batches, with `cursor`. */
class KvListIterator {
  #kv;
  #sel;
  #reverse;
  #eventual;
  #limit;
  #batchSize;
  #start;
  #end;
  #buffer = [];
  #done = false;
  #yielded = 0;
  #cursor; // undefined before the first iteration

  constructor(kv, sel, options) {
    this.#kv = kv;
    this.#sel = sel;
    this.#reverse = options.reverse === true;
    this.#eventual = checkConsistency(options.consistency);
    this.#limit = options.limit;
    this.#batchSize = options.batchSize;
    this.#start = sel.start;
    this.#end = sel.end;
    if (options.cursor !== undefined) {
      const boundary = Buffer.concat([sel.common, fromBase64url(options.cursor)]);
      if (this.#reverse) this.#end = boundary;
      else this.#start = Buffer.concat([boundary, Buffer.of(0)]);
      if (Buffer.compare(this.#start, sel.lower) < 0 || Buffer.compare(this.#end, sel.end) > 0) {
        throw new TypeError("invalid cursor");
      }
    }
  }

  get cursor() {
    if (this.#cursor === undefined) throw new Error("Cannot get cursor before first iteration");
    return this.#cursor;
  }

  async #fill() {
    const want = this.#limit === undefined
      ? this.#batchSize
      : Math.min(this.#batchSize, this.#limit - this.#yielded);
    if (Buffer.compare(this.#start, this.#end) >= 0) {
      this.#done = true;
      return;
    }
    const native = this.#kv._native("list");
    const [packed] = await call(native.snapshotRead(
      [{ start: this.#start, end: this.#end, limit: want, reverse: this.#reverse }],
      this.#eventual,
    ));
    const entries = unpackEntries(packed);
    if (entries.length < want) this.#done = true;
    const last = entries[entries.length - 1];
    if (last) {
      if (this.#reverse) this.#end = last.key;
      else this.#start = Buffer.concat([last.key, Buffer.of(0)]);
    }
    this.#buffer = entries;
  }

  async next() {
    if (this.#limit !== undefined && this.#yielded >= this.#limit) {
      this.#cursor ??= "";
      return { done: true, value: undefined };
    }
    if (this.#buffer.length === 0 && !this.#done) await this.#fill();
    const e = this.#buffer.shift();
    if (e === undefined) {
      this.#cursor = "";
      return { done: true, value: undefined };
    }
    this.#yielded++;
    this.#cursor = base64url(e.key.subarray(this.#sel.common.length));
    return { done: false, value: entryOf(decodeKey(e.key), e) };
  }

  async return(value) {
    this.#done = true;
    this.#buffer = [];
    return { done: true, value };
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/** Deno.Kv over a native database. */
class Kv {
  #native;
  #closed = false;

  constructor(native) {
    this.#native = native;
  }

  /** The native database, or BadResource if closed. @internal */
  _native() {
    if (this.#closed) throw new BadResource("Bad resource ID");
    return this.#native;
  }

  async get(key, options = {}) {
    const native = this._native();
    const eventual = checkConsistency(options?.consistency);
    const k = readKey(key);
    const end = Buffer.concat([k, Buffer.of(0)]);
    const [packed] = await call(native.snapshotRead([{ start: k, end, limit: 1, reverse: false }], eventual));
    const [e] = unpackEntries(packed);
    return e ? entryOf(key, e) : absent(key);
  }

  async getMany(keys, options = {}) {
    const native = this._native();
    const eventual = checkConsistency(options?.consistency);
    if (!Array.isArray(keys)) throw new TypeError("keys must be an array of keys");
    if (keys.length > MAX_READ_RANGES) {
      throw new TypeError(`Too many ranges (max ${MAX_READ_RANGES})`);
    }
    if (keys.length === 0) return [];
    const ranges = keys.map((key) => {
      const k = readKey(key);
      return { start: k, end: Buffer.concat([k, Buffer.of(0)]), limit: 1, reverse: false };
    });
    const rs = await call(native.snapshotRead(ranges, eventual));
    return rs.map((packed, i) => {
      const [e] = unpackEntries(packed);
      return e ? entryOf(keys[i], e) : absent(keys[i]);
    });
  }

  async set(key, value, options = {}) {
    this._native();
    const r = await this.atomic().set(key, value, options).commit();
    if (!r.ok) throw new Error("Failed to set value");
    return r;
  }

  async delete(key) {
    this._native();
    const r = await this.atomic().delete(key).commit();
    if (!r.ok) throw new Error("Failed to delete value");
  }

  list(selector, options = {}) {
    this._native();
    options ??= {};
    const { limit, batchSize } = options;
    if (limit !== undefined && !(Number.isSafeInteger(limit) && limit > 0)) {
      throw new Error(`Limit must be a positive integer: received ${limit}`);
    }
    let size = batchSize ?? Math.min(limit ?? 500, 500);
    if (!(Number.isSafeInteger(size) && size > 0)) {
      throw new Error(`batchSize must be a positive integer: received ${size}`);
    }
    if (size > MAX_READ_ENTRIES) {
      throw new TypeError(`Too many entries (max ${MAX_READ_ENTRIES})`);
    }
    const sel = compileSelector(selector);
    return new KvListIterator(this, sel, { ...options, batchSize: size });
  }

  atomic() {
    return new AtomicOperation(this);
  }

  async enqueue(value, options) {
    this._native();
    return await this.atomic().enqueue(value, options).commit();
  }

  async listenQueue(handler) {
    const native = this._native();
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    for (;;) {
      if (this.#closed) return;
      let msg;
      try {
        msg = await call(native.dequeue(DEQUEUE_WAIT_MS));
      } catch (e) {
        if (this.#closed) return;
        throw e;
      }
      if (msg === null || msg === undefined) continue;
      this.#deliver(native, handler, msg);
    }
  }

  async #deliver(native, handler, msg) {
    let ok = false;
    try {
      await handler(deserializeV8(msg.payload));
      ok = true;
    } catch (e) {
      console.error("Exception in queue handler", e);
    }
    try {
      await native.finish(msg.lease, ok);
    } catch {
      // The lease expired or the database closed: the message is redelivered.
    }
  }

  watch(keys, options = {}) {
    const native = this._native();
    if (!Array.isArray(keys)) throw new TypeError("keys must be an array of keys");
    if (keys.length > MAX_WATCHED_KEYS) {
      throw new TypeError(`Too many keys (max ${MAX_WATCHED_KEYS})`);
    }
    const encoded = keys.map(readKey);
    const raw = options?.raw === true;
    const current = keys.map(absent);
    let handle;
    let first = true;
    return new ReadableStream({
      async pull(controller) {
        try {
          handle ??= await call(native.watch(encoded));
          for (;;) {
            const out = await call(handle.next());
            if (out === null || out === undefined) {
              controller.close();
              return;
            }
            let changed = false;
            out.forEach((o, i) => {
              if (!o.changed) return;
              const next = o.entry ? entryOf(keys[i], o.entry) : absent(keys[i]);
              if (next.versionstamp !== current[i].versionstamp) changed = true;
              current[i] = next;
            });
            if (first || changed || raw) {
              first = false;
              controller.enqueue(current.slice());
              return;
            }
          }
        } catch (e) {
          controller.error(e);
        }
      },
      cancel() {
        handle?.cancel();
      },
    });
  }

  close() {
    const native = this._native();
    this.#closed = true;
    native.close().catch(() => {});
  }

  /** Closes unless already closed (the disposers). @internal */
  _dispose() {
    if (!this.#closed) this.close();
  }

  get [Symbol.toStringTag]() {
    return "Deno.Kv";
  }
}

// `using` / `await using`, where the runtime has the symbols.
if (typeof Symbol.dispose === "symbol") {
  Kv.prototype[Symbol.dispose] = function () {
    this._dispose();
  };
}
if (typeof Symbol.asyncDispose === "symbol") {
  Kv.prototype[Symbol.asyncDispose] = async function () {
    this._dispose();
  };
}

module.exports = { Kv, AtomicOperation, KvListIterator, unpackEntries };
