//! The Deno KV key codec: the subset of the FoundationDB tuple layer that Deno KV uses.
//!
//! A key is a tuple of [`KeyPart`]s. Its encoding is the plain concatenation of the encoded
//! parts, and plain unsigned byte comparison of encoded keys equals the tuple order defined by
//! [`KeyPart`]'s [`Ord`] implementation (compared part by part, a shorter tuple sorting before
//! any extension of it).
//!
//! | part | tag(s) | payload |
//! |---|---|---|
//! | [`KeyPart::Bytes`] | `01` | bytes, each `00` escaped as `00 ff`, then `00` |
//! | [`KeyPart::String`] | `02` | UTF-8, escaped like bytes, then `00` |
//! | [`KeyPart::Int`] | `0b`..=`1d` | length in the tag (or a length byte), big-endian magnitude |
//! | [`KeyPart::Float`] | `21` | 8 bytes, an order-preserving transform of the IEEE-754 bits |
//! | [`KeyPart::Bool`] | `26` / `27` | none |
//!
//! ```
//! use kv_traits::key::{decode_key, encode_key, prefix_range, KeyPart};
//!
//! let key = vec![KeyPart::from("users"), KeyPart::from(42i64), KeyPart::from(true)];
//! let bytes = encode_key(&key).unwrap();
//! assert_eq!(bytes, b"\x02users\x00\x15\x2a\x27");
//! assert_eq!(decode_key(&bytes).unwrap(), key);
//!
//! // The range a Deno client reads for `list({ prefix: ["users"] })`.
//! let (start, end) = prefix_range(&encode_key(&["users".into()]).unwrap());
//! assert_eq!(start, b"\x02users\x00\x00");
//! assert_eq!(end, b"\x02users\x00\xff");
//! ```

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use num_bigint::{BigInt, Sign};

use crate::versionstamp::Versionstamp;

/// Tag of a byte-string part.
const BYTES: u8 = 0x01;
/// Tag of a UTF-8 string part.
const STRING: u8 = 0x02;
/// Tag of a negative integer whose magnitude needs 9..=255 bytes (a length byte follows).
const NEG_INT_LONG: u8 = 0x0b;
/// Tag of the integer zero; positive/negative integers of `n ≤ 8` bytes use `ZERO ± n`.
const INT_ZERO: u8 = 0x14;
/// Tag of a positive integer whose magnitude needs 9..=255 bytes (a length byte follows).
const POS_INT_LONG: u8 = 0x1d;
/// Tag of a 64-bit float.
const FLOAT: u8 = 0x21;
/// Tag of `false`.
const FALSE: u8 = 0x26;
/// Tag of `true`.
const TRUE: u8 = 0x27;

/// One part of a key.
///
/// Equality, ordering and hashing follow the encoded byte order: parts of different types
/// order as Bytes < String < Int < Float < false < true; floats are compared through their
/// encoded form, so `-0.0` and `+0.0` are different keys and every NaN with the same sign
/// is the same key (the encoder canonicalises NaN payloads).
#[derive(Clone, Debug)]
pub enum KeyPart {
    /// Bytes (`Uint8Array`), tag 0x01.
    Bytes(Vec<u8>),
    /// UTF-8 string, tag 0x02.
    String(String),
    /// Arbitrary-precision integer (JS bigint), tags 0x0b..=0x1d.
    Int(BigInt),
    /// f64 (JS number, including integral values such as `1`), tag 0x21.
    Float(f64),
    /// Boolean, tags 0x26/0x27.
    Bool(bool),
}

