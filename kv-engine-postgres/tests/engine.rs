//! Tests specific to the PostgreSQL engine: ordering and the index, write-transaction overlay
//! scans, rollback on drop, snapshots across connections, the writer lock across backends,
//! format refusal, error messages, close, and lost commits.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_engine_postgres::outcome::Outcome;
use kv_engine_postgres::{PostgresBackend, PostgresOptions};
use kv_traits::{Backend, BackendError, KvPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

async fn put_all(b: &PostgresBackend, pairs: &[(&[u8], &[u8])]) {
    let mut w = b.begin_write().await.unwrap();
    for (k, v) in pairs {
        w.put(k, v).await.unwrap();
    }
    w.commit().await.unwrap();
}

async fn get(b: &PostgresBackend, key: &[u8]) -> Option<Vec<u8>> {
    b.begin_read().await.unwrap().get(key).await.unwrap()
}

async fn same_schema(b: &PostgresBackend) -> PostgresBackend {
    PostgresBackend::connect(common::url(), common::options(b.schema()))
        .await
        .unwrap()
}

#[tokio::test]
async fn bytea_keys_scan_in_unsigned_bytewise_order_using_the_primary_key_both_ways() {
    let b = common::fresh("order").await.unwrap();
    let keys: Vec<&[u8]> = vec![
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x01",
        b"\x7f",
        b"\x80",
        b"\xfe\xff",
        b"\xff",
        b"\xff\x00",
        b"A",
        b"a",
        b"a\x00",
        b"ab",
    ];
    let mut w = b.begin_write().await.unwrap();
    for k in &keys {
        w.put(k, b"v").await.unwrap();
    }
    w.commit().await.unwrap();
    let mut sorted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    sorted.sort();
    let mut r = b.begin_read().await.unwrap();
    let asc: Vec<Vec<u8>> = r
        .scan(b"", b"\xff\xff", 100, false)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(asc, sorted);
    let desc: Vec<Vec<u8>> = r
        .scan(b"", b"\xff\xff", 100, true)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    sorted.reverse();
    assert_eq!(desc, sorted);
    drop(r);

    // Enough rows that a sequential scan would be the worse plan; then EXPLAIN the engine's scans.
    let mut w = b.begin_write().await.unwrap();
    for i in 0..5000u32 {
        w.put(&[b"row".as_slice(), &i.to_be_bytes()].concat(), b"x")
            .await
            .unwrap();
    }
    w.commit().await.unwrap();
    let c = common::raw_client().await;
    c.batch_execute(&format!("ANALYZE \"{}\".kv", b.schema()))
        .await
        .unwrap();
    for (order, expected) in [
        ("ASC", "Index Scan using kv_pkey"),
        ("DESC", "Index Scan Backward using kv_pkey"),
    ] {
        let sql = format!(
            "EXPLAIN SELECT k, v FROM \"{}\".kv WHERE k >= $1 AND k < $2 ORDER BY k {order} LIMIT $3",
            b.schema()
        );
        let plan: Vec<String> = c
            .query(&sql, &[&b"row".as_slice(), &b"rox".as_slice(), &10i64])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(expected), "{order} plan:\n{plan}");
        assert!(!plan.contains("Sort"), "{order} plan sorts:\n{plan}");
    }
}

/// Reference: the committed map with the overlay applied, scanned.
fn reference(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    s: &[u8],
    e: &[u8],
    limit: usize,
    rev: bool,
) -> Vec<KvPair> {
    let it = map
        .iter()
        .filter(|(k, _)| k.as_slice() >= s && k.as_slice() < e)
        .map(|(k, v)| (k.clone(), v.clone()));
    if rev {
        it.rev().take(limit).collect()
    } else {
        it.take(limit).collect()
    }
}

