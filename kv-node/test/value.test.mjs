// Value encoding (lib/value.js): encodings, V8 header handling, clone errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeValue, decodeValue, deserializeV8, OWN_VERSION } from "../lib/value.js";
import { KvU64 } from "../lib/kv_u64.js";

test("KvU64, Uint8Array and V8 values use Deno's encodings", () => {
  assert.deepEqual(encodeValue(new KvU64(258n)), { encoding: 2, data: Buffer.from([2, 1, 0, 0, 0, 0, 0, 0]) });
  assert.deepEqual(encodeValue(new Uint8Array([1, 2])), { encoding: 3, data: Buffer.from([1, 2]) });
  const v8 = encodeValue({ nested: new Uint8Array([5]) });
  assert.equal(v8.encoding, 1);
  // Nested typed arrays in V8's own format ('V' view tag), not Node's host-object format.
  assert.ok(v8.data.includes(0x56));
  assert.deepEqual(decodeValue(1, v8.data), { nested: new Uint8Array([5]) });
  assert.equal(decodeValue(2, Buffer.from([2, 1, 0, 0, 0, 0, 0, 0])).value, 258n);
});

test("a value that cannot be cloned is Deno's TypeError", () => {
  assert.throws(() => encodeValue(() => 1), { name: "TypeError", message: "() => 1 could not be cloned." });
  assert.throws(() => encodeValue(Symbol("s")), TypeError);
});

test("a newer V8 format whose bytes this V8 cannot read fails saying why", { skip: OWN_VERSION >= 16 }, () => {
  // Format 16 header, then a tag no V8 format defines.
  const bytes = Buffer.from([0xff, 0x10, 0x01]);
  assert.throws(() => deserializeV8(bytes), (e) => {
    assert.match(e.message, /written in V8 serialization format 16/);
    assert.match(e.message, new RegExp(`reads up to format ${OWN_VERSION}`));
    return true;
  });
  // The same value in this V8's format decodes.
  assert.equal(deserializeV8(Buffer.from([0xff, 0x10, 0x22, 0x01, 0x61])), "a");
});
