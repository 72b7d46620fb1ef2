// The Deno KV key codec (docs in the repository: shared spec `key-codec.md`, Rust twin
// `kv_traits::key`): a key is an array of parts, each string, number, bigint, boolean or
// Uint8Array, encoded into bytes whose unsigned order is the key order.
//
// Contract: encodeKey throws Deno's TypeError for anything that is not a key; decodeKey
// throws TypeError for bytes that are not an encoded key (never returns a wrong key).
"use strict";

const BYTES = 0x01;
const STRING = 0x02;
const NEG_INT_LONG = 0x0b;
const INT_ZERO = 0x14;
const POS_INT_LONG = 0x1d;
const FLOAT = 0x21;
const FALSE = 0x26;
const TRUE = 0x27;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function pushEscaped(out, tag, bytes) {
  out.push(tag);
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    out.push(b);
    if (b === 0) out.push(0xff);
  }
  out.push(0);
}

function bigintBytes(n) {
  // n > 0n: minimal big-endian magnitude.
  let hex = n.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  return Buffer.from(hex, "hex");
}

function pushBigInt(out, n) {
  if (n === 0n) {
    out.push(INT_ZERO);
    return;
  }
  const negative = n < 0n;
  const mag = bigintBytes(negative ? -n : n);
  if (mag.length > 255) {
    throw new TypeError("bigint key part is too large (more than 255 bytes)");
  }
  if (!negative) {
    if (mag.length <= 8) out.push(INT_ZERO + mag.length);
    else out.push(POS_INT_LONG, mag.length);
    for (const b of mag) out.push(b);
  } else {
    if (mag.length <= 8) out.push(INT_ZERO - mag.length);
    else out.push(NEG_INT_LONG, mag.length ^ 0xff);
    for (const b of mag) out.push(~b & 0xff);
  }
}

const f64 = new DataView(new ArrayBuffer(8));

function pushFloat(out, x) {
  if (Number.isNaN(x)) x = NaN; // canonical payload
  f64.setFloat64(0, x);
  const negative = (f64.getUint8(0) & 0x80) !== 0;
  out.push(FLOAT);
  for (let i = 0; i < 8; i++) {
    const b = f64.getUint8(i);
    out.push(negative ? ~b & 0xff : i === 0 ? b ^ 0x80 : b);
  }
}

/** Encodes a key; throws TypeError like Deno for a part of another type. */
function encodeKey(key) {
  if (!Array.isArray(key)) {
    throw new TypeError("Key must be an array of key parts");
  }
  const out = [];
  for (const part of key) {
    switch (typeof part) {
      case "string":
        pushEscaped(out, STRING, utf8.encode(part));
        break;
      case "number":
        pushFloat(out, part);
        break;
      case "bigint":
        pushBigInt(out, part);
        break;
      case "boolean":
        out.push(part ? TRUE : FALSE);
        break;
      default:
        if (ArrayBuffer.isView(part)) {
          pushEscaped(
            out,
            BYTES,
            new Uint8Array(part.buffer, part.byteOffset, part.byteLength),
          );
          break;
        }
        throw new TypeError(
          "expected string, number, bigint, ArrayBufferView, boolean",
        );
    }
  }
  return Buffer.from(out);
}

function readEscaped(bytes, pos, what) {
  // Fast path: no escaped 00 before the terminator.
  const end = bytes.indexOf(0, pos);
  if (end >= 0 && bytes[end + 1] !== 0xff) {
    return [bytes.subarray(pos, end), end + 1];
  }
  const out = [];
  for (;;) {
    if (pos >= bytes.length) throw new TypeError(`unterminated ${what} key part`);
    const b = bytes[pos++];
    if (b === 0) {
      if (bytes[pos] === 0xff) {
        out.push(0);
        pos++;
        continue;
      }
      return [Uint8Array.from(out), pos];
    }
    out.push(b);
  }
}

/** Decodes encoded key bytes into key parts. */
function decodeKey(bytes) {
  const parts = [];
  let pos = 0;
  const need = (n) => {
    if (pos + n > bytes.length) throw new TypeError("truncated key part");
  };
  while (pos < bytes.length) {
    const tag = bytes[pos++];
    if (tag === BYTES) {
      let b;
      [b, pos] = readEscaped(bytes, pos, "bytes");
      parts.push(Uint8Array.from(b)); // a copy: the key owns its bytes
    } else if (tag === STRING) {
      let b;
      [b, pos] = readEscaped(bytes, pos, "string");
      parts.push(utf8Decoder.decode(b));
    } else if (tag >= NEG_INT_LONG && tag <= POS_INT_LONG) {
      let len;
      let negative;
      if (tag === POS_INT_LONG || tag === NEG_INT_LONG) {
        need(1);
        negative = tag === NEG_INT_LONG;
        len = negative ? bytes[pos] ^ 0xff : bytes[pos];
        pos++;
      } else {
        negative = tag < INT_ZERO;
        len = Math.abs(tag - INT_ZERO);
      }
      need(len);
      let n = 0n;
      for (let i = 0; i < len; i++) {
        const b = negative ? ~bytes[pos + i] & 0xff : bytes[pos + i];
        n = (n << 8n) | BigInt(b);
      }
      pos += len;
      parts.push(negative ? -n : n);
    } else if (tag === FLOAT) {
      need(8);
      const negative = (bytes[pos] & 0x80) === 0;
      for (let i = 0; i < 8; i++) {
        const b = bytes[pos + i];
        f64.setUint8(i, negative ? ~b & 0xff : i === 0 ? b ^ 0x80 : b);
      }
      pos += 8;
      parts.push(f64.getFloat64(0));
    } else if (tag === FALSE) {
      parts.push(false);
    } else if (tag === TRUE) {
      parts.push(true);
    } else {
      throw new TypeError(`invalid key tag 0x${tag.toString(16)} at ${pos - 1}`);
    }
  }
  return parts;
}

module.exports = { encodeKey, decodeKey };
