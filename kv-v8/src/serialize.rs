//! The serializer: a [`V8Value`] tree to V8 ValueSerializer bytes, header version 15 (the
//! version `kv_traits::v8::serialize` writes), in the forms V8 itself writes, so that Deno's
//! and Node's deserializers read them back (checked against the real runtimes by the
//! `real_runtimes` test).
//!
//! Contract:
//! - Object ids are renumbered in writing order, so any tree [`crate::decode()`] returns can be
//!   written back: a [`V8Value::Ref`] becomes a back-reference to the object written for
//!   that id (an error if that object was not written before the reference).
//! - Node's host-object views ([`V8Value::HostView`]) are written in V8's own form (an
//!   ArrayBuffer holding the bytes, then a view over all of it); a Node `Buffer` becomes a
//!   `Uint8Array`.
//! - String keys that are array indices (`"0"`, `"17"`) are written as numbers, as V8 does.
//! - Dense arrays are written dense (holes as `-`), sparse ones sparse.

use std::collections::HashMap;

use kv_traits::v8::{tag, write_bigint, write_number, write_string, write_varint};

use crate::value::{PropertyKey, V8Value, ViewKind, REGEXP_FLAGS, REGEXP_LINEAR};

/// The header version written.
pub const WRITE_VERSION: u8 = kv_traits::v8::WRITE_VERSION;

/// Why a tree cannot be serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerializeError {
    /// A reference to an object id that was not written before it.
    #[error("reference to object id {0}, which was not written before it")]
    DanglingReference(u32),
    /// A RegExp flags string with a letter V8 does not know or a repeated letter.
    #[error("invalid RegExp flags {0:?}")]
    BadRegExpFlags(String),
    /// A view whose bytes are not inside its buffer, or not aligned to its element size.
    #[error("{0} view out of its buffer's bounds or misaligned")]
    BadView(&'static str),
    /// A view whose buffer is neither an ArrayBuffer nor a reference to one.
    #[error("a view's buffer must be an ArrayBuffer")]
    ViewWithoutBuffer,
    /// A dense array too long to write element by element (over 2^24 slots): write it
    /// sparse.
    #[error("dense array of length {0} is too long; mark it sparse")]
    DenseTooLong(u32),
    /// A wrapper object around something that is not a boolean, number, bigint or string.
    #[error("a wrapper object must wrap a boolean, number, bigint or string")]
    BadWrapper,
    /// An Error name V8 cannot serialize.
    #[error("unknown Error name {0:?}")]
    BadErrorName(String),
}

/// Serializes `v` (header `ff 0f`).
pub fn serialize(v: &V8Value) -> Result<Vec<u8>, SerializeError> {
    let mut w = Writer {
        out: vec![tag::VERSION, WRITE_VERSION],
        ids: HashMap::new(),
        buffers: HashMap::new(),
        next_id: 0,
    };
    w.value(v)?;
    Ok(w.out)
}

/// Dense arrays longer than this are refused (they would be written slot by slot).
const MAX_DENSE: u32 = 1 << 24;

struct Writer {
    out: Vec<u8>,
    /// Original id → id in the output.
    ids: HashMap<u32, u32>,
    /// Output ids of ArrayBuffers → their byte length (for views over references).
    buffers: HashMap<u32, usize>,
    next_id: u32,
}

/// `Some(i)` when `s` is a canonical array index (`"0"`, `"12"`, not `"012"`, below 2^32-1).
pub(crate) fn array_index(s: &str) -> Option<u32> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse::<u32>().ok().filter(|&i| i != u32::MAX)
}

/// The V8 flag bits of a JS flags string.
pub(crate) fn regexp_bits(flags: &str) -> Option<u32> {
    let mut bits = 0;
    for c in flags.chars() {
        let bit = if c == 'l' {
            REGEXP_LINEAR
        } else {
            REGEXP_FLAGS.iter().find(|(_, l)| *l == c)?.0
        };
        if bits & bit != 0 {
            return None;
        }
        bits |= bit;
    }
    Some(bits)
}

