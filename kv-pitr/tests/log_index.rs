//! The log index: `info` and listing recovery points read the index instead of the log
//! segments, give the same answers as reading the segments (the fallback for backups
//! without an index), and ignore index records that do not match a segment.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{key, list, put, HookedStore, Source, StoreHooks};
use kv_pitr::consumer::{BackupInfo, BackupReader, RecoveryPoint};
use kv_pitr::log_index;
use kv_pitr::producer::{Backup, BackupConfig};
use kv_traits::{KvValue, Mutation};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};

/// Counts the objects read (`get`, not `head`), by folder.
#[derive(Debug, Default)]
struct Counting {
    gets: Mutex<Vec<Path>>,
}

impl Counting {
    fn take(&self) -> Vec<Path> {
        std::mem::take(&mut *self.gets.lock().unwrap())
    }
}

impl StoreHooks for Counting {
    const NAME: &'static str = "CountingStore";

    fn before_get(&self, location: &Path, options: &GetOptions) {
        if !options.head {
            self.gets.lock().unwrap().push(location.clone());
        }
    }
}

fn log_reads(gets: &[Path]) -> usize {
    gets.iter()
        .filter(|p| p.as_ref().contains("/logs/"))
        .count()
}

/// A stopped backup with a dozen segments (two commits each) across two producer runs (so
/// the index has two chunks).
async fn backed_up() -> (Source, Arc<HookedStore<Counting>>) {
    let mut src = Source::new().await;
    src.commit(vec![Mutation::set(key("before"), KvValue::U64(0))])
        .await;
    let store = HookedStore::new(Arc::new(InMemory::new()), Counting::default());
    for run in 0..2u64 {
        let mut config = BackupConfig::new(store.clone(), Path::from("b"));
        config.flush_interval = Duration::from_millis(5);
        config.max_segment_batches = 2;
        let backup = Backup::start(src.db.clone(), config).await.unwrap();
        common::initial_snapshot_done(&backup).await;
        for i in 0..12u64 {
            src.commit(vec![Mutation::set(
                key(&format!("k{}", i % 5)),
                KvValue::U64(run * 100 + i),
            )])
            .await;
        }
        backup.flush(Duration::from_secs(30)).await.unwrap();
        backup.shutdown().await.unwrap();
    }
    (src, store)
}

async fn read_all(store: &Arc<HookedStore<Counting>>) -> (BackupInfo, Vec<RecoveryPoint>) {
    let s: Arc<dyn ObjectStore> = store.clone();
    let reader = BackupReader::new(s, Path::from("b"));
    let info = reader.info().await.unwrap();
    let points = reader.recovery_points(None, None).await.unwrap();
    (info, points)
}

fn same_info(a: &BackupInfo, b: &BackupInfo) {
    assert_eq!(a.first_point, b.first_point);
    assert_eq!(a.latest_point, b.latest_point);
    assert_eq!(a.recovery_points, b.recovery_points);
    assert_eq!(a.log_segments, b.log_segments);
    assert_eq!(a.log_bytes, b.log_bytes);
}

#[tokio::test]
async fn info_and_points_read_the_index_not_the_segments() {
    let (src, store) = backed_up().await;
    let index = list(&*store.inner, &log_index::index_dir(&Path::from("b"))).await;
    assert_eq!(index.len(), 2, "one chunk per producer run: {index:?}");
    let segments = list(&*store.inner, &Path::from("b/logs")).await.len();
    assert!(segments >= 6, "{segments} segments");

    store.hooks.take();
    let (info, points) = read_all(&store).await;
    let gets = store.hooks.take();
    assert_eq!(log_reads(&gets), 0, "no segment read: {gets:?}");
    // Every commit since the backup began is a point, plus the first one.
    assert_eq!(points.len(), 24 + 1);
    assert_eq!(info.recovery_points, 25);
    assert_eq!(
        info.latest_point.versionstamp,
        *src.states.keys().next_back().unwrap()
    );

    // Without the index (a backup written before it existed): the same answers, from the
    // segments.
    for p in &index {
        store.inner.delete(p).await.unwrap();
    }
    let (old_info, old_points) = read_all(&store).await;
    let gets = store.hooks.take();
    // Twice: `info` and the listing each read them.
    assert_eq!(log_reads(&gets), 2 * segments, "every segment read");
    same_info(&info, &old_info);
    assert_eq!(points, old_points);
}

#[tokio::test]
async fn index_records_that_do_not_match_a_segment_are_not_used() {
    let (_src, store) = backed_up().await;
    store.hooks.take();
    let (info, points) = read_all(&store).await;
    store.hooks.take();

    // Claim other commits for the first chunk's segments: their names no longer match the
    // records' commits, so the segments are read instead.
    let index = list(&*store.inner, &log_index::index_dir(&Path::from("b"))).await;
    let body = common::get(&*store.inner, &index[0]).await;
    let mut chunk: log_index::LogIndexChunk = serde_json::from_slice(&body).unwrap();
    let lied = chunk.segments.len();
    for r in &mut chunk.segments {
        r.commits = log_index::runs_of([kv_traits::Versionstamp::from_version(1)]);
    }
    put(
        &*store.inner,
        &index[0],
        serde_json::to_vec(&chunk).unwrap(),
    )
    .await;
    let (info2, points2) = read_all(&store).await;
    assert_eq!(log_reads(&store.hooks.take()), 2 * lied);
    same_info(&info, &info2);
    assert_eq!(points, points2);

    // An undecodable index is ignored as a whole.
    put(&*store.inner, &index[1], b"not json".to_vec()).await;
    let (info3, points3) = read_all(&store).await;
    let segments = list(&*store.inner, &Path::from("b/logs")).await.len();
    assert_eq!(log_reads(&store.hooks.take()), 2 * segments);
    same_info(&info, &info3);
    assert_eq!(points, points3);
}
