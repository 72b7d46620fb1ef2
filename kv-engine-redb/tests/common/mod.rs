//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kv_engine_redb::{RedbBackend, RedbOptions};
use kv_traits::Backend;
use redb::backends::FileBackend;
use redb::StorageBackend;

pub fn open(path: &Path) -> RedbBackend {
    RedbBackend::open(path, RedbOptions::default()).unwrap()
}

pub fn temp() -> (tempfile::TempDir, RedbBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(&dir.path().join("kv.redb"));
    (dir, backend)
}

pub async fn put_all(backend: &RedbBackend, pairs: &[(&[u8], &[u8])]) {
    let mut txn = backend.begin_write().await.unwrap();
    for (k, v) in pairs {
        txn.put(k, v).await.unwrap();
    }
    txn.commit().await.unwrap();
}

/// Switches that make a [`FaultyStorage`] fail on demand.
#[derive(Debug, Default)]
pub struct Faults {
    pub fail_sync: AtomicBool,
    pub fail_write: AtomicBool,
    /// Milliseconds each sync sleeps before doing its work (a slow disk).
    pub sync_delay_ms: AtomicU64,
    pub syncs: AtomicU64,
    pub writes: AtomicU64,
}

/// A file storage backend that fails writes or syncs when told to.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyStorage {
    pub fn open(path: &Path, faults: Arc<Faults>) -> FaultyStorage {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        FaultyStorage {
            inner: FileBackend::new(file).unwrap(),
            faults,
        }
    }
}

fn injected(what: &str) -> std::io::Error {
    std::io::Error::other(format!("injected {what} failure"))
}

impl StorageBackend for FaultyStorage {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.faults.fail_write.load(Ordering::SeqCst) {
            return Err(injected("set_len"));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        let delay = self.faults.sync_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(injected("fsync"));
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.faults.writes.fetch_add(1, Ordering::SeqCst);
        if self.faults.fail_write.load(Ordering::SeqCst) {
            return Err(injected("write"));
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(s, e)
    }

    fn try_lock_shared_range(
        &self,
        s: Bound<u64>,
        e: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }

    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(s, e)
    }

    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(s, e)
    }

    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(s, e)
    }

    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(s, e)
    }
}
