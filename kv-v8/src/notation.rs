//! The JSON notation for writing values and keys by hand (the `data` command line, console
//! edits). Unlike the display tree ([`crate::value_tree`]), which says what a value *is*,
//! the notation is meant to be typed: plain JSON means the obvious JS value, and a few
//! `$`-tagged objects say what JSON cannot.
//!
//! # Values (contract)
//!
//! Plain JSON maps to JS: `null`, booleans, strings, numbers (a JSON integer that a JS
//! number cannot hold exactly is an error: write it as `{"$bigint": "…"}`), arrays (dense),
//! objects (own properties in order).
//!
//! **A JSON object with exactly one member whose name starts with `$` is a tag.** Tags:
//!
//! | notation | value |
//! |---|---|
//! | `{"$u64": "5"}` | a `Deno.KvU64` (decimal string; top level only) |
//! | `{"$bytes": "<base64>"}` | top level: a raw `Uint8Array` value (the `Bytes` encoding); inside a V8 value: a `Uint8Array` |
//! | `{"$v8": "<base64>"}` | the exact V8-serialized bytes (top level only; must decode) |
//! | `{"$bigint": "-123"}` | a bigint |
//! | `{"$number": "NaN"}` | `NaN`, `"Infinity"`, `"-Infinity"`, `"-0"` (a JSON number is accepted too) |
//! | `{"$undefined": true}` | `undefined` |
//! | `{"$date": "2024-01-02T03:04:05.678Z"}` | a `Date` (ISO 8601 in UTC as `toISOString` writes it, years `±YYYYYY` allowed; or a number of milliseconds; `null` for an invalid date) |
//! | `{"$regexp": {"source": "a+", "flags": "gi"}}` | a `RegExp` |
//! | `{"$map": [[key, value], …]}` | a `Map` |
//! | `{"$set": [value, …]}` | a `Set` |
//! | `{"$object": {…}}` | a plain object with exactly these members, never read as a tag (for objects whose only key starts with `$`) |
//! | `{"$array": {"length": 5, "entries": [[0, v], [3, v], ["name", v]]}}` | an array with holes (absent indices) or named properties |
//! | `{"$arraybuffer": "<base64>"}` | an `ArrayBuffer` |
//! | `{"$view": {"kind": "Float64Array", "base64": "…"}}` | a typed array (any kind but `Uint8Array`, which is `$bytes`) or `DataView` over a buffer of exactly these bytes |
//! | `{"$wrapper": <boolean, number, bigint or string>}` | a primitive wrapper object (`new String("x")`) |
//! | `{"$error": {"name": "TypeError", "message": "…", "stack": "…", "cause": v}}` | an `Error` (all members but `name` optional) |
//!
//! [`value_to_notation`] writes the same notation (so its output can be edited and fed back),
//! but it describes the value, not its exact bytes: it fails for values with shared or
//! cyclic references and for typed arrays that view part of a larger buffer, and a Node
//! `Buffer` comes back as a `Uint8Array`. Where exact bytes matter (export/import), keep
//! `{"$v8": …}` or the raw encoding alongside.
//!
//! # Keys
//!
//! A key is a JSON array of parts: strings, numbers (JS numbers), booleans,
//! `{"$bigint": "5"}` (a bigint part) and `{"$bytes": "<base64>"}` (a `Uint8Array` part);
//! the `$number` forms are accepted for NaN, infinities and `-0`. See [`key_from_notation`].

use base64::Engine as _;
use kv_traits::key::KeyPart;
use kv_traits::KvValue;
use num_bigint::BigInt;
use serde_json::{json, Map, Value};

use crate::decode::{decode, DecodeError};
use crate::serialize::{serialize, SerializeError};
use crate::tree::{civil_from_days, date_iso};
use crate::value::{PropertyKey, V8Value, ViewKind};

