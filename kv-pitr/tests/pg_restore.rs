//! All-or-nothing restores of PostgreSQL stores (feature `postgres`): built in a staging
//! schema, swapped in by one transaction; the target is untouched by a failure, by a leftover
//! of a killed restore, and while servers serve it.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{backed_up, broken_logs_reader as reader, dump, Source};
use kv_db::{Db, DbConfig};
use kv_engine_postgres::{
    staging_schema, AdminError, PostgresBackend, PostgresOptions, StoreAdmin,
};
use kv_pitr::pg_restore::{restore_postgres, PgRestoreError};
use kv_pitr::restore::{RestoreError, RestoreProgress, RestoreTarget};
use kv_pitr::staged_restore::StagedRestoreError;
use kv_test_support::postgres::{fresh_schema, test_url};
use kv_traits::{Database, KvValue, Mutation, Versionstamp};

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: Some(schema.to_string()),
        ..Default::default()
    }
}

/// Opens the store in `schema` as a server would (read-write: it holds the serving lock).
async fn open(schema: &str) -> Db {
    let backend = PostgresBackend::connect(test_url(), options(schema))
        .await
        .unwrap();
    Db::open(
        backend,
        DbConfig {
            background_tasks: false,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn admin() -> StoreAdmin {
    StoreAdmin::connect(test_url(), &PostgresOptions::default())
        .await
        .unwrap()
}

fn latest(src: &Source) -> Versionstamp {
    *src.states.keys().next_back().unwrap()
}

/// The state of the store in `schema` (opened and closed again).
async fn state_of(schema: &str) -> (Vec<kv_db::ExportEntry>, Option<Versionstamp>) {
    let db = open(schema).await;
    let state = (dump(&db).await, db.imported_through().await.unwrap());
    db.close().await.unwrap();
    state
}

#[tokio::test]
async fn a_postgres_restore_builds_a_staging_schema_and_swaps_it_in() {
    let (src, store) = backed_up().await;
    let reader = reader(&store);
    let admin = admin().await;
    let schema = fresh_schema("pgrestore");
    let staging = staging_schema(&schema);

    // A failure midway (log reads fail after the snapshot was written) leaves no target
    // store and no staging schema.
    store.hooks.broken.store(true, Ordering::SeqCst);
    let mut written = 0;
    let err = restore_postgres(
        &reader,
        test_url(),
        options(&schema),
        false,
        RestoreTarget::Latest,
        |p| {
            if let RestoreProgress::Writing { written: w } = p {
                written = w;
            }
        },
    )
    .await
    .unwrap_err();
    assert!(
        written >= 2000,
        "the snapshot was being written before the log failed ({written})"
    );
    assert!(
        matches!(
            err,
            PgRestoreError::Staged(StagedRestoreError::Restore(RestoreError::Backup(_)))
        ),
        "{err}"
    );
    assert!(!admin.has_store(&schema).await.unwrap());
    assert!(!admin.schema_exists(&staging).await.unwrap());

    // A staging schema left by a killed restore (holding a store with data) is dropped and
    // rebuilt by the next restore, which swaps it in.
    let leftover = open(&staging).await;
    common::commit(
        &leftover,
        vec![Mutation::set(common::key("stale"), KvValue::U64(1))],
    )
    .await;
    leftover.close().await.unwrap();
    store.hooks.broken.store(false, Ordering::SeqCst);
    let outcome = restore_postgres(
        &reader,
        test_url(),
        options(&schema),
        false,
        RestoreTarget::Latest,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(outcome.versionstamp, latest(&src));
    assert!(!admin.schema_exists(&staging).await.unwrap());
    let (state, imported) = state_of(&schema).await;
    assert_eq!(state, src.states[&latest(&src)]);
    assert_eq!(imported, Some(outcome.versionstamp));

    // A target holding data is refused (not a checkout), untouched.
    let err = restore_postgres(
        &reader,
        test_url(),
        options(&schema),
        false,
        RestoreTarget::Latest,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PgRestoreError::Restore(RestoreError::NotEmpty { .. })),
        "{err}"
    );
    assert_eq!(state_of(&schema).await.0, src.states[&latest(&src)]);
    assert!(!admin.schema_exists(&staging).await.unwrap());
}

#[tokio::test]
async fn postgres_checkout_backwards_replaces_the_store_unless_it_is_served() {
    let (src, store) = backed_up().await;
    let reader = reader(&store);
    let admin = admin().await;
    let schema = fresh_schema("pgcheckout");
    let staging = staging_schema(&schema);
    restore_postgres(
        &reader,
        test_url(),
        options(&schema),
        false,
        RestoreTarget::Latest,
        |_| {},
    )
    .await
    .unwrap();
    let earlier = *src.states.keys().nth_back(2).unwrap();
    let checkout =
        |target| restore_postgres(&reader, test_url(), options(&schema), true, target, |_| {});

    // A server serves the store: refused, untouched.
    let server = open(&schema).await;
    while admin.serving_sessions(&schema).await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = checkout(RestoreTarget::Versionstamp(earlier))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PgRestoreError::Served(AdminError::Served { sessions: 1, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("stop those servers"), "{err}");
    assert_eq!(dump(&server).await, src.states[&latest(&src)]);
    server.close().await.unwrap();

    // A failure midway leaves the store at the latest point.
    store.hooks.broken.store(true, Ordering::SeqCst);
    checkout(RestoreTarget::Versionstamp(earlier))
        .await
        .unwrap_err();
    assert_eq!(state_of(&schema).await.0, src.states[&latest(&src)]);
    assert!(!admin.schema_exists(&staging).await.unwrap());

    // Once nothing serves it, the store is replaced by the earlier point.
    store.hooks.broken.store(false, Ordering::SeqCst);
    let outcome = checkout(RestoreTarget::Versionstamp(earlier))
        .await
        .unwrap();
    assert_eq!(outcome.versionstamp, earlier);
    let (state, imported) = state_of(&schema).await;
    assert_eq!(state, src.states[&earlier]);
    assert_eq!(imported, Some(earlier));
    assert!(!admin.schema_exists(&staging).await.unwrap());
}
