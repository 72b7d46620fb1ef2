//! STUB: replaced by the V8 scalar codec.
use num_bigint::BigInt;

/// A V8-serialized scalar.
#[derive(Clone, Debug, PartialEq)]
pub enum V8Value {
    /// undefined
    Undefined,
    /// null
    Null,
    /// boolean
    Bool(bool),
    /// Number
    Number(f64),
    /// BigInt
    BigInt(BigInt),
    /// String
    String(String),
}

/// Parse errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V8Error {
    /// Bad bytes.
    #[error("invalid V8 value: {0}")]
    Invalid(String),
}

/// Parses a V8 value of the supported subset.
pub fn parse(_bytes: &[u8]) -> Result<V8Value, V8Error> {
    Err(V8Error::Invalid("stub".into()))
}

/// Serializes with header version 15.
pub fn serialize(_v: &V8Value) -> Vec<u8> {
    vec![]
}
