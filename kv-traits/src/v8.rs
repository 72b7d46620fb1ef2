//! The scalar subset of the V8 ValueSerializer format: enough to read and write the operands
//! of the `sum` mutation and to share simple values (undefined, null, booleans, numbers,
//! bigints, strings) with JavaScript clients.
//!
//! Layout: `ff ‖ varint(version) ‖ [00 padding…] ‖ tag ‖ payload`. [`parse`] accepts versions
//! 13 to 16; [`serialize`] writes version 15 in the form V8 itself produces.
//!
//! The pieces are public so that the full-format decoder (`kv-v8`) builds on them instead of
//! repeating them: the tag bytes ([`tag`]), the bounds-checked [`Reader`] (header, varints,
//! scalars, strings) and the writers ([`write_scalar`], [`write_number`], [`write_string`],
//! [`write_bigint`], [`write_varint`]).
//!
//! ```
//! use kv_traits::v8::{parse, parse_sum_operand, serialize, SumOperand, V8Value};
//! use num_bigint::BigInt;
//!
//! // `2` as written by Deno 2.9.6 (version 16, int32 zigzag).
//! assert_eq!(parse(&[0xff, 0x10, 0x49, 0x04]).unwrap(), V8Value::Number(2.0));
//! assert_eq!(serialize(&V8Value::Number(2.0)), [0xff, 0x0f, 0x49, 0x04]);
//! // `-5n`.
//! let bytes = [0xff, 0x10, 0x5a, 0x11, 5, 0, 0, 0, 0, 0, 0, 0];
//! assert_eq!(parse_sum_operand(&bytes).unwrap(), SumOperand::BigInt(BigInt::from(-5)));
//! ```

use num_bigint::{BigInt, Sign};

/// The version byte written by [`serialize`].
pub const WRITE_VERSION: u8 = 15;
/// The lowest header version [`parse`] accepts.
pub const MIN_VERSION: u32 = 13;
/// The highest header version [`parse`] accepts.
pub const MAX_VERSION: u32 = 16;

