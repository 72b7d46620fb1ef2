//! Reading the values stored in Deno KV for people: a read-only decoder of the V8
//! ValueSerializer format, a typed JSON tree for display, and a JSON notation for writing.
//!
//! The storage path stays opaque: nothing in the server decodes values to store them. This
//! crate is for tools that show and edit values (the web console, the `data` command line).
//!
//! - [`decode()`]: V8 bytes (formats 13 to 16, as Deno 2 and Node's `v8.serialize` write them)
//!   to a [`V8Value`] tree. Never panics; memory linear in the input (see the decoder's
//!   module, [`mod@decode`], for the full contract).
//! - [`value_tree`]: any stored [`KvValue`] as the display tree below.
//! - [`value_from_notation`] / [`value_to_notation`], [`key_from_notation`] /
//!   [`key_to_notation`]: the JSON notation for writing values and keys by hand, specified in
//!   [`mod@notation`]; [`serialize()`] writes V8 bytes (format 15) that Deno and Node read.
//!
//! # The display tree (contract)
//!
//! [`value_tree`] returns a JSON object with a `"type"` member; the other members depend on
//! the type. Consumers must ignore members they do not know (new ones may be added); the
//! members listed here are stable.
//!
//! | `type` | members | for |
//! |---|---|---|
//! | `u64` | `value`: decimal string | a `Deno.KvU64` value |
//! | `bytes` | `hex` | a raw `Uint8Array` value (the `Bytes` encoding) |
//! | `undecodable` | `hex`, `reason` | V8 bytes this decoder rejects |
//! | `undefined`, `null` | — | |
//! | `boolean` | `value`: `true`/`false` | |
//! | `number` | `value`: JSON number, or the string `"NaN"`, `"Infinity"`, `"-Infinity"`, `"-0"` | |
//! | `bigint` | `value`: decimal string | |
//! | `string` | `value` | |
//! | `object` | `id`, `entries`: `[[key string, tree], …]` in order | plain objects |
//! | `array` | `id`, `length`, `sparse`: bool, `entries`: `[[index number or key string, tree], …]` | arrays; holes are absent from `entries` |
//! | `date` | `id`, `value`: ISO 8601 string as `toISOString` writes it, or `null` for an invalid date; `ms`: the time value (as a `number` `value`) | |
//! | `regexp` | `id`, `source`, `flags` | |
//! | `map` | `id`, `entries`: `[[key tree, value tree], …]` | |
//! | `set` | `id`, `values`: `[tree, …]` | |
//! | `arraybuffer` | `id`, `hex`, optional `maxByteLength` | |
//! | `view` | `id`, `kind` (`"Uint8Array"`, …, `"DataView"`, `"Buffer"`), `byteOffset`, `byteLength`, `hex` of the viewed bytes (absent when the buffer is a `ref`), optional `flags`, and `buffer` (an `arraybuffer` or `ref` tree; absent for Node's form, which has no separate buffer) | typed arrays and DataViews |
//! | `wrapper` | `id`, `value`: the primitive's tree | `new String("x")`, `Object(1n)`, … |
//! | `error` | `id`, `name`, optional `message`, `stack`, `cause` | `Error` objects |
//! | `ref` | `id` | a further occurrence of the object with that `id` (shared or cyclic) |
//!
//! Every object-like node (`object` to `error`) carries its `id`, numbered in reading order
//! from 0 as V8 numbers them; a `ref` always points to a node that appears earlier in
//! document order (an ancestor for a cycle). Strings with unpaired UTF-16 surrogates are
//! `undecodable` (Rust strings cannot hold them).
//!
//! ```
//! use kv_traits::KvValue;
//! use serde_json::json;
//!
//! // const o = { self: null }; o.self = o;  (as Deno writes it)
//! let bytes = hex::decode("ff0f6f220473656c665e007b01").unwrap();
//! assert_eq!(
//!     kv_v8::value_tree(&KvValue::V8(bytes)),
//!     json!({"type": "object", "id": 0, "entries": [["self", {"type": "ref", "id": 0}]]})
//! );
//! assert_eq!(kv_v8::value_tree(&KvValue::U64(5)), json!({"type": "u64", "value": "5"}));
//! ```

pub mod decode;
pub mod notation;
pub mod serialize;
mod tree;
pub mod value;

pub use decode::{decode, DecodeError, MAX_DEPTH};
pub use notation::{
    js_from_notation, js_to_notation, key_from_notation, key_to_notation, value_from_notation,
    value_to_notation, NotationError,
};
pub use serialize::{serialize, SerializeError};
pub use tree::{v8_tree, value_tree};
pub use value::{PropertyKey, V8Value, ViewKind};

pub use kv_traits::KvValue;
