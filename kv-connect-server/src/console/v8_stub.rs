//! TEMPORARY stand-in for the `kv-v8` crate until it is merged: raw values only.
use kv_traits::KvValue;
use serde_json::{json, Value};

pub(super) fn value_tree(v: &KvValue) -> Value {
    match v {
        KvValue::U64(n) => json!({"type": "u64", "value": n.to_string()}),
        KvValue::Bytes(b) => json!({"type": "bytes", "hex": hex::encode(b)}),
        KvValue::V8(b) => {
            json!({"type": "undecodable", "hex": hex::encode(b), "reason": "no V8 decoder yet"})
        }
    }
}

pub(super) fn value_to_notation(v: &KvValue) -> Result<Value, String> {
    match v {
        KvValue::U64(n) => Ok(json!({"$u64": n.to_string()})),
        _ => Err("no V8 decoder yet".into()),
    }
}

pub(super) fn value_from_notation(j: &Value) -> Result<KvValue, String> {
    match j
        .get("$u64")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
    {
        Some(n) => Ok(KvValue::U64(n)),
        None => Err("only {\"$u64\"} until kv-v8".into()),
    }
}