/// Tag bytes of the V8 ValueSerializer format (V8's `SerializationTag`), the one home for them
/// in this workspace: the scalar ones are read by [`parse`]; the object ones are for decoders
/// of the whole format (the `kv-v8` crate).
pub mod tag {
    /// `ff`: the version header, followed by a varint version.
    pub const VERSION: u8 = 0xff;
    /// `00`: padding, skipped wherever a tag is expected.
    pub const PADDING: u8 = 0x00;
    /// `?`: an object count to verify (varint), ignored by readers.
    pub const VERIFY_OBJECT_COUNT: u8 = b'?';
    /// `-`: an array hole.
    pub const THE_HOLE: u8 = b'-';
    /// `_`: `undefined`.
    pub const UNDEFINED: u8 = b'_';
    /// `0`: `null`.
    pub const NULL: u8 = b'0';
    /// `T`: `true`.
    pub const TRUE: u8 = b'T';
    /// `F`: `false`.
    pub const FALSE: u8 = b'F';
    /// `I`: zigzag varint int32.
    pub const INT32: u8 = b'I';
    /// `U`: varint uint32.
    pub const UINT32: u8 = b'U';
    /// `N`: little-endian f64.
    pub const DOUBLE: u8 = b'N';
    /// `Z`: bigint (bitfield varint, then little-endian digits).
    pub const BIGINT: u8 = b'Z';
    /// `"`: Latin-1 string (varint byte length, bytes).
    pub const ONE_BYTE_STRING: u8 = b'"';
    /// `c`: UTF-16LE string (varint byte length, bytes).
    pub const TWO_BYTE_STRING: u8 = b'c';
    /// `S`: UTF-8 string (varint byte length, bytes).
    pub const UTF8_STRING: u8 = b'S';
    /// `^`: back-reference to an earlier object by id (varint).
    pub const OBJECT_REFERENCE: u8 = b'^';
    /// `o`: start of a plain object.
    pub const BEGIN_JS_OBJECT: u8 = b'o';
    /// `{`: end of a plain object (varint property count).
    pub const END_JS_OBJECT: u8 = b'{';
    /// `a`: start of a sparse array (varint length).
    pub const BEGIN_SPARSE_JS_ARRAY: u8 = b'a';
    /// `@`: end of a sparse array (varint property count, varint length).
    pub const END_SPARSE_JS_ARRAY: u8 = b'@';
    /// `A`: start of a dense array (varint length, then that many elements).
    pub const BEGIN_DENSE_JS_ARRAY: u8 = b'A';
    /// `$`: end of a dense array (varint property count, varint length).
    pub const END_DENSE_JS_ARRAY: u8 = b'$';
    /// `D`: a Date (f64 milliseconds since the epoch).
    pub const DATE: u8 = b'D';
    /// `y`: `new Boolean(true)`.
    pub const TRUE_OBJECT: u8 = b'y';
    /// `x`: `new Boolean(false)`.
    pub const FALSE_OBJECT: u8 = b'x';
    /// `n`: `new Number(f64)`.
    pub const NUMBER_OBJECT: u8 = b'n';
    /// `z`: `Object(bigint)`.
    pub const BIGINT_OBJECT: u8 = b'z';
    /// `s`: `new String(string)` (followed by a tagged string).
    pub const STRING_OBJECT: u8 = b's';
    /// `R`: a RegExp (tagged source string, varint flags).
    pub const REGEXP: u8 = b'R';
    /// `;`: start of a Map.
    pub const BEGIN_JS_MAP: u8 = b';';
    /// `:`: end of a Map (varint: twice the entry count).
    pub const END_JS_MAP: u8 = b':';
    /// `'`: start of a Set.
    pub const BEGIN_JS_SET: u8 = b'\'';
    /// `,`: end of a Set (varint entry count).
    pub const END_JS_SET: u8 = b',';
    /// `B`: an ArrayBuffer (varint byte length, bytes).
    pub const ARRAY_BUFFER: u8 = b'B';
    /// `~`: a resizable ArrayBuffer (varint byte length, varint max byte length, bytes).
    pub const RESIZABLE_ARRAY_BUFFER: u8 = b'~';
    /// `t`: a transferred ArrayBuffer (not storable).
    pub const ARRAY_BUFFER_TRANSFER: u8 = b't';
    /// `V`: a view over the ArrayBuffer just read (subtag, varint offset, varint length, and
    /// from version 14 varint flags).
    pub const ARRAY_BUFFER_VIEW: u8 = b'V';
    /// `u`: a SharedArrayBuffer (not storable).
    pub const SHARED_ARRAY_BUFFER: u8 = b'u';
    /// `p`: a shared object (not storable).
    pub const SHARED_OBJECT: u8 = b'p';
    /// `w`: a transferred WebAssembly module (not storable).
    pub const WASM_MODULE_TRANSFER: u8 = b'w';
    /// `m`: a transferred WebAssembly memory (not storable).
    pub const WASM_MEMORY_TRANSFER: u8 = b'm';
    /// `\\`: a host object (Node's `v8.serialize` writes typed arrays this way).
    pub const HOST_OBJECT: u8 = b'\\';
    /// `r`: an Error (sub-tags until `.`).
    pub const ERROR: u8 = b'r';
}

use tag::*;

/// A V8-serialized scalar.
#[derive(Clone, Debug, PartialEq)]
pub enum V8Value {
    /// `undefined`
    Undefined,
    /// `null`
    Null,
    /// A boolean.
    Bool(bool),
    /// A JS number.
    Number(f64),
    /// A JS bigint.
    BigInt(BigInt),
    /// A JS string (lone UTF-16 surrogates are not representable and fail to parse).
    String(String),
}

impl V8Value {
    /// The JS `typeof`-style name of the value's type (`"undefined"`, `"null"`, `"boolean"`,
    /// `"number"`, `"bigint"`, `"string"`), for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            V8Value::Undefined => "undefined",
            V8Value::Null => "null",
            V8Value::Bool(_) => "boolean",
            V8Value::Number(_) => "number",
            V8Value::BigInt(_) => "bigint",
            V8Value::String(_) => "string",
        }
    }
}

/// Errors of [`parse`] and [`parse_sum_operand`]. Offsets are byte positions in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V8Error {
    /// The input does not start with the `ff` version tag.
    #[error("missing V8 version header (expected 0xff at offset 0)")]
    MissingHeader,
    /// A header version outside 13..=16.
    #[error("unsupported V8 serialization version {0} (supported: 13 to 16)")]
    UnsupportedVersion(u64),
    /// The input ended in the middle of the value.
    #[error("V8 data truncated at offset {offset}")]
    UnexpectedEnd {
        /// Where more bytes were expected.
        offset: usize,
    },
    /// A varint longer than 64 bits, or a value too large for its field.
    #[error("V8 varint at offset {offset} is out of range")]
    VarintOverflow {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// A tag outside the supported scalar subset.
    #[error("unsupported V8 tag 0x{tag:02x} at offset {offset}")]
    UnsupportedTag {
        /// The tag byte.
        tag: u8,
        /// Where it was found.
        offset: usize,
    },
    /// A UTF-8 string (`S`) whose payload is not valid UTF-8.
    #[error("invalid UTF-8 in V8 string at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the string's tag.
        offset: usize,
    },
    /// A two-byte string (`c`) with an odd byte length or unpaired surrogates.
    #[error("invalid UTF-16 in V8 string at offset {offset}")]
    InvalidUtf16 {
        /// Offset of the string's tag.
        offset: usize,
    },
    /// Bytes left after the value.
    #[error("unexpected trailing bytes after the V8 value at offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
    },
    /// [`parse_sum_operand`] found a valid value that is neither a number nor a bigint.
    #[error("expected a V8 number or bigint, found {found}")]
    NotNumeric {
        /// The value's type name (see [`V8Value::type_name`]).
        found: &'static str,
    },
}

