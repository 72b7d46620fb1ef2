//! Every bad input gets a 4xx with a message naming the problem, and nothing is applied.

mod common;

use common::*;
use http::StatusCode;
use kv_proto::pb;
use prost::Message;

async fn expect_400(kv: &Kv, method: &str, body: Vec<u8>, needle: &str) {
    let r = kv.raw(method, body).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{needle}: got {} {}",
        r.status,
        r.text()
    );
    assert!(
        r.text().contains(needle),
        "expected {needle:?} in {:?}",
        r.text()
    );
    assert!(r.content_type().starts_with("text/plain"));
}

fn m(k: &[u8], ty: pb::MutationType, value: Option<pb::KvValue>) -> pb::Mutation {
    pb::Mutation {
        key: k.to_vec(),
        value,
        mutation_type: ty as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn malformed_protobuf_is_400() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    for method in ["snapshot_read", "atomic_write", "watch"] {
        expect_400(
            &kv,
            method,
            vec![0x0a, 0x10, 0x01],
            "Request protobuf is invalid",
        )
        .await;
        expect_400(
            &kv,
            method,
            vec![0xff, 0xff, 0xff],
            "Request protobuf is invalid",
        )
        .await;
    }
}

#[tokio::test]
async fn bad_reads_are_400() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let r = |start: Vec<u8>, limit| pb::ReadRange {
        start,
        end: vec![0xff],
        limit,
        reverse: false,
    };
    let body = |ranges| pb::SnapshotRead { ranges }.encode_to_vec();
    expect_400(
        &kv,
        "snapshot_read",
        body(vec![r(key("a"), 0)]),
        "read range limit",
    )
    .await;
    expect_400(
        &kv,
        "snapshot_read",
        body(vec![r(key("a"), -3)]),
        "read range limit",
    )
    .await;
    expect_400(
        &kv,
        "snapshot_read",
        body(vec![r(key("a"), 1); 11]),
        "Too many read ranges",
    )
    .await;
    expect_400(
        &kv,
        "snapshot_read",
        body(vec![r(key("a"), 600), r(key("b"), 401)]),
        "total number of entries",
    )
    .await;
    expect_400(
        &kv,
        "snapshot_read",
        body(vec![r(vec![1; 2050], 1)]),
        "key size limit",
    )
    .await;
}

#[tokio::test]
async fn bad_writes_are_400_and_apply_nothing() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let good = set(&key("first"), b"must not be applied");
    let cases: Vec<(Vec<pb::Mutation>, Vec<pb::Check>, &str)> = vec![
        (
            vec![m(
                &key("a"),
                pb::MutationType::MUnspecified,
                bytes_value(b"x"),
            )],
            vec![],
            "unknown mutation type 0",
        ),
        (
            vec![m(&key("a"), pb::MutationType::MSet, None)],
            vec![],
            "needs a value",
        ),
        (
            vec![m(
                &key("a"),
                pb::MutationType::MSet,
                Some(pb::KvValue {
                    data: vec![1],
                    encoding: 0,
                }),
            )],
            vec![],
            "encoding 0 is unknown",
        ),
        (
            vec![m(
                &key("a"),
                pb::MutationType::MSet,
                Some(pb::KvValue {
                    data: vec![1],
                    encoding: 9,
                }),
            )],
            vec![],
            "encoding 9 is unknown",
        ),
        (
            vec![m(
                &key("a"),
                pb::MutationType::MSum,
                Some(pb::KvValue {
                    data: vec![1, 2],
                    encoding: 2,
                }),
            )],
            vec![],
            "exactly 8 bytes",
        ),
        (
            vec![m(&vec![1; 2049], pb::MutationType::MSet, bytes_value(b"x"))],
            vec![],
            "key size limit",
        ),
        (
            vec![set(&key("big"), &vec![0; 65537])],
            vec![],
            "value size limit",
        ),
        (
            vec![],
            vec![pb::Check {
                key: key("a"),
                versionstamp: vec![1; 5],
            }],
            "Invalid versionstamp",
        ),
        (
            vec![],
            vec![
                pb::Check {
                    key: key("a"),
                    versionstamp: vec![]
                };
                101
            ],
            "Too many checks",
        ),
        (
            (0..1001)
                .map(|i| set(&key(&format!("m{i}")), b"x"))
                .collect(),
            vec![],
            "Too many mutations",
        ),
        (
            (0..13)
                .map(|i| set(&key(&format!("t{i}")), &vec![0; 65536]))
                .collect(),
            vec![],
            "total size",
        ),
    ];
    for (mutations, checks, needle) in cases {
        let mut all = vec![good.clone()];
        all.extend(mutations);
        let w = pb::AtomicWrite {
            checks,
            mutations: all,
            enqueues: vec![],
        };
        expect_400(&kv, "atomic_write", w.encode_to_vec(), needle).await;
    }
    let mut expiring = set(&key("a"), b"x");
    expiring.expire_at_ms = -2;
    expect_400(
        &kv,
        "atomic_write",
        write_of(vec![good.clone(), expiring]).encode_to_vec(),
        "expire at",
    )
    .await;
    let enq = pb::Enqueue {
        payload: vec![0xff, 0x0f, 0x49, 0x02],
        deadline_ms: -1,
        ..Default::default()
    };
    let w = pb::AtomicWrite {
        mutations: vec![good.clone()],
        enqueues: vec![enq],
        ..Default::default()
    };
    expect_400(&kv, "atomic_write", w.encode_to_vec(), "enqueue deadline").await;
    assert!(kv.get(&key("first")).await.is_none());
}

