//! Issue 17: a restore's memory is bounded by its settings (segment prefetch, import chunk),
//! not by the database. A counting global allocator measures the peak of live heap bytes
//! during restores of the same kind of backup at two sizes (4x the keys, 4x the log
//! segments) into SQLite: the larger one must not need more than a small constant on top.
//! (SQLite's own allocations, bounded by its page cache, are not counted; the backup store
//! and the source are in memory, allocated before the measurement starts, and subtracted.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{change_log_db, commit, initial_snapshot_done, key};
use kv_db::{Db, DbConfig};
use kv_engine_sqlite::SqliteBackend;
use kv_pitr::consumer::BackupReader;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_pitr::restore::{restore, RestoreTarget};
use kv_traits::{Database, KvValue, Mutation};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = LIVE.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const VALUE: usize = 200;
const PER_COMMIT: usize = 50;

/// A backup of `keys` keys (200-byte values) in small log segments, in memory.
async fn backup_of(keys: usize) -> (Arc<dyn ObjectStore>, Db) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let db = change_log_db().await;
    let mut config = BackupConfig::new(store.clone(), Path::from("b"));
    config.flush_interval = Duration::from_millis(20);
    config.max_segment_bytes = 32 << 10;
    let backup = Backup::start(db.clone(), config).await.unwrap();
    initial_snapshot_done(&backup).await;
    for start in (0..keys).step_by(PER_COMMIT) {
        let mutations = (start..(start + PER_COMMIT).min(keys))
            .map(|i| Mutation::set(key(&format!("k{i:08}")), KvValue::Bytes(vec![7; VALUE])))
            .collect();
        commit(&db, mutations).await;
    }
    backup.flush(Duration::from_secs(120)).await.unwrap();
    backup.shutdown().await.unwrap();
    (store, db)
}

/// Peak live heap bytes above the start while restoring the latest point into a new SQLite
/// file; returns it with the restored keys.
async fn restore_peak(store: Arc<dyn ObjectStore>) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let target = Db::open(
        SqliteBackend::open(dir.path().join("r.db"), Default::default()).unwrap(),
        DbConfig {
            background_tasks: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let reader = BackupReader::new(store, Path::from("b"));
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = restore(&reader, &target, RestoreTarget::Latest, |_| {})
        .await
        .unwrap();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    target.close().await.unwrap();
    (peak, out.keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_heap_peak_does_not_grow_with_the_database() {
    let small_keys = 10_000;
    let (small_store, _small_src) = backup_of(small_keys).await;
    let (small, restored) = restore_peak(small_store).await;
    assert_eq!(restored, small_keys);

    let large_keys = 4 * small_keys;
    let (large_store, _large_src) = backup_of(large_keys).await;
    let (large, restored) = restore_peak(large_store).await;
    assert_eq!(restored, large_keys);

    // The larger backup holds about 6 MB more log than the smaller one (30,000 keys of ~220
    // bytes); a restore whose memory followed the data would show that difference. Allow
    // 1 MiB of slack (the listing of 4x the segments, allocator noise).
    eprintln!("restore heap peak: {small} bytes at {small_keys} keys, {large} at {large_keys}");
    assert!(
        large <= small + (1 << 20),
        "heap peak grew with the database: {small} bytes at {small_keys} keys, {large} at {large_keys}"
    );
}
