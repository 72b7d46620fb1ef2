//! Read replicas: a read-only database that follows a backup written by a live producer,
//! applies whole transactions, notifies watchers, refuses writes, reports its status and
//! resumes after a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kv_db::{Db, DbConfig};
use kv_pitr::consumer::BackupReader;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{Replica, ReplicaConfig, RestoreError};
use kv_traits::{AtomicWrite, Database, KvError, KvValue, Mutation, Versionstamp, WatchKeyOutput};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use common::{dump, key, read_only_db};

const WAIT: Duration = Duration::from_secs(30);

async fn set(db: &Db, k: &str, v: KvValue) -> Versionstamp {
    common::commit(db, vec![Mutation::set(key(k), v)]).await
}

async fn source_with_backup(store: Arc<dyn ObjectStore>, prefix: &str) -> (Db, Backup) {
    let db = common::change_log_db().await;
    for i in 0..5 {
        set(&db, &format!("before{i}"), KvValue::U64(i)).await;
    }
    let mut config = BackupConfig::new(store, Path::from(prefix));
    config.flush_interval = Duration::from_millis(20);
    config.max_segment_batches = 4;
    let backup = Backup::start(db.clone(), config).await.unwrap();
    common::initial_snapshot_done(&backup).await;
    (db, backup)
}

