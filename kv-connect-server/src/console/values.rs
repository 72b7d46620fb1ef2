//! Values as the console shows and takes them.
//!
//! # Contract
//!
//! - [`tree`]: the value as a JSON tree with type tags (`{"type": "object", "entries": ...}`,
//!   `{"type": "u64", ...}`, `{"type": "undecodable", "hex", "reason"}` ...), for display.
//! - [`notation`] / [`from_notation`]: the value as editable JSON (plain JSON for plain data,
//!   tags such as `{"$u64": "5"}`, `{"$bytes": "<base64>"}`, `{"$bigint": "1"}` for the rest),
//!   and back; [`from_notation`] refuses what it cannot represent with a 400.
//! - [`summary`]: one short line for a list row.

use kv_traits::KvValue;
use serde_json::Value;

use crate::error::ApiError;

/// The value as a typed tree.
pub(super) fn tree(value: &KvValue) -> Value {
    kv_v8::value_tree(value)
}

/// The value as editable notation.
pub(super) fn notation(value: &KvValue) -> Value {
    match kv_v8::value_to_notation(value) {
        Ok(v) => v,
        Err(e) => serde_json::json!({ "$undecodable": e.to_string() }),
    }
}

/// The value of edited notation (400 if it does not describe one).
pub(super) fn from_notation(json: &Value) -> Result<KvValue, ApiError> {
    kv_v8::value_from_notation(json)
        .map_err(|e| ApiError::bad_request(format!("The value is not valid: {e}.")))
}

/// At most this many characters of a string are shown in a list row.
const SUMMARY_CHARS: usize = 80;

/// One short line describing `tree` (a node of [`tree`]).
pub(super) fn summary(tree: &Value) -> String {
    let kind = tree.get("type").and_then(Value::as_str).unwrap_or("?");
    let count = |field: &str| tree.get(field).and_then(Value::as_array).map(Vec::len);
    let text = match kind {
        "string" => tree.get("value").map(|v| v.to_string()).unwrap_or_default(),
        "object" | "map" => match count("entries") {
            Some(n) => format!("{kind} ({n} entries)"),
            None => kind.to_string(),
        },
        "array" | "set" => match count("items").or_else(|| count("entries")) {
            Some(n) => format!("{kind} ({n} items)"),
            None => kind.to_string(),
        },
        _ => match tree.get("value") {
            Some(Value::String(s)) => format!("{kind} {s}"),
            Some(Value::Null) | None => kind.to_string(),
            Some(v) => format!("{kind} {v}"),
        },
    };
    if text.chars().count() > SUMMARY_CHARS {
        let cut: String = text.chars().take(SUMMARY_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}
