//! Shared re-reads of watched keys: when one commit wakes many watchers of the same keys, one
//! snapshot read serves them all instead of one read per watcher.
//!
//! Contract:
//! - [`KeySet::read`] returns a snapshot of `keys` whose version is at least `need`, taken
//!   from one read transaction (so it is as consistent as a private read). Callers pass as `need`
//!   the highest signal value they were woken by: the version of a commit that had finished
//!   before they were woken, so any read started after that commit qualifies.
//! - A read in progress is joined when its starter needed at least as much (its read starts after
//!   that commit finished, so its version is high enough); a finished one is reused while its
//!   version is high enough. Otherwise the caller starts a new read, which later callers join.
//! - A failed shared read is not shared: every caller waiting on it retries with a read of its
//!   own, whose error it gets.
//! - Only re-reads go through here. A watch's first read must begin after the watch subscribed
//!   to its keys' signals, which a shared read started earlier may not; it is always private.
//! - Streams of the same keys (same keys in the same order) share one [`KeySet`], obtained with
//!   [`SharedReads::join`]; it keeps the latest snapshot until the next read replaces it, and
//!   lives as long as a stream holds it (the registry keeps weak references, swept of dead
//!   ones when it has doubled since the last sweep). Memory: one snapshot per watched key set.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use kv_traits::{KvEntry, KvError};
use tokio::sync::OnceCell;

/// A snapshot of watched keys: the commit version it reflects and each key's entry.
pub(crate) type Snapshot = (u64, Vec<Option<KvEntry>>);

/// The registry of watched key sets.
#[derive(Default)]
pub(crate) struct SharedReads {
    sets: Mutex<Sets>,
}

#[derive(Default)]
struct Sets {
    map: HashMap<Vec<Vec<u8>>, Weak<KeySet>>,
    sweep_at: usize,
}

/// The keys of one or more watch streams and their latest shared read.
pub(crate) struct KeySet {
    keys: Vec<Vec<u8>>,
    latest: Mutex<Option<Arc<Flight>>>,
}

struct Flight {
    /// The version its starter needed.
    need: u64,
    /// `None` once done = the read failed.
    result: OnceCell<Option<Arc<Snapshot>>>,
}

impl Flight {
    fn serves(&self, need: u64) -> bool {
        match self.result.get() {
            None => self.need >= need,
            Some(Some(snapshot)) => snapshot.0 >= need,
            Some(None) => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SharedReads {
    /// The shared handle of `keys`.
    pub(crate) fn join(&self, keys: Vec<Vec<u8>>) -> Arc<KeySet> {
        let mut sets = lock(&self.sets);
        if let Some(set) = sets.map.get(&keys).and_then(Weak::upgrade) {
            return set;
        }
        if sets.map.len() >= sets.sweep_at {
            sets.map.retain(|_, s| s.strong_count() > 0);
            sets.sweep_at = (sets.map.len() * 2).max(64);
        }
        let set = Arc::new(KeySet {
            keys: keys.clone(),
            latest: Mutex::new(None),
        });
        sets.map.insert(keys, Arc::downgrade(&set));
        set
    }
}

impl KeySet {
    /// The watched keys, in request order.
    pub(crate) fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// A snapshot of the keys at version `need` or later (see the module contract); `read`
    /// takes one.
    pub(crate) async fn read<F, Fut>(&self, need: u64, read: F) -> Result<Arc<Snapshot>, KvError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Snapshot, KvError>>,
    {
        let flight = {
            let mut latest = lock(&self.latest);
            match latest.as_ref() {
                Some(f) if f.serves(need) => f.clone(),
                _ => {
                    let f = Arc::new(Flight {
                        need,
                        result: OnceCell::new(),
                    });
                    *latest = Some(f.clone());
                    f
                }
            }
        };
        let shared = flight
            .result
            .get_or_init(|| async { read().await.ok().map(Arc::new) })
            .await;
        match shared {
            Some(snapshot) if snapshot.0 >= need => Ok(snapshot.clone()),
            _ => read().await.map(Arc::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn keys() -> Vec<Vec<u8>> {
        vec![b"a".to_vec(), b"b".to_vec()]
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_read() {
        let set = SharedReads::default().join(keys());
        let count = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (set, count, gate) = (set.clone(), count.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                set.read(3, || {
                    let (count, gate) = (count.clone(), gate.clone());
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok((3, vec![None, None]))
                    }
                })
                .await
            }));
        }
        // Let every caller join before the read finishes.
        while count.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().0, 3);
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_snapshot_too_old_for_the_caller_is_not_reused() {
        let reads = SharedReads::default();
        let set = reads.join(keys());
        let version = AtomicU64::new(5);
        let read = || {
            let v = version.load(Ordering::SeqCst);
            async move { Ok((v, vec![None, None])) }
        };
        assert_eq!(set.read(5, read).await.unwrap().0, 5);
        // Reused while it is new enough, by every stream of the same keys.
        version.store(9, Ordering::SeqCst);
        assert_eq!(reads.join(keys()).read(4, read).await.unwrap().0, 5);
        // Not once a later commit is needed.
        assert_eq!(set.read(6, read).await.unwrap().0, 9);
        // Other keys never share.
        let other = reads.join(vec![b"a".to_vec()]);
        assert!(!Arc::ptr_eq(&other, &set));
        version.store(11, Ordering::SeqCst);
        assert_eq!(other.read(1, read).await.unwrap().0, 11);
    }

    #[test]
    fn the_registry_forgets_key_sets_nobody_holds() {
        let reads = SharedReads::default();
        let kept = reads.join(keys());
        for i in 0..10_000u32 {
            drop(reads.join(vec![i.to_be_bytes().to_vec()]));
        }
        assert!(lock(&reads.sets).map.len() <= 64 * 2);
        assert!(Arc::ptr_eq(&kept, &reads.join(keys())));
    }

    #[tokio::test]
    async fn a_failed_shared_read_is_retried_privately() {
        let set = SharedReads::default().join(keys());
        let calls = AtomicU64::new(0);
        let read = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(KvError::Closed)
                } else {
                    Ok((2, vec![None]))
                }
            }
        };
        assert_eq!(set.read(2, read).await.unwrap().0, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
