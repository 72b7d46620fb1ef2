//! Typed keys ([`Key`], the [`key!`](crate::key!) macro) and values ([`Value`]) shared with
//! JavaScript programs: JS numbers, bigints, strings, booleans, `null` and `undefined` are stored
//! V8-serialized exactly like Deno stores them; `Uint8Array` and `Deno.KvU64` use the raw-bytes
//! and little-endian-u64 encodings.

use kv_traits::key::{decode_key, encode_key, KeyError, KeyPart};
use kv_traits::v8::{self, V8Value};
use kv_traits::KvValue;
use num_bigint::BigInt;

/// A key: a tuple of [`KeyPart`]s (`["users", 42n]` in JS is
/// `key!["users", 42i64]`).
///
/// Integers (`i64`, `u64`, [`BigInt`]) are JS **bigints**; JS numbers are `f64`
/// (`key!["users", 42.0]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub Vec<KeyPart>);

/// Builds a [`Key`] from values convertible into [`KeyPart`]: strings, `Vec<u8>`/`&[u8]`
/// (bytes), `i64`/`u64`/`BigInt` (bigints), `f64` (numbers) and `bool`.
///
/// ```
/// use kv_connect_client::{key, Key};
/// use kv_traits::key::KeyPart;
/// let k: Key = key!["users", 42i64, 1.5, true];
/// assert_eq!(k.parts()[1], KeyPart::Int(42.into()));
/// assert_eq!(key![].parts().len(), 0);
/// ```
#[macro_export]
macro_rules! key {
    ($($part:expr),* $(,)?) => {
        $crate::Key::new(::std::vec![$($crate::KeyPart::from($part)),*])
    };
}

impl Key {
    /// A key from its parts.
    pub fn new(parts: Vec<KeyPart>) -> Self {
        Key(parts)
    }

    /// The parts.
    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }

    /// This key extended by one part.
    pub fn with(mut self, part: impl Into<KeyPart>) -> Self {
        self.0.push(part.into());
        self
    }

    /// The encoded bytes (see `kv_traits::key`). Fails only for an integer part needing more
    /// than 255 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, KeyError> {
        encode_key(&self.0)
    }

    /// Decodes encoded key bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        decode_key(bytes).map(Key)
    }
}

impl From<Vec<KeyPart>> for Key {
    fn from(parts: Vec<KeyPart>) -> Self {
        Key(parts)
    }
}

impl From<&Key> for Key {
    fn from(k: &Key) -> Self {
        k.clone()
    }
}

/// A stored value.
///
/// | variant | stored as | JavaScript |
/// |---|---|---|
/// | `Bytes` | raw bytes | `Uint8Array` |
/// | `U64` | little-endian u64 | `Deno.KvU64` |
/// | `Number`, `BigInt`, `String`, `Bool`, `Null`, `Undefined` | V8 serialization | the same |
/// | `V8` | V8 bytes this crate cannot interpret (objects, arrays, ...) | anything else |
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Raw bytes (`Uint8Array`).
    Bytes(Vec<u8>),
    /// An unsigned 64-bit integer (`Deno.KvU64`); the operand type of `sum`, `min` and `max`.
    U64(u64),
    /// A JS number.
    Number(f64),
    /// A JS bigint.
    BigInt(BigInt),
    /// A JS string.
    String(String),
    /// A JS boolean.
    Bool(bool),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// V8-serialized bytes of a value outside the scalar subset, kept as they are.
    V8(Vec<u8>),
}

impl Value {
    /// The stored form.
    pub fn to_kv_value(&self) -> KvValue {
        match self {
            Value::Bytes(b) => KvValue::Bytes(b.clone()),
            Value::U64(n) => KvValue::U64(*n),
            Value::V8(b) => KvValue::V8(b.clone()),
            other => match other.to_v8_value() {
                Some(v) => KvValue::V8(v8::serialize(&v)),
                None => KvValue::V8(Vec::new()),
            },
        }
    }

    /// Interprets a stored value; V8 bytes outside the scalar subset become [`Value::V8`].
    pub fn from_kv_value(v: KvValue) -> Self {
        match v {
            KvValue::Bytes(b) => Value::Bytes(b),
            KvValue::U64(n) => Value::U64(n),
            KvValue::V8(b) => Value::from_v8_bytes(b),
        }
    }

