// KvU64: an unsigned 64-bit integer stored natively (Deno.KvU64), the operand of sum/min/max.
"use strict";

const MAX = (1n << 64n) - 1n;

class KvU64 {
  constructor(value) {
    if (typeof value !== "bigint") {
      throw new TypeError(`Value must be a bigint: received ${typeof value}`);
    }
    if (value < 0n) {
      throw new RangeError(`Value must be a positive bigint: received ${value}`);
    }
    if (value > MAX) {
      throw new RangeError("Value must fit in a 64-bit unsigned integer");
    }
    Object.defineProperty(this, "value", { value, enumerable: true });
    Object.freeze(this);
  }
  valueOf() {
    return this.value;
  }
  toString() {
    return this.value.toString();
  }
  get [Symbol.toStringTag]() {
    return "Deno.KvU64";
  }
  [Symbol.for("nodejs.util.inspect.custom")]() {
    return `[Deno.KvU64: ${this.value}n]`;
  }
}

module.exports = { KvU64 };
