//! Named leases: one holder at a time, renewal, expiry and takeover by the database clock, on one
//! database and across two databases on one shared store (two "processes"); a lease operation
//! moves no version and writes neither the change log nor the commit feed.

use std::sync::Arc;
use std::time::Duration;

use kv_db::feed::FEED;
use kv_db::{Db, DbConfig, ImportOp, LeaseOwner, LeaseState};
use kv_engine_memory::MemoryBackend;
use kv_test_support::SharedStore;
use kv_traits::{
    AtomicWrite, Backend, CommitResult, Database, KvError, KvValue, ManualClock, Mutation,
    Versionstamp,
};

const TTL: Duration = Duration::from_millis(1000);

fn config(clock: &Arc<ManualClock>) -> DbConfig {
    DbConfig {
        clock: clock.clone(),
        background_tasks: false,
        change_log: true,
        ..DbConfig::default()
    }
}

fn held(state: LeaseState) -> u64 {
    match state {
        LeaseState::Held { expires_at_ms } => expires_at_ms,
        other => panic!("expected the lease to be held, got {other:?}"),
    }
}

async fn set(db: &Db, key: &[u8], value: u64) -> Versionstamp {
    let w = AtomicWrite {
        mutations: vec![Mutation::set(key.to_vec(), KvValue::U64(value))],
        ..Default::default()
    };
    match db.atomic_write(w).await.unwrap() {
        CommitResult::Committed(vs) => vs,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn one_holder_renewal_expiry_and_release() {
    let clock = Arc::new(ManualClock::new(10_000));
    let db = Db::open(MemoryBackend::new(), config(&clock))
        .await
        .unwrap();
    assert!(!db.is_shared());
    let (a, b) = (LeaseOwner([1; 16]), LeaseOwner([2; 16]));

    assert_eq!(held(db.acquire_lease("job", a, TTL).await.unwrap()), 11_000);
    assert_eq!(
        db.acquire_lease("job", b, TTL).await.unwrap(),
        LeaseState::Taken {
            owner: a,
            expires_at_ms: 11_000
        }
    );
    // Another name is another lease.
    held(db.acquire_lease("other", b, TTL).await.unwrap());

    // Renewing moves the expiry; the other owner still cannot take it.
    clock.advance(900);
    assert_eq!(held(db.acquire_lease("job", a, TTL).await.unwrap()), 11_900);
    clock.advance(900);
    assert!(matches!(
        db.acquire_lease("job", b, TTL).await.unwrap(),
        LeaseState::Taken { owner, .. } if owner == a
    ));

    // A releases only what it holds.
    assert!(matches!(
        db.release_lease("job", b).await.unwrap(),
        LeaseState::Taken { owner, .. } if owner == a
    ));

    // Not renewed: at its expiry the lease is free for the taking.
    clock.advance(100);
    assert_eq!(held(db.acquire_lease("job", b, TTL).await.unwrap()), 12_900);
    assert!(matches!(
        db.acquire_lease("job", a, TTL).await.unwrap(),
        LeaseState::Taken { owner, .. } if owner == b
    ));
    assert_eq!(db.release_lease("job", b).await.unwrap(), LeaseState::Free);
    held(db.acquire_lease("job", a, TTL).await.unwrap());
}

#[tokio::test]
async fn leases_move_no_version_and_log_nothing() {
    let clock = Arc::new(ManualClock::new(10_000));
    let db = Db::open(MemoryBackend::new(), config(&clock))
        .await
        .unwrap();
    let vs = set(&db, b"\x02k\x00", 1).await;
    let mut commits = db.subscribe_commits();
    commits.borrow_and_update();
    let owner = LeaseOwner::random();
    held(db.acquire_lease("job", owner, TTL).await.unwrap());
    held(db.acquire_lease("job", owner, TTL).await.unwrap());
    assert_eq!(
        db.release_lease("job", owner).await.unwrap(),
        LeaseState::Free
    );
    assert_eq!(db.current_versionstamp().await.unwrap(), vs);
    assert!(!commits.has_changed().unwrap());
    let logged = db.read_changes(None, 100).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].versionstamp, vs);
    // The next write continues right after the last one.
    let next = set(&db, b"\x02k\x00", 2).await;
    assert_eq!(next.version(), vs.version() + 1);
}

