//! Eventual reads from a PostgreSQL read replica (`--database-replica-url`, issue 13), against
//! a real hot standby streaming from the test server (`kv_test_support::postgres::
//! test_replica_url`, started by `scripts/start-postgres-replica-test-server.sh`).
//!
//! - `eventual_reads_go_to_the_replica`: the metadata advertises `/eventual/v2` (`eventual`)
//!   before `/v2` (`strong`); a write through the primary is seen at once by strong reads and,
//!   once replayed, by eventual reads (which say `read_is_strongly_consistent = false`); writes
//!   and queue calls on the eventual endpoint get a 400 and apply nothing. With WAL replay
//!   paused on the standby, a new write is invisible on the eventual endpoint but visible on
//!   the strong one, which shows where each client sends what: `@deno/kv` sends
//!   `get(k, {consistency: "eventual"})` to the replica and its watch to the primary (through
//!   `/eventual/v2/watch`); Deno 2.9.6 sends everything to the strong endpoint. After replay
//!   resumes the replica catches up.
//! - `a_replica_without_the_store_is_refused_at_startup`: a replica URL where the store does
//!   not exist stops the server with a clear error (after the connect timeout).
//! - `a_replica_url_needs_the_postgres_engine`; `without_a_replica_there_is_no_eventual_endpoint`.
//!
//! Waits are polls with generous bounds, never fixed sleeps.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::{run_js, tools, TOKEN};
use common::cluster::Cluster;
use common::{key, post, set, write_of, Kv, Proto};
use http::StatusCode;
use kv_proto::pb;
use prost::Message;

/// Bound for the standby to replay a commit (normally milliseconds; the machine is shared).
const REPLAY: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The metadata exchange offering `versions`, as JSON.
async fn metadata(base: &str, versions: &str) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    let r = post(
        Proto::H2c,
        &format!("{base}/"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"supportedVersions":{versions}}}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// A data-path client of the endpoint `base` + `path`.
fn endpoint(meta: &serde_json::Value, base: &str, path: &str) -> Kv {
    Kv {
        proto: Proto::H2c,
        base: format!("{base}{path}"),
        token: meta["token"].as_str().unwrap().to_string(),
        database_id: meta["databaseId"].as_str().unwrap().to_string(),
    }
}

/// One key's value (bytes) through `kv`, and whether the answer says it is strongly consistent.
async fn read(kv: &Kv, k: &[u8]) -> (Option<Vec<u8>>, bool) {
    let mut end = k.to_vec();
    end.push(0);
    let out = kv
        .read(&pb::SnapshotRead {
            ranges: vec![pb::ReadRange {
                start: k.to_vec(),
                end,
                limit: 1,
                reverse: false,
            }],
        })
        .await;
    let value = out.ranges[0].values.first().map(|e| e.value.clone());
    (value, out.read_is_strongly_consistent)
}

async fn write(kv: &Kv, pairs: &[(&str, &str)]) {
    let out = kv
        .write(&write_of(
            pairs
                .iter()
                .map(|(k, v)| set(&key(k), v.as_bytes()))
                .collect(),
        ))
        .await;
    assert_eq!(
        out.status,
        pb::AtomicWriteStatus::AwSuccess as i32,
        "{out:?}"
    );
}

/// Polls the eventual endpoint until `k` holds `want`.
async fn until_replayed(eventual: &Kv, k: &str, want: &str) {
    let started = Instant::now();
    loop {
        let (seen, strong) = read(eventual, &key(k)).await;
        assert!(!strong, "eventual reads must not claim strong consistency");
        if seen.as_deref() == Some(want.as_bytes()) {
            return;
        }
        assert!(
            started.elapsed() < REPLAY,
            "the replica did not show {k}={want} within {REPLAY:?} (shows {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A superuser connection to the standby, to pause and resume WAL replay.
async fn standby_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        kv_test_support::postgres::test_replica_url(),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Pauses WAL replay on the standby until dropped (also when the test panics).
struct ReplayPaused;

impl ReplayPaused {
    async fn pause() -> ReplayPaused {
        let client = standby_client().await;
        client
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            let state: String = client
                .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
                .await
                .unwrap()
                .get(0);
            if state == "paused" {
                return ReplayPaused;
            }
            assert!(started.elapsed() < REPLAY, "replay did not pause: {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        // Drop cannot await: resume on a runtime of its own, on another thread.
        let resumed = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    standby_client()
                        .await
                        .batch_execute("SELECT pg_wal_replay_resume()")
                        .await
                })
        })
        .join();
        if !matches!(resumed, Ok(Ok(()))) {
            eprintln!("resuming WAL replay on the test standby failed: {resumed:?}");
        }
    }
}