#[tokio::test]
async fn write_txn_reads_and_scans_merge_its_own_writes_in_both_directions() {
    let b = common::fresh("overlay").await.unwrap();
    let mut model = BTreeMap::new();
    let mut w = b.begin_write().await.unwrap();
    for k in [b"b", b"d", b"f", b"h", b"j", b"l"] {
        w.put(k, b"db").await.unwrap();
        model.insert(k.to_vec(), b"db".to_vec());
    }
    w.commit().await.unwrap();

    let mut w = b.begin_write().await.unwrap();
    for (k, v) in [
        (b"a", Some(b"o1")),
        (b"d", None),
        (b"e", Some(b"o2")),
        (b"f", Some(b"o3")),
        (b"h", None),
        (b"j", None),
        (b"m", Some(b"o4")),
    ] {
        match v {
            Some(v) => {
                w.put(k, v).await.unwrap();
                model.insert(k.to_vec(), v.to_vec());
            }
            None => {
                w.delete(k).await.unwrap();
                model.remove(k.as_slice());
            }
        }
    }
    assert_eq!(w.get(b"d").await.unwrap(), None);
    assert_eq!(w.get(b"f").await.unwrap(), Some(b"o3".to_vec()));
    assert_eq!(w.get(b"l").await.unwrap(), Some(b"db".to_vec()));
    for (s, e) in [
        (&b"a"[..], &b"z"[..]),
        (b"c", b"k"),
        (b"d", b"e"),
        (b"e", b"f"),
        (b"z", b"a"),
    ] {
        for limit in 0..10 {
            for rev in [false, true] {
                let got = w.scan(s, e, limit, rev).await.unwrap();
                assert_eq!(
                    got,
                    reference(&model, s, e, limit, rev),
                    "{s:?}..{e:?} limit {limit} rev {rev}"
                );
            }
        }
    }
    w.commit().await.unwrap();
    let mut r = b.begin_read().await.unwrap();
    assert_eq!(
        r.scan(b"", b"\xff", 100, false).await.unwrap(),
        reference(&model, b"", b"\xff", 100, false)
    );
}

#[tokio::test]
async fn dropping_a_write_txn_rolls_back_and_releases_the_writer_lock() {
    let b = common::fresh("drop").await.unwrap();
    let other = same_schema(&b).await;
    put_all(&b, &[(b"k", b"old")]).await;
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"new").await.unwrap();
    w.put(b"x", b"1").await.unwrap();
    // Read something so the transaction is really open on the server.
    assert_eq!(w.get(b"k").await.unwrap(), Some(b"new".to_vec()));
    drop(w);
    // Both this process and another one get the writer lock again.
    let mut w2 = tokio::time::timeout(WAIT, other.begin_write())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w2.get(b"k").await.unwrap(), Some(b"old".to_vec()));
    assert_eq!(w2.get(b"x").await.unwrap(), None);
    drop(w2);
    let w3 = tokio::time::timeout(WAIT, b.begin_write())
        .await
        .unwrap()
        .unwrap();
    drop(w3);
    assert_eq!(get(&b, b"k").await, Some(b"old".to_vec()));
    // The pooled connections are usable (not left inside a transaction): many reads in a row.
    for _ in 0..20 {
        let mut r = b.begin_read().await.unwrap();
        assert_eq!(r.get(b"x").await.unwrap(), None);
    }
    put_all(&b, &[(b"x", b"2")]).await;
    assert_eq!(get(&other, b"x").await, Some(b"2".to_vec()));
}

#[tokio::test]
async fn a_read_txn_keeps_its_snapshot_across_connections_and_processes() {
    let b = common::fresh("snap").await.unwrap();
    let other = same_schema(&b).await;
    put_all(&b, &[(b"a", b"1"), (b"b", b"1")]).await;
    // The snapshot is taken when the transaction begins, before its first read.
    let mut early = b.begin_read().await.unwrap();
    let mut r = b.begin_read().await.unwrap();
    assert_eq!(r.get(b"a").await.unwrap(), Some(b"1".to_vec()));
    put_all(&other, &[(b"a", b"2"), (b"c", b"2")]).await;
    let mut w = other.begin_write().await.unwrap();
    w.delete(b"b").await.unwrap();
    w.commit().await.unwrap();
    for txn in [&mut early, &mut r] {
        assert_eq!(txn.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            txn.scan(b"", b"z", 10, false).await.unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"1".to_vec())
            ]
        );
    }
    let mut fresh = b.begin_read().await.unwrap();
    assert_eq!(
        fresh.scan(b"", b"z", 10, true).await.unwrap(),
        vec![
            (b"c".to_vec(), b"2".to_vec()),
            (b"a".to_vec(), b"2".to_vec())
        ]
    );
}

