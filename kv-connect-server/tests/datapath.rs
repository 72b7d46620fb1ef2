//! Data path: snapshot reads, atomic writes, checks, enqueues, protocol headers, content types.

mod common;

use common::*;
use http::StatusCode;
use kv_proto::pb;
use prost::Message;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

#[tokio::test]
async fn deno_get_bytes_round_trip() {
    let server = TestServer::start().await;
    for proto in BOTH {
        let kv = Kv::connect(proto, &server).await;
        // kv.get(["a"]) exactly as Deno 2.9.6 sends it, against an empty database.
        let r = kv
            .raw(
                "snapshot_read",
                hex("0a 0d 0a 03 02 61 00 12 04 02 61 00 00 18 01"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.content_type(), "application/x-protobuf");
        assert_eq!(r.body.as_ref(), hex("0a 00 20 01 40 01").as_slice());
    }
}

#[tokio::test]
async fn write_then_read_with_deno_and_npm_bytes() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    // Check ["a"] absent + set ["a"] = V8(1).
    let r = kv
        .raw(
            "atomic_write",
            hex("0a 05 0a 03 02 61 00 12 11 0a 03 02 61 00 12 08 0a 04 ff 0f 49 02 10 01 18 01"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let out = pb::AtomicWriteOutput::decode(r.body).unwrap();
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    assert_eq!(out.versionstamp.len(), 10);
    // npm's get (explicit reverse=false, end ff).
    let r = kv
        .raw(
            "snapshot_read",
            hex("0a 0c 0a 03 02 61 00 12 01 ff 18 01 20 00"),
        )
        .await;
    let read = pb::SnapshotReadOutput::decode(r.body).unwrap();
    assert_eq!(read.status, pb::SnapshotReadStatus::SrSuccess as i32);
    assert!(read.read_is_strongly_consistent);
    assert!(!read.read_disabled);
    let e = &read.ranges[0].values[0];
    assert_eq!(
        (e.key.as_slice(), e.value.as_slice(), e.encoding),
        (&b"\x02a\x00"[..], &[0xff, 0x0f, 0x49, 0x02][..], 1)
    );
    assert_eq!(e.versionstamp, out.versionstamp);
    // The same check now fails: nothing applied, no versionstamp.
    let r = kv
        .raw(
            "atomic_write",
            hex("0a 05 0a 03 02 61 00 12 11 0a 03 02 61 00 12 08 0a 04 ff 0f 49 02 10 01 18 01"),
        )
        .await;
    let failed = pb::AtomicWriteOutput::decode(r.body).unwrap();
    assert_eq!(failed.status, pb::AtomicWriteStatus::AwCheckFailure as i32);
    assert!(failed.versionstamp.is_empty());
    // Check against the current versionstamp passes.
    let w = pb::AtomicWrite {
        checks: vec![pb::Check {
            key: key("a"),
            versionstamp: out.versionstamp.clone(),
        }],
        mutations: vec![set(&key("a"), b"two")],
        ..Default::default()
    };
    let ok = kv.write(&w).await;
    assert_eq!(ok.status, pb::AtomicWriteStatus::AwSuccess as i32);
    assert!(ok.versionstamp > out.versionstamp);
}

#[tokio::test]
async fn ranges_limits_order_and_reverse() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let muts = (0..5).map(|i| set(&key(&format!("k{i}")), &[i])).collect();
    assert_eq!(kv.write(&write_of(muts)).await.status, 1);
    let range = |limit, reverse| pb::ReadRange {
        start: key("k"),
        end: key("l"),
        limit,
        reverse,
    };
    let out = kv
        .read(&pb::SnapshotRead {
            ranges: vec![
                range(3, false),
                range(2, true),
                range(10, false),
                pb::ReadRange {
                    start: key("z"),
                    end: key("zz"),
                    limit: 5,
                    reverse: false,
                },
            ],
        })
        .await;
    let keys = |i: usize| {
        out.ranges[i]
            .values
            .iter()
            .map(|e| e.value[0])
            .collect::<Vec<u8>>()
    };
    assert_eq!(out.ranges.len(), 4);
    assert_eq!(keys(0), [0, 1, 2]);
    assert_eq!(keys(1), [4, 3]);
    assert_eq!(keys(2), [0, 1, 2, 3, 4]);
    assert!(keys(3).is_empty());
    // Exclusive end: [k1, k3) has k1 and k2.
    let out = kv
        .read(&pb::SnapshotRead {
            ranges: vec![pb::ReadRange {
                start: key("k1"),
                end: key("k3"),
                limit: 10,
                reverse: false,
            }],
        })
        .await;
    assert_eq!(out.ranges[0].values.len(), 2);
}

#[tokio::test]
async fn all_mutation_kinds_over_the_wire() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let u64v = |n: u64| {
        Some(pb::KvValue {
            data: n.to_le_bytes().to_vec(),
            encoding: 2,
        })
    };
    let m = |k: &str, ty: pb::MutationType, value| pb::Mutation {
        key: key(k),
        value,
        mutation_type: ty as i32,
        ..Default::default()
    };
    use pb::MutationType as T;
    let w = write_of(vec![
        m("sum", T::MSum, u64v(5)),
        m("sum", T::MSum, u64v(7)),
        m("min", T::MMin, u64v(9)),
        m("min", T::MMin, u64v(3)),
        m("max", T::MMax, u64v(3)),
        m("max", T::MMax, u64v(9)),
        m("gone", T::MSet, bytes_value(b"x")),
        // Deno's delete carries an empty VE_BYTES value.
        m("gone", T::MDelete, bytes_value(b"")),
        m(
            "vs",
            T::MSetSuffixVersionstampedKey,
            bytes_value(b"suffixed"),
        ),
    ]);
    let out = kv.write(&w).await;
    assert_eq!(out.status, 1);
    let num = |e: Option<pb::KvEntry>| u64::from_le_bytes(e.unwrap().value.try_into().unwrap());
    assert_eq!(num(kv.get(&key("sum")).await), 12);
    assert_eq!(num(kv.get(&key("min")).await), 3);
    assert_eq!(num(kv.get(&key("max")).await), 9);
    assert!(kv.get(&key("gone")).await.is_none());
    let mut vs_key = key("vs");
    vs_key.push(2);
    vs_key.extend(hex::encode(&out.versionstamp).as_bytes());
    vs_key.push(0);
    assert_eq!(kv.get(&vs_key).await.unwrap().value, b"suffixed");
    // npm's delete has no value.
    kv.write(&write_of(vec![m("sum", T::MDelete, None)])).await;
    assert!(kv.get(&key("sum")).await.is_none());
}

