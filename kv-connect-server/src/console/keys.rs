//! Keys as the console shows and takes them: a list of typed parts.
//!
//! # Contract
//!
//! A part is `{"type": T, "value": V}`:
//!
//! | `type` | `value` | Deno |
//! |---|---|---|
//! | `string` | JSON string | `"users"` |
//! | `number` | JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"`, `"-0"` | `1.5` |
//! | `bigint` | decimal string (`"-12"`) | `12n` |
//! | `boolean` | `true`/`false` | `true` |
//! | `bytes` | lowercase or uppercase hex string | `new Uint8Array([1, 2])` |
//!
//! [`to_json`] and [`from_json`] round-trip every key (numbers keep their exact bits, `-0`
//! included). A key that does not decode as parts is shown by its hex bytes only.

use std::str::FromStr;

use kv_traits::key::{decode_key, encode_key, KeyPart};
use num_bigint::BigInt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// One typed key part as the API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartJson {
    #[serde(rename = "type")]
    kind: String,
    value: Value,
}

/// A part as JSON.
fn part_to_json(part: &KeyPart) -> Value {
    match part {
        KeyPart::String(s) => json!({"type": "string", "value": s}),
        KeyPart::Int(i) => json!({"type": "bigint", "value": i.to_string()}),
        KeyPart::Float(f) => {
            let value = if f.is_nan() {
                json!("NaN")
            } else if f.is_infinite() {
                json!(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            } else if *f == 0.0 && f.is_sign_negative() {
                json!("-0")
            } else {
                json!(f)
            };
            json!({"type": "number", "value": value})
        }
        KeyPart::Bool(b) => json!({"type": "boolean", "value": b}),
        KeyPart::Bytes(b) => json!({"type": "bytes", "value": hex::encode(b)}),
    }
}

/// The parts of an encoded key as JSON (`null` if it does not decode).
pub(super) fn to_json(key: &[u8]) -> Value {
    match decode_key(key) {
        Ok(parts) => Value::Array(parts.iter().map(part_to_json).collect()),
        Err(_) => Value::Null,
    }
}

/// The part `p` (its index `i` names it in errors).
fn part_from_json(i: usize, p: &PartJson) -> Result<KeyPart, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request(format!(
            "Key part {i} ({}): {what}.",
            serde_json::to_string(&p.value).unwrap_or_default()
        ))
    };
    Ok(match (p.kind.as_str(), &p.value) {
        ("string", Value::String(s)) => KeyPart::String(s.clone()),
        ("number", Value::Number(n)) => {
            KeyPart::Float(n.as_f64().ok_or_else(|| bad("not a number"))?)
        }
        ("number", Value::String(s)) => KeyPart::Float(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            "-0" => -0.0,
            other => other.parse::<f64>().map_err(|_| {
                bad("a number part needs a JSON number or NaN/Infinity/-Infinity/-0")
            })?,
        }),
        ("bigint", Value::String(s)) => KeyPart::Int(
            BigInt::from_str(s.trim()).map_err(|_| bad("a bigint part needs a decimal integer"))?,
        ),
        ("bigint", Value::Number(n)) if n.is_i64() || n.is_u64() => {
            KeyPart::Int(BigInt::from_str(&n.to_string()).map_err(|_| bad("not an integer"))?)
        }
        ("boolean", Value::Bool(b)) => KeyPart::Bool(*b),
        ("bytes", Value::String(s)) => {
            KeyPart::Bytes(hex::decode(s.trim()).map_err(|_| bad("a bytes part needs hex"))?)
        }
        ("string" | "number" | "bigint" | "boolean" | "bytes", _) => {
            return Err(bad(&format!("wrong value for a {} part", p.kind)))
        }
        (other, _) => {
            return Err(bad(&format!(
                "unknown part type {other:?} (string, number, bigint, boolean or bytes)"
            )))
        }
    })
}

/// Encodes typed parts into a key (400 naming the bad part).
pub(super) fn from_json(parts: &[PartJson]) -> Result<Vec<u8>, ApiError> {
    let parts = parts
        .iter()
        .enumerate()
        .map(|(i, p)| part_from_json(i, p))
        .collect::<Result<Vec<_>, _>>()?;
    encode_key(&parts)
        .map_err(|e| ApiError::bad_request(format!("The key cannot be encoded: {e}.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Vec<PartJson> {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn typed_parts_round_trip() {
        let key = encode_key(&[
            KeyPart::String("users".into()),
            KeyPart::Int(BigInt::from(-7)),
            KeyPart::Float(1.5),
            KeyPart::Float(-0.0),
            KeyPart::Float(f64::NAN),
            KeyPart::Bool(true),
            KeyPart::Bytes(vec![0, 255]),
        ])
        .unwrap_or_default();
        let json = to_json(&key);
        assert_eq!(json[1], json!({"type": "bigint", "value": "-7"}));
        assert_eq!(json[3], json!({"type": "number", "value": "-0"}));
        assert_eq!(json[6], json!({"type": "bytes", "value": "00ff"}));
        let back = from_json(&parse(json)).ok();
        assert_eq!(back, Some(key));
    }

    #[test]
    fn bad_parts_are_400_naming_the_part() {
        for (v, needle) in [
            (json!([{"type": "string", "value": 1}]), "part 0"),
            (json!([{"type": "x", "value": 1}]), "unknown part type"),
            (
                json!([{"type": "string", "value": "a"}, {"type": "bigint", "value": "1.5"}]),
                "part 1",
            ),
            (json!([{"type": "bytes", "value": "zz"}]), "hex"),
        ] {
            let err = from_json(&parse(v.clone())).err();
            let msg = err
                .map(|e| (e.status.as_u16(), e.message))
                .unwrap_or_default();
            assert_eq!(msg.0, 400, "{v}");
            assert!(msg.1.contains(needle), "{v}: {}", msg.1);
        }
        assert_eq!(to_json(&[0x99]), Value::Null);
    }
}
