//! The display tree: a stored value as JSON with type tags (the format is specified in the
//! crate documentation, which is the contract).

use serde_json::{json, Map, Value};

use crate::decode::decode;
use crate::value::{PropertyKey, V8Value};
use kv_traits::KvValue;

/// The display tree of a stored value: `u64` for a `KvU64`, `bytes` for a raw `Uint8Array`,
/// the decoded V8 value otherwise, and `undecodable` (hex and reason) for V8 bytes the
/// decoder rejects. Never fails; output size is linear in the value's size.
pub fn value_tree(value: &KvValue) -> Value {
    match value {
        KvValue::U64(n) => json!({"type": "u64", "value": n.to_string()}),
        KvValue::Bytes(b) => json!({"type": "bytes", "hex": hex::encode(b)}),
        KvValue::V8(bytes) => match decode(bytes) {
            Ok(v) => v8_tree(&v),
            Err(e) => json!({
                "type": "undecodable",
                "hex": hex::encode(bytes),
                "reason": e.to_string(),
            }),
        },
    }
}

/// The display tree of a decoded V8 value.
pub fn v8_tree(v: &V8Value) -> Value {
    // Every container arm is a call: this frame is on the recursion path and must stay small
    // (debug builds give every temporary of a `json!` its own stack slot).
    match v {
        V8Value::Object { id, properties } => object_tree(*id, properties),
        V8Value::Array {
            id,
            length,
            properties,
            sparse,
        } => array_tree(*id, *length, properties, *sparse),
        V8Value::Map { id, entries } => map_tree(*id, entries),
        V8Value::Set { id, values } => set_tree(*id, values),
        V8Value::View { .. } => view_tree(v),
        V8Value::Boxed { id, value } => wrapper_tree(*id, value),
        V8Value::Error { .. } => error_tree(v),
        _ => leaf_tree(v),
    }
}

fn leaf_tree(v: &V8Value) -> Value {
    match v {
        V8Value::Undefined => json!({"type": "undefined"}),
        V8Value::Null => json!({"type": "null"}),
        V8Value::Bool(b) => json!({"type": "boolean", "value": b}),
        V8Value::Number(n) => json!({"type": "number", "value": number_json(*n)}),
        V8Value::BigInt(i) => json!({"type": "bigint", "value": i.to_string()}),
        V8Value::String(s) => json!({"type": "string", "value": s}),
        V8Value::Date { id, ms } => json!({
            "type": "date",
            "id": id,
            "value": date_iso(*ms),
            "ms": number_json(*ms),
        }),
        V8Value::RegExp { id, source, flags } => json!({
            "type": "regexp",
            "id": id,
            "source": source,
            "flags": flags,
        }),
        V8Value::ArrayBuffer {
            id,
            data,
            max_byte_length,
        } => {
            let mut m = Map::new();
            m.insert("type".into(), json!("arraybuffer"));
            m.insert("id".into(), json!(id));
            m.insert("hex".into(), json!(hex::encode(data)));
            if let Some(max) = max_byte_length {
                m.insert("maxByteLength".into(), json!(max));
            }
            Value::Object(m)
        }
        V8Value::HostView { id, kind, data } => json!({
            "type": "view",
            "kind": kind.name(),
            "id": id,
            "byteOffset": 0,
            "byteLength": data.len(),
            "hex": hex::encode(data),
        }),
        V8Value::Ref(id) => json!({"type": "ref", "id": id}),
        // Containers are handled by `v8_tree`.
        _ => v8_tree(v),
    }
}

fn node(kind: &str, id: u32) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), Value::from(kind));
    m.insert("id".into(), Value::from(id));
    m
}

fn object_tree(id: u32, properties: &[(PropertyKey, V8Value)]) -> Value {
    let mut m = node("object", id);
    let mut entries = Vec::with_capacity(properties.len());
    for (k, v) in properties {
        entries.push(Value::Array(vec![
            Value::from(k.to_js_string()),
            v8_tree(v),
        ]));
    }
    m.insert("entries".into(), Value::Array(entries));
    Value::Object(m)
}

fn array_tree(id: u32, length: u32, properties: &[(PropertyKey, V8Value)], sparse: bool) -> Value {
    let mut m = node("array", id);
    m.insert("length".into(), Value::from(length));
    m.insert("sparse".into(), Value::from(sparse));
    let mut entries = Vec::with_capacity(properties.len());
    for (k, v) in properties {
        entries.push(Value::Array(vec![array_key_json(k), v8_tree(v)]));
    }
    m.insert("entries".into(), Value::Array(entries));
    Value::Object(m)
}

fn map_tree(id: u32, pairs: &[(V8Value, V8Value)]) -> Value {
    let mut m = node("map", id);
    let mut entries = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        entries.push(Value::Array(vec![v8_tree(k), v8_tree(v)]));
    }
    m.insert("entries".into(), Value::Array(entries));
    Value::Object(m)
}

