//! Restart behaviour (optional capability): data, expiry, queue and the version counter survive
//! closing and reopening the store. Each test gets a fresh [`ReopenableBackend`].

use std::sync::Arc;
use std::time::Duration;

use kv_db::{Db, DbConfig};
use kv_traits::{
    AtomicWrite, Database, Enqueue, KvError, KvValue, ManualClock, Mutation, Versionstamp,
};

use crate::harness::{ClockedDb, ReopenableBackend};
use crate::util::*;

/// The wait of a dequeue that expects a ready message: it returns as soon as the message is
/// leased, so this only bounds a hang.
const READY_WAIT: Duration = Duration::from_secs(30);

async fn open(store: &dyn ReopenableBackend, clock: &Arc<ManualClock>) -> ClockedDb {
    let backend = store
        .open()
        .await
        .unwrap_or_else(|e| panic!("opening the store failed: {e}"));
    ClockedDb::open_with_clock(backend, clock.clone())
        .await
        .unwrap_or_else(|e| panic!("Db::open failed: {e}"))
}

async fn close(h: ClockedDb) {
    h.db.close()
        .await
        .unwrap_or_else(|e| panic!("close failed: {e}"));
    drop(h);
}

fn new_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(ClockedDb::START_MS))
}

/// Entries (values of every encoding, versionstamps, versionstamped keys) are the same after a
/// reopen.
pub async fn data_survives_reopen(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let h = open(store, &clock).await;
    let db = h.database();
    set(db, &key("a"), bytes(b"a")).await;
    commit(
        db,
        write_of(vec![
            Mutation::set(key("u"), KvValue::U64(7)),
            Mutation::set(key("v"), KvValue::V8(vec![0xff, 0x0f, 0x49, 0x02])),
            set_vs_key(&key("log"), bytes(b"l")),
            Mutation::set(vec![0xff, 0x00, 0xff], bytes(&[0; 1000])),
        ]),
    )
    .await;
    commit(
        db,
        write_of(vec![Mutation::delete(key("a")), sum_u64(&key("u"), 1)]),
    )
    .await;
    let before = scan_all(db).await;
    assert_eq!(before.len(), 4);
    close(h).await;
    let h = open(store, &clock).await;
    assert_eq!(scan_all(h.database()).await, before, "data after reopen");
    close(h).await;
}

/// Versionstamps keep increasing across reopens.
pub async fn versionstamps_increase_after_reopen(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let mut last = Versionstamp::ZERO;
    for round in 0..3u64 {
        let h = open(store, &clock).await;
        for i in 0..3u64 {
            let vs = set(h.database(), &key("k"), KvValue::U64(round * 10 + i)).await;
            assert!(vs > last, "versionstamp {vs} after {last} (round {round})");
            last = vs;
        }
        let vs = commit(h.database(), AtomicWrite::default()).await;
        assert!(vs > last);
        last = vs;
        close(h).await;
    }
}

/// Queued messages (ready and delayed) are delivered after a reopen.
pub async fn queue_survives_reopen(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let h = open(store, &clock).await;
    let now = h.now();
    commit(
        h.database(),
        AtomicWrite {
            enqueues: vec![
                enqueue(b"now", 0),
                Enqueue {
                    backoff_schedule: Some(vec![]),
                    keys_if_undelivered: vec![key("dead")],
                    ..enqueue(b"later", now + 1000)
                },
            ],
            ..Default::default()
        },
    )
    .await;
    close(h).await;
    let h = open(store, &clock).await;
    let db = h.database();
    let m = db
        .dequeue(READY_WAIT)
        .await
        .expect("dequeue")
        .expect("the ready message survived");
    assert_eq!(m.payload, b"now");
    db.finish(m.lease, true).await.expect("finish");
    assert!(db
        .dequeue(Duration::from_millis(20))
        .await
        .expect("dequeue")
        .is_none());
    h.advance(1000);
    let m = db
        .dequeue(READY_WAIT)
        .await
        .expect("dequeue")
        .expect("the delayed message survived");
    assert_eq!(m.payload, b"later");
    db.finish(m.lease, false).await.expect("finish");
    assert_eq!(
        get(db, &key("dead")).await.map(|e| e.value),
        Some(KvValue::V8(b"later".to_vec())),
        "dead-letter keys survived"
    );
    close(h).await;
}