/// Errors of [`encode_key`] and [`decode_key`]. Offsets are byte positions in the encoded key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An integer whose magnitude needs more than 255 bytes cannot be encoded.
    #[error("integer key part requires more than 255 bytes ({bytes} bytes)")]
    IntTooLarge {
        /// Bytes the magnitude needs.
        bytes: usize,
    },
    /// A byte that is not the tag of a supported key part.
    #[error("invalid tag 0x{tag:02x} at offset {offset}")]
    InvalidTag {
        /// The tag byte.
        tag: u8,
        /// Where it was found.
        offset: usize,
    },
    /// A bytes or string part without its `00` terminator.
    #[error("unterminated {kind} key part starting at offset {offset}")]
    Unterminated {
        /// `"bytes"` or `"string"`.
        kind: &'static str,
        /// Offset of the part's tag.
        offset: usize,
    },
    /// A string part whose payload is not valid UTF-8.
    #[error("invalid UTF-8 in string key part starting at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the part's tag.
        offset: usize,
    },
    /// An integer or float part cut short.
    #[error("truncated key part starting at offset {offset}: needs {needed} more bytes, {available} available")]
    Truncated {
        /// Offset of the part's tag.
        offset: usize,
        /// Payload bytes the part needs after its tag.
        needed: usize,
        /// Bytes left after the tag.
        available: usize,
    },
}

/// Canonicalises NaN like the encoder and applies the order-preserving transform:
/// negative values have all bits inverted, others only the sign bit.
fn float_sort_bits(f: f64) -> u64 {
    let bits = if f.is_nan() {
        if f.is_sign_negative() {
            0xfff8_0000_0000_0000
        } else {
            0x7ff8_0000_0000_0000
        }
    } else {
        f.to_bits()
    };
    if bits & (1 << 63) != 0 {
        !bits
    } else {
        bits ^ (1 << 63)
    }
}

/// Inverse of [`float_sort_bits`] (up to NaN canonicalisation).
fn float_from_sort_bits(bits: u64) -> f64 {
    let raw = if bits & (1 << 63) == 0 {
        !bits
    } else {
        bits ^ (1 << 63)
    };
    f64::from_bits(raw)
}

impl KeyPart {
    /// Rank of the part's type in the cross-type order (booleans rank by value).
    fn rank(&self) -> u8 {
        match self {
            KeyPart::Bytes(_) => 0,
            KeyPart::String(_) => 1,
            KeyPart::Int(_) => 2,
            KeyPart::Float(_) => 3,
            KeyPart::Bool(false) => 4,
            KeyPart::Bool(true) => 5,
        }
    }

    /// Appends this part's encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), KeyError> {
        match self {
            KeyPart::Bytes(b) => encode_escaped(out, BYTES, b),
            KeyPart::String(s) => encode_escaped(out, STRING, s.as_bytes()),
            KeyPart::Int(i) => encode_int(out, i)?,
            KeyPart::Float(f) => {
                out.push(FLOAT);
                out.extend_from_slice(&float_sort_bits(*f).to_be_bytes());
            }
            KeyPart::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
        }
        Ok(())
    }
}