#[tokio::test]
async fn the_writer_lock_orders_write_txns_of_two_backends_on_one_database() {
    let a = Arc::new(common::fresh("lock").await.unwrap());
    let b = Arc::new(same_schema(&a).await);
    let mut wa = a.begin_write().await.unwrap();
    wa.put(b"k", b"from a").await.unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move {
        let mut wb = b2.begin_write().await.unwrap();
        let seen = wb.get(b"k").await.unwrap();
        wb.put(b"k", b"from b").await.unwrap();
        wb.commit().await.unwrap();
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "b began a write while a held the writer lock"
    );
    wa.commit().await.unwrap();
    let seen = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert_eq!(
        seen,
        Some(b"from a".to_vec()),
        "b's write txn must see a's earlier commit"
    );
    assert_eq!(get(&a, b"k").await, Some(b"from b".to_vec()));

    // Read-modify-write from both backends concurrently: no update is lost.
    let mut tasks = Vec::new();
    for (i, backend) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                let mut w = backend.begin_write().await.unwrap();
                let n = w
                    .get(b"counter")
                    .await
                    .unwrap()
                    .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
                    .unwrap_or(0);
                w.put(b"counter", &(n + 1).to_be_bytes()).await.unwrap();
                w.put(format!("by{i}-{n}").as_bytes(), b"").await.unwrap();
                w.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        get(&b, b"counter").await,
        Some(60u64.to_be_bytes().to_vec())
    );
}

#[tokio::test]
async fn a_deadlock_with_another_session_is_a_conflict() {
    let b = Arc::new(common::fresh("deadlock").await.unwrap());
    put_all(&b, &[(b"a", b"0")]).await;
    let other = Arc::new(common::raw_client().await);
    // The other session locks row "a" ...
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE \"{}\".kv SET v = 'x' WHERE k = 'a'",
            b.schema()
        ))
        .await
        .unwrap();
    // ... our commit waits for it while holding the writer lock ...
    let mut w = b.begin_write().await.unwrap();
    w.put(b"a", b"1").await.unwrap();
    let commit = tokio::spawn(w.commit());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... and the other session waits for the writer lock: a deadlock.
    let key = b.writer_lock_key();
    let other2 = other.clone();
    let lock = tokio::spawn(async move {
        other2
            .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
            .await
    });
    let err = tokio::time::timeout(WAIT, commit)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Conflict(m) if m.message().contains("40P01")),
        "{err}"
    );
    // The driver's error is the source, with the server's SQLSTATE.
    let source = std::error::Error::source(&err).expect("a source");
    let native = source
        .downcast_ref::<tokio_postgres::Error>()
        .expect("the source is the driver's error");
    assert_eq!(
        native.code(),
        Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
    );
    tokio::time::timeout(WAIT, lock)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    other.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(get(&b, b"a").await, Some(b"0".to_vec()));
}

#[tokio::test]
async fn an_unknown_or_newer_format_and_foreign_tables_are_refused() {
    let b = common::fresh("format").await.unwrap();
    let schema = b.schema().to_string();
    b.close().await.unwrap();
    let c = common::raw_client().await;
    c.batch_execute(&format!(
        "UPDATE \"{schema}\".kv_meta SET value = '2' WHERE key = 'format_version'"
    ))
    .await
    .unwrap();
    let err = PostgresBackend::connect(common::url(), common::options(&schema))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BackendError::UnsupportedFormat {
            found: 2,
            supported: kv_engine_postgres::FORMAT_VERSION
        }
    );
    // Nothing was modified.
    let v: String = c
        .query_one(&format!("SELECT value FROM \"{schema}\".kv_meta"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "2");

    let foreign = common::fresh_schema("foreign");
    c.batch_execute(&format!(
        "CREATE SCHEMA \"{foreign}\"; CREATE TABLE \"{foreign}\".kv (x int)"
    ))
    .await
    .unwrap();
    let err = PostgresBackend::connect(common::url(), common::options(&foreign))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::Corrupt(m) if m.message().contains("not a kv-engine-postgres store")),
        "{err}"
    );
}

