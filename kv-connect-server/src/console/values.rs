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

/// At most this many characters of a preview are shown in a list row.
const SUMMARY_CHARS: usize = 80;

/// One short line previewing `tree` (a node of [`tree`]), e.g. `{name: "Alice", tags: […]}`,
/// cut at [`SUMMARY_CHARS`] characters.
pub(super) fn summary(tree: &Value) -> String {
    let text = preview(tree, 0);
    if text.chars().count() > SUMMARY_CHARS {
        let cut: String = text.chars().take(SUMMARY_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Nesting shown in a preview before `{…}`/`[…]`.
const PREVIEW_DEPTH: usize = 2;

fn preview(tree: &Value, depth: usize) -> String {
    let kind = tree.get("type").and_then(Value::as_str).unwrap_or("?");
    let value = tree.get("value");
    let entries = tree
        .get("entries")
        .or_else(|| tree.get("values"))
        .and_then(Value::as_array);
    let scalar = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    match kind {
        "string" => value.map(Value::to_string).unwrap_or_default(),
        "bigint" => format!("{}n", scalar(value)),
        "u64" => format!("KvU64({})", scalar(value)),
        "number" | "boolean" => scalar(value),
        "date" => format!("Date({})", scalar(value)),
        "ref" => format!("#{}", scalar(tree.get("id"))),
        "object" | "array" => {
            let (open, close) = if kind == "object" {
                ("{", "}")
            } else {
                ("[", "]")
            };
            let Some(entries) = entries else {
                return format!("{open}{close}");
            };
            if depth >= PREVIEW_DEPTH && !entries.is_empty() {
                return format!("{open}…{close}");
            }
            let items: Vec<String> = entries
                .iter()
                .map(|pair| {
                    let v = preview(pair.get(1).unwrap_or(&Value::Null), depth + 1);
                    if kind == "object" {
                        format!("{}: {v}", scalar(pair.get(0)))
                    } else {
                        v
                    }
                })
                .collect();
            format!("{open}{}{close}", items.join(", "))
        }
        "map" | "set" => format!(
            "{}({})",
            if kind == "map" { "Map" } else { "Set" },
            entries.map_or(0, Vec::len)
        ),
        _ => match tree.get("hex").and_then(Value::as_str) {
            Some(hex) => match tree.get("reason").and_then(Value::as_str) {
                Some(reason) => format!("{kind}: {reason} (0x{hex})"),
                None => format!("{kind} 0x{hex}"),
            },
            None => kind.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn previews_are_short_and_typed() {
        let tree = json!({"type": "object", "id": 0, "entries": [
            ["name", {"type": "string", "value": "Alice"}],
            ["visits", {"type": "bigint", "value": "42"}],
            ["tags", {"type": "array", "id": 1, "entries": [[0, {"type": "string", "value": "a"}]]}],
            ["deep", {"type": "object", "id": 2, "entries": [["x", {"type": "object", "id": 3, "entries": [["y", {"type": "null"}]]}]]}],
        ]});
        assert_eq!(
            summary(&tree),
            r#"{name: "Alice", visits: 42n, tags: ["a"], deep: {x: {…}}}"#
        );
        assert_eq!(summary(&json!({"type": "u64", "value": "7"})), "KvU64(7)");
        assert_eq!(
            summary(&json!({"type": "bytes", "hex": "0102"})),
            "bytes 0x0102"
        );
        let long = json!({"type": "string", "value": "x".repeat(200)});
        assert_eq!(summary(&long).chars().count(), SUMMARY_CHARS + 1);
    }
}