    /// Interprets V8-serialized bytes (e.g. a queue payload).
    pub fn from_v8_bytes(b: Vec<u8>) -> Self {
        match v8::parse(&b) {
            Ok(V8Value::Undefined) => Value::Undefined,
            Ok(V8Value::Null) => Value::Null,
            Ok(V8Value::Bool(x)) => Value::Bool(x),
            Ok(V8Value::Number(n)) => Value::Number(n),
            Ok(V8Value::BigInt(i)) => Value::BigInt(i),
            Ok(V8Value::String(s)) => Value::String(s),
            Err(_) => Value::V8(b),
        }
    }

    /// The V8 serialization of the value, `None` for `Bytes` and `U64` (which JS stores
    /// differently and this crate cannot V8-serialize).
    pub fn to_v8_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::V8(b) => Some(b.clone()),
            other => other.to_v8_value().map(|v| v8::serialize(&v)),
        }
    }

    fn to_v8_value(&self) -> Option<V8Value> {
        Some(match self {
            Value::Number(n) => V8Value::Number(*n),
            Value::BigInt(i) => V8Value::BigInt(i.clone()),
            Value::String(s) => V8Value::String(s.clone()),
            Value::Bool(b) => V8Value::Bool(*b),
            Value::Null => V8Value::Null,
            Value::Undefined => V8Value::Undefined,
            Value::Bytes(_) | Value::U64(_) | Value::V8(_) => return None,
        })
    }

    /// The string, if this is a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a `Number`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The integer, if this is a `U64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(n) => Some(*n),
            _ => None,
        }
    }

    /// The bigint, if this is a `BigInt`.
    pub fn as_bigint(&self) -> Option<&BigInt> {
        match self {
            Value::BigInt(i) => Some(i),
            _ => None,
        }
    }

    /// The bytes, if this is `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<f64> for Value {
    /// A JS number.
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<i32> for Value {
    /// A JS number.
    fn from(n: i32) -> Self {
        Value::Number(f64::from(n))
    }
}

impl From<u64> for Value {
    /// A `Deno.KvU64`.
    fn from(n: u64) -> Self {
        Value::U64(n)
    }
}

impl From<BigInt> for Value {
    /// A JS bigint.
    fn from(i: BigInt) -> Self {
        Value::BigInt(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<u8>> for Value {
    /// A `Uint8Array`.
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

impl From<&[u8]> for Value {
    /// A `Uint8Array`.
    fn from(b: &[u8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}

impl From<KvValue> for Value {
    fn from(v: KvValue) -> Self {
        Value::from_kv_value(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_storage() {
        let values = [
            Value::Bytes(vec![1, 0, 2]),
            Value::U64(u64::MAX),
            Value::Number(1.5),
            Value::Number(-3.0),
            Value::BigInt(BigInt::from(-12345678901234567890i128)),
            Value::String("héllo ✓".into()),
            Value::Bool(true),
            Value::Null,
            Value::Undefined,
        ];
        for v in values {
            assert_eq!(Value::from_kv_value(v.to_kv_value()), v);
        }
    }

    #[test]
    fn js_encodings() {
        // Deno 2.9.6 writes `1` as ff 10 49 02; we read it and write version 15.
        assert_eq!(
            Value::from_kv_value(KvValue::V8(vec![0xff, 0x10, 0x49, 0x02])),
            Value::Number(1.0)
        );
        assert_eq!(
            Value::from(1).to_kv_value(),
            KvValue::V8(vec![0xff, 0x0f, 0x49, 0x02])
        );
        // An object (`{}`: ff 0f 6f 7b 00) is kept as raw V8.
        let obj = vec![0xff, 0x0f, 0x6f, 0x7b, 0x00];
        assert_eq!(
            Value::from_kv_value(KvValue::V8(obj.clone())),
            Value::V8(obj)
        );
        assert_eq!(Value::Bytes(vec![1]).to_v8_bytes(), None);
    }

    #[test]
    fn key_macro_and_codec() {
        let k = crate::key!["a", 1i64, 2.0, true, vec![0u8]];
        let bytes = k.encode().unwrap();
        assert_eq!(Key::decode(&bytes).unwrap(), k);
        assert_eq!(crate::key!["a"].encode().unwrap(), b"\x02a\x00");
        assert_eq!(crate::key!["a"].with("b"), crate::key!["a", "b"]);
    }
}
