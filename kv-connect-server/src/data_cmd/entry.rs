//! The JSON forms of the data commands: keys and values as typed on the command line, entries
//! as printed by `get`, `list` and `watch`, and the lines of an export file.
//!
//! - A key is kv-v8's key notation: a JSON array of parts (`["users", 1, {"$bigint": "5"},
//!   {"$bytes": "AAE="}, true]`).
//! - A value is kv-v8's value notation; a stored value the notation cannot express (a cycle,
//!   a shared reference, a partial view) is printed as `{"$v8": "<base64>"}`, its exact bytes,
//!   which `set` and `import` accept back.
//! - An entry is `{"key": …, "value": …, "versionstamp": "<20 hex digits>"}` (with `--tree`,
//!   also `"tree"`: kv-v8's display tree).
//! - An export line is an entry plus the exact stored form, `"encoding"` (`"v8"`, `"bytes"`
//!   or `"u64"`) and `"data"` (base64 of the stored bytes; 8 little-endian bytes for `u64`),
//!   and `"expireAt"` (milliseconds since the epoch, or `null`). Import uses `encoding` and
//!   `data` when present (exact bytes) and the `value` notation otherwise, so hand-written
//!   lines need only `key` and `value`.

use base64::Engine as _;
use kv_traits::key::{decode_key, encode_key};
use kv_traits::{KvEntry, KvValue, Versionstamp};
use serde_json::{json, Map, Value};

use super::DataError;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The encoded key of a key written in the notation (`what` names the argument in errors).
pub(crate) fn parse_key(what: &str, text: &str) -> Result<Vec<u8>, DataError> {
    let json: Value = serde_json::from_str(text).map_err(|e| DataError::Key {
        what: what.to_owned(),
        reason: format!("not JSON ({e}); write a key as a JSON array, e.g. '[\"users\", 1]'"),
    })?;
    key_from_json(&json).map_err(|reason| DataError::Key {
        what: what.to_owned(),
        reason,
    })
}

/// The encoded key of a key notation.
pub(crate) fn key_from_json(json: &Value) -> Result<Vec<u8>, String> {
    let parts = kv_v8::key_from_notation(json).map_err(|e| e.to_string())?;
    encode_key(&parts).map_err(|e| e.to_string())
}

/// The notation of an encoded key (`{"$keyhex": …}` for bytes that are not a valid key).
pub(crate) fn key_json(key: &[u8]) -> Value {
    match decode_key(key) {
        Ok(parts) => kv_v8::key_to_notation(&parts),
        Err(_) => json!({"$keyhex": hex::encode(key)}),
    }
}

/// A value from its notation.
pub(crate) fn parse_value(text: &str) -> Result<KvValue, DataError> {
    let json: Value = serde_json::from_str(text).map_err(|e| DataError::Value {
        reason: format!("not JSON ({e}); a string value is written with quotes, e.g. '\"hi\"'"),
    })?;
    kv_v8::value_from_notation(&json).map_err(|e| DataError::Value {
        reason: e.to_string(),
    })
}

/// The notation of a stored value, or its exact bytes as `{"$v8": …}` when the notation
/// cannot express it (or it does not decode).
pub(crate) fn value_json(value: &KvValue) -> Value {
    match kv_v8::value_to_notation(value) {
        Ok(v) => v,
        Err(_) => json!({"$v8": b64().encode(value.data())}),
    }
}

/// An entry as `get`, `list` and `watch` print it.
pub(crate) fn entry_json(entry: &KvEntry, tree: bool) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), key_json(&entry.key));
    m.insert("value".into(), value_json(&entry.value));
    m.insert("versionstamp".into(), json!(entry.versionstamp.to_string()));
    if tree {
        m.insert("tree".into(), kv_v8::value_tree(&entry.value));
    }
    Value::Object(m)
}

/// One entry of an export file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExportLine {
    pub key: Vec<u8>,
    pub value: KvValue,
    pub versionstamp: Option<Versionstamp>,
    pub expire_at_ms: Option<u64>,
}