impl Writer {
    fn assign(&mut self, original: u32) -> u32 {
        let id = self.next_id;
        self.ids.insert(original, id);
        self.next_id += 1;
        id
    }

    fn value(&mut self, v: &V8Value) -> Result<(), SerializeError> {
        match v {
            V8Value::Undefined => self.out.push(tag::UNDEFINED),
            V8Value::Null => self.out.push(tag::NULL),
            V8Value::Bool(true) => self.out.push(tag::TRUE),
            V8Value::Bool(false) => self.out.push(tag::FALSE),
            V8Value::Number(n) => write_number(&mut self.out, *n),
            V8Value::BigInt(i) => write_bigint(&mut self.out, i),
            V8Value::String(s) => write_string(&mut self.out, s),
            V8Value::Object { id, properties } => {
                self.assign(*id);
                self.out.push(tag::BEGIN_JS_OBJECT);
                for (k, v) in properties {
                    self.key(k);
                    self.value(v)?;
                }
                self.out.push(tag::END_JS_OBJECT);
                write_varint(&mut self.out, properties.len() as u64);
            }
            V8Value::Array {
                id,
                length,
                properties,
                sparse,
            } => self.array(*id, *length, properties, *sparse)?,
            V8Value::Date { id, ms } => {
                self.assign(*id);
                self.out.push(tag::DATE);
                self.out.extend_from_slice(&ms.to_le_bytes());
            }
            V8Value::RegExp { id, source, flags } => {
                let bits = regexp_bits(flags)
                    .ok_or_else(|| SerializeError::BadRegExpFlags(flags.clone()))?;
                self.assign(*id);
                self.out.push(tag::REGEXP);
                write_string(&mut self.out, source);
                write_varint(&mut self.out, u64::from(bits));
            }
            V8Value::Map { id, entries } => {
                self.assign(*id);
                self.out.push(tag::BEGIN_JS_MAP);
                for (k, v) in entries {
                    self.value(k)?;
                    self.value(v)?;
                }
                self.out.push(tag::END_JS_MAP);
                write_varint(&mut self.out, entries.len() as u64 * 2);
            }
            V8Value::Set { id, values } => {
                self.assign(*id);
                self.out.push(tag::BEGIN_JS_SET);
                for v in values {
                    self.value(v)?;
                }
                self.out.push(tag::END_JS_SET);
                write_varint(&mut self.out, values.len() as u64);
            }
            V8Value::ArrayBuffer {
                id,
                data,
                max_byte_length,
            } => {
                let new = self.assign(*id);
                self.buffers.insert(new, data.len());
                match max_byte_length {
                    None => self.out.push(tag::ARRAY_BUFFER),
                    Some(max) => {
                        self.out.push(tag::RESIZABLE_ARRAY_BUFFER);
                        write_varint(&mut self.out, data.len() as u64);
                        write_varint(&mut self.out, u64::from(*max));
                        self.out.extend_from_slice(data);
                        return Ok(());
                    }
                }
                write_varint(&mut self.out, data.len() as u64);
                self.out.extend_from_slice(data);
            }
            V8Value::View {
                id,
                kind,
                buffer,
                byte_offset,
                byte_length,
                flags,
            } => {
                let buffer_len = match buffer.as_ref() {
                    V8Value::ArrayBuffer { data, .. } => {
                        self.value(buffer)?;
                        data.len()
                    }
                    V8Value::Ref(r) => {
                        self.value(buffer)?;
                        let new = self.ids.get(r).copied();
                        match new.and_then(|n| self.buffers.get(&n)) {
                            Some(len) => *len,
                            None => return Err(SerializeError::ViewWithoutBuffer),
                        }
                    }
                    _ => return Err(SerializeError::ViewWithoutBuffer),
                };
                let (start, len) = (*byte_offset as usize, *byte_length as usize);
                let size = kind.element_size();
                if start > buffer_len
                    || len > buffer_len - start
                    || byte_offset % size != 0
                    || byte_length % size != 0
                {
                    return Err(SerializeError::BadView(kind.name()));
                }
                self.assign(*id);
                self.view_tag(*kind, *byte_offset, *byte_length, *flags);
            }
            V8Value::HostView { id, kind, data } => {
                // The buffer gets an id of its own in the output; nothing refers to it.
                self.next_id += 1;
                self.out.push(tag::ARRAY_BUFFER);
                write_varint(&mut self.out, data.len() as u64);
                self.out.extend_from_slice(data);
                self.assign(*id);
                // Lengths came from a u32 varint, so they fit.
                self.view_tag(*kind, 0, data.len() as u32, 0);
            }
            V8Value::Boxed { id, value } => {
                self.assign(*id);
                match value.as_ref() {
                    V8Value::Bool(true) => self.out.push(tag::TRUE_OBJECT),
                    V8Value::Bool(false) => self.out.push(tag::FALSE_OBJECT),
                    V8Value::Number(n) => {
                        self.out.push(tag::NUMBER_OBJECT);
                        self.out.extend_from_slice(&n.to_le_bytes());
                    }
                    V8Value::BigInt(i) => {
                        self.out.push(tag::BIGINT_OBJECT);
                        // `write_bigint` writes the `Z` tag; the wrapper has its own.
                        let mut tmp = Vec::new();
                        write_bigint(&mut tmp, i);
                        self.out.extend_from_slice(tmp.get(1..).unwrap_or_default());
                    }
                    V8Value::String(s) => {
                        self.out.push(tag::STRING_OBJECT);
                        write_string(&mut self.out, s);
                    }
                    _ => return Err(SerializeError::BadWrapper),
                }
            }
            V8Value::Error {
                id,
                name,
                message,
                stack,
                cause,
            } => {
                self.assign(*id);
                self.out.push(tag::ERROR);
                let sub = match *name {
                    "Error" => None,
                    "EvalError" => Some(b'E'),
                    "RangeError" => Some(b'R'),
                    "ReferenceError" => Some(b'F'),
                    "SyntaxError" => Some(b'S'),
                    "TypeError" => Some(b'T'),
                    "URIError" => Some(b'U'),
                    other => return Err(SerializeError::BadErrorName(other.to_owned())),
                };
                self.out.extend(sub);
                if let Some(m) = message {
                    self.out.push(b'm');
                    write_string(&mut self.out, m);
                }
                if let Some(s) = stack {
                    self.out.push(b's');
                    write_string(&mut self.out, s);
                }
                if let Some(c) = cause {
                    self.out.push(b'c');
                    self.value(c)?;
                }
                self.out.push(b'.');
            }
            V8Value::Ref(r) => {
                let id = *self
                    .ids
                    .get(r)
                    .ok_or(SerializeError::DanglingReference(*r))?;
                self.out.push(tag::OBJECT_REFERENCE);
                write_varint(&mut self.out, u64::from(id));
            }
        }
        Ok(())
    }

