//! The decoder: V8 ValueSerializer bytes (formats 13 to 16) to a [`V8Value`] tree.
//!
//! Contract:
//! - Never panics, whatever the input.
//! - Memory is linear in the input: every length field is checked against the remaining
//!   input before anything is allocated, nesting deeper than [`MAX_DEPTH`] is an error (no
//!   unbounded recursion), and a back-reference is one [`V8Value::Ref`] node (never a copy
//!   of the referenced subtree), so a value full of references costs what its bytes cost.
//! - What it accepts matches V8's own deserializer for storable values: the checks V8 makes
//!   (property and entry counts at the end of objects, arrays, maps and sets; view bounds
//!   and element alignment; reference ids that exist) are made here too. Values that cannot
//!   be stored (shared, transferred and WebAssembly objects) and unknown tags are errors.
//! - The whole input must be exactly one value.

use kv_traits::v8::{tag, Reader, V8Error, V8Value as Scalar};

use crate::value::{PropertyKey, V8Value, ViewKind, REGEXP_FLAGS, REGEXP_LINEAR};

/// How deeply values may nest before [`decode`] gives up. The decoder (and the tree and
/// notation code after it) recurse once per level; 128 levels fit in 512 KiB of stack even in
/// a debug build (a test checks it), well inside a tokio worker's 2 MiB.
pub const MAX_DEPTH: usize = 128;

/// Why bytes could not be decoded. Offsets are byte positions in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A header, varint, string or scalar problem (shared with `kv_traits::v8`).
    #[error(transparent)]
    Wire(#[from] V8Error),
    /// Objects nested deeper than [`MAX_DEPTH`].
    #[error("values nested deeper than {max} levels at offset {offset}", max = MAX_DEPTH)]
    TooDeep {
        /// Where the limit was hit.
        offset: usize,
    },
    /// A tag this decoder does not read (unknown, or a value that cannot be stored).
    #[error("unsupported V8 tag 0x{tag:02x} ({what}) at offset {offset}")]
    Unsupported {
        /// The tag byte.
        tag: u8,
        /// What it is.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// A back-reference to an object id not read yet.
    #[error("reference to unknown object id {id} at offset {offset}")]
    BadReference {
        /// The id.
        id: u32,
        /// Where.
        offset: usize,
    },
    /// Well-formed bytes that V8 would reject (a count that does not match, a view out of
    /// its buffer's bounds, a key that is not a string or number, …).
    #[error("invalid V8 data at offset {offset}: {reason}")]
    Invalid {
        /// What is wrong.
        reason: &'static str,
        /// Where.
        offset: usize,
    },
}

/// Decodes one V8-serialized value (header `ff <version>` with version 13 to 16).
pub fn decode(bytes: &[u8]) -> Result<V8Value, DecodeError> {
    let mut d = Decoder {
        r: Reader::new(bytes),
        version: 0,
        objects: Vec::new(),
        depth: 0,
    };
    d.version = d.r.header()?;
    let value = d.value()?;
    if d.r.remaining() != 0 {
        return Err(V8Error::TrailingBytes { offset: d.r.pos() }.into());
    }
    Ok(value)
}

/// What the decoder remembers about an object id: the bytes of an ArrayBuffer, so that a
/// view over a referenced buffer can be bounds-checked.
enum Slot {
    Buffer(usize),
    Other,
}

struct Decoder<'a> {
    r: Reader<'a>,
    version: u32,
    objects: Vec<Slot>,
    depth: usize,
}

fn invalid(reason: &'static str, offset: usize) -> DecodeError {
    DecodeError::Invalid { reason, offset }
}

