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
            leased: 0,
            dead_letters: 0,
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

#[tokio::test]
async fn a_message_out_of_attempts_counts_as_a_dead_letter() {
    let config = DbConfig {
        background_tasks: false,
        ..Default::default()
    };
    let db = Db::open(MemoryBackend::new(), config).await.unwrap();
    let mut write = enqueue_many(2, 0);
    for e in &mut write.enqueues {
        e.backoff_schedule = Some(vec![]);
    }
    write.enqueues[0].keys_if_undelivered = vec![b"\x02dead\x00".to_vec()];
    db.atomic_write(write).await.unwrap();
    for _ in 0..2 {
        let m = db.dequeue(Duration::from_secs(1)).await.unwrap().unwrap();
        db.finish(m.lease, false).await.unwrap();
    }
    let counts = db.queue_counts().await.unwrap();
    assert_eq!(
        counts,
        QueueCounts {
            ready: 0,
            delayed: 0,
            leased: 0,
            dead_letters: 2,
        }
    );
    db.close().await.unwrap();
}
