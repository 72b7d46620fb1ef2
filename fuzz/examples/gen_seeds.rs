//! Writes the checked-in seed corpora to `fuzz/seeds/<target>/`:
//! `cargo run --example gen_seeds` (from `fuzz/`). Deterministic: rerunning rewrites the same
//! files.

use std::path::Path;

use kv_fuzz::http_input::{join, Headers, Route};
use kv_proto as wire;
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::v8::{self, V8Value};
use kv_traits::{
    AtomicWrite, Check, Enqueue, KvValue, Mutation, MutationKind, ReadRange, Versionstamp,
};
use prost::Message;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn k(parts: &[KeyPart]) -> Vec<u8> {
    encode_key(parts).expect("encodes")
}

fn main() {
    // key_codec: first byte = where to split the rest into two keys.
    let a = k(&[KeyPart::String("users".into()), KeyPart::Int(42.into())]);
    let b = k(&[
        KeyPart::Bytes(vec![0, 1, 0xff]),
        KeyPart::Float(-1.5),
        KeyPart::Bool(true),
    ]);
    let c = k(&[KeyPart::Int((-300).into()), KeyPart::Float(f64::NAN)]);
    for (i, (x, y)) in [(&a, &b), (&b, &c), (&a, &a)].into_iter().enumerate() {
        let mut s = vec![x.len() as u8];
        s.extend_from_slice(x);
        s.extend_from_slice(y);
        write("key_codec", &format!("pair{i}"), &s);
    }

    // v8_parse: the scalars Deno writes (format 15 and 16).
    let values = [
        ("number", V8Value::Number(1.5)),
        (
            "bigint",
            V8Value::BigInt((-12_345_678_901_234_567i64).into()),
        ),
        ("string", V8Value::String("héllo".into())),
        ("null", V8Value::Null),
        ("bool", V8Value::Bool(true)),
    ];
    for (name, v) in &values {
        write("v8_parse", name, &v8::serialize(v));
    }
    write("v8_parse", "smi_v16", &[0xff, 0x10, 0x49, 0x54]);
    write("v8_parse", "double_v15", &v8::serialize_number(-0.0));

    // v8_decode: every V8 value of kv-v8's test vectors (written by real Deno and Node).
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kv-v8/tests/vectors/vectors.json");
    let vectors = std::fs::read_to_string(&vectors).expect("kv-v8 vectors");
    let vectors: serde_json::Value = serde_json::from_str(&vectors).expect("vectors JSON");
    for v in vectors["vectors"].as_array().expect("vectors") {
        if v["encoding"] != 1 {
            continue;
        }
        let field = |name: &str| v[name].as_str().expect("string field").to_string();
        let name = format!(
            "{}_{}",
            field("runtime"),
            field("name").replace([' ', '/'], "_")
        );
        write("v8_decode", &name, &hex::decode(field("hex")).expect("hex"));
    }

    // Request bodies as Deno and @deno/kv send them.
    let key_a = k(&[KeyPart::String("a".into())]);
    let key_n = k(&[KeyPart::String("n".into())]);
    let key_v = k(&[KeyPart::String("v".into())]);
    let read = wire::read_ranges_to_wire(&[
        ReadRange::single(&key_a),
        ReadRange::prefix(&k(&[]), 10),
        ReadRange {
            start: vec![0x02],
            end: vec![0x03],
            limit: 5,
            reverse: true,
        },
    ])
    .encode_to_vec();
    let write_body = wire::atomic_write_to_wire(&AtomicWrite {
        checks: vec![
            Check {
                key: key_a.clone(),
                versionstamp: None,
            },
            Check {
                key: key_n.clone(),
                versionstamp: Some(Versionstamp::from_version(1)),
            },
        ],
        mutations: vec![
            Mutation::set(key_a.clone(), KvValue::V8(v8::serialize_number(2.0))),
            Mutation {
                key: key_n.clone(),
                kind: MutationKind::Sum {
                    value: KvValue::U64(3),
                    min: None,
                    max: None,
                    clamp: false,
                },
                expire_at_ms: None,
            },
            Mutation {
                key: key_v.clone(),
                kind: MutationKind::Sum {
                    value: KvValue::V8(v8::serialize_number(2.5)),
                    min: Some(v8::serialize_number(0.0)),
                    max: Some(v8::serialize_number(10.0)),
                    clamp: true,
                },
                expire_at_ms: None,
            },
            Mutation {
                key: key_n.clone(),
                kind: MutationKind::Max(KvValue::U64(9)),
                expire_at_ms: Some(4_000_000_000_000),
            },
            Mutation {
                key: key_a.clone(),
                kind: MutationKind::SetSuffixVersionstampedKey(KvValue::Bytes(vec![1, 2])),
                expire_at_ms: None,
            },
            Mutation::delete(k(&[KeyPart::String("gone".into())])),
        ],
        enqueues: vec![Enqueue {
            payload: v8::serialize(&V8Value::String("job".into())),
            deadline_ms: 0,
            keys_if_undelivered: vec![key_v.clone()],
            backoff_schedule: Some(vec![100, 200]),
        }],
    })
    .encode_to_vec();
    // A sum on a non-U64 value: refused, must change nothing.
    let bad_sum = wire::atomic_write_to_wire(&AtomicWrite {
        mutations: vec![
            Mutation::set(k(&[KeyPart::String("x".into())]), KvValue::U64(1)),
            Mutation {
                key: key_a.clone(),
                kind: MutationKind::Sum {
                    value: KvValue::U64(1),
                    min: None,
                    max: None,
                    clamp: false,
                },
                expire_at_ms: None,
            },
        ],
        ..Default::default()
    })
    .encode_to_vec();
    let watch = wire::watch_keys_to_wire(&[key_a.clone(), key_n.clone(), b"\x02zz\x00".to_vec()])
        .encode_to_vec();
    let bodies: [(&str, Route, &[u8]); 4] = [
        ("snapshot_read", Route::SnapshotRead, &read),
        ("atomic_write", Route::AtomicWrite, &write_body),
        ("atomic_write_bad_sum", Route::AtomicWrite, &bad_sum),
        ("watch", Route::Watch, &watch),
    ];
    for (name, route, body) in bodies {
        write("wire_requests", name, body);
        write("http_handlers", name, &join(route, Headers::V3, body));
    }
    write(
        "http_handlers",
        "snapshot_read_v1",
        &join(Route::SnapshotRead, Headers::V1, &read),
    );
    write(
        "http_handlers",
        "metadata",
        &join(
            Route::Metadata,
            Headers::V3,
            br#"{"supportedVersions":[1,2,3]}"#,
        ),
    );
    write(
        "http_handlers",
        "metadata_v1",
        &join(
            Route::Metadata,
            Headers::V3,
            br#"{"supportedVersions":[1]}"#,
        ),
    );

    // Structured targets (arbitrary-derived inputs): varied pseudo-random bytes.
    for (i, len) in [48usize, 200, 800, 3000].into_iter().enumerate() {
        write("db_ops", &format!("random{i}"), &noise(i as u64 + 1, len));
        write(
            "engine_ops",
            &format!("random{i}"),
            &noise(i as u64 + 11, len),
        );
    }
}