impl Decoder<'_> {
    fn new_id(&mut self, slot: Slot) -> u32 {
        // Every object consumes at least one input byte, so ids stay far below u32::MAX for
        // any input that fits in memory.
        let id = self.objects.len() as u32;
        self.objects.push(slot);
        id
    }

    /// One value, including an ArrayBufferView that follows an ArrayBuffer.
    fn value(&mut self) -> Result<V8Value, DecodeError> {
        let offset = self.r.pos();
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep { offset });
        }
        self.depth += 1;
        let result = self.value_inner();
        self.depth -= 1;
        self.maybe_view(result?)
    }

    /// V8: a view consumes the ArrayBuffer (or reference to one) written just before it.
    fn maybe_view(&mut self, value: V8Value) -> Result<V8Value, DecodeError> {
        let buffer_len = match &value {
            V8Value::ArrayBuffer { data, .. } => Some(data.len()),
            V8Value::Ref(id) => match self.objects.get(*id as usize) {
                Some(Slot::Buffer(len)) => Some(*len),
                _ => None,
            },
            _ => None,
        };
        match buffer_len {
            Some(len) if self.r.peek_tag() == Some(tag::ARRAY_BUFFER_VIEW) => {
                self.r.tag()?;
                self.view(value, len)
            }
            _ => Ok(value),
        }
    }

    /// One value after its tag. Every arm is a call, so that this frame, which is on the
    /// recursion path, stays small (debug builds give every temporary its own stack slot).
    fn value_inner(&mut self) -> Result<V8Value, DecodeError> {
        let t = self.r.tag()?;
        let offset = self.r.pos() - 1;
        match t {
            tag::VERIFY_OBJECT_COUNT => self.after_object_count(),
            tag::BEGIN_JS_OBJECT => self.object(),
            tag::BEGIN_SPARSE_JS_ARRAY => self.sparse_array(),
            tag::BEGIN_DENSE_JS_ARRAY => self.dense_array(offset),
            tag::BEGIN_JS_MAP => self.map(),
            tag::BEGIN_JS_SET => self.set(),
            tag::ERROR => self.error(),
            _ => self.leaf(t, offset),
        }
    }

    fn after_object_count(&mut self) -> Result<V8Value, DecodeError> {
        self.r.varint32()?;
        self.value()
    }

    /// A value that contains no other values (or only primitives).
    fn leaf(&mut self, t: u8, offset: usize) -> Result<V8Value, DecodeError> {
        if let Some(scalar) = self.r.scalar(t, offset)? {
            return Ok(match scalar {
                Scalar::Undefined => V8Value::Undefined,
                Scalar::Null => V8Value::Null,
                Scalar::Bool(b) => V8Value::Bool(b),
                Scalar::Number(n) => V8Value::Number(n),
                Scalar::BigInt(i) => V8Value::BigInt(i),
                Scalar::String(s) => V8Value::String(s),
            });
        }
        match t {
            tag::OBJECT_REFERENCE => {
                let id = self.r.varint32()?;
                if (id as usize) < self.objects.len() {
                    Ok(V8Value::Ref(id))
                } else {
                    Err(DecodeError::BadReference { id, offset })
                }
            }
            tag::DATE => {
                let ms = self.r.double()?;
                let id = self.new_id(Slot::Other);
                Ok(V8Value::Date { id, ms })
            }
            tag::TRUE_OBJECT | tag::FALSE_OBJECT => {
                let id = self.new_id(Slot::Other);
                let value = Box::new(V8Value::Bool(t == tag::TRUE_OBJECT));
                Ok(V8Value::Boxed { id, value })
            }
            tag::NUMBER_OBJECT => {
                let n = self.r.double()?;
                let id = self.new_id(Slot::Other);
                let value = Box::new(V8Value::Number(n));
                Ok(V8Value::Boxed { id, value })
            }
            tag::BIGINT_OBJECT => {
                let i = self.r.bigint()?;
                let id = self.new_id(Slot::Other);
                let value = Box::new(V8Value::BigInt(i));
                Ok(V8Value::Boxed { id, value })
            }
            tag::STRING_OBJECT => {
                let s = self.string()?;
                let id = self.new_id(Slot::Other);
                let value = Box::new(V8Value::String(s));
                Ok(V8Value::Boxed { id, value })
            }
            tag::REGEXP => self.regexp(),
            tag::ARRAY_BUFFER => {
                let data = self.r.length_prefixed()?.to_vec();
                let id = self.new_id(Slot::Buffer(data.len()));
                Ok(V8Value::ArrayBuffer {
                    id,
                    data,
                    max_byte_length: None,
                })
            }
            tag::RESIZABLE_ARRAY_BUFFER => self.resizable_buffer(offset),
            tag::HOST_OBJECT => self.host_object(offset),
            tag::THE_HOLE => Err(invalid("array hole outside a dense array", offset)),
            tag::ARRAY_BUFFER_VIEW => Err(invalid("view without an ArrayBuffer", offset)),
            _ => Err(DecodeError::Unsupported {
                tag: t,
                what: unsupported_name(t),
                offset,
            }),
        }
    }

    fn object(&mut self) -> Result<V8Value, DecodeError> {
        let id = self.new_id(Slot::Other);
        let properties = self.properties(tag::END_JS_OBJECT)?;
        self.expect_count(properties.len())?;
        Ok(V8Value::Object { id, properties })
    }

    fn sparse_array(&mut self) -> Result<V8Value, DecodeError> {
        let length = self.r.varint32()?;
        let id = self.new_id(Slot::Other);
        let properties = self.properties(tag::END_SPARSE_JS_ARRAY)?;
        self.expect_count(properties.len())?;
        self.expect_length(length)?;
        Ok(V8Value::Array {
            id,
            length,
            properties,
            sparse: true,
        })
    }

    fn dense_array(&mut self, offset: usize) -> Result<V8Value, DecodeError> {
        let length = self.r.varint32()?;
        // Every element takes at least one byte.
        if length as usize > self.r.remaining() {
            return Err(invalid("dense array longer than the input", offset));
        }
        let id = self.new_id(Slot::Other);
        let mut properties = Vec::new();
        for i in 0..length {
            if self.r.peek_tag() == Some(tag::THE_HOLE) {
                self.r.tag()?;
                continue;
            }
            let v = self.value()?;
            properties.push((PropertyKey::Number(f64::from(i)), v));
        }
        let named = self.properties(tag::END_DENSE_JS_ARRAY)?;
        let named_count = named.len();
        properties.extend(named);
        // V8 counts only the named properties after the elements.
        self.expect_count(named_count)?;
        self.expect_length(length)?;
        Ok(V8Value::Array {
            id,
            length,
            properties,
            sparse: false,
        })
    }

    fn regexp(&mut self) -> Result<V8Value, DecodeError> {
        let id = self.new_id(Slot::Other);
        let source = self.string()?;
        let flags_offset = self.r.pos();
        let bits = self.r.varint32()?;
        let known = REGEXP_FLAGS
            .iter()
            .fold(REGEXP_LINEAR, |acc, (b, _)| acc | b);
        if bits & !known != 0 {
            return Err(invalid("unknown RegExp flags", flags_offset));
        }
        let mut flags: String = REGEXP_FLAGS
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, c)| *c)
            .collect();
        if bits & REGEXP_LINEAR != 0 {
            flags.push('l');
        }
        Ok(V8Value::RegExp { id, source, flags })
    }

    fn map(&mut self) -> Result<V8Value, DecodeError> {
        let id = self.new_id(Slot::Other);
        let mut entries = Vec::new();
        while !self.at_end_tag(tag::END_JS_MAP)? {
            let k = self.value()?;
            let v = self.value()?;
            entries.push((k, v));
        }
        self.expect_count(entries.len() * 2)?;
        Ok(V8Value::Map { id, entries })
    }

    fn set(&mut self) -> Result<V8Value, DecodeError> {
        let id = self.new_id(Slot::Other);
        let mut values = Vec::new();
        while !self.at_end_tag(tag::END_JS_SET)? {
            values.push(self.value()?);
        }
        self.expect_count(values.len())?;
        Ok(V8Value::Set { id, values })
    }

    fn resizable_buffer(&mut self, offset: usize) -> Result<V8Value, DecodeError> {
        let len = self.r.varint32()?;
        let max = self.r.varint32()?;
        if len > max {
            return Err(invalid(
                "resizable ArrayBuffer longer than its maximum",
                offset,
            ));
        }
        let data = self.r.take(len as usize)?.to_vec();
        let id = self.new_id(Slot::Buffer(data.len()));
        Ok(V8Value::ArrayBuffer {
            id,
            data,
            max_byte_length: Some(max),
        })
    }

    fn host_object(&mut self, offset: usize) -> Result<V8Value, DecodeError> {
        let index = self.r.varint32()?;
        let kind = ViewKind::from_node_index(index).ok_or(invalid(
            "unknown host object (not a Node.js typed array)",
            offset,
        ))?;
        let data = self.r.length_prefixed()?.to_vec();
        if data.len() % kind.element_size() as usize != 0 {
            return Err(invalid(
                "typed array length is not a multiple of its element size",
                offset,
            ));
        }
        let id = self.new_id(Slot::Other);
        Ok(V8Value::HostView { id, kind, data })
    }

    /// Consumes `end` if it is the next tag.
    fn at_end_tag(&mut self, end: u8) -> Result<bool, DecodeError> {
        if self.r.peek_tag() == Some(end) {
            self.r.tag()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Key/value pairs up to and including `end`.
    fn properties(&mut self, end: u8) -> Result<Vec<(PropertyKey, V8Value)>, DecodeError> {
        let mut out = Vec::new();
        while !self.at_end_tag(end)? {
            let offset = self.r.pos();
            let key = match self.value()? {
                V8Value::String(s) => PropertyKey::String(s),
                V8Value::Number(n) => PropertyKey::Number(n),
                _ => return Err(invalid("property key is not a string or number", offset)),
            };
            let value = self.value()?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// The count varint after an end tag, which must equal `expected`.
    fn expect_count(&mut self, expected: usize) -> Result<(), DecodeError> {
        let offset = self.r.pos();
        let n = self.r.varint32()?;
        if n as usize != expected {
            return Err(invalid(
                "count at the end does not match the entries",
                offset,
            ));
        }
        Ok(())
    }

    /// The length varint at the end of an array, which must equal the one at its start.
    fn expect_length(&mut self, expected: u32) -> Result<(), DecodeError> {
        let offset = self.r.pos();
        if self.r.varint32()? != expected {
            return Err(invalid(
                "array length at the end does not match the start",
                offset,
            ));
        }
        Ok(())
    }

    /// A tagged string (RegExp source, String wrapper, Error message).
    fn string(&mut self) -> Result<String, DecodeError> {
        let t = self.r.tag()?;
        let offset = self.r.pos() - 1;
        match t {
            tag::ONE_BYTE_STRING | tag::TWO_BYTE_STRING | tag::UTF8_STRING => {
                Ok(self.r.string_payload(t, offset)?)
            }
            _ => Err(invalid("expected a string", offset)),
        }
    }

    /// The rest of a view (after `V`) over `buffer`, whose length is `buffer_len`.
    fn view(&mut self, buffer: V8Value, buffer_len: usize) -> Result<V8Value, DecodeError> {
        let offset = self.r.pos();
        let sub = self.r.varint32()?;
        let kind = u8::try_from(sub)
            .ok()
            .and_then(ViewKind::from_v8_tag)
            .ok_or(invalid("unknown ArrayBufferView kind", offset))?;
        let byte_offset = self.r.varint32()?;
        let byte_length = self.r.varint32()?;
        let flags = if self.version >= 14 {
            self.r.varint32()?
        } else {
            0
        };
        let (start, len) = (byte_offset as usize, byte_length as usize);
        if start > buffer_len || len > buffer_len - start {
            return Err(invalid("view outside its ArrayBuffer", offset));
        }
        let size = kind.element_size();
        if byte_offset % size != 0 || byte_length % size != 0 {
            return Err(invalid("view not aligned to its element size", offset));
        }
        let id = self.new_id(Slot::Other);
        Ok(V8Value::View {
            id,
            kind,
            buffer: Box::new(buffer),
            byte_offset,
            byte_length,
            flags,
        })
    }

    /// The rest of an Error (after `r`): sub-tags up to `.`.
    fn error(&mut self) -> Result<V8Value, DecodeError> {
        let id = self.new_id(Slot::Other);
        let mut name = "Error";
        let mut message = None;
        let mut stack = None;
        let mut cause = None;
        // V8 writes each field at most once; a repeated one (which would leave an unreachable
        // cause object behind) is refused.
        let mut seen = [false; 256];
        loop {
            let offset = self.r.pos();
            let field = self.r.tag()?;
            let field_kind = match field {
                b'E' | b'R' | b'F' | b'S' | b'T' | b'U' => b'E',
                other => other,
            };
            if std::mem::replace(&mut seen[usize::from(field_kind)], true) {
                return Err(invalid("repeated Error field", offset));
            }
            match field {
                b'E' => name = "EvalError",
                b'R' => name = "RangeError",
                b'F' => name = "ReferenceError",
                b'S' => name = "SyntaxError",
                b'T' => name = "TypeError",
                b'U' => name = "URIError",
                b'm' => message = Some(self.string()?),
                b's' => stack = Some(self.string()?),
                b'c' => cause = Some(Box::new(self.value()?)),
                b'.' => break,
                _ => return Err(invalid("unknown Error field", offset)),
            }
        }
        Ok(V8Value::Error {
            id,
            name,
            message,
            stack,
            cause,
        })
    }
}

fn unsupported_name(t: u8) -> &'static str {
    match t {
        tag::SHARED_ARRAY_BUFFER => "SharedArrayBuffer",
        tag::ARRAY_BUFFER_TRANSFER => "transferred ArrayBuffer",
        tag::SHARED_OBJECT => "shared object",
        tag::WASM_MODULE_TRANSFER => "WebAssembly module",
        tag::WASM_MEMORY_TRANSFER => "WebAssembly memory",
        tag::END_JS_OBJECT
        | tag::END_SPARSE_JS_ARRAY
        | tag::END_DENSE_JS_ARRAY
        | tag::END_JS_MAP
        | tag::END_JS_SET => "end tag outside its object",
        _ => "unknown tag",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(hex_str: &str) -> Result<V8Value, DecodeError> {
        decode(&hex::decode(hex_str).unwrap())
    }

    #[test]
    fn node_sparse_array_with_hole() {
        // v8.serialize([1,,3]) on Node 20.
        let v = dec("ff0f61034900490249044906400203").unwrap();
        assert_eq!(
            v,
            V8Value::Array {
                id: 0,
                length: 3,
                properties: vec![
                    (PropertyKey::Number(0.0), V8Value::Number(1.0)),
                    (PropertyKey::Number(2.0), V8Value::Number(3.0)),
                ],
                sparse: true,
            }
        );
    }

    #[test]
    fn cycle_is_a_ref() {
        // const o = {}; o.self = o;
        let v = dec("ff0f6f220473656c665e007b01").unwrap();
        assert_eq!(
            v,
            V8Value::Object {
                id: 0,
                properties: vec![(PropertyKey::String("self".into()), V8Value::Ref(0))],
            }
        );
        assert_eq!(
            dec("ff0f6f220473656c665e017b01"),
            Err(DecodeError::BadReference { id: 1, offset: 9 })
        );
    }

    #[test]
    fn view_bounds_and_counts_are_checked() {
        // ArrayBuffer of 2 bytes, Uint8Array view offset 0 length 3.
        assert!(matches!(
            dec("ff0f420201025642000300"),
            Err(DecodeError::Invalid { .. })
        ));
        let ok = dec("ff0f420201025642000200").unwrap();
        assert!(matches!(
            ok,
            V8Value::View {
                id: 1,
                byte_length: 2,
                ..
            }
        ));
        // Object whose end count says 2 with one property.
        assert!(matches!(
            dec("ff0f6f22016149027b02"),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn repeated_error_fields_are_refused() {
        // An Error with two causes, as a fuzzer wrote it (the first cause would be dropped
        // while still holding an object id).
        let bytes =
            hex::decode("ff0f72546d2203626164636f2204636f6465490e7b01636f2204636f6465490e7b012e")
                .unwrap();
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::Invalid {
                reason: "repeated Error field",
                ..
            })
        ));
    }

    #[test]
    fn depth_is_limited() {
        let mut bytes = vec![0xff, 0x0f];
        bytes.extend(std::iter::repeat_n(b'o', 10_000));
        assert!(matches!(decode(&bytes), Err(DecodeError::TooDeep { .. })));
    }

    #[test]
    fn deepest_accepted_value_decodes_and_displays_on_a_small_stack() {
        // MAX_DEPTH - 1 nested objects {a: {a: … undefined}}, on a 512 KiB thread (smaller
        // than tokio's and the test harness's 2 MiB), in whatever build profile runs this.
        let n = MAX_DEPTH - 1;
        let mut bytes = vec![0xff, 0x0f];
        for _ in 0..n {
            bytes.extend_from_slice(b"o\"\x01a");
        }
        bytes.push(b'_');
        for _ in 0..n {
            bytes.extend_from_slice(b"{\x01");
        }
        let handle = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let v = decode(&bytes).unwrap();
                let tree = crate::v8_tree(&v);
                drop(v);
                tree["type"] == "object"
            })
            .unwrap();
        assert!(handle.join().unwrap());
    }

    #[test]
    fn huge_lengths_do_not_allocate() {
        // Dense array claiming 2^32-1 elements, ArrayBuffer claiming 4 GiB.
        assert!(dec("ff0f41ffffffff0f").is_err());
        assert!(dec("ff0f42ffffffff0f").is_err());
    }
}
