//! Values stored in Deno KV and their three wire encodings.

use std::borrow::Cow;

/// How a value's bytes are to be interpreted (the protocol's `ValueEncoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueEncoding {
    /// V8 ValueSerializer bytes (any structured-cloneable JS value); opaque except for `sum`.
    V8 = 1,
    /// Exactly 8 bytes, an unsigned 64-bit little-endian integer (`Deno.KvU64`).
    Le64 = 2,
    /// Raw bytes (`Uint8Array`).
    Bytes = 3,
}

impl ValueEncoding {
    /// Maps the protocol number to an encoding; `None` for 0 and unknown numbers.
    pub fn from_i32(n: i32) -> Option<Self> {
        match n {
            1 => Some(ValueEncoding::V8),
            2 => Some(ValueEncoding::Le64),
            3 => Some(ValueEncoding::Bytes),
            _ => None,
        }
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvValue {
    /// V8-serialized bytes.
    V8(Vec<u8>),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An unsigned 64-bit integer (`Deno.KvU64`), stored as 8 little-endian bytes.
    U64(u64),
}

/// A value whose encoding number or byte length is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The encoding number is 0 or greater than 3.
    #[error("The value encoding {0} is unknown.")]
    UnknownEncoding(i32),
    /// An LE64 value that is not exactly 8 bytes.
    #[error("A KvU64 value must be exactly 8 bytes, got {0}.")]
    BadU64Length(usize),
}

impl KvValue {
    /// The value's encoding.
    pub fn encoding(&self) -> ValueEncoding {
        match self {
            KvValue::V8(_) => ValueEncoding::V8,
            KvValue::Bytes(_) => ValueEncoding::Bytes,
            KvValue::U64(_) => ValueEncoding::Le64,
        }
    }

    /// The value's bytes in its encoding (8 little-endian bytes for `U64`).
    pub fn data(&self) -> Cow<'_, [u8]> {
        match self {
            KvValue::V8(b) | KvValue::Bytes(b) => Cow::Borrowed(b),
            KvValue::U64(n) => Cow::Owned(n.to_le_bytes().to_vec()),
        }
    }

    /// Length of the encoded bytes, as counted by the value size limit.
    pub fn encoded_len(&self) -> usize {
        match self {
            KvValue::V8(b) | KvValue::Bytes(b) => b.len(),
            KvValue::U64(_) => 8,
        }
    }

    /// Builds a value from a protocol encoding number and bytes.
    pub fn from_encoded(encoding: i32, data: Vec<u8>) -> Result<Self, ValueError> {
        match ValueEncoding::from_i32(encoding) {
            Some(ValueEncoding::V8) => Ok(KvValue::V8(data)),
            Some(ValueEncoding::Bytes) => Ok(KvValue::Bytes(data)),
            Some(ValueEncoding::Le64) => {
                let arr: [u8; 8] = data
                    .as_slice()
                    .try_into()
                    .map_err(|_| ValueError::BadU64Length(data.len()))?;
                Ok(KvValue::U64(u64::from_le_bytes(arr)))
            }
            None => Err(ValueError::UnknownEncoding(encoding)),
        }
    }

    /// Splits the value into its encoding number and bytes.
    pub fn into_encoded(self) -> (i32, Vec<u8>) {
        match self {
            KvValue::V8(b) => (ValueEncoding::V8 as i32, b),
            KvValue::Bytes(b) => (ValueEncoding::Bytes as i32, b),
            KvValue::U64(n) => (ValueEncoding::Le64 as i32, n.to_le_bytes().to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_round_trip() {
        for v in [
            KvValue::V8(vec![0xff, 0x0f, 0x49, 0x02]),
            KvValue::Bytes(vec![]),
            KvValue::U64(u64::MAX),
        ] {
            let (e, d) = v.clone().into_encoded();
            assert_eq!(KvValue::from_encoded(e, d).unwrap(), v);
        }
        assert_eq!(
            KvValue::from_encoded(2, vec![1, 2]),
            Err(ValueError::BadU64Length(2))
        );
        assert_eq!(
            KvValue::from_encoded(0, vec![]),
            Err(ValueError::UnknownEncoding(0))
        );
        assert_eq!(
            KvValue::from_encoded(4, vec![]),
            Err(ValueError::UnknownEncoding(4))
        );
    }
}