impl PartialEq for KeyPart {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for KeyPart {}

impl PartialOrd for KeyPart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyPart {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (KeyPart::Bytes(a), KeyPart::Bytes(b)) => a.cmp(b),
            (KeyPart::String(a), KeyPart::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (KeyPart::Int(a), KeyPart::Int(b)) => a.cmp(b),
            (KeyPart::Float(a), KeyPart::Float(b)) => float_sort_bits(*a).cmp(&float_sort_bits(*b)),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for KeyPart {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            KeyPart::Bytes(b) => b.hash(state),
            KeyPart::String(s) => s.hash(state),
            KeyPart::Int(i) => i.hash(state),
            KeyPart::Float(f) => float_sort_bits(*f).hash(state),
            KeyPart::Bool(_) => {}
        }
    }
}

impl From<&str> for KeyPart {
    fn from(s: &str) -> Self {
        KeyPart::String(s.to_owned())
    }
}

impl From<String> for KeyPart {
    fn from(s: String) -> Self {
        KeyPart::String(s)
    }
}

impl From<Vec<u8>> for KeyPart {
    fn from(b: Vec<u8>) -> Self {
        KeyPart::Bytes(b)
    }
}

impl From<&[u8]> for KeyPart {
    fn from(b: &[u8]) -> Self {
        KeyPart::Bytes(b.to_vec())
    }
}

impl From<i64> for KeyPart {
    /// An integer part (a JS bigint), not a number.
    fn from(i: i64) -> Self {
        KeyPart::Int(BigInt::from(i))
    }
}

impl From<u64> for KeyPart {
    /// An integer part (a JS bigint), not a number.
    fn from(i: u64) -> Self {
        KeyPart::Int(BigInt::from(i))
    }
}

impl From<BigInt> for KeyPart {
    fn from(i: BigInt) -> Self {
        KeyPart::Int(i)
    }
}

impl From<f64> for KeyPart {
    fn from(f: f64) -> Self {
        KeyPart::Float(f)
    }
}

impl From<bool> for KeyPart {
    fn from(b: bool) -> Self {
        KeyPart::Bool(b)
    }
}

/// `tag ‖ payload with every 00 replaced by 00 ff ‖ 00`.
fn encode_escaped(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    for &b in payload {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.push(0);
}

fn encode_int(out: &mut Vec<u8>, i: &BigInt) -> Result<(), KeyError> {
    let (sign, magnitude) = i.to_bytes_be();
    if sign == Sign::NoSign {
        out.push(INT_ZERO);
        return Ok(());
    }
    let n = magnitude.len();
    // `n` is at least 1 here; to_bytes_be is minimal for non-zero values.
    let n_u8 = u8::try_from(n).map_err(|_| KeyError::IntTooLarge { bytes: n })?;
    if sign == Sign::Plus {
        if n <= 8 {
            out.push(INT_ZERO + n_u8);
        } else {
            out.push(POS_INT_LONG);
            out.push(n_u8);
        }
        out.extend_from_slice(&magnitude);
    } else {
        if n <= 8 {
            out.push(INT_ZERO - n_u8);
        } else {
            out.push(NEG_INT_LONG);
            out.push(n_u8 ^ 0xff);
        }
        out.extend(magnitude.iter().map(|b| !b));
    }
    Ok(())
}

/// Encodes a key (a tuple of parts). The empty key encodes to zero bytes.
///
/// Fails only for an integer whose magnitude needs more than 255 bytes.
pub fn encode_key(parts: &[KeyPart]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    for part in parts {
        part.encode_into(&mut out)?;
    }
    Ok(out)
}

/// Decodes an encoded key into its parts. Never panics; every malformed input is a
/// [`KeyError`] naming the offending offset.
///
/// Non-minimal integer encodings (leading zero bytes of the magnitude, a long form for a
/// short value) are accepted.
pub fn decode_key(bytes: &[u8]) -> Result<Vec<KeyPart>, KeyError> {
    let mut parts = Vec::new();
    let mut pos = 0;
    while let Some(&tag) = bytes.get(pos) {
        let (part, next) = decode_part(bytes, pos, tag)?;
        parts.push(part);
        pos = next;
    }
    Ok(parts)
}

/// Decodes the part whose tag is at `start`; returns it and the offset after it.
fn decode_part(bytes: &[u8], start: usize, tag: u8) -> Result<(KeyPart, usize), KeyError> {
    let body = start + 1;
    match tag {
        BYTES => {
            let (payload, next) = decode_escaped(bytes, start, "bytes")?;
            Ok((KeyPart::Bytes(payload), next))
        }
        STRING => {
            let (payload, next) = decode_escaped(bytes, start, "string")?;
            let s =
                String::from_utf8(payload).map_err(|_| KeyError::InvalidUtf8 { offset: start })?;
            Ok((KeyPart::String(s), next))
        }
        INT_ZERO => Ok((KeyPart::Int(BigInt::from(0)), body)),
        0x15..=0x1c => {
            let n = usize::from(tag - INT_ZERO);
            let m = take(bytes, start, body, n)?;
            Ok((KeyPart::Int(BigInt::from_bytes_be(Sign::Plus, m)), body + n))
        }
        0x0c..=0x13 => {
            let n = usize::from(INT_ZERO - tag);
            let m = take(bytes, start, body, n)?;
            Ok((negative_int(m), body + n))
        }
        POS_INT_LONG => {
            let n = usize::from(take(bytes, start, body, 1)?[0]);
            let m = take(bytes, start, body + 1, n)?;
            Ok((
                KeyPart::Int(BigInt::from_bytes_be(Sign::Plus, m)),
                body + 1 + n,
            ))
        }
        NEG_INT_LONG => {
            let n = usize::from(take(bytes, start, body, 1)?[0] ^ 0xff);
            let m = take(bytes, start, body + 1, n)?;
            Ok((negative_int(m), body + 1 + n))
        }
        FLOAT => {
            let raw = take(bytes, start, body, 8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            let f = float_from_sort_bits(u64::from_be_bytes(b));
            Ok((KeyPart::Float(f), body + 8))
        }
        FALSE => Ok((KeyPart::Bool(false), body)),
        TRUE => Ok((KeyPart::Bool(true), body)),
        _ => Err(KeyError::InvalidTag { tag, offset: start }),
    }
}

/// The negative integer whose magnitude is the one's complement of `complemented`.
fn negative_int(complemented: &[u8]) -> KeyPart {
    let m: Vec<u8> = complemented.iter().map(|b| !b).collect();
    KeyPart::Int(BigInt::from_bytes_be(Sign::Minus, &m))
}

/// `bytes[from..from + n]`, or [`KeyError::Truncated`] for the part whose tag is at `start`.
fn take(bytes: &[u8], start: usize, from: usize, n: usize) -> Result<&[u8], KeyError> {
    let rest = bytes.get(from..).unwrap_or(&[]);
    rest.get(..n).ok_or(KeyError::Truncated {
        offset: start,
        needed: from - (start + 1) + n,
        available: bytes.len().saturating_sub(start + 1),
    })
}

/// Reads an escaped payload after the tag at `start`, up to a `00` not followed by `ff`.
fn decode_escaped(
    bytes: &[u8],
    start: usize,
    kind: &'static str,
) -> Result<(Vec<u8>, usize), KeyError> {
    let mut payload = Vec::new();
    let mut pos = start + 1;
    loop {
        match bytes.get(pos) {
            None => {
                return Err(KeyError::Unterminated {
                    kind,
                    offset: start,
                })
            }
            Some(0) => {
                if bytes.get(pos + 1) == Some(&0xff) {
                    payload.push(0);
                    pos += 2;
                } else {
                    return Ok((payload, pos + 1));
                }
            }
            Some(&b) => {
                payload.push(b);
                pos += 1;
            }
        }
    }
}

/// The key `prefix ‖ 02 ‖ hex20(vs) ‖ 00`: `prefix` (an encoded key) extended by a string part
/// holding the versionstamp's 20 lowercase hex characters, as stored by
/// `M_SET_SUFFIX_VERSIONSTAMPED_KEY`.
pub fn versionstamped_key(prefix: &[u8], vs: &Versionstamp) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.push(STRING);
    k.extend_from_slice(vs.to_string().as_bytes());
    k.push(0);
    k
}

/// The range `[prefix ‖ 00, prefix ‖ ff)` a Deno client reads for `list({ prefix })`, given the
/// encoded prefix: every key that extends the prefix by at least one part, but not the prefix
/// itself.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = Vec::with_capacity(prefix.len() + 1);
    start.extend_from_slice(prefix);
    start.push(0x00);
    let mut end = Vec::with_capacity(prefix.len() + 1);
    end.extend_from_slice(prefix);
    end.push(0xff);
    (start, end)
}

/// The range `[key, key ‖ 00)` a Deno client reads for `get(key)`: exactly that key.
pub fn single_key_range(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0x00);
    (key.to_vec(), end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_transform_round_trips() {
        for f in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-310,
            -1e-310,
        ] {
            assert_eq!(
                float_from_sort_bits(float_sort_bits(f)).to_bits(),
                f.to_bits()
            );
        }
    }

    #[test]
    fn nan_payloads_are_canonicalised() {
        let weird = f64::from_bits(0x7ff0_0000_0000_0001);
        assert_eq!(float_sort_bits(weird), float_sort_bits(f64::NAN));
        assert_eq!(KeyPart::Float(weird), KeyPart::Float(f64::NAN));
        assert_ne!(KeyPart::Float(-f64::NAN), KeyPart::Float(f64::NAN));
    }

    #[test]
    fn truncated_reports_needed_and_available() {
        assert_eq!(
            decode_key(&[0x02, 0x61, 0x00, 0x1d, 0x09, 0x01]),
            Err(KeyError::Truncated {
                offset: 3,
                needed: 10,
                available: 2
            })
        );
    }
}