fn set_tree(id: u32, values: &[V8Value]) -> Value {
    let mut m = node("set", id);
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(v8_tree(v));
    }
    m.insert("values".into(), Value::Array(out));
    Value::Object(m)
}

fn wrapper_tree(id: u32, value: &V8Value) -> Value {
    let mut m = node("wrapper", id);
    m.insert("value".into(), v8_tree(value));
    Value::Object(m)
}

fn view_tree(v: &V8Value) -> Value {
    let V8Value::View {
        id,
        kind,
        buffer,
        byte_offset,
        byte_length,
        flags,
    } = v
    else {
        return leaf_tree(v);
    };
    let mut m = node("view", *id);
    m.insert("kind".into(), json!(kind.name()));
    m.insert("byteOffset".into(), json!(byte_offset));
    m.insert("byteLength".into(), json!(byte_length));
    if *flags != 0 {
        m.insert("flags".into(), json!(flags));
    }
    // The viewed bytes only when the buffer is inline here: a buffer shared by many views is
    // shown once, so the tree stays linear in the input.
    if let V8Value::ArrayBuffer { data, .. } = buffer.as_ref() {
        let start = *byte_offset as usize;
        let end = start.saturating_add(*byte_length as usize);
        if let Some(slice) = data.get(start..end) {
            m.insert("hex".into(), json!(hex::encode(slice)));
        }
    }
    m.insert("buffer".into(), v8_tree(buffer));
    Value::Object(m)
}

fn error_tree(v: &V8Value) -> Value {
    let V8Value::Error {
        id,
        name,
        message,
        stack,
        cause,
    } = v
    else {
        return leaf_tree(v);
    };
    let mut m = node("error", *id);
    m.insert("name".into(), json!(name));
    if let Some(message) = message {
        m.insert("message".into(), json!(message));
    }
    if let Some(stack) = stack {
        m.insert("stack".into(), json!(stack));
    }
    if let Some(cause) = cause {
        m.insert("cause".into(), v8_tree(cause));
    }
    Value::Object(m)
}

/// An array key: a JSON number for an array index (whether V8 wrote it as a number or as a
/// string: JS does not tell them apart), a string for a named property.
fn array_key_json(k: &PropertyKey) -> Value {
    let name = k.to_js_string();
    match crate::serialize::array_index(&name) {
        Some(i) => json!(i),
        None => json!(name),
    }
}

/// A number as JSON: an integer when integral and exactly representable, a float otherwise;
/// `"NaN"`, `"Infinity"`, `"-Infinity"` and `"-0"` as strings (JSON has no such numbers).
pub(crate) fn number_json(n: f64) -> Value {
    if n.is_nan() {
        json!("NaN")
    } else if n.is_infinite() {
        json!(if n > 0.0 { "Infinity" } else { "-Infinity" })
    } else if n == 0.0 && n.is_sign_negative() {
        json!("-0")
    } else if n.fract() == 0.0 && n.abs() <= 9007199254740992.0 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// A Date's time value as `Date.prototype.toISOString` writes it (`null` for an invalid
/// date, i.e. NaN or outside ±8.64e15 ms).
pub(crate) fn date_iso(ms: f64) -> Value {
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return Value::Null;
    }
    // Time values are integral milliseconds; truncation matches JS's TimeClip. Within
    // ±8.64e15 every intermediate below fits i64.
    let ms = ms.trunc() as i64;
    let days = ms.div_euclid(86_400_000);
    let of_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else if y < 0 {
        format!("-{:06}", -y)
    } else {
        format!("+{y:06}")
    };
    json!(format!(
        "{year}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    ))
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_raw_values() {
        assert_eq!(
            value_tree(&KvValue::U64(5)),
            json!({"type":"u64","value":"5"})
        );
        assert_eq!(
            value_tree(&KvValue::Bytes(vec![1, 0xab])),
            json!({"type":"bytes","hex":"01ab"})
        );
        assert_eq!(
            value_tree(&KvValue::V8(vec![0xff, 0x0f, b'I', 4])),
            json!({"type":"number","value":2})
        );
        let bad = value_tree(&KvValue::V8(vec![0xff, 0x0f, b'!']));
        assert_eq!(bad["type"], "undecodable");
        assert_eq!(bad["hex"], "ff0f21");
        assert!(bad["reason"].as_str().unwrap().contains("0x21"));
    }

    #[test]
    fn dates() {
        assert_eq!(date_iso(0.0), json!("1970-01-01T00:00:00.000Z"));
        assert_eq!(date_iso(8.64e15), json!("+275760-09-13T00:00:00.000Z"));
        assert_eq!(
            date_iso(-62198755200000.0),
            json!("-000001-01-01T00:00:00.000Z")
        );
        assert_eq!(date_iso(f64::NAN), Value::Null);
    }

    #[test]
    fn numbers() {
        assert_eq!(number_json(-0.0), json!("-0"));
        assert_eq!(number_json(1.5), json!(1.5));
        assert_eq!(number_json(3.0), json!(3));
        assert_eq!(number_json(f64::NEG_INFINITY), json!("-Infinity"));
    }
}
