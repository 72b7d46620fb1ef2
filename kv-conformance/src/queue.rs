//! Queues on a [`ClockedDb`]: delivery times, order, leases, retries along the backoff schedule,
//! dead-letter keys, lease expiry.

use std::time::{Duration, Instant};

use kv_traits::{
    AtomicWrite, CommitResult, Enqueue, KvError, KvValue, Mutation, QueueLease, QueueMessage,
    DEFAULT_BACKOFF_SCHEDULE,
};

use crate::harness::ClockedDb;
use crate::util::*;

/// Dequeues with a short real-time wait.
async fn deq(h: &ClockedDb) -> Option<QueueMessage> {
    h.database()
        .dequeue(Duration::from_millis(20))
        .await
        .unwrap_or_else(|e| panic!("dequeue failed: {e}"))
}

async fn expect_msg(h: &ClockedDb, payload: &[u8], attempt: u32) -> QueueMessage {
    let m = deq(h).await.unwrap_or_else(|| {
        panic!(
            "expected {payload:?} (attempt {attempt}) to be deliverable at t+{}",
            h.now() - ClockedDb::START_MS
        )
    });
    assert_eq!(m.payload, payload, "wrong message delivered");
    assert_eq!(m.attempt, attempt, "attempt number of {payload:?}");
    assert!(
        m.lease.deadline_ms > h.now(),
        "the lease must end in the future"
    );
    m
}

async fn expect_none(h: &ClockedDb, why: &str) {
    if let Some(m) = deq(h).await {
        panic!(
            "{why}: nothing should be deliverable at t+{}, got {m:?}",
            h.now() - ClockedDb::START_MS
        );
    }
}

async fn finish(h: &ClockedDb, lease: QueueLease, ok: bool) {
    h.database()
        .finish(lease, ok)
        .await
        .unwrap_or_else(|e| panic!("finish({lease:?}, {ok}) failed: {e}"));
}

fn enq(
    payload: &[u8],
    deadline_ms: u64,
    schedule: Option<Vec<u32>>,
    dead: Vec<Vec<u8>>,
) -> Enqueue {
    Enqueue {
        payload: payload.to_vec(),
        deadline_ms,
        keys_if_undelivered: dead,
        backoff_schedule: schedule,
    }
}

/// A message with a past deadline is deliverable at once, leased, attempt 1; the enqueue commits
/// with the write's versionstamp.
pub async fn immediate_delivery(h: &ClockedDb) {
    let db = h.database();
    let vs = commit(
        db,
        AtomicWrite {
            mutations: vec![Mutation::set(key("a"), bytes(b"a"))],
            enqueues: vec![enqueue(b"hello", 0)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(get(db, &key("a")).await.map(|e| e.versionstamp), Some(vs));
    let m = expect_msg(h, b"hello", 1).await;
    assert!(
        m.lease.deadline_ms <= h.now() + ClockedDb::LEASE_MS,
        "lease longer than configured: {m:?}"
    );
    expect_none(h, "a leased message is not delivered twice").await;
    finish(h, m.lease, true).await;
}

/// A message with a future deadline is not delivered before the clock reaches it.
pub async fn delayed_delivery_waits_for_clock(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enqueue(b"later", h.now() + 5000)],
            ..Default::default()
        },
    )
    .await;
    expect_none(h, "deadline in 5 s").await;
    h.advance(4999);
    expect_none(h, "deadline in 1 ms").await;
    h.advance(1);
    expect_msg(h, b"later", 1).await;
}

/// Ready messages are delivered in deadline order.
pub async fn deadline_order(h: &ClockedDb) {
    let db = h.database();
    let now = h.now();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![
                enqueue(b"300", now + 300),
                enqueue(b"100", now + 100),
                enqueue(b"200", now + 200),
            ],
            ..Default::default()
        },
    )
    .await;
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enqueue(b"50", now + 50)],
            ..Default::default()
        },
    )
    .await;
    h.advance(150);
    expect_msg(h, b"50", 1).await;
    expect_msg(h, b"100", 1).await;
    expect_none(h, "200 and 300 are not due").await;
    h.advance(1000);
    expect_msg(h, b"200", 1).await;
    expect_msg(h, b"300", 1).await;
    expect_none(h, "all delivered").await;
}