#[tokio::test]
async fn failing_mutation_midway_applies_nothing() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    // ["n"] holds bytes; summing a KvU64 into it is a type error found only while applying.
    assert_eq!(
        kv.write(&write_of(vec![set(&key("n"), b"bytes")]))
            .await
            .status,
        1
    );
    let before = kv.get(&key("n")).await.unwrap();
    let sum = m(
        &key("n"),
        pb::MutationType::MSum,
        Some(pb::KvValue {
            data: 1u64.to_le_bytes().to_vec(),
            encoding: 2,
        }),
    );
    let w = write_of(vec![set(&key("a"), b"applied?"), sum]);
    let r = kv.raw("atomic_write", w.encode_to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(!r.text().is_empty());
    assert!(
        kv.get(&key("a")).await.is_none(),
        "the write before the failing sum must not be applied"
    );
    assert_eq!(kv.get(&key("n")).await.unwrap(), before);
    // min/max on non-U64 operands are rejected too.
    let min = m(&key("x"), pb::MutationType::MMin, bytes_value(b"x"));
    let r = kv
        .raw("atomic_write", write_of(vec![min]).encode_to_vec())
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let r = kv.raw("atomic_write", vec![0u8; 1024 * 1024 + 1]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("too large"));
    let kv = Kv {
        proto: Proto::H2c,
        ..kv
    };
    let r = kv.raw("atomic_write", vec![0u8; 2 * 1024 * 1024]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn bad_protocol_headers_are_400() {
    let server = TestServer::start().await;
    let m = metadata(Proto::H2c, &server).await;
    let auth = format!("Bearer {}", m.token);
    let body = pb::SnapshotRead::default().encode_to_vec();
    let url = server.url("/v2/snapshot_read");
    let other_id = "00000000-0000-0000-0000-000000000000";
    for (headers, needle) in [
        (
            vec![
                ("x-denokv-version", "4"),
                ("x-denokv-database-id", m.database_id.as_str()),
            ],
            "x-denokv-version",
        ),
        (vec![("x-denokv-version", "3")], "Invalid database id"),
        (
            vec![
                ("x-denokv-version", "3"),
                ("x-denokv-database-id", "not-a-uuid"),
            ],
            "Invalid database id",
        ),
        (
            vec![
                ("x-denokv-version", "3"),
                ("x-denokv-database-id", other_id),
            ],
            "Invalid database id",
        ),
        (
            vec![("x-transaction-domain-id", other_id)],
            "Invalid database id",
        ),
    ] {
        let mut h = headers.clone();
        h.push(("authorization", &auth));
        let r = post(Proto::H2c, &url, &h, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(r.text().contains(needle), "{headers:?}: {}", r.text());
    }
}

#[tokio::test]
async fn bad_watches_are_400() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let w = |keys: Vec<Vec<u8>>| {
        pb::Watch {
            keys: keys.into_iter().map(|key| pb::WatchKey { key }).collect(),
        }
        .encode_to_vec()
    };
    expect_400(
        &kv,
        "watch",
        w((0..11).map(|i| key(&format!("w{i}"))).collect()),
        "Too many keys watched",
    )
    .await;
    expect_400(&kv, "watch", w(vec![vec![1; 2050]]), "key size limit").await;
    expect_400(&kv, "watch", w(vec![vec![]]), "must not be empty").await;
}

/// A database whose every operation fails in a chosen way (or panics).
struct FailingDb(Option<kv_traits::KvError>);

#[async_trait::async_trait]
impl kv_traits::Database for FailingDb {
    async fn snapshot_read(
        &self,
        _: Vec<kv_traits::ReadRange>,
        _: kv_traits::Consistency,
    ) -> Result<Vec<Vec<kv_traits::KvEntry>>, kv_traits::KvError> {
        match &self.0 {
            Some(e) => Err(e.clone()),
            None => panic!("snapshot_read exploded"),
        }
    }
    async fn atomic_write(
        &self,
        _: kv_traits::AtomicWrite,
    ) -> Result<kv_traits::CommitResult, kv_traits::KvError> {
        match &self.0 {
            Some(e) => Err(e.clone()),
            None => panic!("atomic_write exploded"),
        }
    }
    async fn watch(&self, _: Vec<Vec<u8>>) -> Result<kv_traits::WatchStream, kv_traits::KvError> {
        Err(self.0.clone().unwrap_or(kv_traits::KvError::Closed))
    }
    async fn dequeue(
        &self,
        _: std::time::Duration,
    ) -> Result<Option<kv_traits::QueueMessage>, kv_traits::KvError> {
        Ok(None)
    }
    async fn finish(&self, _: kv_traits::QueueLease, _: bool) -> Result<(), kv_traits::KvError> {
        Ok(())
    }
}

async fn failing_server(
    err: Option<kv_traits::KvError>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = kv_connect_server::KvConnectServer::new(
        FailingDb(err),
        kv_connect_server::ServerConfig::new(TOKEN),
    )
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_with_shutdown(async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn kv_for(addr: std::net::SocketAddr) -> Kv {
    let auth = format!("Bearer {TOKEN}");
    let r = post(
        Proto::H2c,
        &format!("http://{addr}/"),
        &[("authorization", &auth)],
        "{\"supportedVersions\":[3]}",
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    Kv {
        proto: Proto::H2c,
        base: format!("http://{addr}/v2"),
        token: json["token"].as_str().unwrap().into(),
        database_id: json["databaseId"].as_str().unwrap().into(),
    }
}

#[tokio::test]
async fn storage_failures_are_5xx_and_request_failures_4xx() {
    use kv_traits::{BackendError, KvError};
    let read = pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("a"),
            end: key("b"),
            limit: 1,
            reverse: false,
        }],
    }
    .encode_to_vec();
    for (err, status) in [
        (
            KvError::Backend(BackendError::Io("disk on fire".into())),
            500,
        ),
        (KvError::Closed, 503),
        (KvError::Backend(BackendError::Conflict("busy".into())), 503),
        (KvError::Mutation("type mismatch".into()), 400),
    ] {
        let (addr, _stop) = failing_server(Some(err.clone())).await;
        let kv = kv_for(addr).await;
        for (method, body) in [
            ("snapshot_read", read.clone()),
            (
                "atomic_write",
                write_of(vec![set(&key("a"), b"x")]).encode_to_vec(),
            ),
            (
                "watch",
                pb::Watch {
                    keys: vec![pb::WatchKey { key: key("a") }],
                }
                .encode_to_vec(),
            ),
        ] {
            let r = kv.raw(method, body).await;
            assert_eq!(
                r.status.as_u16(),
                status,
                "{err:?} on {method}: {}",
                r.text()
            );
            assert!(!r.text().is_empty());
        }
    }
}

/// A write whose outcome is unknown is answered `AW_UNSPECIFIED` (clients report it and do not
/// retry), never a 5xx that would make a client re-send a write that may have applied.
#[tokio::test]
async fn an_unknown_write_outcome_is_aw_unspecified_not_a_retry() {
    use kv_traits::{BackendError, KvError};
    for err in [
        KvError::UnknownOutcome("connection lost at commit".into()),
        KvError::Backend(BackendError::UnknownOutcome("lost".into())),
    ] {
        let (addr, _stop) = failing_server(Some(err)).await;
        let kv = kv_for(addr).await;
        let r = kv
            .raw(
                "atomic_write",
                write_of(vec![set(&key("a"), b"x")]).encode_to_vec(),
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        let out = pb::AtomicWriteOutput::decode(&r.body[..]).unwrap();
        assert_eq!(out.status, pb::AtomicWriteStatus::AwUnspecified as i32);
        assert!(out.versionstamp.is_empty());
    }
}

#[tokio::test]
async fn a_panicking_database_gives_500_and_the_server_lives_on() {
    let (addr, _stop) = failing_server(None).await;
    let kv = kv_for(addr).await;
    for _ in 0..2 {
        let r = kv
            .raw("snapshot_read", pb::SnapshotRead::default().encode_to_vec())
            .await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let r = send(
        Proto::Http1,
        http::Request::get(format!("http://{addr}/healthz"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}
