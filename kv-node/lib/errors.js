// Error classes and the translation of the addon's errors into them.
//
// Contract: the addon rejects with messages "<Class>: <message>"; `fromNative` returns an
// instance of that class (TypeError, RangeError, BadResource, or Error) with the message.
// `BadResource` is Deno's `Deno.errors.BadResource` (name "BadResource").
"use strict";

class BadResource extends Error {
  constructor(message = "Bad resource ID", options) {
    super(message, options);
    this.name = "BadResource";
  }
}

const errors = { BadResource };

function fromNative(e) {
  if (!(e instanceof Error)) return e;
  const m = /^(TypeError|RangeError|BadResource|Error): ([\s\S]*)$/.exec(e.message);
  if (!m) return e;
  const [, cls, message] = m;
  switch (cls) {
    case "TypeError":
      return new TypeError(message);
    case "RangeError":
      return new RangeError(message);
    case "BadResource":
      return new BadResource(message);
    default:
      return new Error(message);
  }
}

/** Awaits a native promise, translating its error. */
async function call(promise) {
  try {
    return await promise;
  } catch (e) {
    throw fromNative(e);
  }
}

module.exports = { BadResource, errors, fromNative, call };
