//! Every workload against an in-process `kv-connect-server` over the memory engine: it runs,
//! commits, finds what it seeded and passes its correctness checks; wrong setups fail.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use kv_bench::{BenchError, ClientError, Options};
use kv_connect_server::{KvConnectServer, ServerConfig};

const TOKEN: &str = "kv-bench-test-token";

async fn server() -> SocketAddr {
    server_with_db().await.0
}

async fn server_with_db() -> (SocketAddr, Arc<kv_db::Db>) {
    let db = Arc::new(
        kv_db::Db::open(
            kv_engine_memory::MemoryBackend::new(),
            kv_db::DbConfig::default(),
        )
        .await
        .unwrap(),
    );
    let bound = KvConnectServer::from_arc(db.clone(), ServerConfig::new(TOKEN))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.serve_with_shutdown(std::future::pending()));
    (addr, db)
}

fn opts(addr: SocketAddr, extra: &[&str]) -> Options {
    let url = format!("http://{addr}");
    let mut args = vec![
        "kv-bench",
        "--url",
        &url,
        "--access-token",
        TOKEN,
        "--duration-secs",
        "0.3",
        "--warmup-secs",
        "0.05",
        "--keys",
        "2000",
    ];
    args.extend_from_slice(extra);
    Options::parse_from(args)
}

