//! [`StoreAdmin`]: the serving lock of read-write backends, and replacing a store by a staging
//! one in one transaction (refused while served or when the target is not a store).

mod common;

use std::time::Duration;

use kv_engine_postgres::{
    staging_schema, AdminError, PostgresBackend, PostgresOptions, StoreAdmin,
};
use kv_traits::{Backend, BackendError};

async fn admin() -> StoreAdmin {
    StoreAdmin::connect(common::url(), &PostgresOptions::default())
        .await
        .unwrap()
}

/// Waits until `schema` has `n` serving sessions (they appear and go asynchronously).
async fn until_served_by(admin: &StoreAdmin, schema: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = admin.serving_sessions(schema).await.unwrap();
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{schema}: {now} serving sessions, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(b: &PostgresBackend, k: &[u8], v: &[u8]) {
    let mut w = b.begin_write().await.unwrap();
    w.put(k, v).await.unwrap();
    w.commit().await.unwrap();
}

#[tokio::test]
async fn read_write_backends_hold_the_serving_lock_until_closed() {
    let admin = admin().await;
    let b = common::fresh("serving").await.unwrap();
    let schema = b.schema().to_string();
    until_served_by(&admin, &schema, 1).await;
    let reader = PostgresBackend::connect(
        common::url(),
        PostgresOptions {
            read_only: true,
            ..common::options(&schema)
        },
    )
    .await
    .unwrap();
    let second = PostgresBackend::connect(common::url(), common::options(&schema))
        .await
        .unwrap();
    until_served_by(&admin, &schema, 2).await;
    // Another schema is not served by them.
    assert_eq!(admin.serving_sessions("not_this_one").await.unwrap(), 0);
    b.close().await.unwrap();
    second.close().await.unwrap();
    until_served_by(&admin, &schema, 0).await;
    reader.close().await.unwrap();
    admin
        .check_not_served(&schema, Duration::ZERO)
        .await
        .unwrap();
}

#[tokio::test]
async fn replace_store_swaps_tables_in_one_transaction_and_refuses_what_it_must() {
    let admin = admin().await;
    let target = common::fresh("replace").await.unwrap();
    let schema = target.schema().to_string();
    put(&target, b"k", b"old").await;
    let staging = staging_schema(&schema);
    let stage = PostgresBackend::connect(common::url(), common::options(&staging))
        .await
        .unwrap();
    put(&stage, b"k", b"new").await;
    stage.close().await.unwrap();

    // Served: refused, nothing changed.
    until_served_by(&admin, &schema, 1).await;
    let err = admin
        .replace_store(&staging, &schema, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdminError::Served { sessions: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("stop those servers"), "{err}");
    assert_eq!(
        target.begin_read().await.unwrap().get(b"k").await.unwrap(),
        Some(b"old".to_vec())
    );
    assert!(admin.schema_exists(&staging).await.unwrap());

    // Not served: swapped, the staging schema is gone, a new backend sees the new store.
    target.close().await.unwrap();
    until_served_by(&admin, &schema, 0).await;
    admin.replace_store(&staging, &schema, false).await.unwrap();
    assert!(!admin.schema_exists(&staging).await.unwrap());
    let after = PostgresBackend::connect(common::url(), common::options(&schema))
        .await
        .unwrap();
    assert_eq!(
        after.begin_read().await.unwrap().get(b"k").await.unwrap(),
        Some(b"new".to_vec())
    );
    // Writes keep working on the moved tables.
    put(&after, b"k2", b"v").await;
    after.close().await.unwrap();
    // Its serving lock goes with its session, which PostgreSQL ends after the close returns.
    until_served_by(&admin, &schema, 0).await;

    // A missing staging store, or a target holding foreign tables, is refused untouched.
    let err = admin
        .replace_store("no_such_staging_schema", &schema, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdminError::Backend(BackendError::Corrupt(_))),
        "{err}"
    );
    let foreign = kv_test_support::postgres::fresh_schema("foreign");
    let client = common::raw_client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.kv (x int)"
        ))
        .await
        .unwrap();
    let stage = PostgresBackend::connect(common::url(), common::options(&staging))
        .await
        .unwrap();
    stage.close().await.unwrap();
    let err = admin
        .replace_store(&staging, &foreign, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AdminError::Backend(BackendError::Corrupt(_))),
        "{err}"
    );
    assert!(admin.schema_exists(&staging).await.unwrap());
    admin.drop_schema(&staging).await.unwrap();
    assert!(!admin.schema_exists(&staging).await.unwrap());
}