/// A cursor over V8-serialized input, shared with full-format decoders (`kv-v8`). Every
/// read checks the remaining input first, so a length field can never make it allocate or
/// read past the end.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at offset 0 of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// The current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next byte, without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The next tag, skipping padding, without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.bytes[self.pos..]
            .iter()
            .copied()
            .find(|&b| b != PADDING)
    }

    /// Consumes one byte.
    pub fn byte(&mut self) -> Result<u8, V8Error> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(V8Error::UnexpectedEnd { offset: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    /// Consumes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], V8Error> {
        let end = self.bytes.len();
        let slice = self
            .bytes
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or(V8Error::UnexpectedEnd { offset: end })?;
        self.pos += n;
        Ok(slice)
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    pub fn varint(&mut self) -> Result<u64, V8Error> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift >= 64 || (shift > 0 && bits >> (64 - shift) != 0) {
                return Err(V8Error::VarintOverflow { offset: start });
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A varint that must fit in 32 bits, as V8 writes for every scalar field.
    pub fn varint32(&mut self) -> Result<u32, V8Error> {
        let start = self.pos;
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| V8Error::VarintOverflow { offset: start })
    }

    /// A varint length followed by that many bytes.
    pub fn length_prefixed(&mut self) -> Result<&'a [u8], V8Error> {
        let start = self.pos;
        let len = self.varint32()?;
        let len = usize::try_from(len).map_err(|_| V8Error::VarintOverflow { offset: start })?;
        self.take(len)
    }

    /// The next tag, skipping padding bytes (V8 pads before two-byte strings).
    pub fn tag(&mut self) -> Result<u8, V8Error> {
        loop {
            let b = self.byte()?;
            if b != PADDING {
                return Ok(b);
            }
        }
    }

    /// An 8-byte little-endian f64.
    pub fn double(&mut self) -> Result<f64, V8Error> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(b))
    }

    /// The header `ff ‖ varint(version)`, checked to be 13..=16; returns the version.
    pub fn header(&mut self) -> Result<u32, V8Error> {
        if self.peek() != Some(VERSION) {
            return Err(V8Error::MissingHeader);
        }
        self.pos += 1;
        let version = self.varint()?;
        if !(u64::from(MIN_VERSION)..=u64::from(MAX_VERSION)).contains(&version) {
            return Err(V8Error::UnsupportedVersion(version));
        }
        // In range 13..=16, so it fits.
        Ok(version as u32)
    }

    /// The payload of a scalar whose tag (at `tag_offset`) was just read: `Ok(None)` when `tag`
    /// is not one of the scalar tags (nothing is consumed then).
    pub fn scalar(&mut self, tag: u8, tag_offset: usize) -> Result<Option<V8Value>, V8Error> {
        let value = match tag {
            UNDEFINED => V8Value::Undefined,
            NULL => V8Value::Null,
            TRUE => V8Value::Bool(true),
            FALSE => V8Value::Bool(false),
            INT32 => V8Value::Number(f64::from(self.int32()?)),
            UINT32 => V8Value::Number(f64::from(self.varint32()?)),
            DOUBLE => V8Value::Number(self.double()?),
            BIGINT => V8Value::BigInt(self.bigint()?),
            ONE_BYTE_STRING | TWO_BYTE_STRING | UTF8_STRING => {
                V8Value::String(self.string_payload(tag, tag_offset)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(value))
    }

    /// A zigzag-encoded int32 varint.
    pub fn int32(&mut self) -> Result<i32, V8Error> {
        let z = self.varint32()?;
        // Zigzag: 0, -1, 1, -2, … ↦ 0, 1, 2, 3, …
        Ok(((z >> 1) as i32) ^ -((z & 1) as i32))
    }

    /// A bigint payload (after its tag): bitfield varint (sign bit, byte length), digits.
    pub fn bigint(&mut self) -> Result<BigInt, V8Error> {
        let start = self.pos;
        let bitfield = self.varint32()?;
        let len = usize::try_from(bitfield >> 1)
            .map_err(|_| V8Error::VarintOverflow { offset: start })?;
        let magnitude = self.take(len)?;
        let sign = if bitfield & 1 == 1 {
            Sign::Minus
        } else {
            Sign::Plus
        };
        Ok(BigInt::from_bytes_le(sign, magnitude))
    }

    /// The payload of a string with tag `tag` (one of the three string tags) read at
    /// `tag_offset`.
    pub fn string_payload(&mut self, tag: u8, tag_offset: usize) -> Result<String, V8Error> {
        match tag {
            ONE_BYTE_STRING => {
                let latin1 = self.length_prefixed()?;
                Ok(latin1.iter().map(|&b| char::from(b)).collect())
            }
            TWO_BYTE_STRING => {
                let raw = self.length_prefixed()?;
                if raw.len() % 2 != 0 {
                    return Err(V8Error::InvalidUtf16 { offset: tag_offset });
                }
                let units = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]));
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .map_err(|_| V8Error::InvalidUtf16 { offset: tag_offset })
            }
            UTF8_STRING => {
                let raw = self.length_prefixed()?;
                std::str::from_utf8(raw)
                    .map(str::to_owned)
                    .map_err(|_| V8Error::InvalidUtf8 { offset: tag_offset })
            }
            _ => Err(V8Error::UnsupportedTag {
                tag,
                offset: tag_offset,
            }),
        }
    }
}