impl ExportLine {
    /// The line as JSON.
    pub(crate) fn to_json(&self) -> Value {
        let (encoding, data) = match &self.value {
            KvValue::V8(b) => ("v8", b64().encode(b)),
            KvValue::Bytes(b) => ("bytes", b64().encode(b)),
            KvValue::U64(n) => ("u64", b64().encode(n.to_le_bytes())),
        };
        let mut m = Map::new();
        m.insert("key".into(), key_json(&self.key));
        m.insert("value".into(), value_json(&self.value));
        m.insert("encoding".into(), json!(encoding));
        m.insert("data".into(), json!(data));
        if let Some(vs) = self.versionstamp {
            m.insert("versionstamp".into(), json!(vs.to_string()));
        }
        m.insert("expireAt".into(), json!(self.expire_at_ms));
        Value::Object(m)
    }

    /// Reads a line (see the module docs); the error says which member is wrong.
    pub(crate) fn parse(text: &str) -> Result<ExportLine, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let m = json
            .as_object()
            .ok_or("expected a JSON object with \"key\" and \"value\"")?;
        let key = key_from_json(m.get("key").ok_or("no \"key\"")?)
            .map_err(|e| format!("\"key\": {e}"))?;
        let value = match (m.get("encoding"), m.get("data")) {
            (Some(encoding), Some(data)) => {
                let data = data
                    .as_str()
                    .and_then(|d| b64().decode(d).ok())
                    .ok_or("\"data\" is not base64")?;
                let number = match encoding.as_str() {
                    Some("v8") => 1,
                    Some("u64") => 2,
                    Some("bytes") => 3,
                    _ => return Err("\"encoding\" must be \"v8\", \"bytes\" or \"u64\"".into()),
                };
                KvValue::from_encoded(number, data).map_err(|e| format!("\"data\": {e}"))?
            }
            (None, None) => kv_v8::value_from_notation(m.get("value").ok_or("no \"value\"")?)
                .map_err(|e| format!("\"value\": {e}"))?,
            _ => return Err("\"encoding\" and \"data\" go together".into()),
        };
        let versionstamp = match m.get("versionstamp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| s.parse::<Versionstamp>().ok())
                    .ok_or("\"versionstamp\" is not 20 hex digits")?,
            ),
        };
        let expire_at_ms = match m.get("expireAt") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or("\"expireAt\" is not a number of milliseconds since the epoch")?,
            ),
        };
        Ok(ExportLine {
            key,
            value,
            versionstamp,
            expire_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_round_trip() {
        let cycle = hex::decode("ff0f6f220473656c665e007b01").unwrap();
        for value in [
            KvValue::U64(7),
            KvValue::Bytes(vec![0, 1, 255]),
            KvValue::V8(cycle),
            kv_v8::value_from_notation(&json!({"a": [1, {"$bigint": "2"}]})).unwrap(),
        ] {
            let line = ExportLine {
                key: parse_key(
                    "key",
                    r#"["k", 1, {"$bigint": "-3"}, {"$bytes": "AAE="}, true]"#,
                )
                .unwrap(),
                value,
                versionstamp: Some(Versionstamp::from_version(42)),
                expire_at_ms: Some(1_900_000_000_000),
            };
            let text = line.to_json().to_string();
            assert_eq!(ExportLine::parse(&text).unwrap(), line, "{text}");
        }
    }

    #[test]
    fn hand_written_lines_need_only_key_and_value() {
        let line = ExportLine::parse(r#"{"key": ["a"], "value": {"$u64": "5"}}"#).unwrap();
        assert_eq!(line.value, KvValue::U64(5));
        assert_eq!((line.versionstamp, line.expire_at_ms), (None, None));
        for (bad, says) in [
            (r#"{"key": ["a"]"#, "not JSON"),
            (r#"{"key": "a", "value": 1}"#, "\"key\""),
            (r#"{"key": ["a"], "value": {"$nope": 1}}"#, "\"value\""),
            (
                r#"{"key": ["a"], "encoding": "u64", "data": "AQ=="}"#,
                "8 bytes",
            ),
            (
                r#"{"key": ["a"], "value": 1, "versionstamp": "xyz"}"#,
                "versionstamp",
            ),
        ] {
            let err = ExportLine::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