#[test]
fn eventual_reads_go_to_the_replica() {
    tools();
    let replica_url = kv_test_support::postgres::test_replica_url();
    let cluster = Cluster::start(1, "replica", &["--database-replica-url", replica_url]);
    let base = cluster.url(0);
    let logs = || cluster.stderr_tails();
    let rt = runtime();
    rt.block_on(async {
        let meta = metadata(&base, "[1,2,3]").await;
        assert_eq!(
            meta["endpoints"],
            serde_json::json!([
                {"url": "/eventual/v2", "consistency": "eventual"},
                {"url": "/v2", "consistency": "strong"}
            ]),
            "{meta}"
        );
        let v1 = metadata(&base, "[1]").await;
        assert_eq!(
            v1["endpoints"],
            serde_json::json!([
                {"url": format!("{base}/eventual/v2"), "consistency": "eventual"},
                {"url": format!("{base}/v2"), "consistency": "strong"}
            ]),
            "{v1}"
        );
        let strong = endpoint(&meta, &base, "/v2");
        let eventual = endpoint(&meta, &base, "/eventual/v2");

        // Replicated: strong at once, eventual once replayed.
        write(&strong, &[("a", "one")]).await;
        assert_eq!(
            read(&strong, &key("a")).await,
            (Some(b"one".to_vec()), true)
        );
        until_replayed(&eventual, "a", "one").await;

        // Writes and queue calls on the eventual endpoint: 400, nothing applied.
        let refused = eventual
            .raw(
                "atomic_write",
                write_of(vec![set(&key("refused"), b"x")]).encode_to_vec(),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{}",
            refused.text()
        );
        assert!(
            refused.text().contains("eventual-consistency endpoint"),
            "{}",
            refused.text()
        );
        let dequeue = eventual.raw("queue/dequeue", Vec::new()).await;
        assert_eq!(
            dequeue.status,
            StatusCode::BAD_REQUEST,
            "{}",
            dequeue.text()
        );
        assert_eq!(read(&strong, &key("refused")).await.0, None);

        // Replay paused: the replica shows the past, the primary the present.
        let paused = ReplayPaused::pause().await;
        write(&strong, &[("a", "two"), ("b", "new")]).await;
        assert_eq!(read(&strong, &key("b")).await.0, Some(b"new".to_vec()));
        assert_eq!(
            read(&eventual, &key("a")).await,
            (Some(b"one".to_vec()), false),
            "the eventual endpoint must read the (paused) replica"
        );
        assert_eq!(read(&eventual, &key("b")).await.0, None);

        let run = |client: &'static str| {
            let base = base.clone();
            let logs = &logs;
            move || run_js(client, "consistency.mjs", &base, &["b"], logs)
        };
        // @deno/kv: eventual reads from the replica, strong reads and watches from the primary.
        let node = tokio::task::block_in_place(run("node"));
        assert_eq!(
            node,
            [r#"{"eventual":null,"strong":"new","watch":"new"}"#],
            "@deno/kv 0.14.0 with the replica paused"
        );
        // Deno: every call goes to the first strong endpoint (kv-connect.md §2.4).
        let deno = tokio::task::block_in_place(run("deno"));
        assert_eq!(
            deno,
            [r#"{"eventual":"new","strong":"new","watch":"new"}"#],
            "Deno 2.9.6 with the replica paused"
        );

        drop(paused);
        until_replayed(&eventual, "b", "new").await;
        until_replayed(&eventual, "a", "two").await;
        let node = tokio::task::block_in_place(run("node"));
        assert_eq!(
            node,
            [r#"{"eventual":"new","strong":"new","watch":"new"}"#],
            "@deno/kv 0.14.0 after the replica caught up"
        );
    });
}

/// Runs the server binary with `args` until it exits (it must, within the bound); its stderr.
fn failing_start(args: &[&str]) -> String {
    let out = Command::new(common::BIN)
        .args(args)
        .args(["--access-token", TOKEN, "--addr", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("KV_CONNECT_DATABASE_REPLICA_URL")
        .env_remove("KV_CONNECT_ENGINE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the server started: {stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_replica_without_the_store_is_refused_at_startup() {
    // The test server's `postgres` database holds no store in this fresh schema: a replica
    // URL pointing there is refused once the connect timeout ran out.
    let primary = kv_test_support::postgres::test_url();
    let elsewhere = match primary.rsplit_once('/') {
        Some((server, _db)) => format!("{server}/postgres"),
        None => panic!("unexpected test URL {primary}"),
    };
    let schema = kv_test_support::postgres::fresh_schema("replica_missing");
    let stderr = failing_start(&[
        "--engine",
        "postgres",
        "--database-url",
        primary,
        "--database-schema",
        &schema,
        // Also bounds the primary's connection: not too short on a loaded machine.
        "--database-connect-timeout-secs",
        "5",
        "--database-replica-url",
        &elsewhere,
    ]);
    assert!(
        stderr.contains("read replica") && stderr.contains("no kv-engine-postgres store"),
        "{stderr}"
    );
}

#[test]
fn a_replica_url_needs_the_postgres_engine() {
    let stderr = failing_start(&[
        "--engine",
        "memory",
        "--database-replica-url",
        "postgres://u@127.0.0.1:1/db",
    ]);
    assert!(
        stderr.contains("--database-replica-url needs --engine postgres"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_a_replica_there_is_no_eventual_endpoint() {
    let server = common::TestServer::start().await;
    let meta = common::metadata(Proto::H2c, &server).await;
    assert_eq!(
        meta.json["endpoints"],
        serde_json::json!([{"url": "/v2", "consistency": "strong"}])
    );
    let kv = Kv {
        proto: Proto::H2c,
        base: server.url("/eventual/v2"),
        token: meta.token,
        database_id: meta.database_id,
    };
    for method in ["snapshot_read", "watch", "atomic_write"] {
        let r = kv.raw(method, Vec::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text());
    }
}