/// Why a notation could not be read or written. Paths are JSON-pointer-like locations
/// (`/items/3/$map/0`) of the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotationError {
    /// Malformed notation.
    #[error("at {path}: {reason}")]
    Invalid {
        /// Where.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A value the notation cannot express (shared or cyclic references, partial views).
    #[error("at {path}: {reason} cannot be written in the JSON notation")]
    NotExpressible {
        /// Where.
        path: String,
        /// What.
        reason: String,
    },
    /// Stored V8 bytes that do not decode.
    #[error("undecodable V8 value: {0}")]
    Decode(#[from] DecodeError),
    /// A value that cannot be serialized.
    #[error("cannot serialize: {0}")]
    Serialize(#[from] SerializeError),
}

fn invalid(path: &str, reason: impl Into<String>) -> NotationError {
    NotationError::Invalid {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

fn not_expressible(path: &str, reason: impl Into<String>) -> NotationError {
    NotationError::NotExpressible {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

fn b64_decode(path: &str, v: &Value) -> Result<Vec<u8>, NotationError> {
    let s = v
        .as_str()
        .ok_or_else(|| invalid(path, "expected a base64 string"))?;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| invalid(path, format!("invalid base64: {e}")))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The single `$` tag of a JSON object, if it is one.
fn as_tag(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    k.starts_with('$').then_some((k.as_str(), v))
}

/// A stored value from its notation (see the module docs).
pub fn value_from_notation(v: &Value) -> Result<KvValue, NotationError> {
    match as_tag(v) {
        Some(("$u64", n)) => {
            let s = n
                .as_str()
                .ok_or_else(|| invalid("/$u64", "expected a decimal string"))?;
            let n = s.parse::<u64>().map_err(|_| {
                invalid("/$u64", format!("{s:?} is not an unsigned 64-bit integer"))
            })?;
            Ok(KvValue::U64(n))
        }
        Some(("$bytes", b)) => Ok(KvValue::Bytes(b64_decode("/$bytes", b)?)),
        Some(("$v8", b)) => {
            let bytes = b64_decode("/$v8", b)?;
            decode(&bytes)?;
            Ok(KvValue::V8(bytes))
        }
        _ => Ok(KvValue::V8(serialize(&js_from_notation(v)?)?)),
    }
}

/// The notation of a stored value (see the module docs for what it cannot express).
pub fn value_to_notation(v: &KvValue) -> Result<Value, NotationError> {
    match v {
        KvValue::U64(n) => Ok(json!({"$u64": n.to_string()})),
        KvValue::Bytes(b) => Ok(json!({"$bytes": b64(b)})),
        KvValue::V8(bytes) => js_to_notation(&decode(bytes)?),
    }
}

/// A JS value from its notation (no `$u64`, `$v8`; `$bytes` is a `Uint8Array`).
pub fn js_from_notation(v: &Value) -> Result<V8Value, NotationError> {
    let mut b = Builder { next_id: 0 };
    b.value(v, "", 0)
}

/// The notation of a decoded JS value.
pub fn js_to_notation(v: &V8Value) -> Result<Value, NotationError> {
    to_notation(v, "")
}

/// Nesting deeper than this is refused (as the decoder refuses it).
const MAX_DEPTH: usize = crate::decode::MAX_DEPTH;

struct Builder {
    next_id: u32,
}

impl Builder {
    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn value(&mut self, v: &Value, path: &str, depth: usize) -> Result<V8Value, NotationError> {
        if depth >= MAX_DEPTH {
            return Err(invalid(
                path,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let depth = depth + 1;
        match v {
            Value::Null => Ok(V8Value::Null),
            Value::Bool(b) => Ok(V8Value::Bool(*b)),
            Value::Number(_) => Ok(V8Value::Number(json_number(v, path)?)),
            Value::String(s) => Ok(V8Value::String(s.clone())),
            Value::Array(items) => {
                let id = self.id();
                let mut properties = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let value = self.value(item, &format!("{path}/{i}"), depth)?;
                    properties.push((PropertyKey::Number(i as f64), value));
                }
                let length =
                    u32::try_from(items.len()).map_err(|_| invalid(path, "array too long"))?;
                Ok(V8Value::Array {
                    id,
                    length,
                    properties,
                    sparse: false,
                })
            }
            Value::Object(m) => match as_tag(v) {
                Some((tag, inner)) => self.tagged(tag, inner, &format!("{path}/{tag}"), depth),
                None => self.object(m, path, depth),
            },
        }
    }

    fn object(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<V8Value, NotationError> {
        let id = self.id();
        let mut properties = Vec::with_capacity(m.len());
        for (k, item) in m {
            let value = self.value(item, &format!("{path}/{k}"), depth)?;
            properties.push((PropertyKey::String(k.clone()), value));
        }
        Ok(V8Value::Object { id, properties })
    }

    fn tagged(
        &mut self,
        tag: &str,
        v: &Value,
        path: &str,
        depth: usize,
    ) -> Result<V8Value, NotationError> {
        match tag {
            "$bigint" => Ok(V8Value::BigInt(bigint(v, path)?)),
            "$number" => Ok(V8Value::Number(special_number(v, path)?)),
            "$undefined" => match v {
                Value::Bool(true) => Ok(V8Value::Undefined),
                _ => Err(invalid(path, "write undefined as {\"$undefined\": true}")),
            },
            "$date" => {
                let ms = match v {
                    Value::Null => f64::NAN,
                    Value::Number(_) => json_number(v, path)?,
                    Value::String(s) => parse_iso(s).ok_or_else(|| {
                        invalid(path, format!("{s:?} is not a date like 2024-01-02T03:04:05.678Z"))
                    })?,
                    _ => return Err(invalid(path, "expected an ISO date string")),
                };
                Ok(V8Value::Date { id: self.id(), ms })
            }
            "$regexp" => {
                let m = v
                    .as_object()
                    .ok_or_else(|| invalid(path, "expected {\"source\": …, \"flags\": …}"))?;
                let source = m
                    .get("source")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(path, "missing \"source\" string"))?;
                let flags = match m.get("flags") {
                    None => "",
                    Some(f) => f
                        .as_str()
                        .ok_or_else(|| invalid(path, "\"flags\" must be a string"))?,
                };
                if crate::serialize::regexp_bits(flags).is_none() {
                    return Err(invalid(path, format!("invalid RegExp flags {flags:?}")));
                }
                Ok(V8Value::RegExp {
                    id: self.id(),
                    source: source.to_owned(),
                    flags: flags.to_owned(),
                })
            }
            "$map" => {
                let items = v
                    .as_array()
                    .ok_or_else(|| invalid(path, "expected [[key, value], …]"))?;
                let id = self.id();
                let mut entries = Vec::with_capacity(items.len());
                for (i, pair) in items.iter().enumerate() {
                    let p = format!("{path}/{i}");
                    match pair.as_array().map(Vec::as_slice) {
                        Some([k, val]) => {
                            let k = self.value(k, &format!("{p}/0"), depth)?;
                            let val = self.value(val, &format!("{p}/1"), depth)?;
                            entries.push((k, val));
                        }
                        _ => return Err(invalid(&p, "expected a [key, value] pair")),
                    }
                }
                Ok(V8Value::Map { id, entries })
            }
            "$set" => {
                let items = v
                    .as_array()
                    .ok_or_else(|| invalid(path, "expected an array of values"))?;
                let id = self.id();
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    values.push(self.value(item, &format!("{path}/{i}"), depth)?);
                }
                Ok(V8Value::Set { id, values })
            }
            "$object" => {
                let m = v
                    .as_object()
                    .ok_or_else(|| invalid(path, "expected an object"))?;
                self.object(m, path, depth)
            }
            "$array" => self.sparse_array(v, path, depth),
            "$bytes" => {
                let data = b64_decode(path, v)?;
                Ok(self.view(ViewKind::Uint8, data))
            }
            "$arraybuffer" => Ok(V8Value::ArrayBuffer {
                id: self.id(),
                data: b64_decode(path, v)?,
                max_byte_length: None,
            }),
            "$view" => {
                let kind_name = v
                    .get("kind")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(path, "missing \"kind\" (e.g. \"Float64Array\")"))?;
                let kind = ViewKind::from_name(kind_name)
                    .filter(|k| *k != ViewKind::NodeBuffer)
                    .ok_or_else(|| invalid(path, format!("unknown view kind {kind_name:?}")))?;
                let data = b64_decode(
                    &format!("{path}/base64"),
                    v.get("base64").unwrap_or(&Value::Null),
                )?;
                if data.len() % kind.element_size() as usize != 0 {
                    return Err(invalid(
                        path,
                        format!(
                            "{} bytes are not a whole number of {kind_name} elements",
                            data.len()
                        ),
                    ));
                }
                Ok(self.view(kind, data))
            }
            "$wrapper" => {
                let id = self.id();
                // The wrapped primitive is part of the wrapper, not a level of its own (as in
                // the decoder).
                let inner = self.value(v, path, depth.saturating_sub(1))?;
                match inner {
                    V8Value::Bool(_)
                    | V8Value::Number(_)
                    | V8Value::BigInt(_)
                    | V8Value::String(_) => Ok(V8Value::Boxed {
                        id,
                        value: Box::new(inner),
                    }),
                    _ => Err(invalid(
                        path,
                        "a wrapper wraps a boolean, number, bigint or string",
                    )),
                }
            }
            "$error" => {
                let m = v
                    .as_object()
                    .ok_or_else(|| invalid(path, "expected {\"name\": …, \"message\": …}"))?;
                let name = match m.get("name").and_then(Value::as_str).unwrap_or("Error") {
                    "Error" => "Error",
                    "EvalError" => "EvalError",
                    "RangeError" => "RangeError",
                    "ReferenceError" => "ReferenceError",
                    "SyntaxError" => "SyntaxError",
                    "TypeError" => "TypeError",
                    "URIError" => "URIError",
                    other => return Err(invalid(path, format!("unknown Error name {other:?}"))),
                };
                let string = |k: &str| -> Result<Option<String>, NotationError> {
                    match m.get(k) {
                        None => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(invalid(path, format!("\"{k}\" must be a string"))),
                    }
                };
                let (message, stack) = (string("message")?, string("stack")?);
                let id = self.id();
                let cause = match m.get("cause") {
                    None => None,
                    Some(c) => Some(Box::new(self.value(c, &format!("{path}/cause"), depth)?)),
                };
                Ok(V8Value::Error {
                    id,
                    name,
                    message,
                    stack,
                    cause,
                })
            }
            _ => Err(invalid(
                path,
                format!(
                    "unknown tag {tag:?} (to write a plain object with this key, wrap it: {{\"$object\": {{…}}}})"
                ),
            )),
        }
    }

    fn view(&mut self, kind: ViewKind, data: Vec<u8>) -> V8Value {
        let buffer_id = self.id();
        let len = data.len() as u32;
        V8Value::View {
            id: self.id(),
            kind,
            buffer: Box::new(V8Value::ArrayBuffer {
                id: buffer_id,
                data,
                max_byte_length: None,
            }),
            byte_offset: 0,
            byte_length: len,
            flags: 0,
        }
    }

    fn sparse_array(
        &mut self,
        v: &Value,
        path: &str,
        depth: usize,
    ) -> Result<V8Value, NotationError> {
        let length = v
            .get("length")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid(path, "missing \"length\" (0 to 4294967295)"))?;
        let items = v
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(path, "missing \"entries\": [[index or name, value], …]"))?;
        let id = self.id();
        let mut properties = Vec::with_capacity(items.len());
        for (i, pair) in items.iter().enumerate() {
            let p = format!("{path}/entries/{i}");
            let Some([k, val]) = pair.as_array().map(Vec::as_slice) else {
                return Err(invalid(&p, "expected an [index or name, value] pair"));
            };
            let key = match k {
                Value::String(s) => PropertyKey::String(s.clone()),
                Value::Number(n) => match n.as_u64() {
                    Some(i) if i < u64::from(length) => PropertyKey::Number(i as f64),
                    _ => return Err(invalid(&p, "an index must be an integer below length")),
                },
                _ => return Err(invalid(&p, "a key is an index number or a name string")),
            };
            let value = self.value(val, &format!("{p}/1"), depth)?;
            properties.push((key, value));
        }
        Ok(V8Value::Array {
            id,
            length,
            properties,
            sparse: true,
        })
    }
}

/// A JSON number as a JS number, refusing integers a JS number cannot hold exactly.
fn json_number(v: &Value, path: &str) -> Result<f64, NotationError> {
    let n = match v {
        Value::Number(n) => n,
        _ => return Err(invalid(path, "expected a number")),
    };
    if let Some(i) = n.as_i64() {
        let f = i as f64;
        if f as i64 != i || f.abs() > 9007199254740992.0 {
            return Err(invalid(
                path,
                format!("{i} is not exactly representable as a JS number; write {{\"$bigint\": \"{i}\"}}"),
            ));
        }
        return Ok(f);
    }
    if let Some(u) = n.as_u64() {
        return Err(invalid(
            path,
            format!(
                "{u} is not exactly representable as a JS number; write {{\"$bigint\": \"{u}\"}}"
            ),
        ));
    }
    n.as_f64().ok_or_else(|| invalid(path, "expected a number"))
}

fn special_number(v: &Value, path: &str) -> Result<f64, NotationError> {
    match v {
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "-0" => Ok(-0.0),
            other => other
                .parse::<f64>()
                .map_err(|_| invalid(path, format!("{other:?} is not a number"))),
        },
        Value::Number(_) => json_number(v, path),
        _ => Err(invalid(
            path,
            "expected \"NaN\", \"Infinity\", \"-Infinity\" or \"-0\"",
        )),
    }
}

fn bigint(v: &Value, path: &str) -> Result<BigInt, NotationError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return Err(invalid(path, "expected a decimal string")),
    };
    s.parse::<BigInt>()
        .map_err(|_| invalid(path, format!("{s:?} is not a decimal integer")))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.sss]Z` (or `±YYYYYY-…`).
fn parse_iso(s: &str) -> Option<f64> {
    let (sign, rest, ydigits) = match s.as_bytes().first()? {
        b'+' => (1, s.get(1..)?, 6),
        b'-' => (-1, s.get(1..)?, 6),
        _ => (1, s, 4),
    };
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let year = sign * num(rest.get(..ydigits)?)?;
    let rest = rest.get(ydigits..)?;
    let b = rest.as_bytes();
    if b.len() < 16 || b[0] != b'-' || b[3] != b'-' || b[6] != b'T' || b[9] != b':' || b[12] != b':'
    {
        return None;
    }
    let month = num(rest.get(1..3)?)?;
    let day = num(rest.get(4..6)?)?;
    let (h, mi, sec) = (
        num(rest.get(7..9)?)?,
        num(rest.get(10..12)?)?,
        num(rest.get(13..15)?)?,
    );
    let tail = rest.get(15..)?;
    let (millis, z) = match tail.strip_prefix('.') {
        Some(t) => {
            let digits = t.get(..3)?;
            (num(digits)?, t.get(3..)?)
        }
        None => (0, tail),
    };
    if z != "Z" || !(1..=12).contains(&month) || h > 24 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    let ms = ((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis;
    let ms = ms as f64;
    (ms.abs() <= 8.64e15).then_some(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (checked with `civil_from_days`).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=31).contains(&d) {
        return None;
    }
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // Reject days past the month's end (e.g. 02-30) by converting back.
    (civil_from_days(days) == (y, m as u32, d as u32)).then_some(days)
}

fn number_notation(n: f64) -> Value {
    if n.is_nan() {
        json!({"$number": "NaN"})
    } else if n.is_infinite() {
        json!({"$number": if n > 0.0 { "Infinity" } else { "-Infinity" }})
    } else if n == 0.0 && n.is_sign_negative() {
        json!({"$number": "-0"})
    } else {
        crate::tree::number_json(n)
    }
}

fn to_notation(v: &V8Value, path: &str) -> Result<Value, NotationError> {
    Ok(match v {
        V8Value::Undefined => json!({"$undefined": true}),
        V8Value::Null => Value::Null,
        V8Value::Bool(b) => json!(b),
        V8Value::Number(n) => number_notation(*n),
        V8Value::BigInt(i) => json!({"$bigint": i.to_string()}),
        V8Value::String(s) => json!(s),
        V8Value::Object { properties, .. } => {
            let mut m = Map::new();
            for (k, val) in properties {
                let k = k.to_js_string();
                let val = to_notation(val, &format!("{path}/{k}"))?;
                m.insert(k, val);
            }
            if m.len() == 1 && m.keys().all(|k| k.starts_with('$')) {
                json!({"$object": m})
            } else {
                Value::Object(m)
            }
        }
        V8Value::Array {
            length, properties, ..
        } => {
            let plain = properties.len() == *length as usize
                && properties.iter().enumerate().all(|(i, (k, _))| {
                    crate::serialize::array_index(&k.to_js_string()) == Some(i as u32)
                });
            if plain {
                let mut items = Vec::with_capacity(properties.len());
                for (i, (_, val)) in properties.iter().enumerate() {
                    items.push(to_notation(val, &format!("{path}/{i}"))?);
                }
                Value::Array(items)
            } else {
                let mut entries = Vec::with_capacity(properties.len());
                for (k, val) in properties {
                    // An index below `length` as a number (whether V8 wrote it as a number or
                    // as a string), any other key as a string.
                    let name = k.to_js_string();
                    let key = match crate::serialize::array_index(&name) {
                        Some(i) if i < *length => json!(i),
                        _ => json!(name),
                    };
                    let p = format!("{path}/$array/{}", k.to_js_string());
                    entries.push(json!([key, to_notation(val, &p)?]));
                }
                json!({"$array": {"length": length, "entries": entries}})
            }
        }
        V8Value::Date { ms, .. } => json!({"$date": date_iso(*ms)}),
        V8Value::RegExp { source, flags, .. } => {
            json!({"$regexp": {"source": source, "flags": flags}})
        }
        V8Value::Map { entries, .. } => {
            let mut out = Vec::with_capacity(entries.len());
            for (i, (k, val)) in entries.iter().enumerate() {
                let p = format!("{path}/$map/{i}");
                out.push(json!([
                    to_notation(k, &format!("{p}/0"))?,
                    to_notation(val, &format!("{p}/1"))?
                ]));
            }
            json!({"$map": out})
        }
        V8Value::Set { values, .. } => {
            let mut out = Vec::with_capacity(values.len());
            for (i, val) in values.iter().enumerate() {
                out.push(to_notation(val, &format!("{path}/$set/{i}"))?);
            }
            json!({"$set": out})
        }
        V8Value::ArrayBuffer {
            data,
            max_byte_length,
            ..
        } => {
            if max_byte_length.is_some() {
                return Err(not_expressible(path, "a resizable ArrayBuffer"));
            }
            json!({"$arraybuffer": b64(data)})
        }
        V8Value::View {
            kind,
            buffer,
            byte_offset,
            byte_length,
            flags,
            ..
        } => {
            let data = match buffer.as_ref() {
                V8Value::ArrayBuffer {
                    data,
                    max_byte_length: None,
                    ..
                } if *byte_offset == 0 && *byte_length as usize == data.len() && *flags == 0 => {
                    data
                }
                _ => {
                    return Err(not_expressible(
                        path,
                        format!("a {} over part of a larger or shared buffer", kind.name()),
                    ))
                }
            };
            view_notation(*kind, data)
        }
        V8Value::HostView { kind, data, .. } => view_notation(*kind, data),
        V8Value::Boxed { value, .. } => json!({"$wrapper": to_notation(value, path)?}),
        V8Value::Error {
            name,
            message,
            stack,
            cause,
            ..
        } => {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            if let Some(message) = message {
                m.insert("message".into(), json!(message));
            }
            if let Some(stack) = stack {
                m.insert("stack".into(), json!(stack));
            }
            if let Some(cause) = cause {
                m.insert(
                    "cause".into(),
                    to_notation(cause, &format!("{path}/cause"))?,
                );
            }
            json!({"$error": m})
        }
        V8Value::Ref(id) => {
            return Err(not_expressible(
                path,
                format!("a shared or cyclic reference (to object {id})"),
            ))
        }
    })
}

fn view_notation(kind: ViewKind, data: &[u8]) -> Value {
    match kind {
        ViewKind::Uint8 | ViewKind::NodeBuffer => json!({"$bytes": b64(data)}),
        _ => json!({"$view": {"kind": kind.name(), "base64": b64(data)}}),
    }
}

/// A key from its notation: a JSON array of parts (see the module docs).
pub fn key_from_notation(v: &Value) -> Result<Vec<KeyPart>, NotationError> {
    let parts = v
        .as_array()
        .ok_or_else(|| invalid("", "a key is a JSON array of parts, e.g. [\"users\", 1]"))?;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("/{i}");
            match p {
                Value::String(s) => Ok(KeyPart::String(s.clone())),
                Value::Bool(b) => Ok(KeyPart::Bool(*b)),
                Value::Number(_) => Ok(KeyPart::Float(json_number(p, &path)?)),
                _ => match as_tag(p) {
                    Some(("$bigint", b)) => Ok(KeyPart::Int(bigint(b, &format!("{path}/$bigint"))?)),
                    Some(("$bytes", b)) => {
                        Ok(KeyPart::Bytes(b64_decode(&format!("{path}/$bytes"), b)?))
                    }
                    Some(("$number", n)) => {
                        Ok(KeyPart::Float(special_number(n, &format!("{path}/$number"))?))
                    }
                    _ => Err(invalid(
                        &path,
                        "a key part is a string, number, boolean, {\"$bigint\": \"…\"} or {\"$bytes\": \"<base64>\"}",
                    )),
                },
            }
        })
        .collect()
}

/// The notation of a key.
pub fn key_to_notation(parts: &[KeyPart]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|p| match p {
                KeyPart::String(s) => json!(s),
                KeyPart::Bool(b) => json!(b),
                KeyPart::Float(f) => number_notation(*f),
                KeyPart::Int(i) => json!({"$bigint": i.to_string()}),
                KeyPart::Bytes(b) => json!({"$bytes": b64(b)}),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(n: Value) {
        let stored = value_from_notation(&n).unwrap();
        assert_eq!(value_to_notation(&stored).unwrap(), n, "{n}");
    }

    #[test]
    fn values_round_trip_through_bytes() {
        for n in [
            json!(null),
            json!(true),
            json!(1),
            json!(-1.5),
            json!("héllo"),
            json!("日本 🎉"),
            json!([1, "a", [null]]),
            json!({"a": 1, "b": {"c": [true]}, "0": "index-like key"}),
            json!({"$u64": "18446744073709551615"}),
            json!({"$bytes": "AQID"}),
            json!({"$bigint": "-123456789012345678901234567890"}),
            json!({"$number": "NaN"}),
            json!({"$number": "-0"}),
            json!({"$number": "-Infinity"}),
            json!({"$undefined": true}),
            json!({"$date": "2024-02-29T12:34:56.789Z"}),
            json!({"$date": "+275760-09-13T00:00:00.000Z"}),
            json!({"$date": null}),
            json!({"$regexp": {"source": "a+b", "flags": "gimsuy"}}),
            json!({"$map": [["k", 1], [{"$bigint": "2"}, [3]]]}),
            json!({"$set": [1, "x", {"$undefined": true}]}),
            json!({"$object": {"$only": 1}}),
            json!({"$array": {"length": 5, "entries": [[0, "a"], [3, "b"], ["name", 1]]}}),
            json!([{"$bytes": ""}, {"$arraybuffer": "AAE="}]),
            json!({"$view": {"kind": "Float64Array", "base64": "AAAAAAAA8D8="}}),
            json!({"$view": {"kind": "DataView", "base64": "AQ=="}}),
            json!({"$wrapper": "str"}),
            json!({"$wrapper": {"$bigint": "5"}}),
            json!({"$error": {"name": "TypeError", "message": "bad", "cause": 1}}),
        ] {
            round_trip(n);
        }
    }

    #[test]
    fn bad_notation_is_reported_with_a_path() {
        let err = value_from_notation(&json!({"a": [1, {"$bogus": 1}]})).unwrap_err();
        assert!(
            err.to_string().starts_with("at /a/1/$bogus: unknown tag"),
            "{err}"
        );
        let err = value_from_notation(&json!(9007199254740993u64)).unwrap_err();
        assert!(err.to_string().contains("$bigint"), "{err}");
        assert!(value_from_notation(&json!({"$date": "2024-02-30T00:00:00Z"})).is_err());
        assert!(value_from_notation(&json!({"$u64": "-1"})).is_err());
        assert!(value_from_notation(&json!({"$v8": "AAA="})).is_err());
    }

    #[test]
    fn cycles_are_not_expressible() {
        let bytes = hex::decode("ff0f6f220473656c665e007b01").unwrap();
        let err = value_to_notation(&KvValue::V8(bytes)).unwrap_err();
        assert!(matches!(err, NotationError::NotExpressible { .. }), "{err}");
    }

    #[test]
    fn keys_round_trip() {
        let n =
            json!(["users", 1.5, {"$bigint": "5"}, {"$bytes": "AAE="}, true, {"$number": "-0"}]);
        let parts = key_from_notation(&n).unwrap();
        assert_eq!(key_to_notation(&parts), n);
        assert!(key_from_notation(&json!(["a", null])).is_err());
        assert!(key_from_notation(&json!("a")).is_err());
    }

    #[test]
    fn iso_dates() {
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_iso("1970-01-01T00:00:01.500Z"), Some(1500.0));
        assert_eq!(
            parse_iso("-000001-01-01T00:00:00.000Z"),
            Some(-62198755200000.0)
        );
        assert_eq!(parse_iso("1970-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso("1970-01-01"), None);
    }
}
