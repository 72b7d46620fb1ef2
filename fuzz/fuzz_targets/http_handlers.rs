//! Raw request bodies through the real KV Connect handlers (`KvConnectServer::handle`, no
//! socket) over a memory-engine database holding a few entries of every value encoding.
//!
//! Input: byte 0 picks the route (bits 0-1: snapshot_read, atomic_write, watch, metadata
//! exchange) and the protocol headers (bits 2-4: v3, v2, v1 domain id, wrong database id, no
//! version header, bad token); the rest is the body, sent as is.
//!
//! Checked: no panic (libFuzzer aborts on any panic, even one the server catches) and never a
//! 5xx; a successful snapshot_read answers one range per requested range and watch answers a
//! first frame reporting every key; an atomic write that is refused (any non-200 status, or a
//! protobuf status other than AW_SUCCESS) leaves the whole database unchanged.
#![no_main]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use kv_connect_server::auth::TokenAuthority;
use kv_connect_server::{KvConnectServer, ServerConfig};
use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_fuzz::http_input::{split, Headers, Route, ACCESS_TOKEN};
use kv_proto::{self as wire, pb};
use kv_traits::{
    AtomicWrite, CommitResult, Consistency, Database, KvEntry, KvValue, Mutation, ReadRange,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Every entry of the database (user keys are at most 2048 bytes, so two ranges cover all).
async fn dump(db: &Db) -> Vec<Vec<KvEntry>> {
    let ranges = vec![
        ReadRange {
            start: vec![],
            end: vec![0xff],
            limit: 500,
            reverse: false,
        },
        ReadRange {
            start: vec![0xff],
            end: vec![0xff; 2049],
            limit: 500,
            reverse: false,
        },
    ];
    db.snapshot_read(ranges, Consistency::Strong)
        .await
        .expect("dump")
}

fn seed_write() -> AtomicWrite {
    let v8_one = kv_traits::v8::serialize_number(1.0);
    let v8_str = kv_traits::v8::serialize(&kv_traits::v8::V8Value::String("s".into()));
    AtomicWrite {
        mutations: vec![
            Mutation::set(b"\x02a\x00".to_vec(), KvValue::Bytes(b"bytes".to_vec())),
            Mutation::set(b"\x02n\x00".to_vec(), KvValue::U64(5)),
            Mutation::set(b"\x02v\x00".to_vec(), KvValue::V8(v8_one)),
            Mutation::set(b"\x02s\x00".to_vec(), KvValue::V8(v8_str)),
        ],
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((route, headers, body)) = split(data) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let db = Db::open(
            MemoryBackend::new(),
            DbConfig {
                background_tasks: false,
                ..Default::default()
            },
        )
        .await
        .expect("open");
        db.atomic_write(seed_write()).await.expect("seed write");
        let config = ServerConfig::new(ACCESS_TOKEN);
        let tokens = TokenAuthority::new(ACCESS_TOKEN, config.token_ttl);
        let server = KvConnectServer::new(db.clone(), config);
        let (token, _) = tokens.issue(SystemTime::now());
        let id = server.database_id().hyphenated().to_string();
        let mut req = http::Request::post(route.path());
        req = match route {
            Route::Metadata => req
                .header("host", "localhost:4512")
                .header("content-type", "application/json")
                .header(
                    "authorization",
                    match headers {
                        Headers::BadToken => "Bearer nope".to_string(),
                        _ => format!("Bearer {ACCESS_TOKEN}"),
                    },
                ),
            _ => {
                let auth = match headers {
                    Headers::BadToken => "Bearer kvc1.1.00".to_string(),
                    _ => format!("Bearer {token}"),
                };
                let req = req.header("authorization", auth);
                match headers {
                    Headers::V3 | Headers::BadToken => req
                        .header("x-denokv-version", "3")
                        .header("x-denokv-database-id", &id),
                    Headers::V2 => req
                        .header("x-denokv-version", "2")
                        .header("x-denokv-database-id", &id),
                    Headers::V1 => req.header("x-transaction-domain-id", &id),
                    Headers::WrongId => req.header("x-denokv-version", "3").header(
                        "x-denokv-database-id",
                        "00000000-0000-4000-8000-000000000000",
                    ),
                    Headers::NoVersion => req.header("x-denokv-database-id", &id),
                }
            }
        };
        let req = req.body(Bytes::copy_from_slice(body)).expect("request");
        let before = if route == Route::AtomicWrite {
            Some(dump(&db).await)
        } else {
            None
        };
        let res = server.handle(req).await;
        let status = res.status();
        assert!(
            !status.is_server_error(),
            "{route:?} {headers:?}: status {status}"
        );
        if route == Route::Watch && status.is_success() {
            let request: pb::Watch = wire::decode_request(body).expect("accepted watch decodes");
            let mut body = res.into_body();
            let mut decoder = wire::WatchFrameDecoder::default();
            let frame = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let chunk = body.frame().await.expect("stream ended").expect("frame");
                    if let Ok(data) = chunk.into_data() {
                        decoder.push(&data);
                    }
                    if let Some(f) = decoder.next_frame().expect("valid frame") {
                        return f;
                    }
                }
            })
            .await
            .expect("first watch frame within 10 s");
            assert_eq!(frame.keys.len(), request.keys.len());
            assert!(frame.keys.iter().all(|k| k.changed));
            return;
        }
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        match route {
            Route::SnapshotRead if status.is_success() => {
                let request: pb::SnapshotRead = wire::decode_request(body).expect("decodes");
                let ranges = wire::read_ranges_from_wire(request).expect("accepted ranges");
                let out = pb::SnapshotReadOutput::decode(bytes).expect("valid output");
                let got =
                    wire::snapshot_read_result_from_wire(out, ranges.len(), Consistency::Strong)
                        .expect("a client accepts the output");
                for (r, o) in ranges.iter().zip(&got) {
                    assert!(o.len() <= r.limit as usize);
                }
                // The wire answer is exactly what the database holds.
                let direct = db
                    .snapshot_read(ranges, Consistency::Strong)
                    .await
                    .expect("direct read");
                assert_eq!(got, direct);
            }
            Route::AtomicWrite => {
                let committed = status.is_success() && {
                    let out = pb::AtomicWriteOutput::decode(bytes.clone()).expect("valid output");
                    let result = wire::commit_result_from_wire(out).expect("a client accepts it");
                    matches!(result, CommitResult::Committed(_))
                };
                if !committed {
                    let after = dump(&db).await;
                    assert_eq!(before, Some(after), "a refused write changed the database");
                }
            }
            _ => {}
        }
        drop(server);
        db.close().await.expect("close");
    });
});
