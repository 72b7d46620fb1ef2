// Values: how a JavaScript value is stored (encoding + bytes) and read back.
//
// Contract (interchangeable with Deno and @deno/kv 0.14):
// - KvU64 -> encoding 2 (8 little-endian bytes); a top-level Uint8Array -> encoding 3 (raw
//   bytes); anything else -> encoding 1, V8 serialization (Node's `v8.Serializer`). Typed arrays
//   nested in a value are written in V8's own format (not as Node host objects as
//   `v8.serialize` does), so Deno can read them; Node host objects written by @deno/kv are
//   still read.
// - A value V8 cannot clone throws Deno's `TypeError: <value> could not be cloned.`
// - Reading a V8 value written by a newer V8 (Deno 2.x writes format 16; Node 20 reads up to
//   15): format 16 encodes every value that format 15 can express with the same bytes (checked
//   against values written by Deno 2.9.6 in the kv-node tests), so the header is rewritten to
//   this V8's version and decoded; a value that uses something this V8 does not know fails
//   with an Error saying which format it was written in and which this Node reads.
"use strict";

const v8 = require("node:v8");
const { KvU64 } = require("./kv_u64.js");

const ENC_V8 = 1;
const ENC_LE64 = 2;
const ENC_BYTES = 3;

/** The V8 format version this Node writes (the second header byte). */
const OWN_VERSION = (() => {
  const s = new v8.Serializer();
  s.writeHeader();
  return s.releaseBuffer()[1];
})();

function serializeV8(value) {
  const s = new v8.Serializer();
  s.writeHeader();
  try {
    s.writeValue(value);
  } catch (e) {
    if (e instanceof Error && / could not be cloned\.$/.test(e.message)) {
      throw new TypeError(e.message);
    }
    throw e;
  }
  return s.releaseBuffer();
}

/** Encodes a value for storage: `{ encoding, data: Buffer }`. */
function encodeValue(value) {
  if (value instanceof KvU64) {
    const data = Buffer.alloc(8);
    data.writeBigUInt64LE(value.value);
    return { encoding: ENC_LE64, data };
  }
  if (value instanceof Uint8Array) {
    return {
      encoding: ENC_BYTES,
      data: Buffer.from(value.buffer, value.byteOffset, value.byteLength),
    };
  }
  return { encoding: ENC_V8, data: serializeV8(value) };
}

/** Decodes V8 bytes written by Node, @deno/kv or Deno (see the contract above). */
function deserializeV8(data) {
  if (data.length >= 2 && data[0] === 0xff && data[1] > OWN_VERSION && data[1] < 0x80) {
    const written = data[1];
    const copy = Buffer.from(data);
    copy[1] = OWN_VERSION;
    try {
      return v8.deserialize(copy);
    } catch (e) {
      throw new Error(
        `cannot decode a value written in V8 serialization format ${written} ` +
          `(this Node.js ${process.version} reads up to format ${OWN_VERSION}; ` +
          `the value uses a feature of the newer format): ${e.message}`,
        { cause: e },
      );
    }
  }
  return v8.deserialize(data);
}

/** Decodes a stored value. */
function decodeValue(encoding, data) {
  switch (encoding) {
    case ENC_V8:
      return deserializeV8(data);
    case ENC_LE64:
      return new KvU64(data.readBigUInt64LE(0));
    case ENC_BYTES:
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    default:
      throw new TypeError(`unknown value encoding ${encoding}`);
  }
}

module.exports = { encodeValue, decodeValue, serializeV8, deserializeV8, OWN_VERSION };
