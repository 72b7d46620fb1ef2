//! Conformance over the wire: every [`Database`]-level test of the suite runs through
//! `RemoteDatabase` (KV Connect client) → in-process `kv-connect-server` → `kv_db::Db` → engine,
//! once per engine (memory, sqlite and redb in a temporary directory). Each test gets a fresh
//! database behind a fresh server.
//!
//! The manual-clock, background and persistence tests need direct access to the `Db` (moving
//! its clock, calling `run_maintenance`, reopening the backend), so `run_database_suite` does not
//! include them; the engines' own suites run them, and queues over the wire are covered by
//! `kv-connect-client/tests/queue_e2e.rs` and `kv-connect-server/tests/queue_ext.rs`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kv_conformance::harness::{block_on, database_suite_report, database_tests, DatabaseFactory};
use kv_connect_client::RemoteDatabase;
use kv_connect_server::{KvConnectServer, ServerConfig};
use kv_db::{Db, DbConfig};
use kv_traits::{
    AtomicWrite, CommitResult, Consistency, Database, KvEntry, KvError, QueueLease, QueueMessage,
    ReadRange, WatchStream,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "conformance-over-the-wire";

/// A `RemoteDatabase` talking to its own in-process server; closing it also stops the server
/// (which closes the `Db`).
struct Served {
    remote: RemoteDatabase,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

#[async_trait]
impl Database for Served {
    async fn snapshot_read(
        &self,
        ranges: Vec<ReadRange>,
        consistency: Consistency,
    ) -> Result<Vec<Vec<KvEntry>>, KvError> {
        self.remote.snapshot_read(ranges, consistency).await
    }
    async fn atomic_write(&self, write: AtomicWrite) -> Result<CommitResult, KvError> {
        self.remote.atomic_write(write).await
    }
    async fn watch(&self, keys: Vec<Vec<u8>>) -> Result<WatchStream, KvError> {
        self.remote.watch(keys).await
    }
    async fn dequeue(&self, wait: Duration) -> Result<Option<QueueMessage>, KvError> {
        self.remote.dequeue(wait).await
    }
    async fn finish(&self, lease: QueueLease, success: bool) -> Result<(), KvError> {
        self.remote.finish(lease, success).await
    }
    async fn close(&self) -> Result<(), KvError> {
        let closed = self.remote.close().await;
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            // Graceful shutdown waits for the client's pooled connections to go idle; don't let
            // a slow one hold up the next test.
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        closed
    }
}

/// Serves `db` on a free port and connects a `RemoteDatabase` to it.
async fn serve(db: Db) -> Result<Arc<dyn Database>, KvError> {
    let bound = KvConnectServer::new(db, ServerConfig::new(TOKEN))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .map_err(|e| KvError::Transport(e.to_string()))?;
    let addr = bound.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        if let Err(e) = bound
            .serve_with_shutdown(async move {
                let _ = stopped.await;
            })
            .await
        {
            eprintln!("server on {addr} ended with an error: {e}");
        }
    });
    let remote = RemoteDatabase::open(format!("http://{addr}"), TOKEN).await?;
    Ok(Arc::new(Served {
        remote,
        stop: Mutex::new(Some(stop)),
        server: Mutex::new(Some(server)),
    }))
}

/// Databases of one engine behind a fresh server each; file engines get a new file per test in
/// a temporary directory.
struct Factory {
    engine: Engine,
    dir: tempfile::TempDir,
    next: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Memory,
    Sqlite,
    Redb,
}

impl Factory {
    fn new(engine: Engine) -> Self {
        Factory {
            engine,
            dir: tempfile::tempdir().unwrap(),
            next: AtomicU64::new(0),
        }
    }

    fn fresh_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("db-{n}"))
    }
}

#[async_trait]
impl DatabaseFactory for Factory {
    async fn create(&self) -> Result<Arc<dyn Database>, KvError> {
        let config = DbConfig::default();
        let db = match self.engine {
            Engine::Memory => Db::open(kv_engine_memory::MemoryBackend::new(), config).await?,
            Engine::Sqlite => {
                let backend = kv_engine_sqlite::SqliteBackend::open(
                    self.fresh_path(),
                    kv_engine_sqlite::SqliteOptions::default(),
                )?;
                Db::open(backend, config).await?
            }
            Engine::Redb => {
                let backend = kv_engine_redb::RedbBackend::open(
                    self.fresh_path(),
                    kv_engine_redb::RedbOptions::default(),
                )?;
                Db::open(backend, config).await?
            }
        };
        serve(db).await
    }
}

/// Tests whose property cannot hold through KV Connect, with the failure text they are allowed
/// to fail with and why. Any other failure, or one of these failing differently, fails the run.
///
/// - `watch::slow_watcher_gets_latest_state` asserts that the first notification a watcher
///   reads after a burst of 200 writes (without polling in between) carries the latest state.
///   An embedded `Db` builds the notification when polled, so it does. `/watch` is a server-push
///   stream (kv-connect.md §3.5): the server sends a frame per change while the client is not
///   reading. The client merges every frame it has received when polled, so the test normally
///   passes here too, but nothing orders the last write's watch frame before that write's
///   commit response (separate streams, sent by separate server tasks), so the frame can still
///   be in flight when the test reads its one notification: the failure stays tolerated. What
///   always holds remotely (ordered, never backwards, reaches the latest state) is checked by
///   `watch::notifications_never_go_backwards` and `watch::write_produces_notification`.
const REMOTE_LIMITATIONS: &[(&str, &str)] = &[(
    "watch::slow_watcher_gets_latest_state",
    "the first notification after a burst must carry the latest state",
)];

/// Runs the database-level suite over the wire for `engine`, failing with every failure listed.
fn run(engine: Engine) {
    let factory = Factory::new(engine);
    let mut report = block_on(database_suite_report(&factory));
    let ran = report.passed.len() + report.failed.len();
    report.failed.retain(|(name, message)| {
        let allowed = REMOTE_LIMITATIONS
            .iter()
            .any(|(n, text)| n == name && message.contains(text));
        if allowed {
            eprintln!(
                "{engine:?}: {name} failed as expected over KV Connect (see REMOTE_LIMITATIONS)"
            );
        }
        !allowed
    });
    eprintln!(
        "{engine:?} over KV Connect: {} passed, {} failed",
        report.passed.len(),
        report.failed.len()
    );
    if std::env::var("KV_CONFORMANCE_FILTER").map_or(true, |f| f.is_empty()) {
        assert_eq!(
            ran,
            database_tests().len(),
            "every database-level test must run"
        );
    }
    report.assert_ok();
}

#[test]
fn memory_over_kv_connect() {
    run(Engine::Memory);
}

#[test]
fn sqlite_over_kv_connect() {
    run(Engine::Sqlite);
}

#[test]
fn redb_over_kv_connect() {
    run(Engine::Redb);
}
