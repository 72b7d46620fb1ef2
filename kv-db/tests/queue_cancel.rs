//! A dequeue whose caller goes away must not leave the message leased to nobody.

mod common;

use std::time::Duration;

use common::faulty;
use kv_db::{Db, DbConfig};
use kv_traits::{AtomicWrite, Database, Enqueue};

fn enqueue(payload: &[u8]) -> AtomicWrite {
    AtomicWrite {
        enqueues: vec![Enqueue {
            payload: payload.to_vec(),
            deadline_ms: 0,
            keys_if_undelivered: vec![],
            backoff_schedule: None,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dequeue_dropped_during_its_commit_puts_the_message_back() {
    let backend = faulty();
    let config = DbConfig {
        background_tasks: false,
        queue_lease: Duration::from_secs(3600),
        ..Default::default()
    };
    let db = Db::open(backend.clone(), config).await.unwrap();
    db.atomic_write(enqueue(b"m")).await.unwrap();
    // Commits now take 300 ms; the caller gives up 50 ms into the commit of its dequeue.
    backend.faults().delay_commits(Duration::from_millis(300));
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        db.dequeue(Duration::from_secs(5)),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the dequeue should still have been committing"
    );
    backend.faults().delay_commits(Duration::ZERO);
    // Without the release the message would stay leased for an hour.
    let m = db
        .dequeue(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("message released");
    assert_eq!(m.payload, b"m");
    assert_eq!(
        m.attempt, 1,
        "an undelivered lease does not count as an attempt"
    );
    db.finish(m.lease, true).await.unwrap();
    assert!(db
        .dequeue(Duration::from_millis(10))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dequeue_dropped_before_the_writer_reaches_it_leases_nothing() {
    let backend = faulty();
    let config = DbConfig {
        background_tasks: false,
        queue_lease: Duration::from_secs(3600),
        ..Default::default()
    };
    let db = Db::open(backend.clone(), config).await.unwrap();
    db.atomic_write(enqueue(b"m")).await.unwrap();
    backend.faults().delay_commits(Duration::from_millis(300));
    // Keep the writer busy with a slow write, queue a dequeue behind it, then drop the dequeue.
    let busy = tokio::spawn({
        let db = db.clone();
        async move { db.atomic_write(AtomicWrite::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        db.dequeue(Duration::from_secs(5)),
    )
    .await;
    assert!(abandoned.is_err());
    busy.await.unwrap().unwrap();
    backend.faults().delay_commits(Duration::ZERO);
    let m = db
        .dequeue(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("message still ready");
    assert_eq!(m.attempt, 1);
}
