//! Queues end to end over KV Connect: two `Kv::open_remote` clients listen with `listen_queue`
//! while the in-process server (a sqlite `Db` with a 1 s queue lease) is restarted on the same
//! port and file in the middle of the work, and a third client that "crashes" after dequeuing
//! (it never finishes) shows that an expired lease brings the message back.
//!
//! Checked: every message is handled successfully at least once (the always-failing one ends in
//! its dead-letter key instead), both listeners get work, each message's attempt numbers only
//! increase and retries wait for their backoff delays, and the crashed delivery is redelivered
//! after its lease with a higher attempt number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_connect_client::{
    key, Backoff, Delivery, EnqueueOptions, Kv, ListenOptions, RemoteConfig, RemoteDatabase, Value,
};
use kv_connect_server::{KvConnectServer, ServerConfig};
use kv_db::{Db, DbConfig};
use kv_traits::Database;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "queue-e2e-access-token";
const LEASE: Duration = Duration::from_secs(1);

/// Messages that succeed at once.
const OK_MESSAGES: usize = 12;
/// Messages whose handler fails on the first attempt.
const FLAKY_MESSAGES: usize = 4;
const FLAKY_SCHEDULE: [u32; 3] = [300, 300, 300];
/// The always-failing message: delivered 1 + 3 times, then dead-lettered.
const DOOMED_SCHEDULE: [u32; 3] = [250, 400, 550];
/// The message the crashing client takes; retried this long after its lease expired.
const CRASH_SCHEDULE: [u32; 1] = [100];

/// A running in-process server over a sqlite file.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Opens the sqlite file and serves it on `addr` (port 0 picks one); returns the address.
    async fn start(addr: SocketAddr, path: &Path) -> (Server, SocketAddr) {
        let backend =
            kv_engine_sqlite::SqliteBackend::open(path, kv_engine_sqlite::SqliteOptions::default())
                .unwrap();
        let config = DbConfig {
            queue_lease: LEASE,
            maintenance_interval: Duration::from_millis(100),
            ..DbConfig::default()
        };
        let db = Db::open(backend, config).await.unwrap();
        let mut server_config = ServerConfig::new(TOKEN);
        server_config.shutdown_timeout = Duration::from_secs(2);
        // Right after a shutdown the port may linger briefly; retry the bind for a moment.
        let mut tries = 0;
        let bound = loop {
            match KvConnectServer::new(db.clone(), server_config.clone())
                .bind(addr)
                .await
            {
                Ok(b) => break b,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("bind {addr} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let local = bound.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            bound
                .serve_with_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        (Server { stop, task }, local)
    }

    /// Shuts down gracefully and waits until the database is closed.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the server did not shut down within 30 s")
            .unwrap();
    }
}

/// One handler invocation.
#[derive(Clone, Debug)]
struct Record {
    listener: usize,
    message: String,
    attempt: u32,
    success: bool,
    at: Instant,
}

/// What a handler does with a message: fail the first attempt (`flaky-*`), always fail
/// (`doomed`), or succeed.
fn outcome(message: &str, attempt: u32) -> bool {
    if message.starts_with("flaky-") {
        attempt > 1
    } else {
        message != "doomed"
    }
}

fn client_config(addr: SocketAddr) -> RemoteConfig {
    let mut c = RemoteConfig::new(format!("http://{addr}"), TOKEN);
    // Reconnect quickly while the server restarts.
    c.backoff = Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    c.max_retries = Some(40);
    c
}

/// Starts a listener whose handler records every delivery.
fn listen(listener: usize, kv: Kv, log: Arc<Mutex<Vec<Record>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let options = ListenOptions {
            concurrency: 2,
            poll_wait: Duration::from_millis(500),
            error_backoff: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_millis(300),
            },
        };
        kv.listen_queue_with(options, move |d: Delivery| {
            let log = log.clone();
            async move {
                let message = d.value.as_str().unwrap_or("<not a string>").to_string();
                let success = outcome(&message, d.attempt);
                log.lock().unwrap().push(Record {
                    listener,
                    message: message.clone(),
                    attempt: d.attempt,
                    success,
                    at: Instant::now(),
                });
                // Keep handlers busy for a while so that work spreads over both listeners and
                // some is in flight during the restart.
                tokio::time::sleep(Duration::from_millis(80)).await;
                if success {
                    Ok(())
                } else {
                    Err(format!("{message} fails attempt {}", d.attempt))
                }
            }
        })
        .await
        .unwrap();
    })
}

