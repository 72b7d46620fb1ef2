//! The decoded form of a V8-serialized value: a tree in which every object-like value (the
//! ones V8 gives an object id: objects, arrays, dates, regexps, maps, sets, buffers, views,
//! wrapper objects, errors) carries its id, and every later occurrence of the same object —
//! a shared reference or a cycle — is a [`V8Value::Ref`] to that id instead of a copy. The
//! first occurrence in reading order holds the content; a `Ref` may point to an ancestor
//! (a cycle) or to an earlier sibling (a shared object).

use num_bigint::BigInt;

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum V8Value {
    /// `undefined`.
    Undefined,
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A bigint.
    BigInt(BigInt),
    /// A string.
    String(String),
    /// A plain object: its own enumerable properties in serialization order.
    Object {
        /// Object id.
        id: u32,
        /// Properties in order.
        properties: Vec<(PropertyKey, V8Value)>,
    },
    /// An array, dense or sparse. Holes are absent from `properties`; index properties have
    /// [`PropertyKey::Number`] keys, named properties (`arr.foo = 1`) string keys.
    Array {
        /// Object id.
        id: u32,
        /// The array's `length`.
        length: u32,
        /// Present elements and named properties, in serialization order.
        properties: Vec<(PropertyKey, V8Value)>,
        /// Whether V8 wrote it in the sparse form.
        sparse: bool,
    },
    /// A `Date` (milliseconds since the epoch; NaN for an invalid date).
    Date {
        /// Object id.
        id: u32,
        /// Time value.
        ms: f64,
    },
    /// A `RegExp`.
    RegExp {
        /// Object id.
        id: u32,
        /// The pattern source.
        source: String,
        /// The flags as a JS flags string (`"gi"`), in JS's canonical order.
        flags: String,
    },
    /// A `Map`.
    Map {
        /// Object id.
        id: u32,
        /// Entries in insertion order.
        entries: Vec<(V8Value, V8Value)>,
    },
    /// A `Set`.
    Set {
        /// Object id.
        id: u32,
        /// Values in insertion order.
        values: Vec<V8Value>,
    },
    /// An `ArrayBuffer`.
    ArrayBuffer {
        /// Object id.
        id: u32,
        /// Its bytes.
        data: Vec<u8>,
        /// `maxByteLength` of a resizable buffer; `None` for a fixed-length one.
        max_byte_length: Option<u32>,
    },
    /// A typed array or `DataView` over an ArrayBuffer (V8's own form, as Deno writes it).
    View {
        /// Object id (the buffer has its own, lower id).
        id: u32,
        /// Which kind of view.
        kind: ViewKind,
        /// The buffer: an [`V8Value::ArrayBuffer`], or a [`V8Value::Ref`] to one when several
        /// views share it.
        buffer: Box<V8Value>,
        /// Offset of the view in the buffer, in bytes.
        byte_offset: u32,
        /// Length of the view, in bytes.
        byte_length: u32,
        /// V8's view flags (bit 0: length-tracking, bit 1: backed by a resizable buffer).
        flags: u32,
    },
    /// A typed array, `DataView` or `Buffer` in Node's host-object form (`v8.serialize`
    /// writes views this way, copying just the viewed bytes).
    HostView {
        /// Object id.
        id: u32,
        /// Which kind of view.
        kind: ViewKind,
        /// The viewed bytes.
        data: Vec<u8>,
    },
    /// A primitive wrapper object (`new String("x")`, `Object(1n)`, …) around the primitive.
    Boxed {
        /// Object id.
        id: u32,
        /// The wrapped primitive (boolean, number, bigint or string).
        value: Box<V8Value>,
    },
    /// An `Error` (structured clone keeps its name, message, stack and cause).
    Error {
        /// Object id.
        id: u32,
        /// `"Error"`, `"EvalError"`, `"RangeError"`, `"ReferenceError"`, `"SyntaxError"`,
        /// `"TypeError"` or `"URIError"`.
        name: &'static str,
        /// The message, if any.
        message: Option<String>,
        /// The stack, if any.
        stack: Option<String>,
        /// The cause, if any.
        cause: Option<Box<V8Value>>,
    },
    /// A further occurrence of the object with this id (shared or cyclic reference).
    Ref(u32),
}

/// A property key: V8 writes array indices (and integer-like keys) as numbers, other keys as
/// strings.
#[derive(Clone, Debug, PartialEq)]
pub enum PropertyKey {
    /// A string key.
    String(String),
    /// A numeric key.
    Number(f64),
}

impl PropertyKey {
    /// The key as JS sees it (property keys are strings): numbers in JS's decimal form.
    pub fn to_js_string(&self) -> String {
        match self {
            PropertyKey::String(s) => s.clone(),
            PropertyKey::Number(n) => js_number_string(*n),
        }
    }
}