/// `dequeue` returns `None` when nothing becomes ready within the wait, not before that wait,
/// and wakes up when a message is enqueued during the wait. Upper bounds only catch hangs.
pub async fn dequeue_times_out_when_empty(h: &ClockedDb) {
    const HANG: Duration = Duration::from_secs(30);
    let wait = Duration::from_millis(200);
    let t = Instant::now();
    let r = h.database().dequeue(wait).await.expect("dequeue");
    assert!(r.is_none());
    let took = t.elapsed();
    assert!(
        took >= wait,
        "dequeue returned after {took:?}, before its wait"
    );
    assert!(took < HANG, "dequeue overslept: {took:?}");
    let db = h.database();
    let waiter = db.dequeue(2 * HANG);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        commit(
            db,
            AtomicWrite {
                enqueues: vec![enqueue(b"wake", 0)],
                ..Default::default()
            },
        )
        .await;
    };
    let t = Instant::now();
    let (m, ()) = futures::join!(waiter, writer);
    let m = m
        .expect("dequeue")
        .expect("an enqueue during the wait must wake the waiter");
    assert_eq!(m.payload, b"wake");
    assert!(t.elapsed() < HANG, "woke only at the end of the wait");
}

/// Enqueues are part of the atomic write: a failed check or a failing mutation enqueues nothing.
pub async fn enqueue_is_atomic_with_checks(h: &ClockedDb) {
    let db = h.database();
    set(db, &key("a"), bytes(b"a")).await;
    let r = try_write(
        db,
        AtomicWrite {
            checks: vec![check_absent(&key("a"))],
            enqueues: vec![enqueue(b"no1", 0)],
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(r, Ok(CommitResult::CheckFailed(_))), "{r:?}");
    let r = try_write(
        db,
        AtomicWrite {
            mutations: vec![sum_u64(&key("a"), 1)],
            enqueues: vec![enqueue(b"no2", 0)],
            ..Default::default()
        },
    )
    .await;
    assert_mutation_error(r, "non-U64 value");
    h.advance(1000);
    expect_none(h, "rejected writes enqueue nothing").await;
}

/// `finish(success)` removes the message for good.
pub async fn finish_success_removes(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enq(b"m", 0, None, vec![key("dead")])],
            ..Default::default()
        },
    )
    .await;
    let m = expect_msg(h, b"m", 1).await;
    finish(h, m.lease, true).await;
    h.advance(24 * 3600 * 1000);
    h.maintain().await;
    expect_none(h, "a finished message").await;
    assert_eq!(
        get(db, &key("dead")).await,
        None,
        "a delivered message is never dead-lettered"
    );
}

/// Failure retries after `schedule[0]`, then `schedule[1]`, …, then writes the payload (V8) to
/// the dead-letter keys with a new versionstamp.
pub async fn failure_retries_along_schedule(h: &ClockedDb) {
    let db = h.database();
    let dead = key("dead");
    let v0 = commit(
        db,
        AtomicWrite {
            enqueues: vec![enq(b"job", 0, Some(vec![100, 1000]), vec![dead.clone()])],
            ..Default::default()
        },
    )
    .await;
    let m1 = expect_msg(h, b"job", 1).await;
    finish(h, m1.lease, false).await;
    expect_none(h, "retry waits 100 ms").await;
    h.advance(99);
    expect_none(h, "retry waits 100 ms").await;
    h.advance(1);
    let m2 = expect_msg(h, b"job", 2).await;
    assert_eq!(
        m2.lease.id, m1.lease.id,
        "the message id is stable across retries"
    );
    finish(h, m2.lease, false).await;
    h.advance(999);
    expect_none(h, "second retry waits 1000 ms").await;
    h.advance(1);
    let m3 = expect_msg(h, b"job", 3).await;
    assert_eq!(
        get(db, &dead).await,
        None,
        "not dead-lettered while attempts remain"
    );
    finish(h, m3.lease, false).await;
    let e = get(db, &dead)
        .await
        .expect("after the last attempt the payload goes to the dead-letter key");
    assert_eq!(e.value, KvValue::V8(b"job".to_vec()));
    assert!(
        e.versionstamp > v0,
        "the dead-letter write has its own, newer versionstamp"
    );
    h.advance(3_600_000);
    h.maintain().await;
    expect_none(h, "a dead-lettered message is gone").await;
    let v1 = set(db, &key("x"), bytes(b"x")).await;
    assert!(v1 > e.versionstamp);
}

