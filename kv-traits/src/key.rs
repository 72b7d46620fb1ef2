//! STUB: replaced by the key codec implementation.
use num_bigint::BigInt;
use crate::versionstamp::Versionstamp;

/// One part of a key.
#[derive(Clone, Debug)]
pub enum KeyPart {
    /// Bytes (`Uint8Array`), tag 0x01.
    Bytes(Vec<u8>),
    /// UTF-8 string, tag 0x02.
    String(String),
    /// Arbitrary-precision integer (JS bigint), tags 0x0b..=0x1d.
    Int(BigInt),
    /// f64 (JS number), tag 0x21.
    Float(f64),
    /// Boolean, tags 0x26/0x27.
    Bool(bool),
}

/// Key encoding/decoding errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Bad bytes.
    #[error("invalid key: {0}")]
    Invalid(String),
}

/// Encodes key parts.
pub fn encode_key(_parts: &[KeyPart]) -> Result<Vec<u8>, KeyError> {
    Err(KeyError::Invalid("stub".into()))
}

/// Decodes key bytes.
pub fn decode_key(_bytes: &[u8]) -> Result<Vec<KeyPart>, KeyError> {
    Err(KeyError::Invalid("stub".into()))
}

/// `prefix ‖ 02 ‖ hex20(vs) ‖ 00`.
pub fn versionstamped_key(prefix: &[u8], vs: &Versionstamp) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(0x02);
    k.extend_from_slice(vs.to_string().as_bytes());
    k.push(0);
    k
}
