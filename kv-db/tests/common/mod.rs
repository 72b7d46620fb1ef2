//! A backend decorator for tests: counts commits, delays them, fails them on demand.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use kv_engine_memory::MemoryBackend;
use kv_traits::{Backend, BackendError, KvPair, ReadTxn, WriteTxn};

/// Wraps a backend, counting commits and failing them on demand.
#[derive(Clone)]
pub struct Faulty {
    inner: MemoryBackend,
    pub commits: Arc<AtomicUsize>,
    pub fail_commits: Arc<AtomicBool>,
    /// Extra time each commit takes, in ms (like a slow fsync).
    pub commit_delay_ms: Arc<AtomicU64>,
}

pub struct FaultyWrite {
    inner: Box<dyn WriteTxn>,
    commits: Arc<AtomicUsize>,
    fail: bool,
    delay_ms: u64,
}

#[async_trait]
impl ReadTxn for FaultyWrite {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(key).await
    }
    async fn scan(
        &mut self,
        s: &[u8],
        e: &[u8],
        l: usize,
        r: bool,
    ) -> Result<Vec<KvPair>, BackendError> {
        self.inner.scan(s, e, l, r).await
    }
}

#[async_trait]
impl WriteTxn for FaultyWrite {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.inner.put(key, value).await
    }
    async fn delete(&mut self, key: &[u8]) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn commit(self: Box<Self>) -> Result<(), BackendError> {
        tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
        if self.fail {
            return Err(BackendError::Io("injected fsync failure".into()));
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit().await
    }
}

#[async_trait]
impl Backend for Faulty {
    async fn begin_read(&self) -> Result<Box<dyn ReadTxn>, BackendError> {
        self.inner.begin_read().await
    }
    async fn begin_write(&self) -> Result<Box<dyn WriteTxn>, BackendError> {
        let inner = self.inner.begin_write().await?;
        // Slow commits make concurrent writers pile up behind them, as an fsync would.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        Ok(Box::new(FaultyWrite {
            inner,
            commits: self.commits.clone(),
            fail: self.fail_commits.load(Ordering::SeqCst),
            delay_ms: self.commit_delay_ms.load(Ordering::SeqCst),
        }))
    }
}

pub fn faulty() -> Faulty {
    Faulty {
        inner: MemoryBackend::new(),
        commits: Arc::default(),
        fail_commits: Arc::default(),
        commit_delay_ms: Arc::default(),
    }
}