/// `backoff_schedule: None` uses the default schedule 100, 1000, 5000, 30000, 60000 ms.
pub async fn default_schedule(h: &ClockedDb) {
    let db = h.database();
    let dead = key("dead");
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enq(b"d", 0, None, vec![dead.clone()])],
            ..Default::default()
        },
    )
    .await;
    let mut m = expect_msg(h, b"d", 1).await;
    for (i, delay) in DEFAULT_BACKOFF_SCHEDULE.iter().enumerate() {
        finish(h, m.lease, false).await;
        h.advance(u64::from(*delay) - 1);
        expect_none(h, &format!("retry {} waits {delay} ms", i + 1)).await;
        h.advance(1);
        m = expect_msg(h, b"d", i as u32 + 2).await;
    }
    assert_eq!(get(db, &dead).await, None);
    finish(h, m.lease, false).await;
    assert_eq!(
        get(db, &dead).await.map(|e| e.value),
        Some(KvValue::V8(b"d".to_vec()))
    );
}

/// `backoff_schedule: Some(vec![])` means no retries: the first failure dead-letters to every
/// key, in one commit, replacing what was there.
pub async fn empty_schedule_dead_letters_at_once(h: &ClockedDb) {
    let db = h.database();
    let (d1, d2) = (key("d1"), key("d2"));
    let v0 = commit(
        db,
        AtomicWrite {
            mutations: vec![set_expiring(&d1, bytes(b"old"), h.now() + 10)],
            enqueues: vec![enq(b"once", 0, Some(vec![]), vec![d1.clone(), d2.clone()])],
            ..Default::default()
        },
    )
    .await;
    let m = expect_msg(h, b"once", 1).await;
    finish(h, m.lease, false).await;
    let e1 = get(db, &d1).await.expect("d1");
    let e2 = get(db, &d2).await.expect("d2");
    assert_eq!(e1.value, KvValue::V8(b"once".to_vec()));
    assert_eq!(e2.value, KvValue::V8(b"once".to_vec()));
    assert_eq!(
        e1.versionstamp, e2.versionstamp,
        "one dead-letter commit for all keys"
    );
    assert!(e1.versionstamp > v0);
    h.advance(100);
    assert_eq!(h.maintain().await, 0, "dead-letter values have no expiry");
    assert!(get(db, &d1).await.is_some());
    h.advance(3_600_000);
    expect_none(h, "no retry with an empty schedule").await;
}

/// Without dead-letter keys an undeliverable message is just dropped.
pub async fn dead_letter_without_keys_drops(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enq(b"x", 0, Some(vec![]), vec![])],
            ..Default::default()
        },
    )
    .await;
    let m = expect_msg(h, b"x", 1).await;
    finish(h, m.lease, false).await;
    h.advance(3_600_000);
    h.maintain().await;
    expect_none(h, "dropped").await;
    assert!(scan_all(db).await.is_empty());
}

/// When the clock passes a lease and maintenance runs, the delivery counts as failed: the
/// message comes back after `schedule[0]` with the next attempt number, and the old lease is
/// dead.
pub async fn lease_expiry_redelivers(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enq(b"slow", 0, Some(vec![1000]), vec![key("dead")])],
            ..Default::default()
        },
    )
    .await;
    let m1 = expect_msg(h, b"slow", 1).await;
    h.advance(m1.lease.deadline_ms - h.now() - 1);
    h.maintain().await;
    expect_none(h, "the lease has not expired yet").await;
    h.advance(2);
    h.maintain().await;
    expect_none(h, "redelivery waits for schedule[0]").await;
    h.advance(1000);
    let m2 = expect_msg(h, b"slow", 2).await;
    assert_ne!(m2.lease, m1.lease);
    let r = h.database().finish(m1.lease, true).await;
    assert!(
        matches!(r, Err(KvError::LeaseNotFound)),
        "finishing an expired lease: {r:?}"
    );
    // The second delivery also times out: no attempts left, so it is dead-lettered.
    h.advance(m2.lease.deadline_ms - h.now() + 1);
    h.maintain().await;
    assert_eq!(
        get(db, &key("dead")).await.map(|e| e.value),
        Some(KvValue::V8(b"slow".to_vec()))
    );
    let r = h.database().finish(m2.lease, true).await;
    assert!(
        matches!(r, Err(KvError::LeaseNotFound)),
        "finishing an expired lease: {r:?}"
    );
    expect_none(h, "dead-lettered").await;
}

