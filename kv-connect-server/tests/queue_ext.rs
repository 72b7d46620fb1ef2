//! The queue extension `queue-v1`: advertised in the metadata, dequeue with a lease (long poll),
//! finish with success or failure, stale leases rejected with 409, dead letters written.

mod common;

use common::{Kv, Proto, TestServer, BOTH};
use http::StatusCode;
use kv_proto::{pb, queue_pb};
use prost::Message;

fn enqueue_write(payload: &[u8], backoff: Vec<u32>, dead_letter: &[u8]) -> pb::AtomicWrite {
    pb::AtomicWrite {
        enqueues: vec![pb::Enqueue {
            payload: payload.to_vec(),
            deadline_ms: 0,
            keys_if_undelivered: vec![dead_letter.to_vec()],
            backoff_schedule: backoff,
        }],
        ..Default::default()
    }
}

async fn dequeue(kv: &Kv, wait_ms: u32) -> queue_pb::DequeueResponse {
    let r = kv
        .raw(
            "queue/dequeue",
            queue_pb::DequeueRequest { wait_ms }.encode_to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.content_type(), "application/x-protobuf");
    queue_pb::DequeueResponse::decode(r.body).unwrap()
}

async fn finish(kv: &Kv, lease: &[u8], success: bool) -> common::Resp {
    let req = queue_pb::FinishRequest {
        lease: lease.to_vec(),
        success,
    };
    kv.raw("queue/finish", req.encode_to_vec()).await
}

#[tokio::test]
async fn metadata_advertises_the_extension() {
    let server = TestServer::start().await;
    for proto in BOTH {
        let auth = format!("Bearer {}", common::TOKEN);
        let r = common::post(
            proto,
            &server.url("/"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            r#"{"supportedVersions":[1,2,3]}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers.get("x-denokv-extensions").unwrap(), "queue-v1");
        // The JSON body keeps exactly the five properties the npm client accepts.
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 5);
    }
}

#[tokio::test]
async fn dequeue_finish_success_and_stale_lease() {
    let server = TestServer::start().await;
    for proto in BOTH {
        let kv = Kv::connect(proto, &server).await;
        // Nothing queued: the long poll returns an empty lease after the wait.
        let started = std::time::Instant::now();
        let empty = dequeue(&kv, 200).await;
        assert!(empty.lease.is_empty());
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));

        let out = kv
            .write(&enqueue_write(b"hello", vec![], b"\x02dl\x00"))
            .await;
        assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
        let m = dequeue(&kv, 5000).await;
        assert_eq!(m.payload, b"hello");
        assert_eq!(m.attempt, 1);
        assert_eq!(m.lease.len(), 24);
        assert!(m.lease_deadline_ms > 0);
        let r = finish(&kv, &m.lease, true).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        // Finishing twice: the lease no longer exists.
        let r = finish(&kv, &m.lease, true).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        // A malformed lease is a 400.
        let r = finish(&kv, b"short", true).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        // The message is gone.
        assert!(dequeue(&kv, 100).await.lease.is_empty());
    }
}

#[tokio::test]
async fn a_waiting_dequeue_wakes_on_enqueue() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let waiter = tokio::spawn({
        let kv = Kv {
            proto: kv.proto,
            base: kv.base.clone(),
            token: kv.token.clone(),
            database_id: kv.database_id.clone(),
        };
        async move { dequeue(&kv, 10_000).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    kv.write(&enqueue_write(b"late", vec![], b"\x02dl\x00"))
        .await;
    let m = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, b"late");
}

#[tokio::test]
async fn failures_retry_then_dead_letter() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    kv.write(&enqueue_write(
        b"\xff\x0f\x49\x02",
        vec![10],
        b"\x02dead\x00",
    ))
    .await;
    let first = dequeue(&kv, 5000).await;
    assert_eq!(first.attempt, 1);
    assert_eq!(
        finish(&kv, &first.lease, false).await.status,
        StatusCode::OK
    );
    let second = dequeue(&kv, 5000).await;
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease, first.lease);
    assert_eq!(
        finish(&kv, &second.lease, false).await.status,
        StatusCode::OK
    );
    // Schedule exhausted: the payload is written to the dead-letter key as a V8 value.
    let entry = kv.get(b"\x02dead\x00").await.expect("dead letter written");
    assert_eq!(entry.value, b"\xff\x0f\x49\x02");
    assert_eq!(entry.encoding, pb::ValueEncoding::VeV8 as i32);
    assert!(dequeue(&kv, 100).await.lease.is_empty());
}

#[tokio::test]
async fn queue_routes_require_auth() {
    let server = TestServer::start().await;
    let r = common::post(
        Proto::Http1,
        &server.url("/v2/queue/dequeue"),
        &[("x-denokv-version", "3")],
        queue_pb::DequeueRequest { wait_ms: 0 }.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