/// Parses a V8-serialized value of the supported subset. Never panics; the whole input must
/// be exactly one value.
pub fn parse(bytes: &[u8]) -> Result<V8Value, V8Error> {
    let mut r = Reader::new(bytes);
    r.header()?;
    let tag = r.tag()?;
    let tag_offset = r.pos - 1;
    let value = r.scalar(tag, tag_offset)?.ok_or(V8Error::UnsupportedTag {
        tag,
        offset: tag_offset,
    })?;
    if r.pos != bytes.len() {
        return Err(V8Error::TrailingBytes { offset: r.pos });
    }
    Ok(value)
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// `ff 0f`: the header [`serialize`] writes.
pub fn header() -> Vec<u8> {
    vec![VERSION, WRITE_VERSION]
}

/// Appends a number as V8 writes it: `I` when [`as_int32`] holds, else `N`.
pub fn write_number(out: &mut Vec<u8>, n: f64) {
    match as_int32(n) {
        Some(i) => {
            out.push(INT32);
            let zigzag = ((i << 1) ^ (i >> 31)) as u32;
            write_varint(out, u64::from(zigzag));
        }
        None => write_double(out, n),
    }
}

/// The int32 a V8 Smi would hold for `n`, if `n` is an integral number in i32 range other
/// than `-0`.
pub fn as_int32(n: f64) -> Option<i32> {
    if n.fract() != 0.0 || (n == 0.0 && n.is_sign_negative()) {
        return None;
    }
    if n >= f64::from(i32::MIN) && n <= f64::from(i32::MAX) {
        Some(n as i32)
    } else {
        None
    }
}

/// Appends a `N` double.
pub fn write_double(out: &mut Vec<u8>, n: f64) {
    out.push(DOUBLE);
    out.extend_from_slice(&n.to_le_bytes());
}

/// Appends a `Z` bigint in V8's form: bitfield (sign bit, byte length) then whole 8-byte little-endian digits.
pub fn write_bigint(out: &mut Vec<u8>, i: &BigInt) {
    let (sign, mut magnitude) = i.to_bytes_le();
    if sign == Sign::NoSign {
        magnitude.clear();
    }
    let padded = magnitude.len().div_ceil(8) * 8;
    magnitude.resize(padded, 0);
    let bitfield = ((padded as u64) << 1) | u64::from(sign == Sign::Minus);
    out.push(BIGINT);
    write_varint(out, bitfield);
    out.extend_from_slice(&magnitude);
}

/// Appends a string as V8 writes it: one-byte when every char is ≤ U+00FF, else two-byte
/// UTF-16 (padded so the payload starts at an even offset of `out`, which must therefore be
/// the whole serialization from its header on).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    if s.chars().all(|c| u32::from(c) <= 0xff) {
        out.push(ONE_BYTE_STRING);
        write_varint(out, s.chars().count() as u64);
        // Every char is ≤ U+00FF, so the conversion to one Latin-1 byte is lossless.
        out.extend(s.chars().map(|c| u32::from(c) as u8));
    } else {
        let units: Vec<u16> = s.encode_utf16().collect();
        let byte_len = (units.len() * 2) as u64;
        // V8 aligns the UTF-16 payload (after tag and length) to an even offset.
        if (out.len() + 1 + varint_len(byte_len)) % 2 == 1 {
            out.push(PADDING);
        }
        out.push(TWO_BYTE_STRING);
        write_varint(out, byte_len);
        for u in units {
            out.extend_from_slice(&u.to_le_bytes());
        }
    }
}