#[tokio::test]
async fn a_lease_does_not_end_an_imported_copy() {
    let clock = Arc::new(ManualClock::new(10_000));
    let db = Db::open(MemoryBackend::new(), config(&clock))
        .await
        .unwrap();
    let point = Versionstamp::from_version(42);
    db.import(vec![ImportOp::Delete(b"\x02x\x00".to_vec())], Some(point))
        .await
        .unwrap();
    held(
        db.acquire_lease("job", LeaseOwner::random(), TTL)
            .await
            .unwrap(),
    );
    assert_eq!(db.imported_through().await.unwrap(), Some(point));
}

#[tokio::test]
async fn read_only_databases_refuse_leases() {
    let db = Db::open(
        MemoryBackend::new(),
        DbConfig {
            read_only: true,
            ..DbConfig::default()
        },
    )
    .await
    .unwrap();
    let owner = LeaseOwner::random();
    assert!(matches!(
        db.acquire_lease("job", owner, TTL).await,
        Err(KvError::WriteDisabled)
    ));
    assert!(matches!(
        db.release_lease("job", owner).await,
        Err(KvError::WriteDisabled)
    ));
}

#[tokio::test]
async fn closed_databases_refuse_leases() {
    let db = Db::open(MemoryBackend::new(), DbConfig::default())
        .await
        .unwrap();
    db.close().await.unwrap();
    assert!(matches!(
        db.acquire_lease("job", LeaseOwner::random(), TTL).await,
        Err(KvError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_shared_store_take_turns() {
    let clock = Arc::new(ManualClock::new(50_000));
    let store = SharedStore::new(MemoryBackend::new());
    let a = Db::open(store.open(), config(&clock)).await.unwrap();
    let b = Db::open(store.open(), config(&clock)).await.unwrap();
    assert!(a.is_shared() && b.is_shared());
    let (oa, ob) = (LeaseOwner::random(), LeaseOwner::random());
    let vs = set(&a, b"\x02k\x00", 1).await;

    held(a.acquire_lease("backup", oa, TTL).await.unwrap());
    assert!(matches!(
        b.acquire_lease("backup", ob, TTL).await.unwrap(),
        LeaseState::Taken { owner, .. } if owner == oa
    ));

    // The holder renewing keeps it, however long that goes on.
    for _ in 0..10 {
        clock.advance(400);
        held(a.acquire_lease("backup", oa, TTL).await.unwrap());
        assert!(matches!(
            b.acquire_lease("backup", ob, TTL).await.unwrap(),
            LeaseState::Taken { owner, .. } if owner == oa
        ));
    }

    // The holder stops renewing: just before the ttl passes it still holds, then B takes over.
    clock.advance(999);
    assert!(matches!(
        b.acquire_lease("backup", ob, TTL).await.unwrap(),
        LeaseState::Taken { .. }
    ));
    clock.advance(1);
    held(b.acquire_lease("backup", ob, TTL).await.unwrap());
    assert!(matches!(
        a.acquire_lease("backup", oa, TTL).await.unwrap(),
        LeaseState::Taken { owner, .. } if owner == ob
    ));

    // None of this was a commit: no version, no feed entry.
    assert_eq!(a.current_versionstamp().await.unwrap(), vs);
    assert_eq!(b.current_versionstamp().await.unwrap(), vs);
    let raw = store.open();
    let mut r = raw.begin_read().await.unwrap();
    let feed = r.scan(&[FEED], &[FEED + 1], 100, false).await.unwrap();
    assert_eq!(feed.len(), 1, "only the write stored a feed entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_acquirers_on_two_processes_get_one_holder() {
    let clock = Arc::new(ManualClock::new(50_000));
    let store = SharedStore::new(MemoryBackend::new());
    let a = Db::open(store.open(), config(&clock)).await.unwrap();
    let b = Db::open(store.open(), config(&clock)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            // Writes share batches with the lease operations.
            set(&db, format!("\x02k{i}\x00").as_bytes(), i).await;
            let owner = LeaseOwner::random();
            (owner, db.acquire_lease("backup", owner, TTL).await.unwrap())
        }));
    }
    let mut holders = Vec::new();
    let mut reported = Vec::new();
    for t in tasks {
        let (owner, state) = t.await.unwrap();
        match state {
            LeaseState::Held { .. } => holders.push(owner),
            LeaseState::Taken { owner, .. } => reported.push(owner),
            LeaseState::Free => panic!("an acquire never reports a free lease"),
        }
    }
    assert_eq!(holders.len(), 1, "exactly one holder");
    assert!(reported.iter().all(|o| *o == holders[0]));
    assert_eq!(a.current_versionstamp().await.unwrap().version(), 40);
}