#[tokio::test]
async fn connection_errors_name_the_problem_and_never_the_password() {
    let (host, port) = common::server_addr();
    let o = || PostgresOptions {
        connect_timeout: Duration::from_secs(5),
        ..PostgresOptions::default()
    };

    let err = PostgresBackend::connect("postgres://kvtest:hunter2@127.0.0.1:notaport/db", o())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("invalid PostgreSQL URL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let pw: tokio_postgres::Config = common::password_url().parse().unwrap();
    let url = format!(
        "host={host} port={port} user={} password=wrong-hunter2 dbname={}",
        pw.get_user().unwrap(),
        pw.get_dbname().unwrap()
    );
    let text = PostgresBackend::connect(&url, o())
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains(&format!("{host}:{port}")), "{text}");
    assert!(!text.contains("wrong-hunter2"), "{text}");

    let c = common::config();
    let url = common::url_via(&host, port, "").replace(
        &format!("dbname='{}'", c.get_dbname().unwrap()),
        "dbname='no_such_db_kv'",
    );
    let text = PostgresBackend::connect(&url, o())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("no_such_db_kv") && text.contains("does not exist"),
        "{text}"
    );

    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = PostgresBackend::connect(&common::url_via("127.0.0.1", closed, ""), o())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("cannot connect to PostgreSQL")
            && text.contains(&format!("127.0.0.1:{closed}")),
        "{text}"
    );
}

#[tokio::test]
async fn a_connection_lost_mid_read_is_a_clear_error() {
    let app = format!("kvtest_lost_{}", rand::random::<u32>());
    let (host, port) = common::server_addr();
    let url = common::url_via(&host, port, &format!("application_name={app}"));
    let b = PostgresBackend::connect(&url, common::options(&common::fresh_schema("lost")))
        .await
        .unwrap();
    put_all(&b, &[(b"a", b"1")]).await;
    let mut r = b.begin_read().await.unwrap();
    assert_eq!(r.get(b"a").await.unwrap(), Some(b"1".to_vec()));
    let c = common::raw_client().await;
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&app],
    )
    .await
    .unwrap();
    let err = r.get(b"a").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackendError::Io(_)), "{text}");
    assert!(
        text.contains("connection") && (text.contains("lost") || text.contains("terminat")),
        "{text}"
    );
    drop(r);
    // The pool recovers with new connections.
    assert_eq!(get(&b, b"a").await, Some(b"1".to_vec()));
}

#[tokio::test]
async fn close_makes_later_calls_fail_with_closed() {
    let b = common::fresh("close").await.unwrap();
    put_all(&b, &[(b"a", b"1")]).await;
    b.close().await.unwrap();
    assert_eq!(b.begin_read().await.err(), Some(BackendError::Closed));
    assert_eq!(b.begin_write().await.err(), Some(BackendError::Closed));
    // The data is still there for a new backend.
    let again = PostgresBackend::connect(common::url(), common::options(b.schema()))
        .await
        .unwrap();
    assert_eq!(get(&again, b"a").await, Some(b"1".to_vec()));
}