/// Serializes a value with header version 15, in the form V8 itself writes: integral numbers
/// in i32 range (except `-0`) as `I`, other numbers as `N`, bigints as whole 8-byte digits,
/// strings as one-byte (Latin-1) when every char is ≤ U+00FF, else as two-byte UTF-16.
pub fn serialize(v: &V8Value) -> Vec<u8> {
    let mut out = header();
    write_scalar(&mut out, v);
    out
}

/// Appends one scalar (tag and payload) to `out`, in the form [`serialize`] describes.
pub fn write_scalar(out: &mut Vec<u8>, v: &V8Value) {
    match v {
        V8Value::Undefined => out.push(UNDEFINED),
        V8Value::Null => out.push(NULL),
        V8Value::Bool(true) => out.push(TRUE),
        V8Value::Bool(false) => out.push(FALSE),
        V8Value::Number(n) => write_number(out, *n),
        V8Value::BigInt(i) => write_bigint(out, i),
        V8Value::String(s) => write_string(out, s),
    }
}

/// A `sum` operand (or bound, or existing value) in V8 encoding.
#[derive(Clone, Debug, PartialEq)]
pub enum SumOperand {
    /// A JS number (V8 tags `I`, `U` or `N`).
    Number(f64),
    /// A JS bigint (V8 tag `Z`).
    BigInt(BigInt),
}

impl SumOperand {
    /// `"Number"` or `"BigInt"`, as in denokv's `Cannot sum <Kind> with <Kind>`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            SumOperand::Number(_) => "Number",
            SumOperand::BigInt(_) => "BigInt",
        }
    }

    /// Serializes a sum result: numbers always as a double ([`serialize_number`]), bigints via
    /// [`serialize_bigint`].
    pub fn serialize(&self) -> Vec<u8> {
        match self {
            SumOperand::Number(n) => serialize_number(*n),
            SumOperand::BigInt(i) => serialize_bigint(i),
        }
    }
}

impl From<SumOperand> for V8Value {
    fn from(op: SumOperand) -> Self {
        match op {
            SumOperand::Number(n) => V8Value::Number(n),
            SumOperand::BigInt(i) => V8Value::BigInt(i),
        }
    }
}

/// Parses a V8 number (`I`, `U`, `N`) or bigint (`Z`); any other value is
/// [`V8Error::NotNumeric`].
pub fn parse_sum_operand(bytes: &[u8]) -> Result<SumOperand, V8Error> {
    match parse(bytes)? {
        V8Value::Number(n) => Ok(SumOperand::Number(n)),
        V8Value::BigInt(i) => Ok(SumOperand::BigInt(i)),
        other => Err(V8Error::NotNumeric {
            found: other.type_name(),
        }),
    }
}

/// Serializes a number always as a V8 double (`ff 0f 4e` + 8 bytes little-endian), as denokv
/// stores a Number sum result.
pub fn serialize_number(n: f64) -> Vec<u8> {
    let mut out = header();
    write_double(&mut out, n);
    out
}

/// Serializes a bigint as V8 writes it (whole 8-byte digits; `0n` as `5a 00`).
pub fn serialize_bigint(i: &BigInt) -> Vec<u8> {
    let mut out = header();
    write_bigint(&mut out, i);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_overflow_is_an_error() {
        let mut bytes = vec![0xff, 0x0f, b'U'];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x10]);
        assert_eq!(parse(&bytes), Err(V8Error::VarintOverflow { offset: 3 }));
        let mut long = vec![0xff];
        long.extend_from_slice(&[0x80; 10]);
        long.push(0x01);
        assert_eq!(parse(&long), Err(V8Error::VarintOverflow { offset: 1 }));
    }

    #[test]
    fn int32_detection() {
        assert_eq!(as_int32(-0.0), None);
        assert_eq!(as_int32(0.0), Some(0));
        assert_eq!(as_int32(2147483647.0), Some(i32::MAX));
        assert_eq!(as_int32(-2147483648.0), Some(i32::MIN));
        assert_eq!(as_int32(2147483648.0), None);
        assert_eq!(as_int32(f64::NAN), None);
        assert_eq!(as_int32(f64::INFINITY), None);
        assert_eq!(as_int32(0.5), None);
    }
}