/// Finishing a lease twice, or a lease that never existed, fails with `LeaseNotFound` and does
/// not disturb other messages.
pub async fn stale_lease_is_rejected(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enqueue(b"a", 0), enqueue(b"b", 1)],
            ..Default::default()
        },
    )
    .await;
    let a = expect_msg(h, b"a", 1).await;
    let b = expect_msg(h, b"b", 1).await;
    finish(h, a.lease, true).await;
    for lease in [
        a.lease,
        QueueLease {
            id: [7; 16],
            deadline_ms: a.lease.deadline_ms,
        },
        QueueLease {
            id: b.lease.id,
            deadline_ms: b.lease.deadline_ms + 1,
        },
    ] {
        for ok in [true, false] {
            let r = h.database().finish(lease, ok).await;
            assert!(
                matches!(r, Err(KvError::LeaseNotFound)),
                "finish({lease:?}, {ok}) should fail, got {r:?}"
            );
        }
    }
    finish(h, b.lease, false).await;
    h.advance(100);
    expect_msg(h, b"b", 2).await;
}

/// Each delivery has its own lease: finishing one message does not affect another in flight.
pub async fn each_delivery_gets_its_own_lease(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enqueue(b"1", 0), enqueue(b"2", 0), enqueue(b"3", 0)],
            ..Default::default()
        },
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(deq(h).await.expect("three ready messages"));
    }
    let mut payloads: Vec<Vec<u8>> = got.iter().map(|m| m.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    assert!(
        got[0].lease != got[1].lease
            && got[1].lease != got[2].lease
            && got[0].lease != got[2].lease
    );
    assert!(got[0].lease.id != got[1].lease.id && got[1].lease.id != got[2].lease.id);
    finish(h, got[1].lease, true).await;
    finish(h, got[0].lease, true).await;
    finish(h, got[2].lease, true).await;
    expect_none(h, "all finished").await;
}

/// After `close`, every call fails with `Closed`, and open watch streams end (or report an
/// error) instead of hanging.
pub async fn closed_database_rejects_calls(h: &ClockedDb) {
    let db = h.database();
    set(db, &key("a"), bytes(b"a")).await;
    let mut w = db.watch(vec![key("a")]).await.expect("watch");
    let _first = crate::watch::next(&mut w).await;
    db.close().await.expect("close");
    let closed = |what: &str, e: Option<KvError>| match e {
        Some(KvError::Closed) => {}
        other => panic!("{what} after close: expected Closed, got {other:?}"),
    };
    closed(
        "atomic_write",
        db.atomic_write(write_of(vec![Mutation::set(key("b"), bytes(b"b"))]))
            .await
            .err(),
    );
    closed(
        "snapshot_read",
        db.snapshot_read(
            vec![kv_traits::ReadRange::single(&key("a"))],
            kv_traits::Consistency::Strong,
        )
        .await
        .err(),
    );
    closed("watch", db.watch(vec![key("a")]).await.err());
    closed("dequeue", db.dequeue(Duration::from_millis(10)).await.err());
    closed("run_maintenance", h.db.run_maintenance().await.err());
    match tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut w)).await {
        Ok(None) | Ok(Some(Err(_))) => {}
        Ok(Some(Ok(n))) => {
            // A final notification is tolerable; the stream must end right after it.
            match tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut w))
                .await
            {
                Ok(None) | Ok(Some(Err(_))) => {}
                other => panic!("watch stream still running after close: {n:?} then {other:?}"),
            }
        }
        Err(_) => panic!("an open watch stream hangs after close"),
    }
}

/// A message retried immediately (backoff 0) and redelivered at the same clock reading gets a
/// new lease: the first delivery's lease is stale and cannot finish the second delivery.
pub async fn stale_lease_after_immediate_redelivery(h: &ClockedDb) {
    let db = h.database();
    commit(
        db,
        AtomicWrite {
            enqueues: vec![enq(b"r", 0, Some(vec![0, 0]), vec![])],
            ..Default::default()
        },
    )
    .await;
    let m1 = expect_msg(h, b"r", 1).await;
    finish(h, m1.lease, false).await;
    let m2 = expect_msg(h, b"r", 2).await;
    assert_ne!(
        m1.lease, m2.lease,
        "two deliveries share one lease, so a stale lease can finish a later delivery"
    );
    let r = h.database().finish(m1.lease, true).await;
    assert!(
        matches!(r, Err(KvError::LeaseNotFound)),
        "finishing the first delivery's lease: {r:?}"
    );
    finish(h, m2.lease, true).await;
}
