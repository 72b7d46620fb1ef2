//! Test vectors written by the real runtimes (Deno 2.9.6 through Deno KV, Node's
//! `v8.serialize`), checked in as `tests/vectors/vectors.json` with the display tree an
//! independent JavaScript implementation of the contract (`tests/vectors/cases.mjs`,
//! `describe`) computes from the live value.
//!
//! - `checked_in_vectors_decode_to_the_described_trees`: every vector decodes to its tree.
//! - `decoded_vectors_serialize_back_to_equal_values`: kv-v8's serializer writes every
//!   decoded vector back to bytes that decode to the same value.
//! - `real_runtimes_regenerate_the_checked_in_vectors`: the runtimes still write exactly
//!   the checked-in bytes and trees (`generate.mjs` into a temporary file).
//! - `real_runtimes_read_back_what_kv_v8_writes`: bytes kv-v8 writes (every vector
//!   re-serialized, and notation samples) are read by Node's `v8.deserialize` and by Deno KV's
//!   `get` into values whose description equals kv-v8's own tree of those bytes.
//!
//! The last two install the runtimes with `scripts/install-test-clients.sh` (a no-op once
//! installed).

use std::path::{Path, PathBuf};
use std::process::Command;

use kv_test_support::clients::test_clients;
use kv_traits::KvValue;
use kv_v8::{decode, serialize, v8_tree, value_from_notation, value_tree, V8Value};
use serde_json::{json, Value};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("vectors")
}

struct Vector {
    runtime: String,
    name: String,
    value: KvValue,
    tree: Value,
}

fn load(path: &Path) -> (Value, Vec<Vector>) {
    let text = std::fs::read_to_string(path).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let vectors = file["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            runtime: v["runtime"].as_str().unwrap().to_owned(),
            name: v["name"].as_str().unwrap().to_owned(),
            value: KvValue::from_encoded(
                v["encoding"].as_i64().unwrap() as i32,
                hex::decode(v["hex"].as_str().unwrap()).unwrap(),
            )
            .unwrap(),
            tree: v["tree"].clone(),
        })
        .collect();
    (file, vectors)
}

/// Drops what the JavaScript side cannot know (arrays' `sparse` flag) and compares numbers
/// as f64 (JSON.stringify writes 2^60 as an integer, kv-v8 as a float).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !(k.as_str() == "sparse" && m.get("type") == Some(&json!("array")))
                })
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Number(n) => json!(n.as_f64().unwrap()),
        other => other.clone(),
    }
}