/// A message leased when the database closed is redelivered once its lease has expired.
pub async fn leased_message_redelivered_after_reopen(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let h = open(store, &clock).await;
    commit(
        h.database(),
        AtomicWrite {
            enqueues: vec![Enqueue {
                backoff_schedule: Some(vec![100]),
                ..enqueue(b"m", 0)
            }],
            ..Default::default()
        },
    )
    .await;
    let m1 = h
        .database()
        .dequeue(READY_WAIT)
        .await
        .expect("dequeue")
        .expect("message");
    close(h).await;
    let h = open(store, &clock).await;
    h.advance(m1.lease.deadline_ms - h.now() + 1);
    h.maintain().await;
    h.advance(100);
    let m2 = h
        .database()
        .dequeue(READY_WAIT)
        .await
        .expect("dequeue")
        .expect("redelivered after reopen");
    assert_eq!((m2.payload.as_slice(), m2.attempt), (&b"m"[..], 2));
    h.database().finish(m2.lease, true).await.expect("finish");
    close(h).await;
}

/// Expiry times survive a reopen: the key is hidden once its time passes and the sweep deletes it.
pub async fn expiry_survives_reopen(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let h = open(store, &clock).await;
    commit(
        h.database(),
        write_of(vec![
            set_expiring(&key("e"), bytes(b"e"), h.now() + 100),
            Mutation::set(key("k"), bytes(b"k")),
        ]),
    )
    .await;
    close(h).await;
    let h = open(store, &clock).await;
    assert!(get(h.database(), &key("e")).await.is_some());
    h.advance(100);
    assert_eq!(get(h.database(), &key("e")).await, None);
    assert_eq!(h.maintain().await, 1);
    assert!(get(h.database(), &key("k")).await.is_some());
    close(h).await;
}

/// A database opened read-only serves reads and rejects every write with `WriteDisabled`.
pub async fn read_only_database_rejects_writes(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let h = open(store, &clock).await;
    let vs = set(h.database(), &key("a"), bytes(b"a")).await;
    close(h).await;
    let backend = store.open().await.expect("open");
    let config = DbConfig {
        read_only: true,
        ..ClockedDb::config(clock.clone())
    };
    let db = Db::open(backend, config).await.expect("open read-only");
    assert_eq!(get(&db, &key("a")).await.map(|e| e.versionstamp), Some(vs));
    for w in [
        write_of(vec![Mutation::set(key("b"), bytes(b"b"))]),
        AtomicWrite::default(),
        AtomicWrite {
            enqueues: vec![enqueue(b"q", 0)],
            ..Default::default()
        },
    ] {
        let r = db.atomic_write(w).await;
        assert!(
            matches!(r, Err(KvError::WriteDisabled)),
            "write to a read-only database: {r:?}"
        );
    }
    assert_eq!(scan_all(&db).await.len(), 1);
    db.close().await.expect("close");
}

/// A lease taken before a reopen can still be finished after it (while it has not expired).
pub async fn lease_survives_reopen(store: &dyn ReopenableBackend) {
    let clock = new_clock();
    let h = open(store, &clock).await;
    commit(
        h.database(),
        AtomicWrite {
            enqueues: vec![enqueue(b"m", 0)],
            ..Default::default()
        },
    )
    .await;
    let m = h
        .database()
        .dequeue(READY_WAIT)
        .await
        .expect("dequeue")
        .expect("message");
    close(h).await;
    let h = open(store, &clock).await;
    h.database()
        .finish(m.lease, true)
        .await
        .expect("a live lease can be finished after a reopen");
    h.advance(24 * 3600 * 1000);
    h.maintain().await;
    assert!(h
        .database()
        .dequeue(Duration::from_millis(20))
        .await
        .expect("dequeue")
        .is_none());
    close(h).await;
}
