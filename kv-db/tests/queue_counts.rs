//! `Db::queue_counts`: how many messages are ready, delayed and leased.

use std::sync::Arc;
use std::time::Duration;

use kv_db::{Db, DbConfig, QueueCounts};
use kv_engine_memory::MemoryBackend;
use kv_traits::{AtomicWrite, Database, Enqueue, ManualClock};

const NOW: u64 = 1_800_000_000_000;

fn enqueue_many(n: usize, deadline_ms: u64) -> AtomicWrite {
    AtomicWrite {
        enqueues: (0..n)
            .map(|i| Enqueue {
                payload: vec![i as u8],
                deadline_ms,
                keys_if_undelivered: vec![],
                backoff_schedule: None,
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn counts_follow_enqueue_delay_lease_and_finish() {
    let clock = Arc::new(ManualClock::new(NOW));
    let config = DbConfig {
        background_tasks: false,
        clock: clock.clone(),
        ..Default::default()
    };
    let db = Db::open(MemoryBackend::new(), config).await.unwrap();
    assert_eq!(db.queue_counts().await.unwrap(), QueueCounts::default());
    // More than one counting page (1000 keys) of ready messages, plus delayed ones.
    for _ in 0..3 {
        db.atomic_write(enqueue_many(400, 0)).await.unwrap();
    }
    db.atomic_write(enqueue_many(2, NOW + 60_000))
        .await
        .unwrap();
    let counts = db.queue_counts().await.unwrap();
    assert_eq!(
        counts,
        QueueCounts {
            ready: 1200,
            delayed: 2,
            leased: 0
        }
    );
    let m = db.dequeue(Duration::from_secs(1)).await.unwrap().unwrap();
    let counts = db.queue_counts().await.unwrap();
    assert_eq!((counts.ready, counts.delayed, counts.leased), (1199, 2, 1));
    db.finish(m.lease, true).await.unwrap();
    clock.advance(60_000);
    let counts = db.queue_counts().await.unwrap();
    assert_eq!((counts.ready, counts.delayed, counts.leased), (1201, 0, 0));
    db.close().await.unwrap();
}