#[test]
fn checked_in_vectors_decode_to_the_described_trees() {
    let (_, vectors) = load(&vectors_dir().join("vectors.json"));
    assert!(vectors.len() > 150, "only {} vectors", vectors.len());
    let mut failures = Vec::new();
    for v in &vectors {
        let got = value_tree(&v.value);
        if normalize(&got) != normalize(&v.tree) {
            failures.push(format!(
                "{} {}:\n  expected {}\n  got      {}",
                v.runtime, v.name, v.tree, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn decoded_vectors_serialize_back_to_equal_values() {
    let (_, vectors) = load(&vectors_dir().join("vectors.json"));
    for v in &vectors {
        let KvValue::V8(bytes) = &v.value else {
            continue;
        };
        let decoded = decode(bytes).unwrap();
        let written = serialize(&decoded).unwrap();
        let again = decode(&written).unwrap();
        if v.runtime == "deno" {
            // Deno writes V8's native forms, which kv-v8 writes back identically but for ids
            // (compared as trees: NaN is not equal to itself as a number).
            assert_eq!(
                v8_tree(&again),
                v8_tree(&decoded),
                "{} {}",
                v.runtime,
                v.name
            );
        } else {
            // Node's host-object views come back in V8's native form: compare the notation
            // where there is one.
            let a = kv_v8::js_to_notation(&decoded);
            let b = kv_v8::js_to_notation(&again);
            assert_eq!(a, b, "{} {}", v.runtime, v.name);
        }
    }
}

fn node_and_deno() -> (PathBuf, PathBuf, PathBuf) {
    let c = test_clients().unwrap_or_else(|e| panic!("{e}"));
    (c.node.clone(), c.deno.clone(), c.deno_dir.clone())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn real_runtimes_regenerate_the_checked_in_vectors() {
    let (node, deno, deno_dir) = node_and_deno();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vectors.json");
    run(Command::new(&node)
        .arg(vectors_dir().join("generate.mjs"))
        .arg("--deno")
        .arg(&deno)
        .arg("--out")
        .arg(&out)
        .env("DENO_DIR", &deno_dir));
    let (fresh, _) = load(&out);
    let (checked_in, _) = load(&vectors_dir().join("vectors.json"));
    let (fresh, checked_in) = (&fresh["vectors"], &checked_in["vectors"]);
    let (fresh, checked_in) = (fresh.as_array().unwrap(), checked_in.as_array().unwrap());
    assert_eq!(fresh.len(), checked_in.len());
    for (f, c) in fresh.iter().zip(checked_in) {
        assert_eq!(
            f, c,
            "regenerated vector differs; run kv-v8/tests/vectors/generate.sh"
        );
    }
}

/// Notation samples written by kv-v8 for the read-back test: name, bytes, and the tree of
/// the value the notation means (built without the serializer).
fn notation_samples() -> Vec<(String, Vec<u8>, Value)> {
    [
        json!({"user": "ada", "age": 36, "tags": {"$set": ["a", "b"]}}),
        json!({"$map": [[{"$bigint": "1"}, {"$date": "2024-02-29T12:00:00.000Z"}]]}),
        json!([{"$bytes": "AQID"}, {"$undefined": true}, {"$number": "NaN"}]),
        json!({"$array": {"length": 10, "entries": [[2, "x"], ["named", true]]}}),
        json!({"$view": {"kind": "Float64Array", "base64": "AAAAAAAA+D8="}}),
        json!({"$regexp": {"source": "^a.b$", "flags": "gimsuy"}}),
        json!({"$error": {"name": "RangeError", "message": "m", "stack": "RangeError: m", "cause": [1]}}),
        json!("two-byte ✓ string at an odd offset"),
        json!({"k": "日本", "inner": {"$object": {"$x": 1}}}),
        json!({"$wrapper": {"$bigint": "-9"}}),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, n)| {
        let meant = v8_tree(&kv_v8::js_from_notation(&n).unwrap());
        match value_from_notation(&n) {
            Ok(KvValue::V8(bytes)) => (format!("notation {i}: {n}"), bytes, meant),
            other => panic!("{n}: {other:?}"),
        }
    })
    .collect()
}

#[test]
fn real_runtimes_read_back_what_kv_v8_writes() {
    let (node, deno, deno_dir) = node_and_deno();
    let (_, vectors) = load(&vectors_dir().join("vectors.json"));
    // Expected: what the runtime itself described when it wrote the vector (for Deno's
    // native forms, which kv-v8 writes the same way), else kv-v8's reading of its own bytes
    // (Node's host-object views change form).
    let mut items: Vec<(String, Vec<u8>, Value)> = vectors
        .iter()
        .filter_map(|v| match &v.value {
            KvValue::V8(bytes) => {
                let written = serialize(&decode(bytes).unwrap()).unwrap();
                let expected = if v.runtime == "deno" {
                    v.tree.clone()
                } else {
                    v8_tree(&decode(&written).unwrap())
                };
                Some((format!("{} {}", v.runtime, v.name), written, expected))
            }
            _ => None,
        })
        .collect();
    items.extend(notation_samples());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let list: Vec<Value> = items
        .iter()
        .map(|(name, bytes, _)| json!({"name": name, "hex": hex::encode(bytes)}))
        .collect();
    std::fs::write(&input, serde_json::to_string(&list).unwrap()).unwrap();

    let from_node = run(Command::new(&node)
        .arg(vectors_dir().join("node-readback.mjs"))
        .arg(&input));
    let from_deno = run(Command::new(&deno)
        .args(["run", "-A", "--unstable-kv"])
        .arg(vectors_dir().join("deno-store.mjs"))
        .arg("readback")
        .arg(&input)
        .env("DENO_DIR", &deno_dir));
    let mut failures = Vec::new();
    for (runtime, out) in [("node", from_node), ("deno", from_deno)] {
        let results: Vec<Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(results.len(), items.len(), "{runtime}");
        for (r, (name, _, want)) in results.iter().zip(&items) {
            match r.get("tree") {
                Some(tree) if normalize(tree) == normalize(want) => {}
                Some(tree) => failures.push(format!(
                    "{runtime} read {name} as\n  {tree}\n  expected {want}"
                )),
                None => failures.push(format!("{runtime} could not read {name}: {}", r["error"])),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn decoding_is_total_on_truncations_of_every_vector() {
    // Every prefix of every vector is either a value or an error, never a panic.
    let (_, vectors) = load(&vectors_dir().join("vectors.json"));
    for v in &vectors {
        let KvValue::V8(bytes) = &v.value else {
            continue;
        };
        for end in 0..bytes.len() {
            let _ = decode(&bytes[..end]);
        }
        assert!(matches!(decode(bytes), Ok(V8Value::Undefined) | Ok(_)));
    }
}