fn opts(schedule: &[u32], dead_letter: bool) -> EnqueueOptions {
    EnqueueOptions {
        backoff_schedule: Some(schedule.to_vec()),
        keys_if_undelivered: if dead_letter {
            vec![key!["dead", "doomed"]]
        } else {
            vec![]
        },
        ..EnqueueOptions::default()
    }
}

/// Messages handled successfully so far.
fn succeeded(log: &Mutex<Vec<Record>>) -> Vec<String> {
    let mut done: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.success)
        .map(|r| r.message.clone())
        .collect();
    done.sort();
    done.dedup();
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_survive_a_restart_and_a_crashed_listener() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    let (server, addr) = Server::start("127.0.0.1:0".parse().unwrap(), &path).await;

    // The crashing client takes the first message and never finishes it.
    let producer = Kv::open_remote_with(client_config(addr)).await.unwrap();
    producer
        .enqueue("crash", opts(&CRASH_SCHEDULE, false))
        .await
        .unwrap();
    let crasher = RemoteDatabase::open_with(client_config(addr))
        .await
        .unwrap();
    assert!(crasher.supports_queues());
    let crashed = crasher
        .dequeue(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the crashing client gets the first message");
    let crashed_at = Instant::now();
    assert_eq!(
        Value::from_v8_bytes(crashed.payload.clone()),
        Value::from("crash")
    );
    assert_eq!(crashed.attempt, 1);
    // "Crash": the client goes away without finishing.
    drop(crashed);
    crasher.close().await.unwrap();

    // Two listeners, then the rest of the messages.
    let log = Arc::new(Mutex::new(Vec::<Record>::new()));
    let kv1 = Kv::open_remote_with(client_config(addr)).await.unwrap();
    let kv2 = Kv::open_remote_with(client_config(addr)).await.unwrap();
    let l1 = listen(1, kv1.clone(), log.clone());
    let l2 = listen(2, kv2.clone(), log.clone());

    let mut expected: Vec<String> = vec!["crash".into()];
    for i in 0..OK_MESSAGES {
        let m = format!("ok-{i:02}");
        producer
            .enqueue(m.as_str(), EnqueueOptions::default())
            .await
            .unwrap();
        expected.push(m);
    }
    for i in 0..FLAKY_MESSAGES {
        let m = format!("flaky-{i}");
        producer
            .enqueue(m.as_str(), opts(&FLAKY_SCHEDULE, false))
            .await
            .unwrap();
        expected.push(m);
    }
    producer
        .enqueue("doomed", opts(&DOOMED_SCHEDULE, true))
        .await
        .unwrap();
    expected.sort();

    // Restart while deliveries, retries and the crashed lease are in flight: once the
    // listeners have handled something (waited for, not assumed after a fixed delay). The
    // doomed message's retries alone keep work pending for over a second after that.
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no delivery within 30 s of the first enqueue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_restart = log.lock().unwrap().len();
    server.stop().await;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (server, addr2) = Server::start(addr, &path).await;
    assert_eq!(addr2, addr);
    eprintln!(
        "restarted after {:?} ({before_restart} deliveries before the restart)",
        down_at.elapsed()
    );

    // Wait until everything is handled and the doomed message is dead-lettered.
    let dead_key = key!["dead", "doomed"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = succeeded(&log);
        let dead = producer.get(&dead_key).await.unwrap().value;
        if expected.iter().all(|m| done.contains(m)) && dead.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done within 60 s: handled {done:?}, dead letter {dead:?}, log {:#?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give stray redeliveries (at-least-once) a moment to show up before checking the log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log_snapshot = log.lock().unwrap().clone();
    for r in &log_snapshot {
        eprintln!(
            "{:>6} ms  listener {}  {:<8} attempt {}  {}",
            (r.at - started).as_millis(),
            r.listener,
            r.message,
            r.attempt,
            if r.success { "ok" } else { "failed" }
        );
    }

    // Every message but the doomed one succeeded at least once; the doomed one never did and
    // its payload is in the dead-letter key.
    let done = succeeded(&log);
    for m in &expected {
        assert!(done.contains(m), "{m} was never handled successfully");
    }
    assert!(!done.contains(&"doomed".to_string()));
    assert_eq!(
        producer.get(&dead_key).await.unwrap().value,
        Some(Value::from("doomed"))
    );
    assert!(before_restart > 0, "no work before the restart");
    assert!(
        log_snapshot.len() > before_restart,
        "no work after the restart"
    );

    // Both listeners received work.
    for listener in [1, 2] {
        let n = log_snapshot
            .iter()
            .filter(|r| r.listener == listener)
            .count();
        assert!(n > 0, "listener {listener} received nothing");
    }

    // Per message, attempts only increase (in the order the handlers started).
    let mut by_message: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in &log_snapshot {
        by_message.entry(r.message.as_str()).or_default().push(r);
    }
    for (m, records) in &by_message {
        for pair in records.windows(2) {
            assert!(
                pair[1].attempt > pair[0].attempt,
                "{m}: attempt {} followed attempt {}: {records:#?}",
                pair[1].attempt,
                pair[0].attempt
            );
        }
    }

    // Flaky messages: attempt 1 failed, a later attempt succeeded, after the backoff delay.
    for i in 0..FLAKY_MESSAGES {
        let m = format!("flaky-{i}");
        let records = &by_message[m.as_str()];
        let ok = records
            .iter()
            .find(|r| r.success)
            .expect("flaky message succeeded");
        assert!(ok.attempt >= 2, "{m}: {records:#?}");
        if let Some(first) = records.iter().find(|r| r.attempt == 1) {
            assert!(!first.success);
        }
    }

    // The doomed message: at most 1 + schedule length attempts, each failed, and consecutive
    // attempts at least their backoff delay apart (minus scheduling slack).
    let doomed = &by_message["doomed"];
    assert!(
        doomed.len() >= 2,
        "doomed was retried at least once: {doomed:#?}"
    );
    let max_attempt = 1 + DOOMED_SCHEDULE.len() as u32;
    for r in doomed {
        assert!(!r.success);
        assert!(
            r.attempt <= max_attempt,
            "doomed delivered too often: {doomed:#?}"
        );
    }
    for pair in doomed.windows(2) {
        if pair[1].attempt == pair[0].attempt + 1 {
            let delay =
                Duration::from_millis(u64::from(DOOMED_SCHEDULE[(pair[0].attempt - 1) as usize]));
            let gap = pair[1].at - pair[0].at;
            assert!(
                gap + Duration::from_millis(50) >= delay,
                "doomed attempt {} came {gap:?} after attempt {}, before its {delay:?} backoff",
                pair[1].attempt,
                pair[0].attempt
            );
        }
    }

    // The crashed delivery came back after its lease expired, as a later attempt.
    let crash = &by_message["crash"];
    let redelivered = crash.iter().find(|r| r.success).expect("crash redelivered");
    assert!(redelivered.attempt >= 2, "{crash:#?}");
    let waited = redelivered.at - crashed_at;
    assert!(
        waited >= LEASE - Duration::from_millis(50),
        "the crashed delivery came back after {waited:?}, before its {LEASE:?} lease expired"
    );

    // Shut everything down.
    kv1.close().await.unwrap();
    kv2.close().await.unwrap();
    for l in [l1, l2] {
        tokio::time::timeout(Duration::from_secs(30), l)
            .await
            .expect("listener stops after close")
            .unwrap();
    }
    producer.close().await.unwrap();
    server.stop().await;
    eprintln!("queue end-to-end test took {:?}", started.elapsed());
}
