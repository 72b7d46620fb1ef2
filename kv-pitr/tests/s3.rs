//! Backup, restore and read replicas through a real S3-compatible server on loopback: moto's
//! standalone server, installed from PyPI and started by `scripts/start-s3-test-server.sh`.
//!
//! If the server cannot be installed or started these tests FAIL (they are never skipped
//! silently), unless `KV_PITR_SKIP_S3=1` is set, which skips them with a message.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use kv_db::{Db, DbConfig, ExportEntry};
use kv_pitr::consumer::{BackupReader, ConsumerError};
use kv_pitr::format::FormatError;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, Replica, RestoreError, RestoreTarget};
use kv_traits::{Database, KvValue, Mutation, Versionstamp};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use common::{change_log_db as source, commit, dump, key, restore_err};

use kv_test_support::s3::{server, skip, S3Server};

const WAIT: Duration = Duration::from_secs(30);

fn create_bucket(server: &S3Server) -> String {
    kv_test_support::s3::create_bucket(server, "kv-pitr")
}

fn s3_store(server: &S3Server, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("test-access-key")
            .with_secret_access_key("test-secret-key")
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap(),
    )
}

async fn start_backup(db: &Db, store: Arc<dyn ObjectStore>, prefix: &str) -> Backup {
    let mut config = BackupConfig::new(store, Path::from(prefix));
    config.flush_interval = Duration::from_millis(50);
    config.max_segment_batches = 3;
    config.snapshot_range_entries = 3;
    let backup = Backup::start(db.clone(), config).await.unwrap();
    common::initial_snapshot_done(&backup).await;
    backup
}

/// A few commits of every kind; returns the state after each.
async fn workload(db: &Db, round: u64, states: &mut Vec<(Versionstamp, Vec<ExportEntry>)>) {
    let vs = commit(
        db,
        vec![
            Mutation::set(
                key(&format!("v8-{round}")),
                KvValue::V8(vec![0xff, 0x0f, 0x49, round as u8]),
            ),
            Mutation::set(
                key(&format!("bytes-{round}")),
                KvValue::Bytes(vec![round as u8; 4]),
            ),
            Mutation::set(key("counter"), KvValue::U64(round)),
        ],
    )
    .await;
    states.push((vs, dump(db).await));
    let vs = commit(db, vec![common::sum(key("counter"), 10)]).await;
    states.push((vs, dump(db).await));
    if round > 0 {
        let vs = commit(
            db,
            vec![Mutation::delete(key(&format!("bytes-{}", round - 1)))],
        )
        .await;
        states.push((vs, dump(db).await));
    }
}

/// A new bucket on the server, its store, and a source database with the first round of
/// the workload committed (and its states); `None` when the S3 tests are skipped.
struct Setup {
    server: &'static S3Server,
    bucket: String,
    store: Arc<dyn ObjectStore>,
    src: Db,
    states: Vec<(Versionstamp, Vec<ExportEntry>)>,
}

async fn setup() -> Option<Setup> {
    if skip() {
        return None;
    }
    let server = server();
    let bucket = create_bucket(server);
    let store = s3_store(server, &bucket);
    let src = source().await;
    let mut states = Vec::new();
    workload(&src, 0, &mut states).await;
    Some(Setup {
        server,
        bucket,
        store,
        src,
        states,
    })
}

