//! Read-only opens (`PostgresOptions::read_only`), against the test server and against a real
//! hot standby streaming from it (`kv_test_support::postgres::test_replica_url`, started by
//! `scripts/start-postgres-replica-test-server.sh`): nothing is ever created or written, a
//! missing store or an unknown format is refused, and the standby serves what the primary
//! committed once it has replayed it.

mod common;

use std::time::{Duration, Instant};

use kv_engine_postgres::{PostgresBackend, PostgresOptions};
use kv_traits::{Backend, BackendError, Database};

/// Bound for the standby to replay a commit (normally milliseconds; the machine is shared).
const REPLAY: Duration = Duration::from_secs(30);

fn read_only(schema: &str, connect_timeout: Duration) -> PostgresOptions {
    PostgresOptions {
        read_only: true,
        connect_timeout,
        ..common::options(schema)
    }
}

async fn schema_exists(schema: &str) -> bool {
    common::raw_client()
        .await
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_read_only_open_creates_nothing_and_refuses_a_missing_store() {
    let schema = common::fresh_schema("ro_missing");
    let err = PostgresBackend::connect(common::url(), read_only(&schema, Duration::from_secs(3)))
        .await
        .expect_err("no store to open");
    let text = err.to_string();
    assert!(matches!(err, BackendError::Io(_)), "{err:?}");
    assert!(
        text.contains("no kv-engine-postgres store") && text.contains(&schema),
        "{text}"
    );
    assert!(
        !schema_exists(&schema).await,
        "a read-only open created the schema"
    );
}

#[tokio::test]
async fn a_read_only_open_refuses_an_unknown_format_and_foreign_tables() {
    let b = common::fresh("ro_format").await.unwrap();
    let schema = b.schema().to_string();
    b.close().await.unwrap();
    let raw = common::raw_client().await;
    raw.batch_execute(&format!(
        "UPDATE \"{schema}\".kv_meta SET value = '99' WHERE key = 'format_version'"
    ))
    .await
    .unwrap();
    let err = PostgresBackend::connect(common::url(), read_only(&schema, Duration::from_secs(3)))
        .await
        .expect_err("unknown format");
    assert_eq!(
        err,
        BackendError::UnsupportedFormat {
            found: 99,
            supported: kv_engine_postgres::FORMAT_VERSION
        }
    );

    let other = common::fresh_schema("ro_foreign");
    raw.batch_execute(&format!(
        "CREATE SCHEMA \"{other}\"; CREATE TABLE \"{other}\".kv (x int)"
    ))
    .await
    .unwrap();
    let err = PostgresBackend::connect(common::url(), read_only(&other, Duration::from_secs(3)))
        .await
        .expect_err("foreign tables");
    assert!(matches!(err, BackendError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn a_hot_standby_serves_what_the_primary_committed_and_takes_no_writes() {
    let replica_url = kv_test_support::postgres::test_replica_url();
    let primary = common::fresh("ro_standby").await.unwrap();
    let schema = primary.schema().to_string();
    let mut w = primary.begin_write().await.unwrap();
    w.put(b"k", b"first").await.unwrap();
    w.commit().await.unwrap();

    // The open waits for the store to reach the standby.
    let replica = PostgresBackend::connect(replica_url, read_only(&schema, REPLAY))
        .await
        .unwrap_or_else(|e| panic!("read-only open on the standby: {e}"));
    assert!(replica.commit_signals().is_none());
    assert!(replica.shared());

    let mut w = primary.begin_write().await.unwrap();
    w.put(b"k", b"second").await.unwrap();
    w.commit().await.unwrap();
    let started = Instant::now();
    loop {
        let seen = replica.begin_read().await.unwrap().get(b"k").await.unwrap();
        if seen.as_deref() == Some(&b"second"[..]) {
            break;
        }
        assert!(
            started.elapsed() < REPLAY,
            "the standby did not replay the commit within {REPLAY:?} (sees {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let err = match replica.begin_write().await {
        Ok(_) => panic!("a read-only backend began a write transaction"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("read-only"), "{err}");

    // kv-db on top: a read-only database opens, reads and closes without writing.
    let db = kv_db::Db::open(
        replica.clone(),
        kv_db::DbConfig {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("read-only Db on the standby: {e}"));
    db.close().await.unwrap();
    primary.close().await.unwrap();
}