    fn view_tag(&mut self, kind: ViewKind, offset: u32, length: u32, flags: u32) {
        self.out.push(tag::ARRAY_BUFFER_VIEW);
        self.out.push(kind.v8_tag().unwrap_or(b'B'));
        write_varint(&mut self.out, u64::from(offset));
        write_varint(&mut self.out, u64::from(length));
        write_varint(&mut self.out, u64::from(flags));
    }

    fn key(&mut self, k: &PropertyKey) {
        match k {
            PropertyKey::String(s) => match array_index(s) {
                Some(i) => write_number(&mut self.out, f64::from(i)),
                None => write_string(&mut self.out, s),
            },
            PropertyKey::Number(n) => write_number(&mut self.out, *n),
        }
    }

    fn array(
        &mut self,
        id: u32,
        length: u32,
        properties: &[(PropertyKey, V8Value)],
        sparse: bool,
    ) -> Result<(), SerializeError> {
        self.assign(id);
        if sparse {
            self.out.push(tag::BEGIN_SPARSE_JS_ARRAY);
            write_varint(&mut self.out, u64::from(length));
            for (k, v) in properties {
                self.key(k);
                self.value(v)?;
            }
            self.out.push(tag::END_SPARSE_JS_ARRAY);
            write_varint(&mut self.out, properties.len() as u64);
            write_varint(&mut self.out, u64::from(length));
            return Ok(());
        }
        if length > MAX_DENSE {
            return Err(SerializeError::DenseTooLong(length));
        }
        // Elements are the leading run of index keys in increasing order (as the decoder
        // returns them); every later property, index or not, is written after the elements,
        // so that a decoded array writes back in its own order.
        let mut slots: Vec<Option<&V8Value>> = vec![None; length as usize];
        let mut named = Vec::new();
        let mut next_index = 0usize;
        for (k, v) in properties {
            if !named.is_empty() {
                named.push((k, v));
                continue;
            }
            let index = match k {
                PropertyKey::Number(n)
                    if n.fract() == 0.0 && *n >= 0.0 && *n < f64::from(length) =>
                {
                    Some(*n as usize)
                }
                PropertyKey::String(s) => {
                    array_index(s).filter(|&i| i < length).map(|i| i as usize)
                }
                _ => None,
            };
            match index.filter(|&i| i >= next_index).and_then(|i| {
                next_index = i + 1;
                slots.get_mut(i)
            }) {
                Some(slot) => *slot = Some(v),
                None => named.push((k, v)),
            }
        }
        self.out.push(tag::BEGIN_DENSE_JS_ARRAY);
        write_varint(&mut self.out, u64::from(length));
        for slot in slots {
            match slot {
                Some(v) => self.value(v)?,
                None => self.out.push(tag::THE_HOLE),
            }
        }
        for (k, v) in &named {
            self.key(k);
            self.value(v)?;
        }
        self.out.push(tag::END_DENSE_JS_ARRAY);
        write_varint(&mut self.out, named.len() as u64);
        write_varint(&mut self.out, u64::from(length));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    #[test]
    fn decode_serialize_round_trips_with_references() {
        // const o = {}; o.self = o; plus a shared Uint8Array buffer between two views.
        for hex_str in [
            "ff0f6f220473656c665e007b01",
            "ff0f61034900490249044906400203",
            "ff0f6f22016149027b01",
        ] {
            let bytes = hex::decode(hex_str).unwrap();
            let v = decode(&bytes).unwrap();
            let again = serialize(&v).unwrap();
            assert_eq!(decode(&again).unwrap(), v, "{hex_str}");
        }
    }

    #[test]
    fn dense_arrays_write_back_in_their_own_order() {
        // A dense array [0, <hole>, 2] followed by a named property with index key 1, and one
        // with a key repeated after the elements.
        for hex_str in [
            "ff0f4103490049022d49044906490249082402 03".replace(' ', ""),
            "ff0f41024900490249024906240102".to_string(),
        ] {
            let bytes = hex::decode(&hex_str).unwrap();
            let v = decode(&bytes).unwrap();
            let again = decode(&serialize(&v).unwrap()).unwrap();
            assert_eq!(again, v, "{hex_str}");
        }
    }

    #[test]
    fn array_index_keys() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("012"), None);
        assert_eq!(array_index("4294967295"), None);
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index(""), None);
    }

    #[test]
    fn regexp_flags() {
        assert_eq!(regexp_bits("gi"), Some(3));
        assert_eq!(regexp_bits("gg"), None);
        assert_eq!(regexp_bits("q"), None);
    }

    #[test]
    fn dangling_reference_is_an_error() {
        assert_eq!(
            serialize(&V8Value::Ref(3)),
            Err(SerializeError::DanglingReference(3))
        );
    }
}