/// JS's `String(n)`: shortest round-trip digits, exponent form (`1e+21`, `1e-7`) outside
/// `[1e-6, 1e21)`, `-0` as `0`.
pub(crate) fn js_number_string(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n == 0.0 {
        "0".into()
    } else if n.abs() >= 1e21 || n.abs() < 1e-6 {
        // Rust writes `1e21` / `1.5e-7`; JS writes `1e+21` / `1.5e-7`.
        let s = format!("{n:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        // Rust's `Display` for f64 is the shortest round-trip form without an exponent.
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::js_number_string;

    #[test]
    fn js_number_strings() {
        for (n, s) in [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
        ] {
            assert_eq!(js_number_string(n), s, "{n}");
        }
    }
}

/// The kinds of ArrayBuffer views (V8's `ArrayBufferViewTag`s and Node's host-object type
/// indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// `Int8Array`
    Int8,
    /// `Uint8Array`
    Uint8,
    /// `Uint8ClampedArray`
    Uint8Clamped,
    /// `Int16Array`
    Int16,
    /// `Uint16Array`
    Uint16,
    /// `Int32Array`
    Int32,
    /// `Uint32Array`
    Uint32,
    /// `Float16Array`
    Float16,
    /// `Float32Array`
    Float32,
    /// `Float64Array`
    Float64,
    /// `BigInt64Array`
    BigInt64,
    /// `BigUint64Array`
    BigUint64,
    /// `DataView`
    DataView,
    /// Node's `Buffer` (only in Node's host-object form).
    NodeBuffer,
}

impl ViewKind {
    /// The JS constructor name (`"Uint8Array"`, `"DataView"`, `"Buffer"`).
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::Int8 => "Int8Array",
            ViewKind::Uint8 => "Uint8Array",
            ViewKind::Uint8Clamped => "Uint8ClampedArray",
            ViewKind::Int16 => "Int16Array",
            ViewKind::Uint16 => "Uint16Array",
            ViewKind::Int32 => "Int32Array",
            ViewKind::Uint32 => "Uint32Array",
            ViewKind::Float16 => "Float16Array",
            ViewKind::Float32 => "Float32Array",
            ViewKind::Float64 => "Float64Array",
            ViewKind::BigInt64 => "BigInt64Array",
            ViewKind::BigUint64 => "BigUint64Array",
            ViewKind::DataView => "DataView",
            ViewKind::NodeBuffer => "Buffer",
        }
    }

    /// The kind with constructor name `name` (the inverse of [`ViewKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_KINDS.iter().copied().find(|k| k.name() == name)
    }

    /// Bytes per element (1 for `DataView` and `Buffer`).
    pub fn element_size(self) -> u32 {
        match self {
            ViewKind::Int8
            | ViewKind::Uint8
            | ViewKind::Uint8Clamped
            | ViewKind::DataView
            | ViewKind::NodeBuffer => 1,
            ViewKind::Int16 | ViewKind::Uint16 | ViewKind::Float16 => 2,
            ViewKind::Int32 | ViewKind::Uint32 | ViewKind::Float32 => 4,
            ViewKind::Float64 | ViewKind::BigInt64 | ViewKind::BigUint64 => 8,
        }
    }

    /// V8's subtag byte for the view (`None` for Node's `Buffer`, which V8 writes as a
    /// `Uint8Array`).
    pub fn v8_tag(self) -> Option<u8> {
        Some(match self {
            ViewKind::Int8 => b'b',
            ViewKind::Uint8 => b'B',
            ViewKind::Uint8Clamped => b'C',
            ViewKind::Int16 => b'w',
            ViewKind::Uint16 => b'W',
            ViewKind::Int32 => b'd',
            ViewKind::Uint32 => b'D',
            ViewKind::Float16 => b'h',
            ViewKind::Float32 => b'f',
            ViewKind::Float64 => b'F',
            ViewKind::BigInt64 => b'q',
            ViewKind::BigUint64 => b'Q',
            ViewKind::DataView => b'?',
            ViewKind::NodeBuffer => return None,
        })
    }

    /// The kind for V8's subtag byte.
    pub fn from_v8_tag(tag: u8) -> Option<Self> {
        ALL_KINDS.iter().copied().find(|k| k.v8_tag() == Some(tag))
    }

    /// The kind for Node's host-object type index (`lib/v8.js`'s `arrayBufferViewTypes`).
    pub fn from_node_index(index: u32) -> Option<Self> {
        Some(match index {
            0 => ViewKind::Int8,
            1 => ViewKind::Uint8,
            2 => ViewKind::Uint8Clamped,
            3 => ViewKind::Int16,
            4 => ViewKind::Uint16,
            5 => ViewKind::Int32,
            6 => ViewKind::Uint32,
            7 => ViewKind::Float32,
            8 => ViewKind::Float64,
            9 => ViewKind::DataView,
            10 => ViewKind::NodeBuffer,
            11 => ViewKind::BigInt64,
            12 => ViewKind::BigUint64,
            _ => return None,
        })
    }
}

const ALL_KINDS: [ViewKind; 14] = [
    ViewKind::Int8,
    ViewKind::Uint8,
    ViewKind::Uint8Clamped,
    ViewKind::Int16,
    ViewKind::Uint16,
    ViewKind::Int32,
    ViewKind::Uint32,
    ViewKind::Float16,
    ViewKind::Float32,
    ViewKind::Float64,
    ViewKind::BigInt64,
    ViewKind::BigUint64,
    ViewKind::DataView,
    ViewKind::NodeBuffer,
];

/// RegExp flag bits as V8 serializes them, with their letters, in JS's canonical flags order.
pub(crate) const REGEXP_FLAGS: [(u32, char); 8] = [
    (1 << 7, 'd'),
    (1 << 0, 'g'),
    (1 << 1, 'i'),
    (1 << 2, 'm'),
    (1 << 5, 's'),
    (1 << 4, 'u'),
    (1 << 8, 'v'),
    (1 << 3, 'y'),
];

/// V8's `linear` flag (`l`, only with `--enable-experimental-regexp-engine`).
pub(crate) const REGEXP_LINEAR: u32 = 1 << 6;
