//! Several servers on one shared database, each with a backup to the same prefix: one ships at
//! a time (the backup lease), the others stand by, and when the shipping one dies or shuts down
//! another takes over from what the object store holds. Every restore equals the database.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_db::{Db, DbConfig};
use kv_engine_memory::MemoryBackend;
use kv_pitr::format::{self, LogSegmentKey};
use kv_pitr::producer::{Backup, BackupConfig, BackupError};
use kv_pitr::restore::RestoreTarget;
use kv_pitr::BackupReader;
use kv_test_support::SharedStore;
use kv_traits::{Database, KvValue, Mutation};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

use common::{commit, dump, key, list, restore_to, sum, HookedStore, StoreHooks};

/// Bounds every wait; only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_millis(300);

/// Records which server put which object.
#[derive(Debug, Clone)]
struct Recorder {
    server: &'static str,
    puts: Arc<Mutex<Vec<(&'static str, String)>>>,
}

#[async_trait::async_trait]
impl StoreHooks for Recorder {
    const NAME: &'static str = "recorder";

    async fn before_put(&self, location: &Path) -> object_store::Result<()> {
        self.puts
            .lock()
            .unwrap()
            .push((self.server, location.to_string()));
        Ok(())
    }
}

struct Server {
    db: Db,
    backup: Option<Backup>,
}

fn db_config() -> DbConfig {
    DbConfig {
        change_log: true,
        follow_interval: Duration::from_millis(10),
        ..DbConfig::default()
    }
}

fn backup_config(store: Arc<dyn ObjectStore>) -> BackupConfig {
    BackupConfig {
        flush_interval: Duration::from_millis(20),
        lease_ttl: TTL,
        shutdown_timeout: Duration::from_secs(10),
        retry_max_backoff: Duration::from_millis(200),
        ..BackupConfig::new(store, Path::from("db"))
    }
}

async fn start(
    shared: &SharedStore<MemoryBackend>,
    objects: &Arc<dyn ObjectStore>,
    server: &'static str,
    puts: &Arc<Mutex<Vec<(&'static str, String)>>>,
) -> Server {
    let db = Db::open(shared.open(), db_config()).await.unwrap();
    let recorder = Recorder {
        server,
        puts: puts.clone(),
    };
    let store = HookedStore::new(objects.clone(), recorder);
    let backup = Backup::start(db.clone(), backup_config(store))
        .await
        .unwrap();
    Server {
        db,
        backup: Some(backup),
    }
}

fn backup(s: &Server) -> &Backup {
    s.backup.as_ref().unwrap()
}

/// Polls `f` until it holds; panics after [`DEADLINE`].
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `rounds` commits, alternating between the servers.
async fn write_through(servers: &[&Db], from: i64, rounds: i64) {
    for i in from..from + rounds {
        let db = servers[i as usize % servers.len()];
        commit(
            db,
            vec![
                Mutation::set(key(&format!("k{i}")), KvValue::U64(i as u64)),
                sum(key("counter"), 1),
                Mutation::delete(key(&format!("k{}", i - 3))),
            ],
        )
        .await;
    }
}

/// Which server put each log segment: every segment exactly once, by one server.
fn segment_writers(puts: &Mutex<Vec<(&'static str, String)>>) -> Vec<(&'static str, String)> {
    let puts = puts.lock().unwrap();
    let logs: Vec<_> = puts
        .iter()
        .filter(|(_, p)| p.starts_with("db/logs/"))
        .cloned()
        .collect();
    for (i, (_, p)) in logs.iter().enumerate() {
        assert!(
            logs[..i].iter().all(|(_, q)| q != p),
            "segment {p} was uploaded twice: {logs:?}"
        );
    }
    logs
}

/// The backup's segments are numbered 1, 2, … and do not overlap; the latest restore equals
/// `db`.
async fn check_backup(objects: &Arc<dyn ObjectStore>, db: &Db) {
    let prefix = Path::from("db");
    let mut last = None;
    for (i, p) in list(&**objects, &format::logs_dir(&prefix))
        .await
        .iter()
        .enumerate()
    {
        let k = LogSegmentKey::parse(p.as_ref()).unwrap();
        assert_eq!(k.monoseq, i as u64 + 1, "monoseq is contiguous from 1: {p}");
        if let Some(prev) = last {
            assert!(prev < k.first_vs12, "segments overlap: {p}");
        }
        last = Some(k.last_vs12);
    }
    let reader = BackupReader::new(objects.clone(), prefix);
    let (restored, outcome) = restore_to(&reader, RestoreTarget::Latest).await;
    assert_eq!(
        outcome.versionstamp,
        db.current_versionstamp().await.unwrap()
    );
    assert_eq!(dump(&restored).await, dump(db).await);
}

/// The index of the one server that is not standing by, once exactly one is shipping.
async fn shipper_of(servers: &[Server]) -> usize {
    wait_until("exactly one server ships", || {
        servers
            .iter()
            .filter(|s| !backup(s).status().standby)
            .count()
            == 1
    })
    .await;
    servers
        .iter()
        .position(|s| !backup(s).status().standby)
        .unwrap()
}

async fn two_servers() -> (
    Vec<Server>,
    Arc<dyn ObjectStore>,
    Arc<Mutex<Vec<(&'static str, String)>>>,
) {
    let shared = SharedStore::new(MemoryBackend::new());
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let puts = Arc::new(Mutex::new(Vec::new()));
    let a = start(&shared, &objects, "a", &puts).await;
    let b = start(&shared, &objects, "b", &puts).await;
    (vec![a, b], objects, puts)
}

/// Writes through both servers; exactly one ships, and the backup is its work alone. Returns
/// the shipping server (removed from `servers`) and its name.
async fn first_turn(
    servers: &mut Vec<Server>,
    objects: &Arc<dyn ObjectStore>,
    puts: &Mutex<Vec<(&'static str, String)>>,
) -> (Server, &'static str) {
    write_through(&[&servers[0].db, &servers[1].db], 0, 30).await;
    let i = shipper_of(servers).await;
    let name = ["a", "b"][i];
    let first = servers.remove(i);
    let other = &servers[0];
    assert!(matches!(
        backup(other).flush(DEADLINE).await,
        Err(BackupError::Standby)
    ));
    let target = first.db.current_versionstamp().await.unwrap();
    assert!(backup(&first).flush(DEADLINE).await.unwrap() >= target);
    assert!(backup(other).status().standby, "still exactly one shipper");
    let all = puts.lock().unwrap().clone();
    assert!(
        all.iter().all(|(who, _)| *who == name),
        "only the lease holder writes to the store: {all:?}"
    );
    assert!(!segment_writers(puts).is_empty());
    check_backup(objects, &first.db).await;
    (first, name)
}

/// The remaining server takes over, ships what was written since, and the backup again
/// restores to the database's state.
async fn second_turn(
    second: &Server,
    objects: &Arc<dyn ObjectStore>,
    puts: &Mutex<Vec<(&'static str, String)>>,
    first_name: &str,
) {
    let shipped_before = segment_writers(puts).len();
    write_through(&[&second.db], 100, 20).await;
    wait_until("the other server takes over", || {
        !backup(second).status().standby
    })
    .await;
    let target = second.db.current_versionstamp().await.unwrap();
    assert!(backup(second).flush(DEADLINE).await.unwrap() >= target);
    let logs = segment_writers(puts);
    assert!(
        logs.len() > shipped_before,
        "the new shipper uploaded segments"
    );
    assert!(
        logs[..shipped_before]
            .iter()
            .all(|(who, _)| *who == first_name)
            && logs[shipped_before..]
                .iter()
                .all(|(who, _)| *who != first_name),
        "one shipper, then the other: {logs:?}"
    );
    check_backup(objects, &second.db).await;
    // Still the only shipper: more writes, one more flush, the same result.
    write_through(&[&second.db], 200, 5).await;
    backup(second).flush(DEADLINE).await.unwrap();
    check_backup(objects, &second.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_ships_and_another_takes_over_when_it_dies() {
    let (mut servers, objects, puts) = two_servers().await;
    let (mut first, name) = first_turn(&mut servers, &objects, &puts).await;
    // The shipping server dies: its backup task is gone without giving the lease up, and its
    // database is closed. The lease expires after its ttl.
    drop(first.backup.take());
    first.db.close().await.unwrap();
    second_turn(&servers[0], &objects, &puts, name).await;
    let second = servers.remove(0);
    second.backup.unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_shuts_down_hands_over_and_a_standby_shuts_down_quietly() {
    let (mut servers, objects, puts) = two_servers().await;
    let (mut first, name) = first_turn(&mut servers, &objects, &puts).await;
    // Written while the first still ships: its shutdown ships it and gives the lease up.
    write_through(&[&first.db], 50, 5).await;
    first.backup.take().unwrap().shutdown().await.unwrap();
    check_backup(&objects, &first.db).await;
    second_turn(&servers[0], &objects, &puts, name).await;
    // A standby (the first server again, backing up once more) has nothing to ship.
    let again = Backup::start(first.db.clone(), backup_config(objects.clone()))
        .await
        .unwrap();
    assert!(again.status().standby);
    again.shutdown().await.unwrap();
    servers.remove(0).backup.unwrap().shutdown().await.unwrap();
}