async fn follows_a_live_producer(store: Arc<dyn ObjectStore>) {
    let (src, backup) = source_with_backup(store.clone(), "live").await;
    set(&src, "during", KvValue::Bytes(b"x".to_vec())).await;
    let shipped = backup.flush(WAIT).await.unwrap();

    let replica_db = read_only_db().await;
    let reader = BackupReader::new(store.clone(), Path::from("live"));
    let replica = Replica::start(reader, replica_db.clone(), Duration::from_millis(30))
        .await
        .unwrap();
    let st = replica.status();
    assert_eq!(st.applied_through, shipped);
    assert_eq!(dump(&replica_db).await, dump(&src).await);
    assert!(st.last_error.is_none());
    assert!(st.lag_ms.is_some());

    // Watch a key on the replica.
    let mut watch = replica_db.watch(vec![key("watched")]).await.unwrap();
    let first = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, vec![WatchKeyOutput::Changed(None)]);

    // Live writes on the source reach the replica, whole transactions at a time.
    let mut last = Versionstamp::ZERO;
    for i in 0..20u64 {
        last = set(&src, &format!("live{}", i % 7), KvValue::U64(i)).await;
        if i.is_multiple_of(5) {
            src.atomic_write(AtomicWrite {
                mutations: vec![
                    Mutation::set(key("pair-a"), KvValue::U64(i)),
                    Mutation::set(key("pair-b"), KvValue::U64(i)),
                    Mutation::delete(key(&format!("before{}", i / 5))),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    let watched_vs = set(&src, "watched", KvValue::V8(vec![0xff, 0x0f, 0x49, 0x54])).await;
    assert!(watched_vs > last);
    backup.flush(WAIT).await.unwrap();
    let st = replica
        .wait_for(watched_vs, WAIT)
        .await
        .expect("replica caught up");
    assert_eq!(st.applied_through, watched_vs);
    assert_eq!(dump(&replica_db).await, dump(&src).await);
    assert_eq!(replica_db.current_versionstamp().await.unwrap(), watched_vs);

    // The watcher saw the new value with the source's versionstamp.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let note = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("watch notification")
            .unwrap()
            .unwrap();
        if let WatchKeyOutput::Changed(Some(entry)) = &note[0] {
            assert_eq!(entry.value, KvValue::V8(vec![0xff, 0x0f, 0x49, 0x54]));
            assert_eq!(entry.versionstamp, watched_vs);
            break;
        }
    }

    // Writes to the replica are refused clearly.
    let err = replica_db
        .atomic_write(AtomicWrite {
            mutations: vec![Mutation::set(key("nope"), KvValue::U64(1))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err, KvError::WriteDisabled);
    assert!(err.is_client_error());
    assert_eq!(err.to_string(), "This database is read only.");

    replica.stop().await;
    backup.shutdown().await.unwrap();
}

#[tokio::test]
async fn follows_a_live_producer_in_memory_store() {
    follows_a_live_producer(Arc::new(InMemory::new())).await;
}

#[tokio::test]
async fn follows_a_live_producer_local_fs() {
    let dir = tempfile::tempdir().unwrap();
    follows_a_live_producer(common::local_store(dir.path())).await;
}

#[tokio::test]
async fn replica_reports_errors_and_recovers() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (src, backup) = source_with_backup(store.clone(), "p").await;
    backup.flush(WAIT).await.unwrap();
    let replica_db = read_only_db().await;
    let replica = Replica::start(
        BackupReader::new(store.clone(), Path::from("p")),
        replica_db.clone(),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    let mut status = replica.subscribe();

    // A foreign object in logs/ makes polls fail; the replica keeps serving what it has.
    let junk = Path::from("p/logs/zzz.txt");
    store
        .put(&junk, PutPayload::from_static(b"junk"))
        .await
        .unwrap();
    let st = tokio::time::timeout(WAIT, status.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(
        st.last_error.as_deref().unwrap().contains("p/logs/zzz.txt"),
        "{st:?}"
    );
    let before = dump(&replica_db).await;
    assert!(!before.is_empty());

    // A replaced backup (another differential point) is reported, not followed.
    store.delete(&junk).await.unwrap();
    let diff = Path::from("p/differential");
    let original = store.get(&diff).await.unwrap().bytes().await.unwrap();
    store
        .put(&diff, PutPayload::from_static(b"00000000000000ff0000"))
        .await
        .unwrap();
    let st = tokio::time::timeout(
        WAIT,
        status.wait_for(|s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("was replaced"))
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(st.last_error.unwrap().contains("p"));
    store.put(&diff, PutPayload::from(original)).await.unwrap();
    store
        .put(&junk, PutPayload::from_static(b"junk"))
        .await
        .unwrap();

    // Once the object is gone, the replica catches up with what was written meanwhile.
    let vs = set(&src, "after-error", KvValue::U64(1)).await;
    backup.flush(WAIT).await.unwrap();
    store.delete(&junk).await.unwrap();
    replica.poll_now();
    let st = replica.wait_for(vs, WAIT).await.expect("caught up");
    assert!(st.last_error.is_none(), "{st:?}");
    assert_eq!(dump(&replica_db).await, dump(&src).await);
    replica.stop().await;
    backup.shutdown().await.unwrap();
}

#[tokio::test]
async fn replica_resumes_on_its_existing_database() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let (src, backup) = source_with_backup(store.clone(), "p").await;
    backup.flush(WAIT).await.unwrap();
    let open = || async {
        Db::open(
            kv_engine_sqlite::SqliteBackend::open(
                dir.path().join("replica.db"),
                Default::default(),
            )
            .unwrap(),
            DbConfig {
                read_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    };
    let reader = BackupReader::new(store.clone(), Path::from("p"));
    let db = open().await;
    let replica = Replica::start(reader.clone(), db.clone(), Duration::from_millis(20))
        .await
        .unwrap();
    let first = replica.status().applied_through;
    replica.stop().await;
    db.close().await.unwrap();
    drop(db);

    // The source moves on while the replica is down.
    let mut last = first;
    for i in 0..10 {
        last = set(&src, &format!("while-down{i}"), KvValue::U64(i)).await;
    }
    backup.flush(WAIT).await.unwrap();

    let db = open().await;
    // Without resume_existing a non-empty database is refused.
    let err = Replica::start(reader.clone(), db.clone(), Duration::from_millis(20))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, RestoreError::NotEmpty { .. }), "{err}");
    let mut config = ReplicaConfig::new(Duration::from_millis(20));
    config.resume_existing = true;
    let replica = Replica::start_with(reader, db.clone(), config)
        .await
        .unwrap();
    assert_eq!(replica.status().applied_through, last);
    assert_eq!(dump(&db).await, dump(&src).await);

    // And keeps following.
    let vs = set(&src, "after-resume", KvValue::Bytes(vec![9])).await;
    backup.flush(WAIT).await.unwrap();
    replica
        .wait_for(vs, WAIT)
        .await
        .expect("follows after resume");
    assert_eq!(dump(&db).await, dump(&src).await);
    replica.stop().await;
    backup.shutdown().await.unwrap();
}

#[tokio::test]
async fn replica_stops_when_its_database_is_closed() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (_src, backup) = source_with_backup(store.clone(), "p").await;
    backup.flush(WAIT).await.unwrap();
    let db = read_only_db().await;
    let replica = Replica::start(
        BackupReader::new(store, Path::from("p")),
        db.clone(),
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    db.close().await.unwrap();
    // The follower ends by itself; stop() returns promptly.
    tokio::time::timeout(WAIT, replica.stop()).await.unwrap();
    backup.shutdown().await.unwrap();
}