#[tokio::test]
async fn outcome_resolution_waits_for_the_original_and_reports_what_happened() {
    let b = common::fresh("resolve").await.unwrap();
    let table = b.outcome_table().to_string();
    let c = common::raw_client().await;
    // Committed id.
    c.execute(
        &format!("INSERT INTO {table} (id) VALUES ($1)"),
        &[&b"committed-id".as_slice()],
    )
    .await
    .unwrap();
    assert_eq!(b.resolve_outcome(b"committed-id").await, Outcome::Committed);
    // Never-seen id: not committed, and fenced.
    assert_eq!(b.resolve_outcome(b"absent-id").await, Outcome::NotCommitted);
    assert_eq!(
        b.resolve_outcome(b"absent-id").await,
        Outcome::Committed,
        "the probe's row fences the id"
    );

    for commit in [true, false] {
        let id = format!("in-flight-{commit}");
        let mut raw = common::raw_client().await;
        let t = raw.transaction().await.unwrap();
        t.execute(
            &format!("INSERT INTO {table} (id) VALUES ($1)"),
            &[&id.as_bytes()],
        )
        .await
        .unwrap();
        let b2 = b.clone();
        let id2 = id.clone();
        let probe = tokio::spawn(async move { b2.resolve_outcome(id2.as_bytes()).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !probe.is_finished(),
            "the probe must wait for the open transaction"
        );
        if commit {
            t.commit().await.unwrap();
        } else {
            t.rollback().await.unwrap();
        }
        let got = tokio::time::timeout(WAIT, probe).await.unwrap().unwrap();
        assert_eq!(
            got,
            if commit {
                Outcome::Committed
            } else {
                Outcome::NotCommitted
            }
        );
    }
}

#[tokio::test]
async fn old_outcome_ids_are_purged() {
    let schema = common::fresh_schema("purge");
    let b = PostgresBackend::connect(
        common::url(),
        PostgresOptions {
            outcome_retention: Duration::ZERO,
            ..common::options(&schema)
        },
    )
    .await
    .unwrap();
    for i in 0..258u32 {
        put_all(&b, &[(b"k", &i.to_be_bytes())]).await;
    }
    let c = common::raw_client().await;
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {}", b.outcome_table()), &[])
        .await
        .unwrap()
        .get(0);
    // Commit 256 purged the 255 before it; 256 and 257 remain.
    assert_eq!(n, 2);
}

/// What the proxy does to the next `COMMIT` it sees.
const PASS: u8 = 0;
/// Close the connection without forwarding the COMMIT.
const DROP_COMMIT: u8 = 1;
/// Forward the COMMIT, then close the connection before the answer.
const KILL_AFTER_COMMIT: u8 = 2;
/// Like DROP_COMMIT, and cut every other connection and refuse new ones until `revive`.
const DROP_COMMIT_AND_DIE: u8 = 3;

/// A TCP proxy to the test server that can cut a connection at its next `COMMIT`.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    dead: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (host, server_port) = common::server_addr();
        let mode = Arc::new(AtomicU8::new(PASS));
        let (dead, _) = tokio::sync::watch::channel(false);
        let (mode2, dead2) = (mode.clone(), dead.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *dead2.borrow() {
                    continue; // dropped: refused
                }
                let Ok(mut server) = TcpStream::connect((host.as_str(), server_port)).await else {
                    continue;
                };
                let (mode, dead) = (mode2.clone(), dead2.clone());
                let mut dead_rx = dead.subscribe();
                tokio::spawn(async move {
                    let mut cbuf = vec![0u8; 65536];
                    let mut sbuf = vec![0u8; 65536];
                    loop {
                        tokio::select! {
                            _ = dead_rx.changed() => {
                                if *dead_rx.borrow() { return; }
                            }
                            n = client.read(&mut cbuf) => {
                                let Ok(n) = n else { return };
                                if n == 0 { return; }
                                let chunk = &cbuf[..n];
                                let is_commit = chunk.windows(7).any(|w| w == b"COMMIT\0");
                                let m = if is_commit { mode.swap(PASS, Ordering::SeqCst) } else { PASS };
                                if m == DROP_COMMIT { return; }
                                if m == DROP_COMMIT_AND_DIE {
                                    dead.send_replace(true);
                                    return;
                                }
                                if server.write_all(chunk).await.is_err() { return; }
                                if m == KILL_AFTER_COMMIT {
                                    let _ = server.flush().await;
                                    // Let the server read the COMMIT before the connection closes.
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    return;
                                }
                            }
                            n = server.read(&mut sbuf) => {
                                let Ok(n) = n else { return };
                                if n == 0 { return; }
                                if client.write_all(&sbuf[..n]).await.is_err() { return; }
                            }
                        }
                    }
                });
            }
        });
        Proxy { port, mode, dead }
    }

    fn url(&self) -> String {
        common::url_via("127.0.0.1", self.port, "sslmode=disable")
    }

    fn next_commit(&self, m: u8) {
        self.mode.store(m, Ordering::SeqCst);
    }

    fn revive(&self) {
        self.dead.send_replace(false);
    }
}

