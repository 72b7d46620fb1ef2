//! Any bytes: kv-v8's full V8 decoder never panics and stays within libFuzzer's memory limit
//! (the smoke run's `-rss_limit_mb`); whatever decodes gets a display tree, serializes back
//! to bytes that decode to the same tree (Node's host-object views excepted: they change form
//! and ids), and, where the JSON notation can express it, notation → bytes → notation is a
//! fixed point after the first conversion.
#![no_main]

use kv_v8::{decode, js_from_notation, js_to_notation, serialize, v8_tree, V8Value};
use libfuzzer_sys::fuzz_target;

/// Whether `v` contains a Node host-object view (written back in V8's own form).
fn has_host_view(v: &V8Value) -> bool {
    match v {
        V8Value::HostView { .. } => true,
        V8Value::Object { properties, .. } | V8Value::Array { properties, .. } => {
            properties.iter().any(|(_, v)| has_host_view(v))
        }
        V8Value::Map { entries, .. } => entries
            .iter()
            .any(|(k, v)| has_host_view(k) || has_host_view(v)),
        V8Value::Set { values, .. } => values.iter().any(has_host_view),
        V8Value::View { buffer, .. } => has_host_view(buffer),
        V8Value::Boxed { value, .. } => has_host_view(value),
        V8Value::Error { cause, .. } => cause.as_deref().is_some_and(has_host_view),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = decode(data) else { return };
    let tree = v8_tree(&value);
    let bytes = serialize(&value).expect("a decoded value serializes");
    let again = decode(&bytes).expect("serialized bytes decode");
    if !has_host_view(&value) {
        assert_eq!(v8_tree(&again), tree, "serialize changed the value");
    }
    if let Ok(first) = js_to_notation(&value) {
        let built = js_from_notation(&first).expect("notation written by kv-v8 reads back");
        let stored = serialize(&built).expect("notation value serializes");
        let second = js_to_notation(&decode(&stored).expect("decodes"))
            .expect("notation value has a notation");
        assert_eq!(first, second, "notation is not a fixed point");
    }
});