#[tokio::test]
async fn expiring_set_and_enqueue_are_accepted() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let far = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut m = set(&key("e"), b"v");
    m.expire_at_ms = far;
    assert_eq!(kv.write(&write_of(vec![m])).await.status, 1);
    assert!(kv.get(&key("e")).await.is_some());
    let mut m = set(&key("past"), b"v");
    m.expire_at_ms = 1;
    assert_eq!(kv.write(&write_of(vec![m])).await.status, 1);
    assert!(
        kv.get(&key("past")).await.is_none(),
        "an entry that expired in 1970 must not be read"
    );
    // npm sends enqueues with an unpacked backoff schedule.
    let enqueue = hex("0a 04 ff 0f 49 02 10 80 d0 95 ff bc 31 20 64 20 c8 01 20 90 03 20 a0 06");
    let mut body = vec![0x1a, enqueue.len() as u8];
    body.extend(enqueue);
    let r = kv.raw("atomic_write", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(pb::AtomicWriteOutput::decode(r.body).unwrap().status, 1);
}

#[tokio::test]
async fn content_type_is_not_required_and_v1_v2_headers_work() {
    let server = TestServer::start().await;
    let m = metadata(Proto::Http1, &server).await;
    let auth = format!("Bearer {}", m.token);
    let body = pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("a"),
            end: key("b"),
            limit: 1,
            reverse: false,
        }],
    }
    .encode_to_vec();
    let url = server.url("/v2/snapshot_read");
    for headers in [
        vec![
            ("authorization", auth.as_str()),
            ("x-denokv-version", "3"),
            ("x-denokv-database-id", m.database_id.as_str()),
        ],
        vec![
            ("authorization", auth.as_str()),
            ("x-denokv-version", "2"),
            ("x-denokv-database-id", m.database_id.as_str()),
        ],
        vec![
            ("authorization", auth.as_str()),
            ("x-transaction-domain-id", m.database_id.as_str()),
        ],
    ] {
        for proto in BOTH {
            let r = post(proto, &url, &headers, body.clone()).await;
            assert_eq!(r.status, StatusCode::OK, "{headers:?}: {}", r.text());
            assert_eq!(r.content_type(), "application/x-protobuf");
        }
    }
}

#[tokio::test]
async fn v1_endpoint_is_absolute_and_usable() {
    let server = TestServer::start().await;
    let auth = format!("Bearer {TOKEN}");
    let r = post(
        Proto::H2c,
        &server.url("/"),
        &[("authorization", &auth)],
        r#"{"supportedVersions":[1]}"#,
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let url = json["endpoints"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(url, server.url("/v2"));
    let token = format!("Bearer {}", json["token"].as_str().unwrap());
    let id = json["databaseId"].as_str().unwrap();
    let r = post(
        Proto::H2c,
        &format!("{url}/atomic_write"),
        &[("authorization", &token), ("x-transaction-domain-id", id)],
        write_of(vec![set(&key("v1"), b"x")]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn read_only_database_answers_write_disabled() {
    let db = kv_db::Db::open(
        kv_engine_memory::MemoryBackend::new(),
        kv_db::DbConfig {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let server = TestServer::start_db(std::sync::Arc::new(db), |_| {}).await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let out = kv.write(&write_of(vec![set(&key("a"), b"x")])).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwWriteDisabled as i32);
    assert!(kv.get(&key("a")).await.is_none());
}

#[tokio::test]
async fn healthz_and_unknown_paths() {
    let server = TestServer::start().await;
    for proto in BOTH {
        let r = send(
            proto,
            http::Request::get(server.url("/healthz"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        for path in [
            "/nope",
            "/v2",
            "/v2/",
            "/v3/snapshot_read",
            "//snapshot_read",
            "/v2/snapshot_read/x",
        ] {
            let r = post(proto, &server.url(path), &[], "").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(r.text(), "Resource not found.");
        }
        let r = send(
            proto,
            http::Request::get(server.url("/v2/snapshot_read"))
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
