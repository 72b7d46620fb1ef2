//! Real-time behaviour of a [`Db`] with the system clock and its background tasks on (see
//! [`background_config`]): expired keys are swept and watchers told without anyone calling
//! `run_maintenance`, waiting listeners wake when a delayed message falls due, and unfinished
//! deliveries come back after their lease. Each test takes a second or two.
//!
//! Timing: every wait is bounded by [`HANG`], which only catches a hang; no test asserts that
//! something happened within a short time, so a loaded machine makes them slower, not flaky.

use std::time::{Duration, Instant};

use kv_traits::clock::now_ms;

use futures::StreamExt;
use kv_db::{Db, DbConfig};
use kv_traits::{AtomicWrite, Database, Enqueue, KvValue, WatchKeyOutput};

use crate::util::*;

/// The bound on every wait here: long enough that only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

/// The lease the background tests configure.
pub const LEASE: Duration = Duration::from_millis(300);

/// The configuration of the background tests: system clock, background tasks every 50 ms,
/// 300 ms leases.
pub fn background_config() -> DbConfig {
    DbConfig {
        background_tasks: true,
        maintenance_interval: Duration::from_millis(50),
        queue_lease: LEASE,
        ..DbConfig::default()
    }
}

/// A key expiring in 2 s disappears on its own and its watcher is told, with no
/// `run_maintenance` call.
pub async fn expired_keys_are_swept_automatically(db: &Db) {
    let k = key("a");
    let expires_at = now_ms() + 2_000;
    commit(
        db,
        write_of(vec![
            set_expiring(&k, bytes(b"v"), expires_at),
            kv_traits::Mutation::set(key("b"), bytes(b"b")),
        ]),
    )
    .await;
    let mut w = db.watch(vec![k.clone()]).await.expect("watch");
    let first = tokio::time::timeout(HANG, w.next())
        .await
        .expect("first notification")
        .expect("stream")
        .expect("ok");
    // The first notification was read before this point; if that is still before the expiry,
    // it must show the key. (On a machine too loaded to get here in 2 s, it may not.)
    let read_before_expiry = now_ms() < expires_at;
    if read_before_expiry {
        assert!(
            matches!(&first[0], WatchKeyOutput::Changed(Some(_))),
            "the key is gone before its expiry: {first:?}"
        );
    }
    if first[0] != WatchKeyOutput::Changed(None) {
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, w.next())
                .await
                .expect("the background sweep never notified the watcher")
                .expect("stream ended")
                .expect("stream error");
            if n[0] == WatchKeyOutput::Changed(None) {
                break;
            }
        }
    }
    let deadline = Instant::now() + HANG;
    // The sweep already ran (or finishes shortly): a manual pass finds nothing left.
    while db.run_maintenance().await.expect("maintenance") != 0 {
        assert!(
            Instant::now() < deadline,
            "manual maintenance keeps finding expired keys"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(scan_all(db).await.len(), 1);
}

/// A listener already waiting wakes up when a delayed message falls due.
pub async fn waiting_listener_wakes_when_message_is_due(db: &Db) {
    let due = now_ms() + 300;
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enqueue(b"later", due)],
            ..Default::default()
        },
    )
    .await;
    let t = Instant::now();
    let m = db
        .dequeue(2 * HANG)
        .await
        .expect("dequeue")
        .expect("the message falls due during the wait");
    let got_at = now_ms();
    assert_eq!(m.payload, b"later");
    assert!(got_at >= due, "delivered {} ms early", due - got_at);
    // Woken by the due time, not by the end of the (twice as long) wait.
    assert!(
        t.elapsed() < HANG,
        "woke {:?} after the start, long after the due time",
        t.elapsed()
    );
    db.finish(m.lease, true).await.expect("finish");
}

/// A delivery that is never finished comes back after its lease, as a failed attempt.
pub async fn unfinished_delivery_is_redelivered(db: &Db) {
    commit(
        db,
        AtomicWrite {
            enqueues: vec![Enqueue {
                backoff_schedule: Some(vec![0]),
                keys_if_undelivered: vec![key("dead")],
                ..enqueue(b"m", 0)
            }],
            ..Default::default()
        },
    )
    .await;
    // Taken before the first delivery, so the lease started after `t`: the redelivery
    // cannot come before a full lease has passed since `t` (less the 1 ms the lease's
    // millisecond timestamps can round off).
    let t = Instant::now();
    let m1 = db
        .dequeue(HANG)
        .await
        .expect("dequeue")
        .expect("ready message");
    let m2 = db
        .dequeue(HANG)
        .await
        .expect("dequeue")
        .expect("redelivered after the lease expired");
    assert!(
        t.elapsed() >= LEASE - Duration::from_millis(1),
        "redelivered after {:?}, before the lease ended",
        t.elapsed()
    );
    assert_eq!((m2.payload.as_slice(), m2.attempt), (&b"m"[..], 2));
    assert!(
        db.finish(m1.lease, true).await.is_err(),
        "the first lease is stale"
    );
    // No attempts left: letting this lease lapse too dead-letters the message.
    let deadline = Instant::now() + HANG;
    while get(db, &key("dead")).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered after the last lease expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(db, &key("dead")).await.map(|e| e.value),
        Some(KvValue::V8(b"m".to_vec()))
    );
}
