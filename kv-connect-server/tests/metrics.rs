//! `/metrics`: authentication, the metrics listener, and every number moving when the matching
//! thing happens (read from the exposition text, as Prometheus would).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::exposition::{sample, scrape, scrape_listener, scrape_until, value};
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kv_connect_server::GaugeSample;
use kv_proto::pb;
use kv_traits::{Clock, Database, ManualClock};

const DB: (&str, &str) = ("database", "default");

#[tokio::test]
async fn metrics_need_the_access_token_on_the_main_port() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let get = |auth: Option<String>| {
        let mut b = Request::get(server.url("/metrics"));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    assert_eq!(
        send(Proto::Http1, get(None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A data-path token is not the admin credential.
    let data_token = Some(format!("Bearer {}", kv.token));
    assert_eq!(
        send(Proto::Http1, get(data_token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let ok = send(Proto::H2c, get(Some(format!("Bearer {TOKEN}")))).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok
        .content_type()
        .starts_with("application/openmetrics-text"));
    assert!(ok.text().ends_with("# EOF\n"));
    let post = Request::post(server.url("/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(Proto::Http1, post).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers.get("allow").unwrap(), "GET");
}

#[tokio::test]
async fn the_metrics_listener_serves_without_a_token() {
    let server = TestServer::start_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = server.metrics_addr.expect("metrics listener bound");
    assert_ne!(addr, server.addr);
    let text = scrape_listener(addr).await;
    assert!(text.contains("# TYPE kv_db_commits counter"), "{text}");
    let other = Request::get(format!("http://{addr}/v2/snapshot_read"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(Proto::Http1, other).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_write_bumps_commits_the_batch_histogram_and_its_route() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let before = scrape(&server).await;
    let out = kv.write(&write_of(vec![set(&key("a"), b"1")])).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    let after = scrape(&server).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(delta("kv_db_commits_total", &[DB]), 1.0);
    assert_eq!(delta("kv_db_writes_committed_total", &[DB]), 1.0);
    assert_eq!(delta("kv_db_commit_batch_size_count", &[DB]), 1.0);
    assert_eq!(delta("kv_db_commit_batch_size_sum", &[DB]), 1.0);
    assert_eq!(
        delta("kv_db_commit_batch_size_bucket", &[DB, ("le", "1.0")]),
        1.0
    );
    assert_eq!(delta("kv_db_commit_duration_seconds_count", &[DB]), 1.0);
    let route = [("route", "atomic_write"), ("status", "200"), DB];
    assert_eq!(delta("kv_http_requests_total", &route), 1.0);
    assert_eq!(
        delta(
            "kv_http_request_duration_seconds_count",
            &[("route", "atomic_write"), DB]
        ),
        1.0
    );
}

#[tokio::test]
async fn requests_count_by_route_and_status() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let nope = Request::get(server.url("/nope"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(Proto::Http1, nope).await.status, StatusCode::NOT_FOUND);
    let unauthorized = post(
        Proto::Http1,
        &server.url("/v2/snapshot_read"),
        &[("authorization", "Bearer wrong")],
        Vec::new(),
    )
    .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert!(kv.get(&key("x")).await.is_none());
    let text = scrape(&server).await;
    let count = |route: &str, status: &str| {
        value(
            &text,
            "kv_http_requests_total",
            &[("route", route), ("status", status), DB],
        )
    };
    assert_eq!(count("unknown", "404"), 1.0);
    assert_eq!(count("snapshot_read", "401"), 1.0);
    assert_eq!(count("snapshot_read", "200"), 1.0);
    assert_eq!(count("metadata", "200"), 1.0);
    assert_eq!(count("snapshot_read", "500"), 0.0);
}

#[tokio::test]
async fn watch_gauges_follow_streams_opening_and_closing() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::H2c, &server).await;
    let mut res = kv.start_watch(&[key("w")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The first frame arrives once the stream runs.
    let first = res.body_mut().frame().await;
    assert!(first.is_some());
    let text = scrape(&server).await;
    assert_eq!(value(&text, "kv_watch_streams_open", &[]), 1.0);
    assert_eq!(value(&text, "kv_db_watch_streams", &[DB]), 1.0);
    drop(res);
    scrape_until(&server, |t| {
        value(t, "kv_watch_streams_open", &[]) == 0.0
            && value(t, "kv_db_watch_streams", &[DB]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn an_enqueue_moves_queue_ready_and_a_dequeue_moves_it_to_leased() {
    let server = TestServer::start().await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "kv_queue_ready", &[DB]), Some(0.0));
    let w = pb::AtomicWrite {
        enqueues: vec![pb::Enqueue {
            payload: vec![1],
            deadline_ms: 0,
            keys_if_undelivered: vec![],
            backoff_schedule: vec![],
        }],
        ..Default::default()
    };
    assert_eq!(
        kv.write(&w).await.status,
        pb::AtomicWriteStatus::AwSuccess as i32
    );
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "kv_queue_ready", &[DB]), Some(1.0));
    assert_eq!(sample(&text, "kv_queue_leased", &[DB]), Some(0.0));
    let message = server
        .db
        .dequeue(std::time::Duration::ZERO)
        .await
        .unwrap()
        .expect("the message is ready");
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "kv_queue_ready", &[DB]), Some(0.0));
    assert_eq!(sample(&text, "kv_queue_leased", &[DB]), Some(1.0));
    // A failed delivery goes back to ready (the default backoff schedule has retries left).
    server.db.finish(message.lease, false).await.unwrap();
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "kv_queue_ready", &[DB]), Some(1.0));
    assert_eq!(sample(&text, "kv_queue_leased", &[DB]), Some(0.0));
    assert_eq!(value(&text, "kv_queue_dropped_total", &[DB]), 0.0);
}

#[tokio::test]
async fn the_expiry_sweep_counters_move_once_an_expired_key_is_swept() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = kv_db::DbConfig {
        clock: clock.clone(),
        background_tasks: false,
        ..Default::default()
    };
    let db = kv_db::Db::open(kv_engine_memory::MemoryBackend::new(), config)
        .await
        .unwrap();
    let server = TestServer::start_db(Arc::new(db), |_| {}).await;
    let kv = Kv::connect(Proto::Http1, &server).await;
    let mut m = set(&key("short"), b"v");
    m.expire_at_ms = (clock.now_ms() + 1_000) as i64;
    kv.write(&write_of(vec![m])).await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, "kv_expiry_deleted_keys_total", &[DB]), 0.0);
    clock.advance(2_000);
    assert_eq!(server.db.run_maintenance().await.unwrap(), 1);
    let after = scrape(&server).await;
    assert_eq!(value(&after, "kv_expiry_deleted_keys_total", &[DB]), 1.0);
    assert!(value(&after, "kv_expiry_sweeps_total", &[DB]) >= 1.0);
}

#[tokio::test]
async fn reported_gauges_such_as_backup_lag_carry_the_database_label() {
    let server = TestServer::start_with(|c| {
        c.metrics_report = Some(Arc::new(|| {
            vec![GaugeSample {
                name: "kv_backup_lag_seconds",
                help: "test",
                value: 1.5,
            }]
        }));
    })
    .await;
    let text = scrape(&server).await;
    assert_eq!(sample(&text, "kv_backup_lag_seconds", &[DB]), Some(1.5));
}

/// A loopback port that was free a moment ago (for flags that need a fixed address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_serves_the_metrics_listener_with_backup_lag() {
    let dir = std::env::temp_dir().join(format!(
        "kvcs-metrics-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let backup = dir.join("backup");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let p = spawn(&[
        "serve",
        "--engine",
        "memory",
        "--addr",
        "127.0.0.1:0",
        "--backup-to",
        backup.to_str().unwrap(),
        "--metrics-addr",
        &metrics_addr,
    ]);
    let kv = Kv::at(Proto::H2c, p.addr).await;
    assert_eq!(
        kv.write(&write_of(vec![set(&key("b"), b"1")])).await.status,
        pb::AtomicWriteStatus::AwSuccess as i32
    );
    let text = scrape_listener(metrics_addr.parse().unwrap()).await;
    assert!(
        sample(&text, "kv_backup_lag_seconds", &[DB]).is_some(),
        "{text}"
    );
    assert!(value(&text, "kv_db_commits_total", &[DB]) >= 1.0, "{text}");
    // The main port wants the token; with it, the same numbers.
    let anonymous = Request::get(format!("http://{}/metrics", p.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(Proto::Http1, anonymous).await.status,
        StatusCode::UNAUTHORIZED
    );
    let main = common::exposition::scrape_at(p.addr).await;
    assert!(sample(&main, "kv_backup_lag_seconds", &[DB]).is_some());
    assert!(tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap()
        .success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_many_databases_each_database_exports_its_backup_gauges() {
    let dir = common::temp_dir("metrics-multidb-backup");
    let backup = dir.join("backup");
    let server = common::multidb::DirServer::start(
        "metrics-backup",
        &[
            "--engine",
            "memory",
            "--backup-to",
            backup.to_str().unwrap(),
        ],
    );
    for name in ["alpha", "beta"] {
        server.create_db(name).await;
        let kv = common::multidb::connect(&server.url(&format!("/db/{name}")), TOKEN).await;
        assert_eq!(
            kv.write(&write_of(vec![set(&key("k"), b"v")])).await.status,
            pb::AtomicWriteStatus::AwSuccess as i32
        );
    }
    let addr = server.proc.as_ref().expect("server running").addr;
    // Both databases' gauges, each under its own label, once each has shipped something.
    let shipped = |text: &str, name: &str| {
        let db = [("database", name)];
        sample(text, "kv_backup_lag_seconds", &db).is_some()
            && sample(text, "kv_backup_failing", &db) == Some(0.0)
            && sample(text, "kv_backup_last_upload_timestamp_seconds", &db).is_some_and(|t| t > 0.0)
    };
    let mut text = String::new();
    for _ in 0..600 {
        text = common::exposition::scrape_at(addr).await;
        if shipped(&text, "alpha") && shipped(&text, "beta") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(shipped(&text, "alpha") && shipped(&text, "beta"), "{text}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