/// [`setup`], then a backup under `prefix` while workload rounds 1 to `rounds - 1` run;
/// flushed and shut down.
async fn backed_up(prefix: &str, rounds: u64) -> Option<Setup> {
    let mut s = setup().await?;
    let backup = start_backup(&s.src, s.store.clone(), prefix).await;
    for round in 1..rounds {
        workload(&s.src, round, &mut s.states).await;
    }
    backup.flush(WAIT).await.unwrap();
    backup.shutdown().await.unwrap();
    Some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backup_and_point_in_time_restore_round_trip() {
    let Some(Setup {
        server,
        bucket,
        store,
        src,
        states,
    }) = backed_up("team/db1", 5).await
    else {
        return;
    };

    // The objects really are in the bucket.
    let listed: Vec<_> = store
        .list(Some(&Path::from("team/db1/logs")))
        .try_collect()
        .await
        .unwrap();
    assert!(listed.len() >= 3, "{listed:?}");

    let reader = BackupReader::new(store.clone(), Path::from("team/db1"));
    // Latest, into a SQLite database.
    let dir = tempfile::tempdir().unwrap();
    let target = Db::open(
        kv_engine_sqlite::SqliteBackend::open(dir.path().join("r.db"), Default::default()).unwrap(),
        DbConfig::default(),
    )
    .await
    .unwrap();
    let out = restore(&reader, &target, RestoreTarget::Latest, |_| {})
        .await
        .unwrap();
    assert_eq!(out.versionstamp, src.current_versionstamp().await.unwrap());
    assert_eq!(dump(&target).await, dump(&src).await);
    target.close().await.unwrap();

    // Every commit after the differential point, into memory databases.
    let info = reader.info().await.unwrap();
    assert_eq!(info.latest_point.versionstamp, out.versionstamp);

    // The same backup through a location URL, as the command-line tools open it
    // (credentials from the environment, like the AWS tools; moto accepts any).
    std::env::set_var("AWS_ACCESS_KEY_ID", "test-access-key");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret-key");
    let (url_store, url_prefix) = kv_pitr::consumer::open_store_url(
        &format!("s3://{bucket}/team/db1/"),
        Some(&server.endpoint),
    )
    .unwrap();
    assert_eq!(url_prefix.as_ref(), "team/db1");
    let via_url = BackupReader::new(url_store, url_prefix)
        .info()
        .await
        .unwrap();
    assert_eq!(via_url.latest_point, info.latest_point);
    assert_eq!(via_url.log_segments, info.log_segments);
    let mut checked = 0;
    for (vs, state) in states.iter().filter(|(vs, _)| *vs >= info.differential) {
        let (db, out) = common::restore_to(&reader, RestoreTarget::Versionstamp(*vs)).await;
        assert_eq!(out.versionstamp, *vs);
        assert_eq!(&dump(&db).await, state, "state at {vs}");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} points checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_replica_follows_a_live_producer() {
    let Some(Setup {
        store,
        src,
        mut states,
        ..
    }) = setup().await
    else {
        return;
    };
    let backup = start_backup(&src, store.clone(), "replicated").await;
    backup.flush(WAIT).await.unwrap();

    let replica_db = common::read_only_db().await;
    let replica = Replica::start(
        BackupReader::new(store.clone(), Path::from("replicated")),
        replica_db.clone(),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    assert_eq!(dump(&replica_db).await, dump(&src).await);
    for round in 1..6 {
        workload(&src, round, &mut states).await;
        let vs = backup.flush(WAIT).await.unwrap();
        let st = replica.wait_for(vs, WAIT).await.expect("replica caught up");
        assert!(st.last_error.is_none(), "{st:?}");
        assert_eq!(dump(&replica_db).await, dump(&src).await, "round {round}");
    }
    replica.stop().await;
    backup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_corrupt_and_missing_objects_are_clear_errors() {
    let Some(Setup { store, .. }) = backed_up("damaged", 4).await else {
        return;
    };
    let logs = common::list(&*store, &Path::from("damaged/logs")).await;
    assert!(logs.len() >= 3);
    let reader = BackupReader::new(store.clone(), Path::from("damaged"));

    let mut body = common::get(&*store, &logs[1]).await.to_vec();
    body[12] ^= 0x10;
    common::put(&*store, &logs[1], body).await;
    let (db, err) = restore_err(&reader, RestoreTarget::Latest).await;
    assert!(
        matches!(&err, RestoreError::Backup(ConsumerError::Corrupt { object, source: FormatError::Checksum { .. } }) if object == logs[1].as_ref()),
        "{err}"
    );
    assert!(dump(&db).await.is_empty());

    store.delete(&logs[1]).await.unwrap();
    let err = restore(&reader, &db, RestoreTarget::Latest, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::Backup(ConsumerError::MissingLogSegments {
                expected_monoseq: 2,
                ..
            })
        ),
        "{err}"
    );
    assert!(dump(&db).await.is_empty());
    assert_eq!(db.current_versionstamp().await.unwrap(), Versionstamp::ZERO);
}