async fn run_ok(addr: SocketAddr, extra: &[&str]) -> kv_bench::Report {
    let report = kv_bench::run(&opts(addr, extra)).await.unwrap();
    assert!(report.ops > 0, "{}", report.text());
    assert_eq!(report.errors, 0, "{}", report.text());
    assert!(report.checks.passed(), "{}", report.text());
    assert_eq!(report.protocol_version, 3);
    assert!(report.latency.p50_ms > 0.0 && report.latency.p50_ms <= report.latency.p99_ms);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_workloads_over_h2_and_http1() {
    let addr = server().await;
    for http in ["h2", "http1"] {
        for w in ["set", "get", "mixed"] {
            let r = run_ok(addr, &["--workload", w, "--clients", "4", "--http", http]).await;
            assert_eq!(r.workload, w);
            assert_eq!(r.connections, 4);
        }
    }
    let r = run_ok(
        addr,
        &[
            "--workload",
            "mixed",
            "--clients",
            "8",
            "--read-ratio",
            "0.5",
        ],
    )
    .await;
    assert!(r.latency_by_kind.contains_key("get") && r.latency_by_kind.contains_key("set"));
    // Tasks sharing fewer connections, several sets per write.
    let r = run_ok(
        addr,
        &[
            "--workload",
            "set",
            "--clients",
            "8",
            "--connections",
            "2",
            "--mutations",
            "10",
        ],
    )
    .await;
    assert_eq!(r.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reads_every_key_in_pages() {
    let addr = server().await;
    let r = run_ok(
        addr,
        &[
            "--workload",
            "list",
            "--list-keys",
            "2000",
            "--page-size",
            "300",
            "--clients",
            "2",
        ],
    )
    .await;
    assert_eq!(r.latency_by_kind.keys().collect::<Vec<_>>(), ["list"]);
    // More keys than were seeded cannot be listed.
    let err = kv_bench::run(&opts(addr, &["--workload", "list", "--list-keys", "5000"])).await;
    assert!(matches!(err, Err(BenchError::Options(_))), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_big_values_stays_under_the_request_size_limit() {
    // 500 values of 4 KB (the batch of small values) are 2 MB: over the 1 MiB body limit.
    let addr = server().await;
    let o = opts(addr, &["--value-size", "4000", "--seed-only"]);
    kv_bench::seed(&o).await.unwrap();
    let report = run_ok(
        addr,
        &["--workload", "get", "--value-size", "4000", "--no-seed"],
    )
    .await;
    assert_eq!(report.workload, "get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_unseeded_keys_counts_errors() {
    let addr = server().await;
    let r = kv_bench::run(&opts(
        addr,
        &["--workload", "get", "--no-seed", "--max-ops", "5"],
    ))
    .await
    .unwrap();
    assert_eq!(r.ops, 0);
    assert!(r.errors > 0);
    assert!(
        r.error_samples.iter().any(|s| s.contains("seeded?")),
        "{:?}",
        r.error_samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_conserve_the_total() {
    let addr = server().await;
    let r = run_ok(
        addr,
        &[
            "--workload",
            "bank",
            "--clients",
            "16",
            "--accounts",
            "10",
            "--audit-interval-ms",
            "5",
        ],
    )
    .await;
    assert!(r.checks.bank_audits >= 2, "{:?}", r.checks);
    assert_eq!(r.checks.bank_violations, 0);
    // 16 clients on 10 accounts must collide now and then.
    assert!(r.conflicts > 0, "{}", r.text());
    let v = r.checks.bank_ledger.as_ref().unwrap();
    assert!(v.passed() && v.balance_ok && v.accounts_ok, "{v:?}");
    // Warm-up and measured transfers were all acknowledged, each left one record.
    assert!(v.acknowledged >= r.ops, "{v:?} {}", r.text());
    assert_eq!((v.unknown, v.applied), (0, v.acknowledged), "{v:?}");
    assert!(r.checks.auditor_reads >= 2 && r.checks.auditor_violations == 0);
}

/// Two servers over one database: clients spread over both, the auditor alternates, and the
/// ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_over_two_servers_of_one_database() {
    let (a, db) = server_with_db().await;
    let bound = KvConnectServer::from_arc(db, ServerConfig::new(TOKEN))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = bound.local_addr();
    tokio::spawn(bound.serve_with_shutdown(std::future::pending()));
    let urls = format!("http://{a},http://{b}");
    let o = Options::parse_from([
        "kv-bench",
        "--url",
        &urls,
        "--access-token",
        TOKEN,
        "--duration-secs",
        "0.3",
        "--warmup-secs",
        "0.05",
        "--workload",
        "bank",
        "--clients",
        "8",
        "--accounts",
        "10",
        "--audit-interval-ms",
        "5",
    ]);
    assert_eq!(o.url.len(), 2);
    let r = kv_bench::run(&o).await.unwrap();
    assert!(r.checks.passed(), "{}", r.text());
    assert_eq!(r.connections, 8);
    assert_eq!(r.unknown_outcomes, 0);
    let v = r.checks.bank_ledger.as_ref().unwrap();
    assert!(v.acknowledged > 0 && v.applied == v.acknowledged, "{v:?}");
    assert!(r.checks.auditor_advanced > 0, "{:?}", r.checks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_sum_matches_commits() {
    let addr = server().await;
    let r = run_ok(addr, &["--workload", "sum", "--clients", "8"]).await;
    assert_eq!(r.checks.sum_ok, Some(true));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["workload"], "sum");
    assert_eq!(json["checks"]["sum_ok"], true);
    assert!(json["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_and_remote_targets_are_refused() {
    let addr = server().await;
    let mut o = opts(addr, &[]);
    o.access_token = "wrong-token-wrong".into();
    match kv_bench::run(&o).await {
        Err(BenchError::Client(ClientError::Status { status, .. })) => assert_eq!(status, 401),
        other => panic!("{other:?}"),
    }
    let mut o = opts(addr, &[]);
    o.url = vec!["http://192.0.2.1:4512".into()];
    assert!(matches!(
        kv_bench::run(&o).await,
        Err(BenchError::Client(ClientError::NotLoopback(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_audit_detects_a_changed_total() {
    use kv_traits::key::{encode_key, KeyPart};
    use kv_traits::{AtomicWrite, Database, KvValue, Mutation};
    let (addr, db) = server_with_db().await;
    // Behind the transfers' back, mint money into account 0 once they are running.
    let key = encode_key(&[
        KeyPart::from("kvbench"),
        KeyPart::from("bank"),
        KeyPart::Float(0.0),
    ])
    .unwrap();
    let tamper = tokio::spawn(async move {
        // Wait for the run to have created the accounts (not a fixed delay: under load the
        // setup can take longer, and a write before it would simply be overwritten). The run
        // measures for 0.3 s after that and then audits once more, so the change is seen.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let found = db
                .snapshot_read(
                    vec![kv_traits::ReadRange::single(&key)],
                    kv_traits::Consistency::Strong,
                )
                .await
                .unwrap();
            if !found[0].is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the bank accounts were not created within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mutations = vec![Mutation::set(key, KvValue::U64(u64::MAX / 4))];
        db.atomic_write(AtomicWrite {
            mutations,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let r = kv_bench::run(&opts(
        addr,
        &[
            "--workload",
            "bank",
            "--clients",
            "4",
            "--accounts",
            "10",
            "--audit-interval-ms",
            "5",
        ],
    ))
    .await
    .unwrap();
    tamper.await.unwrap();
    assert!(r.checks.bank_violations > 0, "{}", r.text());
    assert!(!r.checks.passed());
    assert!(
        r.checks.details.iter().any(|d| d.contains("expected")),
        "{:?}",
        r.checks.details
    );
}

/// More watch streams than hyper's default HTTP/2 stream limit (200) on one connection: every
/// stream opens with the seeded value, changes reach them, every watcher ends at the last write
/// to its key, and the server's memory and CPU (this process) are recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_on_one_connection_see_every_write() {
    let addr = server().await;
    let pid = std::process::id().to_string();
    let r = run_ok(
        addr,
        &[
            "--workload",
            "watch",
            "--watchers",
            "300",
            "--watch-keys",
            "3",
            "--mutations",
            "2",
            "--connections",
            "1",
            "--write-interval-ms",
            "50",
            "--server-pid",
            &pid,
        ],
    )
    .await;
    assert_eq!(r.workload, "watch");
    assert_eq!(r.connections, 1);
    assert_eq!(r.checks.watch_ok, Some(true), "{}", r.text());
    assert_eq!(r.latency_by_kind["open"].count, 300);
    assert!(r.latency_by_kind["write"].count > 0);
    assert!(r.params["deliveries_expected"].as_u64().unwrap() > 0);
    assert!(r.params["server_rss_kib_after_open"].as_u64().unwrap() > 0);
    // Each write sets 2 of the 3 keys, 100 watchers each.
    assert_eq!(r.params["keys_per_write"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_needs_h2() {
    let addr = server().await;
    let err = kv_bench::run(&opts(addr, &["--workload", "watch", "--http", "http1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, BenchError::Options(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivers_every_message_once_and_not_early() {
    let (addr, db) = server_with_db().await;
    let r = run_ok(
        addr,
        &[
            "--workload",
            "queue",
            "--messages",
            "300",
            "--clients",
            "2",
            "--enqueue-batch",
            "7",
            "--listeners",
            "3",
            "--delay-mix",
            "0:2,200:1",
            "--idle-secs",
            "3",
        ],
    )
    .await;
    assert_eq!(r.checks.queue_ok, Some(true), "{}", r.text());
    let q = &r.params["queue"];
    assert_eq!(q["enqueue"]["acked"], 300, "{}", r.text());
    let d = &q["deliver"];
    assert_eq!(d["unique"], 300, "{}", r.text());
    assert_eq!(d["lost"], 0);
    assert_eq!(d["early"], 0);
    assert_eq!(d["duplicates"], 0);
    assert!(d["lateness_delayed"]["count"].as_u64().unwrap() > 0);
    assert_eq!(r.latency_by_kind["finish"].count, 300);
    assert_eq!(
        db.queue_counts().await.unwrap(),
        kv_db::QueueCounts::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_reports_messages_never_delivered() {
    let addr = server().await;
    let enqueue = [
        "--workload",
        "queue",
        "--queue-phase",
        "enqueue",
        "--messages",
        "50",
        "--delay-mix",
        "0:1",
    ];
    let r = run_ok(addr, &enqueue).await;
    assert_eq!(r.params["queue"]["enqueue"]["acked"], 50);
    assert_eq!(r.checks.queue_ok, None);
    // Expecting 60 when 50 were enqueued: 10 are lost, and the check fails.
    let deliver = [
        "--workload",
        "queue",
        "--queue-phase",
        "deliver",
        "--messages",
        "60",
        "--idle-secs",
        "1",
    ];
    let r = kv_bench::run(&opts(addr, &deliver)).await.unwrap();
    assert_eq!(r.params["queue"]["deliver"]["unique"], 50, "{}", r.text());
    assert_eq!(r.params["queue"]["deliver"]["lost"], 10);
    assert_eq!(r.checks.queue_ok, Some(false));
    assert!(!r.checks.passed());
}
