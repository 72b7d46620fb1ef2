//! An in-memory [`Backend`]: an ordered, transactional byte store whose snapshots are O(1)
//! (a persistent ordered map shares structure between versions). The default engine for tests.
//!
//! ```
//! use kv_engine_memory::MemoryBackend;
//! use kv_traits::Backend;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let backend = MemoryBackend::new();
//! let mut w = backend.begin_write().await.unwrap();
//! w.put(b"a", b"1").await.unwrap();
//! w.commit().await.unwrap();
//! let mut r = backend.begin_read().await.unwrap();
//! assert_eq!(r.get(b"a").await.unwrap(), Some(b"1".to_vec()));
//! # });
//! ```

#![warn(missing_docs)]

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use imbl::OrdMap;
use kv_traits::{Backend, BackendError, KvPair, ReadTxn, WriteTxn};
use tokio::sync::OwnedMutexGuard;

type Map = OrdMap<Vec<u8>, Vec<u8>>;

struct Inner {
    committed: Mutex<Map>,
    writer: Arc<tokio::sync::Mutex<()>>,
    closed: AtomicBool,
}

/// An in-memory ordered byte store. Cloning gives another handle to the same store.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        MemoryBackend {
            inner: Arc::new(Inner {
                committed: Mutex::new(OrdMap::new()),
                writer: Arc::new(tokio::sync::Mutex::new(())),
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn snapshot(&self) -> Result<Map, BackendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        let guard = self
            .inner
            .committed
            .lock()
            .map_err(|_| BackendError::Poisoned("memory store lock poisoned".into()))?;
        Ok(guard.clone())
    }
}

fn scan_vec(map: &Map, start: &[u8], end: &[u8], limit: usize, reverse: bool) -> Vec<KvPair> {
    if start >= end {
        return Vec::new();
    }
    let range = map.range::<_, [u8]>((Bound::Included(start), Bound::Excluded(end)));
    let pair = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    if reverse {
        range.rev().take(limit).map(pair).collect()
    } else {
        range.take(limit).map(pair).collect()
    }
}

struct MemRead {
    map: Map,
}

#[async_trait]
impl ReadTxn for MemRead {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.map.get(key).cloned())
    }
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        Ok(scan_vec(&self.map, start, end, limit, reverse))
    }
}

struct MemWrite {
    map: Map,
    inner: Arc<Inner>,
    _guard: OwnedMutexGuard<()>,
}

#[async_trait]
impl ReadTxn for MemWrite {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.map.get(key).cloned())
    }
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        Ok(scan_vec(&self.map, start, end, limit, reverse))
    }
}

#[async_trait]
impl WriteTxn for MemWrite {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        self.map.remove(key);
        Ok(())
    }
    async fn commit(self: Box<Self>) -> Result<(), BackendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BackendError::Closed);
        }
        let mut guard = self
            .inner
            .committed
            .lock()
            .map_err(|_| BackendError::Poisoned("memory store lock poisoned".into()))?;
        *guard = self.map;
        Ok(())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        Ok(Box::new(MemRead {
            map: self.snapshot()?,
        }))
    }

    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        let guard = self.inner.writer.clone().lock_owned().await;
        let map = self.snapshot()?;
        Ok(Box::new(MemWrite {
            map,
            inner: self.inner.clone(),
            _guard: guard,
        }))
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.inner.closed.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_isolation_and_rollback() {
        let b = MemoryBackend::new();
        let mut w = b.begin_write().await.unwrap();
        w.put(b"a", b"1").await.unwrap();
        w.put(b"b", b"2").await.unwrap();
        assert_eq!(w.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        w.commit().await.unwrap();

        let mut r = b.begin_read().await.unwrap();
        let mut w = b.begin_write().await.unwrap();
        w.delete(b"a").await.unwrap();
        w.put(b"c", b"3").await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(r.get(b"a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(r.scan(b"", b"\xff", 10, false).await.unwrap().len(), 2);

        let mut w = b.begin_write().await.unwrap();
        w.put(b"z", b"9").await.unwrap();
        drop(w);
        let mut r = b.begin_read().await.unwrap();
        let all = r.scan(b"", b"\xff", 10, true).await.unwrap();
        assert_eq!(
            all,
            vec![
                (b"c".to_vec(), b"3".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert!(r.scan(b"c", b"b", 10, false).await.unwrap().is_empty());
        assert_eq!(r.scan(b"a", b"\xff", 1, false).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn closed_refuses() {
        let b = MemoryBackend::new();
        b.close().await.unwrap();
        assert!(matches!(b.begin_read().await, Err(BackendError::Closed)));
    }
}