#[tokio::test]
async fn a_commit_whose_connection_is_lost_is_resolved() {
    let proxy = Proxy::start().await;
    let b = PostgresBackend::connect(
        &proxy.url(),
        common::options(&common::fresh_schema("lostcommit")),
    )
    .await
    .unwrap();
    put_all(&b, &[(b"k", b"0")]).await;

    // COMMIT never reaches the server: verified not committed.
    proxy.next_commit(DROP_COMMIT);
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"1").await.unwrap();
    let err = w.commit().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackendError::Conflict(_)), "{text}");
    assert!(
        text.contains("connection lost during COMMIT") && text.contains("NOT committed"),
        "{text}"
    );
    assert_eq!(get(&b, b"k").await, Some(b"0".to_vec()));

    // COMMIT reaches the server, the answer is lost: verified committed, Ok.
    proxy.next_commit(KILL_AFTER_COMMIT);
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"2").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        proxy.mode.load(Ordering::SeqCst),
        PASS,
        "the proxy cut the COMMIT"
    );
    assert_eq!(get(&b, b"k").await, Some(b"2".to_vec()));

    // Later writes work.
    put_all(&b, &[(b"k", b"3")]).await;
    assert_eq!(get(&b, b"k").await, Some(b"3".to_vec()));
}

#[tokio::test]
async fn an_unresolvable_commit_outcome_is_reported_as_unknown() {
    let proxy = Proxy::start().await;
    let b = PostgresBackend::connect(
        &proxy.url(),
        PostgresOptions {
            connect_timeout: Duration::from_secs(1),
            ..common::options(&common::fresh_schema("unknown"))
        },
    )
    .await
    .unwrap();
    put_all(&b, &[(b"k", b"0")]).await;
    proxy.next_commit(DROP_COMMIT_AND_DIE);
    let mut w = b.begin_write().await.unwrap();
    w.put(b"k", b"1").await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), w.commit())
        .await
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackendError::UnknownOutcome(_)), "{text}");
    assert!(text.contains("outcome is UNKNOWN"), "{text}");
    proxy.revive();
    put_all(&b, &[(b"k", b"2")]).await;
    assert_eq!(get(&b, b"k").await, Some(b"2".to_vec()));
}

/// Commits of one process reach another as push signals (`LISTEN`/`NOTIFY`), and only for
/// their own store: a commit to another schema wakes nobody here.
#[tokio::test]
async fn commits_are_pushed_to_other_processes_of_the_same_store() {
    use futures::StreamExt;
    let a = common::fresh("notify").await.unwrap();
    let b = same_schema(&a).await;
    let other = common::fresh("notify-other").await.unwrap();
    assert!(a.shared() && b.shared());
    let mut signals = b.commit_signals().expect("postgres pushes commit signals");
    // The listener connects in the background: commit until a signal arrives.
    tokio::time::timeout(WAIT, async {
        loop {
            put_all(&a, &[(b"n", b"1")]).await;
            if tokio::time::timeout(Duration::from_millis(200), signals.next())
                .await
                .is_ok()
            {
                return;
            }
        }
    })
    .await
    .expect("a commit through another backend signalled this one");
    // Let stragglers of the loop above arrive, then a foreign commit must stay silent.
    while tokio::time::timeout(Duration::from_millis(300), signals.next())
        .await
        .is_ok()
    {}
    put_all(&other, &[(b"x", b"1")]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), signals.next())
            .await
            .is_err(),
        "a commit to another schema woke this store's listeners"
    );
    put_all(&a, &[(b"n", b"2")]).await;
    tokio::time::timeout(WAIT, signals.next())
        .await
        .expect("signalled again");
}
